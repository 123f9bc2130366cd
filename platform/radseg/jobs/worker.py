"""The worker: claims jobs, runs each in a child process, keeps the leases alive.

One loop, no threads: reap expired leases, collect finished children, renew leases, claim for
free slots (:mod:`radseg.jobs.slots`), then sleep until a child reports, a heartbeat is due, a
``NOTIFY`` arrives (PostgreSQL, :mod:`radseg.jobs.notify`) or ``poll_seconds`` pass.

- each job runs in a child process (``spawn``) that leads its own process group; the child's
  outcome decides the job's state (see :mod:`radseg.jobs.runner`); a child that dies without a
  word (OOM kill, segfault) fails the attempt (retried while attempts are left) and the worker
  lives on;
- ``inline_kinds`` (none by default; a plugin's kinds that take milliseconds, or ``predict``
  with a fast model) run in the worker's own process, in batches claimed and completed in
  one transaction each, sized to take about :data:`INLINE_BATCH_SECONDS` (at most
  ``inline_batch``; :func:`inline_limit`): the queue's throughput is then bounded by the
  database, not by process start-up; while a batch runs, the leases of its jobs not run yet
  are renewed every heartbeat, so a batch that outlasts a lease is not run twice;
- every ``heartbeat_seconds`` the leases of all running jobs are renewed in one statement; a
  requested cancel kills the child's process group (:mod:`radseg.jobs.process_groups`), marks
  the job cancelled and removes its work folder;
- when an ingest job ends (any outcome) its raw upload is removed, and every
  :data:`~radseg.workflows.upload_folders.REAP_INTERVAL_SECONDS` the uploads no live job needs are
  reaped (:mod:`radseg.workflows.uploads`): nothing identifiable outlives its job;
- SIGTERM/SIGINT drain: nothing new is claimed, running jobs get ``grace_seconds`` to finish, and
  the rest are stopped and requeued without using up an attempt; a second signal stops at once;
- every database call is retried with backoff when the connection drops (a PostgreSQL restart,
  a killed backend): a worker outlives its database. Writes are guarded by the lease, so a retry
  can never finish a job twice.

The database side of all this is :mod:`radseg.jobs.leases`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_any
from types import FrameType
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from radseg.core import Platform
from radseg.db.models import Job, JobState
from radseg.errors import RadsegError
from radseg.jobs import gangs, leases
from radseg.jobs.handlers import handler_for, job_workdir
from radseg.jobs.logs import append_job_log
from radseg.jobs.notify import Listener
from radseg.jobs.process_groups import describe_exit, kill_group, reap_group
from radseg.jobs.runner import child_main
from radseg.jobs.slots import Slots
from radseg.workflows.upload_folders import REAP_INTERVAL_SECONDS, discard_upload, reap_uploads

log = logging.getLogger(__name__)

#: leases are renewed, and cancel requests seen, at least this often (seconds)
CANCEL_CHECK_SECONDS = 2.0
#: how often the worker re-reads the admin's plugin choices (seconds)
PLUGIN_REFRESH_SECONDS = 5.0
#: the longest pause between retries of a database call while the database is away
MAX_DB_BACKOFF_SECONDS = 5.0
#: an inline batch is sized to take about this long (seconds), within 1..``inline_batch``
INLINE_BATCH_SECONDS = 0.25

T = TypeVar("T")


def default_worker_id() -> str:
    """``host:pid:random``: unique across machines and restarts, readable in the job events."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Running:
    """A job running in a child process: the pipe it reports on and the GPUs it was given."""

    job: Job
    process: mp.process.BaseProcess
    receiver: Connection
    devices: str | None
    message: tuple[Any, ...] | None = None
    cancelling: bool = False

    def ended(self) -> bool:
        """Whether the child has reported or exited; if so it is reaped (its process group
        killed when it is still alive 30 s on) and :attr:`outcome` says what it reported."""
        if self.message is None and self.receiver.poll():
            try:
                self.message = self.receiver.recv()
            except (EOFError, OSError):
                self.message = ("gone",)
        if self.message is None and self.process.is_alive():
            return False
        self.process.join(timeout=30)
        if self.process.is_alive():
            kill_group(self.process)
        reap_group(self.process)
        return True

    @property
    def outcome(self) -> tuple[Any, ...] | None:
        """What the child reported (``None`` when it ended without a word)."""
        return self.message if self.message and self.message[0] != "gone" else None


@dataclass
class InGang:
    """This worker's seat in a gang job (:mod:`radseg.jobs.gangs`): waiting for the rest of
    the gang (``run`` is ``None``), or running its rank."""

    seat: gangs.Seat
    joined: float
    devices: str | None
    run: Running | None = None
    next_beat: float = 0.0

    @property
    def job_id(self) -> int:
        return self.seat.job.id

    def describe(self) -> str:
        return f"rank {self.seat.rank} of {self.seat.job.machines}"


@dataclass
class Worker:
    """One worker process; see the module doc. ``run()`` works until stopped."""

    platform: Platform
    kinds: list[str] | None = None
    burst: bool = False
    #: legacy single-GPU option (``--gpu N``); same as ``gpus=(N,)``
    gpu: str | None = None
    gpus: Sequence[str] = ()
    concurrency: int = 1
    inline_kinds: Sequence[str] = ()
    inline_batch: int = 50
    grace_seconds: float = 30.0
    listen: bool = True
    #: the machine this worker counts as in a gang (default: setting machine_name, host name)
    machine: str = ""
    worker_id: str = field(default_factory=default_worker_id)
    processed: int = 0
    running: dict[int, Running] = field(default_factory=dict)
    _stopping: bool = False
    _stop_now: bool = False

    def __post_init__(self) -> None:
        devices = tuple(self.gpus) or ((self.gpu,) if self.gpu is not None else ())
        self.slots = Slots(gpus=devices, concurrency=self.concurrency)
        self._pid = os.getpid()
        self._listener: Listener | None = None
        self._next_beat = 0.0
        self._next_reap = 0.0
        self._next_upload_reap = 0.0
        self._next_refresh = time.monotonic() + PLUGIN_REFRESH_SECONDS
        self._beat_interval = min(self.platform.settings.heartbeat_seconds, CANCEL_CHECK_SECONDS)
        self._inline_limit = 1
        self.machine = self.machine or self.platform.settings.machine_name or socket.gethostname()
        self.gang: InGang | None = None
        #: gang jobs this worker gave up waiting for, and until when it leaves them alone
        self._gang_skip: dict[int, float] = {}

    # -- signals ---------------------------------------------------------------------------

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        if self._stopping:
            self._stop_now = True
        log.info("worker %s: draining (signal %s)", self.worker_id, signum)
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped (or, in burst mode, until no job is runnable). Returns jobs run."""
        log.info(
            "worker %s started (kinds: %s; GPUs: %s; CPU slots: %d; inline: %s)",
            self.worker_id,
            ",".join(self.kinds) if self.kinds else "all",
            ",".join(self.slots.gpus) or "none",
            self.slots.concurrency,
            ",".join(self.inline_kinds) or "none",
        )
        if self.listen and not self.burst and self.platform.engine.dialect.name == "postgresql":
            self._listener = Listener(self.platform.engine)
        try:
            while not self._stopping:
                self._maintain()
                self._collect()
                started = self._claim_and_start()
                if started:
                    continue
                if self.burst and not self.running and self.gang is None:
                    break
                self._wait()
            self._drain()
        finally:
            if self._listener is not None:
                self._listener.close()
        return self.processed

    def _maintain(self) -> None:
        now = time.monotonic()
        settings = self.platform.settings
        if now >= self._next_reap:
            self._next_reap = now + max(min(settings.lease_seconds / 4, 10.0), 0.2)
            reaped = self._transaction(leases.reap_expired, actor=self.worker_id)
            for job_id in reaped:
                log.warning("job %s: its lease expired; requeued or ended", job_id)
            for job_id in self._transaction(gangs.reap_members, actor=self.worker_id):
                log.warning("job %s: a gang member's lease expired", job_id)
        if now >= self._next_upload_reap:
            self._next_upload_reap = now + REAP_INTERVAL_SECONDS
            self._reap_uploads()
        if now >= self._next_refresh:
            self._next_refresh = now + PLUGIN_REFRESH_SECONDS
            self._db(self.platform.refresh_plugins)
        if self.running and now >= self._next_beat:
            self._next_beat = now + self._beat_interval
            self._beat()
        if self.gang is not None and now >= self.gang.next_beat:
            self._gang_beat()

    def _reap_uploads(self) -> None:
        grace = self.platform.settings.upload_grace_seconds
        try:
            self._db(lambda: reap_uploads(self.platform, grace_seconds=grace))
        except OSError as exc:  # a full or read-only disk must not stop the worker
            log.error("could not reap uploads: %s", exc)

    def _ended(self, job: Job) -> None:
        """After a job's final state is committed: tell the plugins, remove its upload."""
        discard_upload(self.platform, job)
        self.platform.plugins.notify_job_finished(job, job.state.value)

    def _wait(self) -> None:
        timeout = self.platform.settings.poll_seconds
        if self.running:
            timeout = min(timeout, max(self._next_beat - time.monotonic(), 0.0))
        if self.gang is not None:
            timeout = min(timeout, max(self.gang.next_beat - time.monotonic(), 0.0))
        waitables = self._waitables()
        fd = self._listener.fileno() if self._listener is not None else None
        if fd is not None:
            waitables.append(fd)
        if waitables:
            wait_for_any(waitables, timeout)
        else:
            time.sleep(timeout)
        if self._listener is not None and self._listener.drain():
            if self.running:
                self._next_beat = 0.0  # maybe a cancel: look now
            if self.gang is not None:
                self.gang.next_beat = 0.0

    # -- claiming --------------------------------------------------------------------------

    def _claim_and_start(self) -> int:
        if self.gang is not None:  # a gang member takes no other job meanwhile
            return 0
        if not self.running and self._join_gang():
            return 1
        started = 0
        settings = self.platform.settings
        inline = [k for k in self.inline_kinds if self.kinds is None or k in self.kinds]
        if inline:
            claimed_at = time.monotonic()  # the leases run from (about) here
            jobs = self._db(
                lambda: leases.claim_batch(
                    self.platform.engine,
                    self.worker_id,
                    limit=self._inline_limit,
                    kinds=inline,
                    lease_seconds=settings.lease_seconds,
                )
            )
            if jobs:
                began = time.monotonic()
                self._run_inline(jobs, claimed_at)
                started += len(jobs)
                self._inline_limit = inline_limit(
                    self._inline_limit, len(jobs), time.monotonic() - began, self.inline_batch
                )
        for want in self.slots.claimable():
            jobs = self._db(
                lambda want=want: leases.claim_batch(
                    self.platform.engine,
                    self.worker_id,
                    limit=want.limit,
                    kinds=self.kinds,
                    exclude_kinds=list(self.inline_kinds),
                    gpus=want.gpus,
                    lease_seconds=settings.lease_seconds,
                )
            )
            for job in jobs:
                self._start(job)
                started += 1
        return started

    def _start(self, job: Job) -> None:
        devices = self.slots.take(job.id, job.gpus)
        self.running[job.id] = self._spawn(job, devices)
        if len(self.running) == 1:
            self._next_beat = time.monotonic() + self._beat_interval

    def _spawn(
        self, job: Job, devices: str | None, environment: dict[str, str] | None = None
    ) -> Running:
        """Start ``job``'s child process on ``devices``, with ``environment`` added."""
        settings = self.platform.settings
        ctx = mp.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        # The Settings object itself, pickled through the pipe ``spawn`` starts the child with:
        # secrets arrive intact (a JSON dump would send SecretStr's mask as the PACS password)
        # and never pass through a command line, the environment, the database or a log.
        child = ctx.Process(
            target=child_main,
            args=(
                settings,
                job.id,
                self.worker_id,
                sender,
                devices,
                os.getpid(),
                environment,
            ),
            name=f"radseg-job-{job.id}",
        )
        child.start()
        sender.close()
        where = f"CUDA_VISIBLE_DEVICES={devices!r}" if devices is not None else "no GPU pinning"
        if environment:
            where += ", " + " ".join(f"{k}={v}" for k, v in sorted(environment.items()))
        append_job_log(
            settings,
            job.id,
            f"attempt {job.attempts}/{job.max_attempts} on {self.worker_id}, "
            f"process {child.pid}, {where}",
        )
        log.info("job %s (%s): running in process %s (%s)", job.id, job.kind, child.pid, where)
        return Running(job, child, receiver, devices)

    # -- gang jobs (radseg.jobs.gangs) -----------------------------------------------------

    def _join_gang(self) -> bool:
        """Join a gang job when this worker is idle; ``True`` if it did."""
        if self._stopping:
            return False
        now = time.monotonic()
        self._gang_skip = {j: until for j, until in self._gang_skip.items() if until > now}
        slots = self.slots
        if slots.gpus:  # an idle worker: all its devices (or, for a CPU gang, a CPU slot)
            wanted: tuple[int, int] | None = (0 if slots.concurrency else 1, len(slots.gpus))
        else:
            wanted = None if slots.concurrency else (1, 0)
        seat = self._db(
            lambda: gangs.join(
                self.platform.engine,
                self.worker_id,
                self.machine,
                kinds=self.kinds,
                exclude_kinds=list(self.inline_kinds),
                gpus=wanted,
                lease_seconds=self.platform.settings.lease_seconds,
                skip=list(self._gang_skip),
            )
        )
        if seat is None:
            return False
        devices = slots.take(seat.job.id, seat.job.gpus)
        self.gang = InGang(seat, now, devices)
        append_job_log(
            self.platform.settings,
            seat.job.id,
            f"{self.gang.describe()}: {self.worker_id} on machine {self.machine} joined",
        )
        log.info("job %s: joined as %s", seat.job.id, self.gang.describe())
        return True

    def _gang_beat(self) -> None:
        """Renew this member's lease and act on what the gang does: wait (or give the slot
        back after the gang timeout), publish the rendezvous (rank 0), start this rank, stop
        it (the attempt ended elsewhere, or a cancel)."""
        gang = self.gang
        assert gang is not None
        settings = self.platform.settings
        gang.next_beat = time.monotonic() + self._beat_interval
        status = self._transaction(gangs.beat, gang.job_id, self.worker_id, settings.lease_seconds)
        if status.state == "forming":
            waited = time.monotonic() - gang.joined
            if waited >= settings.gang_timeout_seconds:
                why = (
                    f"{gang.describe()} ({self.worker_id}) gave its slot back: "
                    f"{status.members} of {gang.seat.job.machines} machines after {waited:.0f} s"
                )
                self._transaction(gangs.leave, gang.job_id, self.worker_id, why)
                self._gang_skip[gang.job_id] = time.monotonic() + settings.gang_timeout_seconds
                append_job_log(settings, gang.job_id, why)
                log.info("job %s: %s", gang.job_id, why)
                self._leave_gang()
        elif status.state == "gone":
            run = gang.run
            if run is not None and (run.receiver.poll() or not run.process.is_alive()):
                self._collect_gang()  # it ended as the job did: say how, rather than stop it
                return
            self._stop_rank(f"the attempt ended ({getattr(status.job_state, 'value', 'gone')})")
        elif status.state == "cancel":
            self._cancel_rank()
        elif gang.run is None and status.state == "starting" and gang.seat.rank == 0:
            self._publish_rendezvous()
        elif gang.run is None and status.state == "ready" and status.rendezvous:
            environment = gangs.gang_env(gang.seat.rank, status.rendezvous)
            gang.seat.job.attempts = status.attempt
            gang.run = self._spawn(gang.seat.job, gang.devices, environment)

    def _publish_rendezvous(self) -> None:
        gang = self.gang
        assert gang is not None
        settings = self.platform.settings
        try:
            addr = settings.gang_address or socket.gethostbyname(socket.gethostname())
            port = gangs.free_port(settings.gang_port_range)
        except OSError as exc:
            self._gang_failed(f"rank 0 has no rendezvous: {exc}", retryable=True)
            return
        if self._transaction(gangs.publish, gang.job_id, self.worker_id, addr, port):
            append_job_log(settings, gang.job_id, f"rendezvous at {addr}:{port}")
            gang.next_beat = 0.0  # read it back and start at once

    def _stop_rank(self, why: str) -> None:
        gang = self.gang
        assert gang is not None
        if gang.run is not None:
            kill_group(gang.run.process)
        line = f"{gang.describe()} on {self.worker_id} stopped: {why}"
        append_job_log(self.platform.settings, gang.job_id, line)
        log.info("job %s: %s", gang.job_id, line)
        self._leave_gang()

    def _cancel_rank(self) -> None:
        """A cancel: every rank stops its process; rank 0 (the job's lease owner) records it."""
        gang = self.gang
        assert gang is not None
        if gang.seat.rank != 0:
            self._transaction(gangs.drop_member, gang.job_id, self.worker_id)
            self._stop_rank("cancel requested")
            return
        run = gang.run
        self._leave_gang()
        if run is not None:
            kill_group(run.process)
            self._record_cancel(run)
            return
        done = self._transaction(leases.mark_cancelled, gang.job_id, self.worker_id)
        self.processed += 1
        if done is not None:
            self._ended(done)

    def _collect_gang(self) -> None:
        """This rank's process reported or exited: rank 0 completes the job; another rank
        leaves the gang; a failure of any rank fails the attempt for all of them."""
        gang = self.gang
        if gang is None or gang.run is None:
            return
        run = gang.run
        if not run.ended():
            return
        message = run.outcome
        if message and message[0] == "ok":
            if gang.seat.rank == 0:
                self._leave_gang()
                self._record_outcome(run.job, message, run.process.exitcode)
                return
            self._transaction(gangs.drop_member, gang.job_id, self.worker_id)
            line = f"{gang.describe()} on {self.worker_id} finished its part"
            append_job_log(self.platform.settings, gang.job_id, line)
            self.processed += 1
            self._leave_gang()
            return
        if message:
            error, retryable = str(message[1]), bool(message[2])
        else:
            error, retryable = describe_exit(run.process.exitcode), True
        self._gang_failed(error, retryable=retryable)

    def _gang_failed(self, error: str, *, retryable: bool) -> None:
        gang = self.gang
        assert gang is not None
        why = f"{gang.describe()} ({self.worker_id}) failed: {error}"
        done = self._transaction(
            gangs.fail_attempt, gang.job_id, self.worker_id, why, retryable=retryable
        )
        outcome = done.state.value if done is not None else "attempt already ended"
        append_job_log(self.platform.settings, gang.job_id, f"{why}; job {outcome}")
        log.warning("job %s: %s; %s", gang.job_id, why, outcome)
        self.processed += 1
        self._leave_gang()
        if done is not None and done.state.is_final:
            self._ended(done)

    def _leave_gang(self) -> None:
        if self.gang is not None:
            self.slots.release(self.gang.job_id)
            self.gang = None

    # -- inline jobs -----------------------------------------------------------------------

    def _run_inline(self, jobs: list[Job], claimed_at: float) -> None:
        results: dict[int, dict[str, Any]] = {}
        # counted from the claim: a worker that stalled since (a loaded machine, a slow
        # database) renews first, and finds out which jobs another worker took meanwhile
        next_beat = claimed_at + self._beat_interval
        stopped: set[int] = set()  # lost, cancelled or failed: nothing more to do here
        for job in jobs:
            if time.monotonic() >= next_beat:
                # a batch of jobs that take more than milliseconds (predictions of a fast
                # model) would outlast its leases, and another worker would run them again
                next_beat = time.monotonic() + self._beat_interval
                stopped |= self._beat_inline([j.id for j in jobs if j.id not in stopped])
            if job.id in stopped:
                continue
            try:
                result = handler_for(job.kind, self.platform)(
                    self.platform, dict(job.payload), progress=_no_progress, job_id=job.id
                )
            except RadsegError as exc:
                stopped.add(job.id)
                self._finish_failed(job, str(exc), retryable=False)
            except Exception as exc:
                log.exception("inline job %s crashed", job.id)
                stopped.add(job.id)
                self._finish_failed(job, f"{type(exc).__name__}: {exc}", retryable=True)
            else:
                results[job.id] = result
        if results:
            done = self._transaction(leases.complete_batch, self.worker_id, results)
            self.processed += len(done)
            for job in jobs:
                if job.id in done:
                    job.state, job.result, job.progress = JobState.SUCCEEDED, results[job.id], 1.0
                    self._ended(job)

    def _beat_inline(self, job_ids: list[int]) -> set[int]:
        """Renew the leases of a batch's inline jobs (run, awaiting completion, or not run
        yet); the ids whose lease is gone (another worker has them) or whose cancel was
        requested (marked cancelled here): not run, not completed by this worker."""
        statuses = self._transaction(
            leases.heartbeat_many, job_ids, self.worker_id, self.platform.settings.lease_seconds
        )
        stopped = {job_id for job_id, status in statuses.items() if status != "ok"}
        for job_id in stopped:
            if statuses[job_id] == "cancel":
                done = self._transaction(leases.mark_cancelled, job_id, self.worker_id)
                self.processed += 1
                if done is not None:
                    self._ended(done)
            else:
                log.warning("inline job %s: lease lost to another worker; not run here", job_id)
        return stopped

    def _finish_failed(self, job: Job, error: str, *, retryable: bool) -> None:
        done = self._transaction(leases.fail, job.id, self.worker_id, error, retryable=retryable)
        self.processed += 1
        if done is not None and done.state.is_final:
            self._ended(done)

    # -- child jobs ------------------------------------------------------------------------

    def _collect(self) -> None:
        """Record the outcome of every child that has reported or exited."""
        self._collect_gang()
        for job_id, run in list(self.running.items()):
            if not run.ended():
                continue
            self._forget(job_id)
            self._record_outcome(run.job, run.outcome, run.process.exitcode)
            self.processed += 1

    def _beat(self) -> None:
        statuses = self._transaction(
            leases.heartbeat_many,
            list(self.running),
            self.worker_id,
            self.platform.settings.lease_seconds,
        )
        for job_id, status in statuses.items():
            run = self.running.get(job_id)
            if run is None or status == "ok":
                continue
            kill_group(run.process)
            self._forget(job_id)
            if status == "cancel":
                self._record_cancel(run)
            else:
                log.warning("job %s: lease lost to another worker; stopped our copy", job_id)
                append_job_log(self.platform.settings, job_id, "lease lost; this copy stopped")

    def _record_cancel(self, run: Running) -> None:
        job = run.job
        # partial outputs of a cancelled job are removed (before it shows as cancelled); a retry
        # keeps them to resume from
        workdir = job_workdir(self.platform, job.kind, job.id)
        try:
            self.platform.remove(workdir, within=workdir.parent.name)
        except OSError as exc:
            log.error("job %s: could not remove its work folder %s: %s", job.id, workdir, exc)
        done = self._transaction(leases.mark_cancelled, job.id, self.worker_id)
        append_job_log(
            self.platform.settings,
            job.id,
            f"cancelled; process {run.process.pid} and its group stopped, work folder removed",
        )
        log.info("job %s cancelled; process %s stopped", job.id, run.process.pid)
        self.processed += 1
        if done is not None:
            self._ended(done)

    def _record_outcome(
        self, job: Job, message: tuple[Any, ...] | None, exitcode: int | None
    ) -> None:
        done = self._transaction(_record_result, job.id, self.worker_id, message, exitcode)
        outcome = done.state.value if done is not None else "lease lost"
        append_job_log(
            self.platform.settings,
            job.id,
            f"attempt {job.attempts}: {outcome}"
            + (f" ({done.message})" if done is not None and done.message else ""),
        )
        log.info("job %s: %s", job.id, outcome)
        # after the commit, with a detached row: a slow plugin holds no lock, changes nothing
        if done is not None and done.state.is_final:
            self._ended(done)

    # -- shutdown --------------------------------------------------------------------------

    def _drain(self) -> None:
        """Let running jobs finish within the grace period; requeue the rest. A gang stops at
        once: its attempt goes back to the queue, not counted."""
        if self.gang is not None:
            reason = f"worker {self.worker_id} shut down; its {self.gang.describe()} left the gang"
            self._transaction(gangs.stop_attempt, self.gang.job_id, self.worker_id, reason)
            self._stop_rank(reason)
        if not self.running:
            return
        deadline = time.monotonic() + self.grace_seconds
        log.info(
            "worker %s: waiting up to %.0f s for %d running job(s)",
            self.worker_id,
            self.grace_seconds,
            len(self.running),
        )
        while self.running and time.monotonic() < deadline and not self._stop_now:
            self._maintain()
            self._collect()
            if self.running:
                wait_for_any(self._waitables(), min(0.5, max(deadline - time.monotonic(), 0.0)))
        self._collect()
        for job_id, run in list(self.running.items()):
            kill_group(run.process)
            reap_group(run.process)
            self._forget(job_id)
            reason = f"worker {self.worker_id} shut down; requeued"
            self._transaction(leases.requeue, job_id, self.worker_id, reason)
            append_job_log(self.platform.settings, job_id, reason)
            log.warning("job %s: %s", job_id, reason)

    # -- helpers ---------------------------------------------------------------------------

    def _waitables(self) -> list[Any]:
        """What a running child may wake the loop with: its report, or its exit."""
        waitables: list[Any] = []
        if self.gang is not None and self.gang.run is not None:
            waitables += [self.gang.run.receiver, self.gang.run.process.sentinel]
        for run in self.running.values():
            waitables += [run.receiver, run.process.sentinel]
        return waitables

    def _forget(self, job_id: int) -> None:
        """The job's child is gone: free its slot (and its GPUs)."""
        del self.running[job_id]
        self.slots.release(job_id)

    def _transaction(self, write: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``write(session, *args, **kwargs)`` in a transaction of its own, retried like
        :meth:`_db` while the database is away (a lease guards every write: no retry repeats
        one that took effect)."""

        def attempt() -> T:
            with self.platform.sessions.begin() as session:
                return write(session, *args, **kwargs)

        return self._db(attempt)

    def _db(self, call: Callable[..., T], *args: Any) -> T:
        """Run a database call, retrying with backoff while the connection is down."""
        delay = 0.1
        while True:
            try:
                return call(*args)
            except DBAPIError as exc:
                if not (exc.connection_invalidated or isinstance(exc, OperationalError)):
                    raise
                if self._stop_now:
                    raise
                log.warning("database call failed (retrying in %.1f s): %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, MAX_DB_BACKOFF_SECONDS)


def inline_limit(current: int, ran: int, seconds: float, most: int) -> int:
    """How many inline jobs to claim next, after ``ran`` took ``seconds``: as many as take
    about :data:`INLINE_BATCH_SECONDS`, at most twice ``current`` and within ``1..most``.

    Jobs of milliseconds grow to batches of ``most`` (the database's round trips are shared);
    predictions of a tenth of a second stay in batches of two or three, so that the workers
    that share a queue share its jobs too, instead of the first one claiming fifty and the
    others waiting for it."""
    per_job = seconds / max(ran, 1)
    fits = int(INLINE_BATCH_SECONDS / per_job) if per_job > 0 else most
    return max(1, min(fits, 2 * current, most))


def _no_progress(fraction: float, message: str) -> None:
    return None


def _record_result(
    session: Session,
    job_id: int,
    worker_id: str,
    message: tuple[Any, ...] | None,
    exitcode: int | None,
) -> Job | None:
    """Record what a child's report (or, without one, its exit code) says of its job.

    ``message`` is ``("ok", result)`` or ``("error", text, retryable)``
    (:mod:`radseg.jobs.runner`). Returns the job, or ``None`` when its lease was lost.
    """
    if message and message[0] == "ok":
        try:
            return leases.complete(session, job_id, worker_id, message[1])
        except RadsegError as exc:  # lease lost at the last moment
            log.warning("job %s: %s", job_id, exc)
            return None
    if message:
        error, retryable = str(message[1]), bool(message[2])
    else:
        error, retryable = describe_exit(exitcode), True
    return leases.fail(session, job_id, worker_id, error, retryable=retryable)
