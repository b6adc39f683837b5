"""Benchmark (not a test): vehicle states through Mosquitto into PostgreSQL.

``python -m convoy.service.telemetry_bench [--trucks 10000] [--seconds 5] [--batch 1 10]
[--payload auto|states|columns] [--workers 1] [--serial] [--settle-s 10]
[--pg postgresql://postgres@127.0.0.1:5432/test]``

The pipeline of ``convoy serve``'s telemetry: trucks publish (QoS 1) to a private Mosquitto,
``--workers`` :class:`~convoy.service.mqtt.ingest.Ingest` processes (one shared
subscription, one PostgreSQL connection each, row mode) validate each payload, and their
:class:`StorageSink` maps the rows to storage's (:func:`to_storage_rows`) and stores them with
``Storage.write_state_rows`` (one binary COPY of chunks, a row per truck per batch, in one
transaction)
into a fresh PostgreSQL schema (dropped afterwards). The sink runs on each worker's commit
thread while the worker reads the next batch (``--serial``: on the worker's loop, reading
nothing meanwhile). MQTT messages are acknowledged only after the commit. The load generator
(pre-built packets, one process), the broker helper and the CPU reader are
``convoy.service.mqtt.bench``'s.

Payloads: ``--batch 1`` sends ``state`` messages; more samples per message send ``states``
(``VehicleStateBatch``) or, with ``--payload columns``, ``columns``
(``VehicleStateColumns``).

For each batch size (states per message) it reports:

* states/s offered and ingested (rows committed per second of the ingest's span);
* ``commit_wall_share``: the share of each worker's wall time its sink spent storing;
* loss: states acknowledged to the publisher minus distinct ``(vehicle_id, t_s)`` rows in
  PostgreSQL once the ingest made no progress for ``--settle-s``, and duplicate rows
  (redeliveries) beside it; with a loss, which samples are missing (``missing``);
* p50/p99/max latency from the publish stamp of each message's newest sample to the commit
  of the batch that holds it;
* CPU seconds per 100,000 states of the broker, the ingest process (split, from the commit
  thread's CPU clock, into MQTT+validation on the loop, the mapping and the client side of
  ``write_state_rows``), the PostgreSQL backends of the benchmark's connections and the whole
  PostgreSQL server (every ``postgres`` process: on a shared machine this includes others'
  work), and of the publisher (the load generator, not part of the pipeline);
* the load average before the run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import time
import uuid
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from convoy.service.mqtt import acl
from convoy.service.mqtt.bench import (
    PayloadKind,
    _cpu_s,
    _publisher,
    broker_dropped,
    private_broker,
    sent_samples,
)
from convoy.service.mqtt.ingest import BrokerSettings, Ingest, IngestSettings
from convoy.service.mqtt.messages import StateRow as MqttRow
from convoy.service.mqtt.messages import VehicleState as MqttState
from convoy.service.mqtt.messages import now_ms
from convoy.service.storage import open_storage
from convoy.service.storage.base import MAX_LANE, MAX_SPEED_MPS, RecordError, StateRow, Storage
from convoy.service.storage.base import VehicleState as StoredState
from convoy.service.storage.chunks import decode_chunk

#: The local test server of the project (trust auth, user postgres, database test).
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: Tag on the benchmark's PostgreSQL connections, to find their backends' CPU time.
APP_NAME = "convoy-telemetry-bench"


def to_storage(s: MqttState) -> StoredState:
    """Map one MQTT sample to storage's record: ``time_ms`` -> ``t_s`` (epoch seconds),
    ``*_deg`` -> ``lon``/``lat``; a missing edge is ``""``, lane ``0``, mode ``"unknown"``.

    Raises:
        RecordError: the sample is valid MQTT but outside storage's ranges (speed above
            100 m/s, lane above 63).
    """
    return StoredState(
        vehicle_id=s.id,
        t_s=s.time_ms / 1000.0,
        lon=s.lon_deg,
        lat=s.lat_deg,
        speed_mps=s.speed_mps,
        heading_deg=s.heading_deg,
        accel_mps2=s.accel_mps2,
        edge=s.edge or "",
        lane=s.lane or 0,
        soc=s.soc,
        mode=s.mode or "unknown",
    )


def to_storage_rows(rows: list[MqttRow]) -> tuple[list[StateRow], int]:
    """:func:`to_storage` for the ingest's row mode: MQTT rows (checked by the ingest) as
    storage rows, without a record per sample; returns them and how many were left out
    because storage's ranges are narrower (speed above 100 m/s, lane above 63: the only
    checks of storage's that MQTT's do not imply). ``Storage.write_state_rows`` checks the
    rest again in bulk."""
    out = [
        (v, t / 1000.0, lon, lat, sp, hd, ac, edge or "", lane or 0, soc, mode or "unknown")
        for v, t, lon, lat, sp, hd, ac, soc, mode, edge, lane in rows
        if sp <= MAX_SPEED_MPS and (lane is None or lane <= MAX_LANE)
    ]
    return out, len(rows) - len(out)


class StorageSink:
    """An ingest sink that stores every batch and returns after the commit (so the MQTT
    acknowledgements follow it).

    With ``rows`` it takes the ingest's row mode (``Ingest(..., rows=True)``): MQTT
    :data:`~convoy.service.mqtt.messages.StateRow` tuples, stored with
    :func:`to_storage_rows` and ``storage.write_state_rows``; otherwise MQTT ``VehicleState``
    models, stored with :func:`to_storage` and ``storage.write_states``. Samples that MQTT
    accepts but storage does not are counted in ``unstorable`` and skipped: raising would
    make the broker redeliver them for ever. With ``latency`` on, ``lat_ms`` collects, per
    message of ``per_message`` samples, the commit time minus the publish stamp of its
    newest sample. ``map_cpu_s`` and ``write_cpu_s`` are the calling thread's CPU seconds in
    the mapping and in the write; ``write_wall_s`` is the wall time spent writing.
    """

    def __init__(
        self, storage: Storage, latency: bool = False, per_message: int = 1, rows: bool = False
    ) -> None:
        self.storage = storage
        self.latency = latency
        self.per_message = per_message
        self.rows = rows
        self.states = 0
        self.unstorable = 0
        self.first_s = 0.0
        self.last_s = 0.0
        self.map_cpu_s = 0.0
        self.write_cpu_s = 0.0
        self.write_wall_s = 0.0
        self.lat_ms: list[np.ndarray] = []

    def __call__(self, states: list[Any]) -> None:
        c0 = time.thread_time()
        if self.rows:
            rows, bad = to_storage_rows(states)
        else:
            records: list[StoredState] = []
            bad = 0
            for s in states:
                try:
                    records.append(to_storage(s))
                except RecordError:
                    bad += 1
        c1, w1 = time.thread_time(), time.perf_counter()
        store = self.storage
        n = store.write_state_rows(rows) if self.rows else store.write_states(records)
        t = time.monotonic()
        self.map_cpu_s += c1 - c0
        self.write_cpu_s += time.thread_time() - c1
        self.write_wall_s += time.perf_counter() - w1
        if not self.states:
            self.first_s = t
        self.last_s = t
        self.states += n
        self.unstorable += bad
        if self.latency:
            self.lat_ms.append(now_ms() - np.asarray(self._stamps(states), dtype=np.int64))

    def _stamps(self, states: list[Any]) -> list[int]:
        """The stamp of each message's newest sample: the last of a run of one truck's."""
        if self.rows:
            ids, times = [r[0] for r in states], [r[1] for r in states]
        else:
            ids, times = [s.id for s in states], [s.time_ms for s in states]
        if self.per_message == 1:
            return times
        last = [a != b for a, b in itertools.pairwise(ids)] + [True]
        return [t for t, end in zip(times, last, strict=True) if end]


def _pg_admin(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        reason = " ".join(str(e).split())
        raise SystemExit(f"PostgreSQL at {url} is not reachable: {reason}") from None


def schema_url(base_url: str, schema: str, app: str = APP_NAME) -> str:
    """``base_url`` with the libpq options that put ``schema`` first on the search path."""
    return f"{base_url}?options=-csearch_path%3D{schema}&application_name={app}"


def _postgres_pids() -> list[int]:
    """Every process named ``postgres`` on this machine (the server and its backends)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if (p / "comm").read_text().strip() == "postgres":
                    out.append(int(p.name))
    return out


def _cpu_of(pids: list[int]) -> dict[int, float]:
    return {p: _cpu_s(p) for p in pids}


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings (processes that started in between count
    from zero; ones that ended are lost)."""
    return sum(v - before.get(p, 0.0) for p, v in after.items() if v == v)


def _worker(
    port: int, index: int, url: str, batch: int, pipeline: bool, counter: Any,
    ready: EventType, stop: EventType, out: mp.Queue[Any],
) -> None:  # fmt: skip
    store = open_storage(url, migrate=False, pool_size=1)
    sink = StorageSink(store, latency=True, per_message=batch, rows=True)

    def counted(rows: list[MqttRow]) -> None:
        sink(rows)
        with counter.get_lock():
            counter.value += len(rows)

    ing = Ingest(
        counted,
        IngestSettings(
            broker=BrokerSettings("127.0.0.1", port),
            client_id=f"bench-pg-ingest-{index}",
            session_expiry_s=0,
            pipeline=pipeline,
        ),
        rows=True,
    )
    th = ing.start()
    ing.wait_connected(10.0)
    ready.set()
    stop.wait()
    ing.stop()
    th.join(5.0)
    store.close()
    lat = np.concatenate(sink.lat_ms) if sink.lat_ms else np.zeros(0, np.int64)
    out.put({"states": sink.states, "first_s": sink.first_s, "last_s": sink.last_s,
             "lat_ms": lat, "sink_calls": ing.stats.sink_calls, "map_cpu_s": sink.map_cpu_s,
             "write_cpu_s": sink.write_cpu_s, "write_wall_s": sink.write_wall_s,
             "unstorable": sink.unstorable, "connects": ing.stats.connects,
             "rejected": sum(ing.stats.rejected.values())})  # fmt: skip


@dataclass
class Result:
    """One configuration's figures (rates per second, CPU seconds per 100,000 states)."""

    batch: int
    payload: str
    workers: int
    pipeline: bool
    trucks: int
    seconds: float
    load_avg_before: tuple[float, float, float]
    offered_states_per_s: float
    ingested_states_per_s: float
    published_states: int
    acked_states: int
    rows_in_pg_at_settle: int
    rows_in_pg: int
    distinct_rows_in_pg: int
    lost_states: int
    duplicate_rows: int
    missing: dict[str, Any]
    broker_dropped_messages: int | None
    p50_ms: float
    p99_ms: float
    max_ms: float
    sink_calls: int
    mean_states_per_sink_call: float
    commit_wall_share: float
    cpu_s_per_100k: dict[str, float]
    publisher_drain_s: float


def run_one(
    batch: int,
    trucks: int,
    seconds: float,
    pg_url: str,
    workers: int = 1,
    settle_s: float = 10.0,
    payload: PayloadKind | None = None,
    pipeline: bool = True,
) -> Result:
    """One configuration: private broker, fresh schema, load, count, drop the schema."""
    kind: PayloadKind = payload or ("state" if batch == 1 else "states")
    load = os.getloadavg()
    ctx = mp.get_context("fork")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin(pg_url)
    admin.execute(f"CREATE SCHEMA {schema}")
    url = schema_url(pg_url, schema)
    try:
        open_storage(url).close()  # migrate once, before the clock runs
        with private_broker() as (port, broker_pid):
            out: mp.Queue[Any] = ctx.Queue()
            counter = ctx.Value("q", 0)
            stop, go = ctx.Event(), ctx.Event()
            readies = [ctx.Event() for _ in range(workers)]
            wprocs = [
                ctx.Process(
                    target=_worker,
                    args=(port, k, url, batch, pipeline, counter, readies[k], stop, out),
                )
                for k in range(workers)
            ]
            for w in wprocs:
                w.start()
            if not all(e.wait(20.0) for e in readies):
                raise RuntimeError("an ingest worker did not connect within 20 s")
            ids = acl.truck_ids(trucks)
            pub = ctx.Process(target=_publisher, args=(port, 0, ids, batch, seconds, go, out, kind))
            pub.start()
            time.sleep(0.5)  # the publisher connects
            own_pg = [
                int(r[0])
                for r in admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
                ).fetchall()
            ]
            pg0 = _cpu_of(_postgres_pids())
            cpu0 = {"broker": _cpu_s(broker_pid), "ingest": sum(_cpu_s(w.pid or 0) for w in wprocs),
                    "publishers": _cpu_s(pub.pid or 0)}  # fmt: skip
            go.set()
            pubres = out.get(timeout=seconds + 60.0)
            acked = int(pubres["acked_states"])
            seen, since = -1, time.monotonic()
            while counter.value < acked and time.monotonic() - since < settle_s:
                if counter.value != seen:
                    seen, since = counter.value, time.monotonic()
                time.sleep(0.05)
            pg1 = _cpu_of(_postgres_pids())
            at_settle = admin.execute(
                f"SELECT COALESCE(SUM(n), 0) FROM {schema}.vehicle_state_chunks"
            ).fetchone()
            cpu1 = {"broker": _cpu_s(broker_pid), "ingest": sum(_cpu_s(w.pid or 0) for w in wprocs),
                    "publishers": _cpu_s(pub.pid or 0)}  # fmt: skip
            dropped = broker_dropped(port)
            stop.set()
            wres = [out.get(timeout=30.0) for _ in wprocs]
            for w in wprocs:
                w.join(10.0)
            pub.join(10.0)
        samples = _stored_samples(admin, schema)
        rows, distinct = len(samples), len(set(samples))
        missing: dict[str, Any] = {}
        if int(distinct) < acked:
            missing = _missing(admin, schema, ids, batch, pubres)
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
    received = sum(int(x["states"]) for x in wres)
    lat = np.concatenate([x["lat_ms"] for x in wres])
    first = min((x["first_s"] for x in wres if x["states"]), default=0.0)
    span = max(max(x["last_s"] for x in wres) - first, 1e-9)
    calls = sum(int(x["sink_calls"]) for x in wres)
    per100k = 1e5 / max(received, 1)
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    map_s = sum(float(x["map_cpu_s"]) for x in wres)
    write_s = sum(float(x["write_cpu_s"]) for x in wres)
    parts = {
        "broker": cpu["broker"],
        "ingest_total": cpu["ingest"],
        "ingest_mqtt_validate": cpu["ingest"] - map_s - write_s,
        "ingest_map": map_s,
        "ingest_write_states_client": write_s,
        "pg_own_backends": sum(pg1.get(p, 0.0) - pg0.get(p, 0.0) for p in own_pg),
        "pg_server_all": _delta(pg0, pg1),
        "publishers": cpu["publishers"],
    }
    return Result(
        batch=batch,
        payload=kind,
        workers=workers,
        pipeline=pipeline,
        trucks=trucks,
        seconds=seconds,
        load_avg_before=load,
        offered_states_per_s=pubres["states"] / seconds,
        ingested_states_per_s=received / span,
        published_states=int(pubres["states"]),
        acked_states=acked,
        rows_in_pg_at_settle=int(at_settle[0]) if at_settle else 0,
        rows_in_pg=int(rows),
        distinct_rows_in_pg=int(distinct),
        lost_states=max(0, acked - int(distinct)),
        duplicate_rows=int(rows) - int(distinct),
        missing=missing,
        broker_dropped_messages=dropped,
        p50_ms=float(np.percentile(lat, 50)) if lat.size else float("nan"),
        p99_ms=float(np.percentile(lat, 99)) if lat.size else float("nan"),
        max_ms=float(lat.max()) if lat.size else float("nan"),
        sink_calls=calls,
        mean_states_per_sink_call=received / max(calls, 1),
        commit_wall_share=sum(float(x["write_wall_s"]) for x in wres) / workers / span,
        cpu_s_per_100k={k: round(v * per100k, 3) for k, v in parts.items()},
        publisher_drain_s=float(pubres["drain_s"]),
    )


def _stored_samples(admin: psycopg.Connection[Any], schema: str) -> list[tuple[str, float]]:
    """``(vehicle_id, t_s)`` of every stored sample (with duplicates), read from the chunks."""
    return [
        (r[0], r[1])
        for vid, data in admin.execute(
            f"SELECT vehicle_id, data FROM {schema}.vehicle_state_chunks"
        )
        for r in decode_chunk(vid, data)
    ]


def _missing(
    admin: psycopg.Connection[Any], schema: str, ids: list[str], batch: int, pub: dict[str, Any]
) -> dict[str, Any]:
    """Which acknowledged samples are not in PostgreSQL: how many, the first few, and where
    in the publisher's sending order they fall (0 = first message, 1 = last)."""
    have = {(v, round(t * 1000.0)) for v, t in _stored_samples(admin, schema)}
    acked = int(pub["acked_messages"])
    gone = [
        (k // batch, v, t)
        for k, (v, t) in enumerate(sent_samples(ids, batch, pub["ticks"], pub["tick_ms"], acked))
        if (v, t) not in have
    ]
    where = [k / max(acked - 1, 1) for k, _, _ in gone]
    return {"count": len(gone), "first": [[v, t] for _, v, t in gone[:5]],
            "send_order_min": round(min(where), 4) if where else None,
            "send_order_max": round(max(where), 4) if where else None,
            "trucks": len({v for _, v, _ in gone})}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one JSON line per batch size."""
    ap = argparse.ArgumentParser(
        prog="python -m convoy.service.telemetry_bench", description=__doc__
    )
    ap.add_argument("--trucks", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--workers", type=int, default=1, help="ingest processes (one group)")
    ap.add_argument(
        "--payload", choices=["auto", "states", "columns"], default="auto",
        help="messages of more than one sample: VehicleStateBatch (states, auto) or "
        "VehicleStateColumns (columns)",
    )  # fmt: skip
    ap.add_argument(
        "--serial", action="store_true",
        help="commit on the ingest loop (IngestSettings.pipeline=False)",
    )  # fmt: skip
    ap.add_argument(
        "--settle-s", type=float, default=10.0,
        help="stop waiting for the ingest after this long without progress [s]",
    )  # fmt: skip
    ap.add_argument("--pg", default=os.environ.get("CONVOY_TEST_PG", DEFAULT_PG_URL))
    a = ap.parse_args(argv)
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()} before the run")
    for b in a.batch:
        kind: PayloadKind | None = None if b == 1 or a.payload == "auto" else a.payload
        res = run_one(b, a.trucks, a.seconds, a.pg, a.workers, a.settle_s, kind, not a.serial)
        print(json.dumps(asdict(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
