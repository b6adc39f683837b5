"""Traffic signals: phase timing, who knows the light when, and what a platoon head does.

Expected outcomes come from the model's stated semantics (``convoy.road.signals``): the
fixed-time cycle of ``SignalPlan`` (green, yellow, red from ``t + offset = 0``), SPAT relayed
by RSUs whose alert range reaches the line, the light in sight within 150 m, a red light as
a standing obstacle at the stop line (SUMO's stop speed at the comfortable deceleration
``0.5 * max_decel = 2 m/s²``), and the gentlest constant deceleration that reaches the line
after the green (GLOSA) for a head that knows the timing.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import example

from convoy.road.hazards import rsu_table
from convoy.road.signals import (
    PHASE_GREEN,
    PHASE_RED,
    PHASE_UNKNOWN,
    PHASE_YELLOW,
    SIG_SEEN,
    SIG_SPAT,
    SIG_STOPPING,
    STOP_MARGIN_M,
    VISUAL_RANGE_M,
    FixedTimeSignal,
    SignalError,
    signal_effects,
    signal_table,
    spat_for,
)
from convoy.road.v2x import SPAT, decode, encode
from convoy.sim.engine import RunResult, simulate
from convoy.sim.scenario import ScenarioError
from convoy.vehicle.sumo_cfm import maximum_safe_stop_speed_euler

# the shipped signal-stop scenario: stop line at 4 km, red over [80, 120) s, RSU at 3.7 km
LINE_M = 4000.0
RED_FROM_S, GREEN_AT_S = 80.0, 120.0
RSU_M, RSU_RADIUS_M = 3700.0, 500.0
SIGNAL = FixedTimeSignal("s", LINE_M, green_s=30.0, yellow_s=4.0, red_s=40.0, offset_s=28.0)
COMFORT_DECEL_MPS2 = 2.0  # 0.5 x the default max_decel_mps2 of 4 m/s²


def _run(rsus: bool, **over: object) -> RunResult:
    if not rsus:
        over["rsus"] = []
    return simulate(example("signal-stop", **over), record_every_s=0.1)


@pytest.fixture(scope="module")
def with_rsu() -> RunResult:
    return _run(True)


@pytest.fixture(scope="module")
def without_rsu() -> RunResult:
    return _run(False)


# ---- phase timing ----


@pytest.mark.parametrize(
    ("t_s", "phase", "left_s"),
    [
        (0.0, PHASE_GREEN, 30.0),
        (29.5, PHASE_GREEN, 0.5),
        (30.0, PHASE_YELLOW, 4.0),
        (33.5, PHASE_YELLOW, 0.5),
        (34.0, PHASE_RED, 40.0),
        (73.5, PHASE_RED, 0.5),
        (74.0, PHASE_GREEN, 30.0),
        (74.0 * 100 + 31.0, PHASE_YELLOW, 3.0),
    ],
)
def test_phase_and_time_to_change_without_offset(t_s: float, phase: int, left_s: float) -> None:
    sig = FixedTimeSignal("s", 100.0, green_s=30.0, yellow_s=4.0, red_s=40.0)
    assert sig.phase_at(t_s) == (phase, left_s)


@pytest.mark.parametrize(
    ("t_s", "phase", "left_s"),
    [
        (0.0, PHASE_GREEN, 2.0),  # the offset puts t = 0 at 28 s into the cycle
        (2.0, PHASE_YELLOW, 4.0),
        (6.0, PHASE_RED, 40.0),
        (46.0, PHASE_GREEN, 30.0),
        (RED_FROM_S, PHASE_RED, 40.0),
        (GREEN_AT_S, PHASE_GREEN, 30.0),
    ],
)
def test_offset_shifts_the_cycle(t_s: float, phase: int, left_s: float) -> None:
    assert SIGNAL.phase_at(t_s) == (phase, left_s)


def test_phases_agree_with_the_network_signal_plan() -> None:
    """Same convention as ``convoy.road.network.SignalPlan``: green exactly when it says so."""
    plan = SIGNAL.plan("e1")
    assert plan.cycle_s == SIGNAL.cycle_s == 74.0
    for t in np.arange(0.0, 300.0, 0.25):
        assert (SIGNAL.phase_at(t)[0] == PHASE_GREEN) == plan.green_at("e1", t), t


def test_spat_message_carries_the_light_and_its_countdown() -> None:
    msg = spat_for(SIGNAL, 100.0, msg_cnt=5, intersection_id=42)
    assert decode(encode(msg)) == msg
    assert isinstance(msg, SPAT)
    states = msg.intersections[0].phases[0].phaseStates
    assert [s.light for s in states] == ["red", "protected-green", "yellow"]
    timing = [s.timing for s in states]
    assert all(t is not None for t in timing)
    assert [(t.startTime, t.likelyEndTime) for t in timing if t] == [
        (0.0, 20.0),
        (20.0, 50.0),
        (50.0, 54.0),
    ]


# ---- the compiled step, one truck ----


def _effects(
    pos_m: float, speed_mps: float, t_s: float, rsus: np.ndarray, known: np.ndarray
) -> tuple[float, int, bool, bool]:
    return signal_effects(
        pos_m,
        speed_mps,
        t_s,
        0.1,
        signal_table([SIGNAL]),
        rsus,
        known,
        COMFORT_DECEL_MPS2,
        25.0,
        VISUAL_RANGE_M,
        True,
    )


def test_beyond_sight_and_coverage_a_truck_knows_nothing() -> None:
    known = np.zeros(1, np.int8)
    cap, phase, spat, seen = _effects(LINE_M - 151.0, 20.0, 100.0, np.zeros((0, 3)), known)
    assert (cap, phase, spat, seen) == (np.inf, PHASE_UNKNOWN, False, False)
    assert known[0] == 0


def test_in_sight_of_red_the_stop_line_is_a_standing_obstacle() -> None:
    """Red seen 100 m out: the cap is SUMO's stop speed for the 99 m to the margin."""
    known = np.zeros(1, np.int8)
    cap, phase, spat, seen = _effects(LINE_M - 100.0, 20.0, 100.0, np.zeros((0, 3)), known)
    expected = maximum_safe_stop_speed_euler(100.0 - STOP_MARGIN_M, COMFORT_DECEL_MPS2, 0.1, 0.1)
    assert (phase, spat, seen) == (PHASE_RED, False, True)
    assert cap == expected and cap == pytest.approx(np.sqrt(2 * 2.0 * 99.0), rel=0.02)
    assert known[0] == SIG_SEEN | SIG_STOPPING


def test_yellow_binds_only_a_head_that_can_stop_comfortably() -> None:
    t_yellow = 3.0  # offset 28: yellow over [2, 6) s
    far, near = np.zeros(1, np.int8), np.zeros(1, np.int8)
    cap_far, phase, _, _ = _effects(LINE_M - 140.0, 20.0, t_yellow, np.zeros((0, 3)), far)
    assert phase == PHASE_YELLOW and cap_far < np.inf and far[0] & SIG_STOPPING
    # 40 m out at 20 m/s needs 5 m/s²: it goes on
    cap_near, phase, _, _ = _effects(LINE_M - 40.0, 20.0, t_yellow, np.zeros((0, 3)), near)
    assert phase == PHASE_YELLOW and cap_near == np.inf and not near[0] & SIG_STOPPING


def test_an_rsu_relays_spat_to_the_trucks_it_covers() -> None:
    rsus = rsu_table([RSU_M], RSU_RADIUS_M)
    inside, outside = np.zeros(1, np.int8), np.zeros(1, np.int8)
    _, phase, spat, seen = _effects(RSU_M - RSU_RADIUS_M, 22.0, 100.0, rsus, inside)
    assert (phase, spat, seen) == (PHASE_RED, True, False) and inside[0] & SIG_SPAT
    _, phase, spat, _ = _effects(RSU_M - RSU_RADIUS_M - 1.0, 22.0, 100.0, rsus, outside)
    assert (phase, spat) == (PHASE_UNKNOWN, False)
    # beyond its alert range the RSU does not relay the signal
    far = rsu_table([RSU_M], RSU_RADIUS_M, alert_range_m=LINE_M - RSU_M - 1.0)
    _, phase, spat, _ = _effects(RSU_M, 22.0, 100.0, far, np.zeros(1, np.int8))
    assert (phase, spat) == (PHASE_UNKNOWN, False)


# ---- whole runs ----


def _expected_known_phase(res: RunResult, knows: np.ndarray) -> np.ndarray:
    """The trace's spat_phase by the model: row r holds, for the step that ended there, the
    phase at the step's start if the truck knew the light by then and had not passed it."""
    tr = res.trace
    start_pos = tr.pos_m[:-1]
    t_start = tr.time_s[:-1]
    phase = np.array([SIGNAL.phase_at(t)[0] for t in t_start])[:, None]
    known = np.maximum.accumulate(knows, axis=0) & (start_pos <= LINE_M)
    out = np.where(known, phase, PHASE_UNKNOWN)
    return np.vstack([np.full((1, tr.pos_m.shape[1]), PHASE_UNKNOWN), out])


def test_without_spat_a_truck_knows_the_light_only_in_sight(without_rsu: RunResult) -> None:
    tr = without_rsu.trace
    in_sight = LINE_M - tr.pos_m[:-1] <= VISUAL_RANGE_M
    np.testing.assert_array_equal(tr.spat_phase, _expected_known_phase(without_rsu, in_sight))
    assert np.isnan(without_rsu.roadside.spat_received_at_s).all()
    first = np.argmax(in_sight, axis=0)
    np.testing.assert_allclose(without_rsu.roadside.signal_seen_at_s, tr.time_s[first])


def test_with_an_rsu_the_trucks_know_from_its_coverage(with_rsu: RunResult) -> None:
    tr = with_rsu.trace
    covered = np.abs(tr.pos_m[:-1] - RSU_M) <= RSU_RADIUS_M
    np.testing.assert_array_equal(tr.spat_phase, _expected_known_phase(with_rsu, covered))
    # the head enters coverage at 3.2 km: 2000 m + 22 m/s * t >= 3200 m first at t = 54.6 s
    assert with_rsu.roadside.spat_received_at_s[0] == pytest.approx(54.6)


def test_head_stops_at_the_line_on_red_and_goes_on_green(without_rsu: RunResult) -> None:
    tr = without_rsu.trace
    head = tr.pos_m[:, 0]
    red = (tr.time_s >= RED_FROM_S) & (tr.time_s < GREEN_AT_S)
    assert head[red].max() <= LINE_M
    halted = red & (tr.speed_mps[:, 0] < 0.1)
    assert halted.sum() * 0.1 > 15.0, "waits at the line for the green"
    assert np.all(head[halted] > LINE_M - 3.0)
    assert np.all(head[halted] <= LINE_M - STOP_MARGIN_M + 1e-6)
    crossed = np.flatnonzero(head > LINE_M)[0]
    assert GREEN_AT_S < tr.time_s[crossed] < GREEN_AT_S + 10.0
    # the comfortable deceleration binds the stop (SUMO's stop speed, Euler)
    assert tr.accel_mps2[:, 0].min() == pytest.approx(-COMFORT_DECEL_MPS2, abs=0.05)
    np.testing.assert_array_equal(without_rsu.roadside.red_light_stops, 1)


@pytest.mark.parametrize("rsus", [True, False])
@pytest.mark.parametrize("count", [1, 2])
def test_no_truck_crosses_the_line_on_red_nor_collides(rsus: bool, count: int) -> None:
    res = _run(rsus, platoon={"count": count}, duration_s=300)
    tr = res.trace
    before = tr.pos_m[:-1] <= LINE_M
    after = tr.pos_m[1:] > LINE_M
    rows, trucks = np.nonzero(before & after)
    assert trucks.size == res.table.n, "every truck passes the signal"
    for r, k in zip(rows, trucks, strict=True):
        x0, x1 = tr.pos_m[r, k], tr.pos_m[r + 1, k]
        t_cross = tr.time_s[r] + 0.1 * (LINE_M - x0) / (x1 - x0)
        assert SIGNAL.phase_at(t_cross)[0] != PHASE_RED, (k, t_cross)
    np.testing.assert_array_equal(res.roadside.red_light_crossings, 0)
    assert np.isnan(res.state.collided_at_s).all()
    followers = res.table.position > 0
    assert np.nanmin(tr.gap_m[:, followers]) > 2.0


def test_spat_lets_the_head_glide_instead_of_braking_hard(
    with_rsu: RunResult, without_rsu: RunResult
) -> None:
    """Knowing 65 s ahead that the light will be red, the head eases off at ~0.3 m/s²
    (a = 2 (v T - g) / T², v = 22 m/s, g = 798 m, T = 66.4 s) and reaches the line as it
    turns green; seeing it only 150 m out, it must brake at 2 m/s² and stop."""
    learned_with = with_rsu.roadside.spat_received_at_s[0]
    learned_without = without_rsu.roadside.signal_seen_at_s[0]
    assert learned_with < learned_without - 25.0
    decel_with = -with_rsu.trace.accel_mps2[:, 0].min()
    decel_without = -without_rsu.trace.accel_mps2[:, 0].min()
    assert decel_with == pytest.approx(0.30, abs=0.03)
    assert decel_without > 1.9
    assert with_rsu.roadside.red_light_stops[0] == 0
    assert with_rsu.trace.speed_mps[:, 0].min() > 1.0, "never stops"
    head = with_rsu.trace.pos_m[:, 0]
    crossed = with_rsu.trace.time_s[np.flatnonzero(head > LINE_M)[0]]
    assert GREEN_AT_S < crossed < GREEN_AT_S + 3.0


def test_dust_shortens_the_sight_of_the_light() -> None:
    """In a dust storm with 80 m visibility the light comes into sight 80 m out, not 150 m."""
    dust = {
        "kind": "dust_storm",
        "start_m": 3500,
        "end_m": 4500,
        "start_s": 0,
        "end_s": 300,
        "visibility_m": 80,
    }
    res = _run(False, hazards=[dust])
    tr = res.trace
    for k in range(res.table.n):
        seen = res.roadside.signal_seen_at_s[k]
        row = round(seen / 0.1)
        d = LINE_M - tr.pos_m[row, k]
        assert 80.0 - 0.1 * tr.speed_mps[row, k] - 1e-9 < d <= 80.0, (k, d)


def test_trucks_far_from_any_signal_and_rsu_have_no_spat() -> None:
    res = _run(False, signals=[{"pos_m": 9000, "green_s": 30, "yellow_s": 4, "red_s": 40}])
    assert (res.trace.spat_phase == PHASE_UNKNOWN).all()
    assert np.isnan(res.roadside.spat_received_at_s).all()
    assert np.isnan(res.roadside.signal_seen_at_s).all()
    assert (res.state.signal_known == 0).all()


def test_an_unreached_signal_changes_nothing() -> None:
    """Knowledge and caps only start within sight: until then the run is bit-identical."""
    far = _run(False, signals=[{"pos_m": 9000, "green_s": 30, "yellow_s": 4, "red_s": 40}])
    none = _run(False, signals=[])
    for name in ("pos_m", "speed_mps", "accel_mps2", "energy_kwh", "mode"):
        np.testing.assert_array_equal(getattr(far.trace, name), getattr(none.trace, name))


# ---- validation ----


@pytest.mark.parametrize(
    ("signal", "message"),
    [
        ({"green_s": 0}, "field 'signals.0.green_s' = 0: Input should be greater than 0"),
        ({"yellow_s": -1}, "field 'signals.0.yellow_s' = -1: Input should be greater than 0"),
        ({"offset_s": -5}, "field 'signals.0.offset_s' = -5: Input should be greater than or"),
        ({"pos_m": 20000}, "signals.0.pos_m = 20000.0: beyond the road end (road.length_m"),
        ({"phase": "red"}, "field 'signals.0.phase' is not a known field"),
    ],
)
def test_bad_signals_are_refused_with_one_clear_message(signal: dict, message: str) -> None:
    base = {"pos_m": 4000, "green_s": 30, "yellow_s": 4, "red_s": 40}
    with pytest.raises(ScenarioError) as err:
        example("signal-stop", signals=[base | signal])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_signal_without_red_is_refused() -> None:
    with pytest.raises(ScenarioError, match=r"field 'signals\.0\.red_s' is required"):
        example("signal-stop", signals=[{"pos_m": 4000, "green_s": 30, "yellow_s": 4}])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"green_s": 0.0}, "green_s = 0.0; allowed: a finite value > 0"),
        ({"red_s": float("inf")}, "red_s = inf; allowed: a finite value > 0"),
        ({"pos_m": -1.0}, "pos_m = -1.0; allowed: a finite value >= 0"),
    ],
)
def test_road_layer_signal_checks_its_fields(kwargs: dict, message: str) -> None:
    fields = {"pos_m": 10.0, "green_s": 30.0, "yellow_s": 3.0, "red_s": 30.0} | kwargs
    with pytest.raises(SignalError, match=message):
        FixedTimeSignal("s1", **fields)
