"""convoy's SUMO-compatible ACC/CACC laws must reproduce SUMO 1.28's own trajectories.

SUMO is a required test dependency (``eclipse-sumo``/``libsumo`` 1.28.0): nothing here is skipped.
The reference harness below is deliberately plain Python around the compiled scalar laws; it
follows the integration rules documented in :mod:`convoy.vehicle.sumo_cfm`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from convoy.sim.sumo_peer import CorridorSpec, SumoTrace, run_sumo_trajectories
from convoy.vehicle import sumo_cfm as cfm

SPEED_TOL_MPS = 0.05
GAP_TOL_M = 0.1
# The re-implementation follows SUMO's arithmetic step by step; on x86-64 it agrees to the last
# bit. This tighter bound still leaves room for FMA contraction on other platforms.
TIGHT_TOL = 1e-6

BRAKE_AND_RECOVER = CorridorSpec(
    trucks_per_platoon=5,
    platoon_count=1,
    gap_m=25.0,
    speed_mps=22.0,
    head_pos_m=1000.0,
    road_length_m=10000.0,
    length_m=16.5,
    min_gap_m=2.5,
    max_accel_mps2=1.0,
    max_decel_mps2=4.0,
    emergency_decel_mps2=7.5,
    max_speed_mps=25.0,
    car_follow_model="CACC",
    time_gap_s=1.0,
    dt_s=0.1,
    duration_s=200.0,
    speed_profile=((0.0, 22.0), (60.0, 22.0), (65.0, 12.0), (95.0, 12.0), (105.0, 22.0)),
)


class Replay:
    """convoy's trajectories for a spec: positions, speeds, accelerations, gaps, modes (T, N)."""

    def __init__(self, spec: CorridorSpec) -> None:
        n, steps, dt = spec.vehicle_count, spec.step_count, spec.dt_s
        heads = spec.head_mask()
        models = [spec.head_model if h else spec.car_follow_model for h in heads]
        # SUMO gains at their defaults; vType values from the spec. The predecessor's
        # apparentDecel is its decel (identical trucks).
        p_cacc = cfm.SumoCaccParams(
            time_gap_s=spec.time_gap_s,
            min_gap_m=spec.min_gap_m,
            decel_mps2=spec.max_decel_mps2,
            emergency_decel_mps2=spec.emergency_decel_mps2,
            pred_decel_mps2=spec.max_decel_mps2,
        ).to_vector()
        p_acc = cfm.SumoAccParams(
            time_gap_s=spec.time_gap_s,
            min_gap_m=spec.min_gap_m,
            decel_mps2=spec.max_decel_mps2,
            emergency_decel_mps2=spec.emergency_decel_mps2,
            pred_decel_mps2=spec.max_decel_mps2,
        ).to_vector()
        max_speed = np.where(heads, spec.head_max_speed_mps, spec.max_speed_mps)

        pos = spec.initial_positions_m().copy()
        speed = np.full(n, spec.speed_mps)
        accel = np.zeros(n)  # SUMO reports 0 right after insertion
        mode = np.full(n, cfm.MODE_SPEED, dtype=np.int64)

        self.pos_m = np.empty((steps + 1, n))
        self.speed_mps = np.empty((steps + 1, n))
        self.accel_mps2 = np.empty((steps + 1, n))
        self.mode = np.empty((steps + 1, n), dtype=np.int64)
        self.pos_m[0], self.speed_mps[0], self.accel_mps2[0], self.mode[0] = pos, speed, accel, mode

        for k in range(steps):
            # Every truck plans from the state at the start of the step.
            new_speed = np.empty(n)
            for i in range(n):
                if i == 0:
                    gap, pred_speed, pred_accel, pred_is_cacc = np.inf, 0.0, 0.0, True
                else:
                    gap = (pos[i - 1] - spec.length_m) - pos[i]
                    pred_speed, pred_accel = speed[i - 1], accel[i - 1]
                    pred_is_cacc = models[i - 1] == "CACC"
                if models[i] == "CACC":
                    v_law, mode[i] = cfm.cacc_next_speed(
                        p_cacc, speed[i], accel[i], gap, pred_speed, pred_accel,
                        pred_is_cacc, max_speed[i], dt, mode[i],
                    )  # fmt: skip
                else:
                    v_law, mode[i] = cfm.acc_next_speed(
                        p_acc, speed[i], accel[i], gap, pred_speed, max_speed[i], dt, mode[i]
                    )
                if heads[i] and spec.speed_profile is not None:
                    # setSpeed(profile(t_{k+1})) before the step; SUMO still respects the law.
                    command = spec.commanded_speed_mps((k + 1) * dt)
                    if i > 0:
                        command = min(command, v_law)
                    new_speed[i] = cfm.sumo_set_speed(
                        speed[i], command, spec.max_accel_mps2, spec.max_decel_mps2, dt,
                        max_speed[i],
                    )  # fmt: skip
                else:
                    new_speed[i] = cfm.sumo_finalize_speed(
                        speed[i], v_law, spec.max_accel_mps2, spec.max_decel_mps2,
                        spec.emergency_decel_mps2, max_speed[i], dt,
                    )  # fmt: skip
            # Euler: move with the new speed; the acceleration getter is the speed difference.
            accel = (new_speed - speed) / dt
            pos = pos + new_speed * dt
            speed = new_speed
            self.pos_m[k + 1], self.speed_mps[k + 1] = pos, speed
            self.accel_mps2[k + 1], self.mode[k + 1] = accel, mode

        self.gap_m = np.full_like(self.pos_m, np.nan)
        self.gap_m[:, 1:] = (self.pos_m[:, :-1] - spec.length_m) - self.pos_m[:, 1:]


def _assert_agreement(spec: CorridorSpec, sumo: SumoTrace, ours: Replay) -> None:
    assert sumo.speed_mps.shape == ours.speed_mps.shape == (spec.step_count + 1, spec.vehicle_count)
    np.testing.assert_allclose(sumo.time_s, np.arange(spec.step_count + 1) * spec.dt_s, atol=1e-9)
    d_speed = np.abs(ours.speed_mps - sumo.speed_mps).max(axis=0)
    d_gap = np.abs(ours.gap_m[:, 1:] - sumo.gap_m[:, 1:]).max(axis=0)
    d_pos = np.abs(ours.pos_m - sumo.pos_m).max(axis=0)
    d_accel = np.abs(ours.accel_mps2 - sumo.accel_mps2).max(axis=0)
    report = f"max|dv| per truck {d_speed}, max|dgap| {d_gap}, max|dpos| {d_pos}"
    assert np.all(d_speed <= SPEED_TOL_MPS), report
    assert np.all(d_gap <= GAP_TOL_M), report
    assert np.all(d_speed <= TIGHT_TOL), report
    assert np.all(d_gap <= TIGHT_TOL), report
    assert np.all(d_pos <= TIGHT_TOL), report
    assert np.all(d_accel <= 10 * TIGHT_TOL), report


def _assert_cacc_modes_match(spec: CorridorSpec, sumo: SumoTrace, ours: Replay) -> None:
    names = np.array(cfm.SUMO_CACC_MODE_NAMES)[ours.mode]
    reported = sumo.cacc_mode != ""
    assert reported[1:, 1:].all(), "SUMO should report a mode for every CACC follower"
    mismatch = np.argwhere(reported & (names != sumo.cacc_mode))
    assert mismatch.size == 0, f"first mode mismatch (step, truck): {mismatch[:1]}"


@pytest.fixture(scope="module")
def cacc_run() -> tuple[CorridorSpec, SumoTrace, Replay]:
    spec = BRAKE_AND_RECOVER
    return spec, run_sumo_trajectories(spec), Replay(spec)


@pytest.fixture(scope="module")
def acc_run() -> tuple[CorridorSpec, SumoTrace, Replay]:
    spec = replace(BRAKE_AND_RECOVER, car_follow_model="ACC")
    return spec, run_sumo_trajectories(spec), Replay(spec)


def test_cacc_brake_and_recover_matches_sumo(
    cacc_run: tuple[CorridorSpec, SumoTrace, Replay],
) -> None:
    spec, sumo, ours = cacc_run
    _assert_agreement(spec, sumo, ours)
    _assert_cacc_modes_match(spec, sumo, ours)
    # The scenario must actually exercise the law: several CACC modes, and a real brake.
    follower_modes = set(np.unique(ours.mode[1:, 1:]).tolist())
    assert len(follower_modes) >= 2, follower_modes
    assert {cfm.MODE_GAP, cfm.MODE_COLLISION_AVOIDANCE} <= follower_modes
    assert sumo.speed_mps[:, -1].min() < 13.0


def test_acc_brake_and_recover_matches_sumo(
    acc_run: tuple[CorridorSpec, SumoTrace, Replay],
) -> None:
    spec, sumo, ours = acc_run
    _assert_agreement(spec, sumo, ours)
    assert len(np.unique(ours.mode[1:, 1:])) >= 2
    assert sumo.speed_mps[:, -1].min() < 13.0


def test_non_cooperative_predecessor_triggers_acc_fallback() -> None:
    # Law level: the same situation with and without a cooperative predecessor.
    p = cfm.SumoCaccParams(min_gap_m=2.5, decel_mps2=4.0, emergency_decel_mps2=7.5).to_vector()
    args = (22.0, 0.0, 25.0, 22.0, 0.0)  # speed, accel, gap, pred speed, pred accel
    _, coop_mode = cfm.cacc_next_speed(p, *args, True, 25.0, 0.1, cfm.MODE_SPEED)
    v_fallback, fallback_mode = cfm.cacc_next_speed(p, *args, False, 25.0, 0.1, cfm.MODE_SPEED)
    assert coop_mode != cfm.MODE_ACC_FALLBACK
    assert fallback_mode == cfm.MODE_ACC_FALLBACK
    # The fallback is SUMO's ACC law with the CACC's ACC time gap.
    p_acc = cfm.SumoAccParams(min_gap_m=2.5, decel_mps2=4.0, emergency_decel_mps2=7.5)
    v_acc, _ = cfm.acc_next_speed(
        p_acc.to_vector(), 22.0, 0.0, 25.0, 22.0, 25.0, 0.1, cfm.MODE_SPEED
    )
    assert v_fallback == pytest.approx(v_acc, abs=1e-12)

    # Simulation level: CACC trucks behind an ACC head, against SUMO.
    spec = replace(BRAKE_AND_RECOVER, head_car_follow_model="ACC", duration_s=120.0)
    sumo, ours = run_sumo_trajectories(spec), Replay(spec)
    _assert_agreement(spec, sumo, ours)
    _assert_cacc_modes_match(spec, sumo, ours)
    assert np.all(ours.mode[1:, 1] == cfm.MODE_ACC_FALLBACK)
    assert np.all(sumo.cacc_mode[1:, 1] == "ACC")
    assert not np.any(ours.mode[1:, 2:] == cfm.MODE_ACC_FALLBACK)


def test_no_predecessor_drives_free() -> None:
    p = cfm.SumoCaccParams().to_vector()
    for gap in (np.inf, 2.0 * cfm.NO_LEADER_GAP_M):
        v, mode = cfm.cacc_next_speed(p, 20.0, 0.0, gap, 0.0, 0.0, True, 25.0, 0.1, cfm.MODE_GAP)
        assert (v, mode) == (25.0, cfm.MODE_SPEED)
    v, mode = cfm.acc_next_speed(cfm.SumoAccParams().to_vector(), 20, 0, np.inf, 0, 25, 0.1, 1)
    assert (v, mode) == (25.0, cfm.MODE_SPEED)
    # Free road: the acceleration limit binds.
    assert cfm.sumo_finalize_speed(20.0, 25.0, 1.0, 4.0, 7.5, 25.0, 0.1) == pytest.approx(20.1)


def test_parameter_vectors_follow_the_index_constants() -> None:
    acc = cfm.SumoAccParams(time_gap_s=1.2, min_gap_m=3.0)
    va = acc.to_vector()
    assert va.dtype == np.float64 and va.shape == (cfm.ACC_VECTOR_SIZE,)
    assert va[cfm.ACC_TIME_GAP] == 1.2 and va[cfm.ACC_MIN_GAP] == 3.0
    assert va[cfm.ACC_SPEED_CONTROL_GAIN] == -0.4
    assert va[cfm.ACC_GAP_CONTROL_GAP] == 100.0 and va[cfm.ACC_SPEED_CONTROL_GAP] == 120.0

    cacc = cfm.SumoCaccParams(time_gap_s=0.6, acc_fallback_time_gap_s=1.4, min_gap_m=3.0)
    vc = cacc.to_vector()
    assert vc.dtype == np.float64 and vc.shape == (cfm.CACC_VECTOR_SIZE,)
    assert vc[cfm.CACC_TIME_GAP] == 0.6
    assert vc[cfm.CACC_SPEED_CONTROL_MIN_GAP] == 1.66
    assert vc[cfm.CACC_EMERGENCY_THRESHOLD] == 2.0
    # The ACC fallback block runs with headwayTimeACC and the CACC vehicle's own limits.
    assert vc[cfm.CACC_ACC_OFFSET + cfm.ACC_TIME_GAP] == 1.4
    assert vc[cfm.CACC_ACC_OFFSET + cfm.ACC_MIN_GAP] == 3.0
    assert len(cfm.MODE_NAMES) == len(cfm.SUMO_CACC_MODE_NAMES) == cfm.MODE_ACC_FALLBACK + 1
