"""Telemetry end to end: MQTT states through a real Mosquitto and the ingest into PostgreSQL.

3,000 states (100 trucks: 10 one-state messages each, one 10-state batch message and one
10-state columns message each) go through a private Mosquitto, an ``Ingest`` and
``StorageSink`` into a fresh PostgreSQL schema, in each of the ingest's modes (models or rows,
commit thread or not); every state must be stored exactly once with the values that were
sent. PostgreSQL not reachable is a failure, not a skip: set ``CONVOY_TEST_PG`` to point at
another server.
"""

from __future__ import annotations

import json
import operator
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convoy.service.mqtt import acl, topics
from convoy.service.mqtt.bench import _RawPublisher, private_broker
from convoy.service.mqtt.ingest import BrokerSettings, Ingest, IngestSettings
from convoy.service.mqtt.messages import MODE_NAMES, state_row
from convoy.service.mqtt.messages import VehicleState as MqttState
from convoy.service.storage import open_storage
from convoy.service.storage.base import RecordError, check_state_rows
from convoy.service.storage.base import VehicleState as StoredState
from convoy.service.storage.chunks import decode_chunk
from convoy.service.telemetry_bench import (
    DEFAULT_PG_URL,
    StorageSink,
    schema_url,
    to_storage,
    to_storage_rows,
)

PG_URL = os.environ.get("CONVOY_TEST_PG", DEFAULT_PG_URL)
T0_MS = 1_790_000_000_000  # 2026-09-21, a fixed epoch time so rows are reproducible


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        pytest.fail(
            f"PostgreSQL at {PG_URL} is not reachable ({' '.join(str(e).split())}); this test "
            "runs against the real server: start it (trust auth, user postgres, database test) "
            "or set CONVOY_TEST_PG",
            pytrace=False,
        )
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema, admin
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def _state(vid: str, t_ms: int, k: int) -> dict[str, Any]:
    """A sample whose values differ per truck and per sample (k), every optional field set
    on even k and left out on odd k."""
    s: dict[str, Any] = {
        "id": vid,
        "time_ms": t_ms,
        "lon_deg": 109.78 + k * 1e-6,
        "lat_deg": 39.61 + k * 1e-7,
        "speed_mps": (k % 250) / 10.0,
        "heading_deg": float(k % 360),
        "accel_mps2": (k % 21 - 10) / 10.0,
    }
    if k % 2 == 0:
        s |= {"soc": (k % 100) / 100.0, "mode": "gap-closing", "edge": "e_dongsheng", "lane": k % 3}
    return s


def _as_columns(vid: str, states: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``columns`` payload: one array per field, ``null`` where a sample lacks it."""
    names = [n for n in MqttState.model_fields if n != "id"]
    return {"id": vid} | {n: [s.get(n) for s in states] for n in names}


def test_to_storage_maps_fields_and_defaults() -> None:
    full = to_storage(MqttState.model_validate(_state("t1", 1_700_000_000_123, 4)))
    assert full == StoredState(
        vehicle_id="t1", t_s=1_700_000_000.123, lon=109.78 + 4e-6, lat=39.61 + 4e-7,
        speed_mps=0.4, heading_deg=4.0, accel_mps2=-0.6, edge="e_dongsheng", lane=1,
        soc=0.04, mode="gap-closing",
    )  # fmt: skip
    bare = to_storage(MqttState.model_validate(_state("t1", 1_700_000_000_000, 1)))
    assert (bare.edge, bare.lane, bare.soc, bare.mode) == ("", 0, None, "unknown")


_STORED = operator.attrgetter(*(f.name for f in fields(StoredState)))


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        MqttState,
        id=st.sampled_from(["T0001", "a.b:c_d-e"]),
        time_ms=st.integers(946_684_800_000, 4_102_444_799_999),
        lon_deg=st.floats(-180, 180),
        lat_deg=st.floats(-90, 90),
        speed_mps=st.floats(0, 163.8),
        heading_deg=st.floats(0, 360),
        accel_mps2=st.floats(-20, 20),
        soc=st.none() | st.floats(0, 1),
        mode=st.none() | st.sampled_from(MODE_NAMES),
        edge=st.none() | st.sampled_from(["e1", "x" * 64, "~!"]),
        lane=st.none() | st.integers(0, 255),
    )
)
def test_row_mapping_is_the_record_mapping(s: MqttState) -> None:
    # every valid MQTT sample: the same stored row as to_storage, or left out where
    # to_storage raises; and storage's bulk check passes what the mapping keeps
    rows, bad = to_storage_rows([state_row(s)])
    try:
        want = [_STORED(to_storage(s))]
    except RecordError:
        want = []
    assert rows == want and bad == 1 - len(want)
    assert check_state_rows(rows) == rows


@pytest.mark.parametrize(("rows", "pipeline"), [(True, True), (False, True), (True, False)])
def test_states_stored_exactly_once_with_equal_values(
    pg_schema: tuple[str, psycopg.Connection[Any]], rows: bool, pipeline: bool
) -> None:
    schema, admin = pg_schema
    store = open_storage(schema_url(PG_URL, schema, "convoy-test"), pool_size=1)
    sink = StorageSink(store, rows=rows)
    trucks = acl.truck_ids(100)
    sent: list[dict[str, Any]] = []
    try:
        with private_broker() as (port, _pid):
            ing = Ingest(
                sink,
                IngestSettings(
                    broker=BrokerSettings("127.0.0.1", port),
                    client_id=f"test-pipe-{uuid.uuid4().hex[:8]}",
                    session_expiry_s=0,
                    pipeline=pipeline,
                ),
                rows=rows,
            )
            th = ing.start()
            try:
                ing.wait_connected(10.0)
                pub = _RawPublisher(port, f"test-pub-{uuid.uuid4().hex[:8]}")
                for i, vid in enumerate(trucks):
                    for j in range(10):  # 10 one-state messages: 100 ms apart
                        s = _state(vid, T0_MS + 100 * j, 20 * i + j)
                        sent.append(s)
                        pub.publish(topics.state_topic(vid).encode(), json.dumps(s).encode())
                    batch = [_state(vid, T0_MS + 1_000 + 100 * j, 20 * i + 10 + j)
                             for j in range(10)]  # fmt: skip
                    sent += batch
                    body = json.dumps({"id": vid, "states": batch}).encode()
                    pub.publish(topics.states_topic(vid).encode(), body)
                    cols = [_state(vid, T0_MS + 2_000 + 100 * j, 20 * i + 20 + j)
                            for j in range(10)]  # fmt: skip
                    sent += cols
                    body = json.dumps(_as_columns(vid, cols)).encode()
                    pub.publish(topics.columns_topic(vid).encode(), body)
                    pub.pump()
                end = time.monotonic() + 10.0
                while (pub.acked < pub.sent or sink.states < len(sent)) and (
                    time.monotonic() < end
                ):
                    pub.pump(0.01)
                pub.close()
                assert pub.acked == pub.sent == 1_200
            finally:
                ing.stop()
                th.join(5.0)
    finally:
        store.close()
    assert len(sent) == 3_000
    assert sink.unstorable == 0
    assert ing.stats.rejected.total() == 0
    stored = [
        r
        for vid, data in admin.execute(
            f"SELECT vehicle_id, data FROM {schema}.vehicle_state_chunks"
        ).fetchall()
        for r in decode_chunk(vid, data)
    ]
    assert len(stored) == 3_000, f"{len(stored)} rows stored of 3,000 sent"
    want = sorted(
        (
            s["id"], s["time_ms"] / 1000.0, s["lon_deg"], s["lat_deg"], s["speed_mps"],
            s["heading_deg"], s["accel_mps2"], s.get("edge", ""), s.get("lane", 0),
            s.get("soc"), s.get("mode", "unknown"),
        )
        for s in sent
    )  # fmt: skip
    assert sorted(tuple(r) for r in stored) == want  # each once, every value equal
    with open_storage(schema_url(PG_URL, schema, "convoy-test")) as again:
        latest = [(x.vehicle_id, x.t_s) for x in again.latest_states()]
    assert latest == sorted((v, (T0_MS + 2_900) / 1000.0) for v in trucks)
