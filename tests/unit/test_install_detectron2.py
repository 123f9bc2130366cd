"""tools/install_detectron2.py: what it stages from a detectron2 tree, and what it refuses."""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

INSTALLER = Path(__file__).resolve().parents[2] / "tools" / "install_detectron2.py"


@pytest.fixture(scope="module")
def installer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_detectron2", INSTALLER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _upstream_like_tree(root: Path, *, deeplab: bool = True) -> Path:
    """A miniature upstream checkout: the package, a project, configs and C++ sources."""
    files = {
        "detectron2/__init__.py": '__version__ = "0.6"\n',
        "detectron2/layers/__init__.py": "",
        "detectron2/layers/csrc/nms_rotated/nms_rotated.cu": "// CUDA source\n",
        "detectron2/_C.cpython-311-x86_64-linux-gnu.so": "not really a library",
        "detectron2/model_zoo/__init__.py": "",
        "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml": "MODEL: {}\n",
        "configs/Base-RCNN-FPN.yaml": "MODEL: {}\n",
        "projects/PointRend/point_rend/__init__.py": "",
        "LICENSE": "Apache License 2.0\n",
    }
    if deeplab:
        files["projects/DeepLab/deeplab/__init__.py"] = "from .build_solver import *\n"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_stages_the_package_projects_and_configs_without_compiled_parts(
    installer: ModuleType, tmp_path: Path
) -> None:
    tree = _upstream_like_tree(tmp_path / "src")
    stage = tmp_path / "stage"
    stage.mkdir()
    assert installer.stage_project(tree, stage) == "0.6"
    package = stage / "detectron2"
    assert (package / "projects" / "deeplab" / "__init__.py").is_file()
    assert (package / "projects" / "point_rend" / "__init__.py").is_file()
    configs = sorted(
        p.relative_to(package / "model_zoo" / "configs").as_posix()
        for p in (package / "model_zoo" / "configs").rglob("*.yaml")
    )
    assert configs == [
        "Base-RCNN-FPN.yaml",
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    ]
    assert not list(package.rglob("csrc")) and not list(package.rglob("*.so"))
    project = tomllib.loads((stage / "pyproject.toml").read_text())
    assert project["project"]["name"] == "detectron2"
    assert project["project"]["version"] == "0.6"
    assert not project["project"].get("dependencies")  # never black==21.4b2 or anything else


def test_refuses_a_tree_without_deeplab_or_without_the_package(
    installer: ModuleType, tmp_path: Path
) -> None:
    no_deeplab = _upstream_like_tree(tmp_path / "a", deeplab=False)
    (tmp_path / "stage-a").mkdir()
    with pytest.raises(installer.InstallError, match="DeepLab"):
        installer.stage_project(no_deeplab, tmp_path / "stage-a")
    (tmp_path / "empty").mkdir()
    (tmp_path / "stage-b").mkdir()
    with pytest.raises(installer.InstallError, match="--source"):
        installer.stage_project(tmp_path / "empty", tmp_path / "stage-b")


def test_refuses_an_archive_whose_sha256_is_not_the_pinned_one(
    installer: ModuleType, tmp_path: Path
) -> None:
    tarball = tmp_path / "pb1-detectron2-0.6.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        data = b'__version__ = "0.6"\n'
        info = tarfile.TarInfo("pb1-detectron2-0.6/detectron2/__init__.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    (tmp_path / "out").mkdir()
    with pytest.raises(installer.InstallError, match=installer.SDIST_SHA256):
        installer.extract(tarball, tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())
