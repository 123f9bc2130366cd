"""What every arrow of the job state machine does (the diagram is in :mod:`radseg.jobs.store`).

Each change of state adds a :class:`~radseg.db.models.JobEvent` saying who moved the job, from
which state to which, and why. A job that ends without success (failed or cancelled) also ends
the queued jobs that wait for it, and theirs, with the reason: a job whose input will never be
made must not wait forever. Both the submitter's side (:mod:`radseg.jobs.store`: cancel) and the
worker's side (:mod:`radseg.jobs.leases`: fail, cancel, reap) end jobs through :func:`end_job`.

Functions take a ``session`` and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from radseg.db.base import utcnow
from radseg.db.models import Job, JobDependency, JobEvent, JobGangMember, JobState

__all__ = [
    "JOB_MESSAGE_CHARS",
    "add_event",
    "add_events",
    "end_job",
    "release_gang",
    "release_lease",
]

#: the longest ``Job.message`` kept (the one line the job lists show)
JOB_MESSAGE_CHARS = 1000
#: the longest message an event keeps (a traceback is cut here)
_EVENT_MESSAGE_CHARS = 4000


def add_event(session: Session, job: Job, to: JobState, actor: str, message: str = "") -> None:
    """Record that ``actor`` moves ``job`` from its current state to ``to``, and why.

    Call it before changing ``job.state``: the event reads the state it leaves.
    """
    session.add(
        JobEvent(
            job_id=job.id,
            from_state=job.state.value if job.state else None,
            to_state=to.value,
            actor=actor,
            message=message[:_EVENT_MESSAGE_CHARS],
        )
    )


def add_events(
    session: Session,
    messages: Iterable[tuple[int, str]],
    *,
    from_state: JobState | None,
    to_state: JobState,
    actor: str,
) -> None:
    """The same move for many jobs in one INSERT: ``messages`` is ``(job id, why)`` per job.

    For the batch operations (submit, claim, complete), which change rows without loading them.
    Their messages are the store's own short words, never error text, so they are kept whole.
    """
    session.execute(
        insert(JobEvent),
        [
            {
                "job_id": job_id,
                "from_state": from_state.value if from_state else None,
                "to_state": to_state.value,
                "actor": actor,
                "message": message,
            }
            for job_id, message in messages
        ],
    )


def release_lease(job: Job) -> None:
    """No worker holds ``job`` any more (it ended, or went back to the queue)."""
    job.lease_owner = None
    job.lease_expires_at = None


def release_gang(session: Session, job: Job) -> None:
    """The attempt of a gang job (:mod:`radseg.jobs.gangs`) is over, or the job is: every
    member leaves it, and each stops its rank when its next heartbeat finds itself gone."""
    if job.machines > 1:
        session.execute(delete(JobGangMember).where(JobGangMember.job_id == job.id))


def end_job(
    session: Session,
    job: Job,
    final: JobState,
    actor: str,
    why: str,
    *,
    at: datetime | None = None,
) -> None:
    """Move ``job`` to the final state ``final`` at ``at`` (default: now), for the reason ``why``.

    Ending without success ends the queued jobs that wait for it too; their message names this
    job and its ``message``, so set that first.
    """
    add_event(session, job, final, actor, why)
    job.state = final
    job.finished_at = at or utcnow()
    release_lease(job)
    release_gang(session, job)
    if final != JobState.SUCCEEDED:
        session.flush()
        _settle_dependents(session, job, actor)


def _settle_dependents(session: Session, job: Job, actor: str) -> None:
    """``job`` ended without success: end the queued jobs waiting for it, and theirs, likewise."""
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
        dependent.message = reason[:JOB_MESSAGE_CHARS]
        end_job(session, dependent, final, actor, reason)
