"""PostgreSQL backend (psycopg 3): ``postgresql://user[:password]@host[:port]/db``.

Telemetry goes in as chunks (one row per truck per write, see ``chunks.py``) with
``COPY ... FROM STDIN (FORMAT BINARY)`` through psycopg's ``cursor.copy``, the fastest path
PostgreSQL offers for bulk rows.

Durability: orders, events, takeovers, plans, trips and tokens commit with the server's
``synchronous_commit`` (``on`` by default: the WAL is flushed before the commit returns).
Telemetry batches commit with ``SET LOCAL synchronous_commit = off``: a killed
``convoy serve`` loses nothing it was told was written (the server has it), but a crash of the
*database server* may lose the last fraction of a second of telemetry (up to three times
``wal_writer_delay``, 200 ms by default), never corrupting anything.

Concurrency: a pool of up to ``pool_size`` connections, each call one transaction on one of
them, so calls from several threads run in parallel. The schema is the first one on the
connection's ``search_path``; choose another with the libpq option in the URL, e.g.
``postgresql://convoy@db/convoy?options=-csearch_path%3Dfleet``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq

from convoy.service.storage.base import StorageError
from convoy.service.storage.chunks import CHUNK_COLS, Chunk
from convoy.service.storage.sql import Cursor, SqlStorage

#: How long opening a connection may take [s].
CONNECT_TIMEOUT_S = 10

_COPY_CHUNKS = f"COPY vehicle_state_chunks ({CHUNK_COLS}) FROM STDIN (FORMAT BINARY)"
_CHUNK_TYPES = ["text", "float8", "float8", "int4", "float8", "bytea"]


class _QmarkCursor:
    """A psycopg cursor that takes the shared code's ``?`` placeholders (no SQL here
    contains a literal ``?`` or ``%``)."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.raw = cur

    @property
    def rowcount(self) -> int:
        return self.raw.rowcount

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.raw.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Any:
        return self.raw.executemany(sql.replace("?", "%s"), params)

    def fetchone(self) -> Any:
        return self.raw.fetchone()

    def fetchall(self) -> list[Any]:
        return self.raw.fetchall()


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


class PostgresStorage(SqlStorage):
    """``Storage`` in a PostgreSQL database."""

    dialect = "postgresql"

    def __init__(self, url: str, pool_size: int = 4) -> None:
        super().__init__(redact(url), pool_size)
        self._conninfo = url
        # Connect now: an unreachable server or a bad database name fails here, clearly.
        with self._pool.connection():
            pass

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
            return conn
        except psycopg.Error as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StorageError(f"cannot connect to PostgreSQL at {self.url}: {reason}") from None

    def _close_conn(self, conn: Any) -> None:
        conn.close()

    def _usable(self, conn: Any) -> bool:
        return not conn.closed and conn.info.transaction_status == pq.TransactionStatus.IDLE

    @contextmanager
    def _tx(self, write: bool = True, durable: bool = True) -> Iterator[Cursor]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            if not durable:
                cur.execute("SET LOCAL synchronous_commit = off")
            yield _QmarkCursor(cur)

    def _insert_chunks(self, cur: Cursor, chunks: list[Chunk]) -> None:
        assert isinstance(cur, _QmarkCursor)
        with cur.raw.copy(_COPY_CHUNKS) as copy:
            copy.set_types(_CHUNK_TYPES)
            for chunk in chunks:
                copy.write_row(chunk)

    def _table_exists(self, cur: Cursor, table: str) -> bool:
        # to_regclass resolves the name on the search_path, as the other statements do.
        cur.execute("SELECT to_regclass(?) IS NOT NULL", (table,))
        return bool(cur.fetchone()[0])

    def _lock_migrations(self, cur: Cursor) -> None:
        # One migrator per schema at a time; released at commit.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('convoy.migrate.' || current_schema()))")
