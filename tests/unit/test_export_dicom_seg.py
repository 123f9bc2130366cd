"""The ``dicom-seg`` exporter: a prediction as a DICOM SEG that viewers and PACS accept.

Every export is read back by two readers that share no code with the writer — highdicom's
``segread`` (by source instance) and radseg's own SEG reader (by patient position) — and both
must give the prediction's voxels and class names exactly.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.pixels import pack_bits

from radseg.contracts import Exporter, ExportRequest, SourceSeries
from radseg.errors import InputError, PluginConfigError
from radseg.imaging.dciodvfy import find_dciodvfy, validate
from radseg.imaging.label_sources.seg import read_seg
from radseg_plugins.exporters import dicom_seg
from radseg_plugins.exporters.dicom_seg import DicomSegExporter, DicomSegSettings
from tests.export_support import export_request, from_enhanced_source, with_labels
from tests.support import require

SHAPE = (6, 40, 36)
SEG_TYPES = ("binary", "labelmap")
#: What the installed dciodvfy (dicom3tools 2022) says about any Label Map Segmentation: it
#: predates that IOD (DICOM 2024), so it finds no IOD and applies the old SEG rule that segment
#: numbers start at 1, where a label map's background is segment 0.
LABELMAP_UNKNOWN_TO_DCIODVFY = {
    "Error - Information Object Not found",
    "Error - </SegmentSequence(0062,0002)[1]/SegmentNumber(0062,0004)> - SegmentNumber not "
    "monotonically increasing from one by one - have SegmentSequence item number 1 (from one) "
    "with SegmentNumber of 0",
}


def export(
    tmp_path: Path, seg_type: str = "binary", **kwargs: object
) -> tuple[ExportRequest, Path]:
    request, _ = export_request(
        tmp_path,
        shape=SHAPE,
        options={"seg_type": seg_type},
        **kwargs,  # type: ignore[arg-type]
    )
    return request, DicomSegExporter().export(request, tmp_path / "prediction")


def checks(request: ExportRequest, path: Path) -> dict[str, tuple[bool | None, str]]:
    return {c.name: (c.passed, c.detail) for c in DicomSegExporter().verify(request, path)}


def assert_round_trips(request: ExportRequest, path: Path) -> None:
    """highdicom and radseg's own SEG reader both give the prediction back exactly."""
    results = checks(request, path)
    assert {name: passed for name, (passed, _) in results.items()} == {
        "segments": True,
        "voxels (highdicom)": True,
        "geometry": True,
        "references": True,
    }, results
    assert "0 voxel(s) differ" in results["voxels (highdicom)"][1]
    second = read_seg(path, request.geometry)
    np.testing.assert_array_equal(second.labels, request.labels)
    assert [c.name for c in second.classes] == [c.name for c in request.classes]


def test_is_a_dicom_exporter_named_dicom_seg() -> None:
    exporter = DicomSegExporter()
    assert isinstance(exporter, Exporter)
    assert (exporter.name, exporter.suffix, exporter.dicom) == ("dicom-seg", ".dcm", True)
    assert dicom_seg.radseg_register_exporters() == [DicomSegExporter]


@pytest.mark.parametrize("seg_type", SEG_TYPES)
def test_round_trips_voxel_identical_through_two_readers(tmp_path: Path, seg_type: str) -> None:
    request, path = export(tmp_path, seg_type)
    assert path == tmp_path / "prediction.dcm"
    assert len(np.unique(request.labels)) == 6  # every class is present
    assert_round_trips(request, path)
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == seg_type.upper()
    assert seg.SOPClassUID == (
        "1.2.840.10008.5.1.4.1.1.66.7" if seg_type == "labelmap" else "1.2.840.10008.5.1.4.1.1.66.4"
    )


@pytest.mark.parametrize("seg_type", SEG_TYPES)
def test_oblique_series_round_trips(tmp_path: Path, seg_type: str) -> None:
    request, path = export(
        tmp_path, seg_type, image_orientation_patient=(0.98, 0.17, 0.0, -0.17, 0.98, 0.0)
    )
    direction = np.asarray(request.geometry.direction).reshape(3, 3)
    assert not np.allclose(direction, np.eye(3), atol=0.1)
    assert_round_trips(request, path)


def test_class_ids_need_not_be_contiguous(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path, shape=SHAPE, options={"seg_type": "labelmap"})
    # Class 4 becomes 9: segment 4 of the SEG must read back as class 9.
    labels = request.labels.copy()
    labels[labels == 4] = 9
    classes = [replace(c, id=9) if c.id == 4 else c for c in request.classes]
    request = replace(request, labels=labels, classes=classes)
    path = DicomSegExporter().export(request, tmp_path / "gaps.dcm")
    results = checks(request, path)
    assert all(passed for passed, _ in results.values()), results


def test_segments_carry_codes_colours_and_algorithm(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path, shape=SHAPE)
    classes = [replace(c, name="thing") if c.name == "kidneys" else c for c in request.classes]
    request = replace(request, classes=classes)
    path = DicomSegExporter().export(request, tmp_path / "codes")
    seg = pydicom.dcmread(path)
    segments = {str(item.SegmentLabel): item for item in seg.SegmentSequence}
    assert list(segments) == ["liver", "lung_left", "lung_right", "spine", "thing"]

    def coded(item: pydicom.Dataset, sequence: str) -> tuple[str, str]:
        code = item[sequence][0]
        return str(code.CodeValue), str(code.CodingSchemeDesignator)

    liver = segments["liver"]
    assert coded(liver, "SegmentedPropertyTypeCodeSequence") == ("10200004", "SCT")
    assert coded(liver, "SegmentedPropertyCategoryCodeSequence") == ("91723000", "SCT")
    # A class without a code and without a known anatomical name falls back to Tissue.
    thing = segments["thing"]
    assert coded(thing, "SegmentedPropertyTypeCodeSequence") == ("85756007", "SCT")
    assert coded(thing, "SegmentedPropertyCategoryCodeSequence") == ("85756007", "SCT")
    # A known name is coded, with its laterality as a modifier.
    lung = segments["lung_left"]["SegmentedPropertyTypeCodeSequence"][0]
    assert str(lung.CodeValue) == "39607008"  # Lung
    assert str(lung.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue) == "7771000"  # Left

    for cls in request.classes:
        lab = [int(v) for v in segments[cls.name].RecommendedDisplayCIELabValue]
        rgb = hd.color.CIELabColor.from_dicom_value(lab).to_rgb()
        assert max(abs(int(a) - b) for a, b in zip(rgb, cls.color, strict=True)) <= 1, cls
        algorithm = segments[cls.name].SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == request.algorithm.name
        assert algorithm.AlgorithmVersion == request.algorithm.version
        assert segments[cls.name].SegmentAlgorithmType == "AUTOMATIC"
    # The second reader takes the code back as the class's SNOMED code.
    second = read_seg(path, request.geometry)
    assert {c.name: c.snomed_code for c in second.classes}["liver"] == "10200004"


@pytest.mark.parametrize("seg_type", SEG_TYPES)
def test_references_point_at_the_source_instances(tmp_path: Path, seg_type: str) -> None:
    request, path = export(tmp_path, seg_type)
    source = pydicom.dcmread(request.series.instances[0], stop_before_pixels=True)
    seg = pydicom.dcmread(path)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {s.sop_instance_uid for s in request.series.slices}
    # Each frame references the source instance at its own position.
    uid_at = {
        tuple(round(v, 3) for v in s.image_position_patient): s.sop_instance_uid
        for s in request.series.slices
    }
    for frame in seg.PerFrameFunctionalGroupsSequence:
        position = tuple(
            round(float(v), 3) for v in frame.PlanePositionSequence[0].ImagePositionPatient
        )
        source_item = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert source_item.ReferencedSOPInstanceUID == uid_at[position]


def test_copies_the_de_identified_patient_and_adds_no_person_name(tmp_path: Path) -> None:
    request, path = export(tmp_path)
    source = pydicom.dcmread(request.series.instances[0], stop_before_pixels=True)
    seg = pydicom.dcmread(path)
    assert (seg.PatientName, seg.PatientID) == (source.PatientName, source.PatientID)

    def person_names(ds: pydicom.Dataset) -> set[str]:
        names: set[str] = set()
        ds.walk(lambda _, elem: names.add(str(elem.value)) if elem.VR == "PN" else None)
        return names - {""}

    assert person_names(seg) <= person_names(source)
    assert "ContentCreatorName" not in seg or not seg.ContentCreatorName


@pytest.mark.parametrize("seg_type", SEG_TYPES)
def test_dciodvfy_finds_no_errors(tmp_path: Path, seg_type: str) -> None:
    require(find_dciodvfy() is not None, "dciodvfy (apt-get install dicom3tools)")
    _, path = export(tmp_path, seg_type)
    result = validate(path)
    assert result.errors == []
    if seg_type == "labelmap":
        # this dciodvfy (2022) predates the Label Map IOD: radseg checks the file as a
        # Segmentation and sets aside only that IOD's own rules, saying so
        assert any("checked as a Segmentation" in w for w in result.warnings)


def test_a_dciodvfy_that_hangs_is_a_failed_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from radseg.imaging import dciodvfy

    def hang(path: Path, *, executable: str | None = None) -> dciodvfy.DciodvfyResult:
        raise subprocess.TimeoutExpired(["dciodvfy", str(path)], 120)

    monkeypatch.setattr(dciodvfy, "find_dciodvfy", lambda: "/usr/bin/dciodvfy")
    monkeypatch.setattr(dciodvfy, "validate", hang)
    check = dciodvfy.dciodvfy_check([tmp_path / "seg.dcm"])
    assert check.passed is False
    assert "seg.dcm: dciodvfy could not check it (TimeoutExpired)" in check.detail


def test_a_real_defect_in_a_label_map_is_still_reported(tmp_path: Path) -> None:
    require(find_dciodvfy() is not None, "dciodvfy (apt-get install dicom3tools)")
    _, path = export(tmp_path, "labelmap")
    broken = pydicom.dcmread(path)
    del broken.ContentLabel  # type 1 in the Segmentation Image module
    broken.save_as(path)
    errors = validate(path).errors
    assert any("ContentLabel" in e for e in errors), errors


@pytest.mark.parametrize("seg_type", SEG_TYPES)
def test_an_empty_prediction_still_exports(tmp_path: Path, seg_type: str) -> None:
    request, _ = export_request(tmp_path, shape=SHAPE, options={"seg_type": seg_type})
    request = with_labels(request, np.zeros_like(request.labels))
    path = DicomSegExporter().export(request, tmp_path / "empty")
    assert_round_trips(request, path)
    if seg_type == "binary" and find_dciodvfy() is not None:
        assert validate(path).errors == []


def test_verify_fails_when_a_voxel_in_the_file_changed(tmp_path: Path) -> None:
    request, path = export(tmp_path)
    seg = pydicom.dcmread(path)
    frames = seg.pixel_array.copy()
    frames[0, 3, 4] ^= 1
    seg.PixelData = pack_bits(frames)
    seg.save_as(path)
    passed, detail = checks(request, path)["voxels (highdicom)"]
    assert passed is False
    assert "1 voxel(s) differ" in detail


def test_verify_fails_when_the_prediction_differs(tmp_path: Path) -> None:
    request, path = export(tmp_path, "labelmap")
    other = request.labels.copy()
    other[2, 10:12, 10:15] = 5 - other[2, 10:12, 10:15] % 5  # 10 voxels change class
    changed = int(np.count_nonzero(other != request.labels))
    results = checks(with_labels(request, other), path)
    assert results["voxels (highdicom)"] == (
        False,
        f"{SHAPE[0]} slices × {SHAPE[1]}×{SHAPE[2]}: {changed} voxel(s) differ, 5 segment(s), "
        f"{hd.seg.segread(path).NumberOfFrames} frame(s)",
    )
    renamed = [replace(c, name="heart") if c.id == 2 else c for c in request.classes]
    passed, detail = checks(replace(request, classes=renamed), path)["segments"]
    assert passed is False
    assert "lung_left" in detail and "heart" in detail


def test_verify_fails_when_a_frame_moved(tmp_path: Path) -> None:
    request, path = export(tmp_path)
    seg = pydicom.dcmread(path)
    position = seg.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0]
    position.ImagePositionPatient = [float(position.ImagePositionPatient[0]) + 0.5] + [
        float(v) for v in position.ImagePositionPatient[1:]
    ]
    seg.save_as(path)
    passed, detail = checks(request, path)["geometry"]
    assert passed is False
    assert "frame 3 lies 0.5 mm off" in detail


def test_multiframe_source_round_trips(tmp_path: Path) -> None:
    request, study = export_request(tmp_path, shape=SHAPE)
    request, _ = from_enhanced_source(request, study, tmp_path)
    frames = [s.frame_number for s in request.series.slices]
    assert frames == list(range(SHAPE[0], 0, -1))  # frame order is the reverse of slice order
    path = DicomSegExporter().export(request, tmp_path / "from-enhanced")
    assert_round_trips(request, path)


def test_a_series_without_dicom_originals_is_refused(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path, shape=SHAPE)
    series: SourceSeries = replace(request.series, instances=[])
    with pytest.raises(InputError, match=r"no DICOM originals.*export it as nifti"):
        DicomSegExporter().export(replace(request, series=series), tmp_path / "x")
    assert not list(tmp_path.glob("x*"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seg_type": "fractional"}, "valid values: binary, labelmap"),
        ({"segtype": "binary"}, "unknown option 'segtype' .valid options: seg_type"),
    ],
)
def test_bad_options_are_refused_naming_the_valid_ones(
    tmp_path: Path, options: dict[str, str], message: str
) -> None:
    request, _ = export_request(tmp_path, shape=SHAPE, options=options)
    with pytest.raises(InputError, match=message):
        DicomSegExporter().export(request, tmp_path / "x")


def test_class_ids_missing_from_the_class_map_are_refused(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path, shape=SHAPE)
    with pytest.raises(InputError, match=r"class ids \[1\] that its class map does not list"):
        DicomSegExporter().export(
            replace(request, classes=[c for c in request.classes if c.id != 1]), tmp_path / "x"
        )


def test_settings_choose_the_default_type_and_are_validated(tmp_path: Path) -> None:
    def platform(raw: dict[str, object]) -> SimpleNamespace:
        return SimpleNamespace(settings=SimpleNamespace(plugin_settings=lambda name: raw))

    settings = dicom_seg.radseg_configure(platform({"seg_type": "labelmap", "manufacturer": "Lab"}))
    assert settings == DicomSegSettings(seg_type="labelmap", manufacturer="Lab")
    request, _ = export_request(tmp_path, shape=SHAPE)
    seg = pydicom.dcmread(DicomSegExporter(settings).export(request, tmp_path / "x"))
    assert (seg.SegmentationType, seg.Manufacturer) == ("LABELMAP", "Lab")
    assert seg.SeriesDescription == "radseg prediction"
    # A per-export option wins over the setting.
    binary = replace(request, options={"seg_type": "binary"})
    seg = pydicom.dcmread(DicomSegExporter(settings).export(binary, tmp_path / "y"))
    assert seg.SegmentationType == "BINARY"
    with pytest.raises(PluginConfigError, match=r"plugins.dicom-seg.*seg_type"):
        dicom_seg.radseg_configure(platform({"seg_type": "probability"}))
    with pytest.raises(PluginConfigError, match="colour"):
        dicom_seg.radseg_configure(platform({"colour": "red"}))


def test_class_colours_are_independent_of_ids(tmp_path: Path) -> None:
    # Guard against mapping colours by position in an unsorted class map.
    request, _ = export_request(tmp_path, shape=SHAPE)
    shuffled = replace(request, classes=list(reversed(request.classes)))
    seg = pydicom.dcmread(DicomSegExporter().export(shuffled, tmp_path / "x"))
    by_name = {c.name: c for c in request.classes}
    for item in seg.SegmentSequence:
        rgb = hd.color.CIELabColor.from_dicom_value(
            [int(v) for v in item.RecommendedDisplayCIELabValue]
        ).to_rgb()
        expected = by_name[str(item.SegmentLabel)].color
        assert math.dist(rgb, expected) <= 2
