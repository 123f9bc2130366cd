"""The plugin host: pluggy, entry points, and the registries filled from hook results.

Loading follows tox 4's manager: add the hookspecs → block disabled names (settings and the
admin's choices stored in the database) → load the ``radseg`` entry points (off in unit tests) →
``check_pending()`` → fill the registries. A plugin that fails to import is listed as
unavailable with the reason; it never stops the platform.
"""

from __future__ import annotations

import importlib.metadata
import logging
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy

from radseg import hookspecs
from radseg.contracts import DatasetSource, Exporter, ModelBackend
from radseg.registry import Registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "radseg"

Status = Literal["enabled", "disabled", "unavailable"]


@dataclass
class PluginInfo:
    """What ``GET /-/plugins`` and ``radseg plugins list`` show for one plugin."""

    name: str
    version: str
    module: str
    status: Status
    reason: str = ""
    hooks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "module": self.module,
            "status": self.status,
            "reason": self.reason,
            "hooks": self.hooks,
        }


class PluginHost:
    """One pluggy manager and the dataset/model/exporter registries built from it."""

    def __init__(
        self,
        *,
        disabled: Iterable[str] = (),
        autoload: bool = True,
        extra: Iterable[tuple[str, types.ModuleType | object]] = (),
    ) -> None:
        self.disabled = frozenset(disabled)
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        for name in self.disabled:
            self.pm.set_blocked(name)
        if autoload:
            self._load_entry_points()
        for name, plugin in extra:
            self._register(name, plugin, version="", module=getattr(plugin, "__name__", name))
        self.pm.check_pending()
        self.datasets: Registry[type[DatasetSource]] = Registry("dataset source")
        self.models: Registry[type[ModelBackend]] = Registry("model backend")
        self.exporters: Registry[type[Exporter]] = Registry("exporter")
        self._fill(self.pm.hook.radseg_register_datasets, self.datasets)
        self._fill(self.pm.hook.radseg_register_models, self.models)
        self._fill(self.pm.hook.radseg_register_exporters, self.exporters)

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            version = ep.dist.version if ep.dist else ""
            if ep.name in self.disabled:
                self.infos[ep.name] = PluginInfo(ep.name, version, ep.value, "disabled")
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin is listed, never fatal
                log.warning("plugin %s is unavailable: %s", ep.name, exc)
                reason = f"{type(exc).__name__}: {exc}"
                self.infos[ep.name] = PluginInfo(ep.name, version, ep.value, "unavailable", reason)
                continue
            self._register(ep.name, plugin, version=version, module=ep.value)

    def _register(self, name: str, plugin: object, *, version: str, module: str) -> None:
        if name in self.disabled:
            self.infos[name] = PluginInfo(name, version, module, "disabled")
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # bad hookimpl, name clash: list it, keep the platform up
            log.warning("plugin %s is unavailable: %s", name, exc)
            reason = f"{type(exc).__name__}: {exc}"
            self.infos[name] = PluginInfo(name, version, module, "unavailable", reason)
            return
        hooks = sorted(impl.name for impl in self._hookcallers(plugin))
        self.infos[name] = PluginInfo(name, version, module, "enabled", hooks=hooks)

    def _hookcallers(self, plugin: object) -> list[Any]:
        return list(self.pm.get_hookcallers(plugin) or [])

    @staticmethod
    def _fill(caller: Any, registry: Registry[Any]) -> None:
        for impl in caller.get_hookimpls():
            for cls in impl.function() or ():
                registry.add(getattr(cls, "name", ""), cls, impl.plugin_name)

    def configure(self, platform: Any) -> None:
        self.pm.hook.radseg_configure.call_historic(kwargs={"platform": platform})

    def notify_job_finished(self, job: Any, outcome: str) -> None:
        for impl in self.pm.hook.radseg_job_finished.get_hookimpls():
            try:
                impl.function(job=job, outcome=outcome)
            except Exception:
                log.exception("plugin %s failed in radseg_job_finished", impl.plugin_name)

    def list(self) -> list[PluginInfo]:
        return [self.infos[name] for name in sorted(self.infos)]
