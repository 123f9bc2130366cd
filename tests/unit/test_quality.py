"""Quality watched over time (issue 14 §4): the weekly table, the control charts against
hand-computed numbers, the cached correction sizes, the alerts (recorded once, announced once
through ``radseg_quality_alert``), the JSON API, the SVG image, the model page and the CLI.

The database tests run on SQLite and PostgreSQL (the weekly grouping reads timestamps back)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, select

from radseg import quality
from radseg.cli import main
from radseg.core import Platform
from radseg.db.models import (
    CorrectionSize,
    Prediction,
    QualityAlert,
    Review,
    ReviewStatus,
    Role,
    User,
)
from radseg.hookspecs import hookimpl
from radseg.imaging.volumes import read_volume
from radseg.roles import Actor
from radseg.settings import Settings
from radseg.web import create_app
from radseg.workflows.corrections import save_correction
from radseg.workflows.review import record_review
from tests.support import SQLITE_ONLY, migrated_platform
from tests.web_support import DEMO, audit_events, get_json, log_in_as

CLINICIAN = Actor("clinician", Role.CLINICIAN)
NOW = datetime.now(UTC)
TWO_WEEKS_AGO = NOW - timedelta(days=14)
SVG_NS = "{http://www.w3.org/2000/svg}"


# --- the statistics, by hand -------------------------------------------------------------------


def test_correction_size_is_the_foreground_dice_and_the_voxels_changed() -> None:
    predicted = np.zeros((2, 3, 3), dtype=np.uint8)
    predicted[0, 0, :] = 1  # three voxels of class 1
    predicted[1, 0, 0] = 2  # one of class 2
    reviewed = predicted.copy()
    reviewed[0, 0, 2] = 0  # erased
    reviewed[1, 1, 1] = 2  # added
    reviewed[1, 0, 0] = 1  # relabelled
    # agreeing foreground voxels: (0,0,0) and (0,0,1); foreground: 4 + 4
    assert quality.correction_size(predicted, reviewed) == (2 * 2 / 8, 3)
    assert quality.correction_size(predicted, predicted) == (1.0, 0)
    empty = np.zeros((2, 2, 2), dtype=np.uint8)
    assert quality.correction_size(empty, empty) == (1.0, 0)
    with pytest.raises(ValueError, match="shapes differ"):
        quality.correction_size(empty, predicted)


def test_iso_weeks_cross_the_year_as_iso_8601_says() -> None:
    assert quality.iso_week(date(2026, 1, 1)) == "2026-W01"  # a Thursday
    assert quality.iso_week(datetime(2027, 1, 1, 12, tzinfo=UTC)) == "2026-W53"  # a Friday
    assert quality.week_start("2026-W53") == date(2026, 12, 28)
    assert quality.week_start("2026-W01") == date(2025, 12, 29)


WEEKS = ["2026-W10", "2026-W11", "2026-W12", "2026-W13"]


def test_the_reject_rate_p_chart_limits_and_flags_by_hand() -> None:
    chart = quality.p_chart(WEEKS, [1, 1, 2, 10], [10, 10, 20, 25], first=2, least=10)
    # baseline: the first two weeks (20 decisions >= 10): p = 2/20
    assert chart.baseline_weeks == WEEKS[:2]
    assert chart.center == pytest.approx(0.1)
    w12, w13 = chart.points[2], chart.points[3]
    assert w12.limit == pytest.approx(0.1 + 3 * math.sqrt(0.1 * 0.9 / 20))  # 0.30125
    assert (w12.value, w12.flagged) == (0.1, False)
    assert w13.limit == pytest.approx(0.28)  # 0.1 + 3 * 0.3 / 5
    assert (w13.value, w13.n, w13.flagged) == (0.4, 25, True)
    assert [p.baseline for p in chart.points] == [True, True, False, False]


def test_the_baseline_grows_until_it_holds_enough_and_flags_nothing_before() -> None:
    # 30 decisions needed: the first three weeks (40); p = 4/40
    chart = quality.p_chart(WEEKS, [1, 1, 2, 10], [10, 10, 20, 25], first=2, least=30)
    assert chart.baseline_weeks == WEEKS[:3] and chart.center == pytest.approx(0.1)
    assert [p.flagged for p in chart.points] == [False, False, False, True]
    # a baseline inside which a week would be out of limits is never flagged itself
    inside = quality.p_chart(WEEKS, [1, 1, 2, 10], [10, 10, 20, 25], first=4, least=1)
    assert not any(p.flagged for p in inside.points)
    # never enough: no limits, nothing flagged, the note says why
    none = quality.p_chart(WEEKS, [1, 1, 2, 10], [10, 10, 20, 25], first=2, least=100)
    assert none.center is None and none.baseline_weeks == []
    assert all(p.limit is None and not p.flagged for p in none.points)
    assert none.note == "the baseline needs 100 decisions over at least 2 weeks"


def test_the_correction_dice_chart_limits_and_flags_by_hand() -> None:
    values = [[0.9, 0.8], [0.7, 1.0], [0.5, 0.5, 0.5, 0.5], [0.6]]
    chart = quality.mean_chart(WEEKS, values, first=2, least=4)
    # baseline values 0.9, 0.8, 0.7, 1.0: mean 0.85, sample sd sqrt(0.05 / 3)
    sd = math.sqrt(0.05 / 3)
    assert chart.center == pytest.approx(0.85) and chart.sigma == pytest.approx(sd)
    w12, w13 = chart.points[2], chart.points[3]
    assert w12.limit == pytest.approx(0.85 - 3 * sd / 2)  # 0.65635
    assert (w12.value, w12.n, w12.flagged) == (0.5, 4, True)
    assert w13.limit == pytest.approx(0.85 - 3 * sd)  # 0.46270
    assert (w13.value, w13.flagged) == (0.6, False)
    assert chart.bad_side == "below"


def test_alert_message_names_the_week_the_value_and_the_limit() -> None:
    chart = quality.p_chart(WEEKS, [1, 1, 2, 10], [10, 10, 20, 25], first=2, least=10)
    message = quality.alert_message("fpn", 3, chart, chart.points[3])
    assert message == (
        "fpn version 3: reject rate 0.400 in 2026-W13 (n=25) is above its limit 0.280 "
        "(centre 0.100 from 2026-W10..2026-W11)"
    )


# --- the database: weekly table, cached sizes, alerts ------------------------------------------


def _more_predictions(platform: Platform, like: int, count: int) -> list[int]:
    """``count`` more predictions of the same series and model version as prediction ``like``."""
    with platform.sessions.begin() as session:
        model = session.get(Prediction, like)
        assert model is not None
        rows = [
            Prediction(
                series_id=model.series_id,
                model_version_id=model.model_version_id,
                mask_path=model.mask_path,
            )
            for _ in range(count)
        ]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def _review(
    platform: Platform, prediction: int, status: str, when: datetime, class_id: int | None = None
) -> None:
    with platform.sessions.begin() as session:
        reviewer = session.scalars(select(User).where(User.username == "clinician")).one()
        session.add(
            Review(
                prediction_id=prediction,
                reviewer_id=reviewer.id,
                status=ReviewStatus(status),
                class_id=class_id,
                created_at=when,
            )
        )


def _version_of(platform: Platform, prediction: int) -> int:
    with platform.sessions() as session:
        row = session.get(Prediction, prediction)
        assert row is not None
        return row.model_version_id


def test_the_weekly_table_counts_each_predictions_latest_decision_in_its_week(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    first = seeded["prediction"]
    a, b, c = _more_predictions(web_platform, first, 3)
    week1 = datetime(2026, 3, 3, 9, tzinfo=UTC)  # 2026-W10
    week2 = datetime(2026, 3, 12, 18, tzinfo=UTC)  # 2026-W11
    _review(web_platform, first, "accepted", week1)
    _review(web_platform, a, "rejected", week1)
    _review(web_platform, a, "needs_edit", week2)  # a changed mind: counts once, in week 2
    _review(web_platform, b, "rejected", week2)
    _review(web_platform, c, "rejected", week2, class_id=1)  # one class: not a study decision
    _review(web_platform, c, "pending", week2)  # no decision
    with web_platform.sessions() as session:
        table = quality.weekly_table(session, _version_of(web_platform, first))
    assert [(r["week"], r["start"]) for r in table] == [
        ("2026-W10", "2026-03-02"),
        ("2026-W11", "2026-03-09"),
    ]
    assert {k: table[0][k] for k in ("decisions", "accepted", "rejected", "accepted_rate")} == {
        "decisions": 1,
        "accepted": 1,
        "rejected": 0,
        "accepted_rate": 1.0,
    }
    assert (table[1]["decisions"], table[1]["needs_edit"], table[1]["rejected"]) == (2, 1, 1)
    assert table[1]["rejected_rate"] == 0.5 and "corrections" not in table[1]


def test_the_priority_distribution_is_a_weekly_metric(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    first = seeded["prediction"]
    ids = _more_predictions(web_platform, first, 5)
    week1 = datetime(2026, 3, 3, 9, tzinfo=UTC)  # 2026-W10
    week2 = datetime(2026, 3, 12, 18, tzinfo=UTC)  # 2026-W11
    when_and_priority = [(week1, 0.1), (week1, 0.3), (week2, 0.2), (week2, 0.9), (week2, None)]
    placed = dict(zip(ids, when_and_priority, strict=True))
    with web_platform.sessions.begin() as session:
        for ident, (when, priority) in placed.items():
            row = session.get(Prediction, ident)
            assert row is not None
            row.created_at, row.priority = when, priority
        session.get(Prediction, first).priority = None  # type: ignore[union-attr]
    with web_platform.sessions() as session:
        weeks = quality.priority_metric(session, _version_of(web_platform, first))
    assert weeks["2026-W10"]["scored"] == 2
    assert weeks["2026-W10"]["priority_median"] == pytest.approx(0.2)
    # two scored in week 11 (the third prediction has no priority): their median, and the 90th
    # percentile by linear interpolation between them
    assert weeks["2026-W11"]["scored"] == 2
    assert weeks["2026-W11"]["priority_median"] == pytest.approx(0.55)
    assert weeks["2026-W11"]["priority_p90"] == pytest.approx(0.2 + 0.9 * 0.7)


def test_a_weekly_metric_is_one_function(web_platform: Platform, seeded: dict[str, int]) -> None:
    """The extension point the lead uses: a function returning {week: columns}."""

    def predictions_made(session: Any, version_id: int) -> dict[str, dict[str, Any]]:
        rows = session.execute(
            select(Prediction.created_at, Prediction.id).where(
                Prediction.model_version_id == version_id
            )
        )
        return {w: {"predictions": len(ids)} for w, ids in quality.by_week(rows).items()}

    version = _version_of(web_platform, seeded["prediction"])
    with web_platform.sessions() as session:
        metrics = (
            *quality.WEEKLY_METRICS,
            (predictions_made, (quality.Column("predictions", "predictions", "d"),)),
        )
        table = quality.weekly_table(session, version, metrics)
    assert [(r["week"], r["predictions"]) for r in table] == [(quality.iso_week(NOW), 1)]
    # shown after the built-in columns; no decision, no correction this week
    assert [c.cell(table[0]) for c in quality.table_columns(metrics)] == [*(["-"] * 11), "1"]


def test_a_correction_caches_its_size_against_the_prediction_not_its_base(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    prediction = seeded["prediction"]
    stroke = {"z": 0, "class_id": 1, "radius": 2, "points": [[5.5, 5.5]]}
    first = save_correction(web_platform, CLINICIAN, prediction, strokes=[stroke])
    painted = int(np.count_nonzero(read_volume(web_platform.resolve(first.path))[0][0]))
    assert painted > 0
    # the seeded mask has 16 + 4 foreground voxels, all on slice 2, all kept
    with web_platform.sessions() as session:
        size = session.get(CorrectionSize, first.id)
        assert size is not None and size.prediction_id == prediction
        assert (size.dice, size.voxels_changed) == (pytest.approx(40 / (40 + painted)), painted)
    # erasing the same stroke on the first correction gives the prediction back: size 0
    undo = save_correction(
        web_platform,
        CLINICIAN,
        prediction,
        strokes=[{**stroke, "class_id": 0}],
        base_label_set=first.id,
    )
    with web_platform.sessions() as session:
        size = session.get(CorrectionSize, undo.id)
        assert size is not None and (size.dice, size.voxels_changed) == (1.0, 0)
        (week,) = quality.weekly_table(session, _version_of(web_platform, prediction))
    # the prediction's latest correction counts, once
    assert (week["corrections"], week["dice_mean"], week["voxels_changed_mean"]) == (1, 1.0, 0)


class AlertRecorder:
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    @hookimpl
    def radseg_quality_alert(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)


class BrokenAlertSink:
    @hookimpl
    def radseg_quality_alert(self, alert: dict[str, Any]) -> None:
        raise RuntimeError("the pager is down")


@pytest.fixture
def recorder() -> AlertRecorder:
    return AlertRecorder()


@pytest.fixture
def watched(settings: Settings, seeded: dict[str, int], recorder: AlertRecorder) -> Any:
    """A platform (on the seeded database) whose charts take one week of four decisions as
    their baseline, with a plugin that records the alerts and one that fails."""
    strict = settings.model_copy(update={"quality_baseline_weeks": 1, "quality_baseline_min": 4})
    platform = migrated_platform(
        strict,
        autoload=False,
        plugins=[DEMO, ("broken-sink", BrokenAlertSink()), ("alert-recorder", recorder)],
    )
    yield platform
    platform.close()


def test_a_shift_is_recorded_and_announced_once_with_its_payload(
    watched: Platform, seeded: dict[str, int], recorder: AlertRecorder
) -> None:
    # the failing plugin and the recorder both implement the hook
    assert len(watched.plugins.pm.hook.radseg_quality_alert.get_hookimpls()) == 2
    first = seeded["prediction"]
    baseline = _more_predictions(watched, first, 4)
    for prediction in baseline:  # two weeks ago: four accepted, no reject (p = 0)
        _review(watched, prediction, "accepted", TWO_WEEKS_AGO)
    now = _more_predictions(watched, first, 3)
    record_review(watched, CLINICIAN, now[0], status="accepted")
    assert recorder.alerts == []  # a reject rate of 0 is not above the limit 0
    record_review(watched, CLINICIAN, now[1], status="rejected")  # 1 of 2: above 0
    (alert,) = recorder.alerts  # once, though a plugin before it raised
    version = _version_of(watched, first)
    with watched.sessions() as session:
        model_name = session.get(Prediction, first).model_version.model.name  # type: ignore[union-attr]
        (row,) = session.scalars(select(QualityAlert)).all()
    assert alert == {
        "id": row.id,
        "model": model_name,
        "model_version_id": version,
        "chart": "reject_rate",
        "week": quality.iso_week(NOW),
        "value": 0.5,
        "center": 0.0,
        "limit": 0.0,
        "n": 2,
        "message": f"{model_name} version {version}: reject rate 0.500 in "
        f"{quality.iso_week(NOW)} (n=2) is above its limit 0.000 (centre 0.000 from "
        f"{quality.iso_week(TWO_WEEKS_AGO)})",
        "created_at": row.created_at.isoformat(),
    }
    # the same week stays flagged: recorded and announced once, not on each decision or read
    record_review(watched, CLINICIAN, now[2], status="rejected")
    record_review(watched, CLINICIAN, first, status="rejected", class_id=1)
    app = create_app(watched, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    log_in_as(client, watched, "clinician")
    body = get_json(client, f"/api/model-versions/{version}/quality")
    assert client.get(f"/models/{version}").status_code == 200
    assert len(recorder.alerts) == 1 and [a["id"] for a in body["alerts"]] == [row.id]
    (event,) = audit_events(watched, "quality.alert")
    assert event.target == f"model_version:{version}" and event.detail["chart"] == "reject_rate"
    chart = body["charts"]["reject_rate"]
    assert chart["center"] == 0.0 and [p["flagged"] for p in chart["points"]] == [False, True]
    assert chart["points"][1]["value"] == pytest.approx(2 / 3)


# --- the adapters --------------------------------------------------------------------------------


def _two_weeks_of_reviews(platform: Platform, seeded: dict[str, int]) -> int:
    first = seeded["prediction"]
    a, b = _more_predictions(platform, first, 2)
    _review(platform, first, "accepted", TWO_WEEKS_AGO)
    _review(platform, a, "rejected", TWO_WEEKS_AGO)
    _review(platform, b, "needs_edit", NOW)
    return _version_of(platform, first)


def test_the_api_gives_the_weeks_charts_and_alerts_and_the_charts_as_svg(
    app: Flask, client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    version = _two_weeks_of_reviews(web_platform, seeded)
    log_in_as(client, web_platform, "researcher")
    body = get_json(client, f"/api/model-versions/{version}/quality")
    assert (body["model_version_id"], body["baseline_weeks"], body["baseline_min"]) == (
        version,
        4,
        20,
    )
    assert [w["week"] for w in body["weeks"]] == [
        quality.iso_week(TWO_WEEKS_AGO),
        quality.iso_week(NOW),
    ]
    assert [w["rejected_rate"] for w in body["weeks"]] == [0.5, 0.0]
    reject = body["charts"]["reject_rate"]
    assert reject["center"] is None and "needs 20 decisions" in reject["note"]
    assert body["alerts"] == []

    svg = client.get(f"/api/model-versions/{version}/quality.svg?chart=reject_rate")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    tree = ET.fromstring(svg.data)
    circles = tree.findall(f"{SVG_NS}circle")
    assert len(circles) == 2
    assert (
        circles[0]
        .find(f"{SVG_NS}title")
        .text.startswith(  # type: ignore[union-attr]
            f"{quality.iso_week(TWO_WEEKS_AGO)}: 0.500 (n=2"
        )
    )
    empty = client.get(f"/api/model-versions/{version}/quality.svg?chart=correction_dice")
    assert b"no reviews yet" in empty.data
    assert client.get(f"/api/model-versions/{version}/quality.svg?chart=x").status_code == 400
    assert client.get("/api/model-versions/999/quality").status_code == 404


@SQLITE_ONLY
def test_the_model_page_shows_the_weeks_the_alerts_and_the_charts(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    version = _two_weeks_of_reviews(web_platform, seeded)
    with web_platform.sessions.begin() as session:
        session.add(
            QualityAlert(
                model_version_id=version,
                chart="reject_rate",
                week="2026-W49",
                value=0.5,
                center=0.1,
                limit=0.3,
                n=10,
                message="the reject rate <b>rose</b>",
            )
        )
    log_in_as(client, web_platform, "clinician")
    page = client.get(f"/models/{version}").get_data(as_text=True)
    assert 'id="quality"' in page and f"/api/model-versions/{version}/quality" in page
    assert 'id="chart-reject_rate"' in page and 'id="chart-correction_dice"' in page
    assert "the reject rate &lt;b&gt;rose&lt;/b&gt;" in page  # escaped
    assert f"<td>{quality.iso_week(NOW)}</td><td>1</td>" in page
    assert "quality.js" in page


@SQLITE_ONLY
def test_the_cli_prints_the_table_computes_missing_sizes_and_writes_svgs(
    web_platform: Platform, seeded: dict[str, int], settings: Settings, tmp_path: Path
) -> None:
    prediction = seeded["prediction"]
    stroke = {"z": 0, "class_id": 1, "radius": 1, "points": [[3.5, 3.5]]}
    correction = save_correction(web_platform, CLINICIAN, prediction, strokes=[stroke])
    with web_platform.sessions.begin() as session:  # as if saved before the cache existed
        session.execute(delete(CorrectionSize))
        name = session.get(Prediction, prediction).model_version.model.name  # type: ignore[union-attr]
    env = {"RADSEG_DATABASE_URL": settings.database_url_resolved}
    home = ["--home", str(settings.home)]
    runner = CliRunner()
    shown = runner.invoke(main, [*home, "models", "quality", name], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"{name} version " in shown.output and "reject rate: no limits yet" in shown.output

    out = tmp_path / "charts"
    checked = runner.invoke(
        main, [*home, "models", "quality", name, "--check", "--svg", str(out)], env=env
    )
    assert checked.exit_code == 0, checked.output
    assert "checked: 1 correction sizes computed, 0 new alerts" in checked.output
    with web_platform.sessions() as session:
        size = session.get(CorrectionSize, correction.id)
        assert size is not None and size.voxels_changed > 0
    week = quality.iso_week(NOW)
    line = next(x for x in checked.output.splitlines() if x.strip().startswith(week))
    # no decision; one correction: its Dice (20 foreground voxels kept) and voxels changed; no
    # multi-reader case
    changed = size.voxels_changed
    assert line.split() == [
        week,
        "-",
        "-",
        "-",
        "-",
        "1",
        f"{40 / (40 + changed):.3f}",
        str(changed),
        "-",
        "-",
        "-",
        "-",
    ]
    version = _version_of(web_platform, prediction)
    assert sorted(p.name for p in out.iterdir()) == [
        f"model-version-{version}-correction_dice.svg",
        f"model-version-{version}-reject_rate.svg",
    ]
    ET.parse(out / f"model-version-{version}-correction_dice.svg")  # well-formed

    missing = runner.invoke(main, [*home, "models", "quality", "nope"], env=env)
    assert missing.exit_code == 1 and "there is no model 'nope'; models: " in missing.output
    assert audit_events(web_platform, "quality.check")[0].actor == "cli"


def test_checking_quality_is_for_operators(web_platform: Platform, seeded: dict[str, int]) -> None:
    from radseg.errors import PermissionDenied
    from radseg.workflows.quality import check_quality

    with pytest.raises(PermissionDenied, match="only an admin or researcher can check"):
        check_quality(web_platform, CLINICIAN, model="any")


def test_an_alert_another_process_recorded_first_is_not_announced_again(
    watched: Platform,
    seeded: dict[str, int],
    recorder: AlertRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race: two processes evaluate the same version at once, and neither sees the other's
    alert before it commits. The unique key refuses the second; it announces nothing."""
    from radseg.workflows import quality as quality_workflow

    first = seeded["prediction"]
    for prediction in _more_predictions(watched, first, 4):
        _review(watched, prediction, "accepted", TWO_WEEKS_AGO)
    rejected = _more_predictions(watched, first, 1)[0]
    record_review(watched, CLINICIAN, rejected, status="rejected")
    assert len(recorder.alerts) == 1
    # the other process's view: it has not seen the recorded alert
    monkeypatch.setattr(quality_workflow.quality, "recorded_alerts", lambda session, ident: [])
    assert quality_workflow.evaluate_alerts(watched, _version_of(watched, first)) == []
    assert len(recorder.alerts) == 1
    with watched.sessions() as session:
        assert len(session.scalars(select(QualityAlert)).all()) == 1
