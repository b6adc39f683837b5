"""Many independent instances of one experiment, run as one array computation.

A safety study runs the same platoon many times with one thing changed: the lead truck's
braking, the initial gap, the time gap. ``run_batch`` takes those instances (``sweep`` makes
them from a base scenario and per-instance values) and runs them together, with one more
array axis rather than a Python loop over simulations:

* ``backend="cpu"``: Numba, one compiled loop over instances in parallel, each advanced by
  the fast CACC step's own block function (``kernel_fast._cacc_range``), so every instance
  is, to the last bit, what ``simulate(instance, backend="cpu")`` computes;
* ``backend="jax"`` / ``"gpu"``: ``backend_jax.advance_lanes``, the JAX step under
  ``jax.vmap`` over instances (float64 by default for ``jax``, float32 for ``gpu``).

Instances share the truck count, the platoon size, the step length and the duration; any
other field may differ (truck limits, controller gains, speed profile, initial state, grade,
weather, channel range). Each must be in the fast step's regime: a uniform SUMO-CACC fleet in
one lane on an ideal channel (``fast_step_gaps`` names what is missing otherwise).

The result is per instance: the first contact, the smallest gap and time-to-collision, the
hardest braking, hard brakes, fallback steps and energy (``BatchResult``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numba import njit, prange

from convoy.sim.engine import World, build, padded_profile, unhandled_tables
from convoy.sim.jit import NO_REFCOUNTS
from convoy.sim.kernel import ENV_DT_S, ENV_PROFILE_LEAD_S, profile_speed
from convoy.sim.kernel_fast import _cacc_range, block_count, receive_last_step
from convoy.sim.scenario import Scenario, ScenarioError, parse_scenario
from convoy.sim.state import (
    TP_ACTUATOR_LAG_S,
    TP_EMERGENCY_BRAKING,
    TP_LIMIT_TRACTION,
    TP_NOISE_MPS2,
    TP_SENSOR_DELAY_STEPS,
    TruckState,
    TruckTable,
)
from convoy.vehicle.aero import drag_row
from convoy.vehicle.channel import (
    CH_LATENCY_STEPS,
    CH_LOSS_GOOD,
    CH_P_GOOD_TO_BAD,
    CH_PERIOD_STEPS,
)
from convoy.vehicle.controllers import MODEL_CACC_SUMO, MODEL_NAMES
from convoy.vehicle.energy import KIND_DIESEL, KIND_ELECTRIC, PT_KIND

BATCH_BACKENDS = ("cpu", "jax", "gpu")

# Features of a scenario that the fast CACC step (Numba's kernel_fast and the JAX step)
# does not have: (phys column, what it is called in a scenario file).
_PHYS_FEATURES = (
    (TP_ACTUATOR_LAG_S, "actuator lag (platoon.controller.actuator_lag_s)"),
    (TP_SENSOR_DELAY_STEPS, "a sensor or reaction delay"),
    (TP_LIMIT_TRACTION, "traction limits (truck.powertrain.limit_traction)"),
    (TP_NOISE_MPS2, "driver noise (platoon.controller.noise_mps2)"),
    (TP_EMERGENCY_BRAKING, "emergency braking (platoon.controller.emergency_braking)"),
)


def fast_step_gaps(table: TruckTable, state: TruckState, world: World) -> list[str]:
    """What a built scenario uses that the fast CACC step does not have; empty when the
    step runs it (then ``kernel_fast.eligible`` holds too).

    Args:
        table, state, world: ``engine.build``'s arrays.

    Returns:
        One phrase per missing feature, naming the scenario field where there is one.
    """
    gaps: list[str] = []
    names = {code: name for name, code in MODEL_NAMES.items()}
    others = sorted(set(np.unique(table.model).tolist()) - {MODEL_CACC_SUMO})
    if others or table.n == 0:
        shown = ", ".join(repr(names.get(m, m)) for m in others) or "none"
        gaps.append(f"controller model {shown} (only 'cacc-sumo')")
    if not np.array_equal(table.leader, np.arange(table.n) - 1):
        gaps.append("trucks that are not one lane in row order")
    hazards, signals = unhandled_tables(world)
    if hazards.shape[0] > 0:
        gaps.append("hazards")
    if signals.shape[0] > 0:
        gaps.append("traffic signals")
    if world.outages.shape[0] > 0:
        gaps.append("V2V outages (channel.outages)")
    ch = world.channel
    if ch[CH_LATENCY_STEPS] != 0:
        gaps.append("beacon latency (channel.latency_s)")
    if ch[CH_PERIOD_STEPS] != 1:
        gaps.append("beacons less often than every step (channel.rate_hz below 1/dt_s)")
    if ch[CH_LOSS_GOOD] > 0.0:
        gaps.append("random beacon loss (channel.loss)")
    if ch[CH_P_GOOD_TO_BAD] > 0.0:
        gaps.append("bursty beacon loss (channel.burst)")
    for col, what in _PHYS_FEATURES:
        if np.any(table.phys[:, col] != 0.0):
            gaps.append(what)
    if state.hist.shape[0] != 1 and not any("delay" in g or "latency" in g for g in gaps):
        gaps.append("delayed readers (a history of more than one step)")
    if not np.all(np.isin(table.powertrain[:, PT_KIND], (KIND_ELECTRIC, KIND_DIESEL))):
        gaps.append("an unknown powertrain kind")
    tables = (table.phys, table.ctrl, table.acc, table.powertrain)
    if table.n and not all(bool(np.all(a == a[0])) for a in tables):
        gaps.append("trucks with different parameters")
    return gaps


# ---------------------------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------------------------
def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node: Any = data
    for depth, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
            where = ".".join(keys[:depth]) or "the scenario"
            raise ScenarioError(
                f"sweep: {path!r} is not a scenario field ({key!r} is not in {where}; "
                f"allowed there: {known})"
            )
        if depth == len(keys) - 1:
            node[key] = value
        else:
            node = node[key]


def sweep(base: Scenario, values: Mapping[str, Sequence[Any]]) -> list[Scenario]:
    """Instances of ``base`` with fields replaced, one per index of ``values``.

    Args:
        base: the scenario every instance starts from.
        values: dotted field path -> one value per instance (all of one length), e.g.
            ``{"platoon.initial.gap_m": [5, 10, 20], "truck.max_decel_mps2": [3, 4, 5]}``;
            paths are taken together (zip), not as a grid.

    Returns:
        The instances, each validated like a scenario file; instance i is named
        ``{base.name}[i]``.

    Raises:
        ScenarioError: for an unknown path, values of different lengths, or an instance that
            is not a valid scenario (naming the instance).
    """
    if not values:
        return [base]
    lengths = {path: len(vals) for path, vals in values.items()}
    if len(set(lengths.values())) != 1:
        raise ScenarioError(
            f"sweep: every path needs one value per instance, but the lengths differ: {lengths}"
        )
    count = next(iter(lengths.values()))
    data = base.model_dump(mode="python")
    out = []
    for i in range(count):
        inst = copy.deepcopy(data)
        inst["name"] = f"{base.name}[{i}]"
        for path, vals in values.items():
            _set_path(inst, path, vals[i])
        out.append(parse_scenario(inst, f"sweep instance {i}"))
    return out


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BatchResult:
    """Outcomes of B instances of n trucks (``run_batch``); per-truck fields are (B, n).

    Attributes:
        scenarios: the B instances, in order (empty from ``run_inputs``).
        backend: the backend that ran them; precision: its float type.
        pos_m, speed_mps: final front-bumper position [m] and speed [m/s].
        energy_kwh: energy drawn [kWh].
        collided_at_s: time of the truck's first contact [s], NaN if none.
        collision_speed_mps: closing speed at that contact [m/s].
        min_gap_m: smallest bumper gap to the truck ahead [m] (inf for the first truck).
        min_ttc_s: smallest time-to-collision [s] (inf if never closing in).
        min_accel_mps2: most negative acceleration of any step [m/s²], at most 0.
        hard_brakes: int32 steps that began a deceleration beyond 3 m/s².
        fallback_steps: int32 steps in ACC fallback.
    """

    scenarios: list[Scenario]
    backend: str
    precision: str
    pos_m: np.ndarray
    speed_mps: np.ndarray
    energy_kwh: np.ndarray
    collided_at_s: np.ndarray
    collision_speed_mps: np.ndarray
    min_gap_m: np.ndarray
    min_ttc_s: np.ndarray
    min_accel_mps2: np.ndarray
    hard_brakes: np.ndarray
    fallback_steps: np.ndarray

    @property
    def collided(self) -> np.ndarray:
        """(B,) bool: some truck of the instance touched the truck ahead."""
        return np.isfinite(self.collided_at_s).any(axis=1)

    @property
    def first_collision_s(self) -> np.ndarray:
        """(B,) time of the instance's first contact [s], NaN if none."""
        first = np.where(np.isnan(self.collided_at_s), np.inf, self.collided_at_s).min(axis=1)
        return np.where(np.isfinite(first), first, np.nan)

    @property
    def worst_gap_m(self) -> np.ndarray:
        """(B,) smallest bumper gap any truck of the instance had [m]."""
        return self.min_gap_m.min(axis=1)

    @property
    def worst_ttc_s(self) -> np.ndarray:
        """(B,) smallest time-to-collision in the instance [s] (inf: nobody closed in)."""
        return self.min_ttc_s.min(axis=1)

    @property
    def max_decel_mps2(self) -> np.ndarray:
        """(B,) hardest deceleration any truck of the instance made [m/s²], >= 0."""
        return -self.min_accel_mps2.min(axis=1)

    def metrics(self) -> dict[str, np.ndarray]:
        """The per-instance figures, each (B,)."""
        return {
            "collided": self.collided,
            "first_collision_s": self.first_collision_s,
            "min_gap_m": self.worst_gap_m,
            "min_ttc_s": self.worst_ttc_s,
            "max_decel_mps2": self.max_decel_mps2,
            "hard_brakes": self.hard_brakes.sum(axis=1),
            "fallback_steps": self.fallback_steps.sum(axis=1),
            "energy_kwh": self.energy_kwh.sum(axis=1),
        }


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Built:
    table: TruckTable
    state: TruckState
    world: World


def _check_alike(scenarios: Sequence[Scenario]) -> None:
    if not scenarios:
        raise ScenarioError("run_batch: no instances given; allowed: one or more scenarios")
    first = scenarios[0]
    fields = (
        ("platoon.trucks", lambda s: s.platoon.trucks),
        ("platoon.count", lambda s: s.platoon.count),
        ("dt_s", lambda s: s.dt_s),
        ("duration_s", lambda s: s.n_steps * s.dt_s),
    )
    for i, sc in enumerate(scenarios):
        for name, get in fields:
            if get(sc) != get(first):
                raise ScenarioError(
                    f"run_batch: instance {i} ({sc.name}) has {name} = {get(sc)}, instance 0 "
                    f"has {get(first)}; allowed: the same in every instance"
                )


def _build_all(scenarios: Sequence[Scenario]) -> list[_Built]:
    out = []
    for i, sc in enumerate(scenarios):
        table, state, world = build(sc)
        # the reasons are needed only for a refusal (build has judged eligibility already)
        gaps = [] if world.fast_cacc else fast_step_gaps(table, state, world)
        if gaps:
            raise ScenarioError(
                f"run_batch: instance {i} ({sc.name}) is outside the batched step's regime (a "
                f"uniform SUMO-CACC fleet in one lane on an ideal channel): it has "
                f"{'; '.join(gaps)}"
            )
        out.append(_Built(table, state, world))
    return out


# Without Numba's reference counts (``_nrt=False``): each instance's rows are views, and
# with counts on, each view and each array argument of the block calls cost an atomic add and
# subtract per instance and step, a large share of the step of a small fleet. Nothing here
# allocates; the exceptions' scratch is passed in.
@njit(cache=True, parallel=True, **NO_REFCOUNTS)
def _run_instances(
    n_steps: int,
    step0: int,
    follower: np.ndarray,
    follows: np.ndarray,
    drag_rows: np.ndarray,
    phys0: np.ndarray,
    ctrl0: np.ndarray,
    pt0: np.ndarray,
    ch: np.ndarray,
    env: np.ndarray,
    prof_t: np.ndarray,
    prof_v: np.ndarray,
    prof_len: np.ndarray,
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
    min_accel: np.ndarray,
    exceptions: np.ndarray,
) -> None:
    """``kernel_fast.run_steps_cacc`` for B instances, parallel over instances: instance b's
    arrays are row b of each argument (its parameters, profile, state). Each instance takes
    the same block calls in the same order as a run of its own, so its results are that
    run's. ``mode``, ``ctrl_mode`` and ``hard_brakes`` are int64 working copies, as there."""
    n_inst = pos.shape[0]
    n = pos.shape[2]
    n_chunks = block_count(n, 1)
    chunk = (n + n_chunks - 1) // n_chunks
    for b in prange(n_inst):
        dt = env[b, ENV_DT_S]
        times = prof_t[b, : prof_len[b]]
        speeds = prof_v[b, : prof_len[b]]
        for s in range(step0, step0 + n_steps):
            target = profile_speed(s * dt + env[b, ENV_PROFILE_LEAD_S], times, speeds)
            cur = s & 1
            nxt = 1 - cur
            for c in range(n_chunks):
                _cacc_range(
                    c * chunk, min(n, (c + 1) * chunk), s, target, follower, follows,
                    drag_rows, phys0[b], ctrl0[b], pt0[b], ch[b], env[b], pos[b, cur],
                    speed[b, cur], accel[b, cur], u[b, cur], pos[b, nxt], speed[b, nxt],
                    accel[b, nxt], u[b, nxt], mode[b], ctrl_mode[b], energy[b], rx_pred[b],
                    collided_at[b], collision_speed[b], min_gap[b], min_ttc[b], hard_brakes[b],
                    fallback_steps[b], exceptions[b],
                )  # fmt: skip
            nxt = (s + 1) & 1
            for i in range(n):
                a = accel[b, nxt, i]
                if a < min_accel[b, i]:
                    min_accel[b, i] = a
        if n_steps > 0:
            receive_last_step(
                step0 + n_steps - 1, follows, phys0[b], ch[b], env[b], pos[b], speed[b],
                accel[b], u[b], rx_pred[b],
            )  # fmt: skip


@dataclass(frozen=True, slots=True)
class BatchInputs:
    """The arrays of B instances as the batched step takes them, instance b in row b.

    ``stack_instances`` builds them from scenarios; a caller that knows how its instances
    differ may build them as arrays directly (``validation``'s batched template does, to the
    same bits), with no scenario object per instance. The state arrays are the engine's
    (``TruckState``): double-buffered ones (B, 2, n), the others (B, n).

    Attributes:
        n_steps, step0: steps to run, and the step the state stands at.
        table: the truck table every instance shares the layout of (leaders, followers,
            platoon positions); its parameter rows are instance 0's.
        phys0, ctrl0, pt0: (B, ...) the trucks' parameter rows (uniform within an instance).
        ch, env: (B, ...) the channel and world vectors.
        prof_t, prof_v, prof_len: (B, p) the heads' speed profiles padded past their end
            (``engine.padded_profile``), and their (B,) lengths before the padding.
    """

    n_steps: int
    step0: int
    table: TruckTable
    phys0: np.ndarray
    ctrl0: np.ndarray
    pt0: np.ndarray
    ch: np.ndarray
    env: np.ndarray
    prof_t: np.ndarray
    prof_v: np.ndarray
    prof_len: np.ndarray
    pos: np.ndarray
    speed: np.ndarray
    accel: np.ndarray
    u: np.ndarray
    mode: np.ndarray
    ctrl_mode: np.ndarray
    energy: np.ndarray
    rx_pred: np.ndarray
    collided_at: np.ndarray
    collision_speed: np.ndarray
    min_gap: np.ndarray
    min_ttc: np.ndarray
    hard_brakes: np.ndarray
    fallback: np.ndarray

    @property
    def count(self) -> int:
        """B, the number of instances."""
        return int(self.pos.shape[0])


#: The fields of ``BatchInputs`` the batched step writes.
_STATE_FIELDS = (
    "pos", "speed", "accel", "u", "mode", "ctrl_mode", "energy", "rx_pred", "collided_at",
    "collision_speed", "min_gap", "min_ttc", "hard_brakes", "fallback",
)  # fmt: skip


def _stack(built: list[_Built], get: Any, dtype: Any = None) -> np.ndarray:
    return np.ascontiguousarray(np.stack([get(x) for x in built]), dtype=dtype)


def _padded_profiles(built: list[_Built]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, p) profile times and speeds padded past their end with the last speed (which
    leaves every value of ``profile_speed`` as it was), and their (B,) lengths."""
    lengths = np.array([x.world.profile_t_s.size for x in built], np.int64)
    p = int(lengths.max())
    padded = [padded_profile(x.world.profile_t_s, x.world.profile_v_mps, p) for x in built]
    return np.stack([t for t, _ in padded]), np.stack([v for _, v in padded]), lengths


def stack_instances(scenarios: Sequence[Scenario]) -> BatchInputs:
    """The batched step's arrays of ``scenarios``, each built as a run of its own.

    Raises:
        ScenarioError: for no instances, instances that differ where they must agree, or an
            instance outside the fast step's regime.
    """
    _check_alike(scenarios)
    built = _build_all(scenarios)
    prof_t, prof_v, prof_len = _padded_profiles(built)
    return BatchInputs(
        n_steps=scenarios[0].n_steps,
        step0=int(built[0].state.step[0]),
        table=built[0].table,
        phys0=_stack(built, lambda x: x.table.phys[0]),
        ctrl0=_stack(built, lambda x: x.table.ctrl[0]),
        pt0=_stack(built, lambda x: x.table.powertrain[0]),
        ch=_stack(built, lambda x: x.world.channel),
        env=_stack(built, lambda x: x.world.env),
        prof_t=prof_t,
        prof_v=prof_v,
        prof_len=prof_len,
        pos=_stack(built, lambda x: x.state.pos_m),
        speed=_stack(built, lambda x: x.state.speed_mps),
        accel=_stack(built, lambda x: x.state.accel_mps2),
        u=_stack(built, lambda x: x.state.u_mps2),
        mode=_stack(built, lambda x: x.state.mode, np.int64),
        ctrl_mode=_stack(built, lambda x: x.state.ctrl_mode, np.int64),
        energy=_stack(built, lambda x: x.state.energy_kwh),
        rx_pred=_stack(built, lambda x: x.state.rx_pred),
        collided_at=_stack(built, lambda x: x.state.collided_at_s),
        collision_speed=_stack(built, lambda x: x.state.collision_speed_mps),
        min_gap=_stack(built, lambda x: x.state.min_gap_m),
        min_ttc=_stack(built, lambda x: x.state.min_ttc_s),
        hard_brakes=_stack(built, lambda x: x.state.hard_brakes, np.int64),
        fallback=_stack(built, lambda x: x.state.fallback_steps),
    )


def _run_cpu(x: BatchInputs) -> BatchResult:
    t0 = x.table
    follows = (t0.position != 0).astype(np.int64)
    drag_rows = np.array(
        [drag_row(int(s), int(p)) for s, p in zip(t0.platoon_size, t0.position, strict=True)],
        np.int64,
    )
    # the step writes the state in place: it runs on a copy, so the inputs can run again
    x = replace(x, **{name: getattr(x, name).copy() for name in _STATE_FIELDS})
    min_accel = np.minimum(x.accel[:, 0], 0.0)
    _run_instances(
        x.n_steps, x.step0, t0.follower, follows, drag_rows, x.phys0, x.ctrl0, x.pt0, x.ch,
        x.env, x.prof_t, x.prof_v, x.prof_len, x.pos, x.speed, x.accel, x.u, x.mode,
        x.ctrl_mode, x.energy, x.rx_pred, x.collided_at, x.collision_speed, x.min_gap,
        x.min_ttc, x.hard_brakes, x.fallback, min_accel,
        np.empty((x.count, x.pos.shape[2]), np.int64),  # (instances, trucks)
    )  # fmt: skip
    cur = (x.step0 + x.n_steps) % 2
    return BatchResult(
        scenarios=[],
        backend="cpu",
        precision="float64",
        pos_m=x.pos[:, cur].copy(),
        speed_mps=x.speed[:, cur].copy(),
        energy_kwh=x.energy,
        collided_at_s=x.collided_at,
        collision_speed_mps=x.collision_speed,
        min_gap_m=x.min_gap,
        min_ttc_s=x.min_ttc,
        min_accel_mps2=min_accel,
        hard_brakes=x.hard_brakes.astype(np.int32),
        fallback_steps=x.fallback,
    )


def _run_jax(x: BatchInputs, backend: str, precision: str) -> BatchResult:
    import jax
    import jax.numpy as jnp

    from convoy.sim import backend_jax as bj

    prec: bj.Precision = "float32" if precision == "float32" else "float64"
    device = bj.gpu_device() if backend == "gpu" else None
    params = bj.lane_params_rows(x.phys0, x.env, x.ch, x.ctrl0, x.pt0, prec)
    cur = x.step0 % 2
    states = bj.lane_state_rows(
        bj.platoon_size(x.table), cur, x.pos, x.speed, x.accel, x.mode, x.ctrl_mode, x.energy,
        x.rx_pred, x.collided_at, x.collision_speed, x.min_gap, x.min_ttc, x.hard_brakes,
        x.fallback, prec,
    )  # fmt: skip
    states["step"] = np.full(x.count, x.step0, np.int32)
    targets = bj.head_target_rows(x.env, x.prof_t, x.prof_v, x.prof_len, x.step0, x.n_steps, prec)
    with bj.precision_scope(prec):

        def put(a: np.ndarray) -> Any:
            return jax.device_put(a, device)

        lp = bj.LaneParams(**{k: put(v) for k, v in params.items()})
        lay = bj.LaneLayout(**{k: put(v) for k, v in bj.layout_np(x.table).items()})
        st = bj.LaneState(**{k: put(v) for k, v in states.items()})
        new = bj.advance_lanes(
            lp, lay, st, put(targets), jnp.int32(x.n_steps), relative=prec == "float32"
        )
        out = {k: np.asarray(v) for k, v in new._asdict().items()}
    f64 = np.float64
    return BatchResult(
        scenarios=[],
        backend=backend,
        precision=prec,
        pos_m=bj.absolute_pos_m(out["origin_m"], out["pos_m"], out["pos_err_m"]),
        speed_mps=out["speed_mps"].astype(f64),
        energy_kwh=out["energy_kwh"].astype(f64) + out["energy_err_kwh"],
        collided_at_s=out["collided_at_s"].astype(f64),
        collision_speed_mps=out["collision_speed_mps"].astype(f64),
        min_gap_m=out["min_gap_m"].astype(f64),
        min_ttc_s=out["min_ttc_s"].astype(f64),
        min_accel_mps2=out["min_accel_mps2"].astype(f64),
        hard_brakes=out["hard_brakes"],
        fallback_steps=out["fallback_steps"],
    )


def run_inputs(
    inputs: BatchInputs, backend: str = "cpu", precision: str | None = None
) -> BatchResult:
    """Run the instances of ``inputs`` together (``run_batch`` without scenario objects; the
    result's ``scenarios`` is empty). The inputs are left as they were.

    Raises:
        ScenarioError: for an unknown backend or precision, or ``gpu`` without a GPU.
    """
    prec = _precision(backend, precision)
    if backend == "cpu":
        return _run_cpu(inputs)
    return _run_jax(inputs, backend, prec)


def _precision(backend: str, precision: str | None) -> str:
    """The float type ``backend`` runs at for ``precision`` (None: its default)."""
    if backend not in BATCH_BACKENDS:
        raise ScenarioError(
            f"run_batch: backend = {backend!r}; allowed: {', '.join(BATCH_BACKENDS)}"
        )
    prec = precision or ("float32" if backend == "gpu" else "float64")
    allowed = ("float64",) if backend == "cpu" else ("float64", "float32")
    if prec not in allowed:
        raise ScenarioError(
            f"run_batch: precision = {precision!r} with backend {backend!r}; allowed: "
            f"{', '.join(allowed)}"
        )
    return prec


def run_batch(
    scenarios: Sequence[Scenario], backend: str = "cpu", precision: str | None = None
) -> BatchResult:
    """Run B instances together and return their outcomes.

    Args:
        scenarios: the instances (``sweep`` makes them from a base); same truck count,
            platoon size, step length and duration.
        backend: ``"cpu"`` (Numba, each instance exactly as its own run), ``"jax"`` (JAX
            on its default device) or ``"gpu"`` (JAX on the first GPU).
        precision: ``"float64"`` or ``"float32"``; default float64 for ``cpu`` and ``jax``,
            float32 for ``gpu``. ``cpu`` runs float64 only.

    Raises:
        ScenarioError: for an unknown backend or precision, instances that differ where they
            must agree, an instance outside the fast step's regime, or ``gpu`` without a GPU.
    """
    prec = _precision(backend, precision)
    scenarios = list(scenarios)
    res = run_inputs(stack_instances(scenarios), backend, prec)
    return replace(res, scenarios=scenarios)
