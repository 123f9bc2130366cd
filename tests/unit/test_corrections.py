"""The use case :func:`radseg.workflows.corrections.save_correction`: strokes on a prediction →
the series' next label version, within the settings' limits, by reviewers only; audited.

Run on SQLite and PostgreSQL (the next version is a ``max()`` in the same unit of work)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from radseg.core import Platform, create_platform
from radseg.db.models import LabelSet, Prediction, Role
from radseg.errors import InputError, NotFound, PermissionDenied
from radseg.imaging.paint import Stroke, paint
from radseg.imaging.volumes import read_volume
from radseg.roles import Actor
from radseg.workflows.corrections import save_correction
from tests.web_support import DEMO, audit_events

CLINICIAN = Actor("clinician", Role.CLINICIAN)


def _stroke(z: int = 1, class_id: int = 1, radius: float = 1, points: Any = None) -> dict[str, Any]:
    return {"z": z, "class_id": class_id, "radius": radius, "points": points or [[5.5, 5.5]]}


def _labels(platform: Platform, label_set: LabelSet) -> np.ndarray:
    return read_volume(platform.resolve(label_set.path))[0]


def test_a_correction_is_the_series_next_label_version_painted_on_the_last_one(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    strokes = [_stroke(radius=2, points=[[5.5, 5.5], [9.5, 5.5]]), _stroke(z=2, class_id=0)]
    first = save_correction(web_platform, CLINICIAN, seeded["prediction"], strokes=strokes)
    assert (first.version, first.source, first.author) == (1, "review", "clinician")
    assert first.prediction_id == seeded["prediction"]
    # the model's class, and the label value in the mask that the model does not name
    assert [c["name"] for c in first.classes] == ["lesion", "class 2"]
    with web_platform.sessions() as session:
        prediction = session.get(Prediction, seeded["prediction"])
        assert prediction is not None
        original, _ = read_volume(web_platform.resolve(prediction.mask_path))
    expected = paint(
        original.astype(np.uint8),
        [Stroke(1, 1, 2.0, ((5.5, 5.5), (9.5, 5.5))), Stroke(2, 0, 1.0, ((5.5, 5.5),))],
    )
    assert np.array_equal(_labels(web_platform, first), expected)
    (event,) = audit_events(web_platform, "labels.correct")
    assert event.actor == "clinician" and event.target == f"label_set:{first.id}"
    assert event.detail["slices"] == [1, 2] and event.detail["strokes"] == 2

    second = save_correction(
        web_platform,
        Actor("admin", Role.ADMIN),
        seeded["prediction"],
        strokes=[_stroke(z=0, class_id=2, points=[[1, 1]])],
        base_label_set=first.id,
        via="api",
    )
    assert (second.version, second.author) == (2, "admin")
    again = _labels(web_platform, second)
    assert np.array_equal(again[1:], expected[1:]) and again[0, 0, 0] == 2
    assert audit_events(web_platform, "labels.correct")[0].detail["via"] == "api"


def test_a_correction_is_refused_with_what_is_wrong_and_nothing_is_stored(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    prediction = seeded["prediction"]
    with pytest.raises(PermissionDenied, match="only a clinician or admin can correct"):
        save_correction(
            web_platform, Actor("researcher", Role.RESEARCHER), prediction, strokes=[_stroke()]
        )
    with pytest.raises(NotFound, match="there is no prediction 999"):
        save_correction(web_platform, CLINICIAN, 999, strokes=[_stroke()])
    with pytest.raises(InputError, match="base_label_set must be a label set of this"):
        save_correction(web_platform, CLINICIAN, prediction, strokes=[_stroke()], base_label_set=9)
    with pytest.raises(InputError, match=r"class 5 is not one of \[0, 1, 2\]"):
        save_correction(web_platform, CLINICIAN, prediction, strokes=[_stroke(class_id=5)])
    with web_platform.sessions() as session:
        row = session.get(Prediction, prediction)
        assert row is not None and not row.series.label_sets
        web_platform.resolve(row.mask_path).unlink()
    with pytest.raises(NotFound, match=f"the mask of prediction {prediction} is missing"):
        save_correction(web_platform, CLINICIAN, prediction, strokes=[_stroke()])
    assert audit_events(web_platform, "labels.correct") == []


def test_corrections_are_bounded_by_the_settings(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    strict = create_platform(
        web_platform.settings.model_copy(
            update={"correction_max_points": 50, "correction_max_area": 100}
        ),
        autoload=False,
        plugins=[DEMO],
    )

    def save(points: list[Any], radius: float = 1, second: list[Any] | None = None) -> LabelSet:
        stroke = _stroke(radius=radius, points=points)
        again = dict(stroke, z=2, points=points if second is None else second)
        return save_correction(strict, CLINICIAN, seeded["prediction"], strokes=[stroke, again])

    try:
        # 26 + 25 points: over the 50 of the setting, refused before anything is painted
        with pytest.raises(InputError, match=r"^more than 50 points; save in smaller steps$"):
            save([[1, 1]] * 26, second=[[1, 1]] * 25)
        # a 16 x 24 slice filled with a radius-12 brush, twice: more than 100 voxels
        with pytest.raises(InputError, match="at most 100 per save: save in smaller steps"):
            save([[12, 8]], radius=12)
        assert save([[12, 8]], radius=2).version == 1
    finally:
        strict.close()
