"""Every hook a radseg plugin can implement.

A plugin is a module (or package) named under the ``radseg`` entry-point group. It implements
hooks by decorating module-level functions with :data:`hookimpl`::

    from radseg.hookspecs import hookimpl

    @hookimpl
    def radseg_register_exporters():
        return [MyExporter]

Registration hooks return data — classes that satisfy the contracts in :mod:`radseg.contracts` —
and the host (:mod:`radseg.plugins`) registers them, refusing duplicate names with an error that
names both plugins. None of these hooks is ``firstresult``; all are called on every plugin,
through the plugin manager, so ``tryfirst``/``trylast`` and hookwrappers work as in pluggy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from radseg.contracts import DatasetSource, Exporter, JobKind, ModelBackend, PlatformView

PROJECT = "radseg"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def radseg_register_datasets() -> Iterable[type[DatasetSource]]:
    """Return the dataset source classes this plugin provides.

    Each class satisfies :class:`radseg.contracts.DatasetSource`; its ``name`` is the key users
    pass to ``radseg ingest --source NAME``. Called once per platform while the registries are
    filled; a name already taken by another plugin is a startup error.
    """


@hookspec
def radseg_register_models() -> Iterable[type[ModelBackend]]:
    """Return the model backend classes this plugin provides.

    Each class satisfies :class:`radseg.contracts.ModelBackend`; its ``name`` is the key users
    pass to ``radseg train --model NAME``. Only model plugins import torch or detectron2, and they
    should do so lazily (inside ``train``/``predict``) so that listing plugins stays fast.
    """


@hookspec
def radseg_register_exporters() -> Iterable[type[Exporter]]:
    """Return the exporter classes this plugin provides.

    Each class satisfies :class:`radseg.contracts.Exporter`; its ``name`` is the key users pass to
    ``radseg export --format NAME``.
    """


@hookspec
def radseg_register_job_kinds() -> Iterable[type[JobKind]]:
    """Return the job kind classes this plugin provides.

    Each class satisfies :class:`radseg.contracts.JobKind`; its ``name`` is the ``kind`` of the
    jobs it runs. A name built into radseg (``ingest``, ``train``, ...; see
    :data:`radseg.contracts.BUILTIN_JOB_KINDS`) or taken by another plugin is a startup error.
    Workers and job processes load plugins as every radseg process does (entry points and the
    ``plugin_modules`` setting), so a worker runs the kinds its plugins register.
    """


@hookspec(historic=True)
def radseg_configure(platform: PlatformView) -> Any:
    """Read and validate this plugin's settings for ``platform``; return them.

    :param platform: the running platform (a :class:`radseg.core.Platform`, typed as the
        :class:`radseg.contracts.PlatformView` it satisfies);
        ``platform.settings.plugin_settings(name)`` holds this plugin's section
        (``[plugins.<name>]``) of the settings file.
    :returns: the validated settings (any object, typically a pydantic model made with
        :func:`radseg.plugins.validate_settings`), or ``None``. The host passes a non-``None``
        value to the constructor of every class the plugin registered
        (``cls(settings)``; otherwise ``cls()``).

    ``historic``: every plugin is configured, also one registered later (pluggy replays the call
    as it is registered) or enabled at runtime by an admin (the host is rebuilt then). Raise
    :class:`radseg.errors.PluginConfigError` naming the field for invalid settings: that plugin
    becomes *unavailable* with the message, the others carry on.
    """


@hookspec
def radseg_job_finished(job: Any, outcome: str) -> None:
    """Be told that a job reached a final state.

    :param job: the :class:`radseg.db.models.Job` row (read it; do not modify it).
    :param outcome: ``"succeeded"``, ``"failed"`` or ``"cancelled"``.

    A notification for audit, webhooks or metrics; exceptions are logged and never fail the job.
    """


@hookspec
def radseg_quality_alert(alert: dict[str, Any]) -> None:
    """Be told that a model version's quality control chart flagged a week (a shift against the
    version's first weeks; see :mod:`radseg.quality` for the rule).

    :param alert: a JSON-able dict: ``id``, ``model`` (name), ``model_version_id``, ``chart``
        (``"reject_rate"`` or ``"correction_dice"``), ``week`` (ISO week, ``"2026-W49"``),
        ``value`` (the week's reject rate or mean correction Dice), ``center`` and ``limit``
        (the chart's centre line and the limit it crossed), ``n`` (decisions or corrections that
        week), ``message`` (one line for people) and ``created_at`` (ISO timestamp).

    Called once per alert, after it is recorded, by the process that recorded it (the one that
    saved the review decision or correction, or ``radseg models quality NAME --check``); an
    exception is logged and never fails the decision. Neither ``historic`` nor ``firstresult``.
    """
