"""Training curves in a real browser (Debian's chromium, Playwright): unticking a class in the
Dice chart's legend hides its line, and the line stays hidden when a running job's page fetches
newer charts; the model version page's legend does the same."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from radseg.contracts import Geometry
from radseg.db.models import Job, JobState, Role
from radseg.settings import load_settings
from tests.support import add_series_with_prediction, migrated_platform
from tests.web_support import add_user, browser_page, log_in_at, served

pytestmark = pytest.mark.browser

PASSWORD = "charts password"
SHAPE = (2, 8, 8)


def _validations(iterations: list[int]) -> list[dict[str, Any]]:
    return [
        {"iteration": i, "mean_dice": i / 100, "dice": {"liver": i / 90, "spleen": i / 110}}
        for i in iterations
    ]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A running training job that has logged its loss and validated twice, and a model version
    with the same history."""
    platform = migrated_platform(
        load_settings({"home": tmp_path / "home"}, environ={}), autoload=False
    )
    with platform.sessions.begin() as session:
        add_user(session, "res", PASSWORD, Role.RESEARCHER)
        prediction = add_series_with_prediction(
            session,
            platform,
            hu=np.zeros(SHAPE, np.float32),
            mask=np.zeros(SHAPE, np.uint8),
            geometry=Geometry((8, 8, 2), (1.0, 1.0, 2.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
            classes=[{"id": 1, "name": "liver", "color": "#ff0000"}],
        )
        prediction.model_version.history = {"validations": _validations([10, 20])}
        job = Job(kind="train", state=JobState.RUNNING, payload={}, created_by="res")
        session.add(job)
        session.flush()
        job_id, version_id = job.id, prediction.model_version_id
    folder = platform.path("models", f"job-{job_id}")
    folder.mkdir(parents=True)
    rows = [{"iteration": i, "total_loss": 2 - i / 20} for i in (9, 19)]
    (folder / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    history = folder / "history.json"
    history.write_text(json.dumps({"validations": _validations([10, 20])}))
    with served(platform) as url:
        yield {"url": url, "job": job_id, "version": version_id, "history": history}


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:
    with browser_page(browser, 1280, 900) as page:
        yield page


def _line(chart: Any, label: str) -> Any:
    """The chart's line (an SVG group) whose legend entry reads ``label``."""
    box = chart.locator("li", has_text=label).locator("input")
    return chart.locator(f'g.series[data-series="{box.get_attribute("data-series")}"]')


def test_a_class_unticked_in_the_legend_is_hidden_and_stays_hidden_as_the_job_runs(
    page: Any, server: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    base = server["url"]
    log_in_at(page, f"{base}/jobs/{server['job']}", "res", PASSWORD)
    dice = page.locator("#chart-dice")
    assert dice.locator(".axis-name").all_text_contents() == [
        "Iteration (optimizer steps)",
        "Validation Dice (0 to 1)",
    ]
    liver, spleen = _line(dice, "liver"), _line(dice, "spleen")
    expect(liver).to_be_visible()
    # the legend lies under the plot, outside it
    plot = dice.locator("svg[role=img]").bounding_box()
    legend = dice.locator("ul").bounding_box()
    assert legend["y"] >= plot["y"] + plot["height"]

    dice.get_by_label("liver").uncheck()
    expect(liver).to_be_hidden()
    expect(spleen).to_be_visible()

    # a third validation: the page fetches the new charts; liver stays hidden
    server["history"].write_text(json.dumps({"validations": _validations([10, 20, 30])}))
    mean = _line(page.locator("#chart-dice"), "mean Dice")
    expect(mean.locator("circle")).to_have_count(3)
    dice = page.locator("#chart-dice")
    expect(dice.get_by_label("liver")).not_to_be_checked()
    expect(_line(dice, "liver")).to_be_hidden()
    expect(_line(dice, "spleen").locator("circle")).to_have_count(3)

    dice.get_by_label("liver").check()
    expect(_line(dice, "liver")).to_be_visible()


def test_the_model_page_legend_hides_a_class(page: Any, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    base = server["url"]
    log_in_at(page, f"{base}/models/{server['version']}", "res", PASSWORD)
    dice = page.locator("#model-chart-dice")
    expect(_line(dice, "spleen").locator("circle")).to_have_count(2)
    dice.get_by_label("spleen").uncheck()
    expect(_line(dice, "spleen")).to_be_hidden()
    expect(_line(dice, "mean Dice")).to_be_visible()
