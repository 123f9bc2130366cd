"""A prediction's page and its exports: export it as any registered format, see the checks,
download what passed.

Thin: opening the page (audited as ``prediction.view``: patient data), queueing an export and
downloading one are use cases (:func:`radseg.workflows.review.record_prediction_view`,
:func:`radseg.workflows.export_jobs.request_export` and :func:`~radseg.workflows.export_jobs.
open_export`); the views parse the request and render. The worker writes, checks and stores
the export; the page lists every export of the prediction with each check, so a failed check
is shown with its reason and offers nothing to download. An export stored as a folder (COCO,
PNG) is sent as a zip made on the fly.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any

from flask import Blueprint, flash, redirect, render_template, request, send_file, url_for

from radseg.db.models import Prediction, ReviewStatus
from radseg.errors import InputError
from radseg.roles import VIEWERS, may_see_job
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db
from radseg.web.job_views import POLL_MS, job_view
from radseg.web.shapes import export_to_dict
from radseg.workflows.export_jobs import (
    SEG_TYPES,
    active_export_jobs,
    correction_versions,
    export_formats,
    exports_of,
    open_export,
    request_export,
)
from radseg.workflows.exporting import stored_sidecars
from radseg.workflows.lookup import get_row
from radseg.workflows.review import record_prediction_view, reviews_of

bp = Blueprint("predictions", __name__)

#: a folder export is zipped in memory up to this size, then in a temporary file
ZIP_SPOOL_BYTES = 64 << 20


# --- pages ----------------------------------------------------------------------------------


@bp.get("/predictions/<int:prediction_id>")
@roles_required(*VIEWERS)
def prediction_page(prediction_id: int) -> Any:
    platform = current_platform()
    record_prediction_view(platform, current_actor(), prediction_id)
    session = db()
    prediction = get_row(session, Prediction, prediction_id, "prediction")
    reviews = reviews_of(session, prediction.id)
    latest: dict[int | None, str] = {}
    for r in reviews:  # oldest first: the last decision per segment wins
        latest[r.class_id] = ReviewStatus(r.status).value
    return render_template(
        "prediction.html",
        prediction=prediction,
        series=prediction.series,
        study=prediction.series.study,
        ohif_url=platform.settings.ohif_viewer_url(prediction.series.study.study_instance_uid),
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
    get_row(db(), Prediction, prediction_id, "prediction")  # a 404, not a flashed message
    page = url_for("predictions.prediction_page", prediction_id=prediction_id)
    form = request.form
    fmt = form.get("format", "")
    options = {"seg_type": form["seg_type"]} if fmt == "dicom-seg" and form.get("seg_type") else {}
    try:
        job = request_export(
            current_platform(),
            current_actor(),
            prediction_id,
            fmt=fmt,
            to_pacs=form.get("to_pacs") or None,
            options=options,
            with_images=form.get("with_images") in ("1", "on", "true"),
            corrected=form.get("corrected") in ("1", "on", "true"),
        )
    except InputError as exc:
        flash(str(exc), "error")
        return redirect(page, 303)
    to_pacs = (job.payload or {}).get("to_pacs")
    where = f" to PACS {to_pacs}" if to_pacs else ""
    flash(f"Export as {fmt}{where}: job {job.id} is queued.", "info")
    return redirect(page, 303)


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
    _, stored = open_export(current_platform(), current_actor(), export_id)
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
