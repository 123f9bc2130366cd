"""attach_label_source: the labels an uploader gives go to the one series they belong to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from radseg.errors import InputError
from radseg.imaging.deid import Deidentifier
from radseg.imaging.dicom_io import read_series
from radseg.imaging.label_sources import is_label_object
from radseg.imaging.label_sources.attach import attach_label_source
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
