"""Shared fixtures: a fresh RADSEG_HOME and database per test, on SQLite and PostgreSQL.

Missing parts (the PostgreSQL server, Debian's chromium, detectron2) skip a test locally with
the reason, but fail it under ``CI=true``: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from radseg.core import Platform
from radseg.settings import Settings, load_settings
from tests.orthanc import OrthancServer, orthanc_available, orthanc_server
from tests.support import migrated_platform, require

POSTGRES_URL = os.environ.get(
    "RADSEG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_available() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {type(exc).__name__}"


@pytest.fixture(scope="session")
def postgres_problem() -> str | None:
    return _postgres_available()


@pytest.fixture
def postgres_url(postgres_problem: str | None) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped after the test."""
    require(postgres_problem is None, postgres_problem or "")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses it runs twice: on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'radseg.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings(
        {
            "home": tmp_path / "home",
            "database_url": database_url,
            "poll_seconds": 0.05,
            "heartbeat_seconds": 0.5,
        },
        environ={},
    )


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    """A migrated platform with the built-in plugins loaded from their entry points."""
    made = migrated_platform(settings)
    yield made
    made.close()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A real Orthanc with DICOMweb on loopback, one per test module (``tests/orthanc.py``).

    Empty at start; tests that need a clean store call ``orthanc.clear()``.
    """
    problem = orthanc_available()
    require(problem is None, problem or "")
    with orthanc_server(tmp_path_factory.mktemp("orthanc")) as server:
        yield server
