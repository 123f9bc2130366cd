"""The built-in ``nifti`` exporter: voxels, world coordinates, the class-map sidecar, verify."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from radseg.contracts import ClassInfo, ExportCheck, Exporter, ExportRequest, Geometry
from radseg.core import create_platform
from radseg.errors import InputError
from radseg.imaging.labels import read_class_map
from radseg.settings import load_settings
from radseg_plugins.exporters import nifti
from radseg_plugins.exporters.nifti import NiftiExporter
from tests.export_support import export_request, with_labels

SHAPE = (6, 40, 48)  # (z, y, x): x != y, so a swapped axis cannot pass


def oblique_orientation() -> tuple[float, ...]:
    """ImageOrientationPatient rotated about z, then x: no axis parallel to the patient's."""
    a, b = math.radians(25.0), math.radians(-15.0)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rotation = rx @ rz
    return tuple(float(v) for v in (*rotation[:, 0], *rotation[:, 1]))


def world(geometry: Geometry, index: tuple[int, int, int]) -> np.ndarray:
    """Centre of voxel ``index`` (x, y, z) in mm: origin + D · (spacing ⊙ index)."""
    direction = np.array(geometry.direction).reshape(3, 3)
    return np.array(geometry.origin) + direction @ (np.array(geometry.spacing) * index)


def corners(geometry: Geometry) -> list[tuple[int, int, int]]:
    nx, ny, nz = geometry.size
    return list(itertools.product((0, nx - 1), (0, ny - 1), (0, nz - 1)))


def nifti_sform(path: Path) -> tuple[int, np.ndarray]:
    """``(sform_code, 4x4 RAS affine)`` read straight from a NIfTI-1 header (no image library).

    A second reader independent of SimpleITK: the header is 348 bytes; ``sform_code`` is the
    int16 at byte 254 and the affine's rows ``srow_x/y/z`` are float32[4] at bytes 280, 296, 312.
    """
    with gzip.open(path, "rb") as fh:
        header = fh.read(348)
    endian = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
    (sform_code,) = struct.unpack(endian + "h", header[254:256])
    rows = struct.unpack(endian + "12f", header[280:328])
    return sform_code, np.vstack([np.reshape(rows, (3, 4)), [0.0, 0.0, 0.0, 1.0]])


def by_name(checks: list[ExportCheck]) -> dict[str, ExportCheck]:
    return {c.name: c for c in checks}


@pytest.fixture
def request_(tmp_path: Path) -> ExportRequest:
    return export_request(tmp_path, shape=SHAPE)[0]


def test_round_trip_keeps_voxels_and_world_coordinates(tmp_path: Path, request_) -> None:
    out = tmp_path / "exports" / "prediction-1.nii.gz"
    written = NiftiExporter().export(request_, out)

    assert written == out
    image = sitk.ReadImage(str(out))
    array = sitk.GetArrayFromImage(image)
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, request_.labels)
    assert len(np.unique(array)) == 6  # the phantom's five classes and background
    for corner in corners(request_.geometry):
        read_back = image.TransformIndexToPhysicalPoint(corner)
        np.testing.assert_allclose(read_back, world(request_.geometry, corner), atol=1e-3)

    checks = NiftiExporter().verify(request_, written)
    assert [c.name for c in checks] == ["voxels (SimpleITK)", "world coordinates", "class map"]
    assert all(c.passed for c in checks), checks
    assert "0 voxels differ" in by_name(checks)["voxels (SimpleITK)"].detail
    assert "mm" in by_name(checks)["world coordinates"].detail


def test_oblique_geometry_lands_on_the_same_world_points(tmp_path: Path) -> None:
    request, _ = export_request(
        tmp_path, shape=SHAPE, image_orientation_patient=oblique_orientation()
    )
    direction = np.array(request.geometry.direction).reshape(3, 3)
    assert np.abs(direction).max(axis=0).max() < 0.97  # no axis parallel to a patient axis

    written = NiftiExporter().export(request, tmp_path / "oblique")
    image = sitk.ReadImage(str(written))
    for corner in corners(request.geometry):
        np.testing.assert_allclose(
            image.TransformIndexToPhysicalPoint(corner), world(request.geometry, corner), atol=1e-3
        )
    # Slice k sits where its DICOM instance says it does.
    for ref in request.series.slices:
        np.testing.assert_allclose(
            image.TransformIndexToPhysicalPoint((0, 0, ref.slice_index)),
            ref.image_position_patient,
            atol=1e-3,
        )
    assert all(c.passed for c in NiftiExporter().verify(request, written))


def test_the_header_affine_agrees_with_a_second_reader(tmp_path: Path) -> None:
    """Read the sform from the raw NIfTI header (RAS) and map it to LPS: same corners."""
    request, _ = export_request(
        tmp_path, shape=SHAPE, image_orientation_patient=oblique_orientation()
    )
    written = NiftiExporter().export(request, tmp_path / "oblique.nii.gz")

    sform_code, affine = nifti_sform(written)
    assert sform_code > 0  # the sform is set, so readers use it
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    for corner in corners(request.geometry):
        ras = affine @ np.array([*corner, 1.0])
        np.testing.assert_allclose(ras_to_lps @ ras[:3], world(request.geometry, corner), atol=1e-3)


def test_writes_the_class_map_sidecar_with_snomed_codes(tmp_path: Path, request_) -> None:
    out = NiftiExporter().export(request_, tmp_path / "case.nii.gz")

    sidecar = tmp_path / "case.json"
    assert nifti.sidecar_path(out) == sidecar
    entries = json.loads(sidecar.read_text())["classes"]
    assert [e["id"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0] == {
        "id": 1,
        "name": "liver",
        "color": [221, 130, 101],
        "snomed_code": "10200004",
    }
    assert "snomed_code" not in entries[1]
    # The form radseg reads back, so an exported prediction can be ingested as labels.
    assert read_class_map(sidecar) == sorted(request_.classes, key=lambda c: c.id)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["case.json", "case.nii.gz"]


@pytest.mark.parametrize(
    ("given", "written"),
    [("a.nii.gz", "a.nii.gz"), ("a.nii", "a.nii.gz"), ("a", "a.nii.gz"), ("a.v1", "a.v1.nii.gz")],
)
def test_names_the_file_nii_gz(tmp_path: Path, request_, given: str, written: str) -> None:
    out = NiftiExporter().export(request_, tmp_path / "out" / given)
    assert out == tmp_path / "out" / written
    assert out.is_file() and nifti.sidecar_path(out).is_file()


def test_casts_integer_labels_and_refuses_the_rest(tmp_path: Path, request_) -> None:
    labels = request_.labels
    out = NiftiExporter().export(with_labels(request_, labels.astype(np.int64)), tmp_path / "o/a")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), labels)

    with pytest.raises(InputError, match="shape"):
        NiftiExporter().export(with_labels(request_, labels[:, :, :-1]), tmp_path / "o/b")
    with pytest.raises(InputError, match="0-255"):
        NiftiExporter().export(
            with_labels(request_, labels.astype(np.int16) + 300), tmp_path / "o/c"
        )
    with pytest.raises(InputError, match="0-255"):
        NiftiExporter().export(with_labels(request_, labels.astype(np.float32)), tmp_path / "o/d")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.json", "a.nii.gz"]


def test_a_failed_write_leaves_nothing(tmp_path: Path, request_, monkeypatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(nifti.sitk, "WriteImage", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        NiftiExporter().export(request_, tmp_path / "out" / "case.nii.gz")
    assert list((tmp_path / "out").iterdir()) == []


def test_verify_catches_changed_voxels(tmp_path: Path, request_) -> None:
    written = NiftiExporter().export(request_, tmp_path / "case.nii.gz")
    image = sitk.ReadImage(str(written))
    array = sitk.GetArrayFromImage(image)
    array[2, 10, 11] = 5 if array[2, 10, 11] != 5 else 0
    tampered = sitk.GetImageFromArray(array)
    tampered.CopyInformation(image)
    sitk.WriteImage(tampered, str(written))

    checks = by_name(NiftiExporter().verify(request_, written))
    assert checks["voxels (SimpleITK)"].passed is False
    assert ", 1 voxels differ" in checks["voxels (SimpleITK)"].detail
    assert checks["world coordinates"].passed is True


def test_verify_catches_a_moved_volume(tmp_path: Path, request_) -> None:
    written = NiftiExporter().export(request_, tmp_path / "case.nii.gz")
    image = sitk.ReadImage(str(written))
    origin = image.GetOrigin()
    image.SetOrigin((origin[0] + 0.01, origin[1], origin[2]))  # 10 micrometres
    sitk.WriteImage(image, str(written))

    checks = by_name(NiftiExporter().verify(request_, written))
    assert checks["voxels (SimpleITK)"].passed is True
    assert checks["world coordinates"].passed is False
    assert "1.00e-02 mm" in checks["world coordinates"].detail


def test_verify_catches_a_changed_class_map_and_an_unreadable_file(
    tmp_path: Path, request_
) -> None:
    written = NiftiExporter().export(request_, tmp_path / "case.nii.gz")
    sidecar = nifti.sidecar_path(written)
    data = json.loads(sidecar.read_text())
    data["classes"][1]["color"] = [0, 0, 0]
    sidecar.write_text(json.dumps(data))
    checks = by_name(NiftiExporter().verify(request_, written))
    assert checks["class map"].passed is False
    assert "[2]" in checks["class map"].detail

    written.write_bytes(b"not a nifti file")
    checks = by_name(NiftiExporter().verify(request_, written))
    assert checks["voxels (SimpleITK)"].passed is False
    assert checks["world coordinates"].passed is False


def test_verify_compares_with_the_request_not_with_itself(tmp_path: Path, request_) -> None:
    written = NiftiExporter().export(request_, tmp_path / "case.nii.gz")
    other = replace(
        request_,
        classes=[ClassInfo(1, "liver", (221, 130, 101), "10200004")],
        labels=np.zeros_like(request_.labels),
    )
    checks = by_name(NiftiExporter().verify(other, written))
    assert checks["voxels (SimpleITK)"].passed is False
    assert checks["class map"].passed is False


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
    assert (NiftiExporter.suffix, NiftiExporter.dicom) == (".nii.gz", False)
