"""The overlay modes, drawn by the server: fill, outline (class boundaries only) and the
difference of a prediction against a label set (false positives and false negatives)."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from radseg.contracts import Geometry
from radseg.core import Platform
from radseg.db.models import LabelSet, Prediction
from radseg.imaging.volumes import write_volume
from radseg.web.render import DIFFERENCE_COLORS
from tests.support import add_series_with_prediction
from tests.web_support import LESION_GREEN, SHAPE, log_in_as, png

ORANGE = (*DIFFERENCE_COLORS["false_positive"], 255)
BLUE = (*DIFFERENCE_COLORS["false_negative"], 255)


def _text(response: Any) -> str:
    """The error page's text (its message is HTML-escaped)."""
    return html.unescape(response.get_data(as_text=True))


def _overlay(client: FlaskClient, seeded: dict[str, int], query: str) -> np.ndarray:
    return png(client.get(f"/predictions/{seeded['prediction']}/overlay/2.png?{query}"))


def test_outline_draws_only_the_boundary_voxels_of_each_class(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "researcher")
    # the seeded mask on slice 2: class 1 fills rows 4-7 x columns 10-13, class 2 rows 10-11 x 2-3
    filled = _overlay(client, seeded, "mode=fill")
    assert (filled == _overlay(client, seeded, "")).all()  # fill is the default
    outline = _overlay(client, seeded, "mode=outline")

    expected = np.zeros(SHAPE[1:], dtype=bool)
    expected[4:8, 10:14] = True
    expected[5:7, 11:13] = False  # the 2 x 2 inside of the 4 x 4 square has no other neighbour
    expected[10:12, 2:4] = True  # a 2 x 2 block is all boundary
    assert ((outline[..., 3] > 0) == expected).all()
    assert tuple(outline[4, 10, :3]) == LESION_GREEN  # in the class's own colour
    assert (outline[expected] == filled[expected]).all()

    hidden = _overlay(client, seeded, "mode=outline&hide=2")
    assert not hidden[10:12, 2:4, 3].any() and hidden[4, 10, 3] == 255


@pytest.fixture
def labels(web_platform: Platform, seeded: dict[str, int]) -> int:
    """Ground truth of the seeded series: the prediction's square moved one column right."""
    reference = np.zeros(SHAPE, dtype=np.uint8)
    reference[2, 4:8, 11:15] = 1
    geometry = Geometry(
        (SHAPE[2], SHAPE[1], SHAPE[0]), (0.8, 0.8, 2.5), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    )
    target = web_platform.path("labels", "truth.nii.gz")
    write_volume(target, reference, geometry)
    with web_platform.sessions.begin() as session:
        prediction = session.get(Prediction, seeded["prediction"])
        assert prediction is not None
        row = LabelSet(
            series_id=prediction.series_id,
            source="import",
            version=1,
            classes=[{"id": 1, "name": "lesion"}],
            path=web_platform.relative(target),
        )
        session.add(row)
        session.flush()
        return row.id


def test_difference_colours_false_positives_and_false_negatives(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int], labels: int
) -> None:
    log_in_as(client, web_platform, "researcher")
    diff = _overlay(client, seeded, f"mode=difference&labels={labels}")
    # predicted column 10 is not in the labels; labelled column 14 is not predicted
    assert (diff[4:8, 10] == ORANGE).all()
    assert (diff[4:8, 14] == BLUE).all()
    assert (diff[4:8, 11:14, 3] == 0).all()  # agreement: clear
    assert (diff[10:12, 2:4] == ORANGE).all()  # class 2, predicted only
    assert diff[0, 0, 3] == 0  # background on both: clear
    assert int((diff[..., 3] > 0).sum()) == 4 + 4 + 4

    only_lesion = _overlay(client, seeded, f"mode=difference&labels={labels}&hide=2")
    assert (only_lesion[10:12, 2:4, 3] == 0).all()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("mode=heat", "mode must be one of fill, outline, difference"),
        ("mode=difference", "add labels=<label set id>"),
        ("mode=difference&labels=x", "labels=<label set id>"),
        ("mode=difference&labels=999", "no label set 999"),
    ],
)
def test_a_bad_overlay_mode_is_refused_with_what_to_do(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int], query: str, message: str
) -> None:
    log_in_as(client, web_platform, "researcher")
    response = client.get(f"/predictions/{seeded['prediction']}/overlay/2.png?{query}")
    assert response.status_code in (400, 404)
    assert message in _text(response)


def test_the_difference_needs_labels_of_the_same_series_and_the_prediction_layer(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int], labels: int
) -> None:
    log_in_as(client, web_platform, "researcher")
    response = client.get(f"/label-sets/{labels}/overlay/2.png?mode=difference")
    assert response.status_code == 400
    assert "drawn on the prediction" in _text(response)
    outline = png(client.get(f"/label-sets/{labels}/overlay/2.png?mode=outline"))
    assert outline[4, 11, 3] == 255 and outline[5, 12, 3] == 0

    geometry = Geometry(
        (SHAPE[2], SHAPE[1], SHAPE[0]), (1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    )
    with web_platform.sessions.begin() as session:
        elsewhere = add_series_with_prediction(
            session,
            web_platform,
            hu=np.zeros(SHAPE, np.float32),
            mask=np.zeros(SHAPE, np.uint8),
            geometry=geometry,
            classes=[{"id": 1, "name": "lesion"}],
        )
    response = client.get(
        f"/predictions/{elsewhere.id}/overlay/2.png?mode=difference&labels={labels}"
    )
    assert response.status_code == 400
    assert f"label set {labels} is not of this prediction's series" in _text(response)


def test_the_modes_apply_in_the_coronal_and_sagittal_planes_too(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int], labels: int
) -> None:
    log_in_as(client, web_platform, "researcher")
    base = f"/predictions/{seeded['prediction']}/overlay"
    top = SHAPE[0] - 1 - 2  # slice 2, superior at the top of a coronal or sagittal plane
    diff = png(client.get(f"{base}/coronal/5.png?mode=difference&labels={labels}"))
    assert tuple(diff[top, 10]) == ORANGE and tuple(diff[top, 14]) == BLUE
    assert (diff[top, 11:14, 3] == 0).all()
    # in a sagittal plane the square is a run one slice thick: all of it is boundary
    filled = png(client.get(f"{base}/sagittal/11.png"))
    outline = png(client.get(f"{base}/sagittal/11.png?mode=outline"))
    assert int((filled[..., 3] > 0).sum()) == 4
    assert ((outline[..., 3] > 0) == (filled[..., 3] > 0)).all()
    label_outline = png(client.get(f"/label-sets/{labels}/overlay/coronal/5.png?mode=outline"))
    assert label_outline[top, 11, 3] == 255
