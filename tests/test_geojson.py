"""GeoJSON export and import: exact round trips, and malformed input named precisely."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from convoy.road.geojson import (
    dumps_geojson,
    network_from_geojson,
    network_to_geojson,
    read_geojson,
    write_geojson,
)
from convoy.road.network import (
    Edge,
    JunctionType,
    NetworkError,
    Node,
    RoadClass,
    RoadNetwork,
    RoadsideUnit,
    SignalPhase,
    SignalPlan,
    Site,
    SiteKind,
    polyline_length_m,
)
from convoy.road.ordos import ordos_network


def _hand_made() -> RoadNetwork:
    """Three nodes, a signal, edges with and without geometry, sites and an RSU."""
    plan = SignalPlan(
        phases=(SignalPhase(30.0, ("a__b",)), SignalPhase(3.0, ()), SignalPhase(27.5, ("c__b",))),
        offset_s=12.25,
    )
    nodes = [
        Node("a", 109.917, 39.767, 1299.0),
        Node("b", 109.851, 39.6855, 1302.1, JunctionType.TRAFFIC_SIGNAL, plan),
        Node("c", 109.785, 39.604, 1305.0, JunctionType.DEAD_END),
    ]
    geom_ab = ((109.917, 39.767), (109.9, 39.73), (109.851, 39.6855))
    length_ab = polyline_length_m(geom_ab)
    edges = [
        Edge(
            "a__b", "a", "b", length_ab, 2, 100 / 3.6, RoadClass.MOTORWAY, geom_ab,
            (0.0, length_ab / 3, length_ab), (1299.0, 1320.3, 1302.1), 49.0, "G65",
        ),
        Edge("b__a", "b", "a", length_ab, 2, 27.78, RoadClass.MOTORWAY, geom_ab[::-1], name="G65"),
        Edge("c__b", "c", "b", 12_345.678, road_class=RoadClass.SERVICE),
        Edge("b__c", "b", "c", 12_345.678, lanes=1, max_weight_t=None, name="access: 康巴什"),
    ]  # fmt: skip
    sites = [
        Site("town-a", SiteKind.TOWN, "Dongsheng", "东胜区", "a", 109.917, 39.767, None,
             "https://en.wikipedia.org/wiki/Dongsheng", "[V]"),
        Site("mine-c", SiteKind.COAL_MINE, "A mine", "某煤矿", "c", 109.79, 39.6, 4.5, "", ""),
    ]  # fmt: skip
    rsus = [RoadsideUnit("rsu-1", "a__b", length_ab / 2, 109.9, 39.73, 450.0)]
    return RoadNetwork.build(nodes, edges, sites, name="hand-made", rsus=rsus)


def _same(a: RoadNetwork, b: RoadNetwork) -> None:
    """Field-for-field equality, element by element, for a readable failure."""
    assert a.name == b.name
    for attr in ("nodes", "edges", "sites", "rsus"):
        ma, mb = getattr(a, attr), getattr(b, attr)
        assert list(ma) == list(mb), attr
        for k in ma:
            assert ma[k] == mb[k], f"{attr} {k!r}"
    assert a == b


@pytest.mark.parametrize("make", [_hand_made, ordos_network], ids=["hand-made", "ordos"])
def test_round_trip_is_exact_through_dict_text_and_file(make: Any, tmp_path: Path) -> None:
    net = make()
    _same(network_from_geojson(network_to_geojson(net)), net)
    _same(network_from_geojson(json.loads(dumps_geojson(network_to_geojson(net)))), net)
    path = tmp_path / "net.geojson"
    write_geojson(net, path)
    _same(read_geojson(path), net)
    # writing what was read gives the same bytes: the format is stable
    write_geojson(read_geojson(path), tmp_path / "again.geojson")
    assert (tmp_path / "again.geojson").read_bytes() == path.read_bytes()


def test_geojson_is_plain_rfc7946() -> None:
    obj = json.loads(dumps_geojson(network_to_geojson(_hand_made())))
    assert obj["type"] == "FeatureCollection" and obj["name"] == "hand-made"
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for f in obj["features"]:
        assert f["type"] == "Feature"
        by_kind.setdefault(f["properties"]["kind"], []).append(f)
    assert {k: len(v) for k, v in by_kind.items()} == {"node": 3, "edge": 4, "site": 2, "rsu": 1}
    assert all(
        f["geometry"]["type"] == "Point" for k in ("node", "site", "rsu") for f in by_kind[k]
    )
    ab = next(f for f in by_kind["edge"] if f["properties"]["id"] == "a__b")
    assert ab["geometry"]["type"] == "LineString"
    assert ab["geometry"]["coordinates"][0] == [109.917, 39.767]  # lon, lat order
    # an edge without geometry has a null geometry, which RFC 7946 allows
    assert next(f for f in by_kind["edge"] if f["properties"]["id"] == "c__b")["geometry"] is None
    assert by_kind["site"][0]["properties"]["name_zh"] == "东胜区"


def test_minimal_hand_written_file_takes_the_model_defaults() -> None:
    obj = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [109.0, 39.0]},
             "properties": {"kind": "node", "id": "x"}},
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [109.1, 39.0]},
             "properties": {"kind": "node", "id": "y"}},
            {"type": "Feature", "geometry": None,
             "properties": {"kind": "edge", "id": "x__y", "from": "x", "to": "y",
                            "length_m": 8600}},
        ],
    }  # fmt: skip
    net = network_from_geojson(obj)
    assert net.name == "network"
    assert net.nodes["x"] == Node("x", 109.0, 39.0)
    assert net.edges["x__y"] == Edge("x__y", "x", "y", 8600.0)


def _hand_obj() -> dict[str, Any]:
    return network_to_geojson(_hand_made())


def _feature(obj: dict[str, Any], kind: str, fid: str) -> tuple[int, dict[str, Any]]:
    for i, f in enumerate(obj["features"]):
        if f["properties"]["kind"] == kind and f["properties"]["id"] == fid:
            return i, f
    raise AssertionError(f"no {kind} {fid}")


@pytest.mark.parametrize(
    ("kind", "fid", "mutate", "needles"),
    [
        ("edge", "a__b", lambda f: f["properties"].pop("length_m"), ["missing field 'length_m'"]),
        ("edge", "a__b", lambda f: f["properties"].update(lanes="two"), ["'lanes'", "integer"]),
        ("edge", "a__b", lambda f: f["properties"].update(lanes=True), ["'lanes'", "integer"]),
        (
            "edge",
            "a__b",
            lambda f: f["properties"].update(road_class="highway"),
            ["'road_class'", "'highway'", "'motorway'"],
        ),
        (
            "edge",
            "a__b",
            lambda f: f["properties"].update(elevation_m=[1299, "high", 1302]),
            ["'elevation_m[1]'", "number"],
        ),
        (
            "edge",
            "a__b",
            lambda f: f["geometry"].update(coordinates=[[109.9, 39.7]]),
            ["geometry.coordinates", ">= 2 positions"],
        ),
        (
            "edge",
            "a__b",
            lambda f: f["properties"].update(to="nowhere"),
            ["unknown node 'nowhere'"],
        ),
        (
            "edge",
            "a__b",
            lambda f: f["properties"].update(stations_m=[0.0, 1.0]),
            ["2 stations but 3 elevations"],
        ),
        ("node", "b", lambda f: f["geometry"].update(coordinates=[109.9]), ["[lon, lat]"]),
        (
            "node",
            "b",
            lambda f: f["geometry"].update(coordinates=[39.6, 109.8]),
            ["lat in [-90, 90]"],
        ),
        ("node", "b", lambda f: f["geometry"].update(type="Polygon"), ["'Point'"]),
        ("node", "b", lambda f: f.pop("geometry"), ["'geometry'"]),
        (
            "node",
            "b",
            lambda f: f["properties"]["signal"]["phases"][0].pop("duration_s"),
            ["signal phase 0", "missing field 'duration_s'"],
        ),
        ("node", "b", lambda f: f["properties"].update(junction="stop"), ["'junction'", "'stop'"]),
        ("site", "mine-c", lambda f: f["properties"].pop("name_zh"), ["missing field 'name_zh'"]),
        (
            "site",
            "mine-c",
            lambda f: f["properties"].update(site_kind="quarry"),
            ["'site_kind'", "'coal_mine'"],
        ),
        ("site", "mine-c", lambda f: f["properties"].update(capacity="big"), ["'capacity'"]),
        ("rsu", "rsu-1", lambda f: f["properties"].update(offset_m=1e9), ["'rsu-1'", "offset_m"]),
        ("rsu", "rsu-1", lambda f: f["properties"].pop("edge"), ["missing field 'edge'"]),
    ],
)
def test_malformed_feature_is_named_with_its_field(
    kind: str, fid: str, mutate: Any, needles: list[str]
) -> None:
    obj = _hand_obj()
    i, f = _feature(obj, kind, fid)
    mutate(f)
    with pytest.raises(NetworkError) as err:
        network_from_geojson(obj, source="x.geojson")
    msg = str(err.value)
    assert msg.startswith("x.geojson: ")
    assert "\n" not in msg
    if "unknown node" not in msg and "stations but" not in msg and "offset_m =" not in msg:
        # field errors name the feature by position, kind and id
        assert f"feature {i} ({kind} {fid!r})" in msg
    for needle in needles:
        assert needle in msg, msg


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ([], "not a GeoJSON FeatureCollection"),
        ({"type": "Feature"}, "not a GeoJSON FeatureCollection"),
        ({"type": "FeatureCollection", "features": {}}, "'features' must be a list"),
        ({"type": "FeatureCollection", "features": [42]}, "feature 0: not a GeoJSON Feature"),
        (
            {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}}]},
            "feature 0: field 'kind' = None: allowed: 'node', 'edge', 'site', 'rsu'",
        ),
    ],
)
def test_malformed_collection_gets_one_clear_message(obj: Any, needle: str) -> None:
    with pytest.raises(NetworkError) as err:
        network_from_geojson(copy.deepcopy(obj))
    assert needle in str(err.value)


def test_duplicate_id_is_named() -> None:
    obj = _hand_obj()
    _, f = _feature(obj, "node", "c")
    obj["features"].append(copy.deepcopy(f))
    with pytest.raises(NetworkError, match="node 'c' is defined twice"):
        network_from_geojson(obj)


def test_bad_file_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "broken.geojson"
    p.write_text('{"type": "FeatureCollection", "features": [', encoding="utf-8")
    with pytest.raises(NetworkError, match=r"broken\.geojson: not valid JSON"):
        read_geojson(p)


def test_non_finite_number_cannot_be_written() -> None:
    net = _hand_made()
    bad = RoadNetwork.build(
        [*net.nodes.values(), Node("d", 109.0, 39.0, math.nan)], net.edges.values()
    )
    with pytest.raises(NetworkError, match="cannot write GeoJSON"):
        dumps_geojson(network_to_geojson(bad))
