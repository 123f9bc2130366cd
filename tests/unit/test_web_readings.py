"""Readers through the JSON API, the pages and the command line: blinding refusals (403 for
another reader's work before submitting, on the API, the pages and the overlay images), the
agreement, adjudication and sign-off, and what each page shows."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from radseg.cli import main
from radseg.core import Platform
from radseg.db.models import LabelSet, Role, User
from radseg.imaging.volumes import read_volume
from radseg.jobs.worker import Worker
from tests.support import SQLITE_ONLY
from tests.web_support import SHAPE, audit_events, get_json, log_in_as, png


@pytest.fixture
def readers(web_platform: Platform, seeded: dict[str, int], password_hash: str) -> dict[str, int]:
    with web_platform.sessions.begin() as session:
        for name in ("ann", "bob", "cat"):
            session.add(User(username=name, password_hash=password_hash, role=Role.CLINICIAN))
    return seeded


def as_user(app: Flask, platform: Platform, name: str) -> FlaskClient:
    client = app.test_client()
    log_in_as(client, platform, name)
    return client


def run_jobs(platform: Platform) -> None:
    Worker(platform, burst=True, inline_kinds=("agreement",), listen=False).run()


def _json(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.get_data(as_text=True)[:400]
    return response.get_json()


ERASE = {"strokes": [{"z": 2, "class_id": 0, "radius": 3, "points": [[11.5, 5.5]]}]}


def test_two_readers_and_an_adjudicator_through_the_api(
    app: Flask, web_platform: Platform, readers: dict[str, int]
) -> None:
    researcher = as_user(app, web_platform, "researcher")
    ann, bob, cat = (as_user(app, web_platform, n) for n in ("ann", "bob", "cat"))
    body = {
        "prediction_id": readers["prediction"],
        "readers": ["ann", "bob"],
        "adjudicator": "cat",
        "due_date": "2026-12-24",
    }
    assert (
        researcher.post("/api/worklist", json={**body, "due_date": "2026-02-30"}).status_code == 400
    )
    assert ann.post("/api/worklist", json=body).status_code == 403
    case = _json(researcher.post("/api/worklist", json=body), 201)
    assert case["due_date"] == "2026-12-24" and case["adjudicator"] == "cat"
    ids = {r["reader"]: r["id"] for r in case["readings"]}
    (mine,) = get_json(ann, "/api/readings")["readings"]
    assert mine["id"] == ids["ann"]

    _json(ann.post(f"/api/readings/{ids['ann']}/open"))
    painted = _json(ann.post(f"/api/readings/{ids['ann']}/strokes", json=ERASE))
    assert painted["strokes"] == 1
    # blinded: bob sees neither ann's reading, nor its image, nor the agreement
    assert bob.get(f"/api/readings/{ids['ann']}").status_code == 403
    assert bob.get(f"/readings/{ids['ann']}/overlay/2.png").status_code == 403
    assert bob.get(f"/readings/{ids['ann']}/overlay/coronal/5.png").status_code == 403
    assert bob.get(f"/readings/{ids['ann']}").status_code == 403
    assert bob.post(f"/api/readings/{ids['ann']}/strokes", json=ERASE).status_code == 403
    assert bob.get(f"/api/worklist/{case['id']}/agreement").status_code == 403
    # ... nor does the adjudicator before ann submits
    assert cat.get(f"/api/readings/{ids['ann']}").status_code == 403
    shown = get_json(bob, f"/api/worklist/{case['id']}")
    assert shown["agreement"] is None
    assert {r["reader"]: r["decision"] for r in shown["readings"]} == {"ann": None, "bob": None}

    _json(ann.post(f"/api/readings/{ids['ann']}/submit", json={"decision": "needs_edit"}))
    assert bob.get(f"/api/readings/{ids['ann']}").status_code == 403
    # ann's own copy on slice 2 has no class 1 left; the prediction keeps its 16 voxels
    assert png(ann.get(f"/readings/{ids['ann']}/overlay/2.png"))[4:8, 10:14, 3].max() == 0
    assert png(cat.get(f"/readings/{ids['ann']}/overlay/2.png"))[4:8, 10:14, 3].max() == 0
    # bob's copy, not yet opened, is the prediction: its class 1 is drawn
    assert png(bob.get(f"/readings/{ids['bob']}/overlay/2.png"))[4:8, 10:14, 3].min() > 0
    # ... and drawn as an outline on request: the 4 x 4 square's 2 x 2 inside stays clear
    outline = png(bob.get(f"/readings/{ids['bob']}/overlay/2.png?mode=outline"))[4:8, 10:14, 3]
    assert outline[0].min() > 0 and outline[1:3, 1:3].max() == 0
    # ... and cut through the coronal plane of row 5 (superior on top: slice 2 is row 1 of 4)
    coronal = png(bob.get(f"/readings/{ids['bob']}/overlay/coronal/5.png"))
    assert coronal.shape[:2] == (SHAPE[0], SHAPE[2])
    assert coronal[SHAPE[0] - 1 - 2, 10:14, 3].min() > 0 and coronal[:, :10, 3].max() == 0
    assert bob.get(f"/readings/{ids['bob']}/overlay/oblique/5.png").status_code == 404
    assert bob.get(f"/readings/{ids['bob']}/overlay/coronal/99.png").status_code == 404
    refused = bob.get(f"/readings/{ids['bob']}/overlay/2.png?mode=difference")
    assert refused.status_code == 400 and "fill or outline" in refused.get_data(as_text=True)
    _json(bob.post(f"/api/readings/{ids['bob']}/submit", json={"decision": "accepted"}))
    assert _json(bob.get(f"/api/readings/{ids['ann']}"))["decision"] == "needs_edit"
    run_jobs(web_platform)
    report = _json(cat.get(f"/api/worklist/{case['id']}/agreement"))
    assert report["current"] is True
    # class 1: ann erased all 16 voxels bob kept → Dice 0; bob against the prediction → 1
    one = report["agreement"]["per_class"]["1"]
    assert one["pairwise_dice"][0]["dice"] == 0.0 and one["vs_prediction"]["bob"] == 1.0
    assert png(cat.get(f"/worklist/{case['id']}/overlay/staple/2.png")).shape[:2] == (16, 24)
    sagittal = cat.get(f"/worklist/{case['id']}/overlay/staple/sagittal/11.png")
    assert png(sagittal).shape[:2] == (SHAPE[0], SHAPE[1])

    assert bob.post(f"/api/worklist/{case['id']}/sign-off").status_code == 403
    assert cat.post(f"/api/worklist/{case['id']}/sign-off").status_code == 409
    bad = cat.post(f"/api/worklist/{case['id']}/adjudication", json={"source": "../x"})
    assert bad.status_code == 400
    started = cat.post(f"/api/worklist/{case['id']}/adjudication", json={"source": "majority"})
    assert _json(started)["adjudication_started_from"] == "majority"
    stroke = {"strokes": [{"z": 2, "class_id": 1, "radius": 1, "points": [[5.5, 5.5]]}]}
    _json(cat.post(f"/api/worklist/{case['id']}/adjudication/strokes", json=stroke))
    label_set = _json(cat.post(f"/api/worklist/{case['id']}/sign-off"), 201)
    assert label_set["source"] == "adjudication" and label_set["author"] == "cat"
    assert label_set["provenance"]["readers"] == ["ann", "bob"]
    assert label_set["provenance"]["started_from"] == "majority"
    with web_platform.sessions() as session:
        row = session.get(LabelSet, label_set["id"])
        assert row is not None
        labels = read_volume(web_platform.resolve(row.path))[0]
    # the majority of a one-against-one split is background; cat painted one voxel back
    assert labels[2, 5, 5] == 1 and labels[2, 4:8, 10:14].max() == 0
    assert get_json(researcher, "/api/worklist?state=signed_off")["cases"][0]["id"] == case["id"]
    stats = get_json(ann, "/api/readers")
    assert stats["readers"]["ann"]["classes"]["1"]["dice_with_readers"] == 0.0
    assert [e.detail.get("via") for e in audit_events(web_platform, "reading.sign_off")] == ["api"]


def test_the_pages_of_a_case_from_assignment_to_sign_off(
    app: Flask, web_platform: Platform, readers: dict[str, int]
) -> None:
    researcher = as_user(app, web_platform, "researcher")
    ann, bob, cat = (as_user(app, web_platform, n) for n in ("ann", "bob", "cat"))
    prediction_page = researcher.get(f"/predictions/{readers['prediction']}")
    link = f'href="/worklist?prediction={readers["prediction"]}"'
    assert link in prediction_page.get_data(as_text=True)
    page = researcher.get(f"/worklist?prediction={readers['prediction']}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'value="ann"' in text
    assert f'name="prediction_id" min="1" value="{readers["prediction"]}"' in text
    assigned = researcher.post(
        "/worklist",
        data={
            "prediction_id": str(readers["prediction"]),
            "readers": ["ann", "bob"],
            "adjudicator": "cat",
            "due_date": "2026-12-24",
        },
    )
    assert assigned.status_code == 303, assigned.get_data(as_text=True)
    case_url = assigned.headers["Location"]
    refused = researcher.post(
        "/worklist", data={"prediction_id": str(readers["prediction"]), "readers": ["ann"]}
    )
    assert refused.status_code == 303  # back to the form, with why
    with researcher.session_transaction() as flask_session:
        assert "already on the worklist" in str(flask_session.get("_flashes"))

    queue = ann.get("/readings").get_data(as_text=True)
    assert "Nothing to read" not in queue and "2026-12-24" in queue
    case = get_json(researcher, "/api/worklist?state=open")["cases"][0]
    ids = {r["reader"]: r["id"] for r in case["readings"]}
    viewer = ann.get(f"/readings/{ids['ann']}").get_data(as_text=True)
    assert 'data-after-save="reload"' in viewer and "save-correction" in viewer
    # the orientation letters, the readout and the three planes (viewer_planes.js)
    assert "data-planes=" in viewer and f"/series/{readers['series']}/voxel" in viewer
    assert "viewer_planes.js" in viewer and 'value="crosshair"' in viewer
    assert f"/readings/{ids['ann']}/strokes" in viewer
    blinded = bob.get(case_url).get_data(as_text=True)
    assert 'id="blinded"' in blinded and "gallery" not in blinded

    for client, name in ((ann, "ann"), (bob, "bob")):
        done = client.post(f"/readings/{ids[name]}/submit", data={"decision": "accepted"})
        assert done.status_code == 303
    run_jobs(web_platform)
    adjudicator = cat.get(case_url).get_data(as_text=True)
    assert 'id="agreement"' in adjudicator and 'data-source="staple"' in adjudicator
    assert 'data-source="reading:' in adjudicator and "Start from this" in adjudicator
    started = cat.post(case_url + "/adjudication", data={"source": "staple"})
    assert started.status_code == 303
    draft = cat.get(case_url).get_data(as_text=True)
    assert 'id="sign-off"' in draft and "/overlay/draft/{z}.png" in draft
    assert "data-planes=" in draft and "viewer_planes.js" in draft
    assert cat.post(case_url + "/sign-off").status_code == 303
    closed = cat.get(case_url).get_data(as_text=True)
    assert 'data-state="signed_off"' in closed
    readers_page = ann.get("/readers").get_data(as_text=True)
    assert 'data-reader="ann" data-class="1"' in readers_page
    assert audit_events(web_platform, "reading.view")


@SQLITE_ONLY
def test_the_command_line_assigns_reads_and_adjudicates(
    web_platform: Platform, readers: dict[str, int], tmp_path: Any
) -> None:
    runner = CliRunner()
    env = {"RADSEG_DATABASE_URL": web_platform.settings.database_url}
    home = ["--home", str(web_platform.settings.home)]

    def run(*args: str) -> str:
        result = runner.invoke(main, [*home, *args], env=env)
        assert result.exit_code == 0, result.output
        return result.output

    out = run(
        "worklist", "assign", "--prediction", str(readers["prediction"]),
        "--reader", "ann", "--reader", "bob", "--due", "2026-12-24",
    )  # fmt: skip
    assert out.startswith("case 1 for prediction")
    assert "reading 1" in run("readings", "list", "--as", "ann")
    strokes = tmp_path / "strokes.json"
    strokes.write_text('[{"z": 2, "class_id": 0, "radius": 3, "points": [[11.5, 5.5]]}]')
    assert "1 strokes" in run("readings", "paint", "1", "--strokes", str(strokes), "--as", "ann")
    blinded = runner.invoke(
        main, [*home, "readings", "paint", "1", "--strokes", str(strokes), "--as", "bob"], env=env
    )
    assert blinded.exit_code == 1 and "not yours" in blinded.output
    run("readings", "submit", "1", "--decision", "needs_edit", "--as", "ann")
    run("readings", "submit", "2", "--decision", "accepted", "--as", "bob")
    run_jobs(web_platform)
    assert '"mean_pairwise_dice"' in run("worklist", "show", "1")
    early = runner.invoke(main, [*home, "worklist", "show", "1", "--as", "cat"], env=env)
    assert early.exit_code == 1 and "is seen by its readers" in early.output  # not involved
    run("worklist", "adjudicate", "1", "--from", "reading:2")  # no adjudicator: the CLI's admin
    assert "(adjudicated)" in run("worklist", "sign-off", "1")
    assert '"ann"' in run("readers")
    assert "signed_off" in run("worklist", "list", "--state", "all")
