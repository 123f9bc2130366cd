"""Several readers per prediction: ``worklist`` (assign, list, show, cancel, adjudicate,
sign-off), ``readings`` (a reader's list, paint, submit) and ``readers`` (the statistics).

Commands that act for a reader or an adjudicator take ``--as USERNAME``: the use case checks
that user's role and the case's blinding as it would on the web (whoever runs the command
line on the server already holds the database, as :data:`radseg.roles.CLI_ACTOR` says).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import click

from radseg import users
from radseg.cli.common import handle_errors, platform_of
from radseg.core import Platform
from radseg.errors import InputError
from radseg.roles import CLI_ACTOR, Actor
from radseg.workflows import adjudication, readings


def _actor(platform: Platform, username: str | None) -> Actor:
    """``--as USERNAME`` as an actor with that user's role; the CLI's admin without it."""
    if not username:
        return CLI_ACTOR
    with platform.sessions() as session:
        user = users.get_user(session, username)
        if not user.active:
            raise InputError(f"user {username!r} is deactivated")
        return Actor(user.username, user.role)


AS_USER = click.option("--as", "as_user", metavar="USERNAME", help="act as this user")


@click.group()
def worklist() -> None:
    """The readers' worklist: cases, agreement, adjudication."""


@worklist.command("assign")
@click.option("--prediction", "prediction_id", type=int, required=True)
@click.option("--reader", "readers_", multiple=True, required=True, help="repeat per reader")
@click.option("--adjudicator", default=None)
@click.option("--due", type=click.DateTime(formats=["%Y-%m-%d"]), default=None)
@click.option("--note", default="")
@click.pass_context
@handle_errors
def assign(
    ctx: click.Context,
    prediction_id: int,
    readers_: tuple[str, ...],
    adjudicator: str | None,
    due: Any,
    note: str,
) -> None:
    """Assign a prediction to readers (and an adjudicator), with a due date."""
    platform = platform_of(ctx)
    case = readings.assign(
        platform,
        CLI_ACTOR,
        prediction_id=prediction_id,
        readers=list(readers_),
        adjudicator=adjudicator,
        due_date=date(due.year, due.month, due.day) if due else None,
        note=note,
        via="cli",
    )
    ids = ", ".join(f"{r.reader.username}: reading {r.id}" for r in case.readings)
    click.echo(f"case {case.id} for prediction {case.prediction_id} ({ids})")


@worklist.command("list")
@click.option("--state", type=click.Choice(readings.WORKLIST_STATES), default="open")
@click.pass_context
@handle_errors
def list_cases(ctx: click.Context, state: str) -> None:
    """List the worklist's cases."""
    platform = platform_of(ctx)
    with platform.sessions() as session:
        for case in readings.worklist(session, state=state):
            names = ", ".join(
                r.reader.username + (" ✓" if r.submitted_at else "") for r in case.readings
            )
            due = case.due_date.isoformat() if case.due_date else "-"
            click.echo(
                f"case {case.id}  prediction {case.prediction_id}  {case.state.value}  "
                f"due {due}  readers {names}"
            )


@worklist.command("show")
@click.argument("case_id", type=int)
@AS_USER
@click.pass_context
@handle_errors
def show(ctx: click.Context, case_id: int, as_user: str | None) -> None:
    """A case as JSON: readers, and (if allowed to see it) the agreement."""
    platform = platform_of(ctx)
    actor = _actor(platform, as_user)
    with platform.sessions() as session:
        case = readings.visible_case(session, actor, case_id)
        show_work = readings.may_see_submitted(case, actor)
        out = {
            "id": case.id,
            "state": case.state.value,
            "prediction_id": case.prediction_id,
            "readers": [
                {
                    "reader": r.reader.username,
                    "reading": r.id,
                    "submitted": r.submitted_at is not None,
                    "seconds": r.seconds,
                }
                for r in case.readings
            ],
            "agreement": case.agreement if show_work else None,
            "label_set_id": case.label_set_id,
        }
    click.echo(json.dumps(out, indent=2))


@worklist.command("cancel")
@click.argument("case_id", type=int)
@click.pass_context
@handle_errors
def cancel(ctx: click.Context, case_id: int) -> None:
    """Withdraw an open case."""
    case = readings.cancel_case(platform_of(ctx), CLI_ACTOR, case_id, via="cli")
    click.echo(f"case {case.id} cancelled")


@worklist.command("adjudicate")
@click.argument("case_id", type=int)
@click.option(
    "--from", "source", required=True, help="reading:<id>, staple, majority or prediction"
)
@AS_USER
@click.pass_context
@handle_errors
def adjudicate(ctx: click.Context, case_id: int, source: str, as_user: str | None) -> None:
    """Start the adjudication of a case from one mask."""
    platform = platform_of(ctx)
    case = adjudication.start_adjudication(
        platform, _actor(platform, as_user), case_id, source=source, via="cli"
    )
    click.echo(f"case {case.id}: adjudication starts from {case.draft_source}")


@worklist.command("sign-off")
@click.argument("case_id", type=int)
@AS_USER
@click.pass_context
@handle_errors
def sign_off(ctx: click.Context, case_id: int, as_user: str | None) -> None:
    """Sign the adjudicated mask off as the series' next label version."""
    platform = platform_of(ctx)
    label_set = adjudication.sign_off(platform, _actor(platform, as_user), case_id, via="cli")
    click.echo(f"label set {label_set.id}: version {label_set.version} (adjudicated)")


@click.group("readings")
def readings_group() -> None:
    """A reader's own readings."""


@readings_group.command("list")
@click.option("--as", "as_user", metavar="USERNAME", required=True, help="the reader")
@click.pass_context
@handle_errors
def my_readings(ctx: click.Context, as_user: str) -> None:
    """The reader's readings of open cases, soonest due first."""
    platform = platform_of(ctx)
    actor = _actor(platform, as_user)
    with platform.sessions() as session:
        for r in readings.my_queue(session, actor, include_submitted=True):
            due = r.case.due_date.isoformat() if r.case.due_date else "-"
            state = "submitted" if r.submitted_at else "open"
            click.echo(
                f"reading {r.id}  case {r.case_id}  prediction {r.case.prediction_id}  "
                f"due {due}  {state}"
            )


@readings_group.command("paint")
@click.argument("reading_id", type=int)
@click.option(
    "--strokes",
    "strokes_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help='JSON: [{"z", "class_id", "radius", "points": [[x, y], ...]}, ...]',
)
@click.option("--as", "as_user", metavar="USERNAME", required=True, help="the reader")
@click.pass_context
@handle_errors
def paint(ctx: click.Context, reading_id: int, strokes_file: Path, as_user: str) -> None:
    """Paint brush/eraser strokes onto the reader's copy."""
    platform = platform_of(ctx)
    try:
        strokes = json.loads(strokes_file.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{strokes_file}: not a JSON list of strokes ({exc})") from None
    if not isinstance(strokes, list):
        raise InputError(f"{strokes_file}: not a JSON list of strokes")
    reading = readings.paint_reading(
        platform, _actor(platform, as_user), reading_id, strokes=strokes, via="cli"
    )
    click.echo(f"reading {reading.id}: {reading.strokes} strokes so far")


@readings_group.command("submit")
@click.argument("reading_id", type=int)
@click.option(
    "--decision", type=click.Choice(["accepted", "needs_edit", "rejected"]), required=True
)
@click.option("--comment", default="")
@click.option("--as", "as_user", metavar="USERNAME", required=True, help="the reader")
@click.pass_context
@handle_errors
def submit(ctx: click.Context, reading_id: int, decision: str, comment: str, as_user: str) -> None:
    """Submit the reading (final)."""
    platform = platform_of(ctx)
    reading = readings.submit_reading(
        platform,
        _actor(platform, as_user),
        reading_id,
        decision=decision,
        comment=comment,
        via="cli",
    )
    click.echo(f"reading {reading.id} submitted: {decision} after {reading.seconds or 0:.0f} s")


@click.command("readers")
@click.pass_context
@handle_errors
def readers_stats(ctx: click.Context) -> None:
    """Agreement per reader per class, time per case, cases per week (JSON)."""
    platform = platform_of(ctx)
    with platform.sessions() as session:
        stats = adjudication.reader_statistics(session, CLI_ACTOR)
    click.echo(json.dumps(stats, indent=2))


COMMANDS = (worklist, readings_group, readers_stats)
