"""Label volumes land on the image grid whatever their orientation or resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from radseg.contracts import ClassInfo, Geometry
from radseg.errors import GeometryError, InputError
from radseg.imaging.labels import (
    classes_for_labels,
    find_class_map,
    load_label_volume,
    physical_bounds,
    read_class_map,
    read_label_geometry,
)
from radseg.imaging.synthetic import write_synthetic_ct


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_ct(tmp_path_factory.mktemp("labels"), seed=31, shape=(20, 64, 56))


def write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def image_with(array: np.ndarray, spacing, origin, direction) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(v) for v in spacing])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection([float(v) for v in np.asarray(direction).ravel()])
    return image


def voxel_to_world(geometry: Geometry, index) -> np.ndarray:
    direction = np.asarray(geometry.direction).reshape(3, 3)
    return np.asarray(geometry.origin) + direction @ (np.asarray(index) * geometry.spacing)


def test_identical_grid_is_taken_as_is(study) -> None:
    labels = load_label_volume(study.label_path, study.geometry)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, study.labels)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_flipped_orientation_on_disk_maps_back_voxel_for_voxel(
    study, tmp_path: Path, suffix: str
) -> None:
    g = study.geometry
    nx, _, nz = g.size
    direction = np.asarray(g.direction).reshape(3, 3)
    # Store x and z reversed: the first stored voxel is the image's (nx-1, 0, nz-1).
    flipped = study.labels[::-1, :, ::-1]
    new_direction = direction * np.array([-1.0, 1.0, -1.0])
    origin = voxel_to_world(g, (nx - 1, 0, nz - 1))
    path = write(image_with(flipped, g.spacing, origin, new_direction), tmp_path / f"f{suffix}")
    np.testing.assert_array_equal(load_label_volume(path, g), study.labels)


def test_permuted_axes_map_back_voxel_for_voxel(study, tmp_path: Path) -> None:
    g = study.geometry
    direction = np.asarray(g.direction).reshape(3, 3)
    swapped = np.ascontiguousarray(np.transpose(study.labels, (0, 2, 1)))  # (z, x, y)
    spacing = (g.spacing[1], g.spacing[0], g.spacing[2])
    new_direction = direction[:, [1, 0, 2]]
    path = write(image_with(swapped, spacing, g.origin, new_direction), tmp_path / "p.nrrd")
    np.testing.assert_array_equal(load_label_volume(path, g), study.labels)


def test_finer_grid_is_resampled_with_nearest_neighbour(study, tmp_path: Path) -> None:
    g = study.geometry
    reference = image_with(study.labels, g.spacing, g.origin, g.direction)
    # Half the spacing in-plane, first voxel centre shared: every image voxel centre is a
    # fine voxel centre, so nearest neighbour must give the labels back exactly.
    fine = sitk.Resample(
        reference,
        [2 * g.size[0] - 1, 2 * g.size[1] - 1, g.size[2]],
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        g.origin,
        (g.spacing[0] / 2, g.spacing[1] / 2, g.spacing[2]),
        g.direction,
        0,
        sitk.sitkUInt8,
    )
    path = write(fine, tmp_path / "fine.nii.gz")
    np.testing.assert_array_equal(load_label_volume(path, g), study.labels)


def test_partial_coarse_grid_is_resampled_and_outside_is_background(study, tmp_path: Path) -> None:
    g = study.geometry
    reference = image_with(study.labels, g.spacing, g.origin, g.direction)
    upper_origin = voxel_to_world(g, (0, 0, 10))
    coarse = sitk.Resample(
        reference,
        [g.size[0] // 2, g.size[1] // 2, 10],
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        tuple(upper_origin),
        (g.spacing[0] * 2, g.spacing[1] * 2, g.spacing[2]),
        g.direction,
        0,
        sitk.sitkUInt8,
    )
    labels = load_label_volume(write(coarse, tmp_path / "coarse.mha"), g)
    assert labels.shape == study.labels.shape
    assert not labels[:10].any()
    agree = np.mean(labels[10:] == study.labels[10:])
    assert agree > 0.97


def test_no_overlap_is_refused_with_a_clear_message(study, tmp_path: Path) -> None:
    g = study.geometry
    far = np.asarray(g.origin) + np.array([0.0, 0.0, 5000.0])
    path = write(image_with(study.labels, g.spacing, far, g.direction), tmp_path / "far.nii.gz")
    with pytest.raises(GeometryError) as info:
        load_label_volume(path, g)
    message = str(info.value)
    assert "far.nii.gz does not overlap the image series" in message
    assert "origin and direction" in message


def test_bad_label_files_are_input_errors(study, tmp_path: Path) -> None:
    g = study.geometry
    floats = study.labels.astype(np.float32) + 0.25
    path = write(image_with(floats, g.spacing, g.origin, g.direction), tmp_path / "f.nii.gz")
    with pytest.raises(InputError, match="non-integer"):
        load_label_volume(path, g)
    negative = study.labels.astype(np.int16) - 1
    path = write(image_with(negative, g.spacing, g.origin, g.direction), tmp_path / "n.nii.gz")
    with pytest.raises(InputError, match="0-255"):
        load_label_volume(path, g)
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"cannot read label volume junk\.nii\.gz"):
        load_label_volume(tmp_path / "junk.nii.gz", g)


def test_read_label_geometry_and_bounds(study) -> None:
    geometry = read_label_geometry(study.label_path)
    assert geometry.size == study.geometry.size
    low, high = physical_bounds(study.geometry)
    extent = np.asarray(study.geometry.size) * np.asarray(study.geometry.spacing)
    np.testing.assert_allclose(high - low, extent)


def test_class_map_sidecar_formats_and_defaults(study, tmp_path: Path) -> None:
    assert find_class_map(study.label_path) == study.class_map_path
    classes = read_class_map(study.class_map_path)
    assert [c.name for c in classes] == ["liver", "lung_left", "lung_right", "spine", "kidneys"]
    assert classes[0].color == (221, 130, 101)

    label = tmp_path / "seg.nrrd"
    label.write_bytes(b"")
    assert find_class_map(label) is None
    (tmp_path / "seg.nrrd.json").write_text(json.dumps({"2": "spleen", "1": "liver"}))
    sidecar = find_class_map(label)
    assert sidecar == tmp_path / "seg.nrrd.json"
    assert [c.name for c in read_class_map(sidecar)] == ["liver", "spleen"]

    defaults = classes_for_labels(np.array([[[0, 3, 7, 255]]], dtype=np.uint8))
    assert [(c.id, c.name) for c in defaults] == [(3, "class_3"), (7, "class_7")]
    merged = classes_for_labels([0, 1, 2], [ClassInfo(1, "liver")])
    assert [(c.id, c.name) for c in merged] == [(1, "liver"), (2, "class_2")]


@pytest.mark.parametrize(
    "content, match",
    [
        ({"classes": [{"id": 0, "name": "background"}]}, "1-254"),
        ({"classes": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}, "duplicate"),
        ({"classes": [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]}, "unique"),
        ({"classes": [{"name": "a"}]}, "integer"),
        ({"classes": [{"id": 1, "name": "a", "color": [1, 2]}]}, "colour"),
    ],
)
def test_invalid_class_maps_are_refused(content, match: str) -> None:
    with pytest.raises(InputError, match=match):
        read_class_map(content)
