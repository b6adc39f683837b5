"""Who waits at a priority junction, convoy against SUMO on the same cross and demand.

A cross of two-way roads, 1 km arms, one lane each way: west-east is the main road (the north
arm leans a little east, so netconvert and convoy both choose west-east), ``--minor`` arms
are tertiary, the rest primary. Every movement through the node but the U-turns gets a
truck every ``--headway`` seconds (offset per movement) for ``--minutes``; the bench's IDM
truck, the same in both engines. The network goes through netconvert (no internal links, as
in ``convoy bench network``) and both engines run the same ``.net.xml`` and ``.rou.xml`` to
completion. Printed per movement: trips, mean travel time in each and the difference; and
the mean over all trips.

    python scripts/junction_vs_sumo.py                 # all roads equal (W-E main by angle)
    python scripts/junction_vs_sumo.py --minor ns      # north and south tertiary
"""

from __future__ import annotations

import argparse
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convoy.road.network import Edge, Node, RoadClass, RoadNetwork
from convoy.road.sumo_net import read_sumo_net, write_sumo_net
from convoy.sim.bench_network import (
    BENCH_VTYPES,
    DT_S,
    convoy_trip_times,
    run_sumo_net,
    sumo_trip_times,
    write_routes,
    write_sumocfg,
)
from convoy.sim.conflicts import (
    PET_WINDOW_S,
    EdgeTable,
    Trajectories,
    node_crossings,
    post_encroachment,
    trajectories,
)
from convoy.sim.network import Leg, NetResult, NetSim, Trip

ARMS = {"w": (109.0, 39.0), "e": (109.02, 39.0), "s": (109.01, 38.99), "n": (109.012, 39.01)}
TURN = {("w", "e"): "s", ("e", "w"): "s", ("s", "n"): "s", ("n", "s"): "s"}


def cross(minor: str, arms: str = "wesn") -> RoadNetwork:
    """Two-way roads of 1 km, 20 m/s, from each of ``arms`` to the node "j": primary, or
    tertiary for the arms in ``minor`` (``arms`` without "n": a T)."""
    nodes = [Node("j", 109.01, 39.0), *(Node(a, *ARMS[a]) for a in arms)]
    edges = [
        Edge(
            f"{a}{b}",
            a,
            b,
            1000.0,
            speed_limit_mps=20.0,
            road_class=RoadClass.TERTIARY if x in minor else RoadClass.PRIMARY,
        )
        for x in arms
        for a, b in ((x, "j"), ("j", x))
    ]
    return RoadNetwork.build(nodes, edges)


def demand(headway_s: float, minutes: float) -> list[Trip]:
    moves = [(a, b) for a in ARMS for b in ARMS if a != b]
    trips = []
    for m, (a, b) in enumerate(moves):
        t = m * headway_s / len(moves)
        k = 0
        while t < minutes * 60.0:
            trips.append(Trip(f"{a}{b}.{k}", "truck-human", (Leg((f"{a}j", f"j{b}")),), t))
            t += headway_s
            k += 1
    return sorted(trips, key=lambda tr: (tr.depart_s, tr.vehicle_id))


@dataclass(frozen=True)
class Movement:
    """One movement's trips: how many both engines finished, mean travel times [s]."""

    move: str
    turn: str
    trips: int
    convoy_s: float
    sumo_s: float


@dataclass(frozen=True)
class Junction:
    """How one engine's junction went: its conflicts and its waits.

    Attributes:
        pet_s: PET of every conflicting pair of passages up to ``PET_WINDOW_S`` [s].
        max_wait_s: the longest a trip stood (speed <= 0.1 m/s, SUMO's ``waitingTime``) [s].
        jammed: trips that stood ``JAM_S`` or longer.
    """

    pet_s: np.ndarray
    max_wait_s: float
    jammed: int


#: a trip that stood this long counts as jammed: SUMO's default ``time-to-teleport`` [s]
JAM_S = 300.0
#: records per second of both engines' FCD for the conflicts (1 s: SUMO's and convoy's default)
RECORD_S = 1.0


def compare(
    minor: str, headway_s: float, minutes: float
) -> tuple[list[Movement], dict[str, int], dict[str, Junction]]:
    """Both engines on the cross to completion: per movement, the counts (trips, finished
    on each side, collisions on each side) and each engine's junction."""
    trips = demand(headway_s, minutes)
    end_s = minutes * 60.0 + 1800.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        net_xml = write_sumo_net(
            cross(minor), work / "cross.net.xml", ("--no-internal-links", "true")
        )
        rou_xml = write_routes(trips, BENCH_VTYPES, work / "t.rou.xml")
        cfg = write_sumocfg(net_xml, rou_xml, work / "cross.sumocfg")
        network = read_sumo_net(net_xml)
        sim = NetSim(network, trips, vtypes=BENCH_VTYPES, dt_s=DT_S, record_every_s=RECORD_S)
        res = sim.run(end_s)
        ours = convoy_trip_times(sim, [res])
        trip_xml, fcd_xml = work / "tripinfo.xml", work / "fcd.xml"
        run = run_sumo_net(
            cfg,
            end_s,
            [
                "--tripinfo-output",
                str(trip_xml),
                "--tripinfo-output.write-unfinished",
                "true",
                "--fcd-output",
                str(fcd_xml),
                "--device.fcd.period",
                repr(RECORD_S),
            ],
        )
        theirs = sumo_trip_times(trip_xml, list(ours.vehicle_ids))
        edges = EdgeTable.build(network, res.edge_ids)
        junctions = {
            "convoy": _convoy_junction(sim, res, edges),
            "SUMO": _sumo_junction(fcd_xml, trip_xml, edges, sim),
        }
    both = ours.finished() & theirs.finished()
    tt_c, tt_s = ours.travel_s(), theirs.travel_s()
    move = np.array([v.split(".")[0] for v in ours.vehicle_ids])
    rows = []
    for m in sorted(set(move.tolist())):
        k = both & (move == m)
        turn = TURN.get((m[0], m[1])) or _turn(m)
        rows.append(
            Movement(m, turn, int(k.sum()), float(np.mean(tt_c[k])), float(np.mean(tt_s[k])))
        )
    counts = {
        "trips": len(trips),
        "finished_convoy": int(ours.finished().sum()),
        "finished_sumo": int(theirs.finished().sum()),
        "collisions_convoy": int(res.collisions),
        "collisions_sumo": int(run.collisions),
    }
    return rows, counts, junctions


def _convoy_junction(sim: NetSim, res: NetResult, edges: EdgeTable) -> Junction:
    fcd = res.fcd
    stood = np.bincount(fcd["vehicle"][fcd["speed_mps"] <= 0.1].astype(np.int64), minlength=sim.n)
    return _junction(trajectories(sim, res), edges, stood * RECORD_S)


def _sumo_junction(fcd_xml: Path, trip_xml: Path, edges: EdgeTable, sim: NetSim) -> Junction:
    row = {v: k for k, v in enumerate(sim.vehicle_ids)}
    edge_at = {e: k for k, e in enumerate(edges.ids)}
    veh, t, e, p = [], [], [], []
    for ts in ET.parse(fcd_xml).getroot().iter("timestep"):
        now = float(ts.get("time", "0"))
        for v in ts.iter("vehicle"):
            veh.append(row[v.get("id", "")])
            t.append(now)
            e.append(edge_at[v.get("lane", "").rsplit("_", 1)[0]])
            p.append(float(v.get("pos", "0")))
    tr = Trajectories(
        vehicle=np.array(veh, dtype=np.int64),
        time_s=np.array(t),
        edge=np.array(e, dtype=np.int64),
        pos_m=np.array(p),
        length_m=sim.vehicle_length_m,
        group=np.zeros(sim.n, dtype=np.int64),
    )
    stood = np.zeros(sim.n)
    for ti in ET.parse(trip_xml).getroot().iter("tripinfo"):
        stood[row[ti.get("id", "")]] = float(ti.get("waitingTime", "0"))
    return _junction(tr, edges, stood)


def _junction(tr: Trajectories, edges: EdgeTable, stood_s: np.ndarray) -> Junction:
    _, _, pet = post_encroachment(node_crossings(tr, edges), edges)
    return Junction(pet, float(stood_s.max(initial=0.0)), int((stood_s >= JAM_S).sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minor", default="", help="arms (of w, e, s, n) that are tertiary")
    ap.add_argument("--headway", type=float, default=40.0, help="s between trucks per movement")
    ap.add_argument("--minutes", type=float, default=20.0, help="minutes of departures")
    args = ap.parse_args()
    if not set(args.minor) <= set(ARMS):
        ap.error(f"--minor {args.minor!r}: arms are {', '.join(ARMS)}")
    if not (args.headway > 0.0 and args.minutes > 0.0):
        ap.error(f"--headway {args.headway:g}, --minutes {args.minutes:g}: both must be > 0")
    rows, counts, junctions = compare(args.minor, args.headway, args.minutes)
    print(f"cross, minor arms {args.minor or '-'}, a truck every {args.headway:g} s per movement")
    print(f"{'move':>5} {'turn':>5} {'trips':>6} {'convoy s':>9} {'SUMO s':>8} {'diff':>7}")
    for r in rows:
        print(
            f"{r.move:>5} {r.turn:>5} {r.trips:>6} {r.convoy_s:>9.1f} {r.sumo_s:>8.1f} "
            f"{r.convoy_s / r.sumo_s - 1:>+7.1%}"
        )
    n = sum(r.trips for r in rows)
    c = sum(r.convoy_s * r.trips for r in rows) / n
    s = sum(r.sumo_s * r.trips for r in rows) / n
    print(f"{'all':>5} {'':>5} {n:>6} {c:>9.1f} {s:>8.1f} {c / s - 1:>+7.1%}")
    print(
        f"finished: convoy {counts['finished_convoy']}, SUMO {counts['finished_sumo']} of "
        f"{counts['trips']}; collisions: convoy {counts['collisions_convoy']}, "
        f"SUMO {counts['collisions_sumo']}"
    )
    print(f"conflicts in the node (PET <= {PET_WINDOW_S:g} s, records every {RECORD_S:g} s):")
    for name, j in junctions.items():
        low = f"min {j.pet_s.min():.2f} s" if j.pet_s.size else "none"
        print(
            f"  {name:>6}: {j.pet_s.size:4d} pairs, {low}, {int((j.pet_s < 1.0).sum())} under "
            f"1 s, {int((j.pet_s <= 0.0).sum())} at once; longest stand {j.max_wait_s:.0f} s, "
            f"{j.jammed} trips stood >= {JAM_S:g} s"
        )


def _turn(move: str) -> str:
    """'l' or 'r' for a movement between perpendicular arms (right-hand traffic)."""
    order = "wsen"  # counter-clockwise from the west: a right turn goes to the next arm
    a, b = order.index(move[0]), order.index(move[1])
    return "r" if (b - a) % 4 == 1 else "l"


if __name__ == "__main__":
    main()
