"""``convoy bench network`` compares like with like: the same network, trucks and counts.

The benchmark itself is not run here and no timing is asserted (STYLE.md 11); these tests
check its machinery on a small ring: the network survives the trip through netconvert,
the demand through the ``.rou.xml``, both engines see every truck depart and arrive, the
free-flow travel times come out as length over speed on both sides, the vehicle-step
counts agree, and the engine's per-vehicle state fits the issue's memory budget.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from convoy.sim import bench_network as bn
from convoy.sim import net_kernel as nk
from convoy.sim.network import Leg, Trip
from convoy.sim.sumo_peer import sumo_binary


def _has_sumo() -> bool:
    try:
        sumo_binary("sumo")
        sumo_binary("netconvert")
    except FileNotFoundError:
        return False
    return True


needs_sumo = pytest.mark.skipif(not _has_sumo(), reason="SUMO (eclipse-sumo) not installed")

#: A small case: 4 nodes (8 edges of 3 km), 12 empty trucks of 1-2 edges leaving within a
#: minute, so every truck drives (almost) alone at 25 m/s.
SMALL_RING = bn.RingSpec(nodes=4, lanes=1)
SMALL_DEMAND = bn.DemandSpec(trucks=12, depart_window_s=60.0, route_edges=(1, 2), slow_share=0.0)


def test_vehicle_steps_count_the_steps_on_the_road() -> None:
    """A on the road over [0, 10) s, B from 5 s on, C never: in [2, 8) s that is 6 s + 3 s."""
    times = bn.TripTimes(
        ("A", "B", "C"),
        np.array([0.0, 5.0, np.nan]),
        np.array([10.0, np.inf, np.inf]),
    )
    assert times.vehicle_steps(2.0, 8.0, dt_s=0.1) == 90
    assert times.on_road(5.0) == 2
    assert times.on_road(10.0) == 1
    np.testing.assert_array_equal(times.finished(), [True, False, False])


def test_ring_routes_run_along_the_ring() -> None:
    net = bn.ring_network(bn.RingSpec(nodes=5, lanes=2))
    assert len(net.edges) == 10
    assert {e.length_m for e in net.edges.values()} == {bn.EDGE_M}
    assert {e.lanes for e in net.edges.values()} == {2}
    demand = bn.DemandSpec(trucks=200, slow_share=0.3, seed=3)
    trips = bn.ring_demand(5, demand)
    assert [t.vehicle_id for t in trips] == [f"t{k:05d}" for k in range(200)]
    departs = [t.depart_s for t in trips]
    assert departs == sorted(departs)
    assert all(0.0 <= d < demand.depart_window_s for d in departs)
    for t in trips:
        route = t.legs[0].route
        assert bn.ROUTE_EDGES[0] <= len(route) <= bn.ROUTE_EDGES[1]
        for a, b in itertools.pairwise(route):
            assert net.edges[a].to_node == net.edges[b].from_node
            assert net.edges[a].from_node != net.edges[b].to_node  # never a U-turn
    slow = sum(t.vtype == bn.TRUCK_LOADED.name for t in trips)
    assert 40 <= slow <= 80  # 30 % of 200, binomial sd 6.5


def test_routes_round_trip_through_the_rou_file(tmp_path: Path) -> None:
    trips = bn.ring_demand(6, bn.DemandSpec(trucks=30))
    path = bn.write_routes(trips, bn.BENCH_VTYPES, tmp_path / "t.rou.xml")
    assert bn.read_routes(path) == trips
    text = path.read_text()
    assert 'carFollowModel="IDM"' in text and 'speedDev="0.0"' in text
    assert 'departSpeed="max"' in text and 'tau="1.5"' in text


def test_bad_demand_names_the_field() -> None:
    with pytest.raises(bn.NetBenchError, match="route_edges"):
        bn.ring_demand(5, bn.DemandSpec(trucks=3, route_edges=(4, 2)))
    with pytest.raises(bn.NetBenchError, match="lanes = 0"):
        bn.ring_network(bn.RingSpec(nodes=5, lanes=0))
    late = [Trip("a", "truck-human", (Leg(("f0",)),), 5.0)]
    early = [Trip("b", "truck-human", (Leg(("f0",)),), 1.0)]
    with pytest.raises(bn.NetBenchError, match="departure order"):
        bn.write_routes(late + early, bn.BENCH_VTYPES, Path("unused.rou.xml"))


def test_engine_state_fits_the_memory_budget() -> None:
    """The issue's budget: at most 200 bytes of per-vehicle engine arrays per truck."""
    trips = bn.ring_demand(5, bn.DemandSpec(trucks=1_000))
    sim = bn.convoy_sim(bn.ring_network(bn.RingSpec(nodes=5)), trips)
    arrays = bn.engine_bytes(sim)
    assert "state.pos_m" in arrays and "_order" in arrays
    assert "_route_edges" not in arrays and "_leg_lo" not in arrays
    per_truck = sum(arrays.values()) / sim.n
    assert per_truck <= 200.0, f"{per_truck:.0f} bytes per truck: {arrays}"


@needs_sumo
def test_both_engines_run_every_truck_at_free_flow(tmp_path: Path) -> None:
    case = bn.prepare_case(SMALL_RING, SMALL_DEMAND, tmp_path)
    # the network survived netconvert: 8 edges of exactly 3 km, one lane, 25 m/s
    assert sorted(case.network.edges) == sorted(
        [bn.forward_edge(k) for k in range(4)] + [bn.backward_edge(k) for k in range(4)]
    )
    for e in case.network.edges.values():
        assert (e.length_m, e.lanes, e.speed_limit_mps) == (bn.EDGE_M, 1, bn.SPEED_LIMIT_MPS)
    ids = [t.vehicle_id for t in case.trips]
    planned = np.array([t.depart_s for t in case.trips])
    route_m = np.array([len(t.legs[0].route) * bn.EDGE_M for t in case.trips])

    sim, ours, collisions = bn.convoy_to_completion(case)
    theirs, lane_changes, full = bn.sumo_to_completion(case, tmp_path)
    assert collisions == 0 and full.collisions == 0 and full.teleports == 0
    assert lane_changes == 0
    # the same trucks depart and arrive on both sides
    assert list(sim.vehicle_ids) == ids and list(theirs.vehicle_ids) == ids
    assert ours.finished().all() and theirs.finished().all()
    # departures on time or nearly (entering traffic may wait a few seconds)
    assert np.all((ours.depart_s >= planned - 1e-6) & (ours.depart_s <= planned + 10.0))
    assert np.all((theirs.depart_s >= planned - 1e-6) & (theirs.depart_s <= planned + 10.0))
    # free flow: the route at 25 m/s (SUMO's trip starts 16.5 m in, convoy's at 0)
    free_s = route_m / bn.SPEED_LIMIT_MPS
    np.testing.assert_allclose(ours.travel_s(), free_s, rtol=0.03)
    np.testing.assert_allclose(theirs.travel_s(), free_s, rtol=0.03)
    agree = bn.agreement(ours, theirs, planned)
    assert agree["finished_both"] == 12
    assert abs(agree["travel_diff"]) < 0.02
    # vehicle-steps over a window, counted from each side's own records, agree
    t1, t2 = 30.0, 120.0
    assert ours.vehicle_steps(t1, t2) == pytest.approx(theirs.vehicle_steps(t1, t2), rel=0.02)
    # SUMO's timed runs (no outputs) see what its tripinfo pass saw
    run = bn.run_sumo_net(case.sumocfg, t2)
    assert run.running == theirs.on_road(t2)
    assert run.inserted == int(np.sum(theirs.depart_s <= t2))


@needs_sumo
def test_sumo_steady_takes_the_fastest_of_as_many_runs_as_convoy(tmp_path: Path) -> None:
    # SUMO's side is timed like convoy's (convoy_steady: best of REPEATS per end time), so a
    # stall of the host during one run hurts neither side alone
    case = bn.prepare_case(SMALL_RING, SMALL_DEMAND, tmp_path)
    theirs, _, _ = bn.sumo_to_completion(case, tmp_path)
    short, long, walls = bn.sumo_steady(case, theirs.on_road(case.t2_s), repeats=3)
    assert [len(w) for w in walls] == [3, 3]
    assert short.wall_s == min(walls[0]) and long.wall_s == min(walls[1])
    # each run stopped at its own end time, with what the tripinfo pass had on the road then
    for run, end_s in ((short, case.t1_s), (long, case.t2_s)):
        assert run.inserted == int(np.sum(theirs.depart_s <= end_s))
        assert run.running == theirs.on_road(end_s)
    # a count that does not match the tripinfo pass is refused, not timed
    with pytest.raises(RuntimeError, match="vehicles running but its tripinfo pass has"):
        bn.sumo_steady(case, theirs.on_road(case.t2_s) + 1, repeats=1)


def test_a_disturbed_timing_is_flagged() -> None:
    # the steady figure comes from a difference of two timed runs; where it strays from the
    # step's own timer by more than DISTURBED_SHARE, the host moved during a run (session
    # 15: 10.8 ns per vehicle-step from the runs against 15.0 from the timer, so 1.4x too
    # high a ratio)
    row = {"trucks": 2000, "lanes": 1, "convoy_step_ns": 15.0}
    assert bn.disturbed(row | {"convoy_steady_vsps": 1e9 / 14.0}) is None  # 7 % apart
    assert bn.disturbed(row | {"convoy_steady_vsps": 1e9 / 17.5}) is None  # 17 %
    line = bn.disturbed(row | {"convoy_steady_vsps": 1e9 / 10.8})  # 28 % too fast
    assert line is not None and "10.8 ns" in line and "15.0" in line
    assert bn.disturbed(row | {"convoy_steady_vsps": 1e9 / 20.0}) is not None  # 33 % too slow
    # no timer (a quiet road steps on one untimed thread): nothing to compare
    assert bn.disturbed(row | {"convoy_step_ns": None, "convoy_steady_vsps": 1e8}) is None
    # the timer read is that of the variant that ran most steps
    chooser = nk.StepChooser()
    chooser.record(nk.run_net_steps_parallel, True, 0.03, 500, 2_000_000)  # 15 ns
    chooser.record(nk.run_net_steps_one_core, True, 0.05, 50, 2_000_000)  # 25 ns
    assert bn._step_timer_ns(chooser) == pytest.approx(15.0)
    assert bn._step_timer_ns(nk.StepChooser()) is None


def test_loaded_truck_is_the_empty_one_held_to_72_kmh() -> None:
    diff = {
        f.name
        for f in dataclasses.fields(bn.TRUCK_LOADED)
        if getattr(bn.TRUCK_LOADED, f.name) != getattr(bn.TRUCK_EMPTY, f.name)
    }
    assert diff == {"name", "max_speed_mps"}
    assert bn.TRUCK_LOADED.max_speed_mps == pytest.approx(72 / 3.6)
