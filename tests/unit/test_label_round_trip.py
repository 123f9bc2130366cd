"""Label volume → COCO dataset version → label volume, voxel for voxel, for every label source.

And polygons on request: exact but for holes, with the loss stated per annotation and in the
manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from pycocotools.coco import COCO

from radseg.contracts import ClassInfo, Geometry, SeriesVolume, SliceRef
from radseg.imaging.channels import ChannelRecipe
from radseg.imaging.coco import coco_to_label_volume
from radseg.imaging.dataset_version import build_dataset_version
from radseg.imaging.label_sources import read_label_source
from radseg.imaging.polygons import mask_to_polygons, polygon_iou
from radseg.imaging.synthetic import SyntheticStudy, write_synthetic_ct
from radseg.imaging.volumes import image_geometry
from tests.dicom_labels import write_rtstruct, write_seg
from tests.support import require_module

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    return write_synthetic_ct(tmp_path_factory.mktemp("study"), shape=(6, 40, 36), seed=7)


def series_volume(
    hu: np.ndarray, geometry: Geometry, labels: np.ndarray, classes: list[ClassInfo]
) -> SeriesVolume:
    direction = np.asarray(geometry.direction).reshape(3, 3)
    origin = np.asarray(geometry.origin)
    step = direction[:, 2] * geometry.spacing[2]
    return SeriesVolume(
        patient_key="P1",
        study_instance_uid="2.25.1",
        series_instance_uid="2.25.1.2",
        modality="CT",
        geometry=geometry,
        hu=hu.astype(np.float32),
        slices=[
            SliceRef(f"2.25.1.2.{k}", k, tuple(float(v) for v in origin + k * step))  # type: ignore[arg-type]
            for k in range(hu.shape[0])
        ],
        labels=labels,
        classes=classes,
    )


def round_trip(tmp_path: Path, volume: SeriesVolume, **kwargs: object) -> tuple[Path, dict]:
    out = tmp_path / "dataset"
    manifest = build_dataset_version(
        out,
        [volume],
        volume.classes,
        ChannelRecipe(),
        {"train": ["P1"]},
        name="rt",
        version=1,
        **kwargs,  # type: ignore[arg-type]
    )
    return out, manifest


@pytest.fixture(scope="module")
def label_sources(
    study: SyntheticStudy, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The study's true labels written as every kind of label source."""
    folder = tmp_path_factory.mktemp("sources")
    pngs = folder / "png"
    pngs.mkdir()
    for z in range(study.labels.shape[0]):
        Image.fromarray(study.labels[z]).save(pngs / f"{z:04d}.png")
    return {
        "volume": study.label_path,
        "seg": write_seg(study.files, study.labels, study.classes, folder / "seg.dcm"),
        "seg-labelmap": write_seg(
            study.files,
            study.labels,
            study.classes,
            folder / "lm.dcm",
            segmentation_type="LABELMAP",
        ),
        "rtstruct": write_rtstruct(study.files, study.labels, study.classes, folder / "rt.dcm"),
        "png": pngs,
    }


@pytest.mark.parametrize("kind", ["volume", "seg", "seg-labelmap", "rtstruct", "png"])
def test_every_dicom_label_source_round_trips_through_coco(
    study: SyntheticStudy, label_sources: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    path = label_sources[kind]
    source = read_label_source(path, study.geometry, classes=study.classes)
    assert np.count_nonzero(source.labels) > 0
    volume = series_volume(study.hu, study.geometry, source.labels, source.classes)
    out, manifest = round_trip(tmp_path, volume)
    assert manifest["annotation_format"] == "rle"
    back = coco_to_label_volume(
        out / "annotations" / "instances_train.json", "2.25.1.2", source.labels.shape
    )
    np.testing.assert_array_equal(back, source.labels)
    np.testing.assert_array_equal(back, study.labels)
    categories = json.loads((out / "annotations" / "instances_train.json").read_text())[
        "categories"
    ]
    assert [(c["id"], c["name"]) for c in categories] == [(c.id, c.name) for c in study.classes]
    if kind.startswith("seg"):  # a SEG names each segment's SNOMED CT type
        assert categories[0]["snomed_code"] == "10200004"
        assert manifest["classes"][0]["snomed_code"] == "10200004"


def test_slicer_segmentation_round_trips_through_coco(tmp_path: Path) -> None:
    slicerio = require_module("slicerio")
    data = Path(slicerio.__file__).parent / "data"
    ct = sitk.ReadImage(str(data / "CTChest4.nrrd"))
    hu = sitk.GetArrayFromImage(ct)[::4]  # every 4th slice: a small, still real, test
    geometry = image_geometry(ct)
    geometry = Geometry(
        (geometry.size[0], geometry.size[1], hu.shape[0]),
        (geometry.spacing[0], geometry.spacing[1], geometry.spacing[2] * 4),
        geometry.origin,
        geometry.direction,
    )
    source = read_label_source(data / "Segmentation.seg.nrrd", geometry)
    assert len(source.classes) == 7 and np.count_nonzero(source.labels) > 1000
    out, _ = round_trip(tmp_path, series_volume(hu, geometry, source.labels, source.classes))
    back = coco_to_label_volume(
        out / "annotations" / "instances_train.json", "2.25.1.2", source.labels.shape
    )
    np.testing.assert_array_equal(back, source.labels)
    categories = json.loads((out / "annotations" / "instances_train.json").read_text())[
        "categories"
    ]
    assert [c["name"] for c in categories] == [c.name for c in source.classes]


def test_polygons_on_request_state_their_loss(study: SyntheticStudy, tmp_path: Path) -> None:
    volume = series_volume(study.hu, study.geometry, study.labels, study.classes)
    out, manifest = round_trip(tmp_path, volume, polygons=True)
    assert manifest["annotation_format"] == "polygon"
    instances = out / "annotations" / "instances_train.json"
    coco = COCO(str(instances))  # pycocotools reads the polygons
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns and all(isinstance(a["segmentation"], list) for a in anns)
    for ann in anns:
        z = coco.imgs[ann["image_id"]]["slice_index"]
        truth = study.labels[z] == ann["category_id"]
        decoded = coco.annToMask(ann).astype(bool)
        iou = np.count_nonzero(decoded & truth) / np.count_nonzero(decoded | truth)
        assert ann["polygon_iou"] == pytest.approx(iou, abs=1e-6)
        if ann["category_id"] != 4:  # only the spine has a hole (the spinal canal)
            assert ann["polygon_iou"] == 1.0
    spine = [a["polygon_iou"] for a in anns if a["category_id"] == 4]
    assert spine and max(spine) < 1.0
    loss = manifest["polygon_loss"]
    assert loss["annotations"] == len(anns)
    assert loss["min_iou"] == pytest.approx(min(a["polygon_iou"] for a in anns))
    assert loss["exact"] == sum(1 for a in anns if a["polygon_iou"] == 1.0)


def test_polygons_of_tricky_shapes() -> None:
    mask = np.zeros((20, 24), bool)
    mask[3, 3] = True  # a single pixel
    mask[6:16, 10] = True  # a one-pixel line
    mask[2:4, 15:22] = True
    mask[9, 15:20] = True
    mask[10:14, 17] = True  # a cross touching the line above diagonally
    polygons = mask_to_polygons(mask)
    assert polygon_iou(polygons, mask) == 1.0
    ring = np.zeros((20, 20), bool)
    ring[4:16, 4:16] = True
    ring[8:12, 8:12] = False
    assert polygon_iou(mask_to_polygons(ring), ring) == pytest.approx(128 / 144)
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []
