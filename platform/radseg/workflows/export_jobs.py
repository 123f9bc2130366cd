"""Exports as someone asks for them: queue an ``export`` job for a prediction, and hand out what a
finished export stored.

:func:`request_export` checks the request against the registered exporters and the configured
PACS before anything is queued (an unknown format or PACS, or a non-DICOM format sent to a PACS,
is refused with the valid names), so the prediction page, the JSON API and scripts refuse the
same requests with the same messages. The worker then runs :func:`radseg.workflows.exporting.export`
(write, check, store, send). :func:`open_export` is a download: audited as ``export.download``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from radseg import audit
from radseg.core import Platform
from radseg.db.models import Export, Job, JobState, LabelSet, Prediction
from radseg.errors import InputError, NotFound
from radseg.roles import VIEWERS, Actor, require_role
from radseg.workflows.jobs import queue_job
from radseg.workflows.lookup import get_row

#: the DICOM SEG encodings a user may choose (highdicom's BINARY and LABELMAP segmentation types)
SEG_TYPES = ("binary", "labelmap")
#: how many recent export jobs are searched for this prediction's queued and running ones
ACTIVE_JOB_WINDOW = 500


# --- reads ------------------------------------------------------------------------------------


def export_formats(platform: Platform) -> list[dict[str, Any]]:
    """The registered exporters: ``name`` and whether it writes DICOM (so can go to a PACS)."""
    return [
        {"name": name, "dicom": bool(getattr(platform.plugins.exporters.get(name), "dicom", False))}
        for name in platform.plugins.exporters.names()
    ]


def correction_versions(session: Session, prediction_id: int) -> list[int]:
    """The label versions reviewers saved as corrections of this prediction, newest first."""
    return list(
        session.scalars(
            select(LabelSet.version)
            .where(LabelSet.prediction_id == prediction_id)
            .order_by(LabelSet.version.desc())
        )
    )


def exports_of(session: Session, prediction_id: int) -> list[Export]:
    """The prediction's exports, newest first."""
    return list(
        session.scalars(
            select(Export).where(Export.prediction_id == prediction_id).order_by(Export.id.desc())
        )
    )


def active_export_jobs(session: Session, prediction_id: int) -> list[Job]:
    """Queued and running export jobs of this prediction (the id is in the JSON payload)."""
    jobs = session.scalars(
        select(Job)
        .where(Job.kind == "export", Job.state.in_([JobState.QUEUED, JobState.RUNNING]))
        .order_by(Job.id.desc())
        .limit(ACTIVE_JOB_WINDOW)
    )
    return [j for j in jobs if (j.payload or {}).get("prediction_id") == prediction_id]


# --- queueing an export -----------------------------------------------------------------------


def _checked_options(options: Any) -> dict[str, str]:
    if options is None:
        options = {}
    if not isinstance(options, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str | int | float | bool) for k, v in options.items()
    ):
        raise InputError('options must be an object of plain values, e.g. {"seg_type": "binary"}')
    if "seg_type" in options and str(options["seg_type"]) not in SEG_TYPES:
        raise InputError(f"seg_type must be one of: {', '.join(SEG_TYPES)}")
    return {k: str(v) for k, v in options.items()}


def _checked_pacs(platform: Platform, fmt: str, to_pacs: Any) -> str:
    if not isinstance(to_pacs, str) or to_pacs not in platform.settings.pacs:
        known = ", ".join(sorted(platform.settings.pacs)) or "none is configured"
        raise InputError(f"no PACS called {to_pacs!r} (configured: {known})")
    if not getattr(platform.plugins.exporters.get(fmt), "dicom", False):
        dicom = [f["name"] for f in export_formats(platform) if f["dicom"]]
        raise InputError(
            f"{fmt} exports are not DICOM and cannot go to a PACS; choose one of: "
            f"{', '.join(dicom) or 'none is registered'}"
        )
    return to_pacs


def export_payload(
    platform: Platform,
    session: Session,
    prediction_id: int,
    *,
    fmt: Any,
    to_pacs: Any = None,
    options: Any = None,
    with_images: Any = False,
    corrected: Any = False,
) -> dict[str, Any]:
    """The ``export`` job's payload for this request, checked against the registry and settings.

    The values are typed ``Any`` on purpose: a script's JSON reaches here too, and each is
    checked.

    :raises InputError: an unknown format or PACS, a non-DICOM format sent to a PACS, options
        that are not an object of plain values, or ``corrected`` without a correction; the
        message lists what is valid.
    """
    formats = platform.plugins.exporters.names()
    if not isinstance(fmt, str) or fmt not in formats:
        raise InputError(
            f"unknown export format {fmt!r}; available formats: {', '.join(formats) or 'none'}"
        )
    checked_options = _checked_options(options)
    if not isinstance(with_images, bool):
        raise InputError("with_images must be true or false")
    if not isinstance(corrected, bool):
        raise InputError("corrected must be true or false")
    if corrected and not correction_versions(session, prediction_id):
        raise InputError(
            f"prediction {prediction_id} has no correction to export; correct it in the viewer "
            "first, or export the prediction itself"
        )
    payload: dict[str, Any] = {
        "prediction_id": prediction_id,
        "format": fmt,
        "options": checked_options,
    }
    if corrected:
        payload["corrected"] = True
    if to_pacs not in (None, ""):
        payload["to_pacs"] = _checked_pacs(platform, fmt, to_pacs)
        payload["with_images"] = with_images
    return payload


def request_export(
    platform: Platform,
    actor: Actor,
    prediction_id: int,
    *,
    fmt: str,
    to_pacs: str | None = None,
    options: Mapping[str, Any] | None = None,
    with_images: bool = False,
    corrected: bool = False,
    via: str | None = None,
) -> Job:
    """Queue an ``export`` job of the prediction as ``fmt`` (a registered exporter), optionally
    sent to the PACS ``to_pacs`` (``with_images``: the source series too), of the reviewer's
    latest correction instead of the prediction with ``corrected``; audited as
    ``job.submit.export`` on the prediction.

    :raises PermissionDenied: ``actor``'s role may not look at predictions.
    :raises NotFound: there is no such prediction.
    :raises InputError: the request does not fit the registry or settings (see
        :func:`export_payload`).
    """
    require_role(actor, VIEWERS, "export predictions")
    with platform.sessions.begin() as session:
        get_row(session, Prediction, prediction_id, "prediction")
        payload = export_payload(
            platform,
            session,
            prediction_id,
            fmt=fmt,
            to_pacs=to_pacs,
            options=options,
            with_images=with_images,
            corrected=corrected,
        )
        return queue_job(
            session,
            platform,
            actor,
            "export",
            payload,
            target=f"prediction:{prediction_id}",
            **({"via": via} if via else {}),
        )


# --- a download -------------------------------------------------------------------------------


def open_export(
    platform: Platform, actor: Actor, export_id: int, *, via: str | None = None
) -> tuple[Export, Path]:
    """The export and its stored file or folder, for ``actor`` to download; audited as
    ``export.download`` on its prediction.

    :raises NotFound: there is no such export, it failed its checks (nothing was stored), or its
        files are no longer in the store.
    """
    require_role(actor, VIEWERS, "download exports")
    with platform.sessions.begin() as session:
        row = get_row(session, Export, export_id, "export")
        if not row.path:
            raise NotFound(f"export {export_id} failed its checks; nothing was stored to download")
        stored = platform.resolve(row.path)
        exports = platform.path("exports").resolve()
        if exports not in stored.resolve().parents or not stored.exists():
            raise NotFound(
                f"export {export_id}'s files are no longer in the store; export it again"
            )
        audit.record(
            session,
            actor.username,
            "export.download",
            f"prediction:{row.prediction_id}",
            export_id=row.id,
            format=row.format,
            **({"via": via} if via else {}),
        )
    return row, stored
