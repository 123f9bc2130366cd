"""The built-in ``nifti`` exporter: voxels, world coordinates and the class-map sidecar."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from radseg.contracts import ClassInfo, Exporter, Geometry
from radseg.core import create_platform
from radseg.errors import InputError
from radseg.imaging.labels import read_class_map
from radseg.settings import load_settings
from radseg_plugins.exporters import nifti
from radseg_plugins.exporters.nifti import NiftiExporter

CLASSES = [
    ClassInfo(2, "kidney", (212, 126, 151)),
    ClassInfo(1, "liver", (221, 130, 101)),
]


def oblique_direction() -> tuple[float, ...]:
    """Rotations about z then x: no axis parallel to the patient's, columns orthonormal."""
    a, b = math.radians(25.0), math.radians(-15.0)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple(float(v) for v in (rz @ rx).ravel())


GEOMETRY = Geometry(
    size=(7, 5, 4),  # (x, y, z)
    spacing=(0.7, 0.9, 2.5),
    origin=(-120.25, 33.5, 410.0),
    direction=oblique_direction(),
)


def world(geometry: Geometry, index: tuple[int, int, int]) -> np.ndarray:
    """Centre of voxel ``index`` (x, y, z) in mm: origin + D · (spacing ⊙ index)."""
    direction = np.array(geometry.direction).reshape(3, 3)
    return np.array(geometry.origin) + direction @ (np.array(geometry.spacing) * index)


@pytest.fixture
def labels() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 3, size=tuple(reversed(GEOMETRY.size)), dtype=np.uint8)


def test_round_trip_keeps_voxels_and_world_coordinates(tmp_path: Path, labels) -> None:
    out = tmp_path / "exports" / "prediction-1.nii.gz"
    written = NiftiExporter().export(labels, GEOMETRY, CLASSES, out)

    assert written == out
    image = sitk.ReadImage(str(out))
    array = sitk.GetArrayFromImage(image)
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, labels)
    assert image.GetSize() == GEOMETRY.size

    nx, ny, nz = GEOMETRY.size
    for corner in itertools.product((0, nx - 1), (0, ny - 1), (0, nz - 1)):
        read_back = image.TransformIndexToPhysicalPoint(corner)
        # NIfTI keeps the affine in float32: sub-micrometre agreement is exact enough.
        np.testing.assert_allclose(read_back, world(GEOMETRY, corner), atol=1e-3)

    if importlib.util.find_spec("nibabel") is not None:  # optional cross-check, no dependency
        import nibabel

        affine = nibabel.load(str(out)).affine
        lps_to_ras = np.diag([-1.0, -1.0, 1.0])
        for corner in itertools.product((0, nx - 1), (0, ny - 1), (0, nz - 1)):
            ras = affine @ np.array([*corner, 1.0])
            np.testing.assert_allclose(ras[:3], lps_to_ras @ world(GEOMETRY, corner), atol=1e-3)


def test_writes_the_class_map_sidecar(tmp_path: Path, labels) -> None:
    out = NiftiExporter().export(labels, GEOMETRY, CLASSES, tmp_path / "case.nii.gz")

    sidecar = tmp_path / "case.json"
    assert json.loads(sidecar.read_text()) == {
        "classes": [
            {"id": 1, "name": "liver", "color": [221, 130, 101]},
            {"id": 2, "name": "kidney", "color": [212, 126, 151]},
        ]
    }
    assert nifti.sidecar_path(out) == sidecar
    # The form radseg reads back, so an exported prediction can be ingested as labels.
    assert [(c.id, c.name, c.color) for c in read_class_map(sidecar)] == [
        (1, "liver", (221, 130, 101)),
        (2, "kidney", (212, 126, 151)),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.json", "case.nii.gz"]


@pytest.mark.parametrize(
    ("given", "written"),
    [("a.nii.gz", "a.nii.gz"), ("a.nii", "a.nii.gz"), ("a", "a.nii.gz"), ("a.v1", "a.v1.nii.gz")],
)
def test_names_the_file_nii_gz(tmp_path: Path, labels, given: str, written: str) -> None:
    out = NiftiExporter().export(labels, GEOMETRY, CLASSES, tmp_path / given)
    assert out == tmp_path / written
    assert out.is_file() and nifti.sidecar_path(out).is_file()


def test_casts_integer_labels_and_refuses_the_rest(tmp_path: Path, labels) -> None:
    out = NiftiExporter().export(labels.astype(np.int64), GEOMETRY, CLASSES, tmp_path / "a")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), labels)

    with pytest.raises(InputError, match="shape"):
        NiftiExporter().export(labels[:, :, :-1], GEOMETRY, CLASSES, tmp_path / "b")
    with pytest.raises(InputError, match="0-255"):
        NiftiExporter().export(labels.astype(np.int16) + 300, GEOMETRY, CLASSES, tmp_path / "c")
    with pytest.raises(InputError, match="0-255"):
        NiftiExporter().export(labels.astype(np.float32), GEOMETRY, CLASSES, tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.nii.gz"]


def test_a_failed_write_leaves_nothing(tmp_path: Path, labels, monkeypatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(nifti.sitk, "WriteImage", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        NiftiExporter().export(labels, GEOMETRY, CLASSES, tmp_path / "case.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_registers_through_the_hook_like_any_plugin(tmp_path: Path) -> None:
    platform = create_platform(
        load_settings({"home": tmp_path}, environ={}), autoload=False, plugins=[("nifti", nifti)]
    )
    try:
        assert platform.plugins.exporters.get("nifti") is NiftiExporter
        assert platform.plugins.exporters.plugin_of("nifti") == "nifti"
    finally:
        platform.close()
    assert isinstance(NiftiExporter(), Exporter)
    assert NiftiExporter.suffix == ".nii.gz"
