"""The JSON shape of each row the pages and the API show: one function a table, times as
ISO 8601 text.

In one place so that a row reads the same wherever it is shown (a prediction's reviews on the
page and in ``/api/predictions/<id>/reviews``, a series' label sets, an export's checks); the
OpenAPI document (:mod:`radseg.web.openapi`) describes these shapes. What a job shows depends on
who looks, so :func:`radseg.web.job_views.job_view` has a module of its own.
"""

from __future__ import annotations

from typing import Any

from flask import url_for

from radseg.db.models import (
    AuditEvent,
    Dataset,
    Export,
    LabelSet,
    Measurement,
    ModelVersion,
    Prediction,
    Reading,
    ReadingCase,
    Review,
    ReviewStatus,
    Series,
)
from radseg.model_registry import inference_engine


def iso(value: Any) -> str | None:
    """A timestamp as ISO 8601 text, ``None`` as ``None`` (every JSON view of a row)."""
    return value.isoformat() if value is not None else None


def audit_event_to_dict(event: AuditEvent) -> dict[str, Any]:
    """An audit event: who did what to which object, when, and its details."""
    return {
        "id": event.id,
        "created_at": iso(event.created_at),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "detail": event.detail,
    }


def series_to_dict(series: Series) -> dict[str, Any]:
    """A series with its geometry and label sets (``/api/series/<id>``, a study's series)."""
    return {
        "id": series.id,
        "study_id": series.study_id,
        "series_instance_uid": series.series_instance_uid,
        "modality": series.modality,
        "description": series.description,
        "geometry": series.geometry,
        "label_sets": [label_set_to_dict(ls) for ls in series.label_sets],
    }


def label_set_to_dict(label_set: LabelSet) -> dict[str, Any]:
    """A label set: its source, version, author and classes (and the prediction it corrects)."""
    return {
        "id": label_set.id,
        "series_id": label_set.series_id,
        "source": label_set.source,
        "version": label_set.version,
        "author": label_set.author,
        "classes": label_set.classes,
        "prediction_id": label_set.prediction_id,
        "created_at": iso(label_set.created_at),
        "provenance": label_set.provenance,
    }


def dataset_to_dict(dataset: Dataset) -> dict[str, Any]:
    """A dataset with its built versions (not their members)."""
    return {
        "id": dataset.id,
        "name": dataset.name,
        "created_at": iso(dataset.created_at),
        "versions": [
            {
                "id": v.id,
                "version": v.version,
                "content_hash": v.content_hash,
                "classes": v.classes,
                "recipe": v.recipe,
                "split": v.split,
                "created_at": iso(v.created_at),
            }
            for v in dataset.versions
        ],
    }


def model_version_to_dict(version: ModelVersion) -> dict[str, Any]:
    """A model version with its model's name and backend, architecture, classes and metrics."""
    return {
        "id": version.id,
        "model": version.model.name,
        "backend": version.model.backend,
        "dataset_version_id": version.dataset_version_id,
        "architecture": (version.config or {}).get("architecture"),
        "classes": (version.config or {}).get("classes", []),
        "metrics": version.metrics,
        "inference": inference_engine(version),
        "created_by": version.created_by,
        "created_at": iso(version.created_at),
        "status": version.status.value,
        "parent_id": version.parent_id,
        "learned_from": version.learned_from,
        "comparison": version.comparison,
    }


def prediction_to_dict(prediction: Prediction) -> dict[str, Any]:
    """A prediction: which series, which model version, and its metrics."""
    return {
        "id": prediction.id,
        "series_id": prediction.series_id,
        "model_version_id": prediction.model_version_id,
        "metrics": prediction.metrics,
        "created_at": iso(prediction.created_at),
        "priority": prediction.priority,
        "priority_reason": prediction.priority_reason,
        "has_uncertainty": bool(prediction.uncertainty_path),
        "quality": prediction.quality,
    }


def review_to_dict(review: Review) -> dict[str, Any]:
    """One reviewer's decision, with the slice and point its comment is pinned to."""
    return {
        "id": review.id,
        "prediction_id": review.prediction_id,
        "reviewer": review.reviewer.username,
        "status": ReviewStatus(review.status).value,
        "class_id": review.class_id,
        "comment": review.comment,
        "slice_index": review.slice_index,
        "point_x": review.point_x,
        "point_y": review.point_y,
        "created_at": iso(review.created_at),
    }


def measurement_to_dict(row: Measurement) -> dict[str, Any]:
    """A ruler or region on a slice, with what was measured (``null`` where it does not apply:
    a ruler has no area, a region no length)."""
    return {
        "id": row.id,
        "prediction_id": row.prediction_id,
        "author": row.author.username,
        "kind": row.kind,
        "slice_index": row.slice_index,
        "points": row.points,
        "label": row.label,
        "length_mm": row.length_mm,
        "area_mm2": row.area_mm2,
        "mean_hu": row.mean_hu,
        "sd_hu": row.sd_hu,
        "voxels": row.voxels,
        "created_at": iso(row.created_at),
    }


def export_to_dict(row: Export) -> dict[str, Any]:
    """What the prediction page's table and the API show of one export, each check included."""
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
        "created_at": iso(row.created_at),
        "download_url": url_for("predictions.download", export_id=row.id) if row.path else None,
    }


def reading_to_dict(reading: Reading, *, show_work: bool) -> dict[str, Any]:
    """A reader's reading; its decision and comment only with ``show_work`` (its reader, or
    someone the blinding rule lets see submitted work)."""
    return {
        "id": reading.id,
        "case_id": reading.case_id,
        "reader": reading.reader.username,
        "submitted": reading.submitted_at is not None,
        "opened_at": iso(reading.opened_at),
        "submitted_at": iso(reading.submitted_at),
        "seconds": reading.seconds,
        "decision": reading.decision.value if show_work and reading.decision else None,
        "comment": reading.comment if show_work else None,
        "strokes": reading.strokes if show_work else None,
    }


def reading_case_to_dict(case: ReadingCase, *, show_work: bool, username: str) -> dict[str, Any]:
    """A worklist case with its readings; the other readers' work and the agreement only with
    ``show_work`` (``username``'s own reading is always shown in full)."""
    return {
        "id": case.id,
        "prediction_id": case.prediction_id,
        "series_id": case.prediction.series_id,
        "state": case.state.value,
        "adjudicator": case.adjudicator.username if case.adjudicator else None,
        "due_date": case.due_date.isoformat() if case.due_date else None,
        "note": case.note,
        "created_by": case.created_by,
        "created_at": iso(case.created_at),
        "signed_off_at": iso(case.signed_off_at),
        "label_set_id": case.label_set_id,
        "adjudication_started_from": case.draft_source or None,
        "readings": [
            reading_to_dict(r, show_work=show_work or r.reader.username == username)
            for r in case.readings
        ],
        "agreement": case.agreement if show_work else None,
    }
