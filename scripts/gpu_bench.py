"""Steady-state speed of convoy's JAX platoon step on one device (made for one H100).

N trucks in platoons of 5 drive on many independent one-lane roads ("lanes") of
``--lane-trucks`` trucks each; every lane is one instance of the ``brake-and-recover``
scenario with its platoons one behind another, the lead truck of each lane braking from 22 to
12 m/s and recovering, every other head following the platoon ahead with SUMO's CACC law.
The full engine step runs (``convoy.sim.backend_jax.lane_step``: law, ``setSpeed`` and
``finalizeSpeed``, integration, energy with the platoon drag, beacons, safety accounting) in
float32 with positions relative to each platoon (cm-exact at 1,000 km), under ``jax.vmap``
over lanes and ``lax.fori_loop`` over steps.

Timing excludes compilation and transfers: the same compiled call runs ``--steps`` and
``2 * --steps`` steps, each ``--repeats`` times; the rate is trucks times the difference of
the step counts over the difference of the median times. One JSON object is printed at the
end (and written to ``--out`` if given).

    python scripts/gpu_bench.py --trucks 10000000          # the device machine
    python scripts/gpu_bench.py --trucks 100000 --steps 100  # a CPU check

Needs only numpy, jax (jax[cuda12] on the GPU) and convoy.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convoy.sim import backend_jax as bj
from convoy.sim.engine import build
from convoy.sim.scenario import parse_scenario

PLATOON_TRUCKS = 5  # DESIGN.md: "1+4" hybrid platoons


def _lane_scenario(lane_trucks: int, steps: int, dt_s: float) -> Any:
    """One lane: the brake-and-recover experiment with ``lane_trucks // 5`` platoons."""
    count = lane_trucks // PLATOON_TRUCKS
    return parse_scenario(
        {
            "name": "gpu-bench-lane",
            "dt_s": dt_s,
            "duration_s": round(max(steps, 1) * dt_s, 6),
            # long enough for any run here: 2 * steps at 25 m/s, plus the lane's length
            "road": {"length_m": 1e9},
            "platoon": {
                "trucks": PLATOON_TRUCKS,
                "count": count,
                "spacing_m": 60.0,
                "controller": {"model": "cacc-sumo", "time_gap_s": 1.0},
                "initial": {"speed_mps": 22.0, "gap_m": 25.0, "head_pos_m": count * 250.0},
            },
            "leader": {"speed_profile": [[0, 22], [60, 22], [65, 12], [95, 12], [105, 22]]},
            "channel": {"rate_hz": 1.0 / dt_s, "latency_s": 0.0, "loss": 0.0},
        },
        "gpu-bench-lane",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trucks", type=int, default=10_000_000, help="trucks in all (10M)")
    ap.add_argument("--lane-trucks", type=int, default=1000, help="trucks per lane (1000)")
    ap.add_argument("--steps", type=int, default=1000, help="steps of the shorter run (1000)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each length (3)")
    ap.add_argument("--dt", type=float, default=0.1, help="step length [s] (0.1)")
    ap.add_argument("--unroll", type=int, default=1, help="steps per loop iteration (1)")
    ap.add_argument("--precision", choices=bj.PRECISIONS, default="float32")
    ap.add_argument("--device", choices=("default", "cpu", "gpu"), default="default")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--dump-hlo", type=Path, help="write the compiled program's HLO here")
    args = ap.parse_args(argv)
    if args.lane_trucks % PLATOON_TRUCKS or args.lane_trucks <= 0:
        ap.error(f"--lane-trucks = {args.lane_trucks}: allowed: a positive multiple of 5")
    if args.trucks < args.lane_trucks or args.trucks % args.lane_trucks:
        ap.error(f"--trucks = {args.trucks}: allowed: a multiple of --lane-trucks")
    if args.steps <= 0 or args.repeats <= 0 or args.unroll <= 0:
        ap.error("--steps, --repeats and --unroll: allowed: positive integers")
    try:
        device = jax.devices()[0] if args.device == "default" else jax.devices(args.device)[0]
    except RuntimeError:
        ap.error(f"--device = {args.device}: JAX sees no such device, only {jax.devices()}")
    lanes = args.trucks // args.lane_trucks
    relative = args.precision == "float32"

    with bj.precision_scope(args.precision), jax.default_device(device):
        # one lane's arrays from the engine; every lane starts there, speeds jittered so
        # that no two lanes compute the same numbers
        sc = _lane_scenario(args.lane_trucks, 2 * args.steps, args.dt)
        table, state, world = build(sc)
        lp = bj.LaneParams(
            **{
                k: jnp.asarray(v)
                for k, v in bj.lane_params_np(table, world, args.precision).items()
            }
        )
        lay = bj.LaneLayout(**{k: jnp.asarray(v) for k, v in bj.layout_np(table).items()})
        one = bj.lane_state_np(table, state, args.precision)
        st = bj.LaneState(
            **{k: jnp.broadcast_to(jnp.asarray(v), (lanes, *v.shape)) for k, v in one.items()}
        )
        targets = jnp.asarray(bj.head_targets(world, 0, 2 * args.steps, args.precision))
        jitter = jax.random.uniform(jax.random.key(0), (lanes, 1), st.speed_mps.dtype, -0.5, 0.5)
        st = st._replace(speed_mps=st.speed_mps + jitter)
        st = jax.block_until_ready(jax.tree.map(lambda a: a.copy(), st))

        t0 = time.perf_counter()
        compiled = bj.advance_lanes.lower(
            lp,
            lay,
            st,
            targets,
            jnp.int32(1),
            relative=relative,
            shared_params=True,
            unroll=args.unroll,
        ).compile()
        compile_s = time.perf_counter() - t0

        def run(n: int) -> bj.LaneState:
            # the step count is an argument: every run reuses this one compiled loop
            out: bj.LaneState = compiled(lp, lay, st, targets, jnp.int32(n))
            return out

        hlo = compiled.as_text() or ""
        if args.dump_hlo:
            args.dump_hlo.write_text(hlo)
        jax.block_until_ready(run(args.steps))  # warm: first execution, allocations
        t_short = bj.median_time_s(lambda: run(args.steps), args.repeats)
        t_long = bj.median_time_s(lambda: run(2 * args.steps), args.repeats)
        final = jax.block_until_ready(run(2 * args.steps))
        speed = np.asarray(final.speed_mps)
        min_gap = np.asarray(final.min_gap_m)
        collided = np.isfinite(np.asarray(final.collided_at_s))

    rate = args.trucks * args.steps / max(t_long - t_short, 1e-12)
    carry_bytes = (
        sum(int(np.prod(a.shape[1:])) * a.dtype.itemsize for a in jax.tree.leaves(st))
        / args.lane_trucks
    )
    result = {
        "device": str(device),
        "device_kind": getattr(device, "device_kind", device.platform),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "precision": args.precision,
        "trucks": args.trucks,
        "lanes": lanes,
        "lane_trucks": args.lane_trucks,
        "platoon_trucks": PLATOON_TRUCKS,
        "dt_s": args.dt,
        "unroll": args.unroll,
        "steps_short": args.steps,
        "steps_long": 2 * args.steps,
        "repeats": args.repeats,
        "compile_s": round(compile_s, 3),
        "t_short_s": round(t_short, 6),
        "t_long_s": round(t_long, 6),
        "vehicle_steps_per_s": float(f"{rate:.4g}"),
        # one read and one write of the loop state per truck and step, if XLA fuses the
        # step into one pass; more passes move more
        "state_bytes_per_truck": round(carry_bytes, 2),
        "state_traffic_gbps": round(rate * 2 * carry_bytes / 1e9, 1),
        "loop_fusions": hlo.count("fusion("),
        "check": {
            "finite": bool(np.isfinite(speed).all()),
            "speed_min_mps": float(speed.min()),
            "speed_max_mps": float(speed.max()),
            "min_gap_m": float(min_gap.min()),
            "collided_trucks": int(collided.sum()),
        },
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    ok = result["check"]["finite"] and result["check"]["collided_trucks"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
