"""Axial, coronal and sagittal planes and the voxel readout on the web.

The seeded series (tests/unit/conftest.py) is (k, j, i) = (4, 16, 24) voxels of 0.8 × 0.8 × 2.5 mm,
axial, identity direction; its HU is -1000 in columns 0-7, 40 in 8-15 and 1000 from 16 on; the
prediction's class 1 (green) fills rows 4-7, columns 10-13 of slice 2.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from flask.testing import FlaskClient

from radseg.contracts import Geometry
from radseg.core import Platform
from radseg.db.models import LabelSet, Prediction, Series
from radseg.imaging.volumes import read_volume, write_volume
from radseg.web import slices
from tests.web_support import LESION_GREEN, SHAPE, log_in_as, png

SLICES, ROWS, COLUMNS = SHAPE  # k, j, i


def test_coronal_and_sagittal_planes_carry_the_hu_and_the_overlay(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    series, prediction = seeded["series"], seeded["prediction"]

    coronal = png(client.get(f"/series/{series}/slice/coronal/5.png?wl=40&ww=400"))
    assert coronal.shape == (SLICES, COLUMNS)  # rows: slices, superior at the top; columns: i
    assert (coronal[:, :8] == 0).all() and (coronal[:, 8:16] == 128).all()
    sagittal = png(client.get(f"/series/{series}/slice/sagittal/20.png"))
    assert sagittal.shape == (SLICES, ROWS) and (sagittal == 255).all()  # 1000 HU, above the window
    axial = png(client.get(f"/series/{series}/slice/axial/2.png"))
    assert np.array_equal(axial, png(client.get(f"/series/{series}/slice/2.png")))

    # slice 2 is the second row from the top: the slices run upwards (superior) with k
    overlay = png(client.get(f"/predictions/{prediction}/overlay/coronal/5.png"))
    assert overlay.shape == (SLICES, COLUMNS, 4)
    lesion = np.zeros((SLICES, COLUMNS), dtype=bool)
    lesion[SLICES - 1 - 2, 10:14] = True
    assert (overlay[lesion] == [*LESION_GREEN, 255]).all()
    assert (overlay[~lesion][:, 3] == 0).all()
    side = png(client.get(f"/predictions/{prediction}/overlay/sagittal/11.png"))
    assert side.shape == (SLICES, ROWS, 4)
    assert (side[SLICES - 1 - 2, 4:8] == [*LESION_GREEN, 255]).all()
    assert side[..., 3].sum() == 4 * 255
    hidden = png(client.get(f"/predictions/{prediction}/overlay/sagittal/11.png?hide=1"))
    assert (hidden[..., 3] == 0).all()


def test_label_sets_and_uncertainty_have_planes_too(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    with web_platform.sessions.begin() as session:
        prediction = session.get(Prediction, seeded["prediction"])
        assert prediction is not None
        labels = LabelSet(
            series_id=prediction.series_id,
            source="review",
            classes=[{"id": 1, "name": "lesion", "color": "#00ff00"}],
            path=prediction.mask_path,
            prediction_id=prediction.id,
        )
        session.add(labels)
        session.flush()
        label_set = labels.id
    log_in_as(client, web_platform, "clinician")
    coronal = png(client.get(f"/label-sets/{label_set}/overlay/coronal/5.png"))
    assert (coronal[SLICES - 1 - 2, 10:14] == [*LESION_GREEN, 255]).all()
    missing = client.get(f"/predictions/{seeded['prediction']}/uncertainty/coronal/5.png")
    assert missing.status_code == 404 and b"no uncertainty map" in missing.data

    doubt = np.zeros(SHAPE, dtype=np.uint8)
    doubt[2, 5, 3:9] = 255  # slice 2, row 5, columns 3-8: the most unsure
    path = web_platform.path("predictions", "planes.uncertainty.nii.gz")
    with web_platform.sessions.begin() as session:
        prediction = session.get(Prediction, seeded["prediction"])
        assert prediction is not None
        write_volume(path, doubt, Geometry.from_dict(prediction.series.geometry))
        prediction.uncertainty_path = web_platform.relative(path)
    client.application.extensions[slices.ROWS].clear()  # the 404 above read the row 2 s ago
    heat = png(client.get(f"/predictions/{seeded['prediction']}/uncertainty/coronal/5.png"))
    assert heat.shape == (SLICES, COLUMNS, 4)
    assert (heat[SLICES - 1 - 2, 3:9, 3] > 0).all()
    assert heat[..., 3].astype(bool).sum() == 6


def test_planes_refuse_unknown_names_and_indexes_out_of_range(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    series = seeded["series"]
    unknown = client.get(f"/series/{series}/slice/oblique/0.png")
    assert unknown.status_code == 404
    assert b"the planes are axial, coronal, sagittal" in unknown.data
    beyond = client.get(f"/series/{series}/slice/coronal/{ROWS}.png")
    assert beyond.status_code == 404
    assert f"coronal planes 0 to {ROWS - 1}".encode() in beyond.data
    assert client.get(f"/series/{series}/slice/sagittal/{COLUMNS - 1}.png").status_code == 200
    assert client.get(f"/series/{series}/slice/coronal/-1.png").status_code == 404
    assert client.get(f"/series/{series}/slice/coronal/0.png?ww=0").status_code == 400
    assert client.get("/series/999/slice/coronal/0.png").status_code == 404
    overlay = client.get(f"/predictions/{seeded['prediction']}/overlay/axial/{SLICES}.png")
    assert overlay.status_code == 404


def test_planes_and_voxels_need_a_login(client: FlaskClient, seeded: dict[str, int]) -> None:
    for url in (
        f"/series/{seeded['series']}/slice/coronal/0.png",
        f"/predictions/{seeded['prediction']}/overlay/sagittal/0.png",
        f"/series/{seeded['series']}/voxel?i=0&j=0&k=0",
    ):
        response = client.get(url)
        assert response.status_code in (302, 401), url


def test_planes_are_cached_like_slices(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    url = f"/series/{seeded['series']}/slice/sagittal/3.png"
    first = client.get(url)
    assert first.status_code == 200 and "private" in first.headers["Cache-Control"]
    again = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    other = client.get(f"/series/{seeded['series']}/slice/coronal/3.png")
    assert other.headers["ETag"] != first.headers["ETag"]


def test_the_voxel_readout_is_the_hu_cache_and_lps_millimetres(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    with web_platform.sessions() as session:
        row = session.get(Series, seeded["series"])
        assert row is not None
        hu, _ = read_volume(web_platform.resolve(row.volume_path))
    for i, j, k in ((3, 2, 1), (12, 15, 3), (23, 0, 0)):
        answer = client.get(f"/series/{seeded['series']}/voxel?i={i}&j={j}&k={k}").get_json()
        assert answer["index"] == [i, j, k]
        assert answer["hu"] == float(hu[k, j, i])
        assert answer["frame"] == "LPS"
        assert answer["position_mm"] == pytest.approx([i * 0.8, j * 0.8, k * 2.5])

    base = f"/series/{seeded['series']}/voxel"
    for query, status, says in (
        (f"?i={COLUMNS}&j=0&k=0", 404, f"i from 0 to {COLUMNS - 1}"),
        ("?i=0&j=0", 400, "k"),
        ("?i=a&j=0&k=0", 400, "i"),
        ("?i=-1&j=0&k=0", 400, "i"),
    ):
        response = client.get(base + query)
        assert response.status_code == status, query
        assert says in response.get_data(as_text=True), query


def test_the_viewer_page_gives_its_script_the_planes_and_letters(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    html = client.get(f"/series/{seeded['series']}/view").get_data(as_text=True)
    found = re.search(r"data-planes='([^']*)'", html)
    assert found is not None
    planes = json.loads(found.group(1))
    letters = planes["acquisition"]["letters"]
    assert letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert planes["planes"]["coronal"]["spacing"] == [0.8, 2.5]
    assert "viewer_planes.js" in html
    assert f'data-voxel-url="/series/{seeded["series"]}/voxel"' in html


def test_a_series_without_direction_cosines_still_opens_in_one_plane(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    with web_platform.sessions.begin() as session:
        series = session.get(Series, seeded["series"])
        assert series is not None
        series.geometry = {k: v for k, v in series.geometry.items() if k != "direction"}
    log_in_as(client, web_platform, "clinician")
    page = client.get(f"/series/{seeded['series']}/view")
    assert page.status_code == 200
    assert b"data-planes" not in page.data and b'value="crosshair"' not in page.data
