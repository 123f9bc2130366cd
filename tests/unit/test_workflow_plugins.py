"""The plugin-management use cases (:mod:`radseg.workflows.plugins`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from radseg import audit
from radseg.core import Platform
from radseg.db.models import PluginState, Role
from radseg.errors import NotRegisteredError, PermissionDenied
from radseg.roles import CLI_ACTOR, Actor
from radseg.settings import Settings
from radseg.workflows.plugins import locked_by_settings, plugin_overview, set_plugin_enabled
from tests.support import SQLITE_ONLY, migrated_platform
from tests.web_support import DEMO

pytestmark = SQLITE_ONLY


@pytest.fixture
def store(settings: Settings) -> Iterator[Platform]:
    platform = migrated_platform(settings, autoload=False, plugins=[DEMO])
    yield platform
    platform.close()


def test_an_admin_disables_and_enables_a_plugin_in_this_process_at_once(store: Platform) -> None:
    with pytest.raises(PermissionDenied, match="only an admin can enable or disable plugins"):
        set_plugin_enabled(store, Actor("rita", Role.RESEARCHER), "demo", False)
    with pytest.raises(NotRegisteredError, match="no plugin 'nope'; installed plugins: demo"):
        set_plugin_enabled(store, CLI_ACTOR, "nope", False)

    state = set_plugin_enabled(store, Actor("root", Role.ADMIN), "demo", False)
    assert (state.name, state.enabled, state.changed_by) == ("demo", False, "root")
    assert "demo-png" not in store.plugins.exporters
    with store.sessions() as session:
        assert session.get(PluginState, "demo") is not None
        (row,) = plugin_overview(store, session)
        (event,) = audit.events(session, action="plugin.disable")
    assert (row["status"], row["reason"], row["locked"]) == ("disabled", "disabled by root", False)
    assert row["changed_at"] is not None
    assert (event.actor, event.target) == ("root", "plugin:demo")

    set_plugin_enabled(store, CLI_ACTOR, "demo", True)
    assert "demo-png" in store.plugins.exporters


def test_a_plugin_the_settings_disable_stays_disabled(settings: Settings) -> None:
    locked = settings.model_copy(update={"disabled_plugins": ["demo"]})
    platform = migrated_platform(locked, autoload=False, plugins=[DEMO])
    try:
        assert locked_by_settings(platform, "demo")
        set_plugin_enabled(platform, CLI_ACTOR, "demo", True)
        with platform.sessions() as session:
            (row,) = plugin_overview(platform, session)
        assert (row["status"], row["locked"]) == ("disabled", True)
        assert row["reason"] == "disabled in the settings (disabled_plugins)"
    finally:
        platform.close()
