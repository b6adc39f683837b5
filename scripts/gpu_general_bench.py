"""Speed of the 1-D engine's general step on a GPU (``convoy.sim.kernel_cuda``, one thread per
instance) against the same step on the CPU cores (``kernel.run_instances``), on copies of one
validation-library instance: the kernel alone, without building scenarios in Python.

Each scenario of the library's 1-D mix (latency and loss bursts, dust, ice, downgrade, RSU
warning, takeover, late human drivers, emergency braking) runs the general step. Instance 0
of ``--scenario`` is built once and stacked ``--instances`` times (every copy the same run:
a measure of speed, not of safety). Both backends run the same ``--steps`` steps from the
same start, after a warm-up call (compilation), with recording off; the rates are
truck-steps/s and platoon-km/h (km the platoon heads drove in the timed call, per hour of
wall time). One JSON object is printed (and written to ``--out``).

    python scripts/gpu_general_bench.py --scenario v2v-loss-latency --instances 100000
    python scripts/gpu_general_bench.py --instances 64 --cpu-instances 64 --steps 50  # a check

Needs convoy and, for the GPU, numba-cuda (the device machine has it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from convoy.sim import engine, kernel
from convoy.sim.validation import LIBRARY, derive_seed, instance, sample_params


def stacked_copies(name: str, copies: int) -> list[np.ndarray]:
    """``kernel.run_instances``'s arguments (after ``n_steps, rec_every``) for ``copies``
    copies of instance 0 of library entry ``name``, recording off."""
    tpl = LIBRARY[name]
    sc = instance(tpl, sample_params(tpl, 1, 1, False)[0], derive_seed(1, name, 0), 0)
    table, state, world = engine.build(sc)
    rec, _ = engine._record_arrays(sc, table, state, None)
    args = [*(r[:1] for r in rec), *engine._general_args(table, state, world)]
    out = [np.ascontiguousarray(np.broadcast_to(a, (copies, *a.shape))) for a in args]
    return [*out, np.zeros(copies, np.int64)]


# positions of the position and step-counter arrays among the kernel's array arguments
_POS = engine._KERNEL_ARGS.index("pos")
_STEP = engine._KERNEL_ARGS.index("step")


def timed(run: Any, n_steps: int, args: list[np.ndarray]) -> tuple[float, float]:
    """(wall seconds, km the heads drove) of one call of ``n_steps`` steps on a copy."""
    work = [a.copy() for a in args]
    start = work[_POS][:, 0, 0].copy()  # (B, 2, n): buffer 0, the head (truck 0)
    t0 = time.perf_counter()
    run(n_steps, 0, *work)
    wall = time.perf_counter() - t0
    buf = int(work[_STEP][0, 0]) & 1  # the step counter after the call picks the buffer
    km = float(np.sum(work[_POS][:, buf, 0] - start)) / 1000.0
    return wall, km


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="v2v-loss-latency", choices=sorted(LIBRARY))
    ap.add_argument("--instances", type=int, default=100_000, help="GPU instances (100,000)")
    ap.add_argument("--cpu-instances", type=int, default=256, help="CPU instances (256)")
    ap.add_argument("--steps", type=int, default=600, help="steps per timed call (600)")
    ap.add_argument("--no-gpu", action="store_true", help="time the CPU only")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    if LIBRARY[args.scenario].batched or LIBRARY[args.scenario].net is not None:
        ap.error(f"--scenario {args.scenario}: allowed: an entry on the general 1-D step")
    result: dict[str, Any] = {
        "scenario": args.scenario,
        "steps": args.steps,
        "python": platform.python_version(),
    }
    cpu_args = stacked_copies(args.scenario, args.cpu_instances)
    trucks = cpu_args[engine._KERNEL_ARGS.index("model")].shape[1]
    timed(kernel.run_instances, 2, cpu_args)  # compile
    wall, km = timed(kernel.run_instances, args.steps, cpu_args)
    result["trucks_per_instance"] = trucks
    result["cpu"] = {
        "instances": args.cpu_instances,
        "truck_steps_per_s": float(f"{args.cpu_instances * trucks * args.steps / wall:.4g}"),
        "platoon_km_per_h": float(f"{km / wall * 3600:.4g}"),
    }
    if not args.no_gpu:
        from convoy.sim import kernel_cuda
        from convoy.sim.cuda_target import cuda, has_gpu

        if not has_gpu():
            ap.error("no CUDA GPU for Numba here; use --no-gpu")
        gpu_args = stacked_copies(args.scenario, args.instances)
        timed(kernel_cuda.run_instances, 2, gpu_args)  # compile
        wall, km = timed(kernel_cuda.run_instances, args.steps, gpu_args)
        # the same call again, to tell the transfers from the kernel: kernel time alone
        t_short, _ = timed(kernel_cuda.run_instances, 1, gpu_args)
        result["gpu"] = {
            "device": str(cuda.get_current_device().name),
            "instances": args.instances,
            "wall_s": round(wall, 4),
            "wall_1_step_s": round(t_short, 4),
            "truck_steps_per_s": float(f"{args.instances * trucks * args.steps / wall:.4g}"),
            "platoon_km_per_h": float(f"{km / wall * 3600:.4g}"),
            "kernel_only_platoon_km_per_h": float(f"{km / max(wall - t_short, 1e-9) * 3600:.4g}"),
        }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
