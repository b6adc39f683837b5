"""A specialised step for the common case: a uniform CACC fleet on an ideal, clear road.

``kernel.run_steps`` handles every feature a scenario may switch on: beacon latency, loss
and outages, sensor delays, driver noise, actuator lag, traction limits, hazards and RSUs,
mixed controller models.  Each costs a check, a branch or a memory access per truck and step,
even when it is off.  When a scenario uses none of them — every truck on SUMO's CACC law
with the same parameters, beacons every step without latency or random loss, no hazards —
the step reduces to: gather the predecessor's state, apply the law, integrate, account.

``run_steps_cacc`` is that step.  It is a drop-in replacement for ``kernel.run_steps`` on
such a scenario, with the same state arrays and the same results to the last bit
(``tests/test_engine.py`` checks this).  What it keeps:

* the beacon range: a predecessor beyond ``CH_RANGE_M`` is not heard, and the last beacon
  stays fresh for ``CH_STALE_AFTER_S``, then the law falls back to ACC, as in the general
  step;
* collisions, minimum gap and time-to-collision, hard brakes, fallback steps;
* energy with the platoon drag multiplier.

What it drops, because eligibility (``eligible``) rules it out: the history ring buffer
(no reader is delayed), the random draws (no loss), hazard effects, traction limits and
actuator lag, the emergency-braking trigger, the Gilbert–Elliott state.

Speed comes from three things: the parameters are scalars hoisted out of the loops (the
fleet is uniform), trucks are processed in blocks of ``CHUNK`` inside one compiled call
(no per-truck call boundary, so no reference counting per truck), and every helper inlines.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from convoy.sim.kernel import (
    ENV_AMBIENT_C,
    ENV_DT_S,
    ENV_GRADE,
    ENV_HARD_BRAKE_MPS2,
    ENV_PROFILE_LEAD_S,
    ENV_SPEED_LIMIT_MPS,
    HAZARD_DECEL_FRACTION,
    account_gap,
    profile_speed,
)
from convoy.sim.state import (
    RX_ACCEL_MPS2,
    RX_HAZARD,
    RX_POS_M,
    RX_SPEED_MPS,
    RX_STAMP_S,
    RX_U_MPS2,
    TP_ACTUATOR_LAG_S,
    TP_CD_A_M2,
    TP_CRR,
    TP_EMERGENCY_BRAKING,
    TP_EMERGENCY_DECEL_MPS2,
    TP_LENGTH_M,
    TP_LIMIT_TRACTION,
    TP_MASS_KG,
    TP_MAX_ACCEL_MPS2,
    TP_MAX_DECEL_MPS2,
    TP_MAX_SPEED_MPS,
    TP_NOISE_MPS2,
    TP_SENSOR_DELAY_STEPS,
)
from convoy.vehicle.aero import drag_multiplier_row, drag_row
from convoy.vehicle.channel import (
    CH_LATENCY_STEPS,
    CH_LOSS_GOOD,
    CH_P_GOOD_TO_BAD,
    CH_PERIOD_STEPS,
    CH_RANGE_M,
    CH_STALE_AFTER_S,
)
from convoy.vehicle.controllers import (
    MODE_ACC_FALLBACK,
    MODE_COLLIDED,
    MODE_HEAD,
    MODEL_CACC_SUMO,
)
from convoy.vehicle.energy import KIND_DIESEL, KIND_ELECTRIC, PT_KIND, step_energy_kwh_unchecked
from convoy.vehicle.sumo_cfm import (
    cacc_cap,
    cacc_control_speed,
    cacc_mode,
    cacc_next_speed,
    sumo_finalize_speed,
    sumo_set_speed,
)

# Trucks per block of the parallel loop: large enough that the per-block call is noise,
# small enough that two threads share the work of a 2,000-truck fleet evenly.
CHUNK = 512


def eligible(
    model: np.ndarray,
    leader: np.ndarray,
    phys: np.ndarray,
    ctrl: np.ndarray,
    acc: np.ndarray,
    powertrain: np.ndarray,
    channel: np.ndarray,
    outages: np.ndarray,
    hist: np.ndarray,
    extra_tables: tuple[np.ndarray, ...],
) -> bool:
    """Whether ``run_steps_cacc`` computes exactly what ``kernel.run_steps`` would.

    Args:
        model, leader, phys, ctrl, acc, powertrain: the ``TruckTable`` arrays.
        channel, outages: the channel vector and outage windows.
        hist: the state's history ring buffer (one slot when nothing is delayed).
        extra_tables: world tables the fast step does not handle (hazards, RSUs, …); each
            must have no rows.
    """
    if model.shape[0] == 0 or not np.all(model == MODEL_CACC_SUMO):
        return False
    # one lane, in order: the truck ahead is the row above (pass 1 reads it as a shifted slice)
    if not np.array_equal(leader, np.arange(leader.shape[0]) - 1):
        return False
    if any(t.shape[0] > 0 for t in extra_tables) or outages.shape[0] > 0 or hist.shape[0] != 1:
        return False
    if (
        channel[CH_LATENCY_STEPS] != 0
        or channel[CH_PERIOD_STEPS] != 1
        or channel[CH_LOSS_GOOD] > 0.0
        or channel[CH_P_GOOD_TO_BAD] > 0.0
    ):
        return False
    off = (
        TP_ACTUATOR_LAG_S,
        TP_SENSOR_DELAY_STEPS,
        TP_LIMIT_TRACTION,
        TP_NOISE_MPS2,
        TP_EMERGENCY_BRAKING,
    )
    if np.any(phys[:, list(off)] != 0.0):
        return False
    if not np.all(np.isin(powertrain[:, PT_KIND], (KIND_ELECTRIC, KIND_DIESEL))):
        return False
    return all(bool(np.all(a == a[0])) for a in (phys, ctrl, acc, powertrain))


# What pass 3 found out about a truck (``kind`` scratch row).
_PLAIN = 0  # a follower that heard its predecessor this step: pass 2's law stands
_SPECIAL_SPEED = 1  # a head, or a follower on older data: pass 3 set the final speed
_SPECIAL_ACCEL = 2  # collided: pass 3 set speed, acceleration and command


@njit(cache=True, error_model="numpy")
def _sense_block(
    length_m: float,
    range_m: float,
    t_s: float,
    hazard_accel_mps2: float,
    pos: np.ndarray,
    speed: np.ndarray,
    pos_ahead: np.ndarray,
    speed_ahead: np.ndarray,
    accel_ahead: np.ndarray,
    u_ahead: np.ndarray,
    follows: np.ndarray,
    min_gap: np.ndarray,
    min_ttc: np.ndarray,
    rx: np.ndarray,
    gaps: np.ndarray,
    pred_v: np.ndarray,
    drag_gaps: np.ndarray,
    kind: np.ndarray,
) -> int:
    """Pass 1 for a block of trucks with the truck ahead one row up (a single lane).

    The gap and speed of the truck ahead, the minimum gap and time-to-collision, the beacon
    of a follower's predecessor when in range (``rx``: the block's ``(RX_SIZE, m)`` slice),
    and whether pass 2's law applies as is (``kind``). Every write is a select, so LLVM
    vectorises the loop. Returns the number of overlapping trucks, for the caller to record.
    In this regime no truck brakes in MODE_EMERGENCY, so a beacon's hazard flag is its
    deceleration alone.
    """
    contacts = 0
    for k in range(pos.shape[0]):
        x = pos[k]
        v = speed[k]
        xj = pos_ahead[k]
        pv = speed_ahead[k]
        aj = accel_ahead[k]
        gap = xj - length_m - x
        closing = v - pv
        min_gap[k] = gap if gap < min_gap[k] else min_gap[k]
        ttc = max(gap, 0.0) / closing
        min_ttc[k] = ttc if closing > 1e-9 and ttc < min_ttc[k] else min_ttc[k]
        contacts += 1 if gap < 0.0 else 0
        heard = (follows[k] != 0) & (abs(xj - x) <= range_m)
        rx[RX_POS_M, k] = xj if heard else rx[RX_POS_M, k]
        rx[RX_SPEED_MPS, k] = pv if heard else rx[RX_SPEED_MPS, k]
        rx[RX_ACCEL_MPS2, k] = aj if heard else rx[RX_ACCEL_MPS2, k]
        rx[RX_U_MPS2, k] = u_ahead[k] if heard else rx[RX_U_MPS2, k]
        rx[RX_STAMP_S, k] = t_s if heard else rx[RX_STAMP_S, k]
        hazard = 1.0 if aj <= hazard_accel_mps2 else 0.0
        rx[RX_HAZARD, k] = hazard if heard else rx[RX_HAZARD, k]
        gaps[k] = gap
        pred_v[k] = pv
        drag_gaps[k] = gap
        kind[k] = _PLAIN if heard else _SPECIAL_SPEED
    return contacts


@njit(cache=True, error_model="numpy")
def _law_block(
    ctrl0: np.ndarray,
    v_max: float,
    dt: float,
    speed: np.ndarray,
    accel: np.ndarray,
    gaps: np.ndarray,
    pred_v: np.ndarray,
    prev_mode: np.ndarray,
    v_law: np.ndarray,
    law_mode: np.ndarray,
) -> None:
    """Pass 2: ``cacc_next_speed`` behind a CACC predecessor, in its three parts, for a block.

    All arrays are the block's 1-D slices, indexed alike, so LLVM vectorises the loop.
    """
    for k in range(speed.shape[0]):
        v = speed[k]
        g = gaps[k]
        pv = pred_v[k]
        mk = cacc_mode(ctrl0, v, g, True, v_max, prev_mode[k])
        v_ctl = cacc_control_speed(ctrl0, v, accel[k], g, pv, v_max, dt, mk, 0.0)
        v_law[k] = cacc_cap(ctrl0, v, g, pv, v_max, dt, v_ctl)
        law_mode[k] = mk


@njit(cache=True, error_model="numpy")
def _integrate_block(
    phys0: np.ndarray,
    pt0: np.ndarray,
    env: np.ndarray,
    v_max: float,
    pos: np.ndarray,
    speed: np.ndarray,
    kind: np.ndarray,
    v_law: np.ndarray,
    v_fix: np.ndarray,
    a_fix: np.ndarray,
    u_fix: np.ndarray,
    drag_rows: np.ndarray,
    drag_gaps: np.ndarray,
    energy: np.ndarray,
    pos_new: np.ndarray,
    speed_new: np.ndarray,
    accel_new: np.ndarray,
    u_new: np.ndarray,
) -> None:
    """Pass 4: finalise the speed, integrate, account energy, for a block (1-D slices)."""
    dt = env[ENV_DT_S]
    a_max = phys0[TP_MAX_ACCEL_MPS2]
    b_max = phys0[TP_MAX_DECEL_MPS2]
    b_emg = phys0[TP_EMERGENCY_DECEL_MPS2]
    mass = phys0[TP_MASS_KG]
    cd_a = phys0[TP_CD_A_M2]
    crr = phys0[TP_CRR]
    grade = env[ENV_GRADE]
    ambient = env[ENV_AMBIENT_C]
    for k in range(speed.shape[0]):
        v = speed[k]
        kk = kind[k]
        v_fin = sumo_finalize_speed(v, v_law[k], a_max, b_max, b_emg, v_max, dt)
        v_fin = v_fin if kk == _PLAIN else v_fix[k]
        u_cmd = (v_fin - v) / dt
        a_new = u_cmd
        if kk == _SPECIAL_ACCEL:
            u_cmd = u_fix[k]
            a_new = a_fix[k]
        stopped = v_fin < 0.0
        v_new = 0.0 if stopped else v_fin
        a_new = -v / dt if stopped else a_new
        cd_frac = drag_multiplier_row(drag_rows[k], drag_gaps[k])
        energy[k] += step_energy_kwh_unchecked(
            pt0, mass, 0.5 * (v + v_new), a_new, grade, cd_frac, cd_a, crr, ambient, dt
        )
        pos_new[k] = pos[k] + v_new * dt
        speed_new[k] = v_new
        accel_new[k] = a_new
        u_new[k] = u_cmd


@njit(cache=True, error_model="numpy")
def _cacc_range(
    lo: int,
    hi: int,
    s: int,
    head_target: float,
    leader: np.ndarray,
    follower: np.ndarray,
    ppos: np.ndarray,
    drag_rows: np.ndarray,
    follows: np.ndarray,
    phys0: np.ndarray,
    ctrl0: np.ndarray,
    pt0: np.ndarray,
    ch: np.ndarray,
    env: np.ndarray,
    pos: np.ndarray,
    speed: np.ndarray,
    accel: np.ndarray,
    u: np.ndarray,
    mode: np.ndarray,
    ctrl_mode: np.ndarray,
    energy: np.ndarray,
    rx_pred: np.ndarray,
    collided_at: np.ndarray,
    collision_speed: np.ndarray,
    min_gap: np.ndarray,
    min_ttc: np.ndarray,
    hard_brakes: np.ndarray,
    fallback_steps: np.ndarray,
    scratch: np.ndarray,
    iscratch: np.ndarray,
) -> None:
    """One step for trucks ``lo..hi-1`` in four passes over the block.

    1. sense and receive (scalar: a gather from the predecessor, rare collision writes);
    2. the CACC law for every truck, as if it had just heard its predecessor — a loop over
       contiguous arrays without jumps, which LLVM vectorises;
    3. the trucks that assumption does not fit (heads, stale beacons, collisions) get their
       final speed; modes and counters (scalar, mostly a check);
    4. finalise, integrate, energy for every truck (vectorised);
    5. count hard brakes (scalar, a compare).
    """
    dt = env[ENV_DT_S]
    t = s * dt
    cur = s & 1
    nxt = 1 - cur
    length = phys0[TP_LENGTH_M]
    a_max = phys0[TP_MAX_ACCEL_MPS2]
    b_max = phys0[TP_MAX_DECEL_MPS2]
    b_emg = phys0[TP_EMERGENCY_DECEL_MPS2]
    v_max = min(phys0[TP_MAX_SPEED_MPS], env[ENV_SPEED_LIMIT_MPS])
    hard = -env[ENV_HARD_BRAKE_MPS2]
    range_m = ch[CH_RANGE_M]
    stale_s = ch[CH_STALE_AFTER_S]
    hazard_a = -HAZARD_DECEL_FRACTION * b_emg
    gaps = scratch[0]
    pred_v = scratch[1]
    drag_gaps = scratch[2]
    v_law = scratch[3]
    v_fix = scratch[4]
    a_fix = scratch[5]
    u_fix = scratch[6]
    prev_mode = iscratch[0]
    law_mode = iscratch[1]
    kind = iscratch[2]

    # 1. sense and receive: truck 0 has no one ahead; the rest of the block vectorised
    first = lo
    if lo == 0:
        gaps[0] = np.inf
        pred_v[0] = speed[cur, 0]
        kind[0] = _SPECIAL_SPEED
        first = 1
    contacts = _sense_block(
        length,
        range_m,
        t,
        hazard_a,
        pos[cur, first:hi],
        speed[cur, first:hi],
        pos[cur, first - 1 : hi - 1],
        speed[cur, first - 1 : hi - 1],
        accel[cur, first - 1 : hi - 1],
        u[cur, first - 1 : hi - 1],
        follows[first:hi],
        min_gap[first:hi],
        min_ttc[first:hi],
        rx_pred[:, first:hi],
        gaps[first:hi],
        pred_v[first:hi],
        drag_gaps[first:hi],
        kind[first:hi],
    )
    if contacts > 0:
        # rare: record the contacts (the minima are already up to date)
        for i in range(first, hi):
            if gaps[i] < 0.0:
                v = speed[cur, i]
                account_gap(
                    i, i - 1, gaps[i], v - pred_v[i], t, min_gap, min_ttc, collided_at,
                    collision_speed,
                )  # fmt: skip
    for i in range(lo, hi):
        prev_mode[i] = ctrl_mode[i]

    # 2. the law, vectorised
    _law_block(
        ctrl0,
        v_max,
        dt,
        speed[cur, lo:hi],
        accel[cur, lo:hi],
        gaps[lo:hi],
        pred_v[lo:hi],
        prev_mode[lo:hi],
        v_law[lo:hi],
        law_mode[lo:hi],
    )

    # 3. the exceptions; modes and counters
    for i in range(lo, hi):
        if not math.isnan(collided_at[i]):
            v = speed[cur, i]
            u_cmd = min(max(-b_emg, -b_emg), a_max)
            if v + u_cmd * dt > v_max:
                u_cmd = (v_max - v) / dt
            a_fix[i] = max(u_cmd, -b_emg)
            v_fix[i] = v + a_fix[i] * dt
            u_fix[i] = u_cmd
            kind[i] = _SPECIAL_ACCEL
            mode[i] = MODE_COLLIDED
        elif ppos[i] == 0:
            v = speed[cur, i]
            f = follower[i]
            drag_gaps[i] = pos[cur, i] - length - pos[cur, f] if f >= 0 else np.inf
            target = head_target if head_target >= 0.0 else v
            if leader[i] >= 0:
                ctrl_mode[i] = law_mode[i]
                target = min(target, v_law[i])
            v_fix[i] = sumo_set_speed(v, target, a_max, b_max, dt, v_max)
            kind[i] = _SPECIAL_SPEED
            mode[i] = MODE_HEAD
        elif kind[i] == _PLAIN:
            ctrl_mode[i] = law_mode[i]
            mode[i] = law_mode[i]
        else:
            v = speed[cur, i]
            a = accel[cur, i]
            if t - rx_pred[RX_STAMP_S, i] <= stale_s:
                # fresh, but from an earlier beacon: the law with what was heard then
                v_des, cm = cacc_next_speed(
                    ctrl0,
                    v,
                    a,
                    gaps[i],
                    rx_pred[RX_SPEED_MPS, i],
                    rx_pred[RX_ACCEL_MPS2, i],
                    True,
                    v_max,
                    dt,
                    ctrl_mode[i],
                )
                mode[i] = cm
            else:
                v_des, cm = cacc_next_speed(
                    ctrl0, v, a, gaps[i], pred_v[i], 0.0, False, v_max, dt, ctrl_mode[i]
                )
                mode[i] = MODE_ACC_FALLBACK
                fallback_steps[i] += 1
            ctrl_mode[i] = cm
            v_fix[i] = sumo_finalize_speed(v, v_des, a_max, b_max, b_emg, v_max, dt)

    # 4. finalise, integrate, account, vectorised
    _integrate_block(
        phys0,
        pt0,
        env,
        v_max,
        pos[cur, lo:hi],
        speed[cur, lo:hi],
        kind[lo:hi],
        v_law[lo:hi],
        v_fix[lo:hi],
        a_fix[lo:hi],
        u_fix[lo:hi],
        drag_rows[lo:hi],
        drag_gaps[lo:hi],
        energy[lo:hi],
        pos[nxt, lo:hi],
        speed[nxt, lo:hi],
        accel[nxt, lo:hi],
        u[nxt, lo:hi],
    )

    # 5. hard brakes (an integer count: kept out of the vectorised pass 4, which it would stop)
    for i in range(lo, hi):
        if accel[nxt, i] < hard and accel[cur, i] >= hard:
            hard_brakes[i] += 1


@njit(cache=True, parallel=True)
def run_steps_cacc(
    n_steps: int,
    rec_every: int,
    rec_pos: np.ndarray,
    rec_speed: np.ndarray,
    rec_accel: np.ndarray,
    rec_mode: np.ndarray,
    rec_energy: np.ndarray,
    rec_odd: np.ndarray,
    leader: np.ndarray,
    follower: np.ndarray,
    psize: np.ndarray,
    ppos: np.ndarray,
    phys: np.ndarray,
    ctrl: np.ndarray,
    accp: np.ndarray,
    pt: np.ndarray,
    ch: np.ndarray,
    prof_t: np.ndarray,
    prof_v: np.ndarray,
    env: np.ndarray,
    pos: np.ndarray,
    speed: np.ndarray,
    accel: np.ndarray,
    u: np.ndarray,
    mode: np.ndarray,
    ctrl_mode: np.ndarray,
    energy: np.ndarray,
    rx_pred: np.ndarray,
    collided_at: np.ndarray,
    collision_speed: np.ndarray,
    min_gap: np.ndarray,
    min_ttc: np.ndarray,
    hard_brakes: np.ndarray,
    fallback_steps: np.ndarray,
    odd_flags: np.ndarray,
    step: np.ndarray,
) -> int:
    """``kernel.run_steps`` for an ``eligible`` scenario: same arrays, same results.

    The tables (``phys``, ``ctrl``, ``accp``, ``pt``) are uniform, so only row 0 is read.
    """
    n = leader.shape[0]
    s0 = step[0]
    rec = 0
    dt = env[ENV_DT_S]
    n_chunks = (n + CHUNK - 1) // CHUNK
    phys0 = phys[0]
    ctrl0 = ctrl[0]
    pt0 = pt[0]
    scratch = np.empty((7, n))
    iscratch = np.empty((3, n), np.int64)
    drag_rows = np.empty(n, np.int64)
    follows = np.empty(n, np.int64)
    for i in range(n):
        drag_rows[i] = drag_row(psize[i], ppos[i])
        follows[i] = 1 if ppos[i] != 0 else 0
    for s in range(s0, s0 + n_steps):
        target = profile_speed(s * dt + env[ENV_PROFILE_LEAD_S], prof_t, prof_v)
        for c in prange(n_chunks):
            _cacc_range(
                c * CHUNK,
                min(n, (c + 1) * CHUNK),
                s,
                target,
                leader,
                follower,
                ppos,
                drag_rows,
                follows,
                phys0,
                ctrl0,
                pt0,
                ch,
                env,
                pos,
                speed,
                accel,
                u,
                mode,
                ctrl_mode,
                energy,
                rx_pred,
                collided_at,
                collision_speed,
                min_gap,
                min_ttc,
                hard_brakes,
                fallback_steps,
                scratch,
                iscratch,
            )
        if rec_every > 0 and (s + 1 - s0) % rec_every == 0:
            nxt = (s + 1) & 1
            for i in prange(n):
                rec_pos[rec, i] = pos[nxt, i]
                rec_speed[rec, i] = speed[nxt, i]
                rec_accel[rec, i] = accel[nxt, i]
                rec_mode[rec, i] = mode[i]
                rec_energy[rec, i] = energy[i]
                rec_odd[rec, i] = odd_flags[i]
            rec += 1
    step[0] = s0 + n_steps
    return rec
