"""Outputs of the network engine: FCD on the map (Parquet, CSV, SUMO's FCD XML read back by
sumolib), the event log and per-vehicle statistics, on a hand-built three-node road."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sumolib

from convoy.road.network import Edge, Node, RoadNetwork, Site, SiteKind, haversine_m
from convoy.sim import net_output
from convoy.sim.net_output import (
    NET_FCD_COLUMNS,
    EdgeGeometry,
    NetOutputError,
    net_events,
    net_fcd_table,
    per_vehicle_stats,
    write_net_events,
    write_net_fcd,
    write_net_fcd_xml,
)
from convoy.sim.network import Flow, Leg, NetResult, NetSim, Platoon, Trip

# bc climbs 30 m over its 1000 m: a 3 % grade, atan(0.03) = 1.72 degrees
NODES = [Node("a", 109.0, 39.0), Node("b", 109.01, 39.0), Node("c", 109.02, 39.0)]
EDGES = [
    Edge(
        "ab", "a", "b", 1000.0, lanes=2, speed_limit_mps=25.0,
        geometry=((109.0, 39.0), (109.01, 39.0)),
    ),
    Edge(
        "bc", "b", "c", 1000.0, lanes=1, speed_limit_mps=25.0,
        geometry=((109.01, 39.0), (109.02, 39.0)),
        stations_m=(0.0, 1000.0), elevation_m=(0.0, 30.0),
    ),
]  # fmt: skip
NET = RoadNetwork.build(NODES, EDGES, [Site("s", SiteKind.COAL_MINE, "S", "S", "c", 109.02, 39.0)])


def _sim(instances: int = 1) -> NetSim:
    trips = [
        Trip(f"t{k}", "truck-human" if k == 0 else "truck-l4", (Leg(("ab", "bc"), 60.0, "s"),))
        for k in range(3)
    ]
    return NetSim(
        NET,
        trips,
        [Flow("f", ("ab", "bc"), 600.0, "car", 0, 100)],
        [Platoon("p", ("t0", "t1", "t2"))],
        instances=instances,
    )


@pytest.fixture(scope="module")
def res() -> NetResult:
    return _sim().run(150.0)


@pytest.fixture(scope="module")
def batch() -> NetResult:
    return _sim(instances=2).run(60.0)


def test_fcd_columns_and_positions_on_the_map(res: NetResult) -> None:
    t = net_fcd_table(res, NET)
    assert tuple(t.column_names) == NET_FCD_COLUMNS  # one instance: no instance column
    assert t.num_rows == len(res.fcd["time_s"]) > 0
    edge = np.asarray(t.column("edge").cast(pa.string()).to_pylist())
    pos = t.column("pos_m").to_numpy()
    lon, lat = t.column("lon").to_numpy(), t.column("lat").to_numpy()
    # both edges run due east along 39 N, 0.01 degrees each: lon moves linearly with pos_m
    start = np.where(edge == "ab", 109.0, 109.01)
    np.testing.assert_allclose(lon, start + 0.01 * pos / 1000.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lat, 39.0, rtol=0, atol=1e-12)
    # the human lead truck cruises at the 25 m/s limit: at 20 s it is half way along ab,
    # which is the midpoint of the edge's geometry
    ids = np.asarray(t.column("vehicle_id").cast(pa.string()).to_pylist())
    half = (ids == "t0") & (edge == "ab") & np.isclose(pos, 500.0)
    assert half.sum() == 1
    assert lon[half][0] == pytest.approx(109.005, abs=1e-12)
    assert lat[half][0] == pytest.approx(39.0, abs=1e-12)
    # DESIGN.md contract columns carry the engine's values; a platoon head has no gap
    np.testing.assert_array_equal(t.column("speed_mps").to_numpy(), res.fcd["speed_mps"])
    heads = ids == "t0"
    assert t.column("gap_m").is_null().to_numpy(zero_copy_only=False)[heads].all()
    modes = set(t.column("mode").cast(pa.string()).to_pylist())
    # IDM drivers follow; CACC followers are in SUMO's CACC modes
    assert "follow" in modes
    assert modes <= {"speed", "gap", "gap-closing", "collision-avoidance", "acc-fallback", "follow"}
    assert set(t.column("lane").to_pylist()) <= {0, 1}


def test_geometry_places_points_on_a_bent_polyline() -> None:
    # north 0.01 degrees, then east 0.01 degrees: the corner lies at L1 / (L1 + L2)
    corner = (109.0, 39.01)
    pts = ((109.0, 39.0), corner, corner, (109.01, 39.01))  # a repeated vertex is harmless
    l1 = haversine_m(109.0, 39.0, *corner)
    l2 = haversine_m(*corner, 109.01, 39.01)
    net = RoadNetwork.build(
        [Node("a", 109.0, 39.0), Node("b", 109.01, 39.01)],
        [Edge("e", "a", "b", 2000.0, geometry=pts), Edge("f", "b", "a", 500.0)],
    )
    geo = EdgeGeometry.build(net, ("e", "f"))
    at = np.array([0.0, 2000.0 * l1 / (l1 + l2), 2000.0, 1000.0 * l1 / (l1 + l2), 250.0])
    lon, lat, angle = geo.place(np.array([0, 0, 0, 0, 1]), at)
    np.testing.assert_allclose(lon[:3], [109.0, 109.0, 109.01], atol=1e-12)
    np.testing.assert_allclose(lat[:3], [39.0, 39.01, 39.01], atol=1e-12)
    # half way to the corner along the first, northbound leg
    assert lon[3] == pytest.approx(109.0, abs=1e-12)
    assert lat[3] == pytest.approx(39.005, abs=1e-12)
    assert angle[3] == pytest.approx(0.0, abs=1e-9)
    assert angle[2] == pytest.approx(90.0, abs=1e-9)
    # no geometry: straight between the nodes, heading south-west, from b back to a
    assert (lon[4], lat[4]) == pytest.approx((109.005, 39.005), abs=1e-12)
    assert 180.0 < angle[4] < 270.0
    with pytest.raises(NetOutputError, match="'zz'"):
        EdgeGeometry.build(net, ("e", "zz"))


def test_parquet_round_trip_keeps_columns_and_types(res: NetResult, tmp_path: Path) -> None:
    t = net_fcd_table(res, NET)
    back = pq.read_table(write_net_fcd(res, NET, tmp_path / "out" / "fcd.parquet"))
    assert back.schema.equals(t.schema)
    assert back.equals(t)
    assert pa.types.is_dictionary(back.schema.field("edge").type)
    assert back.schema.field("lane").type == pa.int32()
    assert back.schema.field("lon").type == pa.float64()


def test_csv_has_the_design_header_and_the_table_values(res: NetResult, tmp_path: Path) -> None:
    t = net_fcd_table(res, NET)
    with write_net_fcd(res, NET, tmp_path / "fcd.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == [
        "time_s",
        "vehicle_id",
        "pos_m",
        "speed_mps",
        "accel_mps2",
        "gap_m",
    ]
    assert len(rows) == t.num_rows
    r = t.slice(5, 1).to_pylist()[0]
    assert rows[5]["vehicle_id"] == r["vehicle_id"] and rows[5]["edge"] == r["edge"]
    assert float(rows[5]["lon"]) == pytest.approx(r["lon"], abs=1e-12)
    assert rows[0]["gap_m"] == ""  # the lead truck alone on the road: no leader
    with pytest.raises(NetOutputError, match=r"\.txt"):
        write_net_fcd(res, NET, tmp_path / "fcd.txt")


def test_sumo_reads_the_fcd_xml_with_the_table_values(res: NetResult, tmp_path: Path) -> None:
    t = net_fcd_table(res, NET)
    path = write_net_fcd_xml(res, NET, tmp_path / "fcd.xml")
    fields = ["id", "x", "y", "angle", "speed", "pos", "lane", "slope", "acceleration"]
    rows = [
        (float(step.time), v)
        for step, v in sumolib.xml.parse_fast_nested(
            str(path), "timestep", ["time"], "vehicle", fields
        )
    ]
    assert len(rows) == t.num_rows
    time_s = t.column("time_s").to_numpy()
    np.testing.assert_allclose([r[0] for r in rows], time_s, atol=1e-9)
    assert [r[1].id for r in rows] == t.column("vehicle_id").cast(pa.string()).to_pylist()
    for name, col, tol in (
        ("speed", "speed_mps", 1e-6),
        ("pos", "pos_m", 1e-6),
        ("acceleration", "accel_mps2", 1e-6),
        ("x", "lon", 1e-8),
        ("y", "lat", 1e-8),
    ):
        got = np.array([float(getattr(r[1], name)) for r in rows])
        np.testing.assert_allclose(got, t.column(col).to_numpy(), rtol=0, atol=tol, err_msg=name)
    lanes = [r[1].lane for r in rows]
    edges = t.column("edge").cast(pa.string()).to_pylist()
    assert lanes == [f"{e}_{ln}" for e, ln in zip(edges, t.column("lane").to_pylist(), strict=True)]
    # due east everywhere; flat on ab, a 3 % climb on bc
    assert {r[1].angle for r in rows} == {"90.00"}
    assert {(e, r[1].slope) for e, r in zip(edges, rows, strict=True)} == {
        ("ab", "0.00"),
        ("bc", f"{math.degrees(math.atan(0.03)):.2f}"),
    }
    # the same file through sumolib's typed reader
    n = sum(len(ts.vehicle or []) for ts in sumolib.output.parse(str(path), "timestep"))
    assert n == t.num_rows


def test_xml_vehicle_types_are_per_row(res: NetResult, tmp_path: Path) -> None:
    types = ["truck" if v.startswith("t") else "car" for v in res.vehicle_ids]
    path = write_net_fcd(res, NET, tmp_path / "fcd.xml", vehicle_types=types)
    seen = {
        (v.id, v.type)
        for _, v in sumolib.xml.parse_fast_nested(
            str(path), "timestep", ["time"], "vehicle", ["id", "type"]
        )
    }
    assert ("t1", "truck") in seen and all(
        t == ("truck" if i[0] == "t" else "car") for i, t in seen
    )
    with pytest.raises(NetOutputError, match="vehicle_types has 1 entries"):
        write_net_fcd_xml(res, NET, tmp_path / "x.xml", vehicle_types=["car"])


def test_events_jsonl_parse_and_are_time_sorted(res: NetResult, tmp_path: Path) -> None:
    # feed the events reversed: the log must come out sorted by time all the same
    shuffled = dataclasses.replace(res, events=list(reversed(res.events)))
    path = write_net_events(shuffled, tmp_path / "events.jsonl")
    lines = path.read_text().splitlines()
    evs = [json.loads(x) for x in lines]
    assert len(evs) == len(res.events)
    times = [e["t_s"] for e in evs]
    assert times == sorted(times)
    assert evs[0] == {"t_s": 0.0, "type": "depart", "vehicle_id": "t0", "edge": "ab", "lane": 0}
    # every vehicle that drove departed once; each platoon truck reached the mine, dwelt
    # 60 s and finished
    departs = [e["vehicle_id"] for e in evs if e["type"] == "depart"]
    assert sorted(departs) == sorted(
        v for v, d in zip(res.vehicle_ids, res.distance_m, strict=True) if d > 0
    )
    for k in range(3):
        mine = {e["type"]: e for e in evs if e["vehicle_id"] == f"t{k}"}
        assert mine["arrive_site"]["site"] == "s"
        assert mine["finish"]["t_s"] - mine["arrive_site"]["t_s"] == pytest.approx(60.1, abs=0.15)
    assert net_events(res) == evs


def test_per_vehicle_stats(res: NetResult) -> None:
    rows = {r["vehicle_id"]: r for r in per_vehicle_stats(res).to_pylist()}
    assert list(rows) == res.vehicle_ids
    t0 = rows["t0"]
    # ab + bc = 2 km, finished at the mine after its dwell
    assert t0["status"] == "done"
    assert t0["distance_m"] == pytest.approx(2000.0, abs=1e-6)
    assert t0["energy_kwh_per_km"] == pytest.approx(t0["energy_kwh"] / 2.0)
    assert t0["min_ttc_s"] is None  # the head never closes in on anyone
    assert t0["hard_brakes"] == 0 and t0["lane_changes"] == 0
    # cars book no energy; a truck on a 3 % climb uses some
    assert all(rows[v]["energy_kwh"] == 0.0 for v in rows if v.startswith("f."))
    assert t0["energy_kwh"] > 0.0
    assert "instance" not in rows["t0"]


def test_batch_writes_an_instance_column(batch: NetResult, tmp_path: Path) -> None:
    t = net_fcd_table(batch, NET)
    assert t.column_names[-1] == "instance"
    ids = t.column("vehicle_id").cast(pa.string()).to_pylist()
    inst = t.column("instance").to_pylist()
    assert set(inst) == {0, 1}
    # ids of instance k end in #k
    assert all(i.endswith(f"#{k}") for i, k in zip(ids, inst, strict=True))
    back = pq.read_table(write_net_fcd(batch, NET, tmp_path / "b.parquet"))
    assert back.schema.field("instance").type == pa.int32()
    stats = per_vehicle_stats(batch).to_pylist()
    assert {
        (r["vehicle_id"], r["instance"]) for r in stats if r["vehicle_id"].startswith("t0")
    } == {
        ("t0#0", 0),
        ("t0#1", 1),
    }
    evs = net_events(batch)
    assert {e["instance"] for e in evs} == {0, 1}


def test_xml_written_in_blocks_is_the_same_file(
    res: NetResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = write_net_fcd_xml(res, NET, tmp_path / "whole.xml").read_bytes()
    monkeypatch.setattr(net_output, "_XML_BLOCK_ROWS", 5)  # blocks split mid-run, not mid-step
    assert write_net_fcd_xml(res, NET, tmp_path / "blocks.xml").read_bytes() == whole
