"""Wake idle workers at once on PostgreSQL: ``LISTEN radseg_jobs`` (``submit`` sends ``NOTIFY``).

A notification is only a hint to claim now; workers still poll every ``poll_seconds``, so a lost
notification (a listener reconnecting, SQLite, a job whose ``run_after`` has just passed) costs
at most one poll interval, never a job.
"""

from __future__ import annotations

import contextlib
import logging

import psycopg
from sqlalchemy import Engine

from radseg.jobs.store import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


class Listener:
    """A dedicated autocommit connection that LISTENs; reconnects lazily after an error."""

    def __init__(self, engine: Engine) -> None:
        url = engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._conn: psycopg.Connection | None = None

    def fileno(self) -> int | None:
        """The socket to wait on, or ``None`` while not connected (then: poll)."""
        if self._conn is None:
            try:
                self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=3)
                self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            except psycopg.Error as exc:
                log.warning("LISTEN %s failed (polling instead): %s", NOTIFY_CHANNEL, exc)
                self.close()
                return None
        return self._conn.pgconn.socket

    def drain(self) -> int:
        """Consume the notifications that have arrived; how many there were."""
        if self._conn is None:
            return 0
        count = 0
        try:
            self._conn.pgconn.consume_input()
            while self._conn.pgconn.notifies() is not None:
                count += 1
        except psycopg.Error as exc:
            log.warning("lost the LISTEN connection (will reconnect): %s", exc)
            self.close()
        return count

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
