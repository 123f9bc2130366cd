"""Job kinds: the product ships only its real kinds; plugins add theirs with
``radseg_register_job_kinds``, loaded from entry points or the ``plugin_modules`` setting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from radseg.contracts import BUILTIN_JOB_KINDS, ProgressFn
from radseg.core import Platform, create_platform
from radseg.errors import JobError, PluginError, RadsegError
from radseg.jobs.handlers import HANDLERS, handler_for
from radseg.main import main
from radseg.settings import load_settings
from tests.unit.test_plugin_host import plugin_module


class Echo:
    name: ClassVar[str] = "echo"

    def run(
        self, platform: Any, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
    ) -> dict[str, Any]:
        progress(1.0, "echoed")
        return {"job_id": job_id, "echo": payload}


class FakeIngest(Echo):
    name: ClassVar[str] = "ingest"


def test_the_product_ships_only_its_real_job_kinds() -> None:
    assert set(HANDLERS) == BUILTIN_JOB_KINDS
    assert "noop" not in HANDLERS
    inline = next(p for p in main.commands["worker"].params if p.name == "inline_kinds")
    assert inline.default == ""  # a worker runs no kind inline unless told to


def test_a_plugin_adds_a_job_kind_that_the_worker_runs(
    make_platform: Callable[..., Platform],
) -> None:
    plugin = plugin_module("echoes", radseg_register_job_kinds=lambda: [Echo])
    platform = make_platform(("echoes", plugin))
    assert platform.plugins.job_kinds.names() == ["echo"]
    assert platform.plugins.job_kinds.plugin_of("echo") == "echoes"
    told: list[tuple[float, str]] = []
    result = handler_for("echo", platform)(
        platform, {"a": 1}, progress=lambda f, m: told.append((f, m)), job_id=7
    )
    assert result == {"job_id": 7, "echo": {"a": 1}} and told == [(1.0, "echoed")]
    # without the plugin the kind is unknown, and the error lists the kinds there are
    bare = make_platform()
    with pytest.raises(
        JobError, match=r"unknown job kind 'echo'; known kinds: ([\w-]+, )*build-dataset, "
    ):
        handler_for("echo", bare)


def test_a_plugin_cannot_take_a_built_in_kind(make_platform: Callable[..., Platform]) -> None:
    plugin = plugin_module("sneaky", radseg_register_job_kinds=lambda: [FakeIngest])
    with pytest.raises(PluginError, match=r"plugin 'sneaky' registers job kind 'ingest'"):
        make_platform(("sneaky", plugin))


def test_plugin_modules_load_in_every_process_like_entry_points(
    make_platform: Callable[..., Platform],
) -> None:
    platform = make_platform(plugin_modules=["tests.jobs_plugin", "tests.no_such_plugin"])
    assert "noop" in platform.plugins.job_kinds
    assert "gated-dicom-folder" in platform.plugins.datasets
    infos = {info.name: info for info in platform.plugins.list()}
    assert infos["tests.jobs_plugin"].status == "enabled"
    broken = infos["tests.no_such_plugin"]
    assert broken.status == "unavailable" and "No module named" in broken.reason
    # the settings reach a job's process (runner.child_main), which loads them again
    again = create_platform(platform.settings.model_validate(platform.settings.model_dump()))
    try:
        assert "noop" in again.plugins.job_kinds
    finally:
        again.close()


def test_plugin_modules_from_the_environment_are_import_paths(tmp_path: Path) -> None:
    env = {"RADSEG_PLUGIN_MODULES": "tests.jobs_plugin, other.module"}
    settings = load_settings({"home": tmp_path}, environ=env)
    assert settings.plugin_modules == ("tests.jobs_plugin", "other.module")
    with pytest.raises(RadsegError, match=r"plugin_modules.*'../evil' is not a module import"):
        load_settings({"home": tmp_path}, environ={"RADSEG_PLUGIN_MODULES": "../evil"})
