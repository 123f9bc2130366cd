"""The ``radseg`` program: the command line (:mod:`radseg.cli`) and the two long-running
processes it starts, ``radseg serve`` (the web UI) and ``radseg worker`` (the job queue).

The one module above all three shells: the command line imports neither the web app nor the
worker (the import contracts in pyproject.toml check it), so the commands that launch them are
added here, and the console script ``radseg`` (and ``python -m radseg``) runs :data:`main`.
"""

from __future__ import annotations

import logging

import click

from radseg.cli import command_line
from radseg.cli.common import handle_errors, platform_of


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--threads/--no-threads", default=True, show_default=True)
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str, port: int, threads: bool) -> None:
    """Serve the web UI (use a WSGI server such as gunicorn in production)."""
    from werkzeug.serving import run_simple

    from radseg.web import create_app

    platform = platform_of(ctx)
    app = create_app(platform, bound_to=host)
    click.echo(f"radseg UI on http://{host}:{port}/")
    if app.config["SESSION_COOKIE_SECURE"]:
        # this server speaks plain http: a browser keeps a Secure cookie only over https
        # (or on localhost), so logging in from another machine needs a TLS proxy in front
        click.echo(
            "session cookies are Secure: serve the UI to other machines through an https "
            "reverse proxy (or set RADSEG_SECURE_COOKIES=false on a trusted network only)"
        )
    run_simple(host, port, app, threaded=threads, use_reloader=False)


def _names(text: str | None) -> list[str]:
    """``"a, b,"`` → ``["a", "b"]``: a comma-separated option."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


@click.command()
@click.option("--burst", is_flag=True, help="exit when no job is runnable")
@click.option("--kinds", help="comma-separated job kinds to take (default: all)")
@click.option("--gpus", help="comma-separated GPU indices; one GPU job per GPU at a time")
@click.option("--gpu", help="one GPU index (same as --gpus N)", hidden=True)
@click.option(
    "--concurrency",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="CPU-only jobs run at once (alongside the GPU jobs)",
)
@click.option(
    "--inline-kinds",
    default="",
    help="comma-separated kinds (a plugin's, taking milliseconds) run inside the worker, "
    "in batches, instead of in a child process (default: none)",
)
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="on SIGTERM, seconds running jobs get to finish before they are requeued",
)
@click.option(
    "--machine",
    default="",
    help="the machine this worker counts as in a multi-machine job (one worker per machine "
    "and job; default: the setting machine_name, else the host name)",
)
@click.pass_context
@handle_errors
def worker(
    ctx: click.Context,
    burst: bool,
    kinds: str | None,
    gpus: str | None,
    gpu: str | None,
    concurrency: int,
    inline_kinds: str,
    grace: float,
    machine: str,
) -> None:
    """Run jobs from the queue, each in a child process."""
    from radseg.jobs.worker import Worker

    logging.getLogger().setLevel(logging.INFO)
    platform = platform_of(ctx)
    w = Worker(
        platform,
        kinds=_names(kinds) or None,
        burst=burst,
        gpus=_names(gpus) or _names(gpu),
        concurrency=concurrency,
        inline_kinds=_names(inline_kinds),
        grace_seconds=grace,
        machine=machine.strip(),
    )
    w.install_signal_handlers()
    count = w.run()
    click.echo(f"worker {w.worker_id} ran {count} job(s)")


#: the ``radseg`` console script
main = command_line(serve, worker)

if __name__ == "__main__":  # pragma: no cover
    main()
