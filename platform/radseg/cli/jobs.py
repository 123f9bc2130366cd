"""The job queue: ``jobs list``, ``jobs cancel``, ``jobs resubmit`` and ``jobs tail``.

Cancel and resubmit are the use cases of :mod:`radseg.workflows.jobs`, acting as
:data:`radseg.roles.CLI_ACTOR`: the same rules and audit events as the web pages and the API.
"""

from __future__ import annotations

import time

import click

from radseg.cli.common import handle_errors, platform_of
from radseg.cli.listing import echo_count, window_options
from radseg.db.models import JobState
from radseg.db.paging import Window
from radseg.roles import CLI_ACTOR
from radseg.workflows.jobs import (
    JOB_SORTS,
    JobFilters,
    cancel_job,
    job_kinds,
    job_list,
    retry_job,
    visible_job,
)

#: seconds between two reads of a followed job's log
TAIL_POLL_SECONDS = 0.5


@click.group()
def jobs() -> None:
    """Background jobs."""


@jobs.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]))
@click.option("--kind", help="a job kind, e.g. train (built-in or a plugin's)")
@click.option("--search", "-q", help="a job number (123 or #123) or the start of an owner's name")
@click.option(
    "--sort", type=click.Choice(JOB_SORTS), default="newest", show_default=True, help="by number"
)
@window_options
@click.pass_context
@handle_errors
def jobs_list(
    ctx: click.Context,
    state: str | None,
    kind: str | None,
    search: str | None,
    sort: str,
    window: Window,
) -> None:
    """List jobs as the jobs page does, newest first: kind, state, progress, attempts, owner and
    message; a running job with progress shows its time left."""
    from radseg.jobs.eta import estimate, remaining_text

    platform = platform_of(ctx)
    kinds = job_kinds(platform)
    if kind and kind not in kinds:
        raise click.BadParameter(
            f"unknown job kind {kind!r}; use one of: {', '.join(kinds)}", param_hint="--kind"
        )
    filters = JobFilters(
        state=JobState(state) if state else None,
        kind=kind or "",
        q=(search or "").strip(),
        sort=sort,
    )
    with platform.sessions() as session:
        listed = job_list(session, CLI_ACTOR, filters, window)
        for job in listed.rows:
            eta = estimate(session, job)
            left = f"  ({remaining_text(eta)})" if eta is not None else ""
            click.echo(
                f"{job.id:>5}  {job.kind:<14} {job.state.value:<10} {job.progress * 100:5.1f}%  "
                f"attempt {job.attempts}/{job.max_attempts}  {job.created_by or '-':<12} "
                f"{job.message[:60]}{left}"
            )
    echo_count(listed, "jobs")


@jobs.command("cancel")
@click.argument("job_id", type=int)
@click.pass_context
@handle_errors
def jobs_cancel(ctx: click.Context, job_id: int) -> None:
    """Cancel a queued job, or stop a running one."""
    job = cancel_job(platform_of(ctx), CLI_ACTOR, job_id)
    running = job.state == JobState.RUNNING
    click.echo(f"job {job_id}: {'cancel requested' if running else job.state.value}")


@jobs.command("resubmit")
@click.argument("job_id", type=int)
@click.pass_context
@handle_errors
def jobs_resubmit(ctx: click.Context, job_id: int) -> None:
    """Queue a finished (failed, cancelled) job again as a new job linked to it."""
    job = retry_job(platform_of(ctx), CLI_ACTOR, job_id)
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
            final = visible_job(session, CLI_ACTOR, job_id).state.is_final
        while True:
            text, offset = read_job_log(platform.settings, job_id, offset)
            if not text:
                break
            click.echo(text, nl=False)
        if not follow or final:
            return
        time.sleep(TAIL_POLL_SECONDS)


COMMANDS = (jobs,)
