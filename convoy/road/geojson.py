"""A ``RoadNetwork`` as GeoJSON (RFC 7946) and back, exactly.

One ``FeatureCollection`` holds the whole network; each feature's ``properties.kind`` says
what it is:

- ``"node"``: a ``Point`` at (lon, lat) with ``id``, ``elevation_m``, ``junction`` and, for a
  traffic signal, ``signal`` (``{"offset_s", "phases": [{"duration_s", "green_edges"}]}``);
- ``"edge"``: a ``LineString`` along the edge's geometry (``null`` when it has none) with
  ``id``, ``from``, ``to``, ``length_m``, ``lanes``, ``speed_limit_mps``, ``road_class``,
  ``stations_m``, ``elevation_m``, ``max_weight_t`` and ``name``;
- ``"site"``: a ``Point`` with ``id``, ``site_kind``, ``name_en``, ``name_zh``, ``node``,
  ``capacity``, ``source`` and ``confidence``;
- ``"rsu"``: a ``Point`` with ``id``, ``edge``, ``offset_m`` and ``radius_m``.

The collection's ``name`` is the network's name. Numbers are written with Python's shortest
round-tripping repr, so ``network_from_geojson(network_to_geojson(net)) == net`` field for field.
Fields that have a default in ``convoy.road.network`` may be left out of a hand-written file.
A malformed file raises ``NetworkError`` naming the feature and the field, never a ``KeyError``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

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
)

FEATURE_KINDS = ("node", "edge", "site", "rsu")

_E = TypeVar("_E", JunctionType, RoadClass, SiteKind)

# --------------------------------------------------------------------------------------------
# network -> GeoJSON


def _point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def _signal_to_json(plan: SignalPlan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    return {
        "offset_s": plan.offset_s,
        "phases": [
            {"duration_s": ph.duration_s, "green_edges": list(ph.green_edges)} for ph in plan.phases
        ],
    }


def _node_feature(n: Node) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": _point(n.lon, n.lat),
        "properties": {
            "kind": "node",
            "id": n.id,
            "elevation_m": n.elevation_m,
            "junction": n.junction.value,
            "signal": _signal_to_json(n.signal),
        },
    }


def _edge_feature(e: Edge) -> dict[str, Any]:
    geometry = (
        {"type": "LineString", "coordinates": [[lon, lat] for lon, lat in e.geometry]}
        if e.geometry
        else None
    )
    return {
        "type": "Feature",
        "geometry": geometry,
        "properties": {
            "kind": "edge",
            "id": e.id,
            "from": e.from_node,
            "to": e.to_node,
            "length_m": e.length_m,
            "lanes": e.lanes,
            "speed_limit_mps": e.speed_limit_mps,
            "road_class": e.road_class.value,
            "stations_m": list(e.stations_m),
            "elevation_m": list(e.elevation_m),
            "max_weight_t": e.max_weight_t,
            "name": e.name,
        },
    }


def _site_feature(s: Site) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": _point(s.lon, s.lat),
        "properties": {
            "kind": "site",
            "id": s.id,
            "site_kind": s.kind.value,
            "name_en": s.name_en,
            "name_zh": s.name_zh,
            "node": s.node,
            "capacity": s.capacity,
            "source": s.source,
            "confidence": s.confidence,
        },
    }


def _rsu_feature(r: RoadsideUnit) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": _point(r.lon, r.lat),
        "properties": {
            "kind": "rsu",
            "id": r.id,
            "edge": r.edge,
            "offset_m": r.offset_m,
            "radius_m": r.radius_m,
        },
    }


def network_to_geojson(net: RoadNetwork, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The network as a GeoJSON ``FeatureCollection`` (a plain dict, ready for ``json``).

    Args:
        net: the network.
        meta: optional JSON-able notes written as the collection's ``meta`` member (ignored
            when read back).
    """
    features = (
        [_node_feature(n) for n in net.nodes.values()]
        + [_edge_feature(e) for e in net.edges.values()]
        + [_site_feature(s) for s in net.sites.values()]
        + [_rsu_feature(r) for r in net.rsus.values()]
    )
    out: dict[str, Any] = {"type": "FeatureCollection", "name": net.name}
    if meta:
        out["meta"] = dict(meta)
    out["features"] = features
    return out


def dumps_geojson(obj: Mapping[str, Any]) -> str:
    """A FeatureCollection as text: one feature per line, UTF-8 names kept readable.

    Raises:
        NetworkError: a number is NaN or infinite (JSON cannot hold it).
    """

    def enc(x: Any) -> str:
        try:
            return json.dumps(x, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except ValueError as exc:
            raise NetworkError(f"cannot write GeoJSON: {exc}") from None

    head = {k: v for k, v in obj.items() if k != "features"}
    lines = [f"{enc(k)}:{enc(v)}," for k, v in head.items()]
    feats = ",\n".join(enc(f) for f in obj.get("features", []))
    return "{\n" + "\n".join(lines) + '\n"features":[\n' + feats + "\n]}\n"


def write_geojson(
    net: RoadNetwork, path: str | Path, meta: Mapping[str, Any] | None = None
) -> None:
    """Write ``net`` to ``path`` as GeoJSON (UTF-8)."""
    Path(path).write_text(dumps_geojson(network_to_geojson(net, meta)), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# GeoJSON -> network: every access is checked, every error names the feature and the field

_MISSING = object()


class _Props:
    """The properties of one feature, read with checks that name the feature and field."""

    def __init__(self, where: str, props: Mapping[str, Any]) -> None:
        self.where = where
        self.props = props

    def fail(self, key: str, value: Any, what: str) -> NetworkError:
        return NetworkError(f"{self.where}: field {key!r} = {value!r}: {what}")

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.props:
            return self.props[key]
        if default is _MISSING:
            raise NetworkError(f"{self.where}: missing field {key!r}")
        return default

    def str_(self, key: str, default: Any = _MISSING) -> str:
        v = self.get(key, default)
        if not isinstance(v, str):
            raise self.fail(key, v, "must be a string")
        return v

    def id_(self, key: str) -> str:
        v = self.str_(key)
        if not v:
            raise self.fail(key, v, "must be a non-empty string")
        return v

    def num(self, key: str, default: Any = _MISSING) -> float:
        return _as_float(self, key, self.get(key, default))

    def opt_num(self, key: str) -> float | None:
        v = self.get(key, None)
        return None if v is None else _as_float(self, key, v)

    def int_(self, key: str, default: Any = _MISSING) -> int:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(key, v, "must be an integer")
        return v

    def nums(self, key: str) -> tuple[float, ...]:
        v = self.get(key, [])
        if not isinstance(v, list):
            raise self.fail(key, v, "must be a list of numbers")
        return tuple(_as_float(self, f"{key}[{k}]", x) for k, x in enumerate(v))

    def enum(self, key: str, cls: type[_E], default: Any = _MISSING) -> _E:
        v = self.get(key, default)
        try:
            return cls(v)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in cls)
            raise self.fail(key, v, f"not allowed; allowed: {allowed}") from None


def _as_float(p: _Props, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise p.fail(key, v, "must be a number")
    if not math.isfinite(v):
        raise p.fail(key, v, "must be finite")
    return float(v)


def _position(p: _Props, key: str, v: Any) -> tuple[float, float]:
    if not isinstance(v, list) or len(v) < 2:
        raise p.fail(key, v, "must be a position [lon, lat]")
    lon = _as_float(p, key, v[0])
    lat = _as_float(p, key, v[1])
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise p.fail(key, v, "lon must lie in [-180, 180] and lat in [-90, 90]")
    return lon, lat


def _geometry(p: _Props, feature: Mapping[str, Any], want: str, optional: bool) -> Any:
    g = feature.get("geometry", _MISSING)
    if g is None and optional:
        return None
    if not isinstance(g, Mapping):
        raise NetworkError(f"{p.where}: missing or malformed 'geometry'; must be a {want}")
    if g.get("type") != want:
        raise p.fail("geometry.type", g.get("type"), f"must be {want!r}")
    if "coordinates" not in g:
        raise NetworkError(f"{p.where}: missing field 'geometry.coordinates'")
    return g["coordinates"]


def _signal(p: _Props) -> SignalPlan | None:
    v = p.get("signal", None)
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise p.fail("signal", v, "must be an object with 'phases' and 'offset_s'")
    sp = _Props(p.where, v)
    raw = sp.get("phases")
    if not isinstance(raw, list):
        raise p.fail("signal.phases", raw, "must be a list")
    phases = []
    for k, ph in enumerate(raw):
        if not isinstance(ph, Mapping):
            raise p.fail(f"signal.phases[{k}]", ph, "must be an object")
        pp = _Props(f"{p.where}, signal phase {k}", ph)
        green = pp.get("green_edges", [])
        if not isinstance(green, list) or not all(isinstance(g, str) for g in green):
            raise pp.fail("green_edges", green, "must be a list of edge ids")
        phases.append(SignalPhase(duration_s=pp.num("duration_s"), green_edges=tuple(green)))
    return SignalPlan(phases=tuple(phases), offset_s=sp.num("offset_s", 0.0))


def _read_node(p: _Props, f: Mapping[str, Any]) -> Node:
    lon, lat = _position(p, "geometry.coordinates", _geometry(p, f, "Point", False))
    return Node(
        id=p.id_("id"),
        lon=lon,
        lat=lat,
        elevation_m=p.num("elevation_m", 0.0),
        junction=p.enum("junction", JunctionType, JunctionType.PRIORITY.value),
        signal=_signal(p),
    )


def _read_edge(p: _Props, f: Mapping[str, Any]) -> Edge:
    coords = _geometry(p, f, "LineString", True)
    geometry: tuple[tuple[float, float], ...] = ()
    if coords is not None:
        if not isinstance(coords, list) or len(coords) < 2:
            raise p.fail("geometry.coordinates", coords, "a LineString needs >= 2 positions")
        geometry = tuple(
            _position(p, f"geometry.coordinates[{k}]", c) for k, c in enumerate(coords)
        )
    return Edge(
        id=p.id_("id"),
        from_node=p.id_("from"),
        to_node=p.id_("to"),
        length_m=p.num("length_m"),
        lanes=p.int_("lanes", 1),
        speed_limit_mps=p.num("speed_limit_mps", 22.2),
        road_class=p.enum("road_class", RoadClass, RoadClass.PRIMARY.value),
        geometry=geometry,
        stations_m=p.nums("stations_m"),
        elevation_m=p.nums("elevation_m"),
        max_weight_t=p.opt_num("max_weight_t"),
        name=p.str_("name", ""),
    )


def _read_site(p: _Props, f: Mapping[str, Any]) -> Site:
    lon, lat = _position(p, "geometry.coordinates", _geometry(p, f, "Point", False))
    return Site(
        id=p.id_("id"),
        kind=p.enum("site_kind", SiteKind),
        name_en=p.str_("name_en"),
        name_zh=p.str_("name_zh"),
        node=p.id_("node"),
        lon=lon,
        lat=lat,
        capacity=p.opt_num("capacity"),
        source=p.str_("source", ""),
        confidence=p.str_("confidence", ""),
    )


def _read_rsu(p: _Props, f: Mapping[str, Any]) -> RoadsideUnit:
    lon, lat = _position(p, "geometry.coordinates", _geometry(p, f, "Point", False))
    return RoadsideUnit(
        id=p.id_("id"),
        edge=p.id_("edge"),
        offset_m=p.num("offset_m"),
        lon=lon,
        lat=lat,
        radius_m=p.num("radius_m", 500.0),
    )


_READERS: dict[str, Callable[[_Props, Mapping[str, Any]], Any]] = {
    "node": _read_node,
    "edge": _read_edge,
    "site": _read_site,
    "rsu": _read_rsu,
}


def network_from_geojson(obj: Any, source: str = "GeoJSON") -> RoadNetwork:
    """Build a ``RoadNetwork`` from a GeoJSON ``FeatureCollection`` written by this module.

    Args:
        obj: the parsed JSON.
        source: what to call the input in error messages (a file name).

    Raises:
        NetworkError: malformed input (naming the feature and the field) or an inconsistent
            network (see ``RoadNetwork.build``).
    """
    if not isinstance(obj, Mapping) or obj.get("type") != "FeatureCollection":
        raise NetworkError(f"{source}: not a GeoJSON FeatureCollection")
    features = obj.get("features")
    if not isinstance(features, list):
        raise NetworkError(f"{source}: 'features' must be a list")
    name = obj.get("name", "network")
    if not isinstance(name, str):
        raise NetworkError(f"{source}: 'name' = {name!r}: must be a string")
    parts: dict[str, list[Any]] = {k: [] for k in FEATURE_KINDS}
    for i, f in enumerate(features):
        where = f"{source}: feature {i}"
        if not isinstance(f, Mapping) or not isinstance(f.get("properties"), Mapping):
            raise NetworkError(f"{where}: not a GeoJSON Feature with 'properties'")
        props = f["properties"]
        kind = props.get("kind")
        if kind not in _READERS:
            allowed = ", ".join(repr(k) for k in FEATURE_KINDS)
            raise NetworkError(f"{where}: field 'kind' = {kind!r}: allowed: {allowed}")
        fid = props.get("id")
        if isinstance(fid, str):
            where = f"{where} ({kind} {fid!r})"
        parts[kind].append(_READERS[kind](_Props(where, props), f))
    try:
        return RoadNetwork.build(
            parts["node"], parts["edge"], parts["site"], name=name, rsus=parts["rsu"]
        )
    except NetworkError as exc:
        raise NetworkError(f"{source}: {exc}") from None


def read_geojson(path: str | Path) -> RoadNetwork:
    """Read a network written by ``write_geojson``.

    Raises:
        NetworkError: the file is not valid JSON or not a valid network (the message names
            the file, the feature and the field).
        OSError: the file cannot be read.
    """
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise NetworkError(f"{p}: not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise NetworkError(f"{p}: not UTF-8 text: {exc}") from None
    return network_from_geojson(obj, source=str(p))
