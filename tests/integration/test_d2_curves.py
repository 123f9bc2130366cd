"""The training curves read from the ``metrics.json`` detectron2 itself writes: its
``JSONWriter`` fed by an ``EventStorage`` as a trainer feeds them, across a resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radseg.web.curves import SMOOTHING, training_curves
from tests.integration.d2_fixtures import require_detectron2

PERIOD = 20  # detectron2's PeriodicWriter default, and JSONWriter's median window


def _loss(iteration: int) -> float:
    return 3.0 / (1 + iteration / 10) + 0.05 * (iteration % 3)


def _run(metrics: Path, start: int, stop: int, shift: float = 0.0) -> None:
    """Iterations ``start`` .. ``stop - 1`` as DefaultTrainer logs them: a scalar per step, the
    writers every ``PERIOD`` iterations (a resumed run appends to the same file). ``shift``: a
    resumed run sees other batches, so its losses differ from the first run's."""
    from detectron2.utils.events import EventStorage, JSONWriter

    writer = JSONWriter(str(metrics), window_size=PERIOD)
    with EventStorage(start) as storage:
        for iteration in range(start, stop):
            storage.iter = iteration
            loss = _loss(iteration) + shift
            storage.put_scalars(total_loss=loss, loss_sem_seg=loss / 2)
            storage.put_scalar("lr", 0.01, smoothing_hint=False)
            if (iteration + 1) % PERIOD == 0:
                writer.write()
    writer.close()


def test_curves_from_detectron2s_json_writer_across_a_resume(tmp_path: Path) -> None:
    require_detectron2()
    metrics = tmp_path / "metrics.json"
    _run(metrics, 0, 60)  # logged at 19, 39, 59; the last checkpoint was at 40
    _run(metrics, 40, 80, shift=0.25)  # resumed there: 59 again, and 79
    assert [int(line.split('"iteration": ')[1].split(",")[0]) for line in metrics.open()] == [
        19,
        39,
        59,
        59,
        79,
    ]
    validations = [
        {"iteration": i, "mean_dice": i / 100, "dice": {"disc": i / 90, "square": i / 110}}
        for i in (20, 40, 60, 80)
    ]
    curves = training_curves(metrics, validations)

    raw = curves["loss"]["raw"]
    assert [p[0] for p in raw] == [19.0, 39.0, 59.0, 79.0]  # distinct, increasing
    # each value is detectron2's median of the 20 iterations before it; at 59 the resumed run's
    windows = {19: (0, 0.0), 39: (20, 0.0), 59: (40, 0.25), 79: (60, 0.25)}
    expected = [
        float(np.median([_loss(i) + shift for i in range(first, first + PERIOD)]))
        for first, shift in windows.values()
    ]
    assert [p[1] for p in raw] == pytest.approx(expected)

    # the moving average by hand: s_n = w s_(n-1) + (1 - w) y_n, over 1 - w^n
    w, running, by_hand = SMOOTHING, 0.0, []
    for n, y in enumerate(expected, start=1):
        running = w * running + (1 - w) * y
        by_hand.append(running / (1 - w**n))
    assert [p[1] for p in curves["loss"]["smoothed"]] == pytest.approx(by_hand)
    assert [p[0] for p in curves["loss"]["smoothed"]] == [19.0, 39.0, 59.0, 79.0]

    assert [p[0] for p in curves["dice"]["mean"]] == [20.0, 40.0, 60.0, 80.0]
    assert set(curves["dice"]["classes"]) == {"disc", "square"}
    assert curves["dice"]["classes"]["disc"][-1] == [80.0, pytest.approx(80 / 90)]
