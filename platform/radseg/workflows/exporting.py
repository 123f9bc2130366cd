"""Export a prediction with an exporter plugin, check it, store it, and optionally send it.

Every export goes through the same steps, whichever plugin writes it:

1. the prediction's labels, class map, source series (the stored de-identified DICOM) and
   model are gathered into an :class:`~radseg.contracts.ExportRequest`
   (:mod:`radseg.workflows.export_request`);
2. the exporter writes into a staging folder under ``exports/.staging/`` (never where the user
   will look; :mod:`radseg.workflows.export_files`);
3. the exporter's :meth:`~radseg.contracts.Exporter.verify` re-reads what it wrote with an
   independent reader and compares; for DICOM exporters the host adds ``dciodvfy``
   (:mod:`radseg.workflows.export_checks`);
4. only when no check failed is the export moved to ``exports/prediction-<id>/`` and copied
   to ``out``; a failed check removes the staged files and raises :class:`ExportCheckFailed`
   with every reason (the failure is still recorded, so the UI can show why);
5. with ``to_pacs`` the verified DICOM objects are sent over STOW-RS, fetched back over
   WADO-RS and verified again as they came back from the PACS.

Each export, verified or failed, is an :class:`~radseg.db.models.Export` row with its checks
and an audit event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radseg.audit import record
from radseg.contracts import ExportCheck, Exporter, ExportRequest, ProgressFn, no_progress
from radseg.core import Platform
from radseg.db.models import Export
from radseg.errors import InputError
from radseg.settings import PacsSettings
from radseg.workflows.export_checks import check_export, pacs_round_trip
from radseg.workflows.export_files import (
    copy_out,
    new_staging,
    remove_staging,
    store_export,
    stored_sidecars,
)
from radseg.workflows.export_request import build_request

__all__ = [
    "ExportCheckFailed",
    "ExportOutcome",
    "export",
    "parse_options",
    # re-exported: the web's prediction pages list an export's sidecars
    "stored_sidecars",
]


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
    pacs_settings = _destination(platform, exporter, fmt, out=out, to_pacs=to_pacs)
    progress(0.0, "reading the prediction")
    request = build_request(platform, prediction_id, options, corrected=corrected)
    staging = new_staging(platform, prediction_id)
    try:
        progress(0.1, f"writing {fmt}")
        written = exporter.export(
            request, staging / f"prediction-{prediction_id}-{fmt}{exporter.suffix}"
        )
        progress(0.5, "checking the export by reading it back")
        outcome = ExportOutcome(
            export_id=0,
            format=fmt,
            status="verified",
            checks=check_export(platform, fmt, request, written),
            destination=to_pacs or "",
        )
        if not outcome.passed:
            raise _refused(platform, request, outcome, actor)
        stored = store_export(platform, prediction_id, written)
        outcome.path = stored
        if out is not None:
            outcome.out = copy_out(stored, Path(out), written.name)
        if to_pacs is not None and pacs_settings is not None:
            progress(0.7, f"sending to PACS {to_pacs}")
            _send(platform, request, outcome, stored, pacs_settings, with_images, staging, actor)
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
        remove_staging(platform, staging)


def _destination(
    platform: Platform, exporter: Exporter, fmt: str, *, out: Path | None, to_pacs: str | None
) -> PacsSettings | None:
    """Check ``out`` and ``to_pacs`` before any work; the PACS' settings (``None``: no PACS).

    :raises InputError: a non-DICOM format to a PACS, a folder export onto a file, or an
        unknown PACS.
    """
    if to_pacs is not None and not getattr(exporter, "dicom", False):
        raise InputError(
            f"{fmt} exports are not DICOM and cannot go to a PACS; use --format dicom-seg or "
            "--format rtstruct with --to-pacs"
        )
    if out is not None and not exporter.suffix and Path(out).is_file():
        raise InputError(f"{out} is a file; a {fmt} export is a folder: give a folder for --out")
    if to_pacs is None:
        return None
    from radseg.pacs import destination

    return destination(platform.settings, to_pacs)


def _refused(
    platform: Platform, request: ExportRequest, outcome: ExportOutcome, actor: str
) -> ExportCheckFailed:
    """Record an export that failed its checks; the error that says why it was not offered."""
    failed = [c for c in outcome.checks if c.passed is False]
    outcome.status = "failed"
    outcome.message = "; ".join(f"{c.name}: {c.detail}" for c in failed)
    outcome.export_id = _record(platform, request.prediction_id, outcome, request, actor, None)
    return ExportCheckFailed(
        f"the {outcome.format} export of prediction {request.prediction_id} failed its checks "
        f"and was not offered: {outcome.message}",
        outcome,
    )


def _send(
    platform: Platform,
    request: ExportRequest,
    outcome: ExportOutcome,
    stored: Path,
    pacs_settings: PacsSettings,
    with_images: bool,
    staging: Path,
    actor: str,
) -> None:
    """Send the stored export to ``outcome.destination`` and add the round trip's check.

    A send that raises is recorded (status ``send-failed``) before the error goes on.
    """
    try:
        outcome.remote = pacs_round_trip(
            platform,
            outcome.format,
            request,
            stored,
            outcome.destination,
            pacs_settings,
            with_images,
            staging,
        )
    except Exception as exc:
        outcome.status = "send-failed"
        outcome.message = str(exc)
        outcome.export_id = _record(
            platform, request.prediction_id, outcome, request, actor, stored
        )
        raise
    round_trip = outcome.remote["check"]
    outcome.checks.append(ExportCheck.from_dict(round_trip))
    outcome.status = "sent" if round_trip["passed"] else "send-failed"
    if not round_trip["passed"]:
        outcome.message = round_trip["detail"]


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
