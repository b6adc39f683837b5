"""Outputs of the network engine (``convoy.sim.network``): floating-car data placed on the
map, SUMO's FCD XML, the event log and per-vehicle statistics.

FCD table (``net_fcd_table``), one row per vehicle on the road per record time, time-major.
Columns, in order: DESIGN.md's FCD contract first, then the network's own columns:

==============  ======================================================================
column          meaning
==============  ======================================================================
``time_s``      record time [s]
``vehicle_id``  dictionary-encoded id (``id#k`` for instance k of a batch)
``pos_m``       front bumper's distance from the start of its edge [m]
``speed_mps``   speed [m/s]
``accel_mps2``  acceleration [m/s²]
``gap_m``       bumper-to-bumper gap to the leader [m]; null where it sees none
``edge``        dictionary-encoded edge id
``lane``        lane index, 0 the rightmost (SUMO's numbering)
``lon, lat``    WGS84 degrees of the front bumper on the edge's geometry
``energy_kwh``  energy used since departure [kWh] (0 for vehicles that book none: cars)
``mode``        dictionary-encoded control mode (``convoy.vehicle.controllers.MODE_NAMES``:
                0-4 are SUMO's ACC/CACC modes, ``follow`` is IDM car following)
``instance``    batch instance; only when the batch has more than one
==============  ======================================================================

``lon, lat`` place ``pos_m / length_m`` of the way along the edge's polyline, measured
along great circles, and interpolate linearly inside the segment that holds it (segments
are short enough that the chord and the arc differ by millimetres). An edge without a
geometry runs straight from its ``from_node`` to its ``to_node``.

Events (``net_events``) use the keys of ``convoy.sim.events`` and ``convoy.cloud.supervision``
(``t_s``, ``type``, ``vehicle_id``) so the logs merge by time; the engine's kinds become
types with underscores (``arrive-site`` -> ``arrive_site``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast
from xml.sax.saxutils import escape

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from convoy.road.network import EARTH_RADIUS_M, RoadNetwork
from convoy.sim import net_kernel as nk
from convoy.sim.network import NetResult
from convoy.vehicle.controllers import MODE_NAMES

NET_FCD_COLUMNS = (
    "time_s",
    "vehicle_id",
    "pos_m",
    "speed_mps",
    "accel_mps2",
    "gap_m",
    "edge",
    "lane",
    "lon",
    "lat",
    "energy_kwh",
    "mode",
)

#: Names of the engine's final vehicle states (``net_kernel.ST_*``), indexed by code.
STATUS_NAMES = ("waiting", "driving", "dwelling", "done", "removed", "shoulder")
assert (
    nk.ST_WAITING,
    nk.ST_DRIVING,
    nk.ST_DWELLING,
    nk.ST_DONE,
    nk.ST_REMOVED,
    nk.ST_SHOULDER,
) == (
    0,
    1,
    2,
    3,
    4,
    5,
)

#: Decimals of lon/lat in the FCD XML (SUMO's ``--precision.geo``; SUMO's default is 6,
#: about 0.1 m; 8 keeps millimetres, below the engine's centimetre positions).
GEO_DECIMALS = 8
#: SUMO's id of the vehicle type it uses when none is given.
SUMO_DEFAULT_VTYPE = "DEFAULT_VEHTYPE"
#: Rows of FCD XML formatted at a time (the text of one block is held in memory).
_XML_BLOCK_ROWS = 1 << 16


class NetOutputError(ValueError):
    """A result and a network (or a path) that do not fit; the message says what and why."""


# ---------------------------------------------------------------------------------------------
# Placing positions on the map
# ---------------------------------------------------------------------------------------------
def _haversine_m(
    lon1: NDArray[np.float64], lat1: NDArray[np.float64], lon2: NDArray[np.float64],
    lat2: NDArray[np.float64],
) -> NDArray[np.float64]:  # fmt: skip
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(lon2 - lon1)
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(h, 1.0))))


def _cat(xs: Sequence[NDArray[np.float64]]) -> NDArray[np.float64]:
    return np.concatenate(xs) if xs else np.zeros(0)


@dataclasses.dataclass(frozen=True, slots=True)
class _Breaks:
    """Breakpoints of a piecewise function along every edge, in one sorted array.

    Breakpoint ``j`` of edge ``e`` at fraction ``f`` of the way along it has key
    ``2 e + f``; the spacing of 2 keeps edges apart, so one ``searchsorted`` finds the
    segment of every row at once. Every edge has at least two breakpoints (0 and 1).

    Attributes:
        key: (K,) increasing keys.
        first, last: (E,) index of each edge's first and last breakpoint.
    """

    key: NDArray[np.float64]
    first: NDArray[np.int64]
    last: NDArray[np.int64]

    @staticmethod
    def build(fractions: Sequence[NDArray[np.float64]]) -> _Breaks:
        counts = np.array([len(f) for f in fractions], dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        key = np.concatenate(
            [2.0 * e + f for e, f in enumerate(fractions)] or [np.zeros(0)]
        ).astype(np.float64)
        return _Breaks(key, first, first + counts - 1)

    def locate(
        self, edge: NDArray[np.int64], frac: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(segment's first breakpoint index, fraction of the way through the segment)."""
        q = 2.0 * edge + np.clip(frac, 0.0, 1.0)
        i = np.searchsorted(self.key, q, side="right") - 1
        i = np.clip(i, self.first[edge], self.last[edge] - 1)
        span = self.key[i + 1] - self.key[i]
        t = np.divide(q - self.key[i], span, out=np.zeros_like(q), where=span > 0)
        return i, np.clip(t, 0.0, 1.0)


@dataclasses.dataclass(frozen=True, slots=True)
class EdgeGeometry:
    """The edges' polylines and grade profiles as arrays, built once per network.

    Attributes:
        edge_ids: (E,) ids in row order (the result's ``edge_ids``).
        length_m: (E,) lengths along the road [m].
        lon, lat: (K,) polyline vertices of all edges, edge after edge.
        bearing_deg: (K,) heading of the segment starting at each vertex, clockwise from
            north (SUMO's ``angle``); the edge's last vertex repeats its last segment's.
        grade: (G,) grade (rise/run) of the profile segment starting at each station.
    """

    edge_ids: tuple[str, ...]
    length_m: NDArray[np.float64]
    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    bearing_deg: NDArray[np.float64]
    grade: NDArray[np.float64]
    _shape: _Breaks
    _profile: _Breaks

    @staticmethod
    def build(network: RoadNetwork, edge_ids: Sequence[str]) -> EdgeGeometry:
        """Tables for ``edge_ids`` (a per-edge loop, once; the rows are then vectorised).

        Raises:
            NetOutputError: an edge id the network does not have.
        """
        fracs: list[NDArray[np.float64]] = []
        lons: list[NDArray[np.float64]] = []
        lats: list[NDArray[np.float64]] = []
        bearings: list[NDArray[np.float64]] = []
        stations: list[NDArray[np.float64]] = []
        grades: list[NDArray[np.float64]] = []
        lengths = np.zeros(len(edge_ids))
        for k, eid in enumerate(edge_ids):
            if eid not in network.edges:
                raise NetOutputError(
                    f"edge {eid!r} of the result is not in network {network.name!r}; "
                    "write outputs with the network the run used"
                )
            e = network.edges[eid]
            lengths[k] = e.length_m
            pts = np.asarray(e.geometry, dtype=np.float64).reshape(-1, 2)
            if len(pts) < 2:
                a, b = network.nodes[e.from_node], network.nodes[e.to_node]
                pts = np.array([[a.lon, a.lat], [b.lon, b.lat]])
            seg = _haversine_m(pts[:-1, 0], pts[:-1, 1], pts[1:, 0], pts[1:, 1])
            if seg.sum() > 0:
                # drop repeated vertices: zero-length segments have no heading
                keep = np.concatenate([[True], seg > 0])
                pts = pts[keep]
                seg = seg[seg > 0]
                f = np.concatenate([[0.0], np.cumsum(seg) / seg.sum()])
            else:
                pts = pts[[0, -1]]
                f = np.array([0.0, 1.0])
            f[-1] = 1.0
            fracs.append(f)
            lons.append(pts[:, 0])
            lats.append(pts[:, 1])
            # heading on the local east-north plane, clockwise from north
            east = np.radians(np.diff(pts[:, 0])) * np.cos(np.radians(pts[:-1, 1] + pts[1:, 1]) / 2)
            north = np.radians(np.diff(pts[:, 1]))
            brg = np.degrees(np.arctan2(east, north)) % 360.0
            bearings.append(np.concatenate([brg, brg[-1:]]))
            if len(e.stations_m) >= 2:
                s = np.clip(np.asarray(e.stations_m, dtype=np.float64) / e.length_m, 0.0, 1.0)
                g = e.grades()
                stations.append(s)
                grades.append(np.concatenate([g, g[-1:]]))
            else:
                stations.append(np.array([0.0, 1.0]))
                grades.append(np.zeros(2))
        return EdgeGeometry(
            edge_ids=tuple(edge_ids),
            length_m=lengths,
            lon=_cat(lons),
            lat=_cat(lats),
            bearing_deg=_cat(bearings),
            grade=_cat(grades),
            _shape=_Breaks.build(fracs),
            _profile=_Breaks.build(stations),
        )

    def place(
        self, edge: NDArray[np.int64], pos_m: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """(lon, lat, bearing_deg) of each (edge row, distance from the edge start)."""
        frac = pos_m / self.length_m[edge]
        i, t = self._shape.locate(edge, frac)
        lon = self.lon[i] + t * (self.lon[i + 1] - self.lon[i])
        lat = self.lat[i] + t * (self.lat[i + 1] - self.lat[i])
        return lon, lat, self.bearing_deg[i]

    def grade_at(self, edge: NDArray[np.int64], pos_m: NDArray[np.float64]) -> NDArray[np.float64]:
        """Grade (rise/run) of the elevation profile at each (edge row, position)."""
        i, _ = self._profile.locate(edge, pos_m / self.length_m[edge])
        return self.grade[i]


# ---------------------------------------------------------------------------------------------
# FCD
# ---------------------------------------------------------------------------------------------
def _batched(result: NetResult) -> bool:
    return bool(result.instance.size) and int(result.instance.max()) > 0


def _rows(result: NetResult) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(vehicle row, edge row) of each FCD row, checked against the result's id lists."""
    fcd = result.fcd
    veh = fcd["vehicle"].astype(np.int64)
    edge = fcd["edge"].astype(np.int64)
    if veh.size and not (veh.min() >= 0 and veh.max() < len(result.vehicle_ids)):
        raise NetOutputError("FCD names vehicle rows outside result.vehicle_ids")
    if edge.size and not (edge.min() >= 0 and edge.max() < len(result.edge_ids)):
        raise NetOutputError("FCD names edge rows outside result.edge_ids")
    return veh, edge


def net_fcd_table(
    result: NetResult, network: RoadNetwork, geometry: EdgeGeometry | None = None
) -> pa.Table:
    """The run's FCD as an Arrow table (columns in the module docstring).

    Args:
        result: what ``NetSim.run`` returned.
        network: the network the run used (for the edges' geometry).
        geometry: ``EdgeGeometry.build(network, result.edge_ids)``, to reuse across calls.
    """
    fcd = result.fcd
    veh, edge = _rows(result)
    geo = geometry or EdgeGeometry.build(network, result.edge_ids)
    pos = fcd["pos_m"]
    lon, lat, _ = geo.place(edge, pos)
    mode = fcd["mode"].astype(np.int32)
    if mode.size and not (mode.min() >= 0 and mode.max() < len(MODE_NAMES)):
        raise NetOutputError(f"FCD mode codes outside 0..{len(MODE_NAMES) - 1}")
    gap = fcd["gap_m"]
    cols: dict[str, Any] = {
        "time_s": np.round(fcd["time_s"], 9),
        "vehicle_id": pa.DictionaryArray.from_arrays(
            pa.array(veh.astype(np.int32)), pa.array(result.vehicle_ids, pa.string())
        ),
        "pos_m": pos,
        "speed_mps": fcd["speed_mps"],
        "accel_mps2": fcd["accel_mps2"],
        "gap_m": pa.array(gap, mask=np.isnan(gap)),
        "edge": pa.DictionaryArray.from_arrays(
            pa.array(edge.astype(np.int32)), pa.array(list(result.edge_ids), pa.string())
        ),
        "lane": fcd["lane"].astype(np.int32),
        "lon": lon,
        "lat": lat,
        "energy_kwh": fcd["energy_kwh"],
        "mode": pa.DictionaryArray.from_arrays(pa.array(mode), pa.array(MODE_NAMES)),
    }
    if _batched(result):
        cols["instance"] = result.instance[veh].astype(np.int32)
    return pa.table(cols)


def _needs_quotes(values: Sequence[str]) -> bool:
    return any(c in v for v in values for c in ',"\n\r')


def write_net_fcd(
    result: NetResult,
    network: RoadNetwork,
    path: str | Path,
    vehicle_types: Sequence[str] | None = None,
) -> Path:
    """Write the FCD to ``path``: Parquet (``.parquet``), CSV (``.csv``) or SUMO's FCD XML
    (``.xml``, ``write_net_fcd_xml`` with ``vehicle_types``). Returns the path.

    Raises:
        NetOutputError: any other suffix.
    """
    p = Path(path)
    if p.suffix not in (".parquet", ".csv", ".xml"):
        raise NetOutputError(
            f"FCD path {str(p)!r}: suffix {p.suffix!r} unknown; allowed: .parquet, .csv, .xml"
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".xml":
        return write_net_fcd_xml(result, network, p, vehicle_types)
    table = net_fcd_table(result, network)
    if p.suffix == ".parquet":
        pq.write_table(table, p, compression="zstd")
        return p
    for name in ("vehicle_id", "edge", "mode"):
        i = table.column_names.index(name)
        table = table.set_column(i, name, table.column(name).cast(pa.string()))
    # the header is written by hand: pyarrow would quote its names; values are quoted only
    # where an id holds a comma, a quote or a line break
    quoting = (
        "needed" if _needs_quotes(result.vehicle_ids) or _needs_quotes(result.edge_ids) else "none"
    )
    with p.open("wb") as f:
        f.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style=quoting))
    return p


def _xml_attr(s: str) -> str:
    return escape(s, {'"': "&quot;"})


def write_net_fcd_xml(
    result: NetResult,
    network: RoadNetwork,
    path: str | Path,
    vehicle_types: Sequence[str] | None = None,
) -> Path:
    """Write the FCD as SUMO's FCD XML, as ``sumo --fcd-output F --fcd-output.geo
    --fcd-output.acceleration`` writes it, so SUMO's tools (sumolib) read it.

    * ``x``, ``y``: longitude and latitude (``--fcd-output.geo``: convoy's networks are
      geographic and have no SUMO projection), with ``GEO_DECIMALS`` decimals;
    * ``angle``: heading of the edge's segment, degrees clockwise from north;
    * ``lane``: SUMO's lane id ``{edge}_{index}``, 0 the rightmost lane;
    * ``pos``: front bumper's distance along the lane (the edge) [m];
    * ``slope``: the road's grade in degrees, from the edge's elevation profile;
    * ``type``: ``vehicle_types[row]`` when given, else SUMO's ``DEFAULT_VEHTYPE``.

    Times are written with 2 decimals as SUMO does, other values with 6 (SUMO's
    ``--precision 6``). Vehicles of a batch keep their ``id#k`` ids, so instances share
    the timesteps without clashing.

    Args:
        result: what ``NetSim.run`` returned.
        network: the network the run used.
        path: the file to write.
        vehicle_types: type id of each vehicle row (``result.vehicle_ids`` order).

    Raises:
        NetOutputError: ``vehicle_types`` of the wrong length.
    """
    p = Path(path)
    n = len(result.vehicle_ids)
    if vehicle_types is not None and len(vehicle_types) != n:
        raise NetOutputError(
            f"vehicle_types has {len(vehicle_types)} entries; need one per vehicle ({n})"
        )
    fcd = result.fcd
    veh, edge = _rows(result)
    geo = EdgeGeometry.build(network, result.edge_ids)
    pos = fcd["pos_m"]
    lon, lat, angle = geo.place(edge, pos)
    slope = np.degrees(np.arctan(geo.grade_at(edge, pos)))
    order = np.argsort(fcd["time_s"], kind="stable")
    time_s = fcd["time_s"][order]
    starts = np.flatnonzero(np.diff(time_s, prepend=-np.inf) != 0)
    ends = np.append(starts[1:], len(order))
    ids = [_xml_attr(v) for v in result.vehicle_ids]
    types = [_xml_attr(t) for t in (vehicle_types or [SUMO_DEFAULT_VTYPE] * n)]
    edge_xml = [_xml_attr(e) for e in result.edge_ids]
    g = GEO_DECIMALS
    columns = (veh, lon, lat, angle, fcd["speed_mps"], pos, edge,
               fcd["lane"].astype(np.int64), slope, fcd["accel_mps2"])  # fmt: skip

    def lines(rows: NDArray[np.int64]) -> list[str]:
        cols = zip(*(c[rows].tolist() for c in columns), strict=True)
        return [
            f'        <vehicle id="{ids[v]}" x="{x:.{g}f}" y="{y:.{g}f}" angle="{a:.2f}" '
            f'type="{types[v]}" speed="{s:.6f}" pos="{q:.6f}" lane="{edge_xml[e]}_{ln}" '
            f'slope="{sl:.2f}" acceleration="{acc:.6f}"/>\n'
            for v, x, y, a, s, q, e, ln, sl, acc in cols
        ]

    with p.open("w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        f.write(
            '<fcd-export xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:noNamespaceSchemaLocation="http://sumo.dlr.de/xsd/fcd_file.xsd">\n'
        )
        # whole timesteps in blocks of about _XML_BLOCK_ROWS rows, to bound the memory
        k = 0
        while k < len(starts):
            m = max(k + 1, int(np.searchsorted(ends, starts[k] + _XML_BLOCK_ROWS, "right")))
            lo = int(starts[k])
            text = lines(order[lo : int(ends[m - 1])])
            for a, b in zip(starts[k:m].tolist(), ends[k:m].tolist(), strict=True):
                f.write(f'    <timestep time="{time_s[a]:.2f}">\n')
                f.writelines(text[a - lo : b - lo])
                f.write("    </timestep>\n")
            k = m
        f.write("</fcd-export>\n")
    return p


# ---------------------------------------------------------------------------------------------
# Events and per-vehicle statistics
# ---------------------------------------------------------------------------------------------
def net_events(result: NetResult) -> list[dict[str, Any]]:
    """The run's events in the log's common form, sorted by time (stable: the engine's
    order within a time).

    Each event is ``{"t_s", "type", "vehicle_id", ...}`` followed by the engine's other
    fields (``edge``, ``lane``, ``site``, ``other_id``, ``instance``).
    """
    out: list[dict[str, Any]] = []
    for e in result.events:
        d: dict[str, Any] = {
            "t_s": round(float(cast(float, e["time_s"])), 6),
            "type": str(e["kind"]).replace("-", "_"),
            "vehicle_id": e["vehicle_id"],
        }
        d.update((k, v) for k, v in e.items() if k not in ("time_s", "kind", "vehicle_id"))
        out.append(d)
    out.sort(key=lambda d: d["t_s"])
    return out


def write_net_events(result: NetResult, path: str | Path) -> Path:
    """Write the run's events (``net_events``) to ``path`` as JSON lines; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for e in net_events(result):
            f.write(json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n")
    return p


def per_vehicle_stats(result: NetResult) -> pa.Table:
    """One row per vehicle (``result.vehicle_ids`` order).

    Columns: ``vehicle_id``, ``instance`` (batches only), ``status`` (``STATUS_NAMES``),
    ``distance_m``, ``energy_kwh``, ``energy_kwh_per_km`` (null before the vehicle has
    moved; 0 for vehicles that book no energy), ``min_ttc_s`` (null if it never closed in
    on a leader), ``hard_brakes``, ``lane_changes``. ``.to_pylist()`` gives dicts.
    """
    dist = np.asarray(result.distance_m, dtype=np.float64)
    energy = np.asarray(result.energy_kwh, dtype=np.float64)
    per_km = np.divide(energy, dist / 1000.0, out=np.full_like(energy, np.nan), where=dist > 0)
    ttc = np.asarray(result.min_ttc_s, dtype=np.float64)
    status = np.asarray(result.status, dtype=np.int64)
    if status.size and not (status.min() >= 0 and status.max() < len(STATUS_NAMES)):
        raise NetOutputError(f"status codes outside 0..{len(STATUS_NAMES) - 1}")
    cols: dict[str, Any] = {"vehicle_id": pa.array(result.vehicle_ids, pa.string())}
    if _batched(result):
        cols["instance"] = np.asarray(result.instance, dtype=np.int32)
    cols |= {
        "status": pa.array([STATUS_NAMES[s] for s in status.tolist()], pa.string()),
        "distance_m": dist,
        "energy_kwh": energy,
        "energy_kwh_per_km": pa.array(per_km, mask=np.isnan(per_km)),
        "min_ttc_s": pa.array(ttc, mask=~np.isfinite(ttc)),
        "hard_brakes": np.asarray(result.hard_brakes, dtype=np.int32),
        "lane_changes": np.asarray(result.lane_changes, dtype=np.int32),
    }
    return pa.table(cols)
