"""SUMO ``.net.xml`` ↔ convoy ``RoadNetwork``, so the same network runs in both.

Reading uses sumolib; writing emits plain-XML node, edge, type and connection files and runs
SUMO's ``netconvert`` (from the eclipse-sumo package). Both are imported lazily, so importing
this module needs neither; install them with ``pip install convoy[sumo]``.

Reading (:func:`read_sumo_net`):

- Internal (junction) edges are skipped; so are edges no lane of which admits the SUMO vehicle
  class ``truck`` (footways, rail, and OSM ``highway=service`` under SUMO's default typemap),
  so convoy and SUMO offer trucks the same roads. ``lanes`` counts the truck lanes; ``length_m`` and
  ``speed_limit_mps`` are sumolib's ``getLength()`` and ``getSpeed()`` (the first lane's), so
  lengths are SUMO's lane lengths, which stop short of the junction areas.
- Junction types: ``traffic_light*`` → ``TRAFFIC_SIGNAL``, ``dead_end`` → ``DEAD_END``, nodes
  of a ``<roundabout>`` → ``ROUNDABOUT``, every other type (priority, right_before_left,
  allway_stop, zipper, unregulated...) → ``PRIORITY``.
- Signals: the program SUMO would run (the last loaded one) becomes a ``SignalPlan`` per
  junction; in each phase an incoming edge has green when any of its links shows ``G``, ``g``
  or ``O`` (yellow counts as not green). SUMO starts phase 0 at ``t = offset``, convoy's plan
  is at ``(t + offset_s) mod cycle``, so ``offset_s = -offset mod cycle``.
- Coordinates: a network with a projection is converted to WGS84 with sumolib's
  ``convertXY2LonLat`` (needs pyproj). A network without one (``netgenerate`` output) has
  local x/y metres; they are placed on a local tangent plane at ``origin_lon_lat`` (east = x,
  north = y; equirectangular, so haversine lengths of the geometry match SUMO's planar ones to
  within 0.1 % for networks under ~100 km across).
- Elevation: when any node or shape point has a z, each edge gets an elevation profile at its
  shape points, stations measured along the planar shape and scaled to ``length_m``.
- Road class from the edge type (``highway.primary``, ``motorway``...); edges without a known
  type are ``PRIMARY``. An edge parameter ``maxweight`` (as written by
  :func:`write_sumo_net`, or kept by ``netconvert --osm.all-attributes``) gives
  ``max_weight_t``.
- Not kept: SUMO's lane-to-lane connections. The convoy network is a node graph in which every
  edge into a node leads to every edge out of it, so turns SUMO forbids (e.g. U-turns at a
  netgenerate grid's corners) are allowed in convoy.

Writing (:func:`write_sumo_net`): nodes and edge geometry are written in lon/lat and projected
by ``netconvert --proj.utm``; each edge carries its ``length_m`` explicitly, so SUMO's lane
lengths equal convoy's; every edge into a node is connected to every edge out of it; the
elevation profile becomes the z of the edge shape; ``max_weight_t`` becomes the edge parameter
``maxweight``. Not exported: signal timings (``netconvert`` builds its own static program for
signalised junctions) and roundabouts (written as priority junctions).
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from convoy.road.network import (
    EARTH_RADIUS_M,
    Edge,
    JunctionType,
    NetworkError,
    Node,
    RoadClass,
    RoadNetwork,
    SignalPhase,
    SignalPlan,
)
from convoy.road.osm import HIGHWAY_CLASS, parse_weight_t

# SUMO vehicle class whose lanes count as truck lanes.
TRUCK_VCLASS = "truck"
# Link states that let traffic go (SUMO "Traffic Lights" docs: G priority green, g green
# without priority, O signal off and traffic may pass).
_GREEN_STATES = frozenset("GgO")
# Edge priority per road class on export, as in SUMO's data/typemap/osmNetconvert.typ.xml.
_SUMO_PRIORITY = {
    RoadClass.MOTORWAY: 14,
    RoadClass.TRUNK: 13,
    RoadClass.PRIMARY: 12,
    RoadClass.SECONDARY: 11,
    RoadClass.TERTIARY: 10,
    RoadClass.SERVICE: 1,
}
_SUMO_NODE_TYPE = {
    JunctionType.PRIORITY: "priority",
    JunctionType.TRAFFIC_SIGNAL: "traffic_light",
    JunctionType.ROUNDABOUT: "priority",
    # netconvert sets dead_end itself where no connection leaves; convoy allows the U-turn.
    JunctionType.DEAD_END: "priority",
}
# Characters SUMO rejects in ids (SUMOXMLDefinitions::isValidNetID), plus a leading ':'.
_BAD_ID_CHARS = frozenset(" \t\n\r|\\'\";,<>&")
NETCONVERT_TIMEOUT_S = 600.0


def _import_sumolib() -> Any:
    try:
        import sumolib
    except ImportError:
        raise NetworkError(
            "reading SUMO networks needs sumolib; install it with pip install convoy[sumo]"
        ) from None
    return sumolib


def _road_class(sumo_type: str) -> RoadClass:
    """Road class of a SUMO edge type: ``highway.motorway``, ``motorway``, ``a|b`` (first)."""
    first = sumo_type.split("|")[0]
    key = first.removeprefix("highway.")
    if key in HIGHWAY_CLASS:
        return HIGHWAY_CLASS[key]
    try:
        return RoadClass(key)
    except ValueError:
        return RoadClass.PRIMARY


def _junction(sumo_type: str) -> JunctionType:
    if sumo_type.startswith("traffic_light"):
        return JunctionType.TRAFFIC_SIGNAL
    if sumo_type == "dead_end":
        return JunctionType.DEAD_END
    return JunctionType.PRIORITY


_XYToLonLat = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _tangent_plane(origin_lon_lat: tuple[float, float]) -> _XYToLonLat:
    lon0, lat0 = origin_lon_lat
    if not (-180.0 <= lon0 <= 180.0 and -90.0 < lat0 < 90.0):
        raise NetworkError(
            f"origin_lon_lat = {origin_lon_lat!r}; lon must be in [-180, 180], lat in (-90, 90)"
        )
    m_per_deg_lat = math.radians(1.0) * EARTH_RADIUS_M
    m_per_deg_lon = m_per_deg_lat * math.cos(math.radians(lat0))

    def to_lon_lat(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return lon0 + x / m_per_deg_lon, lat0 + y / m_per_deg_lat

    return to_lon_lat


def _signal_plans(net: Any) -> dict[str, SignalPlan]:
    """One plan per signalised junction from each TLS's active program."""
    plans: dict[str, SignalPlan] = {}
    for tls in net.getTrafficLights():
        programs = tls.getPrograms()
        if not programs:
            continue
        program = list(programs.values())[-1]
        phases = program.getPhases()
        # link index -> (junction, incoming edge)
        links: dict[str, list[tuple[int, str]]] = {}
        for in_lane, _out_lane, index in tls.getConnections():
            edge = in_lane.getEdge()
            links.setdefault(edge.getToNode().getID(), []).append((int(index), edge.getID()))
        cycle_s = float(sum(float(p.duration) for p in phases))
        offset_s = (-float(program.getOffset())) % cycle_s if cycle_s > 0 else 0.0
        for node_id, node_links in links.items():
            plan_phases = []
            for p in phases:
                state = p.state
                green = sorted(
                    {e for i, e in node_links if i < len(state) and state[i] in _GREEN_STATES}
                )
                plan_phases.append(SignalPhase(float(p.duration), tuple(green)))
            plans[node_id] = SignalPlan(tuple(plan_phases), offset_s)
    return plans


def _profile(
    xyz: Sequence[tuple[float, float, float]], length_m: float
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    pts = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    step = np.hypot(np.diff(pts[:, 0]), np.diff(pts[:, 1]))
    keep = np.concatenate(([True], step > 0.0))
    pts, s = pts[keep], np.concatenate(([0.0], np.cumsum(step[step > 0.0])))
    if len(pts) < 2 or s[-1] <= 0.0:
        return (), ()
    stations = s * (length_m / s[-1])
    stations[-1] = length_m
    return tuple(float(v) for v in stations), tuple(float(z) for z in pts[:, 2])


def read_sumo_net(
    path: str | Path,
    origin_lon_lat: tuple[float, float] = (0.0, 0.0),
    name: str | None = None,
) -> RoadNetwork:
    """Read a SUMO network into a convoy road network.

    Args:
        path: ``.net.xml`` (or ``.net.xml.gz``) file.
        origin_lon_lat: where a network without a projection is placed: its x/y origin
            goes to this (lon, lat) [degrees]; ignored for projected networks.
        name: network name; default the file name without extensions.

    Returns:
        The network, with SUMO's node and edge ids.

    Raises:
        NetworkError: missing or unreadable file, sumolib or pyproj missing, or no edge
            that trucks may use.
    """
    path = Path(path)
    if not path.is_file():
        raise NetworkError(f"SUMO network {str(path)!r} does not exist")
    sumolib = _import_sumolib()
    try:
        net = sumolib.net.readNet(str(path), withLatestPrograms=True, withInternal=False)
    except Exception as exc:  # sumolib raises whatever its XML parser raises
        raise NetworkError(f"SUMO network {str(path)!r} could not be read: {exc}") from None

    # Coordinates, converted once for all nodes and shape points.
    if net.hasGeoProj():
        if not getattr(sumolib.net, "HAVE_PYPROJ", False):
            raise NetworkError(
                f"SUMO network {str(path)!r} is projected ({net._location['projParameter']}); "
                "converting it to lon/lat needs pyproj: pip install convoy[sumo]"
            )

        def projected(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            lon, lat = net.convertXY2LonLat(x, y)
            return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)

        to_lon_lat: _XYToLonLat = projected
    else:
        to_lon_lat = _tangent_plane(origin_lon_lat)

    sumo_edges = [
        e
        for e in net.getEdges(withInternal=False)
        if e.getFunction() == "" and any(lane.allows(TRUCK_VCLASS) for lane in e.getLanes())
    ]
    if not sumo_edges:
        raise NetworkError(f"SUMO network {str(path)!r} has no edge that trucks may use")
    used_nodes = {n for e in sumo_edges for n in (e.getFromNode(), e.getToNode())}
    sumo_nodes = [n for n in net.getNodes() if n in used_nodes]
    shapes = [list(e.getRawShape3D()) for e in sumo_edges]
    node_xyz = np.array([n.getCoord3D() for n in sumo_nodes], dtype=np.float64).reshape(-1, 3)
    shape_xyz = np.array([p for s in shapes for p in s], dtype=np.float64).reshape(-1, 3)
    all_xy = np.concatenate([node_xyz[:, :2], shape_xyz[:, :2]])
    lon, lat = to_lon_lat(all_xy[:, 0].copy(), all_xy[:, 1].copy())
    has_z = bool(np.any(node_xyz[:, 2] != 0.0) or np.any(shape_xyz[:, 2] != 0.0))

    roundabout_nodes = {nid for r in net.getRoundabouts() for nid in r.getNodes()}
    plans = _signal_plans(net)
    nodes = []
    for k, n in enumerate(sumo_nodes):
        junction = _junction(n.getType())
        if junction is JunctionType.PRIORITY and n.getID() in roundabout_nodes:
            junction = JunctionType.ROUNDABOUT
        signal = plans.get(n.getID()) if junction is JunctionType.TRAFFIC_SIGNAL else None
        nodes.append(
            Node(
                id=n.getID(),
                lon=float(lon[k]),
                lat=float(lat[k]),
                elevation_m=float(node_xyz[k, 2]),
                junction=junction,
                signal=signal,
            )
        )

    edges = []
    cursor = len(sumo_nodes)
    for e, shape in zip(sumo_edges, shapes, strict=True):
        n_pts = len(shape)
        geometry = tuple((float(lon[cursor + i]), float(lat[cursor + i])) for i in range(n_pts))
        cursor += n_pts
        length_m = float(e.getLength())
        stations, elevation = _profile(shape, length_m) if has_z else ((), ())
        max_weight = e.getParam("maxweight")
        edges.append(
            Edge(
                id=e.getID(),
                from_node=e.getFromNode().getID(),
                to_node=e.getToNode().getID(),
                length_m=length_m,
                lanes=sum(1 for lane in e.getLanes() if lane.allows(TRUCK_VCLASS)),
                speed_limit_mps=float(e.getSpeed()),
                road_class=_road_class(e.getType()),
                geometry=geometry,
                stations_m=stations,
                elevation_m=elevation,
                max_weight_t=parse_weight_t(max_weight) if max_weight else None,
                name=e.getName() or "",
            )
        )
    return RoadNetwork.build(nodes, edges, name=name or path.name.split(".")[0])


# --- export ------------------------------------------------------------------------------------


def _check_ids(kind: str, ids: Iterable[str]) -> None:
    for i in ids:
        bad = sorted(set(i) & _BAD_ID_CHARS)
        if not i or i.startswith(":") or bad:
            raise NetworkError(
                f"{kind} id {i!r} is not a valid SUMO id: it must be non-empty, not start "
                f"with ':' and not contain spaces or any of |\\'\";,<>& (found {bad})"
            )


def _fmt(x: float) -> str:
    # repr round-trips a float exactly, so netconvert reads the very value convoy holds.
    return repr(float(x))


def _shape(edge: Edge, nodes: Mapping[str, Node]) -> list[tuple[float, float, float]] | None:
    """lon, lat, z shape points: the geometry, plus a point at every profile station."""
    a, b = nodes[edge.from_node], nodes[edge.to_node]
    geometry = edge.geometry or ((a.lon, a.lat), (b.lon, b.lat))
    has_profile = len(edge.stations_m) >= 2 and edge.stations_m[-1] > edge.stations_m[0]
    if not has_profile:
        if not edge.geometry:
            return None
        return [(lon, lat, math.nan) for lon, lat in geometry]
    g = np.asarray(geometry, dtype=np.float64)
    # Fractions along the geometry (planar in degrees scaled by cos(lat): fine for one edge).
    scale = np.array([math.cos(math.radians(float(g[:, 1].mean()))), 1.0])
    seg = np.hypot(*(np.diff(g, axis=0) * scale).T)
    geo_frac = np.concatenate(([0.0], np.cumsum(seg)))
    if geo_frac[-1] <= 0.0:
        return None
    geo_frac /= geo_frac[-1]
    st = np.asarray(edge.stations_m, dtype=np.float64)
    prof_frac = (st - st[0]) / (st[-1] - st[0])
    frac = np.union1d(geo_frac, prof_frac)
    lon = np.interp(frac, geo_frac, g[:, 0])
    lat = np.interp(frac, geo_frac, g[:, 1])
    z = np.interp(frac, prof_frac, np.asarray(edge.elevation_m, dtype=np.float64))
    return [(float(x), float(y), float(h)) for x, y, h in zip(lon, lat, z, strict=True)]


def _shape_attr(points: list[tuple[float, float, float]]) -> str:
    return " ".join(
        f"{_fmt(x)},{_fmt(y)}" if math.isnan(z) else f"{_fmt(x)},{_fmt(y)},{_fmt(z)}"
        for x, y, z in points
    )


def _write_plain(network: RoadNetwork, folder: Path) -> list[str]:
    """Write .nod/.edg/.typ/.con XML into ``folder``; returns netconvert's input options."""
    nod, edg, typ, con = (folder / f"net.{ext}.xml" for ext in ("nod", "edg", "typ", "con"))
    lines = ["<nodes>"]
    for n in network.nodes.values():
        lines.append(
            f"  <node id={quoteattr(n.id)} x={quoteattr(_fmt(n.lon))} y={quoteattr(_fmt(n.lat))} "
            f'z="{_fmt(n.elevation_m)}" type="{_SUMO_NODE_TYPE[n.junction]}"/>'
        )
    nod.write_text("\n".join([*lines, "</nodes>", ""]), encoding="utf-8")
    lines = ["<types>"]
    for rc in RoadClass:
        lines.append(f'  <type id="{rc.value}" priority="{_SUMO_PRIORITY[rc]}"/>')
    typ.write_text("\n".join([*lines, "</types>", ""]), encoding="utf-8")
    lines = ["<edges>"]
    for e in network.edges.values():
        attrs = (
            f"id={quoteattr(e.id)} from={quoteattr(e.from_node)} to={quoteattr(e.to_node)} "
            f'type="{e.road_class.value}" numLanes="{e.lanes}" speed="{_fmt(e.speed_limit_mps)}" '
            f'length="{_fmt(e.length_m)}"'
        )
        if e.name:
            attrs += f" name={quoteattr(e.name)}"
        shape = _shape(e, network.nodes)
        if shape is not None:
            attrs += f' shape="{_shape_attr(shape)}"'
        if e.max_weight_t is None:
            lines.append(f"  <edge {attrs}/>")
        else:
            lines.append(f"  <edge {attrs}>")
            lines.append(f'    <param key="maxweight" value="{_fmt(e.max_weight_t)}"/>')
            lines.append("  </edge>")
    edg.write_text("\n".join([*lines, "</edges>", ""]), encoding="utf-8")
    incoming: dict[str, list[str]] = {}
    outgoing: dict[str, list[str]] = {}
    for e in network.edges.values():
        incoming.setdefault(e.to_node, []).append(e.id)
        outgoing.setdefault(e.from_node, []).append(e.id)
    lines = ["<connections>"]
    for node_id, ins in incoming.items():
        for a in ins:
            for b in outgoing.get(node_id, []):
                lines.append(f"  <connection from={quoteattr(a)} to={quoteattr(b)}/>")
    con.write_text("\n".join([*lines, "</connections>", ""]), encoding="utf-8")
    return ["-n", str(nod), "-e", str(edg), "-t", str(typ), "-x", str(con)]


def netconvert_binary() -> Path:
    """Path of eclipse-sumo's ``netconvert``.

    Raises:
        NetworkError: if eclipse-sumo (or sumolib) is not installed.
    """
    sumolib = _import_sumolib()
    path = Path(str(sumolib.checkBinary("netconvert")))
    if not path.is_file():
        raise NetworkError(
            "SUMO's netconvert was not found; install eclipse-sumo (pip install convoy[sumo])"
        )
    return path


def write_sumo_net(
    network: RoadNetwork, path: str | Path, extra_options: Sequence[str] = ()
) -> Path:
    """Write a convoy network as a SUMO ``.net.xml`` through ``netconvert``.

    Args:
        network: the network.
        path: output ``.net.xml`` file (its folder must exist).
        extra_options: further netconvert options, e.g. ``("--no-internal-links", "true")``.

    Returns:
        ``path``.

    Raises:
        NetworkError: an id SUMO cannot hold, netconvert missing, or netconvert failing
            (with its error output).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise NetworkError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} is missing")
    _check_ids("node", network.nodes)
    _check_ids("edge", network.edges)
    binary = netconvert_binary()
    env = dict(os.environ)
    sumo_home = binary.parent.parent
    env.setdefault("SUMO_HOME", str(sumo_home))
    proj = sumo_home / "data" / "proj"
    if proj.is_dir():
        # netconvert's own PROJ library looks for proj.db here.
        env["PROJ_LIB"] = env["PROJ_DATA"] = str(proj)
    with tempfile.TemporaryDirectory(prefix="convoy_netconvert_") as tmp:
        inputs = _write_plain(network, Path(tmp))
        cmd = [
            str(binary),
            *inputs,
            "--proj.utm",
            "true",
            "--output.street-names",
            "true",
            *extra_options,
            "-o",
            str(path),
        ]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=NETCONVERT_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise NetworkError(
                f"netconvert took over {NETCONVERT_TIMEOUT_S:g} s on network {network.name!r}"
            ) from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-10:])
        raise NetworkError(
            f"netconvert failed on network {network.name!r} (exit {done.returncode}):\n{tail}"
        )
    return path
