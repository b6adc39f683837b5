"""Engine state and parameters as arrays, one row per truck.

``TruckTable`` holds what never changes during a run; ``TruckState`` holds what does.
Both are frozen dataclasses of NumPy arrays; the kernel mutates the arrays in place and
the Python side only ever sees them between calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

# Columns of TruckTable.phys (float64).
TP_LENGTH_M = 0
TP_MIN_GAP_M = 1
TP_MAX_ACCEL_MPS2 = 2
TP_MAX_DECEL_MPS2 = 3
TP_EMERGENCY_DECEL_MPS2 = 4
TP_MAX_SPEED_MPS = 5
TP_MASS_KG = 6
TP_CD_A_M2 = 7
TP_CRR = 8
TP_ACTUATOR_LAG_S = 9
TP_SENSOR_DELAY_STEPS = 10
TP_LIMIT_TRACTION = 11
TP_NOISE_MPS2 = 12
TP_EMERGENCY_BRAKING = 13
TP_SIZE = 14

# Columns of the received-beacon tables (float64).
RX_POS_M = 0
RX_SPEED_MPS = 1
RX_ACCEL_MPS2 = 2
RX_U_MPS2 = 3
RX_STAMP_S = 4
RX_HAZARD = 5
RX_SIZE = 6

# Planes of the history ring buffer (float64).
H_POS_M = 0
H_SPEED_MPS = 1
H_ACCEL_MPS2 = 2
H_U_MPS2 = 3
H_SIZE = 4

# Columns of the safety metrics' per-truck accumulators (float64), over the samples of a
# metrics window (``kernel.ENV_METRICS_FROM_S``; the validation's metrics, read per step).
MET_PEAK_ABS_ACCEL_MPS2 = 0  # largest |a| (from 0)
MET_LOWEST_ACCEL_MPS2 = 1  # lowest a (from 0)
MET_MIN_GAP_M = 2  # smallest bumper gap to the leader (followers; from inf)
MET_MIN_TTC_S = 3  # smallest time to collision while closing in (followers; from inf)
MET_DRAC_MPS2 = 4  # largest deceleration rate to avoid a crash (followers; from 0)
MET_SIZE = 5


@njit(cache=True)
def empty_metrics(n: int) -> np.ndarray:
    """The ``MET_*`` accumulators of ``n`` trucks before any sample (compiled: the metrics
    of a recorded trace start from it, ``validation._metric_rows``)."""
    met = np.zeros((n, MET_SIZE))
    met[:, MET_MIN_GAP_M] = np.inf
    met[:, MET_MIN_TTC_S] = np.inf
    return met


@dataclass(frozen=True, slots=True)
class TruckTable:
    """Per-truck parameters fixed for the run.

    Attributes:
        model: (n,) int8 controller model code, see ``convoy.vehicle.controllers``.
        leader: (n,) int32 row of the truck ahead in the lane, -1 if none.
        follower: (n,) int32 row of the truck behind in the same platoon, -1 if none.
        head: (n,) int32 row of the own platoon's head (own row for a head).
        platoon_size: (n,) int32 trucks in the own platoon.
        position: (n,) int32 index in the platoon, 0 = head.
        phys: (n, TP_SIZE) float64 dimensions and limits, see ``TP_*`` [SI units].
        ctrl: (n, k) float64 parameter row of the truck's control law.
        acc: (n, k_acc) float64 SUMO-ACC parameter row for fallback and inter-platoon following.
        powertrain: (n, k_pt) float64 powertrain vector (``convoy.vehicle.energy``).
    """

    model: np.ndarray
    leader: np.ndarray
    follower: np.ndarray
    head: np.ndarray
    platoon_size: np.ndarray
    position: np.ndarray
    phys: np.ndarray
    ctrl: np.ndarray
    acc: np.ndarray
    powertrain: np.ndarray

    @property
    def n(self) -> int:
        """Number of trucks."""
        return int(self.model.shape[0])


@dataclass(frozen=True, slots=True)
class TruckState:
    """Per-truck state; double-buffered where the step reads the old and writes the new.

    Attributes:
        pos_m: (2, n) front-bumper position along the road [m], float64; row ``step % 2``
            is current.
        speed_mps: (2, n) speed [m/s].
        accel_mps2: (2, n) realised acceleration [m/s²].
        u_mps2: (2, n) commanded acceleration before the actuator lag [m/s²].
        mode: (n,) int8 control mode, see ``MODE_*``.
        ctrl_mode: (n,) int8 law-internal mode kept between steps (SUMO's ControlMode).
        energy_kwh: (n,) energy drawn since the start (battery, or fuel energy) [kWh].
        rx_pred: (RX_SIZE, n) newest beacon received from the predecessor (one row per
            field, so that a loop over trucks reads and writes each field contiguously).
        rx_head: (RX_SIZE, n) newest beacon received from the platoon head.
        ge_bad: (n, 2) int8 Gilbert–Elliott state of the predecessor and head links.
        hist: (h, H_SIZE, n) ring buffer of past pos/speed/accel/u for delays.
        collided_at_s: (n,) time of this truck's first collision [s], NaN if none.
        collision_speed_mps: (n,) closing speed at that collision [m/s].
        min_gap_m: (n,) smallest bumper gap to the predecessor seen [m].
        min_ttc_s: (n,) smallest time-to-collision seen [s] (inf if never closing).
        hard_brakes: (n,) int32 steps that began a deceleration beyond 3 m/s².
        fallback_steps: (n,) int32 steps spent in ACC fallback.
        emergency_steps: (n,) int32 steps spent in emergency braking.
        odd_flags: (n,) int32 ODD flags (``convoy.road.hazards.OddFlags``) of the last step.
        rsi_received_at_s: (n,) time the truck first learned of a hazard from an RSU's RSI
            broadcast [s], NaN if never.
        hazard_known: (n, k) int8 what each truck knows of each of the k hazards
            (``convoy.road.hazards.KNOWN_*``).
        signal_known: (n, k_sig) int8 what each truck knows of each traffic signal, bits
            ``convoy.road.signals.SIG_*`` (seen, SPAT received, stopping).
        spat_phase: (n,) int8 phase the truck knows for the nearest signal ahead
            (``convoy.road.signals.PHASE_*``) in the last step, -1 if none.
        spat_received_at_s: (n,) time the truck first received a signal's SPAT from an RSU
            [s], NaN if never.
        signal_seen_at_s: (n,) time a signal's light first came into the truck's sight [s],
            NaN if never.
        red_light_stops: (n,) int32 times the truck came to a halt with the nearest signal
            ahead known to show red or yellow (at the line or queued behind).
        red_light_crossings: (n,) int32 stop lines the front bumper crossed on red.
        metrics: (n, MET_SIZE) the ``MET_*`` accumulators of the samples in the metrics
            window: the state at the start and after each step, from the time
            ``env[ENV_METRICS_FROM_S]`` on (inf, the default: none).
        step: (1,) int64 steps taken so far.
    """

    pos_m: np.ndarray
    speed_mps: np.ndarray
    accel_mps2: np.ndarray
    u_mps2: np.ndarray
    mode: np.ndarray
    ctrl_mode: np.ndarray
    energy_kwh: np.ndarray
    rx_pred: np.ndarray
    rx_head: np.ndarray
    ge_bad: np.ndarray
    hist: np.ndarray
    collided_at_s: np.ndarray
    collision_speed_mps: np.ndarray
    min_gap_m: np.ndarray
    min_ttc_s: np.ndarray
    hard_brakes: np.ndarray
    fallback_steps: np.ndarray
    emergency_steps: np.ndarray
    odd_flags: np.ndarray
    rsi_received_at_s: np.ndarray
    hazard_known: np.ndarray
    signal_known: np.ndarray
    spat_phase: np.ndarray
    spat_received_at_s: np.ndarray
    signal_seen_at_s: np.ndarray
    red_light_stops: np.ndarray
    red_light_crossings: np.ndarray
    metrics: np.ndarray
    step: np.ndarray

    @property
    def cur(self) -> int:
        """Row of the double-buffered arrays that holds the current state."""
        return int(self.step[0] % 2)

    @staticmethod
    def initial(
        pos_m: np.ndarray,
        speed_mps: np.ndarray,
        history_len: int,
        n_hazards: int = 0,
        n_signals: int = 0,
    ) -> TruckState:
        """State at rest acceleration with the given positions and speeds (n,), knowing
        none of ``n_hazards`` hazards and ``n_signals`` traffic signals."""
        n = pos_m.shape[0]
        two = np.zeros((2, n))
        pos = two.copy()
        pos[:] = pos_m
        speed = two.copy()
        speed[:] = speed_mps
        hist = np.zeros((max(history_len, 1), H_SIZE, n))
        hist[:, H_POS_M, :] = pos_m
        hist[:, H_SPEED_MPS, :] = speed_mps
        rx = np.zeros((RX_SIZE, n))
        rx[RX_STAMP_S] = -np.inf
        return TruckState(
            pos_m=pos,
            speed_mps=speed,
            accel_mps2=two.copy(),
            u_mps2=two.copy(),
            mode=np.zeros(n, np.int8),
            ctrl_mode=np.zeros(n, np.int8),
            energy_kwh=np.zeros(n),
            rx_pred=rx,
            rx_head=rx.copy(),
            ge_bad=np.zeros((n, 2), np.int8),
            hist=hist,
            collided_at_s=np.full(n, np.nan),
            collision_speed_mps=np.zeros(n),
            min_gap_m=np.full(n, np.inf),
            min_ttc_s=np.full(n, np.inf),
            hard_brakes=np.zeros(n, np.int32),
            fallback_steps=np.zeros(n, np.int32),
            emergency_steps=np.zeros(n, np.int32),
            odd_flags=np.zeros(n, np.int32),
            rsi_received_at_s=np.full(n, np.nan),
            hazard_known=np.zeros((n, n_hazards), np.int8),
            signal_known=np.zeros((n, n_signals), np.int8),
            spat_phase=np.full(n, -1, np.int8),
            spat_received_at_s=np.full(n, np.nan),
            signal_seen_at_s=np.full(n, np.nan),
            red_light_stops=np.zeros(n, np.int32),
            red_light_crossings=np.zeros(n, np.int32),
            metrics=empty_metrics(n),
            step=np.zeros(1, np.int64),
        )
