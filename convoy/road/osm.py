"""OpenStreetMap XML file → convoy ``RoadNetwork``, parsed with the standard library.

The file is read with ``xml.etree.ElementTree.iterparse`` rather than osmnx or pyrosm: a
local ``.osm`` file needs no network access, and the few tags a truck network uses (highway,
oneway, lanes, maxspeed, maxweight, ele, ref, name) do not justify geopandas, shapely and
their native libraries. PBF files are not read; convert them with ``osmium cat in.pbf -o
out.osm`` first.

Rules (OSM wiki, "Key:highway", "Key:oneway", "Key:lanes", "Key:maxspeed", "Key:maxweight"):

- Every ``highway=*`` way a truck may drive becomes edges; footways, cycleways, paths, steps,
  construction and the like are skipped, as are ways with ``hgv=no`` or ``access=no`` (unless
  ``hgv`` allows trucks).
- A way is split at every node it shares with another kept way, at its ends, at signals, and
  where the file lacks a node it references. Intermediate nodes become the edge geometry.
- Both directions unless one way: ``oneway=yes|true|1`` (forward), ``oneway=-1|reverse``
  (backward); ``highway=motorway`` and ``junction=roundabout`` imply ``oneway=yes``.
- Edge ids follow SUMO's OSM import (``netconvert --osm-files``): ``"<way>"`` forward and
  ``"-<way>"`` backward, or ``"<way>#<k>"`` / ``"-<way>#<k>"`` when the way is split, ``k``
  counting its pieces from 0.
- ``lanes`` counts both directions on a two-way road (half each, at least one) unless
  ``lanes:forward``/``lanes:backward`` say otherwise; missing tags take the class defaults below.
- ``maxspeed`` (km/h unless ``mph`` or ``knots``; the lowest of ``a;b`` lists) and
  ``maxspeed:hgv``: the lower applies, since convoy moves trucks. ``maxweight`` and
  ``maxweight:hgv`` (t unless ``kg``, ``st``, ``lbs``): the lower becomes ``max_weight_t``.
- Lengths are great-circle polyline lengths (``polyline_length_m``). Nodes with an ``ele``
  tag set node elevations; an edge gets an elevation profile at its geometry nodes when all
  of them have ``ele``, else from its two end nodes when both have it.
- Junctions: ``highway=traffic_signals`` nodes are signals (no timing plan: OSM has none),
  nodes on ``junction=roundabout`` ways roundabouts, nodes with a single neighbour dead ends.
"""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from convoy.road.network import (
    Edge,
    JunctionType,
    NetworkError,
    Node,
    RoadClass,
    RoadNetwork,
    haversine_m,
    polyline_length_m,
)

# highway=* values trucks drive, and the road class each becomes (OSM wiki "Key:highway";
# China's tagging guideline maps G-expressways to motorway, national roads to trunk,
# provincial to primary, county to secondary).
HIGHWAY_CLASS: Mapping[str, RoadClass] = {
    "motorway": RoadClass.MOTORWAY,
    "motorway_link": RoadClass.MOTORWAY,
    "trunk": RoadClass.TRUNK,
    "trunk_link": RoadClass.TRUNK,
    "primary": RoadClass.PRIMARY,
    "primary_link": RoadClass.PRIMARY,
    "secondary": RoadClass.SECONDARY,
    "secondary_link": RoadClass.SECONDARY,
    "tertiary": RoadClass.TERTIARY,
    "tertiary_link": RoadClass.TERTIARY,
    "unclassified": RoadClass.TERTIARY,
    "residential": RoadClass.TERTIARY,
    "living_street": RoadClass.TERTIARY,
    "road": RoadClass.TERTIARY,
    "service": RoadClass.SERVICE,
    "track": RoadClass.SERVICE,
}

# Speed limit [km/h] where a way has no usable maxspeed tag. China's Road Traffic Safety Law
# Implementing Regulations (道路交通安全法实施条例, 2004): art. 78, expressways at most 120 km/h;
# art. 45, unsigned roads 40 km/h (公路, no centre line) or 70 km/h (公路, one motor lane per
# direction), 30 km/h on urban roads without a centre line. Ordos freight roads are rural 公路.
DEFAULT_SPEED_KMH: Mapping[str, float] = {
    "motorway": 120.0,  # art. 78
    "trunk": 80.0,  # estimate: divided first-class highways are usually signed 80-100 km/h
    "primary": 70.0,  # art. 45, one lane per direction
    "secondary": 70.0,  # art. 45
    "tertiary": 70.0,  # art. 45
    "unclassified": 40.0,  # art. 45, no centre line
    "road": 40.0,  # art. 45, no centre line
    "residential": 30.0,  # art. 45, urban, no centre line
    "living_street": 30.0,  # art. 45, urban, no centre line
    "service": 40.0,  # art. 45, no centre line
    "track": 40.0,  # art. 45, no centre line
}
# Ramps (*_link): estimate, low end of the ramp speeds signed on Chinese interchanges.
DEFAULT_LINK_SPEED_KMH = 40.0

# Lanes per direction where a way has no lanes tag: JTG B01-2014 (公路工程技术标准) requires
# expressways (and first-class highways) to have four or more lanes, two per direction; other
# roads are taken as one lane per direction.
DEFAULT_LANES_PER_DIRECTION: Mapping[str, int] = {"motorway": 2}

_ONEWAY_FORWARD = frozenset({"yes", "true", "1"})
_ONEWAY_BACKWARD = frozenset({"-1", "reverse"})
_TRUCKS_ALLOWED = frozenset({"yes", "designated", "destination", "delivery", "permissive"})
_KMH_PER_UNIT = {"": 1.0, "km/h": 1.0, "kmh": 1.0, "kph": 1.0, "mph": 1.609344, "knots": 1.852}
# OSM wiki "Key:maxweight": tonnes by default; short tons and pounds as written.
_T_PER_UNIT = {"": 1.0, "t": 1.0, "kg": 1e-3, "st": 0.90718474, "lbs": 0.45359237e-3}
_NUMBER_UNIT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z/]*)\s*")
_ELEVATION = re.compile(r"\s*(-?[0-9]+(?:\.[0-9]+)?)\s*(m)?\s*")


def parse_speed_mps(value: str | None) -> float | None:
    """A ``maxspeed`` value in m/s, or ``None`` where it gives no number (``none``, ``walk``).

    ``"80"`` and ``"80 km/h"`` are km/h; ``"50 mph"`` and ``"10 knots"`` are converted;
    ``"60;80"`` takes the lower.
    """
    if value is None:
        return None
    speeds = []
    for part in value.lower().split(";"):
        m = _NUMBER_UNIT.fullmatch(part)
        if m and m.group(2) in _KMH_PER_UNIT and float(m.group(1)) > 0:
            speeds.append(float(m.group(1)) * _KMH_PER_UNIT[m.group(2)] / 3.6)
    return min(speeds) if speeds else None


def parse_weight_t(value: str | None) -> float | None:
    """A ``maxweight`` value in tonnes, or ``None`` where it gives no number."""
    if value is None:
        return None
    m = _NUMBER_UNIT.fullmatch(value.lower())
    if not m or m.group(2) not in _T_PER_UNIT or not float(m.group(1)) > 0:
        return None
    return float(m.group(1)) * _T_PER_UNIT[m.group(2)]


def _parse_float(value: str | None) -> float | None:
    if value is None:
        return None
    m = _ELEVATION.fullmatch(value.lower())
    return float(m.group(1)) if m else None


def _parse_lanes(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit() or int(value) < 1:
        return None
    return int(value)


def _min_of(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


@dataclass(frozen=True, slots=True)
class _OsmNode:
    lon: float
    lat: float
    ele_m: float | None
    signal: bool


@dataclass(frozen=True, slots=True)
class _OsmWay:
    id: str
    refs: tuple[str, ...]
    tags: Mapping[str, str]


def _truck_way(tags: Mapping[str, str]) -> bool:
    highway = tags.get("highway")
    if highway not in HIGHWAY_CLASS:
        return False
    hgv = tags.get("hgv")
    if hgv == "no":
        return False
    return not (tags.get("access") == "no" and hgv not in _TRUCKS_ALLOWED)


def _read_elements(path: Path) -> tuple[dict[str, _OsmNode], list[_OsmWay]]:
    nodes: dict[str, _OsmNode] = {}
    ways: list[_OsmWay] = []
    root_seen = False
    try:
        for event, elem in ET.iterparse(path, events=("start", "end")):
            if event == "start":
                if not root_seen:
                    root_seen = True
                    if elem.tag != "osm":
                        raise NetworkError(
                            f"OSM file {str(path)!r}: root element is <{elem.tag}>; "
                            "expected <osm> (OSM XML; convert .pbf with osmium first)"
                        )
                continue
            if elem.tag == "node":
                tags = {t.get("k"): t.get("v") for t in elem.iter("tag")}
                try:
                    lon, lat = float(elem.attrib["lon"]), float(elem.attrib["lat"])
                except (KeyError, ValueError):
                    raise NetworkError(
                        f"OSM file {str(path)!r}: node {elem.get('id')!r} lacks numeric "
                        "lon/lat attributes"
                    ) from None
                nodes[elem.attrib["id"]] = _OsmNode(
                    lon=lon,
                    lat=lat,
                    ele_m=_parse_float(tags.get("ele")),
                    signal=tags.get("highway") == "traffic_signals",
                )
                elem.clear()
            elif elem.tag == "way":
                way_tags = {str(t.get("k")): str(t.get("v")) for t in elem.iter("tag")}
                if _truck_way(way_tags):
                    refs = tuple(str(nd.get("ref")) for nd in elem.iter("nd"))
                    ways.append(_OsmWay(elem.attrib["id"], refs, way_tags))
                elem.clear()
            elif elem.tag == "relation":
                elem.clear()
    except ET.ParseError as exc:
        raise NetworkError(f"OSM file {str(path)!r} is not well-formed XML: {exc}") from None
    return nodes, ways


def _directions(tags: Mapping[str, str]) -> tuple[bool, bool]:
    oneway = tags.get("oneway", "").lower()
    if oneway in _ONEWAY_FORWARD:
        return True, False
    if oneway in _ONEWAY_BACKWARD:
        return False, True
    if oneway == "no":
        return True, True
    implied = tags.get("highway") == "motorway" or tags.get("junction") == "roundabout"
    return True, not implied


def _lanes(tags: Mapping[str, str], forward: bool, backward: bool) -> tuple[int, int]:
    """Lanes in the forward and backward direction."""
    highway = tags["highway"]
    default = DEFAULT_LANES_PER_DIRECTION.get(highway, 1)
    total = _parse_lanes(tags.get("lanes"))
    fwd = _parse_lanes(tags.get("lanes:forward"))
    bwd = _parse_lanes(tags.get("lanes:backward"))
    if not (forward and backward):
        n = total or (fwd if forward else bwd) or default
        return n, n
    if total is not None:
        if fwd is None and bwd is not None and total > bwd:
            fwd = total - bwd
        if bwd is None and fwd is not None and total > fwd:
            bwd = total - fwd
        half = max(1, total // 2)
        return fwd or half, bwd or half
    return fwd or default, bwd or default


def _speed_mps(tags: Mapping[str, str], direction: str) -> float:
    highway = tags["highway"]
    tagged = _min_of(
        parse_speed_mps(tags.get(f"maxspeed:{direction}") or tags.get("maxspeed")),
        parse_speed_mps(tags.get(f"maxspeed:hgv:{direction}") or tags.get("maxspeed:hgv")),
    )
    if tagged is not None:
        return tagged
    if highway.endswith("_link"):
        return DEFAULT_LINK_SPEED_KMH / 3.6
    return DEFAULT_SPEED_KMH[highway] / 3.6


def _profile(
    points: list[_OsmNode], length_m: float
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Stations and elevations at the geometry nodes, or the end nodes, or none."""
    if all(p.ele_m is not None for p in points):
        stations = [0.0]
        for a, b in itertools.pairwise(points):
            stations.append(stations[-1] + haversine_m(a.lon, a.lat, b.lon, b.lat))
        return tuple(stations), tuple(float(p.ele_m or 0.0) for p in points)
    first, last = points[0].ele_m, points[-1].ele_m
    if first is not None and last is not None:
        return (0.0, length_m), (first, last)
    return (), ()


def read_osm(path: str | Path, name: str | None = None) -> RoadNetwork:
    """Read an OpenStreetMap XML file into a road network (no download).

    Args:
        path: ``.osm`` XML file.
        name: network name; default the file name without extensions.

    Returns:
        The network; node ids are OSM node ids, edge ids as SUMO names them (see above).

    Raises:
        NetworkError: missing or malformed file, or no drivable ``highway=*`` way in it.
    """
    path = Path(path)
    if not path.is_file():
        raise NetworkError(f"OSM file {str(path)!r} does not exist")
    osm_nodes, ways = _read_elements(path)
    # Split points: way ends, shared or repeated nodes, signals.
    uses: dict[str, int] = {}
    for w in ways:
        for ref in w.refs:
            uses[ref] = uses.get(ref, 0) + 1
    split = {ref for ref, n in uses.items() if n > 1}
    split |= {ref for ref in uses if ref in osm_nodes and osm_nodes[ref].signal}
    pieces: list[tuple[_OsmWay, int, list[str]]] = []
    for w in ways:
        k = 0
        run: list[str] = []
        for nid in (*w.refs, None):
            if nid is None or nid not in osm_nodes:
                # The way ends, or the file is clipped here: close the piece.
                if len(run) >= 2:
                    pieces.append((w, k, run))
                    k += 1
                run = []
                continue
            run.append(nid)
            if nid in split and len(run) >= 2:
                pieces.append((w, k, run))
                k += 1
                run = [nid]
    n_pieces: dict[str, int] = {}
    for w, _, _ in pieces:
        n_pieces[w.id] = n_pieces.get(w.id, 0) + 1
    edges: list[Edge] = []
    roundabout: set[str] = set()
    for w, k, refs in pieces:
        base = w.id if n_pieces[w.id] == 1 else f"{w.id}#{k}"
        points = [osm_nodes[r] for r in refs]
        geometry = tuple((p.lon, p.lat) for p in points)
        length_m = polyline_length_m(geometry)
        if not length_m > 0:
            continue
        forward, backward = _directions(w.tags)
        lanes_fwd, lanes_bwd = _lanes(w.tags, forward, backward)
        road_class = HIGHWAY_CLASS[w.tags["highway"]]
        max_weight_t = _min_of(
            parse_weight_t(w.tags.get("maxweight")), parse_weight_t(w.tags.get("maxweight:hgv"))
        )
        road_name = w.tags.get("ref") or w.tags.get("name") or ""
        stations, elevation = _profile(points, length_m)
        if w.tags.get("junction") == "roundabout":
            roundabout.update((refs[0], refs[-1]))
        if forward:
            edges.append(
                Edge(
                    id=base,
                    from_node=refs[0],
                    to_node=refs[-1],
                    length_m=length_m,
                    lanes=lanes_fwd,
                    speed_limit_mps=_speed_mps(w.tags, "forward"),
                    road_class=road_class,
                    geometry=geometry,
                    stations_m=stations,
                    elevation_m=elevation,
                    max_weight_t=max_weight_t,
                    name=road_name,
                )
            )
        if backward:
            edges.append(
                Edge(
                    id=f"-{base}",
                    from_node=refs[-1],
                    to_node=refs[0],
                    length_m=length_m,
                    lanes=lanes_bwd,
                    speed_limit_mps=_speed_mps(w.tags, "backward"),
                    road_class=road_class,
                    geometry=geometry[::-1],
                    stations_m=tuple(stations[-1] - s for s in reversed(stations)),
                    elevation_m=elevation[::-1],
                    max_weight_t=max_weight_t,
                    name=road_name,
                )
            )
    if not edges:
        raise NetworkError(f"OSM file {str(path)!r} has no drivable highway=* way")
    neighbours: dict[str, set[str]] = {}
    for e in edges:
        neighbours.setdefault(e.from_node, set()).add(e.to_node)
        neighbours.setdefault(e.to_node, set()).add(e.from_node)
    nodes = []
    for nid in neighbours:
        p = osm_nodes[nid]
        if p.signal:
            junction = JunctionType.TRAFFIC_SIGNAL
        elif nid in roundabout:
            junction = JunctionType.ROUNDABOUT
        elif len(neighbours[nid] - {nid}) <= 1:
            junction = JunctionType.DEAD_END
        else:
            junction = JunctionType.PRIORITY
        nodes.append(Node(nid, p.lon, p.lat, p.ele_m or 0.0, junction))
    return RoadNetwork.build(nodes, edges, name=name or path.name.split(".")[0])


__all__ = [
    "DEFAULT_LANES_PER_DIRECTION",
    "DEFAULT_LINK_SPEED_KMH",
    "DEFAULT_SPEED_KMH",
    "HIGHWAY_CLASS",
    "parse_speed_mps",
    "parse_weight_t",
    "read_osm",
]
