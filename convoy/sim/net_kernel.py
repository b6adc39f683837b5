"""Compiled step of the network engine: many vehicles on many edges and lanes.

One step, for every instance of the batch at once (an instance is an independent copy of
the world; vehicles carry their instance in ``inst`` and never see another instance's
vehicles):

1. **Sort.** Every vehicle on the road has a lane key ``(inst * E + edge) * L + lane``
   (``L`` the most lanes any edge has). A stable counting sort by key, then an insertion
   sort by position inside each lane, gives the lanes in order, front-most first. The
   previous step's order is the starting point, so the insertion sort only repairs the
   few vehicles that entered a lane or overtook: O(N + K) per step, no O(N²) anywhere.
2. **Sweep.** Each vehicle's leader is the one before it in its lane; the lane's head
   looks along its route into the next edges. The same sweep finds collisions: a negative
   bumper gap is a collision, reported and counted; both vehicles leave the road (SUMO's
   ``--collision.action remove``), nothing is silently resolved.
3. **Stop lines.** Near the end of its edge a lane head may have to stop at the line: a red
   signal, a minor road yielding to a major one at a priority junction, a lane that ends,
   a full site at the end of its trip. A merge (two incoming edges that feed the same next
   edge) orders the lane heads by arrival time and the later one follows the earlier one
   projected onto its own approach (SUMO's virtual leader at a zipper).
4. **Control.** Human drivers and background cars: IDM (Treiber, Hennecke & Helbing 2000).
   Platoon followers: SUMO's CACC law, which falls back to ACC when the vehicle ahead is not
   its platoon predecessor (a car that cut in) or its beacons are stale. Solo L4 trucks:
   SUMO's ACC law. Speeds are finalised as SUMO does (``sumo_finalize_speed``).
5. **Lane changes** (every ``lc_period`` steps, staggered by vehicle): MOBIL (Kesting,
   Treiber & Helbing, TRR 1999, 2007) for cars and solo trucks, with a keep-right bias and a
   mandatory change where the lane ends. A car may cut into a platoon gap only with a
   probability that grows with the gap. Platoons keep their lane and change as one unit,
   decided by the head when the whole platoon fits in the target lane.
6. **Move.** ``pos += v_next * dt`` (SUMO's Euler update); a vehicle that passes the end of
   its edge moves to the next edge of its route, or arrives at the site at the route's end
   (dwell, then its next leg) or leaves the network.

Positions are float64 metres from the start of the vehicle's current edge (centimetre
precision on any route length). Random draws come from the counter-based generator keyed
by (seed of the instance, vehicle number in its instance, step, purpose), so results do not
depend on thread scheduling, and instance 0 of a batch is the unbatched run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import get_num_threads, njit, prange, set_num_threads

from convoy.road.signals import PHASE_GREEN, PHASE_RED, PHASE_YELLOW
from convoy.sim.jit import NO_REFCOUNTS, compiled_variant
from convoy.vehicle.aero import drag_multiplier_row
from convoy.vehicle.controllers import MODE_FOLLOW, idm_accel_terms
from convoy.vehicle.energy import (
    EP_LEN,
    PT_FULL_POWER_SPEED_MPS,
    PT_ROTATING_MASS_FACTOR,
    energy_prep,
    max_traction_accel_angle,
    step_energy_kwh_prepared,
    wheel_power_max_w,
)
from convoy.vehicle.rng import PURPOSE_LOSS, uniform
from convoy.vehicle.sumo_cfm import (
    acc_next_speed,
    cacc_next_speed,
    sumo_finalize_speed,
)
from convoy.vehicle.truck import grade_angle

# --- vehicle status --------------------------------------------------------------------------
ST_WAITING = 0  # not yet on the road (before departure, or queued at a site)
ST_DRIVING = 1
ST_DWELLING = 2  # at a site, loading or unloading
ST_DONE = 3  # trip plan finished, off the network
ST_REMOVED = 4  # removed after a collision
ST_SHOULDER = 5  # stopped on the shoulder after a minimal-risk manoeuvre, off the lanes

# --- vehicle-type table columns --------------------------------------------------------------
VT_LENGTH_M = 0
VT_MIN_GAP_M = 1
VT_ACCEL_MPS2 = 2
VT_DECEL_MPS2 = 3
VT_EMERGENCY_DECEL_MPS2 = 4
VT_MAX_SPEED_MPS = 5
VT_MODEL = 6
VT_TIME_GAP_S = 7  # IDM's T
VT_IDM_DELTA = 8
VT_IS_TRUCK = 9
VT_MASS_KG = 10
VT_CD_A_M2 = 11
VT_CRR = 12
VT_SPEED_FACTOR = 13
VT_CAN_CHANGE_LANE = 14
VT_SIZE = 15

# Models of the network engine (the vehicle layer's codes where they coincide).
NM_IDM = 0
NM_ACC = 1
NM_CACC = 2

# --- event codes -----------------------------------------------------------------------------
EV_DEPART = 0
EV_ARRIVE_SITE = 1
EV_LEAVE_SITE = 2
EV_FINISH = 3
EV_COLLISION = 4
EV_CUT_IN = 5
EV_LANE_CHANGE = 6
EV_PLATOON_LANE_CHANGE = 7
EV_SIZE = 6  # step, code, vehicle, other, edge, lane

# --- speed-cap ramps (``cap_ramps``, float64 rows; ``NetSim.schedule_speed_ramp``) -------------
#: the vehicle (its number), the first step of the ramp, its length in steps, the speed it
#: starts from [m/s], the rate it falls at [m/s²] and the cap it stops at [m/s]. Over step
#: ``first + j`` (j < length) the vehicle's cap is ``max(from - rate * (j + 1) * dt, floor)``;
#: from step ``first + length`` on, no cap (``inf``).
RAMP_VEHICLE = 0
RAMP_FIRST_STEP = 1
RAMP_STEPS = 2
RAMP_FROM_MPS = 3
RAMP_RATE_MPS2 = 4
RAMP_FLOOR_MPS = 5
RAMP_SIZE = 6


@njit(cache=True, inline="always")
def ramp_cap_mps(from_mps: float, rate_mps2: float, j: int, dt_s: float, floor_mps: float) -> float:
    """A speed-cap ramp's cap over its ``j``-th step (``RAMP_*``): the speed at its end."""
    return max(from_mps - rate_mps2 * (j + 1) * dt_s, floor_mps)


EVENT_NAMES = (
    "depart",
    "arrive-site",
    "leave-site",
    "finish",
    "collision",
    "cut-in",
    "lane-change",
    "platoon-lane-change",
)

# --- junction types (the road layer's order) -------------------------------------------------
JT_PRIORITY = 0
JT_SIGNAL = 1

# --- behaviour constants ---------------------------------------------------------------------
#: Lane heads look this far along their route for a leader [m] (SUMO looks as far as it can
#: brake; 600 m covers a truck's stopping distance from 25 m/s with a wide margin).
LOOKAHEAD_M = 600.0
#: At most this many edges ahead.
LOOKAHEAD_EDGES = 4
#: Critical gap a minor-road vehicle accepts at a priority junction [s] (HCM 6th ed.,
#: Exhibit 20-11: 6.2-7.1 s for minor-street turns; 4 s for a merge, Troutbeck 1986), or
#: longer where the vehicle needs longer to clear the junction (``critical_gap_s``).
CRITICAL_GAP_S = 5.0
#: Distance within which junction rules are checked [m].
JUNCTION_ZONE_M = 150.0
#: A vehicle waits at its line for one still in the junction on a path that crosses its
#: own if it would reach the node less than this after that one's rear has cleared it [s]
#: (SUMO's ``jmTimegapMinor``, 1 s: how long a foe's occupation of a link is still respected
#: after it has left).
CLEAR_MARGIN_S = 1.0
#: A movement that turns more than this away from straight on is a turn [rad] (45°).
TURN_RAD = math.pi / 4.0
#: Where an arm's incoming and outgoing lanes meet the node, as angles around it: the
#: incoming lane this much counter-clockwise of the arm's direction, the outgoing one as much
#: clockwise (seen from the node, traffic keeps right) [rad].
ARM_SIDE_RAD = 1e-3
_TWO_PI = 2.0 * math.pi
#: How near its stop line a vehicle on a minor movement (``network.junction_links``) sees
#: the junction's other approaches [m]. Farther out it comes on as if to stop this far past
#: the line, so that it reaches the line slowly and without a hard brake (unless it could no
#: longer stop by that point at its comfortable deceleration, as at a yellow light: a
#: platoon's follower that comes to lead the lane near the line). SUMO's default
#: connection visibility (netconvert, 4.5 m): there a truck alone on a minor link is slowest
#: 4.5 m before the line (2.7 m/s; ``scripts/junction_vs_sumo.py``).
VISIBILITY_M = 4.5
#: MOBIL politeness, switching threshold, safe deceleration and keep-right bias (Kesting,
#: Treiber & Helbing 2007, Table 1: p = 0.5... 1, a_th = 0.1 m/s², b_safe = 4 m/s²,
#: a_bias = 0.3 m/s²).
MOBIL_POLITENESS = 0.5
MOBIL_THRESHOLD_MPS2 = 0.1
MOBIL_SAFE_DECEL_MPS2 = 4.0
MOBIL_BIAS_RIGHT_MPS2 = 0.3
#: No lane change closer than this to the start of an edge unless a follower in the target
#: lane is in sight on the same edge [m]: vehicles still on the edges behind are not seen.
LC_EDGE_START_M = 60.0
#: A lane that ends forces a change within this distance of the edge end [m].
MANDATORY_LC_ZONE_M = 400.0
#: A platoon needs this much free road ahead of its head and behind its tail in the target
#: lane to change lanes as one unit [m].
PLATOON_LC_MARGIN_M = 30.0
#: A car cuts into a platoon gap with probability ``(gap - lo) / (hi - lo)`` clipped to
#: [0, CUT_IN_MAX_P] (an engineering choice: tighter gaps deter cut-ins; Lu & Shladover 2017
#: observed drivers cutting into ACC gaps above ~1.3 s and rarely below).
CUT_IN_GAP_LO_M = 15.0
CUT_IN_GAP_HI_M = 60.0
CUT_IN_MAX_P = 0.5
#: Beacon age beyond which a CACC follower falls back to ACC [s] (the vehicle layer's default).
STALE_BEACON_S = 0.5
#: Hard braking threshold [m/s²] (the vehicle layer's event log uses the same).
HARD_BRAKE_MPS2 = 3.0
#: Insertion: a departing vehicle needs this time gap to the vehicle ahead on its lane [s].
INSERT_TIME_GAP_S = 1.0
#: ... and waits while a vehicle on an incoming edge will reach the node within this [s].
INSERT_YIELD_S = 4.0
PURPOSE_CUT_IN = 11
#: Instance k of a batch draws with seed ``seed + k * INSTANCE_SEED_STRIDE`` and numbers its
#: vehicles from 0, so instance 0 is the same run as an unbatched one with the same seed.
INSTANCE_SEED_STRIDE = 1_000_003
NO_GAP = 1.0e9
#: ``step_flags``: whether some vehicle overlaps its leader, or reached its route's end, this
#: step (set from the parallel loops, to one value, so which thread writes it last does not
#: matter); the serial passes that handle those run only then. One cache line each.
FLAG_OVERLAP = 0
FLAG_ARRIVAL = 8
STEP_FLAGS_LEN = 16


@njit(cache=True, inline="always")
def _idm_accel(
    v: float,
    gap_m: float,
    v_lead: float,
    v0: float,
    s0: float,
    t_gap: float,
    a: float,
    b: float,
    delta: float,
) -> float:
    """The vehicle layer's IDM, with this kernel's ``NO_GAP`` meaning a free road."""
    return idm_accel_terms(
        v, gap_m if gap_m < NO_GAP else math.inf, v_lead, v0, s0, t_gap, a, b, delta
    )


@njit(cache=True, inline="always")
def _idm_of_type(vt: np.ndarray, t: int, v: float, gap_m: float, v_lead: float, v0: float) -> float:
    """``_idm_accel`` with the IDM parameters of vehicle type ``t``."""
    return _idm_accel(
        v,
        gap_m,
        v_lead,
        v0,
        vt[t, VT_MIN_GAP_M],
        vt[t, VT_TIME_GAP_S],
        vt[t, VT_ACCEL_MPS2],
        vt[t, VT_DECEL_MPS2],
        vt[t, VT_IDM_DELTA],
    )


@njit(cache=True, inline="always")
def lane_open(edge_lanes: np.ndarray, lane_closed: np.ndarray, e: int, lane: int) -> bool:
    """Whether lane ``lane`` exists on edge ``e`` and is not closed (road works)."""
    return 0 <= lane < edge_lanes[e] and lane_closed[e, lane] == 0


@njit(cache=True, inline="always")
def lane_key(inst: int, edge: int, lane: int, n_edges: int, max_lanes: int) -> int:
    """Bucket of a lane in the sorted order."""
    return (inst * n_edges + edge) * max_lanes + lane


@njit(cache=True, inline="always")
def _key_now(
    inst: np.ndarray,
    status: np.ndarray,
    edge: np.ndarray,
    lane: np.ndarray,
    i: int,
    n_edges: int,
    max_lanes: int,
    nb: int,
) -> int:
    """Lane key of vehicle ``i`` as it is now; ``nb`` (the number of lanes) off the road."""
    if status[i] == ST_DRIVING:
        return lane_key(inst[i], edge[i], lane[i], n_edges, max_lanes)
    return nb


@njit(cache=True)
def sort_lanes(
    inst: np.ndarray,
    status: np.ndarray,
    edge: np.ndarray,
    lane: np.ndarray,
    n_edges: int,
    max_lanes: int,
    keys: np.ndarray,
    pos_m: np.ndarray,
    local: np.ndarray,
    order: np.ndarray,
    bucket_start: np.ndarray,
    scratch: np.ndarray,
    rank: np.ndarray,
    head_of: np.ndarray,
    old_order: np.ndarray,
) -> bool:
    """Order the vehicles on the road by lane, then front-most first (ties by vehicle number:
    ``local``, the number in its instance, which every vehicle of a lane shares),
    starting from the previous order: a stable counting sort by lane key, then an insertion
    sort inside each lane, which costs one comparison per vehicle when nobody overtook.

    Only the vehicles on the road are ordered: ``order[:bucket_start[K]]`` (K the number of
    lanes) holds them; what follows is stale. The previous order's vehicles are scattered
    first, then those that entered the road since (found by their ``rank``, which points
    into the previous order only for a vehicle that was in it). The result depends on keys
    and positions alone. A fleet that is mostly parked or loading no longer pays a scatter
    and a rank per parked vehicle: on the Ordos day (2,790 vehicles, a few hundred on the
    road) the sort took 11.0 s of the engine's 24 s before, 3.9 s now.

    Most steps only a few vehicles change lane (a truck a second reaching the next edge on
    the bench ring of 2,000): then ``_move_few`` moves each one in place, and the lanes are
    repaired by the insertion sort, with no scatter and no ranks rewritten but those that
    moved. The result is the same order.

    Writes ``keys`` (K for a vehicle off the road), ``order``, ``bucket_start`` (K + 2: the
    first index of each lane in ``order``; ``bucket_start[K + 1]`` is n), ``rank`` (each
    vehicle's index in ``order``, for those on the road) and ``head_of`` (K: each lane's
    front-most vehicle, -1 if empty); ``scratch`` (K + 1) and ``old_order`` (n) are
    overwritten. One thread: the sort is a few passes over small arrays, where a parallel
    loop's start costs as much as its work and threads writing ranks at random bounce cache
    lines (measured, 2,000 trucks).

    Returns:
        Whether the few vehicles that changed lane were moved in place (else a fresh sort).
    """
    if _move_few(
        inst,
        status,
        edge,
        lane,
        n_edges,
        max_lanes,
        keys,
        order,
        bucket_start,
        rank,
        old_order,
        old_order,
        -1,
        old_order[:0].view(np.uint8),
        True,
    ):
        _repair_lanes(pos_m, local, order, bucket_start, rank, head_of, False)
        return True
    _sort_afresh(
        inst,
        status,
        edge,
        lane,
        n_edges,
        max_lanes,
        keys,
        pos_m,
        local,
        order,
        bucket_start,
        scratch,
        rank,
        head_of,
        old_order,
    )
    return False


@njit(cache=True)
def _sort_afresh(
    inst: np.ndarray,
    status: np.ndarray,
    edge: np.ndarray,
    lane: np.ndarray,
    n_edges: int,
    max_lanes: int,
    keys: np.ndarray,
    pos_m: np.ndarray,
    local: np.ndarray,
    order: np.ndarray,
    bucket_start: np.ndarray,
    scratch: np.ndarray,
    rank: np.ndarray,
    head_of: np.ndarray,
    old_order: np.ndarray,
) -> None:
    """``sort_lanes`` without its fast path: the counting sort and every lane's repair."""
    n = order.shape[0]
    nb = bucket_start.shape[0] - 2  # lanes; key nb is off the road
    old_on = bucket_start[nb]  # vehicles in the previous order
    # loops rather than slices and copies: this allocates nothing (``run_net_steps`` runs
    # without reference counts, and so do the functions it calls)
    for k in range(nb + 2):
        bucket_start[k] = 0
    on = 0
    for i in range(n):
        k = _key_now(inst, status, edge, lane, i, n_edges, max_lanes, nb)
        if k < nb:
            bucket_start[k + 1] += 1
            on += 1
        keys[i] = k
    for k in range(nb):
        bucket_start[k + 1] += bucket_start[k]
    bucket_start[nb + 1] = n
    # stable scatter of the previous order, then of the vehicles new on the road
    fill = scratch
    for k in range(nb):
        fill[k] = bucket_start[k]
    for r in range(old_on):
        old_order[r] = order[r]
    kept = 0
    for r in range(old_on):
        i = old_order[r]
        k = keys[i]
        if k < nb:
            order[fill[k]] = i
            fill[k] += 1
            kept += 1
    if kept < on:
        for i in range(n):
            k = keys[i]
            if k < nb:
                r = rank[i]
                if not (0 <= r < old_on and old_order[r] == i):
                    order[fill[k]] = i
                    fill[k] += 1
    _repair_lanes(pos_m, local, order, bucket_start, rank, head_of, True)  # every slot is new


@njit(cache=True, inline="always")
def _lane_sorted(pos_m: np.ndarray, local: np.ndarray, order: np.ndarray, lo: int, hi: int) -> bool:
    """Whether ``order[lo:hi]`` is already front-most first, ties by number: one position read
    per vehicle and no jump inside the lane (two threads on the one-lane bench ring: 14.7 ->
    14.3 ns per vehicle-step against the insertion sort's own pass)."""
    if hi <= lo:
        return True
    j_a = order[lo]
    p_a = pos_m[j_a]
    bad = 0
    for r in range(lo + 1, hi):
        j_b = order[r]
        p_b = pos_m[j_b]
        bad += (p_a < p_b) | ((p_a == p_b) & (local[j_a] > local[j_b]))
        j_a = j_b
        p_a = p_b
    return bad == 0


@njit(cache=True, inline="always")
def _sort_lane(pos_m: np.ndarray, local: np.ndarray, order: np.ndarray, lo: int, hi: int) -> bool:
    """Insertion sort of ``order[lo:hi]``, front-most first, ties by number; whether any
    vehicle moved. A lane already in order (the common case) is confirmed by
    ``_lane_sorted`` first, with one position read per vehicle instead of two."""
    if _lane_sorted(pos_m, local, order, lo, hi):
        return False
    moved = False
    for r in range(lo + 1, hi):
        i = order[r]
        p = pos_m[i]
        x = local[i]
        s = r - 1
        while s >= lo and (pos_m[order[s]] < p or (pos_m[order[s]] == p and local[order[s]] > x)):
            order[s + 1] = order[s]
            s -= 1
            moved = True
        order[s + 1] = i
    return moved


@njit(cache=True)
def _repair_lanes(
    pos_m: np.ndarray,
    local: np.ndarray,
    order: np.ndarray,
    bucket_start: np.ndarray,
    rank: np.ndarray,
    head_of: np.ndarray,
    all_ranks: bool,
) -> None:
    """Every lane sorted again, every lane's head, and the ranks of every lane
    (``all_ranks``) or only of those whose order changed."""
    for k in range(bucket_start.shape[0] - 2):
        _repair_lane(pos_m, local, order, bucket_start, rank, head_of, all_ranks, k)


@njit(cache=True, inline="always")
def _repair_lane(
    pos_m: np.ndarray,
    local: np.ndarray,
    order: np.ndarray,
    bucket_start: np.ndarray,
    rank: np.ndarray,
    head_of: np.ndarray,
    all_ranks: bool,
    k: int,
) -> None:
    """``_repair_lanes`` for lane ``k`` alone (lanes are independent: a parallel loop may
    repair them)."""
    lo = bucket_start[k]
    hi = bucket_start[k + 1]
    if _sort_lane(pos_m, local, order, lo, hi) or all_ranks:
        for r in range(lo, hi):
            rank[order[r]] = r
    head_of[k] = order[lo] if hi > lo else -1


#: ``touched``: a byte per block of ``1 << TOUCH_SHIFT`` vehicles (by index), set by the step
#: where a vehicle of the block may have changed its lane key (edge, lane, on or off the road)
TOUCH_SHIFT = 4

#: ``sort_lanes`` moves at most this many vehicles between lanes in place, and shifts at most
#: ``n // 4`` others to make room; beyond that it sorts afresh.
MOVES_IN_PLACE = 64


@njit(cache=True)
def _move_few(
    inst: np.ndarray,
    status: np.ndarray,
    edge: np.ndarray,
    lane: np.ndarray,
    n_edges: int,
    max_lanes: int,
    keys: np.ndarray,
    order: np.ndarray,
    bucket_start: np.ndarray,
    rank: np.ndarray,
    movers: np.ndarray,
    cand: np.ndarray,
    n_cand: int,
    touched: np.ndarray,
    full: bool,
) -> bool:
    """The lane sort's fast path: when few vehicles changed lane (an edge, a lane, onto or
    off the road), move each one in ``order`` from its slot to the end of its new lane,
    shifting the vehicles in between by one (and their ranks) and the lane starts in
    between. Returns False, for ``sort_lanes`` to sort afresh, when too many moved or the
    previous order does not hold what ``keys`` says (the first call); the arrays are then
    still consistent with each other. ``movers`` (n) is overwritten.

    The vehicles whose key may have changed are those of the blocks marked in ``touched``
    (``TOUCH_SHIFT``; the marks are cleared): all of a block, or those of a marked block in
    ``cand[:n_cand]`` (in index order; ``n_cand`` < 0: no list), the vehicles that were on
    the road (every other vehicle is off the road, its key that of no lane, as before). With
    ``full``, every vehicle is checked and ``touched`` left as it is (it may be empty)."""
    n = order.shape[0]
    nb = bucket_start.shape[0] - 2
    m = 0
    on = 0
    per = 1 << TOUCH_SHIFT
    blocks = (n + per - 1) >> TOUCH_SHIFT
    listed = n_cand >= 0 and not full
    for c in range(n_cand if listed else blocks):
        lo = np.int64(cand[c]) if listed else c * per  # a listed vehicle, or a block
        hi = lo + 1 if listed else min(n, lo + per)
        if not full and touched[lo >> TOUCH_SHIFT] == 0:
            continue
        for i in range(lo, hi):
            k = _key_now(inst, status, edge, lane, i, n_edges, max_lanes, nb)
            on += k < nb
            if k != keys[i]:
                if m == MOVES_IN_PLACE:
                    return False
                movers[m] = i
                m += 1
    for b in range(0 if full else blocks):
        touched[b] = 0
    budget = n // 4
    for q in range(m):
        i = movers[q]
        ko = keys[i]
        kn = _key_now(inst, status, edge, lane, i, n_edges, max_lanes, nb)
        if ko < nb:
            r_old = rank[i]
            if not (bucket_start[ko] <= r_old < bucket_start[ko + 1] and order[r_old] == i):
                return False
        else:
            r_old = bucket_start[nb]  # just past the vehicles on the road
        if ko < kn:
            # to the end of lane kn (or off the road): the ones in between move up a slot
            end = bucket_start[kn + 1] if kn < nb else bucket_start[nb]
            budget -= end - r_old + kn - ko
            if budget < 0:
                return False
            for r in range(r_old, end - 1):
                j = order[r + 1]
                order[r] = j
                rank[j] = r
            order[end - 1] = i
            rank[i] = end - 1
            for b in range(ko + 1, kn + 1):
                bucket_start[b] -= 1
        else:
            # to the end of lane kn, before the lanes in between, which move down a slot
            dest = bucket_start[kn + 1]
            budget -= r_old - dest + ko - kn
            if budget < 0:
                return False
            for r in range(r_old, dest, -1):
                j = order[r - 1]
                order[r] = j
                rank[j] = r
            order[dest] = i
            rank[i] = dest
            for b in range(kn + 1, ko + 1):
                bucket_start[b] += 1
        keys[i] = kn
    # a vehicle on the road that the previous order lacks and ``keys`` places (the first
    # call) leaves the count short (checked where every vehicle was counted)
    if full and bucket_start[nb] != on:
        return False
    bucket_start[nb + 1] = n
    return True


@njit(cache=True, inline="always")
def _signal_state(t_s: float, sig: np.ndarray, e: int) -> int:
    """Phase of the signal at the end of edge ``e`` (PHASE_GREEN if there is none)."""
    cycle = sig[e, 0]
    if cycle <= 0.0:
        return PHASE_GREEN
    tau = (t_s + sig[e, 1]) % cycle
    if sig[e, 2] <= tau < sig[e, 3]:
        return PHASE_GREEN
    if sig[e, 3] <= tau < sig[e, 3] + sig[e, 4]:
        return PHASE_YELLOW
    return PHASE_RED


@njit(cache=True, inline="always")
def _eta_s(dist_m: float, speed_mps: float) -> float:
    """Time to cover ``dist_m`` at the present speed (at least 0.5 m/s) [s]."""
    return dist_m / max(speed_mps, 0.5)


@njit(cache=True, inline="always")
def signal_stops(
    t_s: float, sig: np.ndarray, e: int, speed_mps: float, decel_mps2: float, d_end_m: float
) -> bool:
    """Whether the signal at the end of edge ``e`` holds a vehicle ``d_end_m`` before its line:
    red, or yellow while it can still stop with ``decel_mps2``."""
    ph = _signal_state(t_s, sig, e)
    brake_m = speed_mps * speed_mps / (2.0 * decel_mps2)
    return ph == PHASE_RED or (ph == PHASE_YELLOW and d_end_m > brake_m)


@njit(cache=True, inline="always")
def _ccw_rad(from_rad: float, to_rad: float) -> float:
    """The counter-clockwise angle from one direction to another, in [0, 2 pi)."""
    return (to_rad - from_rad) % _TWO_PI


@njit(cache=True, inline="always")
def paths_cross(in_rad: float, out_rad: float, in_o_rad: float, out_o_rad: float) -> bool:
    """Whether two movements through a junction cross: one arriving from the arm at
    ``in_rad`` and leaving by the arm at ``out_rad`` (directions from the node), the other
    (``in_o_rad``, ``out_o_rad``) from another arm to another. They do when, around the node,
    one end of the other's path lies on each side of this one, each arm's incoming lane
    counter-clockwise of its outgoing one (seen from the node, traffic keeps right)."""
    a = in_rad + ARM_SIDE_RAD
    span = _ccw_rad(a, out_rad - ARM_SIDE_RAD)
    p = _ccw_rad(a, in_o_rad + ARM_SIDE_RAD)
    q = _ccw_rad(a, out_o_rad - ARM_SIDE_RAD)
    return ((p > 0.0) & (p < span)) != ((q > 0.0) & (q < span))


@njit(cache=True, inline="always")
def turns_left(in_rad: float, out_rad: float) -> bool:
    """Whether the movement from the arm at ``in_rad`` to the arm at ``out_rad`` turns left
    (more than ``TURN_RAD`` from straight on); false for a NaN direction (a roundabout)."""
    return _ccw_rad(in_rad, out_rad) > math.pi + TURN_RAD


@njit(cache=True, inline="always")
def gives_way(in_rad: float, out_rad: float, in_o_rad: float, out_o_rad: float) -> bool:
    """Whether a movement through a junction, arriving from the arm at ``in_rad`` and leaving
    by the arm at ``out_rad`` (directions from the node), gives way to another's
    (``in_o_rad``, ``out_o_rad``) on an approach of equal rank: only where their paths cross
    (``paths_cross``). Of two crossing movements, a left turn gives way to one that is not
    (German StVO § 9 (3), China's Road Traffic Safety Law Implementing Regulations art. 52
    (5); SUMO's netconvert marks such a left turn minor), and between two of a kind the one
    from the right goes first (StVO § 8 (1), art. 52 (4))."""
    if not paths_cross(in_rad, out_rad, in_o_rad, out_o_rad):
        return False
    left = turns_left(in_rad, out_rad)
    left_o = turns_left(in_o_rad, out_o_rad)
    if left != left_o:
        return left
    right_of = _ccw_rad(in_rad, in_o_rad)
    return (right_of > 0.0) & (right_of < math.pi)


@njit(cache=True, inline="always")
def waits_for(
    rank_e: int,
    rank_o: int,
    in_rad: float,
    out_rad: float,
    in_o_rad: float,
    out_o_rad: float,
    other_goes_on: bool,
    same_edge: bool,
) -> bool:
    """Whether, at a priority junction, a movement (its approach's rank ``rank_e``, the arms'
    directions ``in_rad`` and ``out_rad``) must let another approach's (``rank_o``,
    ``in_o_rad``, ``out_o_rad``; ``other_goes_on`` through the node, into ``same_edge`` or
    not) go first: a higher rank whose path crosses it or leads to the same edge; an equal
    rank it ``gives_way`` to, or that leads to the same edge without turning left where it
    turns left. The rule of ``junction_rule`` and of ``network.junction_links``."""
    if rank_e < rank_o:
        return same_edge or (other_goes_on and paths_cross(in_rad, out_rad, in_o_rad, out_o_rad))
    if rank_e > rank_o:
        return False
    if same_edge:
        return turns_left(in_rad, out_rad) and not turns_left(in_o_rad, out_o_rad)
    return other_goes_on and gives_way(in_rad, out_rad, in_o_rad, out_o_rad)


@njit(cache=True, inline="always")
def minor_hold(
    priority_node: bool,
    own_signal: bool,
    minor: bool,
    d_end_m: float,
    speed_mps: float,
    decel_mps2: float,
) -> bool:
    """Whether a lane head ``d_end_m`` before its line on a ``minor`` movement
    (``network.junction_links``) is held as if to stop ``VISIBILITY_M`` past the line: at a
    priority junction without a signal of its own, until it is that near the line, and only
    while it could still stop by there at its comfortable deceleration ``decel_mps2``."""
    return (
        priority_node
        and not own_signal
        and minor
        and d_end_m > VISIBILITY_M
        and d_end_m + VISIBILITY_M > speed_mps * speed_mps / (2.0 * decel_mps2)
    )


@njit(cache=True, inline="always")
def critical_gap_s(d_end_m: float, speed_mps: float, length_m: float, accel_mps2: float) -> float:
    """The gap a vehicle ``d_end_m`` before its line needs ahead of a foe's arrival at the
    node [s]: ``CRITICAL_GAP_S``, or, where it is longer, the time the vehicle takes to get
    its rear across the node from its present speed at its type's acceleration, plus
    ``CLEAR_MARGIN_S`` (SUMO lets a minor vehicle go only if foes arrive after it has left
    the link, ``jmTimegapMinor`` later). A car waiting at its line clears in about 2 s, so
    the 5 s hold; a 49 t truck there (1 m/s², 16.5 m) needs 5.8 s and so a gap of 6.8 s, as
    HCM's heavy-vehicle adjustment of its critical gaps (+1 to +2 s) has it."""
    a = max(accel_mps2, 0.1)
    d = d_end_m + length_m
    t = (math.sqrt(speed_mps * speed_mps + 2.0 * a * d) - speed_mps) / a
    return max(CRITICAL_GAP_S, t + CLEAR_MARGIN_S)


@njit(cache=True, inline="always")
def waits_for_occupant(
    d_end_m: float,
    speed_mps: float,
    in_rad: float,
    out_rad: float,
    in_f_rad: float,
    out_f_rad: float,
    past_m: float,
    length_f_m: float,
    speed_f_mps: float,
) -> bool:
    """Whether a lane head ``d_end_m`` before its node waits at its line for a vehicle still
    in the junction: one whose front is ``past_m`` beyond the node on the edge it left by
    and whose rear is not (``past_m < length_f_m``), on a path through the node that crosses
    this one's (``paths_cross``; the arms' directions ``*_rad``), when at its present speed
    it would reach the node before that rear has cleared it plus ``CLEAR_MARGIN_S``. The
    junction is a point to the rules (a front crosses it in one step), so without this a
    movement would cross right behind a foe's front, through its body: SUMO's junctions
    hold a link until the vehicle's length has left it."""
    return (
        past_m < length_f_m
        and paths_cross(in_rad, out_rad, in_f_rad, out_f_rad)
        and _eta_s(d_end_m, speed_mps) < _eta_s(length_f_m - past_m, speed_f_mps) + CLEAR_MARGIN_S
    )


@njit(cache=True, inline="always")
def junction_rule(
    priority_node: bool,
    rank_e: int,
    rank_o: int,
    own_signal: bool,
    critical_s: float,
    d_end_m: float,
    d_o_m: float,
    speed_o_mps: float,
    length_o_m: float,
    other_first_on_tie: bool,
    other_goes_on: bool,
    feeds_same_edge: bool,
    in_rad: float,
    out_rad: float,
    in_o_rad: float,
    out_o_rad: float,
    gap: float,
    v_lead: float,
    ld: int,
) -> tuple[bool, float, float, int]:
    """The junction rule between a lane head ``d_end_m`` before its node and the head of
    another approach ``d_o_m`` before it (within the junction zone): at a priority junction a
    vehicle on a lower-ranked road stops while the other arrives within ``CRITICAL_GAP_S``
    if their paths cross or lead to the same edge (unless a signal governs its own
    approach), and so does one on a road of equal rank whose path the other's crosses with
    the right of way (``paths_cross``, ``gives_way``: the arms' directions ``*_rad``, the
    other's ``out_o_rad`` only where it ``other_goes_on`` through the node); on
    roads of equal rank that feed the same edge, a left turn gives way to the other if it is
    not one (SUMO's netconvert: the left turn is minor), and otherwise the one nearer the
    node goes first (a zipper): the other becomes the leader (``ld = -2``) if it is nearer
    than ``gap``. Returns ``(stop, gap, v_lead, ld)``."""
    # at a priority junction every case but two equal approaches merging alike is a rule
    rule = priority_node and (
        rank_e < rank_o
        or not feeds_same_edge
        or turns_left(in_rad, out_rad) != turns_left(in_o_rad, out_o_rad)
    )
    if rule:
        yields = (
            waits_for(
                rank_e, rank_o, in_rad, out_rad, in_o_rad, out_o_rad, other_goes_on, feeds_same_edge
            )
            and not own_signal
            and _eta_s(d_o_m, speed_o_mps) < critical_s
        )
        return yields, gap, v_lead, ld
    if rank_e > rank_o or not feeds_same_edge:
        return False, gap, v_lead, ld
    if d_o_m < d_end_m or (d_o_m == d_end_m and other_first_on_tie):
        g_v = d_end_m - d_o_m - length_o_m
        if g_v < gap:
            return False, g_v, speed_o_mps, -2
    return False, gap, v_lead, ld


@njit(cache=True)
def call_constants(
    vt: np.ndarray, pt: np.ndarray, ambient_c: float, dt_s: float, edge_grade: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What ``run_net_steps`` takes per call besides the state: per powertrain the energy
    model's constants (``energy.energy_prep``) and the motor's wheel power, per edge the
    road's angle (cos, sin): the same numbers the per-truck formulas would compute every
    step."""
    n_types = vt.shape[0]
    e_prep = np.zeros((n_types, EP_LEN))
    wheel_max_w = np.zeros(n_types)
    for ty in range(n_types):
        if vt[ty, VT_IS_TRUCK] > 0.0:
            e_prep[ty] = energy_prep(pt[ty], ambient_c, dt_s)
            wheel_max_w[ty] = wheel_power_max_w(pt[ty])
    n_edges = edge_grade.shape[0]
    edge_cos = np.empty(n_edges)
    edge_sin = np.empty(n_edges)
    for e in range(n_edges):
        edge_cos[e], edge_sin[e] = grade_angle(edge_grade[e])
    return e_prep, wheel_max_w, edge_cos, edge_sin


@njit(cache=True, inline="always")
def _desired_speed_mps(
    vt: np.ndarray,
    ty: int,
    edge_speed_mps: float,
    edge_cap_mps: float,
    speed_cap_mps: float,
    set_speed_mps: float,
) -> float:
    """The speed a vehicle of type ``ty`` wants on its edge: the edge's limit times its
    factor, its own top speed, the edge's cap and its own cap; a manoeuvre's set speed (NaN:
    none) replaces the limit and the own cap. Without a branch (``idm_next_speed``)."""
    v_max = vt[ty, VT_MAX_SPEED_MPS]
    v_des = min(edge_speed_mps * vt[ty, VT_SPEED_FACTOR], v_max, edge_cap_mps, speed_cap_mps)
    v_set = min(set_speed_mps, v_max, edge_cap_mps)
    return v_set if set_speed_mps == set_speed_mps else v_des


@njit(cache=True, inline="always")
def _accel_cap_mps2(
    vt: np.ndarray,
    pt: np.ndarray,
    wheel_max_w: np.ndarray,
    ty: int,
    v: float,
    edge_cos: float,
    edge_sin: float,
) -> float:
    """The type's acceleration limit; a truck climbs only as fast as its motor's power
    allows on this grade. Without a branch (``idm_next_speed``): the motor's limit is
    computed for every type and kept for trucks."""
    a_motor = max_traction_accel_angle(
        wheel_max_w[ty],
        pt[ty, PT_FULL_POWER_SPEED_MPS],
        pt[ty, PT_ROTATING_MASS_FACTOR],
        vt[ty, VT_MASS_KG],
        v,
        edge_cos,
        edge_sin,
        1.0,
        vt[ty, VT_CD_A_M2],
        vt[ty, VT_CRR],
    )
    a_max = vt[ty, VT_ACCEL_MPS2]
    return min(a_max, a_motor) if vt[ty, VT_IS_TRUCK] > 0.0 else a_max


@njit(cache=True, inline="always")
def next_speed(
    vt: np.ndarray,
    cacc_p: np.ndarray,
    acc_p: np.ndarray,
    pt: np.ndarray,
    wheel_max_w: np.ndarray,
    ty: int,
    edge_speed_mps: float,
    edge_cap_mps: float,
    edge_cos: float,
    edge_sin: float,
    speed_cap_mps: float,
    set_speed_mps: float,
    extra_gap_m: float,
    v: float,
    accel_mps2: float,
    gap: float,
    v_lead: float,
    coop: bool,
    mode: int,
    dt_s: float,
) -> tuple[float, int]:
    """A vehicle's speed at the end of the step and its controller mode, from what it sees
    ahead (``gap``, ``NO_GAP``: nothing; ``v_lead``) on its edge: the desired speed, the
    motor's power on the grade, and its type's law (IDM, or SUMO's CACC or ACC with SUMO's
    speed finalisation). ``coop``: the leader is its platoon predecessor and the last beacon
    is fresh. Shared by this kernel and ``net_cuda``'s."""
    v_des = _desired_speed_mps(vt, ty, edge_speed_mps, edge_cap_mps, speed_cap_mps, set_speed_mps)
    gap_ctl = gap - extra_gap_m if gap < NO_GAP else gap
    model = int(vt[ty, VT_MODEL])
    a_max = _accel_cap_mps2(vt, pt, wheel_max_w, ty, v, edge_cos, edge_sin)
    if model == NM_IDM:
        a = _idm_accel(
            v,
            gap_ctl,
            v_lead,
            v_des,
            vt[ty, VT_MIN_GAP_M],
            vt[ty, VT_TIME_GAP_S],
            max(a_max, 0.05),
            vt[ty, VT_DECEL_MPS2],
            vt[ty, VT_IDM_DELTA],
        )
        a = min(max(a, -vt[ty, VT_EMERGENCY_DECEL_MPS2]), a_max)
        vn = max(0.0, v + a * dt_s)
        vn = min(vn, max(v_des, v - vt[ty, VT_DECEL_MPS2] * dt_s))
        return vn, MODE_FOLLOW
    g_law = gap_ctl if gap_ctl < NO_GAP else math.inf
    if model == NM_CACC:
        v_pos, m = cacc_next_speed(
            cacc_p[ty], v, accel_mps2, g_law, v_lead, 0.0, coop, v_des, dt_s, mode
        )
    else:
        v_pos, m = acc_next_speed(acc_p[ty], v, accel_mps2, g_law, v_lead, v_des, dt_s, mode)
    vn = sumo_finalize_speed(
        v,
        v_pos,
        a_max,
        vt[ty, VT_DECEL_MPS2],
        vt[ty, VT_EMERGENCY_DECEL_MPS2],
        max(v_des, 0.0),
        dt_s,
    )
    return vn, m


@njit(cache=True, inline="always")
def idm_next_speed(
    vt: np.ndarray,
    pt: np.ndarray,
    wheel_max_w: np.ndarray,
    ty: int,
    edge_speed_mps: float,
    edge_cap_mps: float,
    edge_cos: float,
    edge_sin: float,
    speed_cap_mps: float,
    set_speed_mps: float,
    extra_gap_m: float,
    v: float,
    gap: float,
    v_lead: float,
    dt_s: float,
) -> float:
    """``next_speed`` for a vehicle type of IDM with the exponent 4 (``idm_law_only``), the
    same bits, without a branch: both sides of each choice are computed and one is kept, so
    that LLVM vectorises a loop over vehicles (the step's threaded variant, whose loops
    Numba compiles with their arrays marked as not aliased)."""
    v_des = _desired_speed_mps(vt, ty, edge_speed_mps, edge_cap_mps, speed_cap_mps, set_speed_mps)
    gap_ctl = gap - extra_gap_m if gap < NO_GAP else gap
    # IDM's free road: no finite gap below NO_GAP (``_idm_accel``)
    free_road = not ((gap_ctl < NO_GAP) & math.isfinite(gap_ctl))
    a_max = _accel_cap_mps2(vt, pt, wheel_max_w, ty, v, edge_cos, edge_sin)
    a = max(a_max, 0.05)
    b = vt[ty, VT_DECEL_MPS2]
    # idm_accel_terms with delta = 4, a free road (gap NO_GAP, infinite there) chosen last
    ratio = v / max(v_des, 0.1)
    r2 = ratio * ratio
    free = 1.0 - r2 * r2
    s_star = vt[ty, VT_MIN_GAP_M] + max(
        0.0, v * vt[ty, VT_TIME_GAP_S] + v * (v - v_lead) / (2.0 * math.sqrt(a * b))
    )
    q = s_star / max(gap_ctl, 0.01)
    acc = a * free if free_road else a * (free - q * q)
    acc = min(max(acc, -vt[ty, VT_EMERGENCY_DECEL_MPS2]), a_max)
    vn = max(0.0, v + acc * dt_s)
    return min(vn, max(v_des, v - b * dt_s))


@njit(cache=True)
def idm_law_only(vt: np.ndarray) -> bool:
    """Whether every vehicle type drives IDM with the exponent 4 (``idm_next_speed``)."""
    for t in range(vt.shape[0]):
        if vt[t, VT_MODEL] != NM_IDM or vt[t, VT_IDM_DELTA] != 4.0:
            return False
    return True


def run_net_steps_py(
    # network
    edge_len_m: np.ndarray,
    edge_lanes: np.ndarray,
    edge_speed_mps: np.ndarray,
    edge_grade: np.ndarray,
    edge_from: np.ndarray,
    edge_to: np.ndarray,
    edge_rank: np.ndarray,
    edge_arm_rad: np.ndarray,
    edge_links: np.ndarray,
    edge_cap_mps: np.ndarray,
    lane_closed: np.ndarray,
    node_junction: np.ndarray,
    pred_ptr: np.ndarray,
    pred_edge: np.ndarray,
    succ_ptr: np.ndarray,
    succ_edge: np.ndarray,
    sig: np.ndarray,
    max_lanes: int,
    # types
    vt: np.ndarray,
    cacc_p: np.ndarray,
    acc_p: np.ndarray,
    pt: np.ndarray,
    # routes and plans
    route_edges: np.ndarray,
    leg_route_lo: np.ndarray,
    leg_route_hi: np.ndarray,
    leg_dwell_s: np.ndarray,
    leg_site: np.ndarray,
    site_capacity: np.ndarray,
    site_load: np.ndarray,
    # vehicles
    inst: np.ndarray,
    local: np.ndarray,
    vtype: np.ndarray,
    status: np.ndarray,
    edge: np.ndarray,
    lane: np.ndarray,
    pos_m: np.ndarray,
    speed_mps: np.ndarray,
    accel_mps2: np.ndarray,
    route_ptr: np.ndarray,
    leg: np.ndarray,
    leg_end: np.ndarray,
    ready_s: np.ndarray,
    platoon: np.ndarray,
    pred: np.ndarray,
    after: np.ndarray,
    plat_next: np.ndarray,
    drag_row: np.ndarray,
    mode: np.ndarray,
    beacon_age_s: np.ndarray,
    extra_gap_m: np.ndarray,
    speed_cap_mps: np.ndarray,
    set_speed_mps: np.ndarray,
    lc_out: np.ndarray,
    energy_kwh: np.ndarray,
    distance_m: np.ndarray,
    min_ttc_s: np.ndarray,
    hard_brakes: np.ndarray,
    lane_changes: np.ndarray,
    # platoon table
    plat_head: np.ndarray,
    plat_lc: np.ndarray,
    # scratch
    order: np.ndarray,
    rank: np.ndarray,
    bucket_start: np.ndarray,
    scratch: np.ndarray,
    head_of: np.ndarray,
    keys: np.ndarray,
    v_next: np.ndarray,
    gap_now: np.ndarray,
    ctl_gap: np.ndarray,
    coop: np.ndarray,
    leader: np.ndarray,
    lc_target: np.ndarray,
    inserted_at: np.ndarray,
    step_flags: np.ndarray,
    active: np.ndarray,
    touched: np.ndarray,
    # the slot of each vehicle number: the identity unless the caller stored the vehicles in
    # another order (``network.NetSim``: in road order for the threaded step)
    slot_of: np.ndarray,
    # run
    step0: int,
    n_steps: int,
    dt_s: float,
    seed: int,
    loss_p: float,
    beacon_period_steps: int,
    lc_period_steps: int,
    ambient_c: float,
    n_inst: int,
    record_every: int,
    fcd: np.ndarray,
    fcd_veh: np.ndarray,
    fcd_n0: int,
    events: np.ndarray,
    ev_n0: int,
    cap_ramps: np.ndarray,
    # per call (``call_constants``)
    e_prep: np.ndarray,
    wheel_max_w: np.ndarray,
    edge_cos: np.ndarray,
    edge_sin: np.ndarray,
) -> tuple[int, int, int]:
    """Advance ``n_steps`` steps (fewer if an output buffer fills); see the module docstring.

    Returns:
        ``(steps done, FCD rows written in total, events written in total)``.
    """
    n = inst.shape[0]
    n_edges = edge_len_m.shape[0]
    fcd_n = fcd_n0
    ev_n = ev_n0
    fcd_cap = fcd.shape[0]
    ev_cap = events.shape[0]
    steps_done = 0
    idm_only = idm_law_only(vt)
    # the earliest time a vehicle at a site or waiting to enter is due: until then the
    # departure and insertion passes have nothing to do and are skipped (on a busy road,
    # where nobody waits, they were 3 of 42 ns per vehicle-step on one thread)
    relist = True  # (the state may have changed between calls: listed on the first step)
    n_act = 0
    n_loop = 0
    dense = False
    next_due_s = math.inf
    for i in range(n):
        if status[i] == ST_DWELLING or status[i] == ST_WAITING:
            next_due_s = min(next_due_s, ready_s[i])
    for s in range(n_steps):
        step = step0 + s
        t_s = step * dt_s
        # stop early when the buffers might not hold this step's output
        if fcd_n + n > fcd_cap and step % record_every == 0:
            break
        if ev_n + 4 * n + 16 > ev_cap:
            break
        due = t_s >= next_due_s
        if due:
            next_due_s = math.inf
        # the speed caps of the ramps under way (``RAMP_*``), for this step's law
        for q in range(cap_ramps.shape[0]):
            j = step - int(cap_ramps[q, RAMP_FIRST_STEP])
            length = int(cap_ramps[q, RAMP_STEPS])
            if 0 <= j <= length:
                i = slot_of[np.int64(cap_ramps[q, RAMP_VEHICLE])]
                speed_cap_mps[i] = (
                    ramp_cap_mps(
                        cap_ramps[q, RAMP_FROM_MPS],
                        cap_ramps[q, RAMP_RATE_MPS2],
                        j,
                        dt_s,
                        cap_ramps[q, RAMP_FLOOR_MPS],
                    )
                    if j < length
                    else math.inf
                )
        # ---- 0. departures and site releases -------------------------------------------
        # (the serial passes go in the vehicles' number order, whatever their slots: which
        # of two waiting vehicles enters first, which of a chain of collisions is removed
        # with which, and the order of the events depend on it)
        for q in range(n if due else 0):
            i = slot_of[q]
            if status[i] != ST_DWELLING:
                continue
            if not t_s >= ready_s[i]:
                next_due_s = min(next_due_s, ready_s[i])
            else:
                lg = leg[i]
                site = leg_site[lg]
                if site >= 0:
                    site_load[inst[i], site] -= 1
                if lg + 1 < leg_end[i]:
                    leg[i] = lg + 1
                    route_ptr[i] = leg_route_lo[lg + 1]
                    status[i] = ST_WAITING
                    ready_s[i] = t_s
                    _push(events, ev_n, step, EV_LEAVE_SITE, i, site, -1, -1)
                    ev_n += 1
                else:
                    status[i] = ST_DONE
                    _push(events, ev_n, step, EV_FINISH, i, site, -1, -1)
                    ev_n += 1
        # the lane sort (inserted vehicles join next step's order through their keys):
        # ``sort_lanes``, with its repair of the lanes spread over the threads (``leader`` is
        # free until the leaders are found below). The vehicles whose lane key may have
        # changed since the last sort are those of the blocks the last step marked in
        # ``touched``; the first step of a call checks them all (the state may have changed
        # between calls). On the bench ring of 2,000 a step marks one or two blocks of 16.
        if _move_few(
            inst,
            status,
            edge,
            lane,
            n_edges,
            max_lanes,
            keys,
            order,
            bucket_start,
            rank,
            leader,
            active,
            -1 if dense else n_act,
            touched,
            s == 0,
        ):
            for k in prange(bucket_start.shape[0] - 2):
                _repair_lane(pos_m, local, order, bucket_start, rank, head_of, False, k)
        else:
            _sort_afresh(
                inst,
                status,
                edge,
                lane,
                n_edges,
                max_lanes,
                keys,
                pos_m,
                local,
                order,
                bucket_start,
                scratch,
                rank,
                head_of,
                leader,
            )
        # insertion of waiting vehicles whose time has come (serial: they compete for lanes);
        # one that stays waiting keeps the pass due (one that enters too, for one more step)
        for q in range(n if due else 0):
            i = slot_of[q]
            if status[i] != ST_WAITING:
                continue
            next_due_s = min(next_due_s, ready_s[i])
            if ready_s[i] > t_s:
                continue
            p = pred[i]
            if p >= 0 and status[p] == ST_WAITING:
                continue  # platoon members enter in order
            a = after[i]
            if a >= 0 and (status[a] == ST_WAITING or status[a] == ST_DRIVING):
                continue  # the same truck's previous trip has not arrived yet
            e = route_edges[route_ptr[i]]
            ty = vtype[i]
            ln = 0
            while ln < edge_lanes[e] - 1 and lane_closed[e, ln] != 0:
                ln += 1  # the rightmost open lane
            k = lane_key(inst[i], e, ln, n_edges, max_lanes)
            if inserted_at[k] == step:
                continue
            tail = -1
            if bucket_start[k + 1] > bucket_start[k]:
                tail = order[bucket_start[k + 1] - 1]
            v_ins = min(edge_speed_mps[e], vt[ty, VT_MAX_SPEED_MPS])
            if _through_traffic_near(
                e,
                inst[i],
                edge_from,
                edge_len_m,
                edge_lanes,
                pred_ptr,
                pred_edge,
                head_of,
                route_edges,
                route_ptr,
                leg,
                leg_route_hi,
                pos_m,
                speed_mps,
                n_edges,
                max_lanes,
            ):
                continue  # a vehicle about to cross the node into this edge has the way
            if tail >= 0:
                # enter at the tail's speed (at most the limit) with the own time gap to it
                room = pos_m[tail] - vt[vtype[tail], VT_LENGTH_M] - vt[ty, VT_MIN_GAP_M]
                v_ins = min(v_ins, speed_mps[tail])
                if room < v_ins * max(vt[ty, VT_TIME_GAP_S], INSERT_TIME_GAP_S) + 0.5:
                    continue
            status[i] = ST_DRIVING
            edge[i] = e
            lane[i] = ln
            pos_m[i] = 0.0
            speed_mps[i] = v_ins
            accel_mps2[i] = 0.0
            mode[i] = 0
            beacon_age_s[i] = 0.0
            inserted_at[k] = step
            touched[i >> TOUCH_SHIFT] = 1
            relist = True
            _push(events, ev_n, step, EV_DEPART, i, e, ln, -1)
            ev_n += 1
        # the vehicles on the road, in index order: the per-vehicle loops below run over
        # them alone (on the Ordos day most of the fleet is parked or loading at any time);
        # listed again after a step where a vehicle entered or left the road
        if relist:
            n_act = 0
            for q in range(n):
                i = slot_of[q]
                active[n_act] = i
                n_act += status[i] == ST_DRIVING
            relist = False
            # a road with nearly every vehicle on it runs the loops over all vehicles, which
            # read their arrays in order, without the list
            dense = n_act * 10 >= n * 9
            n_loop = n if dense else n_act
        for i in range(n):
            leader[i] = -1
            lc_target[i] = -1
        # ---- 1. leaders, stop lines, control -------------------------------------------
        step_flags[FLAG_OVERLAP] = 0
        step_flags[FLAG_ARRIVAL] = 0
        for act in prange(n_loop):
            i = act if dense else active[act]
            if status[i] != ST_DRIVING:
                continue
            ty = vtype[i]
            e = edge[i]
            ln = lane[i]
            # the sort's key (one read instead of three); a vehicle that entered the road
            # this step is not in the sort yet, its key still that of no lane
            k = keys[i]
            if k >= bucket_start.shape[0] - 2:
                k = lane_key(inst[i], e, ln, n_edges, max_lanes)
            gap = NO_GAP
            v_lead = 0.0
            ld = -1
            r = _rank_of(order, bucket_start, k, i, rank)
            if r > bucket_start[k]:
                ld = order[r - 1]
                gap = pos_m[ld] - vt[vtype[ld], VT_LENGTH_M] - pos_m[i]
                v_lead = speed_mps[ld]
            else:
                # look along the route
                dist = edge_len_m[e] - pos_m[i]
                rp = route_ptr[i]
                hops = 0
                lg = leg[i]
                while dist < LOOKAHEAD_M and hops < LOOKAHEAD_EDGES:
                    rp += 1
                    if rp >= leg_route_hi[lg]:
                        break
                    e2 = route_edges[rp]
                    if not lane_open(edge_lanes, lane_closed, e2, ln):
                        break  # the lane ends: its stop line is the obstacle, not the next edge
                    k2 = lane_key(inst[i], e2, ln, n_edges, max_lanes)
                    if bucket_start[k2 + 1] > bucket_start[k2]:
                        ld = order[bucket_start[k2 + 1] - 1]
                        gap = dist + pos_m[ld] - vt[vtype[ld], VT_LENGTH_M]
                        v_lead = speed_mps[ld]
                        break
                    dist += edge_len_m[e2]
                    hops += 1
            leader[i] = ld
            gap_now[i] = gap
            # time to collision while closing in on a leader (a negative gap is a leader from
            # another approach still in the junction), without a jump: which of two trucks in
            # a queue is the faster is a coin toss the CPU cannot predict (one thread on the
            # bench ring: 62.6 -> 59.3 ns per vehicle-step, the same bits)
            closing = speed_mps[i] - speed_mps[max(ld, 0)]
            ttc = gap / max(closing, 1e-300)
            ttc_was = min_ttc_s[i]
            closer = (ld >= 0) & (gap >= 0.0) & (closing > 0.0) & (ttc < ttc_was)
            min_ttc_s[i] = ttc if closer else ttc_was
            # stop line at the end of this edge
            d_end = edge_len_m[e] - pos_m[i]
            stop = False
            past_m = 0.0  # how far past its line it is held: ``VISIBILITY_M`` on a minor movement
            if r == bucket_start[k] and d_end < max(JUNCTION_ZONE_M, speed_mps[i] * 6.0):
                rp = route_ptr[i]
                lg = leg[i]
                last = rp + 1 >= leg_route_hi[lg]
                node = edge_to[e]
                stop = signal_stops(t_s, sig, e, speed_mps[i], vt[ty, VT_DECEL_MPS2], d_end)
                if last:
                    site = leg_site[lg]
                    if site >= 0 and site_load[inst[i], site] >= site_capacity[site]:
                        stop = True
                else:
                    e_next = route_edges[rp + 1]
                    if not lane_open(edge_lanes, lane_closed, e_next, ln):
                        stop = True
                    blind = minor_hold(
                        node_junction[node] == JT_PRIORITY,
                        sig[e, 0] > 0.0,
                        (edge_links[e, 1] >> edge_links[e_next, 0]) & 1 == 1,
                        d_end,
                        speed_mps[i],
                        vt[ty, VT_DECEL_MPS2],
                    )
                    if not stop:
                        # junction rules: yield to major roads, zipper with equal ones
                        crit = -1.0  # the gap it needs: worked out when a foe is near
                        for q in range(pred_ptr[node], pred_ptr[node + 1]):
                            e_o = pred_edge[q]
                            if e_o == e or sig[e_o, 0] > 0.0:
                                continue
                            for l_o in range(edge_lanes[e_o]):
                                j = head_of[lane_key(inst[i], e_o, l_o, n_edges, max_lanes)]
                                if j < 0:
                                    continue
                                d_o = edge_len_m[e_o] - pos_m[j]
                                if d_o > JUNCTION_ZONE_M + speed_mps[j] * 6.0:
                                    continue
                                if crit < 0.0:
                                    crit = critical_gap_s(
                                        d_end,
                                        speed_mps[i],
                                        vt[ty, VT_LENGTH_M],
                                        vt[ty, VT_ACCEL_MPS2],
                                    )
                                rj = route_ptr[j] + 1
                                goes_on = rj < leg_route_hi[leg[j]]
                                e_on = route_edges[rj] if goes_on else e_o
                                yields, gap, v_lead, ld = junction_rule(
                                    node_junction[node] == JT_PRIORITY,
                                    edge_rank[e],
                                    edge_rank[e_o],
                                    sig[e, 0] > 0.0,
                                    crit,
                                    d_end,
                                    d_o,
                                    speed_mps[j],
                                    vt[vtype[j], VT_LENGTH_M],
                                    local[j] < local[i],
                                    goes_on,
                                    goes_on and e_on == e_next,
                                    edge_arm_rad[e, 0],
                                    edge_arm_rad[e_next, 1],
                                    edge_arm_rad[e_o, 0],
                                    edge_arm_rad[e_on, 1],
                                    gap,
                                    v_lead,
                                    ld,
                                )
                                stop = stop or yields
                    if not stop and node_junction[node] == JT_PRIORITY and sig[e, 0] <= 0.0:
                        stop = _junction_occupied(
                            i,
                            e,
                            e_next,
                            node,
                            d_end,
                            succ_ptr,
                            succ_edge,
                            edge_lanes,
                            edge_arm_rad,
                            n_edges,
                            max_lanes,
                            bucket_start,
                            order,
                            inst,
                            route_ptr,
                            route_edges,
                            leg,
                            leg_route_lo,
                            vt,
                            vtype,
                            pos_m,
                            speed_mps,
                        )
                    if blind and not stop:
                        stop = True
                        past_m = VISIBILITY_M
            if stop:
                g_s = d_end + past_m + vt[ty, VT_MIN_GAP_M] - 0.5
                if g_s < gap:
                    gap = g_s
                    v_lead = 0.0
                    ld = -2
            # what the law needs, for the loop below (v_next holds the leader's speed until
            # the law replaces it with the vehicle's own)
            ctl_gap[i] = gap
            v_next[i] = v_lead
            coop[i] = 1 if ld >= 0 and ld == pred[i] and beacon_age_s[i] <= STALE_BEACON_S else 0
            if ld != -2:
                leader[i] = ld
            if leader[i] >= 0 and gap_now[i] < 0.0:
                step_flags[FLAG_OVERLAP] = 1  # a collision, unless the leader is elsewhere
        # The law in a loop of its own: without the search's branches and scattered reads
        # around it the CPU overlaps more of one vehicle's arithmetic with the next's (the
        # same bits; 8-10 % of the step on the one-lane bench ring, docs/benchmarks.md).
        # every type IDM on a dense road: the branch-free law, which LLVM vectorises where
        # the vehicles are read in order (threaded: Numba marks a parallel loop's arrays as
        # not aliased). The same bits as the loop below, which a sparse road runs.
        if idm_only and dense:
            for i in prange(n):
                if status[i] != ST_DRIVING:
                    continue
                e = edge[i]
                v_next[i] = idm_next_speed(
                    vt,
                    pt,
                    wheel_max_w,
                    vtype[i],
                    edge_speed_mps[e],
                    edge_cap_mps[e],
                    edge_cos[e],
                    edge_sin[e],
                    speed_cap_mps[i],
                    set_speed_mps[i],
                    extra_gap_m[i],
                    speed_mps[i],
                    ctl_gap[i],
                    v_next[i],
                    dt_s,
                )
                mode[i] = MODE_FOLLOW
        else:
            for act in prange(n_loop):
                i = act if dense else active[act]
                if status[i] != ST_DRIVING:
                    continue
                e = edge[i]
                vn, m = next_speed(
                    vt,
                    cacc_p,
                    acc_p,
                    pt,
                    wheel_max_w,
                    vtype[i],
                    edge_speed_mps[e],
                    edge_cap_mps[e],
                    edge_cos[e],
                    edge_sin[e],
                    speed_cap_mps[i],
                    set_speed_mps[i],
                    extra_gap_m[i],
                    speed_mps[i],
                    accel_mps2[i],
                    ctl_gap[i],
                    v_next[i],
                    coop[i] != 0,
                    mode[i],
                    dt_s,
                )
                v_next[i] = vn
                mode[i] = m
        # ---- 2. collisions: the sorted sweep (skipped when no vehicle overlaps its leader)
        for act in range(n_loop if step_flags[FLAG_OVERLAP] != 0 else 0):
            i = slot_of[act] if dense else active[act]
            if status[i] != ST_DRIVING:
                continue
            ld = leader[i]
            if ld < 0 or gap_now[i] >= 0.0 or status[ld] != ST_DRIVING:
                continue
            if edge[ld] != edge[i]:
                # a leader across the node that came from another approach has not cleared
                # the junction yet: the vehicle waits at its line, the paths have not met
                rp_l = route_ptr[ld]
                if rp_l <= leg_route_lo[leg[ld]] or route_edges[rp_l - 1] != edge[i]:
                    continue
            _push(events, ev_n, step, EV_COLLISION, i, ld, edge[i], lane[i])
            ev_n += 1
            status[i] = ST_REMOVED
            status[ld] = ST_REMOVED
            touched[i >> TOUCH_SHIFT] = 1
            touched[ld >> TOUCH_SHIFT] = 1
            relist = True
        # ---- 3. lane changes -------------------------------------------------------------
        if lc_period_steps > 0 and max_lanes > 1:
            # changes go one way per period (left, then right), so two vehicles never
            # change into the same place from both sides in one step
            dir_allowed = 1 if (step // lc_period_steps) % 2 == 0 else -1
            for act in prange(n_loop):
                i = act if dense else active[act]
                if status[i] != ST_DRIVING:
                    continue
                if (local[i] + step) % lc_period_steps != 0:
                    continue
                ty = vtype[i]
                leaving = lc_out[i] != 0
                if not leaving and (vt[ty, VT_CAN_CHANGE_LANE] <= 0.0 or platoon[i] >= 0):
                    continue
                v_lead_i = speed_mps[leader[i]] if leader[i] >= 0 else 0.0
                lc_target[i] = _mobil(
                    i,
                    step,
                    seed + inst[i] * INSTANCE_SEED_STRIDE,
                    local[i],
                    t_s,
                    inst,
                    vtype,
                    status,
                    edge,
                    lane,
                    pos_m,
                    speed_mps,
                    platoon,
                    pred,
                    vt,
                    edge_len_m,
                    edge_lanes,
                    lane_closed,
                    edge_speed_mps,
                    edge_cap_mps,
                    route_edges,
                    route_ptr,
                    leg,
                    leg_route_hi,
                    order,
                    bucket_start,
                    rank,
                    n_edges,
                    max_lanes,
                    gap_now[i],
                    v_lead_i,
                    dir_allowed,
                    leaving,
                )
            # platoons as a unit: the head decides where its lane ends
            for act in range(n_loop):
                i = slot_of[act] if dense else active[act]
                if status[i] != ST_DRIVING or platoon[i] < 0 or plat_head[platoon[i]] != i:
                    continue
                tgt_p = _platoon_lane_change(
                    i,
                    inst,
                    vtype,
                    status,
                    edge,
                    lane,
                    pos_m,
                    plat_next,
                    vt,
                    edge_len_m,
                    edge_lanes,
                    lane_closed,
                    route_edges,
                    route_ptr,
                    leg,
                    leg_route_hi,
                    order,
                    bucket_start,
                    n_edges,
                    max_lanes,
                )
                # the same one-way-per-period rule as single vehicles
                plat_lc[platoon[i]] = tgt_p if tgt_p - lane[i] == dir_allowed else -1
            for act in range(n_loop):
                i = slot_of[act] if dense else active[act]
                if status[i] != ST_DRIVING:
                    continue
                tgt = lc_target[i]
                pl = platoon[i]
                if pl >= 0 and plat_lc[pl] >= 0 and lc_out[i] == 0:
                    tgt = plat_lc[pl]
                if tgt < 0 or tgt == lane[i]:
                    continue
                lane[i] = tgt
                lane_changes[i] += 1
                touched[i >> TOUCH_SHIFT] = 1
                code = EV_LANE_CHANGE if (pl < 0 or lc_out[i] != 0) else EV_PLATOON_LANE_CHANGE
                if tgt >= 100:  # a cut-in into a platoon gap, flagged by _mobil
                    lane[i] = tgt - 100
                    code = EV_CUT_IN
                _push(events, ev_n, step, code, i, edge[i], lane[i], -1)
                ev_n += 1
            for p_ in range(plat_lc.shape[0]):
                plat_lc[p_] = -1
        # ---- 4. move, energy, stats, edge transitions ------------------------------------
        for act in prange(n_loop):
            i = act if dense else active[act]
            if status[i] != ST_DRIVING:
                continue  # removed in a collision this step
            ty = vtype[i]
            v0 = speed_mps[i]
            vn = v_next[i]
            a = (vn - v0) / dt_s
            e = edge[i]
            if vt[ty, VT_IS_TRUCK] > 0.0:
                g_d = gap_now[i] if (leader[i] >= 0 and leader[i] == pred[i]) else math.nan
                if pred[i] < 0 and plat_next[i] >= 0:
                    g_d = gap_now[plat_next[i]]
                # a solo truck's multiplier is 1: skipping the table there saved ~4 ns per
                # vehicle-step on the bench ring (the same bits)
                row = drag_row[i]
                drag = drag_multiplier_row(row, g_d) if row >= 0 else 1.0
                energy_kwh[i] += step_energy_kwh_prepared(
                    e_prep[ty],
                    vt[ty, VT_MASS_KG],
                    vn,
                    a,
                    edge_cos[e],
                    edge_sin[e],
                    drag,
                    vt[ty, VT_CD_A_M2],
                    vt[ty, VT_CRR],
                )
            if a < -HARD_BRAKE_MPS2 and accel_mps2[i] >= -HARD_BRAKE_MPS2:
                hard_brakes[i] += 1
            accel_mps2[i] = a
            speed_mps[i] = vn
            pos_m[i] += vn * dt_s
            distance_m[i] += vn * dt_s
            beacon_age_s[i] += dt_s
            p = pred[i]
            beacon_due = p >= 0 and (step + local[p]) % beacon_period_steps == 0
            # the loss draw only where a beacon is due and may be lost (counter-based: drawing
            # it or not changes no other draw)
            if beacon_due and (
                loss_p <= 0.0
                or uniform(seed + inst[i] * INSTANCE_SEED_STRIDE, local[i], step, PURPOSE_LOSS)
                >= loss_p
            ):
                beacon_age_s[i] = 0.0
            # onto the next edges of its route, up to its last one
            lg = leg[i]
            while pos_m[i] >= edge_len_m[e] and route_ptr[i] + 1 < leg_route_hi[lg]:
                pos_m[i] -= edge_len_m[e]
                route_ptr[i] += 1
                e = route_edges[route_ptr[i]]
                edge[i] = e
                lane[i] = min(lane[i], edge_lanes[e] - 1)
                touched[i >> TOUCH_SHIFT] = 1  # (threads may write the same byte: all 1)
            if pos_m[i] >= edge_len_m[e]:
                step_flags[FLAG_ARRIVAL] = 1
        # arrivals at the routes' ends, past the last edge (serial: sites are shared); most
        # steps have none, and the pass is skipped
        for act in range(n_loop if step_flags[FLAG_ARRIVAL] != 0 else 0):
            i = slot_of[act] if dense else active[act]
            if status[i] != ST_DRIVING:
                continue
            e = edge[i]
            if pos_m[i] >= edge_len_m[e]:
                lg = leg[i]
                distance_m[i] -= pos_m[i] - edge_len_m[e]  # it leaves at the route's end
                site = leg_site[lg]
                if site >= 0:
                    site_load[inst[i], site] += 1
                status[i] = ST_DWELLING
                touched[i >> TOUCH_SHIFT] = 1
                ready_s[i] = t_s + dt_s + leg_dwell_s[lg]
                next_due_s = min(next_due_s, ready_s[i])
                relist = True
                _push(events, ev_n, step, EV_ARRIVE_SITE, i, site, e, -1)
                ev_n += 1
        steps_done += 1
        # ---- 5. output ---------------------------------------------------------------
        if (step + 1) % record_every == 0:
            for act in range(n_loop):
                i = slot_of[act] if dense else active[act]
                if status[i] != ST_DRIVING:
                    continue
                fcd_veh[fcd_n] = i
                fcd[fcd_n, 0] = (step + 1) * dt_s
                fcd[fcd_n, 1] = edge[i]
                fcd[fcd_n, 2] = lane[i]
                fcd[fcd_n, 3] = pos_m[i]
                fcd[fcd_n, 4] = speed_mps[i]
                fcd[fcd_n, 5] = accel_mps2[i]
                fcd[fcd_n, 6] = gap_now[i] if gap_now[i] < NO_GAP and leader[i] >= 0 else np.nan
                fcd[fcd_n, 7] = energy_kwh[i]
                fcd[fcd_n, 8] = mode[i]
                fcd_n += 1
    return steps_done, fcd_n, ev_n


FCD_COLUMNS = (
    "time_s",
    "edge",
    "lane",
    "pos_m",
    "speed_mps",
    "accel_mps2",
    "gap_m",
    "energy_kwh",
    "mode",
)


@njit(cache=True, inline="always")
def _push(
    events: np.ndarray, r: int, step: int, code: int, veh: int, a: int, b: int, c: int
) -> None:
    events[r, 0] = step
    events[r, 1] = code
    events[r, 2] = veh
    events[r, 3] = a
    events[r, 4] = b
    events[r, 5] = c


@njit(cache=True, inline="always")
def _junction_occupied(
    i: int,
    e: int,
    e_next: int,
    node: int,
    d_end: float,
    succ_ptr: np.ndarray,
    succ_edge: np.ndarray,
    edge_lanes: np.ndarray,
    edge_arm_rad: np.ndarray,
    n_edges: int,
    max_lanes: int,
    bucket_start: np.ndarray,
    order: np.ndarray,
    inst: np.ndarray,
    route_ptr: np.ndarray,
    route_edges: np.ndarray,
    leg: np.ndarray,
    leg_route_lo: np.ndarray,
    vt: np.ndarray,
    vtype: np.ndarray,
    pos_m: np.ndarray,
    speed_mps: np.ndarray,
) -> bool:
    """Whether lane head ``i``, ``d_end`` before ``node`` on edge ``e`` and going on to
    ``e_next``, waits for a vehicle still in the junction (``waits_for_occupant``): the
    rearmost of each lane leaving the node, where it came through the node from another
    approach. One on ``e_next`` itself is a leader, which the look ahead finds."""
    for q in range(succ_ptr[node], succ_ptr[node + 1]):
        e_f = succ_edge[q]
        if e_f == e_next:
            continue
        for l_f in range(edge_lanes[e_f]):
            k_f = lane_key(inst[i], e_f, l_f, n_edges, max_lanes)
            if bucket_start[k_f + 1] == bucket_start[k_f]:
                continue
            f = order[bucket_start[k_f + 1] - 1]
            rp_f = route_ptr[f]
            if rp_f <= leg_route_lo[leg[f]]:
                continue  # it entered the road on this edge
            e_in = route_edges[rp_f - 1]
            if e_in != e and waits_for_occupant(
                d_end,
                speed_mps[i],
                edge_arm_rad[e, 0],
                edge_arm_rad[e_next, 1],
                edge_arm_rad[e_in, 0],
                edge_arm_rad[e_f, 1],
                pos_m[f],
                vt[vtype[f], VT_LENGTH_M],
                speed_mps[f],
            ):
                return True
    return False


@njit(cache=True)
def _through_traffic_near(
    e: int,
    inst_i: int,
    edge_from: np.ndarray,
    edge_len_m: np.ndarray,
    edge_lanes: np.ndarray,
    pred_ptr: np.ndarray,
    pred_edge: np.ndarray,
    head_of: np.ndarray,
    route_edges: np.ndarray,
    route_ptr: np.ndarray,
    leg: np.ndarray,
    leg_route_hi: np.ndarray,
    pos_m: np.ndarray,
    speed_mps: np.ndarray,
    n_edges: int,
    max_lanes: int,
) -> bool:
    """Whether a vehicle will cross the start node of edge ``e`` into ``e`` within
    ``INSERT_YIELD_S`` (a departing vehicle waits for it, as SUMO's insertion does)."""
    node = edge_from[e]
    for q in range(pred_ptr[node], pred_ptr[node + 1]):
        e_o = pred_edge[q]
        for l_o in range(edge_lanes[e_o]):
            j = head_of[lane_key(inst_i, e_o, l_o, n_edges, max_lanes)]
            if j < 0:
                continue
            rj = route_ptr[j] + 1
            if rj >= leg_route_hi[leg[j]] or route_edges[rj] != e:
                continue
            if edge_len_m[e_o] - pos_m[j] < speed_mps[j] * INSERT_YIELD_S + 20.0:
                return True
    return False


@njit(cache=True, inline="always")
def _rank_of(order: np.ndarray, bucket_start: np.ndarray, k: int, i: int, rank: np.ndarray) -> int:
    """Index of vehicle ``i`` in bucket ``k`` of ``order``; the bucket's end if ``i`` is not in
    it (a vehicle that entered the road this step: it is behind the lane's last vehicle)."""
    r = rank[i]
    if bucket_start[k] <= r < bucket_start[k + 1] and order[r] == i:
        return r
    return bucket_start[k + 1]


@njit(cache=True, inline="always")
def _first_behind(order: np.ndarray, lo: int, hi: int, pos_m: np.ndarray, p: float) -> int:
    """First index in a bucket (front-most first) whose vehicle is at or behind ``p``."""
    a = lo
    b = hi
    while a < b:
        m = (a + b) // 2
        if pos_m[order[m]] > p:
            a = m + 1
        else:
            b = m
    return a


@njit(cache=True)
def _mobil(
    i: int,
    step: int,
    seed: int,
    local_i: int,
    t_s: float,
    inst: np.ndarray,
    vtype: np.ndarray,
    status: np.ndarray,
    edge: np.ndarray,
    lane: np.ndarray,
    pos_m: np.ndarray,
    speed_mps: np.ndarray,
    platoon: np.ndarray,
    pred: np.ndarray,
    vt: np.ndarray,
    edge_len_m: np.ndarray,
    edge_lanes: np.ndarray,
    lane_closed: np.ndarray,
    edge_speed_mps: np.ndarray,
    edge_cap_mps: np.ndarray,
    route_edges: np.ndarray,
    route_ptr: np.ndarray,
    leg: np.ndarray,
    leg_route_hi: np.ndarray,
    order: np.ndarray,
    bucket_start: np.ndarray,
    rank: np.ndarray,
    n_edges: int,
    max_lanes: int,
    gap_cur: float,
    v_lead_cur: float,
    dir_allowed: int,
    leaving: bool,
) -> int:
    """MOBIL's choice for vehicle ``i``: the target lane, -1 to stay, ``100 + lane`` for a
    change that cuts into a platoon gap."""
    e = edge[i]
    ln = lane[i]
    ty = vtype[i]
    v = speed_mps[i]
    length = vt[ty, VT_LENGTH_M]
    v_des = min(
        edge_speed_mps[e] * vt[ty, VT_SPEED_FACTOR], vt[ty, VT_MAX_SPEED_MPS], edge_cap_mps[e]
    )
    s0 = vt[ty, VT_MIN_GAP_M]
    T = vt[ty, VT_TIME_GAP_S]
    a_max = vt[ty, VT_ACCEL_MPS2]
    b = vt[ty, VT_DECEL_MPS2]
    dl = vt[ty, VT_IDM_DELTA]
    # must the vehicle leave its lane (it ends at the end of this edge)?
    rp = route_ptr[i]
    mandatory = False
    mand_dir = -1
    if rp + 1 < leg_route_hi[leg[i]]:
        e_next = route_edges[rp + 1]
        near = edge_len_m[e] - pos_m[i] < MANDATORY_LC_ZONE_M
        if near and not lane_open(edge_lanes, lane_closed, e_next, ln):
            mandatory = True
            # towards the nearest lane that goes on (right first)
            if not lane_open(edge_lanes, lane_closed, e_next, ln - 1):
                mand_dir = 1
    # one direction per period: the cheap tests of the target lane come first, and the
    # accelerations MOBIL weighs are computed only for a change that passes them
    dirn = dir_allowed
    tl = ln + dirn
    if tl < 0 or tl >= edge_lanes[e] or (mandatory and dirn != mand_dir):
        return -1
    if lane_closed[e, tl] != 0:
        return -1
    # the target lane must continue on the next edge of the route
    ends = rp + 1 < leg_route_hi[leg[i]] and not lane_open(
        edge_lanes, lane_closed, route_edges[rp + 1], tl
    )
    if ends and not mandatory:
        return -1
    k = lane_key(inst[i], e, tl, n_edges, max_lanes)
    lo = bucket_start[k]
    hi = bucket_start[k + 1]
    q = _first_behind(order, lo, hi, pos_m, pos_m[i])
    ld = order[q - 1] if q > lo else -1
    fw = order[q] if q < hi else -1
    g_new = NO_GAP
    v_ld = 0.0
    if ld >= 0:
        g_new = pos_m[ld] - vt[vtype[ld], VT_LENGTH_M] - pos_m[i]
        v_ld = speed_mps[ld]
    elif rp + 1 < leg_route_hi[leg[i]]:
        # the target lane's leader may already be on the next edge
        e2 = route_edges[rp + 1]
        k2 = lane_key(inst[i], e2, min(tl, edge_lanes[e2] - 1), n_edges, max_lanes)
        if bucket_start[k2 + 1] > bucket_start[k2]:
            j = order[bucket_start[k2 + 1] - 1]
            g_new = edge_len_m[e] - pos_m[i] + pos_m[j] - vt[vtype[j], VT_LENGTH_M]
            v_ld = speed_mps[j]
    if g_new < s0 * 0.5:
        return -1
    if fw < 0 and pos_m[i] - length < LC_EDGE_START_M:
        return -1  # followers on the edges behind are not in this lane's bucket
    a_new = _idm_accel(v, g_new, v_ld, v_des, s0, T, a_max, b, dl)
    if a_new < -MOBIL_SAFE_DECEL_MPS2:
        return -1
    d_new_follower = 0.0
    if fw >= 0:
        tf = vtype[fw]
        vf = speed_mps[fw]
        g_fw = pos_m[i] - length - pos_m[fw]
        if g_fw < vt[tf, VT_MIN_GAP_M] * 0.5:
            return -1
        vf_des = min(edge_speed_mps[e] * vt[tf, VT_SPEED_FACTOR], vt[tf, VT_MAX_SPEED_MPS])
        a_fw_new = _idm_of_type(vt, tf, vf, g_fw, v, vf_des)
        if platoon[fw] >= 0:
            # a platoon truck answers a cut-in with its ACC fallback, not with IDM's
            # harsh reaction: the car judges safety by the closing speed (the braking
            # that stops the closing within the gap, Gipps 1986's criterion)
            closing = vf - v
            need = closing * closing / (2.0 * max(g_fw - vt[tf, VT_MIN_GAP_M], 0.01))
            if g_fw < vt[tf, VT_MIN_GAP_M] or (closing > 0.0 and need > MOBIL_SAFE_DECEL_MPS2):
                return -1
        elif a_fw_new < -MOBIL_SAFE_DECEL_MPS2:
            return -1
        g_fw_old = NO_GAP  # (a free road: the leader's speed is not read)
        if ld >= 0:
            g_fw_old = pos_m[ld] - vt[vtype[ld], VT_LENGTH_M] - pos_m[fw]
        a_fw_old = _idm_of_type(vt, tf, vf, g_fw_old, v_ld, vf_des)
        d_new_follower = a_fw_new - a_fw_old
    # a gap inside a platoon: drivers who cut in ignore the automated truck's comfort
    # (politeness 0 towards it; its safety is checked above), and they do so only with a
    # probability that grows with the gap
    into_platoon = ld >= 0 and fw >= 0 and platoon[fw] >= 0 and pred[fw] == ld
    if not (mandatory or leaving):  # else the lane ends, or a manoeuvre takes it out
        a_cur = _idm_accel(v, gap_cur, v_lead_cur, v_des, s0, T, a_max, b, dl)
        d_old_follower = _old_follower_gain(
            i, e, ln, v, length, inst, vtype, speed_mps, pos_m, vt, edge_speed_mps, order,
            bucket_start, rank, n_edges, max_lanes,
        )  # fmt: skip
        bias = MOBIL_BIAS_RIGHT_MPS2 if dirn < 0 else -MOBIL_BIAS_RIGHT_MPS2
        gain = a_new - a_cur + MOBIL_POLITENESS * (d_new_follower + d_old_follower) + bias
        if into_platoon:
            gain -= MOBIL_POLITENESS * d_new_follower
        if gain <= MOBIL_THRESHOLD_MPS2:
            return -1
    if into_platoon:
        g_pl = pos_m[ld] - vt[vtype[ld], VT_LENGTH_M] - pos_m[fw]
        p_cut = (g_pl - CUT_IN_GAP_LO_M) / (CUT_IN_GAP_HI_M - CUT_IN_GAP_LO_M)
        p_cut = min(max(p_cut, 0.0), 1.0) * CUT_IN_MAX_P
        if uniform(seed, local_i, step, PURPOSE_CUT_IN) >= p_cut:
            return -1
        return 100 + tl
    return tl


@njit(cache=True, inline="always")
def _old_follower_gain(
    i: int,
    e: int,
    ln: int,
    v: float,
    length: float,
    inst: np.ndarray,
    vtype: np.ndarray,
    speed_mps: np.ndarray,
    pos_m: np.ndarray,
    vt: np.ndarray,
    edge_speed_mps: np.ndarray,
    order: np.ndarray,
    bucket_start: np.ndarray,
    rank: np.ndarray,
    n_edges: int,
    max_lanes: int,
) -> float:
    """How much the follower in vehicle ``i``'s lane gains if ``i`` leaves it [m/s²]."""
    k_cur = lane_key(inst[i], e, ln, n_edges, max_lanes)
    r = _rank_of(order, bucket_start, k_cur, i, rank)
    f_old = order[r + 1] if r + 1 < bucket_start[k_cur + 1] else -1
    if f_old < 0:
        return 0.0
    tf = vtype[f_old]
    vf = speed_mps[f_old]
    vf_des = min(edge_speed_mps[e] * vt[tf, VT_SPEED_FACTOR], vt[tf, VT_MAX_SPEED_MPS])
    g_before = pos_m[i] - length - pos_m[f_old]
    a_before = _idm_of_type(vt, tf, vf, g_before, v, vf_des)
    if r > bucket_start[k_cur]:
        ldc = order[r - 1]
        g_after = pos_m[ldc] - vt[vtype[ldc], VT_LENGTH_M] - pos_m[f_old]
        v_after = speed_mps[ldc]
    else:
        g_after = NO_GAP
        v_after = 0.0
    a_after = _idm_of_type(vt, tf, vf, g_after, v_after, vf_des)
    return a_after - a_before


@njit(cache=True)
def _platoon_lane_change(
    head: int,
    inst: np.ndarray,
    vtype: np.ndarray,
    status: np.ndarray,
    edge: np.ndarray,
    lane: np.ndarray,
    pos_m: np.ndarray,
    plat_next: np.ndarray,
    vt: np.ndarray,
    edge_len_m: np.ndarray,
    edge_lanes: np.ndarray,
    lane_closed: np.ndarray,
    route_edges: np.ndarray,
    route_ptr: np.ndarray,
    leg: np.ndarray,
    leg_route_hi: np.ndarray,
    order: np.ndarray,
    bucket_start: np.ndarray,
    n_edges: int,
    max_lanes: int,
) -> int:
    """Target lane of a platoon whose lane ends (or is closed for works) ahead, -1 to stay.

    The head decides; the platoon moves only when every member is on the head's edge and
    lane and the target lane is free from ``PLATOON_LC_MARGIN_M`` ahead of the head to
    ``PLATOON_LC_MARGIN_M`` behind the tail.
    """
    e = edge[head]
    ln = lane[head]
    rp = route_ptr[head]
    if rp + 1 >= leg_route_hi[leg[head]]:
        return -1
    e_next = route_edges[rp + 1]
    if lane_open(edge_lanes, lane_closed, e_next, ln):
        return -1
    # the nearest lane that goes on, right first
    tl = ln - 1
    if not (lane_open(edge_lanes, lane_closed, e_next, tl) and lane_closed[e, tl] == 0):
        tl = ln + 1
        if not (
            tl < edge_lanes[e]
            and lane_open(edge_lanes, lane_closed, e_next, tl)
            and lane_closed[e, tl] == 0
        ):
            return -1
    if edge_len_m[e] - pos_m[head] > MANDATORY_LC_ZONE_M * 2.0:
        return -1
    tail = head
    j = plat_next[head]
    while j >= 0:
        if status[j] != ST_DRIVING or edge[j] != e or lane[j] != ln:
            return -1
        tail = j
        j = plat_next[j]
    front = pos_m[head] + PLATOON_LC_MARGIN_M
    back = pos_m[tail] - vt[vtype[tail], VT_LENGTH_M] - PLATOON_LC_MARGIN_M
    k = lane_key(inst[head], e, tl, n_edges, max_lanes)
    lo = bucket_start[k]
    hi = bucket_start[k + 1]
    q = _first_behind(order, lo, hi, pos_m, front + 1000.0)
    while q < hi:
        o = order[q]
        p_front = pos_m[o]
        p_back = p_front - vt[vtype[o], VT_LENGTH_M]
        if p_back > front:
            q += 1
            continue
        if p_front < back:
            break
        return -1
    return tl


# Both variants are compiled without Numba's reference counts (``_nrt=False``, which the
# functions they call inherit): the step allocates nothing (``call_constants`` prepares what
# it needs per call, the lane sort works in place), and with counts on, every array
# argument of an inner call and every row view was an atomic add and subtract, some half of
# the step's time (122 -> 72 ns per vehicle-step on the two-lane bench ring).
#: The step on one thread: fastest while few vehicles are on the road, where waking the
#: threads for each of the step's parallel loops costs more than their share of the work.
run_net_steps = compiled_variant(run_net_steps_py, "run_net_steps", **NO_REFCOUNTS)
#: The step with its per-vehicle loops spread over all cores. Both give the same bits.
run_net_steps_parallel = compiled_variant(
    run_net_steps_py, "run_net_steps_parallel", parallel=True, **NO_REFCOUNTS
)


class _OnOneThread:
    """A threaded variant run on one thread (Numba's thread count set to 1 for the call).

    The one-thread variant's loops are compiled without Numba's parallel machinery, which
    also marks a parallel loop's arrays as not aliased, and LLVM vectorises none of them;
    compiled parallel, the law of an all-IDM road vectorises (``idm_next_speed``). On a busy
    road that pays for the parallel regions' start (0.6 us each on one thread): on the bench
    ring 29.0 -> 25.2 ns per vehicle-step (Zen 5 host, interleaved). On a quiet road the
    regions' start is most of the step, and ``step_variant`` keeps the one-thread variant.
    The same bits as both.
    """

    def __init__(self, fn: Any, name: str) -> None:
        self._fn = fn
        self.__name__ = name

    @property
    def signatures(self) -> list[Any]:
        """The compiled signatures of the variant it runs (empty: not compiled yet)."""
        return list(self._fn.signatures)

    def __call__(self, *args: Any) -> Any:
        before = get_num_threads()
        set_num_threads(1)
        try:
            return self._fn(*args)
        finally:
            set_num_threads(before)


#: The busy road's step on one core (``StepChooser``'s alternative to the threads).
run_net_steps_one_core = _OnOneThread(run_net_steps_parallel, "run_net_steps_one_core")
#: A call runs threaded when at least this many vehicles are on the road or due to enter it
#: by its end. Measured on the one-lane bench ring (AMD EPYC, 2 threads, ns per
#: vehicle-step, one thread / two): 200 vehicles 51 / 61, 500: 48 / 41, 1,000: 49 / 37,
#: 2,000: 49 / 32. (With reference counts on, before, the threaded step only paid off from
#: some 20,000 vehicles: the counts' atomics bounced between the cores.) The Ordos day
#: (345 trucks, most of them parked or loading at any time) ran 3.4x slower threaded.
PARALLEL_MIN_ON_ROAD = 500


def step_variant(status: np.ndarray, ready_s: np.ndarray, end_s: float) -> Any:
    """The variant of the step for a call that runs until ``end_s`` from this state: the
    threaded one when ``PARALLEL_MIN_ON_ROAD`` vehicles or more are driving or waiting to
    enter by ``end_s``."""
    busy = np.count_nonzero(status == ST_DRIVING)
    if busy < PARALLEL_MIN_ON_ROAD:
        busy += np.count_nonzero((status == ST_WAITING) & (ready_s < end_s))
    return run_net_steps_parallel if busy >= PARALLEL_MIN_ON_ROAD else run_net_steps


#: ``StepChooser``: steps of a call that measures a variant, how often (in calls) the slower
#: one is measured again, and how many of a variant's last measurements it compares.
PROBE_STEPS = 50
REPROBE_EVERY = 4
RECENT = 3


class StepChooser:
    """Picks the step on one core or on all for a busy road by timing both as a run goes.

    Whether threads pay on a busy road depends on the machine, and on the 2-vCPU VMs of
    docs/benchmarks.md on the minute: on the one-lane bench ring the threaded step took 26 ns
    per vehicle-step for some minutes and 54 for others (one thread: 41, at times 63), the
    VM's two vCPUs apparently sharing their host's cores with other work. So where
    ``step_variant`` would thread, the first calls run ``PROBE_STEPS`` steps with each
    variant, the faster one runs the calls after, and every ``REPROBE_EVERY`` calls the
    other is timed again. A variant counts as fast as the best of its last ``RECENT``
    measurements, so that one call the host slowed down (a 50-step probe takes 5 ms on the
    bench ring) does not decide the run: on the bench ring one such probe kept the one-thread
    step running at 61 ns per vehicle-step while the threaded one had last measured 35.
    The variant on one core is the threaded one run on one thread (``run_net_steps_one_core``).
    Both give the same bits, so the choice never changes a result. A variant's first call in
    a process (compiling or loading it) is not counted.
    """

    def __init__(self) -> None:
        #: each variant's last ``RECENT`` measurements [ns per vehicle-step]
        self._recent: dict[str, list[float]] = {}
        #: steps run by each variant (the one-thread one on quiet roads included)
        self.steps_run: dict[str, int] = {}
        self._calls = 0

    def pick(self, fn: Any, step: int, end_step: int) -> tuple[Any, int]:
        """The variant to run instead of ``step_variant``'s ``fn``, and the step to run to."""
        if fn is not run_net_steps_parallel:
            return fn, end_step
        self._calls += 1
        probe = min(end_step, step + PROBE_STEPS)
        ns = self.ns_per_vehicle_step
        for cand in (run_net_steps_parallel, run_net_steps_one_core):
            if cand.__name__ not in ns:
                return cand, probe
        best, other = (
            (run_net_steps_parallel, run_net_steps_one_core)
            if ns[run_net_steps_parallel.__name__] <= ns[run_net_steps_one_core.__name__]
            else (run_net_steps_one_core, run_net_steps_parallel)
        )
        if self._calls % REPROBE_EVERY == 0:
            return other, probe
        return best, end_step

    def record(self, fn: Any, warm: bool, wall_s: float, steps: int, vehicle_steps: int) -> None:
        """What a call of ``fn`` took; ``warm``: ``fn`` had run in this process before."""
        if fn not in (run_net_steps_parallel, run_net_steps_one_core, run_net_steps):
            return
        self.steps_run[fn.__name__] = self.steps_run.get(fn.__name__, 0) + steps
        if warm and vehicle_steps > 0 and fn is not run_net_steps:
            recent = self._recent.setdefault(fn.__name__, [])
            recent.append(wall_s / vehicle_steps * 1e9)
            del recent[:-RECENT]

    @property
    def ns_per_vehicle_step(self) -> dict[str, float]:
        """Each measured variant's best of its last ``RECENT`` measurements."""
        return {name: min(recent) for name, recent in self._recent.items()}

    def threads_used(self, since: dict[str, int] | None = None) -> int:
        """Numba's threads if the threaded variant ran most steps, else 1; ``since``: only
        the steps after a copy of ``steps_run`` taken earlier (a timed window's)."""
        before = since or {}

        def ran(f: Any) -> int:
            return self.steps_run.get(f.__name__, 0) - before.get(f.__name__, 0)

        par = ran(run_net_steps_parallel)
        one = ran(run_net_steps_one_core) + ran(run_net_steps)
        return get_num_threads() if par > one else 1
