"""Fixed-time traffic signals on the 1-D road: their phases, their SPAT, and the stop line.

A ``FixedTimeSignal`` stands at a stop line ``pos_m`` and cycles green, yellow, red with the
phase convention of ``convoy.road.network.SignalPlan``: the cycle position is
``tau = (t + offset_s) mod cycle_s`` and the phases follow one another from ``tau = 0`` in
that order.  ``spat_for`` writes its state as the T/CSAE 53 ``SPAT`` message of
``convoy.road.v2x``.

For the corridor engine the signals become a (k, SG_SIZE) table (``signal_table``) and
``signal_effects`` is the compiled per-truck step.  Its semantics:

* **Knowing.**  A truck knows a signal's phase and time to change (SPAT) once it is within
  the coverage radius of an RSU whose position is within the RSU's ``alert_range_m`` of the
  stop line: the relay rule of the RSI broadcast (``convoy.road.hazards``), the traffic
  centre feeding each RSU the signal timings of the next few kilometres.  Without SPAT it
  knows the phase, but not the time to change, once the stop line is within sight:
  ``VISUAL_RANGE_M``, or less where a hazard limits the sensor range.  Knowledge, once
  gained, is kept until the truck's front bumper passes the line: a fixed-time plan
  repeats, so the timing received stays valid.  Line of sight is not modelled (a trailer
  ahead does not hide the light).
* **Acting.**  Only platoon heads (the trucks driven by ``leader.speed_profile``) act on
  the lights; followers follow their predecessor as usual and cross as a unit behind it, so
  a green shorter than the platoon lets its tail run the red (``red_light_crossings``
  counts that).  A head stops for a red light, and for a yellow one when it can still stop
  comfortably; it holds that decision until the green.  Stopping treats the line as a
  standing obstacle: the head's speed is capped by SUMO's CACC ``stopSpeed`` (the Euler
  safe stopping speed with one step of reaction, ``maximum_safe_stop_speed_euler``) for
  the gap ``d - STOP_MARGIN_M`` at the comfortable deceleration
  ``b = SIGNAL_DECEL_FRACTION * max_decel``, roughly ``v <= sqrt(2 b (d - margin))``.
* **Gliding.**  A head that knows the timing from SPAT also plans ahead (green light
  optimal speed advisory, GLOSA): when it is stopping for the light, or the light is green
  but the head would not reach the line before the green ends even at its speed limit, it
  brakes with the gentlest constant deceleration that brings it to the line no earlier
  than ``GLIDE_MARGIN_S`` after the next green starts, ``a = 2 (v T - g) / T²`` for a gap
  ``g`` and that time ``T``, or, where that would stop it short, the one that stops it at
  the line, ``a = v² / (2 g)``.  It slows early and gently and often need not stop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from convoy.road.hazards import (
    RSU_ALERT_RANGE_M,
    RSU_POS_M,
    RSU_RADIUS_M,
)
from convoy.road.network import SignalPhase, SignalPlan
from convoy.road.v2x import (
    SPAT,
    IntersectionState,
    LightState,
    NodeReferenceID,
    Phase,
    PhaseState,
    TimeCountingDown,
)
from convoy.vehicle.sumo_cfm import maximum_safe_stop_speed_euler

# Phase codes, in cycle order; ``PHASE_UNKNOWN`` where a truck knows of no signal ahead.
PHASE_UNKNOWN = -1
PHASE_GREEN = 0
PHASE_YELLOW = 1
PHASE_RED = 2
PHASE_NAMES = ("green", "yellow", "red")
# The T/CSAE 53 SPAT light state of each phase code.
PHASE_LIGHTS: tuple[LightState, ...] = ("protected-green", "yellow", "red")

# How far ahead a truck sees a signal's light without SPAT.  The MUTCD (2009, Table 4D-2)
# asks that signal faces be visible from 460-540 ft (140-165 m) at 45-50 mph approach
# speeds; 150 m is that sight distance, and it is within the range at which camera-based
# traffic-light recognition classifies a lamp.
VISUAL_RANGE_M = 150.0
# A stopping head aims its front bumper this far before the stop line.
STOP_MARGIN_M = 1.0
# Comfortable deceleration for a stop, as a fraction of the truck's max_decel_mps2: 0.5 of
# the default 4 m/s² is the 2 m/s² comfortable deceleration of trucks in IDM (Treiber &
# Kesting 2013, Table 11.2).
SIGNAL_DECEL_FRACTION = 0.5
# Gliding on SPAT aims to reach the line this long after the green starts.
GLIDE_MARGIN_S = 1.0
# Below this speed a truck is halted (SUMO's halting-speed threshold for waiting time and
# jams, 0.1 m/s); coming to a halt at a red or yellow light counts as a red-light stop.
HALTING_SPEED_MPS = 0.1

# Bits of the per-truck, per-signal knowledge byte.
SIG_SEEN = 1  # the light was in sight
SIG_SPAT = 2  # SPAT received from an RSU
SIG_STOPPING = 4  # a head decided to stop at this line (until the green)

# Columns of the (k, SG_SIZE) float64 signal table.
SG_POS_M = 0
SG_GREEN_S = 1
SG_YELLOW_S = 2
SG_RED_S = 3
SG_OFFSET_S = 4
SG_SIZE = 5


class SignalError(ValueError):
    """A signal that cannot be used; the message names it and the problem."""


@njit(cache=True, inline="always")
def signal_phase(
    t_s: float, green_s: float, yellow_s: float, red_s: float, offset_s: float
) -> tuple[int, float]:
    """Phase of a fixed-time signal at ``t_s`` and the time until it changes [s].

    The cycle position is ``(t_s + offset_s) mod cycle``, green from 0, then yellow, then
    red (``SignalPlan``'s convention).
    """
    cycle = green_s + yellow_s + red_s
    tau = (t_s + offset_s) % cycle
    if tau < green_s:
        return PHASE_GREEN, green_s - tau
    if tau < green_s + yellow_s:
        return PHASE_YELLOW, green_s + yellow_s - tau
    return PHASE_RED, cycle - tau


@dataclass(frozen=True, slots=True)
class FixedTimeSignal:
    """A fixed-time signal at a stop line of the 1-D road.

    Attributes:
        id: unique id.
        pos_m: stop line, distance along the road [m].
        green_s, yellow_s, red_s: phase durations [s], all positive.
        offset_s: shift of the cycle: the phase at ``t`` is the one at ``t + offset_s`` of
            a cycle that starts green at 0 [s].
    """

    id: str
    pos_m: float
    green_s: float
    yellow_s: float
    red_s: float
    offset_s: float = 0.0

    def __post_init__(self) -> None:
        where = f"signal {self.id!r}"
        if not (math.isfinite(self.pos_m) and self.pos_m >= 0):
            raise SignalError(f"{where}: pos_m = {self.pos_m}; allowed: a finite value >= 0")
        for name in ("green_s", "yellow_s", "red_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SignalError(f"{where}: {name} = {value}; allowed: a finite value > 0")
        if not math.isfinite(self.offset_s):
            raise SignalError(f"{where}: offset_s = {self.offset_s}; allowed: a finite value")

    @property
    def cycle_s(self) -> float:
        """Cycle length [s]."""
        return self.green_s + self.yellow_s + self.red_s

    def plan(self, edge: str = "") -> SignalPlan:
        """The network layer's plan: ``edge`` has green in the first phase only."""
        return SignalPlan(
            phases=(
                SignalPhase(self.green_s, (edge,)),
                SignalPhase(self.yellow_s, ()),
                SignalPhase(self.red_s, ()),
            ),
            offset_s=self.offset_s,
        )

    def phase_at(self, t_s: float) -> tuple[int, float]:
        """``(phase, seconds until it changes)`` at ``t_s``; phase one of ``PHASE_*``."""
        phase, left = signal_phase(t_s, self.green_s, self.yellow_s, self.red_s, self.offset_s)
        return int(phase), float(left)


def signal_table(signals: Sequence[FixedTimeSignal]) -> np.ndarray:
    """The signals as a (k, SG_SIZE) float64 table for ``signal_effects``."""
    sg = np.zeros((len(signals), SG_SIZE))
    for k, s in enumerate(signals):
        sg[k] = (s.pos_m, s.green_s, s.yellow_s, s.red_s, s.offset_s)
    return sg


def spat_for(
    signal: FixedTimeSignal, t_s: float, *, msg_cnt: int = 0, intersection_id: int = 0
) -> SPAT:
    """The SPAT message an RSU broadcasts for ``signal`` at ``t_s``.

    One intersection with one phase (id 1, the road's direction): the current light with
    its remaining time, then the next two, each timed from now.  The status sets bit 5,
    fixed-time operation; the minimum, likely and maximum end times coincide.
    """
    phase, left = signal.phase_at(t_s)
    durations = (signal.green_s, signal.yellow_s, signal.red_s)
    states = []
    start = 0.0
    end = left
    for k in range(3):
        p = (phase + k) % 3
        if k:
            start, end = end, end + durations[p]
        timing = TimeCountingDown(
            startTime=min(start, 3600.0),
            minEndTime=min(end, 3600.0),
            maxEndTime=min(end, 3600.0),
            likelyEndTime=min(end, 3600.0),
        )
        states.append(PhaseState(light=PHASE_LIGHTS[p], timing=timing))
    return SPAT(
        msgCnt=msg_cnt,
        intersections=(
            IntersectionState(
                intersectionId=NodeReferenceID(id=intersection_id),
                status=1 << 5,
                phases=(Phase(id=1, phaseStates=tuple(states)),),
            ),
        ),
    )


@njit(cache=True, inline="always")
def _glide_speed(gap_m: float, speed_mps: float, time_s: float, dt_s: float) -> float:
    """Next speed on the gentlest constant deceleration that covers ``gap_m`` in no less
    than ``time_s``, or stops within it; inf where no braking is needed."""
    if gap_m <= 0.0:
        return 0.0
    decel = 2.0 * (speed_mps * time_s - gap_m) / (time_s * time_s)
    if decel <= 0.0:
        return np.inf
    if speed_mps < decel * time_s:
        decel = speed_mps * speed_mps / (2.0 * gap_m)  # it would stop short: stop at the line
    return max(speed_mps - decel * dt_s, 0.0)


@njit(cache=True, inline="always")
def signal_effects(
    pos_m: float,
    speed_mps: float,
    t_s: float,
    dt_s: float,
    sg: np.ndarray,
    rsus: np.ndarray,
    known: np.ndarray,
    comfort_decel_mps2: float,
    max_speed_mps: float,
    sight_m: float,
    drives: bool,
) -> tuple[float, int, bool, bool]:
    """What the signals ahead mean to one truck at one step (see the module docstring).

    Args:
        pos_m: front-bumper position [m].
        speed_mps: speed [m/s].
        t_s: time [s].
        dt_s: step length [s].
        sg: (k, SG_SIZE) signal table.
        rsus: (m, RSU_SIZE) RSU table (``convoy.road.hazards``).
        known: (k,) int8 knowledge bits per signal (``SIG_*``), updated in place.
        comfort_decel_mps2: deceleration of a stop at the line [m/s²].
        max_speed_mps: the truck's speed limit [m/s] (can it make the green?).
        sight_m: how far the truck sees a light [m].
        drives: whether the truck acts on the lights (a platoon head); if not, only its
            knowledge is updated and the speed cap is inf.

    Returns:
        ``(speed_cap_mps, phase_ahead, learned_by_spat, learned_by_sight)``: the cap on the
        head's speed (inf if none), the phase it knows for the nearest signal ahead
        (``PHASE_UNKNOWN`` if none), and whether SPAT or sight taught it a signal this step.
    """
    cap = np.inf
    nearest = np.inf
    phase_ahead = PHASE_UNKNOWN
    by_spat = False
    by_sight = False
    for k in range(sg.shape[0]):
        line = sg[k, SG_POS_M]
        d = line - pos_m
        if d < 0.0:
            continue  # passed
        # know: SPAT from an RSU that relays this signal and covers us; the light in sight
        kn = known[k]
        if kn & SIG_SPAT == 0:
            for r in range(rsus.shape[0]):
                p = rsus[r, RSU_POS_M]
                covered = abs(pos_m - p) <= rsus[r, RSU_RADIUS_M]
                if covered and abs(line - p) <= rsus[r, RSU_ALERT_RANGE_M]:
                    kn |= SIG_SPAT
                    by_spat = True
                    break
        if kn & SIG_SEEN == 0 and d <= sight_m:
            kn |= SIG_SEEN
            by_sight = True
        if kn & (SIG_SPAT | SIG_SEEN) == 0:
            continue
        yellow_s = sg[k, SG_YELLOW_S]
        red_s = sg[k, SG_RED_S]
        phase, left = signal_phase(t_s, sg[k, SG_GREEN_S], yellow_s, red_s, sg[k, SG_OFFSET_S])
        if d < nearest:
            nearest = d
            phase_ahead = phase
        if drives:
            # decide: go on green; stop on red, and on a yellow it can stop for comfortably
            gap = d - STOP_MARGIN_M
            v_stop = 0.0
            if gap > 0.0:
                v_stop = maximum_safe_stop_speed_euler(gap, comfort_decel_mps2, dt_s, dt_s)
            if phase == PHASE_GREEN:
                kn &= ~SIG_STOPPING
            elif phase == PHASE_RED or speed_mps <= v_stop:
                kn |= SIG_STOPPING
            stopping = kn & SIG_STOPPING != 0
            # act: the stop line as a standing obstacle
            if stopping:
                cap = min(cap, v_stop)
            # glide (SPAT): reach the line after the next green starts, or stop at it
            late = phase == PHASE_GREEN and gap > max_speed_mps * left
            if kn & SIG_SPAT and (stopping or late):
                to_green = left + GLIDE_MARGIN_S
                if phase == PHASE_GREEN:
                    to_green += yellow_s + red_s
                elif phase == PHASE_YELLOW:
                    to_green += red_s
                cap = min(cap, _glide_speed(gap, speed_mps, to_green, dt_s))
        known[k] = kn
    return cap, phase_ahead, by_spat, by_sight


@njit(cache=True, inline="always")
def red_crossings(x0_m: float, x1_m: float, t_s: float, dt_s: float, sg: np.ndarray) -> int:
    """How many stop lines a front bumper moving from ``x0_m`` to ``x1_m`` over the step
    ``[t_s, t_s + dt_s]`` crosses while they show red (the crossing time interpolated)."""
    count = 0
    for k in range(sg.shape[0]):
        line = sg[k, SG_POS_M]
        if x0_m <= line < x1_m:
            t_cross = t_s + dt_s * (line - x0_m) / (x1_m - x0_m)
            phase, _ = signal_phase(
                t_cross, sg[k, SG_GREEN_S], sg[k, SG_YELLOW_S], sg[k, SG_RED_S], sg[k, SG_OFFSET_S]
            )
            if phase == PHASE_RED:
                count += 1
    return count
