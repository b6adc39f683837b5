"""A mixed human/L4 platoon: per-position controller overrides and the library's
``mixed-human-late-reaction`` scenario, checked against hand kinematics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convoy.sim.engine import build, simulate
from convoy.sim.scenario import ScenarioError, parse_scenario
from convoy.sim.validation import (
    MIXED_END_SPEED_MPS,
    WARMUP_S,
    get_template,
    human_index,
    instance,
    run_metrics,
)
from convoy.vehicle.controllers import MODEL_CACC_PLOEG, MODEL_HUMAN

V_MPS = 22.0
HEAD_LAG_S = 0.5  # the head's brake lag (validation.ACTUATOR_LAG_S, DESIGN.md)
HEAD_DECEL_MPS2 = 6.0
MAX_DECEL_MPS2 = 8.0  # the scenario's trucks (truck.max_decel_mps2)
IDM_V0_MPS = 25.0  # the human's desired speed: the truck's max_speed_mps (no road limit)
MIN_GAP_M = 2.5


def _mixed(reaction_s: float, time_gap_s: float, index: int = 1):  # type: ignore[no-untyped-def]
    tpl = get_template("mixed-human-late-reaction")
    row = [reaction_s, time_gap_s, HEAD_DECEL_MPS2, float(index)]
    return simulate(instance(tpl, row, 0, 0))


def _min_gap_behind_head(gap0_m: float, delay_s: float, decel_mps2: float) -> float:
    """Hand kinematics: the smallest gap of a follower 22 m/s behind the head, at ``gap0_m``
    when the head starts to brake (6 m/s², first-order lag 0.5 s, down to 8 m/s), if the
    follower holds its speed for ``delay_s`` and then brakes at a constant ``decel_mps2``
    (to the head's end speed).  Integrated exactly enough on a 1 ms grid."""
    t = np.arange(0.0, 20.0, 1e-3)
    a_head = HEAD_DECEL_MPS2 * (1.0 - np.exp(-t / HEAD_LAG_S))
    v_head = np.maximum(V_MPS - np.concatenate([[0.0], np.cumsum(a_head[:-1]) * 1e-3]), 8.0)
    v_fol = np.where(t < delay_s, V_MPS, np.maximum(V_MPS - decel_mps2 * (t - delay_s), 8.0))
    gap = gap0_m - np.concatenate([[0.0], np.cumsum((v_fol - v_head)[:-1]) * 1e-3])
    return float(gap.min())


def _onset_gap(res, k: int) -> float:  # type: ignore[no-untyped-def]
    tr = res.trace
    return float(tr.gap_m[np.searchsorted(tr.time_s, WARMUP_S + 10.0), k])


def test_late_human_at_a_short_gap_hits_the_truck_ahead() -> None:
    # The human (index 1, right behind the head) drives IDM with T = 0.5 s; at 22 m/s with
    # v0 = 25 m/s its equilibrium gap is (s0 + v T) / sqrt(1 - (v/v0)^4) = 21.3 m, which is
    # where he sits when the head brakes.  He sees the brake 2.5 s late.  Best case for
    # him: he brakes at his full 8 m/s² the instant he reacts, with no actuator lag.  Hand
    # kinematics say even that cannot work: by 2.5 s the head has taken 12.7 m of the gap
    # and closes at 12 m/s, which alone needs 12²/16 = 9 m at 8 m/s² — he has 8.6 m, and
    # the head is still braking; integrated, he ends 3.5 m into the head (10.5 m with his
    # 0.5 s actuator lag taken as a delay).
    res = _mixed(reaction_s=2.5, time_gap_s=0.5)
    s_e = (MIN_GAP_M + 0.5 * V_MPS) / math.sqrt(1.0 - (V_MPS / IDM_V0_MPS) ** 4)
    g0 = _onset_gap(res, 1)
    assert g0 == pytest.approx(s_e, abs=0.5)
    assert _min_gap_behind_head(g0, 2.5, MAX_DECEL_MPS2) < 0.0  # the hand verdict
    assert res.table.model[1] == MODEL_HUMAN
    m = run_metrics(res, WARMUP_S)
    assert m["collided"] == 1.0
    assert res.state.min_gap_m[1] < 0.0  # it is the human who hits the head


def test_alert_human_at_a_long_gap_needs_little_braking_and_gets_through() -> None:
    # T = 1.5 s puts him ~53 m back after the warm-up (still relaxing towards IDM's 56 m).
    # With 0.5 s reaction and his 0.5 s actuator lag taken as a pure 1 s delay, hand
    # kinematics give the constant deceleration he needs to stay clear: 1.6 m/s², far
    # under his 8 m/s².  IDM's braking grows as (s*/s)² as the gap shrinks under closing,
    # so the engine must show him brake at least that hard and nobody collide, the L4
    # trucks behind him included.
    res = _mixed(reaction_s=0.5, time_gap_s=1.5)
    g0 = _onset_gap(res, 1)
    lo, hi = 0.0, MAX_DECEL_MPS2
    for _ in range(40):  # bisection for the smallest decel that keeps the gap positive
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if _min_gap_behind_head(g0, 1.0, mid) > 0.0 else (mid, hi)
    need_mps2 = hi
    assert need_mps2 < 2.0
    m = run_metrics(res, WARMUP_S)
    assert m["collided"] == 0.0
    tr = res.trace
    after = tr.time_s >= WARMUP_S
    assert -tr.accel_mps2[after, 1].min() >= need_mps2
    assert res.state.min_gap_m[1:].min() > 1.0


def test_override_leaves_the_trucks_ahead_of_it_untouched() -> None:
    # causality: a truck's motion depends on the trucks ahead of it only (unless one hits
    # the truck ahead, which then brakes as a wreck: so an alert human here), so swapping
    # the controller of index 2 leaves the head and index 1 bit for bit as in the all-L4
    # run, and changes index 2 onward
    tpl = get_template("mixed-human-late-reaction")
    mixed = instance(tpl, [0.5, 1.5, 6.0, 2.0], 0, 0)
    data = mixed.model_dump(mode="json")
    data["platoon"]["overrides"] = []
    plain = parse_scenario(data)
    a, b = simulate(mixed).trace, simulate(plain).trace
    assert np.array_equal(a.pos_m[:, :2], b.pos_m[:, :2])
    assert not np.allclose(a.pos_m[:, 2], b.pos_m[:, 2])
    table, state, _ = build(mixed)
    assert table.model.tolist() == [MODEL_CACC_PLOEG] * 2 + [MODEL_HUMAN] + [MODEL_CACC_PLOEG] * 2
    # the history ring holds the human's 0.5 s reaction (5 steps) and one more
    assert state.hist.shape[0] == 6


def test_human_index_parameter_rounds_to_a_follower_position() -> None:
    tpl = get_template("mixed-human-late-reaction")
    assert [human_index({"human_index": x}) for x in (1.0, 1.49, 1.5, 3.7, 4.0)] == [1, 1, 2, 4, 4]
    for k in (1, 4):
        table, _, _ = build(instance(tpl, [1.0, 1.0, 4.0, float(k)], 0, 0))
        assert np.flatnonzero(table.model == MODEL_HUMAN).tolist() == [k]
    sc = instance(tpl, [1.0, 1.0, 4.0, 1.0], 0, 0)
    assert sc.leader.speed_profile is not None
    assert sc.leader.speed_profile[-1][1] == MIXED_END_SPEED_MPS


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([{"index": 5, "controller": {"model": "human"}}],
         "platoon.overrides.0.index = 5: beyond the platoon's last truck (platoon.trucks = 5); "
         "allowed: 1..4, each once"),
        ([{"index": 2, "controller": {"model": "human"}}] * 2,
         "platoon.overrides.1.index = 2: given twice"),
        ([{"index": 0, "controller": {"model": "human"}}],
         "field 'platoon.overrides.0.index' = 0: Input should be greater than or equal to 1"),
        ([{"index": 1, "controller": {"model": "driver"}}],
         "field 'platoon.overrides.0.controller.model' = 'driver': not a known model"),
        ([{"index": 1, "controller": {"model": "human", "reaction_time_s": -1.0}}],
         "field 'platoon.overrides.0.controller.reaction_time_s' = -1.0"),
    ],
)  # fmt: skip
def test_bad_overrides_get_one_clear_message(overrides: list[object], message: str) -> None:
    data = {"platoon": {"trucks": 5, "overrides": overrides}}
    with pytest.raises(ScenarioError, match=None) as err:
        parse_scenario(data, "mixed.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)
