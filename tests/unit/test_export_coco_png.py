"""The ``coco`` and ``png`` exporters: what pycocotools and Pillow read back, and verify."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from radseg.contracts import ExportCheck, Exporter, ExportRequest
from radseg.core import create_platform
from radseg.errors import InputError
from radseg.imaging.channels import ChannelRecipe, hu_to_channels
from radseg.imaging.labels import read_class_map
from radseg.settings import load_settings
from radseg_plugins.exporters import coco, png
from radseg_plugins.exporters.coco import CocoExporter
from radseg_plugins.exporters.png import PngExporter
from tests.export_support import export_request, with_labels

SHAPE = (6, 40, 48)  # (z, y, x): x != y, so a transposed mask cannot pass


def by_name(checks: list[ExportCheck]) -> dict[str, ExportCheck]:
    return {c.name: c for c in checks}


def load_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def decode(api: COCO, annotations: list[dict], shape: tuple[int, int, int]) -> np.ndarray:
    """The label volume the annotations describe, by pycocotools' ``annToMask``."""
    volume = np.zeros(shape, dtype=np.uint8)
    for ann in annotations:
        z = api.imgs[ann["image_id"]]["slice_index"]
        volume[z][api.annToMask(ann).astype(bool)] = ann["category_id"]
    return volume


def ring_labels() -> np.ndarray:
    """Class 1 as a ring around a background hole on slice 2, class 3 elsewhere on slice 4."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    radius = np.hypot(yy - 20, xx - 24)
    labels[2][(radius <= 12) & (radius > 5)] = 1
    labels[4, 5:9, 30:44] = 3
    return labels


@pytest.fixture
def study_request(tmp_path: Path):
    return export_request(tmp_path, shape=SHAPE)


# -- coco ---------------------------------------------------------------------------------------


def test_coco_round_trips_through_pycocotools(tmp_path: Path, study_request) -> None:
    request, _ = study_request
    written = CocoExporter().export(request, tmp_path / "out" / "prediction-1")

    assert written == tmp_path / "out" / "prediction-1"
    assert sorted(p.name for p in written.iterdir()) == ["instances.json", "results.json"]
    api = load_coco(written / "instances.json")
    annotations = api.dataset["annotations"]
    np.testing.assert_array_equal(decode(api, annotations, SHAPE), request.labels)
    # one annotation per class per slice that has it
    expected = sum(len(set(np.unique(plane).tolist()) - {0}) for plane in request.labels)
    assert len(annotations) == expected
    for ann in annotations:
        mask = api.annToMask(ann)
        assert ann["area"] == int(mask.sum()) and ann["iscrowd"] == 0
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert [(c["id"], c["name"]) for c in api.dataset["categories"]][:2] == [
        (1, "liver"),
        (2, "lung_left"),
    ]
    assert api.dataset["categories"][0]["snomed_code"] == "10200004"

    checks = CocoExporter().verify(request, written)
    assert [c.name for c in checks] == [
        "masks (pycocotools)",
        "results (pycocotools loadRes)",
        "image records",
        "categories",
    ]
    assert all(c.passed for c in checks), checks
    assert f"{expected} masks decoded onto 6 slices, 0 voxels differ" in checks[0].detail


def test_coco_keeps_the_hole_of_a_ring(tmp_path: Path, study_request) -> None:
    request = with_labels(study_request[0], ring_labels())
    written = CocoExporter().export(request, tmp_path / "ring")

    api = load_coco(written / "instances.json")
    (ring,) = [a for a in api.dataset["annotations"] if a["category_id"] == 1]
    mask = mask_util.decode(
        {"size": ring["segmentation"]["size"], "counts": ring["segmentation"]["counts"].encode()}
    )
    assert mask[20, 24] == 0 and mask[20, 24 + 8] == 1  # the hole stays a hole
    np.testing.assert_array_equal(decode(api, api.dataset["annotations"], SHAPE), request.labels)
    assert all(c.passed for c in CocoExporter().verify(request, written))


def test_coco_results_load_with_load_res(tmp_path: Path, study_request) -> None:
    request, _ = study_request
    written = CocoExporter().export(request, tmp_path / "out")

    api = load_coco(written / "instances.json")
    results = json.loads((written / "results.json").read_text())
    assert len(results) == len(api.dataset["annotations"])
    assert {r["score"] for r in results} == {1.0}
    assert all(isinstance(r["segmentation"]["counts"], str) for r in results)
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = api.loadRes(str(written / "results.json"))
    np.testing.assert_array_equal(
        decode(loaded, loaded.dataset["annotations"], SHAPE), request.labels
    )


def test_coco_image_records_carry_the_dicom_identifiers(tmp_path: Path, study_request) -> None:
    request, study = study_request
    written = CocoExporter().export(request, tmp_path / "out")

    images = sorted(load_coco(written / "instances.json").dataset["images"], key=lambda i: i["id"])
    assert [i["sop_instance_uid"] for i in images] == list(study.sop_instance_uids)
    assert [i["slice_index"] for i in images] == list(range(SHAPE[0]))
    assert [i["file_name"] for i in images][:2] == ["slice-00000.png", "slice-00001.png"]
    first = images[0]
    assert (first["height"], first["width"]) == SHAPE[1:]
    assert first["study_instance_uid"] == study.study_instance_uid
    assert first["series_instance_uid"] == study.series_instance_uid
    assert first["spacing"] == list(request.geometry.spacing)
    assert first["direction"] == list(request.geometry.direction)
    for image, ref in zip(images, request.series.slices, strict=True):
        assert image["origin"] == list(ref.image_position_patient)


def test_coco_without_dicom_slices_has_no_sop_uids(tmp_path: Path, study_request) -> None:
    request, _ = study_request
    request = replace(request, series=replace(request.series, slices=[], instances=[]))
    written = CocoExporter().export(request, tmp_path / "out")

    images = load_coco(written / "instances.json").dataset["images"]
    assert {i["sop_instance_uid"] for i in images} == {None}
    assert images[1]["origin"] == pytest.approx(
        np.add(request.geometry.origin, [0.0, 0.0, request.geometry.spacing[2]]).tolist()
    )
    assert all(c.passed for c in CocoExporter().verify(request, written))


def test_coco_empty_prediction(tmp_path: Path, study_request) -> None:
    request = with_labels(study_request[0], np.zeros(SHAPE, dtype=np.uint8))
    written = CocoExporter().export(request, tmp_path / "empty")

    assert json.loads((written / "results.json").read_text()) == []
    api = load_coco(written / "instances.json")
    assert len(api.dataset["images"]) == SHAPE[0] and api.dataset["annotations"] == []
    assert all(c.passed for c in CocoExporter().verify(request, written))


def test_coco_refuses_unknown_classes_and_existing_folders(tmp_path: Path, study_request) -> None:
    request, _ = study_request
    labels = request.labels.copy()
    labels[0, 0, 0] = 9
    with pytest.raises(InputError, match=r"class ids \[9\]"):
        CocoExporter().export(with_labels(request, labels), tmp_path / "a")
    assert not (tmp_path / "a").exists()

    CocoExporter().export(request, tmp_path / "b")
    with pytest.raises(InputError, match="exists already"):
        CocoExporter().export(request, tmp_path / "b")


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_coco_verify_catches_tampering(tmp_path: Path, study_request) -> None:
    request, _ = study_request

    written = CocoExporter().export(request, tmp_path / "category")
    _edit(written / "instances.json", lambda d: d["annotations"][0].update(category_id=2))
    checks = by_name(CocoExporter().verify(request, written))
    assert checks["masks (pycocotools)"].passed is False
    assert checks["results (pycocotools loadRes)"].passed is True  # results untouched

    written = CocoExporter().export(request, tmp_path / "records")

    def swap(d: dict) -> None:
        a, b = d["images"][0], d["images"][1]
        a["sop_instance_uid"], b["sop_instance_uid"] = b["sop_instance_uid"], a["sop_instance_uid"]

    _edit(written / "instances.json", swap)
    checks = by_name(CocoExporter().verify(request, written))
    assert checks["image records"].passed is False
    assert "2 SOP instance UIDs out of place" in checks["image records"].detail

    written = CocoExporter().export(request, tmp_path / "results")
    _edit(written / "results.json", lambda d: d.pop())
    assert (
        by_name(CocoExporter().verify(request, written))["results (pycocotools loadRes)"].passed
        is False
    )
    _edit(written / "results.json", lambda d: d[0].update(image_id=999))
    check = by_name(CocoExporter().verify(request, written))["results (pycocotools loadRes)"]
    assert check.passed is False and "loadRes" in check.detail

    written = CocoExporter().export(request, tmp_path / "broken")
    (written / "instances.json").write_text("{not json")
    broken = CocoExporter().verify(request, written)
    assert broken and all(c.passed is False for c in broken)


# -- png ----------------------------------------------------------------------------------------


def window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """A linear window, computed here in float64: clip((hu - level + width / 2) * 255 / width).

    The exporter rounds in float32, so values may differ by one grey level at .5 boundaries.
    """
    return np.clip((hu.astype(np.float64) - level + width / 2.0) * 255.0 / width, 0, 255)


def soft_tissue(hu: np.ndarray) -> np.ndarray:
    return window(hu, 400.0, 40.0)


def test_png_labels_read_back_identical(tmp_path: Path, study_request) -> None:
    request, _ = study_request
    written = PngExporter().export(request, tmp_path / "out")

    files = sorted((written / "labels").iterdir())
    assert [f.name for f in files] == [f"slice-{z:05d}.png" for z in range(SHAPE[0])]
    for z, path in enumerate(files):
        with Image.open(path) as image:
            assert image.mode == "P"
            np.testing.assert_array_equal(np.asarray(image), request.labels[z])
            palette = np.asarray(image.getpalette() or [])[:768].reshape(-1, 3)
        for c in request.classes:
            assert tuple(palette[c.id]) == c.color
    assert read_class_map(written / "classes.json") == sorted(request.classes, key=lambda c: c.id)

    checks = PngExporter().verify(request, written)
    assert [c.name for c in checks] == ["label PNGs (Pillow)", "overlays", "contact sheet"]
    assert all(c.passed for c in checks), checks


def test_png_overlay_pixels_on_a_known_slice(tmp_path: Path, study_request) -> None:
    request, study = study_request
    written = PngExporter().export(request, tmp_path / "out")

    z = int(np.argmax((request.labels == 1).sum(axis=(1, 2))))  # the slice with most liver
    labels = request.labels[z]
    grey = soft_tissue(study.hu[z])
    with Image.open(written / "overlays" / f"slice-{z:05d}.png") as image:
        overlay = np.asarray(image.convert("RGB")).astype(np.float64)

    liver = labels == 1
    padded = np.pad(labels, 1)
    inside = liver.copy()
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        inside &= padded[dy : dy + SHAPE[1], dx : dx + SHAPE[2]] == 1
    edge = liver & ~inside
    assert inside.sum() > 20 and edge.sum() > 10
    colour = np.array(request.classes[0].color, dtype=np.float64)
    blended = grey[inside][:, None] * 0.5 + colour * 0.5
    np.testing.assert_allclose(overlay[inside], blended, atol=1.0)  # opacity 0.5
    np.testing.assert_array_equal(overlay[edge], np.broadcast_to(colour, (edge.sum(), 3)))
    background = labels == 0
    np.testing.assert_allclose(
        overlay[background], np.repeat(grey[background][:, None], 3, 1), atol=1
    )
    assert np.all(overlay[background][:, 0] == overlay[background][:, 2])  # grey stays grey


def test_png_window_and_opacity_options(tmp_path: Path, study_request) -> None:
    request, study = study_request
    request = replace(request, options={"window": "lung", "opacity": 1.0})
    written = PngExporter().export(request, tmp_path / "out")

    with Image.open(written / "overlays" / "slice-00003.png") as image:
        overlay = np.asarray(image.convert("RGB"))
    lung = window(study.hu[3], 1500.0, -600.0)
    background = request.labels[3] == 0
    np.testing.assert_allclose(overlay[background][:, 0], lung[background], atol=1)
    assert np.abs(soft_tissue(study.hu[3]) - lung)[background].max() > 50  # another window
    labelled = request.labels[3] > 0
    colours = np.array([(0, 0, 0)] + [c.color for c in request.classes])
    np.testing.assert_array_equal(overlay[labelled], colours[request.labels[3][labelled]])
    described = json.loads((written / "classes.json").read_text())["overlays"]
    assert described["window"]["name"] == "lung" and described["opacity"] == 1.0
    assert all(c.passed for c in PngExporter().verify(request, written))

    with pytest.raises(InputError, match="soft_tissue, lung"):
        PngExporter().export(replace(request, options={"window": "lungs"}), tmp_path / "x")
    with pytest.raises(InputError, match="opacity"):
        PngExporter().export(replace(request, options={"opacity": 2}), tmp_path / "y")
    with pytest.raises(InputError, match="valid: "):
        PngExporter().export(replace(request, options={"windw": "lung"}), tmp_path / "z")
    assert not any((tmp_path / n).exists() for n in "xyz")


def test_png_mr_uses_a_percentile_window(tmp_path: Path, study_request) -> None:
    request, _ = study_request
    request = replace(request, series=replace(request.series, modality="MR"))
    written = PngExporter().export(request, tmp_path / "out")
    window = json.loads((written / "classes.json").read_text())["overlays"]["window"]
    assert (window["kind"], window["low_percentile"], window["high_percentile"]) == (
        "percentile",
        1.0,
        99.0,
    )
    assert all(c.passed for c in PngExporter().verify(request, written))


def test_png_contact_sheet_dimensions(tmp_path: Path, study_request) -> None:
    request = with_labels(study_request[0], ring_labels())  # slices 2 and 4 are labelled
    written = PngExporter().export(request, tmp_path / "two")
    with Image.open(written / "contact-sheet.png") as image:
        assert image.size == (2 * 48, 1 * 40)  # two tiles side by side, never enlarged
    assert json.loads((written / "classes.json").read_text())["overlays"][
        "contact_sheet_slices"
    ] == [2, 4]

    request = replace(study_request[0], options={"contact_sheet_slices": 4, "thumbnail": 24})
    written = PngExporter().export(request, tmp_path / "four")
    with Image.open(written / "contact-sheet.png") as image:
        assert image.size == (2 * 24, 2 * 20)  # 2x2 tiles, halved to fit 24 pixels
    chosen = json.loads((written / "classes.json").read_text())["overlays"]["contact_sheet_slices"]
    assert len(chosen) == 4 and all(request.labels[z].any() for z in chosen)
    assert all(c.passed for c in PngExporter().verify(request, written))


def test_png_without_an_image_writes_labels_only(tmp_path: Path, study_request) -> None:
    request, _ = study_request
    request = replace(request, series=replace(request.series, volume_path=None))
    written = PngExporter().export(request, tmp_path / "out")

    assert sorted(p.name for p in written.iterdir()) == ["classes.json", "labels"]
    assert (
        "no image volume"
        in json.loads((written / "classes.json").read_text())["overlays_not_drawn"]
    )
    checks = by_name(PngExporter().verify(request, written))
    assert checks["label PNGs (Pillow)"].passed is True
    assert checks["overlays"].passed is None and "not drawn" in checks["overlays"].detail
    assert checks["contact sheet"].passed is None


def test_png_verify_catches_tampering(tmp_path: Path, study_request) -> None:
    request, study = study_request
    written = PngExporter().export(request, tmp_path / "out")

    label_png = written / "labels" / "slice-00003.png"
    with Image.open(label_png) as image:
        pixels = np.asarray(image).copy()
        palette = image.getpalette() or []
    pixels[0, 0] = 2
    tampered = Image.fromarray(pixels)
    tampered.putpalette(palette)
    tampered.save(label_png)
    check = by_name(PngExporter().verify(request, written))["label PNGs (Pillow)"]
    assert check.passed is False and ", 1 pixels differ" in check.detail

    overlay_png = written / "overlays" / "slice-00003.png"
    with Image.open(overlay_png) as image:
        rgb = np.asarray(image.convert("RGB")).copy()
    rgb[0, 0] = (255, 0, 0)  # colour in the background
    Image.fromarray(rgb).save(overlay_png)
    check = by_name(PngExporter().verify(request, written))["overlays"]
    assert check.passed is False
    assert check.detail.startswith("6 overlays; 1 coloured pixels outside the labels, 0 labelled")

    grey = hu_to_channels(study.hu, ChannelRecipe.from_presets("soft_tissue"))[3, ..., 0]
    Image.fromarray(grey).convert("RGB").save(overlay_png)  # the labels wiped out
    check = by_name(PngExporter().verify(request, written))["overlays"]
    labelled = int(np.count_nonzero(request.labels[3]))
    assert check.passed is False
    assert check.detail == (
        f"6 overlays; 0 coloured pixels outside the labels, {labelled} labelled pixels left grey"
    )

    (written / "overlays" / "slice-00005.png").unlink()
    assert by_name(PngExporter().verify(request, written))["overlays"].passed is False

    with Image.open(written / "contact-sheet.png") as image:
        image.crop((0, 0, 10, 10)).save(written / "contact-sheet.png")
    assert by_name(PngExporter().verify(request, written))["contact sheet"].passed is False


def test_png_refuses_a_missing_image_volume(tmp_path: Path, study_request) -> None:
    request, _ = study_request
    request = replace(
        request, series=replace(request.series, volume_path=tmp_path / "gone" / "hu.nii")
    )
    with pytest.raises(InputError, match="missing; re-ingest"):
        PngExporter().export(request, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- both ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "cls"), [(coco, CocoExporter), (png, PngExporter)])
def test_registers_through_the_hook_like_any_plugin(tmp_path: Path, module, cls) -> None:
    platform = create_platform(
        load_settings({"home": tmp_path}, environ={}), autoload=False, plugins=[(cls.name, module)]
    )
    try:
        assert platform.plugins.exporters.get(cls.name) is cls
    finally:
        platform.close()
    exporter = cls()
    assert isinstance(exporter, Exporter)
    assert (cls.suffix, cls.dicom) == ("", False)


def test_a_failed_export_leaves_no_folder(tmp_path: Path, study_request, monkeypatch) -> None:
    request: ExportRequest = study_request[0]

    def broken(*args: object, **kwargs: object) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(png, "png_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        PngExporter().export(request, tmp_path / "out" / "png")
    assert list((tmp_path / "out").iterdir()) == []
