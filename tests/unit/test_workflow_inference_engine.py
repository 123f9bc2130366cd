"""What a backend reports about its engine is kept with the prediction and the model version.

A backend that predicts with an int8 engine tells the host (``PredictRequest.report``) which
engine it used, the check it made against float32 on this prediction, and its measured
agreement; the host stores the first two in the prediction's provenance, the last with the
model version (``metrics["int8"]``, with the latest check), and the model card — page, JSON
API, ``radseg models show`` — shows the choice. The backend here is a stand-in that reports
fixed facts (the detectron2 plugin's real measurements are tested in
``tests/integration/test_d2_int8.py``); it also records which dataset version it was handed to
calibrate on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from radseg.cli import main
from radseg.contracts import Geometry, PredictRequest
from radseg.core import Platform
from radseg.db.models import (
    Dataset,
    DatasetVersion,
    Model,
    ModelVersion,
    Role,
    Series,
    Study,
    User,
)
from radseg.hookspecs import hookimpl
from radseg.imaging.channels import ChannelRecipe
from radseg.imaging.volumes import write_volume
from radseg.settings import Settings
from radseg.web import create_app
from radseg.workflows.prediction import predict
from tests.support import migrated_platform
from tests.web_support import get_json, log_in_as

AGREEMENT = {
    "per_class": {"liver": 0.9971, "spleen": None},
    "slices": 4,
    "on": "val split (v1)",
    "measured_at": "2026-12-05T16:00:00+00:00",
    "min_dice": 0.9971,
}


def int8_facts(check: dict[str, Any] | None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "engine": "int8",
        "int8": {
            "engine": "int8",
            "min_dice_setting": 0.99,
            "measured": True,
            "reason": "lowest per-class Dice with float32 0.9971 ≥ 0.99",
            "agreement": AGREEMENT,
            "failed_check": None,
        },
    }
    if check is not None:
        facts["int8_check"] = check
    return facts


class ReportingBackend:
    name: ClassVar[str] = "reporting"
    architectures: ClassVar[tuple[str, ...]] = ("fpn",)
    #: what the next predict reports; the dataset dirs it was handed
    facts: ClassVar[list[dict[str, Any]]] = []
    dataset_dirs: ClassVar[list[Path | None]] = []

    def train(self, request: Any, progress: Any) -> Any:
        raise AssertionError("not trained here")

    def predict(self, request: PredictRequest, progress: Any) -> np.ndarray:
        ReportingBackend.dataset_dirs.append(request.dataset_dir)
        request.report(ReportingBackend.facts.pop(0))
        labels = np.zeros(request.images.shape[:3], np.uint8)
        labels[:, 2:5, 2:5] = 1
        return labels


class Models:
    @hookimpl
    def radseg_register_models(self) -> list[type]:
        return [ReportingBackend]


@pytest.fixture
def platform(settings: Settings, password_hash: str) -> Iterator[Platform]:
    made = migrated_platform(settings, autoload=False, plugins=[("reporting", Models())])
    with made.sessions.begin() as session:
        session.add(User(username="viewer", password_hash=password_hash, role=Role.CLINICIAN))
    ReportingBackend.facts.clear()
    ReportingBackend.dataset_dirs.clear()
    yield made
    made.close()


@pytest.fixture
def rows(platform: Platform) -> dict[str, Any]:
    """A model version (two classes) of a dataset version, and a small CT series."""
    geometry = Geometry((8, 8, 3), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    volume = platform.path("volumes", "s1.nii.gz")
    write_volume(volume, np.full((3, 8, 8), 40, np.int16), geometry)
    classes = [{"id": 1, "name": "liver"}, {"id": 2, "name": "spleen"}]
    with platform.sessions.begin() as session:
        version = ModelVersion(
            model=Model(name="abdomen-fpn", backend="reporting"),
            dataset_version=DatasetVersion(
                dataset=Dataset(name="abdomen"),
                version=1,
                content_hash="0" * 64,
                classes=classes,
                recipe=ChannelRecipe().to_dict(),
                split={},
                path="datasets/abdomen/v1",
            ),
            config={"classes": classes, "architecture": "fpn"},
            weights_path="models/1/model_final.pth",
        )
        series = Series(
            study=Study(study_instance_uid="2.25.7", patient_key="p7"),
            series_instance_uid="2.25.7.1",
            modality="CT",
            geometry=geometry.to_dict(),
            volume_path=platform.relative(volume),
        )
        session.add_all([version, series])
        session.flush()
        return {"model_version": version.id, "series_uid": series.series_instance_uid}


def engine_card(client: FlaskClient, version_id: int) -> str:
    """The model page's "CPU engine" entry (its HTML)."""
    page = client.get(f"/models/{version_id}").get_data(as_text=True)
    return page.split('id="inference-engine">', 1)[1].split("</dd>", 1)[0]


def models_show(platform: Platform, version_id: int) -> Any:
    """``radseg models show`` of the model version (the click result)."""
    return CliRunner().invoke(
        main,
        ["models", "show", str(version_id)],
        obj={"platform": platform},
        catch_exceptions=False,
    )


def stored_int8(platform: Platform, model_version_id: int) -> dict[str, Any]:
    with platform.sessions() as session:
        version = session.get(ModelVersion, model_version_id)
        assert version is not None
        return dict(version.metrics["int8"])


def test_the_engine_and_its_checks_are_stored_with_the_prediction_and_the_model_version(
    platform: Platform, rows: dict[str, Any]
) -> None:
    check = {"per_class": {"liver": 0.998, "spleen": None}, "slices": 2, "min_dice": 0.998}
    ReportingBackend.facts[:] = [int8_facts({**check, "passed": True}), int8_facts(None)]
    first = predict(
        platform,
        model_version_id=rows["model_version"],
        series_instance_uid=rows["series_uid"],
    )
    # the backend was handed the dataset version the model was trained on, to calibrate on
    assert ReportingBackend.dataset_dirs == [platform.resolve("datasets/abdomen/v1")]
    checked = {**check, "passed": True}
    assert first.provenance["inference"] == {"engine": "int8", "int8_check": checked}
    stored = stored_int8(platform, rows["model_version"])
    assert stored["engine"] == "int8"
    assert stored["agreement"] == AGREEMENT
    assert stored["last_check"] == {**checked, "prediction_id": first.id}

    # a prediction that made no check keeps the last one there was
    second = predict(
        platform,
        model_version_id=rows["model_version"],
        series_instance_uid=rows["series_uid"],
    )
    assert second.provenance["inference"] == {"engine": "int8"}
    assert stored_int8(platform, rows["model_version"])["last_check"]["prediction_id"] == first.id


def test_the_model_card_shows_the_engine_and_its_agreement(
    platform: Platform, rows: dict[str, Any]
) -> None:
    client = create_app(platform, {"TESTING": True}).test_client()
    log_in_as(client, platform, "viewer")
    version_id = rows["model_version"]
    before = client.get(f"/models/{version_id}").get_data(as_text=True)
    assert "not measured yet" in before
    assert get_json(client, f"/api/model-versions/{version_id}")["inference"] is None

    failed = {"per_class": {"liver": 0.95}, "slices": 2, "min_dice": 0.95, "passed": False}
    fell_back = int8_facts(failed)
    fell_back["engine"] = fell_back["int8"]["engine"] = "onnx"
    fell_back["int8"]["reason"] = (
        "a check on 2 predicted slices measured a lowest Dice of 0.9500 < 0.99"
    )
    ReportingBackend.facts[:] = [fell_back]
    prediction = predict(
        platform, model_version_id=version_id, series_instance_uid=rows["series_uid"]
    )

    engine = engine_card(client, version_id)
    assert "<strong>float32</strong>" in engine
    assert "0.9500 &lt; 0.99" in engine  # why int8 is not used
    assert "liver 0.9971" in engine  # the agreement measured when it was built
    assert f"prediction {prediction.id}" in engine and "failed" in engine
    api = get_json(client, f"/api/model-versions/{version_id}")["inference"]
    assert api["engine"] == "onnx" and api["last_check"]["passed"] is False

    shown = models_show(platform, version_id)
    assert "CPU engine: float32 (a check on 2 predicted slices" in shown.output


def bf16_facts() -> dict[str, Any]:
    """What the detectron2 plugin reports where auto took bf16 (int8 then not considered)."""
    return {
        "engine": "bf16",
        "bf16_check": {**AGREEMENT, "slices": 2, "passed": True},
        "bf16": {
            "engine": "bf16",
            "min_dice_setting": 0.99,
            "measured": True,
            "reason": "lowest per-class Dice with float32 0.9971 ≥ 0.99",
            "agreement": AGREEMENT,
            "failed_check": None,
            "calibration": None,
            "torch": "2.14.1",
            "recipe": "torch-bf16-channels-last-v1",
        },
    }


def test_bf16_is_shown_with_its_agreement_and_an_earlier_int8_measurement_kept(
    platform: Platform, rows: dict[str, Any]
) -> None:
    """A model version measured in int8 (an older worker, or a CPU without native bfloat16)
    and later predicted in bf16: the card says bf16 and why, and still shows int8's numbers."""
    client = create_app(platform, {"TESTING": True}).test_client()
    log_in_as(client, platform, "viewer")
    version_id = rows["model_version"]
    ReportingBackend.facts[:] = [int8_facts(None), bf16_facts()]
    for _ in range(2):
        last = predict(
            platform, model_version_id=version_id, series_instance_uid=rows["series_uid"]
        )
    assert last.provenance["inference"]["engine"] == "bf16"
    assert last.provenance["inference"]["bf16_check"]["passed"] is True

    api = get_json(client, f"/api/model-versions/{version_id}")["inference"]
    assert api["engine"] == "bf16"
    assert api["reason"] == "lowest per-class Dice with float32 0.9971 ≥ 0.99"
    assert api["last_check"]["prediction_id"] == last.id
    assert set(api["engines"]) == {"bf16", "int8"}
    assert api["engines"]["int8"]["prediction_id"] == last.id - 1

    engine = engine_card(client, version_id)
    assert "<strong>bf16</strong>" in engine
    bf16_line = engine.split('id="engine-bf16">', 1)[1].split("</li>", 1)[0]
    assert "0.9971 ≥ 0.99" in bf16_line and "liver 0.9971" in bf16_line
    assert f"prediction {last.id}" in bf16_line and "passed" in bf16_line
    assert 'id="engine-int8"' in engine

    shown = models_show(platform, version_id)
    assert "CPU engine: bf16 (lowest per-class Dice with float32 0.9971 ≥ 0.99)" in shown.output
    assert "    int8: lowest per-class Dice" in shown.output


def test_an_int8_measurement_stored_before_bf16_existed_is_still_shown() -> None:
    """A model version's ``metrics["int8"]`` as stored before there were several engines (no
    ``prediction_id``): the card's facts are that record's."""
    from radseg.model_registry import inference_engine

    legacy = {**int8_facts(None)["int8"], "last_check": {"passed": True, "prediction_id": 3}}
    shown = inference_engine(ModelVersion(metrics={"int8": legacy, "val": {"mean_dice": 0.8}}))
    assert shown is not None
    assert shown["engine"] == "int8" and shown["reason"] == legacy["reason"]
    assert shown["engines"] == {"int8": legacy}
    assert inference_engine(ModelVersion(metrics={"val": {"mean_dice": 0.8}})) is None
