"""Run by ``tests/meta/test_packaging.py`` with the python of a fresh venv into which only
``pip install .`` (no extras) put radseg: not a test module of its own.

Imports every module of the core and of the plugins, and every third-party module their code
imports (also inside functions: scipy, matplotlib, slicerio...), loads every entry point, checks
that the model plugin asks for its extra instead of failing on ``import torch``, and ingests a
3D Slicer ``.seg.nrrd``. Prints one JSON object; the test reads it.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import shutil
import sys
from pathlib import Path
from typing import Any

#: what a model plugin's own modules may miss without the ``models`` extra
MODEL_STACK = {"torch", "torchvision", "detectron2", "fvcore", "iopath", "omegaconf", "onnxruntime"}


def import_everything() -> dict[str, Any]:
    import radseg
    import radseg_plugins

    imported, failed = ["radseg", "radseg_plugins"], {}
    for package in (radseg, radseg_plugins):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            try:
                importlib.import_module(info.name)
            except ModuleNotFoundError as exc:
                failed[info.name] = {"missing": (exc.name or "").split(".")[0], "error": str(exc)}
            except Exception as exc:
                failed[info.name] = {"missing": None, "error": f"{type(exc).__name__}: {exc}"}
            else:
                imported.append(info.name)
    return {"radseg": radseg.__file__, "imported": imported, "failed": failed}


def third_party_imports(folder: Path) -> set[str]:
    """Top-level names of the absolute imports under ``folder``, also those inside functions."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and not n.startswith("radseg")}


def import_what_the_code_imports() -> dict[str, str]:
    """Import every module the core and the non-model plugins import, lazily or not."""
    import radseg
    import radseg_plugins

    wanted = third_party_imports(Path(radseg.__file__).parent)
    plugins = Path(radseg_plugins.__file__).parent
    for kind in ("datasets", "exporters"):
        wanted |= third_party_imports(plugins / kind)
    failed = {}
    for name in sorted(wanted):
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    return failed


def load_plugins_and_ingest(work: Path) -> dict[str, Any]:
    import slicerio
    from sqlalchemy import select

    from radseg.contracts import TrainRequest
    from radseg.core import create_platform
    from radseg.db.base import Base
    from radseg.db.models import LabelSet
    from radseg.errors import PluginError
    from radseg.settings import load_settings
    from radseg.workflows.ingest import ingest

    platform = create_platform(load_settings({"home": work / "home"}, environ={}))
    plugins = {info.name: [info.status, info.reason] for info in platform.plugins.list()}

    backend = platform.plugins.model_backend("detectron2")
    request = TrainRequest(
        dataset_dir=work, output_dir=work / "model", classes=[], config={"iterations": 1}
    )
    try:
        backend.train(request)
        train_error = "trained without torch?"
    except PluginError as exc:
        train_error = str(exc)

    # A real CT and its Slicer segmentation, from slicerio (a core dependency now): the
    # nifti-pairs source pairs chest.nrrd with chest.seg.nrrd.
    cases = work / "cases"
    cases.mkdir()
    data = Path(slicerio.__file__).parent / "data"
    shutil.copy(data / "CTChest4.nrrd", cases / "chest.nrrd")
    shutil.copy(data / "Segmentation.seg.nrrd", cases / "chest.seg.nrrd")
    Base.metadata.create_all(platform.engine)  # a test database; `radseg init` migrates for real
    report = ingest(platform, cases, source="nifti-pairs", author="probe")
    with platform.sessions.begin() as session:
        (label_set,) = session.scalars(select(LabelSet)).all()
        classes = [c["name"] for c in label_set.classes]
    platform.close()
    return {
        "plugins": plugins,
        "train_error": train_error,
        "ingest": {"added": len(report.added), "labelled": report.labelled, "classes": classes},
        "heavy_modules": sorted(m for m in sys.modules if m.split(".")[0] in MODEL_STACK),
    }


if __name__ == "__main__":
    found = import_everything()
    found["lazy_imports_failed"] = import_what_the_code_imports()
    found.update(load_plugins_and_ingest(Path(sys.argv[1])))
    print(json.dumps(found))
