"""Meta-tests that keep the plugin API and the packaging honest (STYLE §5).

- ``import platform`` is the standard library: ``platform/`` is a source root, not a package;
- every built-in plugin module is a ``radseg`` entry point, in pyproject.toml and in the installed
  metadata, and every entry point names a module that exists;
- every hook in :mod:`radseg.hookspecs` is in the plugin author guide with its signature and is
  called by a test: one that names it in its code and, run in a child pytest, has pluggy run it;
- the Alembic migrations build exactly the schema the models describe.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pluggy
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, text
from sqlalchemy import inspect as sa_inspect

from radseg import hookspecs
from radseg.db import models  # noqa: F401  (registers every table on Base.metadata)
from radseg.db.base import Base
from radseg.db.migrate import upgrade
from radseg.db.session import make_engine
from radseg.settings import Settings, load_settings
from tests.conftest import POSTGRES_URL

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
PLUGIN_KINDS = ("datasets", "models", "exporters")
GUIDE = REPO / "docs" / "plugins.md"
GROUP = "radseg"


# -- import platform ----------------------------------------------------------------------------


def _is_stdlib(path: str) -> bool:
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    return Path(path).resolve().is_relative_to(stdlib)


def test_platform_source_root_is_not_a_package() -> None:
    assert (REPO / "platform" / "radseg" / "__init__.py").is_file()
    assert not (REPO / "platform" / "__init__.py").exists(), (
        "platform/ must stay a source root without __init__.py, or `import platform` would "
        "shadow the standard library"
    )


def test_import_platform_is_the_standard_library_in_process() -> None:
    import platform

    assert callable(platform.python_version)
    assert platform.__file__ is not None and _is_stdlib(platform.__file__), platform.__file__
    assert not Path(platform.__file__).resolve().is_relative_to(REPO / "platform")


def test_import_platform_is_the_standard_library_in_a_fresh_interpreter() -> None:
    # The repository root first on sys.path, as for `python -c` in a checkout and for pytest
    # (pythonpath = ["."]): a bare `platform/` directory there must not win.
    probe = (
        "import json, platform, radseg\n"
        "print(json.dumps({'platform': platform.__file__, 'version': platform.python_version(),"
        " 'radseg': radseg.__file__}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert _is_stdlib(found["platform"]), found
    assert found["version"] == ".".join(map(str, sys.version_info[:3]))
    assert Path(found["radseg"]).resolve() == REPO / "platform" / "radseg" / "__init__.py"


# -- entry points ------------------------------------------------------------------------------


def _plugin_modules() -> set[str]:
    """Every module or sub-package directly under radseg_plugins/{datasets,models,exporters}."""
    found = set()
    for kind in PLUGIN_KINDS:
        folder = PLUGINS / "radseg_plugins" / kind
        for child in folder.iterdir():
            if child.is_file() and child.suffix == ".py" and child.name != "__init__.py":
                found.add(f"radseg_plugins.{kind}.{child.stem}")
            elif child.is_dir() and (child / "__init__.py").is_file():
                found.add(f"radseg_plugins.{kind}.{child.name}")
    return found


def _module_of(value: str) -> str:
    return value.partition(":")[0].strip()


def _pyproject_entry_points() -> dict[str, str]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        project = tomllib.load(fh)["project"]
    return dict(project.get("entry-points", {}).get(GROUP, {}))


def _installed_entry_points() -> dict[str, str]:
    """The ``radseg`` group as installed for the ``radseg`` distribution (not third parties)."""
    return {
        ep.name: ep.value
        for ep in importlib.metadata.entry_points(group=GROUP)
        if ep.dist is not None and ep.dist.name.lower() == "radseg"
    }


def test_there_are_plugin_modules_to_check() -> None:
    assert "radseg_plugins.datasets.dicom_folder" in _plugin_modules()


def test_every_plugin_module_is_an_entry_point_in_pyproject() -> None:
    declared = {_module_of(v) for v in _pyproject_entry_points().values()}
    missing = sorted(_plugin_modules() - declared)
    assert not missing, (
        f'plugin modules without an entry point: {missing}; add `name = "module"` under '
        "[project.entry-points.radseg] in pyproject.toml"
    )


def test_every_plugin_module_is_an_entry_point_in_the_installed_metadata() -> None:
    installed = _installed_entry_points()
    missing = sorted(_plugin_modules() - {_module_of(v) for v in installed.values()})
    assert not missing, (
        f"plugin modules missing from the installed metadata: {missing}; "
        "reinstall radseg (make install, or pip install -e .)"
    )
    assert installed == _pyproject_entry_points(), (
        "the installed `radseg` entry points differ from pyproject.toml; reinstall radseg"
    )


@pytest.mark.parametrize("source", ["pyproject", "installed"])
def test_every_entry_point_names_an_existing_module(source: str) -> None:
    entry_points = _pyproject_entry_points() if source == "pyproject" else _installed_entry_points()
    assert entry_points
    for name, value in entry_points.items():
        module = _module_of(value)
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, f"entry point {name!r}: no module {module!r}"
        origin = Path(spec.origin).resolve()
        assert origin.is_relative_to(PLUGINS / "radseg_plugins"), (
            f"entry point {name!r}: {module!r} resolves to {origin}, outside this checkout"
        )


# -- hooks: documented with their signature, and tested ----------------------------------------


def _hooks() -> dict[str, Any]:
    return {
        name: func
        for name, func in vars(hookspecs).items()
        if name.startswith("radseg_") and inspect.isfunction(func)
    }


def _annotation(annotation: Any) -> str:
    # hookspecs uses `from __future__ import annotations`: annotations are the source text.
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _documented_signature(func: Any) -> str:
    """``radseg_configure(platform: Platform) -> None``, as written in hookspecs.py."""
    signature = inspect.signature(func)
    params = ", ".join(
        f"{p.name}: {_annotation(p.annotation)}"
        if p.annotation is not inspect.Parameter.empty
        else p.name
        for p in signature.parameters.values()
    )
    result = f"{func.__name__}({params})"
    if signature.return_annotation is not inspect.Signature.empty:
        result += f" -> {_annotation(signature.return_annotation)}"
    return result


def _headings(text: str) -> list[tuple[int, int, str]]:
    """``(line number, level, line)`` of each Markdown heading, skipping fenced code."""
    found, fenced = [], False
    for number, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"(#{1,6}) ", line)):
            found.append((number, len(match.group(1)), line))
    return found


def _guide_section(text: str, signature: str) -> str:
    """The guide's text from the heading that holds ``signature`` to the next heading."""
    lines = text.splitlines()
    headings = _headings(text)
    for k, (start, level, line) in enumerate(headings):
        if signature in line:
            end = next((n for n, lvl, _ in headings[k + 1 :] if lvl <= level), len(lines))
            return "\n".join(lines[start:end])
    return ""


def test_there_are_hooks_to_check() -> None:
    assert {"radseg_register_exporters", "radseg_configure"} <= set(_hooks())


@pytest.mark.parametrize("hook", sorted(_hooks()))
def test_every_hook_is_in_the_guide_with_its_signature(hook: str) -> None:
    func = _hooks()[hook]
    signature = _documented_signature(func)
    text = GUIDE.read_text(encoding="utf-8")
    assert signature in text, f"docs/plugins.md does not show `{signature}`"

    section = _guide_section(text, signature)
    assert section, f"docs/plugins.md has no heading with `{signature}`"
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    opts = pm.parse_hookspec_opts(hookspecs, hook) or {}
    for flag in ("historic", "firstresult"):
        if opts.get(flag):
            assert flag in section, f"docs/plugins.md does not say that {hook} is {flag}"
    assert "@hookimpl" in section, f"docs/plugins.md has no example implementation of {hook}"


def _code_names(node: ast.AST) -> set[str]:
    """Identifiers, attributes, keywords, defined names and strings in ``node``'s code.

    Comments are not in the tree and docstrings are left out, so a hook named only there is not
    found.
    """
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(node)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    names: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            names.add(n.id)
        elif isinstance(n, ast.Attribute):
            names.add(n.attr)
        elif isinstance(n, ast.keyword) and n.arg:
            names.add(n.arg)
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(n.name)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            names.add(n.value)
    return names


def _tests_naming(hooks: set[str], files: list[Path]) -> dict[str, list[str]]:
    """``{hook: [node ids of the test functions whose code names it]}``."""
    found: dict[str, list[str]] = {hook: [] for hook in hooks}
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                for hook in _code_names(node) & hooks:
                    found[hook].append(f"{path.relative_to(REPO)}::{node.name}")
    return found


CONTROLS = Path(__file__).with_name("hook_call_controls.py")


@pytest.fixture(scope="module")
def hook_calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every test that names a hook, plus the controls, recording what pluggy ran in each."""
    files = [p for p in (REPO / "tests").rglob("test_*.py") if p.parent != Path(__file__).parent]
    naming = _tests_naming(set(_hooks()), files)
    controls = _tests_naming(set(_hooks()), [CONTROLS])
    node_ids = sorted({n for ids in (*naming.values(), *controls.values()) for n in ids})
    record = tmp_path_factory.mktemp("hook-calls") / "calls.json"
    plugins = ["-p", "tests.meta.hook_calls", "-p", "no:cacheprovider"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *plugins, *node_ids],
        cwd=REPO,
        env={**os.environ, "RADSEG_HOOK_CALLS": str(record)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert record.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    tests = json.loads(record.read_text(encoding="utf-8"))
    return {"naming": naming, "controls": controls, "tests": tests, "output": proc.stdout}


@pytest.mark.parametrize("hook", sorted(_hooks()))
def test_every_hook_is_called_by_a_test(hook: str, hook_calls: dict[str, Any]) -> None:
    """A test that names the hook in its code and, when run, has pluggy run the hook."""
    naming: list[str] = hook_calls["naming"][hook]
    assert naming, f"no test under tests/ names {hook} in its code; add one that calls it"
    ran = {n: t for n, t in hook_calls["tests"].items() if n.partition("[")[0] in naming}
    calling = [n for n, t in ran.items() if t["outcome"] == "passed" and hook in t["hooks"]]
    assert calling, (
        f"no passing test calls {hook} through the plugin manager (a platform, a PluginHost or "
        f"pm.hook.{hook}); tests that name it: {ran}"
    )


def test_the_hook_check_ignores_comments_and_direct_calls(hook_calls: dict[str, Any]) -> None:
    """A control: a hook named in a comment, or an implementation called as a plain function,
    is not a test that calls the hook."""
    controls = hook_calls["controls"]
    assert controls["radseg_job_finished"] == []  # only in a comment
    (direct,) = controls["radseg_register_datasets"]
    result = hook_calls["tests"][direct]
    assert result == {"outcome": "passed", "hooks": []}, hook_calls["output"][-2000:]


def test_the_guide_covers_every_contract() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for name in ("DatasetSource", "ModelBackend", "Exporter", "SeriesVolume", "Geometry"):
        assert name in text, f"docs/plugins.md does not describe {name}"
    assert "[project.entry-points.radseg]" in text


# -- migrations --------------------------------------------------------------------------------


def _differences(url: str, metadata: MetaData) -> list[Any]:
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_models(database_url: str) -> None:
    differences = _differences(database_url, Base.metadata)
    assert differences == [], (
        "the models and the Alembic migrations differ; write a revision "
        f"(alembic revision --autogenerate) for: {differences}"
    )


def test_the_migration_check_sees_a_difference(tmp_path: Path) -> None:
    """A control: a table the migrations lack is reported, so an empty diff means something."""
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    Table("not_migrated", metadata, Column("id", Integer, primary_key=True))
    differences = _differences(f"sqlite:///{tmp_path / 'control.db'}", metadata)
    assert [d[0] for d in differences] == ["add_table"]
    assert differences[0][1].name == "not_migrated"


def _plain(value: Any) -> Any:
    """Inspector output as comparable text (partial indexes carry SQL expression objects)."""
    if isinstance(value, dict):
        return sorted((k, _plain(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _schema(engine: Any) -> dict[str, Any]:
    """Every table's columns, keys, indexes and constraints, and the Alembic revision."""
    found = sa_inspect(engine)
    tables = {
        name: {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in found.get_columns(name)
            ],
            "primary_key": found.get_pk_constraint(name)["constrained_columns"],
            "foreign_keys": sorted(str(_plain(fk)) for fk in found.get_foreign_keys(name)),
            "indexes": sorted(str(_plain(i)) for i in found.get_indexes(name)),
            "unique": sorted(str(_plain(u)) for u in found.get_unique_constraints(name)),
            "checks": sorted(str(_plain(c)) for c in found.get_check_constraints(name)),
        }
        for name in sorted(found.get_table_names())
    }
    with engine.connect() as conn:
        revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    return {"tables": tables, "revision": revision}


@contextmanager
def _fresh_database(database_url: str, tmp_path: Path, name: str) -> Iterator[str]:
    """Another empty database of the same kind as ``database_url``: a file, or a schema."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / name}.db"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_the_tests_schema_is_the_one_alembic_makes(database_url: str, tmp_path: Path) -> None:
    """tests.support.migrated_platform gives a fresh test database a copy (SQLite) or a replay
    (PostgreSQL) of what Alembic did once in this process: it must be Alembic's schema exactly."""
    from tests.support import migrated_platform

    def settings(url: str, home: str) -> Settings:
        return load_settings({"home": tmp_path / home, "database_url": url}, environ={})

    reference = make_engine(database_url)
    upgrade(reference)  # Alembic itself
    with (
        _fresh_database(database_url, tmp_path, "first") as first,
        _fresh_database(database_url, tmp_path, "copied") as copied,
    ):
        migrated_platform(settings(first, "first"), autoload=False).close()  # may make the template
        migrated_platform(settings(copied, "copied"), autoload=False).close()  # from the template
        made = make_engine(copied)
        try:
            assert _schema(made) == _schema(reference)
        finally:
            made.dispose()
            reference.dispose()
