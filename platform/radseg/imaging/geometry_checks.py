"""Frames → series volumes, with every geometry problem found and said in plain words.

:func:`assemble_series` takes the decoded frames of any number of files (legacy slices and
enhanced multi-frame instances alike), groups them by SeriesInstanceUID and then by geometry
(orientation, matrix, pixel spacing), and checks each stack:

* **localizers / scouts** (ImageType or FrameType ``LOCALIZER``, a lone slice whose
  orientation, matrix or spacing differs from the rest of its series, or a series made only of
  single images in different planes) are excluded and reported;
* **mixed orientations**: a series that holds two or more stacks of different geometry is split
  into one volume per stack (the largest keeps the SeriesInstanceUID, the others get a UID
  derived from it) and each volume says so;
* **duplicate positions**: the second slice at a position is left out and reported;
* **missing slices / uneven spacing**: gaps larger than the usual one are reported with where
  they are; the volume uses the mean spacing;
* **gantry tilt**: slice positions that drift in-plane (or GantryDetectorTilt ≠ 0) are reported;
  the volume is treated as orthogonal, as SimpleITK/GDCM do.

Slices are ordered by ImagePositionPatient projected on the slice normal ``n = row × column``.
Warnings go to :attr:`SeriesVolume.warnings`; excluded slices to ``problems``.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from radseg.contracts import Geometry, IngestProblem, SeriesVolume, SliceRef
from radseg.imaging.dicom_frames import Frame, derived_uid

__all__ = ["assemble_series"]

#: Two orientations (cosines) or positions (mm) closer than this are the same.
_ORIENTATION_TOL = 1e-4
_POSITION_TOL = 1e-3
#: Relative deviation of a slice gap from the usual gap that counts as uneven spacing.
_SPACING_TOL = 0.01


def assemble_series(
    frames: Iterable[Frame], problems: list[IngestProblem], *, keep_originals: bool = False
) -> list[SeriesVolume]:
    """Group ``frames`` into series volumes (sorted by SeriesInstanceUID); see the module doc.

    :param keep_originals: put each source instance's Part 10 bytes (:attr:`Frame.original`,
        once per file) into :attr:`SeriesVolume.originals`, in slice order.
    """
    by_series: dict[str, list[Frame]] = defaultdict(list)
    for frame in frames:
        by_series[frame.series_instance_uid].append(frame)
    volumes = []
    for uid in sorted(by_series):
        volumes.extend(_series_volumes(uid, by_series[uid], problems, keep_originals))
    volumes.sort(key=lambda v: v.series_instance_uid)
    return volumes


def _layout(frame: Frame) -> tuple[Any, ...]:
    return (
        tuple(np.round(frame.orientation / _ORIENTATION_TOL).astype(np.int64)),
        frame.pixels.shape,
        tuple(round(v, 4) for v in frame.pixel_spacing),
    )


def _series_volumes(
    series_uid: str, frames: list[Frame], problems: list[IngestProblem], keep_originals: bool
) -> list[SeriesVolume]:
    """One series' frames → its volumes: localizers out, then one volume per stack of slices
    that share a geometry (the largest keeps the SeriesInstanceUID)."""
    warnings: list[str] = []
    frames = _without_localizers(series_uid, frames, problems, warnings)
    if not frames:
        return []
    stacks: dict[tuple[Any, ...], list[Frame]] = defaultdict(list)
    for f in frames:
        stacks[_layout(f)].append(f)
    ranked = sorted(stacks.values(), key=len, reverse=True)
    if len(ranked) > 1 and len(ranked[0]) == 1:
        _refuse_single_images(series_uid, frames, problems)
        return []
    main, others = ranked[0], ranked[1:]
    lone = [s for s in others if len(s) == 1]
    split = [s for s in others if len(s) > 1]
    _leave_out_lone_slices(series_uid, lone, problems, warnings)
    if split:
        warnings.append(
            f"the series holds {len(split) + 1} stacks with different orientations, matrices or "
            "pixel spacings (mixed orientations); each became its own volume, this one is the "
            "largest"
        )
    volumes = [_stack_volume(series_uid, main, list(warnings), problems, keep_originals)]
    for k, stack in enumerate(split, start=1):
        uid = derived_uid("split", series_uid, str(k))
        note = (
            f"split from series {series_uid}, which mixes orientations (stack {k + 1} of "
            f"{len(split) + 1}); check that this stack is wanted"
        )
        volumes.append(_stack_volume(uid, stack, [note], problems, keep_originals))
    return volumes


def _without_localizers(
    series_uid: str, frames: list[Frame], problems: list[IngestProblem], warnings: list[str]
) -> list[Frame]:
    """``frames`` but those marked LOCALIZER, which are reported."""
    localizers = [f for f in frames if f.localizer]
    if not localizers:
        return frames
    for f in localizers:
        problems.append(
            IngestProblem(
                f.source,
                "localizer/scout image (ImageType LOCALIZER); excluded from the volume",
                series_uid,
                frame=f.frame_number,
            )
        )
    warnings.append(f"{len(localizers)} localizer/scout image(s) excluded")
    return [f for f in frames if not f.localizer]


def _refuse_single_images(
    series_uid: str, frames: list[Frame], problems: list[IngestProblem]
) -> None:
    """Only single images, each in its own plane: a (tri-planar) localizer set or projection
    images, not a volume. Every one is reported."""
    for f in frames:
        problems.append(
            IngestProblem(
                f.source,
                f"series {series_uid} holds {len(frames)} single images in different "
                "orientations (a localizer/scout set?); excluded, as there is no stack of "
                "slices to make a volume from",
                series_uid,
                frame=f.frame_number,
            )
        )


def _leave_out_lone_slices(
    series_uid: str, lone: list[list[Frame]], problems: list[IngestProblem], warnings: list[str]
) -> None:
    """Report the slices whose geometry no other slice shares (a localizer in the series?)."""
    for stack in lone:
        problems.append(
            IngestProblem(
                stack[0].source,
                f"series {series_uid}: orientation, matrix or pixel spacing differs from the "
                "other slices (a localizer?); left out (split the series to keep it)",
                series_uid,
                frame=stack[0].frame_number,
            )
        )
    if lone:
        warnings.append(
            f"{len(lone)} slice(s) with a different orientation, matrix or pixel spacing were "
            "left out (e.g. a localizer in the same series)"
        )


def _stack_volume(
    series_uid: str,
    frames: list[Frame],
    warnings: list[str],
    problems: list[IngestProblem],
    keep_originals: bool,
) -> SeriesVolume:
    """One stack of slices that share a geometry → a volume, with what is odd about it said."""
    row, col, normal = _slice_axes(frames[0].orientation)
    frames = _without_duplicate_positions(series_uid, frames, normal, problems, warnings)
    positions = np.stack([f.position for f in frames])
    z_spacing = _z_spacing(frames, positions, normal, warnings)
    warnings.extend(_header_warnings(frames))
    hu = _to_hu(frames)
    ny, nx = hu.shape[1:]
    direction = np.stack([row, col, normal], axis=1)
    geometry = Geometry(
        size=(int(nx), int(ny), len(frames)),
        spacing=(frames[0].pixel_spacing[1], frames[0].pixel_spacing[0], abs(z_spacing)),
        origin=tuple(float(v) for v in positions[0]),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction.ravel()),
    )
    refs = [
        SliceRef(
            sop_instance_uid=f.sop_instance_uid,
            slice_index=k,
            image_position_patient=tuple(float(v) for v in f.position),  # type: ignore[arg-type]
            frame_number=f.frame_number,
        )
        for k, f in enumerate(frames)
    ]
    head = frames[0].ds
    return SeriesVolume(
        patient_key=str(head.get("PatientID", "")),
        study_instance_uid=frames[0].study_instance_uid,
        series_instance_uid=series_uid,
        modality=str(head.get("Modality", "")),
        geometry=geometry,
        hu=hu,
        slices=refs,
        description=str(_readable(head, "SeriesDescription", warnings) or ""),
        study_date=dicom_date(_readable(head, "StudyDate", warnings)),
        slice_thickness=_series_thickness(frames, warnings),
        warnings=warnings,
        originals=_originals(frames) if keep_originals else [],
    )


def _readable(ds: Dataset, keyword: str, warnings: list[str]) -> Any:
    """``ds``'s ``keyword``, or ``None`` (said) when its value cannot be decoded (an unknown or
    damaged value representation): a descriptive attribute does not cost the series."""
    try:
        return ds.get(keyword)
    except (NotImplementedError, ValueError, TypeError, KeyError, OverflowError) as exc:
        warnings.append(f"{keyword} could not be read ({exc}); left out")
        return None


def _series_thickness(frames: list[Frame], warnings: list[str]) -> float | None:
    """The SliceThickness every slice states, or ``None`` (said) when they differ."""
    stated = {f.thickness for f in frames}
    if len(stated) == 1:
        return stated.pop()
    known = sorted(t for t in stated if t is not None)
    warnings.append(
        "the slices state different slice thicknesses"
        + (f" ({known[0]:g} to {known[-1]:g} mm)" if known else "")
        + "; no thickness is shown for the series"
    )
    return None


def dicom_date(value: object) -> date | None:
    """A DICOM DA value (``YYYYMMDD``) as a date; ``None`` when empty or not a real date."""
    text = str(value or "").strip()
    if len(text) != 8 or not (text.isascii() and text.isdigit()):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _slice_axes(orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row, column and slice-normal (``row × column``) vectors of ImageOrientationPatient."""
    row = orientation[:3] / np.linalg.norm(orientation[:3])
    col = orientation[3:] / np.linalg.norm(orientation[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    return row, col, normal


def _without_duplicate_positions(
    series_uid: str,
    frames: list[Frame],
    normal: np.ndarray,
    problems: list[IngestProblem],
    warnings: list[str],
) -> list[Frame]:
    """``frames`` in slice order (along ``normal``), the second slice at a position left out.

    Ties keep the lowest InstanceNumber, then frame, then SOPInstanceUID: a deterministic
    choice of which duplicate survives.
    """
    frames = sorted(
        frames,
        key=lambda f: (
            float(f.position @ normal),
            f.instance_number,
            f.frame_number or 0,
            f.sop_instance_uid,
        ),
    )
    kept = [frames[0]]
    for f in frames[1:]:
        previous = kept[-1]
        if abs(float((f.position - previous.position) @ normal)) < _POSITION_TOL:
            problems.append(_duplicate_problem(series_uid, f, previous))
        else:
            kept.append(f)
    duplicates = len(frames) - len(kept)
    if duplicates:
        warnings.append(
            f"{duplicates} slice(s) at duplicate positions were left out (two acquisitions in "
            "one series? ingest them as separate series)"
        )
    return kept


def _duplicate_problem(series_uid: str, left_out: Frame, kept: Frame) -> IngestProblem:
    """Why ``left_out`` was: ``kept`` lies at the same position."""
    same = (left_out.sop_instance_uid, left_out.frame_number) == (
        kept.sop_instance_uid,
        kept.frame_number,
    )
    what = "same instance stored twice" if same else "another slice has the same position"
    # the kept slice by InstanceNumber, not by file name: reasons are stored as they are
    other = f"InstanceNumber {kept.instance_number}" + (
        f" frame {kept.frame_number}" if kept.frame_number else ""
    )
    return IngestProblem(
        left_out.source,
        f"series {series_uid}: {what} as {other}, which was kept; left out",
        series_uid,
        frame=left_out.frame_number,
    )


def _z_spacing(
    frames: list[Frame], positions: np.ndarray, normal: np.ndarray, warnings: list[str]
) -> float:
    """The mean distance between slices (signed, along ``normal``); a single slice's comes from
    its header. Uneven spacing and gantry tilt are added to ``warnings``."""
    head = frames[0].ds
    if len(frames) == 1:
        warnings.append("single-slice series; z spacing taken from the header")
        return float(
            _float(head.get("SpacingBetweenSlices")) or _float(head.get("SliceThickness")) or 1.0
        )
    distances = positions @ normal
    z_spacing = float((distances[-1] - distances[0]) / (len(frames) - 1))
    warnings.extend(_spacing_warnings(np.diff(distances), z_spacing))
    warnings.extend(_tilt_warnings(positions, normal, head))
    return z_spacing


def _header_warnings(frames: list[Frame]) -> list[str]:
    """Disagreeing PatientIDs, and each file's notes (once per file, with their count)."""
    warnings = []
    if len({str(f.ds.get("PatientID", "")) for f in frames}) > 1:
        warnings.append("slices disagree on PatientID; the first slice's is used")
    notes = Counter(n for f in {id(f.ds): f for f in frames}.values() for n in f.notes)
    warnings.extend(f"{n} ({count} file(s))" for n, count in sorted(notes.items()))
    return warnings


def _originals(frames: list[Frame]) -> list[Any]:
    """Each source instance's Part 10 bytes once (the frames of a file share them), in order."""
    originals: list[Any] = []
    seen: set[int] = set()
    for f in frames:
        if id(f.ds) not in seen and f.original is not None:
            seen.add(id(f.ds))
            originals.append(f.original)
    return originals


def _float(value: Any) -> float:
    try:
        return float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        return 0.0


def _spacing_warnings(gaps: np.ndarray, mean: float) -> list[str]:
    if np.max(np.abs(gaps - mean)) <= _SPACING_TOL * abs(mean):
        return []
    usual = float(np.median(gaps))
    wide = np.flatnonzero(gaps > usual * (1 + 10 * _SPACING_TOL))
    ratios = gaps[wide] / usual if usual > 0 else np.zeros(0)
    missing = int(sum(max(0, round(r) - 1) for r in ratios))
    if wide.size and np.allclose(ratios, np.round(ratios), atol=0.1):
        where = ", ".join(f"after slice {int(i)}" for i in wide[:5])
        return [
            f"uneven slice spacing: {missing} slice(s) appear to be missing ({where}; usual gap "
            f"{usual:.3f} mm, mean {mean:.3f} mm); the volume uses the mean spacing, so find the "
            "missing files or resample before measuring"
        ]
    return [
        f"uneven slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm, mean {mean:.3f} mm): a "
        "variable-thickness scan or missing slices; the volume uses the mean, resample before "
        "measuring"
    ]


def _tilt_warnings(positions: np.ndarray, normal: np.ndarray, head: Any) -> list[str]:
    drift = positions[-1] - positions[0]
    along = float(drift @ normal)
    in_plane = drift - normal * along
    header_tilt = _float(head.get("GantryDetectorTilt"))
    if np.linalg.norm(in_plane) > 0.01 * abs(along) + _POSITION_TOL or abs(header_tilt) > 0.01:
        angle = float(np.degrees(np.arctan2(np.linalg.norm(in_plane), abs(along))))
        return [
            f"gantry tilt of about {max(angle, abs(header_tilt)):.1f}° (slice positions drift "
            "in-plane): the volume is treated as orthogonal, as SimpleITK does, so shapes are "
            "sheared; resample onto an orthogonal grid before measuring"
        ]
    return []


def _to_hu(frames: list[Frame]) -> np.ndarray:
    """HU ``(z, y, x)``: stored x RescaleSlope + RescaleIntercept, per slice.

    int16 when that is exact for every slice (slope 1, an integer intercept and every HU value
    within int16: CT as scanners store it), else float32. The int16 volume is what the HU cache
    holds either way; building it directly saves a float32 volume twice its size and the pass
    that turned it back into int16. Slices are converted on a few threads: numpy's casts
    release the GIL, and this conversion is a good part of a large series' read time.
    """
    ny, nx = frames[0].pixels.shape
    exact = all(_int16_exact(f) for f in frames)
    hu = np.empty((len(frames), ny, nx), dtype=np.int16 if exact else np.float32)

    def convert(k: int) -> None:
        f = frames[k]
        out = hu[k]
        if exact:
            # modulo 2**16 throughout: exact, since the result is known to fit int16
            np.copyto(out, f.pixels, casting="unsafe")
            intercept = (int(f.intercept) + 0x8000) % 0x10000 - 0x8000
            if intercept:
                out += np.int16(intercept)
        elif f.slope == 1 and float(f.intercept).is_integer():
            # exact in float32 for every stored value up to 2**24
            out[...] = f.pixels
            if f.intercept:
                out += np.float32(f.intercept)
        else:
            # in double, rounded once: what SimpleITK/GDCM give for fractional slopes
            hu[k] = f.pixels * f.slope + f.intercept

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(convert, range(len(frames))))
    return hu


def _int16_exact(frame: Frame) -> bool:
    """Whether the frame's HU are integers that int16 holds (its stored values are)."""
    pixels = frame.pixels
    if frame.slope != 1 or not float(frame.intercept).is_integer() or pixels.dtype.kind not in "iu":
        return False
    if pixels.size == 0:
        return True
    intercept = int(frame.intercept)
    low, high = int(pixels.min()) + intercept, int(pixels.max()) + intercept
    return low >= -0x8000 and high <= 0x7FFF
