"""Use cases of plugin management: admins enable and disable plugins at runtime.

The choice is a :class:`~radseg.db.models.PluginState` row. Every process (each web worker,
each job worker) compares the stored choices with the plugin host it has loaded
(:meth:`radseg.core.Platform.refresh_plugins`) and reloads it when they differ, so a change
needs no restart. A plugin listed in the settings' ``disabled_plugins`` stays disabled whatever
is stored.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from radseg import audit
from radseg.core import Platform
from radseg.db.base import utcnow
from radseg.db.models import PluginState
from radseg.errors import NotRegisteredError
from radseg.plugins.settings import plugin_settings
from radseg.roles import ADMINS, Actor, require_role


def locked_by_settings(platform: Platform, name: str) -> bool:
    """Whether the settings' ``disabled_plugins`` keep plugin ``name`` disabled, whatever an
    admin chooses."""
    return name in platform.settings.disabled_plugins


def set_plugin_enabled(platform: Platform, actor: Actor, name: str, enabled: bool) -> PluginState:
    """Enable or disable plugin ``name`` in every process; audited as ``plugin.enable`` or
    ``plugin.disable``. This process's plugins are reloaded at once (after the commit).

    Raises :class:`~radseg.errors.NotRegisteredError` (listing the installed plugins) for a
    name the plugin host does not know.
    """
    require_role(actor, ADMINS, "enable or disable plugins")
    known = {info.name for info in platform.plugins.list()}
    if name not in known:
        raise NotRegisteredError(
            f"there is no plugin {name!r}; installed plugins: {', '.join(sorted(known))}"
        )
    with platform.sessions.begin() as session:
        state = session.get(PluginState, name)
        if state is None:
            state = PluginState(name=name)
            session.add(state)
        state.enabled = enabled
        state.changed_by = actor.username
        state.changed_at = utcnow()
        action = "plugin.enable" if enabled else "plugin.disable"
        audit.record(session, actor.username, action, f"plugin:{name}")
    platform.refresh_plugins()
    return state


def plugin_overview(platform: Platform, session: Session) -> list[dict[str, Any]]:
    """Every plugin as the host reports it (:meth:`~radseg.plugins.PluginInfo.to_dict`), with
    whether the settings lock it (``locked``), who disabled it when the host cannot say why
    (``reason``), when an admin last changed it (``changed_at``) and its masked settings.

    A query: it reads through the caller's ``session`` and writes nothing.
    """
    states = {s.name: s for s in session.scalars(select(PluginState))}
    rows = []
    for info in platform.plugins.list():
        row = info.to_dict()
        state = states.get(info.name)
        row["locked"] = locked_by_settings(platform, info.name)
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
