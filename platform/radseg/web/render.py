"""Slices as PNGs for the viewer: HU windowing, coloured label overlays and a volume cache.

Nothing here knows Flask. Arrays are ``(z, y, x)`` as :func:`radseg.imaging.volumes.read_volume`
returns them; a slice is ``array[z]``, shown with row 0 at the top and column 0 at the left, which
for the usual LPS axial direction is the radiological view (patient's left on the image's right).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from PIL import Image

from radseg.imaging.legend import LegendEntry, labels_present, legend, prediction_classes
from radseg.imaging.palette import PALETTE
from radseg.imaging.volumes import read_volume

# the legend is imaging (a review decision and a correction check classes against it too);
# the viewer's pages reach it through this module
__all__ = [
    "DIFFERENCE_COLORS",
    "OVERLAY_MODES",
    "ImageCache",
    "LegendEntry",
    "OverlayMode",
    "VolumeCache",
    "difference_to_rgba",
    "labels_drawer",
    "labels_present",
    "labels_to_outline_rgba",
    "labels_to_rgba",
    "legend",
    "png_bytes",
    "prediction_classes",
    "uncertainty_to_rgba",
    "window_to_uint8",
]


def window_to_uint8(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map HU to grey levels linearly: ``level - width/2`` and below → 0, ``level + width/2``
    and above → 255 (the simple linear window, not DICOM's ``c - 0.5`` / ``w - 1`` variant)."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    lower = level - width / 2.0
    scaled = (hu.astype(np.float32) - np.float32(lower)) * np.float32(255.0 / width)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def labels_to_rgba(
    labels: np.ndarray, entries: Iterable[LegendEntry], hidden: Iterable[int] = ()
) -> np.ndarray:
    """A ``(y, x, 4)`` uint8 image: each class in its colour, opaque; background and the
    ``hidden`` class ids transparent."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[1:, :3] = np.asarray(PALETTE, dtype=np.uint8)[np.arange(255) % len(PALETTE)]
    lut[1:, 3] = 255
    for entry in entries:
        lut[entry.id] = (*entry.color, 255)
    for class_id in hidden:
        if 0 < class_id < 256:
            lut[class_id, 3] = 0
    return lut[labels.astype(np.uint8, copy=False)]


#: how a label overlay is drawn: ``fill`` (every voxel of a class), ``outline`` (only the voxels
#: on a class boundary) or ``difference`` (a prediction against labels: where they disagree)
OverlayMode = Literal["fill", "outline", "difference"]
OVERLAY_MODES: tuple[str, ...] = get_args(OverlayMode)
#: the difference view's colours (RGB): orange where the prediction has a structure the labels
#: do not (false positive, or another class), blue where it misses one (false negative); an
#: orange/blue pair that colour-blind readers tell apart
DIFFERENCE_COLORS = {"false_positive": (255, 140, 0), "false_negative": (30, 120, 255)}


def boundary(labels: np.ndarray) -> np.ndarray:
    """``(y, x)`` bool: the labelled voxels with a 4-neighbour of another label (outside the
    slice counts as background, so a structure cut by the edge is closed there)."""
    padded = np.pad(labels, 1, mode="constant")
    centre = padded[1:-1, 1:-1]
    edge = np.zeros(labels.shape, dtype=bool)
    for shifted in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
        edge |= shifted != centre
    return edge & (labels != 0)


def labels_to_outline_rgba(
    labels: np.ndarray, entries: Iterable[LegendEntry], hidden: Iterable[int] = ()
) -> np.ndarray:
    """Like :func:`labels_to_rgba`, but only the class boundaries are drawn (hidden classes
    are taken out first, so a visible class next to a hidden one is outlined there too)."""
    shown = _without(labels, hidden)
    rgba = labels_to_rgba(shown, entries)
    rgba[~boundary(shown), 3] = 0
    return rgba


def labels_drawer(mode: str) -> Callable[..., np.ndarray]:
    """The function that draws one label slice in ``mode`` (``fill`` or ``outline``; the
    ``difference`` needs two slices: :func:`difference_to_rgba`)."""
    if mode == "outline":
        return labels_to_outline_rgba
    if mode == "fill":
        return labels_to_rgba
    raise ValueError(f"a single label map is drawn fill or outline, not {mode!r}")


def _without(labels: np.ndarray, hidden: Iterable[int]) -> np.ndarray:
    hidden = [c for c in hidden if 0 < c < 256]
    if not hidden:
        return labels
    return np.where(np.isin(labels, hidden), 0, labels).astype(labels.dtype, copy=False)


def difference_to_rgba(
    predicted: np.ndarray, reference: np.ndarray, hidden: Iterable[int] = ()
) -> np.ndarray:
    """A ``(y, x, 4)`` image of where a predicted slice disagrees with the reference labels:
    :data:`DIFFERENCE_COLORS` ``false_positive`` where the prediction has a class the labels do
    not have there (background or another class), ``false_negative`` where the labels have a
    class and the prediction has none; transparent where they agree. ``hidden`` classes count
    as background in both."""
    if predicted.shape != reference.shape:
        raise ValueError(
            f"the prediction's slice is {predicted.shape} and the labels' {reference.shape}"
        )
    hidden = tuple(hidden)
    predicted, reference = _without(predicted, hidden), _without(reference, hidden)
    rgba = np.zeros((*predicted.shape, 4), dtype=np.uint8)
    false_positive = (predicted != 0) & (predicted != reference)
    false_negative = (reference != 0) & (predicted == 0)
    rgba[false_positive] = (*DIFFERENCE_COLORS["false_positive"], 255)
    rgba[false_negative] = (*DIFFERENCE_COLORS["false_negative"], 255)
    return rgba


#: stored uncertainty (0..255) below this is drawn transparent: the background and the sure
#: inside of structures stay clear, the heat shows only where the model doubts
UNCERTAINTY_FLOOR = 13  # 5 %


def _heat_lut() -> np.ndarray:
    """Yellow (a little doubt) through orange to red (the most), alpha rising with the doubt."""
    t = np.arange(256, dtype=np.float32) / 255.0
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[:, 0] = 255
    lut[:, 1] = np.rint(255 * (1.0 - t) ** 0.7)
    lut[:, 2] = 0
    lut[:, 3] = np.rint(np.clip(96 + 159 * t, 0, 255))
    lut[:UNCERTAINTY_FLOOR, 3] = 0
    return lut


_HEAT = _heat_lut()


def uncertainty_to_rgba(stored: np.ndarray) -> np.ndarray:
    """A ``(y, x, 4)`` heat map of a stored uint8 uncertainty slice (255 = the most unsure)."""
    return _HEAT[stored.astype(np.uint8, copy=False)]


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode a ``(y, x)`` grey or ``(y, x, 4)`` RGBA uint8 array; fast over small."""
    mode = "L" if pixels.ndim == 2 else "RGBA"
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode=mode).save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()


class VolumeCache:
    """The most recently used volumes of this process, keyed by path, mtime and size.

    A viewer asks for one slice at a time, so the whole volume is read once and kept; a file that
    is replaced (new mtime) is read again. ``max_bytes`` bounds the memory held, but the newest
    volume is always kept whatever its size. Thread-safe; concurrent requests for the same
    volume wait for one read instead of each reading it.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int, int], threading.Lock] = {}
        self.reads = 0

    @staticmethod
    def key(path: Path) -> tuple[str, int, int]:
        """What identifies a file's content here: path, mtime and size (FileNotFoundError if
        it is missing)."""
        stat = Path(path).stat()
        return (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)

    def get(self, path: Path) -> np.ndarray:
        key = self.key(path)  # FileNotFoundError for a missing file, before any locking
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            array, _ = read_volume(Path(key[0]))
            array.setflags(write=False)
            with self._lock:
                self.reads += 1
                self._items[key] = array
                self._loading.pop(key, None)
                self._evict()
            return array

    def _evict(self) -> None:
        total = sum(a.nbytes for a in self._items.values())
        while len(self._items) > 1 and total > self.max_bytes:
            _, oldest = self._items.popitem(last=False)
            total -= oldest.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class ImageCache:
    """Encoded PNGs of this process, most recently used first, at most ``max_bytes`` in all.

    A viewer asks for the same slices again and again (scrolling back, several reviewers, the
    prefetch of neighbours), and encoding is most of a request's work; keys include the volume
    file's identity (:meth:`VolumeCache.key`), so a replaced file is never served stale.
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: Any, data: bytes) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = data
            self._size += len(data)
            while self._size > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._size -= len(old)
