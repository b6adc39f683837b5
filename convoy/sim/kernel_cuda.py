"""The 1-D engine's general step on a GPU: ``kernel.run_instances`` with one CUDA thread per
batch instance (Numba CUDA).

Each thread runs its instance's trucks through the steps exactly as ``kernel.run_instances``
runs them on a CPU core: the same function (``kernel._truck_range``, compiled for the device
by numba-cuda from its source, with the SUMO laws, controllers, channel, hazards, signals and
energy model it calls), the same double-buffered state, the same recording and metrics window
(``kernel.sample_metrics``), all its steps in one call. One model
function differs by design: the platoon drag is the Hussein-Rakha power law evaluated
(``aero.drag_power_law``) where the CPU interpolates its table (236 kB, more than a GPU's
constant memory holds); they agree to 1e-6. So every feature
of the general step (actuator lag, latency and bursty loss, sensor and reaction delays,
mixed controllers, hazards and RSUs, signals) runs on the GPU, for the scenarios
``engine.simulate_many`` groups by shape. Instances are independent, so a thread never waits
for another.

On a GPU the results agree with the CPU's to rounding (the device fuses multiplies and adds);
in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``; how CI tests it: no GPU there) the
kernel calls the CPU's compiled function, and they are equal bit for bit.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from convoy.sim import kernel
from convoy.sim.cuda_target import cuda, device_fn

#: Threads per block (instances per block): one warp's multiple; instances are independent.
THREADS_PER_BLOCK = 64

_truck_range = device_fn(kernel._truck_range)


@functools.lru_cache(maxsize=1)
def _kernel() -> Any:
    """The kernel, compiled on first use."""

    @cuda.jit
    def run(  # type: ignore[no-untyped-def]
        n_steps, rec_every,
        rec_pos, rec_speed, rec_accel, rec_mode, rec_energy, rec_odd, rec_spat,
        model, leader, follower, head, psize, ppos, phys, ctrl, accp, pt, ch, outages,
        prof_t, prof_v, env, hz, rsus, sg,
        pos, speed, accel, u, mode, ctrl_mode, energy, rx_pred, rx_head, ge_bad, hist,
        collided_at, collision_speed, min_gap, min_ttc, hard_brakes, fallback_steps,
        emergency_steps, hz_known, odd_flags, rsi_received_at, sig_known, spat_phase,
        spat_received_at, signal_seen_at, red_light_stops, red_light_crossings, metrics,
        step, rows,
    ):  # fmt: skip
        b = cuda.grid(1)
        if b >= rows.shape[0]:
            return
        n = model.shape[1]
        s0 = step[b, 0]
        # the flat view run_steps_py makes once per call
        ge_flat = ge_bad[b].reshape(ge_bad.shape[1] * ge_bad.shape[2])
        _truck_range(
            0, n, s0, n_steps, s0, rec_every,
            rec_pos[b], rec_speed[b], rec_accel[b], rec_mode[b], rec_energy[b], rec_odd[b],
            rec_spat[b],
            model[b], leader[b], follower[b], head[b], psize[b], ppos[b], phys[b],
            ctrl[b], accp[b], pt[b], ch[b], outages[b], prof_t[b], prof_v[b], env[b],
            pos[b], speed[b], accel[b], u[b], mode[b], ctrl_mode[b], energy[b],
            rx_pred[b], rx_head[b], ge_flat, hist[b], collided_at[b], collision_speed[b],
            min_gap[b], min_ttc[b], hard_brakes[b], fallback_steps[b],
            emergency_steps[b], hz[b], rsus[b], hz_known[b], odd_flags[b],
            rsi_received_at[b], sg[b], sig_known[b], spat_phase[b], spat_received_at[b],
            signal_seen_at[b], red_light_stops[b], red_light_crossings[b], metrics[b],
        )  # fmt: skip
        rec = n_steps // rec_every if rec_every > 0 else 0
        step[b, 0] = s0 + n_steps
        rows[b] = rec

    return run


def run_instances(n_steps: int, rec_every: int, *stacked: np.ndarray) -> None:
    """``kernel.run_instances(n_steps, rec_every, *stacked)`` on the GPU: the same stacked
    (B, ...) arrays, the last being ``rows`` (B,); the arrays are copied to the device and
    back (the state, the recordings and ``rows`` are changed in place)."""
    *arrays, rows = stacked
    dev = [cuda.to_device(np.ascontiguousarray(a)) for a in (*arrays, rows)]
    n_inst = rows.shape[0]
    blocks = -(-n_inst // THREADS_PER_BLOCK)
    _kernel()[blocks, THREADS_PER_BLOCK](n_steps, rec_every, *dev)
    for host, d in zip((*arrays, rows), dev, strict=True):
        host[...] = d.copy_to_host()
