"""The model version page's quality charts in a real browser (Debian's chromium, Playwright):
quality.js draws a week per point from the JSON API, the flagged week in red, and hovering a
week shows its numbers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from radseg.contracts import Geometry
from radseg.db.models import Prediction, Review, ReviewStatus, Role
from radseg.quality import iso_week
from radseg.roles import Actor
from radseg.settings import load_settings
from radseg.workflows.review import record_review
from tests.support import add_series_with_prediction, migrated_platform
from tests.web_support import NODULE, add_user, browser_page, log_in_at, served

pytestmark = pytest.mark.browser

PASSWORD = "quality password"
SHAPE = (4, 16, 16)
NOW = datetime.now(UTC)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A model version with four accepted predictions two weeks ago (the baseline: no reject)
    and, this week, one accepted and one rejected: this week's reject rate is flagged."""
    settings = load_settings(
        {"home": tmp_path / "home", "quality_baseline_weeks": 1, "quality_baseline_min": 4},
        environ={},
    )
    platform = migrated_platform(settings, autoload=False)
    geometry = Geometry((16, 16, 4), (1.0, 1.0, 2.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    with platform.sessions.begin() as session:
        clinician = add_user(session, "dr.who", PASSWORD, Role.CLINICIAN)
        first = add_series_with_prediction(
            session,
            platform,
            hu=np.zeros(SHAPE, np.float32),
            mask=np.zeros(SHAPE, np.uint8),
            geometry=geometry,
            classes=NODULE,
        )
        more = [
            Prediction(
                series_id=first.series_id,
                model_version_id=first.model_version_id,
                mask_path=first.mask_path,
            )
            for _ in range(5)
        ]
        session.add_all(more)
        session.flush()
        for prediction in more[:4]:
            session.add(
                Review(
                    prediction_id=prediction.id,
                    reviewer_id=clinician.id,
                    status=ReviewStatus.ACCEPTED,
                    created_at=NOW - timedelta(days=14),
                )
            )
        version, ids = first.model_version_id, (first.id, more[4].id)
    actor = Actor("dr.who", Role.CLINICIAN)
    record_review(platform, actor, ids[0], status="accepted")
    record_review(platform, actor, ids[1], status="rejected")

    with served(platform) as url:
        yield {"url": url, "version": version}


def test_the_model_page_draws_the_control_chart_and_flags_the_shifted_week(
    browser: Any, server: dict[str, Any]
) -> None:
    base, version = server["url"], server["version"]
    with browser_page(browser, 1280, 900) as page:
        log_in_at(page, f"{base}/models/{version}", "dr.who", PASSWORD)
        chart = page.locator("#chart-reject_rate")
        chart.locator("circle").nth(1).wait_for()
        assert chart.locator("circle").count() == 2
        flagged = chart.locator("circle.flagged")
        assert flagged.count() == 1 and flagged.get_attribute("data-week") == iso_week(NOW)
        assert chart.locator("path.limit").count() == 1
        assert chart.locator("line.center").count() == 1
        flagged.hover()
        readout = page.locator("#readout-reject_rate")
        assert readout.inner_text() == (
            f"{iso_week(NOW)}: reject rate 0.500, n=2, limit 0.000 — flagged"
        )
        assert "reject rate 0.500" in page.locator("#quality-alerts").inner_text()
        # the correction chart has no corrections to draw
        assert "no reviews yet" in page.locator("#chart-correction_dice").text_content()
