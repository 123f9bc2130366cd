"""Plugin administration: list plugins, and let admins enable or disable them at runtime.

The use cases are :mod:`radseg.workflows.plugins`: the choice is stored, and every process
(each web worker, each job worker) reloads its plugin host when it changes, so no restart is
needed. ``GET /-/plugins`` is the same list as JSON for any logged-in user.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, jsonify, redirect, render_template, url_for
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from radseg.roles import ADMINS
from radseg.web.auth import current_actor, login_required, public, roles_required
from radseg.web.context import current_platform, db
from radseg.workflows.plugins import locked_by_settings, plugin_overview, set_plugin_enabled

bp = Blueprint("admin", __name__)


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
    return jsonify(plugins=plugin_overview(current_platform(), db()))


@bp.get("/admin/plugins")
@roles_required(*ADMINS)
def plugins() -> Any:
    return render_template("plugins.html", plugins=plugin_overview(current_platform(), db()))


def _set_enabled(name: str, enabled: bool) -> Any:
    platform = current_platform()
    set_plugin_enabled(platform, current_actor(), name, enabled)
    if enabled and locked_by_settings(platform, name):
        flash(f"{name} stays disabled: the settings list it in disabled_plugins.", "error")
    else:
        flash(f"Plugin {name} {'enabled' if enabled else 'disabled'}.", "info")
    return redirect(url_for("admin.plugins"))


@bp.post("/admin/plugins/<name>/enable")
@roles_required(*ADMINS)
def enable(name: str) -> Any:
    return _set_enabled(name, True)


@bp.post("/admin/plugins/<name>/disable")
@roles_required(*ADMINS)
def disable(name: str) -> Any:
    return _set_enabled(name, False)
