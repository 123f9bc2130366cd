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

from radseg.audit import AuditFilters, parse_time
from radseg.db.models import JobState, ModelVersionStatus
from radseg.errors import InputError
from radseg.imaging.measure import MAX_POINTS, MeasurementKind
from radseg.imaging.paint import MAX_RADIUS
from radseg.jobs.store import MAX_MACHINES
from radseg.model_registry import VERSION_SORTS, VersionFilters
from radseg.web.validation import (
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
from radseg.workflows.jobs import JOB_SORTS, JobFilters
from radseg.workflows.readings import MAX_READERS, WORKLIST_STATES
from radseg.workflows.review import DecisionName, QueueFilter, QueueFilters, QueueSort
from radseg.workflows.studies import STUDY_SHOWS, STUDY_SORTS, StudyFilters
from radseg.workflows.training import MAX_GPUS_PER_MACHINE, MAX_ITERATIONS

#: job states, as the ``?state=`` filter of ``/api/jobs`` accepts them
JobStateName = Annotated[str, OneOf(tuple(state.value for state in JobState))]
#: a job kind as the ``?kind=`` filter takes it (checked against the registered kinds by the view)
JobKindName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", max_length=32)]
#: a series' Modality as stored: a DICOM code string (capitals, digits, underscore, space: CT, MR,
#: PT), or what a dataset plugin gave (letters, digits, ``-``)
Modality = Annotated[str, Field(pattern=r"^[A-Za-z0-9_ -]{1,16}$", max_length=16)]
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


class JobListFilters(Query):
    """The jobs list's filters, shared by ``GET /jobs`` and ``GET /api/jobs``."""

    state: JobStateName | None = None
    kind: JobKindName | None = Field(None, description="a job kind, e.g. train")
    q: Name | None = Field(None, description="a job number (123 or #123) or an owner's name")
    sort: Annotated[str, OneOf(JOB_SORTS)] = Field("newest", description="newest or oldest first")

    def filters(self, kinds: list[str]) -> JobFilters:
        """As the use case takes them; ``kinds``: the kinds there are (plugins add some).

        :raises InputError: ``kind`` is not one of ``kinds``."""
        if self.kind and self.kind not in kinds:
            names = ", ".join(kinds)
            raise InputError(f"kind: unknown job kind {self.kind!r}; use one of: {names}")
        return JobFilters(
            state=JobState(self.state) if self.state else None,
            kind=self.kind or "",
            q=self.q or "",
            sort=self.sort,
        )


class JobsQuery(Page, JobListFilters):
    """``GET /api/jobs``."""


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


class MeasurementRequest(Request):
    """``POST /api/predictions/<id>/measurements``: a ruler (its two ends), an ellipse (two
    opposite corners of its box) or a freehand outline, in voxels of slice ``slice_index``."""

    kind: MeasurementKind
    slice_index: Index
    points: list[Point] = Field(
        min_length=2, max_length=MAX_POINTS, description="[[x, y], ...] in voxels"
    )
    label: Name | None = Field(None, description="a short note, e.g. 'lesion 1'")


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
    """The review queue's filters, shared by ``GET /review`` and ``GET /api/review-queue``."""

    state: QueueFilter = "awaiting"
    model: Name | None = Field(None, description="a model name")
    study: Name | None = Field(
        None,
        description="the start of a patient pseudonym, part of a description, or a "
        "StudyInstanceUID",
    )
    sort: QueueSort = Field(
        "priority", description="review priority (highest first), oldest or newest first"
    )

    def filters(self) -> QueueFilters:
        """As the use case takes them (a blank box is no filter; spaces around are dropped)."""
        return QueueFilters(
            state=self.state,
            model=(self.model or "").strip(),
            study=(self.study or "").strip(),
            sort=self.sort,
        )


class ReviewQueueQuery(Page, ReviewFilters):
    """``GET /api/review-queue``."""


class ReviewPageQuery(PageNumber, ReviewFilters):
    """``GET /review``: the queue, a page at a time."""


class StudyListFilters(Query):
    """The studies list's filters, shared by ``GET /studies`` and ``GET /api/studies``."""

    q: Name | None = Field(
        None,
        description="the start of a patient pseudonym, part of a description (any case), or a "
        "whole StudyInstanceUID",
    )
    modality: Modality | None = Field(None, description="a series modality, e.g. CT")
    show: Annotated[str, OneOf(STUDY_SHOWS)] = Field(
        "all", description="studies with or without labels, predictions, or review decisions"
    )
    sort: Annotated[str, OneOf(STUDY_SORTS)] = Field(
        "newest",
        description="added newest or oldest first, study date newest or oldest first, by "
        "patient pseudonym, by description",
    )

    def filters(self) -> StudyFilters:
        return StudyFilters(
            q=(self.q or "").strip(), modality=self.modality or "", show=self.show, sort=self.sort
        )


class StudiesPageQuery(PageNumber, StudyListFilters):
    """``GET /studies``."""


class StudiesQuery(Page, StudyListFilters):
    """``GET /api/studies``."""


class StudyChoice(StudyListFilters):
    """Which studies the Research page's build and predict buttons act on: the ticked ones
    (``study`` fields, read apart) or every study the search and filters match."""

    studies: Literal["ticked", "matching"] = Field(
        "ticked", description="the ticked studies, or all studies matching the search"
    )


class ResearchPageQuery(PageNumber, StudyChoice):
    """``GET /datasets``: the Research page's study chooser, a page of studies at a time (the
    ticked studies, ``?study=`` repeated, are read by :func:`~radseg.web.validation.query_ids`).

    The choice and the build and predict fields come along when the chooser changes page, and
    are shown again as they were (checked by the build and predict forms themselves)."""

    name: Name | None = None
    channels: Name | None = None
    seed: Name | None = None
    model_version: RowId | None = None


class VersionListFilters(Query):
    """The model versions list's filters, shared by ``GET /models`` and
    ``GET /api/model-versions``."""

    q: Name | None = Field(None, description="part of a model's name or backend")
    status: Annotated[str, OneOf(tuple(s.value for s in ModelVersionStatus))] | None = None
    sort: Annotated[str, OneOf(VERSION_SORTS)] = Field(
        "newest", description="newest or oldest first, or by model name"
    )

    def filters(self) -> VersionFilters:
        return VersionFilters(
            q=(self.q or "").strip(),
            status=ModelVersionStatus(self.status) if self.status else None,
            sort=self.sort,
        )


class ModelsPageQuery(PageNumber, VersionListFilters):
    """``GET /models``."""


class VersionsQuery(Page, VersionListFilters):
    """``GET /api/model-versions``."""


class AuditListFilters(Query):
    """The audit log's filters, shared by ``GET /admin/audit`` and ``GET /api/audit``."""

    actor: Name | None = Field(None, description="a user name, e.g. cli")
    action: Name | None = Field(None, description="an action; login also finds login.failed")
    target: Name | None = Field(None, description="a target, e.g. study:12")
    since: Name | None = Field(None, description="a date or time, 2026-01-31 or 2026-01-31T12:00")
    until: Name | None = Field(None, description="a date or time, exclusive")
    sort: Literal["newest", "oldest"] = "newest"

    def filters(self) -> AuditFilters:
        """As the use case takes them; :class:`InputError` for a date that is not one."""
        return AuditFilters(
            actor=(self.actor or "").strip(),
            action=(self.action or "").strip(),
            target=(self.target or "").strip(),
            since=parse_time("since", self.since),
            until=parse_time("until", self.until),
            sort=self.sort,
        )


class AuditQuery(PageNumber, AuditListFilters):
    """``GET /admin/audit``."""


class AuditApiQuery(Page, AuditListFilters):
    """``GET /api/audit``."""


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


class JobsPageQuery(PageNumber, JobListFilters):
    """``GET /jobs``."""


class ViewerQuery(Query):
    """``GET /series/<id>/view``: which prediction and label set to show (0: none)."""

    prediction: Index | None = None
    labels: Index | None = None


class VoxelQuery(Query):
    """``GET /series/<id>/voxel``: one voxel's index (i: column, j: row, k: slice)."""

    i: Index
    j: Index
    k: Index


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
    "MeasurementRequest": MeasurementRequest,
    "ExportRequest": ExportRequest,
    "AssignRequest": AssignRequest,
    "ReadingStrokes": ReadingStrokes,
    "SubmitReading": SubmitReading,
    "StartAdjudication": StartAdjudication,
    "RetrainRequest": RetrainRequest,
}
