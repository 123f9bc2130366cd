"""DICOM objects checked against the standard's IODs with ``dciodvfy`` (David Clunie's
dicom3tools; Debian package ``dicom3tools``).

``dciodvfy`` prints one line per finding: ``Error - ...`` for a violation of the IOD (a missing
type 1 attribute, a bad value, a wrong VR), ``Warning - ...`` for what is legal but dubious.
An export is offered only when its DICOM files have no errors; warnings are kept and shown.
When ``dciodvfy`` is not installed the check reports that it could not run (``passed=None``),
with the command that installs it, rather than pretending the files were checked.

Label Map Segmentations (DICOM 2024) are newer than the dicom3tools Debian ships (2022), which
finds no IOD for them. Such a file is checked as what it extends: a copy with the Segmentation
Storage SOP class is validated, and only the findings that the Label Map IOD changed on purpose
(``SegmentationType`` ``LABELMAP``, background segment number 0 and its missing
identification) are set aside, as warnings that say so. Everything else must conform.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.uid import UID

from radseg.contracts import ExportCheck

__all__ = ["DciodvfyResult", "dciodvfy_check", "find_dciodvfy", "validate"]

_TIMEOUT_S = 120.0

LABEL_MAP_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.7"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
#: dciodvfy (2022) findings on a label map checked as a Segmentation that are the Label Map
#: Segmentation IOD's own rules (PS3.3 2024 C.8.20.2), not defects of the file
_LABEL_MAP_RULES = (
    "Information Object Not found",
    "Unrecognized enumerated value = <LABELMAP>",
    "SegmentNumber not monotonically increasing from one by one - have SegmentSequence item "
    "number 1 (from one) with SegmentNumber of 0",
    "SegmentSequence(0062,0002)[1]/SegmentNumber(0062,0004)[1]> - Value is zero",
    # a label map's frames hold every segment, so they have no Segment Identification
    "/SegmentIdentificationSequence(0062,000a)> - Missing attribute for Type 1",
)


@dataclass
class DciodvfyResult:
    """What ``dciodvfy`` said about one file."""

    path: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_dciodvfy() -> str | None:
    """The ``dciodvfy`` executable, or ``None`` when dicom3tools is not installed."""
    return shutil.which("dciodvfy")


def validate(path: Path, *, executable: str | None = None) -> DciodvfyResult:
    """Run ``dciodvfy -new`` on ``path`` and collect its errors and warnings.

    A Label Map Segmentation that this dciodvfy does not know is checked as a Segmentation
    (see the module doc).

    :raises FileNotFoundError: ``dciodvfy`` is not installed.
    """
    executable = executable or find_dciodvfy()
    if executable is None:
        raise FileNotFoundError("dciodvfy is not installed (apt-get install dicom3tools)")
    result = _run(Path(path), executable)
    if any("Information Object Not found" in e for e in result.errors) and _is_label_map(path):
        result = _validate_label_map(Path(path), executable)
    return result


def _run(path: Path, executable: str) -> DciodvfyResult:
    completed = subprocess.run(
        [executable, "-new", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=_TIMEOUT_S,
        check=False,
    )
    result = DciodvfyResult(path)
    for line in (completed.stdout + completed.stderr).splitlines():
        line = line.strip()
        if line.startswith("Error"):
            result.errors.append(line)
        elif line.startswith("Warning"):
            result.warnings.append(line)
    if completed.returncode not in (0, 1) and not result.errors:
        # dciodvfy exits non-zero on errors; any other failure without a message is one too
        result.errors.append(f"Error - dciodvfy exited with status {completed.returncode}")
    return result


def _is_label_map(path: Path) -> bool:
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:
        return False
    return str(ds.get("SOPClassUID", "")) == LABEL_MAP_SEGMENTATION


def _validate_label_map(path: Path, executable: str) -> DciodvfyResult:
    ds = pydicom.dcmread(str(path))
    ds.SOPClassUID = SEGMENTATION
    ds.file_meta.MediaStorageSOPClassUID = UID(SEGMENTATION)
    with tempfile.TemporaryDirectory(prefix="radseg-dciodvfy-") as tmp:
        copy = Path(tmp) / "as-segmentation.dcm"
        ds.save_as(copy, enforce_file_format=True)
        as_seg = _run(copy, executable)
    result = DciodvfyResult(path, warnings=list(as_seg.warnings))
    set_aside = 0
    for error in as_seg.errors:
        if any(rule in error for rule in _LABEL_MAP_RULES):
            set_aside += 1
        else:
            result.errors.append(error)
    result.warnings.append(
        "Warning - checked as a Segmentation: this dciodvfy predates the Label Map "
        f"Segmentation IOD; {set_aside} finding(s) that are that IOD's own rules were set aside"
    )
    return result


def dciodvfy_check(paths: Iterable[Path]) -> ExportCheck:
    """One :class:`ExportCheck` for all of ``paths``: passed when none has an error."""
    paths = list(paths)
    executable = find_dciodvfy()
    if executable is None:
        return ExportCheck(
            "dciodvfy",
            None,
            "not run: dciodvfy is not installed (apt-get install dicom3tools)",
        )
    if not paths:
        return ExportCheck("dciodvfy", False, "no DICOM file was written")
    errors: list[str] = []
    warnings = 0
    for path in paths:
        try:
            result = validate(path, executable=executable)
        except (subprocess.SubprocessError, OSError) as exc:
            # a hung or unrunnable dciodvfy is a failed check, not an exception out of verify
            errors.append(f"{path.name}: dciodvfy could not check it ({type(exc).__name__})")
            continue
        errors.extend(f"{path.name}: {e}" for e in result.errors)
        warnings += len(result.warnings)
    if errors:
        shown = "; ".join(errors[:5]) + (f"; … {len(errors) - 5} more" if len(errors) > 5 else "")
        return ExportCheck("dciodvfy", False, f"{len(errors)} error(s): {shown}")
    return ExportCheck(
        "dciodvfy",
        True,
        f"{len(paths)} file(s) conform to their IOD (0 errors, {warnings} warning(s))",
    )
