"""The ``rtstruct`` exporter: contours that fill back to the prediction, valid references."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

import radseg
from radseg.contracts import Exporter, ExportRequest
from radseg.errors import InputError
from radseg.imaging.dciodvfy import find_dciodvfy, validate
from radseg.imaging.label_sources.rtstruct import fill_polygons, read_rtstruct, rtstruct_classes
from radseg_plugins.exporters.rtstruct import (
    RTSTRUCT_SOP_CLASS_UID,
    RtstructExporter,
    mask_to_contours,
    radseg_register_exporters,
)
from tests.export_support import export_request, from_enhanced_source, with_labels
from tests.support import require

OBLIQUE = (0.8660254, 0.5, 0.0, -0.35355339, 0.61237244, 0.70710678)


def _export(request: ExportRequest, tmp_path: Path, name: str = "pred") -> Path:
    return RtstructExporter().export(request, tmp_path / "out" / name)


def _checks(request: ExportRequest, written: Path) -> dict[str, tuple[bool | None, str]]:
    return {c.name: (c.passed, c.detail) for c in RtstructExporter().verify(request, written)}


def _hand_made(shape: tuple[int, int, int]) -> np.ndarray:
    """A ring with an island in its hole, two blobs, a one-pixel dot and a diagonal pair."""
    labels = np.zeros(shape, dtype=np.uint8)
    k = shape[0] // 2
    labels[k, 10:40, 10:40] = 1  # ring: outer square ...
    labels[k, 15:35, 15:35] = 0  # ... with a hole
    labels[k, 22:28, 20:26] = 1  # island inside the hole
    labels[k, 45:50, 5:12] = 2  # two separate blobs of one class
    labels[k, 45:60, 30:33] = 2
    labels[k, 2, 60] = 3  # a single pixel
    labels[k, 5, 5] = labels[k, 6, 6] = 3  # two pixels touching at a corner only
    labels[k, 40:45, 10:40] = 4  # touches the ring's outer edge
    labels[k + 1, 0:8, 56:64] = 1  # a blob in the image corner, on the next slice
    return labels


def test_registers_an_exporter_that_fits_the_contract() -> None:
    assert radseg_register_exporters() == [RtstructExporter]
    exporter = RtstructExporter()
    assert isinstance(exporter, Exporter)
    assert (exporter.name, exporter.suffix, exporter.dicom) == ("rtstruct", ".dcm", True)


def test_phantom_round_trips_exactly_through_radseg_reader(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path)
    written = _export(request, tmp_path)
    assert written == tmp_path / "out" / "pred.dcm"
    volume = read_rtstruct(written, request.geometry)
    for info in request.classes:
        expected = request.labels == info.id
        filled = volume.labels == info.id
        assert expected.any()
        dice = 2 * np.count_nonzero(expected & filled) / (expected.sum() + filled.sum())
        assert dice >= 0.98, info.name
    np.testing.assert_array_equal(volume.labels, request.labels)
    classes, _ = rtstruct_classes(pydicom.dcmread(written))
    assert [(c.id, c.name, c.color) for c in classes] == [
        (c.id, c.name, c.color) for c in request.classes
    ]


def test_written_header_belongs_to_the_source_study(tmp_path: Path) -> None:
    request, study = export_request(tmp_path)
    ds = pydicom.dcmread(_export(request, tmp_path))
    source = pydicom.dcmread(study.files[0], stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == RTSTRUCT_SOP_CLASS_UID
    assert ds.Modality == "RTSTRUCT"
    assert (ds.PatientID, ds.PatientName, ds.StudyInstanceUID) == (
        source.PatientID,
        source.PatientName,
        source.StudyInstanceUID,
    )
    assert ds.SeriesInstanceUID not in (source.SeriesInstanceUID, "")
    assert ds.SOPInstanceUID != source.SOPInstanceUID
    assert (ds.Manufacturer, ds.SoftwareVersions) == ("radseg", radseg.__version__)
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == study.frame_of_reference_uid
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == study.series_instance_uid
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == (
        study.sop_instance_uids
    )
    roi = ds.StructureSetROISequence[0]
    assert roi.ROIGenerationAlgorithm == "AUTOMATIC"
    assert request.algorithm.name in roi.ROIGenerationDescription
    observation = ds.RTROIObservationsSequence[0]
    assert observation.RTROIInterpretedType == "ORGAN"
    # Each contour references the source instance of the slice it lies on.
    for item in ds.ROIContourSequence:
        for contour in item.ContourSequence:
            image = contour.ContourImageSequence[0]
            assert image.ReferencedSOPClassUID == source.SOPClassUID
            k = study.sop_instance_uids.index(image.ReferencedSOPInstanceUID)
            z = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)[:, 2]
            np.testing.assert_allclose(z, request.series.slices[k].image_position_patient[2])


def test_rings_islands_and_separate_blobs_come_back_exactly(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path)
    labels = _hand_made(request.labels.shape)
    request = with_labels(request, labels)
    written = _export(request, tmp_path)
    np.testing.assert_array_equal(read_rtstruct(written, request.geometry).labels, labels)
    ds = pydicom.dcmread(written)
    ring = next(r for r in ds.ROIContourSequence if r.ReferencedROINumber == 1)
    # outer, hole and island on the middle slice, the corner blob on the next one
    assert len(ring.ContourSequence) == 4
    checks = _checks(request, written)
    assert checks["contours re-rasterised"][0] is True, checks


@pytest.mark.parametrize("seed", range(20))
def test_contours_of_noisy_masks_fill_back_exactly(seed: int) -> None:
    # Salt-and-pepper masks have every awkward topology: corner-touching pixels and holes,
    # one-pixel holes, holes in islands in holes.
    rng = np.random.default_rng(seed)
    mask = rng.random((24, 24)) < rng.uniform(0.2, 0.8)
    contours = mask_to_contours(mask)
    assert all(len(c) >= 3 for c in contours)
    np.testing.assert_array_equal(fill_polygons(contours, mask.shape), mask)


def test_oblique_series_round_trips(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path, image_orientation_patient=OBLIQUE)
    direction = np.asarray(request.geometry.direction).reshape(3, 3)
    assert abs(direction[2, 2]) < 0.99  # the slices really are oblique
    written = _export(request, tmp_path)
    np.testing.assert_array_equal(read_rtstruct(written, request.geometry).labels, request.labels)
    checks = _checks(request, written)
    assert all(passed for passed, _ in checks.values()), checks


def test_dciodvfy_finds_no_errors(tmp_path: Path) -> None:
    require(find_dciodvfy() is not None, "dciodvfy (apt-get install dicom3tools)")
    request, _ = export_request(tmp_path)
    result = validate(_export(request, tmp_path))
    assert result.errors == []
    empty = with_labels(request, np.zeros_like(request.labels))
    assert validate(_export(empty, tmp_path, "empty")).errors == []


def test_verify_passes_with_per_class_dice(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path)
    checks = _checks(request, _export(request, tmp_path))
    assert checks["contours re-rasterised"][0] is True
    assert "liver 1.0000/1.0000" in checks["contours re-rasterised"][1]
    assert checks["references"][0] is True, checks["references"]


def test_verify_fails_when_the_file_is_not_the_prediction(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path)
    written = _export(request, tmp_path)
    other = request.labels.copy()
    other[other == 1] = 0  # the liver is gone from what the file should hold
    passed, detail = _checks(with_labels(request, other), written)["contours re-rasterised"]
    assert passed is False
    assert detail.startswith("Dice below 0.98 for liver.")  # only the failing class first
    assert "liver 0.0000/0.0000" in detail
    assert "lung_left 1.0000/1.0000" in detail


def test_verify_fails_on_a_reference_outside_the_source_series(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path)
    written = _export(request, tmp_path)
    ds = pydicom.dcmread(written)
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    series.ContourImageSequence[0].ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
    ds.StructureSetROISequence[0].ROIName = "renamed"
    ds.save_as(written)
    passed, detail = _checks(request, written)["references"]
    assert passed is False
    assert "1 foreign" in detail and "renamed" in detail


def test_empty_prediction_keeps_every_roi_without_contours(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path)
    empty = with_labels(request, np.zeros_like(request.labels))
    written = _export(empty, tmp_path)
    ds = pydicom.dcmread(written)
    assert [r.ROIName for r in ds.StructureSetROISequence] == [c.name for c in request.classes]
    assert all("ContourSequence" not in r for r in ds.ROIContourSequence)
    assert not read_rtstruct(written, request.geometry).labels.any()
    checks = _checks(empty, written)
    assert all(passed for passed, _ in checks.values()), checks
    assert "liver empty" in checks["contours re-rasterised"][1]


def test_series_without_dicom_originals_is_refused(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path)
    no_sources = replace(request, series=replace(request.series, instances=[]))
    with pytest.raises(InputError, match=r"no DICOM originals.*nifti"):
        _export(no_sources, tmp_path)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_writes_atomically_with_a_dcm_suffix(tmp_path: Path) -> None:
    request, _ = export_request(tmp_path)
    written = RtstructExporter().export(request, tmp_path / "out" / "pred.rt")
    assert written.name == "pred.rt.dcm"
    assert [p.name for p in written.parent.iterdir()] == ["pred.rt.dcm"]
    wrong_shape = with_labels(request, request.labels[:, :10])
    with pytest.raises(InputError, match="shape"):
        RtstructExporter().export(wrong_shape, tmp_path / "out" / "bad")
    assert [p.name for p in written.parent.iterdir()] == ["pred.rt.dcm"]


def test_an_enhanced_multiframe_source_is_referenced_frame_by_frame(tmp_path: Path) -> None:
    request, study = export_request(tmp_path, shape=(6, 48, 48))
    request, frame_at = from_enhanced_source(request, study, tmp_path)
    written = _export(request, tmp_path)
    checks = _checks(request, written)
    assert all(passed for passed, _ in checks.values()), checks
    ds = pydicom.dcmread(written)
    referenced = {
        (str(image.ReferencedSOPInstanceUID), int(image.ReferencedFrameNumber))
        for roi in ds.ROIContourSequence
        for contour in roi.get("ContourSequence", [])
        for image in contour.ContourImageSequence
    }
    assert referenced  # the phantom has contours
    # every contour names the enhanced instance and the frame of its own slice
    z_of_frame = {f: z for z, f in frame_at.items()}
    for roi in ds.ROIContourSequence:
        for contour in roi.get("ContourSequence", []):
            (image,) = contour.ContourImageSequence
            z = float(contour.ContourData[2])
            assert round(z, 3) == z_of_frame[int(image.ReferencedFrameNumber)]
    back = read_rtstruct(written, request.geometry).labels
    assert np.array_equal(back, request.labels)
    if find_dciodvfy() is not None:
        assert validate(written).errors == []
