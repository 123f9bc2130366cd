"""The request models of the JSON API and the pages' query strings (see :mod:`.validation`).

Each model is what one endpoint accepts; the OpenAPI document takes its request bodies and
query parameters from these models' JSON schemas, so the document says exactly what is checked.
Semantic checks that need the database (does the dataset exist, is the class one of the
prediction's) stay in the views and workflows; types, ranges and lengths are checked here.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, RootModel

from radseg.db.models import JobState
from radseg.errors import InputError
from radseg.imaging.paint import MAX_RADIUS
from radseg.jobs.store import MAX_MACHINES
from radseg.web.validation import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_OFFSET,
    Coordinate,
    Index,
    Name,
    OneOf,
    Page,
    PageNumber,
    Query,
    Request,
    RowId,
    Text,
)
from radseg.workflows.evaluation import EVALUATION_SPLITS
from radseg.workflows.readings import MAX_READERS, WORKLIST_STATES
from radseg.workflows.review import DecisionName, QueueFilter, QueueSort
from radseg.workflows.training import MAX_GPUS_PER_MACHINE, MAX_ITERATIONS

#: job states, as the ``?state=`` filter of ``/api/jobs`` accepts them
JobStateName = Annotated[str, OneOf(tuple(state.value for state in JobState))]
#: the split an evaluation or a comparison uses
Split = Annotated[str, OneOf(EVALUATION_SPLITS)]
#: exporter options per request
MAX_OPTIONS = 32


# --- jobs ---------------------------------------------------------------------------------------


class BuildDatasetJob(Request):
    """Build a new version of a dataset from its member series."""

    kind: Literal["build-dataset"]
    dataset: Name


class TrainJob(Request):
    """Train a model of ``backend`` on the dataset's newest version."""

    kind: Literal["train"]
    dataset: Name
    backend: Name
    architecture: Name | None = None
    iterations: int | None = Field(None, ge=1, le=MAX_ITERATIONS)
    #: machines that train together, each run by a worker of its own (a gang job)
    machines: int = Field(1, ge=1, le=MAX_MACHINES)
    #: GPUs (on a CPU: processes) on each machine; default 1
    gpus_per_machine: int | None = Field(None, ge=1, le=MAX_GPUS_PER_MACHINE)


class PredictJob(Request):
    """Predict a series with a model version."""

    kind: Literal["predict"]
    model_version_id: RowId
    series_id: RowId


class EvaluateJob(Request):
    """Evaluate a model version on a split of its dataset version."""

    kind: Literal["evaluate"]
    model_version_id: RowId
    split: Split = "test"


class JobRequest(RootModel[BuildDatasetJob | TrainJob | PredictJob | EvaluateJob]):
    """``POST /api/jobs``: one of the job kinds, told apart by ``kind``."""

    root: Annotated[
        BuildDatasetJob | TrainJob | PredictJob | EvaluateJob,
        Field(discriminator="kind"),
    ]


class LogQuery(Query):
    """``GET /api/jobs/<id>/log``."""

    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="the byte to read from")


class JobsQuery(Query):
    """``GET /api/jobs``."""

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="rows per answer")
    state: JobStateName | None = None


# --- reviews, corrections and exports -----------------------------------------------------------


class ReviewRequest(Request):
    """A review decision, optionally on one class and pinned to a point of a slice."""

    status: DecisionName
    class_id: Index | None = None
    comment: Text | None = None
    slice_index: Index | None = None
    point_x: Coordinate | None = None
    point_y: Coordinate | None = None

    def decision(self) -> dict[str, Any]:
        """The keyword inputs of :func:`radseg.workflows.review.record_review`."""
        return {**self.model_dump(), "comment": self.comment or ""}


#: ``[x, y]`` (a JSON array: a tuple would refuse it in strict mode)
Point = Annotated[list[Coordinate], Field(min_length=2, max_length=2)]


class StrokeRequest(Request):
    """One brush (``class_id`` > 0) or eraser (0) stroke on slice ``z``, in voxels."""

    z: Index
    class_id: Index
    radius: float = Field(2, gt=0, le=MAX_RADIUS, allow_inf_nan=False)
    # how many points one save may carry is the setting ``correction_max_points``, checked by
    # the use case; the body's size (``json_body_limit``) bounds what is parsed here
    points: list[Point] = Field(min_length=1, description="[[x, y], ...]")


class CorrectionRequest(Request):
    """``POST /predictions/<id>/corrections`` (the viewer's brush)."""

    strokes: list[StrokeRequest] = Field(min_length=1)
    base_label_set: RowId | None = None


class ExportRequest(Request):
    """Queue an export of a prediction; DICOM formats may go to a PACS."""

    format: Name = Field(description="a registered exporter, e.g. dicom-seg")
    to_pacs: Name | None = Field(None, description="a [pacs.<name>] destination")
    options: dict[Name, Name | int | float | bool] = Field(
        default_factory=dict,
        max_length=MAX_OPTIONS,
        description='exporter options, e.g. {"seg_type": "labelmap"}',
    )
    with_images: bool = False
    corrected: bool = Field(
        False, description="export the reviewer's latest correction instead of the prediction"
    )


# --- query strings ------------------------------------------------------------------------------


class PredictionsQuery(Page):
    """``GET /api/predictions``."""

    series_id: RowId | None = None


class ReviewFilters(Query):
    state: QueueFilter = "awaiting"
    model: Name | None = Field(None, description="a model name")
    study: Name | None = Field(None, description="part of a description, or a StudyInstanceUID")
    sort: QueueSort = Field(
        "priority", description="review priority (highest first), oldest or newest first"
    )


class ReviewQueueQuery(Page, ReviewFilters):
    """``GET /api/review-queue``."""


class ReviewPageQuery(PageNumber, ReviewFilters):
    """``GET /review``: the queue, a hundred rows a page."""


class AuditQuery(PageNumber):
    """``GET /admin/audit`` (``since`` and ``until`` are dates, parsed by the page)."""

    actor: Name | None = None
    action: Name | None = None
    target: Name | None = None


class CompareQuery(Query):
    """``GET /models/compare``."""

    a: RowId
    b: RowId
    split: Split = "test"


class QualityChartQuery(Query):
    """``GET /api/model-versions/<id>/quality.svg``."""

    chart: Literal["reject_rate", "correction_dice"] = Field(
        "reject_rate", description="which control chart to draw"
    )


class JobsPageQuery(Query):
    """``GET /jobs``."""

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)


class ViewerQuery(Query):
    """``GET /series/<id>/view``: which prediction and label set to show (0: none)."""

    prediction: Index | None = None
    labels: Index | None = None


# --- readers and adjudication (issue 14, part 2) ------------------------------------------------

#: a calendar date, ``YYYY-MM-DD`` (parsed by :func:`due_date`)
IsoDate = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$", max_length=10)]


def due_date(value: str | None) -> date | None:
    """``YYYY-MM-DD`` as a date; :class:`InputError` for one that does not exist."""
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError(f"due_date {value!r} is not a date (YYYY-MM-DD)") from None


class AssignRequest(Request):
    """Put a prediction on the worklist for named readers (and an adjudicator)."""

    prediction_id: RowId
    readers: list[Name] = Field(min_length=1, max_length=MAX_READERS)
    adjudicator: Name | None = None
    due_date: IsoDate | None = None
    note: Text | None = None


class AssignForm(Query):
    """The worklist page's form (the prediction id and the reader checkboxes are read apart)."""

    adjudicator: Name | None = None
    due_date: IsoDate | None = None
    note: Text | None = None


class ReadingStrokes(Request):
    """Brush and eraser strokes on a reader's copy or an adjudicator's draft."""

    strokes: list[StrokeRequest] = Field(min_length=1)
    #: the viewer's brush sends it; a reading or a draft is painted in place, so it is ignored
    base_label_set: RowId | None = None


class SubmitReading(Request):
    """A reader's final decision on their reading."""

    decision: DecisionName
    comment: Text | None = None


class StartAdjudication(Request):
    """The mask the adjudicator starts from: ``reading:<id>``, ``staple``, ``majority`` or
    ``prediction``."""

    source: Annotated[str, Field(pattern=r"^(staple|majority|prediction|reading:[0-9]{1,12})$")]


class WorklistQuery(Query):
    """``GET /api/worklist``."""

    state: Annotated[str, OneOf(WORKLIST_STATES)] = "open"


#: the request bodies of the JSON API, by the name the OpenAPI document gives them
class RetrainRequest(Request):
    """``POST /api/models/<id>/retrain``: fine-tuning iterations (default: the setting
    ``retrain_iterations``)."""

    iterations: int | None = Field(None, ge=1, le=MAX_ITERATIONS)


REQUEST_BODIES: dict[str, type[BaseModel]] = {
    "JobRequest": JobRequest,
    "ReviewRequest": ReviewRequest,
    "ExportRequest": ExportRequest,
    "AssignRequest": AssignRequest,
    "ReadingStrokes": ReadingStrokes,
    "SubmitReading": SubmitReading,
    "StartAdjudication": StartAdjudication,
    "RetrainRequest": RetrainRequest,
}
