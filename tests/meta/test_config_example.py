"""The files in config/ stay true to the code they configure.

- ``config/radseg.example.toml`` loads through radseg's own settings loader, names every field of
  :class:`radseg.settings.Settings` (so a new setting fails here until it is documented), each
  with a comment above it and at its default: a default that TOML can write is written, the
  others (unset values, empty tables) are shown commented out;
- ``config/gunicorn.conf.py`` holds only gunicorn settings, with the values docs/operations.md
  recommends, and the docs start gunicorn with it.
"""

from __future__ import annotations

import os
import re
import runpy
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config

from radseg.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "radseg.example.toml"
GUNICORN_CONF = REPO / "config" / "gunicorn.conf.py"
OPERATIONS = REPO / "docs" / "operations.md"
GUNICORN_COMMAND = "gunicorn -c config/gunicorn.conf.py 'radseg.web:create_app()'"

#: ``name = ...`` or ``# name = ...`` at the start of a line
KEY_LINE = re.compile(r"^(#\s*)?(?P<name>[a-z_]+)\s*=")
#: ``[name.x]`` or ``# [name.x]`` at the start of a line
TABLE_LINE = re.compile(r"^(#\s*)?\[(?P<name>[a-z_]+)\.")


def _example_lines() -> list[str]:
    return EXAMPLE.read_text(encoding="utf-8").splitlines()


def _named_settings() -> dict[str, int]:
    """Each setting the example names, written or commented out, with the index of its line.

    Keys after the first table line (``[plugins.x]``, ``# [pacs.x]``) belong to that table, so
    only the table's own name counts from there on.
    """
    named: dict[str, int] = {}
    in_tables = False
    for index, line in enumerate(_example_lines()):
        table = TABLE_LINE.match(line)
        if table:
            in_tables = True
            named.setdefault(table["name"], index)
            continue
        key = KEY_LINE.match(line)
        if key and not in_tables:
            named.setdefault(key["name"], index)
    return named


def _default(name: str) -> Any:
    field = Settings.model_fields[name]
    return field.default_factory() if field.default_factory else field.default


def test_the_example_loads_through_the_settings_loader_as_the_defaults() -> None:
    settings = load_settings(environ={"RADSEG_CONFIG": str(EXAMPLE)})
    assert settings == Settings()


def test_the_example_names_every_setting() -> None:
    named = set(_named_settings())
    fields = set(Settings.model_fields)
    assert fields <= named, (
        f"config/radseg.example.toml does not name {sorted(fields - named)}: add each with its "
        "default and a comment saying what it means and when to change it"
    )
    assert named <= fields, f"config/radseg.example.toml names unknown settings {named - fields}"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_each_setting_in_the_example_is_at_its_default(name: str) -> None:
    written = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    default = _default(name)
    if name in written:
        value = getattr(Settings.model_validate({name: written[name]}), name)
        assert value == default, (
            f"{name} = {written[name]!r} in the example; the default is {default!r}"
        )
    else:
        # TOML has no null, and an empty table shows nothing: only those are commented out
        assert default in (None, {}), (
            f"{name} is not written in the example (commented out or missing); write "
            f"`{name} = ...` with its default {default!r}"
        )


def test_each_setting_in_the_example_has_a_comment_above_it() -> None:
    lines = _example_lines()
    for name, index in _named_settings().items():
        above = lines[index - 1] if index else ""
        assert above.startswith("#"), (
            f"{name} (line {index + 1} of config/radseg.example.toml) needs a comment above it"
        )


# -- gunicorn ---------------------------------------------------------------------------------


def _gunicorn_settings() -> dict[str, Any]:
    namespace = runpy.run_path(str(GUNICORN_CONF))
    return {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_the_gunicorn_config_holds_only_gunicorn_settings() -> None:
    config = Config()
    for name, value in _gunicorn_settings().items():
        config.set(name, value)  # an unknown name or an invalid value raises


def test_the_gunicorn_config_has_the_documented_values() -> None:
    config = Config()
    for name, value in _gunicorn_settings().items():
        config.set(name, value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert config.bind == ["127.0.0.1:8000"]  # behind a reverse proxy on this machine
    assert config.workers == cores  # one per core, as `nproc` counts them
    assert config.threads == 1
    assert config.worker_class_str == "sync"
    assert config.timeout == 300  # a large upload is unpacked inside its request
    assert config.forwarded_allow_ips == ["127.0.0.1", "::1"]


def test_the_docs_start_gunicorn_with_the_config() -> None:
    assert GUNICORN_COMMAND in OPERATIONS.read_text(encoding="utf-8")
