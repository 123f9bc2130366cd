"""radseg's exports, read by the tools its users run: the field's own readers, not radseg's.

- **dcmqi** (``segimage2itkimage``, the converter 3D Slicer's SEG import uses) turns every SEG
  radseg writes — BINARY and LABELMAP, axial and oblique, on single-frame and enhanced
  multi-frame sources — back into volumes that, resampled onto the series, equal the prediction
  voxel for voxel, with each segment under its class name.
- **dcmjs** (the parser OHIF uses, run with Node) finds in each SEG what OHIF's SEG loader needs:
  a top-level ReferencedSeriesSequence that is the source series, a SourceImageSequence in every
  frame naming an instance of it, every frame in the plane of the instance it names, and each
  segment's label and colour.
- **dicompyler-core** (an RT planning reader, with its own contour rasteriser: matplotlib's
  point-in-polygon on the CT's pixel centres, holes by XOR) rasterises radseg's RTSTRUCT to a
  per-class Dice of at least 0.98 against the prediction.
- **nibabel** reads the NIfTI export with the series' affine, computed here from the DICOM
  headers (ImagePositionPatient, ImageOrientationPatient, PixelSpacing), not from radseg.

The tools are pinned: dcmqi and nibabel in pyproject.toml (``dev`` extra), dcmjs in
tools/node/package-lock.json (``make node-deps``), dicompyler-core in
tools/rt-reader/requirements.txt, in a venv of its own (``make rt-reader`` → ``.venv-rt``:
it needs pydicom 2, radseg pydicom 3). A missing one skips locally and fails under CI
(:func:`tests.support.require`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radseg.contracts import ExportRequest
from radseg.imaging.volumes import array_to_image
from radseg_plugins.exporters.dicom_seg import DicomSegExporter
from radseg_plugins.exporters.nifti import NiftiExporter
from radseg_plugins.exporters.rtstruct import RtstructExporter
from tests.export_support import export_request, from_enhanced_source, with_labels
from tests.support import require, require_module

SHAPE = (6, 40, 36)  # (z, y, x): x != y, so a swapped axis cannot pass
OBLIQUE = (0.98, 0.17, 0.0, -0.17, 0.98, 0.0)
REPO = Path(__file__).resolve().parents[2]
NODE_TOOLS = REPO / "tools" / "node"
#: how far the RGB that dcmjs (so OHIF) shows may be from the class colour, per channel (0-255).
#: radseg writes the standard CIELab (sRGB, D65: checked against scikit-image below, to 4 units
#: of 65535); dcmjs's own ``dicomlab2RGB`` approximates the inverse and lands up to 9 units off
#: (lung_right 111,184,210 shows as 120,184,210; its ``rgb2DICOMLAB`` is its exact inverse, so
#: the gap is dcmjs's conversion, not the file)
COLOUR_TOLERANCE = 12
#: CIELab as DICOM encodes it (PS3.3 C.10.7.1.1), in units of the 16-bit encoding
CIELAB_TOLERANCE = 4


# -- the tools ------------------------------------------------------------------------------


def segimage2itkimage() -> str:
    """dcmqi's converter: the one the venv's dcmqi wheel installed next to python."""
    beside = Path(sys.executable).parent / "segimage2itkimage"
    found = str(beside) if beside.exists() else shutil.which("segimage2itkimage")
    require(found is not None, "dcmqi's segimage2itkimage is not installed; run `make install`")
    assert found is not None
    return found


def node_reader() -> list[str]:
    node = shutil.which("node")
    require(node is not None, "node is not installed (Debian package nodejs)")
    require(
        (NODE_TOOLS / "node_modules" / "dcmjs" / "package.json").exists(),
        "dcmjs is not installed in tools/node; run `make node-deps`",
    )
    assert node is not None
    return [node, str(NODE_TOOLS / "read_seg.js")]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done


# -- the SEGs radseg writes -----------------------------------------------------------------

SEG_CASES = {
    "binary": {"seg_type": "binary"},
    "labelmap": {"seg_type": "labelmap"},
    "binary-oblique": {"seg_type": "binary", "oblique": True},
    "labelmap-oblique": {"seg_type": "labelmap", "oblique": True},
    "binary-enhanced-source": {"seg_type": "binary", "enhanced": True},
    "labelmap-enhanced-source": {"seg_type": "labelmap", "enhanced": True},
}


def seg_export(tmp_path: Path, case: str) -> tuple[ExportRequest, Path]:
    spec: dict[str, Any] = SEG_CASES[case]
    request, study = export_request(
        tmp_path,
        shape=SHAPE,
        options={"seg_type": spec["seg_type"]},
        image_orientation_patient=OBLIQUE if spec.get("oblique") else (1.0, 0, 0, 0, 1.0, 0),
    )
    if spec.get("enhanced"):
        request, _ = from_enhanced_source(request, study, tmp_path)
    assert len(np.unique(request.labels)) == 6  # background and all five classes
    return request, DicomSegExporter().export(request, tmp_path / "prediction")


# -- dcmqi ----------------------------------------------------------------------------------


def dcmqi_volumes(seg: Path, out: Path) -> tuple[list[sitk.Image], dict[int, str]]:
    """``segimage2itkimage``'s volumes and its ``labelID → SegmentLabel`` table."""
    out.mkdir()
    done = run(
        [
            segimage2itkimage(),
            "--inputDICOM",
            str(seg),
            "--outputDirectory",
            str(out),
            "--outputType",
            "nrrd",
        ]
    )
    # dcmtk's warnings and errors (e.g. "W: ContentCreatorName (0070,0084) absent in
    # ContentIdentificationMacro (type 2)", which dcmqi reported until radseg wrote it)
    complaints = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line.lstrip().startswith(("W:", "E:", "F:"))
    ]
    assert complaints == [], complaints
    meta = json.loads((out / "meta.json").read_text())
    labels: dict[int, str] = {}
    for group in meta["segmentAttributes"]:
        for segment in group:
            labels[int(segment["labelID"])] = segment["SegmentLabel"]
    volumes = sorted(out.glob("*.nrrd"), key=lambda p: int(p.stem))
    assert len(volumes) == len(meta["segmentAttributes"])
    return [sitk.ReadImage(str(p)) for p in volumes], labels


def on_series(image: sitk.Image, request: ExportRequest) -> np.ndarray:
    """``image`` resampled (nearest neighbour) onto the series' grid, background outside it."""
    reference = array_to_image(np.zeros(request.labels.shape, np.uint8), request.geometry)
    resampled = sitk.Resample(
        image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID()
    )
    return sitk.GetArrayFromImage(resampled)


@pytest.mark.parametrize("case", list(SEG_CASES))
def test_dcmqi_reads_every_seg_back_to_the_prediction(tmp_path: Path, case: str) -> None:
    request, seg = seg_export(tmp_path, case)
    volumes, segment_labels = dcmqi_volumes(seg, tmp_path / "dcmqi")

    class_of = {c.name: c.id for c in request.classes}
    assert sorted(segment_labels.values()) == sorted(c.name for c in request.classes if c.id)
    read = np.zeros(request.labels.shape, dtype=np.int32)
    for volume in volumes:
        values = on_series(volume, request)
        for label_id in map(int, np.unique(values)):
            if label_id == 0:
                continue
            where = values == label_id
            # no voxel in two segments: the prediction is a label map
            assert not np.any(read[where]), f"segment {label_id} overlaps another"
            read[where] = class_of[segment_labels[label_id]]
    differ = int(np.count_nonzero(read != request.labels))
    assert differ == 0, f"{differ} voxels differ between dcmqi's volumes and the prediction"


def test_dcmqi_sees_an_empty_slice_as_background(tmp_path: Path) -> None:
    """A class only on the middle slices: dcmqi's volumes, back on the series, leave the
    other slices empty (frames dcmqi does not get must not be filled by extrapolation)."""
    request, _ = export_request(tmp_path, shape=SHAPE)
    labels = np.zeros_like(request.labels)
    labels[2:4, 10:20, 8:30] = 1
    labels[3, 25:30, 5:9] = 3
    request = with_labels(request, labels)
    seg = DicomSegExporter().export(request, tmp_path / "sparse")
    volumes, segment_labels = dcmqi_volumes(seg, tmp_path / "dcmqi")
    class_of = {c.name: c.id for c in request.classes}
    read = np.zeros(labels.shape, dtype=np.int32)
    for volume in volumes:
        values = on_series(volume, request)
        for label_id in set(np.unique(values).tolist()) - {0}:
            read[values == label_id] = class_of[segment_labels[int(label_id)]]
    np.testing.assert_array_equal(read, labels)


# -- dcmjs (OHIF's parser) ------------------------------------------------------------------


def dcmjs_summary(seg: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(run([*node_reader(), str(seg)]).stdout)
    return summary


def source_planes(request: ExportRequest) -> dict[tuple[str, int | None], np.ndarray]:
    """Every source image (instance, frame) of the series → its ImagePositionPatient."""
    return {
        (s.sop_instance_uid, s.frame_number): np.asarray(s.image_position_patient)
        for s in request.series.slices
    }


@pytest.mark.parametrize("case", list(SEG_CASES))
def test_dcmjs_finds_what_ohif_needs(tmp_path: Path, case: str) -> None:
    request, seg = seg_export(tmp_path, case)
    summary = dcmjs_summary(seg)
    source = pydicom.dcmread(request.series.instances[0], stop_before_pixels=True)
    series_uids = {s.sop_instance_uid for s in request.series.slices}

    assert summary["modality"] == "SEG"
    assert summary["studyInstanceUID"] == request.series.study_instance_uid
    assert summary["frameOfReferenceUID"] == source.FrameOfReferenceUID
    # the top-level reference OHIF uses to find the series to overlay
    assert len(summary["referencedSeries"]) == 1
    referenced = summary["referencedSeries"][0]
    # (the series of the instances themselves: an enhanced source is a series of its own)
    assert referenced["seriesInstanceUID"] == source.SeriesInstanceUID
    assert set(referenced["instances"]) == series_uids
    # the frames lie in the source's planes, each pointing at the image it segments
    orientation = [float(v) for v in source.get("ImageOrientationPatient") or []] or [
        float(v)
        for v in source.SharedFunctionalGroupsSequence[0]
        .PlaneOrientationSequence[0]
        .ImageOrientationPatient
    ]
    np.testing.assert_allclose(summary["imageOrientationPatient"], orientation, atol=1e-6)
    planes = source_planes(request)
    enhanced = bool(SEG_CASES[case].get("enhanced"))
    assert summary["numberOfFrames"] == len(summary["frames"]) > 0
    seen: set[tuple[int | None, tuple[float, ...]]] = set()
    for number, frame in enumerate(summary["frames"], start=1):
        assert len(frame["sources"]) == 1, f"frame {number}: {frame['sources']}"
        ref = frame["sources"][0]
        assert ref["sopInstanceUID"] in series_uids, f"frame {number} names {ref}"
        assert ref["sopClassUID"] == source.SOPClassUID
        assert (ref["frameNumber"] is not None) == enhanced, f"frame {number}: {ref}"
        frame_number = int(ref["frameNumber"]) if enhanced else None
        position = planes[(ref["sopInstanceUID"], frame_number)]
        np.testing.assert_allclose(frame["imagePositionPatient"], position, atol=1e-3)
        key = (frame["segmentNumber"], tuple(np.round(position, 3)))
        assert key not in seen, f"frame {number} repeats segment and plane {key}"
        seen.add(key)
    # segments: labels and colours of the classes, in class id order
    segments = [s for s in summary["segments"] if s["number"] != 0]  # label maps' background
    classes = sorted((c for c in request.classes if c.id), key=lambda c: c.id)
    assert [s["label"] for s in segments] == [c.name for c in classes]
    assert [s["number"] for s in segments] == list(range(1, len(classes) + 1))
    for segment, cls in zip(segments, classes, strict=True):
        assert segment["rgb"] is not None, f"segment {segment['label']} has no colour"
        np.testing.assert_allclose(
            segment["cielab"], dicom_cielab(cls.color), atol=CIELAB_TOLERANCE
        )
        assert max(abs(a - b) for a, b in zip(segment["rgb"], cls.color, strict=True)) <= (
            COLOUR_TOLERANCE
        ), (segment, cls.color)
    if SEG_CASES[case]["seg_type"] == "binary":
        assert {f["segmentNumber"] for f in summary["frames"]} == set(range(1, len(classes) + 1))


def dicom_cielab(rgb: tuple[int, int, int]) -> list[float]:
    """sRGB → CIELab (D65) by scikit-image, scaled to DICOM's 16-bit encoding."""
    from skimage.color import rgb2lab

    lab = rgb2lab(np.asarray([[rgb]], dtype=float) / 255.0, illuminant="D65")[0, 0]
    return [lab[0] * 65535 / 100, (lab[1] + 128) * 65535 / 255, (lab[2] + 128) * 65535 / 255]


# -- dicompyler-core (RTSTRUCT) -------------------------------------------------------------


def rt_reader() -> list[str]:
    """The python of the dicompyler-core venv (``make rt-reader``) and its rasteriser."""
    python = REPO / ".venv-rt" / "bin" / "python"
    require(
        python.exists(),
        "dicompyler-core's venv .venv-rt is missing (it needs pydicom 2); run `make rt-reader`",
    )
    return [str(python), str(REPO / "tools" / "rt-reader" / "rasterise.py")]


def dicompyler_masks(rtstruct: Path, request: ExportRequest, out: Path) -> dict[str, np.ndarray]:
    """Each ROI of ``rtstruct`` rasterised on the series' slices by dicompyler-core
    (tools/rt-reader/rasterise.py: matplotlib point-in-polygon at each pixel centre, contours of
    one plane combined by XOR, as dicompyler-core's DVH calculation does)."""
    files = [str(f) for f in request.series.instances]
    run([*rt_reader(), str(rtstruct), str(out), *files])
    with np.load(out) as masks:
        return {name: masks[name] for name in masks.files}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def ring_and_islands(shape: tuple[int, int, int]) -> np.ndarray:
    """A ring with an island in its hole, two blobs of one class, a one-pixel dot."""
    labels = np.zeros(shape, dtype=np.uint8)
    k = shape[0] // 2
    labels[k, 5:35, 4:32] = 1
    labels[k, 10:30, 9:27] = 0
    labels[k, 17:22, 15:20] = 1
    labels[k, 2:4, 2:10] = 2
    labels[k, 36:39, 20:34] = 2
    labels[k + 1, 20, 20] = 3
    return labels


@pytest.mark.parametrize("labels", ["phantom", "ring-and-islands"])
def test_dicompyler_rasterises_the_rtstruct_to_the_prediction(tmp_path: Path, labels: str) -> None:
    request, _ = export_request(tmp_path, shape=SHAPE)
    if labels != "phantom":
        request = with_labels(request, ring_and_islands(SHAPE))
    rtstruct = RtstructExporter().export(request, tmp_path / "out" / "prediction")
    masks = dicompyler_masks(rtstruct, request, tmp_path / "dicompyler.npz")

    classes = {c.name: c for c in request.classes if c.id}
    assert set(masks) == set(classes)
    for name, cls in classes.items():
        expected = request.labels == cls.id
        score = dice(masks[name], expected)
        assert score >= 0.98, f"{name}: Dice {score:.4f} ({expected.sum()} voxels)"
        # radseg's contours keep every pixel centre off the polygon edges, so the match is exact
        assert int(np.count_nonzero(masks[name] != expected)) == 0, name


# -- nibabel (NIfTI) ------------------------------------------------------------------------


def dicom_affine_ras(files: list[Path]) -> np.ndarray:
    """The series' voxel → RAS affine from its DICOM headers alone (index order x, y, z)."""
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    first = datasets[0]
    row, column = (np.asarray(first.ImageOrientationPatient[i : i + 3], float) for i in (0, 3))
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    origin = np.asarray(first.ImagePositionPatient, float)
    step = (np.asarray(datasets[-1].ImagePositionPatient, float) - origin) / (len(datasets) - 1)
    lps = np.eye(4)
    lps[:3, 0] = row * column_spacing  # x (column index) runs along the row direction
    lps[:3, 1] = column * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.mark.parametrize("oblique", [False, True], ids=["axial", "oblique"])
def test_nibabel_reads_the_nifti_with_the_series_affine(tmp_path: Path, oblique: bool) -> None:
    nibabel = require_module("nibabel")
    request, study = export_request(
        tmp_path,
        shape=SHAPE,
        image_orientation_patient=OBLIQUE if oblique else (1.0, 0, 0, 0, 1.0, 0),
    )
    written = NiftiExporter().export(request, tmp_path / "prediction")

    image = nibabel.load(str(written))
    expected = dicom_affine_ras(study.files)
    np.testing.assert_allclose(image.affine, expected, atol=1e-3)
    _, sform_code = image.get_sform(coded=True)
    _, qform_code = image.get_qform(coded=True)
    assert sform_code > 0 and qform_code > 0
    np.testing.assert_allclose(image.get_qform(), expected, atol=1e-3)
    # nibabel's array is (x, y, z); the prediction is (z, y, x)
    data = np.asarray(image.dataobj)
    assert data.dtype == np.uint8
    np.testing.assert_array_equal(data.transpose(2, 1, 0), request.labels)
