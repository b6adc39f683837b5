"""Validation scenarios that need the network engine: a car cutting into a platoon gap.

The 1-D engine has trucks only; ``convoy.sim.network.NetSim`` has lanes, cars and the
platoon truck's answer to a cut-in (the member behind the car sees a leader that is not its
platoon predecessor and falls back to ACC).  Cut-ins there are random MOBIL decisions, so
the scenario forces one: ``NetSim.schedule_cut_in`` puts the car a chosen bumper gap ahead
of a chosen member at a chosen speed, and ``NetSim.schedule_speed_ramp`` lowers the car's
own speed cap by ``d * dt`` every step, which brakes it at exactly ``d`` (its IDM driver
follows a falling cap at up to its type's ``decel_mps2``, set to at least ``d``).

A chunk of instances runs as one ``NetSim(..., instances=m)`` call along the engine's batch
axis: every instance is a copy of the same road and platoon, and each instance's own
parameters go in through its copy's vehicle types (``NetSim.set_vehicle_type``: its CACC
time gap, its car's braking) and its copy's scheduled cut-in and caps.  Instances never see
each other (the engine keys lanes by instance), and nothing in this scenario draws a random
number (no V2V loss, no discretionary lane changes), so an instance's run in a batch equals
its run alone, bit for bit (``tests/test_validation_cut_in.py`` checks it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numba import njit

from convoy.road.network import Edge, Node, RoadClass, RoadNetwork
from convoy.sim import net_kernel as nk
from convoy.sim.network import (
    CAR,
    TRUCK_HUMAN,
    TRUCK_L4,
    Leg,
    NetResult,
    NetSim,
    Platoon,
    Trip,
    VehicleType,
)

CUT_IN_NAME = "car-cut-in"
#: Cruise speed of the platoon: 22 m/s (79 km/h), as the 1-D library; its head keeps it by
#: its driver's own cap, below the road's limit (90 km/h, China's for trucks on
#: expressways), so that a follower that fell back can close up again.
CUT_IN_SPEED_MPS = 22.0
CUT_IN_LIMIT_MPS = 25.0
#: The car cuts in this long after the start.  The platoon starts formed at its equilibrium
#: gaps in gap control (``NetSim.place``), so nothing moves before (measured: |v - 22| = 0
#: for tau 0.8-2 s); the seconds before only show the steady state in the trace.
CUT_IN_AT_S = 5.0
#: The run goes on this long after the cut-in (the member behind the car settles behind it).
CUT_IN_AFTER_S = 35.0
#: Front bumper of the head at the start [m], on a road long enough for the whole run.
CUT_IN_HEAD_POS_M = 1000.0
CUT_IN_ROAD_M = 4000.0
#: Platoon size: a human-driven head and four L4 followers (the library's 1+4).
CUT_IN_TRUCKS = 5


@dataclass(frozen=True, slots=True)
class CutInCase:
    """One instance of ``car-cut-in``.

    Attributes:
        member: the follower (1..4) the car cuts in ahead of.
        cut_in_gap_m: bumper gap from the car's rear to that member's front [m].
        speed_deficit_mps: the car's speed below the platoon's when it cuts in [m/s].
        car_brake_mps2: the car's deceleration right after the cut-in [m/s²] (0: none).
        car_brake_s: how long it brakes [s]; then its driver accelerates again (IDM).
        time_gap_s: the L4 followers' CACC time gap (SUMO's tau) [s].
    """

    member: int
    cut_in_gap_m: float
    speed_deficit_mps: float
    car_brake_mps2: float
    car_brake_s: float
    time_gap_s: float

    @staticmethod
    def of(p: Mapping[str, float]) -> CutInCase:
        """A case from the library's parameter draw (``member`` rounded to 1..4)."""
        member = min(max(math.floor(p["member"] + 0.5), 1), CUT_IN_TRUCKS - 1)
        return CutInCase(
            member=member,
            cut_in_gap_m=p["cut_in_gap_m"],
            speed_deficit_mps=p["speed_deficit_mps"],
            car_brake_mps2=p["car_brake_mps2"],
            car_brake_s=p["car_brake_s"],
            time_gap_s=p["time_gap_s"],
        )


@dataclass(frozen=True, slots=True)
class NetTrace:
    """One instance's run on the network engine as dense arrays, with the leaders resolved.

    Attributes:
        time_s: (r,) record times [s] (every step).
        vehicle_id: (n,) ids without the batch suffix (``t0`` head, ``t1``.. followers,
            ``car``).
        truck: (n,) bool, the platoon's trucks.
        position: (n,) int, index in the platoon (0 head), -1 for the car.
        pos_m, speed_mps, accel_mps2: (r, n) float64, NaN while a vehicle is off the road
            (before it enters, after a collision removed it).
        gap_m: (r, n) bumper gap to the vehicle ahead in the same lane [m], NaN if none.
        closing_mps: (r, n) own speed minus that vehicle's [m/s], NaN if none.
        collided: some vehicle of the instance hit another.
        head_km: km the platoon head drove.
        source: (n,) bool, the vehicle whose manoeuvre the scenario imposes (the car).
        downstream: (n,) bool, the trucks behind it (the string its manoeuvre runs down).
    """

    time_s: np.ndarray
    vehicle_id: list[str]
    truck: np.ndarray
    position: np.ndarray
    pos_m: np.ndarray
    speed_mps: np.ndarray
    accel_mps2: np.ndarray
    gap_m: np.ndarray
    closing_mps: np.ndarray
    collided: bool
    head_km: float
    source: np.ndarray
    downstream: np.ndarray


def _road() -> RoadNetwork:
    """A straight two-lane motorway edge (lane 0 the platoon's, lane 1 the car's before)."""
    nodes = [Node("a", 109.0, 39.6), Node("b", 109.0 + CUT_IN_ROAD_M / 85_800.0, 39.6)]
    edge = Edge(
        "road",
        "a",
        "b",
        CUT_IN_ROAD_M,
        lanes=2,
        speed_limit_mps=CUT_IN_LIMIT_MPS,
        road_class=RoadClass.MOTORWAY,
    )
    return RoadNetwork.build(nodes, [edge], name="cut-in road")


def _types(cases: Sequence[CutInCase]) -> tuple[list[str], list[str], list[VehicleType]]:
    """Per-instance L4 and car type names, and the type table (distinct types once)."""
    l4_names, car_names = [], []
    table: dict[str, VehicleType] = {TRUCK_HUMAN.name: TRUCK_HUMAN}
    for c in cases:
        l4 = f"truck-l4-h{c.time_gap_s:.17g}"
        # SUMO's passenger decel (4.5 m/s²) unless the scripted brake asks for more; the car
        # never leaves the platoon's lane (no MOBIL), so the engine draws no random numbers
        car_decel = max(CAR.decel_mps2, c.car_brake_mps2)
        car = f"car-b{car_decel:.17g}"
        table.setdefault(l4, replace(TRUCK_L4, name=l4, time_gap_s=c.time_gap_s))
        table.setdefault(
            car,
            replace(
                CAR,
                name=car,
                decel_mps2=car_decel,
                emergency_decel_mps2=max(CAR.emergency_decel_mps2, car_decel),
                can_change_lane=False,
            ),
        )
        l4_names.append(l4)
        car_names.append(car)
    return l4_names, car_names, list(table.values())


def cut_in_sim(cases: Sequence[CutInCase], seed: int, backend: str = "cpu") -> NetSim:
    """The batch of ``cases`` as one ``NetSim`` (instance k is ``cases[k]``) on the network
    engine's ``backend`` (``NET_BACKENDS``), ready to run.

    Every instance: a 1+4 platoon (human head, L4 SUMO-CACC followers) formed in lane 0 at
    its equilibrium gaps (min gap + tau v) at 22 m/s, and a car that cuts in ahead of
    ``member`` at ``CUT_IN_AT_S``, then brakes ``car_brake_s`` at ``car_brake_mps2``.
    """
    m = len(cases)
    l4_names, car_names, vtypes = _types(cases)
    legs = (Leg(("road",)),)
    ids = [f"t{j}" for j in range(CUT_IN_TRUCKS)]
    trips = [Trip(ids[0], TRUCK_HUMAN.name, legs, speed_cap_mps=CUT_IN_SPEED_MPS)]
    trips += [Trip(v, l4_names[0], legs) for v in ids[1:]]
    # the car enters the road only by its cut-in
    trips.append(Trip("car", car_names[0], legs, depart_s=math.inf))
    sim = NetSim(
        _road(),
        trips,
        platoons=[Platoon("p", tuple(ids))],
        vtypes=vtypes,
        seed=seed,
        instances=m,
        record_every_s=0.1,
        backend=backend,
    )
    dt = sim.dt_s
    v = CUT_IN_SPEED_MPS
    for k, c in enumerate(cases):

        def tag(x: str, k: int = k) -> str:
            return f"{x}#{k}" if m > 1 else x  # the engine's id of x in instance k

        for v_id in ids[1:]:
            sim.set_vehicle_type(tag(v_id), l4_names[k])
        sim.set_vehicle_type(tag("car"), car_names[k])
        pos = CUT_IN_HEAD_POS_M
        for j, v_id in enumerate(ids):
            if j:
                pos -= TRUCK_L4.length_m + TRUCK_L4.min_gap_m + c.time_gap_s * v
            sim.place(tag(v_id), "road", 0, pos, v)
        v_car = v - c.speed_deficit_mps
        sim.schedule_cut_in(CUT_IN_AT_S, tag("car"), tag(ids[c.member]), c.cut_in_gap_m, v_car)
        steps = round(c.car_brake_s / dt) if c.car_brake_mps2 > 0.0 else 0
        # the cap of each step is the speed at its end; a stop is held at a crawl (> 0)
        sim.schedule_speed_ramp(CUT_IN_AT_S, tag("car"), v_car, c.car_brake_mps2, steps, 0.1)
    return sim


@njit(cache=True)
def _resolve_leaders(
    pos: np.ndarray,
    speed: np.ndarray,
    lane: np.ndarray,
    length: np.ndarray,
    gap: np.ndarray,
    closing: np.ndarray,
) -> None:
    """Fill ``gap`` and ``closing`` (instance, record, vehicle) where a vehicle on the road
    has another ahead of it in its lane: the one whose rear is nearest (the first of equals),
    its bumper gap and the speed difference to it; elsewhere they are left NaN."""
    n_inst, n_rec, per = pos.shape
    for k in range(n_inst):
        for r in range(n_rec):
            for j in range(per):
                pj = pos[k, r, j]
                if not math.isfinite(pj):
                    continue
                rear = math.inf
                ld = -1
                for q in range(per):
                    if q != j and lane[k, r, q] == lane[k, r, j] and pos[k, r, q] > pj:
                        d = pos[k, r, q] - length[k, q]
                        if d < rear:
                            rear = d
                            ld = q
                if ld >= 0 and math.isfinite(rear):
                    gap[k, r, j] = pos[k, r, ld] - length[k, ld] - pj
                    closing[k, r, j] = speed[k, r, j] - speed[k, r, ld]


def _instance_traces(
    sim: NetSim,
    res: NetResult,
    cases: Sequence[CutInCase],
    ids: list[str],
    start: dict[str, np.ndarray],
) -> list[NetTrace]:
    """Split a batch result into per-instance dense traces with leaders resolved.

    ``start``: the state's ``status``, ``pos_m`` and ``speed_mps`` before the run (the FCD
    has rows from the end of the first step on)."""
    f = res.fcd
    dt = sim.dt_s
    steps = res.steps
    time_s = np.arange(steps + 1) * dt
    n_inst = sim.instances
    per = len(ids)
    # the whole batch as (instance, record, vehicle) arrays: instance k's vehicles are the
    # engine's rows k * per .. (k + 1) * per, and each FCD row goes to its place at once
    shape = (n_inst, steps + 1, per)
    veh = f["vehicle"].astype(np.int64)
    at_inst = sim.state["inst"][veh].astype(np.int64)
    at = (at_inst, np.rint(f["time_s"] / dt).astype(np.int64), veh - at_inst * per)
    pos, speed, accel, lane = (np.full(shape, np.nan) for _ in range(4))
    pos[at] = f["pos_m"]
    speed[at] = f["speed_mps"]
    accel[at] = f["accel_mps2"]
    lane[at] = f["lane"]
    # the placed vehicles' state at t = 0 (FCD rows are written at the end of a step)
    on0 = (start["status"] == nk.ST_DRIVING).reshape(n_inst, per)
    pos[:, 0][on0] = start["pos_m"].reshape(n_inst, per)[on0]
    speed[:, 0][on0] = start["speed_mps"].reshape(n_inst, per)[on0]
    accel[:, 0][on0] = 0.0
    lane[:, 0][on0] = 0.0
    length = sim._vt[sim.state["vtype"], nk.VT_LENGTH_M].reshape(n_inst, per)
    gap = np.full(shape, np.nan)
    closing = np.full(shape, np.nan)
    # leader: the nearest vehicle ahead in the same lane (one edge, so positions compare)
    _resolve_leaders(pos, speed, lane, length, gap, closing)
    collided = np.zeros(n_inst, bool)
    for e in res.events:
        if e["kind"] == "collision":
            collided[int(e.get("instance", 0))] = True  # type: ignore[call-overload]
    position = np.array([j if j < CUT_IN_TRUCKS else -1 for j in range(per)])
    return [
        NetTrace(
            time_s=time_s,
            vehicle_id=list(ids),
            truck=position >= 0,
            position=position,
            pos_m=pos[k],
            speed_mps=speed[k],
            accel_mps2=accel[k],
            gap_m=gap[k],
            closing_mps=closing[k],
            collided=bool(collided[k]),
            head_km=float(res.distance_m[k * per]) / 1000.0,
            source=position < 0,
            downstream=position >= cases[k].member,
        )
        for k in range(n_inst)
    ]


def run_cut_in(
    params: Sequence[Mapping[str, float]], seed: int, backend: str = "cpu"
) -> list[NetTrace]:
    """Run instances of ``car-cut-in`` (one per parameter mapping) as one batch.

    Args:
        params: per instance, the library's parameter draw (``CutInCase.of``).
        seed: the engine's seed (instance k draws with ``seed + k * INSTANCE_SEED_STRIDE``;
            this scenario draws nothing, see the module docstring).
        backend: the network engine's (``cpu``: Numba; ``jax``: JAX on the CPU in float64,
            the same results to ~1e-12; ``gpu``: JAX on the GPU in float32).

    Returns:
        One ``NetTrace`` per instance, in order.
    """
    cases = [CutInCase.of(p) for p in params]
    sim = cut_in_sim(cases, seed, backend)
    start = {k: sim.state[k].copy() for k in ("status", "pos_m", "speed_mps")}
    res = sim.run(CUT_IN_AT_S + CUT_IN_AFTER_S, fcd_rows=sim.n * 600 + 1)
    ids = [f"t{j}" for j in range(CUT_IN_TRUCKS)] + ["car"]
    return _instance_traces(sim, res, cases, ids, start)
