"""Conflicts at junctions from trajectories: post-encroachment time (PET).

PET is the time from the moment one road user leaves a conflict area to the moment another
arrives at it (Allen, Shin & Cooper 1978; FHWA's Surrogate Safety Assessment Model, Gettman
et al. 2008, FHWA-HRT-08-051, which flags a conflict up to 5 s). The network engine's
junction is a point, the node: a vehicle holds it from the moment its front reaches it until
its rear has left it. Two passages through a node are in conflict when they come from
different edges and their paths cross (``net_kernel.paths_cross``, the rule the engine's
junctions use) or lead into the same edge (a merge). PET <= 0: both were in the node at once.

The passages are read from floating-car data, so the same code measures convoy's FCD and
SUMO's (``scripts/junction_vs_sumo.py``). Between two records a vehicle is taken to drive at
constant speed: a front's arrival and a rear's departure are interpolated along the distance
driven (exact at constant speed; at 1 s records and 20 m/s within a few tenths of a second
when the speed changes).

    crossings = node_crossings(trajectories, edges)
    first, second, pet_s = post_encroachment(crossings, edges)   # pairs with PET <= 5 s
    table = conflict_table(crossings, edges, vehicle_ids)        # the same as a table
    table = junction_conflicts(sim, result)                      # from a NetSim run
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from numba import njit
from numpy.typing import NDArray

from convoy.sim import net_kernel as nk
from convoy.sim.network import NetResult, edge_arms_rad

if TYPE_CHECKING:
    from convoy.road.network import RoadNetwork
    from convoy.sim.network import NetSim

#: pairs reported up to this PET [s]: SSAM's default maximum PET (Gettman et al. 2008)
PET_WINDOW_S = 5.0


class ConflictError(ValueError):
    """Inconsistent trajectories or edge tables; the message names what and where."""


@dataclass(frozen=True, slots=True)
class EdgeTable:
    """The edges the trajectories refer to, by index.

    Attributes:
        ids: (E,) edge ids.
        from_node, to_node: (E,) node index at each end.
        length_m: (E,) length [m].
        arm_rad: (E, 2) where each edge meets its nodes (``network.edge_arms_rad``).
        node_ids: (N,) node ids.
    """

    ids: tuple[str, ...]
    from_node: NDArray[np.int64]
    to_node: NDArray[np.int64]
    length_m: NDArray[np.float64]
    arm_rad: NDArray[np.float64]
    node_ids: tuple[str, ...]

    @staticmethod
    def build(network: RoadNetwork, edge_ids: tuple[str, ...]) -> EdgeTable:
        """The table for ``edge_ids`` (an FCD's edge index) on ``network``, from its
        ``to_arrays`` (the tables the engine runs on)."""
        a = network.to_arrays()
        row = {e: k for k, e in enumerate(a.edge_ids)}
        missing = [e for e in edge_ids if e not in row]
        if missing:
            raise ConflictError(f"edges not in the network: {missing[:5]}")
        k = np.array([row[e] for e in edge_ids], dtype=np.int64)
        return EdgeTable(
            ids=tuple(edge_ids),
            from_node=a.edge_from[k].astype(np.int64),
            to_node=a.edge_to[k].astype(np.int64),
            length_m=a.edge_length_m[k],
            arm_rad=edge_arms_rad(network, edge_ids),
            node_ids=a.node_ids,
        )


@dataclass(frozen=True, slots=True)
class Trajectories:
    """Floating-car data, any row order.

    Attributes:
        vehicle: (r,) vehicle index of each record.
        time_s: (r,) record time [s].
        edge: (r,) edge index (``EdgeTable``).
        pos_m: (r,) front bumper's distance from the start of its edge [m].
        length_m: (V,) body length of each vehicle index [m].
        group: (V,) the world each vehicle drives in (a batch's instance; vehicles of
            different groups never meet).
    """

    vehicle: NDArray[np.int64]
    time_s: NDArray[np.float64]
    edge: NDArray[np.int64]
    pos_m: NDArray[np.float64]
    length_m: NDArray[np.float64]
    group: NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Crossings:
    """Passages of vehicles through nodes, one row each, sorted by (group, node, t_in_s).

    Attributes:
        vehicle: (c,) vehicle index.
        group: (c,) its group.
        node: (c,) node index.
        edge_in, edge_out: (c,) the edges it came by and left by.
        t_in_s: (c,) when its front reached the node [s].
        t_out_s: (c,) when its rear left the node [s]; where its records end first (its
            trip ended just past the node, or the run did), the last record's time.
    """

    vehicle: NDArray[np.int64]
    group: NDArray[np.int64]
    node: NDArray[np.int64]
    edge_in: NDArray[np.int64]
    edge_out: NDArray[np.int64]
    t_in_s: NDArray[np.float64]
    t_out_s: NDArray[np.float64]


def node_crossings(tr: Trajectories, edges: EdgeTable) -> Crossings:
    """Every passage through a node that two consecutive records of a vehicle show: on one
    edge, then on the edge that starts where it ended. (A vehicle that drove over a whole
    edge between two records shows no passage through that edge's nodes; one that was off
    the road between them, dwelling at a site, none at all.)"""
    n_rec = tr.vehicle.shape[0]
    for name in ("time_s", "edge", "pos_m"):
        if getattr(tr, name).shape[0] != n_rec:
            raise ConflictError(
                f"trajectories: {name} has {getattr(tr, name).shape[0]} rows, vehicle has {n_rec}"
            )
    if n_rec and (tr.edge.min() < 0 or tr.edge.max() >= len(edges.ids)):
        raise ConflictError(f"trajectories: edge index outside 0..{len(edges.ids) - 1}")
    order = np.lexsort((tr.time_s, tr.vehicle))
    veh, t, e, p = tr.vehicle[order], tr.time_s[order], tr.edge[order], tr.pos_m[order]
    # runs of records: a vehicle's, broken where it was off the road between two records
    # (a dwell at a site: more than 1.5 times the median record interval passed)
    same = veh[1:] == veh[:-1]
    dt = np.diff(t)
    if (same & (dt > 0.0)).any():
        same &= dt <= 1.5 * np.median(dt[same & (dt > 0.0)])
    run = np.concatenate(([0], np.cumsum(~same)))
    # distance driven since the previous record of the run: along the edge, or the rest of
    # the old edge and the start of the new one (0 between runs)
    onto = same & (e[1:] != e[:-1])
    adjacent = onto & (edges.to_node[e[:-1]] == edges.from_node[e[1:]])
    to_end = edges.length_m[e[:-1]] - p[:-1]
    # (onto an edge that does not start there: edges driven over between the records, the
    # distance unknown; the old edge's rest and the new one's start are a lower bound)
    ds = np.where(onto, to_end + p[1:], np.maximum(p[1:] - p[:-1], 0.0))
    ds = np.where(same, ds, 0.0)
    s = np.concatenate(([0.0], np.cumsum(ds)))  # non-decreasing over all rows
    k = np.flatnonzero(adjacent)  # record k on the old edge, k + 1 on the new
    s_node = s[k] + to_end[k]
    t_in = t[k] + (t[k + 1] - t[k]) * _frac(s_node - s[k], s[k + 1] - s[k])
    # the rear leaves when the vehicle has driven its length past the node: the first record
    # at or beyond that, interpolated back from it
    s_rear = s_node + tr.length_m[veh[k]]
    r = np.minimum(np.searchsorted(s, s_rear, side="left"), n_rec - 1)
    cleared = (run[r] == run[k]) & (s[r] >= s_rear)
    r0 = np.maximum(r - 1, k)
    t_out = t[r0] + (t[r] - t[r0]) * _frac(s_rear - s[r0], s[r] - s[r0])
    last = np.append(np.flatnonzero(~same), n_rec - 1)  # each run's last record
    t_out = np.where(cleared, t_out, t[last[run[k]]])
    group = tr.group[veh[k]]
    node = edges.to_node[e[k]]
    srt = np.lexsort((t_in, node, group))
    return Crossings(
        vehicle=veh[k][srt],
        group=group[srt],
        node=node[srt],
        edge_in=e[k][srt],
        edge_out=e[k + 1][srt],
        t_in_s=t_in[srt],
        t_out_s=t_out[srt],
    )


def _frac(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    """num / den in [0, 1], 1 where den is 0 (the vehicle stood between the records)."""
    return np.clip(np.divide(num, den, out=np.ones_like(num), where=den > 0.0), 0.0, 1.0)


@njit(cache=True)
def _in_conflict(
    arm_rad: np.ndarray, e_in: np.ndarray, e_out: np.ndarray, o_in: np.ndarray, o_out: np.ndarray
) -> np.ndarray:
    """Per pair: from different edges, and paths that cross or lead into the same edge."""
    out = np.zeros(e_in.shape[0], dtype=np.bool_)
    for k in range(e_in.shape[0]):
        if e_in[k] == o_in[k]:
            continue
        out[k] = e_out[k] == o_out[k] or nk.paths_cross(
            arm_rad[e_in[k], 0], arm_rad[e_out[k], 1], arm_rad[o_in[k], 0], arm_rad[o_out[k], 1]
        )
    return out


def post_encroachment(
    c: Crossings, edges: EdgeTable, window_s: float = PET_WINDOW_S
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Conflicting pairs of passages through the same node with PET <= ``window_s``.

    Returns:
        first, second: (m,) rows of ``c``: the passage that reached the node first and the
            one after it.
        pet_s: (m,) the second's arrival minus the first's departure [s]; <= 0: both in the
            node at once.
    """
    if not window_s >= 0.0:
        raise ConflictError(f"window_s = {window_s}; allowed: >= 0")
    firsts, seconds, pets = [], [], []
    n = c.t_in_s.shape[0]
    t_out = c.t_out_s
    # a passage meets the next ones at its node until one arrives later than its rear's
    # departure plus the window (they are sorted by node and arrival, so the later ones do
    # too): offset by offset, with the passages still meeting someone
    a = np.arange(n)
    for step in range(1, n):
        a = a[a + step < n]
        b = a + step
        near = (
            (c.group[a] == c.group[b])
            & (c.node[a] == c.node[b])
            & (c.t_in_s[b] <= t_out[a] + window_s)
        )
        a, b = a[near], b[near]
        if a.size == 0:
            break
        hit = _in_conflict(edges.arm_rad, c.edge_in[a], c.edge_out[a], c.edge_in[b], c.edge_out[b])
        firsts.append(a[hit])
        seconds.append(b[hit])
        pets.append(c.t_in_s[b[hit]] - t_out[a[hit]])
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    first, second, pet = np.concatenate(firsts), np.concatenate(seconds), np.concatenate(pets)
    o = np.lexsort((c.t_in_s[second], pet))
    return first[o], second[o], pet[o]


def conflict_table(
    c: Crossings,
    edges: EdgeTable,
    vehicle_ids: list[str],
    window_s: float = PET_WINDOW_S,
) -> pa.Table:
    """``post_encroachment``'s pairs as a table, smallest PET first.

    Columns: ``node``, ``t_s`` (the second vehicle's arrival), ``first_id``, ``first_from``,
    ``first_to``, ``second_id``, ``second_from``, ``second_to``, ``kind`` (``crossing`` or
    ``merging``), ``pet_s``.
    """
    a, b, pet = post_encroachment(c, edges, window_s)
    ids, eids = np.array(vehicle_ids, dtype=object), np.array(edges.ids, dtype=object)
    return pa.table(
        {
            "node": pa.array(np.array(edges.node_ids, dtype=object)[c.node[a]], pa.string()),
            "t_s": c.t_in_s[b],
            "first_id": pa.array(ids[c.vehicle[a]], pa.string()),
            "first_from": pa.array(eids[c.edge_in[a]], pa.string()),
            "first_to": pa.array(eids[c.edge_out[a]], pa.string()),
            "second_id": pa.array(ids[c.vehicle[b]], pa.string()),
            "second_from": pa.array(eids[c.edge_in[b]], pa.string()),
            "second_to": pa.array(eids[c.edge_out[b]], pa.string()),
            "kind": pa.array(
                np.where(c.edge_out[a] == c.edge_out[b], "merging", "crossing"), pa.string()
            ),
            "pet_s": pet,
        }
    )


def trajectories(sim: NetSim, result: NetResult) -> Trajectories:
    """A ``NetSim`` run's FCD as trajectories (groups: the batch's instances)."""
    fcd = result.fcd
    return Trajectories(
        vehicle=fcd["vehicle"].astype(np.int64),
        time_s=fcd["time_s"],
        edge=fcd["edge"].astype(np.int64),
        pos_m=fcd["pos_m"],
        length_m=sim.vehicle_length_m,
        group=np.asarray(result.instance, dtype=np.int64),
    )


def junction_conflicts(sim: NetSim, result: NetResult, window_s: float = PET_WINDOW_S) -> pa.Table:
    """The conflicts at the junctions of a ``NetSim`` run (``conflict_table``), from its FCD;
    record it often enough that a vehicle never drives over a whole edge between records
    (``record_every_s``)."""
    edges = EdgeTable.build(sim.network, result.edge_ids)
    crossings = node_crossings(trajectories(sim, result), edges)
    return conflict_table(crossings, edges, result.vehicle_ids, window_s)
