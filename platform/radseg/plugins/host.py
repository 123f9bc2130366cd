"""The plugin host: pluggy, entry points, and the registries filled from hook results.

Loading follows tox 4's manager: add the hookspecs → block disabled names (settings and the
admin's choices stored in the database) → load the ``radseg`` entry points (off in unit tests) →
``check_pending()`` → fill the registries. A plugin that fails to import is listed as
unavailable with the reason; it never stops the platform.

Every hook is called through the plugin manager (``pm.hook.radseg_x(...)``,
``call_historic`` for ``radseg_configure``), so pluggy's semantics hold for every plugin:
``tryfirst``/``trylast`` order, hookwrappers (old and new style) around the call, ``historic``
replay for a plugin registered late, ``firstresult``. The host still knows which plugin returned
or raised what: right after a plugin is registered, each of its (non-wrapper) implementations is
wrapped in a guard that records, during a call the host makes, what it returned or raised. A
raising implementation is recorded against its plugin and yields no result, so the other
plugins still run; the host then makes that plugin *unavailable* (registration and configure
hooks) or logs the failure (notifications).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import threading
import traceback
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import pluggy
from pydantic import ValidationError

from radseg import hookspecs
from radseg.contracts import (
    BUILTIN_JOB_KINDS,
    DatasetSource,
    Exporter,
    JobKind,
    ModelBackend,
    PlatformView,
    invalid_settings_message,
)
from radseg.errors import PluginConfigError, PluginError
from radseg.plugins.registry import Registry

log = logging.getLogger(__name__)

T = TypeVar("T")


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


@dataclass
class HookCall:
    """What each plugin's implementation returned or raised during one call the host made.

    Filled by the guards around the implementations, in pluggy's call order (``tryfirst`` first).
    ``returned`` holds every value, ``None`` included; ``raised`` the exception of each
    implementation that raised (it returned nothing to pluggy, so the other plugins still ran).
    """

    returned: list[tuple[str, Any]] = field(default_factory=list)
    raised: list[tuple[str, Exception]] = field(default_factory=list)


def _reason(exc: Exception, plugin: str = "") -> str:
    """How a failure reads in ``radseg plugins list``: a settings error as the plugin wrote it,
    settings validated by hand field by field without their values."""
    if isinstance(exc, PluginConfigError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return invalid_settings_message(plugin, exc)
    return f"{type(exc).__name__}: {exc}"


def _traceback(exc: Exception) -> Exception | None:
    """``exc`` for ``exc_info``, unless it is a settings error: a pydantic error's text quotes
    each input (a password), and a PluginConfigError's reason is logged instead."""
    return None if isinstance(exc, PluginConfigError | ValidationError) else exc


def _log_failures(hook: str, raised: list[tuple[str, Exception]]) -> None:
    """Log each plugin that raised in ``hook`` with its reason (and traceback, see
    :func:`_traceback`); the host carries on without it."""
    for plugin, exc in raised:
        log.error(
            "plugin %s failed in %s: %s",
            plugin,
            hook,
            _reason(exc, plugin),
            exc_info=_traceback(exc),
        )


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
        #: what each plugin's ``radseg_configure`` returned (its validated settings), by plugin
        self.configs: dict[str, Any] = {}
        self._platform: PlatformView | None = None
        # the HookCall being recorded by this thread (the worker notifies from several threads)
        self._local = threading.local()
        # the plugin ``pm.register`` is registering: pluggy replays ``radseg_configure`` for it
        self._registering: str | None = None
        for name in self.disabled:
            self.pm.set_blocked(name)
        if autoload:
            self._load_entry_points()
        for module in modules:
            self._load_module(module)
        for name, plugin in extra:
            self._register(name, plugin, version="", module=getattr(plugin, "__name__", name))
        self.pm.check_pending()
        self._fill_registries()

    # -- calling hooks ---------------------------------------------------------------------------

    @contextmanager
    def _recording(self) -> Iterator[HookCall]:
        previous = getattr(self._local, "call", None)
        self._local.call = call = HookCall()
        try:
            yield call
        finally:
            self._local.call = previous

    def _guard(self, plugin: object) -> None:
        """Wrap each implementation of ``plugin`` so that the host's calls can attribute it."""
        for caller in self._hookcallers(plugin):
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                    guarded = self._guarded(impl.function, impl.plugin_name)
                    # HookImpl.function is a plain attribute (typed Final). Replacing it on this
                    # manager's HookImpl leaves the plugin's module untouched, and pluggy keeps
                    # the argument names it read from the original function.
                    impl.function = guarded

    def _guarded(self, function: Any, plugin: str) -> Any:
        local = self._local

        @functools.wraps(function)
        def guarded(*args: Any) -> Any:
            call: HookCall | None = getattr(local, "call", None)
            if call is None:  # a call made around the host (pm.hook.x() in a test): plain pluggy
                return function(*args)
            try:
                result = function(*args)
            except Exception as exc:
                call.raised.append((plugin, exc))
                return None
            call.returned.append((plugin, result))
            return result

        return guarded

    def _wrappers(self, hook: str) -> list[str]:
        """The plugins with a hookwrapper (old or new style) around ``hook``."""
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        return [i.plugin_name for i in impls if i.wrapper or i.hookwrapper]

    def _raising_wrappers(self, hook: str, exc: Exception) -> list[str]:
        """The plugin whose hookwrapper raised ``exc`` (the implementations are guarded): the
        innermost wrapper frame in its traceback; every wrapper's plugin where none is there
        (pluggy itself raised, e.g. a wrapper that never yields)."""
        codes = {
            getattr(i.function, "__code__", None): i.plugin_name
            for i in getattr(self.pm.hook, hook).get_hookimpls()
            if i.wrapper or i.hookwrapper
        }
        found = [
            codes[frame.f_code]
            for frame, _ in traceback.walk_tb(exc.__traceback__)
            if frame.f_code in codes
        ]
        return found[-1:] or self._wrappers(hook)

    # -- registration ----------------------------------------------------------------------------

    def _fill_registries(self) -> None:
        while True:
            datasets: Registry[type[DatasetSource]] = Registry("dataset source")
            models: Registry[type[ModelBackend]] = Registry("model backend")
            exporters: Registry[type[Exporter]] = Registry("exporter")
            job_kinds: Registry[type[JobKind]] = Registry("job kind")
            failed = {
                **self._fill("radseg_register_datasets", datasets),
                **self._fill("radseg_register_models", models),
                **self._fill("radseg_register_exporters", exporters),
                **self._fill("radseg_register_job_kinds", job_kinds),
            }
            if not failed:
                break
            self._withdraw(failed)  # and fill again without them
        for name in job_kinds:
            if name in BUILTIN_JOB_KINDS:
                raise PluginError(
                    f"plugin {job_kinds.plugin_of(name)!r} registers job kind {name!r}, "
                    f"which is built into radseg ({', '.join(sorted(BUILTIN_JOB_KINDS))}); "
                    "give the plugin's kind another name"
                )
        self.datasets, self.models, self.exporters = datasets, models, exporters
        self.job_kinds = job_kinds

    def _fill(self, hook: str, registry: Registry[Any]) -> dict[str, str]:
        """Call ``hook`` on every plugin and add each class under the plugin that returned it.

        A hookwrapper may filter, replace or add to what the implementations returned: a class
        keeps the plugin whose implementation returned it, and one that none returned is the
        wrapper's (attributed to the wrapping plugin). Returns the plugins whose implementation
        failed, with the reason: a hookwrapper that raised, or a result that is not a list of
        classes that no implementation returned, fails its wrapper's plugin (each wrapper's
        plugin where it cannot be told which).
        """
        with self._recording() as call:
            try:
                results = getattr(self.pm.hook, hook)()
            except Exception as exc:  # the implementations are guarded: a hookwrapper raised
                reason = f"{hook} failed: {_reason(exc)}"
                return dict.fromkeys(self._raising_wrappers(hook, exc), reason)
        failed = {plugin: f"{hook} failed: {_reason(exc, plugin)}" for plugin, exc in call.raised}
        by_result = {id(result): plugin for plugin, result in call.returned}
        by_class: dict[int, list[str]] = {}
        for plugin, result in call.returned:
            if isinstance(result, list | tuple | set | frozenset):  # not a one-shot iterator
                for cls in result:
                    by_class.setdefault(id(cls), []).append(plugin)
        wrappers = " or ".join(self._wrappers(hook)) or "?"
        for result in results:
            owner = by_result.get(id(result))
            try:
                classes = list(result)
            except TypeError:
                # not an implementation's result: one of the wrappers added it, which one is
                # not known, so each of them is withdrawn under its own name
                reason = (
                    f"{hook} returned {type(result).__name__}, not a list of classes; "
                    "return a list (or another iterable) of classes"
                )
                failed.update(dict.fromkeys([owner] if owner else self._wrappers(hook), reason))
                continue
            for cls in classes:
                plugin = owner or (by_class.get(id(cls)) or [wrappers]).pop(0)
                registry.add(getattr(cls, "name", ""), cls, plugin)
        return failed

    def _withdraw(self, failed: dict[str, str]) -> None:
        """Make each plugin in ``failed`` unavailable with its reason and unregister it.

        :raises PluginError: when none of them was registered: filling the registries again
            would meet the same failures for ever.
        """
        removed = 0
        for name, reason in failed.items():
            log.warning("plugin %s is unavailable: %s", name, reason)
            if self.pm.get_plugin(name) is not None:
                self.pm.unregister(name=name)
                removed += 1
            self.configs.pop(name, None)
            info = self.infos.get(name)
            if info is not None:
                info.status, info.reason = "unavailable", reason
        if failed and not removed:
            problems = "; ".join(f"{name}: {reason}" for name, reason in failed.items())
            raise PluginError(f"plugin failures that no registered plugin owns: {problems}")

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
        self._registering = name
        try:
            # After configure(), pluggy replays the historic radseg_configure for this plugin
            # inside register(): what it returns comes to _configured_late, what it raises here.
            self.pm.register(plugin, name=name)
        except Exception as exc:  # bad hookimpl, name clash, its late configure: list it
            if self._platform is not None:
                log.warning("plugin %s failed to register", name, exc_info=_traceback(exc))
            if self.pm.get_plugin(name) is plugin:  # registered before the replay raised
                self.pm.unregister(name=name)
            self.configs.pop(name, None)
            reason = _reason(exc, name)
            log.warning("plugin %s is unavailable: %s", name, reason)
            self.infos[name] = PluginInfo(name, version, module, "unavailable", reason)
            return
        finally:
            self._registering = None
        self._guard(plugin)
        hooks = sorted(caller.name for caller in self._hookcallers(plugin))
        self.infos[name] = PluginInfo(name, version, module, "enabled", hooks=hooks)

    def _hookcallers(self, plugin: object) -> list[Any]:
        return list(self.pm.get_hookcallers(plugin) or [])

    # -- configure (historic) --------------------------------------------------------------------

    def configure(self, platform: PlatformView) -> None:
        """Call ``radseg_configure`` (historic) and keep what each plugin returns (its settings).

        One ``call_historic`` through the plugin manager: pluggy remembers it and calls the hook
        of every plugin registered later (:meth:`add`) as it is registered. A plugin whose
        settings are invalid, or whose hook raises, becomes *unavailable* with the reason and its
        registrations are withdrawn; the other plugins and the platform carry on. Called once
        per host (the host is rebuilt, not reconfigured, when plugins change).
        """
        if self._platform is not None:
            raise PluginError("this plugin host is already configured; build a new one")
        self._platform = platform
        with self._recording() as call:
            self.pm.hook.radseg_configure.call_historic(
                result_callback=self._configured_late, kwargs={"platform": platform}
            )
        for plugin, result in call.returned:
            if result is not None:
                self.configs[plugin] = result
        _log_failures("radseg_configure", call.raised)
        if call.raised:
            self._withdraw({plugin: _reason(exc, plugin) for plugin, exc in call.raised})
            self._fill_registries()

    def _configured_late(self, result: Any) -> None:
        # pluggy's result callback: at the first call it gets every plugin's result (recorded by
        # the guards already); at a replay inside register() it gets the new plugin's.
        if self._registering is not None:
            self.configs[self._registering] = result

    def add(self, name: str, plugin: object) -> PluginInfo:
        """Register ``plugin`` after start-up: pluggy configures it at once (historic)."""
        self._register(name, plugin, version="", module=getattr(plugin, "__name__", name))
        if self.infos[name].status == "enabled":
            self._fill_registries()
        return self.infos[name]

    # -- using what plugins registered -----------------------------------------------------------

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
        """Call ``radseg_job_finished``; a failing plugin or hookwrapper is logged, never raised."""
        with self._recording() as call:
            try:
                self.pm.hook.radseg_job_finished(job=job, outcome=outcome)
            except Exception as exc:  # the implementations are guarded: a hookwrapper raised
                wrappers = ", ".join(self._raising_wrappers("radseg_job_finished", exc))
                log.error(
                    "a hookwrapper of radseg_job_finished failed (plugins: %s): %s",
                    wrappers,
                    _reason(exc),
                    exc_info=_traceback(exc),
                )
        _log_failures("radseg_job_finished", call.raised)

    def notify_quality_alert(self, alert: dict[str, Any]) -> None:
        """Call ``radseg_quality_alert``; a failing plugin or hookwrapper is logged, not raised."""
        with self._recording() as call:
            try:
                self.pm.hook.radseg_quality_alert(alert=alert)
            except Exception as exc:  # the implementations are guarded: a hookwrapper raised
                wrappers = ", ".join(self._raising_wrappers("radseg_quality_alert", exc))
                log.error(
                    "a hookwrapper of radseg_quality_alert failed (plugins: %s): %s",
                    wrappers,
                    _reason(exc),
                    exc_info=_traceback(exc),
                )
        _log_failures("radseg_quality_alert", call.raised)

    def list(self) -> list[PluginInfo]:
        return [self.infos[name] for name in sorted(self.infos)]
