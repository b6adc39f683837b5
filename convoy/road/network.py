"""The road network: typed objects at the edges, arrays for the engine.

A ``RoadNetwork`` is a directed graph of ``Node`` junctions and ``Edge`` road links, with
``Site`` places (mines, power plants, stations, hubs, towns) attached to nodes.  It is
built once (from the shipped Ordos data, a SUMO ``.net.xml`` or an OSM file) and then
converted once into ``NetworkArrays`` for the engine: edge tables and a CSR successor
list.

Conventions: lengths in metres along the road; ``geometry`` as (lon, lat) WGS84 pairs;
``elevation_m`` sampled at ``stations_m`` (distance from the edge start), so the grade
profile is piecewise linear and ``grade = d(elevation)/d(station)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean Earth radius


class JunctionType(StrEnum):
    """How a junction resolves right of way."""

    PRIORITY = "priority"
    TRAFFIC_SIGNAL = "traffic_signal"
    ROUNDABOUT = "roundabout"
    DEAD_END = "dead_end"


class RoadClass(StrEnum):
    """Road classes, in the order routing prefers them (China's GB 5768 naming in brackets)."""

    MOTORWAY = "motorway"  # expressway (高速公路), G/S-numbered
    TRUNK = "trunk"  # national road (国道)
    PRIMARY = "primary"  # provincial road (省道)
    SECONDARY = "secondary"  # county road (县道)
    TERTIARY = "tertiary"
    SERVICE = "service"  # mine haul roads, site access


class SiteKind(StrEnum):
    """What a site is for."""

    TOWN = "town"
    COAL_MINE = "coal_mine"
    POWER_PLANT = "power_plant"
    CHEMICAL_PARK = "chemical_park"
    RAIL_LOADING = "rail_loading"
    CHARGING_STATION = "charging_station"
    SWAP_STATION = "swap_station"
    PLATOON_HUB = "platoon_hub"


@dataclass(frozen=True, slots=True)
class SignalPhase:
    """One phase of a fixed-time plan: the incoming edges that have green, for how long."""

    duration_s: float
    green_edges: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SignalPlan:
    """A fixed-time signal plan; the cycle is the sum of the phase durations."""

    phases: tuple[SignalPhase, ...]
    offset_s: float = 0.0

    @property
    def cycle_s(self) -> float:
        """Cycle length [s]."""
        return sum(p.duration_s for p in self.phases)

    def green_at(self, edge_id: str, t_s: float) -> bool:
        """Whether ``edge_id`` has green at time ``t_s``."""
        cycle = self.cycle_s
        if cycle <= 0:
            return True
        tau = (t_s + self.offset_s) % cycle
        for ph in self.phases:
            if tau < ph.duration_s:
                return edge_id in ph.green_edges
            tau -= ph.duration_s
        return edge_id in self.phases[-1].green_edges


@dataclass(frozen=True, slots=True)
class Node:
    """A junction.

    Attributes:
        id: unique id.
        lon, lat: WGS84 degrees.
        elevation_m: height above sea level [m].
        junction: right-of-way type.
        signal: the fixed-time plan where ``junction`` is a traffic signal.
    """

    id: str
    lon: float
    lat: float
    elevation_m: float = 0.0
    junction: JunctionType = JunctionType.PRIORITY
    signal: SignalPlan | None = None


@dataclass(frozen=True, slots=True)
class Edge:
    """A directed road link.

    Attributes:
        id: unique id.
        from_node, to_node: node ids.
        length_m: length along the road [m].
        lanes: lane count in this direction.
        speed_limit_mps: legal speed limit [m/s].
        road_class: see ``RoadClass``.
        geometry: (lon, lat) polyline from ``from_node`` to ``to_node``.
        stations_m: distances from the edge start where the elevation is sampled [m],
            increasing, starting at 0 and ending at ``length_m``.
        elevation_m: elevation at ``stations_m`` [m].
        max_weight_t: gross weight limit [t], ``None`` if none.
        name: road name (e.g. "G65").
    """

    id: str
    from_node: str
    to_node: str
    length_m: float
    lanes: int = 1
    speed_limit_mps: float = 22.2
    road_class: RoadClass = RoadClass.PRIMARY
    geometry: tuple[tuple[float, float], ...] = ()
    stations_m: tuple[float, ...] = ()
    elevation_m: tuple[float, ...] = ()
    max_weight_t: float | None = None
    name: str = ""

    def grades(self) -> np.ndarray:
        """Grade of each segment of the elevation profile (rise/run), (k-1,)."""
        if len(self.stations_m) < 2:
            return np.zeros(1)
        s = np.asarray(self.stations_m)
        z = np.asarray(self.elevation_m)
        return np.diff(z) / np.maximum(np.diff(s), 1e-9)

    def mean_grade(self) -> float:
        """End-to-end grade (rise/run)."""
        if len(self.elevation_m) < 2 or self.length_m <= 0:
            return 0.0
        return (self.elevation_m[-1] - self.elevation_m[0]) / self.length_m


@dataclass(frozen=True, slots=True)
class Site:
    """A place trucks go to, attached to a node.

    Attributes:
        id: unique id.
        kind: see ``SiteKind``.
        name_en, name_zh: English and Chinese names.
        node: the node trucks use to reach it.
        lon, lat: WGS84 degrees of the place itself.
        capacity: kind-specific capacity (Mt/yr for mines, MW for plants, posts or bays
            for stations, loading bays for rail stations), ``None`` if unknown.
        source: where the facts come from.
        confidence: the source note's confidence code ([V], [S], [S-est]).
    """

    id: str
    kind: SiteKind
    name_en: str
    name_zh: str
    node: str
    lon: float
    lat: float
    capacity: float | None = None
    source: str = ""
    confidence: str = ""


@dataclass(frozen=True, slots=True)
class RoadsideUnit:
    """A roadside unit (RSU) on an edge.

    Attributes:
        id: unique id.
        edge: the edge it stands beside.
        offset_m: distance from the edge start [m].
        lon, lat: WGS84 degrees.
        radius_m: coverage radius [m]; C-V2X PC5 roadside units reach ~300-1,000 m
            (5GAA, "C-V2X Use Cases", 2020: 300 m typical for RSU broadcast).
    """

    id: str
    edge: str
    offset_m: float
    lon: float
    lat: float
    radius_m: float = 500.0


@dataclass(frozen=True, slots=True)
class NetworkArrays:
    """The network as arrays for the engine, one row per node or edge.

    Attributes:
        node_ids: (V,) ids in row order.
        edge_ids: (E,) ids in row order.
        edge_from, edge_to: (E,) int32 node rows.
        edge_length_m: (E,) float64.
        edge_lanes: (E,) int32.
        edge_speed_mps: (E,) float64 speed limit.
        edge_grade: (E,) float64 mean grade (rise/run).
        edge_class: (E,) int8 index into ``list(RoadClass)``.
        succ_ptr: (V+1,) int32 CSR row pointers: the edges leaving node v are
            ``succ_edge[succ_ptr[v]:succ_ptr[v+1]]``.
        succ_edge: (E,) int32 edge rows.
        node_lon, node_lat, node_elevation_m: (V,) float64.
    """

    node_ids: tuple[str, ...]
    edge_ids: tuple[str, ...]
    edge_from: np.ndarray
    edge_to: np.ndarray
    edge_length_m: np.ndarray
    edge_lanes: np.ndarray
    edge_speed_mps: np.ndarray
    edge_grade: np.ndarray
    edge_class: np.ndarray
    succ_ptr: np.ndarray
    succ_edge: np.ndarray
    node_lon: np.ndarray
    node_lat: np.ndarray
    node_elevation_m: np.ndarray


class NetworkError(ValueError):
    """A network that is not consistent; the message names the element and the problem."""


@dataclass(frozen=True)
class RoadNetwork:
    """A directed road network with sites.

    Build it with ``RoadNetwork.build(nodes, edges, sites)``, which checks consistency.
    """

    nodes: Mapping[str, Node]
    edges: Mapping[str, Edge]
    sites: Mapping[str, Site] = field(default_factory=dict)
    rsus: Mapping[str, RoadsideUnit] = field(default_factory=dict)
    name: str = "network"

    @staticmethod
    def build(
        nodes: Iterable[Node],
        edges: Iterable[Edge],
        sites: Iterable[Site] = (),
        name: str = "network",
        rsus: Iterable[RoadsideUnit] = (),
    ) -> RoadNetwork:
        """Index the elements by id and check them.

        Raises:
            NetworkError: duplicate ids, edges, sites or RSUs naming unknown elements, non-positive
                lengths or lane counts, or an elevation profile that does not match.
        """
        node_map: dict[str, Node] = {}
        for n in nodes:
            if n.id in node_map:
                raise NetworkError(f"node {n.id!r} is defined twice")
            node_map[n.id] = n
        edge_map: dict[str, Edge] = {}
        for e in edges:
            if e.id in edge_map:
                raise NetworkError(f"edge {e.id!r} is defined twice")
            for end in (e.from_node, e.to_node):
                if end not in node_map:
                    raise NetworkError(f"edge {e.id!r} names unknown node {end!r}")
            if not e.length_m > 0:
                raise NetworkError(f"edge {e.id!r}: length_m = {e.length_m}; must be > 0")
            if e.lanes < 1:
                raise NetworkError(f"edge {e.id!r}: lanes = {e.lanes}; must be >= 1")
            if len(e.stations_m) != len(e.elevation_m):
                raise NetworkError(
                    f"edge {e.id!r}: {len(e.stations_m)} stations but "
                    f"{len(e.elevation_m)} elevations"
                )
            edge_map[e.id] = e
        site_map: dict[str, Site] = {}
        for s in sites:
            if s.id in site_map:
                raise NetworkError(f"site {s.id!r} is defined twice")
            if s.node not in node_map:
                raise NetworkError(f"site {s.id!r} names unknown node {s.node!r}")
            site_map[s.id] = s
        rsu_map: dict[str, RoadsideUnit] = {}
        for r in rsus:
            if r.id in rsu_map:
                raise NetworkError(f"RSU {r.id!r} is defined twice")
            if r.edge not in edge_map:
                raise NetworkError(f"RSU {r.id!r} names unknown edge {r.edge!r}")
            if not 0 <= r.offset_m <= edge_map[r.edge].length_m:
                raise NetworkError(
                    f"RSU {r.id!r}: offset_m = {r.offset_m}; must lie on edge {r.edge!r} "
                    f"(0..{edge_map[r.edge].length_m})"
                )
            rsu_map[r.id] = r
        return RoadNetwork(nodes=node_map, edges=edge_map, sites=site_map, rsus=rsu_map, name=name)

    def out_edges(self, node_id: str) -> list[Edge]:
        """Edges leaving ``node_id``."""
        return [e for e in self.edges.values() if e.from_node == node_id]

    def total_length_km(self) -> float:
        """Sum of edge lengths [km] (each direction counted)."""
        return sum(e.length_m for e in self.edges.values()) / 1000.0

    def to_arrays(self) -> NetworkArrays:
        """Edge tables and a CSR successor list, built once for the engine."""
        node_ids = tuple(self.nodes)
        edge_ids = tuple(self.edges)
        row = {nid: k for k, nid in enumerate(node_ids)}
        classes = list(RoadClass)
        es = [self.edges[e] for e in edge_ids]
        edge_from = np.array([row[e.from_node] for e in es], dtype=np.int32)
        succ_ptr, order = edges_by_node(edge_from, len(node_ids))
        return NetworkArrays(
            node_ids=node_ids,
            edge_ids=edge_ids,
            edge_from=edge_from,
            edge_to=np.array([row[e.to_node] for e in es], dtype=np.int32),
            edge_length_m=np.array([e.length_m for e in es], dtype=np.float64),
            edge_lanes=np.array([e.lanes for e in es], dtype=np.int32),
            edge_speed_mps=np.array([e.speed_limit_mps for e in es], dtype=np.float64),
            edge_grade=np.array([e.mean_grade() for e in es], dtype=np.float64),
            edge_class=np.array([classes.index(e.road_class) for e in es], dtype=np.int8),
            succ_ptr=succ_ptr,
            succ_edge=order,
            node_lon=np.array([self.nodes[n].lon for n in node_ids], dtype=np.float64),
            node_lat=np.array([self.nodes[n].lat for n in node_ids], dtype=np.float64),
            node_elevation_m=np.array(
                [self.nodes[n].elevation_m for n in node_ids], dtype=np.float64
            ),
        )


def edges_by_node(node_of_edge: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """The edges grouped by a node of theirs (their start node: each node's outgoing edges;
    their end node: its incoming ones) as CSR: node v's are ``edges[ptr[v]:ptr[v + 1]]``,
    in edge order. Returns ``(ptr, edges)``, both int32."""
    edges = np.argsort(node_of_edge, kind="stable").astype(np.int32)
    ptr = np.zeros(n_nodes + 1, dtype=np.int32)
    np.cumsum(np.bincount(node_of_edge, minlength=n_nodes), out=ptr[1:])
    return ptr, edges


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance between two WGS84 points [m]."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def polyline_length_m(points: Iterable[tuple[float, float]]) -> float:
    """Length of a (lon, lat) polyline along great circles [m]."""
    pts = list(points)
    return sum(haversine_m(a[0], a[1], b[0], b[1]) for a, b in itertools.pairwise(pts))
