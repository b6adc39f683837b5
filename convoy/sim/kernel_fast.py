"""A specialised step for the common case: a uniform CACC fleet on an ideal, clear road.

``kernel.run_steps`` handles every feature a scenario may switch on: beacon latency, loss
and outages, sensor delays, driver noise, actuator lag, traction limits, hazards and RSUs,
mixed controller models.  Each costs a check, a branch or a memory access per truck and step,
even when it is off.  When a scenario uses none of them — every truck on SUMO's CACC law
with the same parameters in one lane, beacons every step without latency or random loss,
no hazards or signals — the step reduces to: read the truck ahead, apply the law,
integrate, account.

``run_steps_cacc`` is that step.  It is a drop-in replacement for ``kernel.run_steps`` on
such a scenario, with the same state arrays and the same results to the last bit
(``tests/test_kernel_fast.py`` checks this).  What it keeps:

* the beacon range: a predecessor beyond ``CH_RANGE_M`` is not heard, and the last beacon
  stays fresh for ``CH_STALE_AFTER_S``, then the law falls back to ACC, as in the general
  step;
* collisions, minimum gap and time-to-collision, hard brakes, fallback steps;
* energy with the platoon drag multiplier.

What it drops, because eligibility (``eligible``) rules it out: the history ring buffer
(no reader is delayed), the random draws (no loss), hazard effects, traction limits and
actuator lag, the emergency-braking trigger, the Gilbert–Elliott state.

Speed comes from vectorisation. Trucks run in a few large blocks (one or a few per thread,
``block_count``), in passes over the block's trucks that LLVM turns into SIMD code, four
trucks per instruction with AVX2: ``_sense_block`` (gaps, safety minima, beacons) and
``_step_block`` (the law, ``setSpeed`` or finalising, integration, energy). Those passes
select rather than branch, read the truck ahead as the row above (index ``k - 1``), keep the
mode rows in int64 working copies, and stay under the number of written arrays past which
LLVM gives up. Only the first and last truck of the fleet, stale beacons and collisions
take the scalar ``_truck_step``. See docs/benchmarks.md for what each of these was worth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange
from numba.np.unsafe.ndarray import to_fixed_tuple as _to_fixed_tuple

from convoy.sim.jit import NO_REFCOUNTS, compiled_variant
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
    store_beacon,
)
from convoy.sim.state import (
    RX_ACCEL_MPS2,
    RX_SPEED_MPS,
    RX_STAMP_S,
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
from convoy.vehicle.energy import (
    KIND_DIESEL,
    KIND_ELECTRIC,
    PT_KIND,
    PT_VECTOR_LEN,
    step_energy_kwh_unchecked,
)
from convoy.vehicle.sumo_cfm import (
    CACC_VECTOR_SIZE,
    NO_LEADER_GAP_M,
    cacc_cap_is_off,
    cacc_control_speed,
    cacc_mode,
    cacc_next_speed,
    sumo_finalize_speed,
    sumo_set_speed,
)

# Trucks per block of the parallel loop, at least: each block costs its passes' set-up (the
# vector loops' alias checks and constants, the scalar remainders), about half a microsecond
# per pass, so the blocks are as large as the threads allow (``block_count``)...
CHUNK = 512
# ...and at most this, so that a block's arrays stay in a core's own cache.
MAX_CHUNK = 16384

# How the block functions are compiled: without reference counts (``jit.NO_REFCOUNTS``;
# some sixty atomic adds and subtracts per block and step otherwise). Their loops count in
# unsigned integers (``np.uint64``): Numba wraps a negative index, and that select on every
# index stops LLVM from vectorising a loop that does not start at 0.
_BLOCK: dict[str, Any] = {"cache": True, "error_model": "numpy", **NO_REFCOUNTS}

# Numba's intrinsic: an array's first ``n`` values as a tuple (``n`` known at compile time);
# typed Any, as mypy sees the intrinsic's own signature rather than the call's
to_fixed_tuple: Any = _to_fixed_tuple


@njit(cache=True)
def block_count(n: int, threads: int) -> int:
    """How many blocks ``n`` trucks run in: as few as give each thread the same number,
    none larger than ``MAX_CHUNK`` and (where there are enough trucks) none smaller than
    ``CHUNK``."""
    per_thread = (n + threads * MAX_CHUNK - 1) // (threads * MAX_CHUNK)
    return max(1, min(threads * per_thread, n // CHUNK))


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


@njit(**_BLOCK)
def _count_hard_brakes(
    lo: int,
    hi: int,
    hard_mps2: float,
    accel_new: np.ndarray,
    accel_old: np.ndarray,
    count: np.ndarray,
) -> None:
    """Count the steps of trucks ``lo..hi-1`` that start a hard brake (the int64 working
    copy, vectorised)."""
    for k in range(np.uint64(lo), np.uint64(hi)):
        count[k] += 1 if accel_new[k] < hard_mps2 and accel_old[k] >= hard_mps2 else 0


@njit(**_BLOCK)
def _sense_block(
    first: int,
    last: int,
    length_m: float,
    pos: np.ndarray,
    speed: np.ndarray,
    min_gap: np.ndarray,
    min_ttc: np.ndarray,
) -> None:
    """Sense for trucks ``first..last-1`` (each with a truck ahead, the row above): the
    minimum gap and time-to-collision. Selects only, so LLVM vectorises it; kept apart from
    ``_step_block`` because LLVM gives up on a loop that writes too many arrays. A truck that
    overlaps the truck ahead is an exception of ``_step_block``, and ``_truck_step`` records
    the contact.

    Receiving writes nothing here: a follower that hears its predecessor drives on what the
    predecessor is now, and ``receive_last_step`` stores the beacon once, after a call's last
    step (see ``_step_block`` for the followers near the edge of the radio's range).
    """
    one = np.uint64(1)
    for k in range(np.uint64(first), np.uint64(last)):
        gap = pos[k - one] - length_m - pos[k]
        closing = speed[k] - speed[k - one]
        min_gap[k] = gap if gap < min_gap[k] else min_gap[k]
        ttc = max(gap, 0.0) / closing
        min_ttc[k] = ttc if closing > 1e-9 and ttc < min_ttc[k] else min_ttc[k]


@njit(**_BLOCK)
def _step_block(
    first: int,
    last: int,
    head_target: float,
    ctrl0: np.ndarray,
    phys0: np.ndarray,
    pt0: np.ndarray,
    ch: np.ndarray,
    env: np.ndarray,
    pos: np.ndarray,
    speed: np.ndarray,
    accel: np.ndarray,
    follows: np.ndarray,
    drag_rows: np.ndarray,
    collided_at: np.ndarray,
    ctrl_mode: np.ndarray,
    mode: np.ndarray,
    energy: np.ndarray,
    pos_new: np.ndarray,
    speed_new: np.ndarray,
    accel_new: np.ndarray,
    u_new: np.ndarray,
    exceptions: np.ndarray,
) -> int:
    """One step for trucks ``first..last-1``, each with a truck ahead and one behind in the
    lane (the rows above and below).

    The arrays are whole 1-D rows (this step's, the next step's, per truck), indexed by
    truck: slices of a block would each cost a reference count. After ``_sense_block``, the
    step of a head, and of a follower that heard its predecessor this step, is complete
    here: SUMO's CACC law (``cacc_next_speed`` in its three parts), finalise or
    ``setSpeed``, integrate, energy.
    Every branch is computed and one selected, so LLVM vectorises the loop. A follower on
    older beacons, a collided truck, a truck in contact and one whose safe-speed cap might
    bind (``sumo_cfm.cacc_cap_is_off`` cannot rule it out) are flagged in ``exceptions``;
    for them this pass writes no energy and no mode, and the caller redoes their step
    (``_truck_step``). Returns how many.
    """
    n_exceptions = 0
    # the law's and the powertrain's parameters as tuples of values: LLVM cannot tell that
    # the loop's stores leave an array of them alone, so it would load every one, and redo
    # what is derived from them, for every truck
    ctrl_t = to_fixed_tuple(ctrl0, CACC_VECTOR_SIZE)
    pt_t = to_fixed_tuple(pt0, PT_VECTOR_LEN)
    dt = env[ENV_DT_S]
    length = phys0[TP_LENGTH_M]
    a_max = phys0[TP_MAX_ACCEL_MPS2]
    b_max = phys0[TP_MAX_DECEL_MPS2]
    b_emg = phys0[TP_EMERGENCY_DECEL_MPS2]
    v_max = min(phys0[TP_MAX_SPEED_MPS], env[ENV_SPEED_LIMIT_MPS])
    mass = phys0[TP_MASS_KG]
    cd_a = phys0[TP_CD_A_M2]
    crr = phys0[TP_CRR]
    grade = env[ENV_GRADE]
    ambient = env[ENV_AMBIENT_C]
    range_m = ch[CH_RANGE_M]
    reach_dv = (a_max + b_emg) * dt
    per_dt = 1.0 / dt
    one = np.uint64(1)
    for k in range(np.uint64(first), np.uint64(last)):
        x = pos[k]
        v = speed[k]
        a = accel[k]
        xj = pos[k - one]
        pv = speed[k - one]
        gap = xj - length - x
        is_follower = follows[k] != 0
        heard = is_follower & (abs(xj - x) <= range_m)
        # a follower whose predecessor could be out of range by the next step keeps its
        # beacon now (as an exception, through _truck_step): the distance changes by at most
        # (|Δv| + (accel + emergency decel)·dt)·dt in a step, so every follower that goes
        # unheard has its last beacon stored, and no other needs one before the call ends
        reach_m = range_m - (abs(pv - v) + reach_dv) * dt - 1.0
        near_edge = heard & (abs(xj - x) > reach_m)
        # control: the law behind the truck ahead; a head caps its profile with it
        mk = cacc_mode(ctrl_t, v, gap, True, v_max, ctrl_mode[k])
        v_ctl = cacc_control_speed(ctrl_t, v, a, gap, pv, v_max, dt, mk, 0.0)
        # SUMO's safe-speed cap, only where it might bind (those trucks are exceptions,
        # redone exactly by _truck_step); a truck beyond the law's range drives free
        free = not gap < NO_LEADER_GAP_M
        cap_off = cacc_cap_is_off(ctrl_t, gap, pv, dt, v_ctl)
        v_law = v_max if free else v_ctl
        target = min(head_target if head_target >= 0.0 else v, v_law)
        v_head = sumo_set_speed(v, target, a_max, b_max, dt, v_max)
        v_follow = sumo_finalize_speed(v, v_law, a_max, b_max, b_emg, v_max, dt)
        v_fin = v_follow if is_follower else v_head
        # actuate and integrate as SUMO does (both speed functions return a speed >= 0, so
        # the general step's clamp to a stop is idle here, and the acceleration is the command)
        v_new = v_fin
        a_new = (v_fin - v) * per_dt  # sumo_cfm's step 5
        u_cmd = a_new
        # account: energy with the drag of the own gap (a head: the gap behind it)
        drag_gap = gap if is_follower else x - length - pos[k + one]
        cd_frac = drag_multiplier_row(drag_rows[k], drag_gap)
        e_kwh = step_energy_kwh_unchecked(
            pt_t, mass, 0.5 * (v + v_new), a_new, grade, cd_frac, cd_a, crr, ambient, dt
        )
        collided = collided_at[k] == collided_at[k]  # not NaN (a time is set), without a call
        exception = (
            (is_follower & (not heard))
            | near_edge
            | collided
            | (gap < 0.0)
            | (not (cap_off | free))
        )
        energy[k] += 0.0 if exception else e_kwh
        pos_new[k] = x + v_new * dt
        speed_new[k] = v_new
        accel_new[k] = a_new
        u_new[k] = u_cmd
        ctrl_mode[k] = ctrl_mode[k] if exception else mk
        mode[k] = mode[k] if exception else (mk if is_follower else MODE_HEAD)
        exceptions[k] = 1 if exception else 0
        n_exceptions += 1 if exception else 0
    return n_exceptions


@njit(**_BLOCK)
def _truck_step(
    i: int,
    s: int,
    head_target: float,
    follower: np.ndarray,
    follows: np.ndarray,
    drag_rows: np.ndarray,
    phys0: np.ndarray,
    ctrl0: np.ndarray,
    pt0: np.ndarray,
    ch: np.ndarray,
    env: np.ndarray,
    pos_now: np.ndarray,
    speed_now: np.ndarray,
    accel_now: np.ndarray,
    u_now: np.ndarray,
    pos_next: np.ndarray,
    speed_next: np.ndarray,
    accel_next: np.ndarray,
    u_next: np.ndarray,
    mode: np.ndarray,
    ctrl_mode: np.ndarray,
    energy: np.ndarray,
    rx_pred: np.ndarray,
    collided_at: np.ndarray,
    collision_speed: np.ndarray,
    min_gap: np.ndarray,
    min_ttc: np.ndarray,
    fallback_steps: np.ndarray,
) -> None:
    """The whole step of truck ``i``, scalar: the first and last truck of the fleet (no one
    ahead, no one behind), and the exceptions of ``_step_block``. Recording a contact and the
    receive writes repeat ``_step_block``'s with the same values, so running both is exact.
    """
    dt = env[ENV_DT_S]
    t = s * dt
    length = phys0[TP_LENGTH_M]
    a_max = phys0[TP_MAX_ACCEL_MPS2]
    b_max = phys0[TP_MAX_DECEL_MPS2]
    b_emg = phys0[TP_EMERGENCY_DECEL_MPS2]
    v_max = min(phys0[TP_MAX_SPEED_MPS], env[ENV_SPEED_LIMIT_MPS])
    x = pos_now[i]
    v = speed_now[i]
    a = accel_now[i]
    gap = np.inf
    pv = v
    if i > 0:
        j = i - 1
        xj = pos_now[j]
        pv = speed_now[j]
        gap = xj - length - x
        account_gap(i, j, gap, v - pv, t, min_gap, min_ttc, collided_at, collision_speed)
        if follows[i] != 0 and abs(xj - x) <= ch[CH_RANGE_M]:
            aj = accel_now[j]
            hazard = aj <= -HAZARD_DECEL_FRACTION * b_emg
            store_beacon(rx_pred, i, xj, pv, aj, u_now[j], t, hazard)
    if not math.isnan(collided_at[i]):
        # as the general step does for SUMO's laws: a negative speed bound, so the truck
        # brakes as hard as it may (a head through setSpeed, a follower through finalizeSpeed)
        mode[i] = MODE_COLLIDED
        if follows[i] == 0:
            v_fin = sumo_set_speed(v, -1.0, a_max, b_max, dt, v_max)
        else:
            v_fin = sumo_finalize_speed(v, -1.0, a_max, b_max, b_emg, v_max, dt)
    elif follows[i] == 0:
        target = head_target if head_target >= 0.0 else v
        if i > 0:
            v_law, cm = cacc_next_speed(ctrl0, v, a, gap, pv, 0.0, True, v_max, dt, ctrl_mode[i])
            ctrl_mode[i] = cm
            target = min(target, v_law)
        v_fin = sumo_set_speed(v, target, a_max, b_max, dt, v_max)
        mode[i] = MODE_HEAD
    else:
        if t - rx_pred[RX_STAMP_S, i] <= ch[CH_STALE_AFTER_S]:
            # fresh: heard now, or from an earlier beacon; the law with what was heard
            v_des, cm = cacc_next_speed(
                ctrl0,
                v,
                a,
                gap,
                rx_pred[RX_SPEED_MPS, i],
                rx_pred[RX_ACCEL_MPS2, i],
                True,
                v_max,
                dt,
                ctrl_mode[i],
            )
            mode[i] = cm
        else:
            v_des, cm = cacc_next_speed(ctrl0, v, a, gap, pv, 0.0, False, v_max, dt, ctrl_mode[i])
            mode[i] = MODE_ACC_FALLBACK
            fallback_steps[i] += 1
        ctrl_mode[i] = cm
        v_fin = sumo_finalize_speed(v, v_des, a_max, b_max, b_emg, v_max, dt)
    u_cmd = (v_fin - v) * (1.0 / dt)  # sumo_cfm's step 5
    v_new = v_fin
    a_new = u_cmd
    if v_new < 0.0:
        v_new = 0.0
        a_new = -v / dt
    f = follower[i]
    drag_gap = gap
    if follows[i] == 0:
        drag_gap = x - length - pos_now[f] if f >= 0 else np.inf
    cd_frac = drag_multiplier_row(drag_rows[i], drag_gap)
    energy[i] += step_energy_kwh_unchecked(
        pt0,
        phys0[TP_MASS_KG],
        0.5 * (v + v_new),
        a_new,
        env[ENV_GRADE],
        cd_frac,
        phys0[TP_CD_A_M2],
        phys0[TP_CRR],
        env[ENV_AMBIENT_C],
        dt,
    )
    pos_next[i] = x + v_new * dt
    speed_next[i] = v_new
    accel_next[i] = a_new
    u_next[i] = u_cmd


@njit(**_BLOCK)
def _cacc_range(
    lo: int,
    hi: int,
    s: int,
    head_target: float,
    follower: np.ndarray,
    follows: np.ndarray,
    drag_rows: np.ndarray,
    phys0: np.ndarray,
    ctrl0: np.ndarray,
    pt0: np.ndarray,
    ch: np.ndarray,
    env: np.ndarray,
    pos_now: np.ndarray,
    speed_now: np.ndarray,
    accel_now: np.ndarray,
    u_now: np.ndarray,
    pos_next: np.ndarray,
    speed_next: np.ndarray,
    accel_next: np.ndarray,
    u_next: np.ndarray,
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
    exceptions: np.ndarray,
) -> None:
    """One step for trucks ``lo..hi-1``: the vectorised pass over those with a truck ahead
    and behind, then the scalar step for the ends of the fleet and the exceptions, then the
    hard-brake count (an integer, kept out of the vectorised pass)."""
    n = pos_now.shape[0]
    first = max(lo, 1)
    last = min(hi, n - 1)
    length = phys0[TP_LENGTH_M]
    n_exceptions = 0
    if last > first:
        _sense_block(first, last, length, pos_now, speed_now, min_gap, min_ttc)
        n_exceptions = _step_block(
            first, last, head_target, ctrl0, phys0, pt0, ch, env, pos_now, speed_now,
            accel_now, follows, drag_rows, collided_at, ctrl_mode, mode, energy, pos_next,
            speed_next, accel_next, u_next, exceptions,
        )  # fmt: skip
    # the scalar step: the ends of the fleet, and the exceptions if there are any
    i = lo
    while i < hi:
        if i == first and n_exceptions == 0 and last > first:
            i = last  # the block is complete
            continue
        if i < first or i >= last or exceptions[i] != 0:
            _truck_step(
                i, s, head_target, follower, follows, drag_rows, phys0, ctrl0, pt0, ch, env,
                pos_now, speed_now, accel_now, u_now, pos_next, speed_next, accel_next, u_next,
                mode, ctrl_mode, energy, rx_pred, collided_at, collision_speed, min_gap, min_ttc,
                fallback_steps,
            )  # fmt: skip
        i += 1
    _count_hard_brakes(lo, hi, -env[ENV_HARD_BRAKE_MPS2], accel_next, accel_now, hard_brakes)


@njit(cache=True)
def receive_last_step(
    s: int,
    follows: np.ndarray,
    phys0: np.ndarray,
    ch: np.ndarray,
    env: np.ndarray,
    pos: np.ndarray,
    speed: np.ndarray,
    accel: np.ndarray,
    u: np.ndarray,
    rx_pred: np.ndarray,
) -> None:
    """Store the beacon each follower heard in step ``s``, the last of a call: what the
    general step stores every step. The fast step reads the predecessor directly while it
    hears it, and stores a beacon itself only where one is about to go unheard, so after this
    the received state is what ``kernel.run_steps`` leaves, to the bit.
    """
    cur = s & 1
    t = s * env[ENV_DT_S]
    hazard_accel = -HAZARD_DECEL_FRACTION * phys0[TP_EMERGENCY_DECEL_MPS2]
    for i in range(1, pos.shape[1]):
        j = i - 1
        xj = pos[cur, j]
        if follows[i] != 0 and abs(xj - pos[cur, i]) <= ch[CH_RANGE_M]:
            aj = accel[cur, j]
            store_beacon(rx_pred, i, xj, speed[cur, j], aj, u[cur, j], t, aj <= hazard_accel)


def run_steps_cacc_py(
    threads: int,
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
    """``kernel.run_steps`` for an ``eligible`` scenario: same arrays, same results; the
    first argument is how many threads share the blocks of trucks (1 for the one-thread
    variant).

    The tables (``phys``, ``ctrl``, ``accp``, ``pt``) are uniform, so only row 0 is read.
    """
    n = leader.shape[0]
    s0 = step[0]
    rec = 0
    dt = env[ENV_DT_S]
    n_chunks = block_count(n, threads)
    chunk = (n + n_chunks - 1) // n_chunks
    phys0 = phys[0]
    ctrl0 = ctrl[0]
    pt0 = pt[0]
    exceptions = np.empty(n, np.int64)
    drag_rows = np.empty(n, np.int64)
    follows = np.empty(n, np.int64)
    # int64 working copies of the int8 mode rows and the int32 hard-brake counts: mixed
    # widths keep LLVM from vectorising
    mode64 = np.empty(n, np.int64)
    ctrl_mode64 = np.empty(n, np.int64)
    hard_brakes64 = np.empty(n, np.int64)
    for i in range(n):
        drag_rows[i] = drag_row(psize[i], ppos[i])
        follows[i] = 1 if ppos[i] != 0 else 0
        mode64[i] = mode[i]
        ctrl_mode64[i] = ctrl_mode[i]
        hard_brakes64[i] = hard_brakes[i]
    for s in range(s0, s0 + n_steps):
        target = profile_speed(s * dt + env[ENV_PROFILE_LEAD_S], prof_t, prof_v)
        # this step's and the next step's rows, made once per step: each view costs a
        # reference count (an atomic add) that the threads would contend for per block
        cur = s & 1
        nxt = 1 - cur
        pos_now, speed_now, accel_now, u_now = pos[cur], speed[cur], accel[cur], u[cur]
        pos_next, speed_next, accel_next, u_next = pos[nxt], speed[nxt], accel[nxt], u[nxt]
        for c in prange(n_chunks):
            _cacc_range(
                c * chunk,
                min(n, (c + 1) * chunk),
                s,
                target,
                follower,
                follows,
                drag_rows,
                phys0,
                ctrl0,
                pt0,
                ch,
                env,
                pos_now,
                speed_now,
                accel_now,
                u_now,
                pos_next,
                speed_next,
                accel_next,
                u_next,
                mode64,
                ctrl_mode64,
                energy,
                rx_pred,
                collided_at,
                collision_speed,
                min_gap,
                min_ttc,
                hard_brakes64,
                fallback_steps,
                exceptions,
            )
        if rec_every > 0 and (s + 1 - s0) % rec_every == 0:
            nxt = (s + 1) & 1
            for i in prange(n):
                rec_pos[rec, i] = pos[nxt, i]
                rec_speed[rec, i] = speed[nxt, i]
                rec_accel[rec, i] = accel[nxt, i]
                rec_mode[rec, i] = mode64[i]
                rec_energy[rec, i] = energy[i]
                rec_odd[rec, i] = odd_flags[i]
            rec += 1
    if n_steps > 0:
        receive_last_step(s0 + n_steps - 1, follows, phys0, ch, env, pos, speed, accel, u, rx_pred)
    for i in range(n):
        mode[i] = mode64[i]
        ctrl_mode[i] = ctrl_mode64[i]
        hard_brakes[i] = hard_brakes64[i]
    step[0] = s0 + n_steps
    return rec


#: The step with the blocks of trucks spread over all cores.
run_steps_cacc = compiled_variant(run_steps_cacc_py, "run_steps_cacc", parallel=True)
#: The same step on one thread, for fleets of a few blocks: each step of the threaded
#: variant ends at a barrier, and a thread the host has descheduled holds the other one
#: there, which on a busy machine costs more than the second core gives back.
run_steps_cacc_serial = compiled_variant(run_steps_cacc_py, "run_steps_cacc_serial")
#: Fleets at least this large use ``run_steps_cacc``.
PARALLEL_MIN_TRUCKS = 4 * CHUNK
