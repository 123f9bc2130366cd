"""The import contracts of pyproject.toml hold (DESIGN §1 "Layers"), so `make test` enforces them
as `make lint` does.

- ``lint-imports`` passes on this checkout's code: the layers (web, cli, worker above the job
  handlers, above the use cases, above the platform, above the core services, above the ground
  floor), the web and the CLI kept away from the worker, plugins that see only the plugin API
  and stand alone, no import circles;
- the check sees a broken contract (it reads this checkout, not nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"


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


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(PYPROJECT)
    assert result.returncode == 0, (
        "an import breaks a contract in pyproject.toml [tool.importlinter] (DESIGN §1 "
        "'Layers'); move the code to the layer it belongs to, or name a Protocol in "
        f"radseg.contracts instead of importing upwards:\n{result.stdout[-6000:]}"
        f"{result.stderr[-2000:]}"
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
