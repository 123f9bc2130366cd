# ruff: noqa: E501  (digests keyed by full path under RADSEG_HOME)
"""What ingest and dataset build write stays byte for byte what it was before the ingest was made
faster (issue 17): the de-identified originals, the HU cache, the label volumes, the COCO JSON and
the label masks of a small synthetic study of three patients are compared with SHA-256 digests
computed from the code on main before that change.

The image PNGs are not in this contract (how they are compressed is the build's choice); their
pixels are compared with the HU cache through the channel recipe instead, and the manifest is
compared without its content hash (which covers the images).

The label volumes are compared by the NIfTI file inside their gzip stream (header and voxels),
byte for byte: since radseg deflates them with ISA-L instead of SimpleITK (issue 17) the
compressed bytes differ while every reader gets the same file; their digests are of the
inflated files written on main before that change (commit d206ac1).

Since the review loop (issue 14), every COCO image record also says which label version it came
from (``label_version``) and the manifest lists them (``label_versions``): the COCO files and the
manifest are compared without those additions, in a canonical form (sorted keys), with digests
computed the same way on main before either change.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from radseg.core import Platform
from radseg.imaging.channels import ChannelRecipe, hu_to_channels
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.imaging.volumes import read_volume
from radseg.settings import load_settings
from radseg.workflows.datasets import build_version
from radseg.workflows.ingest import ingest
from tests.support import migrated_platform

#: sha256 of every contract file, by path under RADSEG_HOME (computed on main, commit bac8aeb;
#: the COCO files' in the canonical form of :func:`_coco_digest`, the label volumes' of the
#: inflated file, computed on main at commit d206ac1)
EXPECTED: dict[str, str] = {
    "datasets/golden/v1/annotations/instances_test.json": "05240b0614c5af618369be4c5f4edffc34746ea4dd63c34fb73146743ed89b4d",
    "datasets/golden/v1/annotations/instances_train.json": "19c16ad1ce959a8b0bbd64e56a71f31cdeb6c484a797d682bda78cd3b25830cc",
    "datasets/golden/v1/annotations/instances_val.json": "df1c4a24c867ad7b3c2b88787727e4a8e75061f114099c5038b6d751830314df",
    "datasets/golden/v1/labels/0eb2730f41425a0c_0000.png": "ae2fa4f5dfc613d9ee25ccfa8fb10aa071e14a9a1f61b51d98ff37f3e9fec690",
    "datasets/golden/v1/labels/0eb2730f41425a0c_0001.png": "d3b8248e386635351f69062e8db5ca02f7bf4f4b3d67777c9f385fc1ba7dce4b",
    "datasets/golden/v1/labels/0eb2730f41425a0c_0002.png": "13ee9bd11a58c5cbedd0e053bb839e33b55a9bc386eb67fff05d464ce75ff557",
    "datasets/golden/v1/labels/0eb2730f41425a0c_0003.png": "aad5c0e702ea7fd206cc47d60ebdabc6fe93fd899260e27ea4b9f24db18f748a",
    "datasets/golden/v1/labels/0eb2730f41425a0c_0004.png": "93af0d489541bc7f798c6d0a01afec20bd06b03bcc7b14ba87db3dce88eaae8a",
    "datasets/golden/v1/labels/abaacb58966e30e3_0000.png": "ae2fa4f5dfc613d9ee25ccfa8fb10aa071e14a9a1f61b51d98ff37f3e9fec690",
    "datasets/golden/v1/labels/abaacb58966e30e3_0001.png": "b344377a8c0412dc97612660daccb9f1694660a2a751aad6148d57469633c4e0",
    "datasets/golden/v1/labels/abaacb58966e30e3_0002.png": "c772e36b6ccaef8a7128cad749b3d9bdc6b3f49a228cd51284de6e4f79e0548b",
    "datasets/golden/v1/labels/abaacb58966e30e3_0003.png": "7b9a3e439ce39ce978bb0e6489d68118b7733f016c05bd5f7f62f6ec46da9dab",
    "datasets/golden/v1/labels/abaacb58966e30e3_0004.png": "ea0543199bc9bb7dbe11ce7cc7d4375fec36e0a5c9256249b582456099dcb136",
    "datasets/golden/v1/labels/ae268e95ac7442be_0000.png": "ae2fa4f5dfc613d9ee25ccfa8fb10aa071e14a9a1f61b51d98ff37f3e9fec690",
    "datasets/golden/v1/labels/ae268e95ac7442be_0001.png": "631d5846ffceac5fda4b7333970b8b2cdf581fa9a573470fcbb108375dd37450",
    "datasets/golden/v1/labels/ae268e95ac7442be_0002.png": "9ffafde1984899dd451b24863c4a10feb2157d02e0f52663c8f07f8d970f11d5",
    "datasets/golden/v1/labels/ae268e95ac7442be_0003.png": "f7fadf4ef850147c043c14f3f8451c6dfd8401c01eb7f5ac5d16b2331a2336ce",
    "datasets/golden/v1/labels/ae268e95ac7442be_0004.png": "aa5440f5cdf0b144e1c87ebab6dc1bce924fd6d6526c30f19070f539e5bceef2",
    "labels/2.25.226475228712360472816634470755500638815/v1.nii.gz": "b2c105219398c3e39cd08cdfccafd64d69bf46ad9fbb426a4a5a907cc4ff36a3",
    "labels/2.25.24875867953299807267183253530920093630/v1.nii.gz": "47997c5db455943f66617fec71c6b653d7fae24f122b2f4108732217989e6cf8",
    "labels/2.25.313173185389686551552735004174376462737/v1.nii.gz": "d202961d2a89b3b29385b17737f593f75a3fb3e042b4aa736812c10830a17e00",
    "studies/2.25.191479825442081939738252432172085046766/2.25.226475228712360472816634470755500638815/00000.dcm": "cb0a902b3e313ff4a49c03e1766f37bc20ce2a631ef941f582a16ea0871fc3d7",
    "studies/2.25.191479825442081939738252432172085046766/2.25.226475228712360472816634470755500638815/00001.dcm": "e8fe7b63040ec48f7e10e684e69ba6816006cf73f1a3ca35c0db84a2ec08ed44",
    "studies/2.25.191479825442081939738252432172085046766/2.25.226475228712360472816634470755500638815/00002.dcm": "1516996966bdff5d4a978be6248a321c26b86336948fcd6b270d18fd75735117",
    "studies/2.25.191479825442081939738252432172085046766/2.25.226475228712360472816634470755500638815/00003.dcm": "9d2654a493265d16480c5f923f93912483156f14a4853ddd6e0def7dd9146483",
    "studies/2.25.191479825442081939738252432172085046766/2.25.226475228712360472816634470755500638815/00004.dcm": "96852a356798998d0989f0629457ea43071efaec5534ba3394f50ecc99ea7a90",
    "studies/2.25.271919260425793821641503515838038669685/2.25.313173185389686551552735004174376462737/00000.dcm": "9404c9209953009d7a4029837bbb47ad5117e29a3273fc241b1f4c6f7d02d911",
    "studies/2.25.271919260425793821641503515838038669685/2.25.313173185389686551552735004174376462737/00001.dcm": "0e6f8e60b31d13b7b4915024b0fb5165fc2824779da8f526373f766d2491498f",
    "studies/2.25.271919260425793821641503515838038669685/2.25.313173185389686551552735004174376462737/00002.dcm": "2687c1c5199bbceaa2fe0ee959cffc6fe0cb1d6a503f420bcfaa6218439eca24",
    "studies/2.25.271919260425793821641503515838038669685/2.25.313173185389686551552735004174376462737/00003.dcm": "b56f80714e47294a2f70d033b2cee7ae62b0c490a076269108e6b245b8c8dd4e",
    "studies/2.25.271919260425793821641503515838038669685/2.25.313173185389686551552735004174376462737/00004.dcm": "18de6d2d9c51277aabf1e58da48913da595eb87fd1c3193d71e93a4e823733c6",
    "studies/2.25.272696420940765796848198360952041650078/2.25.24875867953299807267183253530920093630/00000.dcm": "2272f17a30a2578b3bcca6657831838269ccf6f22afd222ef41378f04bbdc408",
    "studies/2.25.272696420940765796848198360952041650078/2.25.24875867953299807267183253530920093630/00001.dcm": "77aa099c2eaf0f9e82dfba79eb5422b6de19a7143b8d7790396c9024af2b4e59",
    "studies/2.25.272696420940765796848198360952041650078/2.25.24875867953299807267183253530920093630/00002.dcm": "222ccba6ebff2f805109f9498b160df945ed8ddf9fd51b28bbf1d0f9ce801e6b",
    "studies/2.25.272696420940765796848198360952041650078/2.25.24875867953299807267183253530920093630/00003.dcm": "63c7be0449819d495dea532c3198d9b16445b6943433af50db00257055bd90b3",
    "studies/2.25.272696420940765796848198360952041650078/2.25.24875867953299807267183253530920093630/00004.dcm": "b845f3fc7f626a2a78708a2bfc2944ca7acaa2824752ec2eb420f702220007a8",
    "volumes/2.25.226475228712360472816634470755500638815.nii": "19e886f3b5f3501340c5b1acfa870ebbdf894ec18eea25eadafccf4b2b2ae37b",
    "volumes/2.25.24875867953299807267183253530920093630.nii": "7397a12494f7d29d92ecf983a67e0e3512db924a1fdd85c19d0ef3b0fb205e05",
    "volumes/2.25.313173185389686551552735004174376462737.nii": "52601a543031680539b26d86d7396e23c18e9706a9a4cdfb59cc394a9aca4fae",
}

#: sha256 of the manifest with its content_hash left out
EXPECTED_MANIFEST = "facf30c704e4ea4259716bf2b6058df495e4e2637f2f85125fd7c5eb9e824534"


def _ingest_and_build(tmp_path: Path) -> tuple[Platform, Path]:
    settings = load_settings(
        {
            "home": tmp_path / "home",
            "database_url": f"sqlite:///{tmp_path / 'radseg.db'}",
            "deid_key": "0123456789abcdef" * 4,
        },
        environ={},
    )
    platform = migrated_platform(settings)
    for seed in (3, 4, 5):
        study = write_synthetic_ct(tmp_path / f"s{seed}", seed=seed, shape=(5, 24, 24))
        ingest(platform, study.dicom_dir, labels=study.label_path, dataset="golden")
    build_version(platform, "golden")
    return platform, settings.home


def _digests(home: Path) -> dict[str, str]:
    out = {}
    for path in sorted(home.rglob("*")):
        rel = path.relative_to(home).as_posix()
        if not path.is_file() or rel.startswith(".") or rel.endswith("manifest.json"):
            continue
        if "/images/" in rel:
            continue
        if "/annotations/" in rel:
            out[rel] = _coco_digest(path)
            continue
        data = path.read_bytes()
        if rel.startswith("labels/"):
            data = gzip.decompress(data)  # the NIfTI file; how it is deflated is not the contract
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def _coco_digest(path: Path) -> str:
    """sha256 of a COCO file without the images' ``label_version`` (issue 14), keys sorted."""
    coco = json.loads(path.read_text())
    for image in coco["images"]:
        assert "label_version" in image, image["file_name"]
        image.pop("label_version")
    return hashlib.sha256(json.dumps(coco, sort_keys=True).encode()).hexdigest()


def test_originals_hu_cache_labels_coco_and_masks_are_unchanged(tmp_path: Path) -> None:
    platform, home = _ingest_and_build(tmp_path)
    try:
        assert _digests(home) == EXPECTED
        manifest = json.loads((home / "datasets/golden/v1/manifest.json").read_text())
        manifest.pop("content_hash")
        manifest.pop("created_by")
        assert set(manifest.pop("label_versions")) == {
            p.stem for p in (home / "volumes").glob("*.nii")
        }
        text = json.dumps(manifest, sort_keys=True).encode()
        assert hashlib.sha256(text).hexdigest() == EXPECTED_MANIFEST
    finally:
        platform.close()


def test_every_image_holds_the_recipe_channels_of_the_hu_cache(tmp_path: Path) -> None:
    platform, home = _ingest_and_build(tmp_path)
    try:
        version = home / "datasets/golden/v1"
        coco = json.loads((version / "annotations/instances_train.json").read_text())
        images = coco["images"]
        assert images
        caches = {p.stem: read_volume(p)[0] for p in (home / "volumes").glob("*.nii")}
        for record in images:
            hu = caches[record["series_instance_uid"]]
            expected = hu_to_channels(hu, ChannelRecipe())[record["slice_index"]]
            with Image.open(version / record["file_name"]) as image:
                assert image.format == "PNG"
                pixels = np.asarray(image)
            assert np.array_equal(pixels, expected), record["file_name"]
    finally:
        platform.close()
