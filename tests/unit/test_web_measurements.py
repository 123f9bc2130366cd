"""Measurements kept with a review: rulers in mm, ellipse and freehand regions with the area and
the HU mean and SD of the voxels inside, computed on the server from the HU volume."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flask.testing import FlaskClient

from radseg.contracts import Geometry
from radseg.core import Platform
from radseg.db.models import Prediction, Role
from radseg.errors import NotFound, PermissionDenied
from radseg.imaging.measure import distance_mm, ellipse_mask, polygon_mask
from radseg.imaging.volumes import read_volume
from radseg.roles import Actor
from radseg.workflows.measurements import measurements_of, record_measurement
from tests.support import add_series_with_prediction
from tests.web_support import audit_events, get_json, log_in_as

#: anisotropic pixels (x, y) in mm: a measurement that mixes the axes up is caught
SPACING = (0.5, 0.8, 3.0)
SHAPE = (3, 20, 30)  # (z, y, x)


@pytest.fixture
def phantom(web_platform: Platform, seeded: dict[str, int]) -> dict[str, int]:
    """A series of random HU (so that a region's mean and SD depend on every voxel it holds)."""
    hu = np.random.default_rng(15).normal(40, 25, SHAPE).round().astype(np.float32)
    geometry = Geometry(
        (SHAPE[2], SHAPE[1], SHAPE[0]), SPACING, (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    )
    with web_platform.sessions.begin() as session:
        prediction = add_series_with_prediction(
            session,
            web_platform,
            hu=hu,
            mask=np.zeros(SHAPE, np.uint8),
            geometry=geometry,
            classes=[{"id": 1, "name": "lesion"}],
        )
        return {"prediction": prediction.id, "series": prediction.series_id}


def _hu_cache(platform: Platform, prediction_id: int) -> np.ndarray:
    """The series' stored HU volume, read here independently of the server."""
    with platform.sessions() as session:
        prediction = session.get(Prediction, prediction_id)
        assert prediction is not None
        array, _ = read_volume(platform.resolve(prediction.series.volume_path))
    return array


def _measure(client: FlaskClient, prediction_id: int, **body: object) -> dict[str, object]:
    response = client.post(f"/api/predictions/{prediction_id}/measurements", json=body)
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def test_a_ruler_measures_in_mm_along_both_pixel_spacings(
    client: FlaskClient, web_platform: Platform, phantom: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    row = _measure(
        client, phantom["prediction"], kind="ruler", slice_index=1, points=[[1, 1], [4, 5]]
    )
    # 3 voxels along x (0.5 mm) and 4 along y (0.8 mm)
    assert row["length_mm"] == pytest.approx(math.hypot(3 * 0.5, 4 * 0.8))
    assert row["area_mm2"] is None and row["mean_hu"] is None
    assert row["author"] == "clinician" and row["slice_index"] == 1
    assert distance_mm((0, 0), (10, 0), SPACING) == pytest.approx(5.0)
    assert distance_mm((0, 0), (0, 10), SPACING) == pytest.approx(8.0)


def test_an_ellipse_gives_the_area_mean_and_sd_of_the_hu_cache_inside_it(
    client: FlaskClient, web_platform: Platform, phantom: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    corner, opposite, z = (4.0, 3.0), (20.0, 15.0), 2
    row = _measure(
        client, phantom["prediction"], kind="ellipse", slice_index=z, points=[corner, opposite]
    )
    hu = _hu_cache(web_platform, phantom["prediction"])[z]
    # the voxels whose centres (i + 0.5, j + 0.5) lie inside the ellipse, voxel by voxel
    cx, cy, rx, ry = 12.0, 9.0, 8.0, 6.0
    inside = np.array(
        [
            [((i + 0.5 - cx) / rx) ** 2 + ((j + 0.5 - cy) / ry) ** 2 <= 1 for i in range(SHAPE[2])]
            for j in range(SHAPE[1])
        ]
    )
    assert row["voxels"] == int(inside.sum())
    assert row["area_mm2"] == pytest.approx(inside.sum() * 0.5 * 0.8)
    assert row["mean_hu"] == pytest.approx(float(hu[inside].mean()))
    assert row["sd_hu"] == pytest.approx(float(hu[inside].std()))
    # the ellipse's area is about π·rx·ry voxels
    assert abs(inside.sum() - math.pi * rx * ry) < 0.05 * math.pi * rx * ry
    assert (ellipse_mask(hu.shape, corner, opposite) == inside).all()


def test_a_freehand_region_holds_the_voxels_whose_centres_it_encloses(
    client: FlaskClient, web_platform: Platform, phantom: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    outline = [[2, 3], [10, 3], [10, 9], [2, 9]]  # columns 2..9, rows 3..8
    row = _measure(client, phantom["prediction"], kind="freehand", slice_index=0, points=outline)
    region = _hu_cache(web_platform, phantom["prediction"])[0, 3:9, 2:10]
    assert row["voxels"] == region.size == 48
    assert row["area_mm2"] == pytest.approx(48 * 0.5 * 0.8)
    assert row["mean_hu"] == pytest.approx(float(region.mean()))
    assert row["sd_hu"] == pytest.approx(float(region.std()))
    # a triangle just below a square's diagonal: the centres strictly below the diagonal
    triangle = polygon_mask((4, 4), [(0, 0.2), (3.8, 4), (0, 4)])
    assert triangle.sum() == 6 and triangle[3, 0] and not triangle[0, 3]


def test_measurements_are_listed_audited_and_only_reviewers_make_or_delete_them(
    client: FlaskClient, web_platform: Platform, phantom: dict[str, int]
) -> None:
    url = f"/api/predictions/{phantom['prediction']}/measurements"
    ruler = {"kind": "ruler", "slice_index": 0, "points": [[0, 0], [3, 4]]}
    log_in_as(client, web_platform, "researcher")
    assert client.post(url, json=ruler).status_code == 403
    assert get_json(client, url) == {"measurements": []}

    log_in_as(client, web_platform, "clinician")
    made = _measure(client, phantom["prediction"], **ruler, label="lesion 1")
    events = audit_events(web_platform, "measurement.create")
    assert [e.target for e in events] == [f"prediction:{phantom['prediction']}"]
    assert events[0].detail["measurement"] == made["id"] and events[0].detail["via"] == "api"

    log_in_as(client, web_platform, "researcher")  # a viewer sees them
    listed = get_json(client, url)["measurements"]
    assert [(m["id"], m["label"], m["author"]) for m in listed] == [
        (made["id"], "lesion 1", "clinician")
    ]
    assert client.delete(f"/api/measurements/{made['id']}").status_code == 403

    log_in_as(client, web_platform, "admin")  # an admin may delete anyone's
    assert client.delete(f"/api/measurements/{made['id']}").json == {"deleted": made["id"]}
    assert get_json(client, url) == {"measurements": []}
    assert len(audit_events(web_platform, "measurement.delete")) == 1
    assert client.delete(f"/api/measurements/{made['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "angle", "slice_index": 0, "points": [[0, 0], [1, 1]]}, "ruler"),
        ({"kind": "ruler", "slice_index": 0, "points": [[0, 0], [1, 1], [2, 2]]}, "2 points"),
        ({"kind": "freehand", "slice_index": 0, "points": [[0, 0], [1, 1]]}, "3 to 2000"),
        ({"kind": "ruler", "slice_index": 3, "points": [[0, 0], [1, 1]]}, "outside 0..2"),
        ({"kind": "ruler", "slice_index": 0, "points": [[0, 0], [31, 1]]}, "30×20 slice"),
        ({"kind": "ruler", "slice_index": 0, "points": [[0, 0], [-1, 1]]}, "points"),
        ({"kind": "ruler", "slice_index": 0, "points": [[0, 0]]}, "points"),
        ({"kind": "ruler", "slice_index": 0, "points": [[0, 0], [1, 1]], "z": 1}, "z"),
        ({"kind": "ruler", "points": [[0, 0], [1, 1]]}, "slice_index"),
    ],
)
def test_a_bad_measurement_is_refused_with_what_is_wrong(
    client: FlaskClient,
    web_platform: Platform,
    phantom: dict[str, int],
    body: dict[str, object],
    message: str,
) -> None:
    log_in_as(client, web_platform, "clinician")
    response = client.post(f"/api/predictions/{phantom['prediction']}/measurements", json=body)
    assert response.status_code == 400, response.json
    assert message in response.json["detail"], response.json
    assert client.post("/api/predictions/999/measurements", json=body).status_code == 404


def test_the_use_case_refuses_non_reviewers_and_a_missing_hu_volume_stores_nothing(
    web_platform: Platform, phantom: dict[str, int]
) -> None:
    ellipse = {"kind": "ellipse", "slice_index": 0, "points": [[1, 1], [6, 6]]}
    with pytest.raises(PermissionDenied):
        record_measurement(
            web_platform, Actor("researcher", Role.RESEARCHER), phantom["prediction"], **ellipse
        )
    with web_platform.sessions() as session:
        prediction = session.get(Prediction, phantom["prediction"])
        assert prediction is not None
        web_platform.resolve(prediction.series.volume_path).unlink()
    with pytest.raises(NotFound, match="HU volume of series"):
        record_measurement(
            web_platform, Actor("clinician", Role.CLINICIAN), phantom["prediction"], **ellipse
        )
    with web_platform.sessions() as session:
        assert measurements_of(session, phantom["prediction"]) == []
    # a ruler needs no HU volume
    ruler = record_measurement(
        web_platform,
        Actor("clinician", Role.CLINICIAN),
        phantom["prediction"],
        kind="ruler",
        slice_index=0,
        points=[[0, 0], [0, 10]],
    )
    assert ruler.length_mm == pytest.approx(8.0) and ruler.author.username == "clinician"
