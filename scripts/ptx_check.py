"""Compile the fused CUDA kernel (``convoy.sim.net_cuda``) to PTX without a GPU.

CI runs the kernel only in Numba's CUDA simulator, which does not compile it; a change that
numba-cuda cannot type or lower would first show on a device machine, whose minutes are
few. This compiles it for a compute capability (default sm_90, the H100/H200) on any
machine: the launch arguments of the CUDA agreement test's world are taken in the simulator
(a subprocess), then the kernel is compiled for their types, with a stand-in for the device
query that numba-cuda makes when it compiles the model functions the kernel calls.

Needs numba-cuda and NVIDIA's compiler libraries, which convoy does not depend on; e.g.

    pip install --target /tmp/cudasite --no-deps numba-cuda "cuda-bindings==12.*" \\
        cuda-pathfinder cuda-core nvidia-cuda-nvcc-cu12 nvidia-cuda-nvrtc-cu12 \\
        nvidia-cuda-runtime-cu12
    CUDA_HOME=/tmp/cudasite/nvidia/cuda_nvcc \\
    LD_LIBRARY_PATH=/tmp/cudasite/nvidia/cuda_nvrtc/lib \\
        python scripts/ptx_check.py --site /tmp/cudasite

Prints the PTX size; exits 1 with the compiler's error if it does not compile.
"""

from __future__ import annotations

import argparse
import os
import pickle
import site
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CAPTURE = """
import pickle, sys
sys.path[:0] = [{tests!r}, {root!r}]
import test_net_cuda as T
from convoy.sim import net_cuda, net_jax
sim = T.scenario(1)
tables = net_jax.tables_from_sim(sim)
fleet = T._copy(net_jax.fleet_from_sim(sim))
cfg = net_jax.config_from_sim(sim)
w = net_cuda.FusedWorld(tables, fleet, cfg, sim._edge_caps(0.0), sim._closed_lanes(0.0))
arrays = [a.copy_to_host() for a in (*w.consts, *w.state, w.collisions, w.arrivals)]
scalars = (w.step, 10, cfg.dt_s, cfg.seed, cfg.loss, cfg.beacon_period_steps)
pickle.dump((arrays, scalars, w.block, len(tables.edge_len_m)), open({out!r}, "wb"))
"""


class _StandInDevice:
    """What numba-cuda asks of the current device while it compiles device functions."""

    def __init__(self, cc: tuple[int, int]) -> None:
        self.compute_capability = cc
        self.name = f"stand-in sm_{cc[0]}{cc[1]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", default=None, help="folder numba-cuda was installed into")
    ap.add_argument("--cc", default="9.0", help="compute capability (default 9.0)")
    args = ap.parse_args()
    cc = tuple(int(x) for x in args.cc.split("."))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "launch.pkl")
        code = _CAPTURE.format(tests=str(ROOT / "tests"), root=str(ROOT), out=out)
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        with open(out, "rb") as fh:
            arrays, scalars, block, n_edges = pickle.load(fh)
    if args.site:
        site.addsitedir(args.site)
    sys.path.insert(0, str(ROOT))
    import numba
    import numba.cuda.api
    import numba.cuda.dispatcher
    from numba import cuda

    device = _StandInDevice((cc[0], cc[1]))
    for mod in (numba.cuda.api, numba.cuda.dispatcher, cuda):
        if hasattr(mod, "get_current_device"):
            mod.get_current_device = lambda: device

    from convoy.sim import net_cuda

    types = tuple(numba.typeof(a) for a in (*arrays, *scalars))
    kernel = net_cuda._kernel(block, n_edges, max_registers=None)
    try:
        ptx, _ = cuda.compile_ptx(kernel.py_func, types, cc=cc)
    except Exception as exc:  # the compiler's own error is the report
        print(f"net_cuda's kernel does not compile for sm_{cc[0]}{cc[1]}: {exc}", file=sys.stderr)
        return 1
    print(f"net_cuda's kernel compiles for sm_{cc[0]}{cc[1]}: {len(ptx):,} characters of PTX")
    return 0


if __name__ == "__main__":
    sys.exit(main())
