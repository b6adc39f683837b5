"""The built-in Ordos network against its sources: sites, distances, elevations, corridors.

Reference road distances are ``convoy.road.ordos.TOWN_DISTANCES_KM``: figures read in a source
(``ordos-sites.md`` §6a and one gazetteer text, labelled [V]/[S]) and, where no routed
distance was found, the midpoint of the §6b estimate (great circle x 1.2-1.35, labelled
[S-est]). DESIGN.md asks for road distances within about 15 %.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import math
import re
import struct
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from convoy.road.geojson import read_geojson
from convoy.road.network import (
    Edge,
    JunctionType,
    RoadClass,
    RoadNetwork,
    SiteKind,
    haversine_m,
    polyline_length_m,
)
from convoy.road.ordos import DISTANCE_TOLERANCE, TOWN_DISTANCES_KM, ordos_network

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "convoy" / "road" / "data"
CONVOY = [sys.executable, "-m", "convoy.cli"]

# DESIGN.md, "The default world": the eight towns and hubs, (lat, lon) rounded to 0.01°.
DESIGN_TOWNS = {
    "dongsheng": (39.82, 109.98),
    "kangbashi": (39.61, 109.78),
    "wulan": (39.10, 107.97),
    "xini": (39.84, 108.73),
    "galutu": (38.60, 108.84),
    "shulinzhao": (40.40, 110.04),
    "xuejiawan": (39.86, 111.24),
    "baotou": (40.66, 109.84),
}

# JTG D20-2017 (Design Specification for Highway Alignment), table 8.3.1: maximum
# longitudinal grade by design speed [km/h].
JTG_MAX_GRADE = {120: 0.03, 100: 0.04, 80: 0.05, 60: 0.06, 40: 0.07, 30: 0.08}


@pytest.fixture(scope="module")
def net() -> RoadNetwork:
    return ordos_network()


def _route_m(
    net: RoadNetwork, a: str, b: str, allow: Callable[[Edge], bool] = lambda e: True
) -> tuple[float, list[Edge]]:
    """Shortest route from node ``a`` to node ``b`` over allowed edges (Dijkstra)."""
    out: dict[str, list[Edge]] = {}
    for e in net.edges.values():
        if allow(e):
            out.setdefault(e.from_node, []).append(e)
    best: dict[str, float] = {a: 0.0}
    via: dict[str, Edge] = {}
    heap = [(0.0, a)]
    while heap:
        d, n = heapq.heappop(heap)
        if n == b:
            path = []
            while n != a:
                path.append(via[n])
                n = via[n].from_node
            return d, path[::-1]
        if d > best[n]:
            continue
        for e in out.get(n, []):
            if d + e.length_m < best.get(e.to_node, math.inf):
                best[e.to_node] = d + e.length_m
                via[e.to_node] = e
                heapq.heappush(heap, (d + e.length_m, e.to_node))
    return math.inf, []


# --------------------------------------------------------------------------------------------
# Sites


def test_required_sites_are_there(net: RoadNetwork) -> None:
    kinds = Counter(s.kind for s in net.sites.values())
    assert kinds[SiteKind.TOWN] >= 8
    assert kinds[SiteKind.COAL_MINE] >= 6
    assert kinds[SiteKind.POWER_PLANT] + kinds[SiteKind.CHEMICAL_PARK] >= 4
    assert kinds[SiteKind.RAIL_LOADING] >= 2
    assert kinds[SiteKind.CHARGING_STATION] + kinds[SiteKind.SWAP_STATION] >= 4
    assert kinds[SiteKind.PLATOON_HUB] >= 2
    named = {
        "haerwusu-mine", "heidaigou-mine", "bulianta-mine", "chaonaoliang-mine",
        "hongqingliang-mine", "bayangaole-mine", "jianyuan-mine", "baijialiang-mine",
        "dalu-park", "otog-edz", "suancigou-ps", "zhujiaping-ps", "xuejiawan-ps", "jungar-edz",
        "haerwusu-loop", "kargobot-otog-charging", "dianshigou-1", "dianshigou-2",
    }  # fmt: skip
    assert named <= set(net.sites)
    assert net.sites["dalu-park"].kind is SiteKind.CHEMICAL_PARK
    assert net.sites["otog-edz"].kind is SiteKind.CHEMICAL_PARK
    # the Otog operations centre's 110 charging posts (DESIGN.md; ordos-sites.md §7)
    assert net.sites["kargobot-otog-charging"].capacity == 110


def test_design_towns_are_where_design_md_puts_them(net: RoadNetwork) -> None:
    for sid, (lat, lon) in DESIGN_TOWNS.items():
        s = net.sites[sid]
        assert s.kind is SiteKind.TOWN
        # the sites table is more precise (Baotou: the municipal government, ~10 km from
        # DESIGN.md's point in a city ~30 km across); estimates are good to about 0.1°
        assert haversine_m(s.lon, s.lat, lon, lat) <= 12_000.0, sid


def test_every_site_has_english_and_chinese_names_and_a_source(net: RoadNetwork) -> None:
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for s in net.sites.values():
        assert s.name_en.strip() and not cjk.search(s.name_en), s.id
        assert cjk.search(s.name_zh), s.id
        assert s.source.strip(), s.id
        assert re.search(r"\[(V|S|S-est|V-approx)\]", s.confidence), s.id
    assert (
        net.sites["wulan"].name_en.startswith("Otog") and "鄂托克旗" in net.sites["wulan"].name_zh
    )


def test_sites_sit_at_their_node(net: RoadNetwork) -> None:
    for s in net.sites.values():
        n = net.nodes[s.node]
        assert haversine_m(s.lon, s.lat, n.lon, n.lat) < 100.0, s.id


def test_every_site_reaches_every_other(net: RoadNetwork) -> None:
    hub = net.sites["dongsheng"].node
    for s in net.sites.values():
        assert math.isfinite(_route_m(net, hub, s.node)[0]), s.id
        assert math.isfinite(_route_m(net, s.node, hub)[0]), s.id


# --------------------------------------------------------------------------------------------
# Distances


@pytest.mark.parametrize(("a", "b"), list(TOWN_DISTANCES_KM), ids="-".join)
def test_route_distance_within_15_percent_of_reference(net: RoadNetwork, a: str, b: str) -> None:
    ref = TOWN_DISTANCES_KM[(a, b)]
    na, nb = net.sites[a].node, net.sites[b].node
    there = _route_m(net, na, nb)[0] / 1000
    back = _route_m(net, nb, na)[0] / 1000
    assert abs(there / ref.km - 1) <= DISTANCE_TOLERANCE, (there, ref)
    assert back == pytest.approx(there, abs=0.01)


def test_reference_table_is_labelled() -> None:
    for ref in TOWN_DISTANCES_KM.values():
        assert ref.confidence in ("[V]", "[S]", "[S-est]")
        assert ref.low_km <= ref.km <= ref.high_km and ref.source
        if ref.confidence == "[S-est]":
            assert ref.low_km < ref.high_km and "§6b" in ref.source
    assert sum(r.confidence != "[S-est]" for r in TOWN_DISTANCES_KM.values()) >= 4


def test_ordos_baotou_corridor_is_motorway_all_the_way(net: RoadNetwork) -> None:
    d_m, path = _route_m(net, "kangbashi", "baotou", lambda e: e.road_class is RoadClass.MOTORWAY)
    assert path, "no motorway route Kangbashi -> Baotou"
    assert {e.name for e in path} == {"G65"}
    assert [e.to_node for e in path][-1] == "baotou"
    assert abs(d_m / 1000 / TOWN_DISTANCES_KM[("kangbashi", "baotou")].km - 1) <= 0.15


# --------------------------------------------------------------------------------------------
# Geometry, elevations and grades


def test_edge_length_is_its_polyline_length(net: RoadNetwork) -> None:
    for e in net.edges.values():
        assert e.length_m == pytest.approx(polyline_length_m(e.geometry), abs=0.01), e.id
        a, b = net.nodes[e.from_node], net.nodes[e.to_node]
        assert e.geometry[0] == (a.lon, a.lat) and e.geometry[-1] == (b.lon, b.lat), e.id
        # a road is never shorter than the great circle, nor absurdly longer
        gc = haversine_m(a.lon, a.lat, b.lon, b.lat)
        assert 1.0 <= e.length_m / gc <= 1.4, e.id


def test_every_road_runs_both_ways(net: RoadNetwork) -> None:
    for e in net.edges.values():
        back = net.edges[f"{e.to_node}__{e.from_node}"]
        assert back.length_m == pytest.approx(e.length_m, abs=0.01)
        assert back.geometry == e.geometry[::-1]
        assert (back.road_class, back.lanes, back.name) == (e.road_class, e.lanes, e.name)


def test_expressways_have_two_lanes_per_direction_at_100_kmh(net: RoadNetwork) -> None:
    motorways = [e for e in net.edges.values() if e.road_class is RoadClass.MOTORWAY]
    assert {e.name for e in motorways} == {"G65", "G18"}
    assert all(
        e.lanes == 2 and e.speed_limit_mps == pytest.approx(100 / 3.6, abs=0.01) for e in motorways
    )


def test_elevations_within_the_region(net: RoadNetwork) -> None:
    # DESIGN.md: elevation runs from about 850 m to 2,150 m
    zs = [n.elevation_m for n in net.nodes.values()]
    zs += [z for e in net.edges.values() for z in e.elevation_m]
    assert min(zs) >= 850.0 and max(zs) <= 2150.0
    # sourced values: Yellow River plain at Shulinzhao, plateau at Dongsheng (ordos-sites.md §1)
    assert net.nodes["shulinzhao"].elevation_m == 1009
    assert net.nodes["dongsheng"].elevation_m == 1299
    assert net.nodes["baotou"].elevation_m == 1065


def test_grades_derive_from_the_elevation_profile(net: RoadNetwork) -> None:
    arrays = net.to_arrays()
    for k, e in enumerate(net.edges.values()):
        s, z = np.asarray(e.stations_m), np.asarray(e.elevation_m)
        assert len(s) >= 2 and s[0] == 0.0 and s[-1] == e.length_m, e.id
        assert np.all(np.diff(s) > 0), e.id
        # the profile starts and ends at the nodes' elevations
        z0, z1 = net.nodes[e.from_node].elevation_m, net.nodes[e.to_node].elevation_m
        assert (z[0], z[-1]) == (z0, z1), e.id
        np.testing.assert_allclose(e.grades(), np.diff(z) / np.diff(s))
        assert e.mean_grade() == pytest.approx((z1 - z0) / e.length_m)
        assert arrays.edge_grade[k] == pytest.approx((z1 - z0) / e.length_m)
        # and no segment is steeper than the design standard allows at that speed
        speed_kmh = round(e.speed_limit_mps * 3.6)
        limit = JTG_MAX_GRADE[min((v for v in JTG_MAX_GRADE if v >= speed_kmh), default=120)]
        assert np.abs(e.grades()).max() <= limit, e.id


def test_profiles_have_relief_between_the_ends(net: RoadNetwork) -> None:
    g65 = net.edges["shulinzhao__dongsheng"]
    z = np.asarray(g65.elevation_m)
    straight = np.interp(g65.stations_m, [0, g65.length_m], [z[0], z[-1]])
    assert np.abs(z - straight).max() > 10.0  # not just a straight ramp
    assert len(g65.stations_m) == len(g65.geometry)  # sampled at every shape point


# --------------------------------------------------------------------------------------------
# Roadside units and junctions


def test_rsus_line_the_main_corridors(net: RoadNetwork) -> None:
    assert len(net.rsus) >= 60
    by_road: dict[str, list[float]] = {}
    for r in net.rsus.values():
        e = net.edges[r.edge]
        assert e.road_class is RoadClass.MOTORWAY and e.name in ("G65", "G18"), r.id
        assert r.radius_m == 500.0
        # the RSU stands on the road's polyline at its offset
        k = max(1, int(np.searchsorted(e.stations_m, r.offset_m)))
        f = (r.offset_m - e.stations_m[k - 1]) / (e.stations_m[k] - e.stations_m[k - 1])
        (x0, y0), (x1, y1) = e.geometry[k - 1], e.geometry[k]
        assert haversine_m(r.lon, r.lat, x0 + f * (x1 - x0), y0 + f * (y1 - y0)) < 1.0, r.id
        by_road.setdefault(e.name, []).append(r.offset_m)
    assert set(by_road) == {"G65", "G18"}
    for name in ("G65", "G18"):
        rsus = sorted(
            (r for r in net.rsus.values() if net.edges[r.edge].name == name),
            key=lambda r: int(r.id.rsplit("-", 1)[1]),
        )
        for r0, r1 in itertools.pairwise(rsus):
            gap = haversine_m(r0.lon, r0.lat, r1.lon, r1.lat)
            assert 3_000.0 <= gap <= 10_000.0, (r0.id, r1.id, gap)


def test_a_signal_and_a_roundabout(net: RoadNetwork) -> None:
    signals = [n for n in net.nodes.values() if n.junction is JunctionType.TRAFFIC_SIGNAL]
    assert signals and all(n.signal is not None for n in signals)
    for n in signals:
        assert n.signal is not None
        incoming = {e.id for e in net.edges.values() if e.to_node == n.id}
        greens = {g for ph in n.signal.phases for g in ph.green_edges}
        assert greens == incoming  # every approach gets green, and only approaches
    assert any(n.junction is JunctionType.ROUNDABOUT for n in net.nodes.values())


# --------------------------------------------------------------------------------------------
# The shipped files


def test_shipped_files_are_what_make_ordos_writes(net: RoadNetwork) -> None:
    from convoy.road.data import make_ordos

    built = make_ordos.build()
    assert built == net
    assert (DATA / "ordos.geojson").read_text(encoding="utf-8") == make_ordos.geojson_text(built)
    assert (DATA / "ORDOS_NOTES.md").read_text(encoding="utf-8") == make_ordos.notes(built)


def test_package_data_ships_the_map() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = cfg["tool"]["setuptools"]["package-data"]["convoy"]
    for name in ("ordos.geojson", "ORDOS_NOTES.md"):
        rel = f"road/data/{name}"
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", head[16:24])
    return int(w), int(h)


def test_convoy_map_writes_geojson_and_png(tmp_path: Path) -> None:
    gj, png = tmp_path / "ordos.geojson", tmp_path / "ordos.png"
    r = subprocess.run(
        [*CONVOY, "map", "--geojson", str(gj), "--png", str(png)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert read_geojson(gj) == ordos_network()
    w, h = _png_size(png)
    assert w >= 1000 and h >= 600
    for needle in ("coal mine", "roadside units", "motorway", "elevation"):
        assert needle in r.stdout
    assert f"{len(ordos_network().rsus)}" in r.stdout


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--png", "no/such/dir/map.png", "does not exist"),
        ("--geojson", ".", "is a directory"),
    ],
)
def test_convoy_map_bad_path_gets_one_line_and_exit_2(
    tmp_path: Path, flag: str, value: str, needle: str
) -> None:
    r = subprocess.run(
        [*CONVOY, "map", flag, value], capture_output=True, text=True, timeout=300,
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert flag in lines[0]
