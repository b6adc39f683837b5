"""Batches of instances: each equals its own run (exactly with Numba, to rounding with JAX),
and the per-instance safety figures follow from physics."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import collision_course, example

from convoy.sim import engine, kernel_fast
from convoy.sim.batch import BatchResult, fast_step_gaps, run_batch, sweep
from convoy.sim.engine import simulate
from convoy.sim.scenario import Scenario, ScenarioError

# Four instances of two platoons that differ in gap, time gap, braking limit and the lead
# truck's speed profile: a mild brake, an emergency stop, a deep brake, steady driving.
PROFILES = [
    [[0, 22], [60, 22], [65, 12], [95, 12], [105, 22]],
    [[0, 22], [30, 22], [33, 0]],
    [[0, 22], [20, 22], [25, 5], [50, 5], [60, 25]],
    [[0, 20]],
]


def _base() -> Scenario:
    return example(
        "brake-and-recover",
        duration_s=80,
        platoon={"count": 2, "spacing_m": 40.0, "initial": {"head_pos_m": 3000}},
    )


def _instances() -> list[Scenario]:
    return sweep(
        _base(),
        {
            "platoon.initial.gap_m": [25.0, 10.0, 5.0, 18.0],
            "platoon.controller.time_gap_s": [1.0, 0.6, 0.3, 0.8],
            "truck.max_decel_mps2": [4.0, 5.0, 3.0, 4.0],
            "leader.speed_profile": PROFILES,
        },
    )


def _own_runs(scenarios: list[Scenario]) -> list[engine.RunResult]:
    return [simulate(sc, backend="cpu") for sc in scenarios]


def _as_batch(runs: list[engine.RunResult]) -> dict[str, np.ndarray]:
    """The fields of BatchResult, stacked from separate runs recorded every step."""
    return {
        "pos_m": np.stack([r.state.pos_m[r.state.cur] for r in runs]),
        "speed_mps": np.stack([r.state.speed_mps[r.state.cur] for r in runs]),
        "energy_kwh": np.stack([r.state.energy_kwh for r in runs]),
        "collided_at_s": np.stack([r.state.collided_at_s for r in runs]),
        "collision_speed_mps": np.stack([r.state.collision_speed_mps for r in runs]),
        "min_gap_m": np.stack([r.state.min_gap_m for r in runs]),
        "min_ttc_s": np.stack([r.state.min_ttc_s for r in runs]),
        "min_accel_mps2": np.stack([np.minimum(r.trace.accel_mps2.min(axis=0), 0.0) for r in runs]),
        "hard_brakes": np.stack([r.state.hard_brakes for r in runs]),
        "fallback_steps": np.stack([r.state.fallback_steps for r in runs]),
    }


def test_sweep_makes_validated_instances() -> None:
    insts = _instances()
    assert [sc.platoon.initial.gap_m for sc in insts] == [25.0, 10.0, 5.0, 18.0]
    assert insts[1].truck.max_decel_mps2 == 5.0
    assert insts[1].leader.speed_profile == [(0, 22), (30, 22), (33, 0)]
    assert insts[2].name == f"{_base().name}[2]"
    # everything not swept is the base's
    assert all(sc.platoon.count == 2 and sc.duration_s == 80 for sc in insts)


def test_numba_batch_equals_separate_runs_exactly() -> None:
    """Each instance takes the fast step's own block calls in the same order as its own run:
    every figure is equal to the last bit."""
    insts = _instances()
    batch = run_batch(insts, backend="cpu")
    own = _as_batch(_own_runs(insts))
    for name, want in own.items():
        assert np.array_equal(getattr(batch, name), want, equal_nan=True), name
    # the instances differ as intended: only the emergency stop and the deep brake at a
    # 0.3 s time gap brake hard
    assert batch.max_decel_mps2[0] < 3.0
    assert batch.max_decel_mps2[1] > 3.0 and batch.max_decel_mps2[2] > 3.0
    assert not batch.collided.any()


def test_jax_batch_equals_separate_runs_to_rounding() -> None:
    """``vmap`` over instances: float64 within 1e-9 of the separate Numba runs, with the same
    counts; float32 within 1e-2 (m, m/s, m/s²), hard brakes within one (a deceleration that
    sits on the 3 m/s² threshold may cross it once more or less)."""
    insts = _instances()
    own = _as_batch(_own_runs(insts))
    b64 = run_batch(insts, backend="jax")
    b32 = run_batch(insts, backend="jax", precision="float32")
    assert (b64.precision, b32.precision) == ("float64", "float32")
    for batch, tol, counts in ((b64, 1e-9, 0), (b32, 1e-2, 1)):
        for name in ("pos_m", "speed_mps", "min_gap_m", "min_accel_mps2"):
            want, got = own[name], getattr(batch, name)
            fin = np.isfinite(want)
            assert np.array_equal(fin, np.isfinite(got)), name
            assert np.abs(got[fin] - want[fin]).max() <= tol, name
        assert np.allclose(batch.energy_kwh, own["energy_kwh"], rtol=tol, atol=0)
        assert np.abs(batch.hard_brakes - own["hard_brakes"]).max() <= counts
        assert np.array_equal(batch.fallback_steps, own["fallback_steps"])


def test_collision_metrics() -> None:
    """A batch holding the collision course and a safe platoon: the first collides (every
    truck, from the moment the head stops), the second does not and keeps its gaps."""
    crash = collision_course()
    safe = crash.model_copy(
        update={
            "truck": crash.truck.model_copy(
                update={"max_decel_mps2": 4.0, "emergency_decel_mps2": 7.5}
            ),
            "platoon": _base().platoon.model_copy(update={"count": 1}),
        }
    )
    batch = run_batch([crash, safe], backend="cpu")
    assert batch.collided.tolist() == [True, False]
    # the head stops at 1 m/s² from 22 m/s in 22 s, starting at 5 s: contact comes first
    assert 5.0 < batch.first_collision_s[0] < 27.0
    assert np.isnan(batch.first_collision_s[1])
    assert batch.worst_gap_m[0] < 0.0 < batch.worst_gap_m[1]
    # nobody brakes beyond what the truck can: 1 m/s² in the crash, 7.5 in the safe run
    assert batch.max_decel_mps2[0] <= 1.0 + 1e-9
    assert batch.max_decel_mps2[1] <= 7.5 + 1e-9
    assert batch.worst_ttc_s[1] > 0.0
    m = batch.metrics()
    assert set(m) >= {"collided", "min_gap_m", "min_ttc_s", "max_decel_mps2"}
    assert all(v.shape == (2,) for v in m.values())


def test_harder_lead_braking_closes_in_faster() -> None:
    """The lead truck brakes from 22 m/s to a stop at 1, 2 and 4 m/s² (within its 4 m/s²
    limit): it brakes as asked; the harder it brakes, the sooner each follower would reach
    the truck ahead (smaller time-to-collision) and the harder the first follower brakes. All
    end at the standstill gap (min_gap_m 2.5) without contact."""
    decels = [1.0, 2.0, 4.0]
    insts = sweep(
        _base(),
        {"leader.speed_profile": [[[0, 22], [10, 22], [10 + 22 / d, 0]] for d in decels]},
    )
    batch = run_batch(insts, backend="cpu")
    assert np.allclose(-batch.min_accel_mps2[:, 0], decels, rtol=1e-9)
    ttc = batch.min_ttc_s[:, 1:5]  # the followers of the front platoon
    assert np.all(ttc[0] > ttc[1]) and np.all(ttc[1] > ttc[2])
    decel = -batch.min_accel_mps2[:, 1]
    assert decel[0] < decel[1] < decel[2]
    assert np.allclose(batch.min_gap_m[:, 1:5], 2.5, atol=1e-3)
    assert not batch.collided.any()


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"platoon.initial.gapp_m": [1.0]}, "'gapp_m' is not in platoon.initial"),
        ({"platoon.initial.gap_m": [1.0, 2.0], "dt_s": [0.1]}, "lengths differ"),
        ({"platoon.initial.gap_m": [5.0, -1.0]}, "sweep instance 1"),
    ],
)
def test_sweep_rejects_bad_values(values: dict[str, list[object]], match: str) -> None:
    with pytest.raises(ScenarioError, match=match):
        sweep(_base(), values)


def test_run_batch_rejects_mismatched_or_unsupported_instances() -> None:
    base = _base()
    other = base.model_copy(update={"platoon": base.platoon.model_copy(update={"count": 3})})
    with pytest.raises(ScenarioError, match=r"instance 1 .* platoon.count = 3"):
        run_batch([base, other])
    lossy = example("brake-and-recover", channel={"rate_hz": 10, "loss": 0.1})
    with pytest.raises(ScenarioError, match=r"instance 0 .*random beacon loss"):
        run_batch([lossy])
    with pytest.raises(ScenarioError, match="allowed: cpu, jax, gpu"):
        run_batch([base], backend="tpu")
    with pytest.raises(ScenarioError, match="precision"):
        run_batch([base], backend="cpu", precision="float32")
    with pytest.raises(ScenarioError, match="no instances"):
        run_batch([])


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"channel": {"rate_hz": 10, "latency_s": 0.1}},
        {"channel": {"rate_hz": 5}},
        {"channel": {"rate_hz": 10, "burst": {"loss_bad": 1.0}}},
        {"channel": {"rate_hz": 10, "outages": [[10, 20]]}},
        {"platoon": {"controller": {"model": "cacc-ploeg"}}},
        {"platoon": {"controller": {"model": "acc", "sensor_delay_s": 0.2}}},
        {"platoon": {"controller": {"model": "cacc-sumo", "emergency_braking": True}}},
        {"truck": {"powertrain": {"limit_traction": True}}},
    ],
)
def test_gaps_are_named_exactly_when_the_fast_step_is_ineligible(over: dict[str, object]) -> None:
    """``fast_step_gaps`` is ``kernel_fast.eligible`` with reasons."""
    table, state, world = engine.build(example("brake-and-recover", **over))
    gaps = fast_step_gaps(table, state, world)
    assert (not gaps) == world.fast_cacc
    assert (not over) == (not gaps)
    assert world.fast_cacc == kernel_fast.eligible(
        table.model,
        table.leader,
        table.phys,
        table.ctrl,
        table.acc,
        table.powertrain,
        world.channel,
        world.outages,
        state.hist,
        engine.unhandled_tables(world),
    )


def test_result_is_a_frozen_record() -> None:
    batch = run_batch([_base()], backend="cpu")
    assert isinstance(batch, BatchResult)
    with pytest.raises(AttributeError):
        batch.backend = "jax"  # type: ignore[misc]
