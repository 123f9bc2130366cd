"""The database connection dropped under a running worker (its backends killed with
``pg_terminate_backend``): the worker reconnects and carries on; no job is lost or doubled."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine, text

from radseg.core import Platform
from radseg.db.models import JobState
from radseg.jobs import store
from tests.integration.jobs_support import (
    job,
    start_worker,
    wait_for,
)

APP = "radseg-outage-test"


def _kill_backends(admin_url: str) -> int:
    engine = create_engine(admin_url)
    with engine.begin() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :app"
            ),
            {"app": APP},
        ).scalar()
    engine.dispose()
    return int(killed or 0)


def test_a_worker_outlives_its_database_connections(
    pg_platform: Platform, postgres_url: str, tmp_path: Path
) -> None:
    platform = pg_platform
    ledger = tmp_path / "ran.txt"
    worker_url = f"{postgres_url}&application_name={APP}"
    log = tmp_path / "worker.log"
    worker = start_worker(
        platform, "--inline-kinds", "noop", "--concurrency", "1", database_url=worker_url, log=log
    )
    admin_url = postgres_url
    kills: list[int] = []
    stop = threading.Event()

    def keep_killing() -> None:
        while not stop.wait(0.7):
            kills.append(_kill_backends(admin_url))

    try:
        # a job in a child process, running across the outages (its progress writes fail too)
        slow = store_submit(platform, {"sleep": 4, "append_to": str(ledger)}, max_attempts=3)
        wait_for(lambda: job(platform, slow).progress > 0, timeout=60)
        killer = threading.Thread(target=keep_killing, daemon=True)
        killer.start()
        ids = [slow]
        for _ in range(10):  # inline jobs submitted while connections keep dying
            with platform.sessions.begin() as session:
                batch = store.submit_many(session, "noop", [{"append_to": str(ledger)}] * 30)
                ids += [j.id for j in batch]
            time.sleep(0.4)
        stop.set()
        killer.join()
        wait_for(
            lambda: all(job(platform, i).state == JobState.SUCCEEDED for i in ids),
            timeout=90,
            interval=0.5,
        )
        assert worker.poll() is None  # it never gave up
    finally:
        stop.set()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert sum(kills) >= 3  # the worker's connections really were killed, repeatedly
    ran = Counter(int(line) for line in ledger.read_text().split())
    assert set(ran) == set(ids) and max(ran.values()) == 1
    assert "lost the LISTEN connection (will reconnect)" in log.read_text()


def store_submit(platform: Platform, payload: dict, **kw: object) -> int:
    with platform.sessions.begin() as session:
        return store.submit(session, "noop", payload, **kw).id  # type: ignore[arg-type]
