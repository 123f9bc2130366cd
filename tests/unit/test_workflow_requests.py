"""The use cases that start work: upload studies, build a dataset, train, predict, evaluate.

Each one is called as the pages, the JSON API and the CLI call it (the platform, the acting
user, keyword inputs): it refuses what the worker would refuse, with a typed error, and
otherwise queues the job and audits it in its own unit of work.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from sqlalchemy import select

from radseg import audit
from radseg.core import Platform
from radseg.db.models import (
    Dataset,
    DatasetVersion,
    Job,
    Model,
    ModelVersion,
    Role,
    Series,
    Study,
)
from radseg.errors import InputError, NotFound, PermissionDenied
from radseg.hookspecs import hookimpl
from radseg.imaging.channels import parse_windows
from radseg.roles import Actor
from radseg.settings import Settings
from radseg.workflows.datasets import MAX_SEED, check_seed, request_build
from radseg.workflows.evaluation import request_evaluation
from radseg.workflows.prediction import request_predictions
from radseg.workflows.training import request_training
from radseg.workflows.uploads import submit_upload
from tests.support import SQLITE_ONLY, migrated_platform

RESEARCHER = Actor("rita", Role.RESEARCHER)
CLINICIAN = Actor("carl", Role.CLINICIAN)


class FakeBackend:
    name: ClassVar[str] = "fake"
    architectures: ClassVar[tuple[str, ...]] = ("fpn", "unet")

    def train(self, request: Any, progress: Any) -> Any:
        raise AssertionError("a request only queues the job")

    def predict(self, request: Any, progress: Any) -> Any:
        raise AssertionError("a request only queues the job")


class FakeModels:
    @hookimpl
    def radseg_register_models(self) -> list[type]:
        return [FakeBackend]


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    made = migrated_platform(settings, autoload=False, plugins=[("fake-models", FakeModels())])
    yield made
    made.close()


@pytest.fixture
def rows(platform: Platform) -> dict[str, int]:
    """A dataset with one built version, a model version trained on it, and a study with two
    series; a second study without any."""
    with platform.sessions.begin() as session:
        dataset = Dataset(name="chest")
        version = DatasetVersion(
            dataset=dataset,
            version=1,
            content_hash="0" * 64,
            classes=[],
            recipe={},
            split={},
            path="datasets/chest/v1",
        )
        model = ModelVersion(
            model=Model(name="chest-fpn", backend="fake"),
            dataset_version=version,
            config={},
            weights_path="w",
        )
        study = Study(study_instance_uid="2.25.1", patient_key="p1")
        empty = Study(study_instance_uid="2.25.2", patient_key="p2")
        series = [
            Series(
                study=study,
                series_instance_uid=f"2.25.1.{n}",
                modality="CT",
                geometry={},
                volume_path=f"volumes/{n}.nii.gz",
            )
            for n in (1, 2)
        ]
        session.add_all([dataset, version, model, study, empty, *series])
        session.flush()
        return {
            "dataset": dataset.id,
            "dataset_version": version.id,
            "model_version": model.id,
            "study": study.id,
            "empty_study": empty.id,
            "series": series[0].id,
            "series2": series[1].id,
        }


def _jobs(platform: Platform, kind: str) -> list[Job]:
    with platform.sessions() as session:
        return list(session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))


def _actions(platform: Platform, action: str) -> list[audit.AuditEvent]:
    with platform.sessions() as session:
        return audit.events(session, action=action)


# --- datasets -----------------------------------------------------------------------------------


def test_check_seed_is_the_one_seed_parser() -> None:
    assert [check_seed(v) for v in ("", " 7 ", "0", 3, MAX_SEED)] == [0, 7, 0, 3, MAX_SEED]
    for bad in ("-1", "1.5", "x", str(MAX_SEED + 1), "٣", MAX_SEED + 1, -1, True):
        with pytest.raises(InputError, match="seed must be a whole number from 0 to"):
            check_seed(bad)


@SQLITE_ONLY
def test_request_build_adds_the_studies_series_and_queues_the_build(
    platform: Platform, rows: dict[str, int]
) -> None:
    recipe = parse_windows("lung,400/40")
    job = request_build(
        platform, RESEARCHER, name="new set", recipe=recipe, seed=3, study_ids=[rows["study"]]
    )
    assert job.kind == "build-dataset" and job.created_by == "rita"
    assert job.payload == {
        "dataset": "new set",
        "recipe": recipe.to_dict(),
        "seed": 3,
        "created_by": "rita",
    }
    with platform.sessions() as session:
        (made,) = session.scalars(select(Dataset).where(Dataset.name == "new set")).all()
        assert sorted(m.series_id for m in made.members) == [rows["series"], rows["series2"]]
    (event,) = _actions(platform, "job.submit.build-dataset")
    assert event.target == f"dataset:{made.id}" and event.actor == "rita"
    # a dataset with members builds again without new studies
    again = request_build(platform, RESEARCHER, name="new set", recipe=recipe, via="api")
    assert again.id != job.id


@SQLITE_ONLY
def test_request_build_refuses_what_cannot_be_built(
    platform: Platform, rows: dict[str, int]
) -> None:
    recipe = parse_windows("lung")
    with pytest.raises(NotFound, match="there is no dataset 'nothing'; choose at least one"):
        request_build(platform, RESEARCHER, name="nothing", recipe=recipe)
    with pytest.raises(InputError, match="choose at least one study with a series"):
        request_build(
            platform, RESEARCHER, name="hollow", recipe=recipe, study_ids=[rows["empty_study"]]
        )
    with pytest.raises(InputError, match="not a valid dataset name"):
        request_build(platform, RESEARCHER, name="../x", recipe=recipe, study_ids=[rows["study"]])
    with pytest.raises(InputError, match="seed must be"):
        request_build(platform, RESEARCHER, name="s", recipe=recipe, seed=-1)
    with pytest.raises(PermissionDenied, match="only an admin or researcher can build"):
        request_build(platform, CLINICIAN, name="chest", recipe=recipe)
    assert _jobs(platform, "build-dataset") == []
    with platform.sessions() as session:  # nothing half-made stays behind
        assert session.scalars(select(Dataset.name)).all() == ["chest"]


# --- training -----------------------------------------------------------------------------------


@SQLITE_ONLY
def test_request_training_queues_the_config_the_worker_reads(
    platform: Platform, rows: dict[str, int]
) -> None:
    job = request_training(
        platform,
        RESEARCHER,
        dataset="chest",
        backend="fake",
        architecture="unet",
        iterations=20,
        options={"eval_period": 5},
        overrides={"MODEL.RESNETS.DEPTH": 50},
        via="api",
    )
    assert job.payload == {
        "dataset": "chest",
        "backend": "fake",
        "config": {
            "eval_period": 5,
            "architecture": "unet",
            "iterations": 20,
            "overrides": {"MODEL.RESNETS.DEPTH": 50},
        },
        "created_by": "rita",
    }
    (event,) = _actions(platform, "job.submit.train")
    assert event.target == f"dataset:{rows['dataset']}" and event.detail["via"] == "api"


@SQLITE_ONLY
def test_request_training_refuses_what_the_worker_would(
    platform: Platform, rows: dict[str, int]
) -> None:
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"backend": "nope"}, InputError, "unknown backend 'nope'; enabled backends: fake"),
        ({"architecture": "x"}, InputError, "has no architecture 'x'; choose one of: fpn, unet"),
        ({"iterations": 0}, InputError, "iterations must be a whole number from 1 to"),
        ({"dataset": "missing"}, NotFound, r"there is no dataset 'missing' \(datasets: chest"),
        ({"machines": 0}, InputError, "machines must be a whole number from 1 to 64"),
        ({"gpus_per_machine": 0}, InputError, "gpus per machine must be a whole number from 1"),
    ]
    for change, error, message in cases:
        wanted = {"dataset": "chest", "backend": "fake", **change}
        with pytest.raises(error, match=message):
            request_training(platform, RESEARCHER, **wanted)
    with platform.sessions.begin() as session:
        session.add(Dataset(name="unbuilt"))
    with pytest.raises(InputError, match="'unbuilt' has no built version yet; build it first"):
        request_training(platform, RESEARCHER, dataset="unbuilt", backend="fake")
    with pytest.raises(PermissionDenied):
        request_training(platform, CLINICIAN, dataset="chest", backend="fake")
    assert _jobs(platform, "train") == []


@SQLITE_ONLY
def test_request_training_on_several_machines_queues_one_gang_job(
    platform: Platform, rows: dict[str, int]
) -> None:
    job = request_training(
        platform, RESEARCHER, dataset="chest", backend="fake", machines=2, gpus_per_machine=4
    )
    assert job.machines == 2 and job.gpus == 4  # GPUs per machine
    assert job.payload["num_gpus"] == 4
    assert [j.id for j in _jobs(platform, "train")] == [job.id]
    (event,) = _actions(platform, "job.submit.train")
    assert event.detail["machines"] == 2 and event.detail["job"] == job.id
    # every rank trains on the version that was newest when it was queued, whenever it starts
    with platform.sessions() as session:
        dataset = session.scalars(select(Dataset).where(Dataset.name == "chest")).one()
        newest = max(dataset.versions, key=lambda v: v.version)
        assert job.payload["dataset_version_id"] == newest.id


@pytest.mark.parametrize("rank", [0, 1])
def test_every_rank_of_a_gang_trains_on_the_pinned_dataset_version(
    monkeypatch: pytest.MonkeyPatch, rank: int
) -> None:
    from radseg.jobs import handlers
    from radseg.workflows import training

    called: dict[str, Any] = {}

    class Version:
        id = 7
        metrics: ClassVar[dict[str, Any]] = {}

    def record(platform: Any, **kwargs: Any) -> Any:
        called.update(kwargs)
        return Version()

    monkeypatch.setattr(training, "train", record)
    monkeypatch.setattr(training, "train_machine_rank", record)
    payload = {
        "dataset": "chest",
        "backend": "fake",
        "config": {},
        "dataset_version_id": 42,
        "num_machines": 2,
        "machine_rank": rank,
    }
    handlers.handler_for("train")(None, payload, progress=lambda *a: None, job_id=1)  # type: ignore[arg-type]
    assert called["dataset_version_id"] == 42


# --- prediction ---------------------------------------------------------------------------------


@SQLITE_ONLY
def test_request_predictions_queues_one_job_per_series_once(
    platform: Platform, rows: dict[str, int]
) -> None:
    jobs = request_predictions(
        platform,
        RESEARCHER,
        model_version_id=rows["model_version"],
        series_ids=[rows["series2"]],
        series_uids=["2.25.1.2"],
        study_ids=[rows["study"]],
    )
    assert [j.payload["series_instance_uid"] for j in jobs] == ["2.25.1.2", "2.25.1.1"]
    targets = [e.target for e in _actions(platform, "job.submit.predict")]
    assert sorted(targets) == sorted([f"series:{rows['series2']}", f"series:{rows['series']}"])


@SQLITE_ONLY
def test_request_predictions_names_what_is_missing(
    platform: Platform, rows: dict[str, int]
) -> None:
    version = rows["model_version"]
    with pytest.raises(NotFound, match="there is no model version 99"):
        request_predictions(platform, RESEARCHER, model_version_id=99, study_ids=[rows["study"]])
    with pytest.raises(NotFound, match="there is no series 99"):
        request_predictions(platform, RESEARCHER, model_version_id=version, series_ids=[99])
    with pytest.raises(NotFound, match=r"there is no series 1\.2\.3"):
        request_predictions(platform, RESEARCHER, model_version_id=version, series_uids=["1.2.3"])
    with pytest.raises(InputError, match="choose at least one study with a series"):
        request_predictions(
            platform, RESEARCHER, model_version_id=version, study_ids=[rows["empty_study"]]
        )
    assert _jobs(platform, "predict") == []


# --- evaluation ---------------------------------------------------------------------------------


@SQLITE_ONLY
def test_request_evaluation_checks_the_split_and_the_versions(
    platform: Platform, rows: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    version = rows["model_version"]
    job = request_evaluation(
        platform,
        RESEARCHER,
        model_version_id=version,
        split="val",
        dataset_version_id=rows["dataset_version"],
    )
    assert job.payload["split"] == "val"
    assert job.payload["dataset_version_id"] == rows["dataset_version"]
    with pytest.raises(InputError, match="split must be one of: test, val, train"):
        request_evaluation(platform, RESEARCHER, model_version_id=version, split="all")
    with pytest.raises(NotFound, match="there is no dataset version 99"):
        request_evaluation(platform, RESEARCHER, model_version_id=version, dataset_version_id=99)
    with pytest.raises(NotFound, match="there is no model version 99"):
        request_evaluation(platform, RESEARCHER, model_version_id=99)
    assert len(_jobs(platform, "evaluate")) == 1


# --- uploads ------------------------------------------------------------------------------------


@SQLITE_ONLY
def test_submit_upload_stores_the_files_and_queues_their_ingest(
    platform: Platform, rows: dict[str, int]
) -> None:
    files = [("a.dcm", io.BytesIO(b"one")), ("../b.dcm", io.BytesIO(b"two"))]
    queued = submit_upload(platform, RESEARCHER, files, dataset="chest")  # type: ignore[arg-type]
    assert queued.files == 2 and queued.job.kind == "ingest"
    assert queued.job.payload == {
        "upload": queued.folder,
        "source": "dicom-folder",
        "dataset": "chest",
        "created_by": "rita",
    }
    folder = platform.path("uploads", queued.folder)
    assert sorted(p.name for p in folder.iterdir()) == ["00000-a.dcm", "00001-b.dcm"]
    (event,) = _actions(platform, "upload")
    assert event.detail == {"files": 2, "job": queued.job.id}


@SQLITE_ONLY
def test_a_refused_upload_is_audited_in_fixed_words_and_keeps_nothing(
    platform: Platform, rows: dict[str, int]
) -> None:
    with pytest.raises(InputError, match=r"choose a \.zip"):
        submit_upload(platform, RESEARCHER, [])
    with pytest.raises(InputError, match="not a valid dataset name"):
        submit_upload(platform, RESEARCHER, [("a.dcm", io.BytesIO(b"x"))], dataset="../etc")
    broken = io.BytesIO(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match="not a readable zip"):
        submit_upload(platform, RESEARCHER, [("Doe^John.zip", broken)])
    reasons = [e.detail["reason"] for e in _actions(platform, "upload.refused")]
    assert sorted(reasons) == ["dataset-name", "no-files", "not-a-zip"]  # no file names
    with pytest.raises(PermissionDenied):
        submit_upload(platform, CLINICIAN, [("a.dcm", io.BytesIO(b"x"))])
    uploads = platform.path("uploads")
    assert not uploads.exists() or list(uploads.iterdir()) == []
    assert _jobs(platform, "ingest") == []
