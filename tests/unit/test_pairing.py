"""Image and label volumes paired by file name, with the names that would have paired the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from radseg.imaging.pairing import name_role, pair_volumes


def pairs(*names: str, labels: tuple[str, ...] = (), label_folder: str | None = None) -> dict:
    found = pair_volumes(
        [Path(n) for n in names], [Path(n) for n in labels], label_folder=label_folder
    )
    return {c.case: (c.image.name, c.label.name if c.label else None) for c in found.cases}


@pytest.mark.parametrize(
    ("image", "label"),
    [
        ("case7.nii.gz", "case7_seg.nii.gz"),
        ("case7.nii.gz", "case7_segmentation.nii.gz"),
        ("case7.nii.gz", "case7_label.nii.gz"),
        ("case7.nii.gz", "case7_labels.nii.gz"),
        ("case7.nii.gz", "case7_mask.nii"),
        ("case7.nii.gz", "case7-seg.nrrd"),
        ("case7.mha", "case7_GT.mha"),
        ("case7_image.nii.gz", "case7_label.nii.gz"),
        ("case7_img.nrrd", "case7_seg.nrrd"),
        ("case7_image.nii.gz", "case7_image_seg.nii.gz"),
        ("case7.nrrd", "case7.seg.nrrd"),
        ("case7_0000.nii.gz", "case7_seg.nii.gz"),
        ("case7_0000.nii.gz", "case7.seg.nrrd"),
    ],
)
def test_each_naming_convention_pairs_in_one_folder(image: str, label: str) -> None:
    # nnU-Net names every image of a folder with its channel, so the other case does too
    other = "other_0000.nii.gz" if "_0000" in image else "other.nii.gz"
    assert pairs(image, label, other) == {"case7": (image, label), "other": (other, None)}


def test_two_folders_and_nnunet_channels() -> None:
    # nnU-Net: images/case_0000, labels/case; a marked label name works in a label folder too
    found = pairs(
        "la_003_0000.nii.gz",
        "la_004_0000.nii.gz",
        labels=("la_003.nii.gz", "la_004_seg.nii.gz"),
        label_folder="labelsTr",
    )
    assert found == {
        "la_003": ("la_003_0000.nii.gz", "la_003.nii.gz"),
        "la_004": ("la_004_0000.nii.gz", "la_004_seg.nii.gz"),
    }


def test_other_nnunet_channels_are_reported_not_silently_dropped() -> None:
    found = pair_volumes(
        [Path(n) for n in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz")],
        [Path("a.nii.gz"), Path("b.nii.gz")],
        label_folder="labelsTr",
    )
    assert [(c.case, c.image.name) for c in found.cases] == [
        ("a", "a_0000.nii.gz"),
        ("b", "b_0000.nii.gz"),
    ]
    reasons = {p.name: r for p, r in found.problems}
    assert set(reasons) == {"a_0001.nii.gz", "b_0001.nii.gz"}
    assert "channel 1 of case 'a'" in reasons["a_0001.nii.gz"]


def test_numbered_cases_are_not_taken_for_channels() -> None:
    names = [f"patient_{i:04d}.nii.gz" for i in range(3)]
    labels = [f"patient_{i:04d}_seg.nii.gz" for i in range(3)]
    assert pairs(*names, *labels) == {f"patient_{i:04d}": (names[i], labels[i]) for i in range(3)}
    assert list(pairs("scan_2019.nrrd")) == ["scan_2019"]


def test_a_case_keeps_its_name_with_or_without_its_label() -> None:
    assert list(pairs("liver_image.nii.gz")) == list(pairs("liver_image.nii.gz", "liver_seg.nii"))


def test_unpaired_files_say_which_names_would_have_paired_them() -> None:
    found = pair_volumes([Path("ct.nii.gz"), Path("ct1_seg.nii.gz")])
    ((label, reason),) = found.problems
    assert label.name == "ct1_seg.nii.gz"
    assert "without a matching image" in reason
    assert "ct1.nii.gz, ct1_0000.nii.gz or ct1_image.nii.gz" in reason
    ((image, notice),) = found.unlabelled
    assert image.name == "ct.nii.gz" and "read without labels" in notice
    assert "ct_seg.nii.gz, ct_label.nii.gz, ct_mask.nii.gz or ct.seg.nrrd" in notice
    # two folders: the names are in the label folder
    found = pair_volumes([Path("ct.nrrd")], [Path("other.nrrd")], label_folder="labels")
    assert "labels/ct.nrrd or labels/ct_seg.nrrd would" in found.unlabelled[0][1]
    assert "in the image folder" in found.problems[0][1]
    # no labels at all (e.g. images to predict on): nothing to say
    assert pair_volumes([Path("ct.nrrd")]).unlabelled == []


def test_ambiguous_cases_are_refused_whole_and_the_rest_is_kept() -> None:
    found = pair_volumes(
        [Path(n) for n in ("a.nii.gz", "a_image.nii.gz", "a_seg.nii.gz", "b.nii.gz",
                           "b_seg.nii.gz", "b_mask.nii.gz", "c.nii.gz", "c_seg.nii.gz")]
    )  # fmt: skip
    assert [(c.case, c.label.name if c.label else None) for c in found.cases] == [
        ("c", "c_seg.nii.gz")
    ]
    reasons = {p.name: r for p, r in found.problems}
    assert "2 image volumes are case 'a'" in reasons["a.nii.gz"]
    assert "case 'a' has several image volumes" in reasons["a_seg.nii.gz"]
    assert "b_seg.nii.gz, b_mask.nii.gz all pair with it" in reasons["b.nii.gz"]


def test_name_roles() -> None:
    assert name_role("Case7.SEG.NRRD").role == "label"
    assert name_role("case7_Label.nii.gz").case == "case7"
    assert name_role("case7.nii.gz", folder="label").role == "label"
    assert name_role("case7_seg.nii.gz", folder="image").role == "image"
