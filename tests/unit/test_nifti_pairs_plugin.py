"""The ``nifti-pairs`` dataset source: image + label volumes, both layouts, any orientation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from radseg.contracts import ClassInfo, IngestProblem, ReadRequest, SeriesVolume, no_progress
from radseg.errors import InputError
from radseg.imaging.deid import Deidentifier, pseudonymise
from radseg.imaging.synthetic import SyntheticStudy, write_synthetic_ct
from radseg.imaging.volumes import write_volume
from radseg_plugins.datasets.nifti_pairs import NiftiPairsSource
from tests.support import require_module

KEY = b"nifti-pairs-test"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    return write_synthetic_ct(tmp_path_factory.mktemp("s"), seed=21, shape=(5, 32, 28))


def read(
    path: Path,
    labels: Path | None = None,
    problems: list[IngestProblem] | None = None,
    classes: list[ClassInfo] | None = None,
) -> list[SeriesVolume]:
    return list(
        NiftiPairsSource().read(
            ReadRequest(
                path,
                deidentify=Deidentifier(KEY),
                problems=problems if problems is not None else [],
                labels=labels,
                classes=classes,
            ),
            no_progress,
        )
    )


def test_flat_folder_pairs_in_hu_with_labels_in_another_orientation(
    study: SyntheticStudy, tmp_path: Path
) -> None:
    write_volume(tmp_path / "Smith_John.nii.gz", study.hu, study.geometry)
    # The label file is stored flipped (RAS-like axes), as many NIfTI tools write it.
    label = sitk.ReadImage(str(study.label_path))
    sitk.WriteImage(sitk.Flip(label, [True, True, False]), str(tmp_path / "Smith_John_seg.nii.gz"))
    shutil.copy(study.class_map_path, tmp_path / "labels.json")
    write_volume(tmp_path / "unlabelled.nrrd", study.hu, study.geometry)
    problems: list[IngestProblem] = []
    labelled, unlabelled = read(tmp_path, problems=problems)
    # the image without labels is read, and the names that would have labelled it are given
    ((notice),) = problems
    assert notice.path == "unlabelled.nrrd" and "read without labels" in notice.reason
    assert "unlabelled_seg.nrrd" in notice.reason and "unlabelled.seg.nrrd" in notice.reason
    np.testing.assert_array_equal(labelled.hu, study.hu)
    assert labelled.hu.dtype == np.float32
    np.testing.assert_array_equal(labelled.labels, study.labels)
    assert [c.name for c in labelled.classes] == [c.name for c in study.classes]
    # NIfTI stores the affine in float32: equal within its precision.
    assert labelled.geometry.size == study.geometry.size
    for field in ("spacing", "origin", "direction"):
        assert getattr(labelled.geometry, field) == pytest.approx(
            getattr(study.geometry, field), abs=1e-4
        )
    assert unlabelled.labels is None
    # The case name is a pseudonym, and stays the same on the next read.
    assert labelled.patient_key == pseudonymise(KEY, "Smith_John")
    assert "Smith" not in repr((labelled.study_instance_uid, labelled.slices))
    again, _ = read(tmp_path)
    assert again.series_instance_uid == labelled.series_instance_uid
    assert [s.sop_instance_uid for s in again.slices] == [
        s.sop_instance_uid for s in labelled.slices
    ]
    last = (
        np.asarray(study.geometry.origin)
        + 4 * study.geometry.spacing[2] * np.asarray(study.geometry.direction).reshape(3, 3)[:, 2]
    )
    assert len(labelled.slices) == 5
    assert labelled.slices[-1].image_position_patient == pytest.approx(last, abs=1e-4)


def test_nnunet_layout_with_dataset_json(study: SyntheticStudy, tmp_path: Path) -> None:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    write_volume(tmp_path / "imagesTr" / "case_001_0000.nii.gz", study.hu, study.geometry)
    shutil.copy(study.label_path, tmp_path / "labelsTr" / "case_001.nii.gz")
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "modality": {"0": "CT"},
                "labels": {
                    "background": 0,
                    "liver": 1,
                    "lung_left": 2,
                    "lung_right": 3,
                    "spine": 4,
                    "kidneys": 5,
                },
            }
        )
    )
    (volume,) = read(tmp_path)
    assert volume.modality == "CT"
    np.testing.assert_array_equal(volume.labels, study.labels)
    assert [(c.id, c.name) for c in volume.classes] == [(c.id, c.name) for c in study.classes]


def test_slicer_segmentation_as_the_label_file(tmp_path: Path) -> None:
    slicerio = require_module("slicerio")
    data = Path(slicerio.__file__).parent / "data"
    shutil.copy(data / "CTChest4.nrrd", tmp_path / "chest.nrrd")
    shutil.copy(data / "Segmentation.seg.nrrd", tmp_path / "chest.seg.nrrd")
    (volume,) = read(tmp_path)
    assert volume.labels is not None and len(volume.classes) == 7
    assert volume.classes[0].name == "ribs"
    assert volume.hu.min() < -900  # Hounsfield units as stored


def test_bad_cases_are_problems_and_the_rest_is_read(study: SyntheticStudy, tmp_path: Path) -> None:
    write_volume(tmp_path / "good.nii.gz", study.hu, study.geometry)
    shutil.copy(study.label_path, tmp_path / "good_label.nii.gz")
    write_volume(tmp_path / "far.nii.gz", study.hu, study.geometry)
    moved = sitk.ReadImage(str(study.label_path))
    moved.SetOrigin((1000.0, 1000.0, 1000.0))
    sitk.WriteImage(moved, str(tmp_path / "far_label.nii.gz"))
    shutil.copy(study.label_path, tmp_path / "orphan_mask.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a volume")
    problems: list[IngestProblem] = []
    (volume,) = read(tmp_path, problems=problems)
    np.testing.assert_array_equal(volume.labels, study.labels)
    reasons = {p.path: p.reason for p in problems}
    assert "does not overlap" in reasons["far.nii.gz"]
    assert "without a matching image" in reasons["orphan_mask.nii.gz"]
    assert "cannot read image volume" in reasons["broken.nii.gz"]


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="neither a folder nor an image volume"):
        read(tmp_path / "missing")
    with pytest.raises(InputError, match="no image volume"):
        read(tmp_path)


def test_one_image_volume_with_its_seg_nrrd_given_or_beside_it(tmp_path: Path) -> None:
    slicerio = require_module("slicerio")
    data = Path(slicerio.__file__).parent / "data"
    image = tmp_path / "CT.nrrd"
    shutil.copy(data / "CTChest4.nrrd", image)
    (given,) = read(image, labels=data / "Segmentation.seg.nrrd")
    assert given.labels is not None and given.classes[0].name == "ribs"
    shutil.copy(data / "Segmentation.seg.nrrd", tmp_path / "CT.seg.nrrd")
    (beside,) = read(image)
    np.testing.assert_array_equal(beside.labels, given.labels)
    assert beside.series_instance_uid == given.series_instance_uid  # the case is "CT" both times
    # Slicer's segment colours are kept
    raw = slicerio.read_segmentation(str(data / "Segmentation.seg.nrrd"), skip_voxels=True)
    slicer = [tuple(round(v * 255) for v in s["color"]) for s in raw["segments"]]
    assert [c.color for c in given.classes] == [c.color for c in beside.classes] == slicer


def test_a_given_class_map_wins_over_dataset_json(study: SyntheticStudy, tmp_path: Path) -> None:
    write_volume(tmp_path / "a_image.nii.gz", study.hu, study.geometry)
    shutil.copy(study.label_path, tmp_path / "a_label.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"1": "from_dataset_json"}}))
    mine = [ClassInfo(c.id, f"organ_{c.id}", (9, 9, c.id)) for c in study.classes]
    (volume,) = read(tmp_path, classes=mine)
    assert volume.classes == mine
    (volume,) = read(tmp_path)
    assert volume.classes[0].name == "from_dataset_json"


def test_labels_in_a_folder_of_their_own(study: SyntheticStudy, tmp_path: Path) -> None:
    (tmp_path / "ct").mkdir()
    (tmp_path / "gt").mkdir()
    write_volume(tmp_path / "ct" / "p1.nii.gz", study.hu, study.geometry)
    write_volume(tmp_path / "ct" / "p2.nii.gz", study.hu, study.geometry)
    shutil.copy(study.label_path, tmp_path / "gt" / "p1_seg.nii.gz")
    problems: list[IngestProblem] = []
    p1, p2 = read(tmp_path / "ct", labels=tmp_path / "gt", problems=problems)
    np.testing.assert_array_equal(p1.labels, study.labels)
    assert p2.labels is None
    assert [p.path for p in problems] == ["p2.nii.gz"]
    assert "gt/p2.nii.gz or gt/p2_seg.nii.gz would" in problems[0].reason
    # one label file for a folder of several images: which image it labels is not guessed
    with pytest.raises(InputError, match="one label source but ct holds 2 image volumes"):
        read(tmp_path / "ct", labels=tmp_path / "gt" / "p1_seg.nii.gz")


def test_a_case_is_the_same_with_labels_paired_or_given(
    study: SyntheticStudy, tmp_path: Path
) -> None:
    write_volume(tmp_path / "p7_image.nii.gz", study.hu, study.geometry)
    shutil.copy(study.label_path, tmp_path / "p7_label.nii.gz")
    (paired,) = read(tmp_path)
    (given,) = read(tmp_path, labels=tmp_path / "p7_label.nii.gz")
    (alone,) = read(tmp_path / "p7_image.nii.gz", labels=study.label_path)
    assert paired.series_instance_uid == given.series_instance_uid == alone.series_instance_uid
    np.testing.assert_array_equal(given.labels, paired.labels)
