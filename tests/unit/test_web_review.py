"""Clinician review: the queue, decisions with pinned comments, brush corrections → label sets."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import numpy as np
from flask.testing import FlaskClient
from sqlalchemy import select

from radseg.contracts import Geometry
from radseg.core import Platform
from radseg.db.base import utcnow
from radseg.db.models import (
    Dataset,
    DatasetMember,
    Instance,
    LabelSet,
    Prediction,
    Review,
    ReviewStatus,
    Series,
)
from radseg.imaging.paint import Stroke, paint
from radseg.imaging.volumes import read_volume
from radseg.workflows.datasets import build_version
from tests.support import SQLITE_ONLY, add_series_with_prediction
from tests.web_support import SHAPE, audit_events, get_json, log_in_as, png


def _older_prediction(platform: Platform, description: str, age: timedelta) -> int:
    geometry = Geometry(
        (SHAPE[2], SHAPE[1], SHAPE[0]), (1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    )
    with platform.sessions.begin() as session:
        prediction = add_series_with_prediction(
            session,
            platform,
            hu=np.zeros(SHAPE, np.float32),
            mask=np.zeros(SHAPE, np.uint8),
            geometry=geometry,
            classes=[{"id": 1, "name": "lesion"}],
            description=description,
        )
        prediction.created_at = utcnow() - age
        return prediction.id


def _queue(client: FlaskClient, query: str = "") -> list[int]:
    return [p["id"] for p in get_json(client, f"/api/review-queue?{query}")["predictions"]]


def test_the_queue_lists_undecided_predictions_oldest_first_and_filters(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    old = _older_prediction(web_platform, "CT abdomen", timedelta(days=3))
    older = _older_prediction(web_platform, "CT head", timedelta(days=9))
    newest = seeded["prediction"]
    log_in_as(client, web_platform, "clinician")
    assert _queue(client) == [older, old, newest]
    assert _queue(client, "study=abdomen") == [old]
    assert _queue(client, "study=%20abdomen%20") == [old]  # pasted with spaces around it
    assert _queue(client, "study=%20%20") == [older, old, newest]  # a blank box: no filter

    # a segment-level decision keeps it in the queue; a study-level one takes it out
    client.post(f"/api/predictions/{older}/reviews", json={"status": "rejected", "class_id": 1})
    assert _queue(client) == [older, old, newest]
    client.post(f"/api/predictions/{older}/reviews", json={"status": "accepted"})
    assert _queue(client) == [old, newest]
    assert _queue(client, "state=accepted") == [older]
    assert _queue(client, "state=all") == [older, old, newest]
    with web_platform.sessions() as session:
        model = session.get(Prediction, old).model_version.model.name  # type: ignore[union-attr]
    assert _queue(client, f"model={model}") == [old]

    page = client.get("/review?state=awaiting").get_data(as_text=True)
    assert page.index(f'data-prediction="{old}"') < page.index(f'data-prediction="{newest}"')
    assert f'data-prediction="{older}"' not in page
    assert client.get("/review?state=maybe").status_code == 400


@SQLITE_ONLY
def test_decisions_pin_comments_to_a_slice_and_point_and_are_audited(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    url = f"/predictions/{seeded['prediction']}/reviews"
    response = client.post(
        url,
        data={
            "status": "needs_edit",
            "class_id": "1",
            "comment": "misses the lower edge",
            "slice_index": "2",
            "point_x": "11.5",
            "point_y": "6",
        },
    )
    assert response.status_code == 303
    assert response.headers["Location"].endswith(
        f"/series/{seeded['series']}/view?prediction={seeded['prediction']}#z=2"
    )
    with web_platform.sessions() as session:
        (review,) = session.scalars(select(Review)).all()
        assert (review.status, review.class_id, review.slice_index) == (
            ReviewStatus.NEEDS_EDIT,
            1,
            2,
        )
        assert (review.point_x, review.point_y, review.comment) == (
            11.5,
            6.0,
            "misses the lower edge",
        )
    (event,) = audit_events(web_platform, "review.decision")
    assert event.actor == "clinician" and event.target == f"prediction:{seeded['prediction']}"
    assert event.detail["status"] == "needs_edit"

    viewer = client.get(f"/series/{seeded['series']}/view").get_data(as_text=True)
    assert 'data-slice="2"' in viewer and 'data-x="11.5"' in viewer
    assert "misses the lower edge" in viewer

    refused = {
        "status=maybe": "status: Input should be",
        "status=accepted&class_id=7": "class 7 is not a class",
        "status=accepted&slice_index=4": "slice_index 4 is outside 0..3",
        "status=accepted&point_x=1&point_y=1": "needs its slice_index",
        "status=accepted&slice_index=0&point_x=99&point_y=1": "outside the 24×16 slice",
    }
    api = f"/api{url}"
    for query, message in refused.items():
        body = dict(part.split("=") for part in query.split("&"))
        # JSON carries numbers as numbers (a string is refused as one); the form sends text
        typed = {
            k: v if k == "status" else float(v) if "point" in k else int(v) for k, v in body.items()
        }
        bad = client.post(api, json=typed)
        assert bad.status_code == 400 and message in bad.json["detail"], (query, bad.json)
        form = client.post(url, data=body, follow_redirects=True)
        assert message in form.get_data(as_text=True)
    with web_platform.sessions() as session:
        assert len(session.scalars(select(Review)).all()) == 1


def _with_instances(platform: Platform, series_id: int) -> None:
    with platform.sessions.begin() as session:
        series = session.get(Series, series_id)
        assert series is not None
        for z in range(SHAPE[0]):
            session.add(
                Instance(
                    series_id=series_id,
                    sop_instance_uid=f"{series.series_instance_uid}.{z + 1}",
                    slice_index=z,
                )
            )


@SQLITE_ONLY
def test_brush_corrections_become_the_next_label_version_and_enter_the_next_dataset(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    url = f"/predictions/{seeded['prediction']}/corrections"
    strokes: list[dict[str, Any]] = [
        {"z": 1, "class_id": 1, "radius": 2, "points": [[5.5, 5.5], [9.5, 5.5]]},
        {"z": 2, "class_id": 0, "radius": 1.5, "points": [[12, 6]]},  # erase part of the lesion
    ]
    response = client.post(url, json={"strokes": strokes})
    assert response.status_code == 201, response.json
    first = response.json
    assert (first["version"], first["source"], first["author"]) == (1, "review", "clinician")
    assert first["prediction_id"] == seeded["prediction"]
    assert [c["name"] for c in first["classes"]] == ["lesion", "class 2"]

    with web_platform.sessions() as session:
        label_set = session.get(LabelSet, first["id"])
        prediction = session.get(Prediction, seeded["prediction"])
        assert label_set is not None and prediction is not None
        saved, geometry = read_volume(web_platform.resolve(label_set.path))
        original, _ = read_volume(web_platform.resolve(prediction.mask_path))
        stored = prediction.series.geometry
        assert list(geometry.size) == stored["size"]
        assert np.allclose(geometry.spacing, stored["spacing"])
    expected = paint(
        original.astype(np.uint8),
        [Stroke(1, 1, 2.0, ((5.5, 5.5), (9.5, 5.5))), Stroke(2, 0, 1.5, ((12.0, 6.0),))],
    )
    assert np.array_equal(saved, expected)
    assert saved[1].sum() > 0 and (saved[2] == 1).sum() < (original[2] == 1).sum()
    (event,) = audit_events(web_platform, "labels.correct")
    assert event.detail["slices"] == [1, 2] and event.detail["version"] == 1

    # the overlay of the new label set shows the brushed class on slice 1
    overlay = png(client.get(f"/label-sets/{first['id']}/overlay/1.png"))
    assert (overlay[saved[1] == 1][:, :3] == [0, 255, 0]).all()
    assert (overlay[saved[1] == 0][:, 3] == 0).all()

    # a second correction continues from the first, as version 2
    again = client.post(
        url,
        json={
            "base_label_set": first["id"],
            "strokes": [{"z": 0, "class_id": 2, "radius": 1, "points": [[1, 1]]}],
        },
    )
    assert again.status_code == 201 and again.json["version"] == 2
    with web_platform.sessions() as session:
        second = session.get(LabelSet, again.json["id"])
        assert second is not None
        twice, _ = read_volume(web_platform.resolve(second.path))
    assert np.array_equal(twice[1:], saved[1:]) and twice[0, 0, 0] == 2

    bad = {
        "strokes": [{"z": 9, "class_id": 1, "radius": 2, "points": [[1, 1]]}],
    }
    assert "slice 9 is outside 0..3" in client.post(url, json=bad).json["detail"]
    bad["strokes"][0].update(z=0, class_id=5)
    assert "class 5 is not one of [0, 1, 2]" in client.post(url, json=bad).json["detail"]
    assert client.post(url, json={"strokes": []}).status_code == 400
    assert client.post(url, json={"strokes": strokes, "base_label_set": 999}).status_code == 400

    # "can enter the next dataset version": the build uses the latest label version
    _with_instances(web_platform, seeded["series"])
    with web_platform.sessions.begin() as session:
        dataset = Dataset(name="reviewed")
        session.add(dataset)
        session.flush()
        session.add(DatasetMember(dataset_id=dataset.id, series_id=seeded["series"]))
    version = build_version(web_platform, "reviewed")
    root = web_platform.resolve(version.path)
    images = []
    for split in ("train", "val", "test"):
        path = root / "annotations" / f"instances_{split}.json"
        if path.exists():
            coco = json.loads(path.read_text())
            labelled = {a["image_id"] for a in coco["annotations"]}
            images += [(i["slice_index"], i["id"] in labelled) for i in coco["images"]]
    assert sorted(images) == [(0, True), (1, True), (2, True), (3, False)]
