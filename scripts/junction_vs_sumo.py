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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convoy.road.network import Edge, Node, RoadClass, RoadNetwork
from convoy.road.sumo_net import read_sumo_net, write_sumo_net
from convoy.sim.bench_network import (
    BENCH_VTYPES,
    _run,
    convoy_sim,
    convoy_trip_times,
    run_sumo_net,
    sumo_trip_times,
    write_routes,
    write_sumocfg,
)
from convoy.sim.network import Leg, Trip

ARMS = {"w": (109.0, 39.0), "e": (109.02, 39.0), "s": (109.01, 38.99), "n": (109.012, 39.01)}
TURN = {("w", "e"): "s", ("e", "w"): "s", ("s", "n"): "s", ("n", "s"): "s"}


def cross(minor: str) -> RoadNetwork:
    nodes = [Node("j", 109.01, 39.0), *(Node(a, *xy) for a, xy in ARMS.items())]
    edges = [
        Edge(
            f"{a}{b}",
            a,
            b,
            1000.0,
            speed_limit_mps=20.0,
            road_class=RoadClass.TERTIARY if x in minor else RoadClass.PRIMARY,
        )
        for x in ARMS
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


def compare(minor: str, headway_s: float, minutes: float) -> tuple[list[Movement], dict[str, int]]:
    """Both engines on the cross to completion: per movement, and the counts (trips, finished
    on each side, collisions on each side)."""
    trips = demand(headway_s, minutes)
    end_s = minutes * 60.0 + 1800.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        net_xml = write_sumo_net(
            cross(minor), work / "cross.net.xml", ("--no-internal-links", "true")
        )
        rou_xml = write_routes(trips, BENCH_VTYPES, work / "t.rou.xml")
        cfg = write_sumocfg(net_xml, rou_xml, work / "cross.sumocfg")
        sim = convoy_sim(read_sumo_net(net_xml), trips)
        res = _run(sim, end_s)
        ours = convoy_trip_times(sim, [res])
        trip_xml = work / "tripinfo.xml"
        run = run_sumo_net(
            cfg,
            end_s,
            ["--tripinfo-output", str(trip_xml), "--tripinfo-output.write-unfinished", "true"],
        )
        theirs = sumo_trip_times(trip_xml, list(ours.vehicle_ids))
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
    return rows, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minor", default="", help="arms (of w, e, s, n) that are tertiary")
    ap.add_argument("--headway", type=float, default=40.0, help="s between trucks per movement")
    ap.add_argument("--minutes", type=float, default=20.0, help="minutes of departures")
    args = ap.parse_args()
    rows, counts = compare(args.minor, args.headway, args.minutes)
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


def _turn(move: str) -> str:
    """'l' or 'r' for a movement between perpendicular arms (right-hand traffic)."""
    order = "wsen"  # counter-clockwise from the west: a right turn goes to the next arm
    a, b = order.index(move[0]), order.index(move[1])
    return "r" if (b - a) % 4 == 1 else "l"


if __name__ == "__main__":
    main()
