"""The radseg schema (DESIGN §4). Every change here is an Alembic revision in ``migrations/``."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Annotated, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from radseg.db.base import Base, utcnow

#: the columns most tables have, declared once (SQLAlchemy's ``Annotated`` column types)
IntPK = Annotated[int, mapped_column(primary_key=True)]
CreatedAt = Annotated[datetime, mapped_column(default=utcnow)]


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Store the values (lower-case words), not the Python member names, and keep it a VARCHAR +
    # CHECK so that adding a state is a plain migration on both SQLite and PostgreSQL.
    return Enum(cls, name=name, native_enum=False, values_callable=lambda e: [m.value for m in e])


class Role(enum.StrEnum):
    ADMIN = "admin"
    RESEARCHER = "researcher"
    CLINICIAN = "clinician"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


class ReviewStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    NEEDS_EDIT = "needs_edit"


class ModelVersionStatus(enum.StrEnum):
    """A model version is a ``candidate`` until it is promoted; the newest ``promoted`` version of
    a model is its current one (what predictions use by default; see radseg.model_registry)."""

    CANDIDATE = "candidate"
    PROMOTED = "promoted"


class User(Base):
    __tablename__ = "user"

    id: Mapped[IntPK]
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"), default=Role.RESEARCHER)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[CreatedAt]
    #: browser sessions carry the epoch they were made in; deactivation and a new password move
    #: it on, which ends them for good (see radseg.users.end_sessions)
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    #: the first characters of the token, so a user can tell tokens apart (not a secret)
    prefix: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[CreatedAt]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="tokens")


class Study(Base):
    """A de-identified study; ``patient_key`` is the keyed pseudonym, never the PatientID."""

    __tablename__ = "study"

    id: Mapped[IntPK]
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_key: Mapped[str] = mapped_column(String(64), index=True)
    description: Mapped[str] = mapped_column(String(255), default="", index=True)
    #: StudyDate as de-identification left it: moved by the keyed per-patient date shift (the
    #: pages mark it "shifted"); ``None`` when dates are removed or the source has none
    study_date: Mapped[date | None] = mapped_column(index=True)
    created_at: Mapped[CreatedAt]
    #: the last ingest's report for this study: series found, skipped and why, slices, labels
    #: (radseg.workflows.ingest_report.StudyReport.to_dict(); pseudonymised identifiers only)
    ingest_report: Mapped[dict[str, Any] | None]

    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.id")


class Series(Base):
    """One image series with its geometry (size/spacing/origin in x, y, z; direction row-major)."""

    __tablename__ = "series"

    id: Mapped[IntPK]
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), index=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    geometry: Mapped[dict[str, Any]]
    #: the nominal SliceThickness (mm) the slices state; NULL when unknown (before migration 0015)
    slice_thickness: Mapped[float | None] = mapped_column(Float)
    #: HU volume cache (float32 NIfTI) relative to RADSEG_HOME
    volume_path: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[CreatedAt]

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(
        back_populates="series", order_by="Instance.slice_index"
    )
    label_sets: Mapped[list[LabelSet]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instance"

    id: Mapped[IntPK]
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    #: 1-based frame of an enhanced multi-frame instance; 0 for a single-frame instance
    frame_number: Mapped[int] = mapped_column(Integer, default=0)
    slice_index: Mapped[int] = mapped_column(Integer)

    series: Mapped[Series] = relationship(back_populates="instances")

    __table_args__ = (
        UniqueConstraint("series_id", "slice_index"),
        UniqueConstraint("sop_instance_uid", "frame_number"),
    )


class LabelSet(Base):
    """A label volume for a series: where it came from, which version, which classes."""

    __tablename__ = "label_set"

    id: Mapped[IntPK]
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    author: Mapped[str] = mapped_column(String(80), default="")
    classes: Mapped[list[Any]]
    path: Mapped[str] = mapped_column(String(512))
    #: the prediction a reviewer corrected to make this label set (``None`` for imported labels)
    prediction_id: Mapped[int | None] = mapped_column(
        ForeignKey("prediction.id", ondelete="SET NULL")
    )
    created_at: Mapped[CreatedAt]
    #: how a reviewed label set was made; for ``source == "adjudication"`` (see
    #: radseg.workflows.readings): readers, adjudicator, method (the mask it started from),
    #: prediction, reading case and agreement. ``None`` for imported labels and plain corrections
    provenance: Mapped[dict[str, Any] | None]

    series: Mapped[Series] = relationship(back_populates="label_sets")

    __table_args__ = (UniqueConstraint("series_id", "version"),)


class Dataset(Base):
    """A named set of series to train on: its members now, and the versions built from them."""

    __tablename__ = "dataset"

    id: Mapped[IntPK]
    name: Mapped[str] = mapped_column(String(80), unique=True)
    created_at: Mapped[CreatedAt]

    members: Mapped[list[DatasetMember]] = relationship(back_populates="dataset")
    versions: Mapped[list[DatasetVersion]] = relationship(
        back_populates="dataset", order_by="DatasetVersion.version"
    )


class DatasetMember(Base):
    """A series that the next version of a dataset will contain."""

    __tablename__ = "dataset_member"

    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True
    )
    series_id: Mapped[int] = mapped_column(
        ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )

    dataset: Mapped[Dataset] = relationship(back_populates="members")
    series: Mapped[Series] = relationship()


class DatasetVersion(Base):
    """An immutable build of a dataset: COCO files on disk, identified by their content hash."""

    __tablename__ = "dataset_version"

    id: Mapped[IntPK]
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    classes: Mapped[list[Any]]
    recipe: Mapped[dict[str, Any]]
    split: Mapped[dict[str, Any]]
    path: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[CreatedAt]

    dataset: Mapped[Dataset] = relationship(back_populates="versions")

    __table_args__ = (UniqueConstraint("dataset_id", "version"),)


class Model(Base):
    """A named model of one backend; each training run adds a :class:`ModelVersion`."""

    __tablename__ = "model"

    id: Mapped[IntPK]
    name: Mapped[str] = mapped_column(String(80), unique=True)
    backend: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[CreatedAt]

    versions: Mapped[list[ModelVersion]] = relationship(back_populates="model")


class ModelVersion(Base):
    """A trained model: backend config, metrics and lineage (dataset version, who, when)."""

    __tablename__ = "model_version"

    id: Mapped[IntPK]
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"))
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_version.id"))
    config: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    weights_path: Mapped[str] = mapped_column(String(512))
    created_by: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[CreatedAt]
    #: validations during training (iteration, loss, mean Dice, per-class Dice), for plots
    history: Mapped[dict[str, Any] | None]
    #: sha256 of the canonical JSON of ``config``; radseg's version that trained it
    config_hash: Mapped[str] = mapped_column(String(64), default="")
    code_version: Mapped[str] = mapped_column(String(64), default="")
    #: the training split's per-class volume, components and slice inconsistency (made once,
    #: at training time or lazily; radseg.imaging.review_priority.reference_stats)
    reference_stats: Mapped[dict[str, Any] | None]

    #: candidate or promoted; a version trained by ``radseg train`` is promoted at once, a
    #: retrained one only if it passes the non-inferiority rule (radseg.workflows.retrain)
    status: Mapped[ModelVersionStatus] = mapped_column(
        _enum(ModelVersionStatus, "model_version_status"), default=ModelVersionStatus.PROMOTED
    )
    #: the version this one was fine-tuned from (``None``: trained from scratch)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_version.id", ondelete="SET NULL")
    )
    #: what a retrained version learned from: dataset version, reviewed label sets, job
    learned_from: Mapped[dict[str, Any] | None]
    #: the retrain's comparison with its parent and the promotion decision
    comparison: Mapped[dict[str, Any] | None]

    model: Mapped[Model] = relationship(back_populates="versions")
    dataset_version: Mapped[DatasetVersion] = relationship()
    evaluations: Mapped[list[Evaluation]] = relationship(back_populates="model_version")


class Evaluation(Base):
    """A model version measured on a split of a dataset version; ``report_path`` holds the
    report folder (``report.json``, ``report.md``, PNG plots)."""

    __tablename__ = "evaluation"

    id: Mapped[IntPK]
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_version.id", ondelete="CASCADE"), index=True
    )
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_version.id"))
    split: Mapped[str] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    report_path: Mapped[str] = mapped_column(String(512), default="")
    created_by: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[CreatedAt]

    model_version: Mapped[ModelVersion] = relationship(back_populates="evaluations")
    dataset_version: Mapped[DatasetVersion] = relationship()


class Job(Base):
    """A unit of background work; see :mod:`radseg.jobs.store` for the state machine."""

    __tablename__ = "job"

    id: Mapped[IntPK]
    kind: Mapped[str] = mapped_column(String(32), index=True)
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"), default=JobState.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(80), default="", index=True)
    created_at: Mapped[CreatedAt]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    #: start-time fair queueing tag: claim order within a priority (see radseg.jobs.store)
    fair_tag: Mapped[int] = mapped_column(BigInteger, default=0)
    #: GPUs the job needs on one machine (0: CPU-only); a worker gives it that many devices
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    #: the job this one was resubmitted from (a cancelled or failed one)
    resubmitted_from: Mapped[int | None] = mapped_column(ForeignKey("job.id", ondelete="SET NULL"))
    #: machines (worker slots on different hosts) the job runs on at once; >1: a gang job
    #: (radseg.jobs.gangs), whose ``gpus`` are per machine
    machines: Mapped[int] = mapped_column(Integer, default=1)
    #: a running gang's meeting point, published by its rank 0: ``{"addr", "port", "attempt"}``
    rendezvous: Mapped[dict[str, Any] | None]

    events: Mapped[list[JobEvent]] = relationship(back_populates="job", order_by="JobEvent.id")


# Partial indexes: a finished job (nearly every row, in time) is in none of them, so finishing
# a job writes no index entry but its row's, and the indexes stay as small as the live queue.
def _where(state: str) -> dict[str, Any]:
    return {
        "postgresql_where": text(f"state = '{state}'"),
        "sqlite_where": text(f"state = '{state}'"),
    }


_QUEUED, _RUNNING = _where("queued"), _where("running")
#: the claim walks this in claim order and stops after the first free rows
Index("ix_job_queue", Job.priority.desc(), Job.fair_tag, Job.id, **_QUEUED)
#: a user's last queued fair tag, at submit
Index("ix_job_fair", Job.created_by, Job.fair_tag, **_QUEUED)
#: the reaper's expired leases; the fair queue's virtual time (highest running tag)
Index("ix_job_running", Job.lease_expires_at, **_RUNNING)
#: the queued gang jobs (radseg.jobs.gangs) in claim order, which idle workers look for
Index(
    "ix_job_gang_queue",
    Job.priority.desc(),
    Job.fair_tag,
    Job.id,
    postgresql_where=text("state = 'queued' AND machines > 1"),
    sqlite_where=text("state = 'queued' AND machines > 1"),
)


class JobDependency(Base):
    """``job_id`` runs only after ``depends_on_id`` succeeded (see radseg.jobs.store)."""

    __tablename__ = "job_dependency"

    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), primary_key=True)
    depends_on_id: Mapped[int] = mapped_column(
        ForeignKey("job.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class JobGangMember(Base):
    """A worker that joined gang job ``job_id`` as machine ``rank`` (see radseg.jobs.gangs).

    One worker per host and job (a unique key): a gang spans different machines. The member's
    own lease is renewed by its worker's heartbeat; the rows go when the attempt ends.
    """

    __tablename__ = "job_gang_member"
    __table_args__ = (UniqueConstraint("job_id", "host"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(128))
    host: Mapped[str] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime]
    joined_at: Mapped[CreatedAt]


class JobEvent(Base):
    __tablename__ = "job_event"

    id: Mapped[IntPK]
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[CreatedAt]

    job: Mapped[Job] = relationship(back_populates="events")


class Prediction(Base):
    __tablename__ = "prediction"

    id: Mapped[IntPK]
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_version.id"))
    mask_path: Mapped[str] = mapped_column(String(512))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    #: model version, dataset version, config hash, code version, engine, seconds
    provenance: Mapped[dict[str, Any] | None]
    #: uint8 uncertainty map (255 = 1.0) in the series' geometry, relative to RADSEG_HOME;
    #: "" when the backend gives none
    uncertainty_path: Mapped[str] = mapped_column(String(512), default="")
    #: review priority (higher first; None: not scored) and its main reason in words
    priority: Mapped[float | None] = mapped_column(Float, index=True)
    priority_reason: Mapped[str] = mapped_column(Text, default="")
    #: the signals per class, their scores, the per-slice uncertainty profile, the rule
    quality: Mapped[dict[str, Any] | None]

    series: Mapped[Series] = relationship()
    model_version: Mapped[ModelVersion] = relationship()
    reviews: Mapped[list[Review]] = relationship(back_populates="prediction")
    exports: Mapped[list[Export]] = relationship(
        back_populates="prediction", order_by="Export.id.desc()"
    )


class Export(Base):
    """One export of a prediction: its format, where the file went, and what the checks found.

    ``status`` is ``verified`` (every check passed; ``path`` is the stored copy under
    ``exports/``), ``failed`` (a check failed: nothing was offered, ``checks`` and ``message``
    say why) or ``sent`` (verified and stored by a PACS, ``destination`` names it and
    ``remote`` holds the UIDs sent and the read-back result).
    """

    __tablename__ = "export"

    id: Mapped[IntPK]
    prediction_id: Mapped[int] = mapped_column(
        ForeignKey("prediction.id", ondelete="CASCADE"), index=True
    )
    format: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    #: relative to RADSEG_HOME; "" when the export failed its checks
    path: Mapped[str] = mapped_column(String(512), default="")
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: [{"name", "passed" (true/false/null = could not run), "detail"}]
    checks: Mapped[list[Any]] = mapped_column(default=list)
    destination: Mapped[str] = mapped_column(String(80), default="")
    remote: Mapped[dict[str, Any] | None]
    message: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[CreatedAt]

    prediction: Mapped[Prediction] = relationship(back_populates="exports")


class Review(Base):
    """One reviewer's decision on a prediction: the whole study (``class_id`` ``None``) or one
    segment (a class id), optionally with a comment pinned to a slice and a point (voxel x, y)."""

    __tablename__ = "review"

    id: Mapped[IntPK]
    prediction_id: Mapped[int] = mapped_column(
        ForeignKey("prediction.id", ondelete="CASCADE"), index=True
    )
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    status: Mapped[ReviewStatus] = mapped_column(
        _enum(ReviewStatus, "review_status"), default=ReviewStatus.PENDING
    )
    class_id: Mapped[int | None]
    comment: Mapped[str] = mapped_column(Text, default="")
    slice_index: Mapped[int | None]
    point_x: Mapped[float | None]
    point_y: Mapped[float | None]
    created_at: Mapped[CreatedAt]

    prediction: Mapped[Prediction] = relationship(back_populates="reviews")
    reviewer: Mapped[User] = relationship()


class Measurement(Base):
    """A reviewer's measurement on one slice of a prediction's series, kept with the review:
    a ``ruler`` (two points; ``length_mm``), an ``ellipse`` (two opposite corners of its box) or
    a ``freehand`` outline, each region with the area, HU mean and SD of the voxels inside
    (computed once from the HU volume when it is saved; radseg.imaging.measure). ``points`` are
    ``[[x, y], ...]`` in voxels of slice ``slice_index``."""

    __tablename__ = "measurement"

    id: Mapped[IntPK]
    prediction_id: Mapped[int] = mapped_column(
        ForeignKey("prediction.id", ondelete="CASCADE"), index=True
    )
    author_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    kind: Mapped[str] = mapped_column(String(16))
    slice_index: Mapped[int] = mapped_column(Integer)
    points: Mapped[list[Any]]
    label: Mapped[str] = mapped_column(Text, default="")
    length_mm: Mapped[float | None] = mapped_column(Float)
    area_mm2: Mapped[float | None] = mapped_column(Float)
    mean_hu: Mapped[float | None] = mapped_column(Float)
    sd_hu: Mapped[float | None] = mapped_column(Float)
    voxels: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[CreatedAt]

    author: Mapped[User] = relationship()


class ReadingCaseState(enum.StrEnum):
    """``open`` (readers at work) → ``signed_off`` (adjudicated: a label set holds the result);
    ``open`` → ``cancelled`` (withdrawn from the worklist)."""

    OPEN = "open"
    SIGNED_OFF = "signed_off"
    CANCELLED = "cancelled"


class ReadingCase(Base):
    """A worklist entry: one prediction read by several readers, optionally adjudicated.

    ``agreement`` is the latest agreement report (radseg.imaging.agreement) over the submitted
    readings, ``None`` until two readers have submitted; ``label_set_id`` the adjudicated
    label version once signed off.
    """

    __tablename__ = "reading_case"

    id: Mapped[IntPK]
    prediction_id: Mapped[int] = mapped_column(
        ForeignKey("prediction.id", ondelete="CASCADE"), index=True
    )
    adjudicator_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    state: Mapped[ReadingCaseState] = mapped_column(
        _enum(ReadingCaseState, "reading_case_state"), default=ReadingCaseState.OPEN
    )
    due_date: Mapped[date | None]
    note: Mapped[str] = mapped_column(Text, default="")
    agreement: Mapped[dict[str, Any] | None]
    #: the adjudicator's working mask (relative to RADSEG_HOME), "" until adjudication starts
    draft_path: Mapped[str] = mapped_column(String(512), default="")
    #: what the draft started from: "reading:<id>", "staple", "majority" or "prediction"
    draft_source: Mapped[str] = mapped_column(String(32), default="")
    label_set_id: Mapped[int | None] = mapped_column(
        ForeignKey("label_set.id", ondelete="SET NULL")
    )
    created_by: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[CreatedAt]
    signed_off_at: Mapped[datetime | None]

    prediction: Mapped[Prediction] = relationship()
    adjudicator: Mapped[User | None] = relationship()
    readings: Mapped[list[Reading]] = relationship(back_populates="case", order_by="Reading.id")


class Reading(Base):
    """One reader's blinded copy of a case: their mask, decision and time.

    ``mask_path`` is the reader's own copy of the prediction (relative to RADSEG_HOME), made
    when they first open the case; ``seconds`` the time from that opening to the submission.
    Nobody but the reader sees it before ``submitted_at`` is set.
    """

    __tablename__ = "reading"

    id: Mapped[IntPK]
    case_id: Mapped[int] = mapped_column(
        ForeignKey("reading_case.id", ondelete="CASCADE"), index=True
    )
    reader_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    mask_path: Mapped[str] = mapped_column(String(512), default="")
    decision: Mapped[ReviewStatus | None] = mapped_column(_enum(ReviewStatus, "review_status"))
    comment: Mapped[str] = mapped_column(Text, default="")
    strokes: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None]
    submitted_at: Mapped[datetime | None]
    seconds: Mapped[float | None]
    created_at: Mapped[CreatedAt]

    case: Mapped[ReadingCase] = relationship(back_populates="readings")
    reader: Mapped[User] = relationship()

    __table_args__ = (UniqueConstraint("case_id", "reader_id"),)


class PluginState(Base):
    """An admin's choice to enable or disable a plugin; every process reads it at load time."""

    __tablename__ = "plugin_state"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    changed_by: Mapped[str] = mapped_column(String(80), default="")
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginFailure(Base):
    """A failed login, kept for the throttle: every web worker counts the same rows.

    ``account_key`` is a keyed digest of the typed name (radseg.users.account_key), never the
    name itself: a password typed into the name field must not be stored.
    """

    __tablename__ = "login_failure"

    id: Mapped[IntPK]
    account_key: Mapped[str] = mapped_column(String(64), index=True)
    remote: Mapped[str] = mapped_column(String(64), index=True, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AuditEvent(Base):
    """Append-only: who did what to which object, and when."""

    __tablename__ = "audit_event"

    id: Mapped[IntPK]
    actor: Mapped[str] = mapped_column(String(80), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(255), default="", index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[CreatedAt]


class CorrectionSize(Base):
    """How much a reviewer's correction changed a prediction, computed once when it is saved
    (reading volumes is slow; the quality pages read only these rows): the Dice between the
    prediction's mask and the corrected label volume over all foreground classes, and the
    voxels whose label changed (see radseg.quality.correction_size)."""

    __tablename__ = "correction_size"

    label_set_id: Mapped[int] = mapped_column(
        ForeignKey("label_set.id", ondelete="CASCADE"), primary_key=True
    )
    prediction_id: Mapped[int] = mapped_column(
        ForeignKey("prediction.id", ondelete="CASCADE"), index=True
    )
    dice: Mapped[float] = mapped_column(Float)
    voxels_changed: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[CreatedAt]


class QualityAlert(Base):
    """A week in which a model version's control chart left its limits (radseg.quality):
    recorded once, announced once through the ``radseg_quality_alert`` hook."""

    __tablename__ = "quality_alert"

    id: Mapped[IntPK]
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_version.id", ondelete="CASCADE"), index=True
    )
    #: "reject_rate" or "correction_dice"
    chart: Mapped[str] = mapped_column(String(32))
    #: the ISO week, e.g. "2026-W49"
    week: Mapped[str] = mapped_column(String(10))
    value: Mapped[float] = mapped_column(Float)
    center: Mapped[float] = mapped_column(Float)
    limit: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[CreatedAt]

    __table_args__ = (UniqueConstraint("model_version_id", "chart", "week"),)
