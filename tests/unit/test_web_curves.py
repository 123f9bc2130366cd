"""Training curves (radseg.web.curves) and their charts (radseg.web.charts): one point per
iteration in increasing order, the smoothed loss, each class's Dice, a legend and named axes; the
model version page shows them and names who trained the version."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from flask.testing import FlaskClient

from radseg.contracts import TrainRequest, TrainResult
from radseg.core import Platform
from radseg.db.models import Dataset, DatasetVersion, ModelVersion, Prediction, Role
from radseg.hookspecs import hookimpl
from radseg.jobs.handlers import handler_for
from radseg.model_registry import COMMAND_LINE, model_card, trained_by
from radseg.roles import CLI_ACTOR, Actor
from radseg.settings import Settings
from radseg.web.charts import nice_ticks, training_charts
from radseg.web.curves import read_metrics, smooth, training_curves
from radseg.workflows.training import request_training
from tests.support import SQLITE_ONLY, migrated_platform
from tests.web_support import log_in_as


def _write_lines(path: Path, rows: list[dict[str, object]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows) + tail)
    return path


def test_a_resumed_run_gives_one_point_per_iteration_in_order(tmp_path: Path) -> None:
    # A run logged at 19 and 39, was resumed from its checkpoint at 20 and logged 39 again (the
    # later row wins), then 59; a last line is still being written.
    rows = [
        {"iteration": 19, "total_loss": 2.0, "lr": 0.01},
        {"iteration": 39, "total_loss": 1.5, "lr": 0.01},
        {"iteration": 39, "total_loss": 1.25, "lr": 0.01},
        {"iteration": 59, "total_loss": 1.0, "lr": 0.01},
    ]
    metrics = _write_lines(tmp_path / "metrics.json", rows, tail='{"iteration": 79, "tot')
    curves = training_curves(metrics, [])
    assert curves["loss"]["raw"] == [[19.0, 2.0], [39.0, 1.25], [59.0, 1.0]]
    assert sorted(read_metrics(metrics)) == [19, 39, 59]
    assert curves["dice"] == {"mean": [], "classes": {}}


def test_the_smoothed_loss_is_a_debiased_moving_average() -> None:
    # By hand, weight 0.6: s1 = 0.4 * 4 = 1.6, / (1 - 0.6) = 4;
    # s2 = 0.6 * 1.6 + 0.4 * 2 = 1.76, / (1 - 0.36) = 2.75;
    # s3 = 0.6 * 1.76 + 0.4 * 1 = 1.456, / (1 - 0.216) = 1.857142...
    smoothed = smooth([[0, 4.0], [10, 2.0], [20, 1.0]], weight=0.6)
    assert [p[0] for p in smoothed] == [0, 10, 20]
    assert [p[1] for p in smoothed] == pytest.approx([4.0, 2.75, 1.456 / 0.784])
    assert smooth([[0, 4.0], [10, 2.0]], weight=0.0) == [[0, 4.0], [10, 2.0]]


def test_validation_dice_per_class_by_iteration(tmp_path: Path) -> None:
    validations = [
        {"iteration": 40, "mean_dice": 0.6, "dice": {"liver": 0.7, "lung": None}},
        {"iteration": 20, "mean_dice": 0.3, "dice": {"liver": 0.4, "lung": 0.2}},
        {"iteration": "x", "mean_dice": 0.9},  # not a validation
    ]
    curves = training_curves(tmp_path / "missing.json", validations)
    assert curves["dice"]["mean"] == [[20.0, 0.3], [40.0, 0.6]]
    assert curves["dice"]["classes"] == {
        "liver": [[20.0, 0.4], [40.0, 0.7]],
        "lung": [[20.0, 0.2]],  # a class with no Dice at 40 (empty in the val split) has no point
    }


def test_without_metrics_json_the_loss_is_the_loss_at_each_validation(tmp_path: Path) -> None:
    validations = [{"iteration": 1, "loss": 0.9}, {"iteration": 2, "loss": 0.7}]
    assert training_curves(None, validations)["loss"]["raw"] == [[1.0, 0.9], [2.0, 0.7]]


def test_ticks_are_round_numbers() -> None:
    assert nice_ticks(0, 1) == [0.0, 0.5, 1.0]
    assert nice_ticks(0, 1999) == [0, 500, 1000, 1500]
    assert nice_ticks(0.23, 1.9) == [0.5, 1.0, 1.5]


def test_the_charts_have_named_axes_and_a_legend_beside_the_plot_for_twenty_classes() -> None:
    classes = {f"organ {i}": [[20.0, i / 40], [40.0, i / 30]] for i in range(19)}
    classes["<b>bold</b>"] = [[20.0, 0.5], [40.0, 0.6]]
    curves = training_curves(None, [])
    curves["dice"] = {"mean": [[20.0, 0.3], [40.0, 0.5]], "classes": classes}
    loss, dice = (str(c) for c in training_charts(curves))
    assert "Iteration (optimizer steps)" in dice and "Validation Dice (0 to 1)" in dice
    assert "Training loss (total_loss, no unit)" in loss and "no loss logged" in loss
    plot, legend = dice.split("<figcaption>")
    # one checkbox per line, in the legend under the plot, not in it
    assert len(re.findall(r'<input type="checkbox" checked data-series="\d+">', legend)) == 21
    assert "<input" not in plot and len(re.findall(r'<g class="series"', plot)) == 21
    # each line has its point at each validation's iteration: two x values, not one
    paths = re.findall(r'<g class="series"[^>]*><title>[^<]*</title><path d="([^"]+)"', plot)
    assert len(paths) == 21
    # on an x axis from 0 to 40 drawn from 64 to 692 px: iteration 20 at 378, 40 at 692
    assert {x for d in paths for x in re.findall(r"[ML]([\d.]+),", d)} == {"378.0", "692.0"}
    assert "<b>bold</b>" not in dice and "&lt;b&gt;bold&lt;/b&gt;" in legend


def test_trained_by_names_the_user_or_the_command_line() -> None:
    assert trained_by("ana") == "ana"
    assert trained_by("cli") == COMMAND_LINE  # radseg train (radseg.roles.CLI_ACTOR)
    assert trained_by("") == COMMAND_LINE  # radseg train before the CLI recorded itself


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("created_by", "shown"), [("researcher", "researcher"), ("cli", "command line")]
)
def test_the_model_page_draws_the_curves_and_names_the_trainer(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int], created_by: str, shown: str
) -> None:
    with web_platform.sessions.begin() as session:
        prediction = session.get(Prediction, seeded["prediction"])
        assert prediction is not None
        version: ModelVersion = prediction.model_version
        version.created_by = created_by
        version.history = {
            "validations": [
                {"iteration": i, "mean_dice": i / 100, "dice": {"lesion": i / 80}} for i in (10, 20)
            ]
        }
        version_id, weights = version.id, version.weights_path
    folder = web_platform.resolve(weights).parent
    folder.mkdir(parents=True, exist_ok=True)
    _write_lines(
        folder / "metrics.json",
        [{"iteration": i, "total_loss": 3 - i / 10} for i in (4, 9, 14, 19)],
    )
    log_in_as(client, web_platform, "clinician")
    page = client.get(f"/models/{version_id}").get_data(as_text=True)
    assert re.search(rf'<dd id="trained-by">{shown} on \d{{4}}-', page)
    assert 'id="model-chart-loss"' in page and 'id="model-chart-dice"' in page
    listing = client.get("/models").get_data(as_text=True)  # the models list says it the same way
    assert f"<td>{shown}</td>" in listing
    assert page.count("Iteration (optimizer steps)") == 2
    assert "loss (raw)</label>" in page and "loss (moving average, weight 0.6)</label>" in page
    assert "</svg>mean Dice</label>" in page and "</svg>lesion</label>" in page
    assert "charts.js" in page


class InstantBackend:
    """Trains nothing: writes a weights file and says so."""

    name: ClassVar[str] = "instant"
    architectures: ClassVar[tuple[str, ...]] = ("none",)

    def train(self, request: TrainRequest, progress: Any) -> TrainResult:
        request.output_dir.mkdir(parents=True, exist_ok=True)
        weights = request.output_dir / "model_final.pth"
        weights.write_bytes(b"weights")
        return TrainResult(weights=weights, config={}, iterations=1)

    def predict(self, request: Any, progress: Any) -> Any:
        raise AssertionError("not predicted here")


class InstantModels:
    @hookimpl
    def radseg_register_models(self) -> list[type]:
        return [InstantBackend]


@pytest.fixture
def trainer_platform(settings: Settings) -> Iterator[Platform]:
    made = migrated_platform(settings, autoload=False, plugins=[("instant", InstantModels())])
    with made.sessions.begin() as session:
        dataset = Dataset(name="chest")
        session.add(
            DatasetVersion(
                dataset=dataset,
                version=1,
                content_hash="0" * 64,
                classes=[],
                recipe={},
                split={},
                path="datasets/chest/v1",
            )
        )
    yield made
    made.close()


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("actor", "shown"),
    [(Actor("rita", Role.RESEARCHER), "rita"), (CLI_ACTOR, COMMAND_LINE)],
)
def test_the_card_names_who_asked_for_the_training_job(
    trainer_platform: Platform, actor: Actor, shown: str
) -> None:
    """The whole path: the request (web, API or CLI) queues the job, the worker's handler
    trains, the model version keeps the job's creator and the card names them."""
    job = request_training(trainer_platform, actor, dataset="chest", backend="instant")
    result = handler_for("train")(
        trainer_platform, dict(job.payload), progress=lambda f, m: None, job_id=job.id
    )
    with trainer_platform.sessions() as session:
        version = session.get(ModelVersion, result["model_version_id"])
        assert version is not None and version.created_by == actor.username
        assert model_card(session, version)["lineage"]["trained_by"] == shown
