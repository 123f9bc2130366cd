"""The plugin host: registering plugins, duplicates, every hook, disabled and broken plugins."""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

import radseg.plugins
from radseg.contracts import validate_settings
from radseg.core import Platform
from radseg.db.base import Base
from radseg.db.models import PluginState
from radseg.errors import NotRegisteredError, PluginError
from radseg.hookspecs import hookimpl


class FakeDataset:
    name: ClassVar[str] = "fake-dataset"


class FakeModel:
    name: ClassVar[str] = "fake-model"
    architectures: ClassVar[tuple[str, ...]] = ("tiny",)


class FakeExporter:
    name: ClassVar[str] = "fake-exporter"
    suffix: ClassVar[str] = ".fake"


def plugin_module(name: str, **hooks: Callable[..., Any]) -> types.ModuleType:
    """An in-memory plugin module whose functions are ``@hookimpl``-marked ``hooks``."""
    module = types.ModuleType(name)
    for hook_name, func in hooks.items():
        setattr(module, hook_name, hookimpl(func))
    return module


def plugin_with(name: str, hook: str, func: Callable[..., Any], **opts: bool) -> types.ModuleType:
    """A plugin module with one implementation marked ``@hookimpl(**opts)`` (wrapper=True, ...)."""
    module = types.ModuleType(name)
    setattr(module, hook, hookimpl(**opts)(func))
    return module


def registering(**classes: type) -> dict[str, Callable[[], list[type]]]:
    """``registering(exporters=X)`` → ``{"radseg_register_exporters": lambda: [X]}``."""
    return {f"radseg_register_{kind}": (lambda cls=cls: [cls]) for kind, cls in classes.items()}


def test_a_plugin_module_fills_the_registries(make_platform) -> None:
    myplug = plugin_module(
        "myplug", **registering(datasets=FakeDataset, models=FakeModel, exporters=FakeExporter)
    )
    platform = make_platform(("myplug", myplug))

    host = platform.plugins
    assert host.datasets.get("fake-dataset") is FakeDataset
    assert host.models.get("fake-model") is FakeModel
    assert host.exporters.get("fake-exporter") is FakeExporter
    assert host.exporters.plugin_of("fake-exporter") == "myplug"
    (info,) = host.list()
    assert (info.name, info.status, info.reason) == ("myplug", "enabled", "")
    assert info.hooks == [
        "radseg_register_datasets",
        "radseg_register_exporters",
        "radseg_register_models",
    ]


def test_a_duplicate_name_names_both_plugins(make_platform) -> None:
    first = plugin_module("first", **registering(exporters=FakeExporter))
    second = plugin_module("second", **registering(exporters=FakeExporter))

    with pytest.raises(PluginError) as caught:
        make_platform(("first", first), ("second", second))
    message = str(caught.value)
    assert "'fake-exporter'" in message
    assert "'first'" in message and "'second'" in message


def test_an_unknown_name_lists_the_valid_ones(make_platform) -> None:
    myplug = plugin_module("myplug", **registering(exporters=FakeExporter))
    platform = make_platform(("myplug", myplug))

    with pytest.raises(NotRegisteredError) as caught:
        platform.plugins.exporters.get("nope")
    assert "'nope'" in str(caught.value)
    assert "fake-exporter" in str(caught.value)
    with pytest.raises(NotRegisteredError, match="none"):
        platform.plugins.models.get("nope")


def test_radseg_configure_gets_the_platform_also_for_late_plugins(make_platform) -> None:
    seen: list[tuple[str, Any]] = []
    early = plugin_module(
        "early", radseg_configure=lambda platform: seen.append(("early", platform))
    )
    platform = make_platform(("early", early))
    assert seen == [("early", platform)]

    # historic: a plugin registered after the call (enabled at runtime) is configured too
    late = plugin_module("late", radseg_configure=lambda platform: seen.append(("late", platform)))
    assert platform.plugins.add("late", late).status == "enabled"
    assert seen == [("early", platform), ("late", platform)]


def test_notify_job_finished_calls_every_plugin_and_logs_failures(make_platform, caplog) -> None:
    told: list[tuple[Any, str]] = []

    def boom(job: Any, outcome: str) -> None:
        raise RuntimeError("webhook unreachable")

    quiet = plugin_module(
        "quiet", radseg_job_finished=lambda job, outcome: told.append((job, outcome))
    )
    broken = plugin_module("broken", radseg_job_finished=boom)
    platform = make_platform(("quiet", quiet), ("broken", broken))
    job = object()

    with caplog.at_level(logging.ERROR, logger="radseg.plugins"):
        platform.plugins.notify_job_finished(job, "succeeded")  # must not raise

    assert told == [(job, "succeeded")]
    (record,) = caplog.records
    assert "broken" in record.getMessage() and "radseg_job_finished" in record.getMessage()
    assert record.exc_info is not None and "webhook unreachable" in str(record.exc_info[1])


def test_a_disabled_plugin_is_listed_but_not_registered(make_platform) -> None:
    configured: list[Any] = []
    myplug = plugin_module(
        "myplug",
        radseg_configure=lambda platform: configured.append(platform),
        **registering(exporters=FakeExporter),
    )
    other = plugin_module("other", **registering(models=FakeModel))
    platform = make_platform(("myplug", myplug), ("other", other), disabled_plugins=["myplug"])

    infos = {info.name: info for info in platform.plugins.list()}
    assert infos["myplug"].status == "disabled"
    assert infos["other"].status == "enabled"
    assert "fake-exporter" not in platform.plugins.exporters
    assert platform.plugins.models.names() == ["fake-model"]
    assert configured == []


class FakeEntryPoint:
    """What ``importlib.metadata.entry_points`` yields, without touching installed metadata."""

    group = radseg.plugins.ENTRY_POINT_GROUP
    dist = None

    def __init__(self, name: str, value: str, load: Callable[[], Any]) -> None:
        self.name, self.value, self._load = name, value, load

    def load(self) -> Any:
        return self._load()


def test_an_entry_point_that_fails_to_import_is_unavailable(make_platform, monkeypatch) -> None:
    def fails() -> Any:
        raise ImportError("libfoo.so.1: cannot open shared object file")

    good = plugin_module("good", **registering(exporters=FakeExporter))
    entry_points = [
        FakeEntryPoint("broken", "broken_plugin.module", fails),
        FakeEntryPoint("good", "good_plugin", lambda: good),
    ]

    def fake_entry_points(*, group: str) -> list[FakeEntryPoint]:
        assert group == "radseg"
        return entry_points

    monkeypatch.setattr(radseg.plugins.host.importlib.metadata, "entry_points", fake_entry_points)
    platform = make_platform(autoload=True)

    infos = {info.name: info for info in platform.plugins.list()}
    assert infos["broken"].status == "unavailable"
    assert infos["broken"].module == "broken_plugin.module"
    assert infos["broken"].reason == "ImportError: libfoo.so.1: cannot open shared object file"
    assert infos["good"].status == "enabled"
    assert platform.plugins.exporters.names() == ["fake-exporter"]


def test_refresh_plugins_picks_up_an_admins_choice(make_platform) -> None:
    myplug = plugin_module("myplug", **registering(exporters=FakeExporter))
    platform = make_platform(("myplug", myplug))
    Base.metadata.create_all(platform.engine)
    assert platform.refresh_plugins() is False  # nothing changed

    with platform.sessions.begin() as session:
        session.add(PluginState(name="myplug", enabled=False, changed_by="admin"))
    assert platform.refresh_plugins() is True
    assert platform.plugins.list()[0].status == "disabled"
    assert "fake-exporter" not in platform.plugins.exporters
    assert platform.refresh_plugins() is False

    with platform.sessions.begin() as session:
        session.scalars(select(PluginState)).one().enabled = True
    assert platform.refresh_plugins() is True
    assert platform.plugins.exporters.get("fake-exporter") is FakeExporter


class SettingsExporter:
    name: ClassVar[str] = "with-settings"
    suffix: ClassVar[str] = ".bin"

    def __init__(self, settings: Any) -> None:
        self.settings = settings


class LevelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: int = Field(default=1, ge=0, le=9)


def _configured(raw_name: str) -> Callable[[Any], LevelSettings]:
    def configure(platform: Platform) -> LevelSettings:
        return validate_settings(
            raw_name, LevelSettings, platform.settings.plugin_settings(raw_name)
        )

    return configure


def test_plugin_settings_are_validated_and_given_to_its_classes(make_platform) -> None:
    plugin = plugin_module(
        "zipper", radseg_configure=_configured("zipper"), **registering(exporters=SettingsExporter)
    )
    platform = make_platform(("zipper", plugin), plugins={"zipper": {"level": 7}})
    exporter = platform.plugins.exporter("with-settings")
    assert exporter.settings == LevelSettings(level=7)


@pytest.mark.parametrize(("raw", "field"), [({"level": 12}, "level"), ({"levle": 3}, "levle")])
def test_invalid_plugin_settings_make_only_that_plugin_unavailable(
    make_platform, raw: dict[str, Any], field: str
) -> None:
    bad = plugin_module(
        "zipper", radseg_configure=_configured("zipper"), **registering(exporters=SettingsExporter)
    )
    good = plugin_module("good", **registering(exporters=FakeExporter))
    platform = make_platform(("zipper", bad), ("good", good), plugins={"zipper": raw})
    info = {i.name: i for i in platform.plugins.list()}["zipper"]
    assert info.status == "unavailable"
    assert "[plugins.zipper]" in info.reason and field in info.reason
    assert platform.plugins.exporters.names() == [FakeExporter.name]


def test_detectron2_plugin_settings_reach_its_backend(make_platform, tmp_path: Path) -> None:
    platform = make_platform(autoload=True, plugins={"detectron2": {"predict_batch_size": 16}})
    backend = platform.plugins.model_backend("detectron2")
    assert backend.settings.predict_batch_size == 16
    missing = tmp_path / "nowhere.pth"
    broken = make_platform(autoload=True, plugins={"detectron2": {"pretrained_weights": missing}})
    info = {i.name: i for i in broken.plugins.list()}["detectron2"]
    assert info.status == "unavailable"
    assert "pretrained_weights" in info.reason and "never downloaded" in info.reason
    assert "detectron2" not in broken.plugins.models


# -- pluggy's semantics hold for every plugin: the host calls hooks through the manager ---------


class OtherExporter:
    name: ClassVar[str] = "other-exporter"
    suffix: ClassVar[str] = ".other"


def test_a_late_plugins_hookwrapper_filters_what_other_plugins_register(make_platform) -> None:
    builtin = plugin_module(
        "builtin", radseg_register_exporters=lambda: [FakeExporter, OtherExporter]
    )
    platform = make_platform(("builtin", builtin))
    assert platform.plugins.exporters.names() == ["fake-exporter", "other-exporter"]

    seen: list[list[list[type]]] = []

    def filtering() -> Any:
        offered = yield
        seen.append(offered)
        return [[c for c in classes if c.name != "fake-exporter"] for classes in offered]

    policy = plugin_with("policy", "radseg_register_exporters", filtering, wrapper=True)
    assert platform.plugins.add("policy", policy).status == "enabled"

    assert seen[-1] == [[FakeExporter, OtherExporter]]  # the wrapper saw the other plugin's list
    assert platform.plugins.exporters.names() == ["other-exporter"]
    assert platform.plugins.exporters.plugin_of("other-exporter") == "builtin"


def test_a_class_a_hookwrapper_adds_is_attributed_to_its_plugin(make_platform) -> None:
    def adding() -> Any:
        offered = yield
        return [*offered, [OtherExporter]]

    wrapper = plugin_with("wrapper", "radseg_register_exporters", adding, wrapper=True)
    builtin = plugin_module("builtin", radseg_register_exporters=lambda: [FakeExporter])
    platform = make_platform(("builtin", builtin), ("wrapper", wrapper))

    assert platform.plugins.exporters.plugin_of("fake-exporter") == "builtin"
    assert platform.plugins.exporters.plugin_of("other-exporter") == "wrapper"


def test_radseg_configure_is_historic_for_a_plugin_registered_with_the_manager(
    make_platform,
) -> None:
    seen: list[tuple[str, Any]] = []
    platform = make_platform()

    # registered straight with pluggy after start-up (as a plugin may register another one):
    # pluggy replays the historic call, the host is not involved
    late = plugin_module("late", radseg_configure=lambda platform: seen.append(("late", platform)))
    platform.plugins.pm.register(late, name="late")
    assert seen == [("late", platform)]


def test_a_late_plugin_with_invalid_settings_is_unavailable(make_platform) -> None:
    good = plugin_module("good", **registering(exporters=FakeExporter))
    platform = make_platform(("good", good), plugins={"zipper": {"level": 12}})
    zipper = plugin_module(
        "zipper", radseg_configure=_configured("zipper"), **registering(exporters=SettingsExporter)
    )

    info = platform.plugins.add("zipper", zipper)

    assert info.status == "unavailable"
    assert "[plugins.zipper]" in info.reason and "level" in info.reason
    assert platform.plugins.exporters.names() == ["fake-exporter"]
    assert platform.plugins.pm.get_plugin("zipper") is None
    ok = plugin_module(
        "ok", radseg_configure=_configured("ok"), radseg_register_exporters=lambda: [OtherExporter]
    )
    assert platform.plugins.add("ok", ok).status == "enabled"
    assert platform.plugins.configs["ok"] == LevelSettings(level=1)


def test_job_finished_honours_hookwrappers_and_tryfirst_trylast(make_platform) -> None:
    calls: list[str] = []

    def timing(job: Any, outcome: str) -> Any:
        calls.append(f"wrapper before {outcome}")
        yield
        calls.append("wrapper after")

    hook = "radseg_job_finished"
    first = plugin_with("first", hook, lambda job: calls.append("trylast"), trylast=True)
    second = plugin_module("second", radseg_job_finished=lambda outcome: calls.append("plain"))
    third = plugin_with("third", hook, lambda job: calls.append("tryfirst"), tryfirst=True)
    wrapper = plugin_with("wrapper", hook, timing, hookwrapper=True)  # old-style wrapper
    platform = make_platform(
        ("first", first), ("second", second), ("third", third), ("wrapper", wrapper)
    )

    platform.plugins.notify_job_finished(object(), "failed")

    assert calls == ["wrapper before failed", "tryfirst", "plain", "trylast", "wrapper after"]


def test_a_registration_hook_that_raises_makes_only_its_plugin_unavailable(make_platform) -> None:
    def boom() -> list[type]:
        raise RuntimeError("cannot reach the licence server")

    broken = plugin_module(
        "broken", radseg_register_models=boom, **registering(exporters=OtherExporter)
    )
    good = plugin_module("good", **registering(exporters=FakeExporter))
    platform = make_platform(("broken", broken), ("good", good))

    info = {i.name: i for i in platform.plugins.list()}["broken"]
    assert info.status == "unavailable"
    assert info.reason == (
        "radseg_register_models failed: RuntimeError: cannot reach the licence server"
    )
    assert platform.plugins.exporters.names() == ["fake-exporter"]  # its exporter is withdrawn


def test_a_non_list_from_one_of_two_hookwrappers_makes_both_unavailable(make_platform) -> None:
    # Which of two wrappers added the 42 cannot be known: each is withdrawn under its own name
    # (a made-up "a or b" name could not be unregistered, and start-up looped for ever).
    def passing() -> Any:
        return (yield)

    def adding_junk() -> Any:
        offered = yield
        return [*offered, 42]

    builtin = plugin_module("builtin", radseg_register_exporters=lambda: [FakeExporter])
    first = plugin_with("first", "radseg_register_exporters", passing, wrapper=True)
    second = plugin_with("second", "radseg_register_exporters", adding_junk, wrapper=True)

    platform = make_platform(("builtin", builtin), ("first", first), ("second", second))

    infos = {i.name: i for i in platform.plugins.list()}
    for name in ("first", "second"):
        assert infos[name].status == "unavailable"
        assert "returned int, not a list of classes" in infos[name].reason
    assert infos["builtin"].status == "enabled"
    assert platform.plugins.exporters.names() == ["fake-exporter"]


def test_a_failure_that_withdraws_no_plugin_is_refused_not_retried(make_platform) -> None:
    platform = make_platform()
    with pytest.raises(PluginError, match="nobody"):
        platform.plugins._withdraw({"nobody": "radseg_register_exporters failed"})


def test_a_hookwrapper_that_raises_in_a_registration_hook_is_unavailable(make_platform) -> None:
    def passing() -> Any:
        return (yield)

    def raising() -> Any:
        yield
        raise RuntimeError("policy server down")

    builtin = plugin_module("builtin", radseg_register_exporters=lambda: [FakeExporter])
    calm = plugin_with("calm", "radseg_register_exporters", passing, wrapper=True)
    policy = plugin_with("policy", "radseg_register_exporters", raising, wrapper=True)

    platform = make_platform(("builtin", builtin), ("policy", policy), ("calm", calm))

    infos = {i.name: i for i in platform.plugins.list()}
    assert infos["policy"].status == "unavailable"
    assert infos["policy"].reason == (
        "radseg_register_exporters failed: RuntimeError: policy server down"
    )
    assert infos["calm"].status == "enabled"  # the wrapper that did not raise stays
    assert platform.plugins.exporters.names() == ["fake-exporter"]


class SecretSettings(BaseModel):
    password: str = Field(min_length=40)


def test_a_plugins_own_settings_error_never_logs_the_value(make_platform, caplog) -> None:
    secret = "hunter2-SECRET-pw"

    def configure(platform: Any) -> SecretSettings:
        # a plugin validating its own settings, letting pydantic's error out
        return SecretSettings.model_validate({"password": secret})

    early = plugin_module("early", radseg_configure=configure)
    late = plugin_module("late", radseg_configure=configure)
    caplog.set_level(logging.DEBUG)
    platform = make_platform(("early", early))  # configured by configure()
    info = platform.plugins.add("late", late)  # configured at its registration (historic)

    infos = {i.name: i for i in platform.plugins.list()}
    assert infos["early"].status == info.status == "unavailable"
    assert "password" in infos["early"].reason and "password" in info.reason
    assert "password" in caplog.text
    assert secret not in caplog.text
    assert secret not in infos["early"].reason + info.reason
