"""The JAX backend against the Numba fast step (itself bit-identical to the general step, which
agrees with SUMO), and float32's relative positions against exact kinematics.

Float64 agrees with Numba to ~1e-11 (measured on these scenarios: position and gap 2e-12 m,
speed 2e-12 m/s, acceleration 1e-11 m/s², energy 1e-15 relative; contact times, hard brakes
and fallback steps identical). It is not bit-identical because XLA turns a division by a
scalar into a multiplication by its reciprocal and contracts products and sums into FMAs. The
only visible effect is SUMO's CACC mode at a spacing error of exactly zero, which rounding
moves between gap control, gap closing and collision avoidance (same gains on the gap, so
the speeds stay within 1e-11).

Float32 (relative positions), measured on the CPU: speeds within 3e-5 m/s and gaps within
4e-5 m of Numba while braking and recovering (6 platoons), energy within 6e-7. Where SUMO's law
switches from gap closing to gap control (gap gain 0.005 -> 0.45) a step earlier or later,
speeds differ by up to 0.1 m/s for a few steps (seen once, in a stop-and-go run: gaps 1.6 cm).
After 1,000 km a position is exact to 0.1 mm for the float32 speed the truck drove, where a
plain float32 running sum is 1.8 km off.
"""

from __future__ import annotations

from fractions import Fraction
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import collision_course, example

from convoy.sim import backend_jax as bj
from convoy.sim import engine
from convoy.sim.engine import RunResult, simulate
from convoy.sim.scenario import Scenario, ScenarioError
from convoy.vehicle.controllers import (
    MODE_COLLIDED,
    MODE_COLLISION_AVOIDANCE,
    MODE_GAP,
    MODE_GAP_CLOSING,
)
from convoy.vehicle.sumo_cfm import CACC_GAP_MODE_SPACING_ERR, CACC_MIN_GAP, CACC_TIME_GAP

# Modes the law chooses by the sign of the spacing error: rounding may swap them at zero.
_SIGN_MODES = {MODE_GAP, MODE_GAP_CLOSING, MODE_COLLISION_AVOIDANCE}


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| where a value is finite (inf and NaN must sit in the same places)."""
    assert np.array_equal(np.isfinite(a), np.isfinite(b))
    fin = np.isfinite(a)
    return float(np.abs(a[fin] - b[fin]).max()) if fin.any() else 0.0


def _compare(sc: Scenario, backend: str, tol: dict[str, float]) -> tuple[RunResult, RunResult]:
    ref = simulate(sc, backend="cpu")
    run = simulate(sc, backend=backend)
    for name in ("pos_m", "gap_m", "speed_mps", "accel_mps2"):
        diff = _max_diff(getattr(ref.trace, name), getattr(run.trace, name))
        assert diff <= tol[name], (name, diff)
    energy = np.abs(run.state.energy_kwh / ref.state.energy_kwh - 1.0).max()
    assert energy <= tol["energy_rel"], energy
    for name in ("min_gap_m", "min_ttc_s"):
        assert _max_diff(getattr(ref.state, name), getattr(run.state, name)) <= tol["gap_m"]
    for name in ("hard_brakes", "fallback_steps"):
        counts = np.abs(getattr(ref.state, name) - getattr(run.state, name))
        assert counts.max() <= tol.get("counts", 0), name
    assert _max_diff(ref.state.collided_at_s, run.state.collided_at_s) <= tol["time_s"]
    # modes: equal, except where rounding sits on a boundary of the law's spacing error
    differ = ref.trace.mode != run.trace.mode
    swapped = set(ref.trace.mode[differ].tolist()) | set(run.trace.mode[differ].tolist())
    assert swapped <= _SIGN_MODES
    ctrl = engine.build(sc)[0].ctrl
    off = _boundary_distance_m(ctrl, ref)[differ]
    band = _max_diff(ref.trace.gap_m, run.trace.gap_m) + _max_diff(
        ref.trace.speed_mps, run.trace.speed_mps
    ) * float(ctrl[:, CACC_TIME_GAP].max())
    assert off.size == 0 or off.max() <= band + 1e-12, (off.max(), band, differ.mean())
    return ref, run


def _boundary_distance_m(ctrl: np.ndarray, ref: RunResult) -> np.ndarray:
    """(steps, trucks): how far the spacing error each step's mode was chosen from (the
    row before's) lies from the nearest boundary of SUMO's gap modes, 0 and 0.2 m [m]. A run
    whose gaps and speeds differ from the reference's by less than that cannot have chosen
    another of those modes; nearer a boundary, rounding picks the side. ``ctrl``: the
    trucks' law parameter rows (``TruckTable.ctrl``)."""
    gap, speed = ref.trace.gap_m, ref.trace.speed_mps
    err = gap - ctrl[:, CACC_MIN_GAP] - ctrl[:, CACC_TIME_GAP] * speed
    err = np.vstack([np.full((1, err.shape[1]), np.inf), err[:-1]])  # decided a row earlier
    near = np.minimum(np.abs(err), np.abs(err - ctrl[:, CACC_GAP_MODE_SPACING_ERR]))
    return np.where(np.isfinite(near), near, np.inf)


F64 = {
    "pos_m": 1e-9,
    "gap_m": 1e-9,
    "speed_mps": 1e-9,
    "accel_mps2": 1e-8,
    "energy_rel": 1e-10,
    "time_s": 0.0,
}


def test_brake_and_recover_agrees_with_numba() -> None:
    """One 1+4 platoon braking 22 -> 12 -> 22 m/s: the run the SUMO agreement tests use."""
    ref, run = _compare(example("brake-and-recover"), "jax", F64)
    assert run.backend == "jax"
    assert ref.trace.accel_mps2.min() < -1.5  # it brakes, the law leaves speed control
    assert len(np.unique(ref.trace.mode[1:])) >= 3


def test_platoons_in_a_row_with_stale_beacons_agree_with_numba() -> None:
    """Six platoons in one lane (heads follow the platoon ahead through the law), a beacon
    range of 41 m that drops followers to old beacons and then to the ACC fallback."""
    sc = example(
        "brake-and-recover",
        platoon={"count": 6, "spacing_m": 40.0, "initial": {"head_pos_m": 3000}},
        channel={"rate_hz": 10, "range_m": 41.0, "stale_after_s": 0.3},
        leader={"speed_profile": [[0, 22], [20, 22], [40, 5], [70, 25]]},
        duration_s=100,
    )
    ref, _ = _compare(sc, "jax", F64)
    assert ref.state.fallback_steps.sum() > 0


def test_collisions_agree_with_numba() -> None:
    """Every truck collides (1 m/s² brakes, 0.3 m apart): same contact times and speeds,
    collided trucks brake alike."""
    ref, run = _compare(collision_course(), "jax", F64)
    assert np.isfinite(ref.state.collided_at_s).all()
    assert (run.state.mode == MODE_COLLIDED).all()
    assert _max_diff(ref.state.collision_speed_mps, run.state.collision_speed_mps) < 1e-9


def test_stop_and_go_cold_downhill_diesel_agrees_with_numba() -> None:
    """A standstill (the zero-speed clamps), a -3 % grade, -20 °C, and the diesel's fuel map
    and overrun cut-off."""
    sc = example(
        "brake-and-recover",
        leader={"speed_profile": [[0, 22], [10, 0], [40, 0], [60, 20]]},
        duration_s=90,
        road={"grade_pct": -3.0},
        weather={"ambient_c": -20},
        truck={"powertrain": {"kind": "diesel"}},
    )
    ref, _ = _compare(sc, "jax", F64)
    assert ref.trace.speed_mps[:, 0].min() == 0.0


def test_float32_relative_agrees_with_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    """Float32 with relative positions (the GPU mode), here on the CPU: six platoons braking
    and recovering stay within 1e-3 m/s and 1e-3 m of float64 (measured: 3e-5 and 4e-5)."""
    monkeypatch.setitem(engine.BACKENDS, "jax-float32", partial(bj.run_engine, precision="float32"))
    sc = example(
        "brake-and-recover",
        platoon={"count": 6, "spacing_m": 40.0, "initial": {"head_pos_m": 3000}},
    )
    tol = {
        "pos_m": 1e-3,
        "gap_m": 1e-3,
        "speed_mps": 1e-3,
        "accel_mps2": 1e-2,
        "energy_rel": 1e-5,
        "time_s": 0.0,
    }
    _compare(sc, "jax-float32", tol)


def test_float32_position_is_exact_after_1000_km() -> None:
    """A platoon cruising at 23.7 m/s for 1,000 km (421,941 steps of 0.1 s). The float32
    advance is summed exactly (origins, 12-bit product halves, compensation): every truck is
    within 0.1 mm of ``start + steps * v32 * dt``, with v32 the float32 speed it drove, and
    within 5 cm of the float64 kinematics (float32's 23.7 is 3.2e-8 too fast: 3.2 cm). A plain
    float32 running sum of the same advances ends 1.8 km short."""
    v = 23.7
    sc = example(
        "brake-and-recover",
        truck={"max_speed_mps": 30},
        leader={"speed_profile": [[0, v]]},
        platoon={"initial": {"speed_mps": v, "gap_m": 26.2, "head_pos_m": 2000}},
        road={"length_m": 2e6},
    )
    table, state, world = engine.build(sc)
    steps = round(1e6 / (v * 0.1))
    lp = bj.LaneParams(
        **{k: jnp.asarray(a) for k, a in bj.lane_params_np(table, world, "float32").items()}
    )
    lay = bj.LaneLayout(**{k: jnp.asarray(a) for k, a in bj.layout_np(table).items()})
    st = bj.LaneState(
        **{k: jnp.asarray(a) for k, a in bj.lane_state_np(table, state, "float32").items()}
    )
    targets = jnp.asarray(bj.head_targets(world, 0, 1, "float32"))  # constant: one will do
    out = bj.advance(lp, lay, st, targets, jnp.int32(steps), relative=True)
    pos = bj.absolute_pos_m(
        np.asarray(out.origin_m), np.asarray(out.pos_m), np.asarray(out.pos_err_m)
    )
    start = state.pos_m[0]
    speed = np.asarray(out.speed_mps)
    assert speed[0] == np.float32(v)  # the head drives the profile; followers hold it to 1e-5
    assert np.abs(speed - v).max() < 1e-5
    assert np.abs(pos - (start + steps * float(np.float32(v)) * 0.1)).max() < 1e-4
    assert np.abs(pos - (start + steps * v * 0.1)).max() < 0.05
    naive = np.cumsum(np.full(steps, np.float32(v) * np.float32(0.1)), dtype=np.float32)[-1]
    assert abs(float(naive) - steps * v * 0.1) > 1_000.0


def test_unrolled_lanes_take_the_same_steps() -> None:
    """``advance_lanes`` with 4 steps per loop iteration (an option for XLA on a GPU):
    three lanes of six platoons braking and recovering, 703 steps (175 iterations and 3
    left over), end in the one-step loop's state bit for bit."""
    sc = example(
        "brake-and-recover",
        platoon={"count": 6, "spacing_m": 40.0, "initial": {"head_pos_m": 3000}},
    )
    table, state, world = engine.build(sc)
    with bj.precision_scope("float32"):
        lp = bj.LaneParams(
            **{k: jnp.asarray(a) for k, a in bj.lane_params_np(table, world, "float32").items()}
        )
        lay = bj.LaneLayout(**{k: jnp.asarray(a) for k, a in bj.layout_np(table).items()})
        one = bj.lane_state_np(table, state, "float32")
        st = bj.LaneState(**{k: jnp.asarray(np.stack([a] * 3)) for k, a in one.items()})
        st = st._replace(speed_mps=st.speed_mps + jnp.asarray([[0.0], [0.3], [-0.4]], "float32"))
        targets = jnp.asarray(bj.head_targets(world, 0, 703, "float32"))

        def run(unroll: int) -> dict[str, np.ndarray]:
            out = bj.advance_lanes(
                lp, lay, st, targets, jnp.int32(703), relative=True, shared_params=True,
                unroll=unroll,
            )  # fmt: skip
            return {k: np.asarray(v) for k, v in out._asdict().items()}

        plain, unrolled = run(1), run(4)
    assert plain["min_accel_mps2"].min() < -1.0  # the heads brake within the 70 s
    for k, v in plain.items():
        np.testing.assert_array_equal(unrolled[k], v, err_msg=k)


def test_dt_parts_sum_to_dt() -> None:
    """The exact advance needs dt as float32 parts of 12 significant bits and a rest."""
    for dt in (0.1, 0.05, 0.3, 1.0 / 3.0):
        a, b, c = (Fraction(float(x)) for x in bj.dt_parts(dt))
        assert abs((a + b + c) / Fraction(dt) - 1) < Fraction(1, 2**48)
        for part in (a, b):
            assert np.float32(part).view(np.uint32) & np.uint32(0xFFF) == 0


@pytest.mark.parametrize(
    ("over", "named"),
    [
        ({"platoon": {"controller": {"model": "acc"}}}, "'acc'"),
        ({"platoon": {"controller": {"model": "cacc-sumo", "actuator_lag_s": 0.3}}}, "lag"),
        ({"channel": {"rate_hz": 10, "loss": 0.1}}, "channel.loss"),
        ({"channel": {"rate_hz": 10, "latency_s": 0.1}}, "latency"),
        ({"signals": [{"pos_m": 4000, "green_s": 30, "yellow_s": 4, "red_s": 40}]}, "signals"),
        (
            {
                "hazards": [
                    {"kind": "dust_storm", "start_m": 5e3, "end_m": 6e3, "start_s": 0, "end_s": 9}
                ]
            },
            "hazards",
        ),
    ],
)
def test_features_it_lacks_are_named(over: dict[str, Any], named: str) -> None:
    with pytest.raises(ScenarioError, match="backend 'jax'") as err:
        simulate(example("brake-and-recover", **over), backend="jax")
    assert named in str(err.value)


def _gpus() -> list[Any]:
    try:
        return list(jax.devices("gpu"))
    except RuntimeError:
        return []


def test_gpu_backend_without_a_gpu_says_so() -> None:
    if _gpus():
        pytest.skip("JAX sees a GPU here; the message is for machines without one")
    with pytest.raises(ScenarioError, match="needs a CUDA GPU"):
        simulate(example("brake-and-recover"), backend="gpu")


@pytest.mark.gpu
def test_gpu_agrees_with_numba() -> None:
    """Backend ``gpu`` (float32, relative positions, on the GPU) against Numba. The GPU's
    rounding differs from the CPU's (FMA, reciprocals), so a mode switch of SUMO's law may
    come a step earlier or later: tolerances allow the 0.1 m/s and 2 cm that costs."""
    if not _gpus():
        pytest.skip(
            f"no CUDA GPU visible to JAX (it sees {jax.devices()}); install jax[cuda12] on a "
            "machine with an NVIDIA GPU to run this"
        )
    sc = example(
        "brake-and-recover",
        platoon={"count": 6, "spacing_m": 40.0, "initial": {"head_pos_m": 3000}},
    )
    tol = {
        "pos_m": 0.02,
        "gap_m": 0.02,
        "speed_mps": 0.15,
        "accel_mps2": 1.5,
        "energy_rel": 1e-3,
        "time_s": 0.0,
        "counts": 1,  # a deceleration on the 3 m/s² hard-brake threshold
    }
    _, run = _compare(sc, "gpu", tol)
    assert run.backend == "gpu"
