"""``make bench``: time radseg against a baseline in the same run and print the ratios.

Results go to stdout as a Markdown table; docs/benchmarks.md keeps the runs we report, with the
machine and the command. Sizes are real-scale (a 300-slice 512² CT), so this takes minutes.
"""

from __future__ import annotations

import argparse
import os
import platform as stdlib_platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import SimpleITK as sitk

from radseg.core import create_platform
from radseg.db.migrate import upgrade
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.settings import load_settings
from radseg.workflows.datasets import build_version
from radseg.workflows.ingest import ingest


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_ingest(slices: int, size: int, work: Path) -> list[tuple[str, float, str]]:
    study = write_synthetic_ct(work / "study", seed=1, shape=(slices, size, size))

    def sitk_read() -> None:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(study.dicom_dir)))
        sitk.GetArrayFromImage(reader.Execute())

    baseline = min(_timed(sitk_read) for _ in range(2))
    settings = load_settings({"home": work / "home"}, environ={})
    platform = create_platform(settings)
    upgrade(platform.engine)
    platform.refresh_plugins()

    def run_ingest() -> None:
        with platform.sessions.begin() as session:
            ingest(platform, session, study.dicom_dir, labels=study.label_path, dataset="bench")

    def run_build() -> None:
        with platform.sessions.begin() as session:
            build_version(platform, session, "bench")

    t_ingest = _timed(run_ingest)
    t_build = _timed(run_build)
    platform.close()
    rows = [
        ("SimpleITK ImageSeriesReader (baseline)", baseline, "1.00×"),
        (
            "radseg ingest (read, de-identify, HU cache, labels, rows)",
            t_ingest,
            f"{t_ingest / baseline:.2f}× baseline",
        ),
        (
            "radseg dataset build (channels, PNGs, RLE, JSON)",
            t_build,
            f"{t_build / baseline:.2f}× baseline",
        ),
    ]
    return [(name, t, f"{slices / t:.0f} slices/s, {ratio}") for name, t, ratio in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_ingest(args.slices, args.size, Path(tmp))
    print(
        f"\n### Ingest of a {args.slices}-slice {args.size}² CT series "
        "with a 5-class label volume\n"
    )
    print(
        f"machine: {stdlib_platform.processor() or stdlib_platform.machine()}, "
        f"{os.cpu_count()} cores; command: make bench\n"
    )
    print("| step | seconds | throughput and ratio |\n|---|---|---|")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds:.2f} | {note} |")


if __name__ == "__main__":
    main()
