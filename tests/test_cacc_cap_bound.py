"""The cruising shortcut of the fast CACC step: ``sumo_cfm.cacc_cap_is_off`` may say "the
safe-speed cap does not bind" only where ``cacc_cap`` indeed returns the law's speed unchanged.

The fast step (``kernel_fast._step_block``) skips SUMO's safe speed (four divisions and a
square root) for every truck this test answers True for, and redoes the others exactly. A
single wrong True would change a trajectory, so the implication is checked on a million
random states over the whole operating range, with random truck parameters, plus states
placed right at the edge where the cap starts to bind.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numba import njit

from convoy.vehicle import sumo_cfm as cfm


@njit(cache=True)
def _check(
    p_rows: np.ndarray, gap: np.ndarray, pv: np.ndarray, v_cacc: np.ndarray, dt: float
) -> tuple[int, int]:
    """(states the bound calls off, of those how many the exact cap changes)."""
    off = 0
    wrong = 0
    for i in range(gap.shape[0]):
        p = p_rows[i]
        if cfm.cacc_cap_is_off(p, gap[i], pv[i], dt, v_cacc[i]):
            off += 1
            # desired speed far above: only the cap may lower the law's speed
            if cfm.cacc_cap(p, 0.0, gap[i], pv[i], 1e9, dt, v_cacc[i]) != v_cacc[i]:
                wrong += 1
    return off, wrong


def _params(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = np.empty((n, cfm.CACC_VECTOR_SIZE))
    base = cfm.SumoCaccParams()
    for i in range(n):
        decel = float(rng.uniform(1.0, 9.0))
        p = replace(
            base,
            time_gap_s=float(rng.uniform(0.2, 2.5)),
            min_gap_m=float(rng.uniform(0.5, 5.0)),
            decel_mps2=decel,
            emergency_decel_mps2=decel + float(rng.uniform(0.0, 4.0)),
            pred_decel_mps2=float(rng.uniform(1.0, 9.0)),
            emergency_threshold_mps=float(rng.uniform(0.0, 3.0)),
        )
        rows[i] = p.to_vector()
    return rows


def test_bound_never_claims_off_where_the_cap_binds() -> None:
    rng = np.random.default_rng(20261127)
    n = 1_000_000
    kinds = _params(rng, 256)
    p_rows = kinds[rng.integers(0, len(kinds), n)]
    gap = rng.uniform(-5.0, 300.0, n)
    pv = rng.uniform(0.0, 35.0, n)
    v_cacc = rng.uniform(0.0, 40.0, n)
    off, wrong = _check(p_rows, gap, pv, v_cacc, 0.1)
    assert wrong == 0
    # the shortcut must also be worth having: it rules the cap out for most of these states
    assert off > n // 2


def test_bound_holds_at_the_edge_where_the_cap_starts_to_bind() -> None:
    # For each state, the smallest gap (to 1 mm) at which the exact cap is off; the bound
    # must answer False below it, and answer True a little above it (it is tight to
    # about a step's travel, not arbitrarily loose).
    rng = np.random.default_rng(7)
    p = cfm.SumoCaccParams(decel_mps2=4.0, emergency_decel_mps2=7.5, pred_decel_mps2=4.0)
    row = p.to_vector()
    for _ in range(300):
        pv = float(rng.uniform(0.0, 30.0))
        v_cacc = float(rng.uniform(0.0, 30.0))
        gaps = np.arange(-1.0, 400.0, 0.001)
        exact_off = np.array(
            [cfm.cacc_cap(row, 0.0, g, pv, 1e9, 0.1, v_cacc) == v_cacc for g in gaps[::1000]]
        )
        first_coarse = int(np.argmax(exact_off)) if exact_off.any() else len(exact_off)
        lo = gaps[::1000][max(first_coarse - 1, 0)]
        fine = np.arange(lo, lo + 1.001, 0.001)
        edge = next(g for g in fine if cfm.cacc_cap(row, 0.0, g, pv, 1e9, 0.1, v_cacc) == v_cacc)
        below = fine[fine < edge]
        assert not any(cfm.cacc_cap_is_off(row, g, pv, 0.1, v_cacc) for g in below)
        # above the edge by the margin plus a step of travel at most, the bound sees it
        slack_m = 0.011 + v_cacc * 0.1 + pv * 0.05 + 1.0
        assert cfm.cacc_cap_is_off(row, edge + slack_m, pv, 0.1, v_cacc)
