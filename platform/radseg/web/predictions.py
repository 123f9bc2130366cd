"""A prediction's page and its exports: export it as any registered format, see the checks,
download what passed.

Opening the page is a view of patient data (audit ``prediction.view``). The export form queues
an ``export`` job (the worker writes, checks and stores the export; the workflow audits it as
``export``); the page lists every export of the prediction with each check, so a failed check
is shown with its reason and offers nothing to download. A download is audited as
``export.download``; an export stored as a folder (COCO, PNG) is sent as a zip made on the fly.

The same request is validated here for the form and for ``POST /api/predictions/<id>/exports``
(:func:`export_payload`): an unknown format or PACS, or a non-DICOM format sent to a PACS, is
refused before a job is queued.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from flask import Blueprint, abort, flash, redirect, render_template, request, send_file, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from radseg import audit
from radseg.core import Platform
from radseg.db.models import Export, Job, JobState, LabelSet, Prediction, ReviewStatus
from radseg.errors import InputError
from radseg.roles import may_see_job
from radseg.web.actors import current_actor
from radseg.web.auth import VIEWERS, roles_required, web_user
from radseg.web.context import current_platform, db
from radseg.web.jobs import POLL_MS, job_view
from radseg.web.review import reviews_of
from radseg.workflows.exporting import stored_sidecars
from radseg.workflows.jobs import queue_job

bp = Blueprint("predictions", __name__)

#: the DICOM SEG encodings a user may choose (highdicom's BINARY and LABELMAP segmentation types)
SEG_TYPES = ("binary", "labelmap")
#: how many recent export jobs are searched for this prediction's queued and running ones
ACTIVE_JOB_WINDOW = 500
#: a folder export is zipped in memory up to this size, then in a temporary file
ZIP_SPOOL_BYTES = 64 << 20


# --- the request, shared with the API ----------------------------------------------------------


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


def export_payload(
    platform: Platform,
    prediction_id: int,
    *,
    fmt: Any,
    to_pacs: Any = None,
    options: Any = None,
    with_images: Any = False,
    corrected: Any = False,
) -> dict[str, Any]:
    """The ``export`` job's payload for this request, checked against the registry and settings.

    :raises InputError: an unknown format or PACS, a non-DICOM format sent to a PACS, or options
        that are not an object of plain values; the message lists what is valid.
    """
    formats = platform.plugins.exporters.names()
    if not isinstance(fmt, str) or fmt not in formats:
        raise InputError(
            f"unknown export format {fmt!r}; available formats: {', '.join(formats) or 'none'}"
        )
    if options is None:
        options = {}
    if not isinstance(options, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str | int | float | bool) for k, v in options.items()
    ):
        raise InputError('options must be an object of plain values, e.g. {"seg_type": "binary"}')
    if "seg_type" in options and str(options["seg_type"]) not in SEG_TYPES:
        raise InputError(f"seg_type must be one of: {', '.join(SEG_TYPES)}")
    if not isinstance(with_images, bool):
        raise InputError("with_images must be true or false")
    if not isinstance(corrected, bool):
        raise InputError("corrected must be true or false")
    if corrected and not correction_versions(db(), prediction_id):
        raise InputError(
            f"prediction {prediction_id} has no correction to export; correct it in the viewer "
            "first, or export the prediction itself"
        )
    payload: dict[str, Any] = {
        "prediction_id": prediction_id,
        "format": fmt,
        "options": {k: str(v) for k, v in options.items()},
    }
    if corrected:
        payload["corrected"] = True
    if to_pacs not in (None, ""):
        if not isinstance(to_pacs, str) or to_pacs not in platform.settings.pacs:
            known = ", ".join(sorted(platform.settings.pacs)) or "none is configured"
            raise InputError(f"no PACS called {to_pacs!r} (configured: {known})")
        if not getattr(platform.plugins.exporters.get(fmt), "dicom", False):
            dicom = [f["name"] for f in export_formats(platform) if f["dicom"]]
            raise InputError(
                f"{fmt} exports are not DICOM and cannot go to a PACS; choose one of: "
                f"{', '.join(dicom) or 'none is registered'}"
            )
        payload["to_pacs"] = to_pacs
        payload["with_images"] = with_images
    return payload


def export_to_dict(row: Export) -> dict[str, Any]:
    """What the page's table and the API show of one export."""
    return {
        "id": row.id,
        "prediction_id": row.prediction_id,
        "format": row.format,
        "status": row.status,
        "checks": [
            {
                "name": str(c.get("name", "")),
                "passed": c.get("passed"),
                "detail": str(c.get("detail", "")),
            }
            for c in row.checks or []
        ],
        "options": dict(row.options or {}),
        "destination": row.destination,
        "remote": row.remote,
        "message": row.message,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "download_url": url_for("predictions.download", export_id=row.id) if row.path else None,
    }


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


def get_prediction(prediction_id: int) -> Prediction:
    found = db().get(Prediction, prediction_id)
    if found is None:
        abort(404, f"there is no prediction {prediction_id}")
    return found


# --- pages ----------------------------------------------------------------------------------


@bp.get("/predictions/<int:prediction_id>")
@roles_required(*VIEWERS)
def prediction_page(prediction_id: int) -> Any:
    session = db()
    platform = current_platform()
    prediction = get_prediction(prediction_id)
    reviews = reviews_of(session, prediction.id)
    latest: dict[int | None, str] = {}
    for r in reviews:  # oldest first: the last decision per segment wins
        latest[r.class_id] = ReviewStatus(r.status).value
    audit.record(
        session,
        web_user().username,
        "prediction.view",
        f"prediction:{prediction.id}",
        series=prediction.series_id,
    )
    session.commit()
    return render_template(
        "prediction.html",
        prediction=prediction,
        series=prediction.series,
        study=prediction.series.study,
        version=prediction.model_version,
        reviews=reviews,
        latest_decision=latest.get(None),
        exports=[export_to_dict(e) for e in exports_of(session, prediction.id)],
        jobs=[
            # the format is all of an export's payload that this list shows
            {**job_view(j, current_actor()), "format": str((j.payload or {}).get("format", ""))}
            for j in active_export_jobs(session, prediction.id)
            if may_see_job(j, current_actor())
        ],
        formats=export_formats(platform),
        pacs=sorted(platform.settings.pacs),
        seg_types=SEG_TYPES,
        corrections=correction_versions(session, prediction.id),
        poll_ms=POLL_MS,
    )


@bp.post("/predictions/<int:prediction_id>/exports")
@roles_required(*VIEWERS)
def queue_export(prediction_id: int) -> Any:
    prediction = get_prediction(prediction_id)
    form = request.form
    fmt = form.get("format", "")
    options = {"seg_type": form["seg_type"]} if fmt == "dicom-seg" and form.get("seg_type") else {}
    try:
        payload = export_payload(
            current_platform(),
            prediction.id,
            fmt=fmt,
            to_pacs=form.get("to_pacs") or None,
            options=options,
            with_images=form.get("with_images") in ("1", "on", "true"),
            corrected=form.get("corrected") in ("1", "on", "true"),
        )
    except InputError as exc:
        flash(str(exc), "error")
        return redirect(url_for("predictions.prediction_page", prediction_id=prediction.id), 303)
    job = queue_job(
        db(),
        current_platform(),
        current_actor(),
        "export",
        payload,
        target=f"prediction:{prediction.id}",
    )
    db().commit()
    where = f" to PACS {payload['to_pacs']}" if payload.get("to_pacs") else ""
    flash(f"Export as {fmt}{where}: job {job.id} is queued.", "info")
    return redirect(url_for("predictions.prediction_page", prediction_id=prediction.id), 303)


def _zip(files: list[tuple[Path, str]]) -> IO[bytes]:
    spool = tempfile.SpooledTemporaryFile(max_size=ZIP_SPOOL_BYTES)  # noqa: SIM115 (sent, then closed)
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in files:
            archive.write(path, name)
    spool.seek(0)
    return spool


def _zip_folder(folder: Path) -> IO[bytes]:
    return _zip(
        [
            (path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        ]
    )


@bp.get("/exports/<int:export_id>/download")
@roles_required(*VIEWERS)
def download(export_id: int) -> Any:
    session = db()
    platform = current_platform()
    row = session.get(Export, export_id)
    if row is None:
        abort(404, f"there is no export {export_id}")
    if not row.path:
        abort(404, f"export {export_id} failed its checks; nothing was stored to download")
    stored = platform.resolve(row.path)
    if platform.path("exports").resolve() not in stored.resolve().parents or not stored.exists():
        abort(404, f"export {export_id}'s files are no longer in the store; export it again")
    audit.record(
        session,
        web_user().username,
        "export.download",
        f"prediction:{row.prediction_id}",
        export_id=row.id,
        format=row.format,
    )
    session.commit()
    if stored.is_dir():
        return send_file(
            _zip_folder(stored),
            mimetype="application/zip",
            as_attachment=True,
            download_name=f"{stored.name}.zip",
        )
    sidecars = stored_sidecars(stored)
    if sidecars:
        # e.g. NIfTI's class map: the volume alone would lose the class names
        return send_file(
            _zip([(stored, stored.name)] + [(p, p.name) for p in sidecars]),
            mimetype="application/zip",
            as_attachment=True,
            download_name=f"{stored.name.split('.', 1)[0]}.zip",
        )
    return send_file(stored, as_attachment=True, download_name=stored.name)
