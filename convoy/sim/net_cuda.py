"""The network step fused into one CUDA kernel: one block per batch instance, many steps per
launch, the instance's vehicles on chip (Numba CUDA).

The JAX step (``net_jax``) runs any world on a GPU, but as some forty XLA kernels a step that
each read part of the state back from memory: about 1.3 kB of traffic per vehicle-step, which
caps it near 3.6×10⁹ vehicle-steps/s on an H200 (docs/benchmarks.md). This kernel keeps a
batch instance's vehicles in one thread block for the whole launch: each thread holds its
vehicle's state in registers, the block shares positions, speeds, edges and the sorted order
in shared memory, and memory is touched only to load the state at the start and store it at
the end. A step has four block barriers (two more where some vehicle changed edge or the
order broke). It is the form the GPU benchmark (``scripts/gpu_net_bench.py --kernel cuda``) needs.

**What it runs** (the same model as ``net_kernel.run_net_steps``, which it is tested
against): each step, a vehicle whose last dwell is over leaves the network; the lane order
(front-most first, ties by vehicle number) is checked in one pass and rebuilt by counting
ranks when it no longer holds; leaders in the lane and along the route (``LOOKAHEAD_M``,
``LOOKAHEAD_EDGES``); stop lines at signals, full sites and closed lanes; priority junction
rules and zipper merges; the control law (``net_kernel.next_speed``, the CPU kernel's own
function, compiled for the GPU from the same source, as are the SUMO laws, the energy and
drag models and the random draws it calls); collisions; moves, energy with the platoon drag,
hard brakes, minimum time to collision, beacons with their loss draws; edge transitions and
arrivals at sites.

**Where it applies** (``unsupported`` names what a world lacks): every edge has one lane (no
lane changes, no cut-ins); each vehicle drives its last leg (no departures or insertions
during the launch: those stay with the CPU kernel and the JAX step); an instance's vehicles
are consecutive rows, at most 1,024 of them. One difference: a chain of collisions in one
step removes every vehicle of the chain here, where the serial CPU sweep skips a vehicle
whose leader it removed a moment earlier. No FCD or event rows are written: collisions and
arrivals are counted per instance.

Numba's CUDA target comes through ``cuda_target``. Without a GPU, ``NUMBA_ENABLE_CUDASIM=1``
runs the kernel in Numba's CUDA simulator (one Python thread per CUDA thread): slow, but the same
code, which is how the agreement test runs in CI.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numba import float64, int32, njit

from convoy.sim import net_kernel as nk
from convoy.sim.cuda_target import config, cuda, device_fn
from convoy.sim.net_jax import Fleet, NetTables, RunConfig, edge_sort_keys
from convoy.vehicle.aero import DRAG_G0_M, DRAG_KNOTS, drag_multiplier_table
from convoy.vehicle.energy import step_energy_kwh_prepared
from convoy.vehicle.rng import PURPOSE_LOSS, uniform

#: The most vehicles one instance (one thread block) may hold: CUDA's block size limit.
MAX_BLOCK = 1024
#: Registers per thread the kernel is compiled for. Uncapped it takes 152 (float64 state and
#: model), which leaves room for few warps per SM; capped, some spill to local memory but more
#: warps hide the latency. 10 million trucks on one H100 (scripts/gpu_fused_sweep.sh,
#: 2026-11-27, seven barriers a step): uncapped 8.3e9 vehicle-steps/s, 128: 9.7e9, 96: 1.03e10,
#: 80: 1.07e10, 64: 1.09e10, 48: 7.6e9.
MAX_REGISTERS = 64
#: Sort key of a vehicle off the road: behind every lane.
_OFF_ROAD_KEY = 2**30


@njit(cache=True, inline="always")
def _ahead_py(key_a: int, pos_a: float, a: int, key_c: int, pos_c: float, c: int) -> bool:
    """Whether vehicle ``a`` comes before ``c`` in the lane order: by lane key, then
    front-most first, ties by vehicle number (``net_kernel.sort_lanes``' order)."""
    return key_a < key_c or (key_a == key_c and (pos_a > pos_c or (pos_a == pos_c and a < c)))


_ahead = device_fn(_ahead_py)
_next_speed = device_fn(nk.next_speed)
_signal_stops = device_fn(nk.signal_stops)
_junction_rule = device_fn(nk.junction_rule)
_critical_gap_s = device_fn(nk.critical_gap_s)
_waits_for_occupant = device_fn(nk.waits_for_occupant)
_minor_hold = device_fn(nk.minor_hold)
_lane_open = device_fn(nk.lane_open)
_drag = device_fn(drag_multiplier_table)
_energy = device_fn(step_energy_kwh_prepared)
_uniform = device_fn(uniform)


def unsupported(tables: NetTables, fleet: Fleet) -> list[str]:
    """What a world has that the fused kernel does not run; empty when it runs it."""
    gaps: list[str] = []
    if int(tables.edge_lanes.max()) > 1:
        gaps.append("edges with more than one lane")
    active = (fleet.status != nk.ST_DONE) & (fleet.status != nk.ST_REMOVED)
    if np.any(fleet.status == nk.ST_WAITING):
        gaps.append("vehicles waiting to depart (insertion)")
    if np.any(active & (fleet.leg + 1 < fleet.leg_end)):
        gaps.append("vehicles with legs after the present one (departures)")
    inst = fleet.inst
    if inst.size and np.any(np.diff(inst) < 0):
        gaps.append("instances whose vehicles are not consecutive rows")
    if inst.size and int(np.bincount(inst).max()) > MAX_BLOCK:
        gaps.append(f"instances of more than {MAX_BLOCK} vehicles")
    return gaps


@dataclass
class CudaResult:
    """A fused run: the fleet as it stands after it, and per instance the collisions (one per
    colliding follower) and the arrivals at the end of a route."""

    fleet: Fleet
    collisions: np.ndarray
    arrivals: np.ndarray


def block_size(fleet: Fleet) -> int:
    """Threads per block: the largest instance, rounded up to whole warps (on a GPU)."""
    most = int(np.bincount(fleet.inst).max()) if fleet.inst.size else 1
    if config.ENABLE_CUDASIM:
        return most  # one Python thread each: no idle ones
    return max(32, -(-most // 32) * 32)


@functools.lru_cache(maxsize=8)
def _kernel(
    block: int, n_edges: int, fastmath: bool = False, max_registers: int | None = MAX_REGISTERS
) -> Any:
    """The kernel for ``block`` threads and ``n_edges`` edges (shared arrays need both);
    ``fastmath`` and ``max_registers`` are numba-cuda's options (for measurements)."""
    b_sz = block
    e_sz = n_edges
    opts: dict[str, Any] = {"fastmath": True} if fastmath else {}
    if max_registers is not None and not config.ENABLE_CUDASIM:  # the simulator has none
        opts["max_registers"] = max_registers

    @cuda.jit(**opts)
    def run(  # type: ignore[no-untyped-def]
        edge_len_m, edge_lanes, edge_speed_mps, edge_to, edge_rank, edge_arm_rad, edge_links,
        edge_key, node_junction, pred_ptr, pred_edge, succ_ptr, succ_edge, sig, lane_closed,
        edge_cap_mps,
        vt, cacc_p, acc_p, pt, e_prep, wheel_max_w, edge_cos, edge_sin, drag_knots, drag_g0_m,
        route_edges, leg_lo, leg_hi, leg_dwell_s, leg_site, site_capacity,
        inst_start, blk_inst, local, vtype, pred, plat_next, drag_row,
        speed_cap_mps, set_speed_mps, extra_gap_m,
        status, edge, pos_m, speed_mps, accel_mps2, route_ptr, leg, ready_s, mode,
        beacon_age_s, energy_kwh, distance_m, min_ttc_s, hard_brakes, gap_now, leader,
        site_load, collisions, arrivals,
        step0, n_steps, dt_s, seed, loss_p, beacon_period,
    ):  # fmt: skip
        b = cuda.blockIdx.x
        t = cuda.threadIdx.x
        lo = inst_start[b]
        nb = inst_start[b + 1] - lo
        k_inst = blk_inst[b]
        s_pos = cuda.shared.array(b_sz, float64)
        s_spd = cuda.shared.array(b_sz, float64)
        s_gap = cuda.shared.array(b_sz, float64)
        s_key = cuda.shared.array(b_sz, int32)
        s_edge = cuda.shared.array(b_sz, int32)
        s_rp = cuda.shared.array(b_sz, int32)
        s_leg = cuda.shared.array(b_sz, int32)
        s_vty = cuda.shared.array(b_sz, int32)
        s_order = cuda.shared.array(b_sz, int32)
        s_rank = cuda.shared.array(b_sz, int32)
        s_dead = cuda.shared.array(b_sz, int32)
        s_bs = cuda.shared.array(e_sz, int32)  # a lane's first place in the order (-1: empty)
        s_be = cuda.shared.array(e_sz, int32)  # one past its last
        s_flag = cuda.shared.array(1, int32)  # the order must be rebuilt this step
        mine = t < nb
        i = lo + t
        # the vehicle's state, in registers for the whole launch
        st = nk.ST_DONE
        e = 0
        p = 0.0
        v = 0.0
        acc = 0.0
        rp = 0
        lg = 0
        rdy = 0.0
        md = 0
        bage = 0.0
        en = 0.0
        dist = 0.0
        ttc = 0.0
        hb = 0
        gnow = nk.NO_GAP
        ldr = -1
        ty = 0
        my_pred = -1
        my_next = -1
        pred_local = 0
        loc = 0
        drow = -1
        cap = 0.0
        setv = 0.0
        xgap = 0.0
        if mine:
            st = status[i]
            e = edge[i]
            p = pos_m[i]
            v = speed_mps[i]
            acc = accel_mps2[i]
            rp = route_ptr[i]
            lg = leg[i]
            rdy = ready_s[i]
            md = mode[i]
            bage = beacon_age_s[i]
            en = energy_kwh[i]
            dist = distance_m[i]
            ttc = min_ttc_s[i]
            hb = hard_brakes[i]
            gnow = gap_now[i]
            ldr = leader[i] - lo if leader[i] >= 0 else -1
            ty = vtype[i]
            my_pred = pred[i] - lo if pred[i] >= 0 else -1
            my_next = plat_next[i] - lo if plat_next[i] >= 0 else -1
            if my_pred >= 0:
                pred_local = local[pred[i]]
            loc = local[i]
            drow = drag_row[i]
            cap = speed_cap_mps[i]
            setv = set_speed_mps[i]
            xgap = extra_gap_m[i]
        s_vty[t] = ty
        s_gap[t] = gnow
        moved = False  # this vehicle moved to another edge in the step before
        inst_seed = seed + k_inst * nk.INSTANCE_SEED_STRIDE
        n_prev = -1
        for s in range(n_steps):
            step = step0 + s
            t_s = step * dt_s
            # ---- 0. a vehicle whose last dwell is over leaves the network ----------------
            if st == nk.ST_DWELLING and t_s >= rdy:
                site = leg_site[lg]
                if site >= 0:
                    cuda.atomic.sub(site_load, (k_inst, site), 1)
                st = nk.ST_DONE
            drv = st == nk.ST_DRIVING
            s_pos[t] = p
            s_spd[t] = v
            s_edge[t] = e if drv else -1
            s_key[t] = edge_key[e] if drv else _OFF_ROAD_KEY
            s_rp[t] = rp
            s_leg[t] = lg
            s_dead[t] = 0
            if t == 0:
                s_flag[0] = 0
            n_drv = cuda.syncthreads_count(1 if drv else 0)
            # ---- the lane order: checked in one pass, rebuilt by counting ranks ----------
            bad = n_drv != n_prev
            if not bad and t + 1 < n_drv:
                a_ = s_order[t]
                c_ = s_order[t + 1]
                bad = not _ahead(s_key[a_], s_pos[a_], a_, s_key[c_], s_pos[c_], c_)
            # the lanes' places change only when the order or an edge does
            if bad:
                s_flag[0] = 1
            if cuda.syncthreads_or(1 if (bad or moved) else 0):
                if s_flag[0] != 0 and drv:
                    r = 0
                    for j in range(nb):
                        if _ahead(s_key[j], s_pos[j], j, s_key[t], p, t):
                            r += 1
                    s_order[r] = t
                for q in range(t, e_sz, b_sz):
                    s_bs[q] = -1
                    s_be[q] = -1
                cuda.syncthreads()
                if t < n_drv:
                    j = s_order[t]
                    s_rank[j] = t
                    ej = s_edge[j]
                    if t == 0 or s_edge[s_order[t - 1]] != ej:
                        s_bs[ej] = t
                    if t == n_drv - 1 or s_edge[s_order[t + 1]] != ej:
                        s_be[ej] = t + 1
                cuda.syncthreads()
            n_prev = n_drv
            moved = False
            # ---- 1. leaders, stop lines, control ------------------------------------------
            vn = v
            if drv:
                gap = nk.NO_GAP
                v_lead = 0.0
                ld = -1
                r = s_rank[t]
                if r > s_bs[e]:
                    ld = s_order[r - 1]
                    gap = s_pos[ld] - vt[s_vty[ld], nk.VT_LENGTH_M] - p
                    v_lead = s_spd[ld]
                else:
                    d_ahead = edge_len_m[e] - p
                    rp2 = rp
                    hops = 0
                    while d_ahead < nk.LOOKAHEAD_M and hops < nk.LOOKAHEAD_EDGES:
                        rp2 += 1
                        if rp2 >= leg_hi[lg]:
                            break
                        e2 = route_edges[rp2]
                        if not _lane_open(edge_lanes, lane_closed, e2, 0):
                            break
                        if s_bs[e2] >= 0:
                            ld = s_order[s_be[e2] - 1]
                            gap = d_ahead + s_pos[ld] - vt[s_vty[ld], nk.VT_LENGTH_M]
                            v_lead = s_spd[ld]
                            break
                        d_ahead += edge_len_m[e2]
                        hops += 1
                ldr = ld
                gnow = gap
                if ld >= 0 and gap >= 0.0 and v > s_spd[ld]:
                    ttc = min(ttc, gap / (v - s_spd[ld]))
                d_end = edge_len_m[e] - p
                stop = False
                past_m = 0.0
                if r == s_bs[e] and d_end < max(nk.JUNCTION_ZONE_M, v * 6.0):
                    last = rp + 1 >= leg_hi[lg]
                    node = edge_to[e]
                    stop = _signal_stops(t_s, sig, e, v, vt[ty, nk.VT_DECEL_MPS2], d_end)
                    if last:
                        site = leg_site[lg]
                        if site >= 0 and site_load[k_inst, site] >= site_capacity[site]:
                            stop = True
                    else:
                        e_next = route_edges[rp + 1]
                        if not _lane_open(edge_lanes, lane_closed, e_next, 0):
                            stop = True
                        blind = _minor_hold(
                            node_junction[node] == nk.JT_PRIORITY, sig[e, 0] > 0.0,
                            (edge_links[e, 1] >> edge_links[e_next, 0]) & 1 == 1,
                            d_end, v, vt[ty, nk.VT_DECEL_MPS2],
                        )  # fmt: skip
                        if not stop:
                            # junction rules: yield to major roads, zipper with equal ones
                            crit = _critical_gap_s(
                                d_end, v, vt[ty, nk.VT_LENGTH_M], vt[ty, nk.VT_ACCEL_MPS2]
                            )
                            for q in range(pred_ptr[node], pred_ptr[node + 1]):
                                e_o = pred_edge[q]
                                if e_o == e or sig[e_o, 0] > 0.0 or s_bs[e_o] < 0:
                                    continue
                                j = s_order[s_bs[e_o]]
                                d_o = edge_len_m[e_o] - s_pos[j]
                                if d_o > nk.JUNCTION_ZONE_M + s_spd[j] * 6.0:
                                    continue
                                rj = s_rp[j] + 1
                                goes_on = rj < leg_hi[s_leg[j]]
                                e_on = route_edges[rj] if goes_on else e_o
                                yields, gap, v_lead, ld = _junction_rule(
                                    node_junction[node] == nk.JT_PRIORITY,
                                    edge_rank[e], edge_rank[e_o], sig[e, 0] > 0.0, crit,
                                    d_end, d_o, s_spd[j], vt[s_vty[j], nk.VT_LENGTH_M], j < t,
                                    goes_on, goes_on and e_on == e_next,
                                    edge_arm_rad[e, 0], edge_arm_rad[e_next, 1],
                                    edge_arm_rad[e_o, 0], edge_arm_rad[e_on, 1],
                                    gap, v_lead, ld,
                                )  # fmt: skip
                                stop = stop or yields
                        if not stop and node_junction[node] == nk.JT_PRIORITY and sig[e, 0] <= 0.0:
                            # a vehicle still in the junction on a path that crosses this one
                            for q in range(succ_ptr[node], succ_ptr[node + 1]):
                                e_f = succ_edge[q]
                                if e_f == e_next or s_bs[e_f] < 0:
                                    continue
                                f = s_order[s_be[e_f] - 1]
                                rp_f = s_rp[f]
                                if rp_f <= leg_lo[s_leg[f]]:
                                    continue
                                e_in = route_edges[rp_f - 1]
                                if e_in != e and _waits_for_occupant(
                                    d_end, v, edge_arm_rad[e, 0], edge_arm_rad[e_next, 1],
                                    edge_arm_rad[e_in, 0], edge_arm_rad[e_f, 1], s_pos[f],
                                    vt[s_vty[f], nk.VT_LENGTH_M], s_spd[f],
                                ):  # fmt: skip
                                    stop = True
                        if blind and not stop:
                            stop = True
                            past_m = nk.VISIBILITY_M
                if stop:
                    g_s = d_end + past_m + vt[ty, nk.VT_MIN_GAP_M] - 0.5
                    if g_s < gap:
                        gap = g_s
                        v_lead = 0.0
                        ld = -2
                coop = ld >= 0 and ld == my_pred and bage <= nk.STALE_BEACON_S
                vn, md = _next_speed(
                    vt, cacc_p, acc_p, pt, wheel_max_w, ty,
                    edge_speed_mps[e], edge_cap_mps[e], edge_cos[e], edge_sin[e],
                    cap, setv, xgap, v, acc, gap, v_lead, coop, md, dt_s,
                )  # fmt: skip
            elif mine:
                ldr = -1
            s_gap[t] = gnow
            cuda.syncthreads()
            # ---- 2. collisions -------------------------------------------------------------
            if drv and ldr >= 0 and gnow < 0.0 and s_edge[ldr] >= 0:
                met = True
                if s_edge[ldr] != e:
                    rp_l = s_rp[ldr]
                    if rp_l <= leg_lo[s_leg[ldr]] or route_edges[rp_l - 1] != e:
                        met = False
                if met:
                    s_dead[t] = 1
                    s_dead[ldr] = 1
                    cuda.atomic.add(collisions, b, 1)
            cuda.syncthreads()
            if drv and s_dead[t] != 0:
                st = nk.ST_REMOVED
                drv = False
            # ---- 4. move, energy, stats ----------------------------------------------------
            if drv:
                a = (vn - v) / dt_s
                if vt[ty, nk.VT_IS_TRUCK] > 0.0:
                    g_d = gnow if (ldr >= 0 and ldr == my_pred) else math.nan
                    if my_pred < 0 and my_next >= 0:
                        g_d = s_gap[my_next]
                    drag = _drag(drag_knots, drag_g0_m, drow, g_d) if drow >= 0 else 1.0
                    en += _energy(
                        e_prep[ty], vt[ty, nk.VT_MASS_KG], vn, a, edge_cos[e], edge_sin[e],
                        drag, vt[ty, nk.VT_CD_A_M2], vt[ty, nk.VT_CRR],
                    )  # fmt: skip
                if a < -nk.HARD_BRAKE_MPS2 and acc >= -nk.HARD_BRAKE_MPS2:
                    hb += 1
                acc = a
                v = vn
                p += vn * dt_s
                dist += vn * dt_s
                bage += dt_s
                due = my_pred >= 0 and (step + pred_local) % beacon_period == 0
                if due and (
                    loss_p <= 0.0 or _uniform(inst_seed, loc, step, PURPOSE_LOSS) >= loss_p
                ):
                    bage = 0.0
                # edge transitions and arrivals
                while p >= edge_len_m[e]:
                    if rp + 1 >= leg_hi[lg]:
                        dist -= p - edge_len_m[e]
                        site = leg_site[lg]
                        if site >= 0:
                            cuda.atomic.add(site_load, (k_inst, site), 1)
                        st = nk.ST_DWELLING
                        rdy = t_s + dt_s + leg_dwell_s[lg]
                        cuda.atomic.add(arrivals, b, 1)
                        break
                    p -= edge_len_m[e]
                    rp += 1
                    e = route_edges[rp]
                    moved = True
            # no barrier here: after the one above, others read only s_gap (written in the
            # next step's control, behind two barriers) and their own s_dead
        if mine:
            status[i] = st
            edge[i] = e
            pos_m[i] = p
            speed_mps[i] = v
            accel_mps2[i] = acc
            route_ptr[i] = rp
            leg[i] = lg
            ready_s[i] = rdy
            mode[i] = md
            beacon_age_s[i] = bage
            energy_kwh[i] = en
            distance_m[i] = dist
            min_ttc_s[i] = ttc
            hard_brakes[i] = hb
            gap_now[i] = gnow
            leader[i] = ldr + lo if ldr >= 0 else -1

    return run


#: Fleet fields the kernel changes, in its argument order.
STATE_FIELDS = (
    "status",
    "edge",
    "pos_m",
    "speed_mps",
    "accel_mps2",
    "route_ptr",
    "leg",
    "ready_s",
    "mode",
    "beacon_age_s",
    "energy_kwh",
    "distance_m",
    "min_ttc_s",
    "hard_brakes",
    "gap_now_m",
    "leader",
    "site_load",
)


#: The state fields kept as integers on the device (the others are float64).
_STATE_DTYPES: dict[str, Any] = {
    "status": np.int8,
    "edge": np.int32,
    "route_ptr": np.int32,
    "leg": np.int32,
    "mode": np.int32,
    "hard_brakes": np.int32,
    "leader": np.int32,
    "site_load": np.int32,
}


class FusedWorld:
    """A world on the device, ready for launches: the tables, the fleet's fixed columns and
    its state (``state``: device arrays, in ``STATE_FIELDS`` order), and the per-instance
    counters.

    Args:
        tables, fleet, cfg: as for ``net_jax`` (``tables_from_sim``, ``fleet_from_sim`` or
            ``replicate``, ``config_from_sim``).
        edge_cap_mps: (E,) speed caps of the edges now; lane_closed: (E, L) closed lanes.
        fastmath, max_registers: numba-cuda's compile options (``MAX_REGISTERS``; None: no
            cap).

    Raises:
        ValueError: if the world has what the kernel does not run (``unsupported``).
    """

    def __init__(
        self,
        tables: NetTables,
        fleet: Fleet,
        cfg: RunConfig,
        edge_cap_mps: np.ndarray,
        lane_closed: np.ndarray,
        fastmath: bool = False,
        max_registers: int | None = MAX_REGISTERS,
    ) -> None:
        gaps = unsupported(tables, fleet)
        if gaps:
            raise ValueError("the fused CUDA kernel does not run: " + "; ".join(gaps))
        self.fleet = fleet
        self.cfg = cfg
        self.block = block_size(fleet)
        n_edges = int(tables.edge_len_m.shape[0])
        self._kernel = _kernel(self.block, n_edges, fastmath, max_registers)
        counts = np.bincount(fleet.inst, minlength=cfg.instances)
        present = np.flatnonzero(counts)
        self.n_blocks = int(present.size)
        starts = np.zeros(cfg.instances + 1, np.int64)
        starts[1:] = np.cumsum(counts)
        inst_start = np.append(starts[present], starts[-1]).astype(np.int32)
        e_prep, wheel_max_w, edge_cos, edge_sin = nk.call_constants(
            tables.vt, tables.pt, cfg.ambient_c, cfg.dt_s, tables.edge_grade
        )
        edge_key = edge_sort_keys(tables)

        def dev(a: np.ndarray, dtype: Any = None) -> Any:
            return cuda.to_device(np.ascontiguousarray(a if dtype is None else a.astype(dtype)))

        self.consts = (
            dev(tables.edge_len_m, np.float64),
            dev(tables.edge_lanes, np.int32),
            dev(tables.edge_speed_mps, np.float64),
            dev(tables.edge_to, np.int32),
            dev(tables.edge_rank, np.int32),
            dev(tables.edge_arm_rad, np.float64),
            dev(tables.edge_links, np.int64),
            dev(edge_key, np.int32),
            dev(tables.node_junction, np.int32),
            dev(tables.pred_ptr, np.int32),
            dev(tables.pred_edge, np.int32),
            dev(tables.succ_ptr, np.int32),
            dev(tables.succ_edge, np.int32),
            dev(tables.sig, np.float64),
            dev(lane_closed, np.int8),
            dev(edge_cap_mps, np.float64),
            dev(tables.vt, np.float64),
            dev(tables.cacc, np.float64),
            dev(tables.acc, np.float64),
            dev(tables.pt, np.float64),
            dev(e_prep),
            dev(wheel_max_w),
            dev(edge_cos),
            dev(edge_sin),
            dev(DRAG_KNOTS),
            dev(DRAG_G0_M),
            dev(tables.route_edges, np.int32),
            dev(tables.leg_lo, np.int32),
            dev(tables.leg_hi, np.int32),
            dev(tables.leg_dwell_s, np.float64),
            dev(tables.leg_site, np.int32),
            dev(tables.site_capacity, np.int32),
            dev(inst_start),
            dev(present, np.int32),
            dev(fleet.local, np.int32),
            dev(fleet.vtype, np.int32),
            dev(fleet.pred, np.int32),
            dev(fleet.plat_next, np.int32),
            dev(fleet.drag_row, np.int32),
            dev(fleet.speed_cap_mps, np.float64),
            dev(fleet.set_speed_mps, np.float64),
            dev(fleet.extra_gap_m, np.float64),
        )
        self.state = [
            dev(getattr(fleet, f), _STATE_DTYPES.get(f, np.float64)) for f in STATE_FIELDS
        ]
        self.collisions = cuda.to_device(np.zeros(self.n_blocks, np.int64))
        self.arrivals = cuda.to_device(np.zeros(self.n_blocks, np.int64))
        self._present = present
        self.step = int(cfg.step0)

    def launch(self, n_steps: int, state: list[Any] | None = None) -> None:
        """Run ``n_steps`` steps on ``state`` (default: this world's) from ``self.step``,
        without waiting for the device; the world's clock advances only for its own state."""
        cfg = self.cfg
        st = self.state if state is None else state
        self._kernel[self.n_blocks, self.block](
            *self.consts,
            *st,
            self.collisions,
            self.arrivals,
            self.step,
            n_steps,
            cfg.dt_s,
            cfg.seed,
            cfg.loss,
            cfg.beacon_period_steps,
        )
        if state is None:
            self.step += n_steps

    def resources(self) -> dict[str, int]:
        """Registers and local (spilled) bytes per thread of the compiled kernel."""
        k = self._kernel
        try:
            return {
                "registers": int(next(iter(k.get_regs_per_thread().values()))),
                "local_bytes": int(next(iter(k.get_local_mem_per_thread().values()))),
            }
        except (AttributeError, StopIteration, TypeError):  # the simulator has neither
            return {}

    def copy_state(self) -> list[Any]:
        """A copy of the state on the device (for timed runs from the same start)."""
        out = []
        for a in self.state:
            c = cuda.device_array_like(a)
            c.copy_to_device(a)
            out.append(c)
        return out

    def result(self) -> CudaResult:
        """The fleet and the counters, copied back to the host."""
        cuda.synchronize()
        fleet = self.fleet
        fields_ = {
            f: a.copy_to_host().astype(getattr(fleet, f).dtype)
            for f, a in zip(STATE_FIELDS, self.state, strict=True)
        }
        coll = np.zeros(self.cfg.instances, np.int64)
        arr = np.zeros(self.cfg.instances, np.int64)
        coll[self._present] = self.collisions.copy_to_host()
        arr[self._present] = self.arrivals.copy_to_host()
        return CudaResult(replace(fleet, **fields_), coll, arr)


def run_fused(
    tables: NetTables,
    fleet: Fleet,
    cfg: RunConfig,
    edge_cap_mps: np.ndarray,
    lane_closed: np.ndarray,
    n_steps: int,
) -> CudaResult:
    """``n_steps`` steps of the fused kernel from the fleet as it stands (one launch)."""
    world = FusedWorld(tables, fleet, cfg, edge_cap_mps, lane_closed)
    world.launch(n_steps)
    return world.result()
