"""Gang jobs: one job that several workers on different machines run together.

A job with ``machines = M > 1`` (``radseg train --machines M``) is never claimed by
:func:`radseg.jobs.leases.claim_batch`. Workers *join* it instead, one per machine (host name,
or the ``machine_name`` setting), all or nothing::

    queued ──join (1..M-1 members: a forming gang, still queued; each member waits)──┐
      ▲  ▲                                                                           │
      │  └── a member's gang timeout / its lease expired: its slot is released ◀─────┤
      │                                                                              ▼
      └── retry / requeue (the attempt fails for the whole group) ◀── running (M members)

- :func:`join` takes the row lock of the job (``SELECT … FOR UPDATE``: PostgreSQL's row lock;
  SQLite's single writer), checks again that the job is queued, that no member is on this
  machine and that a rank is free, and adds the worker as the lowest free rank. The M-th member
  moves the job to ``running`` (one attempt, leased to rank 0's worker). Other jobs are claimed
  without reading gang rows, so a forming gang never blocks or delays them.
- a member that waited :attr:`~radseg.settings.Settings.gang_timeout_seconds` for an incomplete
  gang :func:`leave`\\ s it: its slot is free for other work, the job stays queued;
- rank 0 picks a free port of ``gang_ports`` and :func:`publish`\\ es ``{addr, port, attempt}``
  in ``job.rendezvous``; every member reads it (:func:`beat`) and runs its rank with
  ``NODE_RANK``/``MASTER_ADDR``/``MASTER_PORT`` (detectron2's ``launch``; gloo or NCCL);
- every member renews its own lease (:func:`beat`; rank 0's also renews the job's). The attempt
  ends for the whole group (:func:`fail_attempt`, :func:`reap_members`, or any end of the job
  through :mod:`radseg.jobs.transitions`, which removes every member): each member sees its row
  gone at its next beat and stops its rank's process;
- cancel (``cancel_requested``) stops every rank; rank 0's worker marks the job cancelled.

Functions take a ``session`` and never commit, except :func:`join`, which owns its short
transaction because the lock is part of what it means.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, delete, exists, func, select, tuple_, update
from sqlalchemy.orm import Session, aliased

from radseg.db.base import utcnow
from radseg.db.models import Job, JobDependency, JobGangMember, JobState
from radseg.jobs.leases import DEFAULT_RETRY, RetryPolicy, back_to_queue, fail_or_retry
from radseg.jobs.transitions import JOB_MESSAGE_CHARS, add_event, end_job

__all__ = [
    "Seat",
    "beat",
    "drop_member",
    "fail_attempt",
    "free_port",
    "gang_env",
    "join",
    "leave",
    "publish",
    "reap_members",
    "stop_attempt",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Seat:
    """A worker's place in a gang: the job (detached, as claimed) and its machine rank."""

    job: Job
    rank: int


@dataclass(frozen=True)
class GangStatus:
    """What a member's :func:`beat` found: ``state`` is one of

    ``"forming"`` (queued, waiting for the rest), ``"starting"`` (running; rank 0 has not
    published the rendezvous yet), ``"ready"`` (running; ``rendezvous`` holds it), ``"cancel"``
    (stop this rank: a cancel was requested) or ``"gone"`` (this worker is no longer a member:
    the attempt ended, or the job did; ``job_state`` says which).
    """

    state: str
    members: int = 0
    rendezvous: dict[str, Any] | None = None
    job_state: JobState | None = None
    attempt: int = 0


def join(
    engine: Engine,
    worker_id: str,
    host: str,
    *,
    kinds: Sequence[str] | None = None,
    exclude_kinds: Sequence[str] | None = None,
    gpus: tuple[int, int] | None = None,
    lease_seconds: float = 60,
    skip: Collection[int] = (),
) -> Seat | None:
    """Join the most urgent gang job that has no member on ``host`` yet; ``None`` if none, or
    if an ordinary job this worker could claim comes first in claim order (priority, fair tag,
    id: gangs queue like any job, neither ahead of nor behind their turn).

    The job's row is locked while the members are counted, so two workers never take one
    rank, and never make a gang of M+1. ``skip``: jobs this worker gave up on lately.
    """
    if kinds == []:
        return None
    now = utcnow()
    ahead = aliased(Job)
    earlier = exists(
        select(1)
        .where(*_runnable(ahead, now, kinds, exclude_kinds, gpus), ahead.machines == 1)
        .where(
            tuple_(-ahead.priority, ahead.fair_tag, ahead.id)
            < tuple_(-Job.priority, Job.fair_tag, Job.id)
        )
    )
    here = exists(select(1).where(JobGangMember.job_id == Job.id, JobGangMember.host == host))
    candidates = (
        select(Job.id)
        .where(*_runnable(Job, now, kinds, exclude_kinds, gpus), Job.machines > 1)
        .where(~here, ~earlier)
        .order_by(Job.priority.desc(), Job.fair_tag, Job.id)
        .limit(1)
    )
    if skip:
        candidates = candidates.where(Job.id.not_in(list(skip)))
    with Session(engine, expire_on_commit=False) as session, session.begin():
        job_id = session.scalar(candidates)
        if job_id is None:
            return None
        # the row lock; on PostgreSQL a joiner that waited for it re-reads the row as committed
        job = session.scalars(
            select(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).first()
        if job is None:
            return None
        members = list(
            session.scalars(
                select(JobGangMember)
                .where(JobGangMember.job_id == job.id)
                .order_by(JobGangMember.rank)
            )
        )
        if any(m.host == host for m in members) or len(members) >= job.machines:
            return None  # another worker of this machine, or the last rank, was quicker
        rank = min(set(range(job.machines)) - {m.rank for m in members})
        member = JobGangMember(
            job_id=job.id,
            rank=rank,
            worker_id=worker_id,
            host=host,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            joined_at=now,
        )
        session.add(member)
        members.append(member)
        if len(members) < job.machines:
            add_event(
                session,
                job,
                JobState.QUEUED,
                worker_id,
                f"joined as rank {rank} on {host} ({len(members)}/{job.machines} machines)",
            )
        else:
            _start_attempt(session, job, members, now, lease_seconds)
        session.flush()
        session.expunge(job)
    return Seat(job=job, rank=rank)


def _runnable(
    job: Any,
    now: datetime,
    kinds: Sequence[str] | None,
    exclude_kinds: Sequence[str] | None,
    gpus: tuple[int, int] | None,
) -> list[ColumnElement[bool]]:
    """``job`` (the model or an alias of it) is queued, due, waits for no unfinished parent,
    and is of a kind and size the worker takes."""
    parent = aliased(Job)
    waiting = exists(
        select(1)
        .select_from(JobDependency)
        .join(parent, parent.id == JobDependency.depends_on_id)
        .where(JobDependency.job_id == job.id, parent.state != JobState.SUCCEEDED)
    )
    conditions = [job.state == JobState.QUEUED, job.run_after <= now, ~waiting]
    if kinds is not None:
        conditions.append(job.kind.in_(list(kinds)))
    if exclude_kinds:
        conditions.append(job.kind.not_in(list(exclude_kinds)))
    if gpus is not None:
        conditions.append(job.gpus.between(*gpus))
    return conditions


def _start_attempt(
    session: Session,
    job: Job,
    members: list[JobGangMember],
    now: datetime,
    lease_seconds: float,
) -> None:
    """The gang is complete: ``queued → running``, one attempt, leased to rank 0's worker."""
    members.sort(key=lambda m: m.rank)
    who = ", ".join(f"rank {m.rank} {m.worker_id} on {m.host}" for m in members)
    add_event(
        session,
        job,
        JobState.RUNNING,
        members[-1].worker_id,
        f"attempt {job.attempts + 1}: gang of {job.machines} complete: {who}",
    )
    job.state = JobState.RUNNING
    job.attempts += 1
    job.lease_owner = members[0].worker_id
    job.lease_expires_at = now + timedelta(seconds=lease_seconds)
    job.started_at = now
    job.progress = 0.0
    job.message = ""
    job.rendezvous = None


def _member(session: Session, job_id: int, worker_id: str) -> JobGangMember | None:
    return session.scalars(
        select(JobGangMember).where(
            JobGangMember.job_id == job_id, JobGangMember.worker_id == worker_id
        )
    ).first()


def beat(session: Session, job_id: int, worker_id: str, lease_seconds: float) -> GangStatus:
    """Renew this member's lease (and, for rank 0 of a running gang, the job's); say what the
    gang is doing (:class:`GangStatus`)."""
    expires = utcnow() + timedelta(seconds=lease_seconds)
    renewed = session.execute(
        update(JobGangMember)
        .where(JobGangMember.job_id == job_id, JobGangMember.worker_id == worker_id)
        .values(lease_expires_at=expires)
        .returning(JobGangMember.rank)
        .execution_options(synchronize_session=False)
    ).first()
    row = session.execute(
        select(
            Job.state, Job.cancel_requested, Job.rendezvous, Job.attempts, Job.lease_owner
        ).where(Job.id == job_id)
    ).first()
    if renewed is None or row is None:
        return GangStatus("gone", job_state=row.state if row is not None else None)
    count = (
        session.scalar(
            select(func.count()).select_from(JobGangMember).where(JobGangMember.job_id == job_id)
        )
        or 0
    )
    if row.state == JobState.QUEUED:
        return GangStatus("forming", members=count)
    if row.state != JobState.RUNNING:
        return GangStatus("gone", job_state=row.state)
    if row.lease_owner == worker_id:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == worker_id, Job.state == JobState.RUNNING)
            .values(lease_expires_at=expires)
            .execution_options(synchronize_session=False)
        )
    if row.cancel_requested:
        return GangStatus("cancel", members=count, job_state=row.state)
    rendezvous = row.rendezvous
    if rendezvous and rendezvous.get("attempt") == row.attempts:
        return GangStatus("ready", members=count, rendezvous=dict(rendezvous), attempt=row.attempts)
    return GangStatus("starting", members=count)


def publish(session: Session, job_id: int, worker_id: str, addr: str, port: int) -> bool:
    """Rank 0 (the job's lease owner) publishes where the gang meets for this attempt."""
    job = session.scalars(
        select(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.lease_owner == worker_id)
        .with_for_update()
    ).first()
    if job is None:
        return False
    job.rendezvous = {"addr": addr, "port": port, "attempt": job.attempts}
    return True


def leave(session: Session, job_id: int, worker_id: str, why: str) -> bool:
    """Give this member's slot back while the gang is still forming; ``False`` if it is not
    (it completed meanwhile, or this worker is no longer a member)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.state != JobState.QUEUED:
        return False
    member = _member(session, job_id, worker_id)
    if member is None:
        return False
    session.delete(member)
    add_event(session, job, JobState.QUEUED, worker_id, why)
    return True


def drop_member(session: Session, job_id: int, worker_id: str) -> bool:
    """This member's rank is done (it finished its part, or stopped for a cancel); the
    others go on. ``False`` if it was no longer a member."""
    gone = session.execute(
        delete(JobGangMember).where(
            JobGangMember.job_id == job_id, JobGangMember.worker_id == worker_id
        )
    )
    return bool(gone.rowcount)  # type: ignore[attr-defined]


def fail_attempt(
    session: Session,
    job_id: int,
    worker_id: str,
    error: str,
    *,
    retryable: bool = True,
    policy: RetryPolicy = DEFAULT_RETRY,
) -> Job | None:
    """A rank failed: the attempt fails for the whole group (every member is removed, each
    stops its rank); retried with backoff while attempts are left. ``None``: not a member of
    the running attempt any more (it already ended)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.state != JobState.RUNNING or _member(session, job_id, worker_id) is None:
        return None
    fail_or_retry(
        session,
        job,
        worker_id,
        error,
        retryable=retryable,
        policy=policy,
        cancelled=job.cancel_requested,
    )
    return job


def stop_attempt(session: Session, job_id: int, worker_id: str, reason: str) -> bool:
    """This member's worker shuts down: a forming gang loses the member; a running one goes
    back to the queue without counting the attempt."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or _member(session, job_id, worker_id) is None:
        return False
    if job.state == JobState.QUEUED:
        return leave(session, job_id, worker_id, reason)
    if job.state != JobState.RUNNING:
        return False
    back_to_queue(session, job, worker_id, reason, run_after=utcnow())
    job.attempts = max(job.attempts - 1, 0)
    job.message = reason[:JOB_MESSAGE_CHARS]
    return True


def reap_members(session: Session, actor: str = "reaper") -> list[int]:
    """Members whose lease expired (their worker or machine died): a forming gang loses them;
    a running one fails its attempt (retried while attempts are left). Returns the job ids."""
    now = utcnow()
    expired = session.execute(
        select(JobGangMember.job_id, JobGangMember.rank, JobGangMember.worker_id).where(
            JobGangMember.lease_expires_at < now
        )
    ).all()
    reaped: list[int] = []
    for job_id in sorted({row.job_id for row in expired}):
        query = select(Job).where(Job.id == job_id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        else:
            query = query.with_for_update()
        job = session.scalars(query).first()
        if job is None:
            continue
        lost = session.execute(
            select(JobGangMember.rank, JobGangMember.worker_id).where(
                JobGangMember.job_id == job_id, JobGangMember.lease_expires_at < now
            )
        ).all()
        if not lost:
            continue  # renewed meanwhile
        names = ", ".join(f"rank {r.rank} ({r.worker_id})" for r in lost)
        message = f"lease of {names} expired (machine or worker lost?)"
        if job.state == JobState.RUNNING:
            job.message = message[:JOB_MESSAGE_CHARS]
            if job.attempts < job.max_attempts and not job.cancel_requested:
                back_to_queue(session, job, actor, message, run_after=now)
            else:
                final = JobState.CANCELLED if job.cancel_requested else JobState.FAILED
                end_job(session, job, final, actor, message, at=now)
        else:
            session.execute(
                delete(JobGangMember).where(
                    JobGangMember.job_id == job_id, JobGangMember.lease_expires_at < now
                )
            )
            if job.state == JobState.QUEUED:
                add_event(session, job, JobState.QUEUED, actor, f"{message}; slot released")
        reaped.append(job_id)
    return reaped


def free_port(ports: range, host: str = "") -> int:
    """The first port of ``ports`` nothing listens on here (rank 0's rendezvous port)."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(
        f"no free port in {ports.start}-{ports.stop - 1} for a gang's rendezvous; widen the "
        "gang_ports setting (and open the ports between the machines)"
    )


def gang_env(rank: int, rendezvous: dict[str, Any]) -> dict[str, str]:
    """The environment a rank's process runs with: what ``torchrun`` would set."""
    return {
        "NODE_RANK": str(rank),
        "MASTER_ADDR": str(rendezvous["addr"]),
        "MASTER_PORT": str(rendezvous["port"]),
    }
