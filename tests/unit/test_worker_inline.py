"""The size of a worker's inline batches follows how long its jobs take."""

from __future__ import annotations

from radseg.jobs.worker import INLINE_BATCH_SECONDS, inline_limit


def test_batches_of_millisecond_jobs_double_up_to_the_most() -> None:
    limits = [1]
    while len(limits) < 10:
        limits.append(inline_limit(limits[-1], limits[-1], 0.001 * limits[-1], 50))
    assert limits == [1, 2, 4, 8, 16, 32, 50, 50, 50, 50]


def test_slow_inline_jobs_are_claimed_a_few_at_a_time() -> None:
    # predictions of 0.1 s: the batch takes about INLINE_BATCH_SECONDS, not 50 × 0.1 s, so that
    # the other workers on the queue get their share at once
    assert inline_limit(8, 8, 0.8, 50) == int(INLINE_BATCH_SECONDS / 0.1)
    assert inline_limit(2, 2, 4.0, 50) == 1  # 2 s each: one at a time
    assert inline_limit(1, 1, 0.0, 50) == 2  # too quick to time: grow, but only by doubling
    assert inline_limit(50, 0, 0.0, 50) == 50
