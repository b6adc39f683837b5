"""Where the network step's time goes: a phase profile of ``net_kernel.run_net_steps``.

A copy of the step is compiled with the CPU's cycle counter (``llvm.readcyclecounter``) read
between its phases; the counts are shared out over the measured wall time. The copy is the
step's own source with one line added before each phase, so it computes the same run.

    .venv/bin/python scripts/net_phase_profile.py --lanes 1 --trucks 2000 --threads 2
    .venv/bin/python scripts/net_phase_profile.py --day      # the Ordos day (convoy run)

Bench ring (``convoy bench network``'s network and demand): run to t1 = 300 s, then timed
for ``--seconds``; the figures are ns per vehicle-step. With ``--threads 2`` the threaded
variant runs and a phase's figure is its wall time (its parallel loops included).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

import convoy.sim.bench_network as bn
import convoy.sim.net_kernel as nk
from convoy.sim.jit import NO_REFCOUNTS


@intrinsic
def _cycles(typingctx: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


#: (a line that starts a phase in ``run_net_steps_py``, the phase it starts)
PHASES = (
    ("        # ---- 0.", "departures and site releases"),
    ("        # the lane sort", "lane sort"),
    ("        # insertion of waiting", "insertion"),
    ("        # the vehicles on the road, in index order", "vehicle list"),
    ("        # ---- 1.", "leaders, stop lines"),
    ("        # The law in a loop of its own", "control law"),
    ("        # ---- 2.", "collisions"),
    ("        # ---- 3.", "lane changes"),
    ("        # ---- 4.", "move, energy, edge transitions"),
    ("        # arrivals at the routes' ends", "arrivals"),
    ("        steps_done += 1", "output"),
)


def profiled_step(parallel: bool) -> tuple[Callable[..., Any], np.ndarray]:
    """The step with a cycle count between phases, and the array the counts add up in."""
    src = inspect.getsource(nk.run_net_steps_py)
    last = "    edge_sin: np.ndarray,\n) -> tuple[int, int, int]:"
    if last not in src:
        sys.exit("net_phase_profile: run_net_steps_py's signature changed; update this script")
    extra = "    edge_sin: np.ndarray,\n    _prof: np.ndarray,\n) -> tuple[int, int, int]:"
    src = src.replace(last, extra)
    for k, (line, _) in enumerate(PHASES):
        if line not in src:
            sys.exit(f"net_phase_profile: no line {line.strip()!r} in the step; update PHASES")
        if k == 0:
            mark = "        _t = _cycles()\n"
        else:
            mark = (
                f"        _t2 = _cycles()\n        _prof[{k - 1}] += _t2 - _t\n        _t = _t2\n"
            )
        src = src.replace(line, mark + line, 1)
    ns = dict(vars(nk))
    ns["_cycles"] = _cycles
    exec(compile(src, "net_phase_profile_step", "exec"), ns)
    step = njit(parallel=parallel, **NO_REFCOUNTS)(ns["run_net_steps_py"])
    prof = np.zeros(len(PHASES), dtype=np.int64)
    return step, prof


def _install(parallel: bool) -> np.ndarray:
    step, prof = profiled_step(parallel)

    def run(*args: Any) -> Any:
        return step(*args, prof)

    nk.step_variant = lambda *a: run  # type: ignore[assignment]
    if parallel:
        # ``NetSim.run`` stores the vehicles in road order for the threaded step (it knows
        # that step by name): the profile runs the storage the bench runs
        nk.run_net_steps_parallel = run
    return prof


def _print(prof: np.ndarray, wall_s: float, per: float, unit: str) -> None:
    total = max(int(prof[:-1].sum()), 1)
    for k, (_, name) in enumerate(PHASES[:-1]):
        share = prof[k] / total
        print(f"  {name:30s} {100 * share:5.1f} %  {wall_s * share * per:8.2f} {unit}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lanes", type=int, default=1, help="lanes per direction (default 1)")
    ap.add_argument("--trucks", type=int, default=2000, help="fleet (default 2000)")
    ap.add_argument("--threads", type=int, choices=(1, 2), default=1, help="1 or 2 (default 1)")
    ap.add_argument("--seconds", type=float, default=100.0, help="timed simulated seconds")
    ap.add_argument("--day", action="store_true", help="profile the Ordos day instead")
    a = ap.parse_args()
    prof = _install(a.threads == 2)
    if a.day:
        from convoy.cli import main as convoy_main

        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            convoy_main(["run", "--out", out])
            wall = time.perf_counter() - t0
        print(f"the Ordos day: {wall:.1f} s wall; the step's phases:")
        _print(prof, float(prof[:-1].sum()) / _cycles_per_s(), 1.0, "s")
        return
    ring = bn.RingSpec(nodes=bn.ring_nodes_for(a.trucks), lanes=a.lanes)
    with tempfile.TemporaryDirectory() as tmp:
        case = bn.prepare_case(ring, bn.DemandSpec(trucks=a.trucks), Path(tmp))
    warm = bn.convoy_sim(case.network, case.trips[:1])
    bn._run(warm, 2 * bn.DT_S)  # compile
    sim = bn.convoy_sim(case.network, case.trips)
    bn._run(sim, case.t1_s)
    prof[:] = 0
    t0 = time.perf_counter()
    bn._run(sim, case.t1_s + a.seconds)
    wall = time.perf_counter() - t0
    steps = round(a.seconds / bn.DT_S)
    on = int((sim.state["status"] == nk.ST_DRIVING).sum())
    print(
        f"{a.trucks} trucks, {a.lanes} lane(s), {a.threads} thread(s): "
        f"{wall / steps / on * 1e9:.1f} ns per vehicle-step"
    )
    _print(prof, wall, 1e9 / steps / on, "ns per vehicle-step")


def _cycles_per_s() -> float:
    """The cycle counter's rate, measured against the wall clock over 0.2 s."""

    @njit
    def read() -> int:
        return _cycles()

    c0, t0 = read(), time.perf_counter()
    time.sleep(0.2)
    return (read() - c0) / (time.perf_counter() - t0)


if __name__ == "__main__":
    main()
