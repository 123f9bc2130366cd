"""Engines and sessionmakers, made per platform (never at import time).

SQLite transactions (the embedded default; PostgreSQL needs none of this)
-------------------------------------------------------------------------

SQLite has one writer at a time and, in WAL mode, readers that never wait for it. pysqlite's own
transaction handling is turned off and the engine begins each transaction itself, when the
transaction runs its first statement, choosing the mode from that statement:

* a read (``SELECT``, ``PRAGMA``, ``EXPLAIN``) begins ``BEGIN`` (deferred): a snapshot, no lock.
  A web page, ``radseg jobs list`` or a dataset build reading its series never waits for a
  writer and never makes one wait.
* a write, or a locking read (``select(...).with_for_update()``, which SQLite cannot express
  itself), begins ``BEGIN IMMEDIATE``: the write lock up front, waiting for it up to the busy
  timeout.
* a transaction that began as a read and then writes is *restarted* as ``BEGIN IMMEDIATE``
  before its first write. SQLite cannot upgrade a read snapshot once another connection has
  committed after it (it fails at once with ``database is locked``, whatever the busy timeout),
  and under a running job something always has. What the transaction read before is from its
  snapshot; what it writes, and reads from then on, is current and serialised: the guarantees
  of PostgreSQL's ``READ COMMITTED``, which every code path here already meets. A read that a
  write depends on (the lease check before finishing a job) uses ``with_for_update()``, as it
  must on PostgreSQL, and then locks on SQLite too.

So a write lock is held only from a transaction's first write to its commit: code that writes
files or reads DICOM must do so before its first write or after its commit (the ingest and
dataset-build workflows do), and long work commits in short steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine.interfaces import DBAPICursor, ExecutionContext
from sqlalchemy.orm import Session, sessionmaker

#: how long a SQLite writer waits for the write lock before ``database is locked`` (seconds).
#: Write transactions last milliseconds; the wait is long only when something is wrong.
SQLITE_BUSY_TIMEOUT = 30.0

#: first words of statements that only read
_READS = frozenset({"SELECT", "PRAGMA", "EXPLAIN"})
#: ``Connection.info`` key: ``"read"`` or ``"write"``, the mode of the open SQLite transaction
_MODE = "radseg_sqlite_mode"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys, a busy timeout and the transaction
    modes described in the module docstring."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False},
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "before_cursor_execute", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # no implicit BEGIN: _sqlite_begin emits it
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cur.close()


def _sqlite_begin(
    conn: Connection,
    cursor: DBAPICursor,
    statement: str,
    parameters: Any,
    context: ExecutionContext | None,
    executemany: bool,
) -> None:
    """Begin (or restart) the SQLite transaction in the mode ``statement`` needs."""
    if not conn.in_transaction():
        return  # an autocommit connection: no transaction to begin
    dbapi_conn = conn.connection.dbapi_connection
    writes = _writes(statement, context)
    if not dbapi_conn.in_transaction:  # type: ignore[union-attr]
        cursor.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        conn.info[_MODE] = "write" if writes else "read"
    elif writes and conn.info.get(_MODE) == "read":
        # a read snapshot cannot become a write transaction once another writer committed
        cursor.execute("ROLLBACK")
        cursor.execute("BEGIN IMMEDIATE")
        conn.info[_MODE] = "write"


def _writes(statement: str, context: ExecutionContext | None) -> bool:
    """Whether ``statement`` writes or must lock: anything not known to be a plain read."""
    compiled = getattr(context, "compiled", None)
    if compiled is not None:
        stmt = getattr(compiled, "statement", None)
        if getattr(stmt, "_for_update_arg", None) is not None:
            return True
        if getattr(stmt, "is_select", False):
            return False
    words = statement.lstrip().split(None, 1)
    return not words or words[0].upper() not in _READS
