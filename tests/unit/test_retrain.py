"""Retraining's rules without training: the promotion rule, which label version a series trains
on (reviewed before imported; each COCO image says which), and the use cases that queue a
retrain (on request, and by the policy ``retrain_after_reviewed``) at most one at a time.

The use cases run on SQLite and PostgreSQL (the policy counts in SQL; the lock differs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from radseg.cli import main
from radseg.contracts import Geometry
from radseg.core import Platform, create_platform
from radseg.db.models import (
    DatasetMember,
    DatasetVersion,
    Job,
    JobState,
    LabelSet,
    ModelVersion,
    ModelVersionStatus,
    Prediction,
    Role,
    User,
)
from radseg.errors import Conflict, InputError, NotFound, PermissionDenied
from radseg.imaging.volumes import read_volume, write_volume
from radseg.label_versions import is_reviewed, reviewed_clause, training_label_set
from radseg.roles import Actor
from radseg.web import create_app
from radseg.workflows.corrections import save_correction
from radseg.workflows.datasets import build_version
from radseg.workflows.retrain import promotion_decision, request_retrain
from tests.support import add_series_with_prediction, ingested_prediction, require
from tests.web_support import audit_events, get_json, log_in_as

CLINICIAN = Actor("clinician", Role.CLINICIAN)
RESEARCHER = Actor("researcher", Role.RESEARCHER)
STROKE = {"z": 1, "class_id": 1, "radius": 2, "points": [[5.5, 5.5]]}


# --- the promotion rule -------------------------------------------------------------------------


def test_a_candidate_within_the_margin_on_every_class_is_promoted() -> None:
    decision = promotion_decision(
        {"liver": 0.80, "lung": 0.90}, {"liver": 0.79, "lung": 0.95}, 0.02
    )
    assert decision["promote"] is True
    assert [r["within_margin"] for r in decision["classes"]] == [True, True]
    assert decision["classes"][0]["diff"] == pytest.approx(-0.01)


def test_one_class_worse_than_the_margin_keeps_the_candidate() -> None:
    decision = promotion_decision(
        {"liver": 0.80, "lung": 0.90}, {"liver": 0.95, "lung": 0.87}, 0.02
    )
    assert decision["promote"] is False
    assert decision["reason"] == "lung: test Dice more than 0.02 below the parent's"
    # a better mean does not buy a worse class
    assert [r["class"] for r in decision["classes"] if not r["within_margin"]] == ["lung"]


def test_the_margin_is_inclusive_and_zero_means_no_class_may_fall() -> None:
    assert promotion_decision({"a": 0.5}, {"a": 0.48}, 0.02)["promote"] is True
    assert promotion_decision({"a": 0.5}, {"a": 0.4799}, 0.02)["promote"] is False
    assert promotion_decision({"a": 0.5}, {"a": 0.5}, 0.0)["promote"] is True
    assert promotion_decision({"a": 0.5}, {"a": 0.4999}, 0.0)["promote"] is False


def test_no_score_is_not_worse_but_nothing_scored_never_promotes() -> None:
    # no candidate score for b: b is absent from the labels and the candidate does not predict
    # it (the parent's 0.0 was a false positive); no worse
    assert promotion_decision({"a": 0.5, "b": 0.0}, {"a": 0.5, "b": None}, 0.02)["promote"]
    # a class only the candidate scores cannot be worse
    assert promotion_decision({"a": 0.5}, {"a": 0.5, "b": 0.1}, 0.02)["promote"] is True
    # no test split to compare on, or no candidate evaluation: no promotion
    nothing = promotion_decision({}, {"a": 0.9}, 0.02)
    assert nothing["promote"] is False and "not shown" in nothing["reason"]
    assert promotion_decision({"a": 0.5}, {}, 0.02)["promote"] is False


# --- which label version a series trains on -----------------------------------------------------


def _label_set(version: int, source: str, prediction_id: int | None = None) -> LabelSet:
    return LabelSet(version=version, source=source, prediction_id=prediction_id, classes=[])


def test_reviewed_label_versions_win_over_imported_ones_whatever_their_number() -> None:
    imported, review, reimported = (
        _label_set(1, "import"),
        _label_set(2, "review", prediction_id=7),
        _label_set(3, "import"),
    )
    assert training_label_set([imported, review, reimported]) is review
    later_review = _label_set(4, "review", prediction_id=8)
    assert training_label_set([later_review, review, reimported]) is later_review
    assert training_label_set([imported, reimported]) is reimported
    assert training_label_set([]) is None
    # an adjudicated mask, and a review whose prediction was deleted, are reviewed too
    assert is_reviewed(_label_set(5, "adjudication")) and is_reviewed(_label_set(6, "review"))
    assert not is_reviewed(_label_set(7, "seg"))


def test_the_sql_rule_picks_the_same_label_sets_as_the_python_rule(platform: Platform) -> None:
    with platform.sessions.begin() as session:
        prediction = _prediction(session, platform)
        rows = [
            LabelSet(
                series_id=prediction.series_id,
                source=source,
                version=n,
                classes=[],
                path=f"labels/{n}.nii.gz",
                prediction_id=pid,
            )
            for n, (source, pid) in enumerate(
                [
                    ("import", None),
                    ("review", prediction.id),
                    ("review", None),
                    ("adjudication", prediction.id),
                    ("rtstruct", None),
                ],
                start=1,
            )
        ]
        session.add_all(rows)
        session.flush()
        in_sql = set(session.scalars(select(LabelSet.id).where(reviewed_clause())))
        assert in_sql == {r.id for r in rows if is_reviewed(r)} and len(in_sql) == 3


def test_a_dataset_build_trains_on_the_correction_and_each_image_says_so(
    platform: Platform, tmp_path: Path
) -> None:
    prediction_id = ingested_prediction(platform, tmp_path)
    correction = save_correction(platform, CLINICIAN, prediction_id, strokes=[STROKE])
    with platform.sessions.begin() as session:
        prediction = session.get(Prediction, prediction_id)
        assert prediction is not None
        series = prediction.series
        imported = min(series.label_sets, key=lambda ls: ls.version)
        # a later re-import of other labels: newer, but not reviewed
        labels, geometry = read_volume(platform.resolve(imported.path))
        newer = platform.path("labels", "reimport.nii.gz")
        write_volume(newer, np.zeros_like(labels), geometry)
        session.add(
            LabelSet(
                series_id=series.id,
                source="import",
                version=correction.version + 1,
                classes=imported.classes,
                path=platform.relative(newer),
            )
        )
        dataset_id = prediction.model_version.dataset_version.dataset_id
        session.add(DatasetMember(dataset_id=dataset_id, series_id=series.id))
        name = prediction.model_version.dataset_version.dataset.name
        uid = series.series_instance_uid
    version = build_version(platform, name)
    root = platform.resolve(version.path)
    images = [
        image
        for split in ("train", "val", "test")
        for image in json.loads((root / "annotations" / f"instances_{split}.json").read_text())[
            "images"
        ]
    ]
    assert images and {i["label_version"]["label_set_id"] for i in images} == {correction.id}
    assert images[0]["label_version"] == {
        "label_set_id": correction.id,
        "version": correction.version,
        "source": "review",
        "reviewed": True,
        "prediction_id": prediction_id,
    }
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["label_versions"][uid]["label_set_id"] == correction.id
    # the label PNG of the corrected slice holds the correction, not the re-import's zeros
    corrected, _ = read_volume(platform.resolve(correction.path))
    slice_1 = next(i for i in images if i["slice_index"] == 1)
    png = np.asarray(Image.open(root / slice_1["sem_seg_file_name"]))
    assert (png == 1).sum() == (corrected[1] == 1).sum() > 0


# --- queueing a retrain -------------------------------------------------------------------------


def _prediction(session: Session, platform: Platform) -> Prediction:
    shape = (3, 12, 12)
    geometry = Geometry((12, 12, 3), (1.0, 1.0, 2.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return add_series_with_prediction(
        session,
        platform,
        hu=np.zeros(shape, dtype=np.float32),
        mask=np.zeros(shape, dtype=np.uint8),
        geometry=geometry,
        classes=[{"id": 1, "name": "lesion"}],
    )


def _retrain_jobs(platform: Platform) -> list[Job]:
    with platform.sessions() as session:
        return list(session.scalars(select(Job).where(Job.kind == "retrain").order_by(Job.id)))


def test_a_retrain_is_queued_for_researchers_once_at_a_time(platform: Platform) -> None:
    require("detectron2" in platform.plugins.models, "the detectron2 plugin is not available")
    with platform.sessions.begin() as session:
        model = _prediction(session, platform).model_version.model
        name, model_id = model.name, model.id
    with pytest.raises(PermissionDenied):
        request_retrain(platform, CLINICIAN, model=name)
    with pytest.raises(NotFound, match=f"there is no model 'nope' \\(models: {name}\\)"):
        request_retrain(platform, RESEARCHER, model="nope")
    with pytest.raises(InputError, match="iterations must be a whole number"):
        request_retrain(platform, RESEARCHER, model=name, iterations=0)
    job = request_retrain(platform, RESEARCHER, model=model_id, iterations=5, via="api")
    assert (job.kind, job.payload["model"], job.payload["iterations"]) == ("retrain", name, 5)
    with pytest.raises(Conflict, match=f"retrain job {job.id} of model '{name}' is already"):
        request_retrain(platform, RESEARCHER, model=name)
    (event,) = audit_events(platform, "job.submit.retrain")
    assert (event.actor, event.target, event.detail["via"]) == (
        "researcher",
        f"model:{model_id}",
        "api",
    )
    with platform.sessions.begin() as session:
        row = session.get(Job, job.id)
        assert row is not None
        row.state = JobState.FAILED  # once it is over, the next one may be queued
    assert request_retrain(platform, RESEARCHER, model=name).id != job.id


def test_the_policy_queues_one_retrain_after_n_new_reviewed_label_versions(
    platform: Platform,
) -> None:
    with platform.sessions.begin() as session:
        prediction = _prediction(session, platform)
        other = _prediction(session, platform)  # another model's prediction
        prediction_id, other_id = prediction.id, other.id
        model_id = prediction.model_version.model_id
    off = platform  # retrain_after_reviewed is 0 by default: never
    save_correction(off, CLINICIAN, prediction_id, strokes=[STROKE])
    assert _retrain_jobs(platform) == []
    policy = create_platform(
        platform.settings.model_copy(update={"retrain_after_reviewed": 3}), autoload=False
    )
    try:
        save_correction(policy, CLINICIAN, other_id, strokes=[STROKE])  # counts for the other
        save_correction(policy, CLINICIAN, prediction_id, strokes=[STROKE])
        assert _retrain_jobs(platform) == []  # 2 of this model's predictions so far
        save_correction(policy, CLINICIAN, prediction_id, strokes=[STROKE])
        (job,) = _retrain_jobs(platform)
        assert job.created_by == "retrain-policy" and job.state == JobState.QUEUED
        (event,) = audit_events(platform, "job.submit.retrain")
        assert event.target == f"model:{model_id}"
        assert event.detail["via"] == "policy" and event.detail["reviewed_label_versions"] == 3
        # while it is queued, more corrections queue no second one
        save_correction(policy, CLINICIAN, prediction_id, strokes=[STROKE])
        assert len(_retrain_jobs(platform)) == 1
    finally:
        policy.close()


# --- the model page and the API -----------------------------------------------------------------


def test_the_model_page_shows_the_chain_and_researchers_retrain_from_it(
    platform: Platform,
) -> None:
    require("detectron2" in platform.plugins.models, "the detectron2 plugin is not available")
    with platform.sessions.begin() as session:
        parent = _prediction(session, platform).model_version
        session.add_all(User(username=r.value, password_hash="-", role=r) for r in Role)
        session.flush()
        child = ModelVersion(
            model_id=parent.model_id,
            dataset_version_id=parent.dataset_version_id,
            config=parent.config,
            weights_path="models/x/model_final.pth",
            status=ModelVersionStatus.CANDIDATE,
            parent_id=parent.id,
            learned_from={"reviewed_label_sets": [4, 5], "iterations": 30},
            comparison=promotion_decision({"lesion": 0.8}, {"lesion": 0.7}, 0.02)
            | {"parent_id": parent.id, "reviewed": {"series": 0, "classes": []}},
        )
        session.add(child)
        session.flush()
        parent_id, child_id, model_id = parent.id, child.id, parent.model_id
    app = create_app(platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    log_in_as(client, platform, "clinician")
    page = client.get(f"/models/{child_id}").get_data(as_text=True)
    assert f'data-version="{child_id}" data-status="candidate"' in page
    # the parent is still the current version: the candidate fell short on the test split
    assert f'data-version="{parent_id}" data-status="promoted"' in page
    assert "promoted <strong>(current)</strong>" in page
    assert "2 reviewed label versions, 30 iterations" in page
    assert "lesion: test Dice more than 0.02 below the parent&#39;s" in page
    assert 'id="retrain-form"' not in page  # clinicians do not retrain
    assert client.post(f"/models/{model_id}/retrain").status_code == 403
    assert client.post(f"/api/models/{model_id}/retrain", json={}).status_code == 403

    log_in_as(client, platform, "researcher")
    page = client.get(f"/models/{parent_id}").get_data(as_text=True)
    assert 'id="retrain-form"' in page
    answer = client.post(f"/models/{model_id}/retrain", data={"iterations": "7"})
    assert answer.status_code == 303
    (job,) = _retrain_jobs(platform)
    assert job.payload["iterations"] == 7 and job.created_by == "researcher"
    assert "Retrain job" in client.get(f"/models/{parent_id}").get_data(as_text=True)
    busy = client.post(f"/api/models/{model_id}/retrain", json={"iterations": 3})
    assert busy.status_code == 409 and f"retrain job {job.id}" in busy.get_json()["detail"]
    assert client.post(f"/api/models/{model_id}/retrain", json={"iterations": 0}).status_code == 400
    assert client.post("/api/models/999/retrain", json={}).status_code == 404
    version = get_json(client, f"/api/model-versions/{child_id}")
    assert (version["status"], version["parent_id"]) == ("candidate", parent_id)
    assert version["comparison"]["promote"] is False


def test_predict_by_model_name_uses_the_newest_promoted_version(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    with platform.sessions.begin() as session:
        prediction = _prediction(session, platform)
        parent = prediction.model_version
        newer = {
            status: ModelVersion(
                model_id=parent.model_id,
                dataset_version_id=parent.dataset_version_id,
                config=parent.config,
                weights_path="models/x/model_final.pth",
                status=status,
                parent_id=parent.id,
            )
            for status in (ModelVersionStatus.PROMOTED, ModelVersionStatus.CANDIDATE)
        }
        session.add_all(newer.values())
        session.flush()
        promoted_id, name = newer[ModelVersionStatus.PROMOTED].id, parent.model.name
        uid = prediction.series.series_instance_uid
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    home = ["--home", str(platform.home)]
    runner = CliRunner()
    out = runner.invoke(main, [*home, "predict", "--model", name, "--series", uid])
    assert out.exit_code == 0, out.output
    (job,) = [j for j in _jobs(platform) if j.kind == "predict"]
    # the candidate is newer, but not promoted: predictions do not use it
    assert job.payload["model_version_id"] == promoted_id
    both = runner.invoke(
        main, [*home, "predict", "--model", name, "--model-version", "1", "--series", uid]
    )
    assert both.exit_code != 0 and "give --model-version ID or --model NAME" in both.output
    unknown = runner.invoke(main, [*home, "predict", "--model", "nope", "--series", uid])
    assert unknown.exit_code == 1 and "there is no model 'nope'" in unknown.output


def _jobs(platform: Platform) -> list[Job]:
    with platform.sessions() as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def test_a_rebuild_keeps_each_known_patients_split_and_splits_only_the_new_ones() -> None:
    from radseg.workflows.datasets import _split

    before = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    split = _split(["a", "b", "c", "d", "e"], 0, before)
    assert split == {"train": ["a", "b", "e"], "val": ["c"], "test": ["d"]}  # one new: train
    fresh = _split(["a", "b", "c", "d", "e"], 0, None)
    assert sorted(k for v in fresh.values() for k in v) == ["a", "b", "c", "d", "e"]


def test_a_detectron2_fine_tune_keeps_what_the_weights_depend_on(tmp_path: Path) -> None:
    from radseg.contracts import FineTune
    from radseg_plugins.models.detectron2.backend import Detectron2Backend
    from radseg_plugins.models.detectron2.options import TrainOptions

    weights = tmp_path / "model_final.pth"
    weights.write_bytes(b"weights")
    parent = {
        "architecture": "semantic_fpn",
        "image_size": 64,
        "pixel_mean": [10.0, 20.0, 30.0],
        "pixel_std": [1.0, 2.0, 3.0],
        "cfg_yaml": "MODEL:\n  RESNETS:\n    DEPTH: 34\n",
        "augmentations": {"flip": False, "rotation_degrees": 5.0, "scale_range": 0.1},
    }
    config = Detectron2Backend._fine_tuned(FineTune(weights, parent), {"iterations": 30})
    options = TrainOptions.from_config(config)
    assert (options.architecture, options.image_size, options.resnet_depth) == (
        "semantic_fpn",
        64,
        34,
    )
    assert (options.iterations, options.weights) == (30, str(weights))
    assert options.overrides == {
        "MODEL.PIXEL_MEAN": [10.0, 20.0, 30.0],
        "MODEL.PIXEL_STD": [1.0, 2.0, 3.0],
    }
    assert (options.rotation_degrees, options.scale_range) == (5.0, 0.1)
    with pytest.raises(InputError, match="keeps its parent's architecture 'semantic_fpn'"):
        Detectron2Backend._fine_tuned(FineTune(weights, parent), {"architecture": "mask_rcnn"})


def test_a_retrain_that_runs_again_takes_up_the_same_dataset_version(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build and the join are real; the fine-tuning is replaced by a crash (a worker lost
    mid-training), so the job's second run must find what the first one built."""
    from radseg.workflows import retrain as retrain_module

    prediction_id = ingested_prediction(platform, tmp_path)
    correction = save_correction(platform, CLINICIAN, prediction_id, strokes=[STROKE])
    seen: list[dict[str, Any]] = []

    def crash(platform: Platform, **kwargs: Any) -> None:
        seen.append(kwargs)
        raise RuntimeError("the worker died")

    monkeypatch.setattr(retrain_module, "train", crash)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="the worker died"):
            retrain_module.retrain(platform, model="fpn", job_id=7)
    first, second = seen
    assert first["dataset_version_id"] == second["dataset_version_id"]
    assert first["learned_from"] == second["learned_from"]
    assert first["learned_from"]["reviewed_label_sets"] == [correction.id]
    assert first["learned_from"]["series_added"] == 1  # the corrected series joined the dataset
    with platform.sessions() as session:
        versions = session.scalars(select(DatasetVersion.version).order_by(DatasetVersion.id))
        assert list(versions) == [1, 2]  # the nominal first one, and one build
