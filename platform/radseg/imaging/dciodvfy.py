"""DICOM objects checked against the standard's IODs with ``dciodvfy`` (David Clunie's
dicom3tools; Debian package ``dicom3tools``).

``dciodvfy`` prints one line per finding: ``Error - ...`` for a violation of the IOD (a missing
type 1 attribute, a bad value, a wrong VR), ``Warning - ...`` for what is legal but dubious.
An export is offered only when its DICOM files have no errors; warnings are kept and shown.
When ``dciodvfy`` is not installed the check reports that it could not run (``passed=None``),
with the command that installs it, rather than pretending the files were checked.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from radseg.contracts import ExportCheck

__all__ = ["DciodvfyResult", "dciodvfy_check", "find_dciodvfy", "validate"]

_TIMEOUT_S = 120.0


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

    :raises FileNotFoundError: ``dciodvfy`` is not installed.
    """
    executable = executable or find_dciodvfy()
    if executable is None:
        raise FileNotFoundError("dciodvfy is not installed (apt-get install dicom3tools)")
    completed = subprocess.run(
        [executable, "-new", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=_TIMEOUT_S,
        check=False,
    )
    result = DciodvfyResult(Path(path))
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
        result = validate(path, executable=executable)
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
