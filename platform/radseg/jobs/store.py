"""The job store: submit, claim, heartbeat, finish, cancel, reap.

State machine (every arrow writes a :class:`~radseg.db.models.JobEvent`)::

    queued ──claim──▶ running ──complete──▶ succeeded
      ▲  │              │ │ └───fail (no retry left / not retryable)──▶ failed
      │  │              │ └──cancel──▶ cancelled
      │  └──cancel──────┼──────────────▶ cancelled
      └──retry / lease expired (attempts left)

``queued``: waiting for ``run_after``; ``running``: a worker holds the lease
(``lease_owner``, ``lease_expires_at``) and renews it by heartbeat; the final states never change.

Claiming is the one place two workers race. On PostgreSQL it is ``SELECT … FOR UPDATE SKIP
LOCKED`` (workers skip each other's candidate rows instead of waiting); on SQLite every
transaction is ``BEGIN IMMEDIATE`` (:mod:`radseg.db.session`), which takes the single write lock
before reading, so two workers can never read the same queued row as free. Every later write
by a worker is guarded by ``lease_owner = me``: a worker whose lease was taken over can no
longer change the job.

Functions take a ``session`` and never commit, except :func:`claim`, which owns its short
transaction because the locking mode is part of what it means.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, select, update
from sqlalchemy.orm import Session

from radseg.db.base import utcnow
from radseg.db.models import Job, JobEvent, JobState
from radseg.errors import JobError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: attempt n waits ``base * factor**(n-1)`` seconds, capped."""

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


def submit(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    priority: int = 0,
    max_attempts: int = 3,
    run_after: datetime | None = None,
    created_by: str = "",
) -> Job:
    """Queue a job of ``kind``; it is visible to workers once the caller's transaction commits."""
    job = Job(
        kind=kind,
        payload=payload,
        priority=priority,
        max_attempts=max_attempts,
        run_after=run_after or utcnow(),
        created_by=created_by,
        state=JobState.QUEUED,
    )
    session.add(job)
    session.flush()
    session.add(JobEvent(job_id=job.id, from_state=None, to_state="queued", actor=created_by))
    return job


def claim(
    engine: Engine, worker_id: str, *, kinds: list[str] | None = None, lease_seconds: float = 60
) -> Job | None:
    """Take the most urgent runnable job and lease it to ``worker_id``; ``None`` if none.

    Order: highest ``priority`` first, then oldest ``id``. The returned Job is detached.
    """
    with Session(engine, expire_on_commit=False) as session, session.begin():
        now = utcnow()
        query = (
            select(Job)
            .where(Job.state == JobState.QUEUED, Job.run_after <= now)
            .order_by(Job.priority.desc(), Job.id)
            .limit(1)
        )
        if kinds:
            query = query.where(Job.kind.in_(kinds))
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        job = session.scalars(query).first()
        if job is None:
            return None
        _event(session, job, JobState.RUNNING, worker_id, f"attempt {job.attempts + 1}")
        job.state = JobState.RUNNING
        job.attempts += 1
        job.lease_owner = worker_id
        job.lease_expires_at = now + timedelta(seconds=lease_seconds)
        job.started_at = now
        job.progress = 0.0
        job.message = ""
        session.flush()
        session.expunge(job)
        return job


def _owned(session: Session, job_id: int, worker_id: str) -> Job | None:
    return session.scalars(
        select(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.lease_owner == worker_id)
        .with_for_update()
    ).first()


def heartbeat(session: Session, job_id: int, worker_id: str, lease_seconds: float) -> str:
    """Renew the lease. Returns ``"ok"``, ``"cancel"`` (stop the job) or ``"lost"``."""
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.lease_owner == worker_id)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .returning(Job.cancel_requested)
    ).first()
    if row is None:
        return "lost"
    return "cancel" if row[0] else "ok"


def set_progress(
    session: Session, job_id: int, worker_id: str, progress: float, message: str
) -> bool:
    """Record progress in [0, 1] and a one-line message; ``False`` if the lease is gone."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.lease_owner == worker_id)
        .values(progress=min(max(float(progress), 0.0), 1.0), message=message[:1000])
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


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
    if retryable and job.attempts < job.max_attempts:
        _event(session, job, JobState.QUEUED, worker_id, f"retry after: {error}")
        job.state = JobState.QUEUED
        job.run_after = utcnow() + policy.delay(job.attempts)
    else:
        _event(session, job, JobState.FAILED, worker_id, error)
        job.state = JobState.FAILED
        job.finished_at = utcnow()
    job.message = error[:1000]
    job.lease_owner = None
    job.lease_expires_at = None
    return job


def mark_cancelled(session: Session, job_id: int, worker_id: str) -> Job | None:
    """The worker stopped a running job because cancel was requested."""
    job = _owned(session, job_id, worker_id)
    if job is None:
        return None
    _event(session, job, JobState.CANCELLED, worker_id, "cancelled while running")
    job.state = JobState.CANCELLED
    job.finished_at = utcnow()
    job.lease_owner = None
    job.lease_expires_at = None
    return job


def cancel(session: Session, job_id: int, actor: str) -> Job:
    """Cancel a queued job now, or ask the worker running it to stop."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise JobError(f"job {job_id} does not exist; see `radseg jobs list`")
    if job.state == JobState.QUEUED:
        _event(session, job, JobState.CANCELLED, actor, "cancelled before it ran")
        job.state = JobState.CANCELLED
        job.finished_at = utcnow()
    elif job.state == JobState.RUNNING:
        job.cancel_requested = True
    return job


def reap_expired(session: Session, actor: str = "reaper") -> list[int]:
    """Requeue (or fail, when no attempt is left) running jobs whose lease has expired."""
    now = utcnow()
    query = select(Job).where(and_(Job.state == JobState.RUNNING, Job.lease_expires_at < now))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    reaped = []
    for job in session.scalars(query):
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
        reaped.append(job.id)
    return reaped
