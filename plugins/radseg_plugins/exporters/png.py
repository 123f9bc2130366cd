"""The ``png`` exporter: label PNGs, overlays on the image and a contact sheet, for any viewer.

:meth:`PngExporter.export` writes one folder ``NAME/`` (all or nothing, through
:func:`radseg.storage.atomic_directory`)::

    labels/slice-00000.png     8-bit palette PNG per slice: pixel value = class id (0 background),
                               palette entry = class colour; exact, and any image viewer shows it
    overlays/slice-00000.png   the slice windowed to grey with each class blended in its colour
                               (``opacity``) and outlined (1 px, full colour, inside the region)
    contact-sheet.png          overlay thumbnails of at most ``contact_sheet_slices`` labelled
                               slices, evenly chosen, each with its slice index written on it
    classes.json               the class map (``radseg.imaging.labels.read_class_map`` reads it)
                               and how the overlays were drawn

Slice ``z`` is ``labels[z]`` (row 0 at the top), named with five digits like the ``coco``
exporter's ``file_name``. Options (``request.options``):

- ``window``: a preset of :data:`radseg.imaging.channels.WINDOW_PRESETS` (``soft_tissue``,
  ``lung``, ``bone``, ``brain``, ``liver``), ``"percentile"`` (1st-99th percentile of the volume),
  or ``{"width": W, "level": L}`` in HU. Default: ``soft_tissue`` (W400/L40) for CT,
  ``percentile`` for every other modality (MR).
- ``opacity``: 0-1, default 0.5. ``contact_sheet_slices``: default 48. ``thumbnail``: the largest
  side of a contact-sheet tile in pixels, default 128 (slices are never enlarged).

Overlays need the image (``request.series.volume_path``, the HU cache). A series without one gets
the label PNGs and ``classes.json`` only; ``classes.json`` and :meth:`PngExporter.verify` say why.

Colours are the class map's; label values it does not list get a colour from
:func:`radseg.imaging.labels.classes_for_labels` (and a ``class_<id>`` entry in ``classes.json``).
The windowing is :func:`radseg.imaging.channels.hu_to_channels`, the one dataset images use. The
web viewer's renderer (:mod:`radseg.web.render`) is not reused: importing it loads the Flask app,
and exports run in the worker, which imports no Flask; its overlay is also drawn by the browser.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from radseg.contracts import ClassInfo, ExportCheck, ExportRequest
from radseg.errors import InputError
from radseg.hookspecs import hookimpl
from radseg.imaging.channels import Channel, ChannelRecipe, hu_to_channels
from radseg.imaging.coco import class_record, slice_file_name
from radseg.imaging.labels import classes_for_labels, label_array
from radseg.imaging.png_writer import png_bytes
from radseg.imaging.volumes import read_volume
from radseg.storage import atomic_directory

__all__ = [
    "PngExporter",
    "PngOptions",
    "contact_sheet_layout",
    "draw_overlay",
    "radseg_register_exporters",
    "slice_file_name",
]

log = logging.getLogger(__name__)

LABELS = "labels"
OVERLAYS = "overlays"
CONTACT_SHEET = "contact-sheet.png"
CLASSES = "classes.json"


@dataclass(frozen=True)
class PngOptions:
    """The exporter's options, checked (see the module docstring)."""

    window: Channel | None = None
    opacity: float = 0.5
    contact_sheet_slices: int = 48
    thumbnail: int = 128

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PngOptions:
        """:raises InputError: an unknown option or a value out of range, named."""
        known = {"window", "opacity", "contact_sheet_slices", "thumbnail"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(
                f"unknown png export option(s) {unknown}; valid: {', '.join(sorted(known))}"
            )
        window = options.get("window")
        channel = None
        if window == "percentile":
            channel = Channel.percentile(1.0, 99.0)
        elif window is not None:
            channel = Channel.from_dict(window)
        try:
            opacity = float(options.get("opacity", 0.5))
            slices = int(options.get("contact_sheet_slices", 48))
            thumbnail = int(options.get("thumbnail", 128))
        except (TypeError, ValueError) as exc:
            raise InputError(f"png export options: {exc}") from exc
        if not 0.0 <= opacity <= 1.0:
            raise InputError(f"opacity must be between 0 and 1, got {opacity}")
        if slices < 1:
            raise InputError(f"contact_sheet_slices must be at least 1, got {slices}")
        if not 16 <= thumbnail <= 2048:
            raise InputError(f"thumbnail must be 16-2048 pixels, got {thumbnail}")
        return cls(channel, opacity, slices, thumbnail)

    def channel_for(self, modality: str) -> Channel:
        """The window: the one asked for, else soft tissue for CT and percentiles otherwise."""
        if self.window is not None:
            return self.window
        if modality.upper() == "CT":
            return Channel.preset("soft_tissue")
        return Channel.percentile(1.0, 99.0)


def colour_table(classes: Sequence[ClassInfo]) -> np.ndarray:
    """``(256, 3)`` uint8: the colour of every class id; black for values no class names."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for c in classes:
        table[c.id] = c.color
    return table


def outline(labels: np.ndarray) -> np.ndarray:
    """Labelled pixels with a 4-neighbour of another value (outside the slice counts as 0)."""
    padded = np.pad(labels, 1)
    centre = padded[1:-1, 1:-1]
    edge = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    return edge & (labels > 0)


def draw_overlay(
    grey: np.ndarray, labels: np.ndarray, colours: np.ndarray, opacity: float
) -> np.ndarray:
    """RGB ``(y, x, 3)``: ``grey`` with each labelled pixel blended towards its class colour
    (``(1 - opacity) * grey + opacity * colour``) and the regions' edges in full colour."""
    rgb = np.repeat(grey[..., None], 3, axis=2)
    mask = labels > 0
    if not mask.any():
        return rgb
    colour = colours[labels[mask]].astype(np.float32)
    base = grey[mask].astype(np.float32)[:, None]
    rgb[mask] = np.rint(base + np.float32(opacity) * (colour - base)).astype(np.uint8)
    edge = outline(labels)
    rgb[edge] = colours[labels[edge]]
    return rgb


def contact_sheet_slices(labels: np.ndarray, limit: int) -> list[int]:
    """At most ``limit`` slice indices, evenly spread over the labelled slices (all slices
    when none is labelled)."""
    candidates = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    if candidates.size == 0:
        candidates = np.arange(labels.shape[0])
    count = min(limit, candidates.size)
    picks = np.rint(np.linspace(0, candidates.size - 1, count)).astype(int)
    return [int(candidates[i]) for i in picks]


def contact_sheet_layout(
    count: int, height: int, width: int, thumbnail: int
) -> tuple[int, int, int, int]:
    """``(columns, rows, tile_width, tile_height)``: a near-square grid of slices shrunk to fit
    ``thumbnail`` pixels (never enlarged)."""
    scale = min(1.0, thumbnail / max(height, width))
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    return columns, rows, max(1, round(width * scale)), max(1, round(height * scale))


def draw_contact_sheet(
    overlays: Mapping[int, np.ndarray], shape: tuple[int, int], thumbnail: int
) -> Image.Image:
    """The overlays (by slice index) as a grid of thumbnails, each with its index written on."""
    height, width = shape
    columns, rows, tile_w, tile_h = contact_sheet_layout(len(overlays), height, width, thumbnail)
    sheet = Image.new("RGB", (columns * tile_w, rows * tile_h))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, (z, pixels) in enumerate(overlays.items()):
        tile = Image.fromarray(pixels)
        if tile.size != (tile_w, tile_h):
            tile = tile.resize((tile_w, tile_h), Image.Resampling.BOX)
        x, y = (k % columns) * tile_w, (k // columns) * tile_h
        sheet.paste(tile, (x, y))
        # a dark shadow keeps the number legible on bright anatomy
        draw.text((x + 3, y + 2), str(z), fill=(0, 0, 0), font=font)
        draw.text((x + 2, y + 1), str(z), fill=(255, 255, 0), font=font)
    return sheet


class PngExporter:
    """Writes ``NAME/`` with label PNGs, overlays, a contact sheet and ``classes.json``."""

    name: ClassVar[str] = "png"
    suffix: ClassVar[str] = ""
    dicom: ClassVar[bool] = False

    def export(self, request: ExportRequest, out: Path) -> Path:
        """Write the folder ``out`` and return it.

        :raises InputError: bad options, labels that do not match the geometry, an image volume
            that is missing or on another grid, or ``out`` exists already.
        """
        options = PngOptions.from_options(request.options)
        labels = label_array(request.labels, request.geometry)
        classes = classes_for_labels(labels, request.classes)
        colours = colour_table(classes)
        grey, channel, why_not = _grey_volume(request, options)
        out = Path(out)
        if out.exists():
            raise InputError(f"{out.name} exists already; export to a new folder name")
        palette = colours.ravel().tolist()
        with atomic_directory(out) as tmp:
            (tmp / LABELS).mkdir()
            for z, plane in enumerate(labels):
                image = Image.fromarray(plane)  # mode "L"; a palette makes it "P", values kept
                image.putpalette(palette)
                image.save(tmp / LABELS / slice_file_name(z), format="PNG")
            sheet_slices: list[int] = []
            if grey is not None:
                (tmp / OVERLAYS).mkdir()
                sheet_slices = contact_sheet_slices(labels, options.contact_sheet_slices)
                on_sheet = set(sheet_slices)
                tiles: dict[int, np.ndarray] = {}
                for z, plane in enumerate(labels):
                    pixels = draw_overlay(grey[z], plane, colours, options.opacity)
                    (tmp / OVERLAYS / slice_file_name(z)).write_bytes(png_bytes(pixels))
                    if z in on_sheet:
                        tiles[z] = pixels
                sheet = draw_contact_sheet(tiles, labels.shape[1:], options.thumbnail)
                sheet.save(tmp / CONTACT_SHEET, format="PNG")
            description: dict[str, Any] = {
                "classes": [class_record(c) for c in classes],
                "slices": int(labels.shape[0]),
                "overlays": None
                if channel is None
                else {
                    "window": channel.to_dict(),
                    "opacity": options.opacity,
                    "outline_px": 1,
                    "contact_sheet_slices": sheet_slices,
                },
            }
            if why_not:
                description["overlays_not_drawn"] = why_not
            (tmp / CLASSES).write_text(json.dumps(description, indent=2) + "\n", "utf-8")
        return out

    def verify(self, request: ExportRequest, written: Path) -> list[ExportCheck]:
        """Re-read every PNG with Pillow: label values and palette, where overlays are coloured,
        the contact sheet's size."""
        written = Path(written)
        options = PngOptions.from_options(request.options)
        labels = np.asarray(request.labels)
        classes = classes_for_labels(labels.astype(np.uint8), request.classes)
        colours = colour_table(classes)
        checks = [_labels_check(labels, colours, classes, written / LABELS)]
        try:
            grey, _, why_not = _grey_volume(request, options)
        except InputError as exc:
            grey, why_not = None, str(exc)
        if grey is None:
            detail = f"not drawn: {why_not}"
            checks.append(ExportCheck("overlays", None, detail))
            checks.append(ExportCheck("contact sheet", None, detail))
            return checks
        checks.append(_overlays_check(labels, grey, colours, options.opacity, written / OVERLAYS))
        checks.append(_sheet_check(labels, options, written / CONTACT_SHEET))
        return checks


def _grey_volume(
    request: ExportRequest, options: PngOptions
) -> tuple[np.ndarray | None, Channel | None, str]:
    """The windowed ``(z, y, x)`` uint8 image and its window, or ``None`` and why not."""
    path = request.series.volume_path
    if path is None:
        return (
            None,
            None,
            (
                "the series has no image volume (it did not come with one); labels/ holds the "
                "label PNGs, open them over the source images in a viewer"
            ),
        )
    if not Path(path).is_file():
        raise InputError(
            f"the series' image volume {Path(path).name} is missing; re-ingest the study to "
            "draw overlays"
        )
    hu, _ = read_volume(Path(path))
    expected = tuple(reversed(request.geometry.size))
    if hu.shape != expected:
        raise InputError(
            f"the image volume has shape {hu.shape} (z, y, x) but the labels {expected}; "
            "export the prediction on the grid of its series"
        )
    channel = options.channel_for(request.series.modality)
    return hu_to_channels(hu, ChannelRecipe((channel,)))[..., 0], channel, ""


def _labels_check(
    labels: np.ndarray, colours: np.ndarray, classes: Sequence[ClassInfo], folder: Path
) -> ExportCheck:
    name = "label PNGs (Pillow)"
    nz, ny, nx = labels.shape
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    expected_names = [slice_file_name(z) for z in range(nz)]
    if [f.name for f in files] != expected_names:
        return ExportCheck(
            name, False, f"{len(files)} label PNGs, expected {nz} named like {expected_names[0]}"
        )
    differ = 0
    problems: list[str] = []
    for z, path in enumerate(files):
        try:
            with Image.open(path) as image:
                mode = image.mode
                pixels = np.asarray(image)
                palette = image.getpalette() or []
        except OSError as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        if mode != "P" or pixels.shape != (ny, nx):
            problems.append(f"{path.name} is a {mode} image of {pixels.shape[::-1]}")
            continue
        differ += int(np.count_nonzero(pixels != labels[z]))
        table = np.zeros((256, 3), dtype=np.uint8)
        entries = np.asarray(palette[:768], dtype=np.uint8).reshape(-1, 3)
        table[: len(entries)] = entries
        wrong = [c.id for c in classes if tuple(table[c.id]) != tuple(colours[c.id])]
        if wrong:
            problems.append(f"{path.name}: palette colours of classes {wrong} differ")
    detail = f"{len(files)} palette PNGs of {nx}x{ny} read back, {differ} pixels differ"
    if problems:
        detail += "; " + "; ".join(problems[:3])
    return ExportCheck(name, differ == 0 and not problems, detail)


def _overlays_check(
    labels: np.ndarray, grey: np.ndarray, colours: np.ndarray, opacity: float, folder: Path
) -> ExportCheck:
    """Colour only where labels are; every labelled pixel that the blend can show, shown."""
    name = "overlays"
    nz, ny, nx = labels.shape
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if [f.name for f in files] != [slice_file_name(z) for z in range(nz)]:
        return ExportCheck(name, False, f"{len(files)} overlay PNGs, expected one per slice ({nz})")
    stray = missing = 0
    problems: list[str] = []
    for z, path in enumerate(files):
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        if pixels.shape != (ny, nx, 3):
            problems.append(f"{path.name} is {pixels.shape[1]}x{pixels.shape[0]}")
            continue
        coloured = np.any(pixels != grey[z][..., None], axis=2)
        labelled = labels[z] > 0
        stray += int(np.count_nonzero(coloured & ~labelled))
        # A blended pixel moves by opacity * |colour - grey|: a change of at least one level is
        # certain to show after rounding; edges are drawn in full colour.
        distance = np.abs(
            colours[labels[z]].astype(np.int16) - grey[z][..., None].astype(np.int16)
        ).max(axis=2)
        must_show = labelled & ((distance * opacity >= 1.0) | (outline(labels[z]) & (distance > 0)))
        missing += int(np.count_nonzero(must_show & ~coloured))
    detail = (
        f"{len(files)} overlays; {stray} coloured pixels outside the labels, "
        f"{missing} labelled pixels left grey"
    )
    if problems:
        detail += "; " + "; ".join(problems[:3])
    return ExportCheck(name, stray == 0 and missing == 0 and not problems, detail)


def _sheet_check(labels: np.ndarray, options: PngOptions, path: Path) -> ExportCheck:
    name = "contact sheet"
    count = len(contact_sheet_slices(labels, options.contact_sheet_slices))
    columns, rows, tile_w, tile_h = contact_sheet_layout(
        count, labels.shape[1], labels.shape[2], options.thumbnail
    )
    expected = (columns * tile_w, rows * tile_h)
    try:
        with Image.open(path) as image:
            size = image.size
    except OSError as exc:
        return ExportCheck(name, False, f"cannot open {CONTACT_SHEET}: {exc}")
    return ExportCheck(
        name,
        size == expected,
        f"{count} slices in {columns}x{rows} tiles of {tile_w}x{tile_h}: "
        f"{size[0]}x{size[1]} pixels, expected {expected[0]}x{expected[1]}",
    )


@hookimpl
def radseg_register_exporters() -> list[type[PngExporter]]:
    return [PngExporter]
