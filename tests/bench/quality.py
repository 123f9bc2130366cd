"""Quality over time: what caching the correction sizes costs a save, and what the quality
section costs a model page, on SQLite.

    .venv/bin/python -m tests.bench.quality --slices 64 --size 512 --weeks 26 --per-week 200

(1) Saving a correction of a ``slices`` × ``size``² prediction, as ``save_correction`` does now
(Dice and voxels changed computed from the arrays in memory; a correction of a correction reads
the prediction's mask again), against the same save with the size computation switched off, in
the same run (the baseline). (2) ``version_quality`` (the weekly table, both charts, the alerts:
what the page, the API and the CLI read) for a version with ``weeks`` × ``per-week`` decisions
and a fifth as many corrections, against the model card the page read before (the baseline).
Each time is the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from radseg import model_registry
from radseg.contracts import Geometry
from radseg.core import Platform, create_platform
from radseg.db.migrate import upgrade
from radseg.db.models import (
    CorrectionSize,
    LabelSet,
    ModelVersion,
    Prediction,
    Review,
    ReviewStatus,
    Role,
    User,
)
from radseg.roles import Actor
from radseg.settings import load_settings
from radseg.workflows import corrections
from radseg.workflows.quality import version_quality
from tests.support import add_series_with_prediction

ACTOR = Actor("bench", Role.CLINICIAN)


def _median(func: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _platform(work: Path) -> tuple[Platform, int]:
    platform = create_platform(load_settings({"home": work / "home"}, environ={}), autoload=False)
    upgrade(platform.engine)
    platform.ensure_home()
    with platform.sessions.begin() as session:
        session.add(User(username="bench", password_hash="-", role=Role.CLINICIAN))
    return platform, 0


def bench_save(platform: Platform, slices: int, size: int, repeat: int) -> dict[str, float]:
    shape = (slices, size, size)
    mask = np.zeros(shape, np.uint8)
    mask[:, size // 4 : size // 2, size // 4 : size // 2] = 1
    geometry = Geometry(
        (size, size, slices), (0.7, 0.7, 2.5), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    )
    with platform.sessions.begin() as session:
        prediction = add_series_with_prediction(
            session, platform, hu=np.zeros(shape, np.float32), mask=mask, geometry=geometry,
            classes=[{"id": 1, "name": "liver", "color": "#ff0000"}],
        )  # fmt: skip
        prediction_id = prediction.id
    stroke = [{"z": slices // 2, "class_id": 1, "radius": 5, "points": [[10.5, 10.5], [60, 60]]}]

    def save(base: int | None = None) -> int:
        saved = corrections.save_correction(
            platform, ACTOR, prediction_id, strokes=stroke, base_label_set=base
        )
        return saved.id

    first = save()
    cached = _median(save, repeat)
    on_correction = _median(lambda: save(first), repeat)
    with mock.patch.object(corrections, "_cache_size", lambda *a, **k: None):
        baseline = _median(save, repeat)
        baseline_on_correction = _median(lambda: save(first), repeat)
    return {
        "save (baseline: no size)": baseline,
        "save (size cached)": cached,
        "save on a correction (baseline: no size)": baseline_on_correction,
        "save on a correction (size cached)": on_correction,
    }


def bench_read(platform: Platform, weeks: int, per_week: int, repeat: int) -> dict[str, float]:
    with platform.sessions.begin() as session:
        version = session.query(ModelVersion).first()
        assert version is not None
        model_version_id, series_id = version.id, session.query(Prediction).first().series_id  # type: ignore[union-attr]
        reviewer = session.query(User).one().id
        start = datetime.now(UTC) - timedelta(weeks=weeks)
        rng = np.random.default_rng(0)
        statuses = list(ReviewStatus)[1:]
        for week in range(weeks):
            for i in range(per_week):
                when = start + timedelta(weeks=week, minutes=i)
                prediction = Prediction(
                    series_id=series_id, model_version_id=model_version_id, mask_path="-"
                )
                session.add(prediction)
                session.flush()
                session.add(
                    Review(
                        prediction_id=prediction.id,
                        reviewer_id=reviewer,
                        status=statuses[int(rng.integers(3))],
                        created_at=when,
                    )
                )
                if i % 5 == 0:
                    label_set = LabelSet(
                        series_id=series_id, source="review", version=10_000 + week * per_week + i,
                        classes=[], path="-", prediction_id=prediction.id, created_at=when,
                    )  # fmt: skip
                    session.add(label_set)
                    session.flush()
                    session.add(
                        CorrectionSize(
                            label_set_id=label_set.id,
                            prediction_id=prediction.id,
                            dice=float(rng.uniform(0.7, 1.0)),
                            voxels_changed=int(rng.integers(0, 5000)),
                        )
                    )

    def card() -> None:
        with platform.sessions() as session:
            model_registry.model_card(
                session, model_registry.get_version(session, model_version_id)
            )

    def quality() -> None:
        with platform.sessions() as session:
            version_quality(session, platform.settings, session.get(ModelVersion, model_version_id))  # type: ignore[arg-type]

    return {
        "model card (baseline)": _median(card, repeat),
        "version_quality": _median(quality, repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--weeks", type=int, default=26)
    parser.add_argument("--per-week", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="radseg-bench-quality-") as tmp:
        platform, _ = _platform(Path(tmp))
        try:
            saves = bench_save(platform, args.slices, args.size, args.repeat)
            reads = bench_read(platform, args.weeks, args.per_week, args.repeat)
        finally:
            platform.close()
    print(f"correction saves, {args.slices} x {args.size}² volume, median of {args.repeat}:")
    for key in ("save", "save on a correction"):
        base, cached = saves[f"{key} (baseline: no size)"], saves[f"{key} (size cached)"]
        print(
            f"  {key:<22} baseline {base:.3f} s, with the size {cached:.3f} s: {cached / base:.2f}×"
        )
    decisions = args.weeks * args.per_week
    base, cost = reads["model card (baseline)"], reads["version_quality"]
    print(
        f"quality read, {decisions} decisions and {decisions // 5} corrections over {args.weeks} "
        f"weeks: {cost * 1000:.1f} ms; the model card (baseline) {base * 1000:.1f} ms: "
        f"{cost / base:.1f}×"
    )


if __name__ == "__main__":
    main()
