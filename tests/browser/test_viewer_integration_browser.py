"""The viewer's two extensions together in chromium: viewer_planes.js (orientation, three planes,
the display convention) and viewer_tools.js (measurements, the key sheet) on one page.

Under the neurological convention the image layers are mirrored (the patient's right on the
screen's right): a ruler drawn on the main plane of the three-plane layout must still measure
between the voxels under the pointer, draw where it was drawn, follow the zoom, and its value
must read left to right. The key sheet lists the keys of both scripts.

One synthetic series, 8 x 48 x 64 voxels of 0.6 x 1.2 mm (anisotropic: a ruler that mixes the
axes up, or measures on the mirrored image, is caught), two 300 HU markers on the slice the
viewer opens on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from radseg.contracts import Geometry
from radseg.db.models import Measurement, Role
from radseg.settings import load_settings
from tests.support import add_series_with_prediction, migrated_platform
from tests.web_support import NODULE, add_user, browser_page, log_in_at, served

pytestmark = pytest.mark.browser

PASSWORD = "integration password"
SHAPE = (8, 48, 64)  # (z, y, x)
SPACING = (0.6, 1.2, 2.0)  # (x, y, z) mm
Z = SHAPE[0] // 2  # the slice the viewer opens on
MARKERS = ((10, 12), (40, 30))  # (column, row) voxels
DISTANCE = math.hypot(30 * SPACING[0], 18 * SPACING[1])  # 28.1 mm between the markers' centres


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    settings = load_settings({"home": tmp_path, "viewer_convention": "neurological"}, environ={})
    platform = migrated_platform(settings, autoload=False)
    geometry = Geometry((64, 48, 8), SPACING, (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    hu = np.zeros(SHAPE, np.float32)
    for col, row in MARKERS:
        hu[Z, row, col] = 300
    mask = np.zeros(SHAPE, np.uint8)
    mask[Z, 20:30, 20:30] = 1
    with platform.sessions.begin() as session:
        add_user(session, "dr.both", PASSWORD, Role.CLINICIAN)
        add_series_with_prediction(
            session, platform, hu=hu, mask=mask, geometry=geometry, classes=NODULE
        )
    with served(platform) as url:
        yield {"url": url, "platform": platform}


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:
    with browser_page(browser, 1400, 900) as page:
        log_in_at(page, f"{server['url']}/series/1/view", "dr.both", PASSWORD)
        page.wait_for_selector("#stage .orient-left")
        yield page


def screen_point(page: Any, col: float, row: float) -> tuple[float, float]:
    """Where voxel coordinate (col, row) of the slice is drawn, the columns mirrored (zoom 1)."""
    box = page.locator("#stage").bounding_box()
    return (
        box["x"] + (1 - col / SHAPE[2]) * box["width"],
        box["y"] + row / SHAPE[1] * box["height"],
    )


def on_screen_scale(page: Any, selector: str) -> tuple[float, float]:
    """The x and y scale of every transform from the element up to the page, multiplied: a
    negative x scale draws the element mirrored."""
    return tuple(
        page.eval_on_selector(
            selector,
            """el => {
                let m = new DOMMatrix();
                for (let node = el; node && node !== document.body; node = node.parentElement) {
                    const t = getComputedStyle(node).transform;
                    if (t && t !== 'none') m = new DOMMatrix(t).multiply(m);
                }
                return [m.a, m.d];
            }""",
        )
    )


def test_a_ruler_on_the_mirrored_main_plane_of_three_measures_and_reads_right(
    page: Any, server: dict[str, Any]
) -> None:
    assert page.text_content("#stage .orient-left") == "L"  # neurological: the layers mirrored
    page.check("input[name=layout][value='3']")  # a click on a control, then keys still work
    page.wait_for_selector("#stage-coronal", state="visible")
    page.keyboard.press("r")
    assert page.is_checked("input[name=tool][value=ruler]")

    (ax, ay), (bx, by) = (screen_point(page, c + 0.5, r + 0.5) for c, r in MARKERS)
    page.mouse.move(ax, ay)
    page.mouse.down()
    page.mouse.move((ax + bx) / 2, (ay + by) / 2)
    page.mouse.move(bx, by)
    page.mouse.up()
    page.wait_for_selector("#measurement-list li[data-measurement]")

    # measured between the markers' voxels (not their mirror images), in mm, within one voxel
    with server["platform"].sessions() as session:
        ruler = session.query(Measurement).one()
        assert ruler.slice_index == Z
        for (col, row), point in zip(MARKERS, ruler.points, strict=True):
            assert point == pytest.approx([col + 0.5, row + 0.5], abs=0.5)
        assert ruler.length_mm == pytest.approx(DISTANCE, abs=max(SPACING[:2]))
    tag = "#stage .measure-tag"
    assert page.text_content(tag) == f"{ruler.length_mm:.1f} mm"

    # the line is drawn where it was drawn; its value reads left to right, beside it
    line = page.locator("#stage svg.measures line").bounding_box()
    assert line["x"] == pytest.approx(min(ax, bx), abs=3)
    assert line["x"] + line["width"] == pytest.approx(max(ax, bx), abs=3)
    scale_x, scale_y = on_screen_scale(page, tag)
    assert scale_x > 0 and scale_y > 0, (scale_x, scale_y)
    label = page.locator(tag).bounding_box()
    assert label["x"] >= max(ax, bx) - 1 or label["x"] + label["width"] <= min(ax, bx) + 1

    # zoom: the drawing follows the image, the value keeps its size and stays upright
    page.keyboard.press("+")
    page.wait_for_function("() => document.getElementById('zoom-label').textContent === '125%'")
    zoomed = page.locator("#stage svg.measures line").bounding_box()
    assert zoomed["width"] == pytest.approx(1.25 * line["width"], rel=0.03)
    assert page.locator(tag).bounding_box()["height"] == pytest.approx(label["height"], abs=1)
    assert on_screen_scale(page, tag)[0] > 0

    # the crosshair tool (key C) and the planes: a click on the main plane moves the others
    page.keyboard.press("f")
    page.keyboard.press("c")
    assert page.is_checked("input[name=tool][value=crosshair]")
    page.mouse.click(*screen_point(page, 40.5, 30.5))
    page.wait_for_function("() => document.getElementById('stage-coronal').dataset.index === '30'")
    assert page.get_attribute("#stage-sagittal", "data-index") == "40"
    assert page.locator("#measurement-list li[data-measurement]").count() == 1


def test_the_key_sheet_lists_the_keys_of_both_scripts(page: Any) -> None:
    page.keyboard.press("?")
    page.wait_for_selector("#shortcut-sheet[open]")
    listed = set(page.locator("#shortcut-sheet kbd").all_text_contents())
    # the keys viewer_planes.js and viewer_tools.js registered with a text, as the sheet names them
    registered = page.evaluate(
        "() => window.radsegViewer.keyHelp().map(([k]) => k.length === 1 ? k.toUpperCase() : k)"
    )
    assert {"3", "C"} <= set(registered)  # viewer_planes.js
    assert {"R", "E", "H", "F", "1", "P", "O", "W"} <= set(registered)  # viewer_tools.js
    assert set(registered) <= listed, set(registered) - listed
    page.keyboard.press("3")  # the open sheet keeps the keys: the layout stays
    assert page.locator("#stage-coronal").is_hidden()
    page.keyboard.press("Escape")
    page.wait_for_selector("#shortcut-sheet:not([open])", state="attached")
    page.keyboard.press("3")
    page.wait_for_selector("#stage-coronal", state="visible")
