"""The viewer's reading tools in chromium: the ruler, the ellipse's HU statistics, the difference
view's colours, the key sheet, 1:1, cine, prefetch, the dark theme and the image filling the window.

One synthetic series, 12 x 64 x 96 voxels of 0.5 x 1.0 mm (anisotropic, so a ruler that mixes the
axes up is caught): two 300 HU markers on slice 6 at known voxels, a 100 HU block, a predicted
square and ground truth moved two columns right of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from radseg.contracts import Geometry
from radseg.db.models import LabelSet, Measurement, Role
from radseg.imaging.volumes import write_volume
from radseg.settings import load_settings
from tests.support import add_series_with_prediction, migrated_platform
from tests.web_support import (
    add_user,
    browser_page,
    log_in_at,
    served,
    stage_pixel,
    wait_for_overlay,
)

pytestmark = pytest.mark.browser

PASSWORD = "tools password"
SHAPE = (12, 64, 96)  # (z, y, x)
SPACING = (0.5, 1.0, 2.0)  # (x, y, z) mm
Z = SHAPE[0] // 2  # the slice the viewer opens on
MARKERS = ((10, 20), (50, 40))  # (column, row)
BLOCK = (slice(44, 56), slice(60, 84))  # rows, columns of 100 HU
SQUARE = (slice(8, 24), slice(60, 76))  # rows, columns of the predicted class 1
SHIFT = 4  # the labels' square is this many columns right of the prediction's


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    (tmp_path / "home").mkdir()
    settings = load_settings({"home": tmp_path / "home"}, environ={})
    platform = migrated_platform(settings, autoload=False)
    geometry = Geometry((96, 64, 12), SPACING, (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    hu = np.zeros(SHAPE, np.float32)
    for col, row in MARKERS:
        hu[Z, row, col] = 300
    hu[Z, BLOCK[0], BLOCK[1]] = 100
    mask = np.zeros(SHAPE, np.uint8)
    mask[Z, SQUARE[0], SQUARE[1]] = 1
    truth = np.zeros(SHAPE, np.uint8)
    truth[Z, SQUARE[0], SQUARE[1].start + SHIFT : SQUARE[1].stop + SHIFT] = 1
    classes = [{"id": 1, "name": "nodule", "color": "#ff0000"}]
    with platform.sessions.begin() as session:
        add_user(session, "dr.ruler", PASSWORD, Role.CLINICIAN)
        prediction = add_series_with_prediction(
            session, platform, hu=hu, mask=mask, geometry=geometry, classes=classes
        )
        target = platform.path("labels", "truth.nii.gz")
        write_volume(target, truth, geometry)
        session.add(
            LabelSet(
                series_id=prediction.series_id,
                source="import",
                version=1,
                classes=classes,
                path=platform.relative(target),
            )
        )
    with served(platform) as url:
        yield {"url": url, "platform": platform}


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:
    with browser_page(browser, 1400, 800) as page:
        yield page


def open_viewer(page: Any, base: str) -> None:
    log_in_at(page, f"{base}/series/1/view", "dr.ruler", PASSWORD)
    wait_for_overlay(page, "")


def screen_point(page: Any, col: float, row: float) -> tuple[float, float]:
    """Where the voxel coordinate (col, row) of the slice is on the screen (zoom 1)."""
    box = page.locator("#stage").bounding_box()
    return box["x"] + col / SHAPE[2] * box["width"], box["y"] + row / SHAPE[1] * box["height"]


def drag(page: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*screen_point(page, *start))
    page.mouse.down()
    page.mouse.move(*screen_point(page, *end), steps=6)
    page.mouse.up()


def test_a_ruler_measures_a_known_distance_and_regions_the_hu_inside(
    page: Any, server: dict[str, Any]
) -> None:
    open_viewer(page, server["url"])
    page.check("input[name=tool][value=ruler]")
    page.fill("#measure-label", "marker gap")  # below the image: the page scrolls to it
    page.evaluate("() => window.scrollTo(0, 0)")
    (c0, r0), (c1, r1) = MARKERS
    drag(page, (c0 + 0.5, r0 + 0.5), (c1 + 0.5, r1 + 0.5))  # centre to centre of the markers
    item = page.locator("#measurement-list li[data-measurement]")
    item.wait_for()
    shown = float(re.search(r"([\d.]+) mm", item.inner_text()).group(1))  # type: ignore[union-attr]
    truth = math.hypot((c1 - c0) * SPACING[0], (r1 - r0) * SPACING[1])  # 28.3 mm
    assert abs(shown - truth) <= max(SPACING[:2])  # within one voxel
    assert "“marker gap”" in item.inner_text()
    assert f"{page.locator('.measure-tag').inner_text()} · slice {Z + 1}" in item.inner_text()
    assert page.locator("svg.measures line").count() == 1  # drawn on its slice

    page.keyboard.press("e")  # the ellipse tool, from the keyboard
    assert page.get_attribute("#stage", "data-tool") == "ellipse"
    drag(page, (62, 45), (82, 55))  # inside the 100 HU block
    page.locator("#measurement-list li[data-measurement]").nth(1).wait_for()
    text = page.locator("#measurement-list li[data-measurement]").nth(1).inner_text()
    assert "100.0 ± 0.0 HU" in text, text

    page.keyboard.press("h")  # freehand: an outline drawn inside the block
    corners = [(62, 46), (80, 46), (80, 54), (62, 54), (62, 46.3)]
    page.mouse.move(*screen_point(page, *corners[0]))
    page.mouse.down()
    for corner in corners[1:]:
        page.mouse.move(*screen_point(page, *corner), steps=4)
    page.mouse.up()
    page.locator("#measurement-list li[data-measurement]").nth(2).wait_for()
    text = page.locator("#measurement-list li[data-measurement]").nth(2).inner_text()
    assert text.startswith("freehand") and "100.0 ± 0.0 HU" in text, text

    with server["platform"].sessions() as session:
        rows = session.query(Measurement).order_by(Measurement.id).all()
        assert [r.kind for r in rows] == ["ruler", "ellipse", "freehand"]
        assert [r.label for r in rows] == ["marker gap"] * 3  # the note stays until changed
        assert rows[2].voxels == 18 * 8  # columns 62-79, rows 46-53
        assert abs(rows[0].length_mm - truth) <= max(SPACING[:2])
        assert rows[1].mean_hu == 100 and rows[1].sd_hu == 0

    page.keyboard.press("ArrowUp")  # another slice: nothing drawn there
    page.wait_for_function("() => document.querySelectorAll('svg.measures > *').length === 0")
    page.click("#measurement-list li[data-measurement] >> nth=0 >> button.goto-measure")
    page.wait_for_function(f"() => document.getElementById('viewer').dataset.z === '{Z}'")
    assert page.locator("svg.measures > *").count() == 3


def test_the_difference_view_shows_false_positives_and_negatives_in_the_legend_colours(
    page: Any, server: dict[str, Any]
) -> None:
    open_viewer(page, server["url"])
    page.eval_on_selector(
        "#opacity", "el => { el.value = '100'; el.dispatchEvent(new Event('input')); }"
    )
    page.check("input[name=overlay-mode][value=difference]")
    wait_for_overlay(page, "mode=difference")
    assert page.locator("#difference-legend").is_visible()
    colours = page.eval_on_selector_all(
        "#difference-legend .swatch", "els => els.map(e => getComputedStyle(e).backgroundColor)"
    )
    fp, fn = (tuple(int(v) for v in re.findall(r"\d+", c)) for c in colours)
    row = (SQUARE[0].start + SQUARE[0].stop) / 2
    # predicted only, then labelled only
    assert np.abs(stage_pixel(page, row, SQUARE[1].start + 1, shape=SHAPE) - fp).max() <= 8
    assert np.abs(stage_pixel(page, row, SQUARE[1].stop + 1, shape=SHAPE) - fn).max() <= 8
    assert fp != fn
    both = stage_pixel(page, row, (SQUARE[1].start + SQUARE[1].stop) / 2 + 1, shape=SHAPE)
    # agreement: the slice, uncoloured
    assert np.abs(both - stage_pixel(page, 2, 2, shape=SHAPE)).max() <= 8

    page.check("input[name=overlay-mode][value=outline]")
    wait_for_overlay(page, "mode=outline")
    red = (255, 0, 0)
    assert (
        np.abs(stage_pixel(page, SQUARE[0].start, SQUARE[1].start + 6, shape=SHAPE) - red).max()
        <= 8
    )
    # inside: clear
    assert np.abs(stage_pixel(page, row, SQUARE[1].start + 6, shape=SHAPE) - red).max() > 100


def test_keys_sheet_one_to_one_cine_prefetch_theme_and_fit(
    page: Any, server: dict[str, Any]
) -> None:
    base = server["url"]
    with (
        page.expect_request(lambda r: f"/slice/{Z + 4}.png" in r.url),
        page.expect_request(lambda r: f"/slice/{Z - 4}.png" in r.url),
    ):
        open_viewer(page, base)

    # the image fills the height the window leaves it, whole, keeping its aspect
    box = page.locator("#stage").bounding_box()
    inner = page.evaluate("() => window.innerHeight")
    assert box["y"] + box["height"] <= inner
    assert box["height"] >= inner - 160
    aspect = SHAPE[2] * SPACING[0] / (SHAPE[1] * SPACING[1])
    assert abs(box["width"] / box["height"] - aspect) < 0.01

    page.locator("#stage").focus()
    page.keyboard.press("?")
    sheet = page.locator("#shortcut-sheet")
    assert sheet.is_visible()
    text = sheet.inner_text()
    for expected in ("Next / previous slice", "Ruler tool", "Cine", "1:1", "Overlay mode"):
        assert expected in text, text
    page.keyboard.press("Escape")
    assert not sheet.is_visible()

    page.click("#zoom-one")  # one image pixel per screen pixel
    width = page.eval_on_selector("#stage .zoom", "el => el.getBoundingClientRect().width")
    assert abs(width - SHAPE[2]) < 1
    page.click("#zoom-reset")
    width = page.eval_on_selector("#stage .zoom", "el => el.getBoundingClientRect().width")
    assert abs(width - box["width"]) < 1

    page.click("#cine-play")
    page.wait_for_function(f"() => document.getElementById('viewer').dataset.z !== '{Z}'")
    page.click("#cine-play")
    assert page.get_attribute("#viewer", "data-cine") == "paused"

    page.click("#theme-toggle")
    assert "theme-dark" in page.get_attribute("body", "class")
    page.reload()
    page.wait_for_selector("#theme-toggle")
    assert "theme-dark" in page.get_attribute("body", "class")  # remembered
