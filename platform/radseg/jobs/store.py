"""The job store: submit, claim, heartbeat, finish, cancel, resubmit, reap.

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

Claiming is the one place workers race. On PostgreSQL it is ``UPDATE … WHERE id IN (SELECT …
FOR UPDATE SKIP LOCKED LIMIT n) RETURNING …``: workers skip each other's candidate rows instead
of waiting, and a worker may take several jobs in one round trip. On SQLite the claim is one
``UPDATE … WHERE id IN (SELECT …)`` in a ``BEGIN IMMEDIATE`` transaction (:mod:`radseg.db.session`:
a write or a ``FOR UPDATE`` read takes the single write lock before reading), so two workers can
never read the same queued row as free. Every later write by a worker is guarded by
``lease_owner = me AND state = 'running'``, read ``FOR UPDATE``: a worker whose lease was taken
over can no longer change the job.

Functions take a ``session`` and never commit, except :func:`claim` and :func:`claim_batch`, which
own their short transaction because the locking mode is part of what they mean. On PostgreSQL,
:func:`submit` also sends ``NOTIFY radseg_jobs`` (delivered at commit) so idle workers wake at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Engine,
    Integer,
    and_,
    bindparam,
    column,
    exists,
    func,
    insert,
    select,
    text,
    update,
    values,
)
from sqlalchemy.orm import Session, aliased

from radseg.db.base import JSONType, utcnow
from radseg.db.models import Job, JobDependency, JobEvent, JobState
from radseg.errors import JobError, JobNotFound, JobStateConflict

log = logging.getLogger(__name__)

#: the PostgreSQL channel idle workers LISTEN on
NOTIFY_CHANNEL = "radseg_jobs"
#: kinds that want a GPU when the worker has one (their ``gpus`` defaults to 1)
GPU_KINDS = frozenset({"train", "predict", "evaluate"})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: attempt n waits ``base * factor**(n-1)`` seconds, capped.

    Which errors retry is decided where they happen (:mod:`radseg.jobs.runner`): an input error
    (:class:`~radseg.errors.RadsegError`: a missing dataset, a bad file) fails at once, since a
    re-run would fail the same way; any other exception, a crash or a kill retries until
    ``max_attempts`` attempts have been made.
    """

    base_seconds: float = 5.0
    factor: float = 4.0
    max_seconds: float = 600.0

    def delay(self, attempts: int) -> timedelta:
        seconds = min(self.base_seconds * self.factor ** max(attempts - 1, 0), self.max_seconds)
        return timedelta(seconds=seconds)


DEFAULT_RETRY = RetryPolicy()


def _event(session: Session, job: Job, to: JobState, actor: str, message: str = "") -> None:
    session.add(
        JobEvent(
            job_id=job.id,
            from_state=job.state.value if job.state else None,
            to_state=to.value,
            actor=actor,
            message=message[:4000],
        )
    )


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


def _fair_tags(session: Session, created_by: str, count: int, *, notify: str) -> list[int]:
    """The next ``count`` start-time fair queueing tags of ``created_by`` (see module doc).

    On PostgreSQL the same statement sends ``NOTIFY radseg_jobs, <notify>`` (delivered at
    commit): submit is on the latency path, so it costs no round trip of its own.
    """
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
    if session.get_bind().dialect.name == "postgresql":
        columns.append(func.pg_notify(NOTIFY_CHANNEL, notify))
    row = session.execute(select(*columns)).one()
    running_max, queued_min, newest, last = row[:4]
    now_serving = next((v for v in (running_max, queued_min, newest) if v is not None), 0)
    first = max(now_serving, (last + 1) if last is not None else now_serving)
    return list(range(first, first + count))


def submit(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    priority: int = 0,
    max_attempts: int = 3,
    run_after: datetime | None = None,
    created_by: str = "",
    depends_on: Iterable[int] = (),
    gpus: int | None = None,
    resubmitted_from: int | None = None,
) -> Job:
    """Queue a job of ``kind``; it is visible to workers once the caller's transaction commits.

    :param depends_on: ids of jobs that must succeed first; if one fails or is cancelled, this
        job is failed or cancelled with the reason.
    :param gpus: GPUs the job needs (default: ``requested_gpus(kind, payload)``).
    """
    return submit_many(
        session,
        kind,
        [payload],
        priority=priority,
        max_attempts=max_attempts,
        run_after=run_after,
        created_by=created_by,
        depends_on=depends_on,
        gpus=gpus,
        resubmitted_from=resubmitted_from,
    )[0]


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
) -> list[Job]:
    """Queue one job per payload (e.g. a prediction per series) in one go; see :func:`submit`."""
    if max_attempts < 1:
        raise JobError(f"max_attempts must be at least 1, not {max_attempts}")
    parents = sorted(set(depends_on))
    if parents:
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
    when = run_after or utcnow()
    tags = _fair_tags(session, created_by, len(payloads), notify=kind)
    jobs = [
        Job(
            kind=kind,
            payload=payload,
            priority=priority,
            max_attempts=max_attempts,
            run_after=when,
            created_by=created_by,
            state=JobState.QUEUED,
            fair_tag=tag,
            gpus=requested_gpus(kind, payload) if gpus is None else gpus,
            resubmitted_from=resubmitted_from,
        )
        for payload, tag in zip(payloads, tags, strict=True)
    ]
    session.add_all(jobs)
    session.flush()
    why = "submitted"
    if parents:
        why += f"; waits for jobs {', '.join(map(str, parents))}"
    if resubmitted_from is not None:
        why += f"; resubmitted from job {resubmitted_from}"
    if parents:
        session.execute(
            insert(JobDependency),
            [{"job_id": j.id, "depends_on_id": p} for j in jobs for p in parents],
        )
    session.execute(
        insert(JobEvent),
        [
            {
                "job_id": j.id,
                "from_state": None,
                "to_state": "queued",
                "actor": created_by,
                "message": why,
            }
            for j in jobs
        ],
    )
    return jobs


def _ready_query(
    now: datetime,
    kinds: Sequence[str] | None,
    exclude_kinds: Sequence[str] | None,
    gpus: tuple[int, int] | None,
    limit: int,
) -> Any:
    parent = aliased(Job)
    waiting = exists(
        select(1)
        .select_from(JobDependency)
        .join(parent, parent.id == JobDependency.depends_on_id)
        .where(JobDependency.job_id == Job.id, parent.state != JobState.SUCCEEDED)
    )
    query = (
        select(Job.id)
        .where(Job.state == JobState.QUEUED, Job.run_after <= now, ~waiting)
        .order_by(Job.priority.desc(), Job.fair_tag, Job.id)
        .limit(limit)
    )
    if kinds is not None:
        query = query.where(Job.kind.in_(list(kinds)))
    if exclude_kinds:
        query = query.where(Job.kind.not_in(list(exclude_kinds)))
    if gpus is not None:
        query = query.where(Job.gpus.between(*gpus))
    return query


def claim_batch(
    engine: Engine,
    worker_id: str,
    *,
    limit: int = 1,
    kinds: Sequence[str] | None = None,
    exclude_kinds: Sequence[str] | None = None,
    gpus: tuple[int, int] | None = None,
    lease_seconds: float = 60,
) -> list[Job]:
    """Lease up to ``limit`` runnable jobs to ``worker_id`` in one transaction (claim order).

    :param kinds: only these kinds (``None``: any); ``exclude_kinds``: none of these.
    :param gpus: only jobs whose ``gpus`` lies in this inclusive range (``None``: any).
    Returns detached :class:`Job` objects with the claimed values, most urgent first.
    """
    if limit < 1 or kinds == []:
        return []
    now = utcnow()
    candidates = _ready_query(now, kinds, exclude_kinds, gpus, limit)
    if engine.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True, of=Job)
        # a CTE, joined: the IN (subquery) form makes PostgreSQL scan the whole table
        claimable = candidates.cte("claimable")
        chosen = Job.id == claimable.c.id
    else:
        chosen = Job.id.in_(candidates.scalar_subquery())
    statement = (
        update(Job)
        .where(chosen)
        .values(
            state=JobState.RUNNING,
            attempts=Job.attempts + 1,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=now,
            progress=0.0,
            message="",
        )
        .returning(
            Job.id,
            Job.kind,
            Job.payload,
            Job.priority,
            Job.fair_tag,
            Job.attempts,
            Job.max_attempts,
            Job.gpus,
            Job.created_by,
            Job.created_at,
        )
        .execution_options(synchronize_session=False)
    )
    with Session(engine, expire_on_commit=False) as session, session.begin():
        rows = session.execute(statement).all()
        if not rows:
            return []
        session.execute(
            insert(JobEvent),
            [
                {
                    "job_id": r.id,
                    "from_state": "queued",
                    "to_state": "running",
                    "actor": worker_id,
                    "message": f"attempt {r.attempts}",
                }
                for r in rows
            ],
        )
    jobs = [
        Job(
            id=r.id,
            kind=r.kind,
            payload=r.payload,
            priority=r.priority,
            fair_tag=r.fair_tag,
            attempts=r.attempts,
            max_attempts=r.max_attempts,
            gpus=r.gpus,
            created_by=r.created_by,
            created_at=r.created_at,
            state=JobState.RUNNING,
            lease_owner=worker_id,
            started_at=now,
            progress=0.0,
            message="",
        )
        for r in rows
    ]
    jobs.sort(key=lambda j: (-j.priority, j.fair_tag, j.id))
    return jobs


def claim(
    engine: Engine,
    worker_id: str,
    *,
    kinds: Sequence[str] | None = None,
    lease_seconds: float = 60,
    gpus: tuple[int, int] | None = None,
) -> Job | None:
    """Take the most urgent runnable job and lease it to ``worker_id``; ``None`` if none."""
    jobs = claim_batch(
        engine, worker_id, limit=1, kinds=kinds, gpus=gpus, lease_seconds=lease_seconds
    )
    return jobs[0] if jobs else None


def _owned(session: Session, job_id: int, worker_id: str) -> Job | None:
    return session.scalars(
        select(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.lease_owner == worker_id)
        .with_for_update()
    ).first()


def heartbeat(session: Session, job_id: int, worker_id: str, lease_seconds: float) -> str:
    """Renew the lease. Returns ``"ok"``, ``"cancel"`` (stop the job) or ``"lost"``."""
    return heartbeat_many(session, [job_id], worker_id, lease_seconds)[job_id]


def heartbeat_many(
    session: Session, job_ids: Sequence[int], worker_id: str, lease_seconds: float
) -> dict[int, str]:
    """Renew the leases of ``job_ids`` in one statement; ``{id: "ok" | "cancel" | "lost"}``."""
    if not job_ids:
        return {}
    rows = session.execute(
        update(Job)
        .where(
            Job.id.in_(list(job_ids)), Job.state == JobState.RUNNING, Job.lease_owner == worker_id
        )
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .returning(Job.id, Job.cancel_requested)
        .execution_options(synchronize_session=False)
    ).all()
    status = {job_id: "lost" for job_id in job_ids}
    status.update({r.id: "cancel" if r.cancel_requested else "ok" for r in rows})
    return status


def set_progress(
    session: Session, job_id: int, worker_id: str, progress: float, message: str
) -> bool:
    """Record progress in [0, 1] and a one-line message; ``False`` if the lease is gone or a
    cancel was requested (the message then keeps saying who asked, until the job is stopped)."""
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.state == JobState.RUNNING,
            Job.lease_owner == worker_id,
            Job.cancel_requested.is_(False),
        )
        .values(progress=min(max(float(progress), 0.0), 1.0), message=message[:1000])
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def eta_seconds(job: Job, now: datetime | None = None) -> float | None:
    """Seconds left, extrapolated from this attempt's progress so far; ``None`` if unknown."""
    if job.state != JobState.RUNNING or job.started_at is None or not job.progress:
        return None
    elapsed = ((now or utcnow()) - job.started_at).total_seconds()
    if job.progress >= 1.0:
        return 0.0
    return max(elapsed * (1.0 - job.progress) / job.progress, 0.0)


def complete(session: Session, job_id: int, worker_id: str, result: dict[str, Any]) -> Job:
    job = _owned(session, job_id, worker_id)
    if job is None:
        raise JobError(f"job {job_id} is no longer leased to {worker_id}; not completing it")
    _event(session, job, JobState.SUCCEEDED, worker_id)
    job.state = JobState.SUCCEEDED
    job.result = result
    job.progress = 1.0
    job.finished_at = utcnow()
    job.lease_owner = None
    job.lease_expires_at = None
    return job


def complete_batch(
    session: Session, worker_id: str, results: dict[int, dict[str, Any]]
) -> list[int]:
    """Complete several jobs of ``worker_id`` at once; returns the ids that were still ours."""
    if not results:
        return []
    finished = {
        "state": JobState.SUCCEEDED,
        "progress": 1.0,
        "finished_at": utcnow(),
        "lease_owner": None,
        "lease_expires_at": None,
    }
    ours = (Job.state == JobState.RUNNING, Job.lease_owner == worker_id)
    if session.get_bind().dialect.name == "postgresql":
        # one statement: UPDATE … FROM (VALUES (id, result), …) RETURNING id
        rows = values(
            column("job_id", Integer), column("job_result", JSONType), name="results"
        ).data(list(results.items()))
        done = list(
            session.scalars(
                update(Job)
                .where(Job.id == rows.c.job_id, *ours)
                .values(result=rows.c.job_result, **finished)
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            )
        )
    else:
        done = list(
            session.scalars(
                update(Job)
                .where(Job.id.in_(list(results)), *ours)
                .values(**finished)
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            )
        )
        if done:
            table = Job.__table__
            session.execute(
                table.update()  # type: ignore[attr-defined]
                .where(table.c.id == bindparam("job_id"))
                .values(result=bindparam("job_result")),
                [{"job_id": i, "job_result": results[i]} for i in done],
            )
    if done:
        session.execute(
            insert(JobEvent),
            [
                {
                    "job_id": i,
                    "from_state": "running",
                    "to_state": "succeeded",
                    "actor": worker_id,
                    "message": "",
                }
                for i in done
            ],
        )
    return done


def _settle_dependents(session: Session, job: Job, actor: str) -> None:
    """A job ended without success: end the queued jobs waiting for it, and theirs, likewise."""
    final = JobState.CANCELLED if job.state == JobState.CANCELLED else JobState.FAILED
    reason = f"dependency job {job.id} ({job.kind}) {job.state.value}"
    if job.message:
        reason += f": {job.message}"
    dependents = session.scalars(
        select(Job)
        .join(JobDependency, JobDependency.job_id == Job.id)
        .where(JobDependency.depends_on_id == job.id, Job.state == JobState.QUEUED)
        .with_for_update()
    ).all()
    for dependent in dependents:
        _event(session, dependent, final, actor, reason)
        dependent.state = final
        dependent.message = reason[:1000]
        dependent.finished_at = utcnow()
        session.flush()
        _settle_dependents(session, dependent, actor)


def fail(
    session: Session,
    job_id: int,
    worker_id: str,
    error: str,
    *,
    retryable: bool = True,
    policy: RetryPolicy = DEFAULT_RETRY,
) -> Job | None:
    """Fail the attempt: requeue with backoff if retryable and attempts are left, else failed."""
    job = _owned(session, job_id, worker_id)
    if job is None:
        log.warning("job %s: lease lost before its failure could be recorded", job_id)
        return None
    job.message = error[:1000]
    if retryable and job.attempts < job.max_attempts:
        delay = policy.delay(job.attempts)
        _event(
            session,
            job,
            JobState.QUEUED,
            worker_id,
            f"retry in {delay.total_seconds():.0f} s after: {error}",
        )
        job.state = JobState.QUEUED
        job.run_after = utcnow() + delay
    else:
        why = error if retryable else f"not retried (input error): {error}"
        _event(session, job, JobState.FAILED, worker_id, why)
        job.state = JobState.FAILED
        job.finished_at = utcnow()
    job.lease_owner = None
    job.lease_expires_at = None
    if job.state == JobState.FAILED:
        session.flush()
        _settle_dependents(session, job, worker_id)
    return job


def requeue(session: Session, job_id: int, worker_id: str, reason: str) -> Job | None:
    """Give a running job back to the queue without counting the attempt (worker shutdown)."""
    job = _owned(session, job_id, worker_id)
    if job is None:
        return None
    _event(session, job, JobState.QUEUED, worker_id, reason)
    job.state = JobState.QUEUED
    job.attempts = max(job.attempts - 1, 0)
    job.run_after = utcnow()
    job.message = reason[:1000]
    job.lease_owner = None
    job.lease_expires_at = None
    return job


def mark_cancelled(session: Session, job_id: int, worker_id: str) -> Job | None:
    """The worker stopped a running job because cancel was requested."""
    job = _owned(session, job_id, worker_id)
    if job is None:
        return None
    _event(session, job, JobState.CANCELLED, worker_id, job.message or "cancelled while running")
    job.state = JobState.CANCELLED
    job.finished_at = utcnow()
    job.lease_owner = None
    job.lease_expires_at = None
    session.flush()
    _settle_dependents(session, job, worker_id)
    return job


def cancel(session: Session, job_id: int, actor: str) -> Job:
    """Cancel a queued job now, or ask the worker running it to stop (within seconds)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise JobNotFound(f"job {job_id} does not exist; see `radseg jobs list`")
    if job.state == JobState.QUEUED:
        _event(session, job, JobState.CANCELLED, actor, f"cancelled by {actor} before it ran")
        job.state = JobState.CANCELLED
        job.message = f"cancelled by {actor}"
        job.finished_at = utcnow()
        session.flush()
        _settle_dependents(session, job, actor)
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
    )


def reap_expired(session: Session, actor: str = "reaper") -> list[int]:
    """Requeue (or fail, when no attempt is left) running jobs whose lease has expired."""
    now = utcnow()
    query = select(Job).where(and_(Job.state == JobState.RUNNING, Job.lease_expires_at < now))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    else:  # SQLite: the write lock before the read, so a heartbeat cannot slip in between
        query = query.with_for_update()
    reaped = []
    for job in session.scalars(query).all():
        message = f"lease of {job.lease_owner} expired (worker died?)"
        if job.attempts < job.max_attempts and not job.cancel_requested:
            _event(session, job, JobState.QUEUED, actor, message)
            job.state = JobState.QUEUED
            job.run_after = now
        else:
            final = JobState.CANCELLED if job.cancel_requested else JobState.FAILED
            _event(session, job, final, actor, message)
            job.state = final
            job.finished_at = now
        job.message = message
        job.lease_owner = None
        job.lease_expires_at = None
        if job.state.is_final:
            session.flush()
            _settle_dependents(session, job, actor)
        reaped.append(job.id)
    return reaped
