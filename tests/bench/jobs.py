"""Job queue benchmark: radseg's job store against procrastinate on the same PostgreSQL.

    .venv/bin/python -m tests.bench.jobs [--jobs 4000] [--latency-jobs 100]

Measures, in one run:

- claim-and-complete throughput of no-op jobs with 1, 4 and 8 worker processes on PostgreSQL
  and 1 on SQLite: the queue is filled first, then the workers start together and run until it
  is empty (radseg: ``noop`` as an inline kind, claimed and completed in batches; every claim and
  completion still writes its JobEvent); procrastinate 3 (its own database, ``bench_procrastinate``)
  with an async no-op task, 1 worker process per radseg process, each with ``concurrency=10``
  (its way to more throughput per process; ``RADSEG_BENCH_PROCRASTINATE_CONCURRENCY``);
- submit-to-start latency with one idle worker each (p50/p95 over jobs submitted one at a time,
  radseg's and procrastinate's submits alternating, so both see the same load): from the
  client's clock just before ``submit``/``defer`` to the start recorded in the database
  (radseg's ``started_at``; procrastinate's ``started`` event), the same machine's clock; and
  the submit call alone (until it returned, committed).

Prints a Markdown table with the ratios radseg / procrastinate.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform as stdlib_platform
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text

from tests.bench.summary import record

POSTGRES = os.environ.get("RADSEG_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
PROCRASTINATE_DB = "bench_procrastinate"
#: procrastinate's own way to more throughput per process: an async task, several at once
PROCRASTINATE_CONCURRENCY = int(os.environ.get("RADSEG_BENCH_PROCRASTINATE_CONCURRENCY", "10"))


# -- radseg ------------------------------------------------------------------------------------


def _radseg_settings(url: str, home: Path, poll: float = 1.0) -> dict[str, Any]:
    from radseg.settings import load_settings

    return load_settings(
        {"home": home, "database_url": url, "poll_seconds": poll}, environ={}
    ).model_dump(mode="json")


def _radseg_worker(settings_data: dict[str, Any], ready: Any, go: Any, burst: bool) -> None:
    from radseg.core import create_platform
    from radseg.jobs.worker import Worker
    from radseg.settings import Settings
    from tests.jobs_plugin import with_jobs_plugin

    platform = create_platform(with_jobs_plugin(Settings(**settings_data)), autoload=False)
    worker = Worker(platform, burst=burst, inline_kinds=["noop"], concurrency=0)
    if not burst:
        worker.install_signal_handlers()
    ready.release()
    go.wait()
    worker.run()
    platform.close()


def _fresh_radseg(url: str, home: Path) -> Any:
    from radseg.core import create_platform
    from radseg.db.migrate import upgrade
    from radseg.settings import Settings

    platform = create_platform(Settings(**_radseg_settings(url, home)), autoload=False)
    upgrade(platform.engine)
    return platform


def _pg_schema_url() -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(f"{POSTGRES}/test")
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return f"{POSTGRES}/test?options=-csearch_path%3D{schema}", schema


def _drop_schema(schema: str) -> None:
    engine = create_engine(f"{POSTGRES}/test")
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def _start_all(target: Any, args: tuple[Any, ...], n: int) -> tuple[list[Any], Any]:
    ctx = mp.get_context("spawn")
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=target, args=(*args, ready, go, True)) for _ in range(n)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.acquire()
    return procs, go


def radseg_throughput(url: str, workers: int, n_jobs: int) -> float:
    from radseg.db.models import Job
    from radseg.jobs import store

    with tempfile.TemporaryDirectory() as home:
        platform = _fresh_radseg(url, Path(home))
        with platform.sessions.begin() as session:
            store.submit_many(session, "noop", [{}] * n_jobs)
        procs, go = _start_all(_radseg_worker, (_radseg_settings(url, Path(home)),), workers)
        began = datetime.now(UTC)
        go.set()
        for proc in procs:
            proc.join()
        with platform.engine.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM job WHERE state <> 'succeeded'")
            ).scalar()
            end = conn.execute(select(func.max(Job.finished_at))).scalar()
        platform.close()
    assert left == 0, f"{left} jobs not done"
    # until the last job finished: process start-up and exit are not the queue's work
    return n_jobs / (end - began).total_seconds()


def _since(asked: tuple[datetime, datetime], started: datetime) -> tuple[float, float]:
    """Seconds from the submit call, and from its return (committed), to the job's start."""
    return (started - asked[0]).total_seconds(), (started - asked[1]).total_seconds()


# -- procrastinate -----------------------------------------------------------------------------


def _procrastinate_app(conninfo: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app


def _procrastinate_worker(conninfo: str, ready: Any, go: Any, burst: bool) -> None:
    import logging

    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    app = _procrastinate_app(conninfo)
    ready.release()
    go.wait()
    app.run_worker(
        wait=not burst, concurrency=PROCRASTINATE_CONCURRENCY, install_signal_handlers=not burst
    )


def _procrastinate_conninfo() -> str:
    base = POSTGRES.replace("postgresql+psycopg://", "postgresql://")
    return f"{base}/{PROCRASTINATE_DB}"


def _fresh_procrastinate() -> str:
    host = POSTGRES.rsplit("@", 1)[-1].split(":")[0]
    subprocess.run(
        ["dropdb", "-h", host, "-U", "postgres", "--if-exists", PROCRASTINATE_DB], check=True
    )
    subprocess.run(["createdb", "-h", host, "-U", "postgres", PROCRASTINATE_DB], check=True)
    conninfo = _procrastinate_conninfo()
    app = _procrastinate_app(conninfo)
    with app.open():
        app.schema_manager.apply_schema()
    return conninfo


def procrastinate_throughput(workers: int, n_jobs: int) -> float:
    conninfo = _fresh_procrastinate()
    app = _procrastinate_app(conninfo)
    with app.open():
        task = app.tasks["noop"]
        for start in range(0, n_jobs, 1000):
            task.batch_defer(*([{}] * min(1000, n_jobs - start)))
    procs, go = _start_all(_procrastinate_worker, (conninfo,), workers)
    began = datetime.now(UTC)
    go.set()
    for proc in procs:
        proc.join()
    engine = create_engine(f"{POSTGRES}/{PROCRASTINATE_DB}")
    with engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'")
        ).scalar()
        end = conn.execute(
            text("SELECT max(at) FROM procrastinate_events WHERE type = 'succeeded'")
        ).scalar()
    engine.dispose()
    assert left == 0, f"{left} procrastinate jobs not done"
    return n_jobs / (end - began).total_seconds()


# -- latency: both systems in one loop --------------------------------------------------------


def latency(url: str, n_jobs: int, gap: float) -> tuple[list[Any], list[Any]]:
    """Submit-to-start latency of radseg and procrastinate, each with one idle worker, their
    submits alternating (one of each every ``2 × gap`` seconds), so that both see the same load
    of a shared machine and its disk (a commit's WAL flush is most of a submit)."""
    from radseg.db.models import Job
    from radseg.jobs import store

    conninfo = _fresh_procrastinate()
    app = _procrastinate_app(conninfo)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as home:
        platform = _fresh_radseg(url, Path(home))
        ready, go = ctx.Semaphore(0), ctx.Event()
        data = _radseg_settings(url, Path(home), poll=1.0)
        procs = [
            ctx.Process(target=_radseg_worker, args=(data, ready, go, False)),
            ctx.Process(target=_procrastinate_worker, args=(conninfo, ready, go, False)),
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.acquire()
        go.set()
        time.sleep(1.0)  # let them go idle (LISTEN)
        ours: dict[int, tuple[datetime, datetime]] = {}
        theirs: dict[int, tuple[datetime, datetime]] = {}
        with app.open():
            task = app.tasks["noop"]
            for _ in range(n_jobs):
                before = datetime.now(UTC)
                with platform.sessions.begin() as session:
                    job_id = store.submit(session, "noop", {}).id
                ours[job_id] = (before, datetime.now(UTC))
                time.sleep(gap)
                before = datetime.now(UTC)
                job_id = task.defer()
                theirs[job_id] = (before, datetime.now(UTC))
                time.sleep(gap)
        engine = create_engine(f"{POSTGRES}/{PROCRASTINATE_DB}")
        query = text("SELECT job_id, at FROM procrastinate_events WHERE type = 'started'")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with platform.sessions() as session:
                started = dict(
                    session.execute(select(Job.id, Job.started_at).where(Job.id.in_(ours))).all()
                )
            with engine.connect() as conn:
                their_started = {i: at for i, at in conn.execute(query) if i in theirs}
            if all(started.values()) and len(their_started) == len(theirs):
                break
            time.sleep(0.2)
        engine.dispose()
        for proc in procs:
            proc.terminate()
            proc.join()
        platform.close()
    return (
        [_since(ours[i], at) for i, at in started.items() if at],
        [_since(theirs[i], at) for i, at in their_started.items()],
    )


# -- report ------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4000, help="no-op jobs per throughput run")
    parser.add_argument("--latency-jobs", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between latency jobs")
    parser.add_argument("--workers", default="1,4,8")
    args = parser.parse_args()
    rows: list[tuple[str, str, str, str]] = []
    throughput: dict[int, float] = {}
    for n in [int(w) for w in args.workers.split(",") if w]:  # --workers "": latency only
        url, schema = _pg_schema_url()
        try:
            ours = radseg_throughput(url, n, args.jobs)
        finally:
            _drop_schema(schema)
        theirs = procrastinate_throughput(n, args.jobs)
        throughput[n] = ours
        rows.append(
            (
                f"throughput, PostgreSQL, {n} worker(s)",
                f"{ours:,.0f} jobs/s",
                f"{theirs:,.0f} jobs/s",
                f"{ours / theirs:.2f}×",
            )
        )
        print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = radseg_throughput(f"sqlite:///{tmp}/bench.db", 1, args.jobs)
    rows.append(("throughput, SQLite, 1 worker", f"{sqlite:,.0f} jobs/s", "n/a", ""))
    url, schema = _pg_schema_url()
    try:
        ours_lat, theirs_lat = latency(url, args.latency_jobs, args.gap)
    finally:
        _drop_schema(schema)
    # (from the submit call's return is no fair measure: radseg's session returns its connection
    # to the pool, a round trip, after the commit the worker has already seen)
    ratios: dict[str, float] = {}
    for label, q in (("p50", 0.5), ("p95", 0.95)):
        a = _pct([v[0] for v in ours_lat], q) * 1000
        b = _pct([v[0] for v in theirs_lat], q) * 1000
        ratios[label] = a / b
        rows.append(
            (
                f"latency {label}, submit call → start, idle worker, PostgreSQL",
                f"{a:.1f} ms",
                f"{b:.1f} ms",
                f"{a / b:.2f}×",
            )
        )
    for label, q in (("p50", 0.5), ("p95", 0.95)):  # the submit call alone, until it returned
        a = _pct([v[0] - v[1] for v in ours_lat], q) * 1000
        b = _pct([v[0] - v[1] for v in theirs_lat], q) * 1000
        rows.append((f"submit call itself, {label}", f"{a:.2f} ms", f"{b:.2f} ms", f"{a / b:.2f}×"))
    record(
        "jobs: submit → start latency p50, PostgreSQL / procrastinate",
        "≤ 1×",
        ratios["p50"],
        ratios["p50"] <= 1,
    )
    if 8 in throughput:
        record(
            "jobs: throughput, 8 workers, PostgreSQL",
            "≥ 1,000 jobs/s",
            f"{throughput[8]:,.0f} jobs/s",
            throughput[8] >= 1000,
        )
    print(
        f"\nmachine: {stdlib_platform.machine()}, {os.cpu_count()} CPUs; "
        f"{args.jobs} jobs per throughput run; {args.latency_jobs} latency samples "
        f"(mean radseg {statistics.mean(v[0] for v in ours_lat) * 1000:.1f} ms)\n"
    )
    print("| measure | radseg | procrastinate 3 | radseg / procrastinate |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
