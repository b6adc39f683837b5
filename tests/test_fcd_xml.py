"""convoy's FCD in SUMO's FCD XML: read by SUMO's own tools (sumolib), and equal to the FCD
SUMO writes for the same trucks on the same road."""

from __future__ import annotations

from pathlib import Path

import pytest
import sumolib

from convoy.sim import bench
from convoy.sim.engine import simulate
from convoy.sim.fcd import write_fcd

FIELDS = ["id", "x", "y", "speed", "pos", "lane", "acceleration"]


def _read(path: Path) -> dict[tuple[float, str], dict[str, str]]:
    """(time, vehicle id) -> attributes, parsed with sumolib as SUMO's tools do."""
    out = {}
    for step, veh in sumolib.xml.parse_fast_nested(
        str(path), "timestep", ["time"], "vehicle", FIELDS
    ):
        out[(round(float(step.time), 2), veh.id)] = veh._asdict()
    return out


def test_sumo_reads_convoy_fcd_as_it_reads_its_own(tmp_path: Path) -> None:
    # 15 trucks (3 platoons of 5) cruising into their CACC gaps on one lane, for 3 s
    case = bench.bench_case(15, 3.0)
    cfg = bench.write_bench_sumo(case, tmp_path / "sumo", 3.0)
    theirs_path = tmp_path / "sumo-fcd.xml"
    bench.run_sumo(
        cfg,
        3.0,
        case.trucks,
        ["--fcd-output", str(theirs_path), "--fcd-output.acceleration", "--precision", "6"],
    )
    run = simulate(case.scenario, record_every_s=0.1)
    ours_path = write_fcd(run.trace, tmp_path / "convoy-fcd.xml")
    theirs, ours = _read(theirs_path), _read(ours_path)

    assert len(theirs) == 15 * 30  # SUMO writes t = 0.0 ... 2.9
    assert set(theirs) <= set(ours)  # convoy also writes the state at 3.0
    moved = 0.0
    for key, sumo_veh in theirs.items():
        mine = ours[key]
        for name in ("x", "pos", "speed", "acceleration"):
            assert float(mine[name]) == pytest.approx(float(sumo_veh[name]), abs=1e-5), (key, name)
        assert float(mine["y"]) == pytest.approx(float(sumo_veh["y"]), abs=1e-6)
        assert mine["lane"] == sumo_veh["lane"]
        moved = max(moved, abs(float(mine["acceleration"])))
    # the followers do adjust their gaps (the comparison is not only of cruising trucks)
    assert moved > 0.01
    # the lane is SUMO's id for the one-lane corridor that convoy's SUMO peer builds
    assert {v["lane"] for v in ours.values()} == {"road_0"}


def test_sim_writes_sumo_fcd_by_suffix(tmp_path: Path) -> None:
    from convoy.sim.scenario import load_scenario
    from convoy.sim.scenarios import builtin_path

    sc = load_scenario(builtin_path("downhill-loaded"))
    run = simulate(sc)
    path = write_fcd(run.trace, tmp_path / "fcd.xml", grade=sc.road.grade_pct / 100.0)
    rows = _read(path)
    assert len(rows) == run.trace.pos_m.size
    first = rows[(0.0, run.trace.vehicle_id[0])]
    assert float(first["pos"]) == pytest.approx(run.trace.pos_m[0, 0], abs=1e-6)
    slopes = {
        step_veh[1].slope
        for step_veh in sumolib.xml.parse_fast_nested(
            str(path), "timestep", ["time"], "vehicle", ["slope"]
        )
    }
    # a 3 % downgrade is atan(-0.03) = -1.72 degrees
    assert slopes == {"-1.72"}
