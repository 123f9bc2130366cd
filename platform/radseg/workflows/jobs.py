"""Use cases of the job queue itself: queue a job for someone, cancel it, retry it, look at it.

Every front end (pages, JSON API, CLI) calls these, so a job is always queued with the same
attempts, owner and audit event, and cancelled or retried under the same rules. The use cases
that start a particular kind of work (build a dataset, train, predict, ...) validate their inputs
and then call :func:`queue_job` inside their own unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from radseg import audit
from radseg.contracts import BUILTIN_JOB_KINDS
from radseg.core import Platform
from radseg.db.models import Job, JobState
from radseg.db.paging import Listed, Window, fetch
from radseg.errors import NotFound, PermissionDenied, check_one_of
from radseg.jobs import store
from radseg.roles import (
    OPERATORS,
    Actor,
    may_see_job,
    require_role,
    shows_job_details,
    visible_jobs_condition,
)
from radseg.workflows.upload_folders import discard_upload


def queue_job(
    session: Session,
    platform: Platform,
    actor: Actor,
    kind: str,
    payload: dict[str, Any],
    *,
    target: str = "",
    **detail: Any,
) -> Job:
    """Queue a ``kind`` job owned by ``actor`` and audit it, in the caller's unit of work.

    :param target: what the audit event names (default ``job:<id>``); ``detail`` joins the event.
    """
    job = store.submit(
        session,
        kind,
        {**payload, "created_by": actor.username},
        max_attempts=platform.settings.max_attempts,
        created_by=actor.username,
    )
    audit.record(
        session,
        actor.username,
        f"job.submit.{kind}",
        target or f"job:{job.id}",
        job=job.id,
        **detail,
    )
    return job


def queue_jobs(
    session: Session,
    platform: Platform,
    actor: Actor,
    kind: str,
    payloads: Sequence[dict[str, Any]],
    *,
    targets: Sequence[str],
    **detail: Any,
) -> list[Job]:
    """Queue one ``kind`` job per payload, owned by ``actor``, and audit each (``targets[i]``
    names what job ``i`` acts on), in the caller's unit of work.

    One :func:`~radseg.jobs.store.submit_many`: on PostgreSQL the jobs of a thousand series are
    one statement, so a site's whole archive is queued in one short transaction.
    """
    jobs = store.submit_many(
        session,
        kind,
        [{**payload, "created_by": actor.username} for payload in payloads],
        max_attempts=platform.settings.max_attempts,
        created_by=actor.username,
    )
    for job, target in zip(jobs, targets, strict=True):
        audit.record(session, actor.username, f"job.submit.{kind}", target, job=job.id, **detail)
    return jobs


def visible_job(session: Session, actor: Actor, job_id: int) -> Job:
    """The job, if ``actor`` may see it; :class:`NotFound` otherwise (its existence is not told)."""
    job = session.get(Job, job_id)
    if job is None or not may_see_job(job, actor):
        raise NotFound(f"there is no job {job_id}")
    return job


#: the jobs list's orders: newest or oldest first (the primary key's order)
JobSort = Literal["newest", "oldest"]
JOB_SORTS: tuple[str, ...] = get_args(JobSort)


def job_kinds(platform: Platform) -> list[str]:
    """Every kind a job can have: the built-in ones and those the plugins register."""
    return sorted(BUILTIN_JOB_KINDS | set(platform.plugins.job_kinds.names()))


@dataclass(frozen=True)
class JobFilters:
    """What the jobs list shows: ``state``; ``kind``; ``q`` finds a job by its number (``123``
    or ``#123``) or its owner's user name (its start); ``sort`` one of :data:`JOB_SORTS`.

    :raises InputError: ``sort`` is not one of :data:`JOB_SORTS`.
    """

    state: JobState | None = None
    kind: str = ""
    q: str = ""
    sort: str = "newest"

    def __post_init__(self) -> None:
        check_one_of("sort", self.sort, JOB_SORTS)


def _jobs_filtered(query: Select[Any], actor: Actor, filters: JobFilters) -> Select[Any]:
    condition = visible_jobs_condition(actor)
    if condition is not None:
        query = query.where(condition)
    if filters.state is not None:
        query = query.where(Job.state == filters.state)
    if filters.kind:
        query = query.where(Job.kind == filters.kind)
    text = filters.q.strip()
    number = text.removeprefix("#")
    if number.isascii() and number.isdigit() and len(number) <= 10:
        query = query.where(Job.id == int(number))
    elif text:
        query = query.where(Job.created_by.startswith(text, autoescape=True))
    return query


def job_list(
    session: Session, actor: Actor, filters: JobFilters | None = None, window: Window | None = None
) -> Listed[Job]:
    """One page of the jobs ``actor`` may see, newest first by default, and their bounded count."""
    filters = filters or JobFilters()
    order = Job.id.desc() if filters.sort == "newest" else Job.id.asc()
    rows = _jobs_filtered(select(Job), actor, filters).order_by(order)
    matching = _jobs_filtered(select(Job.id), actor, filters)
    return fetch(session, rows, matching, window or Window(100))


def cancel_job(platform: Platform, actor: Actor, job_id: int, *, via: str | None = None) -> Job:
    """Cancel a queued job now, or ask the worker running it to stop; audited.

    A queued ingest ends here, so its upload is removed at once (after the commit).
    """
    require_role(actor, OPERATORS, "cancel jobs")
    extra = {"via": via} if via else {}
    with platform.sessions.begin() as session:
        visible_job(session, actor, job_id)
        job = store.cancel(session, job_id, actor.username)
        audit.record(session, actor.username, "job.cancel", f"job:{job.id}", **extra)
    discard_upload(platform, job)
    return job


def retry_job(platform: Platform, actor: Actor, job_id: int, *, via: str | None = None) -> Job:
    """Queue a finished job again as a new job of ``actor``'s, linked to it; audited.

    A retry copies the payload, so only those who see it (its owner, an admin) may retry.
    """
    require_role(actor, OPERATORS, "retry jobs")
    extra = {"via": via} if via else {}
    with platform.sessions.begin() as session:
        old = visible_job(session, actor, job_id)
        if not shows_job_details(old, actor):
            raise PermissionDenied(
                f"job {job_id} is {old.created_by or 'another person'}'s: only its owner or an "
                "admin can retry it (a retry copies its inputs); queue your own job instead"
            )
        job = store.resubmit(session, job_id, actor.username)
        audit.record(
            session, actor.username, "job.retry", f"job:{job.id}", retry_of=job_id, **extra
        )
    return job
