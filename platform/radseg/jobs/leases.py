"""The worker's side of the job store: claim jobs, renew their leases, finish them.

Claiming is the one place workers race. On PostgreSQL it is ``UPDATE … WHERE id IN (SELECT …
FOR UPDATE SKIP LOCKED LIMIT n) RETURNING …``: workers skip each other's candidate rows instead
of waiting, and a worker may take several jobs in one round trip. On SQLite the claim is one
``UPDATE … WHERE id IN (SELECT …)`` in a ``BEGIN IMMEDIATE`` transaction (:mod:`radseg.db.session`:
a write or a ``FOR UPDATE`` read takes the single write lock before reading), so two workers can
never read the same queued row as free. Every later write by a worker is guarded by
``lease_owner = me AND state = 'running'``, read ``FOR UPDATE``: a worker whose lease was taken
over can no longer change the job. The claim order and the state machine are described in
:mod:`radseg.jobs.store`.

Functions take a ``session`` and never commit, except :func:`claim` and :func:`claim_batch`, which
own their short transaction because the locking mode is part of what they mean.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Integer,
    Select,
    and_,
    bindparam,
    column,
    exists,
    select,
    update,
    values,
)
from sqlalchemy.orm import Session, aliased

from radseg.db.base import JSONType, utcnow
from radseg.db.models import Job, JobDependency, JobState
from radseg.errors import JobError
from radseg.jobs.transitions import (
    JOB_MESSAGE_CHARS,
    add_event,
    add_events,
    end_job,
    release_gang,
    release_lease,
)

__all__ = [
    "DEFAULT_RETRY",
    "RetryPolicy",
    "back_to_queue",
    "claim",
    "claim_batch",
    "complete",
    "complete_batch",
    "fail",
    "fail_or_retry",
    "heartbeat",
    "heartbeat_many",
    "mark_cancelled",
    "reap_expired",
    "requeue",
    "set_progress",
]

log = logging.getLogger(__name__)

#: what a claim returns of each job: enough for the worker to start it without reading it again
_CLAIMED_COLUMNS = (
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


# -- claiming ------------------------------------------------------------------------------


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
    lease = (
        update(Job)
        .where(_locked_for_claim(engine.dialect.name, candidates))
        .values(
            state=JobState.RUNNING,
            attempts=Job.attempts + 1,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=now,
            progress=0.0,
            message="",
        )
        .returning(*_CLAIMED_COLUMNS)
        .execution_options(synchronize_session=False)
    )
    with Session(engine, expire_on_commit=False) as session, session.begin():
        rows = session.execute(lease).all()
        if not rows:
            return []
        add_events(
            session,
            ((row.id, f"attempt {row.attempts}") for row in rows),
            from_state=JobState.QUEUED,
            to_state=JobState.RUNNING,
            actor=worker_id,
        )
    jobs = [
        Job(
            **row._mapping,
            state=JobState.RUNNING,
            lease_owner=worker_id,
            started_at=now,
            progress=0.0,
            message="",
        )
        for row in rows
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


def _ready_query(
    now: datetime,
    kinds: Sequence[str] | None,
    exclude_kinds: Sequence[str] | None,
    gpus: tuple[int, int] | None,
    limit: int,
) -> Select[int]:
    """The ids of the first ``limit`` runnable jobs in claim order: queued, due, and every job
    they depend on succeeded."""
    parent = aliased(Job)
    waiting = exists(
        select(1)
        .select_from(JobDependency)
        .join(parent, parent.id == JobDependency.depends_on_id)
        .where(JobDependency.job_id == Job.id, parent.state != JobState.SUCCEEDED)
    )
    query = (
        select(Job.id)
        # a gang job (machines > 1) is joined, never claimed: radseg.jobs.gangs
        .where(Job.state == JobState.QUEUED, Job.run_after <= now, Job.machines == 1, ~waiting)
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


def _locked_for_claim(dialect: str, candidates: Select[int]) -> ColumnElement[bool]:
    """The claim's WHERE: the candidate rows, read so that no other worker can take them too.

    PostgreSQL skips rows another worker has locked; SQLite already holds the one write lock.
    """
    if dialect == "postgresql":
        # a CTE, joined: the IN (subquery) form makes PostgreSQL scan the whole table
        claimable = candidates.with_for_update(skip_locked=True, of=Job).cte("claimable")
        return Job.id == claimable.c.id
    return Job.id.in_(candidates.scalar_subquery())


# -- while a job runs ----------------------------------------------------------------------


def _held_by(worker_id: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The guard of every write by a worker: the job still runs under its lease."""
    return (Job.state == JobState.RUNNING, Job.lease_owner == worker_id)


def _owned(session: Session, job_id: int, worker_id: str) -> Job | None:
    """Job ``job_id``, locked, if ``worker_id`` still holds its lease; else ``None``."""
    return session.scalars(
        select(Job).where(Job.id == job_id, *_held_by(worker_id)).with_for_update()
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
        .where(Job.id.in_(list(job_ids)), *_held_by(worker_id))
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
        .where(Job.id == job_id, *_held_by(worker_id), Job.cancel_requested.is_(False))
        .values(progress=min(max(float(progress), 0.0), 1.0), message=message[:JOB_MESSAGE_CHARS])
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# -- finishing -----------------------------------------------------------------------------


def complete(session: Session, job_id: int, worker_id: str, result: dict[str, Any]) -> Job:
    """Record the job's result: it succeeded. :raises JobError: the lease is no longer ours."""
    job = _owned(session, job_id, worker_id)
    if job is None:
        raise JobError(f"job {job_id} is no longer leased to {worker_id}; not completing it")
    end_job(session, job, JobState.SUCCEEDED, worker_id, "")
    job.result = result
    job.progress = 1.0
    return job


def complete_batch(
    session: Session, worker_id: str, results: dict[int, dict[str, Any]]
) -> list[int]:
    """Complete several jobs of ``worker_id`` at once; returns the ids that were still ours."""
    if not results:
        return []
    if session.get_bind().dialect.name == "postgresql":
        done = _complete_with_results(session, worker_id, results)
    else:
        done = _complete_then_store_results(session, worker_id, results)
    if done:
        add_events(
            session,
            ((job_id, "") for job_id in done),
            from_state=JobState.RUNNING,
            to_state=JobState.SUCCEEDED,
            actor=worker_id,
        )
    return done


def _succeeded() -> dict[str, Any]:
    """The columns of a job that has just succeeded, but its result."""
    return {
        "state": JobState.SUCCEEDED,
        "progress": 1.0,
        "finished_at": utcnow(),
        "lease_owner": None,
        "lease_expires_at": None,
    }


def _complete_with_results(
    session: Session, worker_id: str, results: dict[int, dict[str, Any]]
) -> list[int]:
    """PostgreSQL: one ``UPDATE … FROM (VALUES (id, result), …) RETURNING id``."""
    rows = values(column("job_id", Integer), column("job_result", JSONType), name="results").data(
        list(results.items())
    )
    return list(
        session.scalars(
            update(Job)
            .where(Job.id == rows.c.job_id, *_held_by(worker_id))
            .values(result=rows.c.job_result, **_succeeded())
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
    )


def _complete_then_store_results(
    session: Session, worker_id: str, results: dict[int, dict[str, Any]]
) -> list[int]:
    """SQLite (no UPDATE … FROM VALUES): finish the jobs still ours, then write their results
    in one executemany."""
    done = list(
        session.scalars(
            update(Job)
            .where(Job.id.in_(list(results)), *_held_by(worker_id))
            .values(**_succeeded())
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
    return done


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
    fail_or_retry(session, job, worker_id, error, retryable=retryable, policy=policy)
    return job


def fail_or_retry(
    session: Session,
    job: Job,
    worker_id: str,
    error: str,
    *,
    retryable: bool,
    policy: RetryPolicy,
    cancelled: bool = False,
) -> None:
    """A failed attempt of ``job`` (running on ``worker_id``): back to the queue with backoff
    while it is ``retryable``, has attempts left and is not ``cancelled``; else ended, failed
    (cancelled when ``cancelled``)."""
    job.message = error[:JOB_MESSAGE_CHARS]
    if retryable and job.attempts < job.max_attempts and not cancelled:
        delay = policy.delay(job.attempts)
        why = f"retry in {delay.total_seconds():.0f} s after: {error}"
        back_to_queue(session, job, worker_id, why, run_after=utcnow() + delay)
    else:
        final = JobState.CANCELLED if cancelled else JobState.FAILED
        why = error if retryable else f"not retried (input error): {error}"
        end_job(session, job, final, worker_id, why)


def requeue(session: Session, job_id: int, worker_id: str, reason: str) -> Job | None:
    """Give a running job back to the queue without counting the attempt (worker shutdown)."""
    job = _owned(session, job_id, worker_id)
    if job is None:
        return None
    back_to_queue(session, job, worker_id, reason, run_after=utcnow())
    job.attempts = max(job.attempts - 1, 0)
    job.message = reason[:JOB_MESSAGE_CHARS]
    return job


def mark_cancelled(session: Session, job_id: int, worker_id: str) -> Job | None:
    """The worker stopped a running job because cancel was requested."""
    job = _owned(session, job_id, worker_id)
    if job is None:
        return None
    end_job(session, job, JobState.CANCELLED, worker_id, job.message or "cancelled while running")
    return job


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
        job.message = message
        if job.attempts < job.max_attempts and not job.cancel_requested:
            back_to_queue(session, job, actor, message, run_after=now)
        else:
            final = JobState.CANCELLED if job.cancel_requested else JobState.FAILED
            end_job(session, job, final, actor, message, at=now)
        reaped.append(job.id)
    return reaped


def back_to_queue(session: Session, job: Job, actor: str, why: str, *, run_after: datetime) -> None:
    """``running → queued``: the job may be claimed again from ``run_after`` on (a gang job
    by a new gang: its members leave)."""
    add_event(session, job, JobState.QUEUED, actor, why)
    job.state = JobState.QUEUED
    job.run_after = run_after
    release_lease(job)
    release_gang(session, job)
