"""The network engine's JAX backend against its Numba backend, on the same scenarios.

Measured here (JAX 0.10 on the CPU) on the scenario below (junctions, a signal, a site,
the 1,000 km road, a multi-lane road with MOBIL, cut-ins, a platoon changing lanes, and
manoeuvres), 300 s, two instances: in float64, FCD positions and gaps agree to 1.4e-12 m,
speeds to 4e-13 m/s, energies to 8e-14 kWh, and the event logs (departures, lane changes,
cut-ins, manoeuvre messages, arrivals, releases from the site, collisions) are identical;
the tests allow 1e-9. In float32 with compensated per-edge offsets (the GPU's arithmetic,
run on the CPU): the same events; positions within 0.5 mm on the single-lane roads, 9 mm on
the multi-lane road; on the long road, 2 µm after 984-990 km.

The two runs compile the step once each (10-25 s on two busy cores); the 1,000 km run
reuses the float32 compilation (same shapes, another ``dt``)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from test_network_engine import _first_on, _junction_net, _truck_across_a_stream

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
from convoy.sim.network import (
    CAR,
    TRUCK_HUMAN,
    TRUCK_L4,
    Flow,
    LaneClosure,
    Leg,
    NetResult,
    NetSim,
    NetSimError,
    Platoon,
    SpeedCap,
    Trip,
)

TRUCK_ACC = dataclasses.replace(TRUCK_L4, name="truck-acc", model="acc")
#: A car whose brakes fail (0.3 m/s² at most): it runs into the queue at the red light.
WRECK = dataclasses.replace(CAR, name="wreck", decel_mps2=0.3, emergency_decel_mps2=0.3)
#: Followers at a 2.2 s time gap: gaps wide enough for cars to cut in.
WIDE = dataclasses.replace(TRUCK_L4, name="truck-l4-wide", time_gap_s=2.2)
VTYPES = (CAR, TRUCK_HUMAN, TRUCK_L4, TRUCK_ACC, WRECK, WIDE)
ROUTE = ("a", "b", "c", "d")
RUN_S = 300.0
LONG_EDGES_M = np.array([100_000.37 + 1.13 * k for k in range(10)])
LONG_ROUTE = tuple(f"long{k}" for k in range(10))
MULTI_ROUTE = ("m0", "m1", "m2", "m3")


def _junction_world() -> RoadNetwork:
    """a -> b (a 3 % climb to a signal) -> c -> d (to a plant), with a tertiary road s and a
    trunk road z joining at c's end: cars on s yield, cars on z merge with c as a zipper."""
    # b's green 40 s, yellow 3 s, red 30 s; red from t = 75 s, when the platoon gets there
    plan = SignalPlan(
        (SignalPhase(40.0, ("b",)), SignalPhase(3.0, ()), SignalPhase(30.0, ())), offset_s=41.0
    )
    nodes = [
        Node("n0", 109.00, 39.0),
        Node("n1", 109.01, 39.0),
        Node("n2", 109.02, 39.0, junction=JunctionType.TRAFFIC_SIGNAL, signal=plan),
        Node("n3", 109.03, 39.0),
        Node("n4", 109.05, 39.0),
        Node("m0", 109.03, 39.01),
        Node("z0", 109.03, 38.99),
    ]
    trunk = RoadClass.TRUNK
    edges = [
        Edge("a", "n0", "n1", 800.0, speed_limit_mps=25.0, road_class=trunk),
        Edge(
            "b",
            "n1",
            "n2",
            1200.0,
            speed_limit_mps=25.0,
            road_class=trunk,
            stations_m=(0.0, 1200.0),
            elevation_m=(1300.0, 1336.0),
        ),
        Edge("c", "n2", "n3", 900.0, speed_limit_mps=22.0, road_class=trunk),
        Edge("s", "m0", "n3", 400.0, speed_limit_mps=15.0, road_class=RoadClass.TERTIARY),
        Edge("z", "z0", "n3", 500.0, speed_limit_mps=20.0, road_class=trunk),
        Edge("d", "n3", "n4", 1500.0, speed_limit_mps=25.0, road_class=trunk),
    ]
    # apart from it, a long road: ten edges of about 100 km (lengths float32 cannot hold),
    # 1,000.05 km in all, at 24.75 m/s
    nodes += [Node(f"L{k}", 100.0 + k, 40.0) for k in range(11)]
    edges += [
        Edge(f"long{k}", f"L{k}", f"L{k + 1}", float(x), speed_limit_mps=24.75)
        for k, x in enumerate(LONG_EDGES_M)
    ]
    # and a multi-lane road: 2 lanes, 3, 2 (the third ends), 1 (the second ends)
    nodes += [Node(f"w{k}", 108.0 + 0.02 * k, 38.0) for k in range(5)]
    edges += [
        Edge(f"m{k}", f"w{k}", f"w{k + 1}", length, lanes=lanes, speed_limit_mps=25.0)
        for k, (length, lanes) in enumerate(((1500.0, 2), (1000.0, 3), (1500.0, 2), (800.0, 1)))
    ]
    sites = [Site("plant", SiteKind.POWER_PLANT, "Plant", "电厂", "n4", 109.06, 39.0)]
    return RoadNetwork.build(nodes, edges, sites)


def _junction_sim(backend: str = "cpu", dt_s: float = 0.1, record_every_s: float = 1.0) -> NetSim:
    """A 1+4 platoon to the plant (30 s dwell, room for 3), three solo human trucks, a solo
    ACC truck, cars on both side roads, the wreck, a speed cap on d from 150 to 200 s;
    three solo ACC trucks 2 minutes apart on the long road; on the multi-lane road a flow
    of cars (900/h), three trucks held to 18 m/s that the cars overtake, a 1+4 platoon with
    wide gaps, and works closing m2's right lane from 60 to 200 s (the platoon moves left
    as one unit), a member leaving it and a truck asking to join (manoeuvres over V2V, in
    instance 0). Two instances with 20 % beacon and message loss (each draws its own
    losses and cut-in decisions)."""
    legs = (Leg(ROUTE, 30.0, "plant"),)
    trips = [Trip(f"p{j}", "truck-human" if j == 0 else "truck-l4", legs) for j in range(5)]
    trips += [Trip(f"solo{j}", "truck-human", (Leg(ROUTE),), 20.0 + 15.0 * j) for j in range(3)]
    trips += [Trip("acc", "truck-acc", (Leg(ROUTE),), 5.0)]
    trips += [Trip(f"minor{j}", "car", (Leg(("s", "d")),), 150.0 + 6.0 * j) for j in range(6)]
    trips += [Trip(f"zip{j}", "car", (Leg(("z", "d")),), 140.0 + 5.0 * j) for j in range(8)]
    trips += [Trip("wreck", "wreck", (Leg(ROUTE),), 40.0)]
    trips += [Trip(f"far{j}", "truck-acc", (Leg(LONG_ROUTE),), 120.0 * j) for j in range(3)]
    multi = (Leg(MULTI_ROUTE),)
    trips += [
        Trip(f"q{j}", "truck-human" if j == 0 else "truck-l4-wide", multi, 30.0) for j in range(5)
    ]
    trips += [
        Trip(f"slow{j}", "truck-human", multi, 10.0 + 40.0 * j, speed_cap_mps=18.0)
        for j in range(3)
    ]
    trips += [Trip("qj", "truck-l4", multi, 40.0)]
    sim = NetSim(
        _junction_world(),
        trips,
        flows=[Flow("cars", MULTI_ROUTE, 900.0, "car", 0.0, 250.0)],
        platoons=[
            Platoon("p", tuple(f"p{j}" for j in range(5))),
            Platoon("q", tuple(f"q{j}" for j in range(5))),
        ],
        lane_closures=[LaneClosure("m2", 0, 60.0, 200.0)],
        vtypes=VTYPES,
        site_capacity={"plant": 3},
        speed_caps=[SpeedCap(("d",), 150.0, 200.0, 12.0)],
        instances=2,
        loss=0.2,
        backend=backend,
        dt_s=dt_s,
        record_every_s=record_every_s,
        manoeuvres=True,
    )
    # instance 0 only: q2 leaves its platoon (a lane change out of it), qj asks to join
    sim.request_leave(80.0, "q2#0")
    sim.request_join(100.0, "qj#0", "q0#0")
    return sim


@pytest.fixture(scope="module")
def numba_run() -> NetResult:
    return _junction_sim("cpu").run(RUN_S)


@pytest.fixture(scope="module")
def jax_run() -> NetResult:
    return _junction_sim("jax").run(RUN_S)


def _rows(res: NetResult, vehicle: str, edge: str) -> np.ndarray:
    f = res.fcd
    return (f["vehicle"] == res.vehicle_ids.index(vehicle)) & (
        f["edge"] == res.edge_ids.index(edge)
    )


def _assert_agree(
    ref: NetResult,
    res: NetResult,
    pos_m: float,
    speed_mps: float,
    energy_kwh: float,
    mode_share: float = 0.0,
) -> None:
    fa, fb = ref.fcd, res.fcd
    for col in ("time_s", "vehicle", "edge", "lane"):
        np.testing.assert_array_equal(fa[col], fb[col], err_msg=col)
    # a follower held exactly at its CACC gap sits on the law's mode boundary (spacing
    # error 0), where rounding picks the side: the mode shown may differ on such rows
    assert np.mean(fa["mode"] != fb["mode"]) <= mode_share
    np.testing.assert_allclose(fb["pos_m"], fa["pos_m"], rtol=0, atol=pos_m)
    np.testing.assert_allclose(fb["gap_m"], fa["gap_m"], rtol=0, atol=pos_m)
    np.testing.assert_allclose(fb["speed_mps"], fa["speed_mps"], rtol=0, atol=speed_mps)
    np.testing.assert_allclose(fb["energy_kwh"], fa["energy_kwh"], rtol=0, atol=energy_kwh)
    np.testing.assert_allclose(res.distance_m, ref.distance_m, rtol=0, atol=pos_m)
    assert res.events == ref.events
    assert res.collisions == ref.collisions
    np.testing.assert_array_equal(res.status, ref.status)
    np.testing.assert_array_equal(res.hard_brakes, ref.hard_brakes)


def test_scenario_exercises_what_the_backends_must_agree_on(numba_run: NetResult) -> None:
    """The Numba run of the agreement scenario (the reference) shows each feature at work,
    so that the agreement below covers it."""
    res = numba_run
    f = res.fcd
    # the platoon stops at the red light, head and followers (1 s samples)
    for v in ("p0#0", "p4#0"):
        assert f["speed_mps"][_rows(res, v, "b")].min() < 0.5
    # a 49 t truck climbs 3 % at full power below the 25 m/s limit
    assert f["speed_mps"][_rows(res, "solo0#0", "b")].min() < 20.0
    # cars on the tertiary road wait for the trunk; the zipper slows cars on z
    assert f["speed_mps"][_rows(res, "minor1#0", "s")].min() < 0.01
    assert f["speed_mps"][_rows(res, "zip2#0", "z")].min() < 10.0
    # the speed cap on d, and the CACC law's modes including the ACC fallback (cars that
    # merged in front of followers, lost beacons)
    on_d = f["edge"] == res.edge_ids.index("d")
    capped = on_d & (f["time_s"] > 160.0) & (f["time_s"] < 200.0)
    free = on_d & (f["time_s"] > 200.0)
    assert np.median(f["speed_mps"][capped]) <= 12.0 < np.median(f["speed_mps"][free])
    assert {1, 2, 3, 4, 6} <= set(np.unique(f["mode"]).astype(int).tolist())
    # the plant holds 3: p3 arrives only after p0 has left
    ev = [(e["time_s"], e["kind"], e["vehicle_id"]) for e in res.events]
    t_p3 = next(t for t, k, v in ev if k == "arrive-site" and v == "p3#0")
    t_p0 = next(t for t, k, v in ev if k == "finish" and v == "p0#0")
    assert t_p3 > t_p0
    # the wreck hits the queue at the red light, once in each instance
    hits = [e for e in res.events if e["kind"] == "collision"]
    assert {(e["vehicle_id"], e["instance"]) for e in hits} == {("wreck#0", 0), ("wreck#1", 1)}
    # on the multi-lane road: MOBIL changes, cars cutting into the platoon's gaps, the
    # platoon leaving the closed lane as one unit
    kinds = {e["kind"] for e in res.events}
    assert {"lane-change", "cut-in", "platoon-lane-change"} <= kinds
    # manoeuvres: the leave completes, the join is turned down (q is a 1+3 platoon
    # changing lanes), both negotiated over the lossy link
    man = [(e["kind"], e["vehicle_id"]) for e in res.events if "-" in str(e["kind"])]
    assert ("leave-complete", "q2#0") in man and ("join-abort", "qj#0") in man
    assert ("leave-retry", "q2#0") in man
    # the instances differ (their own losses and cut-in draws, the manoeuvres)
    inst = res.instance[f["vehicle"].astype(int)]
    assert not np.array_equal(f["speed_mps"][inst == 0], f["speed_mps"][inst == 1])


def test_jax_float64_agrees_with_numba(numba_run: NetResult, jax_run: NetResult) -> None:
    """Backend ``jax`` (float64) gives the Numba backend's trajectories and events."""
    _assert_agree(numba_run, jax_run, pos_m=1e-9, speed_mps=1e-9, energy_kwh=1e-9)
    np.testing.assert_allclose(jax_run.min_ttc_s, numba_run.min_ttc_s, rtol=1e-9)


def test_jax_gives_way_at_a_crossing_as_numba_does() -> None:
    """A cross of equal two-way roads (west-east the main road): on each arm a car every 9 s
    for a minute, to every other arm, so that left turns meet oncoming traffic, the side
    roads wait for the main road and the side roads' left turns for each other. Backend
    ``jax`` gives the Numba run's trajectories and events, and the rules are at work: some
    car stops short of the node."""
    arms = {"w": (109.0, 39.0), "e": (109.02, 39.0), "s": (109.01, 38.99), "n": (109.012, 39.01)}
    nodes = [Node("j", 109.01, 39.0), *(Node(a, *xy) for a, xy in arms.items())]
    edges = [Edge(f"{a}{b}", a, b, 600.0) for x in arms for a, b in ((x, "j"), ("j", x))]
    net = RoadNetwork.build(nodes, edges)
    trips = [
        Trip(f"{a}{b}{k}", "car", (Leg((f"{a}j", f"j{b}")),), 9.0 * k + 2.0 * i)
        for i, a in enumerate(arms)
        for b in arms
        if b != a
        for k in range(7)
    ]
    ref = NetSim(net, trips, record_every_s=1.0).run(400.0)
    res = NetSim(net, trips, backend="jax", record_every_s=1.0).run(400.0)
    _assert_agree(ref, res, pos_m=1e-9, speed_mps=1e-9, energy_kwh=1e-9)
    f = ref.fcd
    approach = np.isin(f["edge"], [ref.edge_ids.index(f"{a}j") for a in arms])
    assert f["speed_mps"][approach].min() < 0.5
    assert np.all(ref.status == nk.ST_DONE)


def test_jax_waits_for_a_truck_to_clear_the_junction_as_numba_does() -> None:
    """A truck crawls (3 m/s) straight through a T of primary roads from west to east; a car
    from the tertiary stem turns left across its path, timed to reach its line as the truck
    comes. Backend ``jax`` gives the Numba run, and the rule for a vehicle still in the
    junction is at work: the car reaches the node only after the truck's rear has left it."""
    net = _junction_net("wes", minor="s")
    trips = [
        Trip("truck", "truck-human", (Leg(("wj", "je")),), 0.0, speed_cap_mps=3.0),
        Trip("car", "car", (Leg(("sj", "jw")),), 276.0),
    ]
    ref = NetSim(net, trips, record_every_s=0.1).run(400.0)
    res = NetSim(net, trips, backend="jax", record_every_s=0.1).run(400.0)
    _assert_agree(ref, res, pos_m=1e-9, speed_mps=1e-9, energy_kwh=1e-9)
    je, jw = ref.edge_ids.index("je"), ref.edge_ids.index("jw")
    rear = _first_on(ref, 0, je, TRUCK_HUMAN.length_m)
    crossed = _first_on(ref, 1, jw)
    assert rear <= crossed < rear + 4.0


def test_jax_lets_a_truck_wait_for_a_gap_it_can_clear_as_numba_does() -> None:
    """``test_network_engine``'s truck from a minor road across a stream of cars with 6.2 s
    gaps, which it lets pass (``nk.critical_gap_s``): backend ``jax`` gives the Numba run."""
    _assert_agree(
        _truck_across_a_stream("cpu"),
        _truck_across_a_stream("jax"),
        pos_m=1e-9,
        speed_mps=1e-9,
        energy_kwh=1e-9,
    )


def test_unrolled_loops_give_the_same_run(jax_run: NetResult) -> None:
    """Three steps per loop iteration and the step's fixed-length loops unrolled (options
    for XLA on a GPU) change the program, not the arithmetic: the same FCD, events and
    counts as the plain JAX run, bit for bit."""
    sim = _junction_sim("cpu")
    res = net_jax.run(sim, RUN_S, unroll_steps=3, unroll_inner=True)
    _assert_agree(jax_run, res, pos_m=0.0, speed_mps=0.0, energy_kwh=0.0)
    np.testing.assert_array_equal(res.min_ttc_s, jax_run.min_ttc_s)


def test_jax_float32_offsets_agree_with_numba(numba_run: NetResult) -> None:
    """The GPU's arithmetic (float32, compensated per-edge offsets) run on the CPU: the same
    events, lane changes and manoeuvres, positions and gaps within 5 cm and speeds within
    5 cm/s of the float64 Numba run (measured: 0.5 mm on the single-lane roads, up to 1 cm
    on the multi-lane road where cars cut in and float32 rounding in the laws builds up;
    2 of 32,000 rows show another CACC mode, at the boundary the law's mode flips on)."""
    res = net_jax.run(_junction_sim("cpu"), RUN_S, precision="float32")
    _assert_agree(numba_run, res, pos_m=0.05, speed_mps=0.05, energy_kwh=1e-2, mode_share=1e-3)


def _along_long_road(sim: NetSim) -> np.ndarray:
    """Distance of each truck on the long road from its start [m]."""
    rows = [sim.vehicle_ids.index(f"far{j}#{k}") for k in range(2) for j in range(3)]
    ends = np.concatenate([[0.0], np.cumsum(LONG_EDGES_M)])
    first = sim.edge_ids.index(LONG_ROUTE[0])
    s = sim.state
    assert np.all(s["status"][rows] == nk.ST_DRIVING)
    return ends[s["edge"][rows] - first] + s["pos_m"][rows]


def test_float32_offsets_keep_centimetres_on_a_1000_km_route() -> None:
    """The same scenario at ``dt`` 1.9 s (``v * dt`` no float32 number either; the same
    compiled step as above) for 40,000 s: the trucks on the long road have driven 980 to
    990 km, 90 km into its last edge, and the float32 step's positions and odometers are
    within 1 cm of the float64 Numba run's; one float32 position summed step by step
    would be off by hundreds of metres."""
    ref = _junction_sim("cpu", dt_s=1.9, record_every_s=19.0)
    got = _junction_sim("cpu", dt_s=1.9, record_every_s=19.0)
    assert LONG_EDGES_M.sum() >= 1_000_000.0
    ref.run(40_000.0, chunk_steps=10_000)
    net_jax.run(got, 40_000.0, precision="float32")
    along_ref = _along_long_road(ref)
    assert along_ref.min() > 980_000.0
    np.testing.assert_allclose(_along_long_road(got), along_ref, rtol=0, atol=0.01)
    far = [ref.vehicle_ids.index(f"far{j}#0") for j in range(3)]
    np.testing.assert_allclose(
        got.state["distance_m"][far], ref.state["distance_m"][far], rtol=0, atol=0.01
    )
    # the same distance as one float32 sum: hundreds of metres off
    steps = round(40_000.0 / 1.9)
    naive = np.cumsum(np.full(steps, np.float32(24.75 * 1.9), np.float32), dtype=np.float32)
    assert abs(float(naive[-1]) - steps * 24.75 * 1.9) > 100.0


def _two_lane_world() -> RoadNetwork:
    nodes = [Node(f"n{k}", 109.0 + 0.01 * k, 39.0) for k in range(4)]
    edges = [
        Edge("e0", "n0", "n1", 1000.0, lanes=2),
        Edge("e1", "n1", "n2", 0.5, lanes=2),  # shorter than a car's step at 33 m/s
        Edge("e2", "n2", "n3", 1000.0, lanes=2),
    ]
    return RoadNetwork.build(nodes, edges)


def test_feature_it_lacks_is_named() -> None:
    """An edge shorter than what a step can cross is refused by name, with what is allowed;
    lane changes and manoeuvres on the same road are not."""
    trips = [Trip("t", "truck-human", (Leg(("e0",)),)), Trip("c", "car", (Leg(("e0",)),))]
    NetSim(_two_lane_world(), trips, manoeuvres=True, backend="jax")
    short = [Trip("s", "car", (Leg(("e0", "e1", "e2")),))]
    with pytest.raises(NetSimError) as err:
        NetSim(_two_lane_world(), trips + short, backend="jax")
    assert str(err.value) == (
        "backend 'jax': the JAX network step does not have route edges shorter than 1.11 m "
        "(a third of a step's advance at top speed, dt_s = 0.1); use backend 'cpu'"
    )


def test_unknown_backend_lists_the_allowed_ones() -> None:
    with pytest.raises(NetSimError, match=r"backend = 'cuda'; allowed: cpu, jax, gpu"):
        NetSim(_two_lane_world(), backend="cuda")


def _gpus() -> list[Any]:
    try:
        return list(jax.devices("gpu"))
    except RuntimeError:
        return []


def test_gpu_backend_without_a_gpu_says_so() -> None:
    if _gpus():
        pytest.skip("JAX sees a GPU here; the message is for machines without one")
    with pytest.raises(NetSimError, match="needs a CUDA GPU"):
        NetSim(_two_lane_world(), backend="gpu")


@pytest.mark.gpu
def test_gpu_agrees_with_numba(numba_run: NetResult) -> None:
    """Backend ``gpu`` (float32, compensated per-edge offsets, on the GPU) against Numba.
    The GPU rounds differently from the CPU (fused multiply-adds, its own division and
    square root), so a CACC mode switch may come a step earlier or later: 5 cm and
    0.2 m/s allow for it; the same vehicles collide and arrive."""
    if not _gpus():
        pytest.skip(f"no GPU: CI has none (JAX sees {jax.devices()})")
    res = _junction_sim("gpu").run(RUN_S)
    f, g = numba_run.fcd, res.fcd
    assert res.collisions == numba_run.collisions
    np.testing.assert_array_equal(res.status, numba_run.status)
    for col in ("time_s", "vehicle", "edge"):
        np.testing.assert_array_equal(g[col], f[col], err_msg=col)
    np.testing.assert_allclose(g["pos_m"], f["pos_m"], rtol=0, atol=0.05)
    np.testing.assert_allclose(g["speed_mps"], f["speed_mps"], rtol=0, atol=0.2)
    kinds = sorted((e["kind"], e["vehicle_id"]) for e in res.events)
    assert kinds == sorted((e["kind"], e["vehicle_id"]) for e in numba_run.events)
    ref = _junction_sim("cpu", dt_s=1.9, record_every_s=19.0)
    got = _junction_sim("cpu", dt_s=1.9, record_every_s=19.0)
    ref.run(40_000.0, chunk_steps=10_000)
    net_jax.run(got, 40_000.0, precision="float32", device=_gpus()[0])
    np.testing.assert_allclose(_along_long_road(got), _along_long_road(ref), rtol=0, atol=0.01)


def _bench_script() -> Any:
    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu_net_bench.py"
    spec = importlib.util.spec_from_file_location("gpu_net_bench", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_bench_world_is_netsims_batch() -> None:
    """The benchmark's fleet, replicated from one corridor with arrays, is what NetSim
    builds for the same instances (copies numbered within each, the same routes ahead),
    and the formed platoons it places on the road drive on without a collision."""
    bench = _bench_script()
    one = bench.corridor_sim(20, 4, 2.0)
    three = bench.corridor_sim(20, 4, 2.0, instances=3)
    rep = net_jax.replicate(net_jax.fleet_from_sim(one), 3)
    ref = net_jax.fleet_from_sim(three)
    legs = {"leg", "leg_end", "route_ptr"}  # NetSim gives each copy its own legs
    for fld in dataclasses.fields(net_jax.Fleet):
        if fld.name not in legs:
            a, b = getattr(rep, fld.name), getattr(ref, fld.name)
            np.testing.assert_array_equal(a, b, err_msg=fld.name)

    def ahead(sim: NetSim, fl: net_jax.Fleet) -> list[tuple[int, ...]]:
        hi = sim._leg_hi
        rows = zip(fl.route_ptr, fl.leg, strict=True)
        return [tuple(sim._route_edges[r : hi[g]].tolist()) for r, g in rows]

    assert ahead(one, rep) == ahead(three, ref)
    res = three.run(60.0)
    assert res.collisions == 0
    assert np.all(three.state["status"] == nk.ST_DRIVING)
    late = res.fcd["time_s"] >= 30.0
    assert np.all((res.fcd["speed_mps"][late] > 15.0) & (res.fcd["speed_mps"][late] <= 25.0))
