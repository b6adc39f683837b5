"""Safety validation at scale: a library of parameterised scenarios, per-run safety metrics,
pass/fail criteria, and a seeded Monte Carlo / grid runner (``convoy validate``).

Each library entry (``ScenarioTemplate``) names its parameters with their ranges
(``ParamRange``) and builds an ordinary ``Scenario`` from one draw of them, so every instance
is a scenario file that can be written out and replayed (``car-cut-in``, on the network
engine, writes a replay file instead).  A run's metrics (``run_metrics``, ``net_metrics``):

* ``collided``: some truck touched the truck ahead (1.0) or not (0.0);
* ``min_gap_m``: smallest bumper gap of any follower [m];
* ``min_ttc_s``: smallest time-to-collision [s] (inf: nobody ever closed in);
* ``max_decel_mps2``: hardest deceleration any truck made [m/s²];
* ``drac_mps2``: largest deceleration rate to avoid a crash, ``closing² / (2 gap)`` over
  every follower and step with a positive gap and closing speed (Almqvist et al. 1991) [m/s²];
* ``string_index``: the largest peak |acceleration| of a follower over the head's
  (``max_i ||a_i||∞ / ||a_0||∞``, the L∞ string-stability gain, Ploeg et al. 2014); above 1
  the string amplified the head's manoeuvre.  The head's peak is floored at 0.1 m/s² so a
  head at constant speed does not divide by zero.  In ``car-cut-in`` the car is the
  manoeuvre's source: the trucks behind it over the car;
* ``platoon_km``: km the platoon heads drove (the throughput figure's numerator).

Instance i of a scenario gets the seed ``derive_seed(seed, name, i)``, a pure function of
(run seed, scenario name, index), and parameters drawn from a generator keyed the same way.
A run split into chunks (over a Ray cluster or not) therefore computes exactly what one
local run computes.

Engines and the batch axis.  Most entries run on the 1-D engine.  Its batched step
(``convoy.sim.batch.run_batch``) covers uniform SUMO-CACC fleets on an ideal channel and
keeps no trace; the library's other 1-D scenarios use actuator lag, latency, loss, hazards,
sensor and reaction delays and mixed controllers, and DRAC and the string index need the
trajectories, so they run on Numba's general kernel.  A chunk of them is one call along that
kernel's instance axis (``convoy.sim.engine.simulate_many``, ``kernel.run_instances``):
instances of equal shapes (trucks, steps, history length, hazard and signal tables; speed
profiles are padded, which leaves them as they were) run together, parallel over instances,
each with its own world, channel, hazards and seeded draws, so each is bit for bit its own
``simulate`` run (tested).  The ``cacc-brake-batched`` entry is in the batched regime and
runs a chunk as one call of the batched step (``batch.run_inputs``), on the GPU with
``backend="gpu"``; its chunk's arrays are built straight from the parameter rows
(``ScenarioTemplate.arrays``), not as one scenario each. Of the 1-D entries, the JAX/GPU
backends cover only that regime. With ``backend="gpu"`` and a CUDA GPU that Numba sees, the
other 1-D entries run the general kernel on the GPU, one thread per instance
(``simulate_many(..., backend="cuda")``, ``convoy.sim.kernel_cuda``); otherwise on Numba on
the CPU.

``car-cut-in`` needs lanes and cars, so it runs on the network engine
(``convoy.sim.validation_net``): a chunk of instances is one ``NetSim`` call along that
engine's instance axis, each instance exactly its own run alone (tested): on Numba with
``backend="cpu"``, on the engine's JAX step with ``"jax"`` (float64 on the CPU: the same
metrics to ~1e-9, tested) and with ``"gpu"`` where JAX sees a GPU (float32, in chunks of
``CHUNK_INSTANCES_NET_GPU``; on Numba where it sees none).  Its worst cases are written as
``NetReplay`` files (template, index, seed, parameters), which ``replay_metrics`` reads like
the 1-D scenario files.

``mixed-human-late-reaction`` puts a human-driven truck (IDM with a reaction delay) inside
an L4 platoon with the scenario format's per-position ``platoon.overrides``.
"""

from __future__ import annotations

import argparse
import base64
import functools
import html
import io
import itertools
import math
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from numba import njit, prange
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from convoy.road.hazards import RSU_POS_M, hazard_table
from convoy.sim.batch import BatchInputs, run_inputs, stack_instances
from convoy.sim.engine import (
    KernelInputs,
    RunResult,
    StackedRun,
    Trace,
    run_groups,
    run_stacked,
    scenario_inputs,
    simulate,
)
from convoy.sim.kernel import (
    ENV_ENERGY,
    ENV_GRADE,
    ENV_METRICS_FROM_S,
    ENV_SEED,
    METRICS_EPS_S,
    fold_gap,
    sample_metrics,
)
from convoy.sim.paths import folder_problem
from convoy.sim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from convoy.sim.state import (
    H_POS_M,
    H_SPEED_MPS,
    MET_DRAC_MPS2,
    MET_LOWEST_ACCEL_MPS2,
    MET_MIN_GAP_M,
    MET_MIN_TTC_S,
    MET_PEAK_ABS_ACCEL_MPS2,
    RX_POS_M,
    RX_SPEED_MPS,
    TP_LENGTH_M,
    TP_MASS_KG,
    TP_MAX_DECEL_MPS2,
    TP_SENSOR_DELAY_STEPS,
    empty_metrics,
)
from convoy.sim.validation_net import CUT_IN_NAME, NetTrace, run_cut_in
from convoy.vehicle.channel import CH_LATENCY_STEPS, CH_P_GOOD_TO_BAD
from convoy.vehicle.controllers import IDM_TIME_GAP_S, PLOEG_TIME_GAP_S
from convoy.vehicle.sumo_cfm import (
    ACC_DECEL,
    ACC_PRED_DECEL,
    ACC_TIME_GAP,
    CACC_ACC_OFFSET,
    CACC_DECEL,
    CACC_PRED_DECEL,
    CACC_TIME_GAP,
)

# Actuator lag of every truck, the head's brakes included (DESIGN.md: tau = 0.5 s).
ACTUATOR_LAG_S = 0.5
# Followers start without a received beacon; with a V2V latency they run their ACC fallback
# (1.5 s time gap) until the first one arrives, and the platoon takes up to ~30 s to settle
# from that (measured: speed deviation < 0.1 m/s after 30 s at h = 0.3-1.2 s, latency
# <= 0.3 s).  Scenarios with latency start their event after this warm-up, and metrics
# ignore it.
WARMUP_S = 30.0
# Where the library's scenarios put their events (their makers and their arrays share them).
LEAD_BRAKE_AT_S = WARMUP_S + 10.0
# the truck's braking limit in lead-emergency-brake: the head's deceleration, at least this
LEAD_BRAKE_DECEL_FLOOR_MPS2 = 6.0
V2V_BRAKE_AT_S = WARMUP_S + 15.0
V2V_END_SPEED_MPS = 12.0
ICE_BRAKE_AT_S = WARMUP_S + 10.0
DOWNGRADE_BRAKE_AT_S = 120.0
DOWNGRADE_END_SPEED_MPS = 10.0
RSU_TIME_GAP_S = 1.0
RSU_WORKS_START_M = 6000.0
# an RSU closer than this upstream of the works stands for "no RSU"
RSU_NONE_BELOW_M = 100.0
TAKEOVER_REQUEST_S = WARMUP_S + 20.0
HUMAN_LATE_SEES_AT_S = WARMUP_S + 10.0
MIXED_BRAKE_AT_S = WARMUP_S + 10.0
# The head's peak |a| is floored here in the string index [m/s²].
STRING_INDEX_FLOOR_MPS2 = 0.1
METRIC_NAMES = (
    "collided",
    "min_gap_m",
    "min_ttc_s",
    "max_decel_mps2",
    "drac_mps2",
    "string_index",
    "platoon_km",
)
# their columns, for the compiled metrics
M_COLLIDED = METRIC_NAMES.index("collided")
M_MIN_GAP = METRIC_NAMES.index("min_gap_m")
M_MIN_TTC = METRIC_NAMES.index("min_ttc_s")
M_MAX_DECEL = METRIC_NAMES.index("max_decel_mps2")
M_DRAC = METRIC_NAMES.index("drac_mps2")
M_STRING_INDEX = METRIC_NAMES.index("string_index")
M_PLATOON_KM = METRIC_NAMES.index("platoon_km")
VALIDATE_BACKENDS = ("cpu", "jax", "gpu")


class ValidationError(ScenarioError):
    """Bad input to the validation runner; the message names field, value and what is allowed."""


# ---------------------------------------------------------------------------------------------
# Library records
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ParamRange:
    """One parameter of a scenario template, sampled uniformly in ``[low, high]``.

    Attributes:
        name: parameter name, unit in the name (``brake_decel_mps2``).
        low, high: the range, in the parameter's unit.
        description: what it changes in the scenario.
    """

    name: str
    low: float
    high: float
    description: str = ""


@dataclass(frozen=True, slots=True)
class Criteria:
    """Pass/fail limits of one run; a run passes when every limit holds.

    Attributes:
        allow_collision: a contact fails the run unless True.
        min_gap_m: smallest bumper gap allowed [m].
        min_ttc_s: smallest time-to-collision allowed [s].
        max_decel_mps2: hardest deceleration allowed [m/s²] (8 m/s² is about what a loaded
            truck's EBS can do on dry asphalt).
        max_drac_mps2: largest DRAC allowed [m/s²].
        max_string_index: largest string-stability gain allowed (inf: not checked).
    """

    allow_collision: bool = False
    min_gap_m: float = 1.0
    min_ttc_s: float = 0.5
    max_decel_mps2: float = 8.0
    max_drac_mps2: float = 7.5
    max_string_index: float = math.inf

    def failures(self, m: Mapping[str, float]) -> list[str]:
        """The limits a run's metrics break (empty: it passes)."""
        out = []
        if not self.allow_collision and m["collided"] > 0.5:
            out.append("collision")
        if m["min_gap_m"] < self.min_gap_m:
            out.append("min_gap_m")
        if m["min_ttc_s"] < self.min_ttc_s:
            out.append("min_ttc_s")
        if m["max_decel_mps2"] > self.max_decel_mps2:
            out.append("max_decel_mps2")
        if m["drac_mps2"] > self.max_drac_mps2:
            out.append("drac_mps2")
        if m["string_index"] > self.max_string_index:
            out.append("string_index")
        return out


@dataclass(frozen=True, slots=True)
class ScenarioTemplate:
    """A parameterised scenario of the library.

    Attributes:
        name: library key (``lead-emergency-brake``).
        description: what it tests, one sentence.
        ranges: its parameters.
        make: ``make(params, seed) -> Scenario``, params keyed by ``ParamRange.name``, for
            a scenario of the 1-D engine; None for one of the network engine.
        criteria: default pass/fail limits.
        batched: its instances are in the engine's batched step's regime (a uniform
            SUMO-CACC fleet on an ideal channel), so a chunk of them runs as one
            ``run_batch`` call along the batch axis (on the GPU with ``--backend gpu``);
            that path keeps no trace, so DRAC and the string index are NaN there.
        warmup_s: start of the metrics window [s] (``WARMUP_S`` where beacons have latency).
        net: ``net(params_list, seed, backend) -> traces``: the scenario runs on the network
            engine (``convoy.sim.network``, ``backend`` one of its ``NET_BACKENDS``), a
            chunk of instances as one ``NetSim`` batch along its instance axis; None for the
            1-D engine's scenarios.
        arrays: ``arrays(rows, seed, start) -> BatchInputs``: a batched scenario's chunk
            built as arrays from its parameter rows, the same bits as its instances built
            one by one (``stack_instances``) at a fraction of the cost; None: built one by
            one.
        inputs: ``inputs(rows, seed, start)``: a 1-D scenario's chunk built as the general
            kernel's arrays (``_patched_inputs``), the same bits as its instances built one
            by one (``engine.run_groups``); None: built one by one.
    """

    name: str
    description: str
    ranges: tuple[ParamRange, ...]
    make: Callable[[Mapping[str, float], int], Scenario] | None
    criteria: Criteria = field(default_factory=Criteria)
    batched: bool = False
    warmup_s: float = 0.0
    net: Callable[[Sequence[Mapping[str, float]], int, str], list[NetTrace]] | None = None
    arrays: Callable[[np.ndarray, int, int], BatchInputs] | None = None
    inputs: Callable[[np.ndarray, int, int], list[tuple[np.ndarray, KernelInputs]]] | None = None


# ---------------------------------------------------------------------------------------------
# Scenario building blocks
# ---------------------------------------------------------------------------------------------
def brake_profile(
    speed_mps: float,
    end_speed_mps: float,
    decel_mps2: float,
    start_s: float,
    lag_s: float = ACTUATOR_LAG_S,
    dt_s: float = 0.1,
) -> list[list[float]]:
    """The head's speed profile for a brake from ``speed_mps`` to ``end_speed_mps``.

    The head's brakes have the same first-order lag as every truck (DESIGN.md, τ = 0.5 s),
    so its deceleration builds up as ``decel (1 - exp(-t/τ))`` rather than jumping; the
    profile samples that response every ``dt_s`` and holds ``end_speed_mps`` after it.

    Returns:
        ``[[time_s, speed_mps], ...]`` for ``leader.speed_profile``.
    """
    # one instance: the recurrence of ``brake_profiles``' compiled loop, serial (a parallel
    # loop's start costs more than one profile, and one instance is built at a time)
    speeds = _brake_speeds(
        float(speed_mps), float(end_speed_mps), float(decel_mps2), _lag_alpha(lag_s, dt_s), dt_s
    )
    times = _profile_times(float(start_s), float(dt_s), speeds.shape[0])
    out: list[list[float]] = np.stack((times, speeds), axis=1).tolist()
    return out


def round_us(x: np.ndarray) -> np.ndarray:
    """``round(v, 6)`` of every element, the same floats as Python's: both are the double
    nearest to n / 10⁶, with n the element times 10⁶ rounded half to even. Python finds n
    exactly; ``rint(x · 10⁶)`` finds the same n unless the product lies within rounding of a
    half, and those few are left to Python (7 times faster over a profile's 100 samples)."""
    y = x * 1e6
    out = np.rint(y) / 1e6
    for i in np.flatnonzero(np.abs(np.abs(y - np.floor(y)) - 0.5) < 1e-6).tolist():
        out.flat[i] = round(float(x.flat[i]), 6)
    return out


def _lag_alpha(lag_s: float, dt_s: float) -> float:
    """The first-order lag's share of the gap closed in one step."""
    return 1.0 - math.exp(-dt_s / lag_s) if lag_s > 0 else 1.0


def _profile_times(start_s: float, dt_s: float, p: int) -> np.ndarray:
    """The first ``p`` sample times of a brake profile that starts at ``start_s``: 0, the
    start, then one every ``dt_s``, each rounded to the microsecond."""
    return np.concatenate(([0.0, start_s], round_us(start_s + np.arange(1, p - 1) * dt_s)))


def brake_profiles(
    speed_mps: float | np.ndarray,
    end_speed_mps: float | np.ndarray,
    decel_mps2: float | np.ndarray,
    start_s: float | np.ndarray,
    lag_s: float = ACTUATOR_LAG_S,
    dt_s: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``brake_profile`` of B instances at once, as the kernels take profiles: (B, p)
    times and speeds padded past their end (``engine.padded_profile``) and their (B,)
    lengths; row b is instance b's profile to the last bit (tested). Each argument is one
    value for all or one per instance (B from the longest). The recurrence is compiled,
    parallel over instances; the times, which instances with one start share, are rounded
    to the microsecond."""
    b = max(np.size(x) for x in (speed_mps, end_speed_mps, decel_mps2, start_s))

    def rows(x: float | np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(np.asarray(x, np.float64), (b,)))

    v0, end, dec = rows(speed_mps), rows(end_speed_mps), rows(decel_mps2)
    alpha = _lag_alpha(lag_s, dt_s)
    lengths = np.empty(b, np.int64)
    _brake_lengths(v0, end, dec, alpha, dt_s, lengths)
    p = int(lengths.max()) if lengths.size else 2
    if np.size(start_s) == 1:
        times = _profile_times(float(np.asarray(start_s).reshape(-1)[0]), float(dt_s), p)[None]
    else:
        start = rows(start_s)
        times = np.empty((b, p))
        times[:, 0] = 0.0
        times[:, 1] = start
        times[:, 2:] = round_us(start[:, None] + np.arange(1, p - 1)[None, :] * dt_s)
    prof_t = np.empty((b, p))
    prof_v = np.empty((b, p))
    _brake_fill(v0, end, dec, alpha, dt_s, times, lengths, prof_t, prof_v)
    return prof_t, prof_v, lengths


@njit(cache=True, inline="always")
def _brake_step(a: float, v: float, end: float, dec: float, alpha: float, dt_s: float) -> Any:
    """One sample of ``brake_profile``'s recurrence: the lagged deceleration and the speed."""
    a += alpha * (dec - a)
    return a, max(end, v - a * dt_s)


@njit(cache=True, inline="always")
def _brake_length(v0: float, end: float, dec: float, alpha: float, dt_s: float) -> int:
    """The samples of one brake profile: the start twice, then until the end speed."""
    n = 2
    if end < v0 and dec > 0.0:
        a, v = 0.0, v0
        while v > end:
            a, v = _brake_step(a, v, end, dec, alpha, dt_s)
            n += 1
    return n


@njit(cache=True, inline="always")
def _brake_fill_speeds(
    v0: float, end: float, dec: float, alpha: float, dt_s: float, out: np.ndarray
) -> None:
    """Write one brake profile's speeds into ``out`` (its ``_brake_length`` samples)."""
    out[0] = v0
    out[1] = v0
    a, v = 0.0, v0
    for j in range(2, out.shape[0]):
        a, v = _brake_step(a, v, end, dec, alpha, dt_s)
        out[j] = v


@njit(cache=True)
def _brake_speeds(v0: float, end: float, dec: float, alpha: float, dt_s: float) -> np.ndarray:
    """The speeds of one brake profile (``brake_profile``)."""
    out = np.empty(_brake_length(v0, end, dec, alpha, dt_s))
    _brake_fill_speeds(v0, end, dec, alpha, dt_s, out)
    return out


@njit(cache=True, parallel=True)
def _brake_lengths(
    v0: np.ndarray, end: np.ndarray, dec: np.ndarray, alpha: float, dt_s: float, out: np.ndarray
) -> None:
    for b in prange(end.shape[0]):
        out[b] = _brake_length(v0[b], end[b], dec[b], alpha, dt_s)


@njit(cache=True, parallel=True)
def _brake_fill(
    v0: np.ndarray,
    end: np.ndarray,
    dec: np.ndarray,
    alpha: float,
    dt_s: float,
    times: np.ndarray,
    lengths: np.ndarray,
    prof_t: np.ndarray,
    prof_v: np.ndarray,
) -> None:
    """Fill the profiles of ``brake_profiles``; ``times``: (1, p) for all or (B, p)."""
    shared = times.shape[0] == 1
    for b in prange(end.shape[0]):
        m = lengths[b]
        t = times[0] if shared else times[b]
        _brake_fill_speeds(v0[b], end[b], dec[b], alpha, dt_s, prof_v[b, :m])
        prof_t[b, :m] = t[:m]
        # past its end a profile goes on 1 s apart at its last speed (engine.padded_profile)
        for j in range(m, t.shape[0]):
            prof_t[b, j] = t[m - 1] + (j - m + 1)
            prof_v[b, j] = prof_v[b, m - 1]


def _scenario(name: str, seed: int, **data: Any) -> Scenario:
    return parse_scenario({"name": name, "seed": seed, **data}, f"validation scenario {name}")


def _ploeg(time_gap_s: float = 0.5) -> dict[str, Any]:
    # Ploeg et al. 2011 defaults (h = 0.5 s, kp = 0.2, kd = 0.7), DESIGN.md
    return {"model": "cacc-ploeg", "time_gap_s": time_gap_s, "actuator_lag_s": ACTUATOR_LAG_S}


def _gap_m(time_gap_s: Any, speed_mps: Any, min_gap_m: float = 2.5) -> Any:
    """Equilibrium gap of a constant-time-gap law: standstill gap + h·v (of one time gap and
    speed, or of arrays of them)."""
    return min_gap_m + time_gap_s * speed_mps


def _rsu_pos_m(rsu_distance_m: Any) -> Any:
    """The RSU's place on the road, ``rsu_distance_m`` upstream of the works [m]."""
    return RSU_WORKS_START_M - rsu_distance_m


def _takeover_brake(p: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head's brake in ``takeover-timeout`` (one value or one per instance): an operator
    who answers within the timeout slows to 15 m/s at 1 m/s² when he answers; otherwise the
    minimal-risk stop at ``mrm_decel_mps2`` when the request times out. End speed [m/s],
    deceleration [m/s²] and start [s]."""
    answered = np.asarray(p["operator_response_s"] <= p["timeout_s"])
    end = np.where(answered, 15.0, 0.0)
    dec = np.where(answered, 1.0, p["mrm_decel_mps2"])
    at = TAKEOVER_REQUEST_S + np.where(answered, p["operator_response_s"], p["timeout_s"])
    return end, dec, at


def _human_late_decel(speed_mps: float, reaction_s: Any, obstacle_m: Any) -> np.ndarray:
    """The human lead's deceleration in ``human-lead-late-reaction``: just hard enough to stop
    in the room left after his reaction time, at least 1 and at most 8 m/s² (one value or
    one per instance)."""
    room_m = np.asarray(obstacle_m - speed_mps * reaction_s, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        need = speed_mps * speed_mps / (2.0 * room_m)
    return np.where(room_m <= 0, 8.0, np.minimum(8.0, np.maximum(1.0, need)))


def _lead_brake(p: Mapping[str, float], seed: int) -> Scenario:
    v, h = 22.0, p["time_gap_s"]
    dec = p["brake_decel_mps2"]
    return _scenario(
        "lead-emergency-brake",
        seed,
        duration_s=WARMUP_S + 50.0,
        truck={
            "max_decel_mps2": max(LEAD_BRAKE_DECEL_FLOOR_MPS2, dec),
            "emergency_decel_mps2": 8.0,
        },
        platoon={
            "trucks": 5,
            "controller": _ploeg(time_gap_s=h),
            "initial": {"speed_mps": v, "gap_m": _gap_m(h, v), "head_pos_m": 2000.0},
        },
        leader={"speed_profile": brake_profile(v, p["end_speed_mps"], dec, LEAD_BRAKE_AT_S)},
        channel={"rate_hz": 10.0, "latency_s": p["latency_s"]},
    )


def _v2v_loss(p: Mapping[str, float], seed: int) -> Scenario:
    v, h = 22.0, 0.6
    return _scenario(
        "v2v-loss-latency",
        seed,
        duration_s=WARMUP_S + 60.0,
        platoon={
            "trucks": 5,
            "controller": {"model": "cacc-sumo", "time_gap_s": h, "fallback_time_gap_s": 1.5},
            "initial": {"speed_mps": v, "gap_m": _gap_m(h, v), "head_pos_m": 2000.0},
        },
        leader={
            "speed_profile": brake_profile(
                v, V2V_END_SPEED_MPS, p["brake_decel_mps2"], V2V_BRAKE_AT_S
            )
        },
        channel={
            "rate_hz": 10.0,
            "latency_s": p["latency_s"],
            "burst": {"loss_bad": 1.0, "p_good_to_bad": p["p_good_to_bad"], "p_bad_to_good": 0.2},
        },
    )


def _dust(p: Mapping[str, float], seed: int) -> Scenario:
    v, h = p["speed_mps"], p["time_gap_s"]
    return _scenario(
        "dust-sensor-degradation",
        seed,
        duration_s=120.0,
        road={"length_m": 10_000.0},
        platoon={
            "trucks": 5,
            "controller": {"model": "acc", "time_gap_s": h, "actuator_lag_s": ACTUATOR_LAG_S,
                           "sensor_delay_s": 0.2, "emergency_braking": True},
            "initial": {"speed_mps": v, "gap_m": _gap_m(h, v), "head_pos_m": 2000.0},
        },
        leader={"speed_profile": [[0.0, v]]},
        hazards=[{"kind": "dust_storm", "start_m": 3000.0, "end_m": 4500.0, "start_s": 0.0,
                  "end_s": 120.0, "visibility_m": p["visibility_m"]}],
    )  # fmt: skip


def _ice(p: Mapping[str, float], seed: int) -> Scenario:
    v, h = p["speed_mps"], p["time_gap_s"]
    return _scenario(
        "ice-low-friction",
        seed,
        duration_s=WARMUP_S + 60.0,
        road={"length_m": 10_000.0},
        platoon={
            "trucks": 5,
            "controller": _ploeg(time_gap_s=h),
            "initial": {"speed_mps": v, "gap_m": _gap_m(h, v), "head_pos_m": 2000.0},
        },
        leader={"speed_profile": brake_profile(v, 0.0, p["brake_decel_mps2"], ICE_BRAKE_AT_S)},
        channel={"rate_hz": 10.0, "latency_s": 0.1},
        hazards=[{"kind": "snow_ice", "start_m": 1000.0, "end_m": 9000.0, "start_s": 0.0,
                  "end_s": WARMUP_S + 60.0, "friction": p["friction"]}],
    )  # fmt: skip


def _downgrade(p: Mapping[str, float], seed: int) -> Scenario:
    return _scenario(
        "loaded-downgrade",
        seed,
        duration_s=300.0,
        road={"length_m": 12_000.0, "grade_pct": p["grade_pct"], "speed_limit_mps": 22.0},
        truck={"mass_kg": p["mass_kg"], "powertrain": {"kind": "electric", "limit_traction": True}},
        platoon={
            "trucks": 5,
            "controller": {"model": "cacc-path"},
            "initial": {"speed_mps": 20.0, "gap_m": 5.0, "head_pos_m": 200.0},
        },
        leader={
            "speed_profile": brake_profile(
                20.0, DOWNGRADE_END_SPEED_MPS, p["brake_decel_mps2"], DOWNGRADE_BRAKE_AT_S
            )
        },
        channel={"rate_hz": 20.0, "latency_s": 0.02},
    )


def _rsu(p: Mapping[str, float], seed: int) -> Scenario:
    v, h = p["speed_mps"], RSU_TIME_GAP_S
    rsu_m = p["rsu_distance_m"]
    # no RSU (RSU_NONE_BELOW_M): the trucks see the works only
    rsus = [{"pos_m": _rsu_pos_m(rsu_m), "radius_m": 500.0}] if rsu_m >= RSU_NONE_BELOW_M else []
    return _scenario(
        "rsu-hazard-warning",
        seed,
        duration_s=240.0,
        road={"length_m": 12_000.0},
        platoon={
            "trucks": 5,
            "controller": {"model": "cacc-sumo", "time_gap_s": h},
            "initial": {"speed_mps": v, "gap_m": _gap_m(h, v), "head_pos_m": 2000.0},
        },
        leader={"speed_profile": [[0.0, v]]},
        rsus=rsus,
        hazards=[{"kind": "road_works", "start_m": RSU_WORKS_START_M, "end_m": 6500.0,
                  "start_s": 0.0, "end_s": 240.0, "speed_limit_mps": p["works_speed_mps"]}],
    )  # fmt: skip


def _takeover(p: Mapping[str, float], seed: int) -> Scenario:
    # A driverless platoon leaves its ODD at 20 s and asks the remote centre to take over.
    # An operator who answers within the timeout drives on at 15 m/s (a gentle 1 m/s²
    # slow-down); otherwise the head performs the minimal-risk manoeuvre: a stop in lane.
    v, h = 22.0, 0.6
    end, dec, at = (float(x) for x in _takeover_brake(p))
    prof = brake_profile(v, end, dec, at)
    return _scenario(
        "takeover-timeout",
        seed,
        duration_s=WARMUP_S + 120.0,
        road={"length_m": 10_000.0},
        platoon={
            "trucks": 5,
            "controller": {"model": "cacc-sumo", "time_gap_s": h, "actuator_lag_s": ACTUATOR_LAG_S,
                           "emergency_braking": True},
            "initial": {"speed_mps": v, "gap_m": _gap_m(h, v), "head_pos_m": 2000.0},
        },
        leader={"speed_profile": prof},
        channel={"rate_hz": 10.0, "latency_s": 0.05},
    )  # fmt: skip


def _human_late(p: Mapping[str, float], seed: int) -> Scenario:
    # Hybrid 1+4: the human lead sees a stopped obstacle obstacle_distance_m ahead, reacts
    # after reaction_s, then brakes just hard enough to stop before it (at most 8 m/s²);
    # the L4 followers (Ploeg CACC) must absorb whatever he does.
    v = 22.0
    dec = float(_human_late_decel(v, p["reaction_s"], p["obstacle_distance_m"]))
    return _scenario(
        "human-lead-late-reaction",
        seed,
        duration_s=WARMUP_S + 50.0,
        truck={"max_decel_mps2": 8.0, "emergency_decel_mps2": 8.0},
        platoon={
            "trucks": 5,
            "controller": _ploeg(),
            "initial": {"speed_mps": v, "gap_m": _gap_m(0.5, v), "head_pos_m": 2000.0},
        },
        leader={
            "speed_profile": brake_profile(v, 0.0, dec, HUMAN_LATE_SEES_AT_S + p["reaction_s"])
        },
        channel={"rate_hz": 10.0, "latency_s": 0.1},
    )


# The L4 trucks of the mixed platoon: Ploeg CACC at h = 0.6 s with 100 ms latency, which
# rides out the head's hardest slow-down (8 m/s² from 22 to 8 m/s) with metres to spare
# when every follower is L4 (measured: min gap 3.7 m, TTC 1.0 s), so what fails is the
# human's doing.
MIXED_L4_TIME_GAP_S = 0.6
# The head's hard slow-down in the mixed platoon: 22 -> 8 m/s (a queue ahead).
MIXED_END_SPEED_MPS = 8.0


def human_index(p: Mapping[str, float]) -> int:
    """Position (1..4) of the human-driven truck of ``mixed-human-late-reaction``."""
    return int(_human_indices(np.array([p["human_index"]]))[0])


def _human_indices(x: np.ndarray) -> np.ndarray:
    """``human_index`` of each value of the parameter: rounded half up, within 1..4."""
    return np.clip(np.floor(x + 0.5), 1, 4).astype(np.int64)


def _mixed_human(p: Mapping[str, float], seed: int) -> Scenario:
    # Hybrid 1+4 with a human-driven truck INSIDE the platoon: the head (driven along its
    # profile) brakes hard; the L4 trucks (Ploeg CACC) react after the V2V latency, the
    # human (IDM, no automatic emergency braking) only after his reaction time, seeing the
    # truck ahead through his own eyes (the IDM's delayed gap and speed).  He keeps his own
    # IDM time gap; the L4 trucks behind him follow him by CACC (his truck's OBU beacons).
    v = 22.0
    human = {
        "model": "human",
        "time_gap_s": p["human_time_gap_s"],
        "reaction_time_s": p["reaction_s"],
        "actuator_lag_s": ACTUATOR_LAG_S,
        "emergency_braking": False,
    }
    return _scenario(
        "mixed-human-late-reaction",
        seed,
        duration_s=WARMUP_S + 40.0,
        truck={"max_decel_mps2": 8.0, "emergency_decel_mps2": 8.0},
        platoon={
            "trucks": 5,
            "controller": _ploeg(time_gap_s=MIXED_L4_TIME_GAP_S),
            "overrides": [{"index": human_index(p), "controller": human}],
            "initial": {
                "speed_mps": v,
                "gap_m": _gap_m(MIXED_L4_TIME_GAP_S, v),
                "head_pos_m": 2000.0,
            },
        },
        leader={
            "speed_profile": brake_profile(
                v, MIXED_END_SPEED_MPS, p["brake_decel_mps2"], MIXED_BRAKE_AT_S
            )
        },
        channel={"rate_hz": 10.0, "latency_s": 0.1},
    )


def _cacc_batched(p: Mapping[str, float], seed: int) -> Scenario:
    # SUMO's CACC law exactly (no lag, ideal channel at one beacon per step): the regime of
    # the batched step, so Monte Carlo over it runs along the batch axis
    v, h, dec = 22.0, p["time_gap_s"], p["brake_decel_mps2"]
    return _scenario(
        "cacc-brake-batched",
        seed,
        duration_s=50.0,
        truck={"max_decel_mps2": max(4.0, dec), "emergency_decel_mps2": 8.0},
        platoon={
            "trucks": 5,
            "controller": {"model": "cacc-sumo", "time_gap_s": h},
            "initial": {"speed_mps": v, "gap_m": _gap_m(h, v), "head_pos_m": 2000.0},
        },
        leader={"speed_profile": brake_profile(v, p["end_speed_mps"], dec, 10.0)},
        channel={"rate_hz": 10.0, "latency_s": 0.0},
    )


_CACC_DECEL_COLUMNS = (
    CACC_DECEL,
    CACC_PRED_DECEL,
    CACC_ACC_OFFSET + ACC_DECEL,
    CACC_ACC_OFFSET + ACC_PRED_DECEL,
)


def _cacc_batched_inputs(rows: np.ndarray, seed: int, start: int) -> BatchInputs:
    """The batched step's arrays of instances ``start ..`` of ``cacc-brake-batched`` with
    parameters ``rows``, straight from the rows: instance ``start`` is built as a scenario
    (``stack_instances``) and the others differ from it only where ``_cacc_batched`` puts a
    parameter (the brake limit, the CACC time gap, the gaps and so the positions, the head's
    profile, the seed), computed here by the same operations over all rows at once: the same
    bits as building each instance (tested), without a scenario object per instance."""
    tpl = get_template("cacc-brake-batched")
    col = {r.name: rows[:, k].astype(np.float64) for k, r in enumerate(tpl.ranges)}
    proto = stack_instances([instance(tpl, rows[0], seed, start)])
    b = rows.shape[0]
    rep = {f.name: getattr(proto, f.name) for f in fields(proto)}
    for name, val in rep.items():
        if isinstance(val, np.ndarray) and name not in ("prof_t", "prof_v", "prof_len"):
            rep[name] = np.repeat(val, b, axis=0)
    v0 = float(proto.speed[0, 0, 0])
    decel = np.maximum(4.0, col["brake_decel_mps2"])
    rep["phys0"][:, TP_MAX_DECEL_MPS2] = decel
    # SUMO's CACC law and its ACC fallback read the truck's braking limit as their own and
    # the predecessor's (engine._control_rows)
    for at in _CACC_DECEL_COLUMNS:
        rep["ctrl0"][:, at] = decel
    rep["ctrl0"][:, CACC_TIME_GAP] = col["time_gap_s"]
    rep["env"][:, ENV_SEED] = derive_seeds(seed, tpl.name, start + np.arange(b))
    # build's positions: the head where the scenario puts it, each follower a pitch behind
    table = proto.table
    pitch = proto.phys0[0, TP_LENGTH_M] + _gap_m(col["time_gap_s"], v0)
    pos0 = proto.pos[0, 0, 0] - table.position[None, :] * pitch[:, None]
    rep["pos"] = np.repeat(pos0[:, None, :], 2, axis=1)
    follows = np.flatnonzero(table.position > 0)
    rep["rx_pred"][:, RX_POS_M, follows] = pos0[:, table.leader[follows]]
    rep["prof_t"], rep["prof_v"], rep["prof_len"] = brake_profiles(
        v0, col["end_speed_mps"], col["brake_decel_mps2"], 10.0
    )
    return BatchInputs(**rep)


# ---------------------------------------------------------------------------------------------
# The general entries' chunks built as the general kernel's arrays
# ---------------------------------------------------------------------------------------------
# What a template's parameters change in the general kernel's arrays: ``patch(arrays,
# columns, prototype)`` with the arrays stacked over a part of a chunk (``_patched_inputs``),
# the parameter columns of its rows, and the scenario of its first row.
_Patch = Callable[[dict[str, np.ndarray], dict[str, np.ndarray], Scenario], None]


def _patched_inputs(
    name: str, rows: np.ndarray, seed: int, start: int, key: np.ndarray, patch: _Patch
) -> list[tuple[np.ndarray, KernelInputs]]:
    """The general kernel's inputs of instances ``start ..`` of the 1-D entry ``name`` with
    parameters ``rows``, built as arrays rather than one scenario per instance.

    Rows with one ``key`` have tables of one shape (the key holds what sets one, such as
    the human's place in a mixed platoon). Of each such part the first instance is built as
    a scenario (``engine.scenario_inputs``), its arrays are repeated over the part, and
    ``patch`` writes what the parameters change, by the operations that build each
    instance, over all rows at once: the same bits as building each (tested). The history
    is then lengthened to the part's longest latency or delay: the ring buffer is read
    only where it was written (``kernel._truck_range``), so a longer one gives the same
    run, and rows of any latency share a part. A part the fast CACC step would run
    (``KernelInputs.fast_cacc``) comes back without arrays, for ``run_chunk`` to build and
    run one scenario per instance as ``engine.run_groups`` does.

    Returns:
        ``(rows of the part, its inputs)`` for each part, in order of first appearance.
    """
    tpl = get_template(name)
    seeds = derive_seeds(seed, name, start + np.arange(len(rows)))
    _, first = np.unique(key, return_index=True)
    parts = []
    for j in np.sort(first).tolist():
        idx = np.flatnonzero(key == key[j])
        sc = instance(tpl, rows[j], seed, start + j, int(seeds[j]))
        proto = scenario_inputs(sc)
        if proto.fast_cacc:
            parts.append((idx, replace(proto, arrays={})))
            continue
        a = {k: np.repeat(x[None], idx.size, axis=0) for k, x in proto.arrays.items()}
        a["env"][:, ENV_SEED] = seeds[idx]
        patch(a, {r.name: rows[idx, c].astype(np.float64) for c, r in enumerate(tpl.ranges)}, sc)
        _lengthen_history(a)
        parts.append((idx, replace(proto, arrays=a)))
    return parts


def _lengthen_history(a: dict[str, np.ndarray]) -> None:
    """The history ring buffer of every row as long as the part's longest beacon latency
    or sensor and reaction delay needs (``engine.build``: the longest, plus one), the new
    slots a copy of the first (which holds the start, as every slot does)."""
    need = max(a["ch"][:, CH_LATENCY_STEPS].max(), a["phys"][:, :, TP_SENSOR_DELAY_STEPS].max())
    extra = int(need) + 1 - a["hist"].shape[1]
    if extra > 0:
        first = a["hist"][:, :1]
        a["hist"] = np.concatenate([a["hist"], np.repeat(first, extra, axis=1)], axis=1)


def _steps(time_s: np.ndarray, dt_s: float = 0.1) -> np.ndarray:
    """``round(time_s / dt_s)`` of each (a latency or a delay in steps; half to even, as
    Python's ``round``)."""
    return np.rint(time_s / dt_s).astype(np.int64)


def _set_start(a: dict[str, np.ndarray], sc: Scenario, speed_mps: Any, gap_m: Any) -> None:
    """The platoon's start as ``engine.build`` sets it, at ``speed_mps`` with bumper gaps
    ``gap_m`` (one value, or one per row): positions, speeds, the history and the beacons
    each follower holds."""
    b = a["pos"].shape[0]
    v = np.broadcast_to(np.asarray(speed_mps, np.float64), (b,))
    pitch = sc.truck.length_m + np.broadcast_to(np.asarray(gap_m, np.float64), (b,))
    assert sc.platoon.count == 1  # one platoon: its head at head_pos_m
    position = a["ppos"][0]
    pos0 = sc.platoon.initial.head_pos_m - position[None, :] * pitch[:, None]
    a["pos"][:] = pos0[:, None, :]
    a["speed"][:] = v[:, None, None]
    a["hist"][:, :, H_POS_M, :] = pos0[:, None, :]
    a["hist"][:, :, H_SPEED_MPS, :] = v[:, None, None]
    follows = np.flatnonzero(position > 0)
    for rx, src in (("rx_pred", a["leader"][0, follows]), ("rx_head", a["head"][0, follows])):
        a[rx][:, RX_POS_M, follows] = pos0[:, src]
        a[rx][:, RX_SPEED_MPS, follows] = v[:, None]


def _set_profile(a: dict[str, np.ndarray], prof: tuple[np.ndarray, ...]) -> None:
    """The head's speed profiles (``brake_profiles``' times and speeds)."""
    a["prof_t"], a["prof_v"] = prof[0], prof[1]


def _set_hazard(a: dict[str, np.ndarray], sc: Scenario, k: int, **values: np.ndarray) -> None:
    """Hazard ``k``'s rows with the fields ``values`` (one per row) in place of the
    prototype's, through the road layer's event as ``engine.build`` makes it."""
    cfg = sc.hazards[k]
    b = a["hz"].shape[0]
    cols = {f: v.tolist() for f, v in values.items()}
    events = [cfg.model_copy(update={f: v[j] for f, v in cols.items()}).event(k) for j in range(b)]
    a["hz"][:, k] = hazard_table(events)


def _lead_brake_inputs(
    rows: np.ndarray, seed: int, start: int
) -> list[tuple[np.ndarray, KernelInputs]]:
    def patch(a: dict[str, np.ndarray], col: dict[str, np.ndarray], sc: Scenario) -> None:
        dec, h = col["brake_decel_mps2"], col["time_gap_s"]
        limit = np.maximum(LEAD_BRAKE_DECEL_FLOOR_MPS2, dec)[:, None]
        a["phys"][:, :, TP_MAX_DECEL_MPS2] = limit
        a["accp"][:, :, ACC_DECEL] = limit  # the ACC fallback reads the truck's limit
        a["accp"][:, :, ACC_PRED_DECEL] = limit
        a["ctrl"][:, :, PLOEG_TIME_GAP_S] = h[:, None]
        a["ch"][:, CH_LATENCY_STEPS] = _steps(col["latency_s"])
        v = sc.platoon.initial.speed_mps
        _set_start(a, sc, v, _gap_m(h, v))
        _set_profile(a, brake_profiles(v, col["end_speed_mps"], dec, LEAD_BRAKE_AT_S))

    key = np.zeros(len(rows))
    return _patched_inputs("lead-emergency-brake", rows, seed, start, key, patch)


def _v2v_loss_inputs(
    rows: np.ndarray, seed: int, start: int
) -> list[tuple[np.ndarray, KernelInputs]]:
    def patch(a: dict[str, np.ndarray], col: dict[str, np.ndarray], sc: Scenario) -> None:
        a["ch"][:, CH_P_GOOD_TO_BAD] = col["p_good_to_bad"]
        a["ch"][:, CH_LATENCY_STEPS] = _steps(col["latency_s"])
        v = sc.platoon.initial.speed_mps
        _set_profile(
            a, brake_profiles(v, V2V_END_SPEED_MPS, col["brake_decel_mps2"], V2V_BRAKE_AT_S)
        )

    name = "v2v-loss-latency"
    # no loss and no latency: the fast CACC step's
    key = (_steps(rows[:, _col(name, "latency_s")]) == 0) & (
        rows[:, _col(name, "p_good_to_bad")] == 0
    )
    return _patched_inputs(name, rows, seed, start, key, patch)


def _dust_inputs(rows: np.ndarray, seed: int, start: int) -> list[tuple[np.ndarray, KernelInputs]]:
    def patch(a: dict[str, np.ndarray], col: dict[str, np.ndarray], sc: Scenario) -> None:
        v, h = col["speed_mps"], col["time_gap_s"]
        a["ctrl"][:, :, ACC_TIME_GAP] = h[:, None]
        _set_start(a, sc, v, _gap_m(h, v))
        a["prof_v"][:, 0] = v
        _set_hazard(a, sc, 0, visibility_m=col["visibility_m"])

    return _patched_inputs("dust-sensor-degradation", rows, seed, start, np.zeros(len(rows)), patch)


def _ice_inputs(rows: np.ndarray, seed: int, start: int) -> list[tuple[np.ndarray, KernelInputs]]:
    def patch(a: dict[str, np.ndarray], col: dict[str, np.ndarray], sc: Scenario) -> None:
        v, h = col["speed_mps"], col["time_gap_s"]
        a["ctrl"][:, :, PLOEG_TIME_GAP_S] = h[:, None]
        _set_start(a, sc, v, _gap_m(h, v))
        _set_profile(a, brake_profiles(v, 0.0, col["brake_decel_mps2"], ICE_BRAKE_AT_S))
        _set_hazard(a, sc, 0, friction=col["friction"])

    return _patched_inputs("ice-low-friction", rows, seed, start, np.zeros(len(rows)), patch)


def _downgrade_inputs(
    rows: np.ndarray, seed: int, start: int
) -> list[tuple[np.ndarray, KernelInputs]]:
    def patch(a: dict[str, np.ndarray], col: dict[str, np.ndarray], sc: Scenario) -> None:
        a["env"][:, ENV_GRADE] = col["grade_pct"] / 100.0
        a["phys"][:, :, TP_MASS_KG] = col["mass_kg"][:, None]
        v = sc.platoon.initial.speed_mps
        _set_profile(
            a,
            brake_profiles(
                v, DOWNGRADE_END_SPEED_MPS, col["brake_decel_mps2"], DOWNGRADE_BRAKE_AT_S
            ),
        )

    return _patched_inputs("loaded-downgrade", rows, seed, start, np.zeros(len(rows)), patch)


def _rsu_inputs(rows: np.ndarray, seed: int, start: int) -> list[tuple[np.ndarray, KernelInputs]]:
    def patch(a: dict[str, np.ndarray], col: dict[str, np.ndarray], sc: Scenario) -> None:
        v = col["speed_mps"]
        _set_start(a, sc, v, _gap_m(RSU_TIME_GAP_S, v))
        a["prof_v"][:, 0] = v
        if a["rsus"].shape[1]:
            a["rsus"][:, 0, RSU_POS_M] = _rsu_pos_m(col["rsu_distance_m"])
        _set_hazard(a, sc, 0, speed_limit_mps=col["works_speed_mps"])

    key = rows[:, _col("rsu-hazard-warning", "rsu_distance_m")] >= RSU_NONE_BELOW_M
    return _patched_inputs("rsu-hazard-warning", rows, seed, start, key, patch)


def _takeover_inputs(
    rows: np.ndarray, seed: int, start: int
) -> list[tuple[np.ndarray, KernelInputs]]:
    def patch(a: dict[str, np.ndarray], col: dict[str, np.ndarray], sc: Scenario) -> None:
        v = sc.platoon.initial.speed_mps
        _set_profile(a, brake_profiles(v, *_takeover_brake(col)))

    return _patched_inputs("takeover-timeout", rows, seed, start, np.zeros(len(rows)), patch)


def _human_late_inputs(
    rows: np.ndarray, seed: int, start: int
) -> list[tuple[np.ndarray, KernelInputs]]:
    def patch(a: dict[str, np.ndarray], col: dict[str, np.ndarray], sc: Scenario) -> None:
        v = sc.platoon.initial.speed_mps
        dec = _human_late_decel(v, col["reaction_s"], col["obstacle_distance_m"])
        _set_profile(a, brake_profiles(v, 0.0, dec, HUMAN_LATE_SEES_AT_S + col["reaction_s"]))

    return _patched_inputs(
        "human-lead-late-reaction", rows, seed, start, np.zeros(len(rows)), patch
    )


def _mixed_human_inputs(
    rows: np.ndarray, seed: int, start: int
) -> list[tuple[np.ndarray, KernelInputs]]:
    name = "mixed-human-late-reaction"
    human = _human_indices(rows[:, _col(name, "human_index")])

    def patch(a: dict[str, np.ndarray], col: dict[str, np.ndarray], sc: Scenario) -> None:
        at = _human_indices(col["human_index"][:1])[0]
        a["ctrl"][:, at, IDM_TIME_GAP_S] = col["human_time_gap_s"]
        a["phys"][:, at, TP_SENSOR_DELAY_STEPS] = _steps(col["reaction_s"])
        v = sc.platoon.initial.speed_mps
        _set_profile(
            a, brake_profiles(v, MIXED_END_SPEED_MPS, col["brake_decel_mps2"], MIXED_BRAKE_AT_S)
        )

    # the human's place sets the table
    key = human
    return _patched_inputs(name, rows, seed, start, key, patch)


def _col(name: str, param: str) -> int:
    """The column of parameter ``param`` in the rows of template ``name``."""
    return [r.name for r in get_template(name).ranges].index(param)


def _lib() -> dict[str, ScenarioTemplate]:
    t = [
        ScenarioTemplate(
            "lead-emergency-brake",
            "1+4 Ploeg CACC platoon at 22 m/s; the head brakes hard to a lower speed or a stop",
            (
                ParamRange("brake_decel_mps2", 2.0, 8.0, "head's deceleration"),
                ParamRange("end_speed_mps", 0.0, 16.0, "speed the head brakes to"),
                ParamRange("time_gap_s", 0.3, 1.2, "CACC time gap"),
                ParamRange("latency_s", 0.0, 0.3, "V2V latency"),
            ),
            _lead_brake,
            warmup_s=WARMUP_S,
            inputs=_lead_brake_inputs,
        ),
        ScenarioTemplate(
            "v2v-loss-latency",
            "SUMO-CACC platoon (h = 0.6 s) under bursty V2V loss and latency spikes while the "
            "head brakes to 12 m/s",
            (
                ParamRange("p_good_to_bad", 0.0, 0.3, "Gilbert-Elliott good->bad per beacon"),
                ParamRange("latency_s", 0.0, 0.5, "V2V latency"),
                ParamRange("brake_decel_mps2", 1.0, 5.0, "head's deceleration"),
            ),
            _v2v_loss,
            warmup_s=WARMUP_S,
            inputs=_v2v_loss_inputs,
        ),
        ScenarioTemplate(
            "dust-sensor-degradation",
            "ACC platoon (sensor delay 0.2 s) drives into a dust storm that shortens sight",
            (
                ParamRange("visibility_m", 30.0, 300.0, "visibility in the storm"),
                ParamRange("speed_mps", 15.0, 25.0, "cruise speed"),
                ParamRange("time_gap_s", 0.6, 1.5, "ACC time gap"),
            ),
            _dust,
            inputs=_dust_inputs,
        ),
        ScenarioTemplate(
            "ice-low-friction",
            "Ploeg CACC platoon on ice; the head brakes to a stop",
            (
                ParamRange("friction", 0.1, 0.5, "tyre-road friction on the ice"),
                ParamRange("brake_decel_mps2", 1.0, 5.0, "head's commanded deceleration"),
                ParamRange("speed_mps", 10.0, 22.0, "initial speed"),
                ParamRange("time_gap_s", 0.5, 1.5, "CACC time gap"),
            ),
            _ice,
            warmup_s=WARMUP_S,
            inputs=_ice_inputs,
        ),
        ScenarioTemplate(
            "loaded-downgrade",
            "PATH CACC electric platoon on a long downgrade, the head slowing to 10 m/s midway",
            (
                ParamRange("grade_pct", -6.0, -1.0, "road grade"),
                ParamRange("mass_kg", 25_000.0, 49_000.0, "gross mass"),
                ParamRange("brake_decel_mps2", 0.5, 3.0, "head's deceleration"),
            ),
            _downgrade,
            Criteria(min_gap_m=0.5),
            warmup_s=WARMUP_S,
            inputs=_downgrade_inputs,
        ),
        ScenarioTemplate(
            "rsu-hazard-warning",
            "road works ahead; an RSU upstream (or none) broadcasts their speed limit as RSI",
            (
                ParamRange("rsu_distance_m", 0.0, 3000.0, "RSU upstream of the works (<100: none)"),
                ParamRange("works_speed_mps", 5.0, 15.0, "speed limit through the works"),
                ParamRange("speed_mps", 18.0, 25.0, "cruise speed"),
            ),
            _rsu,
            inputs=_rsu_inputs,
        ),
        ScenarioTemplate(
            "takeover-timeout",
            "a takeover request no operator answers in time ends in a minimal-risk stop",
            (
                ParamRange("operator_response_s", 5.0, 60.0, "operator's time to answer"),
                ParamRange("timeout_s", 10.0, 40.0, "request timeout"),
                ParamRange("mrm_decel_mps2", 1.0, 5.0, "minimal-risk manoeuvre deceleration"),
            ),
            _takeover,
            warmup_s=WARMUP_S,
            inputs=_takeover_inputs,
        ),
        ScenarioTemplate(
            "human-lead-late-reaction",
            "hybrid 1+4: the human lead reacts late to a stopped obstacle and brakes hard",
            (
                ParamRange("reaction_s", 0.5, 2.5, "driver's reaction time"),
                ParamRange("obstacle_distance_m", 60.0, 200.0, "obstacle distance when seen"),
            ),
            _human_late,
            warmup_s=WARMUP_S,
            inputs=_human_late_inputs,
        ),
        ScenarioTemplate(
            "mixed-human-late-reaction",
            "hybrid 1+4 with a human-driven truck inside the L4 platoon (Ploeg CACC, "
            "h = 0.6 s); the head brakes hard from 22 to 8 m/s and the human reacts late",
            (
                ParamRange("reaction_s", 0.5, 2.5, "human driver's reaction time"),
                ParamRange("human_time_gap_s", 0.5, 2.0, "human driver's IDM time gap"),
                ParamRange("brake_decel_mps2", 2.0, 8.0, "head's deceleration"),
                ParamRange("human_index", 1.0, 4.0, "human truck's position (rounded)"),
            ),
            _mixed_human,
            warmup_s=WARMUP_S,
            inputs=_mixed_human_inputs,
        ),
        ScenarioTemplate(
            CUT_IN_NAME,
            "a car cuts into a gap of a 1+4 SUMO-CACC platoon at 22 m/s on a two-lane road "
            "and brakes; the truck behind it falls back to ACC",
            (
                ParamRange("member", 1.0, 4.0, "follower the car cuts in ahead of (rounded)"),
                ParamRange("cut_in_gap_m", 2.0, 12.0, "car's rear to that truck's front"),
                ParamRange("speed_deficit_mps", 0.0, 8.0, "car's speed below the platoon's"),
                ParamRange("car_brake_mps2", 0.0, 8.0, "car's braking after the cut-in"),
                ParamRange("car_brake_s", 0.5, 3.0, "how long the car brakes"),
                ParamRange("time_gap_s", 0.8, 2.0, "L4 followers' CACC time gap"),
            ),
            None,
            net=run_cut_in,
        ),
        ScenarioTemplate(
            "cacc-brake-batched",
            "1+4 SUMO-CACC platoon (SUMO's law, ideal channel) under a hard head brake, run "
            "along the engine's batch axis",
            (
                ParamRange("brake_decel_mps2", 2.0, 8.0, "head's deceleration"),
                ParamRange("end_speed_mps", 0.0, 16.0, "speed the head brakes to"),
                ParamRange("time_gap_s", 0.3, 1.2, "CACC time gap"),
            ),
            _cacc_batched,
            batched=True,
            arrays=_cacc_batched_inputs,
        ),
    ]
    return {x.name: x for x in t}


LIBRARY: dict[str, ScenarioTemplate] = _lib()


def get_template(name: str) -> ScenarioTemplate:
    """The library entry ``name``.

    Raises:
        ValidationError: for an unknown name, listing the library.
    """
    try:
        return LIBRARY[name]
    except KeyError:
        raise ValidationError(
            f"--scenario = {name!r}: not in the library; allowed: {', '.join(LIBRARY)}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _string_index(peak: np.ndarray, fol: np.ndarray, ref: np.ndarray) -> float:
    """The largest peak |a| of the ``fol`` vehicles over that of the ``ref`` ones (floored at
    ``STRING_INDEX_FLOOR_MPS2``); 0 without followers."""
    top = 0.0
    ref_peak = 0.0
    for q in range(peak.shape[0]):
        if fol[q]:
            top = max(top, peak[q])
        if ref[q]:
            ref_peak = max(ref_peak, peak[q])
    return top / max(ref_peak, STRING_INDEX_FLOOR_MPS2)


@njit(cache=True)
def _window_metrics(
    gap: np.ndarray,
    closing: np.ndarray,
    acc: np.ndarray,
    braking: np.ndarray,
    fol: np.ndarray,
    ref: np.ndarray,
) -> tuple[float, float, float, float, float]:
    """Min gap, min TTC, max deceleration, DRAC and string index over a window.

    Args:
        gap, closing: (r, n) bumper gap [m] and closing speed [m/s] of every vehicle; NaN
            where one does not count (no leader, not a follower, off the road).
        acc: (r, n) accelerations of every vehicle [m/s²], NaN while one is off the road.
        braking: (n,) bool, the vehicles whose deceleration counts.
        fol: (n,) bool, the vehicles whose peak |a| is the string index's numerator.
        ref: (n,) bool, those whose peak is its denominator (the manoeuvre's source).
    """
    min_gap, min_ttc, drac, lowest = math.inf, math.inf, 0.0, 0.0
    peak = np.zeros(acc.shape[1])
    for t in range(acc.shape[0]):
        for q in range(acc.shape[1]):
            a = acc[t, q]
            if a == a:
                peak[q] = max(peak[q], abs(a))
                if braking[q]:
                    lowest = min(lowest, a)
            min_gap, min_ttc, drac = fold_gap(gap[t, q], closing[t, q], min_gap, min_ttc, drac)
    return min_gap, min_ttc, max(0.0, -lowest), drac, _string_index(peak, fol, ref)


@njit(cache=True, inline="always")
def _metrics_of_run(
    met: np.ndarray,
    position: np.ndarray,
    min_gap_m: np.ndarray,
    min_ttc_s: np.ndarray,
    collided_at_s: np.ndarray,
    start_pos_m: np.ndarray,
    end_pos_m: np.ndarray,
    from_s: float,
    out: np.ndarray,
) -> None:
    """``METRIC_NAMES`` of one run of the 1-D engine into ``out`` (7,), from its trucks'
    ``MET_*`` accumulators over the metrics window ``met`` (n, MET_SIZE), the engine's own
    whole-run minima and collision times (n,) and the positions at the start and end."""
    n = met.shape[0]
    min_gap, min_ttc, drac, lowest = math.inf, math.inf, 0.0, 0.0
    for q in range(n):
        lowest = min(lowest, met[q, MET_LOWEST_ACCEL_MPS2])
        if position[q] > 0:
            min_gap = min(min_gap, met[q, MET_MIN_GAP_M])
            min_ttc = min(min_ttc, met[q, MET_MIN_TTC_S])
            drac = max(drac, met[q, MET_DRAC_MPS2])
    if from_s <= 0.0:
        min_gap = math.inf
        for q in range(n):
            if position[q] > 0:
                min_gap = min(min_gap, min_gap_m[q])
        min_ttc = min_ttc_s.min()
    km = 0.0
    collided = 0.0
    for q in range(n):
        if position[q] == 0:
            km += end_pos_m[q] - start_pos_m[q]
        if math.isfinite(collided_at_s[q]):
            collided = 1.0
    out[M_COLLIDED] = collided
    out[M_MIN_GAP] = min_gap
    out[M_MIN_TTC] = min_ttc
    out[M_MAX_DECEL] = max(0.0, -lowest)
    out[M_DRAC] = drac
    out[M_STRING_INDEX] = _string_index(
        met[:, MET_PEAK_ABS_ACCEL_MPS2], position > 0, position == 0
    )
    out[M_PLATOON_KM] = km / 1000.0


@njit(cache=True, parallel=True)
def _metric_rows(
    time_s: np.ndarray,
    start: np.ndarray,
    pos_m: np.ndarray,
    speed_mps: np.ndarray,
    accel_mps2: np.ndarray,
    leader: np.ndarray,
    position: np.ndarray,
    phys: np.ndarray,
    min_gap_m: np.ndarray,
    min_ttc_s: np.ndarray,
    collided_at_s: np.ndarray,
    from_s: float,
    out: np.ndarray,
) -> None:
    """``METRIC_NAMES`` of m runs of the 1-D engine with the same record times into ``out``
    (m, 7), from their traces: each recorded sample in the window folded as the engine folds
    them in a run (``kernel.sample_metrics``), then ``_metrics_of_run`` (a run's own trace
    only, so a run's figures do not depend on the others).

    Args:
        time_s: (r,) record times [s].
        start: (3, m, n) position, speed and acceleration at ``time_s[0]``.
        pos_m, speed_mps, accel_mps2: (m, r - 1, n) the rest of the recorded trace.
        leader, position: (m, n) each truck's leader row and place in its platoon.
        phys: (m, n, TP_SIZE) the trucks' rows (their lengths).
        min_gap_m, min_ttc_s, collided_at_s: (m, n) the engine's own whole-run minima and
            collision times (the final state).
        from_s: start of the metrics window (``run_metrics``).
    """
    n = pos_m.shape[2]
    for j in prange(pos_m.shape[0]):
        met = empty_metrics(n)
        for t in range(time_s.shape[0]):
            if time_s[t] < from_s - METRICS_EPS_S:
                continue
            pos, speed, accel = start[0, j], start[1, j], start[2, j]
            if t > 0:
                pos, speed, accel = pos_m[j, t - 1], speed_mps[j, t - 1], accel_mps2[j, t - 1]
            sample_metrics(0, n, pos, speed, accel, leader[j], position[j], phys[j], met)
        end = pos_m[j, -1] if pos_m.shape[1] > 0 else start[0, j]
        _metrics_of_run(
            met,
            position[j],
            min_gap_m[j],
            min_ttc_s[j],
            collided_at_s[j],
            start[0, j],
            end,
            from_s,
            out[j],
        )


@njit(cache=True, parallel=True)
def _window_rows(
    met: np.ndarray,
    position: np.ndarray,
    min_gap_m: np.ndarray,
    min_ttc_s: np.ndarray,
    collided_at_s: np.ndarray,
    start_pos_m: np.ndarray,
    end_pos_m: np.ndarray,
    from_s: float,
    out: np.ndarray,
) -> None:
    """``_metrics_of_run`` of m runs (arrays (m, ...)) into ``out`` (m, 7)."""
    for j in prange(met.shape[0]):
        _metrics_of_run(
            met[j],
            position[j],
            min_gap_m[j],
            min_ttc_s[j],
            collided_at_s[j],
            start_pos_m[j],
            end_pos_m[j],
            from_s,
            out[j],
        )


def run_metrics(res: RunResult, from_s: float = 0.0) -> dict[str, float]:
    """The safety metrics of one run (see the module docstring), as floats.

    Args:
        res: a run recorded every step (``simulate``'s default).
        from_s: start of the window for gap, TTC, deceleration, DRAC and string index [s];
            0 takes the engine's own whole-run minima.  A collision counts whenever it
            happens, and ``platoon_km`` is the whole run's.
    """
    tr, st, table = res.trace, res.state, res.table
    out = np.empty((1, len(METRIC_NAMES)))
    _metric_rows(
        tr.time_s,
        np.stack([tr.pos_m[:1], tr.speed_mps[:1], tr.accel_mps2[:1]]),
        tr.pos_m[None, 1:],
        tr.speed_mps[None, 1:],
        tr.accel_mps2[None, 1:],
        table.leader[None],
        table.position[None],
        table.phys[None],
        st.min_gap_m[None],
        st.min_ttc_s[None],
        st.collided_at_s[None],
        from_s,
        out,
    )
    return {k: float(v) for k, v in zip(METRIC_NAMES, out[0], strict=True)}


def group_metrics(g: StackedRun, from_s: float = 0.0) -> np.ndarray:
    """``run_metrics`` of every run of a stacked run (``engine.run_stacked``), from its
    arrays as the kernel left them: (m, 7), columns in ``METRIC_NAMES`` order, each row
    equal to its run's ``run_metrics`` to the last bit."""
    rows = g.stacked[0].shape[1] + 1
    out = np.empty((g.start.shape[1], len(METRIC_NAMES)))
    _metric_rows(
        np.arange(rows) * g.rec_every * g.dt_s,
        g.start,
        g.stacked[0],
        g.stacked[1],
        g.stacked[2],
        g.arg("leader"),
        g.arg("ppos"),
        g.arg("phys"),
        g.arg("min_gap"),
        g.arg("min_ttc"),
        g.arg("collided_at"),
        from_s,
        out,
    )
    return out


def window_metrics(g: StackedRun, from_s: float) -> np.ndarray:
    """``group_metrics`` of a stacked run made with the metrics window from ``from_s``
    (``env[ENV_METRICS_FROM_S]``, from step 0) and no recordings: from the accumulators the
    kernel folded as it ran (the same bits: ``group_metrics`` folds the recorded samples by
    the same function)."""
    m = g.start.shape[1]
    out = np.empty((m, len(METRIC_NAMES)))
    end = g.arg("pos")[np.arange(m), g.arg("step")[:, 0] % 2]
    _window_rows(
        g.arg("metrics"),
        g.arg("ppos"),
        g.arg("min_gap"),
        g.arg("min_ttc"),
        g.arg("collided_at"),
        g.start[0],
        end,
        from_s,
        out,
    )
    return out


def net_metrics(tr: NetTrace, from_s: float = 0.0) -> dict[str, float]:
    """The safety metrics of one network-engine instance (``convoy.sim.validation_net``).

    Gap, TTC and DRAC are the platoon followers' to whatever drives ahead of them (the car
    that cut in included); the deceleration is the trucks' (the car's brake is the scenario's
    input).  The string index is the L∞ gain from the manoeuvre's source (the car) to the
    trucks behind it: their largest peak |a| over the car's (floored as for a head).
    """
    w = tr.time_s >= from_s - 1e-9
    fol = tr.truck & (tr.position > 0)
    min_gap, min_ttc, max_decel, drac, ssi = _window_metrics(
        np.where(fol, tr.gap_m[w], np.nan),
        np.where(fol, tr.closing_mps[w], np.nan),
        tr.accel_mps2[w],
        tr.truck,
        tr.downstream,
        tr.source,
    )
    return {
        "collided": 1.0 if tr.collided else 0.0,
        "min_gap_m": min_gap,
        "min_ttc_s": min_ttc,
        "max_decel_mps2": max_decel,
        "drac_mps2": drac,
        "string_index": ssi,
        "platoon_km": tr.head_km,
    }


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------
def derive_seed(seed: int, name: str, index: int) -> int:
    """Seed of instance ``index`` of scenario ``name`` in a run with ``seed`` (pure)."""
    ss = np.random.SeedSequence([seed, zlib.crc32(name.encode()), index])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


# NumPy's SeedSequence (O'Neill's seed_seq design, a pool of 4 32-bit words): its hash and
# mix constants, for ``derive_seeds``
_SS_POOL = 4
_SS_INIT_A, _SS_MULT_A = 0x43B0D7E5, 0x931E8875
_SS_INIT_B, _SS_MULT_B = 0x8B51F9DD, 0x58F38DED
_SS_MIX_L, _SS_MIX_R = np.uint32(0xCA01F9DD), np.uint32(0x4973F715)
_U32 = 0xFFFFFFFF


def _u32_words(x: int) -> list[int]:
    """A non-negative int as SeedSequence reads it: 32-bit words, least significant first."""
    words = [x & _U32]
    while x > _U32:
        x >>= 32
        words.append(x & _U32)
    return words


def derive_seeds(seed: int, name: str, indices: np.ndarray) -> np.ndarray:
    """``derive_seed(seed, name, i)`` for every i of ``indices`` at once, as int64: the same
    hashing of the words ``[seed, crc32(name), i]`` into a pool and out again that NumPy's
    ``SeedSequence`` does, over arrays (equal to it for every index: tested), so a batched
    chunk costs no Python per instance."""
    idx = np.asarray(indices, np.int64)
    if idx.size and (idx.min() < 0 or idx.max() > _U32):
        return np.array([derive_seed(seed, name, int(i)) for i in idx], np.int64)
    n = idx.shape[0]
    fixed = [*_u32_words(seed), zlib.crc32(name.encode())]
    entropy = [np.full(n, w, np.uint32) for w in fixed] + [idx.astype(np.uint32)]
    h = _SS_INIT_A

    def hashmix(v: np.ndarray) -> np.ndarray:
        nonlocal h
        v = v ^ np.uint32(h)
        h = (h * _SS_MULT_A) & _U32
        v = v * np.uint32(h)
        return v ^ (v >> np.uint32(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r: np.ndarray = np.subtract(_SS_MIX_L * x, _SS_MIX_R * y, dtype=np.uint32)
        return r ^ (r >> np.uint32(16))

    zero = np.zeros(n, np.uint32)
    pool = [hashmix(entropy[i] if i < len(entropy) else zero) for i in range(_SS_POOL)]
    for src in range(_SS_POOL):
        for dst in range(_SS_POOL):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(_SS_POOL, len(entropy)):
        for dst in range(_SS_POOL):
            pool[dst] = mix(pool[dst], hashmix(entropy[src]))
    # generate_state(1, uint64): two words out of the pool, the first the low half
    h = _SS_INIT_B
    out = []
    for word in pool[:2]:
        v = word ^ np.uint32(h)
        h = (h * _SS_MULT_B) & _U32
        v = v * np.uint32(h)
        out.append((v ^ (v >> np.uint32(16))).astype(np.uint64))
    state = out[0] | (out[1] << np.uint64(32))
    return (state >> np.uint64(1)).astype(np.int64)


def sample_params(tpl: ScenarioTemplate, samples: int, seed: int, grid: bool) -> np.ndarray:
    """(m, k) parameter values of ``tpl``'s instances, columns in ``tpl.ranges`` order.

    Monte Carlo: ``samples`` rows uniform in the ranges, from a generator keyed by
    (seed, name).  Grid: ``max(2, round(samples ** (1/k)))`` points per axis, every
    combination (so m may differ from ``samples``).
    """
    k = len(tpl.ranges)
    lo = np.array([r.low for r in tpl.ranges])
    hi = np.array([r.high for r in tpl.ranges])
    if grid:
        per = _grid_points(samples, k)
        axes = [np.linspace(a, b, per) for a, b in zip(lo, hi, strict=True)]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)
    rng = np.random.default_rng([seed, zlib.crc32(tpl.name.encode())])
    return lo + (hi - lo) * rng.random((samples, k))


def _params(tpl: ScenarioTemplate, row: Sequence[float]) -> dict[str, float]:
    return {r.name: float(v) for r, v in zip(tpl.ranges, row, strict=True)}


def instance(
    tpl: ScenarioTemplate,
    row: Sequence[float],
    seed: int,
    index: int,
    instance_seed: int | None = None,
) -> Scenario:
    """Instance ``index`` of ``tpl`` with parameter values ``row`` in a run with ``seed``
    (``instance_seed``: its ``derive_seed``, where the caller has it from ``derive_seeds``).

    Raises:
        ValidationError: for a template of the network engine (it has no 1-D scenario;
            ``net_instance_traces`` runs its instances).
    """
    if tpl.make is None:
        raise ValidationError(
            f"scenario {tpl.name!r} runs on the network engine and has no 1-D scenario file; "
            "allowed: a 1-D library scenario (use net_instance_traces for this one)"
        )
    if instance_seed is None:
        instance_seed = derive_seed(seed, tpl.name, index)
    sc = tpl.make(_params(tpl, row), instance_seed)
    return sc.model_copy(update={"name": f"{tpl.name}[{index}]"})


def net_instance_traces(
    tpl: ScenarioTemplate, rows: np.ndarray, seed: int, start: int, backend: str = "cpu"
) -> list[NetTrace]:
    """Instances ``start .. start + len(rows)`` of a network-engine template, run as one batch
    on the network engine's ``backend`` (the engine's seed: that of instance ``start``; see
    ``convoy.sim.validation_net``)."""
    assert tpl.net is not None
    return tpl.net([_params(tpl, r) for r in rows], derive_seed(seed, tpl.name, start), backend)


@functools.cache
def net_backend(backend: str) -> str:
    """The network engine's backend for ``validate``'s: ``gpu`` where JAX sees a GPU, else
    Numba on the CPU (``_note_cpu_fallback`` says so); ``cpu`` and ``jax`` as they are.
    Asked once per process (chunk sizes, each chunk, the note)."""
    if backend != "gpu":
        return backend
    from convoy.sim.backend_jax import gpu_device

    try:
        gpu_device()
    except ScenarioError:
        return "cpu"
    return "gpu"


@contextmanager
def _one_numba_thread() -> Iterator[None]:
    """Numba's parallel loops on one thread (this thread only), restored after.

    A library instance is 5-7 trucks: in a step parallel over trucks (the network engine's,
    for the car cut-in) a second thread has nothing to do but meet the first at the loop's
    barrier, several times a step.  On a shared machine that barrier waits whenever the host
    deschedules the idle thread: ``validate --samples 16`` over the library took 15-35 s with
    Numba's 2 threads and 1.0-1.7 s with 1 on the 2-core box (docs/benchmarks.md).  Results
    do not depend on the thread count.  The 1-D entries run parallel over instances instead
    (``simulate_many``, ``run_batch``: no barrier per step), on all of Numba's threads.
    """
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def run_chunk(
    name: str, rows: np.ndarray, start: int, seed: int, backend: str = "cpu"
) -> np.ndarray:
    """Metrics of instances ``start .. start + len(rows)`` of scenario ``name``.

    A pure function of its arguments: the unit of work a Ray task runs.  The network
    engine's chunks run Numba on one thread (``_one_numba_thread``); the 1-D ones run
    parallel over their instances.

    Returns:
        (len(rows), len(METRIC_NAMES)) float64, columns in ``METRIC_NAMES`` order.
    """
    tpl = get_template(name)
    if tpl.batched:
        if tpl.arrays is not None:
            return _batch_metrics(tpl.arrays(rows, seed, start), backend)
        scs = [instance(tpl, row, seed, start + j) for j, row in enumerate(rows)]
        return _batch_metrics(stack_instances(scs), backend)
    out = np.empty((len(rows), len(METRIC_NAMES)))
    if tpl.net is not None:
        # one call of the network engine for the chunk
        with _one_numba_thread():
            traces = net_instance_traces(tpl, rows, seed, start, net_backend(backend))
        for j, tr in enumerate(traces):
            m = net_metrics(tr, tpl.warmup_s)
            out[j] = [m[k] for k in METRIC_NAMES]
        return out
    # the engine's JAX/GPU step covers only the batched regime; the rest run the general
    # kernel, the chunk along its instance axis (each instance exactly its own run), on the
    # GPU (one thread per instance) with backend gpu where Numba sees one
    engine_backend = "cpu"
    if backend == "gpu":
        from convoy.sim.cuda_target import has_gpu

        engine_backend = "cuda" if has_gpu() else "cpu"
    # built as arrays where the template can (``inputs``); else one scenario per instance
    parts = (
        tpl.inputs(rows, seed, start)
        if tpl.inputs is not None
        else [(np.arange(len(rows)), KernelInputs(0, 1, 0.0, {}))]
    )
    seeds = derive_seeds(seed, tpl.name, start + np.arange(len(rows))).tolist()
    for idx, inputs in parts:
        if inputs.arrays:
            # the metrics folded in the kernel as it runs: nothing recorded, and no energy
            # accounted (no metric reads it; the rest of the run is the same to the bit)
            inputs.arrays["env"][:, ENV_METRICS_FROM_S] = tpl.warmup_s
            inputs.arrays["env"][:, ENV_ENERGY] = 0.0
            run = run_stacked(replace(inputs, rec_every=0), engine_backend)
            out[idx] = window_metrics(run, tpl.warmup_s)
            continue
        alone, groups = run_groups(
            [instance(tpl, rows[j], seed, start + j, seeds[j]) for j in idx.tolist()],
            engine_backend,
        )
        for j, res in alone.items():
            m = run_metrics(res, tpl.warmup_s)
            out[idx[j]] = [m[k] for k in METRIC_NAMES]
        for g in groups:  # the metrics of a whole group at once, from its stacked arrays
            out[idx[g.members]] = group_metrics(g.run, tpl.warmup_s)
    return out


def _batch_metrics(inputs: BatchInputs, backend: str) -> np.ndarray:
    """``run_inputs`` over instances; DRAC and the string index need a trace, so NaN."""
    br = run_inputs(inputs, backend=backend)
    b = inputs.count
    head0 = inputs.pos[:, inputs.step0 % 2, 0].copy()
    cols = {
        "collided": br.collided.astype(np.float64),
        "min_gap_m": br.worst_gap_m,
        "min_ttc_s": br.worst_ttc_s,
        "max_decel_mps2": np.maximum(br.max_decel_mps2, 0.0),
        "drac_mps2": np.full(b, np.nan),
        "string_index": np.full(b, np.nan),
        "platoon_km": (br.pos_m[:, 0] - head0) / 1000.0,
    }
    return np.stack([cols[k] for k in METRIC_NAMES], axis=1)


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ScenarioOutcome:
    """All instances of one template.

    Attributes:
        template: the library entry; criteria: the limits applied.
        params: (m, k) parameter values; metrics: (m, len(METRIC_NAMES)).
        passed: (m,) bool; failures: per instance, the limits it broke.
    """

    template: ScenarioTemplate
    criteria: Criteria
    params: np.ndarray
    metrics: np.ndarray
    passed: np.ndarray
    failures: list[list[str]]

    def metric(self, name: str) -> np.ndarray:
        """(m,) values of one metric."""
        return self.metrics[:, METRIC_NAMES.index(name)]

    def worst(self, k: int) -> np.ndarray:
        """Indices of the k worst instances: collisions first, then smallest gap."""
        order = np.lexsort((self.metric("min_gap_m"), -self.metric("collided")))
        return order[:k]


@dataclass(frozen=True, slots=True)
class ValidationRun:
    """A finished ``validate`` call: outcomes per scenario, and the throughput."""

    outcomes: list[ScenarioOutcome]
    seed: int
    wall_s: float
    platoon_km: float
    #: the part of ``wall_s`` spent starting Ray and its workers (0 for a local run)
    startup_s: float = 0.0

    @property
    def km_per_hour(self) -> float:
        """km of platoon driving simulated per wall-clock hour."""
        return self.platoon_km / max(self.wall_s, 1e-9) * 3600.0

    @property
    def km_per_hour_running(self) -> float:
        """``km_per_hour`` without Ray's start-up: the rate once the workers are up."""
        return self.platoon_km / max(self.wall_s - self.startup_s, 1e-9) * 3600.0


#: Instances per chunk (a Ray task) of a network-engine scenario. A chunk of those is one
#: ``NetSim`` batch seeded by its first instance, so this number is part of the results.
CHUNK_INSTANCES = 32
#: The same on the GPU (JAX): 32 instances of ``car-cut-in`` are 192 vehicles, a few of an
#: H100's 16,896 cores; 4,096 are 24,576 vehicles, 400 steps of FCD (the metrics' traces)
#: about 0.3 GB in float32. Not measured on a device yet. The scenario draws no random
#: numbers, so an instance's results do not depend on its chunk (``validation_net``).
CHUNK_INSTANCES_NET_GPU = 1 << 12
#: Instances per chunk of a 1-D scenario in a local run (each instance is exactly its own
#: run, whatever the chunk). Larger chunks group more instances of one shape into each call
#: along the kernel's instance axis: ``--samples 512`` over the library took 8.1 s in
#: 32-instance chunks and 6.9-7.0 s in 256-instance ones, the same table (session 7, AMD
#: EPYC, 2 vCPUs). Over Ray they stay at ``CHUNK_INSTANCES``: with 256, two local workers
#: waited on each other's last big chunk (3.2 against 3.6x10^6 platoon-km/h).
CHUNK_INSTANCES_1D = 256
#: The same on the GPU for an entry built as arrays (``ScenarioTemplate.inputs``): the CUDA
#: general kernel runs one thread per instance, so a call of 256 would leave an H100's
#: 132 SMs nearly idle. Those chunks record nothing (the kernel folds the metrics as it
#: runs), so an instance holds 5-8 kB (its tables, state, history and profile): 2^17
#: instances, about 1 GB on the host and on the device, 31 warps per SM.
CHUNK_INSTANCES_1D_GPU = 1 << 17
#: Instances per Ray task of a 1-D entry built as arrays: such a chunk costs one scenario
#: per part, so larger tasks pay Ray's overhead less often; with 2 local workers, 128 ran
#: 1.49-1.53e7 platoon-km/h once the workers were up against 1.11-1.42e7 with 32
#: (session 17, docs/benchmarks.md).
CHUNK_INSTANCES_1D_ARRAYS_RAY = 128
#: Instances per chunk of a batched scenario built as arrays (``ScenarioTemplate.arrays``),
#: locally and over Ray: its chunk costs no Python per instance, and one call of the batched
#: step over many instances is what keeps a GPU busy (each instance's results are its own
#: whatever the chunk).
CHUNK_INSTANCES_BATCHED = 4096
#: The same on the GPU, where a call must hold far more trucks to fill the device (the JAX
#: step ran 1.9e10 truck-steps/s with 10 million trucks on an H200, docs/benchmarks.md); on
#: the CPU larger chunks are slower (JAX: 2.5e7 platoon-km/h in chunks of 4,096 against
#: 1.6e7 in chunks of 65,536, 2 vCPUs).
CHUNK_INSTANCES_BATCHED_GPU = 1 << 18
RAY_LOCAL_WORKERS = 2  # --ray local's worker processes (Ray's num_cpus) by default


def chunk_size(tpl: ScenarioTemplate, over_ray: bool, backend: str = "cpu") -> int:
    """Instances per chunk of ``tpl``: for a batched scenario built as arrays
    ``CHUNK_INSTANCES_BATCHED`` (``CHUNK_INSTANCES_BATCHED_GPU`` on the GPU),
    ``CHUNK_INSTANCES_1D`` for another 1-D scenario run locally (``CHUNK_INSTANCES_1D_GPU``
    for one built as arrays on the GPU, ``CHUNK_INSTANCES_1D_ARRAYS_RAY`` for one over
    Ray), ``CHUNK_INSTANCES_NET_GPU`` for a network-engine one on the GPU, else
    ``CHUNK_INSTANCES``."""
    if tpl.net is not None and not over_ray and net_backend(backend) == "gpu":
        return CHUNK_INSTANCES_NET_GPU
    if tpl.arrays is not None:
        return CHUNK_INSTANCES_BATCHED_GPU if backend == "gpu" else CHUNK_INSTANCES_BATCHED
    if tpl.inputs is not None and backend == "gpu" and not over_ray:
        return CHUNK_INSTANCES_1D_GPU
    if tpl.inputs is not None and over_ray:
        return CHUNK_INSTANCES_1D_ARRAYS_RAY
    return CHUNK_INSTANCES if tpl.net is not None or over_ray else CHUNK_INSTANCES_1D


def _threads_per(workers: int) -> int:
    """Numba threads for each of ``workers`` local Ray workers: the cores shared out, at
    least one."""
    return max(1, (os.cpu_count() or 1) // workers)


def _check_ray_address(address: str) -> None:
    """Refuse at once a ``HOST:PORT`` (or ``ray://HOST:PORT``) where nothing listens: Ray
    itself retries such an address for a minute or more before it gives up.

    Raises:
        ValidationError: naming the address and why it cannot be reached.
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" or a form Ray resolves itself
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=3.0).close()
    except OSError as exc:
        raise ValidationError(
            f"--ray = {address!r}: no Ray cluster answers there ({exc.strerror or exc}); "
            "allowed: the address a running cluster's head gives (ray start --head prints "
            "it), or local"
        ) from None


def _worker_ready() -> bool:
    """A Ray task that does nothing: running it starts a worker and imports this module
    there (``_ray_runner`` times the start-up with one per CPU)."""
    return True


def _ray_runner(
    address: str, workers: int | None = None
) -> Callable[
    [list[tuple[str, np.ndarray, int]], int, str, Callable[[int], None]],
    tuple[list[np.ndarray], float],
]:
    try:
        import ray
    except ImportError:
        raise ValidationError(
            f"--ray = {address!r}: Ray is not installed; allowed: install it (pip install ray) "
            "or run without --ray"
        ) from None

    def go(
        tasks: list[tuple[str, np.ndarray, int]],
        seed: int,
        backend: str,
        finished: Callable[[int], None],
    ) -> tuple[list[np.ndarray], float]:
        """The chunks' metrics, and the seconds spent starting Ray and its workers."""
        t0 = time.perf_counter()
        if not ray.is_initialized():
            if address == "local":
                n_workers = workers or RAY_LOCAL_WORKERS
                ray.init(
                    num_cpus=n_workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    # the machine's cores shared out: each worker's Numba would otherwise
                    # start a thread per core, workers x cores threads on the cores
                    runtime_env={"env_vars": {"NUMBA_NUM_THREADS": str(_threads_per(n_workers))}},
                )
            else:
                _check_ray_address(address)
                ray.init(address=address, log_to_driver=False)
        remote = ray.remote(run_chunk)
        # Ray hides the GPUs from a task that asks for none (CUDA_VISIBLE_DEVICES=""), so a
        # chunk that runs on the GPU asks for one
        on_gpu = {n for n, _, _ in tasks if backend == "gpu" and get_template(n).batched}
        if on_gpu and not ray.cluster_resources().get("GPU", 0.0):
            raise ValidationError(
                f"--backend gpu with --ray {address!r}: the Ray cluster has no GPU; allowed: "
                "a cluster with a GPU node (ray start --num-gpus 1 on it), or --backend cpu|jax"
            )
        # the workers started (one task per CPU), so that the start-up can be told apart
        up = ray.remote(_worker_ready)
        ray.get([up.remote() for _ in range(max(1, int(ray.cluster_resources().get("CPU", 1))))])
        startup_s = time.perf_counter() - t0
        refs = [
            (remote.options(num_gpus=1) if n in on_gpu else remote).remote(
                n, rows, start, seed, backend
            )
            for n, rows, start in tasks
        ]
        runs = {ref: len(rows) for ref, (_, rows, _) in zip(refs, tasks, strict=True)}
        got: dict[Any, np.ndarray] = {}
        try:
            pending = list(refs)
            while pending:  # each chunk as it finishes, for the progress bar
                ready, pending = ray.wait(pending, num_returns=1)
                got[ready[0]] = ray.get(ready[0])  # (a failed task raises here)
                finished(runs[ready[0]])
            return [got[ref] for ref in refs], startup_s
        except ray.exceptions.RayTaskError as exc:
            # a bad-input error raised in a worker: its one-line message, not Ray's traceback
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ScenarioError):
                raise ValidationError(str(cause)) from None
            raise

    return go


def instance_count(tpl: ScenarioTemplate, samples: int, grid: bool) -> int:
    """How many instances ``sample_params`` makes of ``tpl`` (without making them)."""
    k = len(tpl.ranges)
    return _grid_points(samples, k) ** k if grid else samples


def _grid_points(samples: int, k: int) -> int:
    """Points per axis of a grid of about ``samples`` points over ``k`` parameters."""
    return int(max(2, round(samples ** (1.0 / k))))


def _bytes_per_instance(tpl: ScenarioTemplate) -> int:
    """Bytes a run keeps per instance until the end: its parameter row and its metrics (the
    summary, the heat maps and the worst cases are made from all of them), float64."""
    return 8 * (len(tpl.ranges) + len(METRIC_NAMES))


def _check_memory(tpls: Sequence[ScenarioTemplate], samples: int, grid: bool) -> None:
    """Refuse, before anything runs, a run whose parameter rows and per-instance metrics
    alone would take more than half of this machine's memory.

    Raises:
        ValidationError: naming the run's size, what it needs and the most it may have.
    """
    need = sum(instance_count(t, samples, grid) * _bytes_per_instance(t) for t in tpls)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not a POSIX system
        return
    if need > memory // 2:
        most = int(samples * (memory // 2) / need)
        raise ValidationError(
            f"--samples = {samples}{' (grid)' if grid else ''} over {len(tpls)} scenario(s): "
            f"their parameters and metrics alone take {need / 2**30:,.1f} GiB, more than half "
            f"of this machine's {memory / 2**30:,.1f} GiB; allowed: about {most:,} or fewer "
            "(or split the run: another --seed gives other instances)"
        )


def validate(
    names: Sequence[str] | None = None,
    samples: int = 64,
    seed: int = 0,
    grid: bool = False,
    backend: str = "cpu",
    ray_address: str | None = None,
    criteria: Mapping[str, Criteria] | None = None,
    ray_workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ValidationRun:
    """Run library scenarios by Monte Carlo sampling or a grid sweep.

    Args:
        names: library keys; default all.
        samples: instances per scenario (grid: about this many).
        seed: run seed; same seed, same instances and results (locally or over Ray).
        grid: sweep a grid instead of sampling.
        backend: ``cpu``, ``jax`` or ``gpu`` (the engine's backend for each run).
        ray_address: a Ray cluster address (``"local"`` starts one here); None runs locally.
        criteria: per-scenario limits replacing the library's defaults.
        ray_workers: worker processes of the local Ray (``ray_address="local"``; default
            ``RAY_LOCAL_WORKERS``); a cluster's own size is set where it starts
            (``ray start --num-cpus N``).
        progress: called as ``progress(runs_done, runs_total)`` before the first run and
            whenever a chunk of runs has finished (over Ray, in the order they finish).

    Raises:
        ValidationError: for an unknown scenario or backend, samples < 1, ray_workers
            without a local Ray or < 1, or backend ``gpu`` with no GPU to run on.
    """
    if samples < 1:
        raise ValidationError(f"--samples = {samples}: allowed: 1 or more")
    if seed < 0:
        raise ValidationError(f"--seed = {seed}: allowed: 0 or more")
    if backend not in VALIDATE_BACKENDS:
        raise ValidationError(f"--backend = {backend!r}; allowed: {', '.join(VALIDATE_BACKENDS)}")
    if ray_workers is not None and (ray_address != "local" or ray_workers < 1):
        raise ValidationError(
            f"--ray-workers = {ray_workers} with --ray = {ray_address!r}; allowed: 1 or more, "
            "with --ray local (a cluster's size is set by ray start --num-cpus N)"
        )
    tpls = [get_template(n) for n in (names or list(LIBRARY))]
    _check_memory(tpls, samples, grid)
    if backend == "gpu" and ray_address in (None, "local") and any(t.batched for t in tpls):
        # here, before the other scenarios run for minutes: one line if JAX sees no GPU
        from convoy.sim.backend_jax import gpu_device

        gpu_device()
    params = {t.name: sample_params(t, samples, seed, grid) for t in tpls}
    tasks = [
        (t.name, params[t.name][s : s + chunk_size(t, bool(ray_address), backend)], s)
        for t in tpls
        for s in range(0, len(params[t.name]), chunk_size(t, bool(ray_address), backend))
    ]
    total = sum(len(rows) for _, rows, _ in tasks)
    done = 0

    def finished(runs: int) -> None:
        nonlocal done
        done += runs
        if progress is not None:
            progress(done, total)

    finished(0)
    t0 = time.perf_counter()
    startup_s = 0.0
    if ray_address:
        results, startup_s = _ray_runner(ray_address, ray_workers)(tasks, seed, backend, finished)
    else:
        results = []
        for name, rows, start in tasks:
            results.append(run_chunk(name, rows, start, seed, backend))
            finished(len(rows))
    wall = time.perf_counter() - t0
    outcomes = []
    for t in tpls:
        mets = np.concatenate(
            [r for (n, _, _), r in zip(tasks, results, strict=True) if n == t.name]
        )
        crit = (criteria or {}).get(t.name, t.criteria)
        fails = [crit.failures(dict(zip(METRIC_NAMES, row, strict=True))) for row in mets]
        outcomes.append(
            ScenarioOutcome(t, crit, params[t.name], mets, np.array([not f for f in fails]), fails)
        )
    km = float(sum(o.metric("platoon_km").sum() for o in outcomes))
    return ValidationRun(outcomes, seed, wall, km, startup_s)


# ---------------------------------------------------------------------------------------------
# Output: table, worst cases, HTML report
# ---------------------------------------------------------------------------------------------
def library_lines() -> list[str]:
    """The library: each scenario, what it tests, and its parameter ranges."""
    out = []
    for t in LIBRARY.values():
        tag = " [batched]" if t.batched else " [network engine, batched]" if t.net else ""
        out.append(f"{t.name}{tag}: {t.description}")
        out += [f"    {r.name}: {r.low:g} .. {r.high:g}  ({r.description})" for r in t.ranges]
    return out


def summary_lines(run: ValidationRun) -> list[str]:
    """The terminal summary table, one line per scenario, and the throughput."""
    head = (
        f"{'scenario':28} {'runs':>5} {'pass %':>7} {'coll %':>7} {'min gap m':>10} "
        f"{'min TTC s':>10} {'max dec':>8} {'max DRAC':>9} {'max SSI':>8}"
    )
    out = [head, "-" * len(head)]
    for o in run.outcomes:
        m = len(o.passed)
        out.append(
            f"{o.template.name:28} {m:5d} {100 * o.passed.mean():7.1f} "
            f"{100 * o.metric('collided').mean():7.1f} {o.metric('min_gap_m').min():10.2f} "
            f"{o.metric('min_ttc_s').min():10.2f} {o.metric('max_decel_mps2').max():8.2f} "
            f"{o.metric('drac_mps2').max():9.2f} {o.metric('string_index').max():8.2f}"
        )
    n = sum(len(o.passed) for o in run.outcomes)
    if run.startup_s > 0.0:
        out.append(
            f"Ray's start-up took {run.startup_s:.2f} s of them: "
            f"{run.km_per_hour_running:,.0f} platoon-km per hour once the workers were up"
        )
    out.append(
        f"{n} runs, {run.platoon_km:.1f} platoon-km in {run.wall_s:.2f} s: "
        f"{run.km_per_hour:,.0f} platoon-km simulated per hour"
    )
    return out


def scenario_yaml(sc: Scenario, comment: str = "") -> str:
    """A scenario as a YAML file ``load_scenario`` reads back to an equal scenario."""
    text = yaml.safe_dump(sc.model_dump(mode="json"), sort_keys=False)
    lines = "".join(f"# {c}\n" for c in comment.splitlines())
    return lines + text


class NetReplay(BaseModel):
    """A worst case of a network-engine scenario, as written to ``worst/*.yaml``: the
    template, the instance's index, seed and parameters (the network engine has no scenario
    file format of its own; the template rebuilds the instance from these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replay: Literal["network"]
    template: str
    index: Annotated[int, Field(ge=0)]
    seed: Annotated[int, Field(ge=0, lt=2**63)]
    params: dict[str, Annotated[float, Field(allow_inf_nan=False)]]


def net_replay_yaml(tpl: ScenarioTemplate, row: Sequence[float], seed: int, index: int,
                    comment: str = "") -> str:  # fmt: skip
    """Instance ``index`` of a network-engine template as a replay file (``NetReplay``)."""
    rep = NetReplay(
        replay="network",
        template=tpl.name,
        index=index,
        seed=derive_seed(seed, tpl.name, index),
        params=_params(tpl, row),
    )
    lines = "".join(f"# {c}\n" for c in comment.splitlines())
    return lines + yaml.safe_dump(rep.model_dump(mode="json"), sort_keys=False)


def load_net_replay(path: str | Path, data: Any) -> tuple[ScenarioTemplate, NetReplay]:
    """Check a network replay file's mapping ``data`` (read from ``path``).

    Raises:
        ValidationError: naming the wrong field, its value and what is allowed.
    """
    try:
        rep = NetReplay.model_validate(data)
    except PydanticValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        raise ValidationError(f"{path}: field '{loc}' = {e.get('input')!r}: {e['msg']}") from None
    tpl = get_template(rep.template)
    names = [r.name for r in tpl.ranges]
    if tpl.net is None or set(rep.params) != set(names):
        what = (
            "a 1-D scenario (write it as a scenario file)"
            if tpl.net is None
            else (f"params {sorted(rep.params)}")
        )
        raise ValidationError(
            f"{path}: template {rep.template!r} with {what}; allowed: a network-engine "
            f"template with params {names}"
        )  # fmt: skip
    return tpl, rep


def replay_metrics(path: str | Path, backend: str = "cpu") -> dict[str, float]:
    """Load a file written by ``write_worst_cases`` and compute its metrics with its library
    template's metrics window: a 1-D scenario file (the template is named before
    ``[index]``), or a network replay file (``NetReplay``), run alone."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None  # load_scenario says what is wrong with it
    if isinstance(data, dict) and "replay" in data:
        tpl, rep = load_net_replay(path, data)
        assert tpl.net is not None  # load_net_replay admits network templates only
        return net_metrics(tpl.net([rep.params], rep.seed, net_backend(backend))[0], tpl.warmup_s)
    sc = load_scenario(path)
    tpl = get_template(sc.name.split("[", 1)[0])
    if tpl.batched:
        row = _batch_metrics(stack_instances([sc]), backend)[0]
        return dict(zip(METRIC_NAMES, row.tolist(), strict=True))
    return run_metrics(simulate(sc, backend="cpu", chunks=1), tpl.warmup_s)


def write_worst_cases(run: ValidationRun, out: Path, k: int = 3) -> list[Path]:
    """Write each scenario's k worst instances as replayable YAML files under ``out/worst``:
    scenario files for the 1-D engine, ``NetReplay`` files for the network engine."""
    d = out / "worst"
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for o in run.outcomes:
        t = o.template
        for rank, i in enumerate(o.worst(k)):
            params = ", ".join(
                f"{r.name}={v:.4g}" for r, v in zip(t.ranges, o.params[i], strict=True)
            )
            mets = ", ".join(
                f"{n}={v:.4g}" for n, v in zip(METRIC_NAMES, o.metrics[i], strict=True)
            )
            note = f"worst case {rank + 1} of {t.name}: {params}\n{mets}"
            if t.net is not None:
                text = net_replay_yaml(t, o.params[i], run.seed, int(i), note)
            else:
                text = scenario_yaml(instance(t, o.params[i], run.seed, int(i)), note)
            p = d / f"{t.name}-worst{rank + 1}.yaml"
            p.write_text(text, encoding="utf-8")
            paths.append(p)
    return paths


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return '<img src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">'


def write_report(run: ValidationRun, out: Path, worst_k: int = 3) -> Path:
    """Self-contained HTML report: pass rates, heat maps of the pass rate over the first
    parameter pair of each scenario, and the worst cases with their trajectories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = ["<html><head><meta charset='utf-8'><title>convoy validate</title></head><body>"]
    parts.append("<h1>convoy validate</h1><pre>")
    parts.append(html.escape("\n".join(summary_lines(run))))
    parts.append("</pre>")
    names = [o.template.name for o in run.outcomes]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.2), dpi=90)
    ax.barh(names, [100 * o.passed.mean() for o in run.outcomes], color="tab:green")
    ax.set_xlabel("pass rate [%]")
    ax.set_xlim(0, 100)
    fig.tight_layout()
    parts.append("<h2>Pass rates</h2>" + _png(fig))
    for o in run.outcomes:
        t = o.template
        parts.append(f"<h2>{html.escape(t.name)}</h2><p>{html.escape(t.description)}</p>")
        parts.append(f"<p>criteria: {html.escape(repr(o.criteria))}</p>")
        pairs = list(itertools.combinations(range(len(t.ranges)), 2))
        if pairs:
            cols = min(3, len(pairs))
            rows_n = math.ceil(len(pairs) / cols)
            fig, axes = plt.subplots(
                rows_n, cols, figsize=(4.2 * cols, 3.4 * rows_n), dpi=80, squeeze=False
            )
            for ax in axes.ravel()[len(pairs) :]:
                ax.set_visible(False)
            for ax, (a, b) in zip(axes.ravel(), pairs, strict=False):
                ra, rb = t.ranges[a], t.ranges[b]
                # bins: a grid's own points per axis, else 6 for Monte Carlo
                bins = [min(6, max(2, np.unique(o.params[:, c]).size)) for c in (a, b)]
                lims = [[ra.low, ra.high], [rb.low, rb.high]]
                x, y = o.params[:, a], o.params[:, b]
                w = o.passed.astype(float)
                num, xe, ye = np.histogram2d(x, y, bins=bins, weights=w, range=lims)
                den, _, _ = np.histogram2d(x, y, bins=[xe, ye])
                with np.errstate(invalid="ignore", divide="ignore"):
                    rate = np.where(den > 0, num / den, np.nan)
                im = ax.pcolormesh(xe, ye, 100 * rate.T, cmap="RdYlGn", vmin=0, vmax=100)
                ax.set_xlabel(ra.name)
                ax.set_ylabel(rb.name)
            fig.colorbar(im, ax=axes.ravel().tolist(), label="pass rate [%]")
            parts.append(_png(fig))
        parts.append("<h3>Worst cases</h3>")
        for rank, i in enumerate(o.worst(worst_k)):
            if t.net is not None:
                tr: Trace | NetTrace = net_instance_traces(
                    t, o.params[i : i + 1], run.seed, int(i)
                )[0]
            else:
                tr = simulate(instance(t, o.params[i], run.seed, int(i))).trace
            fig, (a1, a2) = plt.subplots(2, 1, sharex=True, figsize=(7, 4.5), dpi=90)
            for j in range(tr.pos_m.shape[1]):
                a1.plot(tr.time_s, tr.speed_mps[:, j], lw=1, label=tr.vehicle_id[j])
                a2.plot(tr.time_s, tr.gap_m[:, j], lw=1)
            a1.set_ylabel("speed [m/s]")
            a2.set_ylabel("gap [m]")
            a2.set_xlabel("time [s]")
            a1.legend(fontsize=7, ncol=5)
            fig.tight_layout()
            params = ", ".join(
                f"{r.name}={v:.4g}" for r, v in zip(t.ranges, o.params[i], strict=True)
            )
            fails = ", ".join(o.failures[i]) or "none"
            parts.append(
                f"<p><b>#{rank + 1}</b> instance {i}: {html.escape(params)}; failed: "
                f"{html.escape(fails)}; min gap {o.metric('min_gap_m')[i]:.2f} m; file "
                f"worst/{html.escape(t.name)}-worst{rank + 1}.yaml</p>" + _png(fig)
            )
    parts.append("</body></html>")
    p = out / "report.html"
    p.write_text("".join(parts), encoding="utf-8")
    return p


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def load_criteria(path: str) -> dict[str, Criteria]:
    """Per-scenario criteria from YAML: ``{scenario: {field: value}}`` over the defaults.

    Raises:
        ValidationError: for an unreadable file, an unknown scenario or field, or a value
            of the wrong kind.
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValidationError(f"--criteria = {path!r}: cannot read it ({exc})") from None
    if not isinstance(data, dict):
        raise ValidationError(f"--criteria = {path!r}: expected a mapping of scenario names")
    allowed = {f.name for f in fields(Criteria)}
    out = {}
    for name, vals in data.items():
        tpl = get_template(str(name))
        if not isinstance(vals, dict) or not set(vals) <= allowed:
            bad = sorted(set(vals) - allowed) if isinstance(vals, dict) else vals
            raise ValidationError(
                f"--criteria {name}: {bad!r} not allowed; allowed fields: "
                f"{', '.join(sorted(allowed))}"
            )
        for key, val in vals.items():
            # a limit is a number (inf and nan too, as YAML's .inf), allow_collision a bool
            want_bool = key == "allow_collision"
            ok = isinstance(val, bool) if want_bool else _is_number(val)
            if not ok:
                raise ValidationError(
                    f"--criteria {name}.{key} = {val!r}: allowed: "
                    f"{'true or false' if want_bool else 'a number'}"
                )
        out[tpl.name] = replace(tpl.criteria, **{k: _criterion(k, v) for k, v in vals.items()})
    return out


def _is_number(val: Any) -> bool:
    return isinstance(val, int | float) and not isinstance(val, bool)


def _criterion(key: str, val: Any) -> Any:
    return val if key == "allow_collision" else float(val)


def _note_cpu_fallback(backend: str, ray_address: str | None, names: Sequence[str] | None) -> None:
    """After a run with ``--backend gpu`` where Numba sees no CUDA GPU, say (one line on
    stderr) that the general 1-D entries ran on the CPU, rather than let it pass unsaid; the
    same for the network engine's entries where JAX sees no GPU."""
    if backend != "gpu" or ray_address:
        return
    chosen = names or list(LIBRARY)
    general = [n for n in chosen if _is_general(LIBRARY[n])]
    net = [n for n in chosen if LIBRARY[n].net is not None]
    from convoy.sim.cuda_target import has_gpu

    if general and not has_gpu():
        print(
            "convoy validate: note: Numba sees no CUDA GPU, so the general 1-D scenarios "
            f"({', '.join(general)}) ran on the CPU",
            file=sys.stderr,
        )
    if net and net_backend(backend) != "gpu":
        print(
            "convoy validate: note: JAX sees no GPU, so the network engine's scenarios "
            f"({', '.join(net)}) ran on Numba on the CPU",
            file=sys.stderr,
        )


def _is_general(tpl: ScenarioTemplate) -> bool:
    """A scenario of the general 1-D step (``kernel_cuda`` on a GPU)."""
    return tpl.make is not None and not tpl.batched


def _progress_bar() -> Any:
    """Runs done of the runs in all, on stderr while it is a terminal (gone when done)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    err = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def validate_main(argv: Sequence[str] | None = None) -> int:
    """``convoy validate``: run the library (or one scenario), print the summary table,
    write ``OUT/report.html`` and ``OUT/worst/*.yaml``.  Exit 0, or 2 on bad input."""
    ap = argparse.ArgumentParser(prog="convoy validate", description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", action="append", help=f"one of: {', '.join(LIBRARY)}")
    ap.add_argument("--samples", type=int, default=64, help="instances per scenario")
    ap.add_argument("--grid", action="store_true", help="grid sweep instead of Monte Carlo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="validate-out", help="report directory")
    ap.add_argument("--ray", default=None, metavar="ADDRESS", help="Ray address, or 'local'")
    ap.add_argument(
        "--ray-workers",
        type=int,
        default=None,
        metavar="N",
        help=f"worker processes of --ray local (default {RAY_LOCAL_WORKERS})",
    )
    ap.add_argument("--backend", default="cpu", choices=VALIDATE_BACKENDS)
    ap.add_argument("--criteria", default=None, help="YAML of per-scenario pass/fail limits")
    ap.add_argument("--worst", type=int, default=3, help="worst cases kept per scenario")
    ap.add_argument("--no-report", action="store_true", help="skip the HTML report")
    ap.add_argument("--list", action="store_true", help="list the library and exit")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.list:
        print("\n".join(library_lines()))
        return 0
    if args.worst < 0:
        print(f"convoy validate: --worst = {args.worst}: allowed: 0 or more", file=sys.stderr)
        return 2
    # an output folder that cannot be written stops the command before the runs, whose
    # results would otherwise be lost (it is made only when there is something to write)
    out = Path(args.out)
    problem = folder_problem(out)
    if problem:
        print(
            f"convoy validate: --out {args.out}: {problem}; allowed: a folder that exists or "
            "can be created, and that you can write to",
            file=sys.stderr,
        )
        return 2
    try:
        crit = load_criteria(args.criteria) if args.criteria else None
        with _progress_bar() as bar:
            task = bar.add_task("validating", total=None)
            run = validate(
                args.scenario,
                args.samples,
                args.seed,
                args.grid,
                args.backend,
                args.ray,
                crit,
                args.ray_workers,
                lambda d, t: bar.update(task, completed=d, total=t),
            )
    except ScenarioError as exc:
        print(f"convoy validate: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(run)))
    _note_cpu_fallback(args.backend, args.ray, args.scenario)
    out.mkdir(parents=True, exist_ok=True)
    write_worst_cases(run, out, args.worst)
    if not args.no_report:
        print(f"report: {write_report(run, out, args.worst)}")
    return 0
