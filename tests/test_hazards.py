"""Hazards and RSUs: who learns of a hazard when, what it does to them, and what they flag.

Expected outcomes come from the model's stated semantics (``convoy.road.hazards``) and its
sources: the Art. 81 expressway limit for visibility under 100 m (40 km/h), the Coulomb
bound ``a <= μ·g`` on braking, and the braking-envelope kinematics ``v² = v_lim² + 2·b·d``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import example

from convoy.road.hazards import (
    APPROACH_DECEL_MPS2,
    APPROACH_MARGIN_M,
    HZ_SPEED_LIMIT_MPS,
    KNOWN_NOT,
    KNOWN_RSI,
    KNOWN_SENSED,
    PREVIEW_M,
    STANDARD_GRAVITY_MPS2,
    CorridorSpan,
    HazardError,
    HazardEvent,
    HazardKind,
    OddFlags,
    PolygonArea,
    hazard_effects,
    hazard_table,
    rsi_for,
    rsu_table,
    rsus_in_range,
    speed_limit_for_visibility_mps,
)
from convoy.road.network import RoadsideUnit
from convoy.road.v2x import decode, encode
from convoy.sim.engine import RunResult, simulate
from convoy.sim.fcd import FCD_COLUMNS, fcd_table
from convoy.sim.scenario import ScenarioError

# the shipped dust-storm scenario: span 5000-6500 m, visibility 80 m -> 40 km/h
SPAN_START_M, SPAN_END_M = 5000.0, 6500.0
DUST_LIMIT_MPS = 40.0 / 3.6
FIRST_RSU_M, RSU_RADIUS_M = 3000.0, 500.0


def _dust(rsus: bool) -> RunResult:
    over = {} if rsus else {"rsus": []}
    return simulate(example("dust-storm", **over), record_every_s=0.1)


@pytest.fixture(scope="module")
def with_rsu() -> RunResult:
    return _dust(True)


@pytest.fixture(scope="module")
def without_rsu() -> RunResult:
    return _dust(False)


def _row(res: RunResult, t_s: float) -> int:
    return round(t_s / res.scenario.dt_s)


def test_rsu_warns_trucks_before_they_reach_the_span(with_rsu: RunResult) -> None:
    """Each truck hears the RSI as it enters the first RSU's coverage, 2.5 km upstream."""
    learned = with_rsu.state.rsi_received_at_s
    assert np.isfinite(learned).all()
    pos = np.array([with_rsu.trace.pos_m[_row(with_rsu, t), i] for i, t in enumerate(learned)])
    assert np.all(pos < SPAN_START_M)
    # learned on entering the coverage circle, within one step of travel (22 m/s x 0.1 s)
    np.testing.assert_allclose(pos, FIRST_RSU_M - RSU_RADIUS_M, atol=2.3)
    # later trucks reach the RSU later, in platoon order
    assert np.all(np.diff(learned) > 0)


def test_warned_platoon_is_within_the_limit_inside_the_span(with_rsu: RunResult) -> None:
    """The envelope brings every truck to 40 km/h before it enters; none exceeds it inside."""
    tr = with_rsu.trace
    inside = (tr.pos_m >= SPAN_START_M) & (tr.pos_m <= SPAN_END_M)
    assert inside.any(axis=0).all(), "every truck must cross the span"
    assert tr.speed_mps[inside].max() <= DUST_LIMIT_MPS + 1e-9
    # slowing is gentle: the envelope's 0.5 m/s² with the CACC law's own small corrections
    assert tr.accel_mps2.min() > -2 * APPROACH_DECEL_MPS2
    # and it happens before the span: from the margin point on the head is at the limit
    # (row k's speed comes from the step that started at row k-1's position)
    head = tr.pos_m[:, 0]
    at_margin = np.argmax(head >= SPAN_START_M - APPROACH_MARGIN_M)
    assert tr.speed_mps[at_margin + 1, 0] <= DUST_LIMIT_MPS + 1e-9
    assert tr.speed_mps[at_margin - 50, 0] > DUST_LIMIT_MPS + 0.1


def test_without_rsu_trucks_learn_only_on_entering(
    with_rsu: RunResult, without_rsu: RunResult
) -> None:
    """Own sensors only: the flag rises at the span, later than with the RSI, and the trucks
    enter too fast and brake inside it."""
    assert np.isnan(without_rsu.state.rsi_received_at_s).all()
    for res in (with_rsu, without_rsu):
        assert np.isnan(res.state.collided_at_s).all()
    tr = without_rsu.trace
    dust = (tr.odd_flags & OddFlags.DUST) > 0
    first = dust.argmax(axis=0)
    # the flag describes the step that ended at its row: the position at the row before
    assert np.all(tr.pos_m[first - 1, np.arange(5)] >= SPAN_START_M)
    first_warned = ((with_rsu.trace.odd_flags & OddFlags.DUST) > 0).argmax(axis=0)
    assert np.all(first > first_warned)
    inside = (tr.pos_m >= SPAN_START_M) & (tr.pos_m <= SPAN_END_M)
    assert tr.speed_mps[inside].max() > DUST_LIMIT_MPS + 5.0


@pytest.mark.parametrize("rsus", [True, False])
def test_dust_flag_is_set_exactly_while_aware_and_not_past(
    rsus: bool, with_rsu: RunResult, without_rsu: RunResult
) -> None:
    """DUST (with LOW_VISIBILITY, 80 m < 200 m) is set from learning until the truck's front
    leaves the span, and at no other time."""
    res = with_rsu if rsus else without_rsu
    tr, dt = res.trace, res.scenario.dt_s
    # row k holds the flags of the step from row k-1 to row k, computed at row k-1
    pos, t = tr.pos_m[:-1], tr.time_s[:-1, None]
    if rsus:
        learned = res.state.rsi_received_at_s[None, :]
        aware = t >= learned - dt / 2
    else:
        aware = np.maximum.accumulate(pos >= SPAN_START_M, axis=0)
    expected = aware & (pos <= SPAN_END_M)
    flags = tr.odd_flags[1:]
    np.testing.assert_array_equal((flags & OddFlags.DUST) > 0, expected)
    np.testing.assert_array_equal(flags[expected], int(OddFlags.DUST | OddFlags.LOW_VISIBILITY))
    assert np.all(flags[~expected] == 0)
    assert np.all(res.state.odd_flags == 0), "all trucks have passed the span"


def test_fcd_ends_with_odd_flags_then_spat_phase(with_rsu: RunResult) -> None:
    table = fcd_table(with_rsu.trace)
    assert table.column_names == list(FCD_COLUMNS)
    assert FCD_COLUMNS[-2:] == ("odd_flags", "spat_phase")
    col = table.column("odd_flags").to_numpy()
    np.testing.assert_array_equal(col, with_rsu.trace.odd_flags.reshape(-1))


@pytest.mark.parametrize(
    "controller",
    [{"model": "cacc-sumo"}, {"model": "acc", "actuator_lag_s": 0.5}, {"model": "human"}],
)
def test_ice_caps_deceleration_at_mu_g(controller: dict) -> None:
    """On μ = 0.1 ice no truck brakes harder than μ·g = 0.98 m/s²; on a dry road the same
    manoeuvre (22 -> 12 m/s in 5 s) needs more than that."""
    mu = 0.1
    ice = {
        "kind": "snow_ice",
        "start_m": 0,
        "end_m": 100_000,
        "start_s": 0,
        "end_s": 200,
        "friction": mu,
        "speed_limit_mps": 30,  # above the run's speeds: only the friction acts
    }
    dry = simulate(example("brake-and-recover", platoon={"controller": controller}))
    icy = simulate(example("brake-and-recover", platoon={"controller": controller}, hazards=[ice]))
    cap = mu * STANDARD_GRAVITY_MPS2
    assert dry.trace.accel_mps2.min() < -1.5 * cap
    assert icy.trace.accel_mps2.min() >= -cap - 1e-9
    assert icy.trace.accel_mps2.min() < -0.99 * cap  # the cap is reached, not avoided
    assert np.isnan(icy.state.collided_at_s).all()
    want = int(OddFlags.ICE | OddFlags.LOW_FRICTION)
    assert np.all(icy.trace.odd_flags[1:] == want)


def test_no_hazards_means_no_flags_and_no_rsi() -> None:
    res = simulate(example("brake-and-recover"))
    assert res.state.hazard_known.shape == (5, 0)
    assert np.all(res.trace.odd_flags == 0)
    assert np.isnan(res.state.rsi_received_at_s).all()


# ---- the compiled step, alone ----


def _one(kind: HazardKind = HazardKind.DUST_STORM, **kw: float) -> np.ndarray:
    return hazard_table([HazardEvent.create("h", kind, CorridorSpan(5000, 6000), 10, 100, **kw)])


def test_effects_follow_the_braking_envelope() -> None:
    """Ahead of a known hazard the cap is sqrt(v_lim² + 2 b (d - margin)); inside, v_lim."""
    hz = _one(speed_limit_mps=10.0)
    rsus = rsu_table([1000.0], 500.0)
    known = np.zeros(1, np.int8)
    v, cap, rng, flags, by_rsi = hazard_effects(800.0, 20.0, hz, rsus, known)
    assert by_rsi and known[0] == KNOWN_RSI and flags & OddFlags.DUST
    assert math.isinf(v), "4.2 km away is beyond the preview distance"
    d = 5000.0 - 3500.0
    assert d <= PREVIEW_M
    v, *_ = hazard_effects(3500.0, 20.0, hz, rsus, known)
    expect = math.sqrt(10.0**2 + 2 * APPROACH_DECEL_MPS2 * (d - APPROACH_MARGIN_M))
    assert v == pytest.approx(expect)
    v, cap, rng, flags, by_rsi = hazard_effects(5500.0, 20.0, hz, rsus, known)
    assert (v, cap, rng, by_rsi) == (10.0, math.inf, 150.0, False)
    v, cap, rng, flags, _ = hazard_effects(6000.5, 20.0, hz, rsus, known)
    assert (v, cap, rng, flags) == (math.inf, math.inf, math.inf, 0)


def test_knowledge_needs_an_active_event_and_coverage() -> None:
    hz = _one()
    rsus = rsu_table([1000.0], 500.0)
    known = np.zeros(1, np.int8)
    # before the window: the RSU has nothing to send
    assert hazard_effects(1000.0, 5.0, hz, rsus, known)[3] == 0 and known[0] == KNOWN_NOT
    # outside the coverage circle: nothing heard
    assert hazard_effects(1600.0, 20.0, hz, rsus, known)[3] == 0 and known[0] == KNOWN_NOT
    # an RSU whose alert range does not reach the span says nothing about it
    far = rsu_table([1000.0], 500.0, alert_range_m=3000.0)
    assert hazard_effects(1000.0, 20.0, hz, far, known)[3] == 0 and known[0] == KNOWN_NOT
    # inside the span: own sensors
    hazard_effects(5001.0, 20.0, hz, np.zeros((0, 3)), known)
    assert known[0] == KNOWN_SENSED
    # after the window: no effect, even for a truck that knows
    assert hazard_effects(5500.0, 100.0, hz, rsus, known)[:4] == (math.inf,) * 3 + (0,)


def test_ice_row_caps_braking_only_inside() -> None:
    hz = _one(HazardKind.SNOW_ICE)
    known = np.zeros(1, np.int8)
    none = np.zeros((0, 3))
    assert math.isinf(hazard_effects(4000.0, 20.0, hz, none, known)[1])
    _, cap, _, flags, _ = hazard_effects(5100.0, 20.0, hz, none, known)
    assert cap == pytest.approx(0.15 * STANDARD_GRAVITY_MPS2)
    assert flags == int(OddFlags.ICE | OddFlags.LOW_FRICTION)
    assert hz[0, HZ_SPEED_LIMIT_MPS] == pytest.approx(30 / 3.6)


# ---- objects: events, defaults, RSUs and the RSI they send ----


def test_kind_defaults_follow_their_sources() -> None:
    """Art. 81: < 200 m -> 60 km/h, < 100 m -> 40, < 50 m -> 20; Art. 46: ice 30 km/h."""
    span = CorridorSpan(0, 100)
    assert speed_limit_for_visibility_mps(250.0) is None
    assert speed_limit_for_visibility_mps(150.0) == pytest.approx(60 / 3.6)
    assert speed_limit_for_visibility_mps(80.0) == pytest.approx(40 / 3.6)
    assert speed_limit_for_visibility_mps(30.0) == pytest.approx(20 / 3.6)
    dust = HazardEvent.create("d", HazardKind.DUST_STORM, span, 0, 10, visibility_m=30.0)
    assert dust.speed_limit_mps == pytest.approx(20 / 3.6)
    assert dust.odd_flags == OddFlags.DUST | OddFlags.LOW_VISIBILITY
    ice = HazardEvent.create("i", HazardKind.SNOW_ICE, span, 0, 10)
    assert ice.friction == 0.15 and ice.speed_limit_mps == pytest.approx(30 / 3.6)
    works = HazardEvent.create("w", HazardKind.ROAD_WORKS, span, 0, 10)
    assert works.lanes_closed == 1 and works.odd_flags == OddFlags.ROAD_WORKS | OddFlags.LANE_CLOSED
    wind = HazardEvent.create("c", HazardKind.CROSSWIND, span, 0, 10)
    assert wind.odd_flags == OddFlags.CROSSWIND and wind.crosswind_mps == 17.2


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"start_s": 10, "end_s": 5}, "time window"),
        ({"area": CorridorSpan(200, 100)}, "span [200, 100]"),
        ({"area": PolygonArea(((0.0, 0.0), (1.0, 1.0)))}, "at least 3 points"),
        ({"friction": 0.0}, "friction = 0.0"),
        ({"visibility_m": -5.0}, "visibility_m = -5.0"),
    ],
)
def test_bad_events_are_refused(kwargs: dict, fragment: str) -> None:
    base: dict = {
        "id": "x",
        "kind": HazardKind.SNOW_ICE,
        "area": CorridorSpan(0, 100),
        "start_s": 0,
        "end_s": 10,
    }
    with pytest.raises(HazardError, match=fragment.replace("[", r"\[")):
        HazardEvent(**(base | kwargs))


def test_engine_table_needs_corridor_spans() -> None:
    poly = PolygonArea(((109.0, 39.0), (109.1, 39.0), (109.1, 39.1)))
    ev = HazardEvent.create("p", HazardKind.DUST_STORM, poly, 0, 10)
    with pytest.raises(HazardError, match="corridor span"):
        hazard_table([ev])


def test_rsus_in_range_of_span_and_polygon() -> None:
    near = RoadsideUnit("near", "e1", 1000.0, 109.98, 39.82)
    far = RoadsideUnit("far", "e1", 20_000.0, 109.98, 39.95)
    other = RoadsideUnit("other", "e2", 5100.0, 109.98, 39.82)
    span = HazardEvent.create("s", HazardKind.ROAD_WORKS, CorridorSpan(5000, 6000, "e1"), 0, 60)
    assert rsus_in_range(span, [near, far, other]) == [near]
    # a ~1.1 km square around (109.98, 39.82): the RSU in it and one 3.3 km north count,
    # one 14 km north does not
    ring = ((109.975, 39.815), (109.985, 39.815), (109.985, 39.825), (109.975, 39.825))
    poly = HazardEvent.create("p", HazardKind.DUST_STORM, PolygonArea(ring), 0, 60)
    north = RoadsideUnit("north", "e1", 0.0, 109.98, 39.855)
    assert rsus_in_range(poly, [near, north, far]) == [near, north]


def test_rsi_for_an_event_is_a_valid_message() -> None:
    rsu = RoadsideUnit("rsu-1", "e1", 1000.0, 109.98, 39.82)
    ring = ((109.975, 39.815), (109.985, 39.815), (109.985, 39.825), (109.975, 39.825))
    for area in (CorridorSpan(5000, 6000, "e1"), PolygonArea(ring)):
        ev = HazardEvent.create("d", HazardKind.DUST_STORM, area, 90.0, 3600.0)
        msg = rsi_for(ev, rsu, msg_cnt=5, epoch_moy=1000)
        assert decode(encode(msg)) == msg
        rte = msg.rtes[0]
        assert msg.id == "rsu-1" and rte.eventSource == "meteorological"
        assert rte.timeDetails is not None
        assert (rte.timeDetails.startTime, rte.timeDetails.endTime) == (1001, 1060)
        assert rte.description is not None and "visibility 150 m" in rte.description
    assert msg.rtes[0].eventPos is not None and msg.rtes[0].referencePaths is not None
    # centre to corner of the 0.01° square at 39.82° N: hypot(427 m, 556 m)
    assert msg.rtes[0].eventRadius == pytest.approx(701.0, rel=0.01)


# ---- scenario fields ----


@pytest.mark.parametrize(
    ("over", "fragment"),
    [
        (
            {
                "hazards": [
                    {"kind": "dust_storm", "start_m": 10, "end_m": 5, "start_s": 0, "end_s": 1}
                ]
            },
            "end_m (5.0) must be after start_m (10.0)",
        ),
        (
            {
                "hazards": [
                    {"kind": "dust_storm", "start_m": 0, "end_m": 5, "start_s": 9, "end_s": 1}
                ]
            },
            "end_s (1.0) must be after start_s (9.0)",
        ),
        (
            {"hazards": [{"kind": "fog", "start_m": 0, "end_m": 5, "start_s": 0, "end_s": 1}]},
            "hazards.0.kind",
        ),
        (
            {
                "hazards": [
                    {"kind": "snow_ice", "start_m": 0, "end_m": 5e5, "start_s": 0, "end_s": 1}
                ]
            },
            "hazards.0.end_m = 500000.0: beyond the road end",
        ),
        ({"rsus": [{"pos_m": 30_000}]}, "rsus.0.pos_m = 30000.0: beyond the road end"),
        ({"rsus": [{"pos_m": 100, "radius_m": 0}]}, "rsus.0.radius_m"),
        ({"rsus": [{"pos_m": 100, "range": 5}]}, "'rsus.0.range' is not a known field"),
    ],
)
def test_scenario_mistakes_get_one_clear_message(over: dict, fragment: str) -> None:
    with pytest.raises(ScenarioError) as err:
        example("dust-storm", **over)
    assert fragment in str(err.value), str(err.value)
