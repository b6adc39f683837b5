#!/usr/bin/env bash
# Every GPU check of convoy in one run, for the device machine (one NVIDIA H100 or H200):
#
#   1. what the machine has (GPU, Python, JAX, Numba);
#   2. the GPU agreement tests (pytest -m gpu: the 1-D and network JAX backends on the GPU
#      against Numba on the CPU);
#   3. scripts/gpu_bench.py: the bare platoon step, 10 million trucks;
#   4. scripts/gpu_net_bench.py: the network step, 10 million trucks (issue 4's figure);
#   5. convoy validate --backend gpu on the batched scenario and the car cut-in (issue 7's
#      GPU paths);
#   (step "fused", not run by default) the fused CUDA kernel of the network step
#   (convoy.sim.net_cuda): its GPU agreement test, then scripts/gpu_net_bench.py --kernel cuda;
#   (step "general", not run by default) the 1-D general step on the GPU (convoy.sim.kernel_cuda):
#   its agreement test, scripts/gpu_general_bench.py on two entries, validate on one;
#   (step "mix", not run by default) convoy validate --backend gpu over the whole library
#   (issue 7's headline: platoon-km per hour with the mix's faults), 4,096 instances each;
#   6. (steps "unroll" and "tests1d", not run by default) the two benches with steps unrolled
#      in the loop and the network step's fixed-length loops unrolled; the 1-D GPU test alone.
#
# Each step has its own time limit, so one that hangs costs only its own share; each writes
# its log (and JSON) under $OUT (default ./gpu-out). Python packages the machine lacks can be
# carried as wheels in .whl/ (see docs/benchmarks.md); they are installed into /tmp/site.
#
#   OUT=gpu-out bash scripts/gpu_check.sh            # all steps
#   STEPS="env tests" bash scripts/gpu_check.sh      # a subset
#   STEPS="env general fused" bash scripts/gpu_check.sh  # the CUDA kernels (about 5 min):
#                                                    # kernel_cuda has not run on a GPU yet
set -u
OUT=${OUT:-gpu-out}
STEPS=${STEPS:-"env tests bench net validate"}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ "${WHL:-1}" = 1 ] && compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

step() {  # step NAME LIMIT_S COMMAND...: run it with a limit, log under $OUT, print the tail
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${limit} s)"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n "${TAIL:-25}" "$OUT/$name.log"
    echo "=== $name: rc=$rc, $((SECONDS - t0)) s"
}

for s in $STEPS; do
    case $s in
    env)
        step env 60 bash -c "nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv; nproc; $PY - <<'EOF'
import platform, jax, numba, numpy
print('python', platform.python_version(), 'jax', jax.__version__, 'numba', numba.__version__,
      'numpy', numpy.__version__)
print('jax devices', jax.devices())
import convoy.sim.backend_jax as bj
try:
    print('convoy gpu device', bj.gpu_device())
except Exception as e:
    print('convoy sees no GPU:', e)
from importlib.metadata import version
try:
    print('numba-cuda', version('numba-cuda'))
    import numpy as np
    from numba import cuda
    @cuda.jit
    def bump(a):
        i = cuda.grid(1)
        if i < a.size:
            a[i] += 1.0
    a = cuda.to_device(np.zeros(64))
    bump[2, 32](a)
    print('numba.cuda kernel ran:', a.copy_to_host().sum() == 64.0, cuda.get_current_device().name)
except Exception as e:  # a probe: report, do not stop
    print('numba.cuda probe failed:', repr(e))
EOF"
        ;;
    tests)
        step tests 240 $PY -m pytest -m gpu -q -p no:cacheprovider \
            tests/test_backend_jax.py tests/test_net_jax.py tests/test_validation_cut_in.py
        ;;
    bench)
        step bench 90 $PY scripts/gpu_bench.py --trucks 10000000 --out "$OUT/bench.json"
        ;;
    net)
        step net 150 $PY scripts/gpu_net_bench.py --trucks 10000000 --out "$OUT/net.json"
        ;;
    fused)  # the fused CUDA kernel (convoy.sim.net_cuda): agreement with Numba, then its rate
        step fusedtest 240 $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_net_cuda.py \
            -k on_the_gpu
        step fused 240 $PY scripts/gpu_net_bench.py --kernel cuda --trucks 10000000 \
            --steps 100 --out "$OUT/fused.json"
        ;;
    general)  # the 1-D general step on the GPU (convoy.sim.kernel_cuda): agreement, speed
        step generaltest 240 $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_kernel_cuda.py \
            -k on_a_gpu
        for sc in v2v-loss-latency mixed-human-late-reaction; do
            step "general-$sc" 120 $PY scripts/gpu_general_bench.py --scenario "$sc" \
                --instances 100000 --out "$OUT/general-$sc.json"
        done
        step validate-general 120 $PY -c "import sys; from convoy.cli import main; \
sys.exit(main(sys.argv[1:]))" validate --backend gpu --scenario v2v-loss-latency \
            --samples 4096 --no-report
        # one chunk of 2^17 instances (CHUNK_INSTANCES_1D_GPU), built as arrays
        step validate-general-big 150 $PY -c "import sys; from convoy.cli import main; \
sys.exit(main(sys.argv[1:]))" validate --backend gpu --scenario v2v-loss-latency \
            --samples 131072 --no-report
        ;;
    validate)
        # the batched chunk is built as arrays (no Python per instance), 2^18 instances a
        # call on the GPU: 16,384 (one partial chunk, compilation included), then 2^20
        step validate 80 $PY -c "import sys; from convoy.cli import main; sys.exit(main(sys.argv[1:]))" \
            validate --backend gpu --scenario cacc-brake-batched --samples 16384 --no-report
        step validate-1m 150 $PY -c "import sys; from convoy.cli import main; sys.exit(main(sys.argv[1:]))" \
            validate --backend gpu --scenario cacc-brake-batched --samples 1048576 --no-report
        # the car cut-in on the network engine's JAX step: two chunks of 4,096 instances
        # (CHUNK_INSTANCES_NET_GPU), 400 steps each, its traces' FCD back to the host
        step validate-cutin 150 $PY -c "import sys; from convoy.cli import main; \
sys.exit(main(sys.argv[1:]))" validate --backend gpu --scenario car-cut-in --samples 8192 --no-report
        ;;
    mix)  # issue 7's headline figure: the whole library with its faults, --backend gpu (the
        # batched entry and the cut-in on JAX, the general ones on kernel_cuda)
        step mix 240 $PY -c "import sys; from convoy.cli import main; sys.exit(main(sys.argv[1:]))" \
            validate --backend gpu --samples 4096 --no-report
        ;;
    tests1d)
        step tests1d 120 $PY -m pytest -q -p no:cacheprovider \
            tests/test_backend_jax.py::test_gpu_agrees_with_numba
        ;;
    unroll)
        for u in 1 4 10; do
            TAIL=3 step "bench-u$u" 60 $PY scripts/gpu_bench.py --trucks 10000000 --unroll $u \
                --out "$OUT/bench-u$u.json"
        done
        for v in "1 0" "1 1" "4 0" "4 1"; do
            set -- $v
            inner=$([ "$2" = 1 ] && echo --unroll-inner)
            TAIL=3 step "net-s$1-i$2" 90 $PY scripts/gpu_net_bench.py --trucks 10000000 \
                --unroll-steps "$1" $inner --out "$OUT/net-s$1-i$2.json" \
                --dump-hlo "$OUT/net-s$1-i$2.hlo"
        done
        ;;
    summary)  # one line per JSON written so far
        $PY - "$OUT" <<'EOF'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    d = json.loads(f.read_text())
    keys = ("vehicle_steps_per_s", "compile_s", "t_short_s", "t_long_s", "fusions",
            "loop_fusions", "check")
    print(f.stem, {k: d[k] for k in keys if k in d})
EOF
        ;;
    *)
        echo "unknown step $s; allowed: env tests bench net fused general validate tests1d unroll summary" >&2
        exit 2
        ;;
    esac
done
