"""Platoon manoeuvres over V2V: outcomes, timings and clean aborts, on a point-mass road.

``PointMassRoad`` is a small 1-D test double of ``VehicleView``: trucks on parallel lanes,
each with a cruise speed and, behind another truck in its lane, a PD gap law
(kp = 0.2 /s², kd = 0.7 /s, Ploeg et al.'s gains) on the desired gap s0 + h·v plus the
registry's ``extra_gap_m``, limited by ``speed_cap_mps``; ``set_speed_mps`` overrides the
cruise speed, and a truck marked ``lane_change_out`` moves to lane 1 after 3 s.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from convoy.sim.manoeuvres import (
    JoinState,
    ManoeuvreError,
    ManoeuvreManager,
    ManoeuvreParams,
    PlatoonRegistry,
    V2VLink,
    VehicleView,
)
from convoy.vehicle.channel import ChannelSpec

DT_S = 0.1
LENGTH_M = 16.5
S0_M = 3.0
H_S = 0.6
V_MPS = 20.0
DESIRED_M = S0_M + H_S * V_MPS  # 15 m at 20 m/s
LANE_CHANGE_S = 3.0


class PointMassRoad:
    """1-D point-mass trucks on parallel lanes (see the module docstring)."""

    def __init__(
        self,
        reg: PlatoonRegistry,
        pos_m: list[float],
        lane: list[int] | None = None,
        speed_mps: float = V_MPS,
        lanes: int = 2,
    ) -> None:
        n = len(pos_m)
        self.reg = reg
        self.pos = np.asarray(pos_m, float)
        self.v = np.full(n, speed_mps)
        self.cruise = np.full(n, speed_mps)
        self.lanes = np.asarray(lane if lane is not None else [0] * n, int)
        self.n_lanes = lanes
        self.lc_timer = np.zeros(n)
        self.time_s = 0.0
        self.step_no = 0

    # ---- VehicleView ----
    def gap_m(self, follower: int, leader: int) -> float:
        if self.lanes[follower] != self.lanes[leader] or self.pos[leader] <= self.pos[follower]:
            return math.inf
        return float(self.pos[leader] - LENGTH_M - self.pos[follower])

    def speed_mps(self, v: int) -> float:
        return float(self.v[v])

    def lane(self, v: int) -> int:
        return int(self.lanes[v])

    def pos_key(self, v: int) -> float:
        return float(self.pos[v])

    def distance_m(self, a: int, b: int) -> float:
        return float(abs(self.pos[a] - self.pos[b]))

    def desired_gap_m(self, follower: int) -> float:
        return S0_M + H_S * float(self.v[follower])

    # ---- physics ----
    def advance(self, dt_s: float = DT_S) -> None:
        reg, n = self.reg, len(self.pos)
        acc = np.zeros(n)
        for i in range(n):
            cruise = reg.set_speed_mps[i] if not np.isnan(reg.set_speed_mps[i]) else self.cruise[i]
            a = 0.5 * (cruise - self.v[i])
            ahead = [j for j in range(n) if math.isfinite(self.gap_m(i, j))]
            if ahead:
                j = min(ahead, key=lambda k: self.pos[k])
                err = self.gap_m(i, j) - self.desired_gap_m(i) - reg.extra_gap_m[i]
                a = min(a, 0.2 * err + 0.7 * (self.v[j] - self.v[i]))
            acc[i] = min(max(a, -6.0), 2.0)
        self.v = np.minimum(np.maximum(self.v + acc * dt_s, 0.0), reg.speed_cap_mps)
        self.pos = self.pos + self.v * dt_s
        for i in range(n):
            if reg.lane_change_out[i] and self.lanes[i] + 1 < self.n_lanes:
                self.lc_timer[i] += dt_s
                if self.lc_timer[i] >= LANE_CHANGE_S - 1e-9:
                    self.lanes[i] += 1
                    self.lc_timer[i] = 0.0
            else:
                self.lc_timer[i] = 0.0
        self.step_no += 1
        self.time_s = round(self.time_s + dt_s, 9)


def column(head_pos_m: float, count: int, gap_m: float = DESIRED_M) -> list[float]:
    """Front-bumper positions of ``count`` trucks in a column, ``gap_m`` apart."""
    return [head_pos_m - k * (LENGTH_M + gap_m) for k in range(count)]


def run(
    road: PointMassRoad, mgr: ManoeuvreManager, link: V2VLink, t_max_s: float = 200.0
) -> list[dict[str, Any]]:
    """Tick manager then physics until no manoeuvre is active; the event log."""
    events: list[dict[str, Any]] = []
    while mgr.active() and road.time_s < t_max_s:
        events += mgr.step(road.time_s, road, link)
        road.advance()
    assert not mgr.active(), "a manoeuvre did not finish"
    return events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def snapshot(reg: PlatoonRegistry) -> dict[str, Any]:
    return {
        "platoons": {p: reg.members(p) for p in reg.platoons()},
        "platoon_of": reg.platoon_of.copy(),
        "pred_of": reg.pred_of.copy(),
        "extra_gap_m": reg.extra_gap_m.copy(),
        "speed_cap_mps": reg.speed_cap_mps.copy(),
        "set_speed_mps": reg.set_speed_mps.copy(),
        "lane_change_out": reg.lane_change_out.copy(),
    }


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["platoons"] == b["platoons"]
    for k in a:
        if k != "platoons":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def join_world(
    n_members: int = 3, gap_to_joiner_m: float = 100.0, joiner_lane: int = 0
) -> tuple[PlatoonRegistry, PointMassRoad, int, int]:
    """A platoon of ``n_members`` (human head, driverless followers) and a solo joiner behind."""
    pos = column(1000.0, n_members)
    joiner_pos = pos[-1] - LENGTH_M - gap_to_joiner_m
    reg = PlatoonRegistry([True] + [False] * n_members)
    p = reg.form(list(range(n_members)))
    lanes = [0] * n_members + [joiner_lane]
    road = PointMassRoad(reg, [*pos, joiner_pos], lanes)
    return reg, road, p, n_members


# ---------------------------------------------------------------------------------------------
# join
# ---------------------------------------------------------------------------------------------


def test_view_double_satisfies_the_protocol() -> None:
    _, road, _, _ = join_world()
    assert isinstance(road, VehicleView)


def test_join_completes_on_a_perfect_link_in_computable_time() -> None:
    reg, road, p, j = join_world(gap_to_joiner_m=100.0)
    mgr = ManoeuvreManager(reg)
    mid = mgr.request_join(j, p)
    version = reg.version
    ev = run(road, mgr, V2VLink.perfect(DT_S))
    assert reg.version > version  # the engine rebuilds its platoon tables
    assert types(ev) == ["join_request", "join_accept", "join_complete"]
    # request at tick 0, heard at 0.1 s, accept heard at 0.2 s (one step per hop)
    assert [e["t_s"] for e in ev[:2]] == [0.0, 0.2]
    # the extra gap starts at the excess 100 - 15 = 85 m and ramps down at 2 m/s, then the
    # joiner must hold within 1 m for 2 s, then COUPLED/CONFIRM takes two hops
    par = ManoeuvreParams()
    ramp_end_s = 0.2 + (100.0 - DESIRED_M) / par.gap_close_rate_mps
    earliest_s = ramp_end_s + par.couple_hold_s + 2 * DT_S
    # the PD law lags a 2 m/s ramp by kd·r/kp = 7 m and needs ~2 time constants of
    # 2/kd ≈ 3 s to come within 1 m of it
    assert earliest_s - 1e-9 <= ev[-1]["t_s"] <= earliest_s + 10.0
    assert reg.members(p) == (0, 1, 2, 3)
    assert reg.pred_of[j] == 2 and reg.platoon_of[j] == p and reg.position(j) == 3
    assert reg.extra_gap_m[j] == 0.0 and math.isinf(reg.speed_cap_mps[j])
    assert np.isnan(reg.set_speed_mps[j])
    assert abs(road.gap_m(j, 2) - road.desired_gap_m(j)) <= par.couple_tolerance_m
    assert mgr.status(mid).state == "done" and mgr.status(mid).finished
    reg.check()


def test_manager_may_tick_slower_than_the_physics() -> None:
    """Physics at 0.02 s, manoeuvres at the 0.1 s control tick: same protocol timings, and
    the join still completes (ramps use elapsed time)."""
    reg, road, p, j = join_world(gap_to_joiner_m=60.0)
    mgr = ManoeuvreManager(reg)
    link = V2VLink.perfect(DT_S)
    mgr.request_join(j, p)
    events: list[dict[str, Any]] = []
    while mgr.active() and road.time_s < 200.0:
        events += mgr.step(road.time_s, road, link)
        for _ in range(5):
            road.advance(0.02)
    assert types(events) == ["join_request", "join_accept", "join_complete"]
    assert events[1]["t_s"] == 0.2
    assert reg.members(p) == (0, 1, 2, 3)


def test_join_approach_caps_speed_at_tail_plus_margin() -> None:
    reg, road, p, j = join_world(gap_to_joiner_m=150.0)
    mgr = ManoeuvreManager(reg)
    link = V2VLink.perfect(DT_S)
    mgr.request_join(j, p)
    seen = []
    while mgr.active():
        mgr.step(road.time_s, road, link)
        if mgr.status(0).state == "approach":
            seen.append((reg.speed_cap_mps[j], road.v[2], road.v[j], reg.extra_gap_m[j]))
        road.advance()
    cap, tail_v, v, extra = np.asarray(seen).T
    np.testing.assert_allclose(cap, tail_v + ManoeuvreParams().approach_speed_margin_mps)
    assert (v <= cap + 1e-12).all()
    assert extra[0] == pytest.approx(150.0 - DESIRED_M)
    assert (np.diff(extra) <= 0).all()  # the extra gap only ever closes


def test_join_aborts_cleanly_when_accepts_are_lost_beyond_retries() -> None:
    reg, road, p, j = join_world()
    before = snapshot(reg)
    mgr = ManoeuvreManager(reg)
    link = V2VLink.perfect(DT_S)
    link.force_loss(0.0, 3.0, sender=0, receiver=j)  # head -> joiner only
    mgr.request_join(j, p)
    ev = run(road, mgr, link)
    # 1 request + 3 resends (attempts 2..4) every 0.5 s; the 4th goes unanswered for 0.5 s
    assert types(ev) == ["join_request"] + ["join_retry"] * 3 + ["join_abort"]
    assert [e["t_s"] for e in ev] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [e["attempt"] for e in ev[1:4]] == [2, 3, 4]
    assert ev[-1]["reason"] == "no_response"
    assert_same(before, snapshot(reg))
    # the head had reserved the platoon: the abort released it, so a new join goes through
    mgr.request_join(j, p)
    ev2 = run(road, mgr, link)
    assert types(ev2)[-1] == "join_complete"
    assert reg.members(p) == (0, 1, 2, 3)


def test_join_aborts_when_the_coupling_confirm_is_lost() -> None:
    """Lost confirms beyond retries abort in COUPLE: the joiner is left solo, caps cleared."""
    reg, road, p, j = join_world(gap_to_joiner_m=40.0)
    before = snapshot(reg)
    mgr = ManoeuvreManager(reg)
    link = V2VLink.perfect(DT_S)
    link.force_loss(1.0, 500.0, sender=0, receiver=j)  # the accept (at 0.1 s) gets through
    mgr.request_join(j, p)
    ev = run(road, mgr, link)
    assert types(ev) == ["join_request", "join_accept"] + ["join_retry"] * 3 + ["join_abort"]
    assert {e["message"] for e in ev if e["type"] == "join_retry"} == {"join_coupled"}
    assert ev[-1]["reason"] == "no_response"
    assert_same(before, snapshot(reg))


def test_join_refused_when_the_platoon_is_full() -> None:
    reg, road, p, j = join_world(n_members=5)  # 1 + 4
    before = snapshot(reg)
    mgr = ManoeuvreManager(reg)
    mgr.request_join(j, p)
    ev = run(road, mgr, V2VLink.perfect(DT_S))
    assert types(ev) == ["join_request", "join_abort"]
    assert ev[-1]["reason"] == "platoon_full" and ev[-1]["t_s"] == 0.2
    assert_same(before, snapshot(reg))


def test_join_refused_from_another_lane() -> None:
    reg, road, p, j = join_world(joiner_lane=1)
    mgr = ManoeuvreManager(reg)
    mgr.request_join(j, p)
    ev = run(road, mgr, V2VLink.perfect(DT_S))
    assert ev[-1]["type"] == "join_abort" and ev[-1]["reason"] == "lane_mismatch"


def test_second_joiner_is_refused_while_the_head_is_busy() -> None:
    pos = column(1000.0, 2)
    reg = PlatoonRegistry([True, False, False, False])
    p = reg.form([0, 1])
    road = PointMassRoad(reg, [*pos, pos[-1] - 60.0, pos[-1] - 200.0])
    mgr = ManoeuvreManager(reg)
    mgr.request_join(2, p)
    mgr.request_join(3, p)
    ev = run(road, mgr, V2VLink.perfect(DT_S))
    refused = [e for e in ev if e["vehicle"] == 3]
    assert types(refused) == ["join_request", "join_abort"]
    assert refused[-1]["reason"] == "leader_busy"
    assert reg.members(p) == (0, 1, 2)


def test_latency_in_steps_delays_each_hop() -> None:
    reg, road, p, j = join_world()
    mgr = ManoeuvreManager(reg)
    mgr.request_join(j, p)
    ev = run(road, mgr, V2VLink(DT_S, latency_steps=2, range_m=math.inf))
    assert types(ev)[:2] == ["join_request", "join_accept"]
    assert ev[1]["t_s"] == pytest.approx(0.4)  # two hops of two steps


def test_round_trip_longer_than_the_timeout_costs_one_resend() -> None:
    """3 steps each way = 0.6 s > 0.5 s timeout: one resend at 0.5 s; the first accept (0.6 s)
    still matches the exchange, and the head answers the resend with the same decision."""
    reg, road, p, j = join_world()
    mgr = ManoeuvreManager(reg)
    mgr.request_join(j, p)
    ev = run(road, mgr, V2VLink(DT_S, latency_steps=3, range_m=math.inf))
    assert types(ev) == ["join_request", "join_retry", "join_accept", "join_retry",
                         "join_complete"]  # fmt: skip
    assert [e["t_s"] for e in ev[:3]] == [0.0, 0.5, 0.6]
    assert reg.members(p) == (0, 1, 2, 3)


def test_out_of_range_joiner_gets_no_answer() -> None:
    reg, road, p, j = join_world(gap_to_joiner_m=400.0)
    mgr = ManoeuvreManager(reg)
    mgr.request_join(j, p)
    ev = run(road, mgr, V2VLink(DT_S, range_m=300.0))
    assert ev[-1]["reason"] == "no_response" and ev[-1]["t_s"] == pytest.approx(2.0)


# ---------------------------------------------------------------------------------------------
# leave
# ---------------------------------------------------------------------------------------------


def platoon_world(human: list[bool], lanes: int = 2) -> tuple[PlatoonRegistry, PointMassRoad, int]:
    reg = PlatoonRegistry(human)
    p = reg.form(list(range(len(human))))
    return reg, PointMassRoad(reg, column(1000.0, len(human)), lanes=lanes), p


def test_leave_from_the_middle_relinks_predecessors() -> None:
    reg, road, p = platoon_world([True, False, False, False, False])
    mgr = ManoeuvreManager(reg)
    link = V2VLink.perfect(DT_S)
    mgr.request_leave(2)
    opened = 0.0
    events: list[dict[str, Any]] = []
    while mgr.active():
        events += mgr.step(road.time_s, road, link)
        opened = max(opened, reg.extra_gap_m[3])
        road.advance()
    assert types(events) == ["leave_request", "leave_accept", "leave_complete"]
    assert opened >= ManoeuvreParams().leave_gap_m
    assert reg.members(p) == (0, 1, 3, 4)
    assert reg.pred_of[3] == 1 and reg.pred_of[4] == 3
    assert reg.platoon_of[2] == -1 and reg.pred_of[2] == -1
    assert road.lane(2) == 1 and road.lane(3) == 0
    assert not reg.lane_change_out.any() and not reg.extra_gap_m.any()
    reg.check()


def test_leave_aborts_when_the_leaver_cannot_change_lane() -> None:
    reg, road, _ = platoon_world([True, False, False, False], lanes=1)
    before = snapshot(reg)
    mgr = ManoeuvreManager(reg)
    mgr.request_leave(1)
    ev = run(road, mgr, V2VLink.perfect(DT_S))
    assert ev[-1]["type"] == "leave_abort" and ev[-1]["reason"] == "exit_timeout"
    assert_same(before, snapshot(reg))


def test_tail_leaves_by_dropping_back_on_a_single_lane() -> None:
    reg, road, p = platoon_world([True, False, False], lanes=1)
    mgr = ManoeuvreManager(reg)
    mgr.request_leave(2)
    ev = run(road, mgr, V2VLink.perfect(DT_S))
    assert ev[-1]["type"] == "leave_complete"
    assert road.gap_m(2, 1) >= ManoeuvreParams().leave_clear_gap_m
    assert reg.members(p) == (0, 1) and math.isinf(reg.speed_cap_mps[2])


def test_head_leaves_only_for_a_human_successor() -> None:
    reg, road, p = platoon_world([True, False, True])
    mgr = ManoeuvreManager(reg)
    mgr.request_leave(0)
    ev = run(road, mgr, V2VLink.perfect(DT_S))
    assert ev[-1]["reason"] == "new_head_driverless" and reg.members(p) == (0, 1, 2)

    reg, road, p = platoon_world([True, True, False])
    mgr = ManoeuvreManager(reg)
    mgr.request_leave(0)
    ev = run(road, mgr, V2VLink.perfect(DT_S))
    assert ev[-1]["type"] == "leave_complete"
    assert reg.members(p) == (1, 2) and reg.pred_of[1] == -1 and reg.head(p) == 1
    reg.check()


# ---------------------------------------------------------------------------------------------
# split and merge
# ---------------------------------------------------------------------------------------------


def test_split_refused_where_the_new_head_would_be_driverless() -> None:
    reg, road, p = platoon_world([True, False, True, False])
    before = snapshot(reg)
    mgr = ManoeuvreManager(reg)
    mgr.request_split(p, 1)
    ev = run(road, mgr, V2VLink.perfect(DT_S))
    assert types(ev) == ["split_request", "split_abort"]
    assert ev[-1]["reason"] == "new_head_driverless"
    assert_same(before, snapshot(reg))


def test_split_done_where_the_new_head_is_human_driven() -> None:
    reg, road, p = platoon_world([True, False, True, False])
    mgr = ManoeuvreManager(reg)
    mgr.request_split(p, 2)
    ev = run(road, mgr, V2VLink.perfect(DT_S))
    assert types(ev) == ["split_request", "split_accept", "split_complete"]
    q = ev[-1]["new_platoon"]
    assert reg.members(p) == (0, 1) and reg.members(q) == (2, 3)
    assert reg.pred_of.tolist() == [-1, 0, -1, 2]
    assert reg.platoon_of.tolist() == [p, p, q, q]
    reg.check()


def merge_world(
    front: int = 3, rear: int = 2, gap_m: float = 80.0
) -> tuple[PlatoonRegistry, PointMassRoad, int, int]:
    pos = column(1000.0, front) + column(1000.0 - front * (LENGTH_M + DESIRED_M) + DESIRED_M
                                         - gap_m, rear)  # fmt: skip
    human = [True] + [False] * (front - 1) + [True] + [False] * (rear - 1)
    reg = PlatoonRegistry(human)
    f = reg.form(list(range(front)))
    r = reg.form(list(range(front, front + rear)))
    return reg, PointMassRoad(reg, pos), f, r


def test_merge_joins_two_platoons_in_order() -> None:
    reg, road, f, r = merge_world(gap_m=80.0)
    assert road.gap_m(3, 2) == pytest.approx(80.0)
    mgr = ManoeuvreManager(reg)
    mgr.request_merge(f, r)
    ev = run(road, mgr, V2VLink.perfect(DT_S))
    assert types(ev) == ["merge_request", "merge_accept", "merge_complete"]
    assert ev[-1]["rear_platoon"] == r
    assert reg.members(f) == (0, 1, 2, 3, 4) and not reg.exists(r)
    assert reg.pred_of.tolist() == [-1, 0, 1, 2, 3]
    # the rear head, human-driven, is now a follower
    assert reg.is_human(3) and reg.position(3) == 3
    assert abs(road.gap_m(3, 2) - road.desired_gap_m(3)) <= 1.0
    reg.check()


def test_merge_refused_beyond_one_plus_n() -> None:
    reg, road, f, r = merge_world(front=4, rear=2)  # 3 + 2 followers > 4
    before = snapshot(reg)
    mgr = ManoeuvreManager(reg)
    mgr.request_merge(f, r)
    ev = run(road, mgr, V2VLink.perfect(DT_S))
    assert ev[-1]["type"] == "merge_abort" and ev[-1]["reason"] == "platoon_full"
    assert_same(before, snapshot(reg))


# ---------------------------------------------------------------------------------------------
# the link: determinism and loss models
# ---------------------------------------------------------------------------------------------


def lossy_join(link: V2VLink) -> list[dict[str, Any]]:
    reg, road, p, j = join_world(gap_to_joiner_m=30.0)
    mgr = ManoeuvreManager(reg)
    mgr.request_join(j, p)
    return run(road, mgr, link)


def test_same_seed_gives_the_same_event_log() -> None:
    a = lossy_join(V2VLink(DT_S, seed=7, loss=0.4))
    b = lossy_join(V2VLink(DT_S, seed=7, loss=0.4))
    c = lossy_join(V2VLink(DT_S, seed=8, loss=0.4))
    assert a == b
    assert a != c


def test_link_decisions_do_not_depend_on_call_order() -> None:
    keys = [(s, r, k, kind) for s in range(3) for r in range(3) for k in range(0, 300, 7)
            for kind in (1, 2) if s != r]  # fmt: skip

    def decide(order: list[tuple[int, int, int, int]]) -> dict[tuple[int, int, int, int], bool]:
        link = V2VLink(DT_S, seed=3, loss=0.1, burst_loss=0.9, p_good_to_bad=0.1,
                       p_bad_to_good=0.3)  # fmt: skip
        return {key: link.delivered(*key, 10.0) for key in order}

    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)
    assert decide(keys) == decide(shuffled)


def test_gilbert_elliott_link_matches_its_closed_form() -> None:
    """pi_bad = p/(p+r) = 0.25 and mean burst 1/r = 5 steps (Gilbert 1960), as ChannelSpec."""
    spec = ChannelSpec(rate_hz=10.0, loss=0.0, burst_loss=1.0, p_good_to_bad=1 / 15,
                       p_bad_to_good=0.2)  # fmt: skip
    link = V2VLink.from_channel(spec, DT_S, seed=11)
    steps = 60_000
    lost = np.array([not link.delivered(0, 1, k, 1, 10.0) for k in range(steps)])
    assert lost.mean() == pytest.approx(spec.mean_loss(), abs=0.03)
    starts = np.flatnonzero(lost[1:] & ~lost[:-1]) + 1
    ends = np.flatnonzero(~lost[1:] & lost[:-1]) + 1
    runs = ends[ends > starts[0]][: len(starts) - 1] - starts[: len(starts) - 1]
    assert runs.mean() == pytest.approx(5.0, rel=0.1)
    # both directions share the chain: the reverse link is in the same state
    assert [link.bad_state(1, 0, k) for k in range(500)] == [
        link.bad_state(0, 1, k) for k in range(500)
    ]


def test_bursty_loss_shows_retries_in_the_log() -> None:
    """Bursts (mean loss pi_bad = 0.2/0.7 ≈ 0.29, mean burst 1/0.5 = 2 steps = 0.2 s) outlast
    some single copies, so resends appear; being shorter than the 0.5 s timeout, a resend
    mostly escapes the burst and every join completes.  A clean link needs no resend."""

    def bursty(seed: int) -> V2VLink:
        return V2VLink(DT_S, seed=seed, burst_loss=1.0, p_good_to_bad=0.2, p_bad_to_good=0.5)

    assert "join_retry" not in types(lossy_join(V2VLink(DT_S, seed=0)))
    logs = [lossy_join(bursty(seed)) for seed in range(8)]
    retries = [e for log in logs for e in log if e["type"] == "join_retry"]
    assert len(retries) >= 4
    assert {e["message"] for e in retries} <= {"join_request", "join_coupled"}
    assert all(log[-1]["type"] == "join_complete" for log in logs)
    assert logs[3] == lossy_join(bursty(3))


def test_from_channel_carries_latency_range_and_outages() -> None:
    spec = ChannelSpec(latency_s=0.3, range_m=250.0, loss=0.05, outages=((10.0, 12.0),))
    link = V2VLink.from_channel(spec, DT_S, seed=1)
    assert link.latency_steps == 3 and link.range_m == 250.0 and link.loss == 0.05
    assert not any(link.delivered(0, 1, k, 1, 1.0) for k in range(100, 120))
    assert link.burst_loss is None and not link.bad_state(0, 1, 50)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def test_bad_requests_name_the_field_and_what_is_allowed() -> None:
    reg, _, p = platoon_world([True, False, False])
    mgr = ManoeuvreManager(reg)
    with pytest.raises(ManoeuvreError, match=r"vehicle: 1 is in platoon 0"):
        mgr.request_join(1, p)
    with pytest.raises(ManoeuvreError, match=r"vehicle: 7 is not a vehicle row; allowed 0\.\.2"):
        mgr.request_leave(7)
    with pytest.raises(
        ManoeuvreError, match=r"at_index: 3; platoon 0 has 3 members, allowed 1\.\.2"
    ):
        mgr.request_split(p, 3)
    with pytest.raises(ManoeuvreError, match=r"platoon: 9 does not exist"):
        mgr.request_merge(p, 9)
    with pytest.raises(ManoeuvreError, match=r"members: head 1 is driverless"):
        PlatoonRegistry([True, False]).form([1, 0])
    with pytest.raises(ManoeuvreError, match=r"members: 5 followers; at most max_followers=4"):
        PlatoonRegistry([True] * 6).form(list(range(6)))
    with pytest.raises(ManoeuvreError, match=r"response_timeout_s: -1"):
        ManoeuvreParams(response_timeout_s=-1.0)
    with pytest.raises(ManoeuvreError, match=r"loss: 1\.5; must be a probability"):
        V2VLink(DT_S, loss=1.5)
    mgr.request_leave(2)
    with pytest.raises(ManoeuvreError, match=r"vehicle: 2 is already in manoeuvre 0"):
        mgr.request_leave(2)


def test_cancel_undoes_an_approach() -> None:
    reg, road, p, j = join_world()
    before = snapshot(reg)
    mgr = ManoeuvreManager(reg)
    link = V2VLink.perfect(DT_S)
    mid = mgr.request_join(j, p)
    for _ in range(20):
        mgr.step(road.time_s, road, link)
        road.advance()
    assert mgr.status(mid).state == JoinState.APPROACH.value and reg.extra_gap_m[j] > 0
    assert mgr.cancel(j, "odd_exit")
    assert mgr.active() == 0 and mgr.status(mid).reason == "odd_exit"
    assert_same(before, snapshot(reg))
    assert types(mgr.step(road.time_s, road, link)) == ["join_abort"]
