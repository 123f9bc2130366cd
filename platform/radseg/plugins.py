"""The plugin host: pluggy, entry points, and the registries filled from hook results.

Loading follows tox 4's manager: add the hookspecs → block disabled names (settings and the
admin's choices stored in the database) → load the ``radseg`` entry points (off in unit tests) →
``check_pending()`` → fill the registries. A plugin that fails to import is listed as
unavailable with the reason; it never stops the platform.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import pluggy
from pydantic import BaseModel, ValidationError

from radseg import hookspecs
from radseg.contracts import BUILTIN_JOB_KINDS, DatasetSource, Exporter, JobKind, ModelBackend
from radseg.errors import PluginConfigError, PluginError
from radseg.registry import Registry

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def validate_settings(plugin: str, schema: type[M], raw: dict[str, Any]) -> M:
    """Validate ``[plugins.<plugin>]`` against ``schema`` (a pydantic model).

    :raises PluginConfigError: naming each invalid field and what is wrong with it.
    """
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise PluginConfigError(_invalid_settings(plugin, exc)) from None


def _invalid_settings(plugin: str, exc: ValidationError) -> str:
    """Each invalid field and what is wrong with it; never the value given, which may be a
    password (``str(exc)`` of a pydantic error quotes every input)."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(section)'}: {err['msg']}"
        for err in exc.errors()
    )
    return f"invalid settings in [plugins.{plugin}]: {problems}; fix them in the settings file"


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
    """One pluggy manager and the dataset/model/exporter/job-kind registries built from it.

    :param modules: import paths of plugin modules loaded after the entry points (the
        ``plugin_modules`` setting), each registered under its import path; one that fails to
        import is listed as unavailable, like an entry point.
    """

    def __init__(
        self,
        *,
        disabled: Iterable[str] = (),
        autoload: bool = True,
        extra: Iterable[tuple[str, types.ModuleType | object]] = (),
        modules: Iterable[str] = (),
    ) -> None:
        self.disabled = frozenset(disabled)
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        for name in self.disabled:
            self.pm.set_blocked(name)
        if autoload:
            self._load_entry_points()
        for module in modules:
            self._load_module(module)
        for name, plugin in extra:
            self._register(name, plugin, version="", module=getattr(plugin, "__name__", name))
        self.pm.check_pending()
        #: what each plugin's ``radseg_configure`` returned (its validated settings), by plugin
        self.configs: dict[str, Any] = {}
        self._platform: Any = None
        self._fill_registries()

    def _fill_registries(self) -> None:
        self.datasets: Registry[type[DatasetSource]] = Registry("dataset source")
        self.models: Registry[type[ModelBackend]] = Registry("model backend")
        self.exporters: Registry[type[Exporter]] = Registry("exporter")
        self.job_kinds: Registry[type[JobKind]] = Registry("job kind")
        self._fill(self.pm.hook.radseg_register_datasets, self.datasets)
        self._fill(self.pm.hook.radseg_register_models, self.models)
        self._fill(self.pm.hook.radseg_register_exporters, self.exporters)
        self._fill(self.pm.hook.radseg_register_job_kinds, self.job_kinds)
        for name in self.job_kinds:
            if name in BUILTIN_JOB_KINDS:
                raise PluginError(
                    f"plugin {self.job_kinds.plugin_of(name)!r} registers job kind {name!r}, "
                    f"which is built into radseg ({', '.join(sorted(BUILTIN_JOB_KINDS))}); "
                    "give the plugin's kind another name"
                )

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

    def _load_module(self, module: str) -> None:
        if module in self.disabled:
            self.infos[module] = PluginInfo(module, "", module, "disabled")
            return
        try:
            plugin = importlib.import_module(module)
        except Exception as exc:  # listed like a broken entry point, never fatal
            log.warning("plugin %s is unavailable: %s", module, exc)
            reason = f"{type(exc).__name__}: {exc}"
            self.infos[module] = PluginInfo(module, "", module, "unavailable", reason)
            return
        self._register(module, plugin, version="", module=module)

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
        """Call every ``radseg_configure`` and keep what each returns (its settings).

        The host calls the implementations one by one (the host is rebuilt, not added to, when
        plugins change, so every plugin is configured this way): a plugin whose settings are
        invalid, or whose hook raises, becomes *unavailable* with the reason and its
        registrations are withdrawn; the other plugins and the platform carry on.
        """
        self._platform = platform
        self._configure(self.pm.hook.radseg_configure.get_hookimpls())

    def add(self, name: str, plugin: object) -> PluginInfo:
        """Register ``plugin`` after start-up: configured at once (historic), then registered."""
        self._register(name, plugin, version="", module=getattr(plugin, "__name__", name))
        if self.infos[name].status == "enabled":
            if self._platform is not None:
                impls = self.pm.hook.radseg_configure.get_hookimpls()
                self._configure([i for i in impls if i.plugin_name == name])
            self._fill_registries()
        return self.infos[name]

    def _configure(self, impls: list[Any]) -> None:
        platform = self._platform
        failed: dict[str, str] = {}
        for impl in impls:
            try:
                result = impl.function(platform=platform)
            except PluginConfigError as exc:
                failed[impl.plugin_name] = str(exc)
            except ValidationError as exc:  # validated by hand, not with validate_settings
                failed[impl.plugin_name] = _invalid_settings(impl.plugin_name, exc)
            except Exception as exc:
                log.exception("plugin %s failed in radseg_configure", impl.plugin_name)
                failed[impl.plugin_name] = f"{type(exc).__name__}: {exc}"
            else:
                if result is not None:
                    self.configs[impl.plugin_name] = result
        for name, reason in failed.items():
            log.warning("plugin %s is unavailable: %s", name, reason)
            self.pm.unregister(name=name)
            info = self.infos[name]
            info.status, info.reason = "unavailable", reason
        if failed:
            self._fill_registries()

    def _instantiate(self, registry: Registry[type[T]], name: str) -> T:
        cls = registry.get(name)
        config = self.configs.get(registry.plugin_of(name))
        return cls(config) if config is not None else cls()  # type: ignore[call-arg]

    def dataset_source(self, name: str) -> DatasetSource:
        """A ready instance of dataset source ``name``, built with its plugin's settings."""
        return self._instantiate(self.datasets, name)

    def model_backend(self, name: str) -> ModelBackend:
        """A ready instance of model backend ``name``, built with its plugin's settings."""
        return self._instantiate(self.models, name)

    def exporter(self, name: str) -> Exporter:
        """A ready instance of exporter ``name``, built with its plugin's settings."""
        return self._instantiate(self.exporters, name)

    def job_kind(self, name: str) -> JobKind:
        """A ready instance of job kind ``name``, built with its plugin's settings."""
        return self._instantiate(self.job_kinds, name)

    def notify_job_finished(self, job: Any, outcome: str) -> None:
        for impl in self.pm.hook.radseg_job_finished.get_hookimpls():
            try:
                impl.function(job=job, outcome=outcome)
            except Exception:
                log.exception("plugin %s failed in radseg_job_finished", impl.plugin_name)

    def list(self) -> list[PluginInfo]:
        return [self.infos[name] for name in sorted(self.infos)]
