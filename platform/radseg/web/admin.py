"""Plugin administration: list plugins, and let admins enable or disable them at runtime.

The choice is a :class:`~radseg.db.models.PluginState` row; every process (each web worker, each
job worker) reloads its plugin host when the set of disabled names changes, so no restart is
needed. ``GET /-/plugins`` is the same list as JSON for any logged-in user.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, url_for
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from radseg import plugin_states
from radseg.db.models import PluginState, Role
from radseg.errors import NotRegisteredError
from radseg.web.auth import login_required, public, roles_required, web_user
from radseg.web.context import current_platform, db
from radseg.web.plugin_settings import plugin_settings

bp = Blueprint("admin", __name__)


def plugin_rows(session: Session) -> list[dict[str, Any]]:
    """What the host reports for each plugin, with who disabled it when the host cannot say."""
    platform = current_platform()
    states = {s.name: s for s in session.scalars(select(PluginState))}
    in_settings = set(platform.settings.disabled_plugins)
    rows = []
    for info in platform.plugins.list():
        row = info.to_dict()
        state = states.get(info.name)
        row["locked"] = info.name in in_settings
        if info.status == "disabled" and not row["reason"]:
            if row["locked"]:
                row["reason"] = "disabled in the settings (disabled_plugins)"
            elif state is not None and not state.enabled:
                row["reason"] = f"disabled by {state.changed_by or 'an admin'}"
        row["changed_at"] = state.changed_at.isoformat() if state else None
        row["settings"] = plugin_settings(
            platform.plugins.configs, platform.settings.plugin_settings(info.name), info.name
        )
        rows.append(row)
    return rows


@bp.get("/-/health")
@public
def health() -> Any:
    """For load balancers and container health checks: 200 when the database answers."""
    try:
        db().execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return jsonify(status="error", database=type(exc).__name__), 503
    return jsonify(status="ok")


@bp.get("/-/plugins")
@login_required
def plugins_json() -> Any:
    return jsonify(plugins=plugin_rows(db()))


@bp.get("/admin/plugins")
@roles_required(Role.ADMIN)
def plugins() -> Any:
    return render_template("plugins.html", plugins=plugin_rows(db()))


def _set_enabled(name: str, enabled: bool) -> Any:
    platform = current_platform()
    known = {info.name for info in platform.plugins.list()}
    session = db()
    try:
        plugin_states.set_enabled(session, name, enabled, actor=web_user().username, known=known)
    except NotRegisteredError as exc:
        abort(404, str(exc))
    session.commit()
    platform.refresh_plugins()
    if enabled and name in platform.settings.disabled_plugins:
        flash(f"{name} stays disabled: the settings list it in disabled_plugins.", "error")
    else:
        flash(f"Plugin {name} {'enabled' if enabled else 'disabled'}.", "info")
    return redirect(url_for("admin.plugins"))


@bp.post("/admin/plugins/<name>/enable")
@roles_required(Role.ADMIN)
def enable(name: str) -> Any:
    return _set_enabled(name, True)


@bp.post("/admin/plugins/<name>/disable")
@roles_required(Role.ADMIN)
def disable(name: str) -> Any:
    return _set_enabled(name, False)
