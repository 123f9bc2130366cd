"""Export a prediction with an exporter plugin, check it, store it, and optionally send it.

Every export goes through the same steps, whichever plugin writes it:

1. the prediction's labels, class map, source series (the stored de-identified DICOM) and
   model are gathered into an :class:`~radseg.contracts.ExportRequest`;
2. the exporter writes into a staging folder under ``exports/.staging/`` (never where the user
   will look);
3. the exporter's :meth:`~radseg.contracts.Exporter.verify` re-reads what it wrote with an
   independent reader and compares; for DICOM exporters the host adds ``dciodvfy``;
4. only when no check failed is the export moved to ``exports/prediction-<id>/`` and copied
   to ``out``; a failed check removes the staged files and raises :class:`ExportCheckFailed`
   with every reason (the failure is still recorded, so the UI can show why);
5. with ``to_pacs`` the verified DICOM objects are sent over STOW-RS, fetched back over
   WADO-RS and verified again as they came back from the PACS.

Each export, verified or failed, is an :class:`~radseg.db.models.Export` row with its checks
and an audit event.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from radseg.audit import record
from radseg.contracts import (
    AlgorithmInfo,
    ExportCheck,
    ExportRequest,
    ProgressFn,
    SliceRef,
    SourceSeries,
    no_progress,
)
from radseg.core import Platform
from radseg.db.models import Export, LabelSet, Prediction
from radseg.errors import InputError
from radseg.imaging.dciodvfy import dciodvfy_check
from radseg.imaging.labels import index_to_patient
from radseg.imaging.volumes import read_volume
from radseg.storage import atomic_directory, atomic_path, inside, remove
from radseg.workflows.datasets import classes_from_rows

__all__ = [
    "ExportCheckFailed",
    "ExportOutcome",
    "build_request",
    "export",
    "parse_options",
    "stored_sidecars",
]

log = logging.getLogger(__name__)

#: staging folders older than this are left by a crashed export and removed
_STALE_STAGING_S = 3600.0


class ExportCheckFailed(InputError):
    """A check of the written export failed; nothing was offered. ``outcome`` has every check."""

    def __init__(self, message: str, outcome: ExportOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class ExportOutcome:
    """What one export produced: its row, the stored copy, the user's copy and the checks."""

    export_id: int
    format: str
    status: str
    checks: list[ExportCheck]
    path: Path | None = None
    out: Path | None = None
    destination: str = ""
    remote: dict[str, Any] | None = None
    message: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.checks)


@dataclass
class _Staged:
    written: Path
    checks: list[ExportCheck] = field(default_factory=list)


def parse_options(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["seg_type=labelmap", ...]`` → ``{"seg_type": "labelmap"}``.

    :raises InputError: an item without ``=``.
    """
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"option {pair!r} is not KEY=VALUE (e.g. seg_type=labelmap)")
        options[key.strip()] = value.strip()
    return options


def build_request(
    platform: Platform,
    prediction_id: int,
    options: Mapping[str, Any] | None = None,
    *,
    corrected: bool = False,
) -> ExportRequest:
    """Gather prediction ``prediction_id``'s labels, series and model into a request.

    :param corrected: export the latest reviewer's correction of the prediction (a label
        version saved from the viewer's brush) instead of the model's own output.
    :raises InputError: the prediction does not exist, its mask file is missing, or
        ``corrected`` is asked for and nobody corrected it.
    """
    with platform.sessions() as session:
        prediction = session.get(Prediction, prediction_id)
        if prediction is None:
            raise InputError(
                f"prediction {prediction_id} does not exist; see `radseg predictions list`"
            )
        version = prediction.model_version
        series = prediction.series
        study = series.study
        classes = classes_from_rows(version.config["classes"])
        mask_path = platform.resolve(prediction.mask_path)
        correction = None
        if corrected:
            label_set = session.scalars(
                select(LabelSet)
                .where(LabelSet.prediction_id == prediction_id)
                .order_by(LabelSet.version.desc())
            ).first()
            if label_set is None:
                raise InputError(
                    f"prediction {prediction_id} has no correction to export; correct it in the "
                    "viewer first, or export the prediction itself"
                )
            mask_path = platform.resolve(label_set.path)
            classes = classes_from_rows(label_set.classes) or classes
            correction = f"label version {label_set.version} by {label_set.author or 'unknown'}"
        architecture = str(version.config.get("architecture", version.model.backend))
        algorithm = AlgorithmInfo(
            name=f"radseg {architecture} (model {version.model.name!r})",
            version=f"model version {version.id}",
            model_version_id=version.id,
            provenance=dict(prediction.provenance or {}),
        )
        instance_rows = [
            (i.sop_instance_uid, i.slice_index, i.frame_number) for i in series.instances
        ]
        study_uid, series_uid = study.study_instance_uid, series.series_instance_uid
        modality, patient_key, description = series.modality, study.patient_key, series.description
        volume_path = platform.resolve(series.volume_path)
    if not mask_path.is_file():
        raise InputError(
            f"prediction {prediction_id}'s mask file is missing from the store; predict again"
        )
    labels, geometry = read_volume(mask_path)
    rows = sorted(instance_rows, key=lambda row: row[1])
    # each slice's ImagePositionPatient: its first voxel centre, index (0, 0, k)
    positions = index_to_patient(np.asarray([(0, 0, k) for _, k, _ in rows]), geometry)
    slices = [
        SliceRef(
            sop_instance_uid=uid,
            slice_index=k,
            image_position_patient=(float(x), float(y), float(z)),
            frame_number=frame or None,
        )
        for (uid, k, frame), (x, y, z) in zip(rows, positions, strict=True)
    ]
    originals = platform.path("studies", study_uid, series_uid)
    instances = sorted(originals.glob("*.dcm")) if originals.is_dir() else []
    return ExportRequest(
        prediction_id=prediction_id,
        labels=labels.astype(np.uint8, copy=False),
        geometry=geometry,
        classes=classes,
        series=SourceSeries(
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            modality=modality,
            patient_key=patient_key,
            slices=slices,
            instances=instances,
            volume_path=volume_path if volume_path.is_file() else None,
            description=description,
        ),
        algorithm=algorithm,
        options=dict(options or {}),
        correction=correction,
    )


def dicom_files(written: Path) -> list[Path]:
    """The DICOM files of an export: the file itself, or the ``*.dcm`` files of a folder."""
    if written.is_dir():
        return sorted(written.rglob("*.dcm"))
    return [written]


def _verify(exporter: Any, fmt: str, request: ExportRequest, written: Path) -> list[ExportCheck]:
    """``exporter.verify``, with an exception turned into a failed check.

    A verify that raises (a plugin bug, a file it cannot parse) must block the export and be
    recorded like any failed check, not escape as a crash that leaves no Export row.
    """
    try:
        return list(exporter.verify(request, written))
    except Exception as exc:
        log.exception("the %s exporter's verify raised", fmt)
        return [
            ExportCheck(
                "re-read",
                False,
                f"the {fmt} exporter could not check what it wrote ({type(exc).__name__}); "
                "not offered — see the worker's log",
            )
        ]


def _check(
    platform: Platform, fmt: str, request: ExportRequest, written: Path
) -> list[ExportCheck]:
    exporter = platform.plugins.exporter(fmt)
    checks = _verify(exporter, fmt, request, written)
    if not checks:
        checks.append(
            ExportCheck("re-read", False, f"the {fmt} exporter returned no checks; not offered")
        )
    if getattr(exporter, "dicom", False):
        checks.append(dciodvfy_check(dicom_files(written)))
    return checks


def _clean_stale_staging(staging_root: Path) -> None:
    if not staging_root.is_dir():
        return
    now = time.time()
    for entry in staging_root.iterdir():
        try:
            if now - entry.stat().st_mtime > _STALE_STAGING_S:
                remove(entry, within=staging_root)
        except OSError as exc:  # gone meanwhile, or not removable: the next export tries again
            log.debug("stale export staging %s not removed: %s", entry, exc)


def _copy_out(stored: Path, out: Path, name: str) -> Path:
    """Copy the stored export to the user's ``out``; a folder receives it as ``name`` (e.g.
    ``prediction-4-dicom-seg.dcm``, replacing an earlier export of the same name there)."""
    out = Path(out)
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


def stored_sidecars(stored: Path) -> list[Path]:
    """Files written next to a single-file export (e.g. NIfTI's class-map JSON)."""
    stem = stored.name.split(".", 1)[0]
    return [p for p in stored.parent.glob(f"{stem}.*") if p != stored and p.is_file()]


def _sidecar_name(out: Path, sidecar: Path) -> str:
    return out.name.split(".", 1)[0] + "." + sidecar.name.split(".", 1)[1]


def _store(platform: Platform, prediction_id: int, staged: Path) -> Path:
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


def export(
    platform: Platform,
    *,
    prediction_id: int,
    fmt: str,
    out: Path | None = None,
    to_pacs: str | None = None,
    options: Mapping[str, Any] | None = None,
    with_images: bool = False,
    corrected: bool = False,
    actor: str = "cli",
    progress: ProgressFn = no_progress,
) -> ExportOutcome:
    """Write prediction ``prediction_id`` as ``fmt``, check it, store it, copy it to ``out``.

    :param to_pacs: a ``[pacs.<name>]`` destination; the verified DICOM objects are sent there
        and read back (``fmt`` must be a DICOM exporter).
    :param with_images: with ``to_pacs``, also send the de-identified source series when the
        PACS does not hold it yet, so the objects' references resolve there.
    :param corrected: export the latest reviewer's correction instead of the prediction.
    :raises ExportCheckFailed: a check failed (the export is recorded as failed, not offered).
    :raises InputError: unknown prediction or format, or a format that cannot go to a PACS.
    :raises radseg.pacs.PacsError: the PACS refused or could not be reached.
    """
    exporter = platform.plugins.exporter(fmt)
    if to_pacs is not None and not getattr(exporter, "dicom", False):
        raise InputError(
            f"{fmt} exports are not DICOM and cannot go to a PACS; use --format dicom-seg or "
            "--format rtstruct with --to-pacs"
        )
    if out is not None and not exporter.suffix and Path(out).is_file():
        # checked before any work: a folder export cannot replace a file
        raise InputError(f"{out} is a file; a {fmt} export is a folder: give a folder for --out")
    pacs_settings = None
    if to_pacs is not None:
        from radseg.pacs import destination

        pacs_settings = destination(platform.settings, to_pacs)
    progress(0.0, "reading the prediction")
    request = build_request(platform, prediction_id, options, corrected=corrected)
    staging_root = platform.path("exports", ".staging")
    _clean_stale_staging(staging_root)
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"prediction-{prediction_id}-", dir=staging_root))
    try:
        progress(0.1, f"writing {fmt}")
        written = exporter.export(
            request, staging / f"prediction-{prediction_id}-{fmt}{exporter.suffix}"
        )
        progress(0.5, "checking the export by reading it back")
        checks = _check(platform, fmt, request, written)
        outcome = ExportOutcome(
            export_id=0, format=fmt, status="verified", checks=checks, destination=to_pacs or ""
        )
        if not outcome.passed:
            failed = [c for c in checks if c.passed is False]
            outcome.status = "failed"
            outcome.message = "; ".join(f"{c.name}: {c.detail}" for c in failed)
            outcome.export_id = _record(platform, prediction_id, outcome, request, actor, None)
            raise ExportCheckFailed(
                f"the {fmt} export of prediction {prediction_id} failed its checks and was not "
                f"offered: {outcome.message}",
                outcome,
            )
        stored = _store(platform, prediction_id, written)
        outcome.path = stored
        if out is not None:
            outcome.out = _copy_out(stored, Path(out), written.name)
        if to_pacs is not None and pacs_settings is not None:
            progress(0.7, f"sending to PACS {to_pacs}")
            try:
                outcome.remote = _send_and_read_back(
                    platform, fmt, request, stored, to_pacs, pacs_settings, with_images, staging
                )
            except Exception as exc:
                outcome.status = "send-failed"
                outcome.message = str(exc)
                outcome.export_id = _record(
                    platform, prediction_id, outcome, request, actor, stored
                )
                raise
            round_trip = outcome.remote["check"]
            outcome.checks.append(ExportCheck.from_dict(round_trip))
            outcome.status = "sent" if round_trip["passed"] else "send-failed"
            if not round_trip["passed"]:
                outcome.message = round_trip["detail"]
        outcome.export_id = _record(platform, prediction_id, outcome, request, actor, stored)
        if outcome.status == "send-failed":
            raise ExportCheckFailed(
                f"PACS {to_pacs!r} stored the export but what it returns differs: "
                f"{outcome.message}",
                outcome,
            )
        progress(1.0, f"{fmt} export {outcome.status}")
        return outcome
    finally:
        try:
            remove(staging, within=staging_root)
        except OSError as exc:  # left for _clean_stale_staging
            log.warning("export staging %s not removed: %s", staging, exc)


def _send_and_read_back(
    platform: Platform,
    fmt: str,
    request: ExportRequest,
    stored: Path,
    name: str,
    pacs_settings: Any,
    with_images: bool,
    staging: Path,
) -> dict[str, Any]:
    from radseg.pacs import has_series, retrieve, send

    remote: dict[str, Any] = {"images_sent": 0}
    if with_images and request.series.instances:
        series = request.series
        if not has_series(
            name, pacs_settings, series.study_instance_uid, series.series_instance_uid
        ):
            sent_images = send(name, pacs_settings, series.instances)
            remote["images_sent"] = len(sent_images.instances)
    files = dicom_files(stored)
    sent = send(name, pacs_settings, files)
    remote["instances"] = [
        {"study": i.study_instance_uid, "series": i.series_instance_uid, "sop": i.sop_instance_uid}
        for i in sent.instances
    ]
    back = staging / "from-pacs"
    back.mkdir()
    copies = []
    for k, instance in enumerate(sent.instances):
        ds = retrieve(name, pacs_settings, instance)
        path = back / f"{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        copies.append(path)
    written = copies[0] if not stored.is_dir() else back
    checks = _verify(platform.plugins.exporter(fmt), fmt, request, written)
    failed = [c for c in checks if c.passed is False]
    detail = (
        f"sent {len(sent.instances)} object(s) over STOW-RS and read them back over WADO-RS: "
        + ("; ".join(f"{c.name}: {c.detail}" for c in failed) if failed else "identical")
    )
    remote["check"] = ExportCheck(f"PACS round trip ({name})", not failed, detail).to_dict()
    return remote


def _record(
    platform: Platform,
    prediction_id: int,
    outcome: ExportOutcome,
    request: ExportRequest,
    actor: str,
    stored: Path | None,
) -> int:
    with platform.sessions.begin() as session:
        row = Export(
            prediction_id=prediction_id,
            format=outcome.format,
            status=outcome.status,
            path=platform.relative(stored) if stored is not None else "",
            options={
                **{k: str(v) for k, v in request.options.items()},
                **({"correction": request.correction} if request.correction else {}),
            },
            checks=[c.to_dict() for c in outcome.checks],
            destination=outcome.destination,
            remote=outcome.remote,
            message=outcome.message,
            created_by=actor,
        )
        session.add(row)
        session.flush()
        record(
            session,
            actor,
            "export",
            f"prediction:{prediction_id}",
            format=outcome.format,
            status=outcome.status,
            destination=outcome.destination,
            export_id=row.id,
        )
        return row.id
