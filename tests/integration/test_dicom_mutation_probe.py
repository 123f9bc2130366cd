"""The DICOM probe: a deterministic corpus of damaged files (``tests/dicom_mutants.py``) is read
with no traceback, and every file is either read or reported with a reason."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from radseg.contracts import IngestProblem
from radseg.core import Platform
from radseg.db.models import Series
from radseg.imaging.deid import Deidentifier
from radseg.imaging.dicom_io import read_series
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.imaging.volumes import read_volume
from radseg.workflows.ingest import ingest
from tests.dicom_mutants import corpus, write_corpus

MUTANTS = 3000
BATCH = 250


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.simplefilter("ignore")  # pydicom warns about most mutants
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)


def test_the_corpus_is_the_same_for_the_same_seed() -> None:
    first, again, other = list(corpus(400)), list(corpus(400)), list(corpus(400, seed=12))
    assert first == again
    assert first != other
    assert {name.split("_")[1] for name, _ in first} == {"flip", "truncate", "vr", "length", "size"}


def test_every_mutant_is_read_or_reported_one_by_one_and_in_batches(tmp_path: Path) -> None:
    paths = write_corpus(tmp_path / "mutants", MUTANTS)
    deidentify = Deidentifier(b"probe-key")
    read = reported = 0
    for path in paths:  # one file at a time: exactly what became of each
        problems: list[IngestProblem] = []
        labels: list[tuple[Path, str]] = []
        volumes = read_series(
            [path],
            deidentify=deidentify,
            problems=problems,
            keep_originals=True,
            label_objects=labels,
        )
        assert volumes or problems or labels, f"{path.name} vanished without a reason"
        assert all(p.reason for p in problems)
        read += bool(volumes)
        reported += not volumes and not labels
    # the per-file path in batches: series assembled across damaged files, every dropped
    # frame reported, and every file that was not reported in a volume
    for start in range(0, MUTANTS, BATCH):
        batch = paths[start : start + BATCH]
        problems = []
        labels = []
        volumes = read_series(
            batch,
            deidentify=deidentify,
            problems=problems,
            keep_originals=True,
            label_objects=labels,
        )
        # problems name files as they are named (paths relative to the batch folder)
        named = {p.path for p in problems} | {n for _, n, _ in labels}
        stored = {id(original) for v in volumes for original in v.originals}
        assert len(batch) - len(named) <= len(stored)
    print(f"probe: {MUTANTS} mutants, {read} read, {reported} reported, 0 tracebacks")
    assert read > 50 and reported > MUTANTS // 2  # the corpus exercises both outcomes


def test_a_mixed_folder_ingests_its_good_series_and_reports_each_bad_file(
    platform: Platform, tmp_path: Path
) -> None:
    folder = tmp_path / "upload"
    study = write_synthetic_ct(folder / "good", seed=31, shape=(8, 24, 20))
    mutants = write_corpus(folder / "mutants", 150, seed=5)
    (folder / "README.txt").write_text("exported by a PACS")
    (folder / "notes.bin").write_bytes(b"\x00garbage" * 20)

    report = ingest(platform, folder)

    reasons = {p.path: p.reason for p in report.problems}
    assert all(reasons.values())
    assert "README.txt" not in reasons
    assert reasons["notes.bin"].startswith("not DICOM")
    assert len(reasons) <= len(mutants) + 1  # notes.bin; never one of the good slices
    stored = sum(1 for _ in platform.path("studies").rglob("*.dcm"))
    assert len(mutants) + 1 - len(reasons) + len(study.files) <= stored
    with platform.sessions() as session:
        volumes = [
            read_volume(platform.resolve(series.volume_path))[0]
            for series in session.scalars(select(Series))
        ]
    assert any(v.shape == study.hu.shape and np.array_equal(v, study.hu) for v in volumes)
