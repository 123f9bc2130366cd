"""The worker: claims jobs, runs each in a child process, keeps its lease alive.

One worker runs one job at a time per slot (``concurrency``); a slot may be pinned to a GPU,
whose index the child sees as ``CUDA_VISIBLE_DEVICES``. The worker never imports Flask or torch.

- the child's outcome decides the job's state (see :mod:`radseg.jobs.runner`); a child that
  dies without a word (OOM kill, segfault) fails the attempt, and the worker lives on;
- every ``heartbeat_seconds`` the lease is renewed; a requested cancel terminates the child
  (then kills it if it has not exited within 5 s) and marks the job cancelled;
- SIGTERM/SIGINT drain: no new job is claimed, the running ones finish.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from types import FrameType

from radseg.core import Platform
from radseg.db.models import Job
from radseg.jobs import store
from radseg.jobs.runner import child_main

log = logging.getLogger(__name__)

TERMINATE_GRACE_SECONDS = 5.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Worker:
    platform: Platform
    kinds: list[str] | None = None
    burst: bool = False
    gpu: str | None = None
    worker_id: str = field(default_factory=default_worker_id)
    processed: int = 0
    _stopping: bool = False

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        log.info("worker %s: draining (signal %s)", self.worker_id, signum)
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> int:
        """Work until stopped (or, in burst mode, until no job is runnable). Returns jobs run."""
        settings = self.platform.settings
        log.info("worker %s started (kinds: %s)", self.worker_id, self.kinds or "all")
        while not self._stopping:
            with self.platform.sessions.begin() as session:
                for job_id in store.reap_expired(session, actor=self.worker_id):
                    log.warning("job %s requeued: its lease expired", job_id)
            self.platform.refresh_plugins()
            job = store.claim(
                self.platform.engine,
                self.worker_id,
                kinds=self.kinds,
                lease_seconds=settings.lease_seconds,
            )
            if job is None:
                if self.burst:
                    break
                time.sleep(settings.poll_seconds)
                continue
            self.run_job(job)
            self.processed += 1
        return self.processed

    def run_job(self, job: Job) -> None:
        settings = self.platform.settings
        ctx = mp.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        child = ctx.Process(
            target=child_main,
            args=(settings.model_dump(mode="json"), job.id, self.worker_id, sender, self.gpu),
            name=f"radseg-job-{job.id}",
        )
        child.start()
        sender.close()
        log.info("job %s (%s): running in process %s", job.id, job.kind, child.pid)
        message = None
        while True:
            if receiver.poll(settings.heartbeat_seconds):
                try:
                    message = receiver.recv()
                except EOFError:
                    message = None
                break
            with self.platform.sessions.begin() as session:
                beat = store.heartbeat(session, job.id, self.worker_id, settings.lease_seconds)
            if beat == "ok":
                continue
            self._terminate(child)
            if beat == "cancel":
                with self.platform.sessions.begin() as session:
                    done = store.mark_cancelled(session, job.id, self.worker_id)
                if done is not None:
                    self.platform.plugins.notify_job_finished(done, "cancelled")
                log.info("job %s cancelled; process %s stopped", job.id, child.pid)
            else:
                log.warning("job %s: lease lost to another worker; stopped our copy", job.id)
            return
        child.join(timeout=30)
        if child.is_alive():
            self._terminate(child)
        self._record_outcome(job, message, child.exitcode)

    def _record_outcome(self, job: Job, message: tuple | None, exitcode: int | None) -> None:
        done: Job | None = None
        with self.platform.sessions.begin() as session:
            if message and message[0] == "ok":
                try:
                    done = store.complete(session, job.id, self.worker_id, message[1])
                except Exception as exc:  # lease lost at the last moment
                    log.warning("job %s: %s", job.id, exc)
                    return
            else:
                if message:
                    error, retryable = message[1], bool(message[2])
                else:
                    error, retryable = _describe_exit(exitcode), True
                done = store.fail(session, job.id, self.worker_id, error, retryable=retryable)
        log.info("job %s: %s", job.id, done.state.value if done is not None else "lease lost")
        # after the commit, with a detached row: a slow plugin holds no lock, changes nothing
        if done is not None and done.state.is_final:
            self.platform.plugins.notify_job_finished(done, done.state.value)

    @staticmethod
    def _terminate(child: mp.process.BaseProcess) -> None:
        child.terminate()
        child.join(TERMINATE_GRACE_SECONDS)
        if child.is_alive():
            child.kill()
            child.join()


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"job process was killed by {name}{hint}"
    return f"job process exited with code {exitcode} without reporting a result"
