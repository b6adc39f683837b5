"""The specialised CACC step (``kernel_fast``) against the general step (``kernel``).

The fast step drops what an eligible scenario cannot use; on such a scenario it must give the
general step's results to the last bit, in every state array the rest of convoy reads.
Eligibility must be refused for every feature it drops, or results would silently change.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import pytest
from conftest import collision_course, example

from convoy.sim import engine, kernel_fast
from convoy.sim.engine import simulate
from convoy.sim.scenario import Scenario
from convoy.vehicle.controllers import MODE_COLLIDED

STATE_FIELDS = (
    "pos_m",
    "speed_mps",
    "accel_mps2",
    "u_mps2",
    "mode",
    "ctrl_mode",
    "energy_kwh",
    "rx_pred",
    "collided_at_s",
    "collision_speed_mps",
    "min_gap_m",
    "min_ttc_s",
    "hard_brakes",
    "fallback_steps",
)


def _eligible(sc: Scenario) -> bool:
    """Whether ``engine.build`` chose the fast step (``kernel_fast.eligible``)."""
    return engine.build(sc)[2].fast_cacc


def _assert_same(sc: Scenario) -> tuple[Any, Any]:
    assert _eligible(sc)
    fast = simulate(sc, backend="cpu")
    general = simulate(sc, backend="cpu-general")
    for name in STATE_FIELDS:
        a, b = getattr(general.state, name), getattr(fast.state, name)
        assert np.array_equal(a, b, equal_nan=True), name
    for name in ("pos_m", "speed_mps", "accel_mps2", "mode", "energy_kwh"):
        assert np.array_equal(getattr(general.trace, name), getattr(fast.trace, name)), name
    return general, fast


def test_brake_and_recover_bit_identical() -> None:
    """Several platoons (heads behind tails use the law too), braking, recovering."""
    general, _ = _assert_same(
        example(
            "brake-and-recover",
            platoon={"count": 6, "spacing_m": 40.0, "initial": {"head_pos_m": 3000}},
        )
    )
    # the run exercises more than cruising: several CACC modes and real braking
    assert len(np.unique(general.trace.mode[1:])) >= 3
    assert general.trace.accel_mps2.min() < -1.5


def test_a_fleet_of_many_blocks_bit_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    """1,250 trucks: two blocks of the fast step, threaded (and two of the general one),
    whose first trucks read the truck ahead from another block; braking, and ACC fallback
    beyond the beacon range."""
    monkeypatch.setattr(kernel_fast, "PARALLEL_MIN_TRUCKS", 0)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 4)  # as many blocks as allowed
    assert kernel_fast.block_count(1_250, numba.get_num_threads()) == 2
    general, _ = _assert_same(
        example(
            "brake-and-recover",
            duration_s=70.3,
            platoon={"count": 250, "spacing_m": 30.0, "initial": {"head_pos_m": 60_000}},
            channel={"rate_hz": 10, "range_m": 41.0, "stale_after_s": 0.3},
            leader={"speed_profile": [[0, 22], [20, 22], [40, 5], [70, 25]]},
            output={"record_every_s": 0.7},
        )
    )
    assert general.state.fallback_steps.sum() > 0
    assert general.trace.accel_mps2.min() < -1.5


def test_threaded_and_one_thread_steps_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fleets below ``PARALLEL_MIN_TRUCKS`` run the one-thread variant of the fast step; the
    threaded one, forced on the same 1,250 trucks with braking, gives the same bits (each
    block reads only the step's current rows and writes only its own trucks' next rows)."""
    sc = example(
        "brake-and-recover",
        duration_s=50.0,
        platoon={"count": 250, "spacing_m": 30.0, "initial": {"head_pos_m": 60_000}},
        leader={"speed_profile": [[0, 22], [10, 22], [20, 8], [50, 25]]},
    )
    assert sc.n_trucks < kernel_fast.PARALLEL_MIN_TRUCKS
    one = simulate(sc, backend="cpu")
    monkeypatch.setattr(kernel_fast, "PARALLEL_MIN_TRUCKS", 0)
    threaded = simulate(sc, backend="cpu")
    for name in STATE_FIELDS:
        a, b = getattr(one.state, name), getattr(threaded.state, name)
        assert np.array_equal(a, b, equal_nan=True), name
    assert np.array_equal(one.trace.pos_m, threaded.trace.pos_m)
    assert one.trace.accel_mps2.min() < -1.0


def test_stale_beacons_and_acc_fallback_bit_identical() -> None:
    """Beyond the beacon range the follower runs on older beacons, then falls back to ACC."""
    general, _ = _assert_same(
        example(
            "brake-and-recover",
            channel={"rate_hz": 10, "range_m": 41.0, "stale_after_s": 0.3},
            leader={"speed_profile": [[0, 22], [20, 22], [40, 5], [70, 25]]},
        )
    )
    assert general.state.fallback_steps.sum() > 0


def test_stop_and_go_bit_identical() -> None:
    """Down to a standstill (the zero-speed clamps) and away again."""
    general, _ = _assert_same(
        example(
            "brake-and-recover",
            leader={"speed_profile": [[0, 22], [10, 0], [40, 0], [60, 20]]},
            duration_s=90,
        )
    )
    assert general.trace.speed_mps[:, 0].min() == 0.0
    assert general.trace.speed_mps[-1].min() > 15.0


def test_collisions_bit_identical() -> None:
    """Trucks that can brake at only 1 m/s², 0.3 m apart on a 0.1 s time gap, behind a head
    that stops: they collide, and collided trucks brake in the scalar path of the step."""
    general, _ = _assert_same(collision_course())
    assert np.isfinite(general.state.collided_at_s).all()
    assert (general.state.mode == MODE_COLLIDED).all()


def test_cold_downhill_diesel_bit_identical() -> None:
    """Energy terms that a flat mild day leaves out: grade, regeneration, cold, diesel."""
    _assert_same(example("brake-and-recover", road={"grade_pct": -3.0}, weather={"ambient_c": -20}))
    _assert_same(example("brake-and-recover", truck={"powertrain": {"kind": "diesel"}}))


@pytest.mark.parametrize(
    "over",
    [
        {"channel": {"rate_hz": 10, "latency_s": 0.1}},
        {"channel": {"rate_hz": 10, "loss": 0.1}},
        {"channel": {"rate_hz": 10, "burst": {"loss_bad": 1.0}}},
        {"channel": {"rate_hz": 5}},
        {"channel": {"rate_hz": 10, "outages": [[10, 20]]}},
        {"platoon": {"controller": {"model": "acc"}}},
        {"platoon": {"controller": {"model": "cacc-ploeg"}}},
        {"platoon": {"controller": {"model": "cacc-sumo", "actuator_lag_s": 0.3}}},
        {"platoon": {"controller": {"model": "cacc-sumo", "emergency_braking": True}}},
        {"truck": {"powertrain": {"limit_traction": True}}},
        {
            "hazards": [
                {"kind": "dust_storm", "start_m": 5e3, "end_m": 6e3, "start_s": 0, "end_s": 60}
            ]
        },
        {"signals": [{"pos_m": 4000, "green_s": 30, "yellow_s": 4, "red_s": 40}]},
    ],
)
def test_features_it_drops_make_a_scenario_ineligible(over: dict[str, Any]) -> None:
    assert _eligible(example("brake-and-recover"))
    assert not _eligible(example("brake-and-recover", **over))
