"""The fast CACC step in JAX: vectorised over trucks, many steps per compiled call, and with
``jax.vmap`` over many independent lanes (scenario instances).

This is the sibling of ``kernel_fast.run_steps_cacc`` for XLA devices (the CPU here, a GPU on
the device machine). It runs the same regime, a uniform fleet on SUMO's CACC law in one lane
with beacons every step, and the same arithmetic in the same order: the law
(``sumo_cfm.cacc_mode``, ``cacc_control_speed``, ``cacc_cap`` and the ACC fallback),
``setSpeed`` for heads and ``finalizeSpeed`` for followers, Euler integration, energy with
the platoon drag multiplier, the beacon range and staleness, minimum gap and
time-to-collision, first contacts and the braking of collided trucks, hard brakes and
fallback steps. Each step is a pure function ``lane_step(params, layout, state, head_target)
-> state`` on ``(n,)`` arrays; the truck ahead is the same array shifted by one row. The heads'
speed profile is sampled on the host as the Numba steps sample it (``head_targets``), one
target per step, so that both drive the same speeds.

Two precisions:

* ``"float64"`` (needs ``jax_enable_x64``, switched on around each call): absolute
  positions, plain sums. It agrees with the Numba step to rounding
  (``tests/test_backend_jax.py`` states the figures).
* ``"float32"``: for a GPU. A float32 position 1,000 km down the road resolves only 6 cm
  (DESIGN.md), and ``x + v*dt`` there would round every step's advance to that grid. So a
  position is an int32 origin per platoon in whole metres (up to 2.1e6 km), plus a float32
  offset from it and a float32 compensation term that holds what the offset cannot. Each
  step a platoon's origin moves by the whole metres its head has advanced, so offsets stay
  within the platoon's length. The advance ``v*dt`` is summed exactly: ``dt`` is split into
  float32 parts and ``v`` into two halves of 12 significant bits, whose products are exact.
  Energy is summed with compensation too. What remains is float32 rounding in the law
  (relative 6e-8), and time stamps ``s*dt`` in float32 (4 ms at 10 h).

What the step does not keep of the engine's ``TruckState``: the beacon table's position,
acceleration, command and hazard rows (the law reads only the beacon's speed and time; they
come back as NaN), the previous step's row of the double-buffered arrays (both rows come back
as the current state), and ``u_mps2`` is the realised acceleration (in this regime
``setSpeed`` and ``finalizeSpeed`` never return a negative speed, so the two are equal).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numba import njit, prange

from convoy.sim.batch import fast_step_gaps
from convoy.sim.kernel import (
    ENV_AMBIENT_C,
    ENV_DT_S,
    ENV_GRADE,
    ENV_HARD_BRAKE_MPS2,
    ENV_PROFILE_LEAD_S,
    ENV_SPEED_LIMIT_MPS,
    profile_speed,
)
from convoy.sim.scenario import ScenarioError
from convoy.sim.state import (
    RX_ACCEL_MPS2,
    RX_HAZARD,
    RX_POS_M,
    RX_SPEED_MPS,
    RX_STAMP_S,
    RX_U_MPS2,
    TP_CD_A_M2,
    TP_CRR,
    TP_EMERGENCY_DECEL_MPS2,
    TP_LENGTH_M,
    TP_MASS_KG,
    TP_MAX_ACCEL_MPS2,
    TP_MAX_DECEL_MPS2,
    TP_MAX_SPEED_MPS,
    TruckState,
    TruckTable,
)
from convoy.vehicle.aero import (
    DRAG_COARSE_STEP_M,
    DRAG_FINE_END_M,
    DRAG_FINE_STEP_M,
    DRAG_KNOTS,
    DRAG_TABLE_END_M,
    HR_G0_M,
    HUSSEIN_RAKHA_TABLE,
    drag_row,
)
from convoy.vehicle.channel import CH_RANGE_M, CH_STALE_AFTER_S
from convoy.vehicle.controllers import MODE_ACC_FALLBACK, MODE_COLLIDED, MODE_HEAD
from convoy.vehicle.energy import (
    DI_IDLE_FUEL_KW,
    DI_MARGINAL_EFFICIENCY,
    EL_BATTERY_COLD_LOSS_PER_K,
    EL_BATTERY_REF_C,
    EL_COMFORT_C,
    EL_HEATING_KW_PER_K,
    EL_REGEN_EFFICIENCY,
    EL_REGEN_LIMIT_KW,
    KIND_ELECTRIC,
    PT_AUX_KW,
    PT_DRIVETRAIN_EFFICIENCY,
    PT_KIND,
    PT_ROTATING_MASS_FACTOR,
)
from convoy.vehicle.sumo_cfm import (
    ACC_COLLISION_AVOIDANCE_SPACE_GAIN,
    ACC_COLLISION_AVOIDANCE_SPEED_GAIN,
    ACC_GAP_CLOSING_SPACE_GAIN,
    ACC_GAP_CLOSING_SPEED_GAIN,
    ACC_GAP_CONTROL_GAP,
    ACC_GAP_MODE_SPACING_ERR,
    ACC_GAP_MODE_SPEED_ERR,
    ACC_GAP_SPACE_GAIN,
    ACC_GAP_SPEED_GAIN,
    ACC_MARGIN_MAX,
    ACC_MARGIN_OFFSET,
    ACC_MARGIN_SPEED_COEF,
    ACC_SPEED_CONTROL_GAIN,
    ACC_SPEED_CONTROL_GAP,
    ACC_TIME_GAP,
    CACC_ACC_OFFSET,
    CACC_COLLISION_AVOIDANCE_GAP_DOT_GAIN,
    CACC_COLLISION_AVOIDANCE_GAP_GAIN,
    CACC_DECEL,
    CACC_EMERGENCY_DECEL,
    CACC_EMERGENCY_THRESHOLD,
    CACC_GAP_CLOSING_GAP_DOT_GAIN,
    CACC_GAP_CLOSING_GAP_GAIN,
    CACC_GAP_CONTROL_TIME_GAP,
    CACC_GAP_GAP_DOT_GAIN,
    CACC_GAP_GAP_GAIN,
    CACC_GAP_MODE_SPACING_ERR,
    CACC_GAP_MODE_SPEED_ERR,
    CACC_MIN_GAP,
    CACC_PRED_DECEL,
    CACC_SPEED_CONTROL_GAIN,
    CACC_SPEED_CONTROL_MIN_GAP,
    CACC_SPEED_CONTROL_TIME_GAP,
    CACC_TIME_GAP,
    MODE_COLLISION_AVOIDANCE,
    MODE_GAP,
    MODE_GAP_CLOSING,
    MODE_SPEED,
    NO_LEADER_GAP_M,
    NUMERICAL_EPS,
)
from convoy.vehicle.truck import GRAVITY_MPS2, ORDOS_AIR_DENSITY_KGPM3

Precision = Literal["float64", "float32"]
PRECISIONS: tuple[Precision, ...] = ("float64", "float32")

# The same conversions as convoy.vehicle.energy (W per kW, J per kWh).
_W_PER_KW = 1_000.0
_J_PER_KWH = 3.6e6
# Knots of the fine part of the drag table (aero.DRAG_KNOTS).
_N_FINE = round(DRAG_FINE_END_M / DRAG_FINE_STEP_M)
# Keeps the sign, the exponent and 11 of float32's 23 mantissa bits: 12 significant bits,
# so that the product of two such numbers is exact in float32.
_HIGH_12_BITS = np.uint32(0xFFFFF000)


# ---------------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------------
class LaneParams(NamedTuple):
    """Parameters of one lane (one scenario instance): the fleet is uniform, so each is a
    scalar (0-d array of the run's float type), batched to ``(B,)`` under ``vmap``.

    Attributes:
        dt_s: step length [s].
        dt_parts_s: (3,) float32 parts of ``dt_s`` whose sum is ``dt_s`` to 4e-15 of it, the
            first two of 12 significant bits (float32 mode's exact advance); unused in float64.
        length_m, max_accel_mps2, max_decel_mps2, emergency_decel_mps2: the truck's.
        max_speed_mps: ``min(truck max speed, road speed limit)``.
        mass_kg, cd_a_m2, crr: the truck's, for the energy.
        grade: road grade, rise over run [-]; ambient_c: air temperature [°C].
        range_m: beacon range [m]; stale_after_s: a beacon older than this is stale [s].
        hard_brake_mps2: a deceleration beyond this starts a hard brake.
        ctrl: (CACC_VECTOR_SIZE,) ``SumoCaccParams.to_vector()``.
        pt: (PT_VECTOR_LEN,) powertrain vector.

    The heads' speed profile is not here: it reaches the step as an input, one target speed
    per step (``head_targets``).
    """

    dt_s: jax.Array
    dt_parts_s: jax.Array
    length_m: jax.Array
    max_accel_mps2: jax.Array
    max_decel_mps2: jax.Array
    emergency_decel_mps2: jax.Array
    max_speed_mps: jax.Array
    mass_kg: jax.Array
    cd_a_m2: jax.Array
    crr: jax.Array
    grade: jax.Array
    ambient_c: jax.Array
    range_m: jax.Array
    stale_after_s: jax.Array
    hard_brake_mps2: jax.Array
    ctrl: jax.Array
    pt: jax.Array


class LaneLayout(NamedTuple):
    """Who is who in a lane of n trucks, the same in every instance of a batch.

    Attributes:
        follows: (n,) bool, the truck is a platoon follower (a head drives the profile).
        drag_row: (n,) int32 row of the drag table (``aero.drag_row``), -1 for a solo truck.
    """

    follows: jax.Array
    drag_row: jax.Array


class LaneState(NamedTuple):
    """State of one lane of n trucks in P platoons of k (n = P*k, platoon q in rows
    ``q*k .. q*k+k-1``, head first, platoon 0 in front). Float fields have the run's type.

    Attributes:
        origin_m: (P,) int32 origin of each platoon's positions [m] (0 in float64 mode).
        pos_m: (n,) front-bumper position relative to the platoon's origin [m].
        pos_err_m: (n,) what ``pos_m`` cannot hold (float32 mode; 0 in float64) [m].
        speed_mps, accel_mps2: (n,) speed and realised acceleration of the last step.
        mode, ctrl_mode: (n,) int8 mode shown and the law's own mode (``TruckState``).
        energy_kwh, energy_err_kwh: (n,) energy drawn, and its compensation (float32).
        rx_speed_mps, rx_stamp_s: (n,) speed and time of the newest beacon from the truck
            ahead (-inf: none yet).
        collided_at_s, collision_speed_mps: (n,) first contact [s] (NaN: none), closing speed.
        min_gap_m, min_ttc_s: (n,) smallest gap and time-to-collision seen (inf: none).
        min_accel_mps2: (n,) most negative acceleration of any step (0 at the start).
        hard_brakes, fallback_steps: (n,) int32 counts.
        step: () int32 steps taken.
    """

    origin_m: jax.Array
    pos_m: jax.Array
    pos_err_m: jax.Array
    speed_mps: jax.Array
    accel_mps2: jax.Array
    mode: jax.Array
    ctrl_mode: jax.Array
    energy_kwh: jax.Array
    energy_err_kwh: jax.Array
    rx_speed_mps: jax.Array
    rx_stamp_s: jax.Array
    collided_at_s: jax.Array
    collision_speed_mps: jax.Array
    min_gap_m: jax.Array
    min_ttc_s: jax.Array
    min_accel_mps2: jax.Array
    hard_brakes: jax.Array
    fallback_steps: jax.Array
    step: jax.Array


class Records(NamedTuple):
    """Rows recorded every ``rec_every`` steps, each ``(rows, n)`` (origin ``(rows, P)``).
    ``pos_err_m`` and ``origin_m`` are zeros in float64 mode."""

    origin_m: jax.Array
    pos_m: jax.Array
    pos_err_m: jax.Array
    speed_mps: jax.Array
    accel_mps2: jax.Array
    mode: jax.Array
    energy_kwh: jax.Array


# ---------------------------------------------------------------------------------------------
# SUMO's CACC law (sumo_cfm), elementwise: every branch computed, one selected
# ---------------------------------------------------------------------------------------------
def _brake_gap_euler(speed: jax.Array, decel: jax.Array, dt: jax.Array) -> jax.Array:
    reduction = decel * dt
    steps = jnp.floor(speed / reduction)
    return dt * (steps * speed - reduction * steps * (steps + 1.0) / 2.0)


def _safe_stop_speed_euler(
    gap: jax.Array, decel: jax.Array, headway: jax.Array, dt: jax.Array
) -> jax.Array:
    g = gap - NUMERICAL_EPS
    b = decel * dt
    t = headway
    s = dt
    n = jnp.floor(
        0.5 - ((t + (jnp.sqrt((s * s) + (4.0 * ((s * (2.0 * g / b - t)) + (t * t)))) * -0.5)) / s)
    )
    h = 0.5 * n * (n - 1.0) * b * s + n * b * t
    stopped = g < 0.0
    r = (g - h) / jnp.where(stopped, 1.0, n * s + t)
    return jnp.where(stopped, 0.0, n * b + r)


def _safe_follow_speed(
    p: jax.Array, net_gap: jax.Array, v: jax.Array, pv: jax.Array, dt: jax.Array
) -> jax.Array:
    """``maximum_safe_follow_speed`` as CACC calls it (``on_insertion`` True)."""
    decel = p[CACC_DECEL]
    bg = _brake_gap_euler(pv, jnp.maximum(decel, p[CACC_PRED_DECEL]), dt)
    x_stop = _safe_stop_speed_euler(net_gap + bg, decel, p[CACC_TIME_GAP], dt)
    x_overlap = jnp.maximum(v - p[CACC_EMERGENCY_DECEL] * dt, 0.0)
    return jnp.where(net_gap >= 0.0, x_stop, x_overlap)


def _cacc_mode(
    p: jax.Array,
    v: jax.Array,
    gap: jax.Array,
    coop: jax.Array,
    v_des: jax.Array,
    mode: jax.Array,
) -> jax.Array:
    """``sumo_cfm.cacc_mode`` (int32)."""
    net_gap = gap - p[CACC_MIN_GAP]
    v_err = v - v_des
    time_gap = net_gap / jnp.maximum(NUMERICAL_EPS, v)
    spacing_err = net_gap - p[CACC_TIME_GAP] * v
    speed_control = (time_gap > p[CACC_SPEED_CONTROL_TIME_GAP]) & (
        spacing_err > p[CACC_SPEED_CONTROL_MIN_GAP]
    )
    use_gap = (~speed_control) & ((time_gap < p[CACC_GAP_CONTROL_TIME_GAP]) | (mode != MODE_SPEED))
    near = (
        (spacing_err > 0.0)
        & (spacing_err < p[CACC_GAP_MODE_SPACING_ERR])
        & (v_err < p[CACC_GAP_MODE_SPEED_ERR])
    )
    inside = spacing_err < 0.0
    gap_mode = jnp.where(
        near, MODE_GAP, jnp.where(inside, MODE_COLLISION_AVOIDANCE, MODE_GAP_CLOSING)
    )
    gap_mode = jnp.where(coop, gap_mode, MODE_ACC_FALLBACK)
    free = ~(gap < NO_LEADER_GAP_M)
    return jnp.where(use_gap & ~free, gap_mode, MODE_SPEED).astype(jnp.int32)


def _acc_fallback_speed(
    p: jax.Array, gap: jax.Array, v: jax.Array, pv: jax.Array, v_des: jax.Array, dt: jax.Array
) -> jax.Array:
    """``sumo_cfm._acc_v`` of the CACC's ACC fallback, which always sees "speed control
    before" (``cacc_next_speed``)."""
    o = CACC_ACC_OFFSET
    net_gap = gap - p[CACC_MIN_GAP]
    v_err = v - v_des
    use_gap = ~(net_gap > p[o + ACC_SPEED_CONTROL_GAP]) & (net_gap < p[o + ACC_GAP_CONTROL_GAP])
    delta_v = pv - v
    d0_moving = jnp.maximum(
        0.0,
        jnp.minimum(
            p[o + ACC_MARGIN_SPEED_COEF] / jnp.where(v > 0.0, v, 1.0) - p[o + ACC_MARGIN_OFFSET],
            p[o + ACC_MARGIN_MAX],
        ),
    )
    d0 = jnp.where(v > 0.0, d0_moving, jnp.maximum(0.0, p[o + ACC_MARGIN_MAX]))
    spacing_err = net_gap - p[o + ACC_TIME_GAP] * v - d0
    near = (jnp.abs(spacing_err) < p[o + ACC_GAP_MODE_SPACING_ERR]) & (
        jnp.abs(v_err) < p[o + ACC_GAP_MODE_SPEED_ERR]
    )
    a_gap = p[o + ACC_GAP_SPEED_GAIN] * delta_v + p[o + ACC_GAP_SPACE_GAIN] * spacing_err
    a_avoid = (
        p[o + ACC_COLLISION_AVOIDANCE_SPEED_GAIN] * delta_v
        + p[o + ACC_COLLISION_AVOIDANCE_SPACE_GAIN] * spacing_err
    )
    a_closing = (
        p[o + ACC_GAP_CLOSING_SPEED_GAIN] * delta_v
        + p[o + ACC_GAP_CLOSING_SPACE_GAIN] * spacing_err
    )
    a_gap_law = jnp.where(near, a_gap, jnp.where(spacing_err < 0.0, a_avoid, a_closing))
    accel = jnp.where(use_gap, a_gap_law, p[o + ACC_SPEED_CONTROL_GAIN] * v_err)
    return jnp.maximum(0.0, v + accel * dt)


def _cacc_control_speed(
    p: jax.Array,
    v: jax.Array,
    a: jax.Array,
    gap: jax.Array,
    pv: jax.Array,
    v_des: jax.Array,
    dt: jax.Array,
    mode: jax.Array,
    v_fallback: jax.Array,
) -> jax.Array:
    """``sumo_cfm.cacc_control_speed``, with its gain blend."""
    net_gap = gap - p[CACC_MIN_GAP]
    tau = p[CACC_TIME_GAP]
    v_err = v - v_des
    spacing_err = net_gap - tau * v
    speed_err = pv - v - tau * a
    closing = jnp.where(mode > MODE_GAP, 1.0, 0.0)
    avoid = jnp.where(mode > MODE_GAP_CLOSING, 1.0, 0.0)
    k_gap = avoid * p[CACC_COLLISION_AVOIDANCE_GAP_GAIN] + (1.0 - avoid) * (
        closing * p[CACC_GAP_CLOSING_GAP_GAIN] + (1.0 - closing) * p[CACC_GAP_GAP_GAIN]
    )
    k_dot = avoid * p[CACC_COLLISION_AVOIDANCE_GAP_DOT_GAIN] + (1.0 - avoid) * (
        closing * p[CACC_GAP_CLOSING_GAP_DOT_GAIN] + (1.0 - closing) * p[CACC_GAP_GAP_DOT_GAIN]
    )
    v_new = v + k_gap * spacing_err + k_dot * speed_err
    v_speed = v + p[CACC_SPEED_CONTROL_GAIN] * v_err * dt
    v_new = jnp.where(mode < MODE_GAP, v_speed, v_new)
    v_new = jnp.where(mode > MODE_COLLISION_AVOIDANCE, v_fallback, v_new)
    accel01 = (v_new - v) * 10.0
    v_rescaled = v + accel01 * dt
    return jnp.maximum(0.0, jnp.where(dt * 1000.0 < 99.5, v_rescaled, v_new))


def _cacc_cap(
    p: jax.Array,
    v: jax.Array,
    gap: jax.Array,
    pv: jax.Array,
    v_des: jax.Array,
    dt: jax.Array,
    v_cacc: jax.Array,
) -> jax.Array:
    """``sumo_cfm.cacc_cap``."""
    net_gap = gap - p[CACC_MIN_GAP]
    v_safe = _safe_follow_speed(p, net_gap, v, pv, dt)
    override = jnp.minimum(p[CACC_EMERGENCY_THRESHOLD], net_gap)
    v_capped = jnp.where(v_safe + override < v_cacc, jnp.maximum(0.0, v_safe + override), v_cacc)
    return jnp.where(~(gap < NO_LEADER_GAP_M), v_des, v_capped)


def _finalize_speed(
    v: jax.Array,
    v_pos_in: jax.Array,
    a_max: jax.Array,
    b_max: jax.Array,
    b_emg: jax.Array,
    v_lim: jax.Array,
    dt: jax.Array,
) -> jax.Array:
    """``sumo_cfm.sumo_finalize_speed``."""
    max_next = jnp.minimum(v + a_max * dt, v_lim)
    v_pos = jnp.minimum(jnp.minimum(max_next, v_lim), v_pos_in)
    v_min_emergency = jnp.maximum(v - b_emg * dt, 0.0)
    v_min = jnp.minimum(jnp.maximum(v - b_max * dt, 0.0), jnp.maximum(v_pos, v_min_emergency))
    v_next = jnp.maximum(v_min, v_pos)  # SUMO's bound by the lane's max speed: as there
    v_next = jnp.where(jnp.abs(v_next) < 0.1 * NUMERICAL_EPS * dt, 0.0, v_next)
    return jnp.maximum(v_next, 0.0)


def _set_speed(
    v: jax.Array,
    cmd: jax.Array,
    a_max: jax.Array,
    b_max: jax.Array,
    dt: jax.Array,
    v_lim: jax.Array,
) -> jax.Array:
    """``sumo_cfm.sumo_set_speed``."""
    v_top = jnp.minimum(v + a_max * dt, v_lim)
    v_min = jnp.maximum(0.0, v - b_max * dt)
    return jnp.maximum(jnp.minimum(cmd, v_top), v_min)


# ---------------------------------------------------------------------------------------------
# Drag and energy (aero.drag_multiplier_row, energy.step_energy_kwh_unchecked)
# ---------------------------------------------------------------------------------------------
def _drag_multiplier(row: jax.Array, gap: jax.Array, dtype: Any) -> jax.Array:
    knots = jnp.asarray(DRAG_KNOTS, dtype)
    g0 = jnp.asarray(HUSSEIN_RAKHA_TABLE[:, HR_G0_M], dtype)
    r = jnp.maximum(row, 0)
    fine = gap < DRAG_FINE_END_M
    x = jnp.where(
        fine,
        gap * (1.0 / DRAG_FINE_STEP_M),
        (gap - DRAG_FINE_END_M) * (1.0 / DRAG_COARSE_STEP_M) + _N_FINE,
    )
    top = knots.shape[1] - 2.0
    x = jnp.where(x >= 0.0, x, 0.0)
    x = jnp.where(x <= top, x, top)
    k = x.astype(jnp.int32)
    w = x - k
    lo = knots[r, k]
    frac = jnp.minimum(lo + w * (knots[r, k + 1] - lo), 1.0)
    inside = (row >= 0) & (gap > 0.0) & (gap < g0[r]) & (gap < DRAG_TABLE_END_M)
    return jnp.where(inside, frac, 1.0)


def _step_energy_kwh(
    lp: LaneParams, speed: jax.Array, accel: jax.Array, drag_mult: jax.Array
) -> jax.Array:
    pt = lp.pt
    mass = lp.mass_kg
    grade = lp.grade
    ambient = lp.ambient_c
    # truck.road_load_force_n and tractive_force_n
    cos_theta = 1.0 / jnp.sqrt(1.0 + grade * grade)
    sin_theta = grade * cos_theta
    weight_n = mass * GRAVITY_MPS2
    rolling_n = lp.crr * weight_n * cos_theta
    grade_n = weight_n * sin_theta
    aero_n = 0.5 * ORDOS_AIR_DENSITY_KGPM3 * lp.cd_a_m2 * drag_mult * speed * jnp.abs(speed)
    inertia_n = pt[PT_ROTATING_MASS_FACTOR] * mass * accel
    wheel_w = (inertia_n + (rolling_n + grade_n + aero_n)) * speed
    per_eta_drive = 1.0 / pt[PT_DRIVETRAIN_EFFICIENCY]
    per_eta_marginal = 1.0 / pt[DI_MARGINAL_EFFICIENCY]
    kwh_per_ws = lp.dt_s / _J_PER_KWH
    aux_w = pt[PT_AUX_KW] * _W_PER_KW
    electric = pt[PT_KIND] == KIND_ELECTRIC
    # electric: traction, or regen capped at its limit; auxiliaries and heating; cold battery
    traction_w = wheel_w * per_eta_drive
    regen_w = jnp.maximum(wheel_w * pt[EL_REGEN_EFFICIENCY], -pt[EL_REGEN_LIMIT_KW] * _W_PER_KW)
    motor_w = jnp.where(wheel_w >= 0.0, traction_w, regen_w)
    heating = pt[EL_HEATING_KW_PER_K] * jnp.maximum(0.0, pt[EL_COMFORT_C] - ambient)
    heating_kw = jnp.where(electric, heating, 0.0)
    terminal_w = motor_w + (pt[PT_AUX_KW] + heating_kw) * _W_PER_KW
    loss = pt[EL_BATTERY_COLD_LOSS_PER_K] * jnp.maximum(0.0, pt[EL_BATTERY_REF_C] - ambient)
    eta_cold = jnp.where(electric, jnp.maximum(1.0 - loss, 0.5), 1.0)
    per_eta_cold = 1.0 / eta_cold
    battery_w = jnp.where(terminal_w > 0.0, terminal_w * per_eta_cold, terminal_w * eta_cold)
    electric_kwh = battery_w * kwh_per_ws
    # diesel: Willans line, fuel cut-off while braking
    engine_w = traction_w + aux_w
    fuel_w = pt[DI_IDLE_FUEL_KW] * _W_PER_KW + engine_w * per_eta_marginal
    diesel_kwh = jnp.where(wheel_w >= 0.0, fuel_w * kwh_per_ws, 0.0)
    return jnp.where(electric, electric_kwh, diesel_kwh)


# ---------------------------------------------------------------------------------------------
# Compensated sums (float32 mode)
# ---------------------------------------------------------------------------------------------
def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``s = fl(a + b)`` and its exact rounding error (Knuth's TwoSum: no branches, no
    products, so FMA contraction cannot change it)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _add_compensated(x: jax.Array, err: jax.Array, d: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``x + err`` advanced by ``d``, renormalised so that ``err`` stays below an ulp of x."""
    s, e = _two_sum(x, d)
    return _two_sum(s, err + e)


def _high12(v: jax.Array) -> jax.Array:
    """``v`` cut to 12 significant bits (float32)."""
    bits = jax.lax.bitcast_convert_type(v, jnp.uint32) & _HIGH_12_BITS
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _advance_exact(
    x: jax.Array, err: jax.Array, v: jax.Array, dt_parts: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``x + err + v*dt`` in float32 with the product kept to ~1e-14 relative: 12-bit halves
    of ``v`` times the 12-bit parts of ``dt`` are exact in float32."""
    v_hi = _high12(v)
    v_lo = v - v_hi
    dt_a, dt_b, dt_c = dt_parts[0], dt_parts[1], dt_parts[2]
    small = ((v * dt_c + v_lo * dt_b) + v_lo * dt_a) + v_hi * dt_b
    x, err = _add_compensated(x, err, v_hi * dt_a)
    return _add_compensated(x, err, small)


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------
def _ahead(a: jax.Array, fill: Any) -> jax.Array:
    """The value of the truck ahead (row i-1); ``fill`` for the first truck."""
    return jnp.concatenate([jnp.full((1,), fill, a.dtype), a[:-1]])


def _behind(a: jax.Array, fill: Any) -> jax.Array:
    """The value of the truck behind (row i+1); ``fill`` for the last truck."""
    return jnp.concatenate([a[1:], jnp.full((1,), fill, a.dtype)])


def _per_truck(per_platoon: jax.Array, k: int) -> jax.Array:
    """A (P,) value per platoon as (P*k,) per truck (a broadcast, which fuses)."""
    return jnp.broadcast_to(per_platoon[:, None], (per_platoon.shape[0], k)).reshape(-1)


def lane_step(
    lp: LaneParams, lay: LaneLayout, st: LaneState, head_target: jax.Array, *, relative: bool
) -> LaneState:
    """One step of a lane: ``kernel_fast``'s sense, law, integrate and account, for all trucks
    at once.

    Args:
        lp, lay, st: the lane's parameters, layout and state.
        head_target: () the speed the profile asks of the heads in this step [m/s] (negative:
            no profile, heads keep their speed), from ``head_targets``.
        relative: float32 positions (origins, offsets, compensation, see the module
            docstring); otherwise plain absolute positions.
    """
    f = st.speed_mps.dtype
    n = st.speed_mps.shape[0]
    k = n // st.origin_m.shape[0]
    dt = lp.dt_s
    s = st.step
    t = s.astype(f) * dt
    idx = jnp.arange(n)
    has_ahead = idx > 0
    has_behind = idx < n - 1
    follows = lay.follows
    length = lp.length_m
    x, x_err = st.pos_m, st.pos_err_m
    v, a = st.speed_mps, st.accel_mps2
    v_lim = lp.max_speed_mps

    # sense: gap to the truck ahead, distance to the truck behind
    if relative:
        origin = _per_truck(st.origin_m, k)
        d_ahead = (_ahead(origin, 0) - origin).astype(f) + (
            (_ahead(x, 0.0) - x) + (_ahead(x_err, 0.0) - x_err)
        )
        gap_raw = d_ahead - length
        d_behind = (origin - _behind(origin, 0)).astype(f) + (
            (x - _behind(x, 0.0)) + (x_err - _behind(x_err, 0.0))
        )
        head_gap_raw = d_behind - length
    else:
        x_ahead = _ahead(x, 0.0)
        gap_raw = x_ahead - length - x
        d_ahead = x_ahead - x
        head_gap_raw = x - length - _behind(x, 0.0)
    gap = jnp.where(has_ahead, gap_raw, jnp.inf)
    pv = jnp.where(has_ahead, _ahead(v, 0.0), v)
    closing = v - pv

    # account: minimum gap and time-to-collision, first contacts (own, then the truck ahead's)
    min_gap = jnp.where(has_ahead & (gap < st.min_gap_m), gap, st.min_gap_m)
    ttc = jnp.maximum(gap, 0.0) / jnp.where(closing > 1e-9, closing, 1.0)
    min_ttc = jnp.where(has_ahead & (closing > 1e-9) & (ttc < st.min_ttc_s), ttc, st.min_ttc_s)
    contact = has_ahead & (gap < 0.0) & jnp.isnan(st.collided_at_s)
    hit_speed = jnp.maximum(closing, 0.0)
    collided_at = jnp.where(contact, t, st.collided_at_s)
    collision_speed = jnp.where(contact, hit_speed, st.collision_speed_mps)
    hit_from_behind = _behind(contact, False) & jnp.isnan(collided_at)
    collided_at = jnp.where(hit_from_behind, t, collided_at)
    collision_speed = jnp.where(hit_from_behind, _behind(hit_speed, 0.0), collision_speed)
    # a truck in contact, or collided before, brakes as hard as it may
    collided = ~jnp.isnan(st.collided_at_s) | (has_ahead & (gap < 0.0))

    # receive: the beacon of the truck ahead when in range; stale after stale_after_s
    heard = follows & (jnp.abs(d_ahead) <= lp.range_m)
    rx_speed = jnp.where(heard, pv, st.rx_speed_mps)
    rx_stamp = jnp.where(heard, t, st.rx_stamp_s)
    fresh = (t - rx_stamp) <= lp.stale_after_s

    # control: SUMO's CACC on the beacon's speed; ACC fallback on a stale one; heads cap the
    # profile with the law behind the platoon ahead
    coop = ~follows | fresh
    pred_v = jnp.where(follows & fresh, rx_speed, pv)
    p = lp.ctrl
    mk = _cacc_mode(p, v, gap, coop, v_lim, st.ctrl_mode)
    v_fb = _acc_fallback_speed(p, gap, v, pv, v_lim, dt)
    v_ctl = _cacc_control_speed(p, v, a, gap, pred_v, v_lim, dt, mk, v_fb)
    v_law = _cacc_cap(p, v, gap, pred_v, v_lim, dt, v_ctl)
    target = jnp.minimum(jnp.where(head_target >= 0.0, head_target, v), v_law)
    v_head = _set_speed(
        v, jnp.where(collided, -1.0, target), lp.max_accel_mps2, lp.max_decel_mps2, dt, v_lim
    )
    v_follow = _finalize_speed(
        v,
        jnp.where(collided, -1.0, v_law),
        lp.max_accel_mps2,
        lp.max_decel_mps2,
        lp.emergency_decel_mps2,
        v_lim,
        dt,
    )
    v_fin = jnp.where(follows, v_follow, v_head)
    mode = jnp.where(follows, jnp.where(fresh, mk, MODE_ACC_FALLBACK), MODE_HEAD)
    mode = jnp.where(collided, MODE_COLLIDED, mode).astype(jnp.int8)
    ctrl_mode = jnp.where(collided | ~has_ahead, st.ctrl_mode, mk.astype(jnp.int8))
    fallback = st.fallback_steps + (follows & ~fresh & ~collided).astype(jnp.int32)

    # actuate and integrate as SUMO does
    u_cmd = (v_fin - v) * (1.0 / dt)  # sumo_cfm's step 5
    stopped = v_fin < 0.0
    v_new = jnp.where(stopped, 0.0, v_fin)
    a_new = jnp.where(stopped, -v / dt, u_cmd)
    origin_new = st.origin_m
    if relative:
        x_new, x_err_new = _advance_exact(x, x_err, v_new, lp.dt_parts_s)
        # move each platoon's origin by the whole metres its head has gone
        shift = jnp.floor(x_new.reshape(-1, k)[:, 0])
        origin_new = st.origin_m + shift.astype(jnp.int32)
        x_new, e = _two_sum(x_new, -_per_truck(shift, k))
        x_new, x_err_new = _two_sum(x_new, x_err_new + e)
    else:
        x_new, x_err_new = x + v_new * dt, x_err

    # account: energy with the drag of the own gap (a head: the gap behind it)
    head_gap = jnp.where(has_behind, head_gap_raw, jnp.inf)
    drag_gap = jnp.where(follows, gap, head_gap)
    cd_frac = _drag_multiplier(lay.drag_row, drag_gap, f)
    e_kwh = _step_energy_kwh(lp, 0.5 * (v + v_new), a_new, cd_frac)
    if relative:
        energy, energy_err = _add_compensated(st.energy_kwh, st.energy_err_kwh, e_kwh)
    else:
        energy, energy_err = st.energy_kwh + e_kwh, st.energy_err_kwh
    hard = -lp.hard_brake_mps2
    hard_brakes = st.hard_brakes + ((a_new < hard) & (a >= hard)).astype(jnp.int32)

    return LaneState(
        origin_m=origin_new,
        pos_m=x_new,
        pos_err_m=x_err_new,
        speed_mps=v_new,
        accel_mps2=a_new,
        mode=mode,
        ctrl_mode=ctrl_mode,
        energy_kwh=energy,
        energy_err_kwh=energy_err,
        rx_speed_mps=rx_speed,
        rx_stamp_s=rx_stamp,
        collided_at_s=collided_at,
        collision_speed_mps=collision_speed,
        min_gap_m=min_gap,
        min_ttc_s=min_ttc,
        min_accel_mps2=jnp.minimum(st.min_accel_mps2, a_new),
        hard_brakes=hard_brakes,
        fallback_steps=fallback,
        step=s + 1,
    )


def _advance(
    lp: LaneParams,
    lay: LaneLayout,
    st: LaneState,
    targets: jax.Array,
    first: jax.Array,
    n_steps: jax.Array,
    relative: bool,
    unroll: int = 1,
) -> LaneState:
    """``n_steps`` steps from ``targets[first]``; ``unroll`` steps per loop iteration (the
    same steps: XLA may fuse across them), the remainder one at a time."""
    last = targets.shape[0] - 1

    def step(k: jax.Array, s: LaneState) -> LaneState:
        return lane_step(lp, lay, s, targets[jnp.minimum(first + k, last)], relative=relative)

    def body(i: jax.Array, s: LaneState) -> LaneState:
        for j in range(unroll):
            s = step(i * unroll + j, s)
        return s

    whole = n_steps // unroll
    st = jax.lax.fori_loop(0, whole, body, st)
    if unroll == 1:
        return st
    return jax.lax.fori_loop(whole * unroll, n_steps, step, st)


@partial(jax.jit, static_argnames=("relative",))
def advance(
    lp: LaneParams,
    lay: LaneLayout,
    st: LaneState,
    targets: jax.Array,
    n_steps: jax.Array,
    *,
    relative: bool,
) -> LaneState:
    """``n_steps`` steps of one lane in one compiled call; step k drives the heads at
    ``targets[k]`` (the last one past the end). ``n_steps`` is traced: other counts reuse
    the compiled loop."""
    return _advance(lp, lay, st, targets, jnp.int32(0), n_steps, relative)


@partial(jax.jit, static_argnames=("relative", "shared_params", "unroll"))
def advance_lanes(
    lp: LaneParams,
    lay: LaneLayout,
    st: LaneState,
    targets: jax.Array,
    n_steps: jax.Array,
    *,
    relative: bool,
    shared_params: bool = False,
    unroll: int = 1,
) -> LaneState:
    """``advance`` over a batch of independent lanes: every array of ``st`` has a leading
    instance axis (B, ...), and so have every array of ``lp`` and ``targets`` (B, m) unless
    ``shared_params`` (one set of parameters and targets for all lanes); the layout is
    shared. ``unroll``: steps per loop iteration (the results do not change)."""
    axis = None if shared_params else 0

    def one(p: LaneParams, s: LaneState, tg: jax.Array) -> LaneState:
        return _advance(p, lay, s, tg, jnp.int32(0), n_steps, relative, unroll)

    return jax.vmap(one, in_axes=(axis, 0, axis))(lp, st, targets)


def _record(st: LaneState) -> Records:
    return Records(
        origin_m=st.origin_m,
        pos_m=st.pos_m,
        pos_err_m=st.pos_err_m,
        speed_mps=st.speed_mps,
        accel_mps2=st.accel_mps2,
        mode=st.mode,
        energy_kwh=st.energy_kwh + st.energy_err_kwh,
    )


@partial(jax.jit, static_argnames=("relative", "rows_cap"))
def advance_recording(
    lp: LaneParams,
    lay: LaneLayout,
    st: LaneState,
    targets: jax.Array,
    n_steps: jax.Array,
    rec_every: jax.Array,
    *,
    relative: bool,
    rows_cap: int,
) -> tuple[LaneState, Records]:
    """``advance``, recording a row after every ``rec_every``-th step: ``n_steps //
    rec_every`` rows (at most ``rows_cap``, the records' first dimension)."""
    n_rows = jnp.minimum(n_steps // rec_every, rows_cap)
    zero = _record(st)
    recs = Records(*(jnp.zeros((rows_cap, *r.shape), r.dtype) for r in zero))

    def one_row(r: jax.Array, carry: tuple[LaneState, Records]) -> tuple[LaneState, Records]:
        s, out = carry
        s = _advance(lp, lay, s, targets, r * rec_every, rec_every, relative)
        row = _record(s)
        return s, Records(*(o.at[r].set(v) for o, v in zip(out, row, strict=True)))

    st, recs = jax.lax.fori_loop(0, n_rows, one_row, (st, recs))
    done = n_rows * rec_every
    st = _advance(lp, lay, st, targets, done, n_steps - done, relative)
    return st, recs


# ---------------------------------------------------------------------------------------------
# From the engine's arrays, and back
# ---------------------------------------------------------------------------------------------
def _float_type(precision: Precision) -> Any:
    if precision not in PRECISIONS:
        raise ScenarioError(f"precision = {precision!r}; allowed: {', '.join(PRECISIONS)}")
    return np.float64 if precision == "float64" else np.float32


def dt_parts(dt_s: float) -> np.ndarray:
    """(3,) float32 parts of ``dt_s``: two of 12 significant bits and the rest, summing to
    ``dt_s`` within 2**-48 of it."""
    a = np.float32(dt_s).view(np.uint32) & _HIGH_12_BITS
    dt_a = a.view(np.float32)
    b = np.float32(dt_s - float(dt_a)).view(np.uint32) & _HIGH_12_BITS
    dt_b = b.view(np.float32)
    dt_c = np.float32(dt_s - float(dt_a) - float(dt_b))
    return np.array([dt_a, dt_b, dt_c], np.float32)


def lane_params_np(table: TruckTable, world: Any, precision: Precision) -> dict[str, np.ndarray]:
    """``LaneParams`` fields as NumPy arrays of the precision's type, from row 0 of a uniform
    table and the world (``engine.World``)."""
    rows = lane_params_rows(
        table.phys[:1],
        world.env[None],
        world.channel[None],
        table.ctrl[:1],
        table.powertrain[:1],
        precision,
    )
    return {key: val[0] for key, val in rows.items()}


def lane_params_rows(
    phys0: np.ndarray,
    env: np.ndarray,
    ch: np.ndarray,
    ctrl0: np.ndarray,
    pt0: np.ndarray,
    precision: Precision,
) -> dict[str, np.ndarray]:
    """``LaneParams`` fields of B instances, each (B, ...), from their stacked rows: a truck's
    ``phys``, ``ctrl`` and ``powertrain`` row, the world's ``env`` and ``channel``."""
    f = _float_type(precision)
    vals = {
        "dt_s": env[:, ENV_DT_S],
        "length_m": phys0[:, TP_LENGTH_M],
        "max_accel_mps2": phys0[:, TP_MAX_ACCEL_MPS2],
        "max_decel_mps2": phys0[:, TP_MAX_DECEL_MPS2],
        "emergency_decel_mps2": phys0[:, TP_EMERGENCY_DECEL_MPS2],
        "max_speed_mps": np.minimum(phys0[:, TP_MAX_SPEED_MPS], env[:, ENV_SPEED_LIMIT_MPS]),
        "mass_kg": phys0[:, TP_MASS_KG],
        "cd_a_m2": phys0[:, TP_CD_A_M2],
        "crr": phys0[:, TP_CRR],
        "grade": env[:, ENV_GRADE],
        "ambient_c": env[:, ENV_AMBIENT_C],
        "range_m": ch[:, CH_RANGE_M],
        "stale_after_s": ch[:, CH_STALE_AFTER_S],
        "hard_brake_mps2": env[:, ENV_HARD_BRAKE_MPS2],
    }
    out = {key: np.asarray(val, f) for key, val in vals.items()}
    dts, which = np.unique(env[:, ENV_DT_S], return_inverse=True)
    out["dt_parts_s"] = np.stack([dt_parts(float(dt)) for dt in dts])[which]
    out["ctrl"] = np.asarray(ctrl0, f)
    out["pt"] = np.asarray(pt0, f)
    return out


@njit(cache=True)
def _fill_targets(
    s0: int, dt: float, lead: float, times: np.ndarray, speeds: np.ndarray, out: np.ndarray
) -> None:
    for k in range(out.shape[0]):
        out[k] = profile_speed((s0 + k) * dt + lead, times, speeds)


@njit(cache=True, parallel=True)
def _fill_target_rows(
    s0: int,
    env: np.ndarray,
    prof_t: np.ndarray,
    prof_v: np.ndarray,
    prof_len: np.ndarray,
    out: np.ndarray,
) -> None:
    for b in prange(out.shape[0]):
        m = prof_len[b]
        _fill_targets(
            s0, env[b, ENV_DT_S], env[b, ENV_PROFILE_LEAD_S], prof_t[b, :m], prof_v[b, :m], out[b]
        )


def head_target_rows(
    env: np.ndarray,
    prof_t: np.ndarray,
    prof_v: np.ndarray,
    prof_len: np.ndarray,
    s0: int,
    n_steps: int,
    precision: Precision,
) -> np.ndarray:
    """(B, n_steps) ``head_targets`` of B instances from their stacked ``env`` rows and
    speed profiles (row b's first ``prof_len[b]`` points)."""
    out = np.empty((env.shape[0], max(n_steps, 1)))
    _fill_target_rows(
        s0,
        np.ascontiguousarray(env, np.float64),
        np.ascontiguousarray(prof_t, np.float64),
        np.ascontiguousarray(prof_v, np.float64),
        np.ascontiguousarray(prof_len, np.int64),
        out,
    )
    return out.astype(_float_type(precision))


def head_targets(world: Any, s0: int, n_steps: int, precision: Precision) -> np.ndarray:
    """(n_steps,) the heads' target speed in steps ``s0, s0+1, ...`` [m/s], sampled as the
    Numba steps sample the profile (``kernel.profile_speed`` at ``s*dt + lead``), so that
    both drive the same speeds to the last bit (-1 where there is no profile)."""
    times = world.profile_t_s
    return head_target_rows(
        world.env[None],
        times[None],
        world.profile_v_mps[None],
        np.array([times.shape[0]]),
        s0,
        n_steps,
        precision,
    )[0]


def layout_np(table: TruckTable) -> dict[str, np.ndarray]:
    """``LaneLayout`` fields as NumPy arrays."""
    rows = [
        drag_row(int(s), int(p)) for s, p in zip(table.platoon_size, table.position, strict=True)
    ]
    return {
        "follows": np.asarray(table.position != 0),
        "drag_row": np.asarray(rows, np.int32),
    }


def platoon_size(table: TruckTable) -> int:
    """Trucks per platoon (uniform in a scenario)."""
    return int(table.platoon_size[0])


def lane_state_np(
    table: TruckTable, state: TruckState, precision: Precision
) -> dict[str, np.ndarray]:
    """``LaneState`` fields as NumPy arrays, from the engine's state."""
    rows = lane_state_rows(
        platoon_size(table),
        state.cur,
        state.pos_m[None],
        state.speed_mps[None],
        state.accel_mps2[None],
        state.mode[None],
        state.ctrl_mode[None],
        state.energy_kwh[None],
        state.rx_pred[None],
        state.collided_at_s[None],
        state.collision_speed_mps[None],
        state.min_gap_m[None],
        state.min_ttc_s[None],
        state.hard_brakes[None],
        state.fallback_steps[None],
        precision,
    )
    out = {key: val[0] for key, val in rows.items()}
    out["step"] = np.asarray(state.step[0], np.int32)
    return out


def lane_state_rows(
    k: int,
    cur: int,
    pos_m: np.ndarray,
    speed_mps: np.ndarray,
    accel_mps2: np.ndarray,
    mode: np.ndarray,
    ctrl_mode: np.ndarray,
    energy_kwh: np.ndarray,
    rx_pred: np.ndarray,
    collided_at_s: np.ndarray,
    collision_speed_mps: np.ndarray,
    min_gap_m: np.ndarray,
    min_ttc_s: np.ndarray,
    hard_brakes: np.ndarray,
    fallback_steps: np.ndarray,
    precision: Precision,
) -> dict[str, np.ndarray]:
    """``LaneState`` fields of B instances (without ``step``), each (B, ...), from their
    stacked engine state: the double-buffered arrays (B, 2, n) read at row ``cur``, the
    others (B, n), ``rx_pred`` (B, RX_SIZE, n); ``k`` trucks per platoon."""
    f = _float_type(precision)
    pos = pos_m[:, cur]
    if precision == "float32":
        origin = np.floor(pos[:, ::k]).astype(np.int32)
        rel = pos - np.repeat(origin, k, axis=1)
        x = rel.astype(np.float32)
        x_err = (rel - x).astype(np.float32)
        energy = energy_kwh.astype(np.float32)
        energy_err = (energy_kwh - energy).astype(np.float32)
    else:
        origin = np.zeros((pos.shape[0], pos.shape[1] // k), np.int32)
        x, x_err = pos.copy(), np.zeros_like(pos)
        energy, energy_err = energy_kwh.copy(), np.zeros_like(pos)
    return {
        "origin_m": origin,
        "pos_m": x,
        "pos_err_m": x_err,
        "speed_mps": speed_mps[:, cur].astype(f),
        "accel_mps2": accel_mps2[:, cur].astype(f),
        "mode": mode.astype(np.int8),
        "ctrl_mode": ctrl_mode.astype(np.int8),
        "energy_kwh": energy,
        "energy_err_kwh": energy_err,
        "rx_speed_mps": rx_pred[:, RX_SPEED_MPS].astype(f),
        "rx_stamp_s": rx_pred[:, RX_STAMP_S].astype(f),
        "collided_at_s": collided_at_s.astype(f),
        "collision_speed_mps": collision_speed_mps.astype(f),
        "min_gap_m": min_gap_m.astype(f),
        "min_ttc_s": min_ttc_s.astype(f),
        "min_accel_mps2": np.minimum(accel_mps2[:, cur], 0.0).astype(f),
        "hard_brakes": hard_brakes.astype(np.int32),
        "fallback_steps": fallback_steps.astype(np.int32),
    }


def absolute_pos_m(origin_m: np.ndarray, pos_m: np.ndarray, pos_err_m: np.ndarray) -> np.ndarray:
    """Float64 positions from origins (..., P), offsets and compensation (..., n)."""
    k = pos_m.shape[-1] // origin_m.shape[-1]
    base = np.repeat(origin_m.astype(np.float64), k, axis=-1)
    return base + (pos_m.astype(np.float64) + pos_err_m.astype(np.float64))


def write_back(st: dict[str, np.ndarray], state: TruckState) -> None:
    """Store a lane's state (NumPy) into the engine's state, in place."""
    pos = absolute_pos_m(st["origin_m"], st["pos_m"], st["pos_err_m"])
    for two, val in (
        (state.pos_m, pos),
        (state.speed_mps, st["speed_mps"]),
        (state.accel_mps2, st["accel_mps2"]),
        (state.u_mps2, st["accel_mps2"]),
    ):
        two[:] = val
    state.mode[:] = st["mode"]
    state.ctrl_mode[:] = st["ctrl_mode"]
    state.energy_kwh[:] = st["energy_kwh"].astype(np.float64) + st["energy_err_kwh"]
    # only the beacon's speed and time are kept (the module docstring says why)
    for row in (RX_POS_M, RX_ACCEL_MPS2, RX_U_MPS2, RX_HAZARD):
        state.rx_pred[row] = np.nan
    state.rx_pred[RX_SPEED_MPS] = st["rx_speed_mps"]
    state.rx_pred[RX_STAMP_S] = st["rx_stamp_s"]
    state.collided_at_s[:] = st["collided_at_s"]
    state.collision_speed_mps[:] = st["collision_speed_mps"]
    state.min_gap_m[:] = st["min_gap_m"]
    state.min_ttc_s[:] = st["min_ttc_s"]
    state.hard_brakes[:] = st["hard_brakes"]
    state.fallback_steps[:] = st["fallback_steps"]
    state.step[0] = int(st["step"])


# ---------------------------------------------------------------------------------------------
# Devices and the engine's Backend interface
# ---------------------------------------------------------------------------------------------
def gpu_device() -> Any:
    """The first GPU JAX sees.

    Raises:
        ScenarioError: if JAX sees none, saying what it sees instead.
    """
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        seen = ", ".join(str(d) for d in jax.devices())
        raise ScenarioError(
            f"backend 'gpu' needs a CUDA GPU visible to JAX, and JAX sees only: {seen}; "
            "install JAX for CUDA 12 (convoy's gpu extra) on a machine with an NVIDIA GPU, "
            "or use backend 'jax' (JAX on the CPU) or 'cpu' (Numba)"
        ) from None


def median_time_s(fn: Any, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn``, each waited for on the device, s
    (what the GPU benchmark scripts time)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextmanager
def precision_scope(precision: Precision) -> Iterator[None]:
    """64-bit JAX types within, for float64 runs; float32 runs keep JAX's default."""
    if precision == "float64":
        with jax.enable_x64(True):
            yield
    else:
        yield


def check_supported(table: TruckTable, state: TruckState, world: Any, backend: str) -> None:
    """Raise unless the JAX step computes what the engine's general step would.

    Raises:
        ScenarioError: naming every feature of the scenario the JAX step does not have.
    """
    gaps = fast_step_gaps(table, state, world)
    if gaps:
        raise ScenarioError(
            f"backend {backend!r} runs only a uniform SUMO-CACC fleet in one lane on an ideal "
            f"channel; this scenario has {'; '.join(gaps)}; use backend 'cpu'"
        )


def run_engine(
    table: TruckTable,
    state: TruckState,
    world: Any,
    n_steps: int,
    rec_every: int,
    rec: tuple[np.ndarray, ...],
    *,
    precision: Precision = "float64",
    device: Any = None,
    backend: str = "jax",
) -> int:
    """The engine's ``Backend`` interface: advance ``state`` in place by ``n_steps`` and
    write a row into ``rec`` after every ``rec_every``-th step; return the rows written.

    Args:
        table, state, world, n_steps, rec_every, rec: as ``engine.Backend``.
        precision: ``"float64"`` (agrees with Numba to rounding) or ``"float32"``.
        device: a JAX device; None for JAX's default.
        backend: the name the engine knows this backend by, for messages.

    Raises:
        ScenarioError: for a scenario with features the JAX step does not have.
    """
    check_supported(table, state, world, backend)
    relative = precision == "float32"
    n_rows = n_steps // rec_every
    # powers of two of rows and targets: the few chunk lengths of a run share a compiled loop
    rows_cap = 1 << max(n_rows - 1, 0).bit_length()
    targets = head_targets(
        world, int(state.step[0]), 1 << max(n_steps - 1, 0).bit_length(), precision
    )
    with precision_scope(precision):
        put = partial(jax.device_put, device=device)
        lp = LaneParams(**{k: put(v) for k, v in lane_params_np(table, world, precision).items()})
        lay = LaneLayout(**{k: put(v) for k, v in layout_np(table).items()})
        st = LaneState(**{k: put(v) for k, v in lane_state_np(table, state, precision).items()})
        new, recs = advance_recording(
            lp,
            lay,
            st,
            put(targets),
            jnp.int32(n_steps),
            jnp.int32(rec_every),
            relative=relative,
            rows_cap=rows_cap,
        )
        out = {k: np.asarray(v) for k, v in new._asdict().items()}
        r = {k: np.asarray(v)[:n_rows] for k, v in recs._asdict().items()}
    write_back(out, state)
    if n_rows:
        rec[0][:n_rows] = absolute_pos_m(r["origin_m"], r["pos_m"], r["pos_err_m"])
        rec[1][:n_rows] = r["speed_mps"]
        rec[2][:n_rows] = r["accel_mps2"]
        rec[3][:n_rows] = r["mode"]
        rec[4][:n_rows] = r["energy_kwh"]
        rec[5][:n_rows] = state.odd_flags
    return n_rows


def jax_backend(
    table: TruckTable,
    state: TruckState,
    world: Any,
    n_steps: int,
    rec_every: int,
    rec: tuple[np.ndarray, ...],
) -> int:
    """Backend ``jax``: float64 on JAX's default device."""
    return run_engine(table, state, world, n_steps, rec_every, rec, precision="float64")


def gpu_backend(
    table: TruckTable,
    state: TruckState,
    world: Any,
    n_steps: int,
    rec_every: int,
    rec: tuple[np.ndarray, ...],
) -> int:
    """Backend ``gpu``: float32 with relative positions on the first GPU.

    Raises:
        ScenarioError: if JAX sees no GPU.
    """
    device = gpu_device()
    return run_engine(
        table,
        state,
        world,
        n_steps,
        rec_every,
        rec,
        precision="float32",
        device=device,
        backend="gpu",
    )
