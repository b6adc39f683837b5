"""The 1-D engine's general step on a GPU (``convoy.sim.kernel_cuda``, one CUDA thread per
instance) against the same step on the CPU (``kernel.run_instances``), through
``engine.simulate_many``, on instances of the validation library's 1-D scenarios: latency
and bursty loss, dust, an RSU hazard warning, a remote takeover, a late human driver inside
an L4 platoon, and a Ploeg platoon under emergency braking.

CI has no GPU, so the first test runs the kernel in Numba's CUDA simulator in a child process
(the simulator must be switched on before Numba's CUDA target is imported). There the kernel
calls the CPU's compiled step, so every trace and every state array must be equal bit for
bit; that checks the kernel's instance indexing, double buffer, recording and the
``simulate_many`` plumbing. On a GPU (``-m gpu``) numba compiles the step for the device and
the runs must agree to rounding.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import numpy as np
import pytest
from cuda_simulator import run_simulated

from convoy.sim.engine import ScenarioError, run_stacked, simulate_many
from convoy.sim.kernel import ENV_METRICS_FROM_S
from convoy.sim.validation import LIBRARY, derive_seed, instance, sample_params, window_metrics
from convoy.vehicle.aero import HUSSEIN_RAKHA_TABLE, drag_lookup, drag_power_law

#: Library entries on the general step, each with a feature the others lack.
ENTRIES = (
    "v2v-loss-latency",
    "dust-sensor-degradation",
    "rsu-hazard-warning",
    "takeover-timeout",
    "mixed-human-late-reaction",
    "lead-emergency-brake",
)
STATE_FIELDS = (
    "pos_m",
    "speed_mps",
    "accel_mps2",
    "energy_kwh",
    "min_gap_m",
    "min_ttc_s",
    "collided_at_s",
    "hard_brakes",
    "fallback_steps",
    "emergency_steps",
    "mode",
)
TRACE_FIELDS = ("pos_m", "speed_mps", "accel_mps2", "mode", "energy_kwh")


def scenarios(per_entry: int) -> list[Any]:
    out = []
    for name in ENTRIES:
        tpl = LIBRARY[name]
        for k, row in enumerate(sample_params(tpl, per_entry, 7, False)):
            out.append(instance(tpl, row, derive_seed(7, name, k), k))
    return out


def compare(per_entry: int) -> dict[str, Any]:
    """Both backends on the same instances: the largest difference of each field, and
    what the CPU runs went through."""
    scs = scenarios(per_entry)
    cpu = simulate_many(scs, backend="cpu")
    gpu = simulate_many(scs, backend="cuda")
    np.seterr(invalid="ignore")  # inf - inf where neither run saw a leader close in

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        same_nan = np.isnan(a) & np.isnan(b)
        d = np.where(same_nan | (a == b), 0.0, np.abs(a - b))
        return float(np.nan_to_num(d, nan=np.inf).max()) if d.size else 0.0

    pairs = list(zip(cpu, gpu, strict=True))
    state = {f: max(diff(getattr(c.state, f), getattr(g.state, f)) for c, g in pairs)
             for f in STATE_FIELDS}  # fmt: skip
    trace = {f: max(diff(getattr(c.trace, f), getattr(g.trace, f)) for c, g in pairs)
             for f in TRACE_FIELDS}  # fmt: skip
    # validate's path: chunks built as arrays, nothing recorded, the metrics folded in the run
    window = 0.0
    for name in ENTRIES:
        tpl = LIBRARY[name]
        assert tpl.inputs is not None
        for _, inp in tpl.inputs(sample_params(tpl, per_entry, 7, False), 7, 0):
            metrics = []
            for backend in ("cpu", "cuda"):
                arrays = {k: x.copy() for k, x in inp.arrays.items()}
                arrays["env"][:, ENV_METRICS_FROM_S] = tpl.warmup_s
                run = run_stacked(dataclasses.replace(inp, arrays=arrays, rec_every=0), backend)
                metrics.append(window_metrics(run, tpl.warmup_s))
            window = max(window, diff(metrics[0], metrics[1]))
    return {
        "window": window,
        "instances": len(scs),
        "rows": [len(r.trace.time_s) for r in cpu] == [len(r.trace.time_s) for r in gpu],
        "backends": sorted({r.backend for r in gpu}),
        "state": state,
        "trace": trace,
        "collided": int(sum(np.isfinite(r.state.collided_at_s).any() for r in cpu)),
        "fallback_steps": int(sum(r.state.fallback_steps.sum() for r in cpu)),
        "emergency_steps": int(sum(r.state.emergency_steps.sum() for r in cpu)),
    }


@pytest.fixture(scope="module")
def simulated() -> dict[str, Any]:
    return run_simulated(__file__, "2")


def test_gpu_step_equals_the_cpu_step_in_the_cuda_simulator(simulated: dict[str, Any]) -> None:
    """The same compiled step per truck, so equal to the last bit: traces and final state."""
    r = simulated
    assert r["instances"] == 2 * len(ENTRIES) and r["rows"] and r["backends"] == ["cuda"]
    assert r["state"] == {f: 0.0 for f in STATE_FIELDS}, r
    assert r["trace"] == {f: 0.0 for f in TRACE_FIELDS}, r
    # and validate's chunks (arrays, no recording, the metrics folded as the step runs)
    assert r["window"] == 0.0, r


def test_the_instances_exercise_the_faults(simulated: dict[str, Any]) -> None:
    """The runs go through what would hide a difference: CACC falling back to ACC on lost or
    late beacons, and emergency braking."""
    r = simulated
    assert r["fallback_steps"] > 0 and r["emergency_steps"] > 0, r


def test_the_gpus_drag_power_law_agrees_with_the_cpus_table() -> None:
    """On a GPU the platoon drag is the Hussein-Rakha fit evaluated (``drag_power_law``),
    on a CPU its table interpolated (``drag_lookup`` there): within 1e-6 from 1 m, the
    table's documented error, and both exactly 1 off the fit (solo truck, no gap, beyond
    g0, not a number)."""
    gaps = np.concatenate([np.linspace(1.0, 499.0, 4001), [1.005, 33.99, 319.9, 480.1]])
    for row in range(len(HUSSEIN_RAKHA_TABLE)):
        fit = np.array([drag_power_law(row, g) for g in gaps])
        table = np.array([drag_lookup(row, g) for g in gaps])
        assert np.max(np.abs(fit - table)) < 1e-6, row
        assert np.any(fit < 0.999)  # the fit is in use for every row
    for row, gap in ((-1, 10.0), (0, 0.0), (0, -3.0), (0, 34.5), (1, float("nan"))):
        assert drag_power_law(row, gap) == drag_lookup(row, gap) == 1.0


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ScenarioError, match="allowed: cpu, cuda"):
        simulate_many(scenarios(1)[:1], backend="gpu")


@pytest.mark.gpu
def test_gpu_step_agrees_with_the_cpu_step_on_a_gpu() -> None:
    """On a GPU: 16 instances of each entry; positions within 1 mm, speeds within 1 mm/s."""
    from convoy.sim.cuda_target import has_gpu

    if not has_gpu():
        pytest.skip("no CUDA GPU: CI has none (numba.cuda.is_available() is False)")
    r = compare(16)
    assert r["rows"] and r["backends"] == ["cuda"]
    assert r["state"]["pos_m"] < 1e-3 and r["state"]["speed_mps"] < 1e-3, r


if __name__ == "__main__":  # the child process of the simulator test
    print(json.dumps(compare(int(sys.argv[1]))))
