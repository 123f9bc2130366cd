"""Server CPU of the viewer tools (issue 15): the overlay modes and a region measurement.

``python -m tests.bench.viewer_tools [--size 512] [--repeats 60]``

A 512² slice of a synthetic label map (a body of three classes with a few lesions) is drawn and
PNG-encoded as the overlay endpoints do it on an image-cache miss: ``fill`` (what the viewer drew
before, the baseline in the same run), ``outline`` and ``difference`` (against labels that differ
from the prediction by a one-voxel shift and a missed lesion). A large ellipse's HU statistics
(about 40,000 voxels) are computed as ``POST /api/predictions/<id>/measurements`` does it, from a
slice of the HU volume in memory. Goals: each mode ≤ 20 ms at p95 (the issue's goal for a first
axial render) and ≤ 2× fill; the measurement ≤ 20 ms at p95.
"""

from __future__ import annotations

import argparse
import os
import platform as stdlib_platform
import time
from collections.abc import Callable

import numpy as np

from radseg.imaging.legend import legend
from radseg.imaging.measure import ellipse_mask, region_stats
from radseg.web import render
from tests.bench.summary import record

P95_GOAL_MS = 20.0
RATIO_GOAL = 2.0


def phantom(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A predicted label slice and its reference: discs of classes 1-3 and small lesions."""
    yy, xx = np.mgrid[:size, :size] / size
    predicted = np.zeros((size, size), np.uint8)
    predicted[(yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.16] = 1
    predicted[(yy - 0.45) ** 2 / 0.6 + (xx - 0.35) ** 2 < 0.01] = 2
    predicted[(yy - 0.5) ** 2 + (xx - 0.68) ** 2 < 0.008] = 3
    rng = np.random.default_rng(15)
    for cy, cx in rng.uniform(0.3, 0.7, (8, 2)):
        predicted[(yy - cy) ** 2 + (xx - cx) ** 2 < 0.0004] = 3
    reference = np.roll(predicted, 1, axis=1)
    reference[(yy - 0.5) ** 2 + (xx - 0.3) ** 2 < 0.001] = 3  # a lesion the prediction missed
    return predicted, reference


def timed_ms(fn: Callable[[], object], repeats: int) -> np.ndarray:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        out.append((time.process_time() - start) * 1000)
    return np.asarray(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()

    predicted, reference = phantom(args.size)
    entries = tuple(legend([{"id": i, "name": f"class {i}"} for i in (1, 2, 3)]))
    hu = np.random.default_rng(1).normal(40, 30, predicted.shape).astype(np.float32)
    spacing = (0.7, 0.7)
    box = ((args.size * 0.25, args.size * 0.3), (args.size * 0.65, args.size * 0.7))
    cases: dict[str, Callable[[], object]] = {
        "fill": lambda: render.png_bytes(render.labels_to_rgba(predicted, entries)),
        "outline": lambda: render.png_bytes(render.labels_to_outline_rgba(predicted, entries)),
        "difference": lambda: render.png_bytes(render.difference_to_rgba(predicted, reference)),
        "ellipse statistics": lambda: region_stats(hu, ellipse_mask(hu.shape, *box), spacing),
    }
    results = {name: timed_ms(fn, args.repeats) for name, fn in cases.items()}
    fill_p95 = float(np.percentile(results["fill"], 95))
    voxels = int(ellipse_mask(hu.shape, *box).sum())

    print(
        f"\n{args.size}² slice, {args.repeats} runs each, CPU ms of this process; "
        f"{stdlib_platform.processor() or stdlib_platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; the ellipse holds {voxels} voxels\n"
    )
    print("| what | p50 ms | p95 ms | vs fill (p95) | p95 ≤ 20 ms |")
    print("|---|---:|---:|---:|:---:|")
    for name, ms in results.items():
        p50, p95 = float(np.percentile(ms, 50)), float(np.percentile(ms, 95))
        ratio = f"{p95 / fill_p95:.2f}×" if name != "ellipse statistics" else "–"
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {ratio} | {'yes' if p95 <= 20 else 'no'} |")
        if name == "fill":
            continue
        met = p95 <= P95_GOAL_MS
        goal = f"≤ {P95_GOAL_MS:g} ms"
        if name != "ellipse statistics":
            met = met and p95 / fill_p95 <= RATIO_GOAL
            goal += f", ≤ {RATIO_GOAL:g}× fill"
        record(f"viewer_tools: {name} of a {args.size}² slice p95", goal, f"{p95:.1f} ms", met)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
