"""The digest of every file the full ingest writes, to compare two versions of radseg on the
benchmark's own series (not a benchmark: no timing, no summary row).

``python -m tests.bench.ingest_digests OUT.txt`` runs ``ingest`` and ``datasets build`` on the
300-slice 512² synthetic CT of ``python -m tests.bench`` (same seed, a fixed de-identification
key) and writes one line per file under ``RADSEG_HOME``: its SHA-256 and its path. Run it from
two checkouts and ``diff`` the outputs. The originals, the HU cache, the COCO files and the
label masks are compared byte for byte (today's contract); the label volume by the NIfTI file
inside its gzip stream (header and voxels, byte for byte: how it is deflated changed in issue
17); the images by their decoded pixels (how they are compressed is the build's choice), and the
manifest without its ``content_hash`` (which covers the images). The database is left out.
To compare with a checkout older than this file's way of hashing, run this file with the
other checkout's ``platform`` and ``plugins`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from radseg.core import create_platform
from radseg.db.migrate import upgrade
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.settings import load_settings
from radseg.workflows.datasets import build_version
from radseg.workflows.ingest import ingest


def digest(home: Path, path: Path) -> str:
    rel = path.relative_to(home).as_posix()
    if rel.startswith("datasets/") and "/images/" in rel:
        with Image.open(path) as image:
            return "pixels:" + hashlib.sha256(np.asarray(image).tobytes()).hexdigest()
    if rel.startswith("datasets/") and rel.endswith("/manifest.json"):
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest.pop("content_hash")
        canonical = json.dumps(manifest, sort_keys=True).encode("utf-8")
        return "manifest-without-hash:" + hashlib.sha256(canonical).hexdigest()
    if rel.startswith("labels/") and rel.endswith(".nii.gz"):
        with gzip.open(path, "rb") as fh:
            return "inflated:" + hashlib.sha256(fh.read()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="where to write the digests")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        study = write_synthetic_ct(
            work / "study", seed=1, shape=(args.slices, args.size, args.size)
        )
        settings = load_settings({"home": work / "home", "deid_key": "ingest-digests"}, environ={})
        platform = create_platform(settings)
        upgrade(platform.engine)
        platform.refresh_plugins()
        ingest(platform, study.dicom_dir, labels=study.label_path, dataset="bench")
        build_version(platform, "bench")
        platform.close()
        home = work / "home"
        files = [
            p
            for p in sorted(home.rglob("*"))
            if p.is_file()
            and p.relative_to(home).parts[0] in ("studies", "volumes", "labels", "datasets")
        ]
        args.out.write_text(
            "".join(f"{digest(home, p)}  {p.relative_to(home).as_posix()}\n" for p in files)
        )
    print(f"{len(files)} files: {args.out}")


if __name__ == "__main__":
    main()
