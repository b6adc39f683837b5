#!/usr/bin/env bash
# The fused CUDA kernel's rate under numba-cuda's compile options (device machine): no
# register cap, caps of 128, 96 and 64 (the default), fastmath; 10 million trucks each.
# OPTS="opts;opts;..." sets the list. Logs and JSON under $OUT.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
IFS=';' read -ra SWEEP <<< "${OPTS:---max-registers 0;--max-registers 128;--max-registers 96;--max-registers 64;--fastmath}"
for opts in "${SWEEP[@]}"; do
    name=fused$(echo "$opts" | tr -d ' -')
    timeout 90 python3 scripts/gpu_net_bench.py --kernel cuda --trucks 10000000 --steps 100 \
        $opts > "$OUT/$name.log" 2>&1
    echo "$name rc=$? $(grep -E '"(vehicle_steps_per_s|registers|local_bytes|collisions|driving)"' \
        "$OUT/$name.log" | tr -d ' \n')"
done
