"""Two readers and an adjudicator complete a case in a real browser (Debian's chromium through
Playwright): a researcher assigns the prediction on the worklist page; ann erases the mask with
the viewer's eraser and submits; bob, blinded until he submits, accepts it as it is; the
agreement job runs; cat sees the agreement and the masks side by side, starts from ann's,
paints with the brush and signs off. The database then holds the adjudicated label version
with its provenance, and the prediction is untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from radseg.contracts import Geometry
from radseg.db.models import LabelSet, Prediction, ReadingCase, Role, User
from radseg.imaging.volumes import read_volume
from radseg.jobs.worker import Worker
from radseg.settings import load_settings
from tests.support import add_series_with_prediction, migrated_platform
from tests.web_support import NODULE, log_in_at, served

pytestmark = pytest.mark.browser

PASSWORD = "readers password"
SHAPE = (8, 64, 64)  # (z, y, x)
SLICE = SHAPE[0] // 2  # where the viewer opens
MASK_ROWS = slice(16, 32)
MASK_COLS = slice(36, 52)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    (tmp_path / "home").mkdir()
    settings = load_settings({"home": tmp_path / "home"}, environ={})
    platform = migrated_platform(settings, autoload=False)
    geometry = Geometry((64, 64, 8), (0.7, 0.7, 3.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[SLICE, MASK_ROWS, MASK_COLS] = 1
    password_hash = generate_password_hash(PASSWORD, method="scrypt")
    with platform.sessions.begin() as session:
        session.add(User(username="res", password_hash=password_hash, role=Role.RESEARCHER))
        for name in ("ann", "bob", "cat"):
            session.add(User(username=name, password_hash=password_hash, role=Role.CLINICIAN))
        prediction = add_series_with_prediction(
            session,
            platform,
            hu=np.zeros(SHAPE, np.float32),
            mask=mask,
            geometry=geometry,
            classes=NODULE,
        )
        prediction_id = prediction.id
    with served(platform) as url:
        yield {
            "url": url,
            "platform": platform,
            "prediction": prediction_id,
        }


@pytest.fixture
def session_as(browser: Any, server: dict[str, Any]) -> Iterator[Any]:
    """``session_as(name)``: a page in a browser context of its own, logged in as ``name``."""
    contexts: list[Any] = []

    def open_as(name: str) -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        log_in_at(page, f"{server['url']}/login", name, PASSWORD, lands=f"{server['url']}/**")
        return page

    yield open_as
    for context in contexts:
        context.close()


def paint(page: Any, tool: str, row: int, cols: range) -> None:
    """Drag the ``tool`` (brush or eraser) along ``row`` over ``cols`` of the open slice."""
    page.check(f"input[name=tool][value={tool}]")
    page.wait_for_function(f"() => document.getElementById('edit-canvas').dataset.z === '{SLICE}'")
    box = page.locator("#stage").bounding_box()

    def to_px(r: float, c: float) -> tuple[float, float]:
        return (
            box["x"] + (c + 0.5) / SHAPE[2] * box["width"],
            box["y"] + (r + 0.5) / SHAPE[1] * box["height"],
        )

    page.mouse.move(*to_px(row, cols.start))
    page.mouse.down()
    for c in cols:
        page.mouse.move(*to_px(row, c))
    page.mouse.up()
    assert page.text_content("#stroke-count") == "1"


def save_strokes(page: Any) -> None:
    """Save, and wait for the page to come back with the saved mask (it reloads)."""
    with page.expect_navigation():
        page.click("#save-correction")
    page.wait_for_function("() => document.getElementById('stroke-count').textContent === '0'")


def test_two_readers_and_an_adjudicator_complete_a_case(
    session_as: Any, server: dict[str, Any]
) -> None:
    base, platform = server["url"], server["platform"]

    # a researcher assigns the prediction to ann and bob, with cat to adjudicate
    res = session_as("res")
    res.goto(f"{base}/worklist")
    res.fill("input[name=prediction_id]", str(server["prediction"]))
    res.check("input[name=readers][value=ann]")
    res.check("input[name=readers][value=bob]")
    res.select_option("select[name=adjudicator]", "cat")
    res.fill("input[name=due_date]", "2026-12-24")
    res.click("#assign-form button[type=submit]")
    res.wait_for_url("**/worklist/1")
    assert "2026-12-24" in res.text_content("#case-state")

    # ann erases the middle rows of the mask on her own copy and submits "needs edit"
    ann = session_as("ann")
    ann.goto(f"{base}/readings")
    ann.click("#my-readings a.button:text-is('Read')")
    ann.wait_for_url("**/readings/1")
    paint(ann, "eraser", 24, range(30, 58, 2))
    save_strokes(ann)
    # her viewer has the orientation letters, the HU readout and her own copy in three planes
    assert ann.text_content("#stage .orient-left") == "R"
    ann.check("input[name=tool][value=crosshair]")  # opens the three planes
    ann.wait_for_selector("#stage-coronal", state="visible")
    box = ann.locator("#stage").bounding_box()
    ann.mouse.click(box["x"] + 40.5 / 64 * box["width"], box["y"] + 18.5 / 64 * box["height"])
    ann.wait_for_function(
        "() => (document.getElementById('readout').dataset.index || '') === '40,18,4'"
    )
    ann.wait_for_function(
        """() => {
            const img = document.querySelector('#stage-coronal img.overlay');
            return img.src.includes('/readings/1/overlay/coronal/18.png')
                && img.complete && img.naturalWidth === 64 && img.naturalHeight === 8;
        }"""
    )
    ann.click("button.decision-needs_edit")
    ann.wait_for_url("**/worklist/1")

    # bob is blinded until he submits; then he sees ann's decision
    bob = session_as("bob")
    bob.goto(f"{base}/worklist/1")
    assert bob.locator("#blinded").is_visible()
    assert bob.locator("#gallery").count() == 0
    bob.goto(f"{base}/readings")
    bob.click("#my-readings a.button:text-is('Read')")
    bob.wait_for_url("**/readings/2")
    bob.click("button.decision-accepted")
    bob.wait_for_url("**/worklist/1")
    assert "needs edit" in bob.text_content("#case-readers tr[data-reader=ann]")

    # what the worker does: the agreement job
    Worker(platform, burst=True, inline_kinds=("agreement",), listen=False).run()

    # cat sees the agreement and the masks side by side, starts from ann's, paints, signs off
    cat = session_as("cat")
    cat.goto(f"{base}/readings")
    cat.click("#my-adjudications a.button:text-is('Open')")
    cat.wait_for_url("**/worklist/1")
    assert cat.locator("#agreement tr[data-class='1'] .mean-dice").text_content() != "–"
    sources = cat.eval_on_selector_all(".gallery-item", "els => els.map(e => e.dataset.source)")
    assert sources == ["reading:1", "reading:2", "staple", "majority", "prediction"]
    cat.wait_for_function(
        "() => [...document.querySelectorAll('.gallery-overlay')].every("
        "i => i.complete && i.naturalWidth === 64)"
    )
    cat.click(".gallery-item[data-source='reading:1'] button.start-from")
    cat.wait_for_url("**/worklist/1#adjudication")
    assert cat.text_content("#draft-source") == "reading:1"
    paint(cat, "brush", 40, range(8, 20, 2))
    save_strokes(cat)
    cat.click("#sign-off")
    cat.wait_for_selector("#case-state[data-state=signed_off]")

    with platform.sessions() as session:
        case = session.get(ReadingCase, 1)
        assert case is not None and case.label_set_id is not None
        label_set = session.get(LabelSet, case.label_set_id)
        prediction = session.get(Prediction, server["prediction"])
        assert label_set is not None and prediction is not None
        assert label_set.source == "adjudication" and label_set.author == "cat"
        provenance = label_set.provenance or {}
        assert provenance["readers"] == ["ann", "bob"]
        assert provenance["started_from"] == "reading:1"
        labels = read_volume(platform.resolve(label_set.path))[0]
        predicted = read_volume(platform.resolve(prediction.mask_path))[0]
        assert session.scalars(select(LabelSet)).all() == [label_set]
    assert predicted[SLICE, MASK_ROWS, MASK_COLS].all()  # the prediction is untouched
    assert not labels[SLICE, 24, 38:50].any()  # ann's erasure
    assert labels[SLICE, 40, 10:18].all()  # cat's brush
    assert labels[SLICE, 18, 38:50].all()  # the rest of the mask
