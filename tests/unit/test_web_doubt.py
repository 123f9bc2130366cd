"""Where the model doubts, on the web: the uncertainty layer's PNG, the viewer's controls, the
review queue's order and reason on its page and in the JSON API (on SQLite and PostgreSQL)."""

from __future__ import annotations

import numpy as np
from flask.testing import FlaskClient

from radseg.contracts import Geometry
from radseg.core import Platform
from radseg.imaging.volumes import write_volume
from radseg.web.render import UNCERTAINTY_FLOOR
from tests.support import add_series_with_prediction
from tests.web_support import SHAPE, get_json, log_in_as, png

GEOMETRY = Geometry(
    (SHAPE[2], SHAPE[1], SHAPE[0]), (0.8, 0.8, 2.5), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
)


def doubtful_prediction(platform: Platform, priority: float, reason: str) -> tuple[int, int]:
    """A prediction with a stored uncertainty map (slice 2 doubtful in its top-left corner) and
    a priority; its id and its series' id."""
    stored = np.zeros(SHAPE, dtype=np.uint8)
    stored[2, :4, :6] = 255
    stored[2, 4:8, :6] = UNCERTAINTY_FLOOR - 1  # below the floor: drawn transparent
    path = platform.path("predictions", f"doubt-{priority}.uncertainty.nii.gz")
    write_volume(path, stored, GEOMETRY)
    with platform.sessions.begin() as session:
        prediction = add_series_with_prediction(
            session,
            platform,
            hu=np.zeros(SHAPE, np.float32),
            mask=np.zeros(SHAPE, np.uint8),
            geometry=GEOMETRY,
            classes=[{"id": 1, "name": "lesion"}],
        )
        prediction.uncertainty_path = platform.relative(path)
        prediction.priority = priority
        prediction.priority_reason = reason
        prediction.quality = {
            "uncertainty": "softmax entropy",
            "slices": [0.0, 0.0, 0.3, 0.1],
            "doubtful_slices": [2, 3],
            "rule": "doubt-1",
            "reference_series": 4,
            "classes": {
                "lesion": {
                    "volume_ml": 12.5,
                    "components": 3,
                    "inconsistency": 0.25,
                    "uncertainty_inside": 0.1,
                    "uncertainty_border": 0.45,
                    "doubtful_share": 0.2,
                    "scores": {"doubt": 0.2, "components": 0.4},
                }
            },
        }
        return prediction.id, prediction.series_id


def test_the_uncertainty_layer_is_a_heat_map_transparent_where_the_model_is_sure(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    prediction, _ = doubtful_prediction(web_platform, 0.8, "lesion: 40% of it uncertain")
    log_in_as(client, web_platform, "clinician")
    rgba = png(client.get(f"/predictions/{prediction}/uncertainty/2.png"))
    assert rgba.shape == (SHAPE[1], SHAPE[2], 4)
    assert (rgba[:4, :6] == [255, 0, 0, 255]).all()  # the most unsure: opaque red
    assert (rgba[4:8, :6, 3] == 0).all()
    assert (rgba[:, 6:, 3] == 0).all()
    assert (png(client.get(f"/predictions/{prediction}/uncertainty/0.png"))[..., 3] == 0).all()
    assert client.get(f"/predictions/{prediction}/uncertainty/9.png").status_code == 404
    # a prediction whose model gave no map
    missing = client.get(f"/predictions/{seeded['prediction']}/uncertainty/0.png")
    assert missing.status_code == 404 and b"no uncertainty map" in missing.data


def test_the_viewer_offers_the_layer_the_strip_and_the_next_doubtful_slice(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    prediction, series = doubtful_prediction(web_platform, 0.8, "lesion in 3 parts; training has 1")
    log_in_as(client, web_platform, "clinician")
    html = client.get(f"/series/{series}/view").get_data(as_text=True)
    assert f"/predictions/{prediction}/uncertainty/{{z}}.png" in html
    assert 'id="doubt-strip"' in html and 'id="next-doubtful"' in html
    assert "data-doubtful='[2, 3]'" in html
    assert "lesion in 3 parts; training has 1" in html
    details = client.get(f"/predictions/{prediction}").get_data(as_text=True)
    assert 'id="review-priority"' in details and "compared with 4 training series" in details
    assert "<td>lesion</td><td>12.5</td><td>3</td><td>0.25</td>" in details
    assert "doubt 0.20, components 0.40" in details
    plain = client.get(f"/series/{seeded['series']}/view").get_data(as_text=True)
    assert 'id="uncertainty-img"' not in plain and 'id="doubt-strip"' not in plain


def test_the_queue_is_sorted_by_priority_with_its_reason_on_the_page_and_in_the_api(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    low, _ = doubtful_prediction(web_platform, 0.1, "lesion: 10% of it uncertain")
    high, _ = doubtful_prediction(web_platform, 0.9, "lesion volume 2.4× the training median")
    unscored = seeded["prediction"]  # the oldest
    log_in_as(client, web_platform, "clinician")
    rows = get_json(client, "/api/review-queue")["predictions"]
    assert [r["id"] for r in rows] == [high, low, unscored]
    assert rows[0]["priority"] == 0.9
    assert rows[0]["priority_reason"] == "lesion volume 2.4× the training median"
    assert rows[0]["has_uncertainty"] is True and rows[2]["has_uncertainty"] is False
    oldest = get_json(client, "/api/review-queue?sort=oldest")["predictions"]
    assert [r["id"] for r in oldest] == [unscored, low, high]
    assert client.get("/api/review-queue?sort=random").status_code == 400

    page = client.get("/review").get_data(as_text=True)
    assert page.index(f'data-prediction="{high}"') < page.index(f'data-prediction="{low}"')
    assert "lesion volume 2.4× the training median" in page and "not scored" in page
    by_age = client.get("/review?sort=newest").get_data(as_text=True)
    assert by_age.index(f'data-prediction="{high}"') < by_age.index(f'data-prediction="{low}"')
    assert by_age.index(f'data-prediction="{low}"') < by_age.index(f'data-prediction="{unscored}"')


def test_the_openapi_document_describes_the_order_and_the_priority(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    document = get_json(client, "/api/openapi.json")
    params = {p["name"]: p for p in document["paths"]["/api/review-queue"]["get"]["parameters"]}
    assert params["sort"]["schema"]["enum"] == ["priority", "oldest", "newest"]
    assert params["sort"]["schema"]["default"] == "priority"
    prediction = document["components"]["schemas"]["Prediction"]
    assert {"priority", "priority_reason", "has_uncertainty", "quality"} <= set(
        prediction["required"]
    )
    row = get_json(client, f"/api/predictions/{seeded['prediction']}")
    assert (row["priority"], row["priority_reason"], row["quality"]) == (None, "", None)
