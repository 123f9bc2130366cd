"""The plugin-management use cases (:mod:`radseg.workflows.plugins`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from radseg import audit
from radseg.core import Platform
from radseg.db.models import PluginState, Role
from radseg.errors import NotRegisteredError, PermissionDenied
from radseg.hookspecs import hookimpl
from radseg.roles import CLI_ACTOR, Actor
from radseg.settings import Settings
from radseg.workflows.plugins import locked_by_settings, plugin_overview, set_plugin_enabled
from tests.support import migrated_platform

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class DemoExporter:
    name: ClassVar[str] = "demo-png"
    suffix: ClassVar[str] = ".png"

    def export(self, labels: Any, geometry: Any, classes: Any, out: Path) -> Path:
        return out


class DemoPlugin:
    @hookimpl
    def radseg_register_exporters(self) -> list[type]:
        return [DemoExporter]


@pytest.fixture
def store(settings: Settings) -> Iterator[Platform]:
    platform = migrated_platform(settings, autoload=False, plugins=[("demo", DemoPlugin())])
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
    platform = migrated_platform(locked, autoload=False, plugins=[("demo", DemoPlugin())])
    try:
        assert locked_by_settings(platform, "demo")
        set_plugin_enabled(platform, CLI_ACTOR, "demo", True)
        with platform.sessions() as session:
            (row,) = plugin_overview(platform, session)
        assert (row["status"], row["locked"]) == ("disabled", True)
        assert row["reason"] == "disabled in the settings (disabled_plugins)"
    finally:
        platform.close()
