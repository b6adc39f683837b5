"""The fused CUDA kernel of the network step (``convoy.sim.net_cuda``) against the Numba CPU
kernel, on one-lane roads with a signal, a climb, a yield junction, a zipper merge and a
plant with a capacity and a dwell.

CI has no GPU, so the first test runs the kernel in Numba's CUDA simulator (the same kernel
code, one Python thread per CUDA thread) in a child process, where the simulator must be
switched on before Numba's CUDA target is imported. The model functions it calls are the CPU
kernel's own compiled functions there, so the two runs must agree bit for bit. On a GPU
(``-m gpu``), numba compiles the same functions for the device; its fused multiply-adds round
differently, so there the runs must agree within a tolerance.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import numpy as np
import pytest
from cuda_simulator import run_simulated

from convoy.road.network import (
    Edge,
    JunctionType,
    Node,
    RoadClass,
    RoadNetwork,
    SignalPhase,
    SignalPlan,
    Site,
    SiteKind,
)
from convoy.sim import net_jax
from convoy.sim import net_kernel as nk
from convoy.sim.network import CAR, TRUCK_HUMAN, TRUCK_L4, Leg, NetSim, Platoon, Trip

TRUCK_ACC = dataclasses.replace(TRUCK_L4, name="truck-acc", model="acc")
#: A car whose brakes fail (0.3 m/s² at most): it runs into the queue at the red light.
WRECK = dataclasses.replace(CAR, name="wreck", decel_mps2=0.3, emergency_decel_mps2=0.3)

ROUTE = ("a", "b", "c", "d")
DT_S = 0.2
STEPS = 260  # 52 s
COMPARED = ("status", "edge", "route_ptr", "mode", "hard_brakes", "leader")
CLOSE = ("pos_m", "speed_mps", "accel_mps2", "energy_kwh", "distance_m", "min_ttc_s")


def _world() -> RoadNetwork:
    """a -> b (a 3 % climb to a signal, red from t = 16 s to 30 s) -> c -> d (to a plant
    that holds 2 trucks), with a tertiary road s (its cars yield) and a trunk road z (its
    cars merge with c's traffic as a zipper, or cross it to y: c's traffic gives way to
    them, coming from its right) joining at c's end."""
    plan = SignalPlan(
        (SignalPhase(13.0, ("b",)), SignalPhase(3.0, ()), SignalPhase(14.0, ())), offset_s=0.0
    )
    nodes = [
        Node("n0", 109.00, 39.0),
        Node("n1", 109.003, 39.0),
        Node("n2", 109.008, 39.0, junction=JunctionType.TRAFFIC_SIGNAL, signal=plan),
        Node("n3", 109.011, 39.0),
        Node("n4", 109.014, 39.0),
        Node("m0", 109.011, 39.002),
        Node("z0", 109.011, 38.998),
        Node("y0", 109.0113, 39.002),
    ]
    trunk = RoadClass.TRUNK
    edges = [
        Edge("a", "n0", "n1", 300.0, speed_limit_mps=25.0, road_class=trunk),
        Edge(
            "b",
            "n1",
            "n2",
            400.0,
            speed_limit_mps=25.0,
            road_class=trunk,
            stations_m=(0.0, 400.0),
            elevation_m=(1300.0, 1312.0),
        ),
        Edge("c", "n2", "n3", 300.0, speed_limit_mps=22.0, road_class=trunk),
        Edge("s", "m0", "n3", 200.0, speed_limit_mps=15.0, road_class=RoadClass.TERTIARY),
        Edge("z", "z0", "n3", 250.0, speed_limit_mps=20.0, road_class=trunk),
        Edge("d", "n3", "n4", 300.0, speed_limit_mps=25.0, road_class=trunk),
        Edge("y", "n3", "y0", 300.0, speed_limit_mps=20.0, road_class=trunk),
    ]
    sites = [Site("plant", SiteKind.POWER_PLANT, "Plant", "电厂", "n4", 109.015, 39.0)]
    return RoadNetwork.build(nodes, edges, sites)


def scenario(instances: int = 1, dt_s: float = DT_S) -> NetSim:
    """A 1+4 platoon on a toward the signal, a solo ACC truck behind it and a car whose
    brakes fail behind that (it runs into the ACC truck at the red light), three trucks on d
    about to reach the plant (the third waits at the gate until the first has dwelt 8 s),
    cars on s and z near the junction behind a truck that crawls across c's road into y (the
    truck on c coming to the junction waits for its body to clear it); every vehicle placed on
    the road at t = 0 (the fused kernel does not insert), beacons lost with p = 0.2."""
    to_plant = (Leg(ROUTE, 8.0, "plant"),)
    trips = [Trip(f"p{j}", "truck-human" if j == 0 else "truck-l4", to_plant) for j in range(5)]
    trips += [Trip("acc", "truck-acc", to_plant), Trip("wreck", "wreck", (Leg(ROUTE),))]
    trips += [Trip(f"g{j}", "truck-human", (Leg(("d",), 8.0, "plant"),)) for j in range(3)]
    trips += [Trip("cx", "truck-human", (Leg(("c", "d")),))]
    trips += [Trip(f"s{j}", "car", (Leg(("s", "d")),)) for j in range(2)]
    trips += [Trip("z0", "car", (Leg(("z", "d")),)), Trip("z1", "car", (Leg(("z", "y")),))]
    trips += [Trip("zt", "truck-human", (Leg(("z", "y")),), speed_cap_mps=3.0)]
    sim = NetSim(
        _world(),
        trips,
        platoons=[Platoon("p", tuple(f"p{j}" for j in range(5)))],
        vtypes=(CAR, TRUCK_HUMAN, TRUCK_L4, TRUCK_ACC, WRECK),
        site_capacity={"plant": 2},
        instances=instances,
        loss=0.2,
        dt_s=dt_s,
        record_every_s=1e9,
    )
    places: list[tuple[str, str, float, float]] = [
        (f"p{j}", "a", 280.0 - 42.0 * j, 20.0) for j in range(5)
    ]
    places += [("acc", "a", 40.0, 18.0), ("wreck", "a", 5.0, 22.0)]
    places += [(f"g{j}", "d", 250.0 - 45.0 * j, 12.0) for j in range(3)]
    places += [("cx", "c", 150.0, 20.0)]
    places += [("s0", "s", 160.0, 12.0), ("s1", "s", 120.0, 12.0)]
    places += [("z0", "z", 200.0, 18.0), ("z1", "z", 150.0, 18.0), ("zt", "z", 245.0, 3.0)]
    for k in range(instances):
        tag = f"#{k}" if instances > 1 else ""
        for vid, edge, pos_m, speed_mps in places:
            sim.place(vid + tag, edge, 0, pos_m - 0.07 * k, speed_mps)
    return sim


def _copy(fleet: net_jax.Fleet) -> net_jax.Fleet:
    return dataclasses.replace(
        fleet, **{f.name: np.array(getattr(fleet, f.name)) for f in dataclasses.fields(fleet)}
    )


def compare(instances: int, steps: int, dt_s: float = DT_S) -> dict[str, Any]:
    """Run the scenario ``steps`` steps in the fused kernel and in Numba from the same start;
    what differs, and what the CPU run went through."""
    from convoy.sim import net_cuda

    sim = scenario(instances, dt_s)
    tables = net_jax.tables_from_sim(sim)
    fleet = _copy(net_jax.fleet_from_sim(sim))
    cfg = net_jax.config_from_sim(sim)
    fused = net_cuda.run_fused(
        tables, fleet, cfg, sim._edge_caps(0.0), sim._closed_lanes(0.0), steps
    )
    ref = sim.run(steps * dt_s)
    s = sim.state
    f = fused.fleet
    np.seterr(invalid="ignore")  # inf - inf where neither run saw a leader close in
    out: dict[str, Any] = {
        "unsupported": net_cuda.unsupported(tables, fleet),
        "differ": {k: int(np.sum(s[k] != getattr(f, k))) for k in COMPARED if k != "leader"},
        "close": {
            k: float(np.nanmax(np.abs(s[k] - getattr(f, k)))) if s[k].size else 0.0 for k in CLOSE
        },
        "leader_differ": int(np.sum(sim._leader != f.leader)),
        "gap_differ_m": float(
            np.max(np.abs(np.where(sim._gap_now < nk.NO_GAP, sim._gap_now - f.gap_now_m, 0.0)))
        ),
        "site_load": [sim._site_load.tolist(), f.site_load.tolist()],
        "collisions": [int(ref.collisions), int(fused.collisions.sum())],
        "arrivals_gpu": int(fused.arrivals.sum()),
        "status_cpu": np.bincount(s["status"], minlength=6).tolist(),
        "hard_brakes": int(s["hard_brakes"].sum()),
        "min_ttc_s": float(s["min_ttc_s"].min()),
    }
    return out


@pytest.fixture(scope="module")
def simulated() -> dict[str, Any]:
    return run_simulated(__file__, "1", str(STEPS))


def test_fused_kernel_equals_numba_in_the_cuda_simulator(simulated: dict[str, Any]) -> None:
    """In the simulator the kernel calls the CPU kernel's compiled model functions, so every
    field must be equal, not merely close."""
    r = simulated
    assert r["unsupported"] == []
    assert r["differ"] == {k: 0 for k in COMPARED if k != "leader"}, r
    assert r["close"] == {k: 0.0 for k in CLOSE}, r
    assert r["leader_differ"] == 0 and r["gap_differ_m"] == 0.0
    assert r["site_load"][0] == r["site_load"][1]
    assert r["collisions"][0] == r["collisions"][1]


def test_the_scenario_exercises_what_the_kernel_must_get_right(simulated: dict[str, Any]) -> None:
    """The run passes what would hide a difference: trucks reach the plant (arrivals), one
    waits at the full gate and then the first ones leave (done), vehicles brake hard (the
    red light), the wreck runs into the ACC truck (one collision, two vehicles removed). (The
    rule for a vehicle still in the junction changes the run: without it the state after
    52 s differs; measured with the rule knocked out of the CPU kernel.)"""
    r = simulated
    st = r["status_cpu"]
    assert r["arrivals_gpu"] == st[nk.ST_DONE] >= 7, st  # all that arrived dwelt and left
    assert r["collisions"] == [1, 1] and st[nk.ST_REMOVED] == 2  # the wreck and the ACC truck
    assert r["hard_brakes"] >= 1
    assert r["min_ttc_s"] < 1.0


def test_unsupported_names_what_the_kernel_does_not_run() -> None:
    """Insertion, later legs and multi-lane edges stay with the other backends."""
    from convoy.sim import net_cuda

    sim = scenario(1)
    tables = net_jax.tables_from_sim(sim)
    fleet = net_jax.fleet_from_sim(sim)
    assert net_cuda.unsupported(tables, fleet) == []
    waiting = dataclasses.replace(fleet, status=np.zeros_like(fleet.status))
    assert net_cuda.unsupported(tables, waiting) == ["vehicles waiting to depart (insertion)"]
    two = dataclasses.replace(tables, edge_lanes=np.full_like(tables.edge_lanes, 2))
    assert net_cuda.unsupported(two, fleet) == ["edges with more than one lane"]
    with pytest.raises(ValueError, match="does not run: vehicles waiting"):
        net_cuda.FusedWorld(
            tables,
            waiting,
            net_jax.config_from_sim(sim),
            sim._edge_caps(0.0),
            sim._closed_lanes(0.0),
        )


@pytest.mark.gpu
def test_fused_kernel_on_the_gpu_agrees_with_numba() -> None:
    """On a GPU: 64 instances, 260 steps; discrete outcomes equal, positions within 1 mm
    and speeds within 1 mm/s (the device's fused multiply-adds round differently)."""
    from convoy.sim.cuda_target import has_gpu

    if not has_gpu():
        pytest.skip("no CUDA GPU: CI has none (numba.cuda.is_available() is False)")
    r = compare(64, STEPS)
    assert r["unsupported"] == []
    assert r["differ"] == {k: 0 for k in COMPARED if k != "leader"}, r
    assert r["close"]["pos_m"] < 1e-3 and r["close"]["speed_mps"] < 1e-3, r
    assert r["collisions"] == [64, 64]


if __name__ == "__main__":  # the child process of the simulator test
    print(json.dumps(compare(int(sys.argv[1]), int(sys.argv[2]))))
