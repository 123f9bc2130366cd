"""How long a running job has left: what the jobs pages, the JSON API and ``radseg jobs list`` show.

The estimate is :func:`radseg.jobs.store.eta_seconds`: the time the current attempt has run,
times the part still to do over the part done. It is offered only while the job is in its first
run. A job claimed again (a retry, an expired lease, a drained worker) starts its attempt with
the progress reset to 0, and a training job then jumps to where its checkpoint left off: the
attempt's rate would look far too high, so such a job shows no estimate rather than a wrong one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radseg.db.models import Job, JobEvent, JobState
from radseg.jobs import store


def estimate(session: Session, job: Job, now: datetime | None = None) -> float | None:
    """Seconds ``job`` has left, or ``None``: not running, no progress yet, or not a first run."""
    seconds = store.eta_seconds(job, now)
    if seconds is None:
        return None
    runs = session.scalar(
        select(func.count())
        .select_from(JobEvent)
        .where(JobEvent.job_id == job.id, JobEvent.to_state == JobState.RUNNING.value)
    )
    return seconds if (runs or 0) <= 1 else None


def remaining_text(seconds: float) -> str:
    """``seconds`` as a person reads an estimate: ``about 30 min left``."""
    minutes = int(seconds / 60 + 0.5)
    if minutes < 1:
        return "less than a minute left"
    if minutes < 60:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60:02d} min left"
