"""Fixtures of the integration tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from radseg.core import Platform, create_platform
from radseg.db.migrate import upgrade
from radseg.settings import load_settings
from tests.jobs_plugin import MODULE as JOBS_PLUGIN


@pytest.fixture
def pg_platform(tmp_path: Path, postgres_url: str) -> Iterator[Platform]:
    """A migrated platform on PostgreSQL only: for process-level behaviour that does not depend
    on the database (the store's side of it runs on both in test_job_store*.py), which keeps
    the suite's time down."""
    settings = load_settings(
        {
            "home": tmp_path / "home",
            "database_url": postgres_url,
            "poll_seconds": 0.05,
            "heartbeat_seconds": 0.5,
            "plugin_modules": [JOBS_PLUGIN],  # job kind noop
        },
        environ={},
    )
    made = create_platform(settings, autoload=False)
    upgrade(made.engine)
    made.ensure_home()
    yield made
    made.close()
