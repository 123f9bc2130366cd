"""Dataset versions (radseg.imaging.dataset_version): COCO + semantic PNGs that round-trip to the
label volume, split by patient; the PNG writer they use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from radseg.contracts import ClassInfo, Geometry, SeriesVolume, SliceRef
from radseg.errors import InputError
from radseg.imaging.channels import ChannelRecipe, hu_to_channels
from radseg.imaging.coco import coco_to_label_volume
from radseg.imaging.dataset_version import (
    build_dataset_version,
    content_hash,
    slice_name,
    split_by_patient,
)
from radseg.imaging.deid import Deidentifier
from radseg.imaging.dicom_io import read_series
from radseg.imaging.labels import load_label_volume
from radseg.imaging.png_writer import png_bytes
from radseg.imaging.synthetic import SYNTHETIC_CLASSES, write_synthetic_ct

# pycocotools 2.0.x warns about numpy 2's __array__(copy=...) on every decode (COCO.annToMask).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

CLASSES = [ClassInfo(1, "ring", (255, 0, 0)), ClassInfo(2, "blobs", (0, 255, 0))]


def volume(patient: str, series: str, labels: np.ndarray) -> SeriesVolume:
    nz, ny, nx = labels.shape
    rng = np.random.default_rng(sum(map(ord, series)))  # stable across runs, unlike hash()
    return SeriesVolume(
        patient_key=patient,
        study_instance_uid=f"2.25.{len(patient)}1",
        series_instance_uid=series,
        modality="CT",
        geometry=Geometry(
            (nx, ny, nz), (0.8, 0.8, 2.5), (-10.0, -20.0, 30.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
        ),
        hu=rng.uniform(-1000, 1000, labels.shape).astype(np.float32),
        slices=[SliceRef(f"{series}.{k}", k, (-10.0, -20.0, 30.0 + 2.5 * k)) for k in range(nz)],
        labels=labels,
    )


def shapes_with_holes(nz: int = 6, ny: int = 40, nx: int = 36) -> np.ndarray:
    """Rings (masks with holes), several disjoint blobs, and some empty slices."""
    y, x = np.mgrid[:ny, :nx]
    r = np.hypot(y - 20, x - 18)
    labels = np.zeros((nz, ny, nx), np.uint8)
    for z in range(1, nz - 1):
        labels[z][(r > 4 + z) & (r < 10 + z)] = 1  # a ring: its centre is a hole
        labels[z][(y < 5) & (x % 7 < 3)] = 2  # several disconnected blobs
        labels[z][19:22, 17:20] = 2  # a blob inside the ring's hole
    return labels


@pytest.fixture
def built(tmp_path: Path):
    items = [
        volume("PA", "2.25.100", shapes_with_holes()),
        volume("PB", "2.25.200", shapes_with_holes()[::-1].copy()),
        volume("PC", "2.25.300", shapes_with_holes(nz=4)),
    ]
    split = {"train": ["PA"], "val": ["PB"], "test": ["PC"]}
    out = tmp_path / "ds" / "1"
    manifest = build_dataset_version(
        out, items, CLASSES, ChannelRecipe(), split, name="toy", version=1
    )
    return out, manifest, items


def all_annotations(out: Path) -> list[Path]:
    return [out / "annotations" / f"instances_{s}.json" for s in ("train", "val", "test")]


def test_round_trip_label_volume_coco_label_volume_is_exact(built) -> None:
    out, _, items = built
    for item in items:
        back = coco_to_label_volume(all_annotations(out), item.series_instance_uid, item.hu.shape)
        np.testing.assert_array_equal(back, item.labels)
    ring = items[0].labels[2] == 1
    assert not ring[20, 18]  # the hole stayed a hole


def test_pycocotools_reads_what_was_written(built) -> None:
    out, _, items = built
    coco = COCO(str(out / "annotations" / "instances_train.json"))
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"ring", "blobs"}
    labels = items[0].labels
    assert coco.getAnnIds()
    for ann in coco.loadAnns(coco.getAnnIds()):
        image = coco.imgs[ann["image_id"]]
        expected = labels[image["slice_index"]] == ann["category_id"]
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), expected)
        assert ann["area"] == int(expected.sum())
        ys, xs = np.nonzero(expected)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["iscrowd"] == 0
        assert isinstance(ann["segmentation"]["counts"], str)
        assert (
            mask_util.decode(
                {
                    "size": ann["segmentation"]["size"],
                    "counts": ann["segmentation"]["counts"].encode(),
                }
            ).shape
            == expected.shape
        )


def test_layout_images_labels_and_records(built) -> None:
    out, manifest, items = built
    assert (out / "manifest.json").is_file()
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["name"] == "toy" and manifest["version"] == 1
    assert manifest["classes"] == [
        {"id": 1, "name": "ring", "color": [255, 0, 0]},
        {"id": 2, "name": "blobs", "color": [0, 255, 0]},
    ]
    assert manifest["channels"] == 3
    assert ChannelRecipe.from_dict(manifest["recipe"]) == ChannelRecipe()
    assert manifest["split"] == {"train": ["PA"], "val": ["PB"], "test": ["PC"]}
    assert manifest["splits"] == {"train": 6, "val": 6, "test": 4}
    assert manifest["created_by"].startswith("radseg ")
    assert manifest["content_hash"] == content_hash(out)

    train = json.loads((out / "annotations" / "instances_train.json").read_text())
    record = next(i for i in train["images"] if i["slice_index"] == 2)
    item = items[0]
    name = slice_name(item.series_instance_uid, 2)
    assert record["file_name"] == f"images/{name}.png"
    assert record["sem_seg_file_name"] == f"labels/{name}.png"
    assert (record["height"], record["width"]) == (40, 36)
    assert record["patient_key"] == "PA"
    assert record["series_instance_uid"] == item.series_instance_uid
    assert record["study_instance_uid"] == item.study_instance_uid
    assert record["sop_instance_uid"] == item.slices[2].sop_instance_uid
    assert record["spacing"] == [0.8, 0.8, 2.5]
    assert record["origin"] == [-10.0, -20.0, 35.0]
    assert record["direction"] == [1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert train["categories"][0] == {
        "id": 1,
        "name": "ring",
        "color": [255, 0, 0],
        "supercategory": "anatomy",
    }

    rgb = np.asarray(Image.open(out / record["file_name"]))
    assert rgb.shape == (40, 36, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, hu_to_channels(item.hu, ChannelRecipe())[2])
    grey = Image.open(out / record["sem_seg_file_name"])
    assert grey.mode == "L"
    np.testing.assert_array_equal(np.asarray(grey), item.labels[2])


def test_content_hash_covers_every_file_but_the_manifest(built, tmp_path: Path) -> None:
    """The build's hash (from the digests its writers took) is what :func:`content_hash` finds
    in the files; a byte changed in any file, or a file added, changes it; the manifest does
    not count."""
    import shutil

    out, manifest, _ = built
    assert manifest["content_hash"] == content_hash(out)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "manifest.json").write_text("{}")
    assert content_hash(copy) == manifest["content_hash"]
    for rel in ("annotations/instances_val.json", sorted((copy / "labels").iterdir())[0]):
        changed = copy / rel
        data = bytearray(changed.read_bytes())
        data[len(data) // 2] ^= 1
        changed.write_bytes(bytes(data))
        assert content_hash(copy) != manifest["content_hash"]
        shutil.rmtree(copy)
        shutil.copytree(out, copy)
    (copy / "images" / "extra.png").write_bytes(b"")
    assert content_hash(copy) != manifest["content_hash"]


def test_split_is_by_patient(built) -> None:
    out, _, _ = built
    for split, patient in (("train", "PA"), ("val", "PB"), ("test", "PC")):
        coco = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        assert {i["patient_key"] for i in coco["images"]} == {patient}
    ids = [i["id"] for p in all_annotations(out) for i in json.loads(p.read_text())["images"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("shape", [(7, 5), (3, 11, 3), (1, 1)])
def test_png_writer_round_trips_through_pillow(shape) -> None:
    import io

    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    image = Image.open(io.BytesIO(png_bytes(pixels)))
    assert image.mode == ("L" if len(shape) == 2 else "RGB")
    np.testing.assert_array_equal(np.asarray(image), pixels)
    with pytest.raises(ValueError):
        png_bytes(pixels.astype(np.int16))


@pytest.mark.parametrize(
    "shape",
    # one block; rows that just fill a 65,535-byte block (42 RGB rows of 512: 64,554 bytes,
    # the 43rd starts the next); rows longer than a block (the zlib path)
    [(1, 1), (7, 5, 3), (43, 512, 3), (85, 512, 3), (3, 21845, 3), (2, 22000, 3)],
)
def test_stored_png_decodes_to_its_pixels_with_valid_checksums(shape) -> None:
    """The dataset build's image PNGs (deflate blocks stored): Pillow and OpenCV read back the
    pixels, and the zlib stream and every chunk carry correct checksums (zlib and the CRC check
    below would refuse a wrong one)."""
    import io
    import struct
    import zlib

    import cv2

    pixels = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    data = png_bytes(pixels, stored=True)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded[..., ::-1] if pixels.ndim == 3 else decoded, pixels)
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    rows = zlib.decompress(idat)  # checks the Adler-32
    assert len(rows) == pixels.shape[0] * (1 + pixels[0].size)
    assert len(data) >= len(rows)  # stored: nothing compressed


def _slices_for_rle() -> list[tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(8)
    cases = [
        (np.full((4, 5), 2, np.uint8), [2]),  # one class everywhere
        (np.zeros((4, 5), np.uint8), [1]),  # an id absent from the slice: an empty mask
        (np.pad(np.ones((1, 1), np.uint8), ((3, 0), (4, 0))), [1]),  # the last pixel only
        (np.pad(np.ones((1, 1), np.uint8), ((0, 3), (0, 4))), [1]),  # the first pixel only
        (rng.integers(0, 4, (9, 7)).astype(np.int32), [1, 2, 3]),  # not uint8
        (np.zeros((0, 3), np.uint8), [1]),  # no pixels at all
    ]
    for _ in range(40):
        height, width = (int(v) for v in rng.integers(1, 30, 2))
        labels = rng.integers(0, 6, (height, width)).astype(np.uint8)
        labels[rng.random((height, width)) < 0.6] = 0
        cases.append((labels, sorted(set(np.unique(labels).tolist()) - {0}) or [3]))
    return cases


@pytest.mark.parametrize("labels, class_ids", _slices_for_rle())
def test_rle_annotations_are_pycocotools_encoding_of_each_class_mask(labels, class_ids) -> None:
    """The COCO JSON's RLE, area and box for each class are exactly what pycocotools gives for
    the class's binary mask (the RLE is found from where the label value changes instead)."""
    from radseg.imaging.coco import rle_annotations

    annotations = rle_annotations(labels, class_ids)
    assert [a["category_id"] for a in annotations] == class_ids
    for annotation, class_id in zip(annotations, class_ids, strict=True):
        mask = np.asfortranarray((labels == class_id).astype(np.uint8))
        expected = mask_util.encode(mask)
        assert annotation["segmentation"] == {
            "size": [labels.shape[0], labels.shape[1]],
            "counts": expected["counts"].decode("ascii"),
        }
        assert annotation["area"] == int(mask.sum())
        assert annotation["bbox"] == [float(v) for v in mask_util.toBbox(expected)]
        segmentation = annotation["segmentation"]
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
        np.testing.assert_array_equal(mask_util.decode(rle), mask)


def test_split_by_patient_rules() -> None:
    assert split_by_patient(["a"]) == {"train": ["a"], "val": [], "test": []}
    two = split_by_patient(["a", "b"], seed=1)
    assert len(two["train"]) == 1 and len(two["val"]) == 1 and two["test"] == []
    keys = [f"p{i:02d}" for i in range(20)]
    split = split_by_patient(keys + keys[:5], seed=3)  # repeats count once
    assert [len(split[s]) for s in ("train", "val", "test")] == [14, 3, 3]
    assert sorted(k for keys_ in split.values() for k in keys_) == keys
    assert split == split_by_patient(list(reversed(keys)), seed=3)
    assert split != split_by_patient(keys, seed=4)
    assert split_by_patient(keys, fractions=(1, 0, 0))["train"] == keys
    with pytest.raises(InputError):
        split_by_patient(keys, fractions=(0.5, -0.1, 0.6))


def test_keep_empty_ratio_is_seeded(tmp_path: Path) -> None:
    labels = np.zeros((20, 16, 16), np.uint8)
    labels[5:8, 4:9, 4:9] = 1
    items = [volume("P", "2.25.9", labels)]

    def slices(out: Path, keep_empty_ratio: float = 1.0, seed: int = 0) -> list[int]:
        build_dataset_version(
            out,
            items,
            CLASSES,
            ChannelRecipe(),
            {"train": ["P"]},
            name="e",
            version=1,
            keep_empty_ratio=keep_empty_ratio,
            seed=seed,
        )
        images = json.loads((out / "annotations/instances_train.json").read_text())["images"]
        return sorted(i["slice_index"] for i in images)

    assert slices(tmp_path / "all") == list(range(20))
    assert slices(tmp_path / "none", keep_empty_ratio=0.0) == [5, 6, 7]
    half = slices(tmp_path / "half", keep_empty_ratio=0.5, seed=1)
    assert len(half) == 3 + 8 and {5, 6, 7} <= set(half)
    assert slices(tmp_path / "half2", keep_empty_ratio=0.5, seed=1) == half
    with pytest.raises(InputError, match="no slice to write"):
        build_dataset_version(
            tmp_path / "nothing",
            [volume("P", "2.25.9", np.zeros((3, 8, 8), np.uint8))],
            CLASSES,
            ChannelRecipe(),
            {"train": ["P"]},
            name="e",
            version=1,
            keep_empty_ratio=0.0,
        )
    assert not (tmp_path / "nothing").exists()


# keep_empty_ratio 1: each slice writer counts its own slice's labels; below 1 they are
# counted before any slice is written (to choose the empty slices), and 0.999 keeps both here
@pytest.mark.parametrize("ratio", [1.0, 0.999], ids=["counted-by-writers", "counted-first"])
def test_unlisted_labels_become_background_and_255_stays_ignore(
    tmp_path: Path, ratio: float
) -> None:
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[0, :2] = 1
    labels[0, 3:5] = 7  # not a dataset class
    labels[1, 6:] = 255
    item = volume("P", "2.25.5", labels)
    out = tmp_path / "d"
    build_dataset_version(
        out,
        [item],
        CLASSES[:1],
        ChannelRecipe(),
        {"train": ["P"]},
        name="x",
        version="v1",
        keep_empty_ratio=ratio,
    )
    coco = json.loads((out / "annotations/instances_train.json").read_text())
    assert {a["category_id"] for a in coco["annotations"]} == {1}
    png = {
        i["slice_index"]: np.asarray(Image.open(out / i["sem_seg_file_name"]))
        for i in coco["images"]
    }
    assert set(np.unique(png[0])) == {0, 1}
    assert set(np.unique(png[1])) == {0, 255}


def test_a_failure_mid_build_leaves_nothing(tmp_path: Path) -> None:
    items = [
        volume("PA", "2.25.1", shapes_with_holes()),
        volume("PB", "2.25.2", shapes_with_holes()),
    ]
    calls = []

    def failing(fraction: float, message: str) -> None:
        calls.append(fraction)
        if fraction > 0.3:
            raise RuntimeError("worker killed")

    out = tmp_path / "datasets" / "toy" / "1"
    with pytest.raises(RuntimeError, match="worker killed"):
        build_dataset_version(
            out,
            items,
            CLASSES,
            ChannelRecipe(),
            {"train": ["PA", "PB"]},
            name="toy",
            version=1,
            progress=failing,
        )
    assert calls
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no half-written temporary directory either


@pytest.mark.parametrize(
    "split, match",
    [
        ({"train": ["PA"], "val": ["PA"]}, "both train and val"),
        ({"train": ["PB"]}, "PA .* is in no split"),
        ({"training": ["PA"]}, "unknown split"),
    ],
)
def test_bad_splits_are_refused_before_writing(tmp_path: Path, split, match: str) -> None:
    out = tmp_path / "d"
    with pytest.raises(InputError, match=match):
        build_dataset_version(
            out,
            [volume("PA", "2.25.1", shapes_with_holes())],
            CLASSES,
            ChannelRecipe(),
            split,
            name="x",
            version=1,
        )
    assert not out.exists()


def test_unlabelled_series_and_existing_versions_are_refused(tmp_path: Path) -> None:
    item = volume("PA", "2.25.1", shapes_with_holes())
    item.labels = None
    with pytest.raises(InputError, match="has no labels"):
        build_dataset_version(
            tmp_path / "d", [item], CLASSES, ChannelRecipe(), {"train": ["PA"]}, name="x", version=1
        )
    item.labels = shapes_with_holes()
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="immutable"):
        build_dataset_version(
            tmp_path / "exists",
            [item],
            CLASSES,
            ChannelRecipe(),
            {"train": ["PA"]},
            name="x",
            version=1,
        )


def test_dicom_to_dataset_writes_no_phi(tmp_path: Path) -> None:
    deid = Deidentifier(b"k")
    items = []
    studies = []
    for seed, (name, pid) in enumerate([("Doe^Jane", "MRN-111222"), ("Roe^Richard", "MRN-333444")]):
        study = write_synthetic_ct(
            tmp_path / f"in{seed}", seed=seed, shape=(10, 48, 48), patient_name=name, patient_id=pid
        )
        (vol,) = read_series(study.dicom_dir, deidentify=deid, problems=[])
        vol.labels = load_label_volume(study.label_path, vol.geometry)
        items.append(vol)
        studies.append(study)
    split = split_by_patient([v.patient_key for v in items], seed=0)
    out = tmp_path / "dataset"
    build_dataset_version(
        out, items, SYNTHETIC_CLASSES, ChannelRecipe(), split, name="phantoms", version=1
    )
    secrets = [b"Doe", b"Jane", b"Roe^Richard", b"MRN-111222", b"MRN-333444", b"19600214"]
    for study in studies:
        secrets += [study.study_instance_uid.encode(), study.series_instance_uid.encode()]
        secrets += [uid.encode() for uid in study.sop_instance_uids]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 20
    for path in files:
        data = path.read_bytes()
        assert not any(secret in data for secret in secrets), path
        assert not any(secret.decode() in str(path) for secret in secrets[:5])
    for item in items:
        back = coco_to_label_volume(all_annotations(out), item.series_instance_uid, item.hu.shape)
        np.testing.assert_array_equal(back, item.labels)


def test_one_process_and_several_write_the_same_dataset(tmp_path: Path) -> None:
    """The slices are written by forked processes (issue 17); in one process or three, every
    file is the same, in the same order of image ids."""
    items = [
        volume("PA", "2.25.100", shapes_with_holes(nz=11)),
        volume("PB", "2.25.200", shapes_with_holes(nz=9)[::-1].copy()),
    ]
    split = {"train": ["PA"], "val": ["PB"]}
    manifests = [
        build_dataset_version(
            tmp_path / str(workers),
            items,
            CLASSES,
            ChannelRecipe(),
            split,
            name="toy",
            version=1,
            workers=workers,
        )
        for workers in (1, 3)
    ]
    assert manifests[0] == manifests[1]
    files = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*.*"))
    assert len(files) == 2 * (11 + 9) + 4
    for rel in files:
        assert (tmp_path / "1" / rel).read_bytes() == (tmp_path / "3" / rel).read_bytes(), rel


def test_a_slice_writer_failing_in_its_process_fails_the_build_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from radseg.imaging import dataset_version

    write_slice = dataset_version._write_slice

    def full_disk(root: Path, job: dataset_version._SliceJob) -> object:
        if job.z == 5:
            raise OSError(28, "No space left on device")
        return write_slice(root, job)

    monkeypatch.setattr(dataset_version, "_write_slice", full_disk)  # inherited by the fork
    out = tmp_path / "ds"
    with pytest.raises(OSError, match="No space left"):
        build_dataset_version(
            out,
            [volume("PA", "2.25.1", shapes_with_holes(nz=20))],
            CLASSES,
            ChannelRecipe(),
            {"train": ["PA"]},
            name="toy",
            version=1,
            workers=2,
        )
    assert not out.exists()
    assert not dataset_version._BUILDS


def _build_in_this_process(out: str) -> None:
    build_dataset_version(
        Path(out),
        [volume("PA", "2.25.1", shapes_with_holes(nz=20))],
        CLASSES,
        ChannelRecipe(),
        {"train": ["PA"]},
        name="toy",
        version=1,
        workers=2,
    )


def test_a_daemon_process_builds_without_helper_processes(tmp_path: Path) -> None:
    """A daemonic process may not start children: the build then writes its slices itself."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(
        target=_build_in_this_process, args=(str(tmp_path / "ds"),), daemon=True
    )
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert len(list((tmp_path / "ds" / "images").iterdir())) == 20
