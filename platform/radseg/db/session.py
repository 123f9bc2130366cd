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

Connection liveness (PostgreSQL)
--------------------------------

A pooled connection can be dead when it is taken from the pool: the server restarted, an admin
ran ``pg_terminate_backend``, a firewall forgot the connection. SQLAlchemy's ``pool_pre_ping``
finds out with a ``SELECT 1`` on every checkout, a round trip before every transaction. Here
the check is local for a connection used in the last :data:`PING_AFTER_IDLE_SECONDS`: a server
that ends a connection says so (an error message, then the socket's end), so an idle pooled
connection whose socket has anything to read is suspect and gets the real ping; a quiet socket
is taken as it is. A connection idle for longer is pinged, as a silently dropped one (a NAT or
firewall timeout) shows nothing locally. A failed ping invalidates the pool, as
``pool_pre_ping`` does, so every connection made before the outage is replaced. A connection
that dies while in use fails its statement in either scheme; the worker retries those
(:mod:`radseg.jobs.worker`).
"""

from __future__ import annotations

import select
import time
from pathlib import Path
from typing import Any

from psycopg import pq
from sqlalchemy import Connection, Engine, create_engine, event, exc, make_url
from sqlalchemy.engine.interfaces import DBAPICursor, ExecutionContext
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

#: how long a SQLite writer waits for the write lock before ``database is locked`` (seconds).
#: Write transactions last milliseconds; the wait is long only when something is wrong.
SQLITE_BUSY_TIMEOUT = 30.0

#: first words of statements that only read
_READS = frozenset({"SELECT", "PRAGMA", "EXPLAIN"})
#: ``Connection.info`` key: ``"read"`` or ``"write"``, the mode of the open SQLite transaction
_MODE = "radseg_sqlite_mode"
#: a pooled PostgreSQL connection idle for longer is pinged at checkout; one used more recently
#: is checked locally, without a round trip (module docstring)
PING_AFTER_IDLE_SECONDS = 10.0
#: ``ConnectionPoolEntry.info`` key: ``time.monotonic()`` when the connection was checked in
_IDLE_SINCE = "radseg_idle_since"


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
    engine = create_engine(url, **kwargs)
    event.listen(engine, "checkin", _note_idle)
    event.listen(engine, "checkout", _check_alive)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # no implicit BEGIN: _sqlite_begin emits it
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cur.close()


def _note_idle(_dbapi_conn: Any, entry: ConnectionPoolEntry) -> None:
    entry.info[_IDLE_SINCE] = time.monotonic()


def _check_alive(
    dbapi_conn: Any, entry: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """Refuse a dead pooled connection at checkout (the module docstring says how)."""
    idle_since = entry.info.pop(_IDLE_SINCE, None)
    if idle_since is None:
        return  # made just now for this checkout
    recent = time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS
    if recent and _quiet(dbapi_conn):
        return
    try:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
    except Exception as error:  # the driver's own error: the connection is gone
        raise exc.InvalidatePoolError(f"connection lost while idle in the pool: {error}") from None


def _quiet(dbapi_conn: Any) -> bool:
    """Whether a psycopg connection is idle and the server has sent nothing since (no round
    trip); ``False`` for anything else, which is then pinged."""
    pgconn = getattr(dbapi_conn, "pgconn", None)
    if (
        pgconn is None
        or pgconn.status != pq.ConnStatus.OK
        or pgconn.transaction_status != pq.TransactionStatus.IDLE
    ):
        return False
    try:
        poll = select.poll()
        poll.register(pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    except Exception:
        return False
    return not poll.poll(0)


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
