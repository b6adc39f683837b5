"""Longitudinal drivers and controllers as compiled scalar laws.

Each law maps what one truck perceives (its own state, the measured gap, and the
beacons it received) to a commanded acceleration ``u`` [m/s²].  The engine applies
the first-order actuator lag ``a' = (u - a) / tau`` and the truck's limits afterwards,
so every law here is lag-free.  SUMO's CACC and ACC laws live in ``sumo_cfm`` because
they command a speed rather than an acceleration.

Model codes (the ``model`` column of the engine's truck table):

* ``MODEL_HUMAN``: Intelligent Driver Model (Treiber, Hennecke & Helbing, Phys. Rev. E
  62, 2000) with a reaction delay and bounded acceleration noise.
* ``MODEL_ACC``: SUMO's ACC law (Milanés & Shladover 2014), see ``sumo_cfm``.
* ``MODEL_CACC_SUMO``: SUMO's CACC law (Milanés & Shladover 2014; Xiao et al. 2017).
* ``MODEL_CACC_PATH``: Rajamani, *Vehicle Dynamics and Control*, 2nd ed., eq. 7.39:
  constant spacing with leader and predecessor feed-forward.
* ``MODEL_CACC_PLOEG``: Ploeg et al., "Design and experimental evaluation of cooperative
  adaptive cruise control", ITSC 2011: constant time gap with the predecessor's
  commanded acceleration as feed-forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

MODEL_HUMAN = 0
MODEL_ACC = 1
MODEL_CACC_SUMO = 2
MODEL_CACC_PATH = 3
MODEL_CACC_PLOEG = 4

MODEL_NAMES = {
    "human": MODEL_HUMAN,
    "acc": MODEL_ACC,
    "cacc-sumo": MODEL_CACC_SUMO,
    "cacc-path": MODEL_CACC_PATH,
    "cacc-ploeg": MODEL_CACC_PLOEG,
}

# Modes written to the FCD ``mode`` column.  0-4 match ``sumo_cfm``'s control modes.
MODE_SPEED = 0
MODE_GAP = 1
MODE_GAP_CLOSING = 2
MODE_COLLISION_AVOIDANCE = 3
MODE_ACC_FALLBACK = 4
MODE_EMERGENCY = 5
MODE_FOLLOW = 6
MODE_HEAD = 7
MODE_COLLIDED = 8

MODE_NAMES = (
    "speed",
    "gap",
    "gap-closing",
    "collision-avoidance",
    "acc-fallback",
    "emergency",
    "follow",
    "head",
    "collided",
)

# Layout of the per-truck float64 parameter row of the lag-free laws below.
IDM_TIME_GAP_S = 0
IDM_COMFORT_DECEL_MPS2 = 1
IDM_DELTA = 2
IDM_NOISE_MPS2 = 3
PATH_SPACING_M = 0
PATH_C1 = 1
PATH_XI = 2
PATH_OMEGA_N_RADPS = 3
PLOEG_TIME_GAP_S = 0
PLOEG_KP_PER_S2 = 1
PLOEG_KD_PER_S = 2


@dataclass(frozen=True, slots=True)
class IdmParams:
    """Human driver (IDM) parameters.

    Attributes:
        time_gap_s: desired time headway T; 1.5 s for trucks (Treiber & Kesting,
            *Traffic Flow Dynamics*, 2013, Table 11.2).
        comfort_decel_mps2: comfortable deceleration b; 2.0 m/s² (same table, trucks).
        delta: acceleration exponent; 4 (Treiber et al. 2000).
        reaction_time_s: delay between what happens and what the driver acts on;
            0.6 s is a typical alert highway driver (Green, "How long does it take to
            stop?", Transp. Human Factors 2(3), 2000: 0.7–1.5 s for surprise events).
        noise_mps2: bound of the uniform acceleration noise that stands in for
            imperfect driving (Treiber, Kesting & Helbing, Physica A 360, 2006).
        actuator_lag_s: first-order lag of the powertrain and brakes (DESIGN.md: 0.5 s).
    """

    time_gap_s: float = 1.5
    comfort_decel_mps2: float = 2.0
    delta: float = 4.0
    reaction_time_s: float = 0.6
    noise_mps2: float = 0.1
    actuator_lag_s: float = 0.5

    def to_vector(self) -> np.ndarray:
        """Pack into the kernel's float64 parameter row."""
        return np.array([self.time_gap_s, self.comfort_decel_mps2, self.delta, self.noise_mps2])


@dataclass(frozen=True, slots=True)
class PathParams:
    """PATH CACC parameters (Rajamani 2012, eq. 7.39; Plexe's defaults).

    Attributes:
        spacing_m: constant desired bumper gap; 5 m as in Plexe.
        c1: weight of the leader's acceleration against the predecessor's; 0.5.
        xi: damping ratio; 1.
        omega_n_radps: controller bandwidth; 0.2 rad/s.
        actuator_lag_s: DESIGN.md: 0.5 s.
    """

    spacing_m: float = 5.0
    c1: float = 0.5
    xi: float = 1.0
    omega_n_radps: float = 0.2
    actuator_lag_s: float = 0.5

    def to_vector(self) -> np.ndarray:
        """Pack into the kernel's float64 parameter row."""
        return np.array([self.spacing_m, self.c1, self.xi, self.omega_n_radps])


@dataclass(frozen=True, slots=True)
class PloegParams:
    """Ploeg CACC parameters (Ploeg et al. 2011: h = 0.5 s, kp = 0.2, kd = 0.7).

    Attributes:
        time_gap_s: time headway h.
        kp_per_s2: gain on the spacing error.
        kd_per_s: gain on the spacing-error rate.
        actuator_lag_s: DESIGN.md: 0.5 s.
    """

    time_gap_s: float = 0.5
    kp_per_s2: float = 0.2
    kd_per_s: float = 0.7
    actuator_lag_s: float = 0.5

    def to_vector(self) -> np.ndarray:
        """Pack into the kernel's float64 parameter row."""
        return np.array([self.time_gap_s, self.kp_per_s2, self.kd_per_s])


@njit(cache=True, inline="always")
def idm_accel_terms(
    speed_mps: float,
    gap_m: float,
    pred_speed_mps: float,
    desired_speed_mps: float,
    min_gap_m: float,
    time_gap_s: float,
    max_accel_mps2: float,
    comfort_decel_mps2: float,
    delta: float,
) -> float:
    """IDM acceleration (Treiber et al. 2000, eqs. 1-2) from scalar parameters.

    ``gap_m`` is the bumper gap to the predecessor; a non-finite gap means a free road.
    The usual exponent 4 is computed with two multiplications instead of a ``pow``.
    """
    v0 = max(desired_speed_mps, 0.1)
    ratio = speed_mps / v0
    if delta == 4.0:
        r2 = ratio * ratio
        free = 1.0 - r2 * r2
    else:
        free = 1.0 - ratio**delta
    if not math.isfinite(gap_m):
        return max_accel_mps2 * free
    dv = speed_mps - pred_speed_mps
    s_star = min_gap_m + max(
        0.0,
        speed_mps * time_gap_s
        + speed_mps * dv / (2.0 * math.sqrt(max_accel_mps2 * comfort_decel_mps2)),
    )
    s = max(gap_m, 0.01)
    return max_accel_mps2 * (free - (s_star / s) ** 2)


@njit(cache=True, inline="always")
def idm_accel(
    p: np.ndarray,
    speed_mps: float,
    gap_m: float,
    pred_speed_mps: float,
    desired_speed_mps: float,
    min_gap_m: float,
    max_accel_mps2: float,
) -> float:
    """IDM acceleration for a parameter row (see ``IDM_*``); ``inf`` gap: no predecessor.

    Returns:
        Commanded acceleration [m/s²] (noise is added by the engine).
    """
    return idm_accel_terms(
        speed_mps,
        gap_m,
        pred_speed_mps,
        desired_speed_mps,
        min_gap_m,
        p[IDM_TIME_GAP_S],
        max_accel_mps2,
        p[IDM_COMFORT_DECEL_MPS2],
        p[IDM_DELTA],
    )


@njit(cache=True, inline="always")
def path_accel(
    p: np.ndarray,
    speed_mps: float,
    gap_m: float,
    pred_speed_mps: float,
    pred_accel_mps2: float,
    lead_speed_mps: float,
    lead_accel_mps2: float,
) -> float:
    """PATH CACC law, Rajamani 2012 eq. 7.39.

    ``u = a1*a_pred + a2*a_lead + a3*de + a4*(v - v_lead) + a5*e`` with the spacing error
    ``e = spacing - gap`` (positive when too close) and ``de = v - v_pred``.

    Args:
        p: parameter row, see ``PATH_*``.
        speed_mps: own speed.
        gap_m: measured bumper gap to the predecessor.
        pred_speed_mps, pred_accel_mps2: predecessor state from its last beacon.
        lead_speed_mps, lead_accel_mps2: platoon head state from its last beacon.

    Returns:
        Commanded acceleration [m/s²].
    """
    c1 = p[PATH_C1]
    xi = p[PATH_XI]
    wn = p[PATH_OMEGA_N_RADPS]
    root = math.sqrt(max(xi * xi - 1.0, 0.0))
    a1 = 1.0 - c1
    a2 = c1
    a3 = -(2.0 * xi - c1 * (xi + root)) * wn
    a4 = -c1 * (xi + root) * wn
    a5 = -wn * wn
    e = p[PATH_SPACING_M] - gap_m
    de = speed_mps - pred_speed_mps
    return (
        a1 * pred_accel_mps2
        + a2 * lead_accel_mps2
        + a3 * de
        + a4 * (speed_mps - lead_speed_mps)
        + a5 * e
    )


@njit(cache=True, inline="always")
def ploeg_accel(
    p: np.ndarray,
    u_prev_mps2: float,
    speed_mps: float,
    accel_mps2: float,
    gap_m: float,
    min_gap_m: float,
    pred_speed_mps: float,
    pred_u_mps2: float,
    dt_s: float,
) -> float:
    """Ploeg CACC law (Ploeg et al. 2011), forward-Euler in time.

    ``h du/dt = -u + kp*e + kd*de + u_pred`` with ``e = gap - (min_gap + h v)`` and
    ``de = v_pred - v - h a``.

    Args:
        p: parameter row, see ``PLOEG_*``.
        u_prev_mps2: own command at the previous step.
        speed_mps, accel_mps2: own state.
        gap_m: measured bumper gap; ``min_gap_m`` is the standstill distance r.
        pred_speed_mps: predecessor speed from its last beacon.
        pred_u_mps2: predecessor's command from its last beacon (the feed-forward).
        dt_s: step.

    Returns:
        New command [m/s²].
    """
    h = p[PLOEG_TIME_GAP_S]
    e = gap_m - (min_gap_m + h * speed_mps)
    de = pred_speed_mps - speed_mps - h * accel_mps2
    du = (-u_prev_mps2 + p[PLOEG_KP_PER_S2] * e + p[PLOEG_KD_PER_S] * de + pred_u_mps2) / h
    return u_prev_mps2 + dt_s * du
