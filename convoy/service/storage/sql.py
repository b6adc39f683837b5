"""The SQL both backends share: every ``Storage`` method written once against a DB-API cursor.

Statements use ``?`` placeholders and the SQL common to SQLite >= 3.35 and PostgreSQL >= 12
(``INSERT ... ON CONFLICT``, ``UPDATE ... RETURNING``). A backend supplies connections, a
transaction (:meth:`SqlStorage._tx`), the bulk insert of telemetry and a few dialect details.

Atomic state changes (claiming a takeover, changing an order's status) are one conditional
``UPDATE ... WHERE status = ... RETURNING``: the database, not Python, decides who wins, so
the guarantee holds across threads, processes and hosts.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from convoy.service.storage.base import (
    MAX_PLAN_BYTES,
    ORDER_TRANSITIONS,
    ApiToken,
    ConflictError,
    EventRecord,
    NotFoundError,
    OrderRecord,
    OrderStatus,
    PlanRecord,
    RecordError,
    Role,
    StateRow,
    Storage,
    StorageError,
    TakeoverRecord,
    TakeoverStatus,
    TripRecord,
    TripStatus,
    VehicleState,
    _check_id,
    _check_name,
    _enum,
    _fail,
    _int,
    _num,
    check_state_rows,
    dump_json,
    hash_secret,
    make_token,
    split_token,
    verify_secret,
)
from convoy.service.storage.chunks import (
    CHUNK_COLS,
    MAX_CHUNK_SPAN_S,
    Chunk,
    chunk_rows,
    decode_chunk,
    decode_last,
)
from convoy.service.storage.migrations import LATEST, MIGRATIONS, RECHUNK, SCHEMA_TABLE, Dialect

#: Most rows one query returns.
MAX_LIMIT = 1_000_000
#: How long a call waits for a free pooled connection [s].
POOL_WAIT_S = 30.0
#: Longest idempotency key [characters].
MAX_KEY_CHARS = 200

STATE_FIELDS = (
    "vehicle_id",
    "t_s",
    "lon",
    "lat",
    "speed_mps",
    "heading_deg",
    "accel_mps2",
    "edge",
    "lane",
    "soc",
    "mode",
)
STATE_COLS = ", ".join(STATE_FIELDS)
_state_row = operator.attrgetter(*STATE_FIELDS)

ORDER_FIELDS = (
    "id",
    "shipper",
    "cargo",
    "origin_site",
    "destination_site",
    "tonnes",
    "pickup_start_s",
    "pickup_end_s",
    "delivery_start_s",
    "delivery_end_s",
    "priority",
    "status",
    "created_s",
)
ORDER_COLS = ", ".join(ORDER_FIELDS)
TAKEOVER_FIELDS = (
    "id",
    "vehicle_id",
    "cause",
    "requested_s",
    "deadline_s",
    "status",
    "operator",
    "claimed_s",
    "resolved_s",
)
TAKEOVER_COLS = ", ".join(TAKEOVER_FIELDS)
TRIP_FIELDS = (
    "id",
    "vehicle_ids",
    "driver_id",
    "origin_site",
    "destination_site",
    "depart_s",
    "arrive_s",
    "tonnes",
    "order_ids",
    "plan_version",
    "status",
)
TRIP_COLS = ", ".join(TRIP_FIELDS)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


_INSERT_CHUNK = f"INSERT INTO vehicle_state_chunks ({CHUNK_COLS}) VALUES (?, ?, ?, ?, ?, ?)"
# The newest chunk of every truck: a loose index scan over (vehicle_id, t_last), one index
# descent per truck instead of a scan of the whole history. Of chunks with the same t_last,
# the later write.
_LATEST_CHUNKS = (
    "WITH RECURSIVE v(id) AS ("
    "SELECT MIN(vehicle_id) FROM vehicle_state_chunks "
    "UNION ALL SELECT (SELECT MIN(vehicle_id) FROM vehicle_state_chunks "
    "WHERE vehicle_id > v.id) FROM v WHERE v.id IS NOT NULL) "
    "SELECT id, (SELECT data FROM vehicle_state_chunks c WHERE c.vehicle_id = v.id "
    "ORDER BY t_last DESC, written_s DESC LIMIT 1) FROM v WHERE id IS NOT NULL"
)
_time_then_id = operator.itemgetter(1, 0)
_first = operator.itemgetter(0)


class Cursor(Protocol):
    """What the shared code needs of a cursor (``?`` placeholders)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


C = TypeVar("C")


class Pool(Generic[C]):
    """A small thread-safe pool: at most ``size`` connections, opened on demand, reused LIFO.

    A connection that ``usable`` rejects after a call (broken, left inside a transaction) is
    closed instead of being returned.
    """

    def __init__(
        self,
        connect: Callable[[], C],
        close: Callable[[C], None],
        usable: Callable[[C], bool],
        size: int,
    ) -> None:
        self._connect, self._close, self._usable = connect, close, usable
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[C] = []
        self._lock = threading.Lock()
        self._closed = False
        self.size = size

    @contextmanager
    def connection(self) -> Iterator[C]:
        if self._closed:
            raise StorageError("storage is closed")
        if not self._slots.acquire(timeout=POOL_WAIT_S):
            raise StorageError(
                f"all {self.size} database connections stayed busy for {POOL_WAIT_S:g} s"
            )
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            try:
                yield conn
            finally:
                if self._closed or not self._usable(conn):
                    self._close(conn)
                else:
                    with self._lock:
                        self._idle.append(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._close(conn)


# --- query arguments ------------------------------------------------------------------------


def _limit(value: Any) -> int:
    return _int("query", "limit", value, 1, MAX_LIMIT)


def _finite(name: str, value: Any) -> float:
    return _num("query", name, value, -math.inf, math.inf)


def _opt_finite(name: str, value: Any) -> float | None:
    return None if value is None else _finite(name, value)


def _json_obj(value: Any) -> dict[str, Any]:
    # SQLite hands back the text, PostgreSQL's json type the parsed object.
    out: dict[str, Any] = json.loads(value) if isinstance(value, str) else value
    return out


def _trip(row: Sequence[Any]) -> TripRecord:
    r = list(row)
    r[1] = tuple(json.loads(r[1]))
    r[8] = tuple(json.loads(r[8]))
    return TripRecord(*r)


def _where(conds: list[str]) -> str:
    return f" WHERE {' AND '.join(conds)}" if conds else ""


# --- the shared implementation --------------------------------------------------------------


class SqlStorage(Storage):
    """``Storage`` over a pool of DB-API connections; subclasses add the dialect."""

    dialect: ClassVar[Dialect]

    def __init__(self, url: str, pool_size: int) -> None:
        self.url = url
        self._clock_lock = threading.Lock()
        self._last_written_s = 0.0
        self._pool: Pool[Any] = Pool(self._connect, self._close_conn, self._usable, pool_size)

    # -- dialect hooks --
    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _close_conn(self, conn: Any) -> None: ...

    @abstractmethod
    def _usable(self, conn: Any) -> bool: ...

    @abstractmethod
    def _tx(self, write: bool = True, durable: bool = True) -> AbstractContextManager[Cursor]:
        """One transaction, committed on exit (rolled back on an exception).

        ``write=False`` promises only reads (SQLite then takes no write lock).
        ``durable=False`` (telemetry only) may trade power-loss safety for speed; a commit
        still survives the process being killed.
        """

    def _insert_chunks(self, cur: Cursor, chunks: list[Chunk]) -> None:
        """Bulk-insert rows of ``CHUNK_COLS`` into ``vehicle_state_chunks``."""
        cur.executemany(_INSERT_CHUNK, chunks)

    @abstractmethod
    def _table_exists(self, cur: Cursor, table: str) -> bool: ...

    def _lock_migrations(self, cur: Cursor) -> None:
        """Keep concurrent ``migrate`` calls apart (SQLite: the write lock already does)."""

    # -- lifecycle --
    def close(self) -> None:
        self._pool.close()

    def schema_version(self) -> int:
        with self._tx(write=False) as cur:
            return self._version(cur)

    def _version(self, cur: Cursor) -> int:
        if not self._table_exists(cur, "schema_migrations"):
            return 0
        cur.execute("SELECT MAX(version) FROM schema_migrations")
        row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def migrate(self, target: int | None = None) -> int:
        target = LATEST if target is None else _int("migrate", "target", target, 1, LATEST)
        with self._tx() as cur:
            self._lock_migrations(cur)
            cur.execute(SCHEMA_TABLE[self.dialect])
            current = self._version(cur)
            if current > LATEST:
                raise StorageError(
                    f"the database at {self.url} has schema version {current}, but this "
                    f"convoy knows versions up to {LATEST}; upgrade convoy"
                )
            for m in MIGRATIONS:
                if current < m.version <= target:
                    for stmt in m.statements(self.dialect):
                        if stmt == RECHUNK:
                            self._rechunk(cur)
                        else:
                            cur.execute(stmt)
                    cur.execute(
                        "INSERT INTO schema_migrations (version, name, applied_s) VALUES (?, ?, ?)",
                        (m.version, m.name, time.time()),
                    )
            return max(current, target)

    # -- telemetry --
    def write_states(self, batch: Iterable[VehicleState]) -> int:
        states = list(batch)
        for i, s in enumerate(states):
            if type(s) is not VehicleState:
                raise RecordError(
                    f"write_states batch[{i}] is a {type(s).__name__}; allowed: VehicleState"
                )
        return self._write_rows([_state_row(s) for s in states])

    def write_state_rows(self, rows: Sequence[StateRow]) -> int:
        return self._write_rows(check_state_rows(rows))

    def _write_rows(self, rows: list[StateRow]) -> int:
        """Store checked rows as chunks (one per truck, see ``chunks.py``) in one
        transaction."""
        if not rows:
            return 0
        chunks = chunk_rows(rows, self._written_s())
        with self._tx(durable=False) as cur:
            self._insert_chunks(cur, chunks)
        return len(rows)

    def _written_s(self) -> float:
        """The write stamp of a chunk: wall-clock time, never going back within an instance
        (it breaks ties between chunks of equal ``t_last`` for ``latest_states``)."""
        with self._clock_lock:
            self._last_written_s = max(time.time(), self._last_written_s)
            return self._last_written_s

    def _rechunk(self, cur: Cursor) -> None:
        """Migration 3: move the rows of ``vehicle_states`` into chunks."""
        cur.execute(f"SELECT {STATE_COLS} FROM vehicle_states ORDER BY vehicle_id, t_s")
        rows = [tuple(r) for r in cur.fetchall()]
        if rows:
            self._insert_chunks(cur, chunk_rows(rows, time.time()))

    def states(
        self,
        vehicle_id: str | None = None,
        since_s: float | None = None,
        until_s: float | None = None,
        limit: int = 10_000,
    ) -> list[VehicleState]:
        conds: list[str] = []
        params: list[Any] = []
        if vehicle_id is not None:
            _check_id("query", "vehicle_id", vehicle_id)
            conds.append("vehicle_id = ?")
            params.append(vehicle_id)
        since = _opt_finite("since_s", since_s)
        until = _opt_finite("until_s", until_s)
        if since is not None:
            # A chunk spans at most MAX_CHUNK_SPAN_S: the bound on t_first lets the time
            # index find it (+1 s against rounding).
            conds.append("t_last >= ?")
            conds.append("t_first >= ?")
            params += [since, since - MAX_CHUNK_SPAN_S - 1.0]
        if until is not None:
            conds.append("t_first < ?")
            params.append(until)
        n = _limit(limit)
        lo = -math.inf if since is None else since
        hi = math.inf if until is None else until
        sql = (
            f"SELECT vehicle_id, t_first, data FROM vehicle_state_chunks{_where(conds)} "
            "ORDER BY t_first LIMIT ?"
        )
        fetch = n  # chunks: each holds at least one sample
        with self._tx(write=False) as cur:
            while True:
                cur.execute(sql, [*params, fetch])
                got = cur.fetchall()
                out = [
                    r for vid, _, data in got for r in decode_chunk(vid, data) if lo <= r[1] < hi
                ]
                out.sort(key=_time_then_id)
                # Done when every chunk matched, or when the chunks not fetched (t_first at
                # least the last one's) cannot hold any of the first n samples.
                if len(got) < fetch or (len(out) >= n and got[-1][1] > out[n - 1][1]):
                    break
                fetch *= 4
        return [VehicleState(*r) for r in out[:n]]

    def latest_states(self) -> list[VehicleState]:
        with self._tx(write=False) as cur:
            cur.execute(_LATEST_CHUNKS)
            got = cur.fetchall()
        got.sort(key=_first)  # by vehicle id, in code point order on both backends
        # A chunk is in time order: its last sample is its newest.
        return [VehicleState(*decode_last(vid, data)) for vid, data in got]

    def prune_states(self, older_than_s: float) -> int:
        cut = _finite("older_than_s", older_than_s)
        with self._tx() as cur:
            cur.execute(
                "DELETE FROM vehicle_state_chunks WHERE t_first < ? AND t_last < ? RETURNING n",
                (cut, cut),
            )
            n = sum(int(r[0]) for r in cur.fetchall())
            # Chunks across the cut keep their samples at or after it.
            cur.execute(
                "DELETE FROM vehicle_state_chunks WHERE t_first < ? AND t_last >= ? "
                "RETURNING vehicle_id, written_s, data",
                (cut, cut),
            )
            kept: list[Chunk] = []
            for vid, written_s, data in cur.fetchall():
                rows = decode_chunk(vid, data)
                left = [r for r in rows if r[1] >= cut]
                n += len(rows) - len(left)
                kept += chunk_rows(left, written_s)
            if kept:
                self._insert_chunks(cur, kept)
        return n

    # -- orders --
    def create_order(self, order: OrderRecord, idempotency_key: str | None = None) -> OrderRecord:
        if not isinstance(order, OrderRecord):
            raise RecordError(
                f"create_order order is a {type(order).__name__}; allowed: OrderRecord"
            )
        if idempotency_key is not None and not (
            isinstance(idempotency_key, str)
            and 0 < len(idempotency_key) <= MAX_KEY_CHARS
            and idempotency_key.isprintable()
        ):
            raise _fail(
                "create_order",
                "idempotency_key",
                idempotency_key,
                f"None or 1-{MAX_KEY_CHARS} printable characters",
            )
        if order.created_s is None:
            order = replace(order, created_s=time.time())
        params = (*operator.attrgetter(*ORDER_FIELDS)(order), idempotency_key)
        with self._tx() as cur:
            # DO NOTHING on either unique key (id, idempotency key); find out which below.
            cur.execute(
                f"INSERT INTO orders ({ORDER_COLS}, idempotency_key) "
                f"VALUES ({_marks(len(params))}) ON CONFLICT DO NOTHING RETURNING id",
                params,
            )
            if cur.fetchone() is not None:
                return order
            if idempotency_key is not None:
                cur.execute(
                    f"SELECT {ORDER_COLS} FROM orders WHERE idempotency_key = ?",
                    (idempotency_key,),
                )
                row = cur.fetchone()
                if row is not None:
                    stored = OrderRecord(*row)
                    if stored.same_request(order):
                        return stored
                    raise ConflictError(
                        f"idempotency key {idempotency_key!r} was used for order {stored.id!r} "
                        "with different contents; use a new key for a new order"
                    )
            raise ConflictError(f"order {order.id!r} exists; order ids must be unique")

    def get_order(self, order_id: str) -> OrderRecord:
        with self._tx(write=False) as cur:
            return self._order(cur, order_id)

    def _order(self, cur: Cursor, order_id: str) -> OrderRecord:
        _check_id("query", "order_id", order_id)
        cur.execute(f"SELECT {ORDER_COLS} FROM orders WHERE id = ?", (order_id,))
        row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"no order {order_id!r}")
        return OrderRecord(*row)

    def list_orders(
        self, status: OrderStatus | str | None = None, limit: int = 10_000
    ) -> list[OrderRecord]:
        conds: list[str] = []
        params: list[Any] = []
        if status is not None:
            conds.append("status = ?")
            params.append(_enum("query", "status", status, OrderStatus).value)
        params.append(_limit(limit))
        with self._tx(write=False) as cur:
            cur.execute(
                f"SELECT {ORDER_COLS} FROM orders{_where(conds)} ORDER BY created_s, id LIMIT ?",
                params,
            )
            return [OrderRecord(*r) for r in cur.fetchall()]

    def set_order_status(self, order_id: str, status: OrderStatus | str) -> OrderRecord:
        _check_id("query", "order_id", order_id)
        new = _enum("set_order_status", "status", status, OrderStatus)
        sources = [new.value] + [s.value for s, to in ORDER_TRANSITIONS.items() if new in to]
        with self._tx() as cur:
            cur.execute(
                f"UPDATE orders SET status = ? WHERE id = ? AND status IN ({_marks(len(sources))}) "
                f"RETURNING {ORDER_COLS}",
                (new.value, order_id, *sources),
            )
            row = cur.fetchone()
            if row is not None:
                return OrderRecord(*row)
            now = self._order(cur, order_id).status
            allowed = ", ".join(sorted(s.value for s in ORDER_TRANSITIONS[now])) or "nothing"
            raise ConflictError(
                f"order {order_id!r} is {now.value} and cannot become {new.value}; "
                f"from {now.value} it may become: {allowed}"
            )

    # -- plans --
    def save_plan(self, plan: Mapping[str, Any], plan_id: str = "day") -> int:
        _check_id("Plan", "plan_id", plan_id)
        text = dump_json("Plan", "plan", plan, MAX_PLAN_BYTES)
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO plans (plan_id, created_s, plan) VALUES (?, ?, ?) RETURNING version",
                (plan_id, time.time(), text),
            )
            return int(cur.fetchone()[0])

    def latest_plan(self, plan_id: str | None = None) -> PlanRecord | None:
        conds: list[str] = []
        params: list[Any] = []
        if plan_id is not None:
            _check_id("query", "plan_id", plan_id)
            conds.append("plan_id = ?")
            params.append(plan_id)
        with self._tx(write=False) as cur:
            cur.execute(
                "SELECT version, plan_id, created_s, plan FROM plans"
                f"{_where(conds)} ORDER BY version DESC LIMIT 1",
                params,
            )
            row = cur.fetchone()
        return None if row is None else PlanRecord(row[0], row[1], row[2], _json_obj(row[3]))

    def get_plan(self, version: int) -> PlanRecord:
        _int("query", "version", version, 1, 2**62)
        with self._tx(write=False) as cur:
            cur.execute(
                "SELECT version, plan_id, created_s, plan FROM plans WHERE version = ?", (version,)
            )
            row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"no plan of version {version}")
        return PlanRecord(row[0], row[1], row[2], _json_obj(row[3]))

    # -- trips --
    def save_trips(self, trips: Iterable[TripRecord]) -> int:
        rows = []
        for i, t in enumerate(trips):
            if not isinstance(t, TripRecord):
                raise RecordError(
                    f"save_trips trips[{i}] is a {type(t).__name__}; allowed: TripRecord"
                )
            r = list(operator.attrgetter(*TRIP_FIELDS)(t))
            r[1], r[8], r[10] = json.dumps(list(r[1])), json.dumps(list(r[8])), r[10].value
            rows.append(r)
        if not rows:
            return 0
        update = ", ".join(f"{c} = excluded.{c}" for c in TRIP_FIELDS[1:])
        with self._tx() as cur:
            cur.executemany(
                f"INSERT INTO trips ({TRIP_COLS}) VALUES ({_marks(len(TRIP_FIELDS))}) "
                f"ON CONFLICT (id) DO UPDATE SET {update}",
                rows,
            )
        return len(rows)

    def get_trip(self, trip_id: str) -> TripRecord:
        _check_id("query", "trip_id", trip_id)
        with self._tx(write=False) as cur:
            cur.execute(f"SELECT {TRIP_COLS} FROM trips WHERE id = ?", (trip_id,))
            row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"no trip {trip_id!r}")
        return _trip(row)

    def list_trips(
        self,
        plan_version: int | None = None,
        status: TripStatus | str | None = None,
        limit: int = 10_000,
    ) -> list[TripRecord]:
        conds: list[str] = []
        params: list[Any] = []
        if plan_version is not None:
            conds.append("plan_version = ?")
            params.append(_int("query", "plan_version", plan_version, 1, 2**62))
        if status is not None:
            conds.append("status = ?")
            params.append(_enum("query", "status", status, TripStatus).value)
        params.append(_limit(limit))
        with self._tx(write=False) as cur:
            cur.execute(
                f"SELECT {TRIP_COLS} FROM trips{_where(conds)} ORDER BY depart_s, id LIMIT ?",
                params,
            )
            return [_trip(r) for r in cur.fetchall()]

    def set_trip_status(self, trip_id: str, status: TripStatus | str) -> TripRecord:
        _check_id("query", "trip_id", trip_id)
        new = _enum("set_trip_status", "status", status, TripStatus)
        with self._tx() as cur:
            cur.execute(
                f"UPDATE trips SET status = ? WHERE id = ? RETURNING {TRIP_COLS}",
                (new.value, trip_id),
            )
            row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"no trip {trip_id!r}")
        return _trip(row)

    # -- events --
    def append_events(self, events: Iterable[EventRecord]) -> int:
        rows = []
        for i, e in enumerate(events):
            if not isinstance(e, EventRecord):
                raise RecordError(
                    f"append_events events[{i}] is a {type(e).__name__}; allowed: EventRecord"
                )
            # The payload was checked on construction; this cannot fail.
            rows.append((e.t_s, e.type, e.vehicle_id, json.dumps(e.payload, allow_nan=False)))
        if not rows:
            return 0
        with self._tx() as cur:
            cur.executemany(
                "INSERT INTO events (t_s, type, vehicle_id, payload) VALUES (?, ?, ?, ?)", rows
            )
        return len(rows)

    def events(
        self,
        since_s: float | None = None,
        until_s: float | None = None,
        type: str | None = None,
        vehicle_id: str | None = None,
        limit: int = 1_000,
    ) -> list[EventRecord]:
        conds: list[str] = []
        params: list[Any] = []
        if since_s is not None:
            conds.append("t_s >= ?")
            params.append(_finite("since_s", since_s))
        if until_s is not None:
            conds.append("t_s < ?")
            params.append(_finite("until_s", until_s))
        if type is not None:
            _check_id("query", "type", type)
            conds.append("type = ?")
            params.append(type)
        if vehicle_id is not None:
            _check_id("query", "vehicle_id", vehicle_id)
            conds.append("vehicle_id = ?")
            params.append(vehicle_id)
        params.append(_limit(limit))
        with self._tx(write=False) as cur:
            cur.execute(
                f"SELECT t_s, type, vehicle_id, payload, id FROM events{_where(conds)} "
                "ORDER BY t_s, id LIMIT ?",
                params,
            )
            rows = cur.fetchall()
        return [EventRecord(r[0], r[1], r[2], _json_obj(r[3]), r[4]) for r in rows]

    # -- takeovers --
    def create_takeover(self, takeover: TakeoverRecord) -> TakeoverRecord:
        if not isinstance(takeover, TakeoverRecord):
            raise RecordError(
                f"create_takeover takeover is a {type(takeover).__name__}; allowed: TakeoverRecord"
            )
        params = tuple(operator.attrgetter(*TAKEOVER_FIELDS)(takeover))
        with self._tx() as cur:
            cur.execute(
                f"INSERT INTO takeovers ({TAKEOVER_COLS}) VALUES ({_marks(len(params))}) "
                "ON CONFLICT DO NOTHING RETURNING id",
                params,
            )
            if cur.fetchone() is None:
                raise ConflictError(f"takeover {takeover.id!r} exists; ids must be unique")
        return takeover

    def get_takeover(self, takeover_id: str) -> TakeoverRecord:
        with self._tx(write=False) as cur:
            return self._takeover(cur, takeover_id)

    def _takeover(self, cur: Cursor, takeover_id: str) -> TakeoverRecord:
        _check_id("query", "takeover_id", takeover_id)
        cur.execute(f"SELECT {TAKEOVER_COLS} FROM takeovers WHERE id = ?", (takeover_id,))
        row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"no takeover {takeover_id!r}")
        return TakeoverRecord(*row)

    def claim_takeover(self, takeover_id: str, operator: str, t_s: float) -> TakeoverRecord:
        _check_id("claim_takeover", "takeover_id", takeover_id)
        _check_id("claim_takeover", "operator", operator)
        t = _num("claim_takeover", "t_s", t_s, 0.0, math.inf)
        with self._tx() as cur:
            cur.execute(
                "UPDATE takeovers SET status = 'claimed', operator = ?, claimed_s = ? "
                "WHERE id = ? AND status = 'open' AND requested_s <= ? AND deadline_s >= ? "
                f"RETURNING {TAKEOVER_COLS}",
                (operator, t, takeover_id, t, t),
            )
            row = cur.fetchone()
            if row is not None:
                return TakeoverRecord(*row)
            tk = self._takeover(cur, takeover_id)
        if tk.status is TakeoverStatus.CLAIMED:
            raise ConflictError(
                f"takeover {takeover_id!r} was already claimed by {tk.operator!r} "
                f"at t_s={tk.claimed_s:g}"
            )
        if tk.status is not TakeoverStatus.OPEN:
            raise ConflictError(
                f"takeover {takeover_id!r} is {tk.status.value}; only an open one can be claimed"
            )
        if t < tk.requested_s:
            raise ConflictError(
                f"takeover {takeover_id!r}: claim at t_s={t:g} precedes the request "
                f"(requested_s={tk.requested_s:g})"
            )
        raise ConflictError(
            f"takeover {takeover_id!r}: its deadline_s={tk.deadline_s:g} passed before the claim "
            f"at t_s={t:g}; the truck performs a minimal-risk manoeuvre"
        )

    def resolve_takeover(self, takeover_id: str, operator: str, t_s: float) -> TakeoverRecord:
        _check_id("resolve_takeover", "takeover_id", takeover_id)
        _check_id("resolve_takeover", "operator", operator)
        t = _num("resolve_takeover", "t_s", t_s, 0.0, math.inf)
        with self._tx() as cur:
            cur.execute(
                "UPDATE takeovers SET status = 'resolved', resolved_s = ? "
                "WHERE id = ? AND status = 'claimed' AND operator = ? AND claimed_s <= ? "
                f"RETURNING {TAKEOVER_COLS}",
                (t, takeover_id, operator, t),
            )
            row = cur.fetchone()
            if row is not None:
                return TakeoverRecord(*row)
            tk = self._takeover(cur, takeover_id)
        if tk.status is not TakeoverStatus.CLAIMED:
            raise ConflictError(
                f"takeover {takeover_id!r} is {tk.status.value}; only a claimed one can be resolved"
            )
        if tk.operator != operator:
            raise ConflictError(
                f"takeover {takeover_id!r} is claimed by {tk.operator!r}, not {operator!r}"
            )
        raise ConflictError(
            f"takeover {takeover_id!r}: resolve at t_s={t:g} precedes the claim "
            f"(claimed_s={tk.claimed_s:g})"
        )

    def expire_takeovers(self, now_s: float) -> list[TakeoverRecord]:
        now = _num("expire_takeovers", "now_s", now_s, 0.0, math.inf)
        with self._tx() as cur:
            cur.execute(
                "UPDATE takeovers SET status = 'expired' WHERE status = 'open' AND deadline_s < ? "
                f"RETURNING {TAKEOVER_COLS}",
                (now,),
            )
            rows = cur.fetchall()
        return sorted((TakeoverRecord(*r) for r in rows), key=lambda t: (t.deadline_s, t.id))

    def list_takeovers(
        self, status: TakeoverStatus | str | None = None, limit: int = 10_000
    ) -> list[TakeoverRecord]:
        conds: list[str] = []
        params: list[Any] = []
        if status is not None:
            conds.append("status = ?")
            params.append(_enum("query", "status", status, TakeoverStatus).value)
        params.append(_limit(limit))
        with self._tx(write=False) as cur:
            cur.execute(
                f"SELECT {TAKEOVER_COLS} FROM takeovers{_where(conds)} "
                "ORDER BY deadline_s, id LIMIT ?",
                params,
            )
            return [TakeoverRecord(*r) for r in cur.fetchall()]

    # -- API tokens --
    def add_token(self, name: str, role: Role | str) -> str:
        _check_name("Token", "name", name)
        r = _enum("Token", "role", role, Role)
        for _ in range(3):  # a 64-bit key id collides practically never; retry if it does
            plaintext, key_id, token_hash = make_token()
            with self._tx() as cur:
                cur.execute(
                    "INSERT INTO api_tokens (key_id, name, role, token_hash, created_s) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING key_id",
                    (key_id, name, r.value, token_hash, time.time()),
                )
                if cur.fetchone() is not None:
                    return plaintext
                cur.execute("SELECT 1 FROM api_tokens WHERE name = ?", (name,))
                if cur.fetchone() is not None:
                    raise ConflictError(f"a token named {name!r} exists; revoke it first")
        raise StorageError("could not draw a fresh token id; try again")  # pragma: no cover

    def check_token(self, plaintext: str) -> Role | None:
        parts = split_token(plaintext)
        if parts is None:
            return None
        key_id, secret = parts
        with self._tx(write=False) as cur:
            cur.execute("SELECT role, token_hash FROM api_tokens WHERE key_id = ?", (key_id,))
            row = cur.fetchone()
        if row is None:
            verify_secret(secret, _dummy_hash())  # answer unknown ids as slowly as known ones
            return None
        return Role(row[0]) if verify_secret(secret, row[1]) else None

    def list_tokens(self) -> list[ApiToken]:
        with self._tx(write=False) as cur:
            cur.execute(
                "SELECT key_id, name, role, token_hash, created_s FROM api_tokens ORDER BY name"
            )
            return [ApiToken(r[0], r[1], Role(r[2]), r[3], r[4]) for r in cur.fetchall()]

    def revoke_token(self, name: str) -> bool:
        _check_name("Token", "name", name)
        with self._tx() as cur:
            cur.execute("DELETE FROM api_tokens WHERE name = ?", (name,))
            return cur.rowcount > 0


@functools.cache
def _dummy_hash() -> str:
    return hash_secret("not a token", salt=bytes(16))
