"""The engine against physics: string stability, degraded modes, collisions, determinism.

Each test states the outcome it expects and where that expectation comes from.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import example

from convoy.sim import kernel
from convoy.sim.engine import build, get_backend, simulate
from convoy.sim.scenario import ScenarioError
from convoy.vehicle.aero import drag_multiplier
from convoy.vehicle.controllers import MODE_ACC_FALLBACK, MODE_EMERGENCY
from convoy.vehicle.energy import ElectricPowertrain, step_energy_kwh

SETTLE_S = 40.0  # the sinusoid has run two periods; the start-up transient is gone


def _speed_amplitudes(controller: dict, gap_m: float) -> np.ndarray:
    sc = example(
        "sinusoidal-leader",
        platoon={"controller": controller, "initial": {"gap_m": gap_m}},
    )
    tr = simulate(sc).trace
    v = tr.speed_mps[tr.time_s > SETTLE_S]
    return v.max(axis=0) - v.min(axis=0)


def test_ploeg_is_string_stable() -> None:
    """Ploeg et al. 2011: h = 0.5 s, kp = 0.2, kd = 0.7 attenuates along the string."""
    amp = _speed_amplitudes({"model": "cacc-ploeg"}, gap_m=2.5 + 0.5 * 22)
    assert amp.shape == (8,)
    assert np.all(np.diff(amp) < 0), amp
    assert amp[-1] < amp[0]


def test_acc_below_the_delay_bound_amplifies() -> None:
    """Xiao, Darbha & Gao 2008: a CTG string needs h > 2(Δ + τ) = 2(0.2 + 0.5) = 1.4 s.

    With h = 1.0 s the oscillation grows truck after truck; with h = 2.5 s it shrinks.
    """
    unstable = {"model": "acc", "time_gap_s": 1.0, "sensor_delay_s": 0.2, "actuator_lag_s": 0.5}
    amp = _speed_amplitudes(unstable, gap_m=2.5 + 22 * 1.0)
    assert np.all(np.diff(amp[1:]) > 0), amp
    assert amp[-1] > 1.5 * amp[0]
    stable = dict(unstable, time_gap_s=2.5)
    amp = _speed_amplitudes(stable, gap_m=2.5 + 22 * 2.5)
    assert np.all(np.diff(amp) < 0), amp


def test_bursty_loss_degrades_to_acc_without_collision() -> None:
    """50 % mean loss in bursts: CACC must spend time in ACC fallback and never collide."""
    burst = {"loss_bad": 1.0, "p_good_to_bad": 0.1, "p_bad_to_good": 0.1}
    sc = example("brake-and-recover", channel={"loss": 0.0, "burst": burst}, seed=7)
    assert sc.channel.spec().mean_loss() == pytest.approx(0.5)
    res = simulate(sc)
    followers = res.table.position > 0
    assert np.all(res.state.fallback_steps[followers] > 0)
    assert np.isnan(res.state.collided_at_s).all()
    assert res.state.min_gap_m[followers].min() > 2.5
    assert (res.trace.mode == MODE_ACC_FALLBACK).any()


def test_cut_off_link_falls_back_then_recovers() -> None:
    """During the 40-80 s outage every follower is in ACC fallback; after it, none is."""
    res = simulate(example("cut-off-v2v"))
    tr = res.trace
    during = (tr.time_s > 41) & (tr.time_s < 80)
    after = tr.time_s > 120
    f = res.table.position > 0
    assert np.all(tr.mode[np.ix_(during, f)] == MODE_ACC_FALLBACK)
    assert not np.any(tr.mode[np.ix_(after, f)] == MODE_ACC_FALLBACK)
    # the fallback's larger time gap (1.5 s vs 0.6 s) opens the gaps during the outage
    mid = np.argmin(np.abs(tr.time_s - 79.0))
    start = np.argmin(np.abs(tr.time_s - 39.0))
    assert np.all(tr.gap_m[mid, f] > tr.gap_m[start, f] + 5.0)


def test_collisions_are_detected_and_reported() -> None:
    """Drowsy humans 5 m apart behind a hard-braking head must crash, and we must say so."""
    sc = example(
        "brake-and-recover",
        platoon={
            "controller": {"model": "human", "reaction_time_s": 2.0, "noise_mps2": 0.0},
            "initial": {"gap_m": 5.0},
        },
        leader={"speed_profile": [[0, 22], [10, 22], [15, 2]]},
    )
    res = simulate(sc)
    st = res.state
    assert np.isfinite(st.collided_at_s[1])
    assert 10.0 < st.collided_at_s[1] < 16.0
    assert st.collision_speed_mps[1] > 0.0
    # the overlap is reported, not hidden: the recorded gap went negative
    assert np.nanmin(res.trace.gap_m[:, 1]) < 0.0


def test_hazard_beacon_triggers_emergency_braking() -> None:
    """A head braking at the emergency limit flags a hazard; its follower brakes too.

    With ``emergency_braking`` off, the SUMO law alone never enters the emergency mode.
    """

    def run(flag: bool) -> np.ndarray:
        sc = example(
            "brake-and-recover",
            truck={"max_decel_mps2": 7.5, "emergency_decel_mps2": 7.5},
            platoon={"controller": {"model": "cacc-sumo", "emergency_braking": flag}},
            leader={"speed_profile": [[0, 22], [10, 22], [12.93, 0]]},
            duration_s=30,
        )
        res = simulate(sc)
        assert np.isnan(res.state.collided_at_s).all()
        return res.trace.mode

    on = run(True)
    first = np.flatnonzero(on[:, 1] == MODE_EMERGENCY)
    # the head starts braking at 10 s; the 10 Hz beacon reaches the follower within 0.2 s
    assert first.size and 10.0 <= first[0] * 0.1 <= 10.3
    assert not (run(False) == MODE_EMERGENCY).any()


def test_same_seed_same_run_whatever_the_threads() -> None:
    """Counter-based draws: the run depends on the seed only, not on thread scheduling."""
    burst = {"loss_bad": 0.9, "p_good_to_bad": 0.2, "p_bad_to_good": 0.3}
    sc = example(
        "brake-and-recover",
        platoon={"controller": {"model": "human"}, "count": 3},
        channel={"loss": 0.1, "burst": burst},
        seed=11,
    )
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = simulate(sc).trace
        numba.set_num_threads(threads)
        many = simulate(sc).trace
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one.pos_m, many.pos_m)
    other = simulate(sc.model_copy(update={"seed": 12})).trace
    assert not np.array_equal(one.pos_m, other.pos_m)


def test_one_thread_and_threaded_general_steps_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fleets below ``kernel.PARALLEL_MIN_TRUCKS`` run the general step's one-thread variant
    (no parallel region per step); on two blocks of human drivers under bursty loss and
    braking it gives the threaded variant's bits."""
    burst = {"loss_bad": 0.9, "p_good_to_bad": 0.2, "p_bad_to_good": 0.3}
    sc = example(
        "brake-and-recover",
        duration_s=60.0,
        road={"length_m": 1_000_000},
        platoon={
            "controller": {"model": "human"},
            "count": kernel.CHUNK // 5 + 20,
            "spacing_m": 200,
            "initial": {"head_pos_m": 600_000},
        },
        channel={"loss": 0.1, "burst": burst},
        seed=3,
    )
    assert kernel.CHUNK < sc.n_trucks < kernel.PARALLEL_MIN_TRUCKS
    one = simulate(sc)
    monkeypatch.setattr(kernel, "PARALLEL_MIN_TRUCKS", 0)
    threaded = simulate(sc)
    for name in ("pos_m", "speed_mps", "accel_mps2", "mode", "energy_kwh"):
        np.testing.assert_array_equal(getattr(one.trace, name), getattr(threaded.trace, name))
    np.testing.assert_array_equal(one.state.min_gap_m, threaded.state.min_gap_m)
    assert one.trace.accel_mps2.min() < -1.0


def test_blocks_of_trucks_run_as_one_fleet() -> None:
    """The kernel hands trucks to threads in blocks of ``kernel.CHUNK``; every truck reads the
    state at the start of the step, so the blocks and the threads change nothing.

    Platoons 1 km apart do not interact: each, including the one split across the first
    block boundary, drives exactly like platoon 0 (positions differ only by the offset, up
    to rounding), and one thread gives the same bits as many.
    """
    k = 5
    count = 2 * kernel.CHUNK // k + 10  # three blocks
    sc = example(
        "brake-and-recover",
        road={"length_m": 1_000_000},
        platoon={"count": count, "spacing_m": 1000, "initial": {"head_pos_m": 600_000}},
        output={"record_every_s": 1.0},
    )
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = simulate(sc)
        numba.set_num_threads(threads)
        many = simulate(sc)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one.trace.pos_m, many.trace.pos_m)
    split = kernel.CHUNK // k  # platoon holding trucks CHUNK - 4 .. CHUNK
    assert split * k < kernel.CHUNK < (split + 1) * k
    tr = many.trace
    ref = slice(0, k)
    for q in (split, 2 * kernel.CHUNK // k):
        rows = slice(q * k, (q + 1) * k)
        drift = (tr.pos_m[:, rows] - tr.pos_m[0, rows]) - (tr.pos_m[:, ref] - tr.pos_m[0, ref])
        assert np.abs(drift).max() < 1e-6
        np.testing.assert_allclose(tr.speed_mps[:, rows], tr.speed_mps[:, ref], atol=1e-9)


def test_drafting_energy_follows_the_multiplier() -> None:
    """At a steady 10 m gap each truck's energy is the vehicle model's with its Cd_frac."""
    sc = example(
        "brake-and-recover",
        platoon={
            "trucks": 4,
            "controller": {"model": "cacc-path", "spacing_m": 10.0},
            "initial": {"gap_m": 10.0},
        },
        leader={"speed_profile": [[0, 22]]},
        duration_s=60,
    )
    res = simulate(sc)
    assert np.allclose(res.trace.gap_m[-1, 1:], 10.0, atol=1e-6)
    pt = ElectricPowertrain().to_vector()
    for k in range(4):
        mult = drag_multiplier(4, k, 10.0)
        per_step = step_energy_kwh(pt, 49_000.0, 22.0, 0.0, 0.0, mult, 6.0, 0.006, 20.0, 0.1)
        assert res.state.energy_kwh[k] == pytest.approx(per_step * sc.n_steps, rel=1e-9)
    e = res.state.energy_kwh
    assert e[0] > e[1] > e[3]
    assert e[1] == pytest.approx(e[2], rel=1e-12)


def test_unknown_backend_lists_the_valid_ones() -> None:
    with pytest.raises(ScenarioError, match="valid backends: cpu"):
        get_backend("quantum")


def test_platoons_are_laid_out_front_to_back() -> None:
    sc = example("brake-and-recover", platoon={"count": 3, "spacing_m": 60.0})
    table, state, _ = build(sc)
    pos = state.pos_m[0]
    assert np.all(np.diff(pos) < 0)
    gaps = pos[table.leader[1:]] - 16.5 - pos[1:]
    expected = np.array([25, 25, 25, 25, 60] * 2 + [25, 25, 25, 25])
    np.testing.assert_allclose(gaps, expected)
    assert table.leader[0] == -1
    assert list(table.head[:10]) == [0] * 5 + [5] * 5


def test_a_fleet_that_does_not_fit_is_refused() -> None:
    sc = example("brake-and-recover", platoon={"count": 100})
    with pytest.raises(ScenarioError, match="head_pos_m"):
        build(sc)
