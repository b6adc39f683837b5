"""Storage: every test runs on both backends, SQLite (a temporary file) and the real
PostgreSQL server (a fresh schema per test, dropped afterwards).

PostgreSQL is part of the set-up (issue 6: "tests run against the real server"): if it cannot
be reached, the PostgreSQL cases fail with a message saying so; they are never skipped.
Point ``CONVOY_TEST_PG`` at another server if it does not run on 127.0.0.1:5432.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convoy.cloud.entities import Cargo, Order, TimeWindow
from convoy.service.storage import (
    SCHEMA_VERSION,
    ConflictError,
    EventRecord,
    NotFoundError,
    OrderRecord,
    OrderStatus,
    RecordError,
    Role,
    Storage,
    StorageError,
    TakeoverRecord,
    TakeoverStatus,
    TripRecord,
    TripStatus,
    VehicleState,
    new_id,
    open_storage,
)
from convoy.service.storage.base import check_state_rows

PG_URL = os.environ.get("CONVOY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parent.parent


# --- backends -------------------------------------------------------------------------------


@dataclass
class Backend:
    """A fresh, empty database: ``url`` for ``open_storage`` (also in a subprocess) and
    ``raw(sql)`` to run literal SQL on it behind storage's back."""

    name: str
    url: str
    raw: Callable[[str], list[tuple[Any, ...]]]
    file: Path | None = None


def _pg_admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        reason = " ".join(str(e).split())
    pytest.fail(
        f"PostgreSQL at {PG_URL} is not reachable ({reason}); the storage tests run against "
        "the real server: start it (trust auth, user postgres, database test) or set "
        "CONVOY_TEST_PG",
        pytrace=False,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        db = tmp_path / "convoy.db"

        def raw_sqlite(sql: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(db, isolation_level=None) as conn:
                return conn.execute(sql).fetchall()

        yield Backend("sqlite", f"sqlite:///{db}", raw_sqlite, db)
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = _pg_admin()
    admin.execute(f"CREATE SCHEMA {schema}")
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"

    def raw_pg(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql.encode())
            return cur.fetchall() if cur.description else []

    try:
        yield Backend("postgresql", url, raw_pg)
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def store(backend: Backend) -> Iterator[Storage]:
    s = open_storage(backend.url)
    yield s
    s.close()


def state(vid: str, t: float, **kw: Any) -> VehicleState:
    base: dict[str, Any] = dict(
        t_s=t,
        lon=109.98, lat=39.82, speed_mps=22.0, heading_deg=90.0, accel_mps2=0.0,
        edge="e1", lane=0, soc=0.8, mode="cacc",
    )  # fmt: skip
    base.update(kw)
    return VehicleState(vid, **base)


def order(oid: str, **kw: Any) -> OrderRecord:
    base: dict[str, Any] = dict(
        shipper="Ordos Coal Co.", cargo="coal", origin_site="mine-a", destination_site="plant-b",
        tonnes=310.0, pickup_start_s=21_600.0, pickup_end_s=28_800.0,
        delivery_start_s=25_200.0, delivery_end_s=43_200.0, priority=1,
    )  # fmt: skip
    base.update(kw)
    return OrderRecord(oid, **base)


# --- open_storage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["mysql://u@h/db", "sqlite://host/x.db", "sqlite:///", "", "convoy.db", "sqlite:///a.db?x=1"],
)
def test_bad_url_names_it_and_the_allowed_forms(url: str) -> None:
    with pytest.raises(StorageError) as e:
        open_storage(url)
    assert isinstance(e.value, ValueError)
    assert repr(url) in str(e.value) or repr(url.partition("://")[0]) in str(e.value)
    assert "sqlite:///:memory:" in str(e.value) and "postgresql://" in str(e.value)


def test_unreachable_server_and_missing_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(
        StorageError, match=r"cannot connect to PostgreSQL at postgresql://u:\*\*\*@"
    ):
        open_storage("postgresql://u:secret@127.0.0.1:1/test")
    with pytest.raises(StorageError, match="cannot open the SQLite database"):
        open_storage(f"sqlite:///{tmp_path}/no/such/folder/x.db")
    with pytest.raises(StorageError, match="pool_size"):
        open_storage("sqlite:///:memory:", pool_size=0)


def test_memory_database_works_for_tests() -> None:
    with open_storage("sqlite:///:memory:") as s:
        assert s.schema_version() == SCHEMA_VERSION
        s.write_states([state("T1", 1.0)])
        assert s.latest_states() == [state("T1", 1.0)]


# --- telemetry ------------------------------------------------------------------------------


def _random_states(n: int, vehicles: int, seed: int = 7) -> list[VehicleState]:
    rng = np.random.default_rng(seed)
    soc = rng.uniform(0, 1, n)
    return [
        VehicleState(
            vehicle_id=f"T{i % vehicles:03d}",
            t_s=1.7e9 + 0.1 * i,  # unique times: one well-defined order
            lon=float(rng.uniform(107, 111.5)),
            lat=float(rng.uniform(38.5, 40.7)),
            speed_mps=float(rng.uniform(0, 25)),
            heading_deg=float(rng.uniform(0, 360)),
            accel_mps2=float(rng.normal(0, 1)),
            edge=f"edge-{i % 37}",
            lane=i % 3,
            soc=None if i % vehicles == 0 else float(soc[i]),  # truck T000 is diesel
            mode=("cacc", "acc", "human")[i % 3],
        )
        for i in range(n)
    ]


def test_ten_thousand_states_read_back_exactly(store: Storage) -> None:
    states = _random_states(10_000, vehicles=20)
    for k in range(0, 10_000, 1_000):
        assert store.write_states(states[k : k + 1_000]) == 1_000
    back = store.states(limit=20_000)
    assert len(back) == 10_000
    assert back == states  # every field, bit for bit, in time order
    t3 = store.states(vehicle_id="T003", limit=20_000)
    assert t3 == states[3::20] and len(t3) == 500
    # [since, until) = samples 100..199
    window = store.states(since_s=1.7e9 + 0.1 * 100, until_s=1.7e9 + 0.1 * 200)
    assert window == states[100:200]
    assert store.states(limit=5) == states[:5]
    # the newest of each truck is its last sample: indices 9980..9999
    assert store.latest_states() == sorted(states[-20:], key=lambda s: s.vehicle_id)


def test_latest_state_is_the_newest_even_when_samples_arrive_late(store: Storage) -> None:
    store.write_states([state("T1", 10.0, speed_mps=10.0), state("T2", 5.0)])
    # a late, older T1 sample and a newer T2 sample, and a batch with T3 twice out of order
    store.write_states([state("T1", 7.0, speed_mps=7.0), state("T2", 9.0)])
    store.write_states([state("T3", 4.0), state("T3", 2.0)])
    assert store.latest_states() == [
        state("T1", 10.0, speed_mps=10.0),
        state("T2", 9.0),
        state("T3", 4.0),
    ]
    assert len(store.states()) == 6  # the late one is kept in the history


def test_latest_state_of_an_equal_time_is_the_later_write(store: Storage) -> None:
    store.write_states([state("T1", 5.0, speed_mps=1.0), state("T2", 5.0, speed_mps=1.0)])
    store.write_states([state("T1", 5.0, speed_mps=2.0)])
    store.write_states([state("T2", 5.0, speed_mps=3.0), state("T2", 5.0, speed_mps=4.0)])
    assert [s.speed_mps for s in store.latest_states()] == [2.0, 4.0]


def test_prune_removes_exactly_the_samples_older_than_the_cut(store: Storage) -> None:
    store.write_states([state(v, float(t)) for v in ("A", "B", "C") for t in range(100)])
    store.write_states([state("OLD", 3.0)])  # a truck silent since t = 3 s
    assert store.prune_states(50.0) == 3 * 50 + 1
    left = store.states(limit=1_000)
    assert len(left) == 150
    assert min(s.t_s for s in left) == 50.0  # the cut itself is kept
    assert [s.vehicle_id for s in store.latest_states()] == ["A", "B", "C"]
    assert store.prune_states(50.0) == 0


def _newest_per_truck(states: list[VehicleState]) -> list[VehicleState]:
    """The newest of each truck by time, an equal time going to the later one in the list."""
    newest: dict[str, VehicleState] = {}
    for st_ in states:
        if st_.vehicle_id not in newest or st_.t_s >= newest[st_.vehicle_id].t_s:
            newest[st_.vehicle_id] = st_
    return [newest[v] for v in sorted(newest)]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["A", "B", "C", "D"]),
                st.integers(0, 3_000),  # tenths of a second: late samples, spans > 60 s
                st.sampled_from(["", "e1", "e2"]),
                st.sampled_from(["cacc", "acc"]),
                st.one_of(st.none(), st.floats(0, 1)),
            ),
            min_size=1,
            max_size=40,
        ),
        min_size=1,
        max_size=6,
    ),
    since=st.one_of(st.none(), st.integers(0, 3_000)),
    until=st.one_of(st.none(), st.integers(0, 3_000)),
    vid=st.one_of(st.none(), st.sampled_from(["A", "C"])),
    limit=st.integers(1, 60),
)
def test_chunked_telemetry_reads_back_like_one_row_per_sample(
    backend: Backend,
    batches: list[list[tuple[str, int, str, str, float | None]]],
    since: int | None,
    until: int | None,
    vid: str | None,
    limit: int,
) -> None:
    """Samples are stored as chunks (a truck's samples of one write, split at 60 s); every
    read gives what a table of one row per sample would: the samples in a window, per truck,
    limited, the newest per truck, and retention across a chunk's middle."""
    with open_storage(backend.url) as s:
        s.prune_states(1e12)  # a fresh database per example
        seen: set[tuple[str, int]] = set()
        written: list[VehicleState] = []
        for b in batches:
            batch = []
            for v, t, edge, mode, soc in b:
                if (v, t) in seen:  # unique (truck, time): one well-defined read order
                    continue
                seen.add((v, t))
                batch.append(state(v, t / 10, edge=edge, mode=mode, soc=soc, lane=t % 4))
            s.write_states(batch)
            written += batch
        by_time = sorted(written, key=lambda x: (x.t_s, x.vehicle_id))
        assert s.states(limit=10_000) == by_time
        want = [
            x
            for x in by_time
            if (vid is None or x.vehicle_id == vid)
            and (since is None or x.t_s >= since / 10)
            and (until is None or x.t_s < until / 10)
        ]
        got = s.states(
            vehicle_id=vid,
            since_s=None if since is None else since / 10,
            until_s=None if until is None else until / 10,
            limit=limit,
        )
        assert got == want[:limit]
        assert s.latest_states() == _newest_per_truck(written)
        cut = (since or 0) / 10
        assert s.prune_states(cut) == sum(x.t_s < cut for x in written)
        left = [x for x in by_time if x.t_s >= cut]
        assert s.states(limit=10_000) == left
        assert s.latest_states() == _newest_per_truck([x for x in written if x.t_s >= cut])


def test_chunks_are_one_row_per_truck_per_write(store: Storage, backend: Backend) -> None:
    store.write_states([state(v, 1.0 + k / 10) for k in range(10) for v in ("A", "B", "C")])
    store.write_states([state("A", 5.0)])
    # one batch of 100 s of samples for D: split into chunks of at most 60 s
    store.write_states([state("D", float(t)) for t in range(100)])
    rows = backend.raw(
        "SELECT vehicle_id, t_first, t_last, n FROM vehicle_state_chunks "
        "ORDER BY vehicle_id, t_first"
    )
    assert rows == [
        ("A", 1.0, 1.9, 10),
        ("A", 5.0, 5.0, 1),
        ("B", 1.0, 1.9, 10),
        ("C", 1.0, 1.9, 10),
        ("D", 0.0, 60.0, 61),
        ("D", 61.0, 99.0, 39),
    ]
    assert len(store.states(limit=1_000)) == 131


def _kill_after_acks(script: str, url: str, wanted: int) -> int:
    """Run a writer ``script`` against ``url`` until it has printed (acknowledged) write
    ``wanted``, then SIGKILL it at once, in the middle of its next write; the last write it
    acknowledged."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", script, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    acked = -1
    deadline = time.monotonic() + 30
    while acked < wanted and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert acked >= wanted, proc.stderr.read() if proc.stderr else ""
    return acked


_TELEMETRY_WRITER = """
import sys
from convoy.service.storage import VehicleState, open_storage
s = open_storage(sys.argv[1])
i = 0
while True:
    s.write_states([VehicleState(f"T{k}", float(i), 109.0, 39.0, 10.0, 0.0, 0.0)
                    for k in range(i % 7, 20)])
    print(i, flush=True)  # acknowledged
    i += 1
"""


def test_sigkill_of_a_telemetry_writer_leaves_latest_equal_to_the_newest_samples(
    backend: Backend,
) -> None:
    """The newest sample per truck is read from the stored telemetry itself, so a writer
    killed mid-stream leaves nothing to rebuild: after a restart, ``latest_states`` is the
    newest stored sample of each truck and every acknowledged batch is there."""
    open_storage(backend.url).close()
    acked = _kill_after_acks(_TELEMETRY_WRITER, backend.url, 30)
    with open_storage(backend.url) as s:
        stored = s.states(limit=100_000)
        have = {(x.vehicle_id, x.t_s) for x in stored}
        for i in range(acked + 1):
            assert {(f"T{k}", float(i)) for k in range(i % 7, 20)} <= have
        assert s.latest_states() == _newest_per_truck(stored)
        assert {x.vehicle_id: x.t_s for x in s.latest_states()}["T19"] >= acked


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("speed_mps", math.nan),
        ("speed_mps", -1.0),
        ("speed_mps", True),
        ("lon", 180.5),
        ("lat", -90.01),
        ("t_s", math.inf),
        ("heading_deg", 361.0),
        ("accel_mps2", "1.0"),
        ("soc", 1.5),
        ("lane", -1),
        ("mode", ""),
        ("edge", "a b"),
    ],
)
def test_out_of_range_states_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(RecordError, match=rf"VehicleState\.{field} = "):
        state("T1", 2.0, **{field: value})
    with pytest.raises(RecordError, match=r"VehicleState\.vehicle_id"):
        state("", 2.0)


def test_a_batch_with_garbage_stores_nothing(store: Storage) -> None:
    store.write_states([state("T1", 1.0)])
    with pytest.raises(RecordError, match=r"batch\[1\] is a dict"):
        store.write_states([state("T1", 3.0), {"vehicle_id": "T1"}])  # type: ignore[list-item]
    assert store.states() == [state("T1", 1.0)]
    assert store.latest_states() == [state("T1", 1.0)]


_ROW = operator.attrgetter(*(f.name for f in fields(VehicleState)))


def test_state_rows_store_exactly_what_records_store(store: Storage) -> None:
    states = _random_states(2_000, vehicles=20, seed=11)
    assert store.write_state_rows([_ROW(s) for s in states[:1_000]]) == 1_000
    assert store.write_states(states[1_000:]) == 1_000
    assert store.states(limit=5_000) == states
    assert store.latest_states() == sorted(states[-20:], key=lambda s: s.vehicle_id)
    assert store.write_state_rows([]) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("speed_mps", math.nan),
        ("speed_mps", 100.5),
        ("speed_mps", True),
        ("lon", 180.5),
        ("t_s", math.inf),
        ("accel_mps2", "1.0"),
        ("soc", math.nan),
        ("soc", 1.5),
        ("lane", 64),
        ("lane", 1.0),
        ("mode", ""),
        ("edge", "a b"),
        ("vehicle_id", "T 1"),
    ],
)
def test_a_bad_state_row_stores_nothing_and_is_named_like_a_record(
    store: Storage, field: str, value: Any
) -> None:
    good = [_ROW(s) for s in _random_states(50, vehicles=5)]
    k = [f.name for f in fields(VehicleState)].index(field)
    bad = [*good[:30], (*good[30][:k], value, *good[30][k + 1 :]), *good[31:]]
    with pytest.raises(RecordError, match=rf"VehicleState\.{field} = "):
        store.write_state_rows(bad)
    assert store.states() == [] and store.latest_states() == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["T1", "T2", "", "a b", "x" * 65]),
            st.one_of(st.floats(), st.integers(-1, 2), st.booleans()),
            st.floats(-200, 200),
            st.floats(-100, 100),
            st.floats(-10, 120),
            st.floats(-10, 400),
            st.floats(-60, 60),
            st.sampled_from(["", "e1", "a b", "é", "\x00"]),
            st.one_of(st.integers(-1, 70), st.just(True)),
            st.one_of(st.none(), st.floats(-0.5, 1.5), st.just(math.nan)),
            st.sampled_from(["cacc", "", "gap-closing", "bad mode"]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_bulk_row_check_accepts_exactly_what_records_accept(rows: list[tuple[Any, ...]]) -> None:
    try:
        want: list[tuple[Any, ...]] | str = [_ROW(VehicleState(*r)) for r in rows]
    except RecordError as e:
        want = str(e)
    try:
        got: list[tuple[Any, ...]] | str = check_state_rows(rows)
    except RecordError as e:
        got = str(e)
    assert got == want


def test_copy_throughput_is_printed(store: Storage, backend: Backend) -> None:
    """Not a benchmark: a rough figure for the COPY (PostgreSQL) / executemany (SQLite) path."""
    n, batch = 50_000, 5_000
    states = _random_states(n, vehicles=400, seed=3)
    t0 = time.perf_counter()
    for k in range(0, n, batch):
        store.write_states(states[k : k + batch])
    wall_s = time.perf_counter() - t0
    print(f"\nwrite_states on {backend.name}: {n / wall_s:,.0f} rows/s ({batch:,}-row batches)")
    assert len(store.states(limit=n + 1)) == n
    assert len(store.latest_states()) == 400


# --- orders ---------------------------------------------------------------------------------


def test_same_idempotency_key_twice_gives_one_order(store: Storage) -> None:
    first = store.create_order(order(new_id("ord")), idempotency_key="req-1")
    again = store.create_order(order(new_id("ord")), idempotency_key="req-1")  # a retry
    assert again == first
    assert store.list_orders() == [first]
    with pytest.raises(ConflictError, match=r"req-1.*different contents"):
        store.create_order(order(new_id("ord"), tonnes=1.0), idempotency_key="req-1")
    with pytest.raises(ConflictError, match="exists"):
        store.create_order(order(first.id))
    assert store.list_orders() == [first]


def test_concurrent_retries_with_one_key_store_one_order(backend: Backend) -> None:
    stores = [open_storage(backend.url, migrate=False) for _ in range(2)]
    stores[0].migrate()
    results: list[OrderRecord] = []
    gate = threading.Barrier(6)

    def post(i: int) -> None:
        gate.wait()
        results.append(stores[i % 2].create_order(order(f"o{i}"), idempotency_key="k"))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and len({r.id for r in results}) == 1
    assert len(stores[0].list_orders()) == 1
    for s in stores:
        s.close()


def test_order_life_and_cancel(store: Storage) -> None:
    a = store.create_order(order("a"))
    assert a.status is OrderStatus.OPEN and a.created_s is not None
    assert abs(a.created_s - time.time()) < 60
    assert store.get_order("a") == a
    assert store.cancel_order("a").status is OrderStatus.CANCELLED
    assert store.cancel_order("a").status is OrderStatus.CANCELLED  # again: a no-op
    with pytest.raises(ConflictError, match="cancelled and cannot become planned"):
        store.set_order_status("a", "planned")
    store.create_order(order("b", created_s=5.0))
    store.set_order_status("b", OrderStatus.PLANNED)
    store.set_order_status("b", OrderStatus.DELIVERED)
    with pytest.raises(ConflictError, match="'b' is delivered and cannot become cancelled"):
        store.cancel_order("b")
    with pytest.raises(NotFoundError, match="no order 'zz'"):
        store.cancel_order("zz")
    with pytest.raises(RecordError, match="status"):
        store.list_orders(status="lost")
    assert [o.id for o in store.list_orders()] == ["b", "a"]  # by created_s: 5 s, then now
    assert [o.id for o in store.list_orders(status="delivered")] == ["b"]


def test_orders_convert_to_and_from_the_cloud_layer(store: Storage) -> None:
    o = Order("x1", "Ordos Coal Co.", Cargo.COKE, "m", "p", 62.0, TimeWindow(0, 3600),
              TimeWindow(1800, 7200), 2)  # fmt: skip
    rec = store.create_order(OrderRecord.from_order(o, created_s=1.0))
    assert store.get_order("x1").to_order() == o and rec.cargo == "coke"


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("cargo", "gold", "cargo"),
        ("tonnes", 0.0, "tonnes"),
        ("destination_site", "mine-a", "destination_site"),
        ("pickup_end_s", 0.0, "pickup_end_s"),
        ("priority", 3, "priority"),
        ("shipper", " ", "shipper"),
        ("status", "lost", "status"),
    ],
)
def test_bad_orders_are_rejected_with_the_field(field: str, value: Any, match: str) -> None:
    with pytest.raises(RecordError, match=rf"Order 'o'\.{match} = "):
        order("o", **{field: value})


# --- plans, trips, events -------------------------------------------------------------------


def test_plans_are_versioned(store: Storage) -> None:
    assert store.latest_plan() is None
    assert store.save_plan({"trips": [1, 2]}, plan_id="2025-01-15") == 1
    assert store.save_plan({"trips": [1, 2, 3], "note": "煤 re-plan"}, "2025-01-15") == 2
    assert store.save_plan({"trips": []}, plan_id="2025-01-16") == 3
    latest = store.latest_plan("2025-01-15")
    assert latest is not None and latest.version == 2
    assert latest.plan == {"trips": [1, 2, 3], "note": "煤 re-plan"}
    assert store.latest_plan() == store.get_plan(3)
    with pytest.raises(NotFoundError):
        store.get_plan(4)
    with pytest.raises(RecordError, match="NaN"):
        store.save_plan({"x": math.nan})


def test_trips_are_upserted_by_id(store: Storage) -> None:
    t1 = TripRecord("tr1", ("L1", "F1", "F2"), "d1", "mine-a", "plant-b", 100.0, 4000.0,
                    93.0, ("o1",), plan_version=1)  # fmt: skip
    t2 = TripRecord("tr2", ("L2",), None, "plant-b", "mine-a", 50.0, 3000.0)
    assert store.save_trips([t1, t2]) == 2
    assert store.list_trips() == [t2, t1]  # by departure
    moved = replace(t1, depart_s=200.0, plan_version=2)
    store.save_trips([moved])
    assert store.get_trip("tr1") == moved
    assert store.set_trip_status("tr1", "active").status is TripStatus.ACTIVE
    assert [t.id for t in store.list_trips(plan_version=2)] == ["tr1"]
    assert [t.id for t in store.list_trips(status="planned")] == ["tr2"]
    with pytest.raises(NotFoundError):
        store.set_trip_status("nope", "done")


def test_events_round_trip_and_filter(store: Storage) -> None:
    payload = {"decel_mps2": -4.5, "ids": [1, 2], "note": "扬尘 dust", "ok": True, "x": None}
    evs = [
        EventRecord(10.0, "hard_brake", "T1", payload),
        EventRecord(5.0, "takeover_request", "T2", {"cause": "odd-weather"}),
        EventRecord(10.0, "hard_brake", "T2"),
        EventRecord(20.0, "shift_start", None, {"drivers": 7}),
    ]
    assert store.append_events(evs) == 4
    got = store.events()
    assert [(e.t_s, e.type, e.vehicle_id) for e in got] == [
        (5.0, "takeover_request", "T2"),
        (10.0, "hard_brake", "T1"),  # equal times keep write order
        (10.0, "hard_brake", "T2"),
        (20.0, "shift_start", None),
    ]
    assert got[1].payload == payload and got[1].id is not None and got[1].id < got[2].id  # type: ignore[operator]
    assert [e.vehicle_id for e in store.events(type="hard_brake")] == ["T1", "T2"]
    assert [e.t_s for e in store.events(since_s=10.0, until_s=20.0)] == [10.0, 10.0]
    assert [e.type for e in store.events(vehicle_id="T2", limit=1)] == ["takeover_request"]


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"v": math.nan}, "finite numbers only"),
        ({"v": "a\x00b"}, "NUL"),
        ({"v": "\ud800"}, "valid Unicode"),
        ({"v": {1, 2}}, "plain JSON"),
        ({1: "x"}, "keys that are strings"),
        ({"v": "x" * 70_000}, "at most 65536 bytes"),
        ([1, 2], "a JSON object"),
    ],
)
def test_malformed_payloads_are_refused(payload: Any, match: str) -> None:
    with pytest.raises(RecordError, match=match):
        EventRecord(2.0, "bad", "T1", payload)


_fuzz_clock = itertools.count()
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities included: they must be refused
    | st.text(),  # any code point: NUL and lone surrogates must be refused
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.dictionaries(st.text(), _json, max_size=5))
def test_any_payload_is_refused_or_read_back_unchanged(store: Storage, payload: Any) -> None:
    t_s = float(next(_fuzz_clock))  # one example, one time: read back exactly this event
    try:
        event = EventRecord(t_s, "fuzz", "T1", payload)
    except RecordError:
        return
    store.append_events([event])
    assert [e.payload for e in store.events(since_s=t_s)] == [payload]


def test_event_payload_is_a_private_copy() -> None:
    p: dict[str, Any] = {"a": [1]}
    e = EventRecord(1.0, "x", None, p)
    p["a"].append(2)
    assert e.payload == {"a": [1]}


def test_one_storage_is_shared_safely_by_threads(store: Storage) -> None:
    def worker(k: int) -> None:
        for i in range(25):
            store.append_events([EventRecord(float(i), "tick", f"T{k}")])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = store.events(limit=1_000)
    assert len(got) == 150 and len({e.id for e in got}) == 150


# --- takeovers ------------------------------------------------------------------------------


def test_two_operators_claiming_at_once_exactly_one_wins(backend: Backend) -> None:
    """Two threads, each with its own Storage (its own connections), claim the same request
    at the same moment, 15 times over: one claim succeeds, the other gets a ConflictError
    naming the winner."""
    a, b = open_storage(backend.url), open_storage(backend.url)
    rounds = 15
    for k in range(rounds):
        a.create_takeover(TakeoverRecord(f"tk{k}", "T1", "sensor-fault", 0.0, 100.0))
    outcomes: dict[str, list[Any]] = {"op-a": [], "op-b": []}
    gate = threading.Barrier(2)

    def claimer(s: Storage, who: str) -> None:
        for k in range(rounds):
            gate.wait()
            try:
                outcomes[who].append(s.claim_takeover(f"tk{k}", who, 10.0))
            except ConflictError as e:
                outcomes[who].append(e)

    threads = [threading.Thread(target=claimer, args=(s, w)) for s, w in ((a, "op-a"), (b, "op-b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(rounds):
        ra, rb = outcomes["op-a"][k], outcomes["op-b"][k]
        wins = [r for r in (ra, rb) if isinstance(r, TakeoverRecord)]
        assert len(wins) == 1, (k, ra, rb)
        loser = rb if wins[0] is ra else ra
        assert isinstance(loser, ConflictError)
        assert f"already claimed by {wins[0].operator!r}" in str(loser)
        assert a.get_takeover(f"tk{k}").operator == wins[0].operator
    a.close()
    b.close()


def test_takeover_claim_resolve_and_expiry(store: Storage) -> None:
    for tid, req, dl in [("t1", 0.0, 30.0), ("t2", 5.0, 10.0), ("t3", 5.0, 60.0), ("t4", 1.0, 8.0)]:
        store.create_takeover(TakeoverRecord(tid, "T" + tid, "odd-weather", req, dl))
    with pytest.raises(ConflictError, match="exists"):
        store.create_takeover(TakeoverRecord("t1", "T9", "comm-loss", 0.0, 1.0))
    store.claim_takeover("t1", "op1", 9.0)
    with pytest.raises(ConflictError, match="claimed by 'op1', not 'op2'"):
        store.resolve_takeover("t1", "op2", 12.0)
    with pytest.raises(ConflictError, match="deadline_s=60 passed"):
        store.claim_takeover("t3", "op2", 61.0)
    done = store.resolve_takeover("t1", "op1", 12.0)
    assert (done.status, done.claimed_s, done.resolved_s) == (TakeoverStatus.RESOLVED, 9.0, 12.0)
    # at 10 s only t4 (deadline 8 s) is overdue; t2's deadline of exactly 10 s is not past
    assert [t.id for t in store.expire_takeovers(10.0)] == ["t4"]
    assert [t.id for t in store.expire_takeovers(40.0)] == ["t2"]
    assert store.expire_takeovers(40.0) == []
    assert [t.id for t in store.list_takeovers("expired")] == ["t4", "t2"]
    assert [t.id for t in store.list_takeovers(TakeoverStatus.OPEN)] == ["t3"]
    with pytest.raises(ConflictError, match="is expired; only an open one"):
        store.claim_takeover("t2", "op1", 9.0)
    with pytest.raises(NotFoundError):
        store.claim_takeover("t9", "op1", 1.0)


# --- tokens ---------------------------------------------------------------------------------


def test_tokens_check_roles_and_store_no_plaintext(store: Storage, backend: Backend) -> None:
    plain = {role: store.add_token(f"user {role}", role) for role in Role}
    for role, tok in plain.items():
        assert store.check_token(tok) is role
    tok = plain[Role.ADMIN]
    assert store.check_token(tok[:-1] + ("A" if tok[-1] != "A" else "B")) is None
    assert store.check_token("cvy.0000000000000000." + tok.split(".")[2]) is None
    assert store.check_token("") is None and store.check_token("garbage") is None
    with pytest.raises(ConflictError, match="exists"):
        store.add_token("user admin", "viewer")
    with pytest.raises(RecordError, match="role"):
        store.add_token("eve", "root")
    # no plaintext or secret anywhere in the table (nor, for SQLite, in the files on disk)
    rows = backend.raw("SELECT key_id, name, role, token_hash, created_s FROM api_tokens")
    dump = repr(rows)
    for t in plain.values():
        secret = t.split(".")[2]
        assert secret not in dump
        assert t.split(".")[1] in dump  # the public key id is there, to look the hash up
    if backend.file is not None:
        disk = b"".join(p.read_bytes() for p in backend.file.parent.glob("convoy.db*"))
        assert not any(t.split(".")[2].encode() in disk for t in plain.values())
    assert all(t.token_hash.startswith("scrypt$") for t in store.list_tokens())
    assert store.revoke_token("user admin") and store.check_token(tok) is None
    assert Role.ADMIN.allows("viewer") and Role.OPERATOR.allows(Role.DISPATCHER)
    assert not Role.VIEWER.allows(Role.DISPATCHER) and not Role.OPERATOR.allows("admin")
    assert not store.revoke_token("user admin")


# --- migrations -----------------------------------------------------------------------------


def test_migrate_twice_is_a_no_op(store: Storage, backend: Backend) -> None:
    store.create_order(order("a"))
    assert store.migrate() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION
    assert backend.raw("SELECT version FROM schema_migrations ORDER BY version") == [
        (v,) for v in range(1, SCHEMA_VERSION + 1)
    ]
    assert [o.id for o in store.list_orders()] == ["a"]


def test_upgrade_from_a_v1_database_keeps_and_extends_its_data(backend: Backend) -> None:
    s = open_storage(backend.url, migrate=False)
    assert s.schema_version() == 0
    assert s.migrate(target=1) == 1
    cols = "vehicle_id, t_s, lon, lat, speed_mps, heading_deg, accel_mps2, edge, lane, soc, mode"
    backend.raw(
        f"INSERT INTO vehicle_states ({cols}) VALUES "
        "('T1', 5, 109, 39, 10, 0, 0, 'e', 0, 0.5, 'cacc'), "
        "('T1', 9, 109.5, 39, 11, 0, 0, 'e', 1, 0.4, 'cacc'), "
        "('T2', 7, 108, 38.9, 0, 180, 0, '', 0, NULL, 'human')"
    )
    backend.raw(
        "INSERT INTO orders (id, shipper, cargo, origin_site, destination_site, tonnes, "
        "pickup_start_s, pickup_end_s, delivery_start_s, delivery_end_s, priority, status, "
        "created_s) VALUES ('old', 'Ordos Coal Co.', 'coal', 'm', 'p', 31, 0, 10, 5, 20, 0, "
        "'open', 1)"
    )
    assert s.migrate() == SCHEMA_VERSION == 3
    assert s.get_order("old").tonnes == 31.0
    # v3 moved the v1 samples into chunks: they read back unchanged
    assert s.states() == [
        VehicleState("T1", 5.0, 109.0, 39.0, 10.0, 0.0, 0.0, "e", 0, 0.5, "cacc"),
        VehicleState("T2", 7.0, 108.0, 38.9, 0.0, 180.0, 0.0, "", 0, None, "human"),
        VehicleState("T1", 9.0, 109.5, 39.0, 11.0, 0.0, 0.0, "e", 1, 0.4, "cacc"),
    ]
    # the newest sample per truck, read from the chunks
    assert s.latest_states() == [
        VehicleState("T1", 9.0, 109.5, 39.0, 11.0, 0.0, 0.0, "e", 1, 0.4, "cacc"),
        VehicleState("T2", 7.0, 108.0, 38.9, 0.0, 180.0, 0.0, "", 0, None, "human"),
    ]
    # and the v2 features work on the upgraded database
    new = s.create_order(order("new"), idempotency_key="k")
    assert s.create_order(order("new2"), idempotency_key="k") == new
    s.save_trips([TripRecord("tr", ("T1",), None, "m", "p", 0.0, 1.0)])
    s.close()


def test_a_database_newer_than_the_code_is_refused(backend: Backend) -> None:
    open_storage(backend.url).close()
    backend.raw("INSERT INTO schema_migrations (version, name, applied_s) VALUES (99, 'x', 0)")
    with pytest.raises(StorageError, match=r"schema version 99.*upgrade convoy"):
        open_storage(backend.url)


# --- durability -----------------------------------------------------------------------------

_WRITER = """
import sys
from convoy.service.storage import EventRecord, OrderRecord, open_storage
s = open_storage(sys.argv[1])
i = 0
while True:
    o = OrderRecord(f"o{i}", "Ordos Coal Co.", "coal", "m", "p", 31.0, 0, 10, 5, 20)
    s.create_order(o, idempotency_key=f"k{i}")
    s.append_events([EventRecord(float(i), "order_created", None, {"order": f"o{i}"})])
    print(i, flush=True)  # acknowledged: both writes returned
    i += 1
"""


def test_sigkill_right_after_acknowledged_writes_loses_nothing(backend: Backend) -> None:
    """A writer creates orders and events in a loop and prints each one once its calls have
    returned; it is killed with SIGKILL mid-stream. Every acknowledged order and event is
    there afterwards, and nothing half-written is."""
    open_storage(backend.url).close()  # migrate first, outside the timed part
    acked = _kill_after_acks(_WRITER, backend.url, 24)
    with open_storage(backend.url) as s:
        orders = {o.id for o in s.list_orders()}
        events = s.events(limit=10_000)
        assert {f"o{i}" for i in range(acked + 1)} <= orders
        assert {e.payload["order"] for e in events} >= {f"o{i}" for i in range(acked + 1)}
        assert len(orders) in (acked + 1, acked + 2)  # at most the one in flight besides
        assert all(s.get_order(o).tonnes == 31.0 for o in orders)
    if backend.file is not None:
        with sqlite3.connect(backend.file) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
