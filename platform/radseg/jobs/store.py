"""The job store: submit, cancel and resubmit jobs; the queue's state machine and claim order.

State machine (every arrow writes a :class:`~radseg.db.models.JobEvent` with who, when, why)::

                 ┌──────────── retry (retryable error, attempts left, after backoff) ───────┐
                 │  ┌───────── lease expired (worker died) / worker drained (SIGTERM) ───────┤
                 ▼  ▼                                                                        │
    submit ──▶ queued ──claim──▶ running ──complete──────────────────────────▶ succeeded     │
                 │                │ │ └──fail (input error / no attempt left)──▶ failed      │
                 │                │ └───cancel (child killed, outputs removed)─▶ cancelled   │
                 │                └──────────────────────────────────────────────────────────┘
                 ├──cancel─────────────────────────────────────────────────────▶ cancelled
                 └──a dependency failed / was cancelled ──▶ failed / cancelled

``queued``: waiting for its turn, for ``run_after`` and for the jobs it depends on (all must be
``succeeded``); ``running``: a worker holds the lease (``lease_owner``, ``lease_expires_at``) and
renews it by heartbeat; ``succeeded``, ``failed`` and ``cancelled`` never change. A job in a final
state can be *resubmitted*: a new job with the same kind and payload, linked to it by
``resubmitted_from``.

Claim order: highest ``priority`` first; within a priority, lowest ``fair_tag`` first, then the
oldest ``id``. ``fair_tag`` is start-time fair queueing, computed once at submit: a user's next
job is tagged one after that user's last queued job, but never before the queue's virtual time
(the highest tag now running; with nothing running, the lowest tag queued; with nothing
running or queued, the newest job's tag)::

    fair_tag = max(last queued tag of this user + 1, virtual time)

so 500 jobs of one user are tagged 0..499; while job 0 runs, another user's one job gets tag 0
and runs next instead of after the other 499; two busy users alternate; newcomers keep their
order among themselves. It costs three index lookups at submit and nothing at claim, which
stays one index scan.

The worker's side (claim, heartbeat, progress, complete, fail, requeue, reap) is
:mod:`radseg.jobs.leases`; what every arrow writes is :mod:`radseg.jobs.transitions`.

Functions take a ``session`` and never commit. On PostgreSQL, :func:`submit` also sends
``NOTIFY radseg_jobs`` (delivered at commit) so idle workers wake at once; there the whole
submit (tag, jobs, dependency links, events, NOTIFY) is one statement, one round trip, since a
submit is on the path a user waits on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypedDict, Unpack

from sqlalchemy import BigInteger, Integer, bindparam, func, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Session

from radseg.db.base import UTCDateTime, utcnow
from radseg.db.models import Job, JobDependency, JobState
from radseg.errors import JobError, JobNotFound, JobStateConflict
from radseg.jobs.transitions import add_events, end_job

__all__ = [
    "GPU_KINDS",
    "MAX_MACHINES",
    "NOTIFY_CHANNEL",
    "SubmitOptions",
    "cancel",
    "eta_seconds",
    "requested_gpus",
    "resubmit",
    "submit",
    "submit_many",
]

#: the PostgreSQL channel idle workers LISTEN on
NOTIFY_CHANNEL = "radseg_jobs"
#: kinds that want a GPU when the worker has one (their ``gpus`` defaults to 1)
GPU_KINDS = frozenset({"train", "predict", "evaluate", "retrain"})
#: the most machines one job may span
MAX_MACHINES = 64


class SubmitOptions(TypedDict, total=False):
    """How :func:`submit` queues a job; each key is optional (defaults: :func:`submit_many`)."""

    priority: int
    max_attempts: int
    run_after: datetime | None
    created_by: str
    depends_on: Iterable[int]
    gpus: int | None
    resubmitted_from: int | None
    machines: int


def requested_gpus(kind: str, payload: dict[str, Any]) -> int:
    """GPUs a job of ``kind`` asks for: ``payload["num_gpus"]`` (or the training config's)."""
    config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
    value = payload.get("num_gpus", (config or {}).get("num_gpus"))
    if value is None:
        return 1 if kind in GPU_KINDS else 0
    try:
        gpus = int(value)
    except (TypeError, ValueError):
        raise JobError(f"num_gpus must be a whole number, not {value!r}") from None
    if gpus < 0:
        raise JobError(f"num_gpus must be 0 or more, not {gpus}")
    return gpus


def submit(
    session: Session, kind: str, payload: dict[str, Any], **options: Unpack[SubmitOptions]
) -> Job:
    """Queue a job of ``kind``; it is visible to workers once the caller's transaction commits.

    The options are :func:`submit_many`'s: ``priority``, ``max_attempts``, ``run_after``,
    ``created_by``, ``depends_on`` (ids of jobs that must succeed first; if one fails or is
    cancelled, this job is failed or cancelled with the reason), ``gpus`` (GPUs the job needs;
    default: ``requested_gpus(kind, payload)``), ``resubmitted_from`` and ``machines`` (a gang
    job: this many workers on different machines run it together, each with ``gpus`` GPUs;
    see :mod:`radseg.jobs.gangs`).
    """
    return submit_many(session, kind, [payload], **options)[0]


def submit_many(
    session: Session,
    kind: str,
    payloads: Sequence[dict[str, Any]],
    *,
    priority: int = 0,
    max_attempts: int = 3,
    run_after: datetime | None = None,
    created_by: str = "",
    depends_on: Iterable[int] = (),
    gpus: int | None = None,
    resubmitted_from: int | None = None,
    machines: int = 1,
) -> list[Job]:
    """Queue one job per payload (e.g. a prediction per series) in one go; see :func:`submit`.

    On PostgreSQL this is one statement, so one round trip (:data:`_SUBMIT_SQL`); on SQLite it
    is a few statements in the caller's transaction (:func:`_submit_orm`). Both compute the same
    fair tags, write the same rows and refuse the same dependencies.
    """
    if max_attempts < 1:
        raise JobError(f"max_attempts must be at least 1, not {max_attempts}")
    if isinstance(machines, bool) or not 1 <= machines <= MAX_MACHINES:
        raise JobError(f"machines must be a whole number from 1 to {MAX_MACHINES}, not {machines}")
    parents = sorted(set(depends_on))
    common = _Common(
        kind=kind,
        priority=priority,
        max_attempts=max_attempts,
        run_after=run_after or utcnow(),
        created_by=created_by,
        resubmitted_from=resubmitted_from,
        machines=machines,
    )
    gpu_counts = [requested_gpus(kind, p) if gpus is None else gpus for p in payloads]
    why = _submitted_why(parents, resubmitted_from)
    if not payloads:
        return []
    if session.get_bind().dialect.name == "postgresql":
        return _submit_postgresql(session, common, payloads, gpu_counts, parents, why)
    return _submit_orm(session, common, payloads, gpu_counts, parents, why)


@dataclass(frozen=True)
class _Common:
    """The columns every job of one :func:`submit_many` call shares."""

    kind: str
    priority: int
    max_attempts: int
    run_after: datetime
    created_by: str
    resubmitted_from: int | None
    machines: int


def _submit_orm(
    session: Session,
    common: _Common,
    payloads: Sequence[dict[str, Any]],
    gpu_counts: Sequence[int],
    parents: Sequence[int],
    why: str,
) -> list[Job]:
    """The portable submit: check the parents, read the fair tags, insert jobs, links, events."""
    _check_parents(session, parents)
    tags = _fair_tags(session, common.created_by, len(payloads))
    jobs = [
        Job(
            **asdict(common),
            payload=payload,
            state=JobState.QUEUED,
            fair_tag=tag,
            gpus=gpus,
        )
        for payload, gpus, tag in zip(payloads, gpu_counts, tags, strict=True)
    ]
    session.add_all(jobs)
    session.flush()
    if parents:
        session.execute(
            insert(JobDependency),
            [{"job_id": j.id, "depends_on_id": p} for j in jobs for p in parents],
        )
    add_events(
        session,
        ((j.id, why) for j in jobs),
        from_state=None,
        to_state=JobState.QUEUED,
        actor=common.created_by,
    )
    return jobs


#: PostgreSQL's submit in one statement: the fair tag (the same four lookups as
#: :func:`_fair_tags`), the jobs, their dependency links and ``queued`` events, and
#: ``NOTIFY radseg_jobs, <kind>`` (delivered at commit). Data-modifying CTEs all run, on one
#: snapshot, whether or not the final SELECT reads them; the jobs are inserted only when every
#: parent exists and has not ended without success (else nothing is written, and
#: :func:`_check_parents` says why). ``:payloads`` is a JSON array, one element per job. A new
#: column of ``job`` without a server default needs its value in the INSERT here.
_SUBMIT_SQL = f"""
WITH serving AS (
    SELECT COALESCE(
        (SELECT max(fair_tag) FROM job WHERE state = 'running'),
        (SELECT min(fair_tag) FROM job WHERE state = 'queued'),
        (SELECT fair_tag FROM job ORDER BY id DESC LIMIT 1),
        0
    ) AS tag
), first_tag AS (
    SELECT GREATEST(
        serving.tag,
        COALESCE(
            (SELECT max(fair_tag) + 1 FROM job
             WHERE created_by = :created_by AND state = 'queued'),
            serving.tag
        )
    ) AS tag
    FROM serving
), parents_ok AS (
    SELECT count(*) = cardinality(CAST(:parents AS bigint[])) AS ok
    FROM job
    WHERE id = ANY(CAST(:parents AS bigint[])) AND state NOT IN ('failed', 'cancelled')
), new_job AS (
    INSERT INTO job (
        kind, state, priority, payload, attempts, max_attempts, run_after, progress, message,
        cancel_requested, created_by, created_at, fair_tag, gpus, resubmitted_from, machines
    )
    SELECT :kind, 'queued', :priority, p.payload, 0, :max_attempts, :run_after, 0, '',
        false, :created_by, :now, first_tag.tag + p.n - 1,
        (CAST(:gpus AS integer[]))[p.n], :resubmitted_from, :machines
    FROM first_tag, parents_ok,
        jsonb_array_elements(CAST(:payloads AS jsonb)) WITH ORDINALITY AS p(payload, n)
    WHERE parents_ok.ok
    ORDER BY p.n
    RETURNING *
), new_dependency AS (
    INSERT INTO job_dependency (job_id, depends_on_id)
    SELECT new_job.id, parent FROM new_job, unnest(CAST(:parents AS bigint[])) AS parent
), new_event AS (
    INSERT INTO job_event (job_id, from_state, to_state, actor, message, created_at)
    SELECT new_job.id, NULL, 'queued', :created_by, :why, :now FROM new_job
), notified AS (
    SELECT pg_notify('{NOTIFY_CHANNEL}', :kind)
)
SELECT {", ".join(f"new_job.{c.name}" for c in Job.__table__.columns)}
FROM new_job CROSS JOIN notified
ORDER BY new_job.fair_tag
"""

#: the statement, typed: Job objects from its rows, whose columns are the model's in its order
#: (built once; compiled once per engine)
_SUBMIT = select(Job).from_statement(
    text(_SUBMIT_SQL)
    .bindparams(
        bindparam("payloads", type_=JSONB),
        bindparam("gpus", type_=ARRAY(Integer)),
        bindparam("parents", type_=ARRAY(BigInteger)),
        bindparam("run_after", type_=UTCDateTime()),
        bindparam("now", type_=UTCDateTime()),
    )
    .columns(*Job.__table__.columns)
)


def _submit_postgresql(
    session: Session,
    common: _Common,
    payloads: Sequence[dict[str, Any]],
    gpu_counts: Sequence[int],
    parents: Sequence[int],
    why: str,
) -> list[Job]:
    """:func:`_submit_orm`'s work as :data:`_SUBMIT_SQL`: one statement, one round trip."""
    values = {
        **asdict(common),
        "payloads": list(payloads),
        "gpus": list(gpu_counts),
        "parents": list(parents),
        "why": why,
        "now": utcnow(),
    }
    jobs = list(session.scalars(_SUBMIT, values))
    if len(jobs) != len(payloads):  # nothing was written: a parent is missing or ended badly
        _check_parents(session, parents)
        raise JobError(f"jobs not queued: one of the jobs {list(parents)} has just ended")
    return jobs


def _check_parents(session: Session, parents: Sequence[int]) -> None:
    """Refuse to depend on jobs that do not exist or already ended without success."""
    if not parents:
        return
    found = dict(session.execute(select(Job.id, Job.state).where(Job.id.in_(parents))).all())
    missing = [p for p in parents if p not in found]
    if missing:
        raise JobError(f"cannot depend on jobs that do not exist: {missing}")
    dead = {p: s.value for p, s in found.items() if s in (JobState.FAILED, JobState.CANCELLED)}
    if dead:
        raise JobError(
            f"cannot depend on jobs that already ended without success: {dead}; "
            "resubmit them first (radseg jobs resubmit ID) and depend on the new ids"
        )


def _submitted_why(parents: Sequence[int], resubmitted_from: int | None) -> str:
    """The message of a job's first event: what it waits for, where it came from."""
    why = "submitted"
    if parents:
        why += f"; waits for jobs {', '.join(map(str, parents))}"
    if resubmitted_from is not None:
        why += f"; resubmitted from job {resubmitted_from}"
    return why


def _fair_tags(session: Session, created_by: str, count: int) -> list[int]:
    """The next ``count`` start-time fair queueing tags of ``created_by`` (see module doc)."""
    queued = Job.state == JobState.QUEUED
    columns: list[Any] = [
        select(func.max(Job.fair_tag)).where(Job.state == JobState.RUNNING).scalar_subquery(),
        select(func.min(Job.fair_tag)).where(queued).scalar_subquery(),
        # the newest job's tag (a primary-key lookup): a max() over every job ever submitted
        # would read the whole table on each submit once it holds years of finished jobs
        select(Job.fair_tag).order_by(Job.id.desc()).limit(1).scalar_subquery(),
        select(func.max(Job.fair_tag))
        .where(Job.created_by == created_by, queued)
        .scalar_subquery(),
    ]
    row = session.execute(select(*columns)).one()
    running_max, queued_min, newest, last = row[:4]
    now_serving = next((v for v in (running_max, queued_min, newest) if v is not None), 0)
    first = max(now_serving, (last + 1) if last is not None else now_serving)
    return list(range(first, first + count))


def cancel(session: Session, job_id: int, actor: str) -> Job:
    """Cancel a queued job now, or ask the worker running it to stop (within seconds)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise JobNotFound(f"job {job_id} does not exist; see `radseg jobs list`")
    if job.state == JobState.QUEUED:
        job.message = f"cancelled by {actor}"
        end_job(session, job, JobState.CANCELLED, actor, f"cancelled by {actor} before it ran")
    elif job.state == JobState.RUNNING and not job.cancel_requested:
        job.cancel_requested = True
        job.message = f"cancel requested by {actor}"
        if session.get_bind().dialect.name == "postgresql":  # wake its worker now
            session.execute(
                text("SELECT pg_notify(:channel, :what)"),
                {"channel": NOTIFY_CHANNEL, "what": f"cancel {job.id}"},
            )
    return job


def resubmit(session: Session, job_id: int, actor: str) -> Job:
    """A new queued job with the kind, payload and settings of a finished one, linked to it.

    Dependencies are not copied: they had succeeded, or the job ended because one did not, in
    which case resubmit that one and submit this again depending on it.
    """
    old = session.get(Job, job_id)
    if old is None:
        raise JobNotFound(f"job {job_id} does not exist; see `radseg jobs list`")
    if not old.state.is_final:
        raise JobStateConflict(
            f"job {job_id} is {old.state.value}; only a finished job can be resubmitted "
            "(cancel it first)"
        )
    return submit(
        session,
        old.kind,
        dict(old.payload),
        priority=old.priority,
        max_attempts=old.max_attempts,
        created_by=actor or old.created_by,
        gpus=old.gpus,
        resubmitted_from=old.id,
        machines=old.machines,
    )


def eta_seconds(job: Job, now: datetime | None = None) -> float | None:
    """Seconds left, extrapolated from this attempt's progress so far; ``None`` if unknown."""
    if job.state != JobState.RUNNING or job.started_at is None or not job.progress:
        return None
    elapsed = ((now or utcnow()) - job.started_at).total_seconds()
    if job.progress >= 1.0:
        return 0.0
    return max(elapsed * (1.0 - job.progress) / job.progress, 0.0)
