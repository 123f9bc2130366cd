"""Agreement benchmark: what the ``agreement`` job costs against pairwise Dice alone.

    .venv/bin/python -m tests.bench.agreement [--readers 3] [--sizes 64x256x256,128x512x512]

Three synthetic readers of a volume with three ellipsoid "organs", each reader's mask the
reference shifted by up to 3 voxels on each axis. Times, in one process: pairwise Dice between
the readers (numpy, :func:`radseg.metrics.dice_per_class`: the baseline), and
:func:`radseg.imaging.agreement.agreement` (pairwise Dice, Dice against the prediction and the
consensus, binary STAPLE per class, multi-label STAPLE, majority vote), with its parts. Prints a
Markdown table with wall and CPU seconds and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import platform as stdlib_platform
import time
from collections.abc import Callable

import numpy as np

from radseg.imaging.agreement import agreement, binary_staple, majority_vote, staple_consensus
from radseg.metrics import dice_per_class


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def _readers(
    shape: tuple[int, int, int], n: int, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    z, y, x = shape
    zz, yy, xx = np.ogrid[:z, :y, :x]
    reference = np.zeros(shape, np.uint8)
    organs = [
        (z / 2, y / 3, x / 3, y / 6),
        (z / 2, 2 * y / 3, 2 * x / 3, y / 5),
        (z / 3, y / 2, x / 2, y / 8),
    ]
    for c, (cz, cy, cx, r) in enumerate(organs, 1):
        reference[((zz - cz) * 4) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = c
    rng = np.random.default_rng(seed)
    masks = [np.roll(reference, tuple(rng.integers(-3, 4, 3)), axis=(0, 1, 2)) for _ in range(n)]
    return reference, masks


def _cell(t: tuple[float, float]) -> str:
    return f"{t[0]:.2f} s ({t[1]:.2f} s CPU)"


def bench_size(size: str, readers: int) -> str:
    """One table row: the volume ``size`` (``ZxYxX``) read by ``readers`` readers."""
    z, y, x = (int(v) for v in size.split("x"))
    reference, masks = _readers((z, y, x), readers)
    names = [f"r{i}" for i in range(len(masks))]

    def pairwise() -> None:
        for a in range(len(masks)):
            for b in range(a + 1, len(masks)):
                dice_per_class(masks[a], masks[b], [1, 2, 3])

    voted = majority_vote(masks)
    base = _timed(pairwise)
    majority = _timed(lambda: majority_vote(masks))
    staple = _timed(lambda: staple_consensus(masks, voted))
    binary = _timed(lambda: [binary_staple([m == c for m in masks]) for c in (1, 2, 3)])
    whole = _timed(lambda: agreement(names, masks, reference, [1, 2, 3]))
    return (
        f"| {size} | {len(masks)} | {_cell(base)} | {_cell(majority)} | {_cell(staple)} | "
        f"{_cell(binary)} | {_cell(whole)} | {whole[0] / base[0]:.0f}× |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--readers", type=int, default=3)
    parser.add_argument("--sizes", default="64x256x256,128x512x512")
    args = parser.parse_args()
    print(f"machine: {stdlib_platform.node()} · {os.cpu_count()} CPUs · load {os.getloadavg()}")
    print()
    print(
        "| volume (z×y×x) | readers | pairwise Dice (baseline) | majority vote | "
        "multi-label STAPLE | binary STAPLE ×3 | agreement() in all | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        print(bench_size(size, args.readers))


if __name__ == "__main__":
    main()
