"""Orientation letters, planes and mm positions from a series' direction cosines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from radseg.contracts import Geometry
from radseg.errors import RadsegError
from radseg.imaging.orientation import (
    acquisition_layout,
    direction_letters,
    index_to_lps,
    nearest_axes,
    plane_layout,
    viewer_planes,
)
from radseg.settings import load_settings

AXIAL = (1.0, 0, 0, 0, 1, 0, 0, 0, 1)
#: a sagittal acquisition: columns run posterior, rows inferior, slices towards the left
SAGITTAL = (0.0, 0, 1, 1, 0, 0, 0, -1, 0)
#: a coronal acquisition: columns run left, rows inferior, slices posterior
CORONAL = (1.0, 0, 0, 0, 0, 1, 0, -1, 0)


def rotation_z(degrees: float) -> tuple[float, ...]:
    """An axial series turned about the patient's long axis (row-major, columns = axes)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


def geometry(direction: tuple[float, ...], size=(6, 5, 4), spacing=(0.7, 0.8, 3.0)) -> Geometry:
    return Geometry(size, spacing, (-10.0, 20.0, 30.0), direction)


def letters(layout) -> tuple[str, str, str, str]:
    return layout.left, layout.right, layout.top, layout.bottom


@pytest.mark.parametrize(
    ("vector", "expected"),
    [
        ((1, 0, 0), "L"),
        ((-1, 0, 0), "R"),
        ((0, 1, 0), "P"),
        ((0, -1, 0), "A"),
        ((0, 0, 1), "S"),
        ((0, 0, -1), "I"),
        ((0.95, 0.3, 0), "L"),  # 17.5° off left: the nearest label alone
        ((0.8, -0.6, 0), "LA"),  # 37° off left towards anterior: both, the larger first
        ((-0.6, 0, -0.8), "IR"),
        ((1, 1, 1), "LPS"),
        ((3, 0, 0), "L"),  # not a unit vector: normalised first
    ],
)
def test_a_direction_is_named_by_the_axes_it_leans_towards(vector, expected) -> None:
    assert direction_letters(vector) == expected


def test_a_null_direction_is_refused() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        direction_letters((0, 0, 0))


def test_an_axial_series_reads_radiologically_by_default() -> None:
    g = geometry(AXIAL)
    assert letters(plane_layout(g, "axial")) == ("R", "L", "A", "P")
    assert letters(plane_layout(g, "coronal")) == ("R", "L", "S", "I")
    assert letters(plane_layout(g, "sagittal")) == ("A", "P", "S", "I")
    assert letters(plane_layout(g, "axial", "neurological")) == ("L", "R", "A", "P")
    assert letters(plane_layout(g, "coronal", "neurological")) == ("L", "R", "S", "I")
    assert letters(plane_layout(g, "sagittal", "neurological")) == ("A", "P", "S", "I")
    acquisition = acquisition_layout(g)
    assert acquisition.plane == "axial" and letters(acquisition) == ("R", "L", "A", "P")
    assert not acquisition.column_flip and not acquisition.row_flip
    flipped = acquisition_layout(g, "neurological")
    assert flipped.column_flip and letters(flipped) == ("L", "R", "A", "P")


def test_a_sagittal_series_is_cut_along_its_own_axes() -> None:
    g = geometry(SAGITTAL)
    assert nearest_axes(np.asarray(SAGITTAL).reshape(3, 3)) == (2, 0, 1)
    acquisition = acquisition_layout(g)
    assert acquisition.plane == "sagittal"
    assert letters(acquisition) == ("A", "P", "S", "I")
    axial = plane_layout(g, "axial")
    assert axial.axis == 1 and letters(axial) == ("R", "L", "A", "P")
    assert axial.column == 2 and axial.row == 0


def test_a_coronal_series() -> None:
    g = geometry(CORONAL)
    assert acquisition_layout(g).plane == "coronal"
    assert letters(acquisition_layout(g)) == ("R", "L", "S", "I")
    assert letters(plane_layout(g, "sagittal")) == ("A", "P", "S", "I")


def test_an_oblique_series_names_both_axes_it_leans_towards() -> None:
    turned = geometry(rotation_z(30))  # columns run 30° from left towards posterior
    assert letters(acquisition_layout(turned)) == ("RA", "LP", "AL", "PR")
    slight = geometry(rotation_z(10))  # within 22.5°: the nearest labels alone
    assert letters(acquisition_layout(slight)) == ("R", "L", "A", "P")


def test_a_flipped_series_is_shown_in_the_convention() -> None:
    # columns running towards the patient's right: the viewer flips them to put R on the left
    g = geometry((-1.0, 0, 0, 0, 1, 0, 0, 0, 1))
    acquisition = acquisition_layout(g)
    assert acquisition.column_flip and letters(acquisition) == ("R", "L", "A", "P")
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    assert np.array_equal(acquisition.cut(volume, 2), volume[2, :, ::-1])


def test_planes_cut_the_volume_with_the_patient_where_the_letters_say() -> None:
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)  # (k, j, i)
    g = geometry(AXIAL)
    assert np.array_equal(plane_layout(g, "axial").cut(volume, 1), volume[1])
    # coronal: columns along i, rows from superior (last k) down
    assert np.array_equal(plane_layout(g, "coronal").cut(volume, 3), volume[::-1, 3, :])
    # sagittal: columns along j (anterior to posterior), rows from superior down
    assert np.array_equal(plane_layout(g, "sagittal").cut(volume, 2), volume[::-1, :, 2])
    axial_of_sagittal = plane_layout(geometry(SAGITTAL), "axial")
    # SAGITTAL: i → P, j → I, k → L; axial cuts j; columns along k (L), rows along i (P)
    assert np.array_equal(axial_of_sagittal.cut(volume, 4), volume[:, 4, :].T)


def test_the_page_gets_each_plane_with_its_size_and_spacing() -> None:
    g = geometry(AXIAL)
    planes = viewer_planes(g)
    assert planes["convention"] == "radiological"
    coronal = planes["planes"]["coronal"]  # type: ignore[index]
    assert coronal["size"] == [6, 4] and coronal["spacing"] == [0.7, 3.0]
    assert coronal["count"] == 5 and coronal["letters"]["top"] == "S"
    sagittal = planes["planes"]["sagittal"]  # type: ignore[index]
    assert sagittal["size"] == [5, 4] and sagittal["spacing"] == [0.8, 3.0]


@pytest.mark.parametrize("direction", [AXIAL, SAGITTAL, CORONAL, rotation_z(30)])
@pytest.mark.parametrize("index", [(0, 0, 0), (5, 4, 3), (2, 3, 1)])
def test_positions_in_mm_are_simpleitks(direction, index) -> None:
    g = geometry(direction)
    image = sitk.Image(list(g.size), sitk.sitkFloat32)
    image.SetSpacing(g.spacing)
    image.SetOrigin(g.origin)
    image.SetDirection(g.direction)
    expected = image.TransformIndexToPhysicalPoint(index)
    assert index_to_lps(g, index) == pytest.approx(expected, abs=1e-9)


def test_the_convention_is_a_setting_with_two_values(tmp_path) -> None:
    assert load_settings({"home": tmp_path}, environ={}).viewer_convention == "radiological"
    neuro = {"RADSEG_VIEWER_CONVENTION": "neurological"}
    assert load_settings({"home": tmp_path}, environ=neuro).viewer_convention == "neurological"
    with pytest.raises(RadsegError, match="viewer_convention"):
        load_settings({"home": tmp_path, "viewer_convention": "sideways"}, environ={})
