"""The network engine's scripted vehicles: a platoon placed formed, a forced cut-in, a
speed cap that brakes a car at a chosen rate, a per-vehicle type."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from convoy.road.network import Edge, Node, RoadNetwork
from convoy.sim import net_kernel as nk
from convoy.sim.network import (
    CAR,
    TRUCK_HUMAN,
    TRUCK_L4,
    Leg,
    NetSim,
    NetSimError,
    Platoon,
    Trip,
)
from convoy.sim.validation_net import CutInCase, cut_in_sim
from convoy.vehicle.sumo_cfm import MODE_ACC_FALLBACK, MODE_GAP, MODE_GAP_CLOSING, MODE_SPEED

V = 22.0
LEGS = (Leg(("road",)),)
IDS = ("t0", "t1", "t2")


def _sim(
    car_decel_mps2: float = CAR.decel_mps2,
    car_changes_lane: bool = False,
    road_m: float = 4000.0,
    time_gap_s: float = TRUCK_L4.time_gap_s,
) -> NetSim:
    """Three trucks formed at SUMO-CACC's equilibrium gap (min gap + tau v) at 22 m/s in
    lane 0 of a two-lane road (limit 25 m/s); a car that has not departed (depart at inf),
    which keeps its lane unless ``car_changes_lane``."""
    net = RoadNetwork.build(
        [Node("a", 109.0, 39.6), Node("b", 109.05, 39.6)],
        [Edge("road", "a", "b", road_m, lanes=2, speed_limit_mps=25.0)],
    )
    car = replace(CAR, decel_mps2=car_decel_mps2, can_change_lane=car_changes_lane)
    vtypes = [TRUCK_HUMAN, replace(TRUCK_L4, time_gap_s=time_gap_s), car]
    # the head cruises at 22 m/s below the 25 m/s limit, so followers can close a gap
    trips = [Trip(IDS[0], "truck-human", LEGS, speed_cap_mps=V)]
    trips += [Trip(v, "truck-l4", LEGS) for v in IDS[1:]]
    trips.append(Trip("car", "car", LEGS, depart_s=math.inf))
    sim = NetSim(net, trips, platoons=[Platoon("p", IDS)], vtypes=vtypes, record_every_s=0.1)
    pos = 1000.0
    for j, v in enumerate(IDS):
        if j:
            pos -= TRUCK_L4.length_m + TRUCK_L4.min_gap_m + time_gap_s * V
        sim.place(v, "road", 0, pos, V)
    return sim


def _series(res, vehicle: int, col: str) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    m = res.fcd["vehicle"] == vehicle
    return res.fcd["time_s"][m], res.fcd[col][m]


@pytest.mark.parametrize("time_gap_s", [1.0, 1.8])
def test_placed_platoon_cruises_at_its_equilibrium_gaps(time_gap_s: float) -> None:
    # SUMO's CACC at gap min_gap + tau v and the predecessor's speed has zero spacing and
    # speed error, so nothing moves off 22 m/s; the car never enters (depart at inf).  At
    # tau = 1.8 s the time gap (39.6 + 2.5) / 22 = 1.9 s lies in the law's 1.5-2 s mode
    # hysteresis band: followers placed in gap control stay there (from speed control they
    # would close in and then brake at their emergency limit)
    res = _sim(time_gap_s=time_gap_s).run(20.0)
    assert res.collisions == 0
    assert np.abs(res.fcd["speed_mps"] - V).max() < 1e-9
    assert np.allclose(res.fcd["gap_m"][res.fcd["vehicle"] > 0], 2.5 + time_gap_s * V)
    assert not (res.fcd["vehicle"] == 3).any()


def test_cut_in_puts_the_car_at_the_gap_and_the_truck_behind_falls_back_to_acc() -> None:
    sim = _sim()
    sim.schedule_cut_in(5.0, "car", "t2", 6.0, V - 2.0)
    res = sim.run(15.0)
    cut = [e for e in res.events if e["kind"] == "cut-in"]
    assert cut == [
        {"time_s": 5.0, "kind": "cut-in", "vehicle_id": "car", "edge": "road", "lane": 0,
         "ahead_of": "t2"}
    ]  # fmt: skip
    # first record: the end of the step that starts at 5.0 s; the car drove (V - 2) dt and the
    # truck (at most) V dt, so the gap shrank by at most 0.2 m from 6 m
    t_car, lane = _series(res, 3, "lane")
    assert t_car[0] == pytest.approx(5.1) and (lane == 0).all()
    t2 = res.fcd["vehicle"] == 2
    pos_t2 = res.fcd["pos_m"][t2][np.isclose(res.fcd["time_s"][t2], 5.1)][0]
    pos_car = _series(res, 3, "pos_m")[1][0]
    assert 5.8 - 1e-9 <= pos_car - CAR.length_m - pos_t2 <= 6.0 + 1e-9
    # the truck behind the car gets no beacons from it: SUMO's CACC runs its ACC law, and
    # once it has fallen back beyond a 2 s time gap, its speed control; never CACC's own
    # gap modes again while the car is ahead
    t, mode = _series(res, 2, "mode")
    assert (mode[t <= 5.0] != MODE_ACC_FALLBACK).all()
    assert (mode[(t > 5.05) & (t < 6.0)] == MODE_ACC_FALLBACK).all()
    assert set(mode[t > 5.05].tolist()) <= {MODE_ACC_FALLBACK, MODE_SPEED}
    assert res.lane_changes[3] == 1


def test_truck_closes_the_gap_again_after_the_car_leaves() -> None:
    # a car free to change lanes cuts in and leaves again for the empty left lane (MOBIL);
    # the truck that fell back gets its predecessor's beacons again and, the head cruising
    # at 22 m/s under the 25 m/s limit, closes up to CACC's gap 2.5 + 1.0 * 22 = 24.5 m
    sim = _sim(car_changes_lane=True, road_m=8000.0)
    sim.schedule_cut_in(5.0, "car", "t2", 6.0, V - 2.0)
    res = sim.run(200.0)
    assert res.collisions == 0
    left = [e for e in res.events if e["kind"] == "lane-change" and e["vehicle_id"] == "car"]
    assert left and left[0]["lane"] == 1
    t, gap = _series(res, 2, "gap_m")
    _, mode = _series(res, 2, "mode")
    left_s = left[0]["time_s"]
    assert isinstance(left_s, float)
    assert gap[t > left_s + 1.0].max() > 100.0  # it had fallen far back
    assert abs(gap[-1] - 24.5) < 0.5
    assert mode[-1] in (MODE_GAP, MODE_GAP_CLOSING)


def test_forced_cut_in_too_close_and_too_slow_is_a_collision() -> None:
    # 2 m ahead and 8 m/s slower: even braking at its emergency 7.5 m/s² from the first step
    # while the car speeds up at IDM's a = 2.6 m/s², the truck needs 8²/(2·10.1) = 3.17 m to
    # match speeds (2.77 m under the engine's Euler update, x += v_new dt, which shortens it
    # by dv dt / 2); 2 m is not enough, so it hits the car
    sim = _sim()
    sim.schedule_cut_in(5.0, "car", "t1", 2.0, V - 8.0)
    res = sim.run(10.0)
    assert res.collisions == 1
    hit = next(e for e in res.events if e["kind"] == "collision")
    assert (hit["vehicle_id"], hit["other_id"]) == ("t1", "car")


def test_falling_speed_cap_brakes_the_car_at_the_chosen_rate() -> None:
    # a cap lowered by d dt every step is the speed at the end of that step: the IDM driver
    # follows it exactly while d is within its type's decel (6 m/s² here).  The car cuts in
    # ahead of the head, with free road ahead (inside a platoon gap, shorter than its own
    # IDM gap s0 + v T = 24.5 m, it would brake harder on its own)
    sim = _sim(car_decel_mps2=6.0)
    sim.schedule_cut_in(5.0, "car", "t0", 8.0, V)
    for j in range(20):
        sim.schedule_speed_cap(5.0 + 0.1 * j, "car", V - 6.0 * 0.1 * (j + 1))
    sim.schedule_speed_cap(7.0, "car", math.inf)
    res = sim.run(10.0)
    t, a = _series(res, 3, "accel_mps2")
    braking = (t > 5.05) & (t < 7.05)
    assert np.allclose(a[braking], -6.0, atol=1e-9)
    assert a[t > 7.05].max() > 0.0  # the cap is lifted: it speeds up again


@pytest.mark.parametrize("instances", [6, 100])
def test_a_speed_ramp_is_the_run_of_its_caps_set_step_by_step(
    instances: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # schedule_speed_ramp stands for a schedule_speed_cap per step and one lifting the cap
    # after them; the kernel sets those caps itself. The same run to the bit: cars braking
    # at 3, 6 and 8 m/s² for 1-4 s (to the floor of 0.1 m/s where they stop). 100 instances
    # (600 vehicles) run the threaded step on vehicles stored in road order, where the
    # kernel finds a ramp's vehicle through its slot; 6 run the step on one core.
    cases = [
        CutInCase(
            member=1 + k % 4,
            cut_in_gap_m=6.0,
            speed_deficit_mps=2.0,
            car_brake_mps2=(3.0, 6.0, 8.0)[k % 3],
            car_brake_s=(1.0, 4.0, 2.5)[k % 3],
            time_gap_s=1.0,
        )
        for k in range(instances)
    ]
    if instances >= nk.PARALLEL_MIN_ON_ROAD // 6:
        threaded = nk.run_net_steps_parallel
        monkeypatch.setattr(nk.StepChooser, "pick", lambda self, fn, step, end: (threaded, end))
    ramped = cut_in_sim(cases, 3)
    assert len(ramped._cap_ramps) == instances
    stepwise = cut_in_sim(cases, 3)
    ramps, stepwise._cap_ramps = stepwise._cap_ramps, []
    dt = stepwise.dt_s
    for row, first, steps, v0, rate, floor in ramps:
        vid = stepwise.vehicle_ids[int(row)]
        for j in range(int(steps)):
            cap = max(v0 - rate * (j + 1) * dt, floor)
            stepwise.schedule_speed_cap((first + j) * dt, vid, cap)
        stepwise.schedule_speed_cap((first + steps) * dt, vid, math.inf)
    got, want = ramped.run(12.0), stepwise.run(12.0)
    assert got.fcd.keys() == want.fcd.keys()
    for k in want.fcd:
        assert np.array_equal(got.fcd[k], want.fcd[k], equal_nan=True), k
    assert got.events == want.events
    for k in stepwise.state:
        assert np.array_equal(ramped.state[k], stepwise.state[k], equal_nan=True), k
    # the ramps did act: cars braked at their rates (3 m/s² most of its second, where the
    # truck ahead lets it), stopped (the 6 m/s² ones from 20 m/s within 4 s) and, the cap
    # lifted, drove off again
    cars = [ramped.vehicle_ids.index(f"car#{k}") for k in range(instances)]
    on = np.isin(got.fcd["vehicle"], cars)
    t, v, a = (got.fcd[k][on] for k in ("time_s", "speed_mps", "accel_mps2"))
    assert np.isclose(a[(t > 5.05) & (t < 6.05)], -3.0, atol=1e-9).sum() >= 5
    assert v.min() <= 0.1 + 1e-12
    assert np.isinf(ramped.state["speed_cap_mps"][cars]).all()


def test_scripted_vehicles_refuse_bad_input() -> None:
    sim = _sim()
    with pytest.raises(NetSimError, match="gap_m = -1"):
        sim.schedule_cut_in(5.0, "car", "t1", -1.0, V)
    with pytest.raises(NetSimError, match="unknown vehicle 'nope'"):
        sim.schedule_cut_in(5.0, "nope", "t1", 3.0, V)
    with pytest.raises(NetSimError, match=r"lane = 2 on 'road'; allowed: 0..1"):
        sim.place("car", "road", 2, 100.0, V)
    with pytest.raises(NetSimError, match=r"pos_m = 5000.00.*allowed: 0 <= pos_m < 4000"):
        sim.place("car", "road", 1, 5000.0, V)
    with pytest.raises(NetSimError, match=r"vtype = 'bus'; allowed: \['car', "):
        sim.set_vehicle_type("car", "bus")
    with pytest.raises(NetSimError, match="cap_mps = 0"):
        sim.schedule_speed_cap(1.0, "car", 0.0)
    with pytest.raises(NetSimError, match=r"floor_mps = 0\.0; allowed: finite, floor_mps > 0"):
        sim.schedule_speed_ramp(1.0, "car", V, 3.0, 10, 0.0)
    with pytest.raises(NetSimError, match="steps = -1; allowed: >= 0"):
        sim.schedule_speed_ramp(1.0, "car", V, 3.0, -1, 0.1)
    # a car longer than the room left ahead of t2 (24.5 m gap): checked when it happens
    sim.schedule_cut_in(1.0, "car", "t2", 20.0, V)
    with pytest.raises(
        NetSimError, match=r"puts its front 0\.50 m into 't1'; allowed: gap_m <= 19\.50"
    ):
        sim.run(2.0)
    assert sim.state["status"][3] == nk.ST_WAITING
