"""Orientation letters, the HU readout and three planes in a real browser (chromium, Playwright).

Three tiny series: an axial one whose every voxel has its own HU (i + 40 j + 1280 k) and a
prediction (class 1, red) in a box of slices 3-4; a sagittal one; and an axial one turned 30°
about the patient's long axis (oblique). The letters expected on each edge are worked out
below from the direction cosines; the HU shown must be the HU cache's value.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from radseg.contracts import Geometry
from radseg.db.models import Role, Series
from radseg.imaging.volumes import read_volume
from radseg.settings import load_settings
from tests.support import add_series_with_prediction, migrated_platform
from tests.web_support import NODULE, add_user, browser_page, log_in_at, served

pytestmark = pytest.mark.browser

PASSWORD = "planes password"
SHAPE = (6, 32, 40)  # (k, j, i)
SPACING = (0.7, 0.7, 3.0)
MASK = (slice(3, 5), slice(10, 20), slice(12, 28))  # (k, j, i)
RED = (255, 0, 0)
COS30, SIN30 = math.cos(math.radians(30)), math.sin(math.radians(30))

#: direction cosines (row-major, columns = the i, j, k axes in LPS) and the letters expected on
#: the main image's left, right, top and bottom edges, radiological convention
SERIES = {
    # i → L, j → P: the patient's right on the screen's left, anterior at the top
    "axial": ((1.0, 0, 0, 0, 1, 0, 0, 0, 1), ("R", "L", "A", "P")),
    # i → P, j → I, k → L: a sagittal image, anterior on the left, superior at the top
    "sagittal": ((0.0, 0, 1, 1, 0, 0, 0, -1, 0), ("A", "P", "S", "I")),
    # i → (cos 30°, sin 30°, 0): mostly left, half posterior (0.5 > sin 22.5°): "LP" on the
    # right; j → (-sin 30°, cos 30°, 0): "PR" at the bottom; their opposites on the other edges
    "oblique": ((COS30, -SIN30, 0, SIN30, COS30, 0, 0, 0, 1), ("RA", "LP", "AL", "PR")),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("planes")
    settings = load_settings({"home": home}, environ={})
    platform = migrated_platform(settings, autoload=False)
    k, j, i = np.indices(SHAPE, dtype=np.float32)
    hu = i + 40 * j + 1280 * k - 1000
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[MASK] = 1
    ids: dict[str, int] = {}
    with platform.sessions.begin() as session:
        add_user(session, "dr.planes", PASSWORD, Role.CLINICIAN)
        for name, (direction, _) in SERIES.items():
            geometry = Geometry((SHAPE[2], SHAPE[1], SHAPE[0]), SPACING, (5, -8, 12), direction)
            prediction = add_series_with_prediction(
                session,
                platform,
                hu=hu,
                mask=mask if name == "axial" else np.zeros(SHAPE, np.uint8),
                geometry=geometry,
                classes=NODULE,
                description=name,
            )
            ids[name] = prediction.series_id
    with served(platform) as url:
        yield {"url": url, "platform": platform, "series": ids}


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:
    with browser_page(browser, 1400, 900) as page:
        log_in(page, server["url"])
        yield page


def log_in(page: Any, base: str) -> None:
    log_in_at(page, f"{base}/login", "dr.planes", PASSWORD, lands=f"{base}/studies")


def open_viewer(page: Any, server: dict[str, Any], name: str) -> None:
    page.goto(f"{server['url']}/series/{server['series'][name]}/view")
    page.wait_for_selector("#stage .orient-left")


def edge_letters(page: Any, stage: str) -> tuple[str, ...]:
    return tuple(
        page.text_content(f"{stage} .orient-{edge}") for edge in ("left", "right", "top", "bottom")
    )


def click_voxel(page: Any, stage: str, column: float, row: float, columns: int, rows: int) -> None:
    box = page.locator(stage).bounding_box()
    x = box["x"] + (column + 0.5) / columns * box["width"]
    y = box["y"] + (row + 0.5) / rows * box["height"]
    page.mouse.click(x, y)


def pixel(page: Any, stage: str, column: float, row: float, columns: int, rows: int) -> np.ndarray:
    """The screenshot's RGB at image pixel (column, row) of a plane (median of a 3x3 patch)."""
    shot = page.locator(stage).screenshot()
    rgb = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(float)
    y = int((row + 0.5) / rows * rgb.shape[0])
    x = int((column + 0.5) / columns * rgb.shape[1])
    return np.median(rgb[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3), axis=0)


def loaded(page: Any, selector: str, part: str) -> None:
    page.wait_for_function(
        """([selector, part]) => {
            const img = document.querySelector(selector);
            return img && img.src.includes(part) && img.complete && img.naturalWidth > 0;
        }""",
        arg=[selector, part],
    )


@pytest.mark.parametrize("name", list(SERIES))
def test_the_letters_on_the_edges_follow_the_direction_cosines(
    page: Any, server: dict[str, Any], name: str
) -> None:
    open_viewer(page, server, name)
    assert edge_letters(page, "#stage") == SERIES[name][1]


def test_the_readout_shows_the_hu_cache_and_the_position_in_mm(
    page: Any, server: dict[str, Any]
) -> None:
    with server["platform"].sessions.begin() as session:
        row = session.get(Series, server["series"]["axial"])
        row.slice_thickness = 2.0  # 2 mm slices every 3 mm (gapped)
        hu, _ = read_volume(server["platform"].resolve(row.volume_path))
    open_viewer(page, server, "axial")
    k = int(page.get_attribute("#viewer", "data-z"))
    i, j = 29, 7
    click_voxel(page, "#stage", i, j, SHAPE[2], SHAPE[1])
    page.wait_for_function(
        "want => document.getElementById('readout').dataset.index === want", arg=f"{i},{j},{k}"
    )
    assert float(page.get_attribute("#readout", "data-hu")) == float(hu[k, j, i])
    text = page.text_content("#readout")
    x, y, z = 5 + i * SPACING[0], -8 + j * SPACING[1], 12 + k * SPACING[2]
    assert f"LPS {x:.1f}, {y:.1f}, {z:.1f} mm" in text
    assert f"{hu[k, j, i]:g} HU" in text
    position = page.text_content("#slice-position")
    assert f"S {z:.1f} mm" in position and "thickness 2.0 mm · spacing 3.0 mm" in position


def test_three_planes_show_the_overlay_and_follow_the_crosshair(
    page: Any, server: dict[str, Any]
) -> None:
    open_viewer(page, server, "axial")
    page.eval_on_selector(
        "#opacity", "el => { el.value = '100'; el.dispatchEvent(new Event('input')); }"
    )
    page.check("input[name=layout][value='3']")
    assert edge_letters(page, "#stage-coronal") == ("R", "L", "S", "I")
    assert edge_letters(page, "#stage-sagittal") == ("A", "P", "S", "I")

    # the coronal plane through row 15 and the sagittal through column 20 cross the mask
    page.check("input[name=tool][value='crosshair']")
    click_voxel(page, "#stage", 20, 15, SHAPE[2], SHAPE[1])
    page.wait_for_function("() => document.getElementById('stage-coronal').dataset.index === '15'")
    loaded(page, "#stage-coronal img.overlay", "/overlay/coronal/15.png")
    loaded(page, "#stage-coronal img.layer", "/slice/coronal/15.png")
    loaded(page, "#stage-sagittal img.overlay", "/overlay/sagittal/20.png")
    # rows run from superior (slice 5) down: slices 3-4 are rows 2-1 (the crosshair is on
    # slice 3 and column 20 / row 15: look beside it)
    rows, columns = SHAPE[0], SHAPE[2]
    inside = pixel(page, "#stage-coronal", 14, rows - 1 - 4, columns, rows)
    assert np.abs(inside - RED).max() <= 8, inside.tolist()
    outside = pixel(page, "#stage-coronal", 4, rows - 1 - 4, columns, rows)
    assert abs(outside[0] - outside[1]) <= 8, outside.tolist()  # grey, no red
    side = pixel(page, "#stage-sagittal", 12, rows - 1 - 4, SHAPE[1], rows)
    assert np.abs(side - RED).max() <= 8, side.tolist()

    # the aspect ratio is the physical one: 40 × 0.7 mm wide, 6 × 3 mm high
    box = page.locator("#stage-coronal").bounding_box()
    assert box["width"] / box["height"] == pytest.approx(40 * 0.7 / (6 * 3.0), rel=0.02)

    # a click in the sagittal plane moves the main image to that slice and the coronal plane
    click_voxel(page, "#stage-sagittal", 25, rows - 1 - 1, SHAPE[1], rows)
    page.wait_for_function("() => document.getElementById('viewer').dataset.z === '1'")
    assert page.get_attribute("#stage-coronal", "data-index") == "25"
    page.wait_for_function("() => document.getElementById('readout').dataset.index === '20,25,1'")

    # the wheel over the coronal plane steps through the coronal planes
    page.locator("#stage-coronal").hover()
    page.mouse.wheel(0, 120)
    page.wait_for_function("() => document.getElementById('stage-coronal').dataset.index === '26'")
    loaded(page, "#stage-coronal img.layer", "/slice/coronal/26.png")


def test_the_neurological_convention_flips_the_image_and_its_letters(
    browser: Any, tmp_path: Path
) -> None:
    settings = load_settings({"home": tmp_path, "viewer_convention": "neurological"}, environ={})
    platform = migrated_platform(settings, autoload=False)
    i = np.indices(SHAPE, dtype=np.float32)[2]
    geometry = Geometry((SHAPE[2], SHAPE[1], SHAPE[0]), SPACING, (0, 0, 0), SERIES["axial"][0])
    with platform.sessions.begin() as session:
        add_user(session, "dr.planes", PASSWORD, Role.CLINICIAN)
        series_id = add_series_with_prediction(
            session,
            platform,
            hu=10 * i - 160,  # black (-160 HU) at column 0, white towards the patient's left
            mask=np.zeros(SHAPE, np.uint8),
            geometry=geometry,
            classes=NODULE,
        ).series_id
    with served(platform) as url, browser_page(browser, 1400, 900) as page:
        log_in(page, url)
        page.goto(f"{url}/series/{series_id}/view")
        page.wait_for_selector("#stage .orient-left")
        assert edge_letters(page, "#stage") == ("L", "R", "A", "P")
        # the patient's right (column 0) is drawn on the screen's right
        click_voxel(page, "#stage", 3, 5, SHAPE[2], SHAPE[1])
        want = f"{SHAPE[2] - 1 - 3},5,"
        page.wait_for_function(
            "want => (document.getElementById('readout').dataset.index || '').startsWith(want)",
            arg=want,
        )
        assert float(page.get_attribute("#readout", "data-hu")) == 10 * (SHAPE[2] - 1 - 3) - 160
        loaded(page, "#slice-img", "/slice/")
        left = pixel(page, "#stage", 0, 5, SHAPE[2], SHAPE[1])
        right = pixel(page, "#stage", SHAPE[2] - 1, 5, SHAPE[2], SHAPE[1])
        assert left[0] > 200 and right[0] < 20, (left.tolist(), right.tolist())
