"""Model registry end to end on a real database: two trained model versions, an evaluation job
each (report table + PNG plots), the comparison on the same test split, the model card, the
prediction's provenance, the CLI and the model version page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from radseg.cli import main
from radseg.core import Platform
from radseg.db.models import Evaluation, ModelVersion, Role, User
from radseg.errors import NotFound
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.jobs.handlers import handler_for
from radseg.model_registry import compare, config_hash, model_card
from radseg.web import create_app
from radseg.workflows.datasets import build_version
from radseg.workflows.ingest import ingest
from radseg.workflows.prediction import predict
from radseg.workflows.training import train
from tests.support import require

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _setup(platform: Platform, tmp_path: Path) -> tuple[int, int, str]:
    """Three synthetic patients (train/val/test: one each), two model versions."""
    for seed in range(3):
        study = write_synthetic_ct(tmp_path / f"p{seed}", seed=seed, shape=(6, 48, 48))
        ingest(platform, study.dicom_dir, labels=study.label_path, dataset="chest")
    version = build_version(platform, "chest")
    assert all(version.split[k] for k in ("train", "val", "test"))
    test_patients = set(version.split["test"])
    quick = {"architecture": "semantic_fpn", "batch_size": 2, "num_workers": 0}
    a = train(
        platform,
        dataset="chest",
        backend="detectron2",
        job_id=1,
        created_by="ana",
        config={**quick, "iterations": 2, "eval_period": 1},
    )
    b = train(
        platform,
        dataset="chest",
        backend="detectron2",
        job_id=2,
        created_by="ben",
        config={**quick, "iterations": 1},
        model_name="chest-b",
    )
    from radseg.db.models import Series, Study

    with platform.sessions() as session:
        (test_uid,) = [
            s.series_instance_uid
            for s in session.query(Series).join(Study)
            if s.study.patient_key in test_patients
        ]
    return a.id, b.id, test_uid


# Two trainings and two evaluations take most of a minute: this runs on PostgreSQL only (JSONB,
# the multi-worker database); the schema itself is checked on both by tests/meta.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_evaluate_compare_card_provenance_cli_and_page(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("detectron2" in platform.plugins.models, "the detectron2 plugin is not available")
    a_id, b_id, test_uid = _setup(platform, tmp_path)

    with platform.sessions() as session:
        a = session.get(ModelVersion, a_id)
        assert a is not None
        assert a.config_hash == config_hash(a.config) and a.code_version
        assert [e["iteration"] for e in a.history["validations"]] == [1, 2]  # stored for plots
        with pytest.raises(NotFound, match="no evaluation on the same dataset version"):
            compare(session, a_id, b_id)

    # The evaluation job, as the worker runs it
    evaluate_job = handler_for("evaluate")
    results = [
        evaluate_job(
            platform,
            {"model_version_id": i, "split": "test"},
            progress=lambda f, m: None,
            job_id=10 + i,
        )
        for i in (a_id, b_id)
    ]
    with platform.sessions() as session:
        evaluation = session.get(Evaluation, results[0]["evaluation_id"])
        assert evaluation is not None and evaluation.split == "test"
        assert list(evaluation.metrics["studies"]) == [test_uid]  # only the test patient
        per_class = evaluation.metrics["per_class"]
        assert {"dice", "hd95", "assd", "surface_dice", "volume_diff_mm3"} <= set(
            next(iter(per_class.values()))
        )
        report = platform.resolve(evaluation.report_path)
        for name in ("dice_per_class.png", "hd95_per_class.png", "history.png"):
            assert (report / name).read_bytes()[:8] == PNG_MAGIC, name
        table = (report / "report.md").read_text()
        assert "| class | Dice |" in table and next(iter(per_class)) in table
        assert json.loads((report / "report.json").read_text())["per_class"] == per_class

        result = compare(session, a_id, b_id)
        assert result["series"] == [test_uid]
        dice_rows = [r for r in result["rows"] if r["metric"] == "dice"]
        assert {r["class"] for r in dice_rows} == set(per_class)
        for row in dice_rows:
            assert row["a"] == per_class[row["class"]]["dice"]["mean"]

        card = model_card(session, session.get(ModelVersion, a_id))
        assert card["intended_modality"] == ["CT"]
        assert card["lineage"]["trained_by"] == "ana"
        assert card["input"]["recipe"]["channels"] and card["input"]["pixel_mean"]
        assert [e["id"] for e in card["evaluations"]] == [evaluation.id]

    prediction = predict(platform, model_version_id=a_id, series_instance_uid=test_uid)
    assert prediction.provenance["model_version_id"] == a_id
    assert prediction.provenance["config_hash"] == config_hash(a.config)
    assert prediction.provenance["dataset_version_id"] == a.dataset_version_id
    assert prediction.metrics["per_class"] and "hd95" in prediction.metrics["mean"]

    # CLI
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    runner = CliRunner()

    def cli(*args: str) -> str:
        out = runner.invoke(main, ["--home", str(platform.home), *args], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        return out.output

    assert "chest-b" in cli("models", "list")
    assert "trained_by: ana" in cli("models", "show", str(a_id))
    compared = json.loads(cli("models", "compare", str(a_id), str(b_id), "--json"))
    assert compared["rows"] == result["rows"]
    assert "queued evaluation job" in cli("evaluate", "--model-version", str(a_id))

    # The model version page: card, history chart, report with its plots
    with platform.sessions.begin() as session:
        session.add(User(username="res", password_hash="x", role=Role.RESEARCHER))
    app = create_app(platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    from radseg import users

    with platform.sessions() as session:
        user = users.get_user(session, "res")
        token = f"{user.id}:{users.session_token(user)}"
    with client.session_transaction() as flask_session:
        flask_session["_user_id"] = token
        flask_session["_fresh"] = True
    page = client.get(f"/models/{a_id}").get_data(as_text=True)
    assert "Model card" in page and "trained_by" not in page and "ana" in page
    assert '<dd id="trained-by">ana on' in page
    assert 'id="model-chart-dice"' in page and "</svg>mean Dice</label>" in page
    png_url = f"/models/evaluations/{evaluation.id}/dice_per_class.png"
    assert png_url in page
    image = client.get(png_url)
    assert image.status_code == 200 and image.data[:8] == PNG_MAGIC
    assert client.get(f"/models/evaluations/{evaluation.id}/report.json").status_code == 404
    history = client.get(f"/models/{a_id}/history.json").get_json()
    assert [p[0] for p in history["mean_dice"]] == [1.0, 2.0]
    comparison = client.get(f"/models/compare?a={a_id}&b={b_id}").get_data(as_text=True)
    assert 'id="comparison"' in comparison
