"""Where the model doubts, in a real browser (Debian's chromium through Playwright): the review
queue lists the most doubtful prediction first with its reason; in the viewer the uncertainty
layer draws its heat map where the stored map says the model doubts, the per-slice strip is
drawn, and "next most doubtful slice" (the D key and the button) walks the slices from the most
doubtful down. The assertions read the screenshot's and the strip canvas' pixels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from radseg.contracts import Geometry
from radseg.db.models import Role
from radseg.imaging.review_priority import doubtful_slices, slice_profile
from radseg.imaging.volumes import write_volume
from radseg.settings import load_settings
from tests.support import add_series_with_prediction, migrated_platform
from tests.web_support import add_user, browser_page, log_in_at, served, stage_pixel

pytestmark = pytest.mark.browser

PASSWORD = "doubt password"
SHAPE = (8, 64, 64)  # (z, y, x)
DOUBT_ROWS = slice(16, 32)
DOUBT_COLS = slice(4, 20)
#: the most doubtful slice first, then the second
MOST, SECOND = 5, 2
#: 0 HU through the soft-tissue window (40/400)
GREY = round(160 / 400 * 255)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    (tmp_path / "home").mkdir()
    settings = load_settings({"home": tmp_path / "home"}, environ={})
    platform = migrated_platform(settings, autoload=False)
    geometry = Geometry((64, 64, 8), (0.7, 0.7, 3.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    uncertainty = np.zeros(SHAPE, dtype=np.uint8)
    uncertainty[MOST, DOUBT_ROWS, DOUBT_COLS] = 255
    uncertainty[SECOND, DOUBT_ROWS, DOUBT_COLS] = 128
    map_file = platform.path("predictions", "doubt.uncertainty.nii.gz")
    write_volume(map_file, uncertainty, geometry)
    profile = slice_profile(uncertainty / 255.0)
    ids = {}
    with platform.sessions.begin() as session:
        add_user(session, "dr.doubt", PASSWORD, Role.CLINICIAN)
        for name, priority, reason in (
            ("unscored", None, ""),
            ("low", 0.12, "nodule: 12% of it uncertain"),
            ("high", 0.93, "nodule in 3 parts; training has 1"),
        ):
            prediction = add_series_with_prediction(
                session,
                platform,
                hu=np.zeros(SHAPE, np.float32),
                mask=np.zeros(SHAPE, np.uint8),
                geometry=geometry,
                classes=[{"id": 1, "name": "nodule", "color": "#00ff00"}],
                description=f"Chest CT {name}",
            )
            prediction.priority = priority
            prediction.priority_reason = reason
            if name == "high":
                prediction.uncertainty_path = platform.relative(map_file)
                prediction.quality = {
                    "uncertainty": "softmax entropy",
                    "slices": profile,
                    "doubtful_slices": doubtful_slices(profile),
                }
            ids[name] = prediction.id
    with served(platform) as url:
        yield {"url": url, "ids": ids}


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:
    with browser_page(browser, 1280, 800) as page:
        yield page


def wait_for_heat(page: Any, z: int) -> None:
    page.wait_for_function(
        """(z) => {
            const img = document.getElementById('uncertainty-img');
            return img && img.src.includes(`/uncertainty/${z}.png`) && img.complete
                && img.naturalWidth > 0
                && document.getElementById('slice-img').src.includes(`/slice/${z}.png`)
                && document.getElementById('slice-img').complete;
        }""",
        arg=z,
    )


def test_the_queue_follows_the_priority_and_the_uncertainty_layer_draws(
    page: Any, server: dict[str, Any]
) -> None:
    base, ids = server["url"], server["ids"]
    log_in_at(page, f"{base}/review", "dr.doubt", PASSWORD)

    rows = page.locator("#queue tbody tr[data-prediction]")
    order = [int(rows.nth(i).get_attribute("data-prediction")) for i in range(rows.count())]
    assert order == [ids["high"], ids["low"], ids["unscored"]]
    assert "nodule in 3 parts; training has 1" in rows.nth(0).inner_text()
    assert "not scored" in rows.nth(2).inner_text()
    page.select_option("select[name=sort]", "oldest")
    page.click("form.card button[type=submit]")
    page.wait_for_url("**sort=oldest**")
    rows = page.locator("#queue tbody tr[data-prediction]")
    assert int(rows.nth(0).get_attribute("data-prediction")) == ids["unscored"]

    page.goto(f"{base}/review")
    page.locator("#queue tbody tr").nth(0).locator("a.button").click()
    page.wait_for_url("**/view?prediction=*")
    assert page.text_content("#priority-reason") == "nodule in 3 parts; training has 1"

    # the strip: slice MOST is the reddest column, a sure slice is pale
    strip = page.evaluate(
        """() => {
            const c = document.getElementById('doubt-strip');
            const data = c.getContext('2d').getImageData(0, 0, c.width, 1).data;
            const column = (z) => Array.from(data.slice(4 * z, 4 * z + 4));
            return Array.from({length: c.width}, (_, z) => column(z));
        }"""
    )
    assert len(strip) == SHAPE[0]
    most, sure = strip[MOST], strip[0]
    assert most[0] == 255 and most[1] == 0 and most[3] == 255
    assert sure[3] < 64 and strip[SECOND][1] > most[1]

    page.check("#show-uncertainty")
    page.locator("#stage").focus()
    page.keyboard.press("d")
    wait_for_heat(page, MOST)
    assert page.text_content("#slice-label") == f"{MOST + 1} / {SHAPE[0]}"
    heat = stage_pixel(page, 24, 12, shape=SHAPE)
    clear = stage_pixel(page, 24, 44, shape=SHAPE)
    # opaque red at 70 % over grey: (0.7·255 + 0.3·GREY, 0.3·GREY, 0.3·GREY)
    assert abs(heat[0] - (0.7 * 255 + 0.3 * GREY)) <= 10, heat
    assert abs(heat[1] - 0.3 * GREY) <= 10 and abs(heat[2] - 0.3 * GREY) <= 10, heat
    assert np.abs(clear - GREY).max() <= 8, clear

    page.fill("#uncertainty-opacity", "0")  # fires input: the layer's own opacity
    page.wait_for_function("() => document.getElementById('uncertainty-img').style.opacity === '0'")
    assert np.abs(stage_pixel(page, 24, 12, shape=SHAPE) - GREY).max() <= 8

    page.click("#next-doubtful")
    wait_for_heat(page, SECOND)
    assert page.text_content("#slice-label") == f"{SECOND + 1} / {SHAPE[0]}"
    page.uncheck("#show-uncertainty")
    page.locator("#stage").focus()  # keys typed into a form field are the field's
    page.keyboard.press("d")  # back to the most doubtful: the list wraps around
    page.wait_for_function(f"() => document.getElementById('viewer').dataset.z === '{MOST}'")
