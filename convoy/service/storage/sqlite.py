"""SQLite backend: the embedded default (``sqlite:///convoy.db``).

Durability: the database runs in WAL mode. Orders, events, takeovers, plans, trips and
tokens commit with ``synchronous=FULL``: the WAL is synced on every commit, so an
acknowledged write survives a killed process and a power loss. Telemetry batches
(``write_states``) commit with ``synchronous=NORMAL``: they survive a killed process (the
WAL is in the OS page cache), but the last batches before a power loss or OS crash may be
lost, never corrupted; at 10 Hz per truck that is a fair trade for skipping an fsync per batch.

Concurrency: one writer at a time (``BEGIN IMMEDIATE``), readers alongside it (WAL). Waiting
for the write lock is bounded by ``BUSY_TIMEOUT_S``. ``sqlite:///:memory:`` keeps one
connection, since each connection to ``:memory:`` would be its own empty database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from convoy.service.storage.base import StorageError
from convoy.service.storage.sql import Cursor, SqlStorage

#: Longest wait for another connection's write lock [s].
BUSY_TIMEOUT_S = 30.0
#: ``INSERT ... ON CONFLICT`` needs 3.24, ``RETURNING`` 3.35.
MIN_SQLITE = (3, 35, 0)


class SQLiteStorage(SqlStorage):
    """``Storage`` in one SQLite file (or in memory for ``path=":memory:"``)."""

    dialect = "sqlite"

    def __init__(self, path: str, url: str | None = None, pool_size: int = 4) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StorageError(
                f"SQLite {sqlite3.sqlite_version} is too old; convoy needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer"
            )
        self.path = path
        memory = path == ":memory:"
        super().__init__(url or f"sqlite:///{path}", 1 if memory else pool_size)
        # Open one connection now: a bad path fails here, and WAL mode is set before any
        # concurrent use (switching the journal mode needs the database to itself).
        with self._pool.connection():
            pass

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as e:
            raise StorageError(
                f"cannot open the SQLite database {self.path!r} ({self.url}): {e}; "
                "check that its folder exists and is writable"
            ) from None
        return conn

    def _close_conn(self, conn: Any) -> None:
        conn.close()

    def _usable(self, conn: Any) -> bool:
        return not conn.in_transaction

    @contextmanager
    def _tx(self, write: bool = True, durable: bool = True) -> Iterator[Cursor]:
        with self._pool.connection() as conn:
            if not durable:
                conn.execute("PRAGMA synchronous = NORMAL")
            try:
                # Take the write lock up front: a deferred transaction that reads and then
                # writes can fail with SQLITE_BUSY instead of waiting.
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn.cursor()
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous = FULL")

    def _table_exists(self, cur: Cursor, table: str) -> bool:
        cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return cur.fetchone() is not None
