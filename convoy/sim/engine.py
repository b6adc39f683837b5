"""Build the arrays for a scenario, run them on a backend, and collect the trace.

This is the boundary between typed objects and arrays: a ``Scenario`` is converted once
into a ``TruckTable`` and an initial ``TruckState``; the backend advances the state many
steps per call; the recorded rows come back as a ``Trace``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numba
import numpy as np

from convoy.road.hazards import hazard_table, rsu_table
from convoy.road.signals import signal_table
from convoy.sim import kernel, kernel_fast
from convoy.sim.scenario import (
    AccConfig,
    CaccSumoConfig,
    ControllerConfig,
    HumanConfig,
    PathConfig,
    PloegConfig,
    Scenario,
    ScenarioError,
    TruckConfig,
)
from convoy.sim.state import (
    RX_POS_M,
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
    TP_MIN_GAP_M,
    TP_NOISE_MPS2,
    TP_SENSOR_DELAY_STEPS,
    TP_SIZE,
    TruckState,
    TruckTable,
)
from convoy.vehicle.channel import CH_LATENCY_STEPS
from convoy.vehicle.controllers import (
    MODEL_NAMES,
    IdmParams,
    PathParams,
    PloegParams,
)
from convoy.vehicle.energy import DieselPowertrain, ElectricPowertrain
from convoy.vehicle.sumo_cfm import SumoAccParams, SumoCaccParams

# A deceleration beyond this counts as a hard brake (a common naturalistic-driving
# threshold for heavy vehicles is 0.3 g; e.g. Bagdadi 2013 uses 0.3-0.5 g).
HARD_BRAKE_MPS2 = 3.0
# Own-sensor emergency braking: time-to-collision below this triggers full braking
# (Euro NCAP AEB test protocols use TTC of ~1-1.5 s for the last braking phase).
AEB_TTC_S = 1.0
# Recorded arrays larger than this are refused with advice instead of exhausting memory.
MAX_RECORD_CELLS = 400_000_000
#: Most cells (steps x trucks) of the history the delayed readers (V2V latency, sensor and
#: reaction delays) read back from: 3.2 GB of state. A latency of 10^9 s asked for 1.5 TiB.
MAX_HISTORY_CELLS = 100_000_000


@dataclass(frozen=True, slots=True)
class World:
    """Everything the kernel needs besides the truck table and state.

    Attributes:
        env: (ENV_SIZE,) float64 environment vector, see ``kernel.ENV_*``.
        channel: (CH_SIZE,) float64 channel vector.
        outages: (k, 2) float64 V2V outage windows [s].
        profile_t_s, profile_v_mps: (p,) float64 speed profile of the platoon heads.
        hazards: (k, HZ_SIZE) float64 hazard table (``convoy.road.hazards``), k = 0 if none.
        rsus: (m, RSU_SIZE) float64 roadside units along the road, m = 0 if none.
        signals: (k, SG_SIZE) float64 traffic signals (``convoy.road.signals``), k = 0 if
            none.
        fast_cacc: whether ``kernel_fast`` runs this fleet (``kernel_fast.eligible``, decided
            once by ``build`` rather than on every backend call).
    """

    env: np.ndarray
    channel: np.ndarray
    outages: np.ndarray
    profile_t_s: np.ndarray
    profile_v_mps: np.ndarray
    hazards: np.ndarray
    rsus: np.ndarray
    signals: np.ndarray
    fast_cacc: bool = False


@dataclass(frozen=True, slots=True)
class Trace:
    """Recorded rows of a run.

    Attributes:
        time_s: (r,) times of the rows.
        vehicle_id: (n,) ids, ``p{platoon}.{index}`` with index 0 the head.
        pos_m, speed_mps, accel_mps2, energy_kwh: (r, n) float64.
        gap_m: (r, n) bumper gap to the predecessor, NaN for a platoon head.
        mode: (r, n) int8 control mode.
        odd_flags: (r, n) int32 ODD flags (``convoy.road.hazards.OddFlags``) the truck held
            during the step that ended at the row's time; 0 in the first row.
        spat_phase: (r, n) int8 phase the truck knew, during that step, for the nearest
            traffic signal ahead (``convoy.road.signals.PHASE_*``: 0 green, 1 yellow, 2 red),
            -1 if it knew of none; -1 in the first row.
    """

    time_s: np.ndarray
    vehicle_id: list[str]
    pos_m: np.ndarray
    speed_mps: np.ndarray
    accel_mps2: np.ndarray
    gap_m: np.ndarray
    mode: np.ndarray
    energy_kwh: np.ndarray
    odd_flags: np.ndarray
    spat_phase: np.ndarray


@dataclass(frozen=True, slots=True)
class RoadsideLog:
    """What each truck received from the roadside and did at traffic signals, for the cloud
    layer (remote supervision, KPIs).  Every field is (n,), one entry per truck.

    Attributes:
        rsi_received_at_s: first RSI hazard warning from an RSU [s], NaN if none.
        spat_received_at_s: first SPAT of a signal from an RSU [s], NaN if none.
        signal_seen_at_s: first time a signal's light came into sight [s], NaN if never.
        red_light_stops: int32 halts with the nearest signal ahead known to show red or
            yellow.
        red_light_crossings: int32 stop lines crossed on red.
    """

    rsi_received_at_s: np.ndarray
    spat_received_at_s: np.ndarray
    signal_seen_at_s: np.ndarray
    red_light_stops: np.ndarray
    red_light_crossings: np.ndarray

    @staticmethod
    def of(state: TruckState) -> RoadsideLog:
        """The log held in a state (views of its arrays)."""
        return RoadsideLog(
            rsi_received_at_s=state.rsi_received_at_s,
            spat_received_at_s=state.spat_received_at_s,
            signal_seen_at_s=state.signal_seen_at_s,
            red_light_stops=state.red_light_stops,
            red_light_crossings=state.red_light_crossings,
        )


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished run: the trace, the final state, the truck table, and what the trucks
    received from the roadside."""

    scenario: Scenario
    table: TruckTable
    state: TruckState
    trace: Trace
    backend: str
    roadside: RoadsideLog


class Backend(Protocol):
    """Advances a state in place; returns the number of rows it recorded."""

    def __call__(
        self,
        table: TruckTable,
        state: TruckState,
        world: World,
        n_steps: int,
        rec_every: int,
        rec: tuple[np.ndarray, ...],
    ) -> int: ...


def unhandled_tables(world: World) -> tuple[np.ndarray, ...]:
    """The world tables ``kernel_fast`` does not handle; each must be empty for it to run.

    RSUs are not among them: without hazards or signals they have nothing to relay.
    """
    return (world.hazards, world.signals)


def _cpu_backend(
    table: TruckTable,
    state: TruckState,
    world: World,
    n_steps: int,
    rec_every: int,
    rec: tuple[np.ndarray, ...],
) -> int:
    """Numba, parallel over trucks, many steps per call.

    A scenario that uses none of the features ``kernel_fast`` drops runs there (same
    results, several times faster); any other runs the general ``kernel``.
    """
    if world.fast_cacc:
        return _cpu_fast(table, state, world, n_steps, rec_every, rec)
    return _cpu_general(table, state, world, n_steps, rec_every, rec)


def _cpu_fast(
    table: TruckTable,
    state: TruckState,
    world: World,
    n_steps: int,
    rec_every: int,
    rec: tuple[np.ndarray, ...],
) -> int:
    t, s = table, state
    # a Numba dispatcher: threaded for large fleets, one thread for a few blocks of trucks
    threaded = t.leader.shape[0] >= kernel_fast.PARALLEL_MIN_TRUCKS
    run_steps_cacc: Any = (
        kernel_fast.run_steps_cacc if threaded else kernel_fast.run_steps_cacc_serial
    )
    # rec[6] (the SPAT phase) keeps the -1 it was filled with: no signals here
    return int(
        run_steps_cacc(
            numba.get_num_threads() if threaded else 1,
            n_steps,
            rec_every,
            *rec[:6],
            t.leader,
            t.follower,
            t.platoon_size,
            t.position,
            t.phys,
            t.ctrl,
            t.acc,
            t.powertrain,
            world.channel,
            world.profile_t_s,
            world.profile_v_mps,
            world.env,
            s.pos_m,
            s.speed_mps,
            s.accel_mps2,
            s.u_mps2,
            s.mode,
            s.ctrl_mode,
            s.energy_kwh,
            s.rx_pred,
            s.collided_at_s,
            s.collision_speed_mps,
            s.min_gap_m,
            s.min_ttc_s,
            s.hard_brakes,
            s.fallback_steps,
            s.odd_flags,
            s.step,
        )
    )


def _general_args(table: TruckTable, state: TruckState, world: World) -> tuple[np.ndarray, ...]:
    """The table, world and state arrays ``kernel.run_steps_py`` takes after the recording
    arrays, in its order."""
    t, s = table, state
    return (
        t.model,
        t.leader,
        t.follower,
        t.head,
        t.platoon_size,
        t.position,
        t.phys,
        t.ctrl,
        t.acc,
        t.powertrain,
        world.channel,
        world.outages,
        world.profile_t_s,
        world.profile_v_mps,
        world.env,
        world.hazards,
        world.rsus,
        world.signals,
        s.pos_m,
        s.speed_mps,
        s.accel_mps2,
        s.u_mps2,
        s.mode,
        s.ctrl_mode,
        s.energy_kwh,
        s.rx_pred,
        s.rx_head,
        s.ge_bad,
        s.hist,
        s.collided_at_s,
        s.collision_speed_mps,
        s.min_gap_m,
        s.min_ttc_s,
        s.hard_brakes,
        s.fallback_steps,
        s.emergency_steps,
        s.hazard_known,
        s.odd_flags,
        s.rsi_received_at_s,
        s.signal_known,
        s.spat_phase,
        s.spat_received_at_s,
        s.signal_seen_at_s,
        s.red_light_stops,
        s.red_light_crossings,
        s.metrics,
        s.step,
    )


def _cpu_general(
    table: TruckTable,
    state: TruckState,
    world: World,
    n_steps: int,
    rec_every: int,
    rec: tuple[np.ndarray, ...],
) -> int:
    """The general kernel, whatever the scenario (backend ``cpu-general``)."""
    # a Numba dispatcher (mypy cannot see its signature): threaded for large fleets
    run_steps: Any = (
        kernel.run_steps
        if table.leader.shape[0] >= kernel.PARALLEL_MIN_TRUCKS
        else kernel.run_steps_serial
    )
    return int(run_steps(n_steps, rec_every, *rec, *_general_args(table, state, world)))


def _backend_jax() -> Any:
    """The JAX backend module, imported on first use (JAX is an optional dependency)."""
    try:
        from convoy.sim import backend_jax
    except ImportError as exc:
        raise ScenarioError(
            f"backends 'jax' and 'gpu' need JAX ({exc}); install it (pip install jax), or "
            "for an NVIDIA GPU convoy's gpu extra (JAX for CUDA 12)"
        ) from None
    return backend_jax


def _jax(
    table: TruckTable,
    state: TruckState,
    world: World,
    n_steps: int,
    rec_every: int,
    rec: tuple[np.ndarray, ...],
) -> int:
    """JAX, float64, on JAX's default device (``backend_jax``)."""
    return _backend_jax().jax_backend(table, state, world, n_steps, rec_every, rec)


def _gpu(
    table: TruckTable,
    state: TruckState,
    world: World,
    n_steps: int,
    rec_every: int,
    rec: tuple[np.ndarray, ...],
) -> int:
    """JAX, float32 with relative positions, on the first GPU; a clear error without one."""
    return _backend_jax().gpu_backend(table, state, world, n_steps, rec_every, rec)


# "cpu-general" forces the general kernel (to compare, or to rule the fast path out).
BACKENDS: dict[str, Backend] = {
    "cpu": _cpu_backend,
    "cpu-general": _cpu_general,
    "jax": _jax,
    "gpu": _gpu,
}


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``.

    Raises:
        ScenarioError: for an unknown name, listing the valid ones.
    """
    try:
        return BACKENDS[name]
    except KeyError:
        valid = ", ".join(sorted(BACKENDS))
        raise ScenarioError(f"unknown backend {name!r}; valid backends: {valid}") from None


def _control_rows(
    c: ControllerConfig, tr: TruckConfig
) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """Law parameter row, ACC-fallback row, actuator lag, delay and noise of a follower
    driving ``c``."""
    # SUMO's laws read the truck's own braking limits and the predecessor's (same type)
    truck_limits = {
        "min_gap_m": tr.min_gap_m,
        "decel_mps2": tr.max_decel_mps2,
        "emergency_decel_mps2": tr.emergency_decel_mps2,
        "pred_decel_mps2": tr.max_decel_mps2,
    }
    fallback = getattr(c, "fallback_time_gap_s", 1.5)
    acc_row = SumoAccParams(time_gap_s=fallback, **truck_limits).to_vector()
    delay_s = 0.0
    noise = 0.0
    if isinstance(c, CaccSumoConfig):
        row = SumoCaccParams(
            time_gap_s=c.time_gap_s,
            acc_fallback_time_gap_s=fallback,
            acc_fallback=SumoAccParams(time_gap_s=fallback, **truck_limits),
            **truck_limits,
        ).to_vector()
    elif isinstance(c, AccConfig):
        row = SumoAccParams(time_gap_s=c.time_gap_s, **truck_limits).to_vector()
        delay_s = c.sensor_delay_s
    elif isinstance(c, PathConfig):
        row = PathParams(c.spacing_m, c.c1, c.xi, c.omega_n_radps).to_vector()
    elif isinstance(c, PloegConfig):
        row = PloegParams(c.time_gap_s, c.kp_per_s2, c.kd_per_s).to_vector()
    elif isinstance(c, HumanConfig):
        row = IdmParams(c.time_gap_s, c.comfort_decel_mps2, c.delta).to_vector()
        delay_s = c.reaction_time_s
        noise = c.noise_mps2
    else:  # pragma: no cover - the discriminated union admits nothing else
        raise ScenarioError(f"unsupported controller {c!r}")
    return row, acc_row, c.actuator_lag_s, delay_s, noise


def build(sc: Scenario) -> tuple[TruckTable, TruckState, World]:
    """Convert a scenario into the engine's arrays (platoon 0 is the front-most)."""
    p = sc.platoon
    n, k = sc.n_trucks, p.trucks
    tr = sc.truck
    platoon = np.repeat(np.arange(p.count), k)
    position = np.tile(np.arange(k), p.count).astype(np.int32)
    rows = np.arange(n, dtype=np.int32)
    leader = (rows - 1).astype(np.int32)
    follower = np.where(position < k - 1, rows + 1, -1).astype(np.int32)
    head = (platoon * k).astype(np.int32)

    # initial positions: heads spaced by the platoon spacing, trucks by the in-platoon gap
    pitch = tr.length_m + p.initial.gap_m
    platoon_len = (k - 1) * pitch + tr.length_m
    head_pos = p.initial.head_pos_m - platoon * (platoon_len + p.spacing_m)
    pos0 = head_pos - position * pitch
    if pos0.min() - tr.length_m < 0:
        need = p.initial.head_pos_m - pos0.min() + tr.length_m
        raise ScenarioError(
            f"platoon.initial.head_pos_m = {p.initial.head_pos_m}: too small for "
            f"{p.count} platoon(s) of {k}; the last truck would start at "
            f"{pos0.min():.1f} m; allowed: at least {need:.1f}"
        )
    if head_pos[0] > sc.road.length_m:
        raise ScenarioError(
            f"platoon.initial.head_pos_m = {p.initial.head_pos_m}: beyond the road end "
            f"(road.length_m = {sc.road.length_m})"
        )

    # each position's controller: the platoon's, or an override (a mixed platoon)
    laws = [p.controller_at(q) for q in range(k)]
    rows_of: dict[int, tuple[np.ndarray, np.ndarray, float, float, float]] = {}
    for c in laws:  # once per distinct law (the platoon's, and each override)
        if id(c) not in rows_of:
            rows_of[id(c)] = _control_rows(c, tr)
    rows_by_pos = [rows_of[id(c)] for c in laws]
    model = np.array([MODEL_NAMES[laws[q].model] for q in position], np.int8)
    width = max(max(r[0].size, r[1].size) for r in rows_by_pos)
    ctrl = np.zeros((n, width))
    acc = np.zeros((n, rows_by_pos[0][1].size))
    for q, (row, acc_row, _, _, _) in enumerate(rows_by_pos):
        ctrl[position == q, : row.size] = row
        acc[position == q] = acc_row

    pw = tr.powertrain
    if pw.kind == "electric":
        el = ElectricPowertrain(battery_kwh=pw.battery_kwh)
        if pw.motor_power_kw is not None:
            el = ElectricPowertrain(battery_kwh=pw.battery_kwh, motor_power_kw=pw.motor_power_kw)
        pt_row = el.to_vector()
    else:
        di = DieselPowertrain()
        if pw.motor_power_kw is not None:
            di = DieselPowertrain(engine_power_kw=pw.motor_power_kw)
        pt_row = di.to_vector()
    powertrain = np.zeros((n, pt_row.size))
    powertrain[:] = pt_row

    phys = np.zeros((n, TP_SIZE))
    phys[:, TP_LENGTH_M] = tr.length_m
    phys[:, TP_MIN_GAP_M] = tr.min_gap_m
    phys[:, TP_MAX_ACCEL_MPS2] = tr.max_accel_mps2
    phys[:, TP_MAX_DECEL_MPS2] = tr.max_decel_mps2
    phys[:, TP_EMERGENCY_DECEL_MPS2] = tr.emergency_decel_mps2
    phys[:, TP_MAX_SPEED_MPS] = tr.max_speed_mps
    phys[:, TP_MASS_KG] = tr.mass_kg
    phys[:, TP_CD_A_M2] = tr.drag_coefficient * tr.frontal_area_m2
    phys[:, TP_CRR] = tr.rolling_resistance
    phys[:, TP_LIMIT_TRACTION] = 1.0 if pw.limit_traction else 0.0
    # heads are driven along the profile; the law's lag, delay and noise are the followers'
    delay_steps = 0
    for q in range(1, k):
        _, _, lag_s, delay_s, noise = rows_by_pos[q]
        at = position == q
        phys[at, TP_ACTUATOR_LAG_S] = lag_s
        phys[at, TP_SENSOR_DELAY_STEPS] = round(delay_s / sc.dt_s)
        phys[at, TP_NOISE_MPS2] = noise
        phys[at, TP_EMERGENCY_BRAKING] = 1.0 if laws[q].emergency_braking else 0.0
        delay_steps = max(delay_steps, round(delay_s / sc.dt_s))

    table = TruckTable(
        model=model,
        leader=leader,
        follower=follower,
        head=head,
        platoon_size=np.full(n, k, np.int32),
        position=position,
        phys=phys,
        ctrl=ctrl,
        acc=acc,
        powertrain=powertrain,
    )
    spec = sc.channel.spec()
    ch = spec.to_vector(sc.dt_s)
    history = int(max(ch[CH_LATENCY_STEPS], delay_steps)) + 1
    if history * n > MAX_HISTORY_CELLS:
        raise ScenarioError(
            f"channel.latency_s = {sc.channel.latency_s} with the longest sensor or reaction "
            f"delay {delay_steps * sc.dt_s:g} s: the {n} trucks' history, read that far back, "
            f"needs {history:,} steps x {n} trucks = {history * n:,} cells; allowed: at most "
            f"{MAX_HISTORY_CELLS:,} (a shorter latency or delay, or fewer trucks)"
        )
    hazards = hazard_table([h.event(k) for k, h in enumerate(sc.hazards)])
    rsus = rsu_table(
        [r.pos_m for r in sc.rsus],
        [r.radius_m for r in sc.rsus],
        [r.alert_range_m for r in sc.rsus],
    )
    signals = signal_table([g.signal(k) for k, g in enumerate(sc.signals)])
    state = TruckState.initial(
        pos0.astype(np.float64),
        np.full(n, p.initial.speed_mps),
        history,
        hazards.shape[0],
        signals.shape[0],
    )
    # The platoon is already formed and talking when the run starts: every follower holds a
    # beacon of its predecessor and its head stamped at t = 0 (else, with a latency, it would
    # start in ACC fallback until the first beacon arrives).
    follows = np.flatnonzero(table.position > 0)
    for rx, src in ((state.rx_pred, table.leader[follows]), (state.rx_head, table.head[follows])):
        rx[RX_POS_M, follows] = pos0[src]
        rx[RX_SPEED_MPS, follows] = p.initial.speed_mps
        rx[RX_STAMP_S, follows] = 0.0

    prof = sc.leader.speed_profile or [(0.0, p.initial.speed_mps)]
    points = np.array(prof, dtype=np.float64).reshape(len(prof), 2)  # (time_s, speed_mps) rows
    env = np.zeros(kernel.ENV_SIZE)
    env[kernel.ENV_DT_S] = sc.dt_s
    env[kernel.ENV_GRADE] = sc.road.grade_pct / 100.0
    env[kernel.ENV_SPEED_LIMIT_MPS] = sc.road.speed_limit_mps or math.inf
    env[kernel.ENV_AMBIENT_C] = sc.weather.ambient_c
    env[kernel.ENV_SEED] = sc.seed
    env[kernel.ENV_PROFILE_LEAD_S] = sc.dt_s  # setSpeed at t applies over [t, t + dt]
    env[kernel.ENV_HARD_BRAKE_MPS2] = HARD_BRAKE_MPS2
    env[kernel.ENV_AEB_TTC_S] = AEB_TTC_S
    env[kernel.ENV_METRICS_FROM_S] = math.inf  # no metrics window (validation sets one)
    env[kernel.ENV_ENERGY] = 1.0  # the energy accounted (validation's chunks skip it)
    world = World(
        env=env,
        channel=ch,
        outages=spec.outage_array(),
        profile_t_s=np.ascontiguousarray(points[:, 0]),
        profile_v_mps=np.ascontiguousarray(points[:, 1]),
        hazards=hazards,
        rsus=rsus,
        signals=signals,
    )
    fast = kernel_fast.eligible(
        table.model,
        table.leader,
        table.phys,
        table.ctrl,
        table.acc,
        table.powertrain,
        world.channel,
        world.outages,
        state.hist,
        unhandled_tables(world),
    )
    return table, state, replace(world, fast_cacc=fast)


def vehicle_ids(sc: Scenario) -> list[str]:
    """Ids in row order: ``p{platoon}.{index}``, platoon 0 front-most, index 0 the head."""
    return [f"p{q}.{k}" for q in range(sc.platoon.count) for k in range(sc.platoon.trucks)]


def simulate(
    sc: Scenario,
    backend: str = "cpu",
    record_every_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunks: int = 50,
) -> RunResult:
    """Run a scenario and return its trace.

    Args:
        sc: the scenario.
        backend: a name in ``BACKENDS``.
        record_every_s: recording interval; default the scenario's, else every step.
        progress: called as ``progress(steps_done, steps_total)`` between kernel calls.
        chunks: kernel calls the run is split into (for progress reporting).

    Raises:
        ScenarioError: for an unknown backend or a recording that would not fit in memory.
    """
    run = get_backend(backend)
    table, state, world = build(sc)
    return _simulate_built(sc, backend, run, table, state, world, record_every_s, progress, chunks)


def _simulate_built(
    sc: Scenario,
    backend: str,
    run: Backend,
    table: TruckTable,
    state: TruckState,
    world: World,
    record_every_s: float | None,
    progress: Callable[[int, int], None] | None,
    chunks: int,
) -> RunResult:
    """``simulate`` from the arrays ``build(sc)`` made."""
    rec, rec_every = _record_arrays(sc, table, state, record_every_s)
    total = sc.n_steps
    # chunk boundaries on multiples of the recording interval keep rows evenly spaced
    per_call = max(rec_every, (total // max(chunks, 1)) // rec_every * rec_every)
    done, row = 0, 1
    while done < total:
        steps = min(per_call, total - done)
        views = tuple(r[row:] for r in rec)
        row += run(table, state, world, steps, rec_every, views)
        done += steps
        if progress is not None:
            progress(done, total)
    trace = _trace(sc, table, rec, row, rec_every)
    return RunResult(
        scenario=sc,
        table=table,
        state=state,
        trace=trace,
        backend=backend,
        roadside=RoadsideLog.of(state),
    )


def _record_every_s(sc: Scenario, record_every_s: float | None) -> float:
    """Time between two recorded rows: ``record_every_s``, else the scenario's own, else
    every step [s]."""
    return record_every_s or sc.output.record_every_s or sc.dt_s


def _rec_every(sc: Scenario, record_every_s: float | None) -> int:
    """``_record_every_s`` in steps."""
    return max(1, round(_record_every_s(sc, record_every_s) / sc.dt_s))


def _record_arrays(
    sc: Scenario, table: TruckTable, state: TruckState, record_every_s: float | None
) -> tuple[tuple[np.ndarray, ...], int]:
    """The recording arrays of a run (row 0 holds the initial state) and its interval in
    steps.

    Raises:
        ScenarioError: for a recording that would not fit in memory.
    """
    every_s = _record_every_s(sc, record_every_s)
    rec_every = _rec_every(sc, record_every_s)
    n, total = table.n, sc.n_steps
    rows = total // rec_every + 1
    if rows * n > MAX_RECORD_CELLS:
        raise ScenarioError(
            f"output.record_every_s = {every_s}: recording {n} trucks every {every_s} s for "
            f"{sc.duration_s} s needs {rows * n:,} cells; allowed: at most "
            f"{MAX_RECORD_CELLS:,}; record less often"
        )
    rec = (
        np.empty((rows, n)),
        np.empty((rows, n)),
        np.empty((rows, n)),
        np.empty((rows, n), np.int8),
        np.empty((rows, n)),
        np.empty((rows, n), np.int32),
        # filled with -1 so that a backend without signals need not write it
        np.full((rows, n), -1, np.int8),
    )
    cur = state.cur
    rec[0][0] = state.pos_m[cur]
    rec[1][0] = state.speed_mps[cur]
    rec[2][0] = state.accel_mps2[cur]
    rec[3][0] = state.mode
    rec[4][0] = state.energy_kwh
    rec[5][0] = state.odd_flags
    rec[6][0] = state.spat_phase
    return rec, rec_every


def padded_profile(
    times_s: np.ndarray, speeds_mps: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """A non-empty speed profile lengthened to ``length`` points past its end (1 s apart, at
    its last speed): ``kernel.profile_speed`` gives the same value, to the last bit, at
    every time (between two equal speeds it adds ``w * 0.0``)."""
    k = times_s.shape[0]
    times = np.empty(length)
    speeds = np.empty(length)
    times[:k] = times_s
    times[k:] = times_s[-1] + np.arange(1, length - k + 1)
    speeds[:k] = speeds_mps
    speeds[k:] = speeds_mps[-1]
    return times, speeds


# positions in the kernel's arguments after ``n_steps, rec_every`` (the recording arrays,
# then ``_general_args``): the speed profile, and the first of the state's arrays
_KERNEL_ARGS = list(inspect.signature(kernel.run_steps_py).parameters)[2:]
_PROF_T, _PROF_V = _KERNEL_ARGS.index("prof_t"), _KERNEL_ARGS.index("prof_v")
_FIRST_STATE = _KERNEL_ARGS.index("pos")
_RECORDS = _KERNEL_ARGS.index("model")  # the recording arrays come before


#: the general kernel's inputs after its recordings (``_general_args``' order)
INPUT_NAMES: tuple[str, ...] = tuple(_KERNEL_ARGS[_RECORDS:])


@dataclass(frozen=True, slots=True)
class KernelInputs:
    """The general kernel's inputs of one scenario (``scenario_inputs``), or of m of one
    shape stacked instance first (``run_stacked`` takes those)."""

    n_steps: int
    rec_every: int
    dt_s: float
    #: the arrays by ``INPUT_NAMES``
    arrays: dict[str, np.ndarray]
    #: the fast CACC step runs this scenario instead (``World.fast_cacc``; CPU only)
    fast_cacc: bool = False


def scenario_inputs(sc: Scenario) -> KernelInputs:
    """The general kernel's inputs of ``sc``, its state at the start (``build``), recorded
    every step unless ``sc.output`` says otherwise.

    Raises:
        ScenarioError: as ``simulate``.
    """
    table, state, world = build(sc)
    arrays = dict(zip(INPUT_NAMES, _general_args(table, state, world), strict=True))
    return KernelInputs(sc.n_steps, _rec_every(sc, None), sc.dt_s, arrays, world.fast_cacc)


# the recording arrays' dtypes, in ``_record_arrays``' order
_RECORD_DTYPES = (np.float64, np.float64, np.float64, np.int8, np.float64, np.int32, np.int8)


@dataclass(frozen=True, slots=True)
class StackedRun:
    """Runs of one shape made in one call along the general kernel's instance axis
    (``run_stacked``): the kernel's arguments stacked, instance first, as the run left them
    (the recordings without their start row, which ``start`` holds for the first three)."""

    rec_every: int
    dt_s: float
    #: (3, m, n) position, speed and acceleration of every run at its start
    start: np.ndarray
    #: the kernel's arguments after ``n_steps, rec_every``, stacked, in its order
    stacked: list[np.ndarray]

    def arg(self, name: str) -> np.ndarray:
        """The stacked argument ``name`` of ``kernel.run_steps_py`` (m, ...): a table, the
        world or, after the run, the final state."""
        return self.stacked[_KERNEL_ARGS.index(name)]


def run_stacked(inputs: KernelInputs, backend: str = "cpu") -> StackedRun:
    """Run m instances of one shape in one call of the general kernel along its instance
    axis (``kernel.run_instances``, or ``kernel_cuda``'s with ``backend="cuda"``), recorded
    every ``inputs.rec_every`` steps (0: never; the metrics window, ``kernel.
    ENV_METRICS_FROM_S``, needs no recording).

    Args:
        inputs: every instance's arrays stacked (m, ...); the state arrays among them are
            advanced in place. Speed profiles of equal length (``padded_profile``).

    Raises:
        ScenarioError: for a backend other than ``cpu`` and ``cuda``.
    """
    if backend not in ("cpu", "cuda"):
        raise ScenarioError(f"run_stacked: backend = {backend!r}; allowed: cpu, cuda")
    run_group = kernel.run_instances
    if backend == "cuda":
        from convoy.sim import kernel_cuda

        run_group = kernel_cuda.run_instances
    a = inputs.arrays
    args = [a[name] for name in INPUT_NAMES]
    m, n = a["model"].shape[:2]
    cur = a["step"][:, 0] % 2
    at = np.arange(m)
    start = np.stack([a[name][at, cur] for name in ("pos", "speed", "accel")])
    # the recordings are the kernel's output, every row of them written (``rows`` below)
    n_rec = inputs.n_steps // inputs.rec_every if inputs.rec_every > 0 else 0
    # (one row at least: a device array of no elements is a corner best not met)
    recs = [np.empty((m, max(n_rec, 1), n), dt) for dt in _RECORD_DTYPES]
    rows = np.zeros(m, np.int64)
    run_group(inputs.n_steps, inputs.rec_every, *recs, *args, rows)
    recs = [r[:, :n_rec] for r in recs]
    if (rows != n_rec).any():  # pragma: no cover - the kernel records all
        raise ScenarioError(f"run_stacked: a run recorded {rows.min()} rows, not all")
    return StackedRun(inputs.rec_every, inputs.dt_s, start, [*recs, *args])


@dataclass(frozen=True, slots=True)
class RunGroup:
    """Scenarios of one shape run in one call (``run_groups``), with each member's own
    arrays beside the stacked run."""

    #: positions of the runs in the scenarios given
    members: list[int]
    scenarios: list[Scenario]
    #: each member's own arrays, in the kernel's argument order (``simulate_many`` copies
    #: the stacked results back into them)
    member_args: list[list[np.ndarray]]
    member_runs: list[tuple[TruckTable, TruckState, tuple[np.ndarray, ...], int]]
    run: StackedRun


def run_groups(
    scenarios: Sequence[Scenario], backend: str = "cpu"
) -> tuple[dict[int, RunResult], list[RunGroup]]:
    """The runs of ``simulate_many``, left stacked: the general kernel's runs of equal
    shapes (trucks, steps, step length, history, hazard and signal tables; speed profiles
    are padded) made in one call along its instance axis (``run_stacked``), and the
    scenarios for the fast CACC step (CPU only) run alone.

    Returns:
        ``(alone, groups)``: the runs made alone by position, and the groups.

    Raises:
        ScenarioError: as ``simulate``, or for a backend other than ``cpu`` and ``cuda``.
    """
    if backend not in ("cpu", "cuda"):
        raise ScenarioError(f"simulate_many: backend = {backend!r}; allowed: cpu, cuda")
    alone: dict[int, RunResult] = {}
    runs: dict[int, tuple[TruckTable, TruckState, tuple[np.ndarray, ...], int]] = {}
    args: dict[int, list[np.ndarray]] = {}
    groups: dict[tuple[int, int, float, bool, tuple[tuple[int, ...], ...]], list[int]] = {}
    for i, sc in enumerate(scenarios):
        table, state, world = build(sc)
        if world.fast_cacc and backend == "cpu":
            alone[i] = _simulate_built(sc, "cpu", _cpu_fast, table, state, world, None, None, 1)
            continue
        rec, rec_every = _record_arrays(sc, table, state, None)
        # the kernel fills rows 1.. (row 0 is the start)
        a = [*(r[1:] for r in rec), *_general_args(table, state, world)]
        shapes = tuple(x.shape for k, x in enumerate(a) if k not in (_PROF_T, _PROF_V))
        key = (sc.n_steps, rec_every, sc.dt_s, a[_PROF_T].shape[0] == 0, shapes)
        groups.setdefault(key, []).append(i)
        runs[i] = (table, state, rec, rec_every)
        args[i] = a
    out: list[RunGroup] = []
    for (n_steps, rec_every, dt_s, _, _), members in groups.items():
        longest = max(args[i][_PROF_T].shape[0] for i in members)
        if longest > 0:
            for i in members:
                args[i][_PROF_T], args[i][_PROF_V] = padded_profile(
                    args[i][_PROF_T], args[i][_PROF_V], longest
                )
        stacked = {
            name: np.stack([args[i][_RECORDS + k] for i in members])
            for k, name in enumerate(INPUT_NAMES)
        }
        out.append(
            RunGroup(
                members=members,
                scenarios=[scenarios[i] for i in members],
                member_args=[args[i] for i in members],
                member_runs=[runs[i] for i in members],
                run=run_stacked(KernelInputs(n_steps, rec_every, dt_s, stacked), backend),
            )
        )
    return alone, out


def simulate_many(scenarios: Sequence[Scenario], backend: str = "cpu") -> list[RunResult]:
    """``simulate(sc, backend="cpu")`` of every scenario, the same results to the last bit.
    The general kernel's runs of equal shapes are made in one call along its instance axis,
    parallel over instances (``run_groups``). A scenario for the fast CACC step runs alone,
    as ``simulate`` runs it.

    ``backend="cuda"`` makes each such call on a CUDA GPU instead, one thread per instance
    (``kernel_cuda.run_instances``, the general step compiled for the device), the fast CACC
    scenarios included (the general step gives them the same results); the results then
    agree with the CPU's to rounding.

    Raises:
        ScenarioError: as ``simulate``, or for a backend other than ``cpu`` and ``cuda``.
    """
    alone, groups = run_groups(scenarios, backend)
    out: dict[int, RunResult] = dict(alone)
    for g in groups:
        for j, i in enumerate(g.members):
            for k, (mine, all_) in enumerate(zip(g.member_args[j], g.run.stacked, strict=True)):
                if k < _RECORDS or k >= _FIRST_STATE:  # (the table and world are only read)
                    mine[...] = all_[j]
            table, state, rec, every = g.member_runs[j]
            sc = scenarios[i]
            out[i] = RunResult(
                scenario=sc,
                table=table,
                state=state,
                trace=_trace(sc, table, rec, rec[0].shape[0], every),
                backend=backend,
                roadside=RoadsideLog.of(state),
            )
    return [out[i] for i in range(len(scenarios))]


def _trace(
    sc: Scenario, table: TruckTable, rec: tuple[np.ndarray, ...], rows: int, rec_every: int
) -> Trace:
    pos, speed, accel, mode, energy, odd, spat = (r[:rows] for r in rec)
    lead = table.leader
    gap = np.full_like(pos, np.nan)
    has = table.position > 0
    gap[:, has] = pos[:, lead[has]] - table.phys[lead[has], TP_LENGTH_M] - pos[:, has]
    time_s = np.arange(rows) * rec_every * sc.dt_s
    return Trace(
        time_s=time_s,
        vehicle_id=vehicle_ids(sc),
        pos_m=pos,
        speed_mps=speed,
        accel_mps2=accel,
        gap_m=gap,
        mode=mode,
        energy_kwh=energy,
        odd_flags=odd,
        spat_phase=spat,
    )
