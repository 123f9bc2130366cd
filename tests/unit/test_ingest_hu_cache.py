"""The HU cache written block by block (issue 17) is SimpleITK's file, byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radseg.contracts import Geometry
from radseg.imaging.volumes import read_volume, write_volume
from radseg.workflows.ingest_files import _compact_hu, _write_int16_nifti

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
OBLIQUE = (0.9998, 0.0175, 0.0, -0.0175, 0.9998, 0.0, 0.0, 0.0, 1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0)


@pytest.mark.parametrize(
    ("shape", "dtype", "direction"),
    [
        ((7, 29, 37), np.float32, AXIAL),
        ((1, 16, 12), np.float32, OBLIQUE),  # one slice
        ((5, 1, 9), np.float64, CORONAL),  # one row
        ((9, 256, 512), np.int16, AXIAL),  # two blocks of 8 slices
        ((3, 2, 2), np.float32, OBLIQUE),
    ],
)
def test_an_integer_volume_is_written_as_simpleitk_writes_it(
    tmp_path: Path, shape: tuple[int, int, int], dtype: type, direction: tuple[float, ...]
) -> None:
    rng = np.random.default_rng(sum(shape))
    hu = rng.integers(-1024, 3071, shape).astype(dtype)
    hu.flat[0], hu.flat[-1] = -32768, 32767  # int16's whole range
    geometry = Geometry(shape[::-1], (0.7, 0.8, 2.5), (-10.5, 20.25, -300.0), direction)
    assert _write_int16_nifti(tmp_path / "fast.nii", hu, geometry)
    write_volume(tmp_path / "sitk.nii", _compact_hu(hu), geometry)
    assert (tmp_path / "fast.nii").read_bytes() == (tmp_path / "sitk.nii").read_bytes()
    back, back_geometry = read_volume(tmp_path / "fast.nii")
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, hu)
    assert back_geometry.size == geometry.size


@pytest.mark.parametrize("value", [0.5, 40000.0, -40000.0, float("nan")])
def test_a_volume_int16_cannot_hold_is_left_to_simpleitk_and_nothing_is_written(
    tmp_path: Path, value: float
) -> None:
    hu = np.zeros((12, 256, 512), dtype=np.float32)
    hu[10, 3, 4] = value  # in the second block of 8 slices: the first was already written
    geometry = Geometry((512, 256, 12), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), AXIAL)
    assert not _write_int16_nifti(tmp_path / "hu.nii", hu, geometry)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_the_build_maps_the_cache_and_reads_what_simpleitk_reads(
    tmp_path: Path, dtype: type
) -> None:
    from radseg.workflows.datasets import _mapped_hu_cache

    hu = np.random.default_rng(2).integers(-1024, 3071, (6, 10, 14)).astype(dtype)
    if dtype is np.float32:
        hu += np.float32(0.25)  # fractional: cached as float32
    geometry = Geometry((14, 10, 6), (0.7, 0.8, 2.5), (-10.5, 20.25, -300.0), OBLIQUE)
    write_volume(tmp_path / "hu.nii", hu, geometry)
    mapped = _mapped_hu_cache(tmp_path / "hu.nii")
    read, _ = read_volume(tmp_path / "hu.nii")
    assert mapped is not None
    assert mapped.dtype == read.dtype and mapped.shape == read.shape
    np.testing.assert_array_equal(mapped, read)


def test_the_build_reads_any_other_cache_with_simpleitk(tmp_path: Path) -> None:
    from radseg.workflows.datasets import _mapped_hu_cache

    hu = np.zeros((3, 4, 5), dtype=np.int16)
    geometry = Geometry((5, 4, 3), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), AXIAL)
    write_volume(tmp_path / "hu.nii.gz", hu, geometry)
    write_volume(tmp_path / "labels.nii", hu.astype(np.uint8), geometry)
    (tmp_path / "short.nii").write_bytes((tmp_path / "labels.nii").read_bytes()[:300])
    for name in ("hu.nii.gz", "labels.nii", "short.nii"):
        assert _mapped_hu_cache(tmp_path / name) is None, name


@pytest.mark.parametrize(
    ("shape", "direction"), [((6, 10, 14), OBLIQUE), ((1, 1, 1), AXIAL), ((4, 3, 2), CORONAL)]
)
def test_the_build_inflates_label_volumes_to_what_simpleitk_reads(
    tmp_path: Path, shape: tuple[int, int, int], direction: tuple[float, ...]
) -> None:
    from radseg.workflows.datasets import _inflated_labels

    labels = np.random.default_rng(3).integers(0, 256, shape).astype(np.uint8)
    geometry = Geometry(shape[::-1], (0.7, 0.8, 2.5), (-10.5, 20.25, -300.0), direction)
    write_volume(tmp_path / "v1.nii.gz", labels, geometry)
    inflated = _inflated_labels(tmp_path / "v1.nii.gz")
    read, _ = read_volume(tmp_path / "v1.nii.gz")
    assert inflated is not None and inflated.dtype == np.uint8 == read.dtype
    np.testing.assert_array_equal(inflated, read)


def test_the_build_reads_any_other_label_file_with_simpleitk(tmp_path: Path) -> None:
    import gzip

    from radseg.workflows.datasets import _inflated_labels

    labels = np.ones((3, 4, 5), dtype=np.uint8)
    geometry = Geometry((5, 4, 3), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), AXIAL)
    write_volume(tmp_path / "v1.nii.gz", labels, geometry)
    write_volume(tmp_path / "wide.nii.gz", labels.astype(np.int16) * 300, geometry)
    write_volume(tmp_path / "plain.nii", labels, geometry)
    nifti = gzip.decompress((tmp_path / "v1.nii.gz").read_bytes())
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(nifti[:-1]))
    (tmp_path / "long.nii.gz").write_bytes(gzip.compress(nifti + b"\0"))
    (tmp_path / "cut.nii.gz").write_bytes((tmp_path / "v1.nii.gz").read_bytes()[:-9])
    for name in ("wide.nii.gz", "plain.nii", "short.nii.gz", "long.nii.gz", "cut.nii.gz"):
        assert _inflated_labels(tmp_path / name) is None, name
