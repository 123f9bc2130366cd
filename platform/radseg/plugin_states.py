"""An admin's enable/disable choices for plugins, stored as PluginState rows.

Every process compares the stored choices with the plugin host it has loaded
(:meth:`radseg.core.Platform.refresh_plugins`), so a change needs no restart.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from radseg import audit
from radseg.db.base import utcnow
from radseg.db.models import PluginState
from radseg.errors import NotRegisteredError


def set_enabled(
    session: Session, name: str, enabled: bool, *, actor: str, known: set[str]
) -> PluginState:
    """Record that ``actor`` enabled or disabled plugin ``name`` (one of ``known``), audited."""
    if name not in known:
        raise NotRegisteredError(
            f"there is no plugin {name!r}; installed plugins: {', '.join(sorted(known))}"
        )
    state = session.get(PluginState, name)
    if state is None:
        state = PluginState(name=name)
        session.add(state)
    state.enabled = enabled
    state.changed_by = actor
    state.changed_at = utcnow()
    audit.record(session, actor, "plugin.enable" if enabled else "plugin.disable", f"plugin:{name}")
    return state
