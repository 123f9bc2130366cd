"""Submitting a job: what it writes on SQLite and the real PostgreSQL, and what it costs on
PostgreSQL in round trips (counted in libpq's protocol trace, never timed); idle workers wake
at the commit; a pooled connection that died while idle is replaced before it is used."""

from __future__ import annotations

import select
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import pq
from sqlalchemy import create_engine, text
from sqlalchemy import select as sa_select

from radseg.core import Platform
from radseg.db import session as db_session
from radseg.db.models import Job, JobDependency, JobEvent, JobState
from radseg.errors import JobError
from radseg.jobs import leases, store
from radseg.jobs.notify import Listener
from radseg.settings import load_settings
from tests.support import migrated_platform


@pytest.fixture
def pg(tmp_path: Path, postgres_url: str) -> Iterator[Platform]:
    made = migrated_platform(
        load_settings({"home": tmp_path / "home", "database_url": postgres_url}, environ={}),
        autoload=False,
    )
    yield made
    made.close()


def test_submit_many_writes_jobs_links_and_events_in_order(platform: Platform) -> None:
    with platform.sessions.begin() as session:
        parents = [store.submit(session, "noop", {}, created_by="ann").id for _ in range(2)]
    with platform.sessions.begin() as session:
        jobs = store.submit_many(
            session,
            "predict",
            [{"series": 1}, {"series": 2, "num_gpus": 2}, {"series": 3, "num_gpus": 0}],
            priority=5,
            max_attempts=2,
            created_by="ann",
            depends_on=[parents[1], parents[0], parents[1]],
        )
        ids = [j.id for j in jobs]
        assert all(j.state == JobState.QUEUED for j in jobs)
    with platform.sessions() as session:
        rows = session.scalars(sa_select(Job).where(Job.id.in_(ids)).order_by(Job.id)).all()
        assert [r.payload["series"] for r in rows] == [1, 2, 3]  # ids follow the payloads
        assert [r.gpus for r in rows] == [1, 2, 0]  # predict wants a GPU unless told
        assert [r.fair_tag for r in rows] == [2, 3, 4]  # after ann's two queued parents
        assert {(r.kind, r.priority, r.max_attempts, r.created_by) for r in rows} == {
            ("predict", 5, 2, "ann")
        }
        links = session.execute(
            sa_select(JobDependency.job_id, JobDependency.depends_on_id).where(
                JobDependency.job_id.in_(ids)
            )
        ).all()
        assert sorted(links) == sorted((i, p) for i in ids for p in parents)
        events = session.execute(
            sa_select(JobEvent.job_id, JobEvent.from_state, JobEvent.to_state, JobEvent.message)
            .where(JobEvent.job_id.in_(ids))
            .order_by(JobEvent.id)
        ).all()
        why = f"submitted; waits for jobs {parents[0]}, {parents[1]}"
        assert events == [(i, None, "queued", why) for i in ids]
    claimed = leases.claim(platform.engine, "w")  # the children wait for both parents
    assert claimed is not None and claimed.id == parents[0]


def test_a_refused_dependency_writes_nothing(platform: Platform) -> None:
    with platform.sessions.begin() as session:
        parent = store.submit(session, "noop", {}).id
        store.cancel(session, parent, "ann")
    refused = pytest.raises(JobError, match="resubmit them first")
    with refused, platform.sessions.begin() as session:
        store.submit_many(session, "noop", [{}, {}], depends_on=[parent])
    with platform.sessions() as session:
        assert session.scalars(sa_select(Job.id)).all() == [parent]


# -- PostgreSQL: round trips, NOTIFY, liveness -------------------------------------------------


def _traced(platform: Platform, work: Any) -> list[str]:
    """The protocol messages of ``work()``'s transaction, on the pool's one connection."""
    with platform.sessions.begin() as session:  # warm: the pool holds a used connection
        pgconn = session.connection().connection.dbapi_connection.pgconn  # type: ignore[union-attr]
    with tempfile.TemporaryFile() as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            with platform.sessions.begin() as session:
                assert session.connection().connection.dbapi_connection.pgconn is pgconn  # type: ignore[union-attr]
                work(session)
        finally:
            pgconn.untrace()
        trace.seek(0)
        return trace.read().decode().splitlines()


def _round_trips(lines: list[str]) -> list[str]:
    """One entry per round trip (the client waits for ReadyForQuery): the statement sent."""
    messages: list[list[str]] = []
    for line in lines:
        if line[:2] in {"F\t", "B\t"}:
            messages.append(line.split("\t", 3))
        else:  # a statement's next line
            messages[-1][-1] += "\n" + line
    trips: list[str] = []
    sent: list[str] = []
    for who, _length, message, *rest in messages:
        if who == "F" and message in {"Query", "Parse"}:
            sent.append(rest[0].strip())
        elif who == "B" and message == "ReadyForQuery":
            trips.append(" ".join(sent))
            sent = []
    return trips


def test_a_submit_is_one_round_trip_between_begin_and_commit(pg: Platform) -> None:
    jobs: list[Job] = []
    trips = _round_trips(_traced(pg, lambda s: jobs.append(store.submit(s, "noop", {"a": 1}))))
    assert len(trips) == 3, trips  # no pool ping: a quiet, recently used connection is taken
    assert trips[0] == '"BEGIN"' and trips[2] == '"COMMIT"'
    assert "INSERT INTO job (" in trips[1] and "INSERT INTO job_event" in trips[1]
    assert "pg_notify" in trips[1]
    with pg.sessions() as session:
        job = session.get(Job, jobs[0].id)
        assert job is not None and job.payload == {"a": 1} and job.state == JobState.QUEUED
        assert [e.to_state for e in job.events] == ["queued"]
    # with dependencies, and many jobs at once, still one statement
    trips = _round_trips(
        _traced(pg, lambda s: store.submit_many(s, "noop", [{}] * 20, depends_on=[jobs[0].id]))
    )
    assert len(trips) == 3, trips


def test_a_submit_wakes_a_listening_worker_at_its_commit(pg: Platform) -> None:
    listener = Listener(pg.engine)
    try:
        socket = listener.fileno()
        assert socket is not None
        with pg.sessions.begin() as session:
            store.submit(session, "noop", {})
            assert listener.drain() == 0  # not before the commit
        readable, _, _ = select.select([socket], [], [], 30)
        assert readable and listener.drain() == 1
    finally:
        listener.close()


def test_a_pooled_connection_killed_while_idle_is_replaced_unseen(
    pg: Platform, postgres_url: str
) -> None:
    with pg.sessions.begin() as session:
        first = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = create_engine(postgres_url)
    with admin.begin() as conn:  # waits (up to 10 s) until the backend has gone
        gone = conn.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": first})
        assert gone.scalar()
    admin.dispose()
    with pg.sessions.begin() as session:  # no error: the checkout saw the closed socket
        job = store.submit(session, "noop", {})
        assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() != first
    with pg.sessions() as session:
        assert session.get(Job, job.id) is not None


def test_a_connection_idle_for_long_is_pinged_before_use(
    pg: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_session, "PING_AFTER_IDLE_SECONDS", 0.0)
    trips = _round_trips(_traced(pg, lambda s: store.submit(s, "noop", {})))
    assert trips[:2] == ['"BEGIN"', '"SELECT 1"'] and len(trips) == 4, trips
