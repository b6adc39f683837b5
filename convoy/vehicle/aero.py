"""Platoon aerodynamics: the drag multiplier of a truck drafting in (or leading) a platoon.

Hussein & Rakha (IEEE T-VT 71(2), 2022) fit the ratio of a truck's drag coefficient in a
platoon to its drag coefficient alone as a power law of the bumper gap ``h`` [m]::

    Cd_frac(h) = a * h**b + c,  clamped to at most 1, and exactly 1 when h >= g0.

The multiplier scales the aerodynamic term of the road load only (see
:func:`convoy.vehicle.truck.road_load_force_n`).

Platoon sizes other than those fitted are mapped as follows:

- size 1: a solo truck, multiplier 1;
- size 2: the 2-truck rows (leader, follower);
- size >= 3: the 4-truck rows: position 0 uses the leader row, the last position the trail
  row, and every inner position the middle row.

Gap convention: for the head truck (position 0) ``gap_m`` is the bumper gap to the truck
behind it; for every follower it is the bumper gap to the truck ahead.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.core.extending import overload
from numpy.typing import ArrayLike, NDArray

# Columns of HUSSEIN_RAKHA_TABLE.
HR_A = 0
HR_B = 1
HR_C = 2
HR_G0_M = 3

# Rows of HUSSEIN_RAKHA_TABLE.
HR_ROW_2_LEADER = 0
HR_ROW_2_FOLLOWER = 1
HR_ROW_4_LEADER = 2
HR_ROW_4_MIDDLE = 3
HR_ROW_4_TRAIL = 4

# (5, 4) rows as above, columns [a, b, c, g0_m]; g0 = inf where the fit has none.
# Hussein & Rakha, IEEE T-VT 71(2), 2022, via DESIGN.md "Platoon aerodynamics" table.
HUSSEIN_RAKHA_TABLE: NDArray[np.float64] = np.array(
    [
        [0.7231, 0.0919, 0.0, 34.0],  # 2-truck leader
        [0.2241, 0.1369, 0.5016, 320.0],  # 2-truck follower
        [0.0035, 0.5997, 0.9662, np.inf],  # 4-truck leader: no g0, clamp to 1 only
        [0.1522, 0.2111, 0.5260, 217.27],  # 4-truck middle
        [0.0726, 0.2842, 0.5794, 480.0],  # 4-truck trail
    ],
    dtype=np.float64,
)
HUSSEIN_RAKHA_TABLE.setflags(write=False)

# The power law is tabulated once and interpolated linearly: ``h**b`` costs a libm ``pow``
# (about 50 ns here, more than the rest of an engine step), the table a load and a multiply.
# Knots every 1 cm up to 50 m and every 0.5 m beyond, to 500 m (past every g0). The
# interpolation error is below 1e-6 for gaps of 1 m and more (tests/test_vehicle_physics.py);
# the fit itself is good to a few per cent.
DRAG_FINE_STEP_M = 0.01
DRAG_FINE_END_M = 50.0
DRAG_COARSE_STEP_M = 0.5
DRAG_TABLE_END_M = 500.0
_N_FINE = round(DRAG_FINE_END_M / DRAG_FINE_STEP_M)
# knots per metre, so that the lookup multiplies (a division costs as much as the rest of it)
_PER_FINE_STEP = 1.0 / DRAG_FINE_STEP_M
_PER_COARSE_STEP = 1.0 / DRAG_COARSE_STEP_M
_N_COARSE = round((DRAG_TABLE_END_M - DRAG_FINE_END_M) / DRAG_COARSE_STEP_M)


def _power_law_knots() -> NDArray[np.float64]:
    fine = np.arange(_N_FINE) * DRAG_FINE_STEP_M
    coarse = DRAG_FINE_END_M + np.arange(_N_COARSE + 1) * DRAG_COARSE_STEP_M
    gaps = np.concatenate([fine, coarse])
    t = HUSSEIN_RAKHA_TABLE
    knots = t[:, HR_A, None] * gaps[None, :] ** t[:, HR_B, None] + t[:, HR_C, None]
    knots.setflags(write=False)
    return knots


# (5, _N_FINE + _N_COARSE + 1): a*h**b + c of each row at the knots (not clamped).
DRAG_KNOTS: NDArray[np.float64] = _power_law_knots()
#: Each row's g0 (``HUSSEIN_RAKHA_TABLE[:, HR_G0_M]``): beyond it the multiplier is 1.
DRAG_G0_M: NDArray[np.float64] = np.ascontiguousarray(HUSSEIN_RAKHA_TABLE[:, HR_G0_M])


@njit(cache=True, inline="always")
def _table_row(platoon_size: int, position: int) -> int:
    """Row of HUSSEIN_RAKHA_TABLE for a position in a platoon of size >= 2."""
    if platoon_size == 2:
        return HR_ROW_2_LEADER if position == 0 else HR_ROW_2_FOLLOWER
    if position == 0:
        return HR_ROW_4_LEADER
    if position == platoon_size - 1:
        return HR_ROW_4_TRAIL
    return HR_ROW_4_MIDDLE


@njit(cache=True, inline="always")
def drag_multiplier(platoon_size: int, position: int, gap_m: float) -> float:
    """Drag multiplier (platoon Cd / solo Cd) of one truck, after Hussein & Rakha 2022.

    Args:
        platoon_size: Number of trucks in the platoon (1 = solo). Sizes 2 and >= 3 are
            mapped to the 2-truck and 4-truck fits as described in the module docstring.
        position: 0 for the head truck, ``platoon_size - 1`` for the last.
        gap_m: Bumper gap [m]: to the truck behind for the head, to the truck ahead for a
            follower.

    Returns:
        Multiplier in (0, 1]. It is 1.0 for a solo truck, for a gap at or beyond the fit's
        g0, and for a gap that is not a finite positive number (NaN: no neighbour known;
        inf: no neighbour; <= 0: overlapping bumpers, where the power law's h -> 0 limit has
        no physical meaning).

    Raises:
        ValueError: if ``position`` is outside ``[0, platoon_size)`` for a platoon of two or
            more trucks.
    """
    if platoon_size > 1 and (position < 0 or position >= platoon_size):
        raise ValueError("drag_multiplier: position must be in [0, platoon_size)")
    # the row form returns 1.0 for a solo truck and for a gap that is not finite and positive
    return drag_multiplier_row(drag_row(platoon_size, position), gap_m)


@njit(cache=True)
def drag_row(platoon_size: int, position: int) -> int:
    """Row of ``HUSSEIN_RAKHA_TABLE`` for :func:`drag_multiplier_row`; -1 for a solo truck."""
    if platoon_size <= 1:
        return -1
    return _table_row(platoon_size, position)


@njit(cache=True, error_model="numpy")
def drag_multiplier_row(row: int, gap_m: float) -> float:
    """:func:`drag_multiplier` for a row of ``HUSSEIN_RAKHA_TABLE`` (-1: a solo truck).

    No checks and no jumps, so that a loop over many trucks vectorises: every quantity is
    computed for every gap and the answer selected. 1.0 for a solo truck, for a gap at or
    beyond the fit's g0, and for a gap that is not a finite positive number.
    """
    return drag_multiplier_table(DRAG_KNOTS, DRAG_G0_M, row, gap_m)


@njit(cache=True, error_model="numpy")
def drag_multiplier_table(knots: np.ndarray, g0_m: np.ndarray, row: int, gap_m: float) -> float:
    """:func:`drag_multiplier_row` on tables passed in (``DRAG_KNOTS``, ``DRAG_G0_M``): a GPU
    kernel takes them as arguments, since a device's constant memory cannot hold them."""
    r = max(row, 0)
    fine = gap_m < DRAG_FINE_END_M
    x = gap_m * _PER_FINE_STEP
    x_coarse = (gap_m - DRAG_FINE_END_M) * _PER_COARSE_STEP + _N_FINE
    x = x if fine else x_coarse
    # clamped so that the knots read exist; the result is not used outside the table
    top = knots.shape[1] - 2.0
    x = x if x >= 0.0 else 0.0  # NaN too
    x = x if x <= top else top
    k = int(x)
    w = x - k
    frac = min(knots[r, k] + w * (knots[r, k + 1] - knots[r, k]), 1.0)
    inside = (row >= 0) & (gap_m > 0.0) & (gap_m < g0_m[r]) & (gap_m < DRAG_TABLE_END_M)
    return frac if inside else 1.0


def drag_lookup(row: int, gap_m: float) -> float:
    """:func:`drag_multiplier_row` for a kernel that runs on a CPU or a GPU. Numba's CPU target
    compiles it to :func:`drag_multiplier_row` (the interpolated table); its CUDA target
    (``convoy.sim.cuda_target``) evaluates the power law itself, ``a*h**b + c``, since the
    table (236 kB) does not fit in a GPU's 64 kB of constant memory and a ``pow`` costs a GPU
    little: the two agree to the table's interpolation error (below 1e-6 from 1 m)."""
    return drag_multiplier_row(row, gap_m)


@overload(drag_lookup, inline="always", target="cpu")
def _drag_lookup_cpu(row: int, gap_m: float):  # type: ignore[no-untyped-def]
    def impl(row: int, gap_m: float) -> float:
        return drag_multiplier_row(row, gap_m)

    return impl


@njit(cache=True, error_model="numpy")
def drag_power_law(row: int, gap_m: float) -> float:
    """:func:`drag_multiplier_row` with the fit evaluated, not interpolated (what a GPU runs
    for :func:`drag_lookup`)."""
    r = max(row, 0)
    frac = min(
        HUSSEIN_RAKHA_TABLE[r, HR_A] * gap_m ** HUSSEIN_RAKHA_TABLE[r, HR_B]
        + HUSSEIN_RAKHA_TABLE[r, HR_C],
        1.0,
    )
    inside = (
        (row >= 0)
        & (gap_m > 0.0)
        & (gap_m < HUSSEIN_RAKHA_TABLE[r, HR_G0_M])
        & (gap_m < DRAG_TABLE_END_M)
    )
    return frac if inside else 1.0


@njit(cache=True)
def _drag_multiplier_flat(
    platoon_size: NDArray[np.int64], position: NDArray[np.int64], gap_m: NDArray[np.float64]
) -> NDArray[np.float64]:
    out = np.empty(gap_m.size, dtype=np.float64)
    for i in range(gap_m.size):
        out[i] = drag_multiplier(platoon_size[i], position[i], gap_m[i])
    return out


def drag_multiplier_array(
    platoon_size: ArrayLike, position: ArrayLike, gap_m: ArrayLike
) -> NDArray[np.float64]:
    """Vectorised :func:`drag_multiplier` over broadcastable arrays.

    Args:
        platoon_size: Platoon sizes, any shape broadcastable with the others (integers).
        position: Positions in their platoons, 0 = head (integers).
        gap_m: Bumper gaps [m], same convention as :func:`drag_multiplier`.

    Returns:
        Multipliers, float64, with the broadcast shape of the inputs.
    """
    size_b, pos_b, gap_b = np.broadcast_arrays(
        np.asarray(platoon_size, dtype=np.int64),
        np.asarray(position, dtype=np.int64),
        np.asarray(gap_m, dtype=np.float64),
    )
    flat = _drag_multiplier_flat(
        np.ascontiguousarray(size_b).ravel(),
        np.ascontiguousarray(pos_b).ravel(),
        np.ascontiguousarray(gap_b).ravel(),
    )
    return flat.reshape(gap_b.shape)


def platoon_drag_multipliers(gaps_m: ArrayLike) -> NDArray[np.float64]:
    """Multipliers of every truck in one platoon, head first.

    Args:
        gaps_m: (n - 1,) bumper gaps [m]; ``gaps_m[k]`` lies between truck k and truck k + 1.
            An empty array means a solo truck.

    Returns:
        (n,) multipliers: the head uses ``gaps_m[0]``, follower k uses ``gaps_m[k - 1]``.
    """
    gaps = np.asarray(gaps_m, dtype=np.float64).ravel()
    n = gaps.size + 1
    if n == 1:
        return np.ones(1, dtype=np.float64)
    own_gap_m = np.concatenate((gaps[:1], gaps))
    return drag_multiplier_array(n, np.arange(n), own_gap_m)
