"""Time variants of a compiled step against each other, interleaved in one process.

A variant is the step's own source with text replaced (a JSON file: ``{"name": [[old, new],
...], ...}``; ``[]`` is the step as it is). Every variant runs the same number of steps from
the same state, round after round, so that a machine whose speed drifts over minutes (the
2-vCPU VMs of docs/benchmarks.md) slows all of them alike; the minimum and median of each
are printed with a hash of the end state (equal hashes: the same results to the last bit).

    .venv/bin/python scripts/step_variants.py network variants.json --threads 1
    .venv/bin/python scripts/step_variants.py general variants.json --scenario v2v-loss-latency

``network``: the bench ring of ``convoy bench network`` (2,000 trucks, ``--lanes``) run to
t1 = 300 s, then ``run_net_steps_py`` (and the control law: ``next_speed``,
``idm_next_speed`` and ``_accel_cap_mps2``, whose sources are replaced too)
for 300 steps; ns per vehicle-step. ``general``: 256 copies of instance 0 of a 1-D library
entry, ``run_instances`` with ``_truck_range`` replaced, 300 steps; ns per truck-step of wall
time (all cores). A variant named ``np_...`` compiles with NumPy's error model. Replacements
may call ``_zero_energy(...)`` (any arguments, returns 0.0) to knock a call out.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import njit

from convoy.sim.jit import NO_REFCOUNTS


@njit
def _zero_energy(*args: Any) -> float:
    return 0.0


def _namespace(src: str, repl: list[list[str]], module: Any, name: str) -> dict[str, Any]:
    """``module``'s globals with ``src``, changed by ``repl``, executed in them."""
    for old, new in repl:
        if old not in src:
            sys.exit(f"step_variants: {old!r} is not in the step's source")
        src = src.replace(old, new)
    ns = dict(vars(module))
    ns["_zero_energy"] = _zero_energy
    exec(compile(src, f"variant {name}", "exec"), ns)
    return ns


def _options(name: str) -> dict[str, Any]:
    opts = dict(NO_REFCOUNTS)
    if name.startswith("np_"):
        opts["error_model"] = "numpy"
    return opts


Case = tuple[Callable[[str, list[list[str]]], Any], list[Any], list[int], int]


def network_case(threads: int, lanes: int, road_order: bool = False) -> Case:
    """The network step's compile function, its arguments at t1, the positions of the
    arguments to hash, and the vehicle-steps of one call; with ``road_order``, the vehicles
    stored in road order, as ``NetSim`` stores them for the threaded step."""
    import convoy.sim.bench_network as bn
    import convoy.sim.net_kernel as nk

    saved: dict[str, Any] = {}
    variant = nk.step_variant

    def record(*a: Any) -> Any:
        f = variant(*a)

        def run(*args: Any) -> Any:
            saved["args"] = args
            return f(*args)

        return run

    nk.step_variant = record  # type: ignore[assignment]
    ring = bn.RingSpec(nodes=bn.ring_nodes_for(2000), lanes=lanes)
    with tempfile.TemporaryDirectory() as tmp:
        case = bn.prepare_case(ring, bn.DemandSpec(trucks=2000), Path(tmp))
    sim = bn.convoy_sim(case.network, case.trips)
    bn._run(sim, case.t1_s)
    if road_order:
        perm = sim._road_order()
        if perm is None:
            sys.exit("step_variants: --road-order needs --threads 2")
        sim._renumber(perm)  # (left so: the state is only timed from here)
    bn._run(sim, case.t1_s + 0.1)  # one more call, whose arguments are kept
    names = list(inspect.signature(nk.run_net_steps_py).parameters)
    args = dict(zip(names, saved["args"], strict=True))
    args["record_every"] = 10**9
    args["n_steps"] = 300
    on = int((args["status"] == nk.ST_DRIVING).sum())
    src = "\n\n".join(
        [
            *(
                inspect.getsource(f).replace("cache=True, ", "")
                for f in (nk._accel_cap_mps2, nk.idm_next_speed, nk.next_speed)
            ),
            inspect.getsource(nk.run_net_steps_py),
        ]
    )

    def build(name: str, repl: list[list[str]]) -> Any:
        ns = _namespace(src, repl, nk, name)
        return njit(parallel=threads > 1, **_options(name))(ns["run_net_steps_py"])

    hashed = [names.index(k) for k in ("pos_m", "speed_mps", "energy_kwh", "mode", "min_ttc_s")]
    return build, [args[k] for k in names], hashed, 300 * on


def general_case(scenario: str) -> Case:
    """The same for the 1-D general step on 256 copies of a library instance (every state
    array hashed; truck-steps of one call)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_general_bench import stacked_copies

    from convoy.sim import kernel

    copies = 256
    arrays: list[np.ndarray] = stacked_copies(scenario, copies)
    args: list[Any] = [300, 0, *arrays]
    src = (
        inspect.getsource(kernel._truck_range).replace("@njit(cache=True, **NO_REFCOUNTS)\n", "")
        + "\n\n"
        + inspect.getsource(kernel.run_steps_py)
        + "\n\n"
        + inspect.getsource(kernel.run_instances).replace(
            "@njit(cache=True, parallel=True, **NO_REFCOUNTS)\n", ""
        )
    )

    def build(name: str, repl: list[list[str]]) -> Any:
        ns = _namespace(src, repl, kernel, name)
        ns["_truck_range"] = njit(**_options(name))(ns["_truck_range"])
        ns["_run_one"] = njit(**_options(name))(ns["run_steps_py"])
        return njit(parallel=True, **_options(name))(ns["run_instances"])

    hashed = [k for k, x in enumerate(args) if isinstance(x, np.ndarray)]
    return build, args, hashed, 300 * copies * arrays[0].shape[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kernel", choices=("network", "general"))
    ap.add_argument("variants", type=Path, help="JSON: {name: [[old, new], ...]}")
    ap.add_argument("--threads", type=int, default=1, help="network: Numba threads (1)")
    ap.add_argument("--lanes", type=int, default=1, help="network: lanes per direction (1)")
    ap.add_argument(
        "--road-order", action="store_true", help="network: vehicles stored in road order"
    )
    ap.add_argument("--scenario", default="v2v-loss-latency", help="general: library entry")
    ap.add_argument("--rounds", type=int, default=21, help="rounds (21; the first is dropped)")
    a = ap.parse_args()
    if a.kernel == "network":
        numba.set_num_threads(a.threads)
    variants = json.loads(a.variants.read_text())
    if a.kernel == "network":
        build, args, hashed, work = network_case(a.threads, a.lanes, a.road_order)
    else:
        build, args, hashed, work = general_case(a.scenario)
    steps = {name: build(name, repl) for name, repl in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    digest: dict[str, int] = {}
    for _ in range(a.rounds):
        for name, fn in steps.items():
            cur = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
            t0 = time.perf_counter()
            fn(*cur)
            times[name].append(time.perf_counter() - t0)
            digest[name] = zlib.crc32(b"".join(cur[k].tobytes() for k in hashed))
    unit = "vehicle-step" if a.kernel == "network" else "truck-step (wall, all cores)"
    for name in steps:
        t = np.array(times[name][1:]) / work * 1e9
        print(
            f"{name:28s} min {t.min():7.1f}  median {np.median(t):7.1f} ns per {unit}"
            f"  state {digest[name]:08x}"
        )


if __name__ == "__main__":
    main()
