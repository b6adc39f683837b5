"""What storing the vehicles in road order gives the threaded network step.

The network step's parallel loops split the vehicles by slot: thread 0 takes the first
half, thread 1 the second. Stored by number, a vehicle's leader on the bench ring is a
random index (the trucks enter in departure order at random nodes), so about half of the
leader reads land on the other core's half, written there by the last step's move loop.
``NetSim`` therefore gives the threaded step the vehicles in road order (``_renumber``).

This script runs the bench ring (``convoy bench network``'s network and demand) to t1,
then copies of it for 30 simulated seconds, interleaved over rounds: the threaded step with
the vehicles in road order, the threaded step with them stored by number (``_road_order``
switched off), and the threaded code on one core. It prints min / median ns per
vehicle-step of ``NetSim.run`` (the renumbering included) and checks that the first two
end in the same state, to the last bit.

    .venv/bin/python scripts/road_order_storage.py --lanes 1 --rounds 9
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import convoy.sim.bench_network as bn
import convoy.sim.net_kernel as nk
from convoy.sim.network import NetSim

WINDOW_S = 30.0


def _always(variant: Any) -> Any:
    """``StepChooser.pick`` that runs ``variant`` for every call on a busy road."""

    def pick(self: nk.StepChooser, fn: Any, step: int, end_step: int) -> tuple[Any, int]:
        return variant, end_step

    return pick


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lanes", type=int, default=1, help="lanes per direction (default 1)")
    ap.add_argument("--rounds", type=int, default=9, help="rounds (the first is dropped)")
    a = ap.parse_args()
    ring = bn.RingSpec(nodes=bn.ring_nodes_for(2000), lanes=a.lanes)
    with tempfile.TemporaryDirectory() as tmp:
        case = bn.prepare_case(ring, bn.DemandSpec(trucks=2000), Path(tmp))
    at_t1 = bn.convoy_sim(case.network, case.trips)
    bn._run(at_t1, case.t1_s)
    road_order = NetSim._road_order
    variants: dict[str, tuple[Any, Any]] = {
        "threaded, road order": (nk.run_net_steps_parallel, road_order),
        "threaded, by number": (nk.run_net_steps_parallel, lambda self: None),
        "one core": (nk.run_net_steps_one_core, road_order),
    }
    times: dict[str, list[float]] = {}
    ends: dict[str, dict[str, np.ndarray]] = {}
    for rnd in range(a.rounds):
        for name, (variant, order_fn) in variants.items():
            NetSim._road_order = order_fn  # type: ignore[method-assign]
            nk.StepChooser.pick = _always(variant)  # type: ignore[method-assign]
            sim = copy.deepcopy(at_t1)
            on = int((sim.state["status"] == nk.ST_DRIVING).sum())
            t0 = time.perf_counter()
            sim.run(case.t1_s + WINDOW_S)
            wall = time.perf_counter() - t0
            if rnd:
                times.setdefault(name, []).append(wall / (WINDOW_S / bn.DT_S * on) * 1e9)
            ends[name] = sim.state
    NetSim._road_order = road_order  # type: ignore[method-assign]
    print(f"2,000 trucks, {a.lanes} lane(s), {WINDOW_S:g} s from t1, {a.rounds - 1} rounds:")
    for name, ns in times.items():
        med = float(np.median(ns))
        print(f"  {name:22s} min {min(ns):5.1f}  median {med:5.1f} ns per vehicle-step")
    road, number = ends["threaded, road order"], ends["threaded, by number"]
    same = all(np.array_equal(road[k], number[k], equal_nan=True) for k in road)
    print(f"  road order and by number end in the same state: {same}")


if __name__ == "__main__":
    main()
