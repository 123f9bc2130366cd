"""Inference at scale: ``predict --all-series`` shared by 1, 2 and 4 worker processes.

    .venv/bin/python -m tests.bench.predict_scale [--series 300] [--workers 1,2,4] [--rounds 2]

For each worker count, on a fresh PostgreSQL schema: ``--series`` tiny CT series (2×4×4 voxels,
each its own study) and a model version of the test plugin's ``threshold`` backend are made;
:func:`~radseg.workflows.prediction.request_predictions` (what ``radseg predict --all-series``
calls) queues a job per series; then the workers start together (``radseg worker``'s
:class:`~radseg.jobs.worker.Worker`, ``predict`` inline, burst mode) and run until the queue is
empty. Throughput is predictions per second from the start signal to the last job's
``finished_at``; the counts are measured in turn, ``--rounds`` times (every other round in
reverse order, so a change in the machine's load falls on all of them), and each count's median
is shown as a ratio against 1 worker's median of the same run. Every
prediction is the real workflow: read the series' volume, make the channels, write the mask
file and the Prediction row, complete the job with its events; the model itself takes
microseconds, so this measures what the platform adds per series, which is what more workers
spread.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tests.bench.jobs import _drop_schema, _pg_schema_url, _radseg_settings
from tests.bench.summary import machine, record


def _worker(settings_data: dict[str, Any], ready: Any, go: Any) -> None:
    from radseg.core import create_platform
    from radseg.jobs.worker import Worker
    from radseg.settings import Settings
    from tests.jobs_plugin import with_jobs_plugin

    platform = create_platform(with_jobs_plugin(Settings(**settings_data)), autoload=False)
    worker = Worker(platform, burst=True, inline_kinds=["predict"], concurrency=0)
    ready.release()
    go.wait()
    worker.run()
    platform.close()


def throughput(workers: int, n_series: int) -> tuple[float, Counter[str]]:
    """Predictions per second with ``workers`` processes, and how many each claimed."""
    from radseg.core import create_platform
    from radseg.db.migrate import upgrade
    from radseg.db.models import Job, JobEvent, JobState, Prediction
    from radseg.roles import CLI_ACTOR
    from radseg.settings import Settings
    from radseg.workflows.prediction import request_predictions
    from tests.jobs_plugin import add_threshold_series, with_jobs_plugin

    url, schema = _pg_schema_url()
    try:
        with tempfile.TemporaryDirectory() as home:
            data = _radseg_settings(url, Path(home))
            settings = with_jobs_plugin(Settings(**data))
            platform = create_platform(settings, autoload=False)
            upgrade(platform.engine)
            platform.ensure_home()
            version_id, _ = add_threshold_series(platform, n_series)
            request_predictions(platform, CLI_ACTOR, model_version_id=version_id, all_series=True)
            ctx = mp.get_context("spawn")
            ready, go = ctx.Semaphore(0), ctx.Event()
            procs = [ctx.Process(target=_worker, args=(data, ready, go)) for _ in range(workers)]
            for proc in procs:
                proc.start()
            for _ in procs:
                ready.acquire()
            began = datetime.now(UTC)
            go.set()
            for proc in procs:
                proc.join()
            with platform.sessions() as session:
                left = session.scalar(
                    select(func.count()).select_from(Job).where(Job.state != JobState.SUCCEEDED)
                )
                made = session.scalar(select(func.count()).select_from(Prediction))
                end = session.scalar(select(func.max(Job.finished_at)))
                claims = Counter(
                    session.scalars(select(JobEvent.actor).where(JobEvent.to_state == "running"))
                )
            platform.close()
    finally:
        _drop_schema(schema)
    assert left == 0 and made == n_series, f"{left} jobs not done, {made} predictions"
    assert end is not None
    return n_series / (end - began).total_seconds(), claims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=300)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    started = time.perf_counter()
    rates: dict[int, list[float]] = {n: [] for n in counts}
    shares: dict[int, str] = {}
    for round_ in range(args.rounds):
        for n in counts if round_ % 2 == 0 else counts[::-1]:
            rate, claims = throughput(n, args.series)
            rates[n].append(rate)
            shares[n] = "/".join(str(c) for c in sorted(claims.values(), reverse=True))
            print(
                f"round {round_ + 1}, {n} worker(s): {rate:.1f} predictions/s; claims {shares[n]}"
            )
    base = statistics.median(rates[counts[0]])
    rows = [
        (n, statistics.median(rates[n]), statistics.median(rates[n]) / base, shares[n])
        for n in counts
    ]
    print()
    print(f"{args.series} predictions (`--all-series`), PostgreSQL, threshold model, inline")
    print()
    print(f"median of {args.rounds} round(s); jobs per worker: the last round's claims")
    print()
    print("| workers | predictions/s | ratio to 1 worker | jobs per worker |")
    print("|---|---|---|---|")
    for n, rate, ratio, share in rows:
        print(f"| {n} | {rate:.1f} | {ratio:.2f}× | {share} |")
    print()
    print(f"machine: {machine()}; {time.perf_counter() - started:.0f} s in all")
    for n, _, ratio, _ in rows:
        if n > 1:
            record(
                f"predict --all-series, {n} workers vs 1 (throughput)",
                "> 1× (with cores to spare)",
                ratio,
                ratio > 1.0,
            )


if __name__ == "__main__":
    main()
