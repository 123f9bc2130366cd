"""The files of an export: its staging folder, the stored copy and the user's copy.

An exporter writes into a fresh folder under ``exports/.staging/`` (never where the user will
look); a verified export is moved into ``exports/prediction-<id>/`` under a unique name, then
copied to the user's ``--out``. A staging folder left by a crashed export is removed by a later
export once it is older than an hour.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from radseg.core import Platform
from radseg.errors import InputError
from radseg.storage import atomic_directory, atomic_path, inside, remove

__all__ = [
    "copy_out",
    "dicom_files",
    "new_staging",
    "remove_staging",
    "store_export",
    "stored_sidecars",
]

log = logging.getLogger(__name__)

#: staging folders older than this are left by a crashed export and removed
_STALE_STAGING_S = 3600.0


def staging_root(platform: Platform) -> Path:
    return platform.path("exports", ".staging")


def new_staging(platform: Platform, prediction_id: int) -> Path:
    """A fresh staging folder for one export of ``prediction_id`` (stale ones removed first)."""
    root = staging_root(platform)
    _clean_stale_staging(root)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"prediction-{prediction_id}-", dir=root))


def remove_staging(platform: Platform, staging: Path) -> None:
    """Remove an export's staging folder; one that cannot be removed is left for a later export."""
    try:
        remove(staging, within=staging_root(platform))
    except OSError as exc:  # left for _clean_stale_staging
        log.warning("export staging %s not removed: %s", staging, exc)


def _clean_stale_staging(root: Path) -> None:
    if not root.is_dir():
        return
    now = time.time()
    for entry in root.iterdir():
        try:
            if now - entry.stat().st_mtime > _STALE_STAGING_S:
                remove(entry, within=root)
        except OSError as exc:  # gone meanwhile, or not removable: the next export tries again
            log.debug("stale export staging %s not removed: %s", entry, exc)


def dicom_files(written: Path) -> list[Path]:
    """The DICOM files of an export: the file itself, or the ``*.dcm`` files of a folder."""
    if written.is_dir():
        return sorted(written.rglob("*.dcm"))
    return [written]


def stored_sidecars(stored: Path) -> list[Path]:
    """Files written next to a single-file export (e.g. NIfTI's class-map JSON)."""
    stem = stored.name.split(".", 1)[0]
    return [p for p in stored.parent.glob(f"{stem}.*") if p != stored and p.is_file()]


def _sidecar_name(out: Path, sidecar: Path) -> str:
    return out.name.split(".", 1)[0] + "." + sidecar.name.split(".", 1)[1]


def store_export(platform: Platform, prediction_id: int, staged: Path) -> Path:
    """Move the staged export (and its sidecars) into ``exports/prediction-<id>/``."""
    folder = platform.path("exports", f"prediction-{prediction_id}")
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    base = f"{stamp}-{uuid.uuid4().hex[:6]}-"
    # the names come from the exporter plugin: one plain name each, kept inside the folder
    for sidecar in stored_sidecars(staged) if staged.is_file() else []:
        sidecar.replace(inside(folder, base + sidecar.name))
    target = inside(folder, base + staged.name)
    staged.replace(target)
    return target


def copy_out(stored: Path, out: Path, name: str) -> Path:
    """Copy the stored export to the user's ``out``; a folder receives it as ``name`` (e.g.
    ``prediction-4-dicom-seg.dcm``, replacing an earlier export of the same name there)."""
    out = _out_path(stored, Path(out), name)
    out.parent.mkdir(parents=True, exist_ok=True)
    if stored.is_dir():
        if out.exists():
            raise InputError(f"{out} exists; choose another --out or remove it first")
        with atomic_directory(out) as tmp:
            shutil.copytree(stored, tmp, dirs_exist_ok=True)
        return out
    with atomic_path(out) as tmp:
        shutil.copyfile(stored, tmp)
    for sidecar in stored_sidecars(stored):
        with atomic_path(out.with_name(_sidecar_name(out, sidecar))) as tmp:
            shutil.copyfile(sidecar, tmp)
    return out


def _out_path(stored: Path, out: Path, name: str) -> Path:
    """Where the user's copy goes: ``out/name`` in a folder, else ``out`` with the stored
    export's suffix when it has none."""
    if out.is_dir():
        out = out / name
        if stored.is_dir():
            # never replace a folder: an earlier export's folder gets a sibling "-2", "-3", ...
            base, n = out, 2
            while out.exists():
                out, n = base.with_name(f"{base.name}-{n}"), n + 1
    elif stored.is_dir():
        pass
    elif stored.name.endswith(".nii.gz") and not out.name.endswith(".nii.gz"):
        out = out.with_name(out.name.removesuffix(".nii") + ".nii.gz")
    elif stored.suffix and not out.suffix:
        out = out.with_name(out.name + stored.suffix)
    return out
