"""What an install brings: every module radseg imports is a declared dependency of the feature
that imports it, and a plain ``pip install .`` (no extras: the web image) runs everything but
the model plugin, which says what to install instead of failing on ``import torch``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "platform" / "radseg"
PLUGINS = REPO / "plugins" / "radseg_plugins"
MODEL_PLUGINS = PLUGINS / "models"
PROBE = Path(__file__).with_name("fresh_install_probe.py")
#: installed by the Makefile and docker/Dockerfile.worker from pinned wheels, not by an extra
PINNED_OUTSIDE_PYPROJECT = {"torch", "torchvision", "detectron2"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_canonical(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requirements}  # type: ignore[union-attr]


def _module_name(path: Path) -> str:
    """``platform/radseg/imaging/coco.py`` → ``radseg.imaging.coco`` (a package: its name)."""
    names = path.relative_to(REPO).with_suffix("").parts[1:]  # below the source root
    return ".".join(names[:-1] if names[-1] == "__init__" else names)


def _project() -> dict:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["project"]


def _imports(files: list[Path]) -> dict[str, set[str]]:
    """``{top-level module: {files importing it}}`` for the third-party absolute imports in
    ``files``, also those inside functions (a lazy import is still needed at run time)."""
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and not top.startswith("radseg"):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _undeclared(files: list[Path], declared: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for module, where in sorted(_imports(files).items()):
        owners = {_canonical(d) for d in distributions.get(module, [])}
        if module in PINNED_OUTSIDE_PYPROJECT or owners & declared:
            continue
        problems.append(
            f"{module} (distribution {sorted(owners) or 'unknown: not installed here'}), "
            f"imported by {sorted(where)}"
        )
    return problems


def test_the_core_and_its_plugins_import_only_declared_dependencies() -> None:
    files = [p for p in CORE.rglob("*.py")]
    files += [p for p in PLUGINS.rglob("*.py") if not p.is_relative_to(MODEL_PLUGINS)]
    problems = _undeclared(files, _requirement_names(_project()["dependencies"]))
    assert not problems, (
        "the core or a non-model plugin imports modules that `pip install radseg` does not "
        "bring; add them to [project].dependencies in pyproject.toml: " + "; ".join(problems)
    )


def test_the_model_plugins_import_only_the_core_and_the_models_extra() -> None:
    project = _project()
    declared = _requirement_names(project["dependencies"])
    declared |= _requirement_names(project["optional-dependencies"]["models"])
    problems = _undeclared(list(MODEL_PLUGINS.rglob("*.py")), declared)
    assert not problems, (
        "a model plugin imports modules that neither the core nor the `models` extra brings; "
        "add them to [project.optional-dependencies].models: " + "; ".join(problems)
    )


def test_the_import_check_sees_an_undeclared_module() -> None:
    """A control: a module imported inside a function and not declared is reported."""
    problems = _undeclared([CORE / "metrics.py"], {"numpy"})
    assert any(p.startswith("scipy ") for p in problems), problems


@pytest.mark.slow
def test_a_plain_pip_install_runs_every_feature_but_the_models(tmp_path: Path) -> None:
    """``python -m venv`` + ``pip install .`` (no extras, as docker/Dockerfile.web does), then
    import every module and plugin, and ingest a .seg.nrrd; pip resolves the declared runtime
    dependencies (constraints keep it from resolving any torch)."""
    source = tmp_path / "radseg"  # a copy: pip builds in the tree it is given
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("platform", "plugins", "migrations"):
        shutil.copytree(
            REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"

    def run(*args: str | Path, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    made = run(sys.executable, "-m", "venv", venv, timeout=120)
    assert made.returncode == 0, made.stderr
    constraints = REPO / "tools" / "constraints.txt"
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    installed = run(*pip, "-c", constraints, source, timeout=780)
    assert installed.returncode == 0, installed.stdout[-4000:] + installed.stderr[-4000:]
    listed = run(python, "-m", "pip", "list", "--format=json", timeout=120)
    distributions = {_canonical(d["name"]) for d in json.loads(listed.stdout)}
    assert not distributions & {"torch", "torchvision", "detectron2", "fvcore"}, distributions

    (tmp_path / "work").mkdir()
    probed = run(python, PROBE, tmp_path / "work", timeout=300)
    assert probed.returncode == 0, probed.stdout[-4000:] + probed.stderr[-4000:]
    found = json.loads(probed.stdout.strip().splitlines()[-1])

    assert Path(found["radseg"]).is_relative_to(venv), found["radseg"]  # not this checkout
    assert found["lazy_imports_failed"] == {}
    model_stack = {"torch", "torchvision", "detectron2", "fvcore", "iopath", "omegaconf"}
    outside = {
        module: failure
        for module, failure in found["failed"].items()
        if not (module.startswith("radseg_plugins.models.") and failure["missing"] in model_stack)
    }
    assert outside == {}, "modules that fail to import without an extra: " + json.dumps(outside)
    expected = {_module_name(path) for path in CORE.rglob("*.py")}
    expected |= {_module_name(path) for path in PLUGINS.rglob("*.py")}
    expected -= set(found["failed"])  # the model plugin's torch modules, checked above
    missing = sorted(expected - set(found["imported"]))
    assert not missing, f"modules the installed package lacks: {missing}; check [tool.setuptools]"
    assert found["plugins"] == {
        name: ["enabled", ""] for name in _project()["entry-points"]["radseg"]
    }
    assert "`models` extra" in found["train_error"] and "torch" in found["train_error"]
    assert found["heavy_modules"] == []
    assert found["ingest"]["added"] == 1 and found["ingest"]["labelled"] == 1
    assert found["ingest"]["classes"][:2] == ["ribs", "cervical vertebral column"]
