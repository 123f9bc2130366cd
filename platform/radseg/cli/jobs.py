"""The job queue: ``jobs list``, ``jobs cancel``, ``jobs resubmit`` and ``jobs tail``."""

from __future__ import annotations

import time

import click
from sqlalchemy import select

from radseg.cli.common import handle_errors, platform_of
from radseg.db.models import Job, JobState

#: seconds between two reads of a followed job's log
TAIL_POLL_SECONDS = 0.5


@click.group()
def jobs() -> None:
    """Background jobs."""


@jobs.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]))
@click.option("--limit", default=50, show_default=True)
@click.pass_context
@handle_errors
def jobs_list(ctx: click.Context, state: str | None, limit: int) -> None:
    """List jobs, newest first; a running job with progress shows its time left."""
    from radseg.jobs.eta import estimate, remaining_text

    platform = platform_of(ctx)
    with platform.sessions() as session:
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if state:
            query = query.where(Job.state == JobState(state))
        for job in session.scalars(query):
            eta = estimate(session, job)
            left = f"  ({remaining_text(eta)})" if eta is not None else ""
            click.echo(
                f"{job.id:>5}  {job.kind:<14} {job.state.value:<10} {job.progress * 100:5.1f}%  "
                f"attempt {job.attempts}/{job.max_attempts}  {job.message[:60]}{left}"
            )


@jobs.command("cancel")
@click.argument("job_id", type=int)
@click.pass_context
@handle_errors
def jobs_cancel(ctx: click.Context, job_id: int) -> None:
    """Cancel a queued job, or stop a running one."""
    from radseg.jobs.store import cancel
    from radseg.workflows.uploads import discard_upload

    platform = platform_of(ctx)
    with platform.sessions.begin() as session:
        job = cancel(session, job_id, actor="cli")
        running = job.state == JobState.RUNNING
    discard_upload(platform, job)  # a queued ingest ended here: its upload goes now
    click.echo(f"job {job_id}: {'cancel requested' if running else job.state.value}")


@jobs.command("resubmit")
@click.argument("job_id", type=int)
@click.pass_context
@handle_errors
def jobs_resubmit(ctx: click.Context, job_id: int) -> None:
    """Queue a finished (failed, cancelled) job again as a new job linked to it."""
    from radseg.jobs.store import resubmit

    platform = platform_of(ctx)
    with platform.sessions.begin() as session:
        job = resubmit(session, job_id, actor="cli")
        click.echo(f"job {job_id} resubmitted as job {job.id}")


@jobs.command("tail")
@click.argument("job_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job finishes")
@click.pass_context
@handle_errors
def jobs_tail(ctx: click.Context, job_id: int, follow: bool) -> None:
    """Print a job's log ($RADSEG_HOME/logs/job-ID.log); --follow streams it while it runs."""
    from radseg.jobs.logs import read_job_log

    platform = platform_of(ctx)
    offset = 0
    while True:
        with platform.sessions() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise click.ClickException(f"job {job_id} does not exist; see `radseg jobs list`")
            final = job.state.is_final
        while True:
            text, offset = read_job_log(platform.settings, job_id, offset)
            if not text:
                break
            click.echo(text, nl=False)
        if not follow or final:
            return
        time.sleep(TAIL_POLL_SECONDS)


COMMANDS = (jobs,)
