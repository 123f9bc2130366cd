"""The composition root: :func:`create_platform` builds everything a radseg process needs.

It is called in every process — the Flask app, the worker, each job's child process and the
CLI — so nothing here relies on import-time state (STYLE §3).
"""

from __future__ import annotations

import logging
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from radseg.db.models import PluginState
from radseg.db.session import make_engine, make_sessionmaker
from radseg.plugins import PluginHost
from radseg.settings import Settings, load_settings
from radseg.storage import inside_stored, remove

log = logging.getLogger(__name__)

#: folders under RADSEG_HOME (DESIGN §9)
HOME_FOLDERS = (
    "studies",
    "volumes",
    "labels",
    "datasets",
    "models",
    "predictions",
    "exports",
    "logs",
    "uploads",
)


@dataclass
class Platform:
    """Settings, plugin host, database and storage of one radseg process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    plugins: PluginHost
    autoload: bool = True
    extra_plugins: tuple[tuple[str, Any], ...] = ()
    _plugin_key: frozenset[str] = field(default_factory=frozenset)

    @property
    def home(self) -> Path:
        return self.settings.home

    def path(self, *parts: str) -> Path:
        """``RADSEG_HOME/part/...``; every part is checked to be one plain name and the result to
        stay inside RADSEG_HOME (:func:`radseg.storage.inside`): UIDs, dataset names and upload
        names come from outside."""
        return self.settings.path(*parts)

    def relative(self, path: Path) -> str:
        """``path`` relative to RADSEG_HOME, as stored in the database."""
        return str(Path(path).resolve().relative_to(self.home.resolve()))

    def resolve(self, stored: str) -> Path:
        """The path of a relative path stored in the database, checked like :meth:`path`."""
        return inside_stored(self.home, stored)

    def remove(self, path: Path, *, within: str, empty_only: bool = False) -> bool:
        """Delete ``path`` (file or tree), which must lie inside ``RADSEG_HOME/<within>``
        (:func:`radseg.storage.remove`)."""
        return remove(path, within=self.path(within), empty_only=empty_only)

    def disabled_plugins(self) -> frozenset[str]:
        """Disabled names: the settings' list plus the admin's choices in the database."""
        return frozenset(self.settings.disabled_plugins) | _disabled_in_db(self.engine)

    def refresh_plugins(self) -> bool:
        """Reload the plugin host if an admin enabled or disabled a plugin since the last load.

        Cheap (one small query); the web app calls it per request and the worker per job, which
        is how a change takes effect in every process without a restart.
        """
        key = self.disabled_plugins()
        if key == self._plugin_key:
            return False
        self.plugins = _make_host(
            key, self.autoload, self.extra_plugins, self.settings.plugin_modules
        )
        self._plugin_key = key
        self.plugins.configure(self)
        return True

    def ensure_home(self) -> None:
        for name in HOME_FOLDERS:
            self.path(name).mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        self.engine.dispose()


def _disabled_in_db(engine: Engine) -> frozenset[str]:
    # One small query, run per web request and per job: no schema inspection on this path.
    try:
        with Session(engine) as session:
            rows = session.scalars(select(PluginState.name).where(PluginState.enabled.is_(False)))
            return frozenset(rows)
    except SQLAlchemyError as exc:
        if not inspect(engine).has_table(PluginState.__tablename__):
            return frozenset()  # before `radseg db upgrade`: nothing is disabled yet
        log.warning("could not read plugin states from the database: %s", exc)
        return frozenset()


def _make_host(
    disabled: Iterable[str],
    autoload: bool,
    extra: Iterable[tuple[str, Any]],
    modules: Iterable[str] = (),
) -> PluginHost:
    return PluginHost(disabled=disabled, autoload=autoload, extra=extra, modules=modules)


def create_platform(
    settings: Settings | None = None,
    *,
    autoload: bool = True,
    plugins: Iterable[tuple[str, types.ModuleType | object]] = (),
) -> Platform:
    """Build a :class:`Platform`.

    :param settings: defaults < settings file < ``RADSEG_*`` when ``None``.
    :param autoload: load plugins from the ``radseg`` entry points; unit tests turn it off and
        pass ``plugins`` instead.
    :param plugins: extra ``(name, module_or_object)`` plugins registered after the entry points
        and the ``plugin_modules`` setting's modules (which load with or without ``autoload``).

    Never migrates the database: ``radseg init`` / ``radseg db upgrade`` do that.
    """
    settings = settings or load_settings()
    engine = make_engine(settings.database_url_resolved)
    extra = tuple(plugins)
    disabled = frozenset(settings.disabled_plugins) | _disabled_in_db(engine)
    platform = Platform(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        plugins=_make_host(disabled, autoload, extra, settings.plugin_modules),
        autoload=autoload,
        extra_plugins=extra,
        _plugin_key=disabled,
    )
    platform.plugins.configure(platform)
    return platform
