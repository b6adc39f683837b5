"""SUMO-compatible ACC and CACC car-following laws (SUMO 1.28, Euler update), Numba-compiled.

These re-implement, from SUMO's documented equations and source semantics, the ``ACC``
(``MSCFModel_ACC.cpp``) and ``CACC`` (``MSCFModel_CACC.cpp``) car-following models of Eclipse
SUMO 1.28 together with the parts of ``MSCFModel.cpp``/``MSVehicle.cpp`` that turn a model's
wish into the next speed. The functions are scalar ``@njit`` kernels meant to be called from a
compiled per-truck loop; parameters travel as float64 vectors (:meth:`SumoCaccParams.to_vector`,
:meth:`SumoAccParams.to_vector`) indexed by the module's ``CACC_*``/``ACC_*`` constants.

One simulation step of length ``dt`` (SUMO's default semi-implicit Euler update), for every truck
``i`` and using only the state at the *start* of the step (SUMO plans every vehicle before it
moves any):

1. ``gap_m = (pos[pred] - length[pred]) - pos[i]``: bumper-to-bumper gap from the front bumper
   ``pos`` (SUMO's lane position) to the predecessor's rear bumper, computed in this order. The
   laws subtract ``min_gap_m`` themselves; SUMO's ``followSpeed`` receives that net gap (its
   caller subtracts ``minGap``), so do not subtract it twice. No predecessor: ``gap_m = inf``.
2. Follower: ``v_pos, mode[i] = cacc_next_speed(p, speed[i], accel[i], gap_m, speed[pred],
   accel[pred], pred_is_cacc, v_des, dt, mode[i])`` (or ``acc_next_speed``), where
   ``accel[i]`` is the truck's own acceleration of the previous step (see 5) and ``v_des`` the
   desired speed ``min(lane limit * speedFactor, maxSpeed)``. An uncommanded front-most truck
   is handled the same way (``gap_m = inf``: the law returns ``v_des``, i.e. free driving).
3. Follower: ``new_speed = sumo_finalize_speed(speed[i], v_pos, accel_max, decel_max,
   emergency_decel, max_speed, dt)``.
   Head commanded by TraCI ``setSpeed(v_cmd)``: ``new_speed = sumo_set_speed(speed[i], c,
   accel_max, decel_max, dt, max_speed)`` with ``c = v_cmd``, or ``c = min(v_cmd, v_pos)`` if
   the head has a predecessor (a platoon behind another one on the same lane: SUMO's default
   speed mode still respects the car-following speed). No finalize step for such heads.
4. Euler position update: ``pos[i] += new_speed * dt`` (the *new* speed over the whole step).
5. ``accel[i] = (new_speed - speed[i]) * (1 / dt)``; this is what SUMO's acceleration getter
   (``MSVehicle::getAcceleration``) returns, ``(new_speed - speed[i]) / dt``, to an ulp (a
   multiplication costs a fraction of a division in a loop over many trucks), and what the
   CACC law reads as its own acceleration in the next step. It is 0 right after insertion.
   Then ``speed[i] = new_speed``.

Mode codes (:data:`MODE_SPEED` ... :data:`MODE_ACC_FALLBACK`) report the branch the law took,
like SUMO's ``caccVehicleMode`` parameter, and are also the state the laws carry between steps:
SUMO's speed-control/gap-control hysteresis is "gap control" exactly when the previous mode is not
:data:`MODE_SPEED`. Start every truck at :data:`MODE_SPEED` (SUMO initialises its control mode to
speed control). Known deviation: when a truck has no predecessor SUMO does not call the law and
keeps its stored control mode, while these functions return :data:`MODE_SPEED`; this only matters
if a predecessor later reappears at a time gap between 1.5 s and 2 s.

Time-step scaling: SUMO's CACC gains are per 0.1 s step; for ``dt < 0.1`` s SUMO rescales the
speed change to ``dt`` (as done here), for ``dt >= 0.1`` s it applies the per-step law unscaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
from numba import njit
from numba.core.extending import overload

FloatArray = npt.NDArray[np.float64]

# ---------------------------------------------------------------------------------------------
# Mode codes (returned by the laws and carried between steps).
# ---------------------------------------------------------------------------------------------
#: Speed (cruise) control: SUMO's ``CC`` vehicle mode / control mode 0.
MODE_SPEED = 0
#: Gap control (CACC ``CACC_GAP``; for ACC its gap-keeping sub-law).
MODE_GAP = 1
#: Gap-closing control (CACC ``CACC_GAP_CL``; ACC's gap-closing sub-law).
MODE_GAP_CLOSING = 2
#: Collision-avoidance control (CACC ``CACC_CA``; ACC's collision-avoidance sub-law).
MODE_COLLISION_AVOIDANCE = 3
#: CACC falling back to the ACC law because the predecessor is not cooperative (``ACC``).
MODE_ACC_FALLBACK = 4
#: Display names of the mode codes, indexed by code.
MODE_NAMES = ("SPEED", "GAP", "GAP_CLOSING", "COLLISION_AVOIDANCE", "ACC_FALLBACK")
#: SUMO's ``caccVehicleMode`` vehicle parameter for each mode code of the CACC law.
SUMO_CACC_MODE_NAMES = ("CC", "CACC_GAP", "CACC_GAP_CL", "CACC_CA", "ACC")

# ---------------------------------------------------------------------------------------------
# SUMO constants used by the laws.
# ---------------------------------------------------------------------------------------------
#: SUMO's ``NUMERICAL_EPS`` (utils/common/StdDefs.h), m or m/s depending on use.
NUMERICAL_EPS = 0.001
#: SUMO's ``EMERGENCY_DECEL_AMPLIFIER`` (MSCFModel.h): margin on computed emergency braking.
EMERGENCY_DECEL_AMPLIFIER = 1.2
#: Gaps at or above this (or non-finite) mean "no predecessor", m.
NO_LEADER_GAP_M = 1.0e6

# ---------------------------------------------------------------------------------------------
# ACC parameter vector layout.
# ---------------------------------------------------------------------------------------------
ACC_TIME_GAP = 0
ACC_SPEED_CONTROL_GAIN = 1
ACC_GAP_CLOSING_SPEED_GAIN = 2
ACC_GAP_CLOSING_SPACE_GAIN = 3
ACC_GAP_SPEED_GAIN = 4
ACC_GAP_SPACE_GAIN = 5
ACC_COLLISION_AVOIDANCE_SPEED_GAIN = 6
ACC_COLLISION_AVOIDANCE_SPACE_GAIN = 7
ACC_EMERGENCY_THRESHOLD = 8
ACC_SPEED_CONTROL_GAP = 9
ACC_GAP_CONTROL_GAP = 10
ACC_GAP_MODE_SPACING_ERR = 11
ACC_GAP_MODE_SPEED_ERR = 12
ACC_MARGIN_MAX = 13
ACC_MARGIN_SPEED_COEF = 14
ACC_MARGIN_OFFSET = 15
ACC_MIN_GAP = 16
ACC_DECEL = 17
ACC_EMERGENCY_DECEL = 18
ACC_PRED_DECEL = 19
ACC_VECTOR_SIZE = 20

# ---------------------------------------------------------------------------------------------
# CACC parameter vector layout; the ACC fallback's parameters follow at CACC_ACC_OFFSET.
# ---------------------------------------------------------------------------------------------
CACC_TIME_GAP = 0
CACC_SPEED_CONTROL_GAIN = 1
CACC_GAP_CLOSING_GAP_GAIN = 2
CACC_GAP_CLOSING_GAP_DOT_GAIN = 3
CACC_GAP_GAP_GAIN = 4
CACC_GAP_GAP_DOT_GAIN = 5
CACC_COLLISION_AVOIDANCE_GAP_GAIN = 6
CACC_COLLISION_AVOIDANCE_GAP_DOT_GAIN = 7
CACC_ACC_FALLBACK_TIME_GAP = 8
CACC_EMERGENCY_THRESHOLD = 9
CACC_SPEED_CONTROL_MIN_GAP = 10
CACC_SPEED_CONTROL_TIME_GAP = 11
CACC_GAP_CONTROL_TIME_GAP = 12
CACC_GAP_MODE_SPACING_ERR = 13
CACC_GAP_MODE_SPEED_ERR = 14
CACC_MIN_GAP = 15
CACC_DECEL = 16
CACC_EMERGENCY_DECEL = 17
CACC_PRED_DECEL = 18
CACC_ACC_OFFSET = 19
CACC_VECTOR_SIZE = CACC_ACC_OFFSET + ACC_VECTOR_SIZE


@dataclass(frozen=True)
class SumoAccParams:
    """Parameters of SUMO's ``ACC`` model, defaults of SUMO 1.28.

    Gains act on an acceleration: ``accel = gain * error``. Vehicle attributes (``min_gap_m``,
    ``decel_mps2``...) are those of the vType; their defaults are SUMO's default vType values
    and should normally be set from the truck.

    Attributes:
        time_gap_s: ``tau``, desired time gap (MSCFModel.cpp default 1.0), s.
        speed_control_gain_per_s: ``sc_gain`` (MSCFModel_ACC.cpp DEFAULT_SC_GAIN), 1/s.
        gap_closing_speed_gain_per_s: ``gcc_gain_speed`` (DEFAULT_GCC_GAIN_SPEED), 1/s.
        gap_closing_space_gain_per_s2: ``gcc_gain_space`` (DEFAULT_GCC_GAIN_SPACE), 1/s².
        gap_speed_gain_per_s: ``gc_gain_speed`` (DEFAULT_GC_GAIN_SPEED), 1/s.
        gap_space_gain_per_s2: ``gc_gain_space`` (DEFAULT_GC_GAIN_SPACE), 1/s².
        collision_avoidance_speed_gain_per_s: ``ca_gain_speed`` (DEFAULT_CA_GAIN_SPEED), 1/s.
        collision_avoidance_space_gain_per_s2: ``ca_gain_space`` (DEFAULT_CA_GAIN_SPACE), 1/s².
        emergency_threshold_mps: ``ca_overrideThreshold``: the law may exceed the safe speed by
            this much before the safe speed overrides it (DEFAULT_EMERGENCY_OVERRIDE_THRESHOLD),
            m/s.
        speed_control_gap_m: Net gaps above this select speed control
            (GAP_THRESHOLD_SPEEDCTRL), m.
        gap_control_gap_m: Net gaps below this select gap control (GAP_THRESHOLD_GAPCTRL); in
            between the previous choice is kept, m.
        gap_mode_spacing_err_m: ``|spacing error|`` below this (with the speed condition) selects
            the gap-keeping sub-law (hard-coded 0.2 in accelGapControl), m.
        gap_mode_speed_err_mps: ``|v - v_des|`` below this selects the gap-keeping sub-law
            (hard-coded 0.1 in accelGapControl), m/s.
        margin_max_m: Cap of the dynamic gap margin ``d0 = clip(75/v - 5, 0, 2)`` (Xiao et al.
            2018, accelGapControl), m.
        margin_speed_coef_m2_per_s: The ``75`` in ``d0``, m²/s.
        margin_offset_m: The ``5`` in ``d0``, m.
        min_gap_m: vType ``minGap``, subtracted from the bumper gap (SUMO default 2.5), m.
        decel_mps2: vType ``decel``, used by the safe speed (SUMO passenger default 4.5), m/s².
        emergency_decel_mps2: vType ``emergencyDecel`` (SUMO passenger default 9.0), m/s².
        pred_decel_mps2: Predecessor's ``apparentDecel`` (defaults to its ``decel``; SUMO
            passenger default 4.5), m/s².
    """

    time_gap_s: float = 1.0  # MSCFModel.cpp: tau default 1.0 (SUMO 1.28)
    speed_control_gain_per_s: float = -0.4  # MSCFModel_ACC.cpp DEFAULT_SC_GAIN (SUMO 1.28)
    gap_closing_speed_gain_per_s: float = 0.8  # MSCFModel_ACC.cpp DEFAULT_GCC_GAIN_SPEED
    gap_closing_space_gain_per_s2: float = 0.04  # MSCFModel_ACC.cpp DEFAULT_GCC_GAIN_SPACE
    gap_speed_gain_per_s: float = 0.07  # MSCFModel_ACC.cpp DEFAULT_GC_GAIN_SPEED
    gap_space_gain_per_s2: float = 0.23  # MSCFModel_ACC.cpp DEFAULT_GC_GAIN_SPACE
    collision_avoidance_speed_gain_per_s: float = 0.23  # MSCFModel_ACC.cpp DEFAULT_CA_GAIN_SPEED
    collision_avoidance_space_gain_per_s2: float = 0.8  # MSCFModel_ACC.cpp DEFAULT_CA_GAIN_SPACE
    emergency_threshold_mps: float = 2.0  # MSCFModel_ACC.cpp DEFAULT_EMERGENCY_OVERRIDE_THRESHOLD
    speed_control_gap_m: float = 120.0  # MSCFModel_ACC.cpp GAP_THRESHOLD_SPEEDCTRL
    gap_control_gap_m: float = 100.0  # MSCFModel_ACC.cpp GAP_THRESHOLD_GAPCTRL
    gap_mode_spacing_err_m: float = 0.2  # MSCFModel_ACC.cpp accelGapControl, hard-coded
    gap_mode_speed_err_mps: float = 0.1  # MSCFModel_ACC.cpp accelGapControl, hard-coded
    margin_max_m: float = 2.0  # MSCFModel_ACC.cpp accelGapControl d0, hard-coded
    margin_speed_coef_m2_per_s: float = 75.0  # MSCFModel_ACC.cpp accelGapControl d0, hard-coded
    margin_offset_m: float = 5.0  # MSCFModel_ACC.cpp accelGapControl d0, hard-coded
    min_gap_m: float = 2.5  # SUMOVTypeParameter default minGap
    decel_mps2: float = 4.5  # SUMOVTypeParameter default decel (passenger)
    emergency_decel_mps2: float = 9.0  # SUMOVTypeParameter default emergencyDecel (passenger)
    pred_decel_mps2: float = 4.5  # predecessor's apparentDecel (= its decel by default)

    def to_vector(self) -> FloatArray:
        """The parameters as a float64 vector indexed by the ``ACC_*`` constants."""
        v = np.empty(ACC_VECTOR_SIZE, dtype=np.float64)
        v[ACC_TIME_GAP] = self.time_gap_s
        v[ACC_SPEED_CONTROL_GAIN] = self.speed_control_gain_per_s
        v[ACC_GAP_CLOSING_SPEED_GAIN] = self.gap_closing_speed_gain_per_s
        v[ACC_GAP_CLOSING_SPACE_GAIN] = self.gap_closing_space_gain_per_s2
        v[ACC_GAP_SPEED_GAIN] = self.gap_speed_gain_per_s
        v[ACC_GAP_SPACE_GAIN] = self.gap_space_gain_per_s2
        v[ACC_COLLISION_AVOIDANCE_SPEED_GAIN] = self.collision_avoidance_speed_gain_per_s
        v[ACC_COLLISION_AVOIDANCE_SPACE_GAIN] = self.collision_avoidance_space_gain_per_s2
        v[ACC_EMERGENCY_THRESHOLD] = self.emergency_threshold_mps
        v[ACC_SPEED_CONTROL_GAP] = self.speed_control_gap_m
        v[ACC_GAP_CONTROL_GAP] = self.gap_control_gap_m
        v[ACC_GAP_MODE_SPACING_ERR] = self.gap_mode_spacing_err_m
        v[ACC_GAP_MODE_SPEED_ERR] = self.gap_mode_speed_err_mps
        v[ACC_MARGIN_MAX] = self.margin_max_m
        v[ACC_MARGIN_SPEED_COEF] = self.margin_speed_coef_m2_per_s
        v[ACC_MARGIN_OFFSET] = self.margin_offset_m
        v[ACC_MIN_GAP] = self.min_gap_m
        v[ACC_DECEL] = self.decel_mps2
        v[ACC_EMERGENCY_DECEL] = self.emergency_decel_mps2
        v[ACC_PRED_DECEL] = self.pred_decel_mps2
        return v


@dataclass(frozen=True)
class SumoCaccParams:
    """Parameters of SUMO's ``CACC`` model, defaults of SUMO 1.28.

    CACC gains act on the next speed once per 0.1 s step: ``v_next = v + k_gap * spacing_error
    + k_gap_dot * speed_error`` (so ``k_gap`` is in m/s per m and ``k_gap_dot`` is
    dimensionless); the speed-control gain acts on an acceleration. Vehicle attributes default to
    SUMO's default vType values and should normally be set from the truck.

    Attributes:
        time_gap_s: ``tau``, desired time gap (MSCFModel.cpp default 1.0), s.
        speed_control_gain_per_s: ``sc_gain_CACC`` (MSCFModel_CACC.cpp DEFAULT_SC_GAIN_CACC),
            1/s.
        gap_closing_gap_gain_per_s: ``gcc_gain_gap_CACC`` (DEFAULT_GCC_GAIN_GAP_CACC), 1/s.
        gap_closing_gap_dot_gain: ``gcc_gain_gap_dot_CACC`` (DEFAULT_GCC_GAIN_GAP_DOT_CACC), -.
        gap_gap_gain_per_s: ``gc_gain_gap_CACC`` (DEFAULT_GC_GAIN_GAP_CACC), 1/s.
        gap_gap_dot_gain: ``gc_gain_gap_dot_CACC`` (DEFAULT_GC_GAIN_GAP_DOT_CACC), -.
        collision_avoidance_gap_gain_per_s: ``ca_gain_gap_CACC`` (DEFAULT_CA_GAIN_GAP_CACC),
            1/s.
        collision_avoidance_gap_dot_gain: ``ca_gain_gap_dot_CACC``
            (DEFAULT_CA_GAIN_GAP_DOT_CACC), -.
        acc_fallback_time_gap_s: ``tauCACCToACC`` / headwayTimeACC: time gap of the ACC law used
            behind a non-cooperative predecessor (DEFAULT_HEADWAYTIME_ACC), s.
        emergency_threshold_mps: ``ca_overrideThreshold``: the law may exceed the safe speed by
            ``min(this, net gap)`` before the safe speed overrides it
            (DEFAULT_EMERGENCY_OVERRIDE_THRESHOLD), m/s.
        speed_control_min_gap_m: ``speedControl_minGap``: speed control also needs a spacing
            error above this (DEFAULT_SC_MIN_GAP), m.
        speed_control_time_gap_s: Time gaps above this select speed control (hard-coded 2 in
            ``_v``), s.
        gap_control_time_gap_s: Time gaps below this select gap control (hard-coded 1.5 in
            ``_v``); in between the previous choice is kept, s.
        gap_mode_spacing_err_m: Spacing errors in ``(0, this)`` (with the speed condition) select
            gap mode (hard-coded 0.2 in speedGapControl), m.
        gap_mode_speed_err_mps: ``v - v_des`` below this selects gap mode (hard-coded 0.1 in
            speedGapControl), m/s.
        min_gap_m: vType ``minGap``, subtracted from the bumper gap (SUMO default 2.5), m.
        decel_mps2: vType ``decel``, used by the safe speed (SUMO passenger default 4.5), m/s².
        emergency_decel_mps2: vType ``emergencyDecel`` (SUMO passenger default 9.0), m/s².
        pred_decel_mps2: Predecessor's ``apparentDecel`` (defaults to its ``decel``; SUMO
            passenger default 4.5), m/s².
        acc_fallback: ACC gains of the fallback law (SUMO builds it from the same vType). Its
            ``time_gap_s`` is replaced by ``acc_fallback_time_gap_s``, as SUMO does.
    """

    time_gap_s: float = 1.0  # MSCFModel.cpp: tau default 1.0 (SUMO 1.28)
    speed_control_gain_per_s: float = -0.4  # MSCFModel_CACC.cpp DEFAULT_SC_GAIN_CACC (1.28)
    gap_closing_gap_gain_per_s: float = 0.005  # MSCFModel_CACC.cpp DEFAULT_GCC_GAIN_GAP_CACC
    gap_closing_gap_dot_gain: float = 0.05  # MSCFModel_CACC.cpp DEFAULT_GCC_GAIN_GAP_DOT_CACC
    gap_gap_gain_per_s: float = 0.45  # MSCFModel_CACC.cpp DEFAULT_GC_GAIN_GAP_CACC
    gap_gap_dot_gain: float = 0.0125  # MSCFModel_CACC.cpp DEFAULT_GC_GAIN_GAP_DOT_CACC
    collision_avoidance_gap_gain_per_s: float = 0.45  # MSCFModel_CACC.cpp DEFAULT_CA_GAIN_GAP_CACC
    # MSCFModel_CACC.cpp DEFAULT_CA_GAIN_GAP_DOT_CACC (SUMO 1.28)
    collision_avoidance_gap_dot_gain: float = 0.05
    acc_fallback_time_gap_s: float = 1.0  # MSCFModel_CACC.cpp DEFAULT_HEADWAYTIME_ACC
    # MSCFModel_CACC.cpp DEFAULT_EMERGENCY_OVERRIDE_THRESHOLD (SUMO 1.28)
    emergency_threshold_mps: float = 2.0
    speed_control_min_gap_m: float = 1.66  # MSCFModel_CACC.cpp DEFAULT_SC_MIN_GAP
    speed_control_time_gap_s: float = 2.0  # MSCFModel_CACC.cpp _v, hard-coded
    gap_control_time_gap_s: float = 1.5  # MSCFModel_CACC.cpp _v, hard-coded
    gap_mode_spacing_err_m: float = 0.2  # MSCFModel_CACC.cpp speedGapControl, hard-coded
    gap_mode_speed_err_mps: float = 0.1  # MSCFModel_CACC.cpp speedGapControl, hard-coded
    min_gap_m: float = 2.5  # SUMOVTypeParameter default minGap
    decel_mps2: float = 4.5  # SUMOVTypeParameter default decel (passenger)
    emergency_decel_mps2: float = 9.0  # SUMOVTypeParameter default emergencyDecel (passenger)
    pred_decel_mps2: float = 4.5  # predecessor's apparentDecel (= its decel by default)
    acc_fallback: SumoAccParams = field(default_factory=SumoAccParams)

    def to_vector(self) -> FloatArray:
        """The parameters as a float64 vector indexed by the ``CACC_*`` constants.

        The ACC fallback block starts at :data:`CACC_ACC_OFFSET` and uses the ``ACC_*`` layout.
        """
        v = np.empty(CACC_VECTOR_SIZE, dtype=np.float64)
        v[CACC_TIME_GAP] = self.time_gap_s
        v[CACC_SPEED_CONTROL_GAIN] = self.speed_control_gain_per_s
        v[CACC_GAP_CLOSING_GAP_GAIN] = self.gap_closing_gap_gain_per_s
        v[CACC_GAP_CLOSING_GAP_DOT_GAIN] = self.gap_closing_gap_dot_gain
        v[CACC_GAP_GAP_GAIN] = self.gap_gap_gain_per_s
        v[CACC_GAP_GAP_DOT_GAIN] = self.gap_gap_dot_gain
        v[CACC_COLLISION_AVOIDANCE_GAP_GAIN] = self.collision_avoidance_gap_gain_per_s
        v[CACC_COLLISION_AVOIDANCE_GAP_DOT_GAIN] = self.collision_avoidance_gap_dot_gain
        v[CACC_ACC_FALLBACK_TIME_GAP] = self.acc_fallback_time_gap_s
        v[CACC_EMERGENCY_THRESHOLD] = self.emergency_threshold_mps
        v[CACC_SPEED_CONTROL_MIN_GAP] = self.speed_control_min_gap_m
        v[CACC_SPEED_CONTROL_TIME_GAP] = self.speed_control_time_gap_s
        v[CACC_GAP_CONTROL_TIME_GAP] = self.gap_control_time_gap_s
        v[CACC_GAP_MODE_SPACING_ERR] = self.gap_mode_spacing_err_m
        v[CACC_GAP_MODE_SPEED_ERR] = self.gap_mode_speed_err_mps
        v[CACC_MIN_GAP] = self.min_gap_m
        v[CACC_DECEL] = self.decel_mps2
        v[CACC_EMERGENCY_DECEL] = self.emergency_decel_mps2
        v[CACC_PRED_DECEL] = self.pred_decel_mps2
        # SUMO's CACC builds its ACC from the same vType, then sets its headway to tauCACCToACC.
        acc = replace(
            self.acc_fallback,
            time_gap_s=self.acc_fallback_time_gap_s,
            min_gap_m=self.min_gap_m,
            decel_mps2=self.decel_mps2,
            emergency_decel_mps2=self.emergency_decel_mps2,
            pred_decel_mps2=self.pred_decel_mps2,
        )
        v[CACC_ACC_OFFSET:] = acc.to_vector()
        return v


def floor_f(x: float) -> float:
    """``np.floor`` of one float, as a float, in Python and every Numba target.

    The CPU target compiles it to ``np.floor`` (the overload below: the same code as before);
    ``convoy.sim.cuda_target`` gives the CUDA target its own (numba-cuda has no ``np.floor``),
    so that the GPU kernels compile these laws from this source.
    """
    return float(np.floor(x))


@overload(floor_f, inline="always", target="cpu")
def _floor_f_cpu(x: float):  # type: ignore[no-untyped-def]
    def impl(x: float) -> float:
        return np.floor(x)  # type: ignore[no-any-return, unused-ignore]

    return impl


# ---------------------------------------------------------------------------------------------
# Safe speed (MSCFModel.cpp, Euler update).
# ---------------------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def brake_gap_euler(speed_mps: float, decel_mps2: float, dt_s: float) -> float:
    """Distance to stop from ``speed_mps`` braking ``decel_mps2`` in whole Euler steps, m.

    SUMO's ``brakeGapEuler`` with zero headway: each step the speed drops by ``decel*dt`` and the
    vehicle covers the new speed times ``dt``.
    """
    reduction = decel_mps2 * dt_s
    # floor, not int(): the same whole number for speeds >= 0, and it vectorises
    steps = floor_f(speed_mps / reduction)
    return dt_s * (steps * speed_mps - reduction * steps * (steps + 1.0) / 2.0)


@njit(cache=True, error_model="numpy")
def maximum_safe_stop_speed_euler(
    gap_m: float, decel_mps2: float, headway_s: float, dt_s: float
) -> float:
    """Highest speed from which an Euler-integrated vehicle still stops within ``gap_m``, m/s.

    SUMO's ``maximumSafeStopSpeedEuler``: braking ``decel`` every step after a reaction time of
    ``headway_s``; the gap is shrunk by ``NUMERICAL_EPS`` to stay clear of rounding overshoot.
    """
    g = gap_m - NUMERICAL_EPS
    b = decel_mps2 * dt_s
    t = headway_s
    s = dt_s
    # n: whole braking steps that fit; h: the distance they cover; r spreads the remainder.
    # Computed for every gap and selected at the end (no branch), so that loops vectorise.
    n = floor_f(
        0.5 - ((t + (math.sqrt((s * s) + (4.0 * ((s * (2.0 * g / b - t)) + (t * t)))) * -0.5)) / s)
    )
    h = 0.5 * n * (n - 1.0) * b * s + n * b * t
    stopped = g < 0.0
    # the divisor may vanish for a negative gap, whose result is not used
    r = (g - h) / (1.0 if stopped else n * s + t)
    return 0.0 if stopped else n * b + r


@njit(cache=True, error_model="numpy")
def calculate_emergency_deceleration(
    gap_m: float,
    speed_mps: float,
    pred_speed_mps: float,
    pred_decel_mps2: float,
    emergency_decel_mps2: float,
) -> float:
    """Deceleration needed to stop behind a braking predecessor, m/s² (SUMO's formula).

    Either the follower can stop within gap + the predecessor's braking distance with at most
    the predecessor's deceleration, or it needs the deceleration that equalises both speeds
    within the gap.
    """
    if gap_m <= 0.0:
        return emergency_decel_mps2
    pred_brake_dist = 0.5 * pred_speed_mps * pred_speed_mps / pred_decel_mps2
    b1 = 0.5 * speed_mps * speed_mps / (gap_m + pred_brake_dist)
    if b1 <= pred_decel_mps2:
        return b1
    return 0.5 * (speed_mps * speed_mps - pred_speed_mps * pred_speed_mps) / gap_m


@njit(cache=True, error_model="numpy")
def maximum_safe_follow_speed(
    net_gap_m: float,
    speed_mps: float,
    pred_speed_mps: float,
    pred_decel_mps2: float,
    decel_mps2: float,
    emergency_decel_mps2: float,
    headway_s: float,
    on_insertion: bool,
    dt_s: float,
) -> float:
    """SUMO's ``maximumSafeFollowSpeed`` for the Euler update, m/s.

    The speed from which the follower can still stop behind a predecessor that starts braking
    now. With ``on_insertion`` False (SUMO's ACC) a demand harder than ``decel`` is softened to
    the emergency deceleration actually required (times 1.2); CACC passes True, which skips that.

    Args:
        net_gap_m: Bumper gap minus the follower's ``minGap``, m.
        speed_mps: Follower speed, m/s.
        pred_speed_mps: Predecessor speed, m/s.
        pred_decel_mps2: Predecessor's apparent deceleration, m/s².
        decel_mps2: Follower's ``decel``, m/s².
        emergency_decel_mps2: Follower's ``emergencyDecel``, m/s².
        headway_s: Follower's ``tau``, s.
        on_insertion: SUMO's ``onInsertion`` flag (see above).
        dt_s: Step length, s.
    """
    # The predecessor's braking distance uses at least our own deceleration (conservative).
    # Both branches are computed and one selected (no branch), so that loops vectorise.
    bg = brake_gap_euler(pred_speed_mps, max(decel_mps2, pred_decel_mps2), dt_s)
    x_stop = maximum_safe_stop_speed_euler(net_gap_m + bg, decel_mps2, headway_s, dt_s)
    x_overlap = max(speed_mps - emergency_decel_mps2 * dt_s, 0.0)
    x = x_stop if net_gap_m >= 0.0 else x_overlap
    if decel_mps2 != emergency_decel_mps2 and not on_insertion:
        orig_safe_decel = (speed_mps - x) / dt_s
        if orig_safe_decel > decel_mps2 + NUMERICAL_EPS:
            safe_decel = EMERGENCY_DECEL_AMPLIFIER * calculate_emergency_deceleration(
                net_gap_m, speed_mps, pred_speed_mps, pred_decel_mps2, emergency_decel_mps2
            )
            safe_decel = max(safe_decel, decel_mps2)
            safe_decel = min(safe_decel, orig_safe_decel)
            x = max(speed_mps - safe_decel * dt_s, 0.0)
    return x


# ---------------------------------------------------------------------------------------------
# ACC (MSCFModel_ACC.cpp).
# ---------------------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def _acc_gap_control_accel(
    p: FloatArray,
    o: int,
    net_gap_m: float,
    speed_mps: float,
    pred_speed_mps: float,
    v_err_mps: float,
) -> tuple[float, int]:
    """ACC gap-control acceleration (m/s²) and the sub-law used; ``o`` is the block offset."""
    delta_v = pred_speed_mps - speed_mps
    # Dynamic standstill margin d0 = clip(75/v - 5, 0, 2); at v = 0 it is the cap (75/0 = inf).
    if speed_mps > 0.0:
        d0 = max(
            0.0,
            min(
                p[o + ACC_MARGIN_SPEED_COEF] / speed_mps - p[o + ACC_MARGIN_OFFSET],
                p[o + ACC_MARGIN_MAX],
            ),
        )
    else:
        d0 = max(0.0, p[o + ACC_MARGIN_MAX])
    spacing_err = net_gap_m - p[o + ACC_TIME_GAP] * speed_mps - d0
    if (
        abs(spacing_err) < p[o + ACC_GAP_MODE_SPACING_ERR]
        and abs(v_err_mps) < p[o + ACC_GAP_MODE_SPEED_ERR]
    ):
        accel = p[o + ACC_GAP_SPEED_GAIN] * delta_v + p[o + ACC_GAP_SPACE_GAIN] * spacing_err
        return accel, MODE_GAP
    if spacing_err < 0.0:
        accel = (
            p[o + ACC_COLLISION_AVOIDANCE_SPEED_GAIN] * delta_v
            + p[o + ACC_COLLISION_AVOIDANCE_SPACE_GAIN] * spacing_err
        )
        return accel, MODE_COLLISION_AVOIDANCE
    accel = (
        p[o + ACC_GAP_CLOSING_SPEED_GAIN] * delta_v
        + p[o + ACC_GAP_CLOSING_SPACE_GAIN] * spacing_err
    )
    return accel, MODE_GAP_CLOSING


@njit(cache=True, error_model="numpy")
def _acc_v(
    p: FloatArray,
    o: int,
    net_gap_m: float,
    speed_mps: float,
    pred_speed_mps: float,
    desired_speed_mps: float,
    dt_s: float,
    gap_control_before: bool,
) -> tuple[float, int]:
    """SUMO's ``MSCFModel_ACC::_v``: the ACC law's next speed (m/s) and mode."""
    v_err = speed_mps - desired_speed_mps
    if net_gap_m > p[o + ACC_SPEED_CONTROL_GAP]:
        use_gap = False
    elif net_gap_m < p[o + ACC_GAP_CONTROL_GAP]:
        use_gap = True
    else:
        use_gap = gap_control_before  # hysteresis band: keep the previous law
    if use_gap:
        accel, mode = _acc_gap_control_accel(p, o, net_gap_m, speed_mps, pred_speed_mps, v_err)
    else:
        accel = p[o + ACC_SPEED_CONTROL_GAIN] * v_err
        mode = MODE_SPEED
    return max(0.0, speed_mps + accel * dt_s), mode


@njit(cache=True, error_model="numpy")
def acc_next_speed(
    p: FloatArray,
    speed_mps: float,
    accel_mps2: float,
    gap_m: float,
    pred_speed_mps: float,
    desired_speed_mps: float,
    dt_s: float,
    mode: int,
) -> tuple[float, int]:
    """One step of SUMO's ACC law with its safe-speed override (``MSCFModel_ACC::followSpeed``).

    Args:
        p: :meth:`SumoAccParams.to_vector`.
        speed_mps: Own speed at the start of the step, m/s.
        accel_mps2: Own acceleration of the previous step (unused by SUMO's ACC; kept for a
            uniform interface), m/s².
        gap_m: Bumper-to-bumper gap to the predecessor, m (``inf`` or ``>= NO_LEADER_GAP_M``:
            no predecessor). ``min_gap_m`` is subtracted here.
        pred_speed_mps: Predecessor speed at the start of the step, m/s.
        desired_speed_mps: ``min(lane speed limit, maxSpeed)``, m/s.
        dt_s: Step length, s.
        mode: This truck's mode from the previous step (start with :data:`MODE_SPEED`).

    Returns:
        ``(v_pos, mode)``: the speed bound to pass to :func:`sumo_finalize_speed` (m/s) and
        the mode used. Without predecessor SUMO does not call the law: ``v_pos`` is then
        ``desired_speed_mps`` (free road) and the mode :data:`MODE_SPEED`.
    """
    if not gap_m < NO_LEADER_GAP_M:
        return desired_speed_mps, MODE_SPEED
    net_gap = gap_m - p[ACC_MIN_GAP]
    v_acc, new_mode = _acc_v(
        p, 0, net_gap, speed_mps, pred_speed_mps, desired_speed_mps, dt_s, mode != MODE_SPEED
    )
    v_safe = maximum_safe_follow_speed(
        net_gap,
        speed_mps,
        pred_speed_mps,
        p[ACC_PRED_DECEL],
        p[ACC_DECEL],
        p[ACC_EMERGENCY_DECEL],
        p[ACC_TIME_GAP],
        False,
        dt_s,
    )
    if v_safe + p[ACC_EMERGENCY_THRESHOLD] < v_acc:
        return v_safe + p[ACC_EMERGENCY_THRESHOLD], new_mode
    return v_acc, new_mode


# ---------------------------------------------------------------------------------------------
# CACC (MSCFModel_CACC.cpp).
# ---------------------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def cacc_mode(
    p: FloatArray,
    speed_mps: float,
    gap_m: float,
    pred_is_cacc: bool,
    desired_speed_mps: float,
    mode: int,
) -> int:
    """The mode SUMO's CACC law drives in this step (the first half of :func:`cacc_next_speed`).

    Speed control, or one of gap control / gap closing / collision avoidance, or the ACC
    fallback behind a non-CACC predecessor; :data:`MODE_SPEED` without a predecessor. The
    arguments are those of :func:`cacc_next_speed`.
    """
    net_gap = gap_m - p[CACC_MIN_GAP]
    v_err = speed_mps - desired_speed_mps
    time_gap = net_gap / max(NUMERICAL_EPS, speed_mps)
    spacing_err = net_gap - p[CACC_TIME_GAP] * speed_mps
    speed_control = (time_gap > p[CACC_SPEED_CONTROL_TIME_GAP]) & (
        spacing_err > p[CACC_SPEED_CONTROL_MIN_GAP]
    )
    # between the two thresholds (hysteresis band) the previous law is kept
    use_gap = (not speed_control) & (
        (time_gap < p[CACC_GAP_CONTROL_TIME_GAP]) | (mode != MODE_SPEED)
    )
    # SUMO's speedGapControl: near the desired gap, inside it, or beyond it
    near = (
        (spacing_err > 0.0)
        & (spacing_err < p[CACC_GAP_MODE_SPACING_ERR])
        & (v_err < p[CACC_GAP_MODE_SPEED_ERR])
    )
    inside = spacing_err < 0.0
    gap_mode = MODE_GAP if near else (MODE_COLLISION_AVOIDANCE if inside else MODE_GAP_CLOSING)
    if not pred_is_cacc:
        gap_mode = MODE_ACC_FALLBACK
    free = not gap_m < NO_LEADER_GAP_M
    return gap_mode if use_gap and not free else MODE_SPEED


@njit(cache=True, error_model="numpy")
def cacc_control_speed(
    p: FloatArray,
    speed_mps: float,
    accel_mps2: float,
    gap_m: float,
    pred_speed_mps: float,
    desired_speed_mps: float,
    dt_s: float,
    new_mode: int,
    v_fallback_mps: float,
) -> float:
    """The CACC law's speed for ``new_mode`` (from :func:`cacc_mode`) before the safety cap
    (:func:`cacc_cap`), m/s; the ACC fallback's speed ``v_fallback_mps`` is passed in and used
    in :data:`MODE_ACC_FALLBACK` only. The arguments are those of :func:`cacc_next_speed`.

    Every candidate is computed and one selected, without jumps, and the law is split into
    three small functions, so that LLVM inlines each into a loop over many trucks and
    vectorises it; the results are those of SUMO's branching form.
    """
    net_gap = gap_m - p[CACC_MIN_GAP]
    tau = p[CACC_TIME_GAP]
    v_err = speed_mps - desired_speed_mps
    spacing_err = net_gap - tau * speed_mps
    # SUMO 1.28 uses the follower's own previous-step acceleration here (not the predecessor's).
    speed_err = pred_speed_mps - speed_mps - tau * accel_mps2
    # all gains are loaded before any is chosen: a load inside a branch stops vectorisation
    k_gap = p[CACC_GAP_GAP_GAIN]
    k_dot = p[CACC_GAP_GAP_DOT_GAIN]
    k_gap_avoid = p[CACC_COLLISION_AVOIDANCE_GAP_GAIN]
    k_dot_avoid = p[CACC_COLLISION_AVOIDANCE_GAP_DOT_GAIN]
    k_gap_closing = p[CACC_GAP_CLOSING_GAP_GAIN]
    k_dot_closing = p[CACC_GAP_CLOSING_GAP_DOT_GAIN]
    k_speed = p[CACC_SPEED_CONTROL_GAIN]
    # The gains of the mode, blended with 0/1 weights: exact for finite gains, and unlike
    # chained selects (which LLVM does not vectorise) plain arithmetic. Mode codes are ordered
    # SPEED < GAP < GAP_CLOSING < COLLISION_AVOIDANCE < ACC_FALLBACK.
    closing = 1.0 if new_mode > MODE_GAP else 0.0
    avoid = 1.0 if new_mode > MODE_GAP_CLOSING else 0.0
    k_gap = avoid * k_gap_avoid + (1.0 - avoid) * (
        closing * k_gap_closing + (1.0 - closing) * k_gap
    )
    k_dot = avoid * k_dot_avoid + (1.0 - avoid) * (
        closing * k_dot_closing + (1.0 - closing) * k_dot
    )
    v_new = speed_mps + k_gap * spacing_err + k_dot * speed_err
    v_speed = speed_mps + k_speed * v_err * dt_s
    if new_mode < MODE_GAP:
        v_new = v_speed
    if new_mode > MODE_COLLISION_AVOIDANCE:
        v_new = v_fallback_mps
    # The gains are tuned for 0.1 s steps; SUMO rescales the change only for shorter steps.
    # (``dt_s * 1000 < 99.5`` is SUMO's ``round(dt in ms) < 100`` without a call)
    accel01 = (v_new - speed_mps) * 10.0
    v_rescaled = speed_mps + accel01 * dt_s
    return max(0.0, v_rescaled if dt_s * 1000.0 < 99.5 else v_new)


@njit(cache=True, error_model="numpy")
def cacc_cap(
    p: FloatArray,
    speed_mps: float,
    gap_m: float,
    pred_speed_mps: float,
    desired_speed_mps: float,
    dt_s: float,
    v_cacc_mps: float,
) -> float:
    """The CACC law's speed ``v_cacc_mps`` capped at ``max(0, v_safe + min(threshold, g))``;
    ``desired_speed_mps`` without a predecessor (the last part of :func:`cacc_next_speed`).

    A function of its own so that each part stays small enough for LLVM to inline into a
    loop, which it then vectorises.
    """
    net_gap = gap_m - p[CACC_MIN_GAP]
    v_safe = maximum_safe_follow_speed(
        net_gap,
        speed_mps,
        pred_speed_mps,
        p[CACC_PRED_DECEL],
        p[CACC_DECEL],
        p[CACC_EMERGENCY_DECEL],
        p[CACC_TIME_GAP],
        True,
        dt_s,
    )
    override = min(p[CACC_EMERGENCY_THRESHOLD], net_gap)
    v_capped = max(0.0, v_safe + override) if v_safe + override < v_cacc_mps else v_cacc_mps
    # no predecessor: SUMO does not call the law
    return desired_speed_mps if not gap_m < NO_LEADER_GAP_M else v_capped


@njit(cache=True, error_model="numpy")
def cacc_cap_is_off(
    p: FloatArray,
    gap_m: float,
    pred_speed_mps: float,
    dt_s: float,
    v_cacc_mps: float,
) -> bool:
    """True only where :func:`cacc_cap` returns ``v_cacc_mps`` unchanged (a follower with a
    predecessor); False is "unknown", and the caller must then compute the cap.

    The cap is off when ``v_safe + min(threshold, g) >= v_cacc``. ``v_safe`` is the highest
    speed from which the truck, after its headway ``tau``, stops in Euler steps of ``decel``
    within ``g + bg`` (``bg``: the predecessor's Euler brake gap). Euler braking (the speed
    drops, then the truck moves) covers less than braking continuously, so a speed ``X`` is
    safe if ``X·tau + X²/(2·decel) <= g + bg``; and with ``n = floor(v/r)`` steps of
    ``r = b·dt`` the brake gap ``dt·(n·v − r·n(n+1)/2)`` is at least ``v²/(2b) − v·dt/2``
    (the quadratic in ``n`` is largest at ``n = v/r − 1/2``, and ``n`` lies within 1/2 of
    it, which costs at most ``r·dt/8``, exactly the constant dropped). A margin of 1 cm plus
    SUMO's ``NUMERICAL_EPS`` covers rounding. None of it divides by a variable or takes a root,
    which is the point: a cruising platoon skips the safe speed's four divisions and square root
    (``tests/test_sumo_cfm.py`` checks the implication on a million random states).
    """
    net_gap = gap_m - p[CACC_MIN_GAP]
    decel = p[CACC_DECEL]
    pred_decel = max(decel, p[CACC_PRED_DECEL])
    need = max(v_cacc_mps - min(p[CACC_EMERGENCY_THRESHOLD], net_gap), 0.0)
    bg_low = pred_speed_mps * (pred_speed_mps * (0.5 / pred_decel) - 0.5 * dt_s)
    stop_m = need * (p[CACC_TIME_GAP] + need * (0.5 / decel))
    return (net_gap >= 0.0) & (net_gap + bg_low >= stop_m + NUMERICAL_EPS + 0.01)


@njit(cache=True, error_model="numpy")
def cacc_next_speed(
    p: FloatArray,
    speed_mps: float,
    accel_mps2: float,
    gap_m: float,
    pred_speed_mps: float,
    pred_accel_mps2: float,
    pred_is_cacc: bool,
    desired_speed_mps: float,
    dt_s: float,
    mode: int,
) -> tuple[float, int]:
    """One step of SUMO's CACC law with its safe-speed override (``MSCFModel_CACC::followSpeed``).

    Mode selection (SUMO's ``_v`` without communication override): with ``g`` the net gap,
    time gap ``g / max(v, 0.001) > 2`` s and ``g - tau*v > speed_control_min_gap_m`` selects
    speed control, time gap ``< 1.5`` s selects gap control, otherwise the previous choice is
    kept. Gap control picks gap / collision-avoidance / gap-closing from the spacing error, or
    the ACC law (time gap ``acc_fallback_time_gap_s``) behind a non-CACC predecessor. The result
    is then capped at ``max(0, v_safe + min(emergency_threshold_mps, g))``.

    Args:
        p: :meth:`SumoCaccParams.to_vector`.
        speed_mps: Own speed at the start of the step, m/s.
        accel_mps2: Own acceleration of the previous step, ``(v_now - v_prev)/dt`` (0 right
            after insertion), m/s².
        gap_m: Bumper-to-bumper gap to the predecessor, m (``inf`` or ``>= NO_LEADER_GAP_M``:
            no predecessor). ``min_gap_m`` is subtracted here.
        pred_speed_mps: Predecessor speed at the start of the step, m/s.
        pred_accel_mps2: Predecessor acceleration (unused: SUMO 1.28's CACC feeds back its own
            acceleration, not the predecessor's), m/s².
        pred_is_cacc: Whether the predecessor drives SUMO's CACC model (else ACC fallback).
        desired_speed_mps: ``min(lane speed limit * speedFactor, maxSpeed)``, m/s.
        dt_s: Step length, s.
        mode: This truck's mode from the previous step (start with :data:`MODE_SPEED`).

    Returns:
        ``(v_pos, mode)``: the speed bound to pass to :func:`sumo_finalize_speed` (m/s) and
        the mode used. Without predecessor SUMO does not call the law: ``v_pos`` is then
        ``desired_speed_mps`` (free road) and the mode :data:`MODE_SPEED`.
    """
    new_mode = cacc_mode(p, speed_mps, gap_m, pred_is_cacc, desired_speed_mps, mode)
    v_fallback = 0.0
    if new_mode == MODE_ACC_FALLBACK:
        # SUMO's ACC fallback shares the CACC's per-step update stamp, so it never stores its
        # own speed/gap control choice: its hysteresis always sees the initial "speed control".
        v_fallback = _acc_v(
            p,
            CACC_ACC_OFFSET,
            gap_m - p[CACC_MIN_GAP],
            speed_mps,
            pred_speed_mps,
            desired_speed_mps,
            dt_s,
            False,
        )[0]
    v_cacc = cacc_control_speed(
        p,
        speed_mps,
        accel_mps2,
        gap_m,
        pred_speed_mps,
        desired_speed_mps,
        dt_s,
        new_mode,
        v_fallback,
    )
    v_pos = cacc_cap(p, speed_mps, gap_m, pred_speed_mps, desired_speed_mps, dt_s, v_cacc)
    return v_pos, new_mode


# ---------------------------------------------------------------------------------------------
# Speed finalisation and TraCI setSpeed (MSCFModel::finalizeSpeed, MSVehicle::Influencer).
# ---------------------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def sumo_finalize_speed(
    old_speed_mps: float,
    v_pos_mps: float,
    max_accel_mps2: float,
    max_decel_mps2: float,
    emergency_decel_mps2: float,
    max_speed_mps: float,
    dt_s: float,
) -> float:
    """The speed a car-following vehicle drives in the coming step, given its planned bound.

    SUMO's ``planMove`` bound ``min(v + accel*dt, maxSpeed, lane max speed, v_pos)``, then
    ``MSCFModel::finalizeSpeed`` (Euler, no dawdling for ACC/CACC): braking harder than
    ``decel`` is allowed only when ``v_pos`` demands it, and never harder than
    ``emergencyDecel``; the speed stays non-negative. Finally ``MSVehicle::executeMove`` snaps
    speeds below ``NUMERICAL_EPS_SPEED = 0.1 * NUMERICAL_EPS * dt`` to exactly 0.

    Not for heads under TraCI ``setSpeed``: use :func:`sumo_set_speed` for those.

    Args:
        old_speed_mps: Speed at the start of the step, m/s.
        v_pos_mps: Planned speed bound (the law's output), m/s.
        max_accel_mps2: vType ``accel``, m/s².
        max_decel_mps2: vType ``decel``, m/s².
        emergency_decel_mps2: vType ``emergencyDecel``, m/s².
        max_speed_mps: Max speed on the lane ``min(maxSpeed, lane limit * speedFactor)``; this
            assumes the vType ``maxSpeed`` is not above it, m/s.
        dt_s: Step length, s.

    Returns:
        The new speed, m/s.
    """
    max_next = min(old_speed_mps + max_accel_mps2 * dt_s, max_speed_mps)
    v_pos = min(min(max_next, max_speed_mps), v_pos_mps)
    v_min_emergency = max(old_speed_mps - emergency_decel_mps2 * dt_s, 0.0)
    v_min = min(max(old_speed_mps - max_decel_mps2 * dt_s, 0.0), max(v_pos, v_min_emergency))
    # SUMO also bounds the speed by the one that reaches the lane's max speed (or v_pos if
    # higher) in one step, ``old + ((max(max_speed, v_pos) - old) / dt) * dt``: that speed
    # is at least v_pos but for rounding, so the bound is v_pos, which is at most max_next.
    # The rounding (an ulp, at the max speed only) is left out, and with it a division per
    # truck and step.
    v_next = max(v_min, v_pos)
    # SUMO removes tiny residual speeds so that a queue really comes to rest.
    if abs(v_next) < 0.1 * NUMERICAL_EPS * dt_s:
        v_next = 0.0
    return max(v_next, 0.0)


@njit(cache=True, error_model="numpy")
def sumo_set_speed(
    old_speed_mps: float,
    commanded_speed_mps: float,
    max_accel_mps2: float,
    max_decel_mps2: float,
    dt_s: float,
    max_speed_mps: float = math.inf,
) -> float:
    """New speed of a vehicle under TraCI ``setSpeed`` with the default speed mode (31), m/s.

    SUMO's influencer sets the speed to the commanded one, limited to one step of ``accel`` up
    and of ``decel`` down (never below 0) and to ``max_speed_mps``. It acts after
    ``finalizeSpeed``, so its result is final: it replaces :func:`sumo_finalize_speed` for such
    vehicles (no emergency braking, no tiny-speed snapping). The default speed mode also
    respects the car-following safe speed: for a commanded vehicle with a predecessor pass
    ``min(v_cmd, law output)`` as ``commanded_speed_mps``.

    Args:
        old_speed_mps: Speed at the start of the step, m/s.
        commanded_speed_mps: Speed last given to ``setSpeed`` (see above), m/s.
        max_accel_mps2: vType ``accel``, m/s².
        max_decel_mps2: vType ``decel``, m/s².
        dt_s: Step length, s.
        max_speed_mps: Max speed on the lane ``min(maxSpeed, lane limit * speedFactor)``, m/s.

    Returns:
        The new speed, m/s.
    """
    v_max = min(old_speed_mps + max_accel_mps2 * dt_s, max_speed_mps)
    v_min = max(0.0, old_speed_mps - max_decel_mps2 * dt_s)
    v = min(commanded_speed_mps, v_max)  # respect max acceleration and the free-road speed
    return max(v, v_min)  # respect max deceleration
