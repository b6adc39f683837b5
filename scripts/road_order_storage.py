"""What storing the vehicles in road order would give the threaded network step.

The network step's parallel loops split the vehicles by index: thread 0 takes the first
half, thread 1 the second. On the bench ring a vehicle's leader is a random index (the
trucks enter in departure order at random nodes), so about half of the leader reads in the
leader search land on the other core's half, written there by the last step's move loop.
This script takes the bench ring's state at t1 (``convoy bench network``'s network and
demand), renumbers the vehicles in lane order (the sort's ``order``: the front-most of each
lane first), and times ``run_net_steps_parallel`` for 300 steps from both numberings, on
two threads and on one, interleaved over rounds; it checks that both give the same
positions, vehicle for vehicle, to the last bit.

    .venv/bin/python scripts/road_order_storage.py --lanes 1 --rounds 9

Since this measurement the engine stores the vehicles so for every call of the threaded step
(``NetSim._renumber``); the script times the kernel alone, from both numberings, on a copy of
its arguments.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np

import convoy.sim.net_kernel as nk

sys.path.insert(0, str(Path(__file__).parent))
from step_variants import network_case

#: arguments holding vehicle indices as values (-1: none), renumbered with the vehicles
_INDEX_VALUED = ("pred", "after", "plat_next", "head_of", "plat_head")


def args_at_t1(lanes: int) -> dict[str, Any]:
    """The arguments of the step's call at t1 + 0.1 s on the bench ring of 2,000 trucks, set
    to run 300 steps without FCD (``step_variants.network_case``'s)."""
    _, args, _, _ = network_case(2, lanes)
    names = list(inspect.signature(nk.run_net_steps_py).parameters)
    return dict(zip(names, args, strict=True))


def road_order(args: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """The same state with the vehicles renumbered in lane order, and the renumbering
    (``perm[new] = old``)."""
    n = args["inst"].shape[0]
    nb = args["bucket_start"].shape[0] - 2
    on = int(args["bucket_start"][nb])
    order = args["order"]
    perm = np.concatenate([order[:on], np.setdiff1d(np.arange(n), order[:on])]).astype(np.int64)
    new_of = np.empty(n, np.int64)
    new_of[perm] = np.arange(n)
    out: dict[str, Any] = {}
    for k, v in args.items():
        per_vehicle = isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n
        # (legs are numbered apart from vehicles; ``order`` holds vehicles as values)
        if per_vehicle and k not in ("order", "fcd_veh", "slot_of") and not k.startswith("leg_"):
            out[k] = np.ascontiguousarray(v[perm])
        else:
            out[k] = v.copy() if isinstance(v, np.ndarray) else v
    for k in _INDEX_VALUED:
        v = out[k]
        has = v >= 0
        v[has] = new_of[v[has]]
    out["order"][:on] = new_of[order[:on]]
    out["slot_of"] = new_of.astype(args["slot_of"].dtype)  # the serial passes go by number
    return out, perm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lanes", type=int, default=1, help="lanes per direction (default 1)")
    ap.add_argument("--rounds", type=int, default=9, help="rounds (the first is dropped)")
    a = ap.parse_args()
    by_index = args_at_t1(a.lanes)
    by_road, perm = road_order(by_index)
    names = list(by_index)
    fn = nk.run_net_steps_parallel
    on = int((by_index["status"] == nk.ST_DRIVING).sum())
    most = numba.get_num_threads()
    times: dict[tuple[str, int], list[float]] = {}
    ends: dict[str, np.ndarray] = {}
    for rnd in range(a.rounds):
        for tag, state in (("index", by_index), ("road", by_road)):
            for threads in sorted({most, 1}, reverse=True):
                numba.set_num_threads(threads)
                call = [state[k].copy() if isinstance(state[k], np.ndarray) else state[k]
                        for k in names]  # fmt: skip
                t0 = time.perf_counter()
                fn(*call)
                wall = time.perf_counter() - t0
                if rnd:
                    times.setdefault((tag, threads), []).append(wall / (300 * on) * 1e9)
                ends[tag] = call[names.index("pos_m")]
    numba.set_num_threads(most)
    print(f"2,000 trucks, {a.lanes} lane(s), 300 steps from t1, {a.rounds - 1} rounds:")
    for (tag, threads), ns in times.items():
        print(
            f"  numbered by {tag:5s} {threads} thread(s): min {min(ns):5.1f}  "
            f"median {float(np.median(ns)):5.1f} ns per vehicle-step"
        )
    same = np.array_equal(ends["index"][perm], ends["road"])
    print(f"  the same positions, vehicle for vehicle: {same}")


if __name__ == "__main__":
    main()
