"""``convoy bench network``: the network engine and SUMO run the same network and demand.

**The network** is a ring of corridors: ``K`` nodes on a circle, consecutive nodes joined by
one edge per direction of ``EDGE_M`` (3 km), ``lanes`` lanes each, 25 m/s. It is written
as a SUMO ``.net.xml`` with :func:`~convoy.road.sumo_net.write_sumo_net` (``netconvert``,
without internal junction lanes, so a route is exactly as long on both sides) and read
back with :func:`~convoy.road.sumo_net.read_sumo_net`: both engines run the imported
network. ``K`` grows with the fleet so that a lane holds one truck per
``LANE_SPACING_M`` when the whole fleet is on the one-lane ring (free flow, not a jam).
Every route runs straight along the ring; at each node the two directions only pass
each other (no crossing or merging movements, where the two engines' junction rules
differ most).

**The demand** is one list of trucks, written as a SUMO ``.rou.xml`` and read back for the
convoy side: each truck starts at the beginning of a random edge, in a random direction,
drives ``route_edges`` edges and leaves; departures are uniform over the first
``depart_window_s``. Two truck types, both IDM (``carFollowModel="IDM"`` in SUMO, with the
same length, minGap, accel, decel, emergencyDecel, tau, delta and maxSpeed): the empty
truck (``TRUCK_HUMAN``, 25 m/s) and the loaded one held to 20 m/s, a share
``slow_share`` of the fleet, so fast trucks catch slow ones and, with two lanes,
overtake them (MOBIL in convoy, LC2013 in SUMO). SUMO inserts on the first lane at the
highest safe speed (``departLane="first" departSpeed="max"``), as convoy does; its
``departPos="base"`` puts the front bumper 16.5 m into the edge where convoy puts it at
0 (SUMO's trip is 16.5 m, about 0.7 s, shorter). Teleporting is off in SUMO.

**What is measured**, per side:

* steady state, vehicle-steps/s: the same run timed to two end times ``t1`` (when every
  truck has had its departure time) and ``t2 = t1 + WINDOW_S``; the vehicle-steps
  between them over the difference of the wall times. Routes are long enough that no
  truck arrives before ``t2``, so the whole fleet is on the road in the window. Convoy's
  runs are timed around :meth:`NetSim.run` after a warm-up that compiles (or loads) the
  kernel; SUMO's are whole ``sumo`` processes, loading included in both, so it cancels.
* vehicle-steps: every step a vehicle spends on the road counts, from departure to
  arrival. Convoy's come from its depart/arrive events; SUMO's from a tripinfo pass
  (``--tripinfo-output``) outside the timed runs. The timed SUMO run to ``t2`` must
  report as many vehicles running as the tripinfo pass has on the road at ``t2``.
* end to end: a fresh process that reads the ``.net.xml`` and ``.rou.xml`` and runs to
  ``t2`` (``python`` importing convoy with a warm Numba cache, or ``sumo``).
* agreement: the same demand run to completion on both sides (untimed); mean travel time
  of the trips both finish, departure delays, lane changes.
* memory: the engine's per-vehicle arrays (``NetSim.state`` and the per-vehicle scratch),
  their ``nbytes`` summed over the vehicles. Route tables (the demand) are reported apart.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
from rich.console import Console
from rich.table import Table

from convoy.road.network import EARTH_RADIUS_M, Edge, Node, RoadNetwork
from convoy.road.sumo_net import read_sumo_net, write_sumo_net
from convoy.sim import net_kernel as nk
from convoy.sim.bench import bench_progress, sumo_available
from convoy.sim.network import TRUCK_HUMAN, Leg, NetResult, NetSim, Trip, VehicleType
from convoy.sim.sumo_peer import sumo_binary

DT_S = 0.1
#: Edge length [m]: "a few km per edge" (the issue).
EDGE_M = 3_000.0
#: Speed limit [m/s]: 90 km/h; the empty truck's top speed, so it is the one that binds.
SPEED_LIMIT_MPS = 25.0
#: Lane length per truck with the whole fleet on the one-lane ring [m]: 4 trucks/km/lane,
#: free flow (an IDM truck at 25 m/s keeps 2.5 + 25·1.5 = 40 m, 56.5 m front to front).
LANE_SPACING_M = 250.0
#: Fewest nodes on the ring.
MIN_NODES = 4
#: Departures are uniform over this window [s]; it is also ``t1``.
DEPART_WINDOW_S = 300.0
#: The timed window after ``t1`` [s].
WINDOW_S = 300.0
#: Route length in edges (inclusive bounds): 6 edges = 18 km take at least 720 s at 25 m/s,
#: so no truck that leaves at t = 0 arrives before t1 + WINDOW_S = 600 s.
ROUTE_EDGES = (6, 12)
#: Share of loaded trucks, held to LOADED_SPEED_MPS (an engineering choice: enough slow
#: trucks that fast ones catch them every few km).
SLOW_SHARE = 0.3
#: A loaded truck's top speed [m/s] (72 km/h).
LOADED_SPEED_MPS = 20.0
#: The largest fleet the bench builds: the ring grows with the fleet (one truck per 250 m of
#: lane), and at 1,000,000 trucks it is 84,000 edges whose .net.xml netconvert writes and
#: SUMO loads; beyond that the files, not the engines, are what would be measured.
MAX_BENCH_TRUCKS = 1_000_000
#: Run-to-completion passes stop here at the latest [s past the last departure, per edge].
COMPLETION_S_PER_EDGE = 600.0
#: Steady-state timings, convoy's and SUMO's alike: best of this many runs to each end time.
REPEATS = 2
#: SUMO's default random seed (``--seed``); the demand uses its own.
SEED = 0

#: The empty truck: the human-driven IDM truck of the network engine.
TRUCK_EMPTY = TRUCK_HUMAN
#: The loaded truck: the same, held to 72 km/h.
TRUCK_LOADED = dataclasses.replace(TRUCK_HUMAN, name="truck-loaded", max_speed_mps=LOADED_SPEED_MPS)
BENCH_VTYPES: tuple[VehicleType, ...] = (TRUCK_EMPTY, TRUCK_LOADED)

_E2E = """
import sys
from convoy.sim.bench_network import run_convoy_files
run_convoy_files(sys.argv[1], sys.argv[2], float(sys.argv[3]))
"""


class NetBenchError(ValueError):
    """Bad input to the network bench; the message names the field, value and what is allowed."""


@dataclass(frozen=True, slots=True)
class RingSpec:
    """The ring of corridors.

    Attributes:
        nodes: nodes on the ring (edges: two per node, one per direction).
        lanes: lanes per direction.
        edge_m: edge length [m].
        speed_limit_mps: speed limit of every edge [m/s].
    """

    nodes: int
    lanes: int = 1
    edge_m: float = EDGE_M
    speed_limit_mps: float = SPEED_LIMIT_MPS

    def check(self) -> None:
        """Raise :class:`NetBenchError` naming the first field out of range."""
        if self.nodes < 3:
            raise NetBenchError(f"ring nodes = {self.nodes}; must be >= 3")
        if self.lanes < 1:
            raise NetBenchError(f"ring lanes = {self.lanes}; must be >= 1")
        if not (self.edge_m > 0 and self.speed_limit_mps > 0):
            raise NetBenchError(
                f"ring edge_m = {self.edge_m}, speed_limit_mps = {self.speed_limit_mps}; "
                "both must be > 0"
            )


@dataclass(frozen=True, slots=True)
class DemandSpec:
    """The trucks.

    Attributes:
        trucks: fleet size.
        depart_window_s: departures are uniform over ``[0, depart_window_s)`` [s].
        route_edges: (fewest, most) edges per route, inclusive.
        slow_share: share of loaded (slow) trucks.
        seed: seed of the demand's random draws.
    """

    trucks: int
    depart_window_s: float = DEPART_WINDOW_S
    route_edges: tuple[int, int] = ROUTE_EDGES
    slow_share: float = SLOW_SHARE
    seed: int = SEED

    def check(self) -> None:
        """Raise :class:`NetBenchError` naming the first field out of range."""
        if self.trucks < 1:
            raise NetBenchError(f"trucks = {self.trucks}; must be >= 1")
        if not self.depart_window_s > 0:
            raise NetBenchError(f"depart_window_s = {self.depart_window_s}; must be > 0")
        lo, hi = self.route_edges
        if not 1 <= lo <= hi:
            raise NetBenchError(f"route_edges = {self.route_edges}; need 1 <= fewest <= most")
        if not 0.0 <= self.slow_share <= 1.0:
            raise NetBenchError(f"slow_share = {self.slow_share}; allowed: 0 <= share <= 1")


@dataclass(frozen=True, slots=True)
class NetBenchCase:
    """One network and demand, on disk for SUMO and read back for convoy.

    Attributes:
        ring, demand: what was built.
        network: the network as read back from ``net_xml``.
        trips: the trucks as read back from ``rou_xml``, in departure order.
        net_xml, rou_xml, sumocfg: SUMO's files.
    """

    ring: RingSpec
    demand: DemandSpec
    network: RoadNetwork
    trips: tuple[Trip, ...]
    net_xml: Path
    rou_xml: Path
    sumocfg: Path

    @property
    def t1_s(self) -> float:
        """Start of the timed window [s]."""
        return self.demand.depart_window_s

    @property
    def t2_s(self) -> float:
        """End of the timed window [s]."""
        return self.demand.depart_window_s + WINDOW_S

    @property
    def completion_s(self) -> float:
        """Latest end of a run to completion [s]."""
        return self.demand.depart_window_s + COMPLETION_S_PER_EDGE * self.demand.route_edges[1]


@dataclass(frozen=True, slots=True)
class TripTimes:
    """When each vehicle was on the road.

    Attributes:
        vehicle_ids: (n,) ids.
        depart_s: (n,) time it entered the road [s], NaN if it never did.
        arrival_s: (n,) time it left at its destination [s], +inf if it had not.
    """

    vehicle_ids: tuple[str, ...]
    depart_s: np.ndarray
    arrival_s: np.ndarray

    def on_road(self, t_s: float) -> int:
        """Vehicles on the road at ``t_s``."""
        with np.errstate(invalid="ignore"):
            return int(np.sum((self.depart_s <= t_s) & (self.arrival_s > t_s)))

    def vehicle_steps(self, t1_s: float, t2_s: float, dt_s: float = DT_S) -> int:
        """Vehicle-steps in ``[t1_s, t2_s)``: the steps each vehicle spent on the road."""
        a = np.where(np.isnan(self.depart_s), np.inf, self.depart_s)
        lo = np.maximum(a, t1_s)
        hi = np.minimum(self.arrival_s, t2_s)
        return round(float(np.sum(np.maximum(hi - lo, 0.0))) / dt_s)

    def finished(self) -> np.ndarray:
        """(n,) bool: the trip ended at its destination."""
        return np.isfinite(self.arrival_s) & np.isfinite(self.depart_s)

    def travel_s(self) -> np.ndarray:
        """(n,) arrival - departure [s] (inf or NaN for unfinished trips)."""
        return self.arrival_s - self.depart_s


@dataclass(frozen=True, slots=True)
class SumoNetRun:
    """What one ``sumo`` process reported.

    Attributes:
        wall_s: wall time of the process [s].
        inserted, running, waiting: vehicle counts at its end (-1 if not reported).
        collisions, teleports: counts from SUMO's statistics (0 if not reported).
    """

    wall_s: float
    inserted: int
    running: int
    waiting: int
    collisions: int
    teleports: int


# --- the network and the demand ------------------------------------------------------------


def ring_nodes_for(trucks: int, lanes_for_spacing: int = 1) -> int:
    """Nodes of a ring that holds ``trucks`` at ``LANE_SPACING_M`` per truck on one lane."""
    lane_m = trucks * LANE_SPACING_M / lanes_for_spacing
    return max(MIN_NODES, math.ceil(lane_m / (2.0 * EDGE_M)))


def forward_edge(k: int) -> str:
    """Edge from node ``k`` to node ``k + 1`` (mod the node count)."""
    return f"f{k}"


def backward_edge(k: int) -> str:
    """Edge from node ``k + 1`` (mod the node count) to node ``k``."""
    return f"b{k}"


def ring_network(
    ring: RingSpec, origin_lon_lat: tuple[float, float] = (109.0, 39.6)
) -> RoadNetwork:
    """The ring as a convoy network: nodes on a circle of circumference ``nodes * edge_m``.

    ``origin_lon_lat`` is the circle's centre (default near Ordos; the place only sets the
    UTM zone netconvert projects to).
    """
    ring.check()
    k_n = ring.nodes
    radius_m = k_n * ring.edge_m / (2.0 * math.pi)
    lon0, lat0 = origin_lon_lat
    m_per_deg_lat = math.radians(1.0) * EARTH_RADIUS_M
    m_per_deg_lon = m_per_deg_lat * math.cos(math.radians(lat0))
    nodes = []
    for k in range(k_n):
        angle = 2.0 * math.pi * k / k_n
        nodes.append(
            Node(
                f"n{k}",
                lon0 + radius_m * math.cos(angle) / m_per_deg_lon,
                lat0 + radius_m * math.sin(angle) / m_per_deg_lat,
            )
        )
    edges = []
    for k in range(k_n):
        a, b = f"n{k}", f"n{(k + 1) % k_n}"
        for eid, u, v in ((forward_edge(k), a, b), (backward_edge(k), b, a)):
            edges.append(
                Edge(eid, u, v, ring.edge_m, lanes=ring.lanes, speed_limit_mps=ring.speed_limit_mps)
            )
    return RoadNetwork.build(nodes, edges, name=f"ring{k_n}x{ring.lanes}")


def ring_demand(nodes: int, demand: DemandSpec) -> list[Trip]:
    """The trucks, in departure order (ties by id), ids ``t00000``...

    Each starts at a random node in a random direction, drives a random number of edges in
    ``demand.route_edges`` and leaves; a share ``slow_share`` is loaded (slow).
    """
    demand.check()
    n = demand.trucks
    rng = np.random.default_rng(demand.seed)
    start = rng.integers(0, nodes, n)
    forward = rng.random(n) < 0.5
    lo, hi = demand.route_edges
    hops = rng.integers(lo, hi + 1, n)
    # departure times on the step grid, so both engines insert at the same instant
    depart = np.round(rng.uniform(0.0, demand.depart_window_s, n) / DT_S) * DT_S
    slow = rng.random(n) < demand.slow_share
    order = np.argsort(depart, kind="stable")
    trips = []
    for rank, i in enumerate(order):
        s = int(start[i])
        if forward[i]:
            route = tuple(forward_edge((s + j) % nodes) for j in range(int(hops[i])))
        else:
            route = tuple(backward_edge((s - 1 - j) % nodes) for j in range(int(hops[i])))
        vtype = TRUCK_LOADED.name if slow[i] else TRUCK_EMPTY.name
        trips.append(Trip(f"t{rank:05d}", vtype, (Leg(route),), round(float(depart[i]), 1)))
    return trips


def _vtype_xml(t: VehicleType) -> str:
    if t.model != "idm":
        raise NetBenchError(f"vehicle type {t.name!r}: model = {t.model!r}; the bench uses idm")
    attrs = {
        "id": t.name,
        "vClass": "truck" if t.is_truck else "passenger",
        "length": t.length_m,
        "minGap": t.min_gap_m,
        "accel": t.accel_mps2,
        "decel": t.decel_mps2,
        "emergencyDecel": t.emergency_decel_mps2,
        "maxSpeed": t.max_speed_mps,
        "tau": t.time_gap_s,
        "delta": t.idm_delta,
        "speedFactor": t.speed_factor,
        # SUMO draws a speed factor per vehicle unless told not to; convoy does not
        "speedDev": 0.0,
        "carFollowModel": "IDM",
        "laneChangeModel": "LC2013",
    }
    return "    <vType " + " ".join(f"{k}={quoteattr(_fmt(v))}" for k, v in attrs.items()) + "/>"


def _fmt(v: object) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def write_routes(trips: Sequence[Trip], vtypes: Sequence[VehicleType], path: Path) -> Path:
    """The trucks as a SUMO ``.rou.xml`` (one-leg trips that leave the network)."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<routes>"]
    lines += [_vtype_xml(t) for t in vtypes]
    last = -math.inf
    for tr in trips:
        if len(tr.legs) != 1 or tr.legs[0].site is not None or tr.legs[0].dwell_s:
            raise NetBenchError(f"trip {tr.vehicle_id!r}: the bench writes one-leg trips only")
        if tr.depart_s < last:
            raise NetBenchError(f"trip {tr.vehicle_id!r}: trips must be in departure order")
        last = tr.depart_s
        lines.append(
            f"    <vehicle id={quoteattr(tr.vehicle_id)} type={quoteattr(tr.vtype)} "
            f'depart="{tr.depart_s:.1f}" departLane="first" departPos="base" departSpeed="max">'
        )
        lines.append(f'        <route edges="{" ".join(tr.legs[0].route)}"/>')
        lines.append("    </vehicle>")
    lines.append("</routes>")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_routes(path: Path, vtypes: Sequence[VehicleType] = BENCH_VTYPES) -> list[Trip]:
    """Convoy trips from a ``.rou.xml`` written by :func:`write_routes`.

    Raises:
        NetBenchError: a vehicle of a type not in ``vtypes`` or without an inline route.
    """
    known = {t.name for t in vtypes}
    trips = []
    for v in ET.parse(path).getroot().iter("vehicle"):
        vid, vtype = v.get("id", ""), v.get("type", "")
        if vtype not in known:
            raise NetBenchError(
                f"{path}: vehicle {vid!r}: type = {vtype!r}; allowed: {sorted(known)}"
            )
        route = v.find("route")
        if route is None or not route.get("edges"):
            raise NetBenchError(f"{path}: vehicle {vid!r} has no inline <route edges=...>")
        edges = tuple(route.get("edges", "").split())
        trips.append(Trip(vid, vtype, (Leg(edges),), float(v.get("depart", "0"))))
    return trips


def write_sumocfg(net_xml: Path, rou_xml: Path, path: Path) -> Path:
    """A ``.sumocfg``: 0.1 s steps, no teleporting, collisions remove (as in convoy)."""
    path.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<configuration>
    <input>
        <net-file value="{net_xml.name}"/>
        <route-files value="{rou_xml.name}"/>
    </input>
    <time>
        <begin value="0"/>
        <step-length value="{DT_S}"/>
    </time>
    <processing>
        <time-to-teleport value="-1"/>
        <collision.action value="remove"/>
    </processing>
    <report>
        <no-step-log value="true"/>
        <no-warnings value="true"/>
    </report>
</configuration>
""",
        encoding="utf-8",
    )
    return path


def prepare_case(ring: RingSpec, demand: DemandSpec, workdir: Path) -> NetBenchCase:
    """Write the network (through netconvert) and the demand for SUMO; read both back."""
    workdir.mkdir(parents=True, exist_ok=True)
    net_xml = workdir / "ring.net.xml"
    # no internal junction lanes: a route is the sum of its edges on both sides
    write_sumo_net(ring_network(ring), net_xml, extra_options=("--no-internal-links", "true"))
    network = read_sumo_net(net_xml)
    rou_xml = write_routes(
        ring_demand(ring.nodes, demand), BENCH_VTYPES, workdir / "trucks.rou.xml"
    )
    trips = tuple(read_routes(rou_xml))
    cfg = write_sumocfg(net_xml, rou_xml, workdir / "ring.sumocfg")
    return NetBenchCase(ring, demand, network, trips, net_xml, rou_xml, cfg)


# --- convoy side -----------------------------------------------------------------------------


def convoy_sim(network: RoadNetwork, trips: Sequence[Trip]) -> NetSim:
    """The network engine on the bench's network and trucks (outputs kept to a minimum)."""
    return NetSim(network, trips, vtypes=BENCH_VTYPES, dt_s=DT_S, record_every_s=1.0e7)


def _run(sim: NetSim, until_s: float) -> NetResult:
    # a small FCD buffer: nothing is recorded, and 2e6 rows would be allocated per call
    return sim.run(until_s, fcd_rows=sim.n + 1)


def run_convoy_files(net_xml: str | Path, rou_xml: str | Path, end_s: float) -> NetResult:
    """Read the SUMO files and run the network engine to ``end_s`` (the end-to-end run)."""
    sim = convoy_sim(read_sumo_net(Path(net_xml)), read_routes(Path(rou_xml)))
    return _run(sim, end_s)


def convoy_trip_times(sim: NetSim, results: Sequence[NetResult]) -> TripTimes:
    """Departure and arrival times from the events of one or more runs of ``sim``.

    A vehicle that departs in step k is on the road from ``k·dt``; one that arrives in step
    k leaves at ``(k + 1)·dt``, the end of the step in which it passed its route's end.
    """
    row = {v: k for k, v in enumerate(sim.vehicle_ids)}
    n = sim.n
    dep = np.full(n, np.nan)
    arr = np.full(n, np.inf)
    for res in results:
        for ev in res.events:
            t = float(ev["time_s"])  # type: ignore[arg-type]
            k = row[str(ev["vehicle_id"])]
            if ev["kind"] == "depart":
                dep[k] = t
            elif ev["kind"] == "arrive-site":
                arr[k] = round(t + sim.dt_s, 6)
    return TripTimes(tuple(sim.vehicle_ids), dep, arr)


#: NetSim's route and leg tables: the demand (one row per route edge or leg), not state.
_DEMAND_TABLES = ("_route_edges", "_leg_lo", "_leg_hi", "_leg_dwell", "_leg_site")


def engine_bytes(sim: NetSim) -> dict[str, int]:
    """``nbytes`` of each per-vehicle array of the engine: ``NetSim.state`` and every other
    array attribute with one row per vehicle (the kernel's per-vehicle scratch), less the
    demand tables (which have one row per vehicle when every trip has one leg)."""
    out = {f"state.{k}": int(v.nbytes) for k, v in sim.state.items()}
    state_ids = {id(v) for v in sim.state.values()}
    for name, v in vars(sim).items():
        if name in _DEMAND_TABLES or id(v) in state_ids:
            continue
        if isinstance(v, np.ndarray) and v.shape[:1] == (sim.n,):
            out[name] = int(v.nbytes)
    return out


def demand_bytes(sim: NetSim) -> int:
    """``nbytes`` of the route and leg tables (the demand, not the engine state)."""
    return sum(int(getattr(sim, k).nbytes) for k in _DEMAND_TABLES if hasattr(sim, k))


def convoy_steady(
    case: NetBenchCase, repeats: int = REPEATS
) -> tuple[float, float, TripTimes, nk.StepChooser, int]:
    """Wall seconds inside :meth:`NetSim.run` to ``t1`` and to ``t2`` (best of ``repeats``
    each, the engine built outside the timing), the trip times of the run to ``t2``, the
    step chooser of the best of those runs (which variant ran, and what each measured) and
    the threads of the variant that ran most steps from t1 to t2 in that run (a run to t2
    stops at t1 once, inside its timing, to count them)."""
    warm = convoy_sim(case.network, case.trips[:1])
    _run(warm, 2 * DT_S)  # compile, or load the cache
    walls = []
    times = None
    chooser = nk.StepChooser()
    threads = 1
    for end_s in (case.t1_s, case.t2_s):
        best = math.inf
        for _ in range(repeats):
            sim = convoy_sim(case.network, case.trips)
            start = time.perf_counter()
            parts = [_run(sim, case.t1_s)] if end_s > case.t1_s else []
            at_t1 = dict(sim._chooser.steps_run)
            parts.append(_run(sim, end_s))
            wall = time.perf_counter() - start
            if wall < best:
                best = wall
                chooser = sim._chooser
                threads = chooser.threads_used(since=at_t1)
            times = convoy_trip_times(sim, parts)
        walls.append(best)
    assert times is not None
    return walls[0], walls[1], times, chooser, threads


def convoy_to_completion(case: NetBenchCase) -> tuple[NetSim, TripTimes, int]:
    """The demand run until every truck has left (or ``completion_s``); the engine, its trip
    times and its collision count."""
    sim = convoy_sim(case.network, case.trips)
    results = []
    t = 0.0
    while t < case.completion_s:
        t = min(case.completion_s, t + 600.0)
        results.append(_run(sim, t))
        if np.all(sim.state["status"] >= nk.ST_DONE):
            break
    return sim, convoy_trip_times(sim, results), sum(r.collisions for r in results)


def convoy_end_to_end(case: NetBenchCase, repeats: int = REPEATS) -> float:
    """Wall time of a fresh ``python`` that reads the files and runs to ``t2`` [s]: the
    fastest of ``repeats`` (SUMO's end-to-end figure is its fastest timed run to ``t2``)."""
    cmd = [sys.executable, "-c", _E2E, str(case.net_xml), str(case.rou_xml), repr(case.t2_s)]
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        best = min(best, time.perf_counter() - start)
    return best


# --- SUMO side -------------------------------------------------------------------------------


def _count(pattern: str, text: str, default: int) -> int:
    m = re.search(pattern + r":\s*(\d+)", text)
    return int(m.group(1)) if m else default


def run_sumo_net(cfg: Path, end_s: float, extra_args: Sequence[str] = ()) -> SumoNetRun:
    """Run ``sumo -c cfg`` to ``end_s`` with its end-of-run statistics."""
    cmd = [
        sumo_binary("sumo"),
        "-c",
        str(cfg),
        "--end",
        repr(float(end_s)),
        "--duration-log.disable",
        "false",
        "--duration-log.statistics",
        "true",
        *extra_args,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    text = proc.stdout + proc.stderr
    return SumoNetRun(
        wall_s=wall_s,
        inserted=_count("Inserted", text, -1),
        running=_count("Running", text, -1),
        waiting=_count("Waiting", text, -1),
        collisions=_count("Collisions", text, 0),
        teleports=_count("Teleports", text, 0),
    )


def sumo_steady(
    case: NetBenchCase, on_road_t2: int, repeats: int = REPEATS
) -> tuple[SumoNetRun, SumoNetRun, list[list[float]]]:
    """SUMO's timed runs to ``t1`` and to ``t2``: the fastest of ``repeats`` each (as convoy's
    side, ``convoy_steady``, so that a stall of the host hurts neither side alone), and every
    run's wall seconds, by end time.

    Raises:
        RuntimeError: a run to ``t2`` that does not report ``on_road_t2`` vehicles running
            (the number the untimed tripinfo pass has on the road then): the vehicle-steps
            counted from that pass would not describe the timed run.
    """
    to_t1 = [run_sumo_net(case.sumocfg, case.t1_s) for _ in range(repeats)]
    to_t2 = [run_sumo_net(case.sumocfg, case.t2_s) for _ in range(repeats)]
    for run in to_t2:
        if run.running != on_road_t2:
            raise RuntimeError(
                f"SUMO's timed run to {case.t2_s:g} s reports {run.running} vehicles running "
                f"but its tripinfo pass has {on_road_t2} on the road then; the counts of "
                "vehicle-steps would not describe the timed run"
            )
    fastest = min(to_t1, key=lambda r: r.wall_s), min(to_t2, key=lambda r: r.wall_s)
    return *fastest, [[r.wall_s for r in runs] for runs in (to_t1, to_t2)]


def sumo_trip_times(tripinfo_xml: Path, vehicle_ids: Sequence[str]) -> TripTimes:
    """Departure and arrival times from SUMO's tripinfo output (``write-unfinished``)."""
    row = {v: k for k, v in enumerate(vehicle_ids)}
    dep = np.full(len(vehicle_ids), np.nan)
    arr = np.full(len(vehicle_ids), np.inf)
    for ti in ET.parse(tripinfo_xml).getroot().iter("tripinfo"):
        k = row[ti.get("id", "")]
        d = float(ti.get("depart", "-1"))
        a = float(ti.get("arrival", "-1"))
        if d >= 0:
            dep[k] = d
        if a >= 0 and ti.get("vaporized", "") == "":
            arr[k] = a
    return TripTimes(tuple(vehicle_ids), dep, arr)


def sumo_to_completion(case: NetBenchCase, workdir: Path) -> tuple[TripTimes, int, SumoNetRun]:
    """The demand run in SUMO to ``completion_s`` with tripinfo and lane-change outputs
    (untimed); its trip times, lane changes and statistics."""
    trip_xml = workdir / "tripinfo.xml"
    lc_xml = workdir / "lanechanges.xml"
    run = run_sumo_net(
        case.sumocfg,
        case.completion_s,
        [
            "--tripinfo-output",
            str(trip_xml),
            "--tripinfo-output.write-unfinished",
            "true",
            "--lanechange-output",
            str(lc_xml),
        ],
    )
    changes = sum(1 for _ in ET.parse(lc_xml).getroot().iter("change"))
    return sumo_trip_times(trip_xml, [t.vehicle_id for t in case.trips]), changes, run


# --- both --------------------------------------------------------------------------------------


def agreement(ours: TripTimes, theirs: TripTimes, planned_s: np.ndarray) -> dict[str, float]:
    """Mean travel time over the trips both sides finished, and mean departure delays.

    Args:
        ours, theirs: convoy's and SUMO's trip times (the same vehicles in the same order).
        planned_s: (n,) planned departure times [s].
    """
    both = ours.finished() & theirs.finished()
    tt_c = float(np.mean(ours.travel_s()[both])) if both.any() else math.nan
    tt_s = float(np.mean(theirs.travel_s()[both])) if both.any() else math.nan
    return {
        "finished_convoy": int(ours.finished().sum()),
        "finished_sumo": int(theirs.finished().sum()),
        "finished_both": int(both.sum()),
        "mean_travel_s_convoy": tt_c,
        "mean_travel_s_sumo": tt_s,
        "travel_diff": tt_c / tt_s - 1.0 if tt_s > 0 else math.nan,
        "depart_delay_s_convoy": float(np.nanmean(ours.depart_s - planned_s)),
        "depart_delay_s_sumo": float(np.nanmean(theirs.depart_s - planned_s)),
    }


#: ``disturbed``: how far the timed runs' ns per vehicle-step may stray from the step's own
#: timer (``StepChooser``) before the figure is flagged. On the 2-vCPU hosts the two agreed
#: within 10 % in quiet runs; one run (docs/benchmarks.md, session 15) gave 10.8 ns against
#: the timer's 15.0, its short run to t1 slowed down in both tries.
DISTURBED_SHARE = 0.25


def _step_timer_ns(chooser: nk.StepChooser) -> float | None:
    """What the step chooser last measured of the variant that ran most steps of the timed
    run [ns per vehicle-step]; None where that variant is not timed (a quiet road's)."""
    if not chooser.steps_run:
        return None
    most = max(chooser.steps_run, key=lambda k: chooser.steps_run[k])
    return chooser.ns_per_vehicle_step.get(most)


def disturbed(row: Mapping[str, Any]) -> str | None:
    """A line saying that a row's steady figure disagrees with the step's own timer by more
    than ``DISTURBED_SHARE`` (the host's speed moved during a timed run), else None."""
    timer = row.get("convoy_step_ns")
    rate = row.get("convoy_steady_vsps")
    if not timer or not rate:
        return None
    window = 1e9 / rate
    if abs(window / timer - 1.0) <= DISTURBED_SHARE:
        return None
    return (
        f"{row['trucks']:,} trucks, {row['lanes']} lane(s): the timed runs give {window:.1f} ns "
        f"per vehicle-step and the step's own timer {timer:.1f}; a timed run was disturbed "
        "(the host's speed moved), so this row's steady figure and ratio are not reliable: "
        "run it again"
    )


def _bench_one(
    trucks: int, lanes: int, sumo: bool, workdir: Path, step: Callable[[str], None]
) -> dict[str, Any]:
    name = f"{trucks:,} trucks, {lanes} lane{'s' if lanes > 1 else ''}"
    ring = RingSpec(nodes=ring_nodes_for(trucks), lanes=lanes)
    case = prepare_case(ring, DemandSpec(trucks=trucks), workdir / f"net-{trucks}-{lanes}")
    planned = np.array([t.depart_s for t in case.trips])
    row: dict[str, Any] = {
        "trucks": trucks,
        "lanes": lanes,
        "nodes": ring.nodes,
        "edges": len(case.network.edges),
        "lane_km": ring.nodes * 2 * lanes * ring.edge_m / 1000.0,
        "dt_s": DT_S,
        "t1_s": case.t1_s,
        "t2_s": case.t2_s,
        "load_avg_1min": os.getloadavg()[0],
    }

    step(f"{name}: convoy steady state")
    w1, w2, times, chooser, threads = convoy_steady(case)
    vs = times.vehicle_steps(case.t1_s, case.t2_s)
    rate = vs / max(w2 - w1, 1e-9)
    row |= {
        # the engine steps on one thread while few vehicles are on the road, and where its
        # chooser found the threaded step slower on this machine: the variant that ran most
        # steps between t1 and t2 (the steady window)
        "threads": threads,
        "chooser_ns_per_vehicle_step": dict(chooser.ns_per_vehicle_step),
        "convoy_wall_s": [w1, w2],
        "convoy_vehicle_steps": vs,
        "convoy_on_road_t1": times.on_road(case.t1_s),
        "convoy_on_road_t2": times.on_road(case.t2_s),
        "convoy_steady_vsps": rate,
        "convoy_step_ns": _step_timer_ns(chooser),
    }
    step(f"{name}: convoy to completion")
    sim, done_c, collisions = convoy_to_completion(case)
    eb = engine_bytes(sim)
    row |= {
        "convoy_collisions": collisions,
        "convoy_lane_changes": int(sim.state["lane_changes"].sum()),
        "engine_bytes_per_truck": sum(eb.values()) / sim.n,
        "engine_bytes": eb,
        "demand_bytes_per_truck": demand_bytes(sim) / sim.n,
    }
    step(f"{name}: convoy end to end")
    row["convoy_e2e_s"] = convoy_end_to_end(case)
    if not sumo:
        return row

    step(f"{name}: SUMO to completion (tripinfo)")
    done_s, sumo_changes, full = sumo_to_completion(case, case.sumocfg.parent)
    step(f"{name}: SUMO to {case.t1_s:g} s and to {case.t2_s:g} s, best of {REPEATS} each")
    short, long, sumo_walls = sumo_steady(case, done_s.on_road(case.t2_s))
    vs_s = done_s.vehicle_steps(case.t1_s, case.t2_s)
    sumo_rate = vs_s / max(long.wall_s - short.wall_s, 1e-9)
    row |= {
        "sumo_wall_s": [short.wall_s, long.wall_s],
        "sumo_walls_s": sumo_walls,
        "sumo_vehicle_steps": vs_s,
        "sumo_on_road_t1": done_s.on_road(case.t1_s),
        "sumo_on_road_t2": done_s.on_road(case.t2_s),
        "sumo_steady_vsps": sumo_rate,
        "sumo_e2e_s": long.wall_s,
        "sumo_collisions": full.collisions,
        "sumo_teleports": full.teleports,
        "sumo_lane_changes": sumo_changes,
        "steady_ratio": rate / sumo_rate,
        "e2e_ratio": long.wall_s / row["convoy_e2e_s"],
    }
    row |= agreement(done_c, done_s, planned)
    return row


def _sci(x: float) -> str:
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _tables(rows: list[dict[str, Any]]) -> tuple[Table, Table]:
    speed = Table(
        title="convoy network engine vs SUMO: ring of 3 km corridors, IDM trucks, 0.1 s step",
        caption=(
            "steady: vehicle-steps/s between t1 and t2, start-up excluded; e2e: wall s of a "
            "fresh process reading the .net.xml/.rou.xml and running to t2; ratio: convoy's "
            "advantage (targets: 100× with 1 lane, 50× with 2 lanes)"
        ),
    )
    for name in (
        "trucks",
        "lanes",
        "convoy\nthreads",
        "convoy\nsteady",
        "SUMO\nsteady",
        "ratio",
        "convoy\ne2e s",
        "SUMO\ne2e s",
        "ratio",
        "bytes/\ntruck",
    ):
        speed.add_column(name, justify="right", no_wrap=True)
    agree = Table(
        title="agreement: the same demand run to completion on both sides",
        caption="travel time: mean over the trips both finished; lane changes: totals",
    )
    for name in (
        "trucks",
        "lanes",
        "finished\nconvoy/SUMO",
        "travel s\nconvoy",
        "travel s\nSUMO",
        "diff",
        "depart delay s\nconvoy/SUMO",
        "lane changes\nconvoy/SUMO",
        "collisions\nconvoy/SUMO",
    ):
        agree.add_column(name, justify="right", no_wrap=True)

    def cell(r: dict[str, Any], key: str, fmt: Callable[[Any], str]) -> str:
        return fmt(r[key]) if r.get(key) is not None else "-"

    for r in rows:
        speed.add_row(
            f"{r['trucks']:,}",
            str(r["lanes"]),
            str(r["threads"]),
            cell(r, "convoy_steady_vsps", _sci),
            cell(r, "sumo_steady_vsps", _sci),
            cell(r, "steady_ratio", lambda x: f"{x:.1f}×"),
            cell(r, "convoy_e2e_s", lambda x: f"{x:.2f}"),
            cell(r, "sumo_e2e_s", lambda x: f"{x:.2f}"),
            cell(r, "e2e_ratio", lambda x: f"{x:.1f}×"),
            cell(r, "engine_bytes_per_truck", lambda x: f"{x:.0f}"),
        )
        if "sumo_steady_vsps" not in r:
            continue
        agree.add_row(
            f"{r['trucks']:,}",
            str(r["lanes"]),
            f"{r['finished_convoy']:,}/{r['finished_sumo']:,}",
            f"{r['mean_travel_s_convoy']:.1f}",
            f"{r['mean_travel_s_sumo']:.1f}",
            f"{100.0 * r['travel_diff']:+.1f} %",
            f"{r['depart_delay_s_convoy']:.1f}/{r['depart_delay_s_sumo']:.1f}",
            f"{r['convoy_lane_changes']:,}/{r['sumo_lane_changes']:,}",
            f"{r['convoy_collisions']}/{r['sumo_collisions']}",
        )
    return speed, agree


def bench_network(
    sizes: Sequence[int], lanes: Sequence[int], sumo: bool, console: Console
) -> list[dict[str, Any]]:
    """Run the ring at each fleet size and lane count in convoy and (unless ``sumo`` is
    False) SUMO; print the speed and agreement tables.

    Returns:
        One dict per (size, lanes): ``trucks``, ``lanes``, ``nodes``, ``edges``,
        ``lane_km``, ``t1_s``, ``t2_s``, ``load_avg_1min``, ``threads`` (those of the
        variant that ran most steps between t1 and t2 in the fastest timed run to t2:
        ``StepChooser.threads_used``),
        ``chooser_ns_per_vehicle_step`` (what the chooser last measured of each variant);
        ``convoy_wall_s`` (to t1, t2), ``convoy_vehicle_steps``, ``convoy_on_road_t1/t2``,
        ``convoy_steady_vsps``, ``convoy_step_ns`` (the step's own timer, for ``disturbed``),
        ``convoy_e2e_s``, ``convoy_collisions``,
        ``convoy_lane_changes``, ``engine_bytes_per_truck``, ``engine_bytes`` (per array),
        ``demand_bytes_per_truck``; with SUMO also ``sumo_wall_s`` (the fastest run to t1,
        to t2), ``sumo_walls_s`` (every timed run, by end time), ``sumo_vehicle_steps``,
        ``sumo_on_road_t1/t2``, ``sumo_steady_vsps``, ``sumo_e2e_s``, ``sumo_collisions``,
        ``sumo_teleports``, ``sumo_lane_changes``, ``steady_ratio``, ``e2e_ratio`` and the
        agreement figures of :func:`agreement`.

    Raises:
        NetBenchError: a size outside 1..``MAX_BENCH_TRUCKS`` or a lane count outside 1..4.
    """
    for s in sizes:
        if not 1 <= s <= MAX_BENCH_TRUCKS:
            raise NetBenchError(f"trucks = {s:,}; allowed: 1 to {MAX_BENCH_TRUCKS:,}")
    for ln in lanes:
        if not 1 <= ln <= 4:
            raise NetBenchError(f"lanes = {ln}; allowed: 1 to 4")
    sumo = sumo and sumo_available(console)
    phases = 6 if sumo else 3
    rows: list[dict[str, Any]] = []
    progress = bench_progress(console)
    with progress, tempfile.TemporaryDirectory(prefix="convoy_bench_net_") as tmp:
        task = progress.add_task("network bench", total=len(sizes) * len(lanes) * phases)
        started = 0

        def step(what: str) -> None:
            nonlocal started
            progress.update(task, description=what, completed=started)
            started += 1

        for ln in lanes:
            for trucks in sizes:
                rows.append(_bench_one(trucks, ln, sumo, Path(tmp), step))
        progress.update(task, completed=started)
    speed, agree = _tables(rows)
    console.print(speed)
    for r in rows:
        line = disturbed(r)
        if line is not None:
            console.print(f"[yellow]note:[/yellow] {line}")
    if sumo:
        console.print(agree)
    return rows
