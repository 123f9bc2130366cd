"""The import contracts of pyproject.toml hold (DESIGN §1 "Layers"), so `make test` enforces them
as `make lint` does.

- ``lint-imports`` passes on this checkout's code: the layers (web, cli, worker above the job
  handlers, above the use cases, above the platform, above the core services, above the ground
  floor), the web and the CLI kept away from the worker, plugins that see only the plugin API
  and stand alone, no import circles;
- the plugin contract forbids every radseg module but the plugin API, so a new module is
  forbidden to plugins until someone decides otherwise;
- the check sees a broken contract (it reads this checkout, not nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"
RADSEG = REPO / "platform" / "radseg"
#: what a plugin may import of radseg: the contracts, the errors, the imaging helpers and the
#: ``hookimpl`` marker of radseg.hookspecs
PLUGIN_API = {"radseg.contracts", "radseg.errors", "radseg.imaging", "radseg.hookspecs"}


def _lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    """Run the venv's ``lint-imports`` on this checkout's ``platform/`` and ``plugins/``."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    assert lint_imports.exists(), (
        f"{lint_imports} is missing; install the dev extra (make install, or "
        "pip install -e '.[dev]')"
    )
    # the source roots first, so that an editable install of another checkout does not win
    path = os.pathsep.join(
        p
        for p in (str(REPO / "platform"), str(REPO / "plugins"), os.environ.get("PYTHONPATH"))
        if p
    )
    return subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo", str(config)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _contracts() -> dict[str, dict[str, Any]]:
    with PYPROJECT.open("rb") as fh:
        contracts = tomllib.load(fh)["tool"]["importlinter"]["contracts"]
    return {contract["id"]: contract for contract in contracts}


def _radseg_modules() -> set[str]:
    """The modules and packages directly inside ``radseg``."""
    found = set()
    for child in RADSEG.iterdir():
        if child.is_file() and child.suffix == ".py" and child.name != "__init__.py":
            found.add(f"radseg.{child.stem}")
        elif child.is_dir() and (child / "__init__.py").is_file():
            found.add(f"radseg.{child.name}")
    return found


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(PYPROJECT)
    assert result.returncode == 0, (
        "an import breaks a contract in pyproject.toml [tool.importlinter] (DESIGN §1 "
        "'Layers'); move the code to the layer it belongs to, or name a Protocol in "
        f"radseg.contracts instead of importing upwards:\n{result.stdout[-6000:]}"
        f"{result.stderr[-2000:]}"
    )


def test_plugins_are_forbidden_every_radseg_module_but_the_plugin_api() -> None:
    forbidden = set(_contracts()["plugins-see-the-plugin-api"]["forbidden_modules"])
    modules = _radseg_modules()
    assert modules >= PLUGIN_API
    assert forbidden == modules - PLUGIN_API, (
        "the forbidden_modules of the contract 'plugins-see-the-plugin-api' in pyproject.toml "
        f"must list every radseg module but {sorted(PLUGIN_API)}: add "
        f"{sorted(modules - PLUGIN_API - forbidden)}, remove {sorted(forbidden - modules)}"
    )


def test_the_check_sees_a_broken_contract(tmp_path: Path) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["radseg", "radseg_plugins"]\n\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "the web does without the database models (it does not)"\n'
        'type = "forbidden"\n'
        'source_modules = ["radseg.web"]\n'
        'forbidden_modules = ["radseg.db.models"]\n',
        encoding="utf-8",
    )
    result = _lint_imports(config)
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert "radseg.web" in result.stdout and "radseg.db.models" in result.stdout
