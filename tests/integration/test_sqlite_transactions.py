"""SQLite's transaction modes (radseg.db.session): reads take no lock, writes take it up front,
a transaction that read and then writes still commits after another writer did.

Each test opens a second connection with a short busy timeout, so that waiting for a lock that
should not be needed fails in a fraction of a second instead of hanging for the default 30 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from radseg.db.models import Dataset
from radseg.db.session import make_engine, make_sessionmaker
from radseg.settings import load_settings
from tests.support import migrated_platform


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    settings = load_settings(
        {"home": tmp_path / "home", "database_url": f"sqlite:///{tmp_path / 'radseg.db'}"},
        environ={},
    )
    migrated_platform(settings, autoload=False).close()
    yield settings.database_url_resolved


@pytest.fixture
def impatient(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A second engine on the same file that waits 0.2 s for a lock, not 30 s."""
    monkeypatch.setattr("radseg.db.session.SQLITE_BUSY_TIMEOUT", 0.2)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _names(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(Dataset.name).order_by(Dataset.name)))


def test_reads_neither_wait_for_a_writer_nor_block_it(engine: Engine, impatient: Engine) -> None:
    sessions = make_sessionmaker(engine)
    with sessions() as writer:
        writer.add(Dataset(name="a"))
        writer.flush()  # holds the write lock until it commits
        assert _names(impatient) == []  # a reader sees the last commit, at once
        with Session(impatient) as reader:
            assert reader.scalars(select(Dataset.name)).all() == []  # a snapshot is open...
            writer.commit()  # ...and the writer commits past it
            assert reader.scalars(select(Dataset.name)).all() == []  # the snapshot holds
    assert _names(impatient) == ["a"]


def test_a_write_waits_for_the_write_lock(engine: Engine, impatient: Engine) -> None:
    with make_sessionmaker(engine)() as writer:
        writer.add(Dataset(name="a"))
        writer.flush()
        with pytest.raises(OperationalError, match="database is locked"), Session(impatient) as s:
            s.add(Dataset(name="b"))
            s.flush()
        writer.commit()
    assert _names(engine) == ["a"]


def test_a_transaction_that_read_can_write_after_another_writer_committed(
    engine: Engine, impatient: Engine
) -> None:
    with Session(impatient) as slow:
        assert slow.scalars(select(Dataset.name)).all() == []  # its snapshot starts here
        with make_sessionmaker(engine).begin() as other:
            other.add(Dataset(name="other"))
        # a deferred transaction could not write now ("database is locked" at once): it is
        # restarted as a write transaction, which sees the other's commit
        slow.add(Dataset(name="slow"))
        slow.flush()
        assert slow.scalars(select(Dataset.name).order_by(Dataset.name)).all() == [
            "other",
            "slow",
        ]
        slow.commit()
    assert _names(engine) == ["other", "slow"]


def test_a_locking_read_takes_the_write_lock(engine: Engine, impatient: Engine) -> None:
    with make_sessionmaker(engine).begin() as session:
        session.add(Dataset(name="a"))
    with Session(engine) as locker:
        found = locker.scalars(select(Dataset).with_for_update()).one()
        with (
            pytest.raises(OperationalError, match="database is locked"),
            Session(impatient) as other,
        ):
            other.execute(text("UPDATE dataset SET name = 'b'"))
        found.name = "c"
        locker.commit()
    assert _names(engine) == ["c"]
