"""The live digital twin: the Ordos day driven in real time (or ×k), as the service's world.

:class:`LiveTwin` owns a clock (twin seconds = ``start_s`` + wall seconds × ``speedup``) and a
background thread. The thread builds the day like ``convoy.cloud.day.run_day`` does (the
day's orders, the fleet, a day plan, its platoon movements as engine trips), then ticks
``live_hz`` times a wall second:

1. advance the network engine to the clock (``NetSim.run`` may be called repeatedly);
2. raise the takeover requests that are due (injected sensor faults of driverless trucks)
   in the remote centre (``SupervisionCentre``) and in storage, where the operator console
   claims and resolves them;
3. expire unclaimed requests past their deadline: the truck brakes to a stop and goes to the
   shoulder (a minimal-risk manoeuvre, as in ``day.py``);
4. publish a snapshot of the live state on the bus, and store telemetry in batches every
   ``telemetry_every_s`` twin seconds.

Deadlines: the centre's windows (``supervision.DEFAULT_WINDOWS_S``) are for an operator on
the truck's own clock. A person at the console answers in wall time, so the live service
scales each window by ``speedup``: a 10 s window stays 10 wall seconds at any speed-up.

Takeover requests, claims and resolutions are written to storage (the record and its event)
before the call returns, so an acknowledged one survives ``kill -9``; the twin's own events
(minimal-risk manoeuvres) and telemetry are written in batches.

With ``twin=False`` the clock, takeovers and snapshots still run, over no vehicles.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from convoy.cloud.day import DayConfig, _types
from convoy.cloud.dispatch import DayPlan, LegKind, PlanParams, plan_day
from convoy.cloud.orders import ordos_day_orders, ordos_fleet
from convoy.cloud.supervision import (
    DEFAULT_WINDOWS_S,
    SupervisionCentre,
    SupervisionError,
    TakeoverCause,
    TakeoverTrigger,
    inject_sensor_faults,
    operators_for,
)
from convoy.road.ordos import ordos_network
from convoy.service.bus import InProcessBus, Snapshot
from convoy.service.settings import Settings
from convoy.service.storage import (
    ConflictError,
    EventRecord,
    OrderRecord,
    Storage,
    StorageError,
    TakeoverRecord,
    TakeoverStatus,
    VehicleState,
    new_id,
)
from convoy.sim import net_kernel as nk
from convoy.sim.net_output import EdgeGeometry
from convoy.sim.network import Leg, NetSim, Platoon, Trip

log = logging.getLogger("convoy.service.twin")

#: Most telemetry samples written per transaction.
TELEMETRY_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class TwinWorld:
    """What the twin built at start-up (immutable afterwards; read by the routes).

    Attributes:
        plan: the day plan.
        sim: the network engine (touched by the twin thread only).
        geometry: edge polylines for lon/lat.
        row_truck: (n,) truck id of each engine row (a truck has one row per leg).
        row_platoon: (n,) platoon movement id of each engine row.
        row_pos: (n,) position in its platoon, 0 = the human-driven lead truck.
    """

    plan: DayPlan
    sim: NetSim
    geometry: EdgeGeometry
    row_truck: np.ndarray
    row_platoon: np.ndarray
    row_pos: np.ndarray


def build_world(n_trucks: int, seed: int, end_s: float = 86_400.0) -> TwinWorld:
    """The Ordos day as ``run_day`` builds it (without the dust storm): orders, fleet, plan,
    and each platoon movement as engine trips released at the planned time."""
    cfg = DayConfig(n_trucks=n_trucks, seed=seed)
    network = ordos_network()
    orders = ordos_day_orders(seed, n_trucks=n_trucks, network=network)
    fleet = ordos_fleet(n_trucks, cfg.max_followers, network=network)
    plan = plan_day(orders, fleet, network, PlanParams(max_followers=cfg.max_followers))
    trips: list[Trip] = []
    platoons: list[Platoon] = []
    meta: list[tuple[str, str, int]] = []
    last_of: dict[str, str] = {}
    for p in sorted(plan.platoons, key=lambda q: q.release_s):
        if not p.route_edge_ids or p.release_s >= end_s:
            continue
        load = "loaded" if p.kind == LegKind.LOADED else "empty"
        members = []
        for pos, truck in enumerate(p.truck_ids):
            vid = f"{truck}@{p.id}"
            kind = "truck-human" if pos == 0 else "truck-l4"
            trips.append(
                Trip(
                    vid,
                    f"{kind}-{load}",
                    (Leg(p.route_edge_ids),),
                    p.release_s,
                    after=last_of.get(truck),
                )
            )
            last_of[truck] = vid
            members.append(vid)
            meta.append((truck, p.id, pos))
        platoons.append(Platoon(p.id, tuple(members)))
    sim = NetSim(
        network,
        trips,
        platoons=platoons,
        vtypes=_types(),
        dt_s=cfg.dt_s,
        seed=seed,
        ambient_c=cfg.ambient_c,
        record_every_s=3600.0,
    )
    by_id = {f"{t}@{p}": (t, p, k) for t, p, k in meta}
    rows = [by_id[v] for v in sim.vehicle_ids]
    return TwinWorld(
        plan=plan,
        sim=sim,
        geometry=EdgeGeometry.build(network, sim.edge_ids),
        row_truck=np.array([r[0] for r in rows], dtype=object),
        row_platoon=np.array([r[1] for r in rows], dtype=object),
        row_pos=np.array([r[2] for r in rows], dtype=np.int64),
    )


class LiveTwin:
    """The clock, the world, the remote centre and the thread that drives them."""

    def __init__(self, settings: Settings, storage: Storage, bus: InProcessBus) -> None:
        self.settings = settings
        self.storage = storage
        self.bus = bus
        self.world: TwinWorld | None = None
        self.error: str | None = None
        self._t0 = time.monotonic()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._faults: list[TakeoverTrigger] = []
        self._centre = SupervisionCentre(1)
        self._centre_ids: dict[str, int] = {}  # storage takeover id -> centre request id
        self._operator_of: dict[str, int] = {}  # operator name -> centre operator index
        self._braking: dict[int, float] = {}
        self._last_telemetry_s = -math.inf
        self._events: list[EventRecord] = []

    # -- clock ------------------------------------------------------------------------------
    def now_s(self) -> float:
        """Twin time [s]: ``start_s`` + wall seconds since start-up × ``speedup``."""
        s = self.settings
        return s.start_s + (time.monotonic() - self._t0) * s.speedup

    @property
    def ready(self) -> bool:
        return self.world is not None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread (it builds the world first when the twin is enabled)."""
        self._thread = threading.Thread(target=self._main, name="convoy-twin", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._flush_events()

    def _main(self) -> None:
        s = self.settings
        try:
            if s.twin:
                world = build_world(s.twin_trucks, s.twin_seed)
                self._seed_storage(world)
                n_l4 = len(world.plan.fleet.l4_trucks)
                with self._lock:
                    self._centre = SupervisionCentre(operators_for(n_l4, 20.0))
                driverless = sorted({str(t) for t in world.row_truck[world.row_pos > 0]})
                self._faults = inject_sensor_faults(
                    driverless, s.start_s, 86_400.0, s.faults_per_truck_hour, seed=s.twin_seed
                )
                self.world = world
        except Exception as exc:  # the API keeps serving; /health reports it
            log.exception("building the twin failed")
            self.error = f"{type(exc).__name__}: {exc}"
        period_s = 1.0 / s.live_hz
        while not self._stop.is_set():
            t_wall = time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("twin tick failed")
            self._stop.wait(max(0.0, period_s - (time.monotonic() - t_wall)))

    def _seed_storage(self, world: TwinWorld) -> None:
        """The day's orders and plan summary, stored once (idempotent across restarts)."""
        for o in world.plan.orders:
            with contextlib.suppress(ConflictError):
                self.storage.create_order(
                    OrderRecord.from_order(o),
                    idempotency_key=f"day-{self.settings.twin_seed}-{o.id}",
                )
        self.storage.save_plan(plan_summary(world.plan), plan_id="day")

    # -- takeovers --------------------------------------------------------------------------
    def request_takeover(self, vehicle_id: str, cause: TakeoverCause | str) -> TakeoverRecord:
        """A truck asks for an operator now: a request in the centre and in storage.

        Raises:
            SupervisionError: unknown cause.
            StorageError: a bad vehicle id.
        """
        with self._lock:
            t = self.now_s()
            cause = TakeoverCause(cause) if cause in TakeoverCause._value2member_map_ else cause
            if not isinstance(cause, TakeoverCause):
                allowed = ", ".join(c.value for c in TakeoverCause)
                raise SupervisionError(f"cause = {cause!r}: unknown; allowed: {allowed}")
            window_s = DEFAULT_WINDOWS_S[cause] * self.settings.speedup
            rec = TakeoverRecord(
                id=new_id("tk"),
                vehicle_id=vehicle_id,
                cause=cause.value,
                requested_s=t,
                deadline_s=t + window_s,
            )
            rec = self.storage.create_takeover(rec)
            try:
                req = self._centre.request(vehicle_id, t, cause)
                self._centre_ids[rec.id] = req.request_id
            except SupervisionError:
                pass
            self.storage.append_events(
                [
                    EventRecord(
                        t,
                        "takeover-request",
                        vehicle_id,
                        {"takeover_id": rec.id, "cause": cause.value},
                    )
                ]
            )
            return rec

    def claim(self, takeover_id: str, operator: str) -> TakeoverRecord:
        """``operator`` claims an open request (atomic in storage; first claimer wins)."""
        with self._lock:
            t = self.now_s()
            rec = self.storage.claim_takeover(takeover_id, operator, t)
            rid = self._centre_ids.get(takeover_id)
            free = self._centre.free_operators()
            if rid is not None and free:
                try:
                    self._centre.claim(free[0], rid, t)
                    self._operator_of[takeover_id] = free[0]
                except SupervisionError:
                    pass
            self.storage.append_events(
                [
                    EventRecord(
                        t,
                        "takeover-claim",
                        rec.vehicle_id,
                        {"takeover_id": rec.id, "operator": operator},
                    )
                ]
            )
            return rec

    def resolve(self, takeover_id: str, operator: str) -> TakeoverRecord:
        """The operator who claimed a request is done with it; the truck drives on."""
        with self._lock:
            t = self.now_s()
            rec = self.storage.resolve_takeover(takeover_id, operator, t)
            rid = self._centre_ids.pop(takeover_id, None)
            if rid is not None and takeover_id in self._operator_of:
                with contextlib.suppress(SupervisionError):
                    self._centre.resolve(rid, t)
                del self._operator_of[takeover_id]
            self.storage.append_events(
                [
                    EventRecord(
                        t,
                        "takeover-resolve",
                        rec.vehicle_id,
                        {"takeover_id": rec.id, "operator": operator},
                    )
                ]
            )
            return rec

    # -- one tick ---------------------------------------------------------------------------
    def tick(self) -> Snapshot:
        """Advance to the clock, handle takeovers, publish (and maybe store) the state."""
        t = self.now_s()
        world = self.world
        if world is not None and world.sim.step * world.sim.dt_s < min(t, 86_400.0) - 1e-9:
            world.sim.run(min(t, 86_400.0), fcd_rows=1)
        due = [f for f in self._faults if f.time_s <= t]
        if due:
            self._faults = [f for f in self._faults if f.time_s > t]
            for f in due:
                self.request_takeover(f.vehicle_id, f.cause)
        with self._lock:
            t = self.now_s()
            with contextlib.suppress(SupervisionError):
                self._centre.advance(t)
            expired = self.storage.expire_takeovers(t)
        for rec in expired:
            self._events.append(
                EventRecord(t, "minimal-risk-manoeuvre", rec.vehicle_id, {"takeover_id": rec.id})
            )
            if world is not None:
                self._start_mrm(world, rec.vehicle_id, t)
        if world is not None:
            self._shoulder(world, t)
        snap = self.snapshot(t)
        self.bus.publish_snapshot(snap)
        if t - self._last_telemetry_s >= self.settings.telemetry_every_s:
            self._last_telemetry_s = t
            self._store_telemetry(snap)
            self._flush_events()
        return snap

    def _start_mrm(self, world: TwinWorld, truck: str, t: float) -> None:
        st = world.sim.state
        rows = np.nonzero((world.row_truck == truck) & (st["status"] == nk.ST_DRIVING))[0]
        for k in rows:
            st["speed_cap_mps"][k] = 0.0
            self._braking[int(k)] = t

    def _shoulder(self, world: TwinWorld, t: float) -> None:
        st = world.sim.state
        for k in list(self._braking):
            if st["status"][k] == nk.ST_DRIVING and st["speed_mps"][k] == 0.0:
                st["status"][k] = nk.ST_SHOULDER
                del self._braking[k]
            elif st["status"][k] != nk.ST_DRIVING:
                del self._braking[k]

    def snapshot(self, t: float) -> Snapshot:
        """The live state: vehicles on the road, KPIs, and open or claimed takeovers."""
        vehicles: list[dict[str, Any]] = []
        kpis: dict[str, Any] = {"t_s": round(t, 3), "twin_ready": self.ready}
        world = self.world
        if world is not None:
            st = world.sim.state
            on = np.nonzero((st["status"] == nk.ST_DRIVING) | (st["status"] == nk.ST_SHOULDER))[0]
            edge = st["edge"][on].astype(np.int64)
            lon, lat, bearing = world.geometry.place(edge, st["pos_m"][on].astype(np.float64))
            shoulder = st["status"][on] == nk.ST_SHOULDER
            pos = world.row_pos[on]
            mode = np.where(shoulder, "mrm", np.where(pos == 0, "human", "cacc"))
            for i, k in enumerate(on):
                vehicles.append(
                    {
                        "id": str(world.row_truck[k]),
                        "lon": round(float(lon[i]), 6),
                        "lat": round(float(lat[i]), 6),
                        "speed_mps": round(float(st["speed_mps"][k]), 2),
                        "heading_deg": round(float(bearing[i]) % 360.0, 1),
                        "platoon": str(world.row_platoon[k]),
                        "mode": str(mode[i]),
                        "edge": world.sim.edge_ids[int(edge[i])],
                        "lane": int(st["lane"][k]),
                    }
                )
            distance_km = float(np.sum(st["distance_m"])) / 1000.0
            energy_kwh = float(np.sum(st["energy_kwh"]))
            kpis.update(
                trucks_on_road=len(vehicles),
                platoons_on_road=len({v["platoon"] for v in vehicles}),
                minimal_risk_stops=int(np.count_nonzero(shoulder)),
                distance_km=round(distance_km, 3),
                energy_kwh=round(energy_kwh, 3),
                energy_kwh_per_km=round(energy_kwh / distance_km, 4) if distance_km > 0 else None,
            )
        alerts = [
            {
                "id": r.id,
                "vehicle_id": r.vehicle_id,
                "cause": r.cause,
                "deadline_s": r.deadline_s,
                "status": r.status.value,
                "operator": r.operator,
            }
            for status in (TakeoverStatus.OPEN, TakeoverStatus.CLAIMED)
            for r in self.storage.list_takeovers(status, limit=200)
        ]
        kpis["takeovers_open"] = sum(a["status"] == "open" for a in alerts)
        kpis["takeovers_claimed"] = sum(a["status"] == "claimed" for a in alerts)
        return {"t_s": round(t, 3), "vehicles": vehicles, "kpis": kpis, "alerts": alerts}

    def _store_telemetry(self, snap: Snapshot) -> None:
        batch = [
            VehicleState(
                vehicle_id=v["id"],
                t_s=snap["t_s"],
                lon=v["lon"],
                lat=v["lat"],
                speed_mps=min(v["speed_mps"], 100.0),
                heading_deg=v["heading_deg"],
                accel_mps2=0.0,
                edge=v["edge"],
                lane=min(v["lane"], 63),
                mode=v["mode"],
            )
            for v in snap["vehicles"]
        ]
        for i in range(0, len(batch), TELEMETRY_BATCH):
            self.storage.write_states(batch[i : i + TELEMETRY_BATCH])

    def _flush_events(self) -> None:
        with self._lock:
            events, self._events = self._events, []
        if events:
            try:
                self.storage.append_events(events)
            except StorageError:
                log.exception("storing %d events failed", len(events))


def plan_summary(plan: DayPlan) -> dict[str, Any]:
    """A JSON-able summary of a day plan: totals and the platoon movements."""
    s = plan.summary()
    kinds = Counter(p.kind.value for p in plan.platoons)
    return {
        "method": s.method,
        "tonnes_ordered": s.tonnes_ordered,
        "tonnes_delivered": s.tonnes_delivered,
        "tonnes_unserved": s.tonnes_unserved,
        "platoon_trips": s.platoon_trips,
        "loaded_trips": s.loaded_trips,
        "mean_followers": s.mean_followers,
        "truck_km": s.truck_km,
        "trucks_used": s.trucks_used,
        "drivers_used": s.drivers_used,
        "cost_cny": s.cost_cny,
        "trips_by_kind": dict(kinds),
        "platoons": [platoon_dict(p) for p in plan.platoons],
    }


def platoon_dict(p: Any) -> dict[str, Any]:
    """One platoon movement of the plan as JSON."""
    return {
        "id": p.id,
        "lead_truck_id": p.lead_truck_id,
        "follower_ids": list(p.follower_ids),
        "driver_id": p.driver_id,
        "kind": p.kind.value,
        "origin_site": p.origin_site,
        "destination_site": p.destination_site,
        "release_s": p.release_s,
        "arrival_s": p.arrival_s,
        "length_m": p.length_m,
        "tonnes": p.tonnes,
    }
