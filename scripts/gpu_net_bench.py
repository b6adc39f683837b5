"""Steady-state speed of convoy's JAX network step on one device (made for one H100).

**The synthetic network.** A corridor of ``--edges`` one-lane edges of ``--edge-km`` km in a
row (25 m/s limit; grades +2 %, 0, -2 %, 0, ... so that loaded trucks are power-limited on
the climbs; a fixed-time signal at the middle node: 60 s green, 3 s yellow, 27 s red).
Each batch instance is one copy of the corridor with ``--corridor-trucks`` trucks in 1+4
platoons (a human lead on IDM, four L4 followers on SUMO's CACC law), already formed and
driving at 22 m/s, spread over the first 60 % of the corridor: N = instances x trucks per
corridor (default 10,000,000 = 100,000 corridors of 100). The instances are the batch axis
of the lane key, so the whole fleet is one array run with one sort.

The full network step runs (``convoy.sim.net_jax.net_step``): the lane sort (kept while it
holds, checked every step), leaders in the lane and along the route, stop lines (the
signal), junction rules, IDM and the CACC law with power-limited climbing, collision
checks, moves with compensated float32 per-edge offsets, energy with the platoon drag,
beacons and edge transitions. No FCD or events are recorded (as in a headless batch run).
A corridor rather than a ring: vehicles crossing a ring's closing edge would leave their
place in the sorted order and force a full sort in every step; along a corridor the order
holds (edges are numbered against the driving direction, ``net_jax.edge_sort_keys``), as
it does on real routes, and the corridors are long enough that nobody reaches the end.

Timing excludes compilation and transfers: the same compiled call runs ``--steps`` and
``2 * --steps`` steps from the same start, each ``--repeats`` times; the rate is trucks
times the difference of the step counts over the difference of the median times. One JSON
object is printed at the end (and written to ``--out`` if given).

``--kernel cuda`` times ``convoy.sim.net_cuda`` instead: the same step fused into one CUDA
kernel (Numba CUDA), a thread block per corridor holding its trucks on chip for the whole
launch, float64 throughout. Its rate is measured the same way (each run starts from a copy of
the same state on the device; only the launch is timed).

    python scripts/gpu_net_bench.py                                    # the device machine
    python scripts/gpu_net_bench.py --kernel cuda                      # the fused kernel
    python scripts/gpu_net_bench.py --trucks 100000 --steps 20 --repeats 1  # a CPU check

Needs only numpy, jax (jax[cuda12] on the GPU) and convoy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convoy.road.network import (
    Edge,
    JunctionType,
    Node,
    RoadNetwork,
    SignalPhase,
    SignalPlan,
)
from convoy.sim import net_jax as nj
from convoy.sim import net_kernel as nk
from convoy.sim.backend_jax import median_time_s
from convoy.sim.network import Leg, NetSim, Platoon, Trip

PLATOON_TRUCKS = 5  # DESIGN.md: "1+4" hybrid platoons
START_SPEED_MPS = 22.0
GAP_IN_PLATOON_M = 25.0
TRUCK_LENGTH_M = 16.5  # network.TRUCK_HUMAN and TRUCK_L4
FILLED_SHARE = 0.6  # trucks start in this share of the corridor, from its start


def corridor_network(edges: int, edge_km: float) -> RoadNetwork:
    """One-lane edges in a row with alternating grades and a signal at the middle node."""
    mid = edges // 2
    nodes = []
    for k in range(edges + 1):
        signal = None
        if k == mid:
            signal = SignalPlan(
                (SignalPhase(60.0, (f"e{k - 1}",)), SignalPhase(3.0, ()), SignalPhase(27.0, ()))
            )
        nodes.append(
            Node(
                f"n{k}",
                109.0 + 0.01 * k * edge_km,
                39.0,
                junction=JunctionType.TRAFFIC_SIGNAL if signal else JunctionType.PRIORITY,
                signal=signal,
            )
        )
    length_m = edge_km * 1000.0
    rise_m = (20.0, 0.0, -20.0, 0.0)  # per km: +2 %, flat, -2 %, flat
    edge_list = [
        Edge(
            f"e{k}",
            f"n{k}",
            f"n{k + 1}",
            length_m,
            speed_limit_mps=25.0,
            stations_m=(0.0, length_m),
            elevation_m=(1300.0, 1300.0 + rise_m[k % 4] * edge_km),
        )
        for k in range(edges)
    ]
    return RoadNetwork.build(nodes, edge_list)


def _edge_at(ends_m: np.ndarray, route_m: float) -> tuple[int, float]:
    """(edge number, offset on it) of a point ``route_m`` along the corridor."""
    k = int(np.searchsorted(ends_m, route_m, side="right"))
    return k, route_m - (float(ends_m[k - 1]) if k else 0.0)


def corridor_sim(
    corridor_trucks: int,
    edges: int,
    edge_km: float,
    instances: int = 1,
    dt_s: float = 0.1,
    record_every_s: float = 1.0,
) -> NetSim:
    """The corridor with its platoons formed and on the road, ``instances`` copies."""
    net = corridor_network(edges, edge_km)
    route = tuple(f"e{k}" for k in range(edges))
    platoons = corridor_trucks // PLATOON_TRUCKS
    trips = [
        Trip(f"t{q}.{j}", "truck-human" if j == 0 else "truck-l4", (Leg(route),))
        for q in range(platoons)
        for j in range(PLATOON_TRUCKS)
    ]
    plats = [
        Platoon(f"p{q}", tuple(f"t{q}.{j}" for j in range(PLATOON_TRUCKS))) for q in range(platoons)
    ]
    sim = NetSim(
        net,
        trips,
        platoons=plats,
        dt_s=dt_s,
        instances=instances,
        record_every_s=record_every_s,
    )
    spacing = FILLED_SHARE * edges * edge_km * 1000.0 / platoons
    ends_m = np.cumsum(np.full(edges, edge_km * 1000.0))
    for k in range(instances):
        tag = f"#{k}" if instances > 1 else ""
        for q in range(platoons):
            head_m = (platoons - q) * spacing
            for j in range(PLATOON_TRUCKS):
                e, pos_m = _edge_at(ends_m, head_m - j * (TRUCK_LENGTH_M + GAP_IN_PLATOON_M))
                sim.place(f"t{q}.{j}{tag}", f"e{e}", 0, pos_m, START_SPEED_MPS)
    return sim


def numba_rate(args: argparse.Namespace, instances: int) -> dict[str, Any]:
    """The Numba kernel (backend ``cpu``) on the same world: after a warm-up (compile cache,
    threads), one timed run of ``2 * steps`` steps without FCD."""
    sim = corridor_sim(
        args.corridor_trucks,
        args.edges,
        args.edge_km,
        instances=instances,
        dt_s=args.dt,
        record_every_s=1e9,
    )
    sim.run(10 * args.dt)
    t0 = time.perf_counter()
    res = sim.run(sim.step * args.dt + 2 * args.steps * args.dt, chunk_steps=2 * args.steps)
    wall = time.perf_counter() - t0
    return {
        "vehicle_steps_per_s": float(f"{args.trucks * 2 * args.steps / wall:.4g}"),
        "threaded": args.trucks >= nk.PARALLEL_MIN_ON_ROAD,
        "collisions": res.collisions,
    }


def _timing(
    args: argparse.Namespace, build_s: float, compile_s: float, t_short: float, t_long: float
) -> dict[str, Any]:
    """The JSON's timing fields: steps, repeats, times and the rate from their difference."""
    rate = args.trucks * args.steps / max(t_long - t_short, 1e-12)
    return {
        "steps_short": args.steps,
        "steps_long": 2 * args.steps,
        "repeats": args.repeats,
        "build_s": round(build_s, 3),
        "compile_s": round(compile_s, 3),
        "t_short_s": round(t_short, 6),
        "t_long_s": round(t_long, 6),
        "vehicle_steps_per_s": float(f"{rate:.4g}"),
    }


def _check(speed: np.ndarray, status: np.ndarray, collisions: int) -> dict[str, Any]:
    """The JSON's check: speeds finite and their range, trucks driving, collisions."""
    return {
        "finite": bool(np.isfinite(speed).all()),
        "speed_min_mps": float(speed.min()),
        "speed_max_mps": float(speed.max()),
        "driving": int(np.sum(status == nk.ST_DRIVING)),
        "collisions": collisions,
    }


def fused_result(
    args: argparse.Namespace,
    tables: nj.NetTables,
    fleet: nj.Fleet,
    cfg: nj.RunConfig,
    one: NetSim,
    build_s: float,
) -> dict[str, Any]:
    """Time the fused CUDA kernel (``--kernel cuda``) on the replicated world."""
    from convoy.sim import net_cuda
    from convoy.sim.cuda_target import cuda

    max_registers = net_cuda.MAX_REGISTERS if args.max_registers is None else args.max_registers
    world = net_cuda.FusedWorld(
        tables,
        fleet,
        cfg,
        one._edge_caps(0.0),
        one._closed_lanes(0.0),
        fastmath=args.fastmath,
        max_registers=max_registers or None,
    )
    t0 = time.perf_counter()
    world.launch(1, world.copy_state())  # compiles for this block size and edge count
    cuda.synchronize()
    compile_s = time.perf_counter() - t0

    def timed(n: int) -> float:
        times = []
        for _ in range(args.repeats):
            state = world.copy_state()  # the start state, which the timed runs leave alone
            cuda.synchronize()
            t = time.perf_counter()
            world.launch(n, state)
            cuda.synchronize()
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    t_short = timed(args.steps)
    t_long = timed(2 * args.steps)
    world.launch(2 * args.steps)
    res = world.result()
    speed = res.fleet.speed_mps
    state_bytes = sum(a.nbytes for a in world.state) / args.trucks
    const_bytes = sum(a.nbytes for a in world.consts if a.shape[0] == args.trucks)
    get = getattr(cuda, "get_current_device", None)  # the simulator has none
    name = get().name if get is not None else "CUDA simulator"
    return {
        "kernel": "cuda (convoy.sim.net_cuda, fused)",
        "device": name.decode() if isinstance(name, bytes) else str(name),
        "python": platform.python_version(),
        "precision": "float64",
        "trucks": args.trucks,
        "instances": cfg.instances,
        "corridor_trucks": args.corridor_trucks,
        "threads_per_block": world.block,
        "fastmath": args.fastmath,
        "max_registers": max_registers,
        **world.resources(),
        "edges_per_corridor": args.edges,
        "edge_km": args.edge_km,
        "dt_s": args.dt,
        **_timing(args, build_s, compile_s, t_short, t_long),
        "state_bytes_per_truck": round(state_bytes, 1),
        "param_bytes_per_truck": round(const_bytes / args.trucks, 1),
        "check": _check(speed, res.fleet.status, int(res.collisions.sum())),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trucks", type=int, default=10_000_000, help="trucks in all (10M)")
    ap.add_argument("--corridor-trucks", type=int, default=100, help="trucks per corridor (100)")
    ap.add_argument("--edges", type=int, default=8, help="edges per corridor (8)")
    ap.add_argument("--edge-km", type=float, default=5.0, help="edge length [km] (5)")
    ap.add_argument("--steps", type=int, default=500, help="steps of the shorter run (500)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each length (3)")
    ap.add_argument("--dt", type=float, default=0.1, help="step length [s] (0.1)")
    ap.add_argument("--unroll-steps", type=int, default=1, help="steps per loop iteration (1)")
    ap.add_argument(
        "--unroll-inner", action="store_true", help="unroll the step's fixed-length loops"
    )
    ap.add_argument("--precision", choices=nj.PRECISIONS, default="float32")
    ap.add_argument("--device", choices=("default", "cpu", "gpu"), default="default")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument(
        "--numba", action="store_true", help="also time the Numba kernel on the same world"
    )
    ap.add_argument("--dump-hlo", type=Path, help="write the compiled program's HLO here")
    ap.add_argument(
        "--kernel",
        choices=("jax", "cuda"),
        default="jax",
        help="jax: net_jax's step (default); cuda: net_cuda's fused kernel (Numba CUDA)",
    )
    ap.add_argument("--fastmath", action="store_true", help="--kernel cuda: fastmath")
    ap.add_argument(
        "--max-registers",
        type=int,
        default=None,
        help="--kernel cuda: registers per thread (default net_cuda.MAX_REGISTERS; 0: no cap)",
    )
    args = ap.parse_args(argv)
    if args.corridor_trucks % PLATOON_TRUCKS or args.corridor_trucks <= 0:
        ap.error(f"--corridor-trucks = {args.corridor_trucks}: allowed: a positive multiple of 5")
    if args.trucks < args.corridor_trucks or args.trucks % args.corridor_trucks:
        ap.error(f"--trucks = {args.trucks}: allowed: a multiple of --corridor-trucks")
    if args.steps <= 0 or args.repeats <= 0 or args.edges < 2 or args.unroll_steps <= 0:
        ap.error(
            "--steps, --repeats, --unroll-steps: allowed: positive integers; --edges: at least 2"
        )
    travel_m = 2 * args.steps * args.dt * 25.0
    if travel_m > (1.0 - FILLED_SHARE) * args.edges * args.edge_km * 1000.0:
        ap.error("--steps: the lead platoons would reach the corridor's end; add --edges")
    if args.kernel == "jax":
        try:
            device = jax.devices()[0] if args.device == "default" else jax.devices(args.device)[0]
        except RuntimeError:
            ap.error(f"--device = {args.device}: JAX sees no such device, only {jax.devices()}")

    instances = args.trucks // args.corridor_trucks
    t0 = time.perf_counter()
    one = corridor_sim(args.corridor_trucks, args.edges, args.edge_km, dt_s=args.dt)
    tables = nj.tables_from_sim(one)
    fleet = nj.replicate(nj.fleet_from_sim(one), instances)
    cfg = dataclasses.replace(nj.config_from_sim(one), instances=instances)
    build_s = time.perf_counter() - t0
    if args.kernel == "cuda":
        return _report(args, fused_result(args, tables, fleet, cfg, one, build_s))
    with nj.x64_scope():
        shape = nj.make_shape(tables, fleet, cfg, args.precision, rows_cap=0, ev_cap=0)
        shape = shape._replace(unroll_steps=args.unroll_steps, unroll_inner=args.unroll_inner)
        params = nj.make_params(tables, fleet, cfg, args.precision, device)
        st = nj.make_state(fleet, cfg, args.precision, device)
        inp = nj.make_inputs(one._edge_caps(0.0), one._closed_lanes(0.0), args.precision, device)
        st = jax.block_until_ready(st)

        t0 = time.perf_counter()
        compiled = nj.advance.lower(params, st, inp, jnp.int32(1), shape=shape).compile()
        compile_s = time.perf_counter() - t0
        hlo = compiled.as_text() or ""
        if args.dump_hlo:
            args.dump_hlo.write_text(hlo)

        def run(n: int) -> nj.NetState:
            # the step count is an argument: every run reuses this one compiled loop
            out: nj.NetState = compiled(params, st, inp, jnp.int32(n))[0]
            return out

        jax.block_until_ready(run(args.steps))  # warm: first execution, allocations
        t_short = median_time_s(lambda: run(args.steps), args.repeats)
        t_long = median_time_s(lambda: run(2 * args.steps), args.repeats)
        final = jax.block_until_ready(run(2 * args.steps))
        speed = np.asarray(final.speed_mps)
        status = np.asarray(final.status)
        sorts = int(final.sorts)
        collisions = int(final.collisions)

    state_bytes = sum(a.nbytes for a in jax.tree.leaves(st)) / args.trucks
    param_bytes = sum(a.nbytes for a in jax.tree.leaves(params)) / args.trucks
    result = {
        "device": str(device),
        "device_kind": getattr(device, "device_kind", device.platform),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "precision": args.precision,
        "trucks": args.trucks,
        "instances": instances,
        "corridor_trucks": args.corridor_trucks,
        "edges_per_corridor": args.edges,
        "edge_km": args.edge_km,
        "lanes_in_key": instances * args.edges,
        "dt_s": args.dt,
        "unroll_steps": args.unroll_steps,
        "unroll_inner": args.unroll_inner,
        **_timing(args, build_s, compile_s, t_short, t_long),
        "state_bytes_per_truck": round(state_bytes, 1),
        "fusions": hlo.count("fusion("),
        "param_bytes_per_truck": round(param_bytes, 1),
        # full sorts in the longer run: 1 (the first step orders the replicated fleet)
        "full_sorts": sorts,
        "check": _check(speed, status, collisions),
    }
    return _report(args, result)


def _report(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """Add the Numba rate if asked, print and write the JSON; 1 if the check failed."""
    if args.numba:
        result["numba"] = numba_rate(args, result["instances"])
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    chk = result["check"]
    ok = chk["finite"] and chk["collisions"] == 0 and chk["driving"] == args.trucks
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
