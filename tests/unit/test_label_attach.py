"""attach_label_source: the labels an uploader gives go to the one series they belong to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from radseg.contracts import ClassInfo, IngestProblem
from radseg.errors import InputError
from radseg.imaging.deid import Deidentifier
from radseg.imaging.dicom_io import read_series
from radseg.imaging.label_sources import is_label_object
from radseg.imaging.label_sources.attach import attach_label_objects, attach_label_source
from radseg.imaging.synthetic import write_synthetic_ct
from tests.dicom_labels import write_rtstruct, write_seg


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory):
    """Two series of different sizes and places in one folder, and label files for each."""
    root = tmp_path_factory.mktemp("upload")
    a = write_synthetic_ct(root / "a", seed=31, shape=(6, 40, 36))
    b = write_synthetic_ct(root / "b", seed=32, shape=(5, 32, 32), spacing=(1.5, 1.5, 4.0))
    labels = root / "labels"
    labels.mkdir()
    seg = write_seg(a.files, a.labels, a.classes, labels / "a_seg.dcm")
    rt = write_rtstruct(b.files, b.labels, b.classes, labels / "b_rt.dcm")
    pngs = labels / "b_png"
    pngs.mkdir()
    for z in range(b.labels.shape[0]):
        Image.fromarray(b.labels[z]).save(pngs / f"{z}.png")
    return root, a, b, {"seg": seg, "rt": rt, "png": pngs, "nifti": a.label_path}


def series(root: Path):
    volumes = read_series(
        [p for p in (root / "a" / "dicom").iterdir()]
        + [p for p in (root / "b" / "dicom").iterdir()],
        deidentify=Deidentifier(b"attach"),
        problems=[],
    )
    assert len(volumes) == 2
    return volumes


@pytest.mark.parametrize(
    ("source", "owner"), [("seg", "a"), ("rt", "b"), ("png", "b"), ("nifti", "a")]
)
def test_labels_go_to_their_series(upload, source: str, owner: str) -> None:
    root, a, b, paths = upload
    volumes = series(root)
    truth = {"a": a, "b": b}[owner]
    target = attach_label_source(volumes, paths[source])
    assert target.hu.shape == truth.hu.shape
    np.testing.assert_array_equal(target.labels, truth.labels)
    assert next(v for v in volumes if v is not target).labels is None
    present = [c for c in truth.classes if np.any(truth.labels == c.id)]
    # PNG masks carry no names; the others name their classes (the NIfTI through its sidecar).
    expected = [f"class_{c.id}" if source == "png" else c.name for c in present]
    assert [c.name for c in target.classes] == expected


def test_labels_that_fit_two_series_are_refused(upload, tmp_path: Path) -> None:
    _, a, _, paths = upload
    twin = write_synthetic_ct(tmp_path, seed=31, shape=(6, 40, 36), patient_id="OTHER")
    volumes = read_series(
        list(a.dicom_dir.iterdir()) + list(twin.dicom_dir.iterdir()),
        deidentify=Deidentifier(b"attach"),
        problems=[],
    )
    assert len(volumes) == 2
    with pytest.raises(InputError, match="holds 2 series and 2 share the label grid; ingest one"):
        attach_label_source(volumes, paths["nifti"])
    with pytest.raises(InputError, match="2 are covered by the labels"):
        attach_label_source(volumes, paths["seg"])


def test_label_objects_are_recognised_by_their_header(upload) -> None:
    _, a, _, paths = upload
    assert is_label_object(pydicom.dcmread(paths["seg"], stop_before_pixels=True))
    assert is_label_object(pydicom.dcmread(paths["rt"], stop_before_pixels=True))
    assert not is_label_object(pydicom.dcmread(a.files[0], stop_before_pixels=True))


def test_label_objects_find_their_series_by_its_deidentified_uid(upload, tmp_path: Path) -> None:
    _, a, _, paths = upload
    # A twin on the same grid: the labels would land on both, only the reference tells them apart.
    twin = write_synthetic_ct(tmp_path / "twin", seed=31, shape=(6, 40, 36), patient_id="OTHER")
    deidentify = Deidentifier(b"attach")
    volumes = read_series(
        list(a.dicom_dir.iterdir()) + list(twin.dicom_dir.iterdir()),
        deidentify=deidentify,
        problems=[],
    )
    twin_seg = write_seg(twin.files, twin.labels, twin.classes, tmp_path / "twin_seg.dcm")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"DICM nothing")
    problems: list[IngestProblem] = []
    attach_label_objects(
        volumes, [paths["seg"], twin_seg, junk], deidentify=deidentify, problems=problems
    )
    # keyed by the HU values (the reader gives int16 where that is exact, the study float32)
    by_hu = {v.hu.astype(np.float32).tobytes(): v for v in volumes}
    np.testing.assert_array_equal(by_hu[a.hu.astype(np.float32).tobytes()].labels, a.labels)
    np.testing.assert_array_equal(by_hu[twin.hu.astype(np.float32).tobytes()].labels, twin.labels)
    assert [p.path for p in problems] == ["junk.dcm"]


def test_several_label_objects_for_one_series_are_merged_by_name(upload, tmp_path: Path) -> None:
    _, a, _, paths = upload
    deidentify = Deidentifier(b"attach")
    volumes = read_series(a.dicom_dir, deidentify=deidentify, problems=[])
    liver_only = np.where(a.labels == 1, 1, 0).astype(np.uint8)
    renumbered = [ClassInfo(7, "liver", (1, 2, 3))]
    liver_rt = write_rtstruct(
        a.files, np.where(liver_only == 1, 7, 0).astype(np.uint8), renumbered, tmp_path / "rt.dcm"
    )
    problems: list[IngestProblem] = []
    attach_label_objects(
        volumes, [paths["seg"], liver_rt], deidentify=deidentify, problems=problems
    )
    (volume,) = volumes
    assert problems == []
    # "liver" is id 1 in the SEG and 7 in the RTSTRUCT: merged by name onto id 1.
    np.testing.assert_array_equal(volume.labels, a.labels)
    assert [c.name for c in volume.classes].count("liver") == 1
