"""The compiled platoon step: many steps per call, trucks in parallel, no Python per truck.

One step, for every truck ``i`` at once (reads the state at the start of the step, writes
the other half of the double buffer, so the order of trucks never matters).  ``run_steps``
hands the trucks to ``_truck_range`` in blocks of ``CHUNK``, one block per parallel task:

0. road: what the active weather and road hazards the truck knows of (from its own
   sensors, or an RSU's RSI broadcast) do to its speed limit, braking and sensor range
   (``convoy.road.hazards.hazard_effects``), and what it knows of the traffic signals ahead
   (an RSU's SPAT, or the light in sight) and, for a platoon head, the stop-line envelope
   that follows (``convoy.road.signals.signal_effects``); one cheap check each when the
   road has no hazards or no signals;
1. history: store own pos/speed/accel/command in the ring buffer for delayed readers;
2. sense: the gap to the truck ahead (optionally delayed by the sensor; beyond the sensor
   range the law sees no one), collisions;
3. receive: the predecessor's (and, for PATH, the head's) beacon sent ``latency`` ago;
4. control: the truck's law from what it sensed and received, fallback when stale,
   emergency braking on a hazard;
5. actuate: truck limits, first-order actuator lag, Euler integration as SUMO does
   (``v += a dt; x += v dt``);
6. account: energy with the platoon drag multiplier, safety statistics (collisions,
   red-light stops and crossings), recording.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from convoy.road.hazards import hazard_effects
from convoy.road.signals import (
    HALTING_SPEED_MPS,
    PHASE_RED,
    PHASE_UNKNOWN,
    PHASE_YELLOW,
    SIGNAL_DECEL_FRACTION,
    VISUAL_RANGE_M,
    red_crossings,
    signal_effects,
)
from convoy.sim.jit import NO_REFCOUNTS, compiled_variant
from convoy.sim.state import (
    H_ACCEL_MPS2,
    H_POS_M,
    H_SPEED_MPS,
    H_U_MPS2,
    MET_DRAC_MPS2,
    MET_LOWEST_ACCEL_MPS2,
    MET_MIN_GAP_M,
    MET_MIN_TTC_S,
    MET_PEAK_ABS_ACCEL_MPS2,
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
    TP_MIN_GAP_M,
    TP_NOISE_MPS2,
    TP_SENSOR_DELAY_STEPS,
)
from convoy.vehicle.aero import drag_lookup, drag_row
from convoy.vehicle.channel import (
    CH_LATENCY_STEPS,
    CH_PERIOD_STEPS,
    CH_STALE_AFTER_S,
    beacon_delivered,
)
from convoy.vehicle.controllers import (
    MODE_ACC_FALLBACK,
    MODE_COLLIDED,
    MODE_EMERGENCY,
    MODE_FOLLOW,
    MODE_HEAD,
    MODEL_ACC,
    MODEL_CACC_PATH,
    MODEL_CACC_PLOEG,
    MODEL_CACC_SUMO,
    MODEL_HUMAN,
    idm_accel,
    path_accel,
    ploeg_accel,
)
from convoy.vehicle.energy import (
    PT_FULL_POWER_SPEED_MPS,
    PT_ROTATING_MASS_FACTOR,
    energy_prep,
    max_traction_accel_angle,
    step_energy_kwh_prepared,
    wheel_power_max_w,
)
from convoy.vehicle.rng import PURPOSE_DRIVER, uniform
from convoy.vehicle.sumo_cfm import (
    acc_next_speed,
    cacc_next_speed,
    sumo_finalize_speed,
    sumo_set_speed,
)
from convoy.vehicle.truck import grade_angle

# Columns of the float64 environment vector.
ENV_DT_S = 0
ENV_GRADE = 1
ENV_SPEED_LIMIT_MPS = 2
ENV_AMBIENT_C = 3
ENV_SEED = 4
ENV_PROFILE_LEAD_S = 5
ENV_HARD_BRAKE_MPS2 = 6
ENV_AEB_TTC_S = 7
# the safety metrics' window starts here [s]: the samples (the state at the start and after
# each step) from this time on are folded into ``TruckState.metrics``; inf: none
ENV_METRICS_FROM_S = 8
# 1 (the default): the energy is accounted; 0: it is not (``TruckState.energy`` stays as it
# is). Nothing in the step reads the energy back, so the rest of a run is the same to the
# bit; the validation's metrics do not use it, and its chunks skip it (a fifth of the
# general step: ``scripts/step_variants.py general``, docs/benchmarks.md)
ENV_ENERGY = 9
ENV_SIZE = 10
# a sample counts when its time is at least the window's start less this [s]
METRICS_EPS_S = 1e-9

# A truck braking at least this hard flags "hazard" in its beacons (emergency brake
# light, the BSM "brakes" field of T/CSAE 53); followers that receive it brake too.
HAZARD_DECEL_FRACTION = 0.99
# Trucks per block of the parallel loop.  Each block is one call with ~50 array arguments,
# whose reference counting then costs once per block instead of once per truck; 1,024 keeps
# that negligible while two threads still split a 2,000-truck fleet evenly.
CHUNK = 1024


@njit(cache=True, inline="always")
def account_gap(
    i: int,
    j: int,
    gap_m: float,
    closing_mps: float,
    t_s: float,
    min_gap: np.ndarray,
    min_ttc: np.ndarray,
    collided_at: np.ndarray,
    collision_speed: np.ndarray,
) -> None:
    """Safety statistics of truck ``i`` behind ``j``: minimum gap and time-to-collision, and
    the first contact (both trucks, with the closing speed) when the gap goes negative."""
    if gap_m < min_gap[i]:
        min_gap[i] = gap_m
    if closing_mps > 1e-9:
        ttc = max(gap_m, 0.0) / closing_mps
        if ttc < min_ttc[i]:
            min_ttc[i] = ttc
    if gap_m < 0.0 and math.isnan(collided_at[i]):
        collided_at[i] = t_s
        collision_speed[i] = max(closing_mps, 0.0)
        if math.isnan(collided_at[j]):
            collided_at[j] = t_s
            collision_speed[j] = max(closing_mps, 0.0)


@njit(cache=True, inline="always")
def profile_speed(t_s: float, times: np.ndarray, speeds: np.ndarray) -> float:
    """Speed profile, linear between points and flat outside them."""
    k = times.shape[0]
    if k == 0:
        return -1.0
    if t_s <= times[0]:
        return speeds[0]
    if t_s >= times[k - 1]:
        return speeds[k - 1]
    j = np.searchsorted(times, t_s, side="right")
    w = (t_s - times[j - 1]) / (times[j] - times[j - 1])
    return speeds[j - 1] + w * (speeds[j] - speeds[j - 1])


@njit(cache=True, inline="always")
def _in_outage(t_s: float, outages: np.ndarray) -> bool:
    for k in range(outages.shape[0]):  # noqa: SIM110 - Numba cannot compile generators
        if outages[k, 0] <= t_s < outages[k, 1]:
            return True
    return False


@njit(cache=True, inline="always")
def _receive(
    rx: np.ndarray,
    link_col: int,
    i: int,
    j: int,
    s: int,
    cur: int,
    hist: np.ndarray,
    pos: np.ndarray,
    speed: np.ndarray,
    accel: np.ndarray,
    u: np.ndarray,
    mode: np.ndarray,
    ch: np.ndarray,
    outages: np.ndarray,
    dt: float,
    seed: int,
    ge_flat: np.ndarray,
    emergency_decel: float,
) -> None:
    """Deliver, if due and not lost, the beacon truck ``j`` sent to ``i`` latency ago.

    ``ge_flat`` is ``ge_bad`` flattened to (2n,), once per ``run_steps`` call.
    """
    lat = int(ch[CH_LATENCY_STEPS])
    sent = s - lat
    if sent < 0 or sent % int(ch[CH_PERIOD_STEPS]) != 0:
        return
    h = hist.shape[0]
    if lat == 0:
        pj = pos[cur, j]
        vj = speed[cur, j]
        aj = accel[cur, j]
        uj = u[cur, j]
        pi = pos[cur, i]
    else:
        slot = sent % h
        pj = hist[slot, H_POS_M, j]
        vj = hist[slot, H_SPEED_MPS, j]
        aj = hist[slot, H_ACCEL_MPS2, j]
        uj = hist[slot, H_U_MPS2, j]
        pi = hist[slot, H_POS_M, i]
    link = i * 2 + link_col
    if not beacon_delivered(
        ch, seed, link, sent, abs(pj - pi), _in_outage(sent * dt, outages), ge_flat
    ):
        return
    hazard = aj <= -HAZARD_DECEL_FRACTION * emergency_decel or mode[j] == MODE_EMERGENCY
    store_beacon(rx, i, pj, vj, aj, uj, sent * dt, hazard)


@njit(cache=True, inline="always")
def store_beacon(
    rx: np.ndarray,
    i: int,
    pos_m: float,
    speed_mps: float,
    accel_mps2: float,
    u_mps2: float,
    stamp_s: float,
    hazard: bool,
) -> None:
    """Keep a delivered beacon as truck ``i``'s newest (the ``RX_*`` rows of ``rx``)."""
    rx[RX_POS_M, i] = pos_m
    rx[RX_SPEED_MPS, i] = speed_mps
    rx[RX_ACCEL_MPS2, i] = accel_mps2
    rx[RX_U_MPS2, i] = u_mps2
    rx[RX_STAMP_S, i] = stamp_s
    rx[RX_HAZARD, i] = 1.0 if hazard else 0.0


@njit(cache=True, inline="always")
def fold_gap(
    gap_m: float, closing_mps: float, min_gap: float, min_ttc: float, drac: float
) -> tuple[float, float, float]:
    """One follower's sample (bumper gap, closing speed; a NaN gap: no leader) folded into a
    window's minimum gap, minimum TTC and maximum DRAC."""
    if gap_m != gap_m:
        return min_gap, min_ttc, drac
    min_gap = min(min_gap, gap_m)
    if closing_mps > 0.0:
        min_ttc = min(min_ttc, max(gap_m, 0.0) / closing_mps)
        if gap_m > 0.0:
            drac = max(drac, closing_mps * closing_mps / (2.0 * gap_m))
    return min_gap, min_ttc, drac


@njit(cache=True, inline="always")
def sample_metrics(
    lo: int,
    hi: int,
    pos: np.ndarray,
    speed: np.ndarray,
    accel: np.ndarray,
    leader: np.ndarray,
    ppos: np.ndarray,
    phys: np.ndarray,
    metrics: np.ndarray,
) -> None:
    """Fold one sample of trucks ``lo..hi-1`` (positions, speeds and accelerations, (n,)
    each, of one time) into their ``MET_*`` accumulators ``metrics``: peak |a| and lowest
    a of every truck (NaN: off the road), gap, TTC and DRAC of every follower."""
    for q in range(lo, hi):
        a = accel[q]
        if a == a:
            metrics[q, MET_PEAK_ABS_ACCEL_MPS2] = max(metrics[q, MET_PEAK_ABS_ACCEL_MPS2], abs(a))
            metrics[q, MET_LOWEST_ACCEL_MPS2] = min(metrics[q, MET_LOWEST_ACCEL_MPS2], a)
        if ppos[q] > 0:
            ld = leader[q]
            mg, mt, dr = fold_gap(
                pos[ld] - phys[ld, TP_LENGTH_M] - pos[q],
                speed[q] - speed[ld],
                metrics[q, MET_MIN_GAP_M],
                metrics[q, MET_MIN_TTC_S],
                metrics[q, MET_DRAC_MPS2],
            )
            metrics[q, MET_MIN_GAP_M] = mg
            metrics[q, MET_MIN_TTC_S] = mt
            metrics[q, MET_DRAC_MPS2] = dr


@njit(cache=True, inline="always")
def in_metrics_window(step: int, env: np.ndarray) -> bool:
    """Whether the state after ``step`` steps is a sample of the metrics window."""
    return not (step * env[ENV_DT_S] < env[ENV_METRICS_FROM_S] - METRICS_EPS_S)


@njit(cache=True, **NO_REFCOUNTS)
def _truck_range(
    lo: int,
    hi: int,
    s_first: int,
    s_count: int,
    rec_from: int,
    rec_every: int,
    rec_pos: np.ndarray,
    rec_speed: np.ndarray,
    rec_accel: np.ndarray,
    rec_mode: np.ndarray,
    rec_energy: np.ndarray,
    rec_odd: np.ndarray,
    rec_spat: np.ndarray,
    model: np.ndarray,
    leader: np.ndarray,
    follower: np.ndarray,
    head: np.ndarray,
    psize: np.ndarray,
    ppos: np.ndarray,
    phys: np.ndarray,
    ctrl: np.ndarray,
    accp: np.ndarray,
    pt: np.ndarray,
    ch: np.ndarray,
    outages: np.ndarray,
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
    rx_head: np.ndarray,
    ge_flat: np.ndarray,
    hist: np.ndarray,
    collided_at: np.ndarray,
    collision_speed: np.ndarray,
    min_gap: np.ndarray,
    min_ttc: np.ndarray,
    hard_brakes: np.ndarray,
    fallback_steps: np.ndarray,
    emergency_steps: np.ndarray,
    hz: np.ndarray,
    rsus: np.ndarray,
    hz_known: np.ndarray,
    odd_flags: np.ndarray,
    rsi_received_at: np.ndarray,
    sg: np.ndarray,
    sig_known: np.ndarray,
    spat_phase: np.ndarray,
    spat_received_at: np.ndarray,
    signal_seen_at: np.ndarray,
    red_light_stops: np.ndarray,
    red_light_crossings: np.ndarray,
    metrics: np.ndarray,
) -> None:
    """Steps ``s_first .. s_first + s_count - 1`` (see the module docstring) for trucks
    ``lo..hi-1``, each truck recorded after every step ``s`` with ``s + 1 - rec_from`` a
    multiple of ``rec_every`` (> 0) into row ``(s + 1 - rec_from) // rec_every - 1``.

    A whole block per call: the ~60 array arguments are reference-counted once per block
    rather than once per truck, which used to be most of the step's time. Where one block
    holds all trucks (a validation instance), one call makes all the steps: a call per step
    cost about 0.5 µs of passing those arguments, against 0.1 µs per truck and step.
    A block of all trucks also folds the metrics window's samples (``sample_metrics``);
    ``run_steps_py`` does it for several blocks.
    """
    whole = lo == 0 and hi == pos.shape[1]
    # the road's angle, for the energy and the motor's limit: once per call, not per truck
    # and step (what step_energy_kwh and max_traction_accel_mps2 compute inside, the same bits)
    cos_grade, sin_grade = grade_angle(env[ENV_GRADE])
    energy_on = env[ENV_ENERGY] != 0.0
    dt = env[ENV_DT_S]
    per_dt = 1.0 / dt
    seed = int(env[ENV_SEED])
    h = hist.shape[0]
    # the actuator lag's share of the command taken per step, 1 - exp(-dt/tau): computed
    # again only where the lag differs from the truck before's (a platoon shares one; an exp
    # per truck-step was 5-6 % of the step where the trucks have a lag)
    tau_memo = -1.0
    lag_memo = 0.0
    if whole and s_first == 0 and in_metrics_window(0, env):
        sample_metrics(lo, hi, pos[0], speed[0], accel[0], leader, ppos, phys, metrics)
    for s in range(s_first, s_first + s_count):
        t = s * dt
        cur = s & 1
        nxt = 1 - cur
        for i in range(lo, hi):
            # hazards: what the truck knows and what that and the road do to it
            hazard_speed_mps = np.inf
            decel_cap = np.inf
            sensor_range = np.inf
            if hz.shape[0] > 0:
                hazard_speed_mps, decel_cap, sensor_range, flags, by_rsi = hazard_effects(
                    pos[cur, i], t, hz, rsus, hz_known[i]
                )
                odd_flags[i] = flags
                if by_rsi and math.isnan(rsi_received_at[i]):
                    rsi_received_at[i] = t
            x = pos[cur, i]
            v = speed[cur, i]
            a = accel[cur, i]
            u_prev = u[cur, i]
            length = phys[i, TP_LENGTH_M]
            min_gap_m = phys[i, TP_MIN_GAP_M]
            a_max = phys[i, TP_MAX_ACCEL_MPS2]
            # the road's friction bounds braking (mu g); a dry road leaves decel_cap at inf
            b_max = min(phys[i, TP_MAX_DECEL_MPS2], decel_cap)
            b_emg = min(phys[i, TP_EMERGENCY_DECEL_MPS2], decel_cap)
            # speed limit, with the approach envelope of known hazards
            v_max = min(phys[i, TP_MAX_SPEED_MPS], env[ENV_SPEED_LIMIT_MPS], hazard_speed_mps)
            is_head = ppos[i] == 0

            # signals: what the truck knows of the lights ahead; for a head, the stop-line cap
            v_signal = np.inf
            phase_ahead = PHASE_UNKNOWN
            if sg.shape[0] > 0:
                v_signal, phase_ahead, by_spat, by_sight = signal_effects(
                    x,
                    v,
                    t,
                    dt,
                    sg,
                    rsus,
                    sig_known[i],
                    SIGNAL_DECEL_FRACTION * b_max,
                    v_max,
                    min(VISUAL_RANGE_M, sensor_range),
                    is_head,
                )
                spat_phase[i] = phase_ahead
                if by_spat and math.isnan(spat_received_at[i]):
                    spat_received_at[i] = t
                if by_sight and math.isnan(signal_seen_at[i]):
                    signal_seen_at[i] = t

            # history: own state for readers that are delayed by latency, sensors or reaction
            if h > 1:
                slot = s % h
                hist[slot, H_POS_M, i] = x
                hist[slot, H_SPEED_MPS, i] = v
                hist[slot, H_ACCEL_MPS2, i] = a
                hist[slot, H_U_MPS2, i] = u_prev

            # sense: true gap for safety accounting, possibly delayed gap for the controller
            j = leader[i]
            gap = np.inf
            pred_v_radar = v
            gap_sensed = np.inf
            if j >= 0:
                gap = pos[cur, j] - phys[j, TP_LENGTH_M] - x
                pred_v_radar = speed[cur, j]
                delay = int(phys[i, TP_SENSOR_DELAY_STEPS])
                if delay == 0:
                    gap_sensed = gap
                else:
                    # before ``delay`` steps have passed, the oldest thing seen is the start
                    past = (s - delay) % h if s >= delay else 0
                    gap_sensed = (
                        hist[past, H_POS_M, j] - phys[j, TP_LENGTH_M] - hist[past, H_POS_M, i]
                    )
                    pred_v_radar = hist[past, H_SPEED_MPS, j]
                if gap_sensed > sensor_range:
                    # out of sight (dust): the law sees no one; CACC still has the beacons
                    gap_sensed = np.inf
                    pred_v_radar = v
                account_gap(
                    i, j, gap, v - speed[cur, j], t, min_gap, min_ttc, collided_at, collision_speed
                )

            # receive: beacons on the predecessor link and, where used, the head link
            m = model[i]
            if not is_head and j >= 0:
                _receive(
                    rx_pred,
                    0,
                    i,
                    j,
                    s,
                    cur,
                    hist,
                    pos,
                    speed,
                    accel,
                    u,
                    mode,
                    ch,
                    outages,
                    dt,
                    seed,
                    ge_flat,
                    phys[i, TP_EMERGENCY_DECEL_MPS2],
                )
                if m == MODEL_CACC_PATH:
                    _receive(
                        rx_head,
                        1,
                        i,
                        head[i],
                        s,
                        cur,
                        hist,
                        pos,
                        speed,
                        accel,
                        u,
                        mode,
                        ch,
                        outages,
                        dt,
                        seed,
                        ge_flat,
                        phys[i, TP_EMERGENCY_DECEL_MPS2],
                    )
            fresh = t - rx_pred[RX_STAMP_S, i] <= ch[CH_STALE_AFTER_S]
            fresh_head = t - rx_head[RX_STAMP_S, i] <= ch[CH_STALE_AFTER_S]

            # control: a speed (SUMO laws) or an acceleration command (the others)
            new_mode = MODE_FOLLOW
            v_des = -1.0
            u_cmd = 0.0
            sumo_law = m in (MODEL_CACC_SUMO, MODEL_ACC)
            if not math.isnan(collided_at[i]):
                u_cmd = -b_emg
                new_mode = MODE_COLLIDED
            elif is_head:
                # driven along the profile like SUMO's setSpeed: the command for the end of the step
                target = profile_speed(t + env[ENV_PROFILE_LEAD_S], prof_t, prof_v)
                if target < 0.0:
                    target = v
                # a red light ahead is a standing obstacle at its stop line
                target = min(target, v_signal)
                if j >= 0:
                    # a platoon behind another keeps its distance with its own law (radar only)
                    if m == MODEL_CACC_SUMO:
                        v_safe, cm = cacc_next_speed(
                            ctrl[i],
                            v,
                            a,
                            gap_sensed,
                            pred_v_radar,
                            0.0,
                            True,
                            v_max,
                            dt,
                            ctrl_mode[i],
                        )
                        ctrl_mode[i] = cm
                    else:
                        v_safe, _ = acc_next_speed(
                            accp[i], v, a, gap_sensed, pred_v_radar, v_max, dt, 0
                        )
                    target = min(target, v_safe)
                v_des = target
                sumo_law = True
                new_mode = MODE_HEAD
            elif m == MODEL_CACC_SUMO:
                pv = rx_pred[RX_SPEED_MPS, i] if fresh else pred_v_radar
                pa = rx_pred[RX_ACCEL_MPS2, i] if fresh else 0.0
                v_des, cm = cacc_next_speed(
                    ctrl[i], v, a, gap_sensed, pv, pa, fresh, v_max, dt, ctrl_mode[i]
                )
                ctrl_mode[i] = cm
                # without fresh beacons the law runs its ACC branch, whatever its internal mode
                new_mode = cm if fresh else MODE_ACC_FALLBACK
            elif m == MODEL_ACC:
                v_des, cm = acc_next_speed(
                    ctrl[i], v, a, gap_sensed, pred_v_radar, v_max, dt, ctrl_mode[i]
                )
                ctrl_mode[i] = cm
                new_mode = cm
            elif m == MODEL_HUMAN:
                u_cmd = idm_accel(ctrl[i], v, gap_sensed, pred_v_radar, v_max, min_gap_m, a_max)
                noise = phys[i, TP_NOISE_MPS2]
                if noise > 0.0:
                    u_cmd += noise * (2.0 * uniform(seed, i, s, PURPOSE_DRIVER) - 1.0)
            elif not fresh or (m == MODEL_CACC_PATH and not fresh_head):
                v_des, _ = acc_next_speed(accp[i], v, a, gap_sensed, pred_v_radar, v_max, dt, 0)
                sumo_law = True
                new_mode = MODE_ACC_FALLBACK
            elif m == MODEL_CACC_PATH:
                u_cmd = path_accel(
                    ctrl[i],
                    v,
                    gap_sensed,
                    rx_pred[RX_SPEED_MPS, i],
                    rx_pred[RX_ACCEL_MPS2, i],
                    rx_head[RX_SPEED_MPS, i],
                    rx_head[RX_ACCEL_MPS2, i],
                )
            elif m == MODEL_CACC_PLOEG:
                u_cmd = ploeg_accel(
                    ctrl[i],
                    u_prev,
                    v,
                    a,
                    gap_sensed,
                    min_gap_m,
                    rx_pred[RX_SPEED_MPS, i],
                    rx_pred[RX_U_MPS2, i],
                    dt,
                )

            # emergency: a hazard beacon from the predecessor, or our own sensor sees a crash coming
            if (
                phys[i, TP_EMERGENCY_BRAKING] > 0.0
                and new_mode != MODE_COLLIDED
                and not is_head
                and j >= 0
            ):
                closing = v - pred_v_radar
                hazard = fresh and rx_pred[RX_HAZARD, i] > 0.5
                imminent = closing > 0.0 and gap_sensed < closing * env[ENV_AEB_TTC_S]
                if hazard or imminent:
                    u_cmd = -b_emg
                    sumo_law = False
                    new_mode = MODE_EMERGENCY

            # actuate: limits, lag, Euler integration
            a_hi = a_max
            if phys[i, TP_LIMIT_TRACTION] > 0.0:
                a_hi = min(
                    a_hi,
                    max_traction_accel_angle(
                        wheel_power_max_w(pt[i]),
                        pt[i, PT_FULL_POWER_SPEED_MPS],
                        pt[i, PT_ROTATING_MASS_FACTOR],
                        phys[i, TP_MASS_KG],
                        v,
                        cos_grade,
                        sin_grade,
                        1.0,
                        phys[i, TP_CD_A_M2],
                        phys[i, TP_CRR],
                    ),
                )
            tau = phys[i, TP_ACTUATOR_LAG_S]
            if tau != tau_memo:
                tau_memo = tau
                lag_memo = 1.0 - math.exp(-dt / tau) if tau > 0.0 else 0.0
            if sumo_law:
                # SUMO: setSpeed replaces finalizeSpeed for a commanded head (sumo_cfm docs)
                if is_head:
                    v_fin = sumo_set_speed(v, v_des, a_hi, b_max, dt, v_max)
                else:
                    v_fin = sumo_finalize_speed(v, v_des, a_hi, b_max, b_emg, v_max, dt)
                u_cmd = (v_fin - v) * per_dt  # sumo_cfm's step 5
                if tau == 0.0:
                    # exactly SUMO's update: the new speed is the law's, a = dv/dt
                    v_new = v_fin
                    a_new = u_cmd
                else:
                    a_new = a + lag_memo * (u_cmd - a)
                    if a_new < -b_emg and b_emg < phys[i, TP_EMERGENCY_DECEL_MPS2]:
                        a_new = -b_emg  # on a low-friction road
                    v_new = v + a_new * dt
            else:
                a_lo = -b_emg if new_mode in (MODE_EMERGENCY, MODE_COLLIDED) else -b_max
                u_cmd = min(max(u_cmd, a_lo), a_hi)
                # do not command a speed above the limit
                if v + u_cmd * dt > v_max:
                    u_cmd = (v_max - v) / dt
                a_new = a + lag_memo * (u_cmd - a) if tau > 0.0 else u_cmd
                a_new = max(a_new, -b_emg)
                v_new = v + a_new * dt
            if v_new < 0.0:
                v_new = 0.0
                a_new = -v / dt
            x_new = x + v_new * dt

            # account: energy (drag by platoon position), safety statistics
            if energy_on:
                if ppos[i] == 0:
                    k = follower[i]
                    drag_gap = pos[cur, i] - length - pos[cur, k] if k >= 0 else np.inf
                else:
                    drag_gap = gap
                cd_frac = drag_lookup(drag_row(psize[i], ppos[i]), drag_gap)
                energy[i] += step_energy_kwh_prepared(
                    energy_prep(pt[i], env[ENV_AMBIENT_C], dt),
                    phys[i, TP_MASS_KG],
                    0.5 * (v + v_new),
                    a_new,
                    cos_grade,
                    sin_grade,
                    cd_frac,
                    phys[i, TP_CD_A_M2],
                    phys[i, TP_CRR],
                )
            if a_new < -env[ENV_HARD_BRAKE_MPS2] and a >= -env[ENV_HARD_BRAKE_MPS2]:
                hard_brakes[i] += 1
            if new_mode == MODE_ACC_FALLBACK:
                fallback_steps[i] += 1
            if new_mode == MODE_EMERGENCY:
                emergency_steps[i] += 1
            if sg.shape[0] > 0:
                halted = v_new < HALTING_SPEED_MPS <= v
                if halted and phase_ahead in (PHASE_RED, PHASE_YELLOW):
                    red_light_stops[i] += 1
                red_light_crossings[i] += red_crossings(x, x_new, t, dt, sg)

            pos[nxt, i] = x_new
            speed[nxt, i] = v_new
            accel[nxt, i] = a_new
            u[nxt, i] = u_cmd
            mode[i] = new_mode

        if rec_every > 0 and (s + 1 - rec_from) % rec_every == 0:
            row = (s + 1 - rec_from) // rec_every - 1
            for i in range(lo, hi):
                rec_pos[row, i] = pos[nxt, i]
                rec_speed[row, i] = speed[nxt, i]
                rec_accel[row, i] = accel[nxt, i]
                rec_mode[row, i] = mode[i]
                rec_energy[row, i] = energy[i]
                rec_odd[row, i] = odd_flags[i]
                rec_spat[row, i] = spat_phase[i]
        if whole and in_metrics_window(s + 1, env):
            sample_metrics(lo, hi, pos[nxt], speed[nxt], accel[nxt], leader, ppos, phys, metrics)


def run_steps_py(
    n_steps: int,
    rec_every: int,
    rec_pos: np.ndarray,
    rec_speed: np.ndarray,
    rec_accel: np.ndarray,
    rec_mode: np.ndarray,
    rec_energy: np.ndarray,
    rec_odd: np.ndarray,
    rec_spat: np.ndarray,
    model: np.ndarray,
    leader: np.ndarray,
    follower: np.ndarray,
    head: np.ndarray,
    psize: np.ndarray,
    ppos: np.ndarray,
    phys: np.ndarray,
    ctrl: np.ndarray,
    accp: np.ndarray,
    pt: np.ndarray,
    ch: np.ndarray,
    outages: np.ndarray,
    prof_t: np.ndarray,
    prof_v: np.ndarray,
    env: np.ndarray,
    hz: np.ndarray,
    rsus: np.ndarray,
    sg: np.ndarray,
    pos: np.ndarray,
    speed: np.ndarray,
    accel: np.ndarray,
    u: np.ndarray,
    mode: np.ndarray,
    ctrl_mode: np.ndarray,
    energy: np.ndarray,
    rx_pred: np.ndarray,
    rx_head: np.ndarray,
    ge_bad: np.ndarray,
    hist: np.ndarray,
    collided_at: np.ndarray,
    collision_speed: np.ndarray,
    min_gap: np.ndarray,
    min_ttc: np.ndarray,
    hard_brakes: np.ndarray,
    fallback_steps: np.ndarray,
    emergency_steps: np.ndarray,
    hz_known: np.ndarray,
    odd_flags: np.ndarray,
    rsi_received_at: np.ndarray,
    sig_known: np.ndarray,
    spat_phase: np.ndarray,
    spat_received_at: np.ndarray,
    signal_seen_at: np.ndarray,
    red_light_stops: np.ndarray,
    red_light_crossings: np.ndarray,
    metrics: np.ndarray,
    step: np.ndarray,
) -> int:
    """Advance ``n_steps`` steps; record every ``rec_every`` steps (0 = never).

    Arrays are those of ``TruckTable`` and ``TruckState`` (see there for shapes and
    units), updated in place; ``hz`` and ``rsus`` are the hazard and RSU tables of
    ``convoy.road.hazards`` and ``sg`` the signal table of ``convoy.road.signals``, each
    with no rows when there are none.  Recording writes rows ``0..k-1`` of the ``rec_*``
    arrays, each (rows, n); the return value is ``k``.
    """
    n = model.shape[0]
    s0 = step[0]
    n_chunks = (n + CHUNK - 1) // CHUNK
    # one flat view for the whole call; a reshape per beacon costs a reference count each
    ge_flat = ge_bad.reshape(-1)
    # one block (a validation instance): all its steps in one call (``_truck_range``);
    # several: one step a call, the blocks in parallel, the metrics' samples folded here
    # after each whole step (a leader may be in another block)
    per_call = max(n_steps, 1) if n_chunks == 1 else 1
    several = n_chunks > 1
    if several and s0 == 0 and in_metrics_window(0, env):
        sample_metrics(0, n, pos[0], speed[0], accel[0], leader, ppos, phys, metrics)
    for s in range(s0, s0 + n_steps, per_call):
        for c in prange(n_chunks):
            _truck_range(
                c * CHUNK,
                min(n, (c + 1) * CHUNK),
                s,
                per_call,
                s0,
                rec_every,
                rec_pos,
                rec_speed,
                rec_accel,
                rec_mode,
                rec_energy,
                rec_odd,
                rec_spat,
                model,
                leader,
                follower,
                head,
                psize,
                ppos,
                phys,
                ctrl,
                accp,
                pt,
                ch,
                outages,
                prof_t,
                prof_v,
                env,
                pos,
                speed,
                accel,
                u,
                mode,
                ctrl_mode,
                energy,
                rx_pred,
                rx_head,
                ge_flat,
                hist,
                collided_at,
                collision_speed,
                min_gap,
                min_ttc,
                hard_brakes,
                fallback_steps,
                emergency_steps,
                hz,
                rsus,
                hz_known,
                odd_flags,
                rsi_received_at,
                sg,
                sig_known,
                spat_phase,
                spat_received_at,
                signal_seen_at,
                red_light_stops,
                red_light_crossings,
                metrics,
            )
        if several and in_metrics_window(s + 1, env):
            nxt = (s + 1) & 1
            sample_metrics(0, n, pos[nxt], speed[nxt], accel[nxt], leader, ppos, phys, metrics)
    step[0] = s0 + n_steps
    return n_steps // rec_every if rec_every > 0 else 0


#: The step with the blocks of trucks spread over all cores.
run_steps = compiled_variant(run_steps_py, "run_steps", parallel=True)
#: The same step on one thread, for fleets of a few blocks: a threaded step opens a parallel
#: region per step, which costs more than the step of a small fleet (a validation instance
#: of five trucks: several microseconds per step).
run_steps_serial = compiled_variant(run_steps_py, "run_steps_serial")
#: Fleets at least this large use ``run_steps``.
PARALLEL_MIN_TRUCKS = 2 * CHUNK


#: The step of one instance, for ``run_instances`` (no reference counts: nothing allocates).
_run_one = compiled_variant(run_steps_py, "_run_one", **NO_REFCOUNTS)


@njit(cache=True, parallel=True, **NO_REFCOUNTS)
def run_instances(
    n_steps: int,
    rec_every: int,
    rec_pos: np.ndarray,
    rec_speed: np.ndarray,
    rec_accel: np.ndarray,
    rec_mode: np.ndarray,
    rec_energy: np.ndarray,
    rec_odd: np.ndarray,
    rec_spat: np.ndarray,
    model: np.ndarray,
    leader: np.ndarray,
    follower: np.ndarray,
    head: np.ndarray,
    psize: np.ndarray,
    ppos: np.ndarray,
    phys: np.ndarray,
    ctrl: np.ndarray,
    accp: np.ndarray,
    pt: np.ndarray,
    ch: np.ndarray,
    outages: np.ndarray,
    prof_t: np.ndarray,
    prof_v: np.ndarray,
    env: np.ndarray,
    hz: np.ndarray,
    rsus: np.ndarray,
    sg: np.ndarray,
    pos: np.ndarray,
    speed: np.ndarray,
    accel: np.ndarray,
    u: np.ndarray,
    mode: np.ndarray,
    ctrl_mode: np.ndarray,
    energy: np.ndarray,
    rx_pred: np.ndarray,
    rx_head: np.ndarray,
    ge_bad: np.ndarray,
    hist: np.ndarray,
    collided_at: np.ndarray,
    collision_speed: np.ndarray,
    min_gap: np.ndarray,
    min_ttc: np.ndarray,
    hard_brakes: np.ndarray,
    fallback_steps: np.ndarray,
    emergency_steps: np.ndarray,
    hz_known: np.ndarray,
    odd_flags: np.ndarray,
    rsi_received_at: np.ndarray,
    sig_known: np.ndarray,
    spat_phase: np.ndarray,
    spat_received_at: np.ndarray,
    signal_seen_at: np.ndarray,
    red_light_stops: np.ndarray,
    red_light_crossings: np.ndarray,
    metrics: np.ndarray,
    step: np.ndarray,
    rows: np.ndarray,
) -> None:
    """``run_steps_serial`` for B independent instances of the same shapes, parallel over
    instances: every argument is the stacked (B, ...) form of that argument of
    ``run_steps_py``, and instance b's run uses row b of each, exactly as a run of its own
    (its own world, channel, hazards and random draws). ``rows[b]`` receives the recorded
    row count that ``run_steps_py`` returns."""
    for b in prange(rec_pos.shape[0]):
        rows[b] = _run_one(
            n_steps,
            rec_every,
            rec_pos[b],
            rec_speed[b],
            rec_accel[b],
            rec_mode[b],
            rec_energy[b],
            rec_odd[b],
            rec_spat[b],
            model[b],
            leader[b],
            follower[b],
            head[b],
            psize[b],
            ppos[b],
            phys[b],
            ctrl[b],
            accp[b],
            pt[b],
            ch[b],
            outages[b],
            prof_t[b],
            prof_v[b],
            env[b],
            hz[b],
            rsus[b],
            sg[b],
            pos[b],
            speed[b],
            accel[b],
            u[b],
            mode[b],
            ctrl_mode[b],
            energy[b],
            rx_pred[b],
            rx_head[b],
            ge_bad[b],
            hist[b],
            collided_at[b],
            collision_speed[b],
            min_gap[b],
            min_ttc[b],
            hard_brakes[b],
            fallback_steps[b],
            emergency_steps[b],
            hz_known[b],
            odd_flags[b],
            rsi_received_at[b],
            sig_known[b],
            spat_phase[b],
            spat_received_at[b],
            signal_seen_at[b],
            red_light_stops[b],
            red_light_crossings[b],
            metrics[b],
            step[b],
        )
