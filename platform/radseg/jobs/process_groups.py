"""A job's child process and everything it started: stop them, and say how the child ended.

Each job runs in a child process that leads its own process group (it calls ``setsid`` first
thing, :mod:`radseg.jobs.runner`), so one signal to the group reaches the helpers it started too
(data loader workers, a DICOM decoder's subprocess): a cancelled or drained job leaves nothing
running behind it.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal

__all__ = ["TERMINATE_GRACE_SECONDS", "describe_exit", "kill_group", "reap_group"]

#: after SIGTERM to a cancelled job's process group, SIGKILL follows this much later
TERMINATE_GRACE_SECONDS = 3.0


def kill_group(child: mp.process.BaseProcess) -> None:
    """Stop the child and everything it started: SIGTERM, then SIGKILL if it lingers."""
    pid = child.pid
    if pid is None:
        return
    for sig, wait in ((signal.SIGTERM, TERMINATE_GRACE_SECONDS), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            if child.is_alive():  # not a group leader yet (it calls setsid first thing)
                os.kill(pid, sig)
        child.join(wait)
        if not child.is_alive():
            break
    reap_group(child)


def reap_group(child: mp.process.BaseProcess) -> None:
    """Kill what is left of a finished child's group (helpers it did not stop)."""
    if child.pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)


def describe_exit(exitcode: int | None) -> str:
    """Why a child that reported no result ended, as the job's error message."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"job process was killed by {name}{hint}"
    return f"job process exited with code {exitcode} without reporting a result"
