"""Post-encroachment time at junctions (``convoy.sim.conflicts``): the measure on trajectories
whose answer is known, and the network engine's junction under load."""

from __future__ import annotations

import numpy as np
import pytest

from convoy.road.network import RoadNetwork
from convoy.sim import net_kernel as nk
from convoy.sim.conflicts import (
    ConflictError,
    EdgeTable,
    Trajectories,
    conflict_table,
    junction_conflicts,
    node_crossings,
    post_encroachment,
)
from convoy.sim.network import NetSim
from tests.test_network_engine import _junction_net, _junction_script

EDGE_M = 1000.0  # every arm of _junction_net
LENGTH_M = 16.5

#: (vehicle, from arm, to arm, speed [m/s], when its front reaches the node [s])
PASSAGES = (
    ("A", "w", "e", 10.0, 10.3),  # rear leaves at 11.95
    ("B", "s", "n", 8.0, 13.0),  # rear leaves at 15.0625
    ("C", "e", "w", 10.0, 10.5),  # rear leaves at 12.15
    ("D", "n", "e", 5.0, 12.0),  # a left turn; rear leaves at 15.3
    ("E", "w", "e", 10.0, 30.0),  # behind A, alone at the node
)


def _records(edges: EdgeTable) -> Trajectories:
    """Each passage at constant speed, recorded every whole second from 6 s before its
    front reaches the node to 6 s after its rear has left: the records fall between the
    moments, so that both are interpolated."""
    at = {e: k for k, e in enumerate(edges.ids)}
    veh, time_s, edge, pos_m = [], [], [], []
    for k, (_, a, b, v, t_in) in enumerate(PASSAGES):
        t_out = t_in + LENGTH_M / v
        for t in np.arange(np.floor(t_in) - 6.0, np.ceil(t_out) + 6.0):
            before = t < t_in
            veh.append(k)
            time_s.append(t)
            edge.append(at[f"{a}j"] if before else at[f"j{b}"])
            pos_m.append(EDGE_M - v * (t_in - t) if before else v * (t - t_in))
    n = len(PASSAGES)
    return Trajectories(
        vehicle=np.array(veh, dtype=np.int64)[::-1],  # any row order
        time_s=np.array(time_s)[::-1],
        edge=np.array(edge, dtype=np.int64)[::-1],
        pos_m=np.array(pos_m)[::-1],
        length_m=np.full(n, LENGTH_M),
        group=np.zeros(n, dtype=np.int64),
    )


def _cross() -> tuple[RoadNetwork, EdgeTable]:
    net = _junction_net("wesn")
    return net, EdgeTable.build(net, tuple(sorted(net.edges)))


def test_pet_of_passages_at_constant_speed() -> None:
    """Five trucks through a cross, times worked out by hand (PET = the second's front
    arriving minus the first's rear leaving; a rear leaves ``16.5 m / speed`` after the
    front arrived). Pairs: A (west-east) and B (south-north) cross, 13.0 - 11.95 = 1.05 s;
    C (east-west) and B cross, 13.0 - 12.15 = 0.85 s; A and D (north, turning left into the
    east arm) merge, 12.0 - 11.95 = 0.05 s; D's left turn crosses C's path, 12.0 - 12.15 =
    -0.15 s (both in the node at once), and B's, which comes while D is still there,
    13.0 - 15.3 = -2.3 s. A and C, straight on from opposite arms, never meet; E comes
    alone. Interpolated between whole-second records, exactly."""
    _, edges = _cross()
    c = node_crossings(_records(edges), edges)
    assert c.vehicle.tolist() == [0, 2, 3, 1, 4]  # by arrival
    assert np.allclose(c.t_in_s, [10.3, 10.5, 12.0, 13.0, 30.0], atol=1e-9)
    assert np.allclose(c.t_out_s, [11.95, 12.15, 15.3, 15.0625, 31.65], atol=1e-9)
    table = conflict_table(c, edges, [p[0] for p in PASSAGES])
    got = [
        (f, s, k, round(p, 9))
        for f, s, k, p in zip(
            table.column("first_id").to_pylist(),
            table.column("second_id").to_pylist(),
            table.column("kind").to_pylist(),
            table.column("pet_s").to_pylist(),
            strict=True,
        )
    ]
    assert got == [
        ("D", "B", "crossing", -2.3),
        ("C", "D", "crossing", -0.15),
        ("A", "D", "merging", 0.05),
        ("C", "B", "crossing", 0.85),
        ("A", "B", "crossing", 1.05),
    ]
    assert set(table.column("node").to_pylist()) == {"j"}
    # a narrower window keeps the closer pairs only
    _, _, pet = post_encroachment(c, edges, window_s=1.0)
    assert np.allclose(pet, [-2.3, -0.15, 0.05, 0.85])


def test_vehicles_of_different_instances_never_meet() -> None:
    """The same passages with A and B in a batch's second instance and C, D and E in its
    first: of the five pairs only A-B (1.05 s) and C-D (-0.15 s) are left."""
    _, edges = _cross()
    tr = _records(edges)
    group = np.array([1, 1, 0, 0, 0], dtype=np.int64)
    c = node_crossings(
        Trajectories(tr.vehicle, tr.time_s, tr.edge, tr.pos_m, tr.length_m, group), edges
    )
    first, second, pet = post_encroachment(c, edges)
    pairs = [(int(c.vehicle[a]), int(c.vehicle[b])) for a, b in zip(first, second, strict=True)]
    assert pairs == [(2, 3), (0, 1)]  # by PET: C-D, then A-B
    assert np.allclose(pet, [-0.15, 1.05])


def test_a_gap_in_the_records_is_no_passage() -> None:
    """A sixth truck ends a leg 10 m before the node at 40 s (a site there), dwells, and
    leaves from the node onto the east arm at 100 s: its records stop and start again on
    adjacent edges, but it did not drive through the node (interpolating across the dwell
    would put it there at ~44 s). It adds no passage; the others' are as before."""
    _, edges = _cross()
    tr = _records(edges)
    at = {e: k for k, e in enumerate(edges.ids)}
    before = np.arange(30.0, 41.0)
    after = np.arange(100.0, 111.0)
    f = len(PASSAGES)
    tr = Trajectories(
        vehicle=np.concatenate((tr.vehicle, np.full(22, f))),
        time_s=np.concatenate((tr.time_s, before, after)),
        edge=np.concatenate((tr.edge, np.full(11, at["wj"]), np.full(11, at["je"]))).astype(
            np.int64
        ),
        pos_m=np.concatenate((tr.pos_m, EDGE_M - 10.0 - (40.0 - before), after - 100.0)),
        length_m=np.full(f + 1, LENGTH_M),
        group=np.zeros(f + 1, dtype=np.int64),
    )
    c = node_crossings(tr, edges)
    assert c.vehicle.tolist() == [0, 2, 3, 1, 4]


def test_a_trip_that_ends_past_the_node_leaves_it_with_its_last_record() -> None:
    """G comes from the west at 10 m/s, its front at the node at 49.5 s, and its trip ends
    5 m past it (its last record, at 50 s): its rear never clears the node in the records,
    so it counts as gone at 50 s. H comes from the south at 52 s: PET 2.0 s."""
    _, edges = _cross()
    at = {e: k for k, e in enumerate(edges.ids)}
    t_g = np.arange(44.0, 51.0)
    t_h = np.arange(46.0, 58.0)
    tr = Trajectories(
        vehicle=np.repeat([0, 1], [t_g.size, t_h.size]).astype(np.int64),
        time_s=np.concatenate((t_g, t_h)),
        edge=np.array(
            [at["wj"] if t < 49.5 else at["je"] for t in t_g]
            + [at["sj"] if t < 52.0 else at["jn"] for t in t_h],
            dtype=np.int64,
        ),
        pos_m=np.array(
            [EDGE_M - 10.0 * (49.5 - t) if t < 49.5 else 10.0 * (t - 49.5) for t in t_g]
            + [EDGE_M - 8.0 * (52.0 - t) if t < 52.0 else 8.0 * (t - 52.0) for t in t_h]
        ),
        length_m=np.full(2, LENGTH_M),
        group=np.zeros(2, dtype=np.int64),
    )
    c = node_crossings(tr, edges)
    assert np.allclose(c.t_in_s, [49.5, 52.0]) and np.allclose(c.t_out_s, [50.0, 52.0 + 16.5 / 8])
    first, second, pet = post_encroachment(c, edges)
    assert (first.tolist(), second.tolist()) == ([0], [1]) and np.allclose(pet, [2.0])


def test_bad_input_is_named() -> None:
    net, edges = _cross()
    tr = _records(edges)
    with pytest.raises(ConflictError, match="edge index outside"):
        node_crossings(
            Trajectories(tr.vehicle, tr.time_s, tr.edge + 99, tr.pos_m, tr.length_m, tr.group),
            edges,
        )
    with pytest.raises(ConflictError, match="window_s"):
        post_encroachment(node_crossings(tr, edges), edges, window_s=-1.0)
    with pytest.raises(ConflictError, match="not in the network"):
        EdgeTable.build(net, ("nowhere",))


def test_a_busy_cross_never_holds_two_conflicting_trucks_at_once() -> None:
    """1,080 trucks an hour through one cross of single-lane roads (a truck every 40 s on
    each of the 12 movements, ``scripts/junction_vs_sumo.py``'s demand, 6 minutes of it):
    83 times two trucks on crossing or merging paths pass the node within 5 s of each
    other, yet a front never reaches the node while such a truck's rear is still in it,
    nor less than 0.5 s after that rear has left. The engine holds a lane head back until a
    crossing truck's rear has been out for 1 s (``net_kernel.waits_for_occupant``, SUMO's
    ``jmTimegapMinor``): the smallest PET is 0.80 s (1 s records, interpolated); without
    that rule it was 0.37 s (tried). Every trip ends and no truck stands for more than 5 s.
    (SUMO on the same cross jams: test_network_engine's comparison, docs/benchmarks.md.)"""
    net = _junction_net("wesn")
    sim = NetSim(net, _junction_script().demand(40.0, 6.0), record_every_s=1.0)
    res = sim.run(6 * 60.0 + 400.0)
    assert res.collisions == 0 and len(res.vehicle_ids) == 108
    assert (res.status == nk.ST_DONE).all()
    table = junction_conflicts(sim, res)
    pet = table.column("pet_s").to_numpy()
    assert table.num_rows > 50 and (pet < 2.0).sum() >= 10
    assert pet.min() >= 0.5, table.slice(0, 3).to_pylist()
    stood = np.bincount(res.fcd["vehicle"][res.fcd["speed_mps"] <= 0.1].astype(np.int64))
    assert stood.max(initial=0) <= 5


def test_a_batch_measures_each_instance_alone() -> None:
    """The busy cross for 3 minutes, alone and as a batch of two identical instances: the
    batch has each of the single run's conflicts twice, once per instance (its vehicles
    ``id#0`` and ``id#1``), and none between the instances, whose trucks pass the same node
    at the same moments."""
    net = _junction_net("wesn")
    trips = _junction_script().demand(40.0, 3.0)
    one = NetSim(net, trips, record_every_s=1.0)
    alone = junction_conflicts(one, one.run(600.0))
    two = NetSim(net, trips, record_every_s=1.0, instances=2)
    batch = junction_conflicts(two, two.run(600.0))
    assert alone.num_rows > 20 and batch.num_rows == 2 * alone.num_rows
    for k in (0, 1):
        mine = [i.endswith(f"#{k}") for i in batch.column("first_id").to_pylist()]
        assert [i.endswith(f"#{k}") for i in batch.column("second_id").to_pylist()] == mine
        pet = np.sort(batch.column("pet_s").to_numpy()[mine])
        assert np.allclose(pet, np.sort(alone.column("pet_s").to_numpy()), atol=1e-9)
