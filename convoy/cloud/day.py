"""The operating day: orders -> plan -> the digital twin drives it -> supervision -> KPIs.

``run_day`` is what ``convoy run`` does with no scenario: the built-in Ordos day.

1. The day's coal orders and the operator's fleet (``orders``), a least-cost day plan of
   hybrid 1+N platoons (``dispatch.plan_day``).
2. Every planned platoon movement becomes a platoon in the network engine
   (``convoy.sim.network``): the human-driven lead truck (IDM) and its driverless followers
   (SUMO's CACC), released at the planned time on the planned route, loaded or empty.
3. One weather event: a dust storm over the busiest corridor for three hours caps speeds
   there; every driverless truck that learns of it (from a roadside unit's RSI broadcast on
   or before the storm's roads, or by entering it) leaves its operating design domain and asks
   the remote centre for a takeover, as do trucks with injected sensor faults
   (``supervision``); unanswered requests end in a minimal-risk manoeuvre.
4. KPIs from what the twin measured (distance, energy, safety) and what the plan carried
   (tonnes, drivers), and the cost against conventional solo diesel haulage (``kpi``,
   ``costs``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convoy.cloud.costs import compare_costs
from convoy.cloud.dispatch import DayPlan, LegKind, PlanParams, plan_day
from convoy.cloud.kpi import SafetyRecord, SoloReference, TripRecord, compute_kpis, with_extra
from convoy.cloud.orders import ordos_day_orders, ordos_fleet
from convoy.cloud.supervision import (
    SupervisionResult,
    TakeoverCause,
    TakeoverTrigger,
    inject_sensor_faults,
    operators_for,
    simulate,
)
from convoy.road.hazards import speed_limit_for_visibility_mps
from convoy.road.network import RoadNetwork
from convoy.road.ordos import ordos_network
from convoy.sim import net_kernel as nk
from convoy.sim.network import (
    TRUCK_HUMAN,
    TRUCK_L4,
    Leg,
    NetResult,
    NetSim,
    Platoon,
    SpeedCap,
    Trip,
    VehicleType,
)


class DayError(ValueError):
    """Bad settings for the day; the message names the field, value and what is allowed."""


#: The largest fleet a day runs: 50 times the reference operator's 400 (DESIGN.md). 4,000
#: trucks took 42 s for 2 hours of the day on 2 cores (2026-11-29); a fleet of 10^8 spent
#: minutes building its orders before it was stopped.
MAX_DAY_TRUCKS = 20_000


@dataclass(frozen=True, slots=True)
class DayConfig:
    """Settings of an operating day.

    Attributes:
        hours: simulated hours from midnight (the plan covers the whole day).
        seed: seeds orders, planning draws, sensor faults and the engine.
        n_trucks: fleet size; 400 is the reference operator's (DESIGN.md).
        max_followers: driverless trucks per lead truck (1+4 by default; "1+5" is legal in
            Beijing, DESIGN.md).
        dt_s: engine step.
        record_every_s: FCD interval.
        storm_start_s, storm_hours: the dust storm (afternoon, when Ordos dust storms peak:
            China Meteorological Administration, spring dust climatology).
        storm_visibility_m: visibility in the storm; the speed cap follows the road layer's
            visibility rule.
        storm_edges: how many of the busiest edges the storm covers.
        sensor_faults_per_truck_hour: injected sensor faults (an assumption to exercise the
            remote centre; no public rate exists).
        trucks_per_operator: driverless trucks per remote operator (DESIGN.md: industry
            reports 1 per 15-20; 20 by default).
        ambient_c: air temperature for the energy model.
    """

    hours: float = 24.0
    seed: int = 0
    n_trucks: int = 400
    max_followers: int = 4
    dt_s: float = 0.1
    record_every_s: float = 10.0
    storm_start_s: float = 13.0 * 3600.0
    storm_hours: float = 3.0
    storm_visibility_m: float = 150.0
    storm_edges: int = 8
    sensor_faults_per_truck_hour: float = 0.002
    trucks_per_operator: float = 20.0
    ambient_c: float = 10.0

    def check(self) -> None:
        """Raise :class:`DayError` naming the first setting out of range."""
        if not (0 < self.hours <= 24.0):
            raise DayError(f"hours = {self.hours}; allowed: 0 < hours <= 24")
        if not 2 <= self.n_trucks <= MAX_DAY_TRUCKS:
            raise DayError(f"n_trucks = {self.n_trucks}; allowed: 2 to {MAX_DAY_TRUCKS:,}")
        if self.seed < 0:
            raise DayError(f"seed = {self.seed}; allowed: 0 or more")
        if not 1 <= self.max_followers <= 5:
            raise DayError(f"max_followers = {self.max_followers}; allowed: 1..5")
        if not (0 < self.dt_s <= 1.0):
            raise DayError(f"dt_s = {self.dt_s}; allowed: 0 < dt_s <= 1")


def _types() -> tuple[VehicleType, ...]:
    """Lead and follower trucks, loaded (49 t) and empty (18 t): DESIGN.md's truck."""
    out = []
    for base in (TRUCK_HUMAN, TRUCK_L4):
        for load, mass in (("loaded", 49_000.0), ("empty", 18_000.0)):
            out.append(dataclasses.replace(base, name=f"{base.name}-{load}", mass_kg=mass))
    return tuple(out)


@dataclass
class DayResult:
    """Everything a day produced; ``summary`` is what goes to ``summary.json``."""

    config: DayConfig
    network: RoadNetwork
    plan: DayPlan
    sim: NetSim
    result: NetResult
    supervision: SupervisionResult
    trip_records: list[TripRecord]
    vehicle_trip: dict[str, tuple[str, str, int]]  # engine vehicle -> (truck, trip, position)
    storm_edges: tuple[str, ...]
    summary: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


def _busiest_edges(plan: DayPlan, start_s: float, end_s: float, k: int) -> tuple[str, ...]:
    use: Counter[str] = Counter()
    for p in plan.platoons:
        if p.release_s < end_s and p.arrival_s > start_s:
            use.update(p.route_edge_ids)
    return tuple(e for e, _ in use.most_common(k))


def _solo_reference(
    network: RoadNetwork, plan: DayPlan, cfg: DayConfig, end_s: float
) -> SoloReference:
    """What the same legs would cost a solo truck: each distinct route of the day's platoon
    legs driven once by a lone truck (loaded or empty as planned), weighted by how often the
    platoons drove it. Drafting savings by position compare against this, like for like."""
    use: Counter[tuple[tuple[str, ...], bool]] = Counter()
    for p in plan.platoons:
        if p.route_edge_ids and p.release_s < end_s:
            use[(p.route_edge_ids, p.kind == LegKind.LOADED)] += len(p.truck_ids)
    kwh = {True: 0.0, False: 0.0}
    km = {True: 0.0, False: 0.0}
    for (route, loaded), count in use.items():
        load = "loaded" if loaded else "empty"
        trip = Trip(f"solo-{load}", f"truck-human-{load}", (Leg(route),), 0.0)
        sim = NetSim(
            network,
            [trip],
            vtypes=_types(),
            dt_s=cfg.dt_s,
            ambient_c=cfg.ambient_c,
            record_every_s=3600.0,
        )
        res = sim.run(sum(network.edges[e].length_m for e in route) / 5.0 + 600.0)
        kwh[loaded] += count * float(res.energy_kwh[0])
        km[loaded] += count * float(res.distance_m[0]) / 1000.0
    return SoloReference(
        loaded_kwh_per_km=kwh[True] / km[True] if km[True] else None,
        empty_kwh_per_km=kwh[False] / km[False] if km[False] else None,
    )


def run_day(
    cfg: DayConfig | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> DayResult:
    """Plan and drive an operating day; ``progress(stage, fraction)`` reports as it goes."""
    cfg = cfg or DayConfig()
    cfg.check()
    say = progress or (lambda _s, _f: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    network = ordos_network()
    orders = ordos_day_orders(cfg.seed, n_trucks=cfg.n_trucks, network=network)
    fleet = ordos_fleet(cfg.n_trucks, cfg.max_followers, network=network)
    say("planning", 0.0)
    plan = plan_day(orders, fleet, network, PlanParams(max_followers=cfg.max_followers))
    timings["plan_s"] = time.perf_counter() - t0
    end_s = cfg.hours * 3600.0

    # --- the plan, as platoons in the engine ----------------------------------------------
    tonnes_of = {(t.truck_id, t.trip_id): t.tonnes for t in plan.truck_trips}
    trips: list[Trip] = []
    platoons: list[Platoon] = []
    vehicle_trip: dict[str, tuple[str, str, int]] = {}
    last_of: dict[str, str] = {}  # truck -> its latest engine vehicle
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
            vehicle_trip[vid] = (truck, p.id, pos)
        platoons.append(Platoon(p.id, tuple(members)))
    storm_end = cfg.storm_start_s + cfg.storm_hours * 3600.0
    storm = _busiest_edges(plan, cfg.storm_start_s, storm_end, cfg.storm_edges)
    cap = speed_limit_for_visibility_mps(cfg.storm_visibility_m) or 0.0
    caps = [SpeedCap(storm, cfg.storm_start_s, storm_end, cap)] if storm and cap > 0 else []
    sim = NetSim(
        network,
        trips,
        platoons=platoons,
        vtypes=_types(),
        dt_s=cfg.dt_s,
        seed=cfg.seed,
        ambient_c=cfg.ambient_c,
        speed_caps=caps,
        record_every_s=cfg.record_every_s,
    )
    t1 = time.perf_counter()
    driverless = sorted({vehicle_trip[v][0] for v in vehicle_trip if vehicle_trip[v][2] > 0})
    operators = operators_for(len(plan.fleet.l4_trucks), cfg.trucks_per_operator)
    faults = inject_sensor_faults(
        driverless, 0.0, end_s, cfg.sensor_faults_per_truck_hour, seed=cfg.seed
    )
    result, sup = _drive_and_supervise(
        sim, vehicle_trip, storm, cfg.storm_start_s, storm_end, faults, operators, end_s, say
    )
    timings["drive_s"] = time.perf_counter() - t1
    timings["drive_engine_s"] = result.wall_s

    # --- KPIs and cost ---------------------------------------------------------------------
    when: dict[str, dict[str, float]] = {"depart": {}, "arrive-site": {}}
    stopped = {str(e["vehicle_id"]) for e in result.events if e["kind"] == "minimal-risk-stop"}
    for e in result.events:
        if e["kind"] in when:
            when[str(e["kind"])][str(e["vehicle_id"])] = float(e["time_s"])  # type: ignore[arg-type]
    depart, finish = when["depart"], when["arrive-site"]
    due = {o.id: o.delivery.end_s for o in plan.orders}
    ptrip = {p.id: p for p in plan.platoons}
    records: list[TripRecord] = []
    safety: dict[str, SafetyRecord] = {}
    collided = Counter(
        e["vehicle_id"] for e in result.events if e["kind"] == "collision"
    ) + Counter(e["other_id"] for e in result.events if e["kind"] == "collision")
    for k, vid in enumerate(result.vehicle_ids):
        truck, trip_id, pos = vehicle_trip[vid]
        if vid not in depart:
            continue
        p = ptrip[trip_id]
        # a leg counts its tonnes when it arrived; one cut short (a minimal-risk stop, or the
        # end of the simulated hours) counts its kilometres only
        loaded = p.kind == LegKind.LOADED and vid in finish and vid not in stopped
        tonnes = float(tonnes_of.get((truck, trip_id), 0.0)) if loaded else 0.0
        dues = [due[o] for o in p.order_ids if o in due]
        records.append(
            TripRecord(
                truck_id=truck,
                distance_km=float(result.distance_m[k]) / 1000.0,
                energy_kwh=float(result.energy_kwh[k]),
                loaded=loaded and tonnes > 0,
                tonnes=tonnes if tonnes > 0 else 0.0,
                platoon_id=trip_id,
                position_in_platoon=pos,
                driver_id=p.driver_id if pos == 0 else None,
                departure_s=depart[vid],
                arrival_s=finish.get(vid, end_s),
                due_s=min(dues) if (loaded and dues and vid in finish) else None,
            )
        )
        prev = safety.get(truck)
        ttc = float(result.min_ttc_s[k])
        hb = int(result.hard_brakes[k])
        col = int(collided.get(vid, 0))
        if prev is not None:
            ttc = min(ttc, prev.min_ttc_s)
            hb += prev.hard_brakes
            col += prev.collisions
        safety[truck] = SafetyRecord(truck, min_ttc_s=ttc, hard_brakes=hb, collisions=col)
    solo = _solo_reference(network, plan, cfg, end_s)
    kpis = compute_kpis(records, list(safety.values()), sup.stats, solo)
    cost = compare_costs(records, period_days=cfg.hours / 24.0)
    summary = with_extra(kpis, cost.summary()).to_dict()
    summary.update(
        {
            "hours": cfg.hours,
            "seed": cfg.seed,
            "fleet_trucks": cfg.n_trucks,
            "platoon_format": f"1+{cfg.max_followers}",
            "plan_method": plan.method,
            "orders": len(plan.orders),
            "tonnes_ordered": plan.summary().tonnes_ordered,
            "tonnes_unserved_in_plan": plan.summary().tonnes_unserved,
            "platoon_trips_driven": len(platoons),
            "remote_operators": operators,
            "takeover_requests": len(sup.requests),
            "minimal_risk_manoeuvres": len(sup.mrms),
            "minimal_risk_stops_driven": len(stopped),
            "dust_storm_edges": list(storm),
            "dust_storm_speed_cap_mps": cap,
            "engine_vehicle_steps": _vehicle_steps(result, cfg),
            "wall_s": {k: round(v, 3) for k, v in timings.items()},
        }
    )
    return DayResult(
        config=cfg,
        network=network,
        plan=plan,
        sim=sim,
        result=result,
        supervision=sup,
        trip_records=records,
        vehicle_trip=vehicle_trip,
        storm_edges=storm,
        summary=summary,
        timings_s=timings,
    )


#: Longest stretch the engine runs before supervision looks at the road again [s].
SUPERVISION_TICK_S = 60.0


def _drive_and_supervise(
    sim: NetSim,
    vehicle_trip: dict[str, tuple[str, str, int]],
    storm: tuple[str, ...],
    storm_start_s: float,
    storm_end_s: float,
    faults: list[TakeoverTrigger],
    operators: int,
    end_s: float,
    say: Callable[[str, float], None],
) -> tuple[NetResult, SupervisionResult]:
    """Drive the day in stretches; between them, raise takeover requests for what the trucks
    met, run the remote centre on every request so far, and execute each minimal-risk
    manoeuvre at its time: the truck brakes to a stop in its lane and is then moved to the
    shoulder (status ``ST_SHOULDER``), so the trucks behind it drive on; it stays there for
    the rest of the simulated day (recovery is not modelled) and its later legs are cancelled.

    A stretch never runs past the next predicted manoeuvre: requests that come later can only
    delay an expiry (operators serve earliest deadline first), never bring it forward, so a
    manoeuvre is executed at the step it is due.
    """
    parts: list[NetResult] = []
    triggers: list[TakeoverTrigger] = []
    seen: set[str] = set()
    executed: set[int] = set()
    braking: dict[int, float] = {}  # engine row -> time its manoeuvre began
    rows_of: dict[str, list[int]] = {}
    for k, vid in enumerate(sim.vehicle_ids):
        rows_of.setdefault(vehicle_trip[vid][0], []).append(k)
    storm_rows = {sim.edge_ids.index(e) for e in storm}
    rsi = _rsi_zones(sim, storm)
    st = sim.state
    t = 0.0
    sup = simulate([], max(operators, 1), start_s=0.0, end_s=end_s)
    while t < end_s - 1e-9:
        nxt = min(end_s, t + SUPERVISION_TICK_S)
        for b in (storm_start_s, storm_end_s):
            if t < b < nxt:
                nxt = b
        for m in sup.mrms:
            if m.request_id not in executed and t < m.time_s < nxt:
                # the first step that ends at or after it
                nxt = math.ceil(m.time_s / sim.dt_s - 1e-9) * sim.dt_s
        part = sim.run(nxt)
        parts.append(part)
        t = sim.step * sim.dt_s
        say("driving", t / end_s)
        # what the trucks met: the storm (from the FCD), and injected faults that are due
        new = _storm_triggers(part, storm_rows, rsi, storm_start_s, storm_end_s, vehicle_trip, seen)
        new += [f for f in faults if f.time_s <= t and f.vehicle_id not in seen]
        seen.update(f.vehicle_id for f in new if f.cause != TakeoverCause.ODD_WEATHER)
        if new:
            triggers += new
            triggers.sort(key=lambda x: x.time_s)
            sup = simulate(triggers, max(operators, 1), start_s=0.0, end_s=end_s)
        # execute the manoeuvres that are due: brake to a stop, then the shoulder
        for m in sup.mrms:
            if m.request_id in executed or m.time_s > t + 1e-9:
                continue
            executed.add(m.request_id)
            for k in rows_of.get(m.vehicle_id, []):
                if st["status"][k] == nk.ST_DRIVING:
                    st["speed_cap_mps"][k] = 0.0
                    braking[k] = m.time_s
        for k in [
            k for k in braking if st["speed_mps"][k] == 0.0 or st["status"][k] != nk.ST_DRIVING
        ]:
            if st["status"][k] == nk.ST_DRIVING:
                st["status"][k] = nk.ST_SHOULDER
                parts[-1].events.append(
                    {
                        "time_s": round(t, 6),
                        "kind": "minimal-risk-stop",
                        "vehicle_id": sim.vehicle_ids[k],
                        "edge": sim.edge_ids[int(st["edge"][k])],
                        "lane": int(st["lane"][k]),
                    }
                )
                # the truck waits there for recovery: its later legs are not driven
                truck = vehicle_trip[sim.vehicle_ids[k]][0]
                for j in rows_of[truck]:
                    if st["status"][j] == nk.ST_WAITING:
                        st["status"][j] = nk.ST_DONE
                        parts[-1].events.append(
                            {
                                "time_s": round(t, 6),
                                "kind": "leg-cancelled",
                                "vehicle_id": sim.vehicle_ids[j],
                                "reason": "minimal-risk stop",
                            }
                        )
            del braking[k]
    return NetResult.concat(parts), sup


def _vehicle_steps(result: NetResult, cfg: DayConfig) -> int:
    """Vehicle-steps driven: total driven time over all vehicles / dt (from the FCD records)."""
    n_rows = result.fcd["time_s"].shape[0]
    return round(n_rows * cfg.record_every_s / cfg.dt_s)


def _rsi_zones(sim: NetSim, storm: tuple[str, ...]) -> list[tuple[int, float, float]]:
    """Where a truck hears the storm's RSI: ``(edge row, centre m, radius m)`` of every RSU on
    a storm edge or on an edge that leads into one (the road layer's RSUs along the G65 and
    G18 broadcast it, T/CSAE 53 RSI with the storm's area)."""
    net = sim.network
    into = {e.id for e in net.edges.values() for s in storm if e.to_node == net.edges[s].from_node}
    zones = []
    for r in net.rsus.values():
        if r.edge in storm or r.edge in into:
            zones.append((sim.edge_ids.index(r.edge), r.offset_m, r.radius_m))
    return zones


def _storm_triggers(
    part: NetResult,
    storm_rows: set[int],
    rsi: list[tuple[int, float, float]],
    start_s: float,
    end_s: float,
    vehicle_trip: dict[str, tuple[str, str, int]],
    seen: set[str],
) -> list[TakeoverTrigger]:
    """A takeover request from each driverless truck the first time it learns of the storm:
    from an RSU's RSI broadcast, or by entering it (``seen`` collects the trucks already
    asked for)."""
    if not storm_rows:
        return []
    f = part.fcd
    edge = f["edge"].astype(np.int64)
    aware = np.isin(edge, list(storm_rows))
    for row, centre_m, radius_m in rsi:
        aware |= (edge == row) & (np.abs(f["pos_m"] - centre_m) <= radius_m)
    aware &= (f["time_s"] >= start_s) & (f["time_s"] < end_s)
    out = []
    for t, v in zip(f["time_s"][aware], f["vehicle"][aware].astype(np.int64), strict=True):
        truck, _, pos = vehicle_trip[part.vehicle_ids[int(v)]]
        key = f"storm:{truck}"
        if pos == 0 or key in seen:
            continue
        seen.add(key)
        out.append(TakeoverTrigger(float(t), truck, TakeoverCause.ODD_WEATHER))
    return out


def load_day_config(
    path: str | None, hours: float | None = None, seed: int | None = None
) -> DayConfig:
    """A day's settings: the defaults, overridden by a YAML mapping file and then by
    ``hours``/``seed`` (the command line).

    Raises:
        DayError: unreadable or malformed file, an unknown key, or a value out of range.
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise DayError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise DayError(f"{path}: not valid YAML: {exc}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise DayError(f"{path}: must be a mapping of day settings, got {type(raw).__name__}")
        known = {f.name: f for f in dataclasses.fields(DayConfig)}
        for key, value in raw.items():
            if key not in known:
                raise DayError(
                    f"{path}: unknown setting {key!r}; allowed: {', '.join(sorted(known))}"
                )
            want = int if known[key].type in ("int", int) else float
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DayError(f"{path}: {key} = {value!r}; allowed: a number")
            if want is int and value != int(value):
                raise DayError(f"{path}: {key} = {value!r}; allowed: a whole number")
            values[key] = want(value)
    if hours is not None:
        values["hours"] = float(hours)
    if seed is not None:
        values["seed"] = int(seed)
    cfg = DayConfig(**values)
    cfg.check()
    return cfg
