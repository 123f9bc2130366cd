"""A dataset build as a job (a real worker, its child process reporting progress) against the same
build called directly, as ``radseg datasets build`` does, on SQLite.

    .venv/bin/python -m tests.bench.job_vs_cli --slices 48 --size 256

Each build is timed from its call (or the job's submit) to its return (or the job's final
state); the job is run by an in-process ``Worker`` in burst mode, which starts a child process
like ``radseg worker`` does.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from radseg.core import create_platform
from radseg.db.migrate import upgrade
from radseg.db.models import Job
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.jobs import store
from radseg.jobs.worker import Worker
from radseg.settings import load_settings
from radseg.workflows.datasets import build_version
from radseg.workflows.ingest import ingest


def run(slices: int, size: int, work: Path) -> dict[str, float]:
    study = write_synthetic_ct(work / "study", seed=1, shape=(slices, size, size))
    settings = load_settings(
        {"home": work / "home", "poll_seconds": 0.1, "heartbeat_seconds": 1.0}, environ={}
    )
    platform = create_platform(settings)
    upgrade(platform.engine)
    platform.refresh_plugins()
    platform.ensure_home()
    ingest(platform, study.dicom_dir, labels=study.label_path, dataset="bench")

    start = time.perf_counter()
    build_version(platform, "bench")
    direct = time.perf_counter() - start

    start = time.perf_counter()
    with platform.sessions.begin() as session:
        job_id = store.submit(session, "build-dataset", {"dataset": "bench"}).id
    Worker(platform, burst=True, listen=False).run()
    as_job = time.perf_counter() - start
    with platform.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.state.value == "succeeded", (job.state, job.message)
        in_child = (job.finished_at - job.started_at).total_seconds()  # type: ignore[operator]
    platform.close()
    return {"direct": direct, "job": as_job, "job_started_to_finished": in_child}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times = run(args.slices, args.size, Path(tmp))
    print(
        f"{args.slices}-slice {args.size}² dataset build on SQLite: direct (CLI) "
        f"{times['direct']:.2f} s; as a job {times['job']:.2f} s from submit to done "
        f"({times['job_started_to_finished']:.2f} s from claim to finish)"
    )


if __name__ == "__main__":
    main()
