"""A model version's quality over time, from its reviewers' decisions and corrections.

**Weekly table.** Each row is one ISO week (``2026-W49``, UTC) of one model version. Its columns
come from the metrics of :data:`WEEKLY_METRICS`; each metric is one function
``(session, model_version_id) -> {week: {column: value}}``, listed with the :class:`Column` s the
page, the CLI and the API show of it; :func:`weekly_table` joins them. Adding a metric is
writing one such function (:func:`by_week` groups ``(when, value)`` pairs) and adding it, with
its columns, to the tuple: the page, the CLI and the API show it with no other change. The
built-in ones:

- :func:`decision_metric`: per prediction, its *latest* study-level decision (a review row with
  no ``class_id``; a changed mind replaces the earlier one) counts once, in the week it was
  made: ``decisions``, ``accepted``/``needs_edit``/``rejected`` (counts) and their rates.
- :func:`correction_metric`: per prediction, its latest correction (the label set made from it)
  counts once, in the week it was saved: ``corrections``, ``dice_mean`` (Dice between the
  prediction and the reviewed mask, over all foreground classes) and ``voxels_changed_mean``.
  The numbers are cached in :class:`~radseg.db.models.CorrectionSize` when a correction is
  saved, so no volume is read here.
- :func:`priority_metric`: the review priority of the version's predictions, in the week they
  were made: ``scored``, ``priority_median``, ``priority_p90``.
- :func:`agreement_metric`: per multi-reader case with an agreement report, in the week the
  report was computed: ``read_cases`` and ``reader_dice_mean`` (the readers' mean pairwise Dice).

**Control charts** (:func:`control_charts`), one point per week, limits from the version's
first weeks: the *baseline* is the first ``baseline_weeks`` weeks that have observations,
extended week by week until it holds at least ``baseline_min`` observations (decisions for the
reject rate, corrections for the Dice). Until it does, the chart has no limits and flags nothing.

- ``reject_rate``: a p-chart. Centre p̄ = rejected / decided over the baseline; a week with
  ``n`` decisions has the upper limit p̄ + 3·√(p̄(1 − p̄)/n) (capped at 1).
- ``correction_dice``: an x̄-chart of the week's mean correction Dice. Centre μ = the mean of
  the baseline's corrections, σ their sample standard deviation; a week with ``n`` corrections
  has the lower limit μ − 3·σ/√n (floored at 0).

A week *after* the baseline whose point lies beyond its limit on the bad side (more rejects,
lower Dice: bigger corrections) is flagged: the shift is an alert. Improvements are drawn but
not flagged. Weeks inside the baseline are never flagged (they made the limits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from radseg.db.models import (
    CorrectionSize,
    LabelSet,
    Prediction,
    QualityAlert,
    ReadingCase,
    Review,
    ReviewStatus,
)

#: a metric: ``(session, model_version_id) -> {ISO week: {column: value}}``
WeeklyMetric = Callable[[Session, int], dict[str, dict[str, Any]]]
#: the decisions that count (``pending`` is none)
DECISIONS = (ReviewStatus.ACCEPTED, ReviewStatus.NEEDS_EDIT, ReviewStatus.REJECTED)
#: how far from the centre a point must lie to be flagged, in standard errors
SIGMAS = 3.0
CHARTS = ("reject_rate", "correction_dice")
T = TypeVar("T")


# --- weeks --------------------------------------------------------------------------------------


def iso_week(when: datetime | date) -> str:
    """``2026-W49``: the ISO year and week of ``when`` (a timestamp is taken in UTC)."""
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


def week_start(week: str) -> date:
    """The Monday of an ISO week ``YYYY-Www``."""
    year, number = week.split("-W")
    return date.fromisocalendar(int(year), int(number), 1)


def by_week(pairs: Iterable[tuple[datetime, T]]) -> dict[str, list[T]]:
    """Group ``(when, value)`` pairs by the ISO week of ``when``."""
    out: dict[str, list[T]] = {}
    for when, value in pairs:
        out.setdefault(iso_week(when), []).append(value)
    return out


# --- the size of one correction -----------------------------------------------------------------


def correction_size(predicted: np.ndarray, reviewed: np.ndarray) -> tuple[float, int]:
    """``(dice, voxels_changed)`` between a predicted label volume and its reviewed version.

    The Dice counts every foreground class together: 2·(voxels with the same non-zero label in
    both) / (non-zero voxels of one + of the other); 1.0 when both are empty. ``voxels_changed``
    is the number of voxels whose label differs.
    """
    if predicted.shape != reviewed.shape:
        raise ValueError(f"shapes differ: prediction {predicted.shape}, reviewed {reviewed.shape}")
    same = predicted == reviewed
    agree = int(np.count_nonzero(same & (predicted != 0)))
    total = int(np.count_nonzero(predicted)) + int(np.count_nonzero(reviewed))
    dice = 1.0 if total == 0 else 2.0 * agree / total
    return dice, int(same.size - np.count_nonzero(same))


# --- the weekly metrics -------------------------------------------------------------------------


def decision_metric(session: Session, model_version_id: int) -> dict[str, dict[str, Any]]:
    """Accept / needs-edit / reject counts and rates: each prediction's latest study-level
    decision, in the week it was made."""
    rows = session.execute(
        select(Review.prediction_id, Review.status, Review.created_at)
        .join(Prediction, Review.prediction_id == Prediction.id)
        .where(
            Prediction.model_version_id == model_version_id,
            Review.class_id.is_(None),
            Review.status.in_(DECISIONS),
        )
        .order_by(Review.id)
    )
    latest: dict[int, tuple[datetime, ReviewStatus]] = {}
    for prediction_id, status, created_at in rows:
        latest[prediction_id] = (created_at, status)  # ordered by id: the last one wins
    out: dict[str, dict[str, Any]] = {}
    for week, statuses in by_week(latest.values()).items():
        n = len(statuses)
        row: dict[str, Any] = {"decisions": n}
        for status in DECISIONS:
            count = sum(1 for s in statuses if s == status)
            row[status.value] = count
            row[f"{status.value}_rate"] = count / n
        out[week] = row
    return out


def correction_metric(session: Session, model_version_id: int) -> dict[str, dict[str, Any]]:
    """Correction size: each prediction's latest correction, in the week it was saved."""
    rows = session.execute(
        select(
            CorrectionSize.prediction_id,
            CorrectionSize.dice,
            CorrectionSize.voxels_changed,
            LabelSet.created_at,
        )
        .join(LabelSet, CorrectionSize.label_set_id == LabelSet.id)
        .join(Prediction, CorrectionSize.prediction_id == Prediction.id)
        .where(Prediction.model_version_id == model_version_id)
        .order_by(LabelSet.id)
    )
    latest: dict[int, tuple[datetime, tuple[float, int]]] = {}
    for prediction_id, dice, changed, created_at in rows:
        latest[prediction_id] = (created_at, (dice, changed))
    return {
        week: {
            "corrections": len(sizes),
            "dice_mean": float(np.mean([d for d, _ in sizes])),
            "voxels_changed_mean": float(np.mean([c for _, c in sizes])),
            "dice": [d for d, _ in sizes],
        }
        for week, sizes in by_week(latest.values()).items()
    }


def agreement_metric(session: Session, model_version_id: int) -> dict[str, dict[str, Any]]:
    """Readers' agreement: each multi-reader case of the version's predictions with a current
    agreement report counts once, in the week the report was computed: ``read_cases`` and
    ``reader_dice_mean``, the mean over cases of the mean pairwise Dice between the readers
    (over the classes any reader or the prediction marked)."""
    rows = session.execute(
        select(ReadingCase.agreement)
        .join(Prediction, ReadingCase.prediction_id == Prediction.id)
        .where(Prediction.model_version_id == model_version_id)
        .where(ReadingCase.agreement.is_not(None))
    )
    per_case: list[tuple[datetime, float]] = []
    for (report,) in rows:
        values = [
            c["mean_pairwise_dice"]
            for c in (report.get("per_class") or {}).values()
            if c.get("mean_pairwise_dice") is not None
        ]
        if values and report.get("computed_at"):
            when = datetime.fromisoformat(report["computed_at"])
            per_case.append((when, float(np.mean(values))))
    return {
        week: {"read_cases": len(means), "reader_dice_mean": float(np.mean(means))}
        for week, means in by_week(per_case).items()
    }


def priority_metric(session: Session, model_version_id: int) -> dict[str, dict[str, Any]]:
    """The review priority's distribution (:mod:`radseg.imaging.review_priority`): the version's
    scored predictions in the week they were made, ``scored``, ``priority_median`` and
    ``priority_p90`` (a rising tail: the model doubts more often)."""
    rows = session.execute(
        select(Prediction.created_at, Prediction.priority).where(
            Prediction.model_version_id == model_version_id, Prediction.priority.is_not(None)
        )
    )
    scored = ((when, float(priority or 0.0)) for when, priority in rows)
    return {
        week: {
            "scored": len(values),
            "priority_median": float(np.median(values)),
            "priority_p90": float(np.percentile(values, 90)),
        }
        for week, values in by_week(scored).items()
    }


@dataclass(frozen=True)
class Column:
    """A column of the weekly table as the page and the CLI show it: the row's ``key``, a
    heading, and a format spec (``"d"``, ``".3f"``, ``".0%"``)."""

    key: str
    label: str
    spec: str

    def cell(self, row: dict[str, Any]) -> str:
        """The row's value, formatted; ``-`` when the week has none."""
        value = row.get(self.key)
        return "-" if value is None else format(value, self.spec)


#: every weekly metric with the columns it shows, in order (a new metric: one function and its
#: columns here)
WEEKLY_METRICS: tuple[tuple[WeeklyMetric, tuple[Column, ...]], ...] = (
    (
        decision_metric,
        (
            Column("decisions", "decisions", "d"),
            Column("accepted_rate", "accepted", ".0%"),
            Column("needs_edit_rate", "needs edit", ".0%"),
            Column("rejected_rate", "rejected", ".0%"),
        ),
    ),
    (
        correction_metric,
        (
            Column("corrections", "corrections", "d"),
            Column("dice_mean", "mean Dice", ".3f"),
            Column("voxels_changed_mean", "voxels changed", ".0f"),
        ),
    ),
    (
        priority_metric,
        (
            Column("priority_median", "median priority", ".2f"),
            Column("priority_p90", "90th pct priority", ".2f"),
        ),
    ),
    (
        agreement_metric,
        (
            Column("read_cases", "multi-reader cases", "d"),
            Column("reader_dice_mean", "readers' Dice", ".3f"),
        ),
    ),
)


def table_columns(
    metrics: Iterable[tuple[WeeklyMetric, tuple[Column, ...]]] = WEEKLY_METRICS,
) -> list[Column]:
    """The columns of the weekly table after the week, in order."""
    return [column for _, columns in metrics for column in columns]


def weekly_table(
    session: Session,
    model_version_id: int,
    metrics: Iterable[tuple[WeeklyMetric, tuple[Column, ...]]] = WEEKLY_METRICS,
) -> list[dict[str, Any]]:
    """One row per ISO week with any observation, oldest first: ``week``, ``start`` (its
    Monday, ISO date) and every metric's columns (a metric with nothing that week adds none)."""
    rows: dict[str, dict[str, Any]] = {}
    for metric, _ in metrics:
        for week, columns in metric(session, model_version_id).items():
            rows.setdefault(week, {"week": week, "start": week_start(week).isoformat()})
            rows[week].update(columns)
    return [rows[week] for week in sorted(rows, key=week_start)]


# --- control charts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartPoint:
    week: str
    value: float
    n: int
    #: the limit on the bad side for this week (``None`` until the baseline is complete)
    limit: float | None
    baseline: bool
    flagged: bool


@dataclass(frozen=True)
class Chart:
    name: str
    #: what the value is, and which side of the limit is bad ("above" or "below")
    label: str
    bad_side: str
    center: float | None
    sigma: float | None
    baseline_weeks: list[str]
    points: list[ChartPoint] = field(default_factory=list)
    #: why there are no limits yet ("" when there are)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _baseline(weeks: list[str], counts: list[int], first: int, least: int) -> int:
    """How many of the first weeks form the baseline; 0 when all of them together are still
    too few observations."""
    total = 0
    for i, count in enumerate(counts):
        total += count
        if i + 1 >= first and total >= least:
            return i + 1
    return 0


def p_chart(
    weeks: list[str], rejected: list[int], decided: list[int], *, first: int, least: int
) -> Chart:
    """The reject rate's p-chart (see the module's docstring for the rule)."""
    label, bad = "reject rate", "above"
    size = _baseline(weeks, decided, first, least)
    if not size:
        note = f"the baseline needs {least} decisions over at least {first} weeks"
        points = [
            ChartPoint(w, r / n, n, None, True, False)
            for w, r, n in zip(weeks, rejected, decided, strict=True)
        ]
        return Chart("reject_rate", label, bad, None, None, [], points, note)
    p = sum(rejected[:size]) / sum(decided[:size])
    points = []
    for i, (week, r, n) in enumerate(zip(weeks, rejected, decided, strict=True)):
        upper = min(1.0, p + SIGMAS * math.sqrt(p * (1 - p) / n))
        value = r / n
        points.append(ChartPoint(week, value, n, upper, i < size, i >= size and value > upper))
    return Chart("reject_rate", label, bad, p, math.sqrt(p * (1 - p)), weeks[:size], points)


def mean_chart(weeks: list[str], values: list[list[float]], *, first: int, least: int) -> Chart:
    """The correction Dice's x̄-chart (see the module's docstring for the rule)."""
    label, bad = "mean correction Dice", "below"
    counts = [len(v) for v in values]
    size = _baseline(weeks, counts, first, max(least, 2))
    if not size:
        note = f"the baseline needs {max(least, 2)} corrections over at least {first} weeks"
        points = [
            ChartPoint(w, float(np.mean(v)), len(v), None, True, False)
            for w, v in zip(weeks, values, strict=True)
        ]
        return Chart("correction_dice", label, bad, None, None, [], points, note)
    base = [x for v in values[:size] for x in v]
    mu, sigma = float(np.mean(base)), float(np.std(base, ddof=1))
    points = []
    for i, (week, v) in enumerate(zip(weeks, values, strict=True)):
        lower = max(0.0, mu - SIGMAS * sigma / math.sqrt(len(v)))
        value = float(np.mean(v))
        points.append(ChartPoint(week, value, len(v), lower, i < size, i >= size and value < lower))
    return Chart("correction_dice", label, bad, mu, sigma, weeks[:size], points)


def control_charts(
    table: list[dict[str, Any]], *, baseline_weeks: int, baseline_min: int
) -> dict[str, Chart]:
    """The reject-rate and correction-Dice charts of a :func:`weekly_table`."""
    decided = [row for row in table if row.get("decisions")]
    corrected = [row for row in table if row.get("corrections")]
    return {
        "reject_rate": p_chart(
            [r["week"] for r in decided],
            [r["rejected"] for r in decided],
            [r["decisions"] for r in decided],
            first=baseline_weeks,
            least=baseline_min,
        ),
        "correction_dice": mean_chart(
            [r["week"] for r in corrected],
            [r["dice"] for r in corrected],
            first=baseline_weeks,
            least=baseline_min,
        ),
    }


def alert_message(model: str, version_id: int, chart: Chart, point: ChartPoint) -> str:
    """``fpn v3: reject rate 0.450 in 2026-W49 (n=20) is above its limit 0.312 (centre
    0.100 from 2026-W40..2026-W43)``."""
    weeks = chart.baseline_weeks
    span = weeks[0] if len(weeks) == 1 else f"{weeks[0]}..{weeks[-1]}"
    return (
        f"{model} version {version_id}: {chart.label} {point.value:.3f} in {point.week} "
        f"(n={point.n}) is {chart.bad_side} its limit {point.limit:.3f} "
        f"(centre {chart.center:.3f} from {span})"
    )


def recorded_alerts(session: Session, model_version_id: int) -> list[QualityAlert]:
    """The alerts recorded for a model version, oldest first."""
    return list(
        session.scalars(
            select(QualityAlert)
            .where(QualityAlert.model_version_id == model_version_id)
            .order_by(QualityAlert.id)
        )
    )


def alert_to_dict(alert: QualityAlert, model: str) -> dict[str, Any]:
    """An alert as the hook, the JSON API and the CLI give it."""
    return {
        "id": alert.id,
        "model": model,
        "model_version_id": alert.model_version_id,
        "chart": alert.chart,
        "week": alert.week,
        "value": alert.value,
        "center": alert.center,
        "limit": alert.limit,
        "n": alert.n,
        "message": alert.message,
        "created_at": alert.created_at.isoformat(),
    }
