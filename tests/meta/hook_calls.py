"""A pytest plugin that records which ``radseg_*`` hooks pluggy runs during each test.

Loaded by the meta-test (``pytest -p tests.meta.hook_calls``) in a child pytest; writes
``{nodeid: {"outcome": ..., "hooks": [...]}}`` as JSON to the file named by ``RADSEG_HOOK_CALLS``.
A hook counts when a plugin manager of the ``radseg`` project runs it with at least one
implementation that is not a wrapper: calling a plugin's function directly does not count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pluggy
import pytest

from radseg import hookspecs

_tests: dict[str, dict[str, Any]] = {}
_running: list[str] = []


def _before(hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
    if _running and any(not (i.wrapper or i.hookwrapper) for i in hook_impls):
        _tests[_running[-1]]["hooks"].add(hook_name)


def _after(outcome: Any, hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
    pass


def pytest_configure(config: pytest.Config) -> None:
    original = pluggy.PluginManager.__init__

    def monitored_init(self: pluggy.PluginManager, project_name: str) -> None:
        original(self, project_name)
        if project_name == hookspecs.PROJECT:
            self.add_hookcall_monitoring(_before, _after)

    pluggy.PluginManager.__init__ = monitored_init  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    _tests[item.nodeid] = {"outcome": "not run", "hooks": set()}
    _running.append(item.nodeid)
    try:
        return (yield)
    finally:
        _running.pop()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _tests.setdefault(report.nodeid, {"outcome": "not run", "hooks": set()})
    if report.failed:
        entry["outcome"] = "failed"
    elif report.skipped and entry["outcome"] != "failed":
        entry["outcome"] = "skipped"
    elif report.when == "call" and entry["outcome"] == "not run":
        entry["outcome"] = "passed"


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("RADSEG_HOOK_CALLS")
    if target:
        found = {
            nodeid: {"outcome": entry["outcome"], "hooks": sorted(entry["hooks"])}
            for nodeid, entry in _tests.items()
        }
        Path(target).write_text(json.dumps(found, indent=1), encoding="utf-8")
