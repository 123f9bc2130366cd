"""Every correction makes the next model better, end to end on the demo data.

A weak model is trained on four synthetic CT patients (a worker runs the job); a clinician
corrects its predictions of the two training patients through the JSON endpoint (an API token,
the viewer's strokes); a retrain (``radseg retrain``, run by a real worker) builds a new dataset
version in which the corrections win, fine-tunes the weak model from its weights, evaluates
both versions on the same test split and on the corrected cases, and promotes the new version.
Real DICOM, real detectron2 training (a few iterations on 48² slices), SQLite.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from radseg import users
from radseg.cli import main
from radseg.core import Platform
from radseg.db.models import (
    DatasetVersion,
    Evaluation,
    Job,
    JobState,
    LabelSet,
    ModelVersion,
    ModelVersionStatus,
    Prediction,
    Role,
    Series,
    Study,
    User,
)
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.imaging.volumes import read_volume, write_volume
from radseg.jobs.worker import Worker
from radseg.model_registry import current_version, get_model
from radseg.roles import Actor
from radseg.web import create_app
from radseg.workflows.datasets import build_version
from radseg.workflows.ingest import ingest
from radseg.workflows.prediction import predict
from radseg.workflows.training import request_training
from tests.support import SQLITE_ONLY, require
from tests.web_support import audit_events

pytestmark = [pytest.mark.slow, SQLITE_ONLY]

RESEARCHER = Actor("researcher", Role.RESEARCHER)
#: the weak model's training and the retrain's fine-tuning (which inherits the weak model's
#: options: a warm-up of a few iterations keeps SGD at lr 0.01 from diverging on batches of 4)
WEAK_ITERATIONS, RETRAIN_ITERATIONS = 10, 40
WARM_UP = {"SOLVER.WARMUP_ITERS": 5}
#: the demo's lung labels (see _keep_the_lungs)
LUNGS = (2, 3)


def _run_jobs(platform: Platform) -> None:
    Worker(platform, burst=True).run()
    with platform.sessions() as session:
        failed = session.scalars(select(Job).where(Job.state != JobState.SUCCEEDED)).all()
        assert not failed, [(j.kind, j.state, j.message) for j in failed]


def _keep_the_lungs(label_path: Path) -> None:
    """The demo's labels with only its two lungs: the classes a model learns within a few dozen
    CPU iterations. With liver, spine and kidneys too, a model of 15 or 40 iterations scores
    them at chance (a weak model's chance overlap beat a better one's by 0.24 on the liver),
    which makes a per-class comparison a coin toss, not a test."""
    labels, geometry = read_volume(label_path)
    write_volume(label_path, np.where(np.isin(labels, LUNGS), labels, 0).astype(np.uint8), geometry)
    class_map = label_path.with_name("labels.json")
    classes = json.loads(class_map.read_text())["classes"]
    kept = [c for c in classes if c["id"] in LUNGS]
    assert [c["name"] for c in kept] == ["lung_left", "lung_right"]
    class_map.write_text(json.dumps({"classes": kept}))


def _truth_strokes(truth: np.ndarray) -> list[dict[str, Any]]:
    """What a careful reader paints: each slice erased, then every labelled run of voxels of
    each row painted with its class (a 0.5-voxel brush covers exactly the run)."""
    strokes: list[dict[str, Any]] = []
    depth, height, width = truth.shape
    for z in range(depth):
        centre = [width / 2, height / 2]
        strokes.append({"z": z, "class_id": 0, "radius": 64, "points": [centre]})
        for y in range(height):
            row = truth[z, y]
            edges = np.flatnonzero(np.diff(np.concatenate([[0], row, [0]])) != 0)
            for start, stop in itertools.pairwise(edges):
                if row[start] == 0:
                    continue
                points = [[start + 0.5, y + 0.5], [stop - 0.5, y + 0.5]]
                strokes.append(
                    {"z": z, "class_id": int(row[start]), "radius": 0.5, "points": points}
                )
    return strokes


def test_corrections_make_the_retrained_model_better_and_it_is_promoted(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("detectron2" in platform.plugins.models, "the detectron2 plugin is not available")
    # a fresh worker child reads the settings from the environment; one thread each, as two
    # cores shared with other processes slow many-threaded training down several times
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for n in range(4):
        study = write_synthetic_ct(
            tmp_path / f"patient-{n}", seed=n, patient_id=f"DEMO{n}", shape=(8, 48, 48)
        )
        _keep_the_lungs(study.label_path)
        ingest(platform, study.dicom_dir, labels=study.label_path, dataset="demo")
    first = build_version(platform, "demo")
    assert {k: len(v) for k, v in first.split.items()} == {"train": 2, "val": 1, "test": 1}

    # a weak model, and its predictions of the two training patients
    request_training(
        platform,
        RESEARCHER,
        dataset="demo",
        backend="detectron2",
        iterations=WEAK_ITERATIONS,
        overrides=WARM_UP,
    )
    _run_jobs(platform)
    with platform.sessions() as session:
        model = get_model(session, "demo-semantic_fpn")
        weak = current_version(session, model)
        assert weak is not None and weak.status == ModelVersionStatus.PROMOTED
        train_series = session.scalars(
            select(Series.id)
            .join(Study)
            .where(Study.patient_key.in_(first.split["train"]))
            .order_by(Series.id)
        ).all()
    for series_id in train_series:  # in this process: a worker's child would import torch again
        with platform.sessions() as session:
            uid = session.get(Series, series_id).series_instance_uid
        predict(platform, model_version_id=weak.id, series_instance_uid=uid)

    # a clinician corrects both through the JSON endpoint with an API token
    with platform.sessions.begin() as session:
        clinician = User(username="clinician", password_hash="-", role=Role.CLINICIAN)
        session.add(clinician)
        session.flush()
        _, token = users.create_token(session, clinician, "review script")
        predictions = session.scalars(select(Prediction).order_by(Prediction.id)).all()
        truths = {
            p.id: read_volume(
                platform.resolve(
                    max(p.series.label_sets, key=lambda ls: ls.version).path  # the imported one
                )
            )[0]
            for p in predictions
        }
    client = create_app(platform).test_client()
    auth = {"Authorization": f"Bearer {token}"}
    corrected = {}
    for prediction_id, truth in truths.items():
        answer = client.post(
            f"/predictions/{prediction_id}/corrections",
            json={"strokes": _truth_strokes(truth.astype(np.uint8))},
            headers=auth,
        )
        assert answer.status_code == 201, answer.get_data(as_text=True)
        corrected[prediction_id] = answer.get_json()["id"]
    with platform.sessions() as session:
        for prediction_id, label_set_id in corrected.items():
            label_set = session.get(LabelSet, label_set_id)
            assert label_set is not None and label_set.prediction_id == prediction_id
            labels, _ = read_volume(platform.resolve(label_set.path))
            assert np.array_equal(labels, truths[prediction_id])  # the strokes drew the truth

    # the retrain, from the command line, run by a worker
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            "--home",
            str(platform.home),
            "retrain",
            "--model",
            "demo-semantic_fpn",
            "--iterations",
            str(RETRAIN_ITERATIONS),
        ],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    job_id = int(re.search(r"queued retrain job (\d+)", out.output).group(1))
    again = runner.invoke(main, ["--home", str(platform.home), "retrain", "--model", model.name])
    assert again.exit_code != 0 and f"retrain job {job_id}" in again.output  # one at a time
    _run_jobs(platform)

    with platform.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.progress == 1.0
        new = session.get(ModelVersion, job.result["model_version_id"])
        assert new is not None and new.parent_id == weak.id
        assert new.status == ModelVersionStatus.PROMOTED, json.dumps(new.comparison)
        assert current_version(session, model).id == new.id  # predictions now use it
        learned = new.learned_from
        assert sorted(learned["reviewed_label_sets"]) == sorted(corrected.values())
        assert learned["iterations"] == RETRAIN_ITERATIONS
        assert new.config["options"]["overrides"] == WARM_UP  # fine-tuned with the same options
        dataset_version = session.get(DatasetVersion, learned["dataset_version_id"])
        assert dataset_version is not None and dataset_version.version == 2
        assert dataset_version.split == first.split  # the test split stayed held out
        comparison = new.comparison
        evaluations = {
            (where, role): session.get(Evaluation, ident)
            for where, ids in comparison["evaluations"].items()
            for role, ident in ids.items()
        }
    # each image of the new dataset version says which label version it came from
    root = platform.resolve(dataset_version.path)
    images = json.loads((root / "annotations" / "instances_train.json").read_text())["images"]
    assert {i["label_version"]["label_set_id"] for i in images} == set(corrected.values())
    assert all(i["label_version"]["reviewed"] for i in images)

    # the same test split and the same corrected cases for both versions
    for where in ("test", "reviewed"):
        parent, candidate = evaluations[(where, "parent")], evaluations[(where, "candidate")]
        assert parent is not None and candidate is not None
        assert parent.dataset_version_id == candidate.dataset_version_id == dataset_version.id
        assert set(parent.metrics["studies"]) == set(candidate.metrics["studies"])
    assert len(evaluations[("reviewed", "parent")].metrics["studies"]) == 2
    # the Dice on the corrected cases rises ...
    dice = comparison["mean_dice"]
    assert dice["reviewed"]["candidate"] > dice["reviewed"]["parent"] + 0.05, json.dumps(comparison)
    # ... and no class of the test split falls below the margin
    margin = platform.settings.retrain_margin
    for row in comparison["classes"]:
        assert row["diff"] is None or row["diff"] >= -margin, row
    (event,) = audit_events(platform, "model.promote")
    assert event.target == f"model_version:{new.id}" and event.detail["parent"] == weak.id
    print(f"retrain gain: {json.dumps(dice)}")  # for the closing note (pytest -s)
