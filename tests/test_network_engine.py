"""The network engine: known outcomes on small hand-built networks."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest

from convoy.road.network import (
    Edge,
    JunctionType,
    Node,
    RoadClass,
    RoadNetwork,
    SignalPhase,
    SignalPlan,
    Site,
    SiteKind,
)
from convoy.road.sumo_net import write_sumo_net
from convoy.sim import net_kernel as nk
from convoy.sim.network import (
    CAR,
    TRUCK_HUMAN,
    TRUCK_L4,
    Flow,
    LaneClosure,
    Leg,
    NetResult,
    NetSim,
    NetSimError,
    Platoon,
    SpeedCap,
    Trip,
    VehicleType,
    edge_arms_rad,
    junction_links,
    junction_ranks,
)
from convoy.vehicle.sumo_cfm import MODE_ACC_FALLBACK


def _corridor(lanes: tuple[int, ...] = (1, 1, 1), length_m: float = 1000.0) -> RoadNetwork:
    nodes = [Node(f"n{k}", 109.0 + 0.01 * k, 39.0) for k in range(len(lanes) + 1)]
    edges = [
        Edge(f"e{k}", f"n{k}", f"n{k + 1}", length_m, lanes=ln, speed_limit_mps=25.0)
        for k, ln in enumerate(lanes)
    ]
    sites = [Site("end", SiteKind.POWER_PLANT, "End", "终", f"n{len(lanes)}", 109.1, 39.0)]
    return RoadNetwork.build(nodes, edges, sites)


def _route(n: int) -> tuple[str, ...]:
    return tuple(f"e{k}" for k in range(n))


def _platoon_trips(k: int, legs: tuple[Leg, ...], depart_s: float = 0.0) -> list[Trip]:
    return [
        Trip(f"t{j}", "truck-human" if j == 0 else "truck-l4", legs, depart_s) for j in range(k)
    ]


def test_free_vehicle_travel_time_is_length_over_speed() -> None:
    """A lone car enters at the speed limit and keeps it: 3 km at 25 m/s take 120 s."""
    net = _corridor()
    sim = NetSim(net, [Trip("c", "car", (Leg(_route(3)),), 0.0)])
    res = sim.run(200.0)
    arrive = [e for e in res.events if e["kind"] == "arrive-site"]
    assert len(arrive) == 1
    # the car crosses the 3,000 m mark during the step that ends at 120.0 s
    assert arrive[0]["time_s"] == pytest.approx(119.9, abs=0.11)
    assert res.distance_m[0] == pytest.approx(3000.0, abs=2.5)
    assert res.status[0] == nk.ST_DONE


def test_platoon_keeps_cacc_gaps_and_followers_save_energy() -> None:
    """1+4 on one lane: followers settle at SUMO-CACC gap control (time gap 1 s at 25 m/s:
    about 25 m + min gap), nobody collides, and the drafting followers use less energy per
    km than the head once all move at the same speed."""
    net = _corridor(lanes=(1, 1, 1), length_m=5000.0)
    trips = _platoon_trips(5, (Leg(_route(3)),))
    sim = NetSim(net, trips, platoons=[Platoon("p", tuple(t.vehicle_id for t in trips))])
    res = sim.run(400.0)
    assert res.collisions == 0
    f = res.fcd
    late = (f["time_s"] >= 300.0) & (f["time_s"] <= 500.0) & (f["vehicle"] > 0)
    gaps = f["gap_m"][late]
    assert gaps.size > 0
    assert np.all((gaps > 20.0) & (gaps < 32.0))
    # energy between t = 300 s and the last record, per km
    per_km = []
    for v in range(5):
        m = (f["vehicle"] == v) & (f["time_s"] >= 300.0)
        e = f["energy_kwh"][m]
        x = f["time_s"][m]
        speed = f["speed_mps"][m]
        dist_km = np.sum(speed[1:] * np.diff(x)) / 1000.0
        per_km.append((e[-1] - e[0]) / dist_km)
    assert all(per_km[k] < per_km[0] for k in range(1, 5))


def test_red_signal_stops_the_queue_at_the_line() -> None:
    """A signal red for the first 60 s of each 120 s cycle holds a car at the line."""
    nodes = [
        Node("a", 109.0, 39.0),
        Node(
            "b",
            109.01,
            39.0,
            junction=JunctionType.TRAFFIC_SIGNAL,
            signal=SignalPlan((SignalPhase(60.0, ()), SignalPhase(60.0, ("ab",)))),
        ),
        Node("c", 109.02, 39.0),
    ]
    edges = [Edge("ab", "a", "b", 500.0), Edge("bc", "b", "c", 500.0)]
    net = RoadNetwork.build(nodes, edges)
    res = NetSim(net, [Trip("c", "car", (Leg(("ab", "bc")),), 0.0)]).run(100.0)
    f = res.fcd
    on_ab = f["edge"] == 0
    # never past the line while red, standing still at it before the green
    assert np.all(f["pos_m"][on_ab] <= 500.0)
    held = (f["time_s"] >= 50.0) & (f["time_s"] <= 60.0)
    assert np.all(f["speed_mps"][held] == 0.0)
    assert np.all((f["pos_m"][held] > 490.0) & (f["edge"][held] == 0))
    # and it goes on green
    assert np.any((f["edge"] == 1) & (f["time_s"] < 100.0))


def test_minor_road_yields_to_the_major_road() -> None:
    """At a priority junction the service road waits for a motorway truck that arrives within
    the critical gap, then enters behind it."""
    nodes = [
        Node("m0", 109.0, 39.0),
        Node("s0", 109.01, 38.99),
        Node("j", 109.01, 39.0),
        Node("x", 109.02, 39.0),
    ]
    edges = [
        Edge("major", "m0", "j", 1000.0, road_class=RoadClass.MOTORWAY, speed_limit_mps=25.0),
        Edge("minor", "s0", "j", 300.0, road_class=RoadClass.SERVICE, speed_limit_mps=10.0),
        Edge("out", "j", "x", 2000.0, road_class=RoadClass.MOTORWAY, speed_limit_mps=25.0),
    ]
    net = RoadNetwork.build(nodes, edges)
    trips = [
        Trip("major-car", "car", (Leg(("major", "out")),), 0.0),
        Trip("minor-car", "car", (Leg(("minor", "out")),), 10.0),
    ]
    res = NetSim(net, trips).run(150.0)
    assert res.collisions == 0
    # the major car reaches j at t = 40 s; the minor car (at 10 m/s from t = 10 s) would be
    # there at 40 s too: it must wait and be on "out" only after the major car
    f = res.fcd
    first_out = {}
    for v in (0, 1):
        m = (f["vehicle"] == v) & (f["edge"] == 2)
        first_out[v] = f["time_s"][m].min()
    assert first_out[1] > first_out[0]
    on_minor = (f["vehicle"] == 1) & (f["edge"] == 1)
    assert f["speed_mps"][on_minor].min() < 7.0  # it braked (from 10 m/s) for the major car


#: Arms around a junction "j" at (109.01, 39.0): west and east make a straight road; the
#: north arm leans a little east, so that the west-east road is the straightest.
_ARMS = {"w": (109.0, 39.0), "e": (109.02, 39.0), "s": (109.01, 38.99), "n": (109.012, 39.01)}


def _junction_net(arms: str, minor: str = "") -> RoadNetwork:
    """Two-way roads (1 km, one lane) from each of ``arms`` to "j": primary, or tertiary for
    the arms in ``minor``."""
    nodes = [Node("j", 109.01, 39.0), *(Node(a, *_ARMS[a]) for a in arms)]
    edges = [
        Edge(
            f"{a}{b}",
            a,
            b,
            1000.0,
            road_class=RoadClass.TERTIARY if x in minor else RoadClass.PRIMARY,
        )
        for x in arms
        for a, b in ((x, "j"), ("j", x))
    ]
    return RoadNetwork.build(nodes, edges)


def _tee() -> RoadNetwork:
    """A T of three equal roads: west and east are the straight road, south the stem."""
    return _junction_net("wes")


def _meet(net: RoadNetwork, first: tuple[str, str], second: tuple[str, str]) -> list[float]:
    """Two cars 1 km from the node, on ``first`` and ``second``, the first starting 2 s
    later, so that both would come to the node at 48 s (the second, on a minor movement,
    slows for its line): when each reaches its exit edge, how much the first ever slowed,
    and when the second reaches its exit alone."""
    edge = {eid: k for k, eid in enumerate(net.edges)}
    out = []
    for routes in ((first, second), (second,)):
        trips = [
            Trip(f"c{k}", "car", (Leg(r),), 2.0 if len(routes) == 2 and k == 0 else 0.0)
            for k, r in enumerate(routes)
        ]
        res = NetSim(net, trips).run(150.0)
        assert res.collisions == 0 and np.all(res.status == nk.ST_DONE)
        f = res.fcd
        out += [
            float(f["time_s"][(f["vehicle"] == k) & (f["edge"] == edge[r[1]])].min())
            for k, r in enumerate(routes)
        ]
        if len(routes) == 2:
            on = (f["vehicle"] == 0) & (f["edge"] == edge[first[0]])
            out.append(float(f["speed_mps"][on].max() - f["speed_mps"][on].min()))
    return out


def test_a_side_road_of_a_cross_of_equal_roads_yields_to_the_main_road() -> None:
    """On a cross of equal roads a car goes straight on from west to east and another
    straight across from south to north, to meet in the junction (``_meet``). West-east is
    the main road (its approaches are the most nearly opposite; the north arm leans), so
    the south car waits: it crosses after the other, and later than it does alone; the west
    car never slows. Were the four approaches of one rank, the west car would give way to
    the one on its right, the south car (tried: it fails so)."""
    through, side, through_slowed, side_alone = _meet(
        _junction_net("wesn"), ("wj", "je"), ("sj", "jn")
    )
    assert side > through and side > side_alone
    assert through_slowed == 0.0


def test_the_main_road_of_a_tee_is_the_one_netconvert_chooses(tmp_path: Path) -> None:
    """netconvert, given the same T with equal priorities, makes the straight road the main
    road: every link from the stem is minor ('m'), the straight road's straight links major
    ('M'). convoy ranks the stem's approach below the two straight ones, and leaves the ranks
    of a junction of two approaches alone."""
    import sumolib

    net = _tee()
    ids = list(net.edges)
    rank = dict(zip(ids, junction_ranks(net, ids).tolist(), strict=True))
    assert rank["sj"] < rank["wj"] == rank["ej"]
    assert rank["je"] == rank["jw"] == rank["js"] == rank["wj"]  # end nodes with one approach
    sn = sumolib.net.readNet(str(write_sumo_net(net, tmp_path / "tee.net.xml")))
    state = {
        (c.getFrom().getID(), c.getTo().getID()): c.getState()
        for c in sn.getNode("j").getConnections()
    }
    assert {state[("sj", out)] for out in ("je", "jw")} == {"m"}
    assert state[("wj", "je")] == state[("ej", "jw")] == "M"


def test_a_left_turn_gives_way_to_oncoming_traffic_on_an_equal_road() -> None:
    """On the T's straight road a car from the east turns left into the stem and another
    comes from the west going straight on, to meet in the junction (``_meet``). The two
    approaches have the same rank, their paths cross, and the left turn gives way: it
    enters the stem after the oncoming car has crossed, and later than it does alone; the
    oncoming car never slows. (Before, equal approaches whose paths crossed ignored each
    other and both crossed the node in the same step.)"""
    straight, left, straight_slowed, left_alone = _meet(_tee(), ("wj", "je"), ("ej", "js"))
    assert left > straight and left > left_alone
    assert straight_slowed == 0.0


def test_a_minor_road_waits_only_for_traffic_whose_path_it_meets() -> None:
    """The T's stem is a tertiary road. Its car turns right towards the east, alone, or as a
    car on the straight road comes from the east going west, or from the west going east,
    all 1 km out, the major car starting 2 s later so that the two would meet at the node
    (as in ``_meet``). Against the westbound car their paths neither cross nor
    join: the stem's car arrives when it does alone (it used to wait for any car on the
    major road within the critical gap). The eastbound one goes into the edge it turns
    onto: then it waits for it, and arrives later (a little: it came to the line slowly in
    any case, as a minor movement does)."""
    net = _junction_net("wes", minor="s")
    arrival = {}
    for major in ((), ("ej", "jw"), ("wj", "je")):
        trips = [Trip("stem", "car", (Leg(("sj", "je")),), 0.0)]
        trips += [Trip("major", "car", (Leg(major),), 2.0)] if major else []
        res = NetSim(net, trips).run(150.0)
        assert res.collisions == 0 and np.all(res.status == nk.ST_DONE)
        arrival[major[:1]] = next(
            e["time_s"]
            for e in res.events
            if e["kind"] == "arrive-site" and e["vehicle_id"] == "stem"
        )
    assert arrival[("ej",)] == arrival[()]
    assert arrival[("wj",)] > arrival[()]


def test_a_minor_movement_comes_to_its_line_ready_to_stop() -> None:
    """Alone on the T, a truck on the straight road going straight on, or turning right,
    keeps its speed through the node; one turning left from it, or coming from the stem
    (tertiary), comes on as if to stop 4.5 m past the line (``VISIBILITY_M``) until it is
    that near the line, then goes: its lowest speed is a few m/s, reached just before the
    line, and it never brakes hard. SUMO's trucks on minor links do the same, slowest 4.5 m
    out at 2.7 m/s (``scripts/junction_vs_sumo.py``)."""
    net = _junction_net("wes", minor="s")
    edge = {eid: k for k, eid in enumerate(net.edges)}
    for route, minor in (
        (("wj", "je"), False),
        (("wj", "js"), False),
        (("ej", "js"), True),
        (("sj", "jw"), True),
    ):
        trips = [Trip("truck", "truck-human", (Leg(route),), 0.0)]
        res = NetSim(net, trips, record_every_s=0.1).run(150.0)
        assert res.status[0] == nk.ST_DONE and res.hard_brakes[0] == 0, route
        f = res.fcd
        on = f["edge"] == edge[route[0]]
        slowest = int(np.argmin(np.where(on, f["speed_mps"], np.inf)))
        if minor:
            assert 1.0 < f["speed_mps"][slowest] < 6.0, route
            assert 1000.0 - f["pos_m"][slowest] < nk.VISIBILITY_M + 1.0, route
        else:
            assert f["speed_mps"][on].min() == f["speed_mps"][on].max(), route


def _first_on(res: NetResult, vehicle: int, edge: int, past_m: float = 0.0) -> float:
    """When ``vehicle``'s front is first ``past_m`` or more along ``edge`` (FCD)."""
    f = res.fcd
    on = (f["vehicle"] == vehicle) & (f["edge"] == edge) & (f["pos_m"] >= past_m)
    return float(f["time_s"][on].min())


def test_a_minor_movement_waits_for_a_slow_truck_to_clear_the_junction() -> None:
    """A truck crawls (3 m/s) straight through the T from west to east; a car from the stem
    (tertiary) turns left towards the west, across the truck's path, timed to come to its
    line 2 s before the truck's front reaches the node. It waits for the truck, and then for
    the truck's body too: its front reaches the node only after the truck's rear has left
    it (16.5 m at 3 m/s: 5.5 s after the front), and within a few seconds of that. The
    truck is not held up. (Before, the junction was a point the car could cross as soon as
    the truck's front had: tried, it entered 4.9 s before the rear had cleared.)"""
    net = _junction_net("wes", minor="s")
    edge = {eid: k for k, eid in enumerate(net.edges)}
    truck = Trip("truck", "truck-human", (Leg(("wj", "je")),), 0.0, speed_cap_mps=3.0)
    alone = NetSim(net, [truck], record_every_s=0.1).run(500.0)
    front = _first_on(alone, 0, edge["je"])
    rear = _first_on(alone, 0, edge["je"], TRUCK_HUMAN.length_m)
    assert rear - front == pytest.approx(TRUCK_HUMAN.length_m / 3.0, abs=0.15)
    car_alone = NetSim(net, [Trip("car", "car", (Leg(("sj", "jw")),), 0.0)], record_every_s=0.1)
    at_line = _first_on(car_alone.run(150.0), 0, edge["jw"])
    car = Trip("car", "car", (Leg(("sj", "jw")),), round(front - at_line - 2.0))
    both = NetSim(net, [truck, car], record_every_s=0.1).run(800.0)
    assert both.collisions == 0 and np.all(both.status == nk.ST_DONE)
    assert _first_on(both, 0, edge["je"]) == front
    crossed = _first_on(both, 1, edge["jw"])
    assert rear <= crossed < rear + 4.0


def _truck_across_a_stream(backend: str = "cpu") -> NetResult:
    """A car every 6.2 s for 68 s straight through the T from west to east; a loaded truck
    from the tertiary stem turning left across them, coming to its line amid the stream."""
    net = _junction_net("wes", minor="s")
    trips = [Trip(f"c{k}", "car", (Leg(("wj", "je")),), 6.2 * k) for k in range(12)]
    trips.append(Trip("truck", "truck-human", (Leg(("sj", "jw")),), 40.0))
    return NetSim(net, trips, record_every_s=0.1, backend=backend).run(300.0)


def test_a_truck_on_a_minor_road_waits_for_a_gap_it_can_clear() -> None:
    """The gaps between the cars (``_truck_across_a_stream``) are 6.2 s, longer than the 5 s
    critical gap, but the 49 t truck needs 5.8 s to get its 16.5 m across the node from its
    line (1 m/s²): it waits for a gap of 6.8 s (``critical_gap_s``: its clearing time plus
    SUMO's 1 s), so it crosses after the last car, and no car slows for it. (With the 5 s
    gap alone it took the gap before the tenth car, whose driver then slowed by 5.5 m/s for
    the truck's body in the junction: tried.)"""
    res = _truck_across_a_stream()
    assert res.collisions == 0 and np.all(res.status == nk.ST_DONE)
    edge = {eid: k for k, eid in enumerate(res.edge_ids)}
    f = res.fcd
    for k in range(12):
        on = (f["vehicle"] == k) & (f["edge"] == edge["wj"]) & (f["time_s"] > 6.2 * k + 20.0)
        assert f["speed_mps"][on].max() - f["speed_mps"][on].min() < 0.5, k
    assert _first_on(res, 12, edge["jw"]) > _first_on(res, 11, edge["je"])


def test_a_platoon_through_a_minor_movement_brakes_no_harder_than_its_head() -> None:
    """A 1+4 platoon turning left from the T's straight road: the head slows for the line,
    and each follower that comes to lead the lane near the line either could still stop
    there and slows as the head did, or could not and goes on behind it (as at a yellow
    light): nobody brakes hard or collides. (Holding every new lane head to the line had
    the third to fifth trucks brake at 7.5 m/s².)"""
    net = _tee()
    trips = _platoon_trips(5, (Leg(("ej", "js")),))
    sim = NetSim(net, trips, platoons=[Platoon("p", tuple(t.vehicle_id for t in trips))])
    res = sim.run(300.0)
    assert res.collisions == 0 and np.all(res.status == nk.ST_DONE)
    assert res.hard_brakes.tolist() == [0] * 5


def _junction_script() -> Any:
    path = Path(__file__).resolve().parents[1] / "scripts" / "junction_vs_sumo.py"
    spec = importlib.util.spec_from_file_location("junction_vs_sumo", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up there
    spec.loader.exec_module(mod)
    return mod


def test_travel_times_through_a_cross_agree_with_sumo() -> None:
    """``scripts/junction_vs_sumo.py`` at one 49 t truck per movement every 400 s (36
    trips, none meeting another): the same cross and trips in convoy and in SUMO, both to
    completion. The main road's movements take SUMO's time within 1.5 % (SUMO starts its
    trips 16.5 m into the edge, 0.7 s); the minor ones, which both engines bring slowly to
    the line, 2-6 % longer (the truck climbs back under its motor's power limit, which
    SUMO's IDM lacks: a 1 t vehicle takes 3 % less than SUMO's). Before minor movements
    slowed for their line they took 12.5 % less than SUMO's."""
    rows, counts, _ = _junction_script().compare("", 400.0, 20.0)
    assert counts["finished_convoy"] == counts["finished_sumo"] == counts["trips"] == 36
    assert counts["collisions_convoy"] == counts["collisions_sumo"] == 0
    main_road = {"we", "ew", "ws", "en"}  # west-east straight on, or turning right off it
    assert {r.move for r in rows} >= main_road and len(rows) == 12
    for r in rows:
        diff = r.convoy_s / r.sumo_s - 1.0
        if r.move in main_road:
            assert abs(diff) < 0.015, r
        else:
            assert 0.02 < diff < 0.06, r


def test_a_busy_cross_jams_sumo_and_not_convoy() -> None:
    """The same script at one truck per movement every 40 s (1,080 trucks an hour through
    one node), 6 minutes of departures. SUMO jams: from about 100 s the heads of the west,
    north and south approaches stand at their lines, each waiting for another while the
    junction is empty for tens of seconds at a time, until the east approach's stream ends;
    then three trucks enter the node together (PET -5.0 s, measured from SUMO's own FCD).
    41 of its 108 trips stand 300 s or more, the time after which SUMO's default
    ``time-to-teleport`` would call them jammed. convoy's trucks pass in turn: none stands
    more than a few seconds, and no two on crossing or merging paths are in the node at once
    (smallest PET 0.94 s). So SUMO's travel times at this load measure its deadlock, not the
    junction's capacity; docs/benchmarks.md compares at lighter loads."""
    _, counts, junctions = _junction_script().compare("", 40.0, 6.0)
    assert counts["finished_convoy"] == counts["finished_sumo"] == counts["trips"] == 108
    ours, theirs = junctions["convoy"], junctions["SUMO"]
    assert theirs.jammed >= 20 and theirs.max_wait_s > 400.0
    assert (theirs.pet_s <= 0.0).sum() >= 1
    assert ours.jammed == 0 and ours.max_wait_s <= 5.0
    assert ours.pet_s.size > 50 and ours.pet_s.min() >= 0.5


def test_at_a_roundabout_paths_merge_and_part_but_do_not_cross() -> None:
    """The left turn and the oncoming straight car of the T, at a roundabout instead of a
    priority junction: around the island the two paths never cross (the left-turner goes
    round), so neither waits, and both leave the node in the same step as they reach it."""
    net = _tee()
    net = RoadNetwork.build(
        [
            replace(n, junction=JunctionType.ROUNDABOUT) if n.id == "j" else n
            for n in net.nodes.values()
        ],
        list(net.edges.values()),
    )
    trips = [
        Trip("straight", "car", (Leg(("wj", "je")),), 0.0),
        Trip("left", "car", (Leg(("ej", "js")),), 0.0),
    ]
    res = NetSim(net, trips).run(150.0)
    assert res.collisions == 0
    f = res.fcd
    edge = {eid: k for k, eid in enumerate(net.edges)}
    first_out = [
        f["time_s"][(f["vehicle"] == v) & (f["edge"] == edge[out])].min()
        for v, out in ((0, "je"), (1, "js"))
    ]
    assert first_out[0] == first_out[1]


@pytest.mark.parametrize(
    ("arms", "minor", "agree"),
    [("wes", "", 24), ("wesn", "", 106), ("wes", "s", 24), ("wesn", "sn", 106)],
)
def test_who_waits_for_whom_at_a_junction_is_what_netconvert_decides(
    arms: str, minor: str, agree: int, tmp_path: Path
) -> None:
    """For every two movements through the node from different approaches (no U-turns),
    whether the first waits for the second in convoy and in SUMO: netconvert, given the same
    T or cross (all primary roads, or those of ``minor`` tertiary), writes for each link the
    links it must wait for (the junction's ``request`` ``response`` bits, lowest link last),
    and marks the links that wait for any minor ('m', the others 'M'). In convoy a
    lower-ranked movement waits for a higher-ranked one that crosses its path or leads to the
    same edge; one of equal rank where ``gives_way`` says so, or into the same edge where it
    turns left and the other does not; a higher-ranked one never. They agree on every pair
    but one kind: two left turns from opposite arms pass in front of each other in convoy,
    while netconvert has one of them wait for the other (2 of the cross's 108 pairs); and
    ``junction_links`` marks as minor exactly the links netconvert does."""
    import xml.etree.ElementTree as ET

    net = _junction_net(arms, minor)
    ids = list(net.edges)
    k = {eid: i for i, eid in enumerate(ids)}
    rank = junction_ranks(net, ids)
    arm = edge_arms_rad(net, ids)
    root = ET.parse(write_sumo_net(net, tmp_path / "j.net.xml")).getroot()
    links = {
        int(c.get("via", "").split("_")[1]): (c.get("from", ""), c.get("to", ""), c.get("dir"))
        for c in root.iter("connection")
        if c.get("via", "").startswith(":j_") and not c.get("from", "").startswith(":")
    }
    junction = next(x for x in root.iter("junction") if x.get("id") == "j")
    response = {int(r.get("index", "")): r.get("response", "") for r in junction.iter("request")}
    same, differ = 0, []
    for a, (fa, ta, da) in links.items():
        for b, (fb, tb, db) in links.items():
            ra, rb = rank[k[fa]], rank[k[fb]]
            if fa == fb or "t" in (da, db):
                continue
            waits = response[a][-1 - b] == "1"
            angles = (arm[k[fa], 0], arm[k[ta], 1], arm[k[fb], 0], arm[k[tb], 1])
            left = nk.turns_left(*angles[:2]), nk.turns_left(*angles[2:])
            if ra < rb:
                ours = ta == tb or nk.paths_cross(*angles)
            elif ra > rb:
                ours = False
            elif ta == tb:
                assert left[0] != left[1]  # no zipper here: one of them turns left
                ours = left[0]
            else:
                ours = nk.gives_way(*angles)
            if ours == waits:
                same += 1
            else:
                differ.append((da, db, waits))
    assert same == agree
    assert differ == ([] if len(arms) == 3 else [("l", "l", True)] * 2)
    place = junction_links(net, ids, rank, arm)
    minor = {
        (fa, ta): bool((place[k[fa], 1] >> place[k[ta], 0]) & 1)
        for fa, ta, da in links.values()
        if da != "t"
    }
    sumo_minor = {
        (c.get("from", ""), c.get("to", "")): c.get("state") == "m"
        for c in root.iter("connection")
        if c.get("via", "").startswith(":j_")
        and not c.get("from", "").startswith(":")
        and c.get("dir") != "t"
    }
    assert minor == sumo_minor


def test_equal_roads_merge_like_a_zipper_without_collisions() -> None:
    """Two equal roads feed one: dense flows on both merge in turn, nobody collides, every
    car leaves the network."""
    nodes = [
        Node("a", 109.0, 39.01),
        Node("b", 109.0, 38.99),
        Node("j", 109.01, 39.0),
        Node("x", 109.03, 39.0),
    ]
    edges = [Edge("aj", "a", "j", 800.0), Edge("bj", "b", "j", 800.0), Edge("jx", "j", "x", 2000.0)]
    net = RoadNetwork.build(nodes, edges)
    flows = [
        Flow("fa", ("aj", "jx"), 700.0, "car", 0, 300),
        Flow("fb", ("bj", "jx"), 700.0, "car", 0, 300),
    ]
    sim = NetSim(net, flows=flows, seed=3)
    res = sim.run(600.0)
    assert res.collisions == 0
    assert sim.n > 80
    assert np.all(res.status == nk.ST_DONE)


def test_lane_drop_platoon_changes_lane_as_one_unit() -> None:
    """Two lanes narrow to one: a platoon driving in the left lane moves right together."""
    net = _corridor(lanes=(2, 2, 1), length_m=1500.0)
    trips = _platoon_trips(3, (Leg(_route(3)),))
    sim = NetSim(net, trips, platoons=[Platoon("p", ("t0", "t1", "t2"))])
    # put the platoon in the left lane on the second edge at cruise speed
    s = sim.state
    for k, pos in enumerate((900.0, 870.0, 840.0)):
        s["status"][k] = nk.ST_DRIVING
        s["edge"][k] = 1
        s["lane"][k] = 1
        s["pos_m"][k] = pos
        s["speed_mps"][k] = 22.0
        s["route_ptr"][k] = 1
    res = sim.run(200.0)
    assert res.collisions == 0
    changes = [e for e in res.events if e["kind"] == "platoon-lane-change"]
    assert sorted(e["vehicle_id"] for e in changes) == ["t0", "t1", "t2"]
    assert len({e["time_s"] for e in changes}) == 1
    assert all(e["lane"] == 0 for e in changes)


def test_cut_ins_happen_into_wide_platoon_gaps_only() -> None:
    """A car stuck behind a slow car in the left lane moves right into a platoon gap when the
    gap is wide (2 s: 42.5 m at 20 m/s, cut-in chance 0.3 per decision; the platoon passes the
    car at 3 m/s, so it has several tries) and never into a tight
    one (0.3 s: 8.5 m, less than a car and below CUT_IN_GAP_LO_M). After a cut-in the truck
    behind the car falls back to ACC (it gets no beacons from a car) and nobody collides."""

    def run(time_gap_s: float) -> tuple[int, set[int]]:
        net = _corridor(lanes=(2, 2, 2), length_m=3000.0)
        l4 = VehicleType(**_l4_fields(time_gap_s))  # type: ignore[arg-type]
        trips = [
            Trip(
                f"t{j}",
                "truck-human" if j == 0 else "truck-l4",
                (Leg(_route(3)),),
                speed_cap_mps=20.0,
            )
            for j in range(5)
        ]
        trips += [
            Trip("slow", "car", (Leg(_route(3)),), speed_cap_mps=15.0),
            Trip("car", "car", (Leg(_route(3)),), speed_cap_mps=22.0),
        ]
        sim = NetSim(
            net,
            trips,
            platoons=[Platoon("p", tuple(f"t{j}" for j in range(5)))],
            vtypes=(CAR, TRUCK_HUMAN, l4),
            seed=5,
        )
        s = sim.state
        spacing = 16.5 + 2.5 + time_gap_s * 20.0
        head = 600.0
        for k in range(5):
            s["status"][k] = nk.ST_DRIVING
            s["pos_m"][k] = head - k * spacing
            s["speed_mps"][k] = 20.0
        for k, (pos, v) in (
            (5, (head - 1.5 * spacing + 25.0, 10.0)),
            (6, (head - 1.5 * spacing, 10.0)),
        ):
            s["status"][k] = nk.ST_DRIVING
            s["lane"][k] = 1
            s["pos_m"][k] = pos
            s["speed_mps"][k] = v
        res = sim.run(60.0)
        assert res.collisions == 0
        cut = sum(e["kind"] == "cut-in" for e in res.events)
        behind_modes = set(res.fcd["mode"][res.fcd["vehicle"] == 2].astype(int).tolist())
        return cut, behind_modes

    cut_wide, modes_wide = run(2.0)
    assert cut_wide >= 1
    assert MODE_ACC_FALLBACK in modes_wide
    cut_tight, _ = run(0.3)
    assert cut_tight == 0


def _l4_fields(time_gap_s: float) -> dict[str, object]:
    return {
        "name": "truck-l4",
        "model": "cacc",
        "length_m": 16.5,
        "min_gap_m": 2.5,
        "accel_mps2": 1.0,
        "decel_mps2": 4.0,
        "emergency_decel_mps2": 7.5,
        "max_speed_mps": 25.0,
        "time_gap_s": time_gap_s,
        "is_truck": True,
        "mass_kg": 49_000.0,
        "cd_a_m2": 6.0,
        "crr": 0.006,
        "can_change_lane": False,
    }


def test_overlap_is_reported_as_a_collision_never_resolved_silently() -> None:
    net = _corridor()
    sim = NetSim(net, [Trip("a", "car", (Leg(_route(3)),)), Trip("b", "car", (Leg(_route(3)),))])
    s = sim.state
    for k, pos in enumerate((100.0, 97.0)):  # b's front is 2 m inside a's 5 m body
        s["status"][k] = nk.ST_DRIVING
        s["edge"][k] = 0
        s["pos_m"][k] = pos
        s["speed_mps"][k] = 10.0
    res = sim.run(1.0)
    hits = [e for e in res.events if e["kind"] == "collision"]
    assert res.collisions == 1
    assert hits[0]["vehicle_id"] == "b" and hits[0]["other_id"] == "a"
    assert list(res.status[:2]) == [nk.ST_REMOVED, nk.ST_REMOVED]


def test_site_capacity_queues_the_second_truck() -> None:
    """A site with room for one: the second truck waits until the first has dwelt 60 s."""
    net = _corridor()
    legs = (Leg(_route(3), dwell_s=60.0, site="end"),)
    trips = [Trip("a", "truck-human", legs, 0.0), Trip("b", "truck-human", legs, 5.0)]
    res = NetSim(net, trips, site_capacity={"end": 1}).run(400.0)
    arr = {e["vehicle_id"]: e["time_s"] for e in res.events if e["kind"] == "arrive-site"}
    fin = {e["vehicle_id"]: e["time_s"] for e in res.events if e["kind"] == "finish"}
    assert fin["a"] == pytest.approx(arr["a"] + 60.0, abs=0.21)
    assert arr["b"] >= fin["a"] - 1e-9
    assert fin["b"] == pytest.approx(arr["b"] + 60.0, abs=0.21)


def test_speed_cap_from_a_dust_storm_slows_traffic_on_its_edges() -> None:
    net = _corridor(length_m=3000.0)
    cap = SpeedCap(("e1",), 0.0, 1e9, 10.0)
    res = NetSim(net, [Trip("c", "car", (Leg(_route(3)),))], speed_caps=[cap]).run(500.0)
    f = res.fcd
    mid = (f["edge"] == 1) & (f["pos_m"] > 800.0)
    assert np.all(f["speed_mps"][mid] <= 10.0 + 1e-9)
    assert f["speed_mps"][(f["edge"] == 0) & (f["pos_m"] < 2000.0)].max() > 24.0


def test_batch_instances_equal_separate_runs_and_same_seed_same_result() -> None:
    net = _corridor(lanes=(2, 2, 1), length_m=1500.0)
    flows = [Flow("f", _route(3), 1200.0, "car", 0.0, 200.0)]
    one = NetSim(net, flows=flows, seed=7).run(300.0)
    again = NetSim(net, flows=flows, seed=7).run(300.0)
    np.testing.assert_array_equal(one.fcd["pos_m"], again.fcd["pos_m"])
    many = NetSim(net, flows=flows, seed=7, instances=3).run(300.0)
    n = len(one.vehicle_ids)
    for k in range(3):
        rows = many.instance == k
        np.testing.assert_allclose(many.distance_m[rows], one.distance_m, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(many.lane_changes[rows], one.lane_changes)
    assert len(many.vehicle_ids) == 3 * n


def test_bad_input_names_the_field() -> None:
    net = _corridor()
    with pytest.raises(NetSimError, match="unknown edge 'nope'"):
        NetSim(net, [Trip("c", "car", (Leg(("e0", "nope")),))])
    with pytest.raises(NetSimError, match="not connected"):
        NetSim(net, [Trip("c", "car", (Leg(("e0", "e2")),))])
    with pytest.raises(NetSimError, match="vtype = 'bus'"):
        NetSim(net, [Trip("c", "bus", (Leg(("e0",)),))])
    with pytest.raises(NetSimError, match="dt_s"):
        NetSim(net, dt_s=0.0)
    # times and speeds no run can mean were taken as given: a NaN departure (compared false,
    # the vehicle never left), a negative dwell, a NaN speed cap
    for trip, needle in (
        (Trip("c", "car", (Leg(("e0",)),), depart_s=math.nan), "depart_s = nan"),
        (Trip("c", "car", (Leg(("e0",)),), depart_s=-5.0), "depart_s = -5.0"),
        (Trip("c", "car", (Leg(("e0",), dwell_s=-1.0),)), "leg 0 dwell_s = -1.0"),
        (Trip("c", "car", (Leg(("e0",)),), speed_cap_mps=math.nan), "speed_cap_mps = nan"),
        (Trip("c", "car", (Leg(("e0",)),), speed_cap_mps=0.0), "speed_cap_mps = 0.0"),
    ):
        with pytest.raises(NetSimError, match=needle):
            NetSim(net, [trip])
    NetSim(net, [Trip("c", "car", (Leg(("e0",)),), depart_s=math.inf)])  # placed by a script
    # an infinite flow drew gaps of 0 s for ever; run(nan) and run(inf) were a ValueError and
    # an OverflowError from deep inside
    with pytest.raises(NetSimError, match="veh_per_h = inf"):
        NetSim(net, flows=[Flow("f", ("e0",), math.inf)])
    with pytest.raises(NetSimError, match=r"record_every_s = -1\.0"):
        NetSim(net, record_every_s=-1.0)
    sim = NetSim(net, [Trip("c", "car", (Leg(("e0",)),))])
    for until in (math.nan, math.inf, -1.0):
        with pytest.raises(NetSimError, match=re.escape(f"until_s = {until}")):
            sim.run(until)


def test_a_loaded_truck_climbs_at_its_power_limited_speed() -> None:
    """On a long 5 % climb a loaded 49 t electric truck settles where full motor power just
    balances grade, rolling and air resistance (the speed where the powertrain's largest
    acceleration is zero), well below the 25 m/s limit; an empty truck climbs faster."""
    from convoy.vehicle.energy import ElectricPowertrain, max_traction_accel_mps2

    length_m = 8000.0
    nodes = [Node("a", 109.0, 39.0, elevation_m=1000.0), Node("b", 109.1, 39.0, elevation_m=1400.0)]
    edges = [
        Edge(
            "up",
            "a",
            "b",
            length_m,
            speed_limit_mps=25.0,
            stations_m=(0.0, length_m),
            elevation_m=(1000.0, 1400.0),
        )
    ]
    net = RoadNetwork.build(nodes, edges)
    empty = VehicleType(**{**_l4_fields(1.5), "name": "empty", "model": "idm", "mass_kg": 18_000.0})  # type: ignore[arg-type]
    trips = [  # the empty truck goes first, so nothing holds it up
        Trip("loaded", "truck-human", (Leg(("up",)),), 60.0),
        Trip("empty", "empty", (Leg(("up",)),), 0.0),
    ]
    res = NetSim(net, trips, vtypes=(CAR, TRUCK_HUMAN, empty)).run(600.0)
    pt = ElectricPowertrain().to_vector()
    lo, hi = 1.0, 25.0
    for _ in range(60):  # bisection for the sustained speed
        mid = 0.5 * (lo + hi)
        if max_traction_accel_mps2(pt, 49_000.0, mid, 0.05, 1.0, 6.0, 0.006) > 0:
            lo = mid
        else:
            hi = mid
    f = res.fcd
    late = (f["vehicle"] == 0) & (f["pos_m"] > 6000.0)
    assert lo < 20.0
    np.testing.assert_allclose(f["speed_mps"][late], lo, atol=0.3)
    empty_late = (f["vehicle"] == 1) & (f["pos_m"] > 6000.0)
    assert f["speed_mps"][empty_late].min() > lo + 3.0


def _manoeuvre_sim(lanes: tuple[int, ...], trips: list[Trip], platoon: tuple[str, ...]) -> NetSim:
    net = _corridor(lanes=lanes, length_m=6000.0)
    return NetSim(net, trips, platoons=[Platoon("p", platoon)], manoeuvres=True)


def test_a_truck_joins_a_platoon_at_the_rear_over_v2v() -> None:
    """A driverless truck ~100 m behind a 1+2 platoon (all capped at 20 m/s) asks to join: the
    head accepts over the (perfect) link, the joiner closes at up to 5 m/s faster than the
    tail, couples, and then follows the tail by CACC at its gap (1 s at 20 m/s + 2.5 m)."""
    legs = (Leg(_route(3)),)
    trips = [
        Trip("h", "truck-human", legs, 0.0, speed_cap_mps=20.0),
        Trip("f1", "truck-l4", legs, 0.0, speed_cap_mps=20.0),
        Trip("f2", "truck-l4", legs, 0.0, speed_cap_mps=20.0),
        Trip("j", "truck-l4", legs, 8.0, speed_cap_mps=20.0),
    ]
    sim = _manoeuvre_sim((1, 1, 1), trips, ("h", "f1", "f2"))
    sim.request_join(40.0, "j", "h")
    res = sim.run(250.0)
    kinds = [e["kind"] for e in res.events if str(e["kind"]).startswith("join")]
    assert kinds[0] == "join-request" and "join-complete" in kinds
    assert "join-abort" not in kinds
    assert sim.registry.members(sim.registry.platoon_of[3]) == (0, 1, 2, 3)
    assert sim.state["pred"][3] == 2
    f = res.fcd
    late = (f["vehicle"] == 3) & (f["time_s"] > 230.0)
    np.testing.assert_allclose(f["gap_m"][late], 22.5, atol=1.5)
    assert res.collisions == 0


def test_a_truck_leaves_from_the_middle_and_the_platoon_closes_up() -> None:
    """Member 2 of a 1+3 platoon on a two-lane road leaves: the truck behind opens a gap, the
    leaver changes lanes, the truck behind now follows member 1 and closes the gap."""
    legs = (Leg(_route(3)),)
    # the human lead drives 20 m/s; the followers may go faster, so a gap can close
    trips = [Trip("h", "truck-human", legs, 0.0, speed_cap_mps=20.0)] + [
        Trip(f"f{k}", "truck-l4", legs, 0.0) for k in (1, 2, 3)
    ]
    sim = _manoeuvre_sim((2, 2, 2), trips, ("h", "f1", "f2", "f3"))
    sim.request_leave(60.0, "f2")
    res = sim.run(250.0)
    kinds = [e["kind"] for e in res.events if str(e["kind"]).startswith("leave")]
    assert "leave-complete" in kinds and "leave-abort" not in kinds
    assert sim.state["pred"][3] == 1 and sim.state["platoon"][2] == -1
    assert any(e["kind"] == "lane-change" and e["vehicle_id"] == "f2" for e in res.events)
    f = res.fcd
    late = (f["vehicle"] == 3) & (f["time_s"] > 230.0)
    np.testing.assert_allclose(f["gap_m"][late], 22.5, atol=1.5)
    assert res.collisions == 0


def test_road_works_platoon_leaves_the_closed_lane_as_one_unit() -> None:
    """Works close the right lane of the third edge: a 1+2 platoon in the right lane moves left
    together before the works, cars do too, and nobody drives the closed lane there."""
    net = _corridor(lanes=(2, 2, 2), length_m=1500.0)
    trips = _platoon_trips(3, (Leg(_route(3)),))
    flows = [Flow("f", _route(3), 600.0, "car", 0.0, 120.0)]
    sim = NetSim(
        net,
        trips,
        flows,
        [Platoon("p", ("t0", "t1", "t2"))],
        lane_closures=[LaneClosure("e2", 0, 0.0, 1e9)],
        seed=2,
    )
    res = sim.run(400.0)
    assert res.collisions == 0
    changes = [e for e in res.events if e["kind"] == "platoon-lane-change"]
    assert sorted(e["vehicle_id"] for e in changes) == ["t0", "t1", "t2"]
    assert len({e["time_s"] for e in changes}) == 1 and all(e["lane"] == 1 for e in changes)
    f = res.fcd
    assert not np.any((f["edge"] == 2) & (f["lane"] == 0))
    with pytest.raises(NetSimError, match="lane = 3"):
        NetSim(net, lane_closures=[LaneClosure("e2", 3, 0.0, 1.0)])


@pytest.mark.parametrize("busy", [1.0, 0.05])
def test_lane_sort_orders_the_road_whatever_came_before(busy: float) -> None:
    """``sort_lanes`` starts from the previous step's order: it moves the few vehicles that
    changed lane in place, or scatters those that were on the road and then those new on
    it. After every step of a random history (vehicles entering, leaving, changing lane and
    edge, overtaking, tied positions; ``busy`` scales how many) the road's order is a fresh
    sort's: by lane key, then front-most first, ties by index. A busy history takes the
    scatter, a calm one mostly the moves in place."""
    rng = np.random.default_rng(7)
    n, n_inst, n_edges, max_lanes = 300, 2, 5, 2
    nb = n_inst * n_edges * max_lanes
    inst = rng.integers(0, n_inst, n).astype(np.int32)
    status = np.where(rng.random(n) < 0.5, nk.ST_DRIVING, nk.ST_WAITING).astype(np.int8)
    edge = rng.integers(0, n_edges, n).astype(np.int32)
    lane = rng.integers(0, max_lanes, n).astype(np.int8)
    pos_m = np.round(rng.uniform(0.0, 100.0, n))  # whole metres: many ties
    order = np.arange(n, dtype=np.int32)
    rank = np.arange(n, dtype=np.int32)
    bucket_start = np.zeros(nb + 2, dtype=np.int64)
    scratch = np.zeros(nb + 2, dtype=np.int64)
    head_of = np.zeros(nb, dtype=np.int32)
    keys = np.zeros(n, dtype=np.int64)
    old_order = np.zeros(n, dtype=np.int32)
    number = np.arange(n, dtype=np.int32)  # the ties' order: by vehicle number
    entered = left = in_place = 0
    for step in range(60):
        moved = nk.sort_lanes(
            inst, status, edge, lane, n_edges, max_lanes, keys, pos_m, number, order,
            bucket_start, scratch, rank, head_of, old_order,
        )  # fmt: skip
        assert not (step == 0 and moved)  # the first call finds no previous order to trust
        in_place += moved
        on = status == nk.ST_DRIVING
        key = np.where(on, (inst * n_edges + edge) * max_lanes + lane, nb)
        np.testing.assert_array_equal(keys, key)
        idx = np.flatnonzero(on)
        want = idx[np.lexsort((idx, -pos_m[idx], key[idx]))]
        np.testing.assert_array_equal(order[: on.sum()], want)
        counts = np.bincount(key[on], minlength=nb)
        np.testing.assert_array_equal(bucket_start[: nb + 1], np.r_[0, np.cumsum(counts)])
        assert bucket_start[nb + 1] == n
        np.testing.assert_array_equal(rank[want], np.arange(want.size))
        firsts = np.r_[0, np.cumsum(counts)[:-1]]
        np.testing.assert_array_equal(
            head_of, np.where(counts > 0, order[np.minimum(firsts, n - 1)], -1)
        )
        # the next step: most drive on, some overtake, change lane or edge, leave or enter
        pos_m += np.where(on, np.round(rng.uniform(0.0, 3.0, n)), 0.0)
        change = on & (rng.random(n) < 0.05 * busy)
        lane[change] = 1 - lane[change]
        edge[change & (rng.random(n) < 0.5)] = rng.integers(0, n_edges)
        leave = on & (rng.random(n) < 0.03 * busy)
        enter = ~on & (rng.random(n) < 0.05 * busy)
        status[leave] = nk.ST_DWELLING
        status[enter] = nk.ST_DRIVING
        entered += int(enter.sum())
        left += int(leave.sum())
    if busy == 1.0:
        assert entered > 50 and left > 50 and in_place < 30
    else:
        assert entered > 5 and left > 5 and in_place > 40


@pytest.mark.parametrize("listed", [False, True])
def test_lane_sort_from_the_marked_blocks_equals_the_full_sort(listed: bool) -> None:
    """The step's sort checks for a changed lane key only the vehicles of the blocks the last
    step marked in ``touched`` (``_move_few``): where a vehicle changed edge or lane, or
    entered or left the road; on a road with few of the vehicles on it, only those of its
    last list of the road in such blocks. Through a random history its order, lane starts,
    ranks, heads and keys equal ``sort_lanes``' full check of every vehicle, step by step;
    with the marks of the vehicles that entered left out, they do not."""

    def history(mark_entries: bool) -> bool:
        rng = np.random.default_rng(11)
        n, n_edges, max_lanes = 400, 6, 2
        nb = n_edges * max_lanes
        inst = np.zeros(n, dtype=np.int32)
        status = np.where(rng.random(n) < 0.2, nk.ST_DRIVING, nk.ST_DWELLING).astype(np.int8)
        edge = rng.integers(0, n_edges, n).astype(np.int32)
        lane = rng.integers(0, max_lanes, n).astype(np.int8)
        pos_m = np.round(rng.uniform(0.0, 100.0, n))

        def arrays() -> dict[str, np.ndarray]:
            return {
                "keys": np.full(n, nb, dtype=np.int32),
                "order": np.arange(n, dtype=np.int32),
                "bucket_start": np.zeros(nb + 2, dtype=np.int64),
                "rank": np.arange(n, dtype=np.int32),
                "head_of": np.full(nb, -1, dtype=np.int64),
            }

        full, marked = arrays(), arrays()
        scratch = np.zeros(nb + 2, dtype=np.int64)
        old_order = np.zeros(n, dtype=np.int32)
        touched = np.zeros((n >> nk.TOUCH_SHIFT) + 1, dtype=np.uint8)
        number = np.arange(n, dtype=np.int32)
        road = np.flatnonzero(status == nk.ST_DRIVING).astype(np.uint32)
        in_place = 0
        same = True
        for step in range(80):
            for a, mine in ((full, False), (marked, True)):
                args = (inst, status, edge, lane, n_edges, max_lanes, a["keys"])
                if not mine:
                    nk.sort_lanes(
                        *args, pos_m, number, a["order"], a["bucket_start"], scratch,
                        a["rank"], a["head_of"], old_order,
                    )  # fmt: skip
                elif nk._move_few(
                    *args, a["order"], a["bucket_start"], a["rank"], old_order, road,
                    road.size if listed else -1, touched, step == 0,
                ):  # fmt: skip
                    in_place += 1
                    nk._repair_lanes(
                        pos_m, number, a["order"], a["bucket_start"], a["rank"], a["head_of"],
                        False,
                    )  # fmt: skip
                else:
                    nk._sort_afresh(
                        *args, pos_m, number, a["order"], a["bucket_start"], scratch,
                        a["rank"], a["head_of"], old_order,
                    )  # fmt: skip
            on = status == nk.ST_DRIVING
            idx = np.flatnonzero(on)
            same &= all(np.array_equal(marked[k], full[k]) for k in ("keys", "bucket_start"))
            same &= np.array_equal(marked["head_of"], full["head_of"])
            same &= np.array_equal(marked["order"][: on.sum()], full["order"][: on.sum()])
            same &= np.array_equal(marked["rank"][idx], full["rank"][idx])
            # the next step: vehicles move, change lane or edge, leave or enter the road, and
            # their blocks are marked
            pos_m += np.where(on, np.round(rng.uniform(0.0, 3.0, n)), 0.0)
            change = on & (rng.random(n) < 0.01)
            lane[change] = 1 - lane[change]
            edge[change & (rng.random(n) < 0.5)] = rng.integers(0, n_edges)
            enter = ~on & (rng.random(n) < 0.003)
            status[enter] = nk.ST_DRIVING
            # (the list: those on the road after the entries; those that leave stay on it)
            road = np.flatnonzero(status == nk.ST_DRIVING).astype(np.uint32)
            leave = (status == nk.ST_DRIVING) & (rng.random(n) < 0.005)
            status[leave] = nk.ST_DWELLING
            for moved in (change, leave, enter if mark_entries else leave):
                touched[np.flatnonzero(moved) >> nk.TOUCH_SHIFT] = 1
        assert in_place > 40  # both the moves in place and the fresh sorts were taken
        return same

    assert history(mark_entries=True)
    assert not history(mark_entries=False)


def test_a_call_threads_when_enough_vehicles_are_on_the_road() -> None:
    """The threaded step pays off from some hundreds of vehicles on the road, whatever the
    fleet: a call counts those driving and those due to enter before it ends."""
    k = nk.PARALLEL_MIN_ON_ROAD
    status = np.full(3 * k, nk.ST_DWELLING, dtype=np.int8)
    ready_s = np.full(3 * k, 100.0)
    status[: k - 1] = nk.ST_DRIVING
    assert nk.step_variant(status, ready_s, 50.0) is nk.run_net_steps
    status[k] = nk.ST_WAITING  # due at 100 s
    assert nk.step_variant(status, ready_s, 50.0) is nk.run_net_steps
    assert nk.step_variant(status, ready_s, 150.0) is nk.run_net_steps_parallel
    status[k] = nk.ST_DONE
    status[k - 1] = nk.ST_DRIVING
    assert nk.step_variant(status, ready_s, 50.0) is nk.run_net_steps_parallel


def test_threaded_step_equals_the_one_thread_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Busy roads take the threaded variant of the step (``run_net_steps_parallel``): on
    merging flows and lane changes it computes the one-thread variant's bits (each of its
    parallel loops writes only its own vehicle's entries)."""
    nodes = [Node("a", 109.0, 39.01), Node("b", 109.0, 38.99), Node("j", 109.01, 39.0)]
    nodes.append(Node("x", 109.03, 39.0))
    edges = [
        Edge("aj", "a", "j", 800.0, lanes=2),
        Edge("bj", "b", "j", 800.0),
        Edge("jx", "j", "x", 2000.0, lanes=2),
    ]
    net = RoadNetwork.build(nodes, edges)
    flows = [
        Flow("fa", ("aj", "jx"), 1500.0, "car", 0, 200),
        Flow("fb", ("bj", "jx"), 600.0, "car", 0, 200),
    ]
    monkeypatch.setattr(nk, "PARALLEL_MIN_ON_ROAD", 10**9)
    one = NetSim(net, flows=flows, seed=4).run(300.0)
    monkeypatch.setattr(nk, "PARALLEL_MIN_ON_ROAD", 0)
    # the chooser measures both variants in turn, in calls of ``PROBE_STEPS`` steps
    mixed_sim = NetSim(net, flows=flows, seed=4)
    threads = numba.get_num_threads()
    mixed = mixed_sim.run(300.0, chunk_steps=200)
    assert numba.get_num_threads() == threads  # the one-core calls put the count back
    assert set(mixed_sim._chooser.ns_per_vehicle_step) == {
        "run_net_steps_one_core",
        "run_net_steps_parallel",
    }
    monkeypatch.setattr(nk.StepChooser, "pick", lambda self, fn, step, end: (fn, end))
    threaded = NetSim(net, flows=flows, seed=4).run(300.0)
    assert sum(one.lane_changes) > 0 and one.collisions == 0
    for other in (threaded, mixed):
        np.testing.assert_array_equal(other.fcd["pos_m"], one.fcd["pos_m"])
        np.testing.assert_array_equal(other.fcd["speed_mps"], one.fcd["speed_mps"])
        np.testing.assert_array_equal(other.lane_changes, one.lane_changes)
        assert other.events == one.events


def test_the_chooser_times_both_variants_and_runs_the_faster() -> None:
    """Where the step would thread, ``StepChooser`` runs short calls of each variant first,
    then the faster, timing the slower again every ``REPROBE_EVERY`` calls; a variant's
    first call in a process (compiling it) does not count, and a quiet road is left to
    ``step_variant``. The alternative to the threads is the threaded variant on one thread."""
    par, one = nk.run_net_steps_parallel, nk.run_net_steps_one_core
    quiet = nk.run_net_steps
    c = nk.StepChooser()
    assert c.pick(quiet, 0, 600) == (quiet, 600)  # a quiet road: not the chooser's business
    assert c.pick(par, 0, 600) == (par, nk.PROBE_STEPS)
    c.record(par, False, 9.0, 50, 1000)  # compiling: not a measurement
    assert c.pick(par, 50, 600) == (par, 50 + nk.PROBE_STEPS)
    c.record(par, True, 60e-6, 50, 1000)  # 60 ns per vehicle-step
    assert c.pick(par, 100, 600) == (one, 100 + nk.PROBE_STEPS)
    c.record(one, True, 40e-6, 50, 1000)
    assert c.ns_per_vehicle_step == pytest.approx({par.__name__: 60.0, one.__name__: 40.0})
    assert c.steps_run == {par.__name__: 100, one.__name__: 50}
    assert c.threads_used() == numba.get_num_threads()
    picks = [c.pick(par, 150, 700) for _ in range(nk.REPROBE_EVERY)]
    # calls 4 .. 19: the faster to the chunk's end, the slower once, for a probe
    assert picks.count((one, 700)) == nk.REPROBE_EVERY - 1
    assert picks.count((par, 150 + nk.PROBE_STEPS)) == 1
    c.record(par, True, 30e-6, 50, 1000)  # the threads pay now

    def runs(end: int) -> Any:
        """The variant that runs whole calls, over REPROBE_EVERY calls."""
        picks = [c.pick(par, 0, end) for _ in range(nk.REPROBE_EVERY)]
        (best,) = {fn for fn, to in picks if to == end}
        return best

    assert runs(800) is par
    # one call the host slowed down does not decide the run: a variant counts as fast as
    # the best of its last RECENT measurements
    c.record(par, True, 90e-6, 600, 1000)
    assert c.ns_per_vehicle_step[par.__name__] == pytest.approx(30.0)
    assert runs(1400) is par
    for _ in range(nk.RECENT):  # slower for good: the other variant takes over
        c.record(par, True, 90e-6, 600, 1000)
    assert c.ns_per_vehicle_step[par.__name__] == pytest.approx(90.0)
    assert runs(2000) is one
    # the variant that ran most steps of a window (the bench's steady one, from t1)
    at_t1 = dict(c.steps_run)
    c.record(par, True, 90e-6, 600, 1000)
    assert c.threads_used(since=at_t1) == numba.get_num_threads()
    c.record(one, True, 40e-6, 601, 1000)
    assert c.threads_used(since=at_t1) == 1


@numba.njit
def _both_laws(
    vt: np.ndarray, pt: np.ndarray, wheel_max_w: np.ndarray, cases: np.ndarray, ty: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    general = np.empty(cases.shape[0])
    branch_free = np.empty(cases.shape[0])
    cacc_p = np.zeros((vt.shape[0], 64))
    for k in range(cases.shape[0]):
        speed_cap, set_speed, extra, v, gap, v_lead, grade = cases[k]
        cos_t, sin_t = np.cos(np.arctan(grade)), np.sin(np.arctan(grade))
        general[k] = nk.next_speed(
            vt, cacc_p, cacc_p, pt, wheel_max_w, ty[k], 25.0, 22.0, cos_t, sin_t,
            speed_cap, set_speed, extra, v, 0.0, gap, v_lead, False, 0, 0.1,
        )[0]  # fmt: skip
        branch_free[k] = nk.idm_next_speed(
            vt, pt, wheel_max_w, ty[k], 25.0, 22.0, cos_t, sin_t,
            speed_cap, set_speed, extra, v, gap, v_lead, 0.1,
        )  # fmt: skip
    return general, branch_free


def test_the_branch_free_idm_law_computes_next_speeds_bits() -> None:
    """``idm_next_speed`` (the vectorised law of an all-IDM road) is ``next_speed`` for IDM
    types to the last bit, wherever a choice falls: free road (``NO_GAP``) or a leader, near
    and far; a manoeuvre's set speed or none (NaN); a speed cap; a car or a truck on a grade
    its motor cannot climb at full acceleration."""
    loaded = replace(TRUCK_HUMAN, name="loaded", mass_kg=60_000.0, max_speed_mps=20.0)
    sim = NetSim(_corridor(), [Trip("c", "car", (Leg(_route(3)),), 0.0)],
                 vtypes=[CAR, TRUCK_HUMAN, loaded])  # fmt: skip
    assert nk.idm_law_only(sim._vt)
    wheel_max_w = nk.call_constants(sim._vt, sim._pt, 20.0, 0.1, np.zeros(1))[1]
    rng = np.random.default_rng(7)
    m = 20_000
    cases = np.column_stack([
        np.where(rng.random(m) < 0.2, rng.uniform(5, 30, m), np.inf),  # speed cap
        np.where(rng.random(m) < 0.2, rng.uniform(0, 30, m), np.nan),  # set speed
        np.where(rng.random(m) < 0.2, rng.uniform(0, 20, m), 0.0),  # extra gap
        rng.uniform(0, 30, m),  # speed
        np.where(rng.random(m) < 0.3, nk.NO_GAP, rng.uniform(-1, 150, m)),  # gap
        rng.uniform(0, 30, m),  # leader's speed
        rng.choice([0.0, 0.03, -0.05, 0.08], m),  # grade
    ])  # fmt: skip
    ty = rng.integers(0, 3, m)
    general, branch_free = _both_laws(sim._vt, sim._pt, wheel_max_w, cases, ty)
    assert np.array_equal(general, branch_free)
    # the cases reach both sides of every choice: free and following, motor-bound
    assert np.isfinite(general).all() and (general == 0.0).any() and (general > 25.0).any()
    # any other law, or another exponent, takes the general loop
    other_delta = sim._vt.copy()
    other_delta[1, nk.VT_IDM_DELTA] = 3.0
    assert not nk.idm_law_only(other_delta)
    with_l4 = NetSim(_corridor(), [Trip("c", "car", (Leg(_route(3)),), 0.0)],
                     vtypes=[CAR, TRUCK_L4])  # fmt: skip
    assert not nk.idm_law_only(with_l4._vt)


@pytest.mark.parametrize("fleet", ["platoon-and-solos", "all-idm"])
def test_a_dense_road_steps_the_same_bits_on_every_variant(
    fleet: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every vehicle on the road the step runs its dense loops (and, where every type
    drives IDM, the branch-free law, which LLVM vectorises in the threaded variant). The
    one-thread variant, the threaded one and the threaded one on one core compute the same
    FCD, energy and events, and so do the loops over the list of vehicles on a sparse road:
    a 1+4 platoon drafting (its drag rows) and solo trucks behind it, or solo trucks alone."""
    net = _corridor(lanes=(1, 1), length_m=15_000.0)
    platoon = _platoon_trips(5, (Leg(_route(2)),)) if fleet == "platoon-and-solos" else []
    solos = [Trip(f"s{j}", "truck-human", (Leg(_route(2)),), 15.0 + 8.0 * j) for j in range(7)]
    platoons = [Platoon("p", tuple(t.vehicle_id for t in platoon))] if platoon else []

    # as many again parked until long after the run: the road counts as sparse, and the
    # step runs its loops over the list of vehicles on the road instead
    parked = [Trip(f"x{j}", "truck-human", (Leg(_route(2)),), 1e5) for j in range(12)]

    def run(variant: Any, extra: list[Trip]) -> Any:
        monkeypatch.setattr(nk, "PARALLEL_MIN_ON_ROAD", 10**9 if variant is None else 0)
        if variant is not None:
            monkeypatch.setattr(nk.StepChooser, "pick", lambda self, fn, s, end: (variant, end))
        return NetSim(net, platoon + solos + extra, platoons=platoons).run(240.0)

    one = run(None, [])
    n = len(platoon) + len(solos)
    on_road = one.fcd["time_s"] == 200.0
    assert on_road.sum() == n  # every vehicle drives: the dense loops ran
    assert one.collisions == 0 and (one.energy_kwh > 0).all()
    for variant, extra in (
        (nk.run_net_steps_parallel, []),
        (nk.run_net_steps_one_core, []),
        (None, parked),
        (nk.run_net_steps_parallel, parked),
    ):
        other = run(variant, extra)
        for col in ("pos_m", "speed_mps", "accel_mps2", "mode"):
            np.testing.assert_array_equal(other.fcd[col], one.fcd[col])
        np.testing.assert_array_equal(other.energy_kwh[:n], one.energy_kwh)
        assert other.events == one.events


def _zipper() -> NetSim:
    nodes = [Node("a", 109.0, 39.01), Node("b", 109.0, 38.99), Node("j", 109.01, 39.0)]
    nodes.append(Node("x", 109.03, 39.0))
    edges = [Edge("aj", "a", "j", 800.0), Edge("bj", "b", "j", 800.0), Edge("jx", "j", "x", 2000.0)]
    flows = [
        Flow("fa", ("aj", "jx"), 900.0, "car", 0, 120),
        Flow("fb", ("bj", "jx"), 900.0, "car", 0, 120),
    ]
    return NetSim(RoadNetwork.build(nodes, edges), flows=flows, seed=3)


def _collision_chain() -> NetSim:
    # vehicle 0 at the rear overlaps 1, which overlaps 2 at the front: taken by number, 0
    # and 1 collide first and 2 drives on; taken front first, 1 and 2 would, and 0 would not
    # (a first call sorts the lanes: the next one gets the vehicles in road order, 2, 1, 0)
    trips = [Trip(f"c{k}", "car", (Leg(_route(3)),)) for k in range(3)]
    sim = NetSim(_corridor(), trips)
    for k, pos in enumerate((40.0, 70.0, 100.0)):
        sim.state["status"][k] = nk.ST_DRIVING
        sim.state["pos_m"][k] = pos
        sim.state["speed_mps"][k] = 10.0
    sim.run(0.2)
    for k, pos in enumerate((94.0, 97.0, 100.0)):
        sim.state["pos_m"][k] = pos
    return sim


def _sites() -> NetSim:
    legs = (Leg(_route(3), dwell_s=20.0, site="end"), Leg(_route(3)))
    trips = [Trip(f"t{k}", "truck-human", legs, 3.0 * (5 - k)) for k in range(5)]
    return NetSim(_corridor(), trips, site_capacity={"end": 2})


def _join() -> NetSim:
    legs = (Leg(_route(3)),)
    trips = [Trip("j", "truck-l4", legs, 8.0, speed_cap_mps=20.0)]
    trips += [Trip(t, ty, legs, 0.0, speed_cap_mps=20.0) for t, ty in
              (("h", "truck-human"), ("f1", "truck-l4"), ("f2", "truck-l4"))]  # fmt: skip
    sim = _manoeuvre_sim((1, 2, 1), trips, ("h", "f1", "f2"))
    sim.request_join(40.0, "j", "h")
    return sim


@pytest.mark.parametrize("build", [_zipper, _collision_chain, _sites, _join])
def test_road_order_storage_gives_the_results_of_storage_by_number(
    build: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The threaded step gets the vehicles stored in road order (``NetSim._renumber``), yet
    every result is the one of the vehicles stored by number: the serial passes still go by
    number (which of two waiting vehicles enters first, which pair of a chain of overlapping
    vehicles collides: the rear pair here, not the front one), the lane sort and the zipper
    break ties by number, and events, FCD rows and the state come back by number. Run on a
    zipper merge, a chain collision, a site with room for two (arrivals, dwells, second legs)
    and a platoon join over V2V (predecessors remapped between manoeuvre ticks)."""
    assert numba.get_num_threads() >= 2, "CI has 2 cores: the threaded step needs two threads"
    monkeypatch.setattr(nk, "PARALLEL_MIN_ON_ROAD", 10**9)
    by_number = build()
    one = by_number.run(150.0)
    monkeypatch.setattr(nk, "PARALLEL_MIN_ON_ROAD", 0)
    monkeypatch.setattr(nk.StepChooser, "pick", lambda self, fn, s, end: (fn, end))
    perms: list[np.ndarray] = []
    renumber = NetSim._renumber

    def spy(self: NetSim, perm: np.ndarray) -> None:
        perms.append(perm.copy())
        renumber(self, perm)

    monkeypatch.setattr(NetSim, "_renumber", spy)
    by_road = build()
    other = by_road.run(150.0)
    # the road order differed from the numbering in some call
    assert any((p != np.arange(p.size)).any() for p in perms)
    assert other.events == one.events
    for col in one.fcd:
        np.testing.assert_array_equal(other.fcd[col], one.fcd[col])
    for k in one.__dataclass_fields__:
        if isinstance(getattr(one, k), np.ndarray):
            np.testing.assert_array_equal(getattr(other, k), getattr(one, k))
    for k, v in by_number.state.items():
        np.testing.assert_array_equal(by_road.state[k], v)
    if build is _collision_chain:
        assert [e["vehicle_id"] for e in one.events if e["kind"] == "collision"] == ["c0"]
        assert list(one.status) == [nk.ST_REMOVED, nk.ST_REMOVED, nk.ST_DONE]
