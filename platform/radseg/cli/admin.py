"""Setting up and watching the platform: ``init``, ``db upgrade``, ``users``, ``plugins`` and
``audit list``."""

from __future__ import annotations

import json
import secrets
from datetime import UTC
from typing import Literal

import click

from radseg.cli.common import handle_errors, platform_of, plural
from radseg.cli.listing import echo_count, window_options
from radseg.db.models import Role
from radseg.db.paging import Window
from radseg.errors import InputError
from radseg.roles import CLI_ACTOR
from radseg.workflows.plugins import set_plugin_enabled
from radseg.workflows.users import clear_login_failures, create_user, ensure_first_admin

#: length of a generated first-admin password, in bytes of randomness (base64: 20 characters)
ADMIN_PASSWORD_BYTES = 15


@click.command()
@click.option("--admin-user", default="admin", show_default=True)
@click.option(
    "--admin-password",
    envvar="RADSEG_ADMIN_PASSWORD",
    help="password of the first admin (env RADSEG_ADMIN_PASSWORD); without it a random one is "
    "generated and printed once",
)
@click.pass_context
@handle_errors
def init(ctx: click.Context, admin_user: str, admin_password: str | None) -> None:
    """Create RADSEG_HOME, migrate the database and create the first admin."""
    from radseg.db.migrate import upgrade

    platform = platform_of(ctx)
    platform.ensure_home()
    upgrade(platform.engine)
    generated = not admin_password
    password = secrets.token_urlsafe(ADMIN_PASSWORD_BYTES) if generated else str(admin_password)
    created = ensure_first_admin(platform, username=admin_user, password=password)
    # committed by now: a password is only shown for an account that exists. click.echo, never
    # logging: it goes to this terminal and nowhere else.
    if not created:
        click.echo(f"admin user {admin_user!r} already exists (its password is unchanged)")
    elif generated:
        click.echo(
            f"created admin user {admin_user!r} with the password\n\n    {password}\n\n"
            "It is shown only this once and stored only as a hash: log in and change it on "
            "the Account page."
        )
    else:
        click.echo(f"created admin user {admin_user!r}")
    click.echo(f"radseg home: {platform.home.resolve()}")


@click.group()
def db() -> None:
    """Database schema (Alembic)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
@handle_errors
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database to REVISION."""
    from radseg.db.migrate import current_revision, upgrade

    platform = platform_of(ctx)
    upgrade(platform.engine, revision)
    click.echo(f"database at revision {current_revision(platform.engine)}")


@click.group()
def users() -> None:
    """User accounts."""


@users.command("create")
@click.argument("username")
@click.option(
    "--role", type=click.Choice([r.value for r in Role]), default="researcher", show_default=True
)
@click.password_option(envvar="RADSEG_NEW_PASSWORD", help="password (prompted if not given)")
@click.pass_context
@handle_errors
def users_create(ctx: click.Context, username: str, role: str, password: str) -> None:
    """Create a user with ROLE."""
    create_user(platform_of(ctx), CLI_ACTOR, username=username, password=password, role=role)
    click.echo(f"created {role} {username!r}")


@users.command("unlock")
@click.argument("username")
@click.pass_context
@handle_errors
def users_unlock(ctx: click.Context, username: str) -> None:
    """Forget USERNAME's failed logins: the login throttle lets them in again at once."""
    cleared = clear_login_failures(platform_of(ctx), CLI_ACTOR, username=username)
    click.echo(f"cleared {plural(cleared, 'failed login')} of {username!r}")


@click.group()
def plugins() -> None:
    """Installed plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def plugins_list(ctx: click.Context, as_json: bool) -> None:
    """Show every plugin: name, version, hooks, status and why."""
    infos = platform_of(ctx).plugins.list()
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    for info in infos:
        reason = f"  ({info.reason})" if info.reason else ""
        click.echo(
            f"{info.name:<16} {info.version:<8} {info.status:<12} {', '.join(info.hooks)}{reason}"
        )


def _plugin_switch(enabled: bool) -> click.Command:
    """``radseg plugins enable NAME`` or ``disable NAME``: one use case, either way."""
    verb = "enable" if enabled else "disable"

    @click.command(verb, help=f"{verb.capitalize()} plugin NAME in every process.")
    @click.argument("name")
    @click.pass_context
    @handle_errors
    def switch(ctx: click.Context, name: str) -> None:
        set_plugin_enabled(platform_of(ctx), CLI_ACTOR, name, enabled)
        click.echo(f"plugin {name} {verb}d")

    return switch


plugins.add_command(_plugin_switch(True))
plugins.add_command(_plugin_switch(False))


@click.group()
def audit() -> None:
    """The audit trail: who did what to which object, and when."""


@audit.command("list")
@click.option("--actor", help="a user name (the command line is `cli`)")
@click.option("--action", help="an action; `login` also finds `login.failed`")
@click.option("--target", help="an object, e.g. study:12")
@click.option("--since", help="from this date or time (2026-01-31, 2026-01-31T12:00; UTC)")
@click.option("--until", help="before this date or time")
@click.option(
    "--sort", type=click.Choice(["newest", "oldest"]), default="newest", show_default=True
)
@window_options
@click.pass_context
@handle_errors
def audit_list(
    ctx: click.Context,
    actor: str | None,
    action: str | None,
    target: str | None,
    since: str | None,
    until: str | None,
    sort: Literal["newest", "oldest"],
    window: Window,
) -> None:
    """List audit events as the Audit page does: number, time (UTC), actor, action, target and
    details."""
    from radseg import audit as trail

    try:
        filters = trail.AuditFilters(
            actor=(actor or "").strip(),
            action=(action or "").strip(),
            target=(target or "").strip(),
            since=trail.parse_time("--since", since),
            until=trail.parse_time("--until", until),
            sort=sort,
        )
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None
    platform = platform_of(ctx)
    with platform.sessions() as session:
        listed = trail.search_page(session, filters, window)
        for event in listed.rows:
            detail = ", ".join(f"{k}={v}" for k, v in event.detail.items())
            click.echo(
                f"{event.id:>7}  {event.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  "
                f"{event.actor:<12} "
                f"{event.action:<20} {event.target or '-'}{'  ' + detail if detail else ''}"
            )
    echo_count(listed, "events")


COMMANDS = (init, db, users, plugins, audit)
