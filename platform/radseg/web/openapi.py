"""The OpenAPI 3.1 document of ``/api`` (served at ``GET /api/openapi.json``).

Request bodies and query parameters come from the pydantic models that validate them
(:mod:`radseg.web.schemas`), so the document states exactly what the server checks; the answers'
schemas are written here, next to the routes in :mod:`radseg.web.api`. A test fails when a route
is missing here or a documented path has no route, and schemathesis checks the answers against
it, as every role.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from radseg.db.models import JobState
from radseg.imaging.measure import MEASUREMENT_KINDS
from radseg.web import schemas
from radseg.web.validation import MAX_ROW_ID, Page

INT = {"type": "integer"}
STR = {"type": "string"}
NUM = {"type": "number"}
ANY_OBJ = {"type": "object"}
DATE = {"type": "string", "format": "date-time"}
NULL_DATE = {"type": ["string", "null"], "format": "date-time"}
NULL_NUM = {"type": ["number", "null"]}


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


_POINTS = array(array(NUM))
_CURVES = obj(
    {
        "loss": obj({"raw": _POINTS, "smoothed": _POINTS, "smoothing": NUM}),
        "dice": obj(
            {"mean": _POINTS, "classes": {"type": "object", "additionalProperties": _POINTS}}
        ),
    }
)

SCHEMAS: dict[str, Any] = {
    "Error": obj({"error": STR, "detail": STR}),
    "Study": obj(
        {
            "id": INT,
            "study_instance_uid": STR,
            "patient_key": STR,
            "description": STR,
            # the de-identified StudyDate: moved by the keyed per-patient date shift
            "study_date": {"type": ["string", "null"], "format": "date"},
            "study_date_shifted": {"type": "boolean"},
            "modalities": array(STR),
            "created_at": DATE,
            "series_count": INT,
            "label_count": INT,
            "prediction_count": INT,
            # predictions by review state (awaiting, or their latest study-level decision) and
            # the highest review priority among those awaiting
            "review": obj(
                {
                    "states": {"type": "object", "additionalProperties": INT},
                    "priority": {"type": ["number", "null"]},
                }
            ),
        }
    ),
    # beside the rows of every paged list: the matching rows are counted up to 10,000
    # (total_capped: more match); has_next says whether offset + limit has more rows
    "ListPage": obj(
        {
            "total": INT,
            "total_capped": {"type": "boolean"},
            "limit": INT,
            "offset": INT,
            "has_next": {"type": "boolean"},
        }
    ),
    "LabelSet": obj(
        {
            "id": INT,
            "series_id": INT,
            "source": STR,
            "version": INT,
            "author": STR,
            "classes": array(ANY_OBJ),
            "prediction_id": {"type": ["integer", "null"]},
            "created_at": DATE,
        },
        {"provenance": {"type": ["object", "null"]}},
    ),
    "Series": obj(
        {
            "id": INT,
            "study_id": INT,
            "series_instance_uid": STR,
            "modality": STR,
            "description": STR,
            "geometry": ANY_OBJ,
            "label_sets": array(ref("LabelSet")),
        }
    ),
    "StudyDetail": obj(
        {
            "id": INT,
            "study_instance_uid": STR,
            "patient_key": STR,
            "description": STR,
            "created_at": DATE,
            "series": array(ref("Series")),
        }
    ),
    "Dataset": obj(
        {
            "id": INT,
            "name": STR,
            "created_at": DATE,
            "versions": array(
                obj(
                    {
                        "id": INT,
                        "version": INT,
                        "content_hash": STR,
                        "classes": array(ANY_OBJ),
                        "recipe": ANY_OBJ,
                        "split": ANY_OBJ,
                        "created_at": DATE,
                    }
                )
            ),
        }
    ),
    "Measurement": obj(
        {
            "id": INT,
            "prediction_id": INT,
            "author": STR,
            "kind": {"enum": list(MEASUREMENT_KINDS)},
            "slice_index": INT,
            "points": array(array(NUM)),
            "label": STR,
            "length_mm": NULL_NUM,
            "area_mm2": NULL_NUM,
            "mean_hu": NULL_NUM,
            "sd_hu": NULL_NUM,
            "voxels": {"type": ["integer", "null"]},
            "created_at": DATE,
        }
    ),
    "Job": obj(
        {
            "id": INT,
            "kind": STR,
            "state": {"enum": [state.value for state in JobState]},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            # a running job's time left, from its progress (radseg.jobs.eta); null if unknown
            "eta_seconds": {"type": ["integer", "null"], "minimum": 0},
            "eta": {"type": ["string", "null"]},
            "message": STR,
            "cancel_requested": {"type": "boolean"},
            "created_at": DATE,
            "started_at": NULL_DATE,
            "finished_at": NULL_DATE,
        },
        # what each role sees (radseg.web.job_views.job_view): owner and attempts for researchers
        # and admins; payload and result for the job's owner and admins, paths made relative
        {
            "attempts": INT,
            "max_attempts": INT,
            "created_by": STR,
            # a job that trains across machines (radseg.jobs.gangs): how many, and who joined
            "machines": INT,
            "gang": array(obj({"rank": INT, "machine": STR})),
            "payload": ANY_OBJ,
            "result": {"type": ["object", "null"]},
        },
    ),
    "ModelVersion": obj(
        {
            "id": INT,
            "model": STR,
            "backend": STR,
            "dataset_version_id": INT,
            "architecture": {"type": ["string", "null"]},
            "classes": array(ANY_OBJ),
            "metrics": ANY_OBJ,
            # the CPU engine and its bf16/int8 agreement (radseg.model_registry.inference_engine)
            "inference": {"type": ["object", "null"]},
            "created_by": STR,
            "created_at": DATE,
            "status": {"enum": ["candidate", "promoted"]},
            "parent_id": {"type": ["integer", "null"]},
            "learned_from": {"type": ["object", "null"]},
            "comparison": {"type": ["object", "null"]},
        }
    ),
    "Model": obj({"id": INT, "name": STR, "backend": STR, "versions": array(ref("ModelVersion"))}),
    "AuditEvent": obj(
        {
            "id": INT,
            "created_at": DATE,
            "actor": STR,
            "action": STR,
            "target": STR,
            "detail": ANY_OBJ,
        }
    ),
    # a row of the model versions list (the Models page, `radseg models list`)
    "ModelVersionSummary": obj(
        {
            "id": INT,
            "model": STR,
            "backend": STR,
            "architecture": {"type": ["string", "null"]},
            "dataset": STR,
            "dataset_version": INT,
            "val_mean_dice": {"type": ["number", "null"]},
            "status": {"enum": ["candidate", "promoted"]},
            "parent_id": {"type": ["integer", "null"]},
            "created_by": STR,
            "created_at": DATE,
        }
    ),
    "Prediction": obj(
        {
            "id": INT,
            "series_id": INT,
            "model_version_id": INT,
            "metrics": ANY_OBJ,
            "created_at": DATE,
            "priority": {"type": ["number", "null"]},
            "priority_reason": STR,
            "has_uncertainty": {"type": "boolean"},
            "quality": {"type": ["object", "null"]},
        }
    ),
    "Review": obj(
        {
            "id": INT,
            "prediction_id": INT,
            "reviewer": STR,
            "status": {"enum": ["pending", "accepted", "rejected", "needs_edit"]},
            "class_id": {"type": ["integer", "null"]},
            "comment": STR,
            "slice_index": {"type": ["integer", "null"]},
            "point_x": {"type": ["number", "null"]},
            "point_y": {"type": ["number", "null"]},
            "created_at": DATE,
        }
    ),
    "Export": obj(
        {
            "id": INT,
            "prediction_id": INT,
            "format": STR,
            "status": {"enum": ["verified", "failed", "sent", "send-failed"]},
            "checks": array(
                obj({"name": STR, "passed": {"type": ["boolean", "null"]}, "detail": STR})
            ),
            "options": ANY_OBJ,
            "destination": STR,
            "remote": {"type": ["object", "null"]},
            "message": STR,
            "created_by": STR,
            "created_at": DATE,
            "download_url": {"type": ["string", "null"]},
        }
    ),
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref("Error")}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _wrap(key: str, item: str) -> dict[str, Any]:
    return obj({key: array(ref(item))})


def _paged(key: str, item: str) -> dict[str, Any]:
    """A paged list (:mod:`radseg.db.paging`): its rows and where they are in the list."""
    return obj({key: array(ref(item)), "page": ref("ListPage")})


def _id(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID},
    }


REF_TEMPLATE = "#/components/schemas/{model}"


def _without_titles(schema: Any) -> Any:
    """Drop pydantic's generated ``title``s (noise in the document; real names stay as keys)."""
    if isinstance(schema, dict):
        return {
            k: _without_titles(v)
            for k, v in schema.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [_without_titles(v) for v in schema]
    return schema


def body_schemas() -> dict[str, Any]:
    """The request bodies' JSON schemas, and the models they refer to, by name."""
    out: dict[str, Any] = {}
    for name, model in schemas.REQUEST_BODIES.items():
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        out.update(schema.pop("$defs", {}))
        out[name] = schema
    return _without_titles(out)


def query(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The query parameters of ``model``, one per field."""
    schema = _without_titles(model.model_json_schema(ref_template=REF_TEMPLATE))
    required = set(schema.get("required", []))
    params = []
    for name, field in schema["properties"].items():
        options = [o for o in field.get("anyOf", []) if o != {"type": "null"}]
        if len(options) == 1:  # an absent parameter is None; a query string has no null
            field = {**{k: v for k, v in field.items() if k not in ("anyOf", "default")}}
            field.update(options[0])
        param: dict[str, Any] = {"name": name, "in": "query", "schema": field}
        if "description" in field:
            param["description"] = field.pop("description")
        if name in required:
            param["required"] = True
        params.append(param)
    return params


NULL_NUM = {"type": ["number", "null"]}
SCHEMAS["ChartPoint"] = obj(
    {
        "week": STR,
        "value": NUM,
        "n": INT,
        "limit": NULL_NUM,
        "baseline": {"type": "boolean"},
        "flagged": {"type": "boolean"},
    }
)
SCHEMAS["Chart"] = obj(
    {
        "name": {"enum": ["reject_rate", "correction_dice"]},
        "label": STR,
        "bad_side": {"enum": ["above", "below"]},
        "center": NULL_NUM,
        "sigma": NULL_NUM,
        "baseline_weeks": array(STR),
        "points": array(ref("ChartPoint")),
        "note": STR,
    }
)
SCHEMAS["QualityAlert"] = obj(
    {
        "id": INT,
        "model": STR,
        "model_version_id": INT,
        "chart": STR,
        "week": STR,
        "value": NUM,
        "center": NUM,
        "limit": NUM,
        "n": INT,
        "message": STR,
        "created_at": DATE,
    }
)
SCHEMAS["Quality"] = obj(
    {
        "model": STR,
        "model_version_id": INT,
        "baseline_weeks": INT,
        "baseline_min": INT,
        "columns": array(obj({"key": STR, "label": STR, "spec": STR})),
        # one row per ISO week: week, start (its Monday) and each weekly metric's columns
        "weeks": array(obj({"week": STR, "start": STR}, {"decisions": INT, "corrections": INT})),
        "charts": obj({"reject_rate": ref("Chart"), "correction_dice": ref("Chart")}),
        "alerts": array(ref("QualityAlert")),
    }
)
SCHEMAS.update(body_schemas())


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    status: str = "200",
    errors: tuple[str, ...] = ("404",),
) -> dict[str, Any]:
    responses: dict[str, Any] = {status: ok, "401": _error("not logged in / bad token")}
    responses["403"] = _error("the role may not do this")
    for code in ("400", *errors):
        responses[code] = _error({"400": "bad input", "404": "not found", "409": "conflict"}[code])
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(body)}},
        }
    return op


PATHS: dict[str, dict[str, Any]] = {
    "/api/openapi.json": {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": _ok(ANY_OBJ)},
        }
    },
    "/api/studies": {
        "get": _op(
            "Studies: search, filters, sort and paging (the same as the Studies page)",
            _ok(_paged("studies", "Study")),
            params=query(schemas.StudiesQuery),
            errors=(),
        )
    },
    "/api/studies/{study_id}": {
        "get": _op(
            "A study with its series (audited)", _ok(ref("StudyDetail")), params=[_id("study_id")]
        )
    },
    "/api/series/{series_id}": {
        "get": _op(
            "A series with its label sets (audited)", _ok(ref("Series")), params=[_id("series_id")]
        )
    },
    "/api/datasets": {
        "get": _op(
            "Datasets and their versions",
            _ok(_wrap("datasets", "Dataset")),
            params=query(Page),
            errors=(),
        )
    },
    "/api/datasets/{dataset_id}": {
        "get": _op("One dataset", _ok(ref("Dataset")), params=[_id("dataset_id")])
    },
    "/api/jobs": {
        "get": _op(
            "Jobs the caller may see, newest first: search, filters, sort and paging (the same "
            "as the Jobs page)",
            _ok(_paged("jobs", "Job")),
            params=query(schemas.JobsQuery),
            errors=(),
        ),
        "post": _op(
            "Start a build-dataset, train, predict or evaluate job (researchers, admins)",
            _ok(ref("Job"), "queued"),
            body="JobRequest",
            status="201",
        ),
    },
    "/api/jobs/{job_id}": {"get": _op("One job", _ok(ref("Job")), params=[_id("job_id")])},
    "/api/jobs/{job_id}/log": {
        "get": _op(
            "The job's log from a byte offset (the job's owner and admins)",
            _ok(obj({"text": STR, "next_offset": INT})),
            params=[_id("job_id"), *query(schemas.LogQuery)],
        )
    },
    "/api/jobs/{job_id}/curves": {
        "get": _op(
            "A training job's curves ([[iteration, value]] lines; null for other kinds): the "
            "loss (raw, and its moving average of the given weight) and the validation Dice "
            "(the mean, and each class)",
            _ok(obj({"curves": {**_CURVES, "type": ["object", "null"]}})),
            params=[_id("job_id")],
        )
    },
    "/api/jobs/{job_id}/cancel": {
        "post": _op("Cancel a job (researchers, admins)", _ok(ref("Job")), params=[_id("job_id")])
    },
    "/api/jobs/{job_id}/retry": {
        "post": _op(
            "Run a finished job again as a new job (researchers, admins)",
            _ok(ref("Job"), "queued"),
            params=[_id("job_id")],
            status="201",
            errors=("404", "409"),
        )
    },
    "/api/models": {
        "get": _op(
            "Models and their versions",
            _ok(_wrap("models", "Model")),
            params=query(Page),
            errors=(),
        )
    },
    "/api/models/{model_id}/retrain": {
        "post": _op(
            "Queue a retrain of the model: fine-tune its current version on its reviewed label "
            "versions, promote it only if no class's test Dice falls below the margin "
            "(researchers, admins)",
            _ok(ref("Job"), "queued"),
            params=[_id("model_id")],
            body="RetrainRequest",
            status="201",
            errors=("404", "409"),
        )
    },
    "/api/audit": {
        "get": _op(
            "The audit log: filters, sort and paging, as its page has them (admins)",
            _ok(_paged("events", "AuditEvent")),
            params=query(schemas.AuditApiQuery),
            errors=(),
        )
    },
    "/api/model-versions": {
        "get": _op(
            "Model versions: search, status, sort and paging (the same as the Models page)",
            _ok(_paged("model_versions", "ModelVersionSummary")),
            params=query(schemas.VersionsQuery),
            errors=(),
        )
    },
    "/api/model-versions/{version_id}": {
        "get": _op("One model version", _ok(ref("ModelVersion")), params=[_id("version_id")])
    },
    "/api/model-versions/{version_id}/quality": {
        "get": _op(
            "Its quality by ISO week: review decisions, correction sizes, control charts, alerts",
            _ok(ref("Quality")),
            params=[_id("version_id")],
        )
    },
    "/api/model-versions/{version_id}/quality.svg": {
        "get": _op(
            "One of its quality control charts as an SVG image (for reports)",
            {"description": "OK", "content": {"image/svg+xml": {"schema": STR}}},
            params=[_id("version_id"), *query(schemas.QualityChartQuery)],
        )
    },
    "/api/predictions": {
        "get": _op(
            "Predictions",
            _ok(_wrap("predictions", "Prediction")),
            params=query(schemas.PredictionsQuery),
            errors=(),
        )
    },
    "/api/predictions/{prediction_id}": {
        "get": _op(
            "One prediction with its reviews",
            _ok({"allOf": [ref("Prediction"), obj({"reviews": array(ref("Review"))})]}),
            params=[_id("prediction_id")],
        )
    },
    "/api/predictions/{prediction_id}/reviews": {
        "get": _op(
            "Its review decisions", _ok(_wrap("reviews", "Review")), params=[_id("prediction_id")]
        ),
        "post": _op(
            "Record a decision (clinicians, admins)",
            _ok(ref("Review"), "recorded"),
            params=[_id("prediction_id")],
            body="ReviewRequest",
            status="201",
        ),
    },
    "/api/predictions/{prediction_id}/measurements": {
        "get": _op(
            "Its measurements (rulers, ellipses, freehand regions), oldest first",
            _ok(_wrap("measurements", "Measurement")),
            params=[_id("prediction_id")],
        ),
        "post": _op(
            "Measure on a slice (clinicians, admins): the length in mm, or the area (mm²) and "
            "the HU mean and SD of the voxels inside, from the HU volume",
            _ok(ref("Measurement"), "measured"),
            params=[_id("prediction_id")],
            body="MeasurementRequest",
            status="201",
        ),
    },
    "/api/measurements/{measurement_id}": {
        "delete": _op(
            "Delete a measurement (its author, or an admin)",
            _ok(obj({"deleted": INT}), "deleted"),
            params=[_id("measurement_id")],
        )
    },
    "/api/predictions/{prediction_id}/exports": {
        "get": _op(
            "Its exports with their checks, newest first",
            _ok(_wrap("exports", "Export")),
            params=[_id("prediction_id")],
        ),
        "post": _op(
            "Queue an export job (format from the registry; DICOM formats may go to a PACS)",
            _ok(ref("Job"), "queued"),
            params=[_id("prediction_id")],
            body="ExportRequest",
            status="202",
        ),
    },
    "/api/review-queue": {
        "get": _op(
            "Predictions awaiting review (or with a decision), the highest review priority "
            "first (sort=oldest or newest for the other orders)",
            _ok(_paged("predictions", "Prediction")),
            params=query(schemas.ReviewQueueQuery),
            errors=(),
        )
    },
}


# --- readers and adjudication (issue 14, part 2) ----------------------------------------------

NULL_STR = {"type": ["string", "null"]}
NULL_INT = {"type": ["integer", "null"]}
SCHEMAS.update(
    {
        "Reading": obj(
            {
                "id": INT,
                "case_id": INT,
                "reader": STR,
                "submitted": {"type": "boolean"},
                "opened_at": NULL_DATE,
                "submitted_at": NULL_DATE,
                "seconds": {"type": ["number", "null"]},
                "decision": NULL_STR,
                "comment": NULL_STR,
                "strokes": NULL_INT,
            }
        ),
        "ReadingCase": obj(
            {
                "id": INT,
                "prediction_id": INT,
                "series_id": INT,
                "state": {"type": "string", "enum": ["open", "signed_off", "cancelled"]},
                "adjudicator": NULL_STR,
                "due_date": {"type": ["string", "null"], "format": "date"},
                "note": STR,
                "created_by": STR,
                "created_at": DATE,
                "signed_off_at": NULL_DATE,
                "label_set_id": NULL_INT,
                "adjudication_started_from": NULL_STR,
                "readings": array(ref("Reading")),
                "agreement": {"type": ["object", "null"]},
            }
        ),
    }
)
_CASE = [_id("case_id")]
_READING = [_id("reading_id")]
PATHS.update(
    {
        "/api/worklist": {
            "get": _op(
                "The worklist's cases, newest first (researchers, admins)",
                _ok(_wrap("cases", "ReadingCase")),
                params=query(schemas.WorklistQuery),
                errors=(),
            ),
            "post": _op(
                "Assign a prediction to readers and an adjudicator (researchers, admins)",
                _ok(ref("ReadingCase"), "assigned"),
                body="AssignRequest",
                status="201",
                errors=("404", "409"),
            ),
        },
        "/api/worklist/{case_id}": {
            "get": _op(
                "A case; the readers' work and agreement only for who may see them (blinding)",
                _ok(ref("ReadingCase")),
                params=_CASE,
            )
        },
        "/api/worklist/{case_id}/cancel": {
            "post": _op(
                "Withdraw an open case (researchers, admins)",
                _ok(ref("ReadingCase")),
                params=_CASE,
                errors=("404", "409"),
            )
        },
        "/api/worklist/{case_id}/agreement": {
            "get": _op(
                "Agreement per class (pairwise Dice, vs prediction, STAPLE sensitivity and "
                "specificity); 403 for a reader who has not submitted",
                _ok(
                    obj(
                        {
                            "case_id": INT,
                            "current": {"type": "boolean"},
                            "agreement": {"type": ["object", "null"]},
                        }
                    )
                ),
                params=_CASE,
            )
        },
        "/api/worklist/{case_id}/adjudication": {
            "post": _op(
                "The adjudicator starts from a reading, the STAPLE or majority consensus, or "
                "the prediction",
                _ok(ref("ReadingCase")),
                params=_CASE,
                body="StartAdjudication",
                errors=("404", "409"),
            )
        },
        "/api/worklist/{case_id}/adjudication/strokes": {
            "post": _op(
                "Paint the adjudicator's draft",
                _ok(ref("ReadingCase")),
                params=_CASE,
                body="ReadingStrokes",
                errors=("404", "409"),
            )
        },
        "/api/worklist/{case_id}/sign-off": {
            "post": _op(
                "Sign the draft off as the series' next (adjudicated) label version",
                _ok(ref("LabelSet"), "signed off"),
                params=_CASE,
                status="201",
                errors=("404", "409"),
            )
        },
        "/api/readings": {
            "get": _op(
                "My readings of open cases, soonest due first (clinicians, admins)",
                _ok(_wrap("readings", "Reading")),
                errors=(),
            )
        },
        "/api/readings/{reading_id}": {
            "get": _op(
                "A reading: its reader's, or a submitted one for who may see it",
                _ok(ref("Reading")),
                params=_READING,
            )
        },
        "/api/readings/{reading_id}/open": {
            "post": _op(
                "Open my reading: my copy of the prediction is made, the clock starts",
                _ok(ref("Reading")),
                params=_READING,
                errors=("404", "409"),
            )
        },
        "/api/readings/{reading_id}/strokes": {
            "post": _op(
                "Paint my copy (brush and eraser strokes)",
                _ok(ref("Reading")),
                params=_READING,
                body="ReadingStrokes",
                errors=("404", "409"),
            )
        },
        "/api/readings/{reading_id}/submit": {
            "post": _op(
                "Submit my reading with a decision (final; queues the agreement job)",
                _ok(ref("Reading")),
                params=_READING,
                body="SubmitReading",
                errors=("404", "409"),
            )
        },
        "/api/readers": {
            "get": _op(
                "Agreement per reader per class, time per case, cases per week",
                _ok(obj({"readers": ANY_OBJ, "class_names": ANY_OBJ})),
                errors=(),
            )
        },
    }
)


def document(server_url: str = "") -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "radseg API",
            "version": "1",
            "description": "Create an API token on the Account page and send it as "
            "`Authorization: Bearer TOKEN`.",
        },
        "servers": [{"url": server_url or "/"}],
        "security": [{"bearer": []}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": PATHS,
    }
