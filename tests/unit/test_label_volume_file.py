"""A uint8 volume written to ``.nii.gz`` (label volumes, predictions, uncertainty maps) is
SimpleITK's NIfTI file once inflated, whoever reads it (issue 17: deflated by ISA-L)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from radseg.contracts import Geometry
from radseg.imaging.volumes import array_to_image, read_volume, write_volume

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
OBLIQUE = (0.9998, 0.0175, 0.0, -0.0175, 0.9998, 0.0, 0.0, 0.0, 1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("shape", "direction"),
    [
        ((7, 29, 37), AXIAL),
        ((1, 16, 12), OBLIQUE),  # one slice
        ((5, 1, 9), CORONAL),  # one row
        ((40, 300, 260), FLIPPED),  # more voxels than one deflate call takes
        ((3, 2, 2), OBLIQUE),
    ],
)
def test_a_label_volume_inflates_to_the_file_simpleitk_writes(
    tmp_path: Path, shape: tuple[int, int, int], direction: tuple[float, ...]
) -> None:
    rng = np.random.default_rng(sum(shape))
    labels = rng.integers(0, 6, shape).astype(np.uint8)
    labels.flat[0], labels.flat[-1] = 0, 255  # the ignore label
    geometry = Geometry(shape[::-1], (0.7, 0.8, 2.5), (-10.5, 20.25, -300.0), direction)
    ours = write_volume(tmp_path / "ours.nii.gz", labels, geometry)
    sitk.WriteImage(array_to_image(labels, geometry), str(tmp_path / "sitk.nii.gz"), True)
    assert gzip.decompress(ours.read_bytes()) == gzip.decompress(
        (tmp_path / "sitk.nii.gz").read_bytes()
    )
    back, back_geometry = read_volume(ours)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    assert back_geometry == read_volume(tmp_path / "sitk.nii.gz")[1]


def test_the_same_volume_gives_the_same_file(tmp_path: Path) -> None:
    labels = np.zeros((4, 32, 32), np.uint8)
    labels[1:3, 8:20, 10:30] = 2
    geometry = Geometry((32, 32, 4), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), AXIAL)
    first = write_volume(tmp_path / "a.nii.gz", labels, geometry).read_bytes()
    second = write_volume(tmp_path / "b.nii.gz", labels, geometry).read_bytes()
    assert first == second  # no file name or time in the gzip header


def test_nibabel_reads_the_voxels_and_the_affine_simpleitk_gives(tmp_path: Path) -> None:
    labels = np.zeros((6, 20, 24), np.uint8)
    labels[2:5, 3:9, 4:15] = 3
    geometry = Geometry((24, 20, 6), (0.5, 0.6, 2.0), (5.0, -7.0, 12.0), OBLIQUE)
    write_volume(tmp_path / "ours.nii.gz", labels, geometry)
    sitk.WriteImage(array_to_image(labels, geometry), str(tmp_path / "sitk.nii.gz"), True)
    ours, theirs = (nibabel.load(tmp_path / f"{n}.nii.gz") for n in ("ours", "sitk"))
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
    np.testing.assert_array_equal(ours.affine, theirs.affine)
    # nibabel's arrays are (x, y, z)
    np.testing.assert_array_equal(np.asarray(ours.dataobj).transpose(2, 1, 0), labels)


def test_other_volumes_are_still_written_by_simpleitk(tmp_path: Path) -> None:
    """Only uint8 .nii.gz takes the ISA-L path: an HU volume is SimpleITK's file as it was."""
    hu = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) - 10
    geometry = Geometry((4, 3, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), AXIAL)
    ours = write_volume(tmp_path / "hu.nii.gz", hu, geometry)
    sitk.WriteImage(
        array_to_image(hu.astype(np.int16), geometry), str(tmp_path / "sitk.nii.gz"), True
    )
    assert ours.read_bytes() == (tmp_path / "sitk.nii.gz").read_bytes()
