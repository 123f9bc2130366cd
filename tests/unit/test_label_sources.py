"""Every label source placed on the image grid: DICOM SEG, RTSTRUCT, Slicer .seg.nrrd, PNG masks.

The SEGs are written by highdicom and the RTSTRUCTs with pydicom (tests/dicom_labels.py) from a
synthetic CT series whose true labels are known; Slicer's own sample segmentation ships with
slicerio.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from radseg.contracts import ClassInfo, Geometry
from radseg.errors import GeometryError, InputError
from radseg.imaging.label_sources import label_source_kind, read_label_source
from radseg.imaging.label_sources.classmap import merge_class_maps
from radseg.imaging.label_sources.rtstruct import fill_polygons
from radseg.imaging.labels import label_image_to_grid
from radseg.imaging.synthetic import SyntheticStudy, write_synthetic_ct
from radseg.imaging.volumes import array_to_image, image_geometry
from tests.dicom_labels import write_rtstruct, write_seg
from tests.support import require, require_module


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    return write_synthetic_ct(tmp_path_factory.mktemp("study"), shape=(8, 48, 44), seed=3)


@pytest.fixture(scope="module")
def oblique(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    c, s = np.cos(0.3), np.sin(0.3)
    return write_synthetic_ct(
        tmp_path_factory.mktemp("oblique"),
        shape=(6, 40, 40),
        seed=4,
        spacing=(1.7, 1.3, 2.5),
        image_orientation_patient=(c, s, 0.0, 0.0, c, -s),
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 2.0 * int(np.count_nonzero(a & b)) / max(total, 1)


# --- DICOM SEG --------------------------------------------------------------------------------


@pytest.mark.parametrize("segmentation_type", ["BINARY", "FRACTIONAL", "LABELMAP"])
def test_seg_reads_back_voxel_for_voxel_with_its_segments(
    study: SyntheticStudy, tmp_path: Path, segmentation_type: str
) -> None:
    path = write_seg(
        study.files,
        study.labels,
        study.classes,
        tmp_path / "seg.dcm",
        segmentation_type=segmentation_type,
    )
    assert label_source_kind(path) == "seg"
    result = read_label_source(path, study.geometry)
    assert result.source == "seg" and result.warnings == []
    np.testing.assert_array_equal(result.labels, study.labels)
    assert [(c.id, c.name) for c in result.classes] == [(c.id, c.name) for c in study.classes]
    liver = result.classes[0]
    assert liver.snomed_code == "10200004"  # SegmentedPropertyTypeCodeSequence, SCT
    # RecommendedDisplayCIELabValue is 16-bit Lab: colours come back within rounding.
    assert np.abs(np.subtract(liver.color, study.classes[0].color)).max() <= 1


@pytest.mark.parametrize(
    ("segmentation_type", "transfer_syntax_uid"),
    [("BINARY", JPEG2000Lossless), ("LABELMAP", RLELossless), ("FRACTIONAL", JPEGLSLossless)],
)
def test_compressed_segs_read_back_exactly(
    study: SyntheticStudy, tmp_path: Path, segmentation_type: str, transfer_syntax_uid: str
) -> None:
    path = write_seg(
        study.files,
        study.labels,
        study.classes,
        tmp_path / "seg.dcm",
        segmentation_type=segmentation_type,
        transfer_syntax_uid=transfer_syntax_uid,
    )
    np.testing.assert_array_equal(read_label_source(path, study.geometry).labels, study.labels)


def test_seg_of_an_oblique_series_is_placed_in_patient_coordinates(
    oblique: SyntheticStudy, tmp_path: Path
) -> None:
    path = write_seg(oblique.files, oblique.labels, oblique.classes, tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_label_source(path, oblique.geometry).labels, oblique.labels)
    # The same SEG seen from an axis-aligned grid around the series: resampled, not refused.
    g = oblique.geometry
    axial = Geometry(g.size, g.spacing, g.origin, (1, 0, 0, 0, 1, 0, 0, 0, 1))
    expected = label_image_to_grid(array_to_image(oblique.labels, g), axial)
    assert np.count_nonzero(expected) > 100
    np.testing.assert_array_equal(read_label_source(path, axial).labels, expected)


def test_seg_covering_some_slices_leaves_the_others_background(
    study: SyntheticStudy, tmp_path: Path
) -> None:
    path = write_seg(
        study.files, study.labels, study.classes, tmp_path / "part.dcm", slices=slice(2, 5)
    )
    result = read_label_source(path, study.geometry)
    expected = np.zeros_like(study.labels)
    expected[2:5] = study.labels[2:5]
    np.testing.assert_array_equal(result.labels, expected)


def test_seg_reader_agrees_with_highdicom(study: SyntheticStudy, tmp_path: Path) -> None:
    path = write_seg(study.files, study.labels, study.classes, tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    # highdicom's own view: a (z, y, x, segment) stack in source-image order.
    stack = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=study.sop_instance_uids,
        segment_numbers=[c.id for c in study.classes],
        combine_segments=True,
        skip_overlap_checks=True,
    )
    np.testing.assert_array_equal(read_label_source(path, study.geometry).labels, stack)


def test_seg_on_another_grid_is_resampled_nearest_neighbour(
    study: SyntheticStudy, tmp_path: Path
) -> None:
    path = write_seg(study.files, study.labels, study.classes, tmp_path / "seg.dcm")
    g = study.geometry
    coarse = Geometry(
        size=(g.size[0] // 2, g.size[1] // 2, g.size[2]),
        spacing=(g.spacing[0] * 2, g.spacing[1] * 2, g.spacing[2]),
        origin=(g.origin[0] + 0.5 * g.spacing[0], g.origin[1] + 0.5 * g.spacing[1], g.origin[2]),
        direction=g.direction,
    )
    # What SimpleITK's nearest-neighbour resampling of the true label volume gives.
    truth = label_image_to_grid(array_to_image(study.labels, g), coarse)
    assert set(np.unique(truth)) == {0, 1, 2, 3, 4, 5}
    np.testing.assert_array_equal(read_label_source(path, coarse).labels, truth)


def test_seg_of_another_place_is_refused(study: SyntheticStudy, tmp_path: Path) -> None:
    path = write_seg(study.files, study.labels, study.classes, tmp_path / "seg.dcm")
    g = study.geometry
    far = Geometry(g.size, g.spacing, (g.origin[0], g.origin[1], g.origin[2] + 500.0), g.direction)
    with pytest.raises(GeometryError, match=r"none of its \d+ frame"):
        read_label_source(path, far)


# --- RTSTRUCT ---------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["study", "oblique"])
def test_rtstruct_traced_from_a_mask_gives_the_mask_back(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    series: SyntheticStudy = request.getfixturevalue(which)
    path = write_rtstruct(series.files, series.labels, series.classes, tmp_path / "rt.dcm")
    assert label_source_kind(path) == "rtstruct"
    result = read_label_source(path, series.geometry)
    assert [(c.id, c.name, c.color) for c in result.classes] == [
        (c.id, c.name, c.color) for c in series.classes
    ]
    for c in series.classes:
        assert dice(result.labels == c.id, series.labels == c.id) >= 0.98, c.name
    # The spinal canal is a hole in the spine label: a contour inside a contour.
    spine = series.labels == 4
    assert np.count_nonzero(result.labels[spine] != 4) <= 0.02 * np.count_nonzero(spine)
    np.testing.assert_array_equal(result.labels, series.labels)


def test_rtstruct_axis_aligned_polygons_holes_and_islands_are_exact(
    study: SyntheticStudy, tmp_path: Path
) -> None:
    ny, nx = study.labels.shape[1:]

    def box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels x0..x1-1, y0..y1-1: the polygon runs along their outer edges."""
        return np.array(
            [(x0 - 0.5, y0 - 0.5), (x1 - 0.5, y0 - 0.5), (x1 - 0.5, y1 - 0.5), (x0 - 0.5, y1 - 0.5)]
        )

    polygons = {
        1: {2: [box(5, 5, 25, 30), box(10, 10, 15, 20), box(30, 5, 40, 9)]},  # hole + island
        2: {3: [box(0, 0, nx, ny)], 4: [box(7, 8, 8, 9)]},  # whole slice; one voxel
    }
    classes = [ClassInfo(1, "organ", (255, 0, 0)), ClassInfo(2, "body", (0, 255, 0))]
    path = write_rtstruct(
        study.files, study.labels, classes, tmp_path / "rt.dcm", polygons=polygons
    )
    expected = np.zeros_like(study.labels)
    expected[2, 5:30, 5:25] = 1
    expected[2, 10:20, 10:15] = 0
    expected[2, 5:9, 30:40] = 1
    expected[3] = 2
    expected[4, 8, 7] = 2
    np.testing.assert_array_equal(read_label_source(path, study.geometry).labels, expected)


def test_fill_polygons_agrees_with_matplotlib() -> None:
    path_module = require_module("matplotlib.path")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:60, :70]
    centres = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
    for _ in range(5):
        angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
        radius = rng.uniform(8, 25, 40)
        star = np.column_stack([35 + radius * np.cos(angles), 30 + radius * np.sin(angles)])
        inner = np.column_stack([35 + 4 * np.cos(angles), 30 + 4 * np.sin(angles)])
        ours = fill_polygons([star, inner], (60, 70))
        theirs = path_module.Path(star).contains_points(centres) ^ path_module.Path(
            inner
        ).contains_points(centres)
        # Only voxel centres exactly on an edge may differ (boundary rules).
        assert np.count_nonzero(ours.ravel() != theirs) <= 2


def test_rtstruct_contours_off_the_series_are_refused(
    study: SyntheticStudy, tmp_path: Path
) -> None:
    path = write_rtstruct(study.files, study.labels, study.classes, tmp_path / "rt.dcm")
    g = study.geometry
    far = Geometry(g.size, g.spacing, (g.origin[0], g.origin[1], g.origin[2] - 300.0), g.direction)
    with pytest.raises(GeometryError, match=r"none of its \d+ contour"):
        read_label_source(path, far)


# --- 3D Slicer .seg.nrrd ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def slicer_data() -> Path:
    slicerio = require_module("slicerio")
    folder = Path(slicerio.__file__).parent / "data"
    require((folder / "Segmentation.seg.nrrd").is_file(), "slicerio's sample data is missing")
    return folder


def test_slicer_segmentation_keeps_segment_names_on_the_chest_ct(slicer_data: Path) -> None:
    import slicerio

    ct = sitk.ReadImage(str(slicer_data / "CTChest4.nrrd"))
    seg_path = slicer_data / "Segmentation.seg.nrrd"
    result = read_label_source(seg_path, image_geometry(ct))
    raw = slicerio.read_segmentation(str(seg_path))
    names = [s["name"] for s in raw["segments"]]
    assert len(names) == 7
    assert [c.name for c in result.classes] == names
    assert result.classes[4].snomed_code == "39607008"  # right lung: SCT Lung
    voxels = np.asarray(raw["voxels"]).transpose(2, 1, 0)  # (i, j, k) -> (z, y, x)
    for c, segment in zip(result.classes, raw["segments"], strict=True):
        assert np.count_nonzero(result.labels == c.id) == np.count_nonzero(
            voxels == segment["labelValue"]
        ), c.name


def test_slicer_segmentation_maps_onto_a_flipped_grid(slicer_data: Path) -> None:
    ct = sitk.ReadImage(str(slicer_data / "CTChest4.nrrd"))
    seg_path = slicer_data / "Segmentation.seg.nrrd"
    straight = read_label_source(seg_path, image_geometry(ct)).labels
    flipped_ct = sitk.Flip(ct, [True, False, True])
    flipped = read_label_source(seg_path, image_geometry(flipped_ct)).labels
    np.testing.assert_array_equal(flipped, straight[::-1, :, ::-1])


def test_overlapping_slicer_segments_are_reported(slicer_data: Path) -> None:
    import slicerio

    path = slicer_data / "SegmentationOverlapping.seg.nrrd"
    raw = slicerio.read_segmentation(str(path))
    ijk_to_lps = np.asarray(raw["ijkToLPS"])
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    size = np.asarray(raw["voxels"]).shape[-3:]
    geometry = Geometry(
        tuple(int(v) for v in size),  # type: ignore[arg-type]
        tuple(float(v) for v in spacing),  # type: ignore[arg-type]
        tuple(float(v) for v in ijk_to_lps[:3, 3]),  # type: ignore[arg-type]
        tuple(float(v) for v in (ijk_to_lps[:3, :3] / spacing).ravel()),
    )
    result = read_label_source(path, geometry)
    assert [c.name for c in result.classes] == [s["name"] for s in raw["segments"]]
    assert any("overlap" in w for w in result.warnings)


# --- PNG masks --------------------------------------------------------------------------------


def test_png_masks_grey_and_rgb(study: SyntheticStudy, tmp_path: Path) -> None:
    grey, rgb = tmp_path / "grey", tmp_path / "rgb"
    grey.mkdir()
    rgb.mkdir()
    palette = np.zeros((256, 3), np.uint8)
    for c in study.classes:
        palette[c.id] = c.color
    for z in range(study.labels.shape[0]):
        if z == 3:
            continue  # a slice without a mask is background
        Image.fromarray(study.labels[z]).save(grey / f"mask_{z:03d}.png")
        Image.fromarray(palette[study.labels[z]]).save(rgb / f"{z + 1}.png")  # numbered from 1
    expected = study.labels.copy()
    expected[3] = 0
    result = read_label_source(grey, study.geometry, classes=study.classes)
    np.testing.assert_array_equal(result.labels, expected)
    assert [c.name for c in result.classes] == [c.name for c in study.classes]
    result = read_label_source(rgb, study.geometry, classes=study.classes)
    np.testing.assert_array_equal(result.labels, expected)
    with pytest.raises(InputError, match="need a class map with colours"):
        read_label_source(rgb, study.geometry)


def test_bad_png_masks_say_what_is_wrong(study: SyntheticStudy, tmp_path: Path) -> None:
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "0.png")
    with pytest.raises(InputError, match="10x10 but the series' slices are 44x48"):
        read_label_source(tmp_path, study.geometry)
    (tmp_path / "0.png").unlink()
    Image.fromarray(np.zeros((48, 44), np.uint8)).save(tmp_path / "99.png")
    with pytest.raises(InputError, match=r"slice number\(s\) \[99\] are outside"):
        read_label_source(tmp_path, study.geometry)


# --- class maps -------------------------------------------------------------------------------


def test_given_class_map_renumbers_named_sources_by_name(
    study: SyntheticStudy, tmp_path: Path
) -> None:
    path = write_seg(study.files, study.labels, study.classes, tmp_path / "seg.dcm")
    mine = [ClassInfo(10 + c.id, c.name, c.color) for c in reversed(study.classes)]
    result = read_label_source(path, study.geometry, classes=mine)
    np.testing.assert_array_equal(result.labels, np.where(study.labels > 0, study.labels + 10, 0))
    with pytest.raises(InputError, match="no class named 'kidneys'"):
        read_label_source(path, study.geometry, classes=mine[1:])


def test_class_ids_never_collide_silently() -> None:
    a = [ClassInfo(1, "liver"), ClassInfo(2, "spleen")]
    b = [ClassInfo(1, "spleen"), ClassInfo(3, "tumour")]
    with pytest.raises(InputError, match='id 1 is "liver" in one source and "spleen"'):
        merge_class_maps(a, b)
    merged, lut = merge_class_maps(a, b, remap="by_name")
    assert [(c.id, c.name) for c in merged] == [(1, "liver"), (2, "spleen"), (3, "tumour")]
    assert (lut[1], lut[3]) == (2, 3)
    same, identity = merge_class_maps(a, [ClassInfo(3, "tumour")])
    assert [c.id for c in same] == [1, 2, 3] and np.array_equal(identity, np.arange(256))


def test_unknown_files_are_refused_with_what_is_accepted(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(InputError, match="label sources are a NIfTI"):
        label_source_kind(junk)


def test_pydicoms_real_rtstruct_with_points_and_no_preamble() -> None:
    """pydicom's rtstruct.dcm: a body outline on three slices and two POINT isocentres."""
    from pydicom.data import get_testdata_file

    path = Path(str(get_testdata_file("rtstruct.dcm")))
    assert label_source_kind(path) == "rtstruct"
    # 2 mm voxels over x, y -250..250 and the three contoured planes (z -200, -190, -180).
    grid = Geometry(
        (250, 250, 3), (2.0, 2.0, 10.0), (-249.0, -249.0, -200.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    )
    result = read_label_source(path, grid)
    assert [(c.id, c.name) for c in result.classes] == [(1, "patient")]
    assert any("2 point or open contour(s) were ignored" in w for w in result.warnings)
    # The first plane's outline is the rectangle x -200..200, y -150..150: 200 x 150 voxels.
    first = result.labels[0] == 1
    ys, xs = np.nonzero(first)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (25, 224, 50, 199)
    assert np.count_nonzero(first) == 200 * 150
    assert all(np.count_nonzero(result.labels[z]) > 0 for z in range(3))
