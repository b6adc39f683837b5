"""Import and export: SUMO networks (checked against sumolib and SUMO itself) and OSM XML."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from convoy.road.network import (
    Edge,
    JunctionType,
    NetworkError,
    Node,
    RoadClass,
    RoadNetwork,
    polyline_length_m,
)
from convoy.road.osm import parse_speed_mps, parse_weight_t, read_osm
from convoy.road.sumo_net import netconvert_binary, read_sumo_net, write_sumo_net

sumolib = pytest.importorskip("sumolib", reason="SUMO import/export needs sumolib (dev extra)")


def kmh(speed_kmh: float) -> float:
    """km/h to m/s, computed as the readers do."""
    return speed_kmh / 3.6


def _sumo_tool(name: str, *args: str) -> None:
    binary = Path(str(sumolib.checkBinary(name)))
    env = dict(os.environ, SUMO_HOME=str(binary.parent.parent))
    env["PROJ_LIB"] = env["PROJ_DATA"] = str(binary.parent.parent / "data" / "proj")
    subprocess.run([str(binary), *args], check=True, capture_output=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A signalised 3x3 grid with two-lane 20 m/s roads, and a 5-arm spider, by netgenerate."""
    folder = tmp_path_factory.mktemp("netgenerate")
    grid, spider = folder / "grid.net.xml", folder / "spider.net.xml"
    _sumo_tool(
        "netgenerate",
        "--grid",
        "--grid.number=3",
        "--grid.length=200",
        "--default.lanenumber=2",
        "--default.speed=20",
        "--default-junction-type=traffic_light",
        "-o",
        str(grid),
    )
    _sumo_tool(
        "netgenerate",
        "--spider",
        "--spider.arm-number=5",
        "--spider.circle-number=3",
        "--spider.space-radius=150",
        "-o",
        str(spider),
    )
    return {"grid": grid, "spider": spider}


def _successors(net: RoadNetwork) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in net.edges.values():
        out.setdefault(e.from_node, set()).add(e.id)
    return {e.id: out.get(e.to_node, set()) for e in net.edges.values()}


# --- SUMO → convoy -----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["grid", "spider"])
def test_sumo_import_keeps_what_sumolib_reads(generated: dict[str, Path], which: str) -> None:
    path = generated[which]
    ref = sumolib.net.readNet(str(path))
    ref_edges = {e.getID(): e for e in ref.getEdges(withInternal=False)}
    net = read_sumo_net(path)
    assert set(net.edges) == set(ref_edges)
    assert set(net.nodes) == {n.getID() for n in ref.getNodes()}
    succ = _successors(net)
    for eid, e in net.edges.items():
        r = ref_edges[eid]
        assert e.length_m == r.getLength()
        assert e.lanes == r.getLaneNumber()
        assert e.speed_limit_mps == r.getSpeed()
        assert (e.from_node, e.to_node) == (r.getFromNode().getID(), r.getToNode().getID())
        # Every SUMO connection is kept; the node graph adds only turns SUMO bans, here
        # U-turns (back along the reverse edge).
        sumo_succ = {o.getID() for o in r.getOutgoing()}
        assert sumo_succ <= succ[eid]
        for extra in succ[eid] - sumo_succ:
            assert net.edges[extra].to_node == e.from_node
    if which == "grid":
        # netgenerate's grid is 2 x 200 m across; the tangent plane keeps it so.
        a0, c2 = net.nodes["A0"], net.nodes["C2"]
        assert polyline_length_m([(a0.lon, a0.lat), (c2.lon, c2.lat)]) == pytest.approx(
            400.0 * 2**0.5, rel=1e-4
        )
        assert all(n.junction is JunctionType.TRAFFIC_SIGNAL for n in net.nodes.values())


def test_sumo_roundabout_nodes_become_roundabout_junctions(tmp_path: Path) -> None:
    nod, edg, out = tmp_path / "r.nod.xml", tmp_path / "r.edg.xml", tmp_path / "r.net.xml"
    ring = {"n": (0, 100), "e": (100, 0), "s": (0, -100), "w": (-100, 0)}
    arms = {"N": (0, 300), "E": (300, 0)}
    nod.write_text(
        "<nodes>"
        + "".join(f'<node id="{k}" x="{x}" y="{y}"/>' for k, (x, y) in (ring | arms).items())
        + "</nodes>"
    )
    pairs = ["ne", "es", "sw", "wn", "Nn", "nN", "Ee", "eE"]
    edg.write_text(
        "<edges>"
        + "".join(f'<edge id="{a}{b}" from="{a}" to="{b}"/>' for a, b in pairs)
        + '<roundabout nodes="n e s w" edges="ne es sw wn"/></edges>'
    )
    _sumo_tool("netconvert", "-n", str(nod), "-e", str(edg), "-o", str(out))
    net = read_sumo_net(out)
    for k in ring:
        assert net.nodes[k].junction is JunctionType.ROUNDABOUT
    for k in arms:
        assert net.nodes[k].junction is not JunctionType.ROUNDABOUT


def _import_libsumo() -> Any:
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        return pytest.importorskip("libsumo", reason="signal check runs SUMO through libsumo")


def test_signal_plans_switch_like_sumo(generated: dict[str, Path], tmp_path: Path) -> None:
    """Green edges and the offset, against SUMO's own signal states over two cycles."""
    path = tmp_path / "offset.net.xml"
    text = generated["grid"].read_text()
    path.write_text(re.sub(r'(<tlLogic id="B1"[^>]*offset=")0"', r'\g<1>17"', text))
    plan = read_sumo_net(path).nodes["B1"].signal
    assert plan is not None and plan.cycle_s == 90.0 and plan.offset_s == 90.0 - 17.0
    libsumo = _import_libsumo()
    libsumo.start([str(sumolib.checkBinary("sumo")), "-n", str(path), "--no-step-log", "true"])
    try:
        links = libsumo.trafficlight.getControlledLinks("B1")
        switches = []
        checked = 0
        for _ in range(int(2 * plan.cycle_s)):
            t = libsumo.simulation.getTime()
            switches.append(libsumo.trafficlight.getNextSwitch("B1"))
            state = libsumo.trafficlight.getRedYellowGreenState("B1")
            green = {
                lane_links[0][0].rsplit("_", 1)[0]
                for lane_links, s in zip(links, state, strict=True)
                if lane_links and s in "Gg"
            }
            # Stay clear of switch instants, where SUMO reports the state one step late.
            if min(abs(t - sw) for sw in switches) > 1.5:
                for edge in ("A1B1", "C1B1", "B0B1", "B2B1"):
                    assert plan.green_at(edge, t) == (edge in green), (edge, t)
                checked += 1
            libsumo.simulationStep()
    finally:
        libsumo.close()
    assert checked > 150


def test_projected_sumo_network_converts_back_to_lon_lat(tmp_path: Path) -> None:
    osm = _write_tiny_osm(tmp_path)
    net_xml = tmp_path / "tiny.net.xml"
    _sumo_tool("netconvert", "--osm-files", str(osm), "-o", str(net_xml))
    from_sumo = read_sumo_net(net_xml)
    from_osm = read_osm(osm)
    # Same ids (the OSM reader names edges as SUMO's OSM import does) and same topology.
    assert set(from_sumo.edges) == set(from_osm.edges)
    assert set(from_sumo.nodes) == set(from_osm.nodes)
    for nid, n in from_osm.nodes.items():
        m = from_sumo.nodes[nid]
        assert (m.lon, m.lat) == pytest.approx((n.lon, n.lat), abs=1e-6)  # ~0.1 m
    for eid, e in from_osm.edges.items():
        s = from_sumo.edges[eid]
        assert (s.from_node, s.to_node, s.lanes) == (e.from_node, e.to_node, e.lanes)
        # SUMO's lane lengths stop at the junction areas and follow the lane offset.
        assert s.length_m == pytest.approx(e.length_m, rel=0.03)
    assert from_sumo.edges["10"].speed_limit_mps == pytest.approx(kmh(80), abs=0.005)


# --- convoy → SUMO → convoy --------------------------------------------------------------------


def test_grid_round_trip_keeps_lengths_lanes_speeds_and_all_turns(
    generated: dict[str, Path], tmp_path: Path
) -> None:
    net = read_sumo_net(generated["grid"])
    out = write_sumo_net(net, tmp_path / "rt.net.xml")
    back = read_sumo_net(out)
    assert set(back.edges) == set(net.edges)
    for eid, e in net.edges.items():
        b = back.edges[eid]
        assert b.length_m == pytest.approx(e.length_m, abs=0.005)  # net.xml keeps 2 decimals
        assert (b.lanes, b.speed_limit_mps) == (e.lanes, e.speed_limit_mps)
        assert (b.from_node, b.to_node) == (e.from_node, e.to_node)
    # SUMO itself now connects every edge into a node to every edge out of it.
    sumo = sumolib.net.readNet(str(out))
    succ = _successors(net)
    for e in sumo.getEdges(withInternal=False):
        assert {o.getID() for o in e.getOutgoing()} == succ[e.getID()]
    for nid, n in net.nodes.items():
        assert (back.nodes[nid].lon, back.nodes[nid].lat) == pytest.approx((n.lon, n.lat), abs=1e-6)


def test_round_trip_keeps_grade_profile_class_weight_limit_and_name(tmp_path: Path) -> None:
    lon0, lat0 = 109.78, 39.61  # Kangbashi, Ordos
    nodes = [
        Node("a", lon0, lat0, 1400.0),
        Node("b", lon0 + 0.012, lat0, 1410.0, JunctionType.TRAFFIC_SIGNAL),
        Node("c", lon0 + 0.012, lat0 + 0.01, 1405.0),
    ]
    bend = ((lon0, lat0), (lon0 + 0.006, lat0 + 0.001), (lon0 + 0.012, lat0))
    edges = [
        Edge(
            "ab",
            "a",
            "b",
            1040.0,
            lanes=2,
            speed_limit_mps=kmh(100),
            road_class=RoadClass.MOTORWAY,
            geometry=bend,
            stations_m=(0.0, 300.0, 700.0, 1040.0),
            elevation_m=(1400.0, 1425.0, 1418.0, 1410.0),
            name="G65",
        ),
        Edge("ba", "b", "a", 1040.0, road_class=RoadClass.MOTORWAY, geometry=bend[::-1]),
        Edge("bc", "b", "c", 1112.0, road_class=RoadClass.SERVICE, max_weight_t=30.0),
        Edge("cb", "c", "b", 1112.0, road_class=RoadClass.SERVICE, max_weight_t=30.0),
    ]
    net = RoadNetwork.build(nodes, edges, name="ordos-bit")
    back = read_sumo_net(write_sumo_net(net, tmp_path / "ordos.net.xml"))
    ab = back.edges["ab"]
    assert ab.length_m == 1040.0 and ab.lanes == 2 and ab.name == "G65"
    assert ab.speed_limit_mps == pytest.approx(kmh(100), abs=0.005)
    assert ab.road_class is RoadClass.MOTORWAY and back.edges["bc"].road_class is RoadClass.SERVICE
    assert back.edges["bc"].max_weight_t == 30.0 and ab.max_weight_t is None
    # Every profile point survives as a shape point; stations agree to the projection's scale.
    for s, z in zip(edges[0].stations_m, edges[0].elevation_m, strict=True):
        k = min(range(len(ab.stations_m)), key=lambda i: abs(ab.stations_m[i] - s))
        assert ab.stations_m[k] == pytest.approx(s, abs=2.0)
        assert ab.elevation_m[k] == pytest.approx(z, abs=0.01)
    assert back.nodes["a"].elevation_m == 1400.0
    assert back.nodes["b"].junction is JunctionType.TRAFFIC_SIGNAL


def test_sumo_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="does not exist"):
        read_sumo_net(tmp_path / "missing.net.xml")
    bad = tmp_path / "bad.net.xml"
    bad.write_text("<net><edge")
    with pytest.raises(NetworkError, match="could not be read"):
        read_sumo_net(bad)
    net = RoadNetwork.build([Node("a b", 0, 0), Node("c", 0.01, 0)], [Edge("e", "a b", "c", 5.0)])
    with pytest.raises(NetworkError, match="node id 'a b' is not a valid SUMO id"):
        write_sumo_net(net, tmp_path / "x.net.xml")
    assert netconvert_binary().name == "netconvert"


# --- OSM ---------------------------------------------------------------------------------------

_TINY_OSM = """<?xml version="1.0" encoding="UTF-8"?>
<osm version="0.6" generator="convoy-test">
  <node id="1" lat="39.6000" lon="109.7000"/>
  <node id="2" lat="39.6010" lon="109.7050"/>
  <node id="3" lat="39.6000" lon="109.7100"><tag k="highway" v="traffic_signals"/></node>
  <node id="4" lat="39.6050" lon="109.7150"><tag k="ele" v="1400"/></node>
  <node id="5" lat="39.6100" lon="109.7300"><tag k="ele" v="1430.5 m"/></node>
  <node id="6" lat="39.6120" lon="109.7310"/>
  <way id="10">
    <nd ref="1"/><nd ref="2"/><nd ref="3"/>
    <tag k="highway" v="primary"/><tag k="lanes" v="2"/><tag k="maxspeed" v="80"/>
    <tag k="ref" v="S215"/>
  </way>
  <way id="11">
    <nd ref="3"/><nd ref="4"/>
    <tag k="highway" v="secondary"/><tag k="oneway" v="yes"/><tag k="maxweight" v="20"/>
  </way>
  <way id="12">
    <nd ref="4"/><nd ref="5"/>
    <tag k="highway" v="motorway"/><tag k="name" v="G65"/>
  </way>
  <way id="13">
    <nd ref="5"/><nd ref="6"/>
    <tag k="highway" v="footway"/>
  </way>
</osm>
"""


def _write_tiny_osm(folder: Path) -> Path:
    path = folder / "tiny.osm"
    path.write_text(_TINY_OSM)
    return path


def test_osm_import_gives_exactly_the_expected_network(tmp_path: Path) -> None:
    net = read_osm(_write_tiny_osm(tmp_path))
    p = {1: (109.70, 39.600), 2: (109.705, 39.601), 3: (109.71, 39.6), 4: (109.715, 39.605)}
    p[5] = (109.73, 39.61)
    len_10 = polyline_length_m([p[1], p[2], p[3]])
    len_11 = polyline_length_m([p[3], p[4]])
    len_12 = polyline_length_m([p[4], p[5]])
    expected_edges = {
        # two-way primary, lanes=2 in total, maxspeed=80; node 2 is only geometry
        "10": Edge(
            "10", "1", "3", len_10, 1, kmh(80), RoadClass.PRIMARY, (p[1], p[2], p[3]), name="S215"
        ),
        "-10": Edge(
            "-10", "3", "1", len_10, 1, kmh(80), RoadClass.PRIMARY, (p[3], p[2], p[1]), name="S215"
        ),
        # oneway secondary: one lane, default 70 km/h (art. 45), 20 t limit
        "11": Edge(
            "11",
            "3",
            "4",
            len_11,
            1,
            kmh(70),
            RoadClass.SECONDARY,
            (p[3], p[4]),
            max_weight_t=20.0,
        ),
        # motorway: implied oneway, two lanes (JTG B01-2014), 120 km/h (art. 78), ele profile
        "12": Edge(
            "12",
            "4",
            "5",
            len_12,
            2,
            kmh(120),
            RoadClass.MOTORWAY,
            (p[4], p[5]),
            stations_m=(0.0, len_12),
            elevation_m=(1400.0, 1430.5),
            name="G65",
        ),
    }
    assert dict(net.edges) == expected_edges
    assert dict(net.nodes) == {
        "1": Node("1", *p[1], 0.0, JunctionType.DEAD_END),
        "3": Node("3", *p[3], 0.0, JunctionType.TRAFFIC_SIGNAL),
        "4": Node("4", *p[4], 1400.0, JunctionType.PRIORITY),
        "5": Node("5", *p[5], 1430.5, JunctionType.DEAD_END),
    }
    assert net.name == "tiny"


def test_osm_splits_ways_at_shared_nodes_and_skips_clipped_references(tmp_path: Path) -> None:
    path = tmp_path / "split.osm"
    path.write_text(
        """<osm version="0.6">
  <node id="1" lat="0" lon="0"/><node id="2" lat="0" lon="0.01"/>
  <node id="3" lat="0" lon="0.02"/><node id="4" lat="0.01" lon="0.01"/>
  <way id="7"><nd ref="1"/><nd ref="2"/><nd ref="3"/><nd ref="99"/>
    <tag k="highway" v="trunk"/><tag k="oneway" v="-1"/><tag k="maxspeed" v="50 mph"/></way>
  <way id="8"><nd ref="2"/><nd ref="4"/><tag k="highway" v="tertiary"/><tag k="hgv" v="no"/></way>
  <way id="9"><nd ref="4"/><nd ref="2"/><tag k="highway" v="service"/>
    <tag k="lanes:forward" v="2"/><tag k="lanes:backward" v="1"/></way>
</osm>"""
    )
    net = read_osm(path)
    # way 7 is split at node 2 (shared with way 9) and runs backward only; way 8 bars trucks.
    assert set(net.edges) == {"-7#0", "-7#1", "9", "-9"}
    assert (net.edges["-7#0"].from_node, net.edges["-7#0"].to_node) == ("2", "1")
    assert (net.edges["-7#1"].from_node, net.edges["-7#1"].to_node) == ("3", "2")
    assert net.edges["-7#1"].speed_limit_mps == pytest.approx(kmh(50 * 1.609344))
    assert (net.edges["9"].lanes, net.edges["-9"].lanes) == (2, 1)
    assert net.edges["9"].speed_limit_mps == pytest.approx(kmh(40))


def test_osm_tag_parsers() -> None:
    assert parse_speed_mps("80") == pytest.approx(kmh(80))
    assert parse_speed_mps("80 km/h") == pytest.approx(kmh(80))
    assert parse_speed_mps("60;80") == pytest.approx(kmh(60))
    assert parse_speed_mps("10 knots") == pytest.approx(kmh(18.52))
    assert parse_speed_mps("none") is None and parse_speed_mps("CN:urban") is None
    assert parse_weight_t("7.5") == 7.5 and parse_weight_t("7500 kg") == pytest.approx(7.5)
    assert parse_weight_t("10 st") == pytest.approx(9.0718474)
    assert parse_weight_t("unknown") is None


def test_osm_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="does not exist"):
        read_osm(tmp_path / "nothing.osm")
    not_osm = tmp_path / "gpx.osm"
    not_osm.write_text("<gpx></gpx>")
    with pytest.raises(NetworkError, match="root element is <gpx>; expected <osm>"):
        read_osm(not_osm)
    broken = tmp_path / "broken.osm"
    broken.write_text("<osm><node id='1'")
    with pytest.raises(NetworkError, match="not well-formed XML"):
        read_osm(broken)
    paths_only = tmp_path / "paths.osm"
    paths_only.write_text(
        '<osm><node id="1" lat="0" lon="0"/><node id="2" lat="0" lon="0.01"/>'
        '<way id="1"><nd ref="1"/><nd ref="2"/><tag k="highway" v="footway"/></way></osm>'
    )
    with pytest.raises(NetworkError, match="no drivable highway"):
        read_osm(paths_only)
