"""What every ``radseg`` command shares: the platform, the error mapping, progress, job following.

Commands are thin adapters: they parse options, call a use case (:mod:`radseg.workflows`) and
print. This module is the one place that says how an error becomes an exit code and a message,
how long work shows progress, and how ``--wait`` follows a queued job.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from radseg.core import Platform, create_platform
from radseg.db.models import Job, JobState
from radseg.errors import IngestFailed, RadsegError
from radseg.settings import load_settings

F = TypeVar("F", bound=Callable[..., Any])

#: seconds between two looks at a followed job
POLL_SECONDS = 1.0
#: polls of a still-queued job after which ``--wait`` asks whether a worker is running
QUEUED_HINT_AFTER = 30


class Progress:
    """A tqdm bar driven by :data:`radseg.contracts.ProgressFn` calls."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.message = ""
        self.bar = tqdm(
            total=1000,
            desc=description,
            leave=True,
            file=sys.stderr,
            # tqdm writes the postfix as ", <message>": after the elapsed time that reads well
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}",
        )

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = int(max(0.0, min(fraction, 1.0)) * 1000)
        if message != self.message:
            self.message = message
            self.bar.set_postfix_str(message[:60], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def platform_of(ctx: click.Context) -> Platform:
    """The command's platform, built on first use from ``--home`` and closed with the context."""
    obj = ctx.ensure_object(dict)
    if "platform" not in obj:
        obj["platform"] = create_platform(load_settings(obj.get("overrides") or {}))
        ctx.call_on_close(obj["platform"].close)
    platform: Platform = obj["platform"]
    return platform


# -- errors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorOutput:
    """How the CLI shows one class of error: its exit code, its ``Error:`` line, lines before it."""

    exit_code: int
    message: Callable[[Any], str] = str
    #: lines printed to stderr (indented) before the error line, e.g. every refused file
    details: Callable[[Any], list[str]] = lambda exc: []


def _database_message(exc: SQLAlchemyError) -> str:
    detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return (
        f"database error ({detail}); is the database set up? run `radseg init` "
        "or `radseg db upgrade`, and check RADSEG_DATABASE_URL"
    )


#: the one table from error class to what the user sees; the first class that matches wins, so
#: a subclass comes before its base. Every use-case error (InputError, NotFound,
#: PermissionDenied, Conflict, JobError, ...) is a RadsegError: one line, exit 1.
ERROR_OUTPUTS: tuple[tuple[type[Exception], ErrorOutput], ...] = (
    # every file and reason, by the names the user gave the files; then the one-line headline
    (IngestFailed, ErrorOutput(1, lambda exc: exc.headline, lambda exc: list(exc.details))),
    (RadsegError, ErrorOutput(1)),
    (SQLAlchemyError, ErrorOutput(1, _database_message)),
)


def error_output(exc: Exception) -> ErrorOutput | None:
    """How ``exc`` is shown, or ``None`` when it is not an error the user can act on (a bug)."""
    for cls, output in ERROR_OUTPUTS:
        if isinstance(exc, cls):
            return output
    return None


def handle_errors(func: F) -> F:
    """Turn the errors of :data:`ERROR_OUTPUTS` into their message and exit code; no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (RadsegError, SQLAlchemyError) as exc:
            output = error_output(exc)
            assert output is not None  # both bases are in the table
            for line in output.details(exc):
                click.echo(f"  {line}", err=True)
            # the same ``Error: …`` line as any click error, with the table's exit code
            click.ClickException(output.message(exc)).show()
            raise click.exceptions.Exit(output.exit_code) from exc

    return wrapper  # type: ignore[return-value]


# -- input --------------------------------------------------------------------------------------


def parse_assignment(text: str, option: str = "--set") -> tuple[str, Any]:
    """``KEY=VALUE`` → ``(KEY, VALUE)``; VALUE is read as JSON when it is JSON (``5``, ``true``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint=option)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def plural(count: int, noun: str) -> str:
    """``1 upload``, ``3 uploads``."""
    return f"{count} {noun}{'s' if count != 1 else ''}"


# -- following a job ----------------------------------------------------------------------------


def wait_for_job(platform: Platform, job_id: int, description: str) -> dict[str, Any]:
    """Follow a job with a progress bar until it is final; its result, or exit 1 on failure."""
    bar = Progress(description)
    polls_queued = 0
    try:
        while True:
            with platform.sessions() as session:
                job = session.get(Job, job_id)
                assert job is not None
                state, progress, message = job.state, job.progress, job.message
            bar(progress, f"{state.value} {message}")
            if state.is_final:
                break
            if state == JobState.QUEUED:
                polls_queued += 1
                if polls_queued == QUEUED_HINT_AFTER:
                    tqdm.write(
                        f"job {job_id} is still queued: is a worker running? (radseg worker)"
                    )
            time.sleep(POLL_SECONDS)
    finally:
        bar.close()
    with platform.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
    if job.state != JobState.SUCCEEDED:
        raise click.ClickException(f"job {job_id} {job.state.value}: {job.message}")
    return job.result or {}
