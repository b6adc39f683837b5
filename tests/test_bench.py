"""``convoy bench sim`` compares like with like: the same trucks, and SUMO really runs them.

A benchmark of an emptied road would be fast and meaningless, so besides the placement
the SUMO side is checked against kinematics: every truck inserted at t = 0 at its
position, still running at the end, the cruising heads at ``x0 + 22 m/s · t``.
No timing is asserted here (STYLE.md 11); the figures live in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from convoy.sim import bench
from convoy.sim.engine import vehicle_ids
from convoy.sim.sumo_peer import sumo_binary


def _has_sumo() -> bool:
    try:
        sumo_binary("sumo")
        sumo_binary("netconvert")
    except FileNotFoundError:
        return False
    return True


needs_sumo = pytest.mark.skipif(not _has_sumo(), reason="SUMO (eclipse-sumo) not installed")


@pytest.fixture
def small_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten trucks per SUMO lane, so 30 trucks exercise the parallel-lane split."""
    monkeypatch.setattr(bench, "SUMO_LANE_TRUCKS", 10)


def _routes(path: Path) -> list[ET.Element]:
    return ET.parse(path / "corridor.rou.xml").getroot().findall("vehicle")


def test_fleet_is_whole_platoons_of_five() -> None:
    case = bench.bench_case(10_003, 10.0)
    assert case.trucks == 10_005
    p = case.scenario.platoon
    assert (p.trucks, p.spacing_m, p.initial.gap_m, p.initial.speed_mps) == (5, 100.0, 25.0, 22.0)
    assert p.controller.model == "cacc-sumo"
    assert case.scenario.leader.speed_profile is None
    assert case.corridor.car_follow_model == "CACC"


def test_sumo_end_times_cover_the_vehicle_step_budget() -> None:
    for trucks in (1_000, 10_000, 100_000):
        first, end = bench.sumo_end_times(trucks)
        assert first >= bench.SUMO_MIN_END_S
        steps = round((end - first) / bench.DT_S)
        assert steps * trucks == pytest.approx(bench.SUMO_VEHICLE_STEPS, rel=0.02)


@needs_sumo
def test_same_trucks_at_the_same_positions(small_lanes: None, tmp_path: Path) -> None:
    case = bench.bench_case(30, 2.0)
    assert case.lanes == 3
    # lanes hold whole platoons, in order
    np.testing.assert_array_equal(case.lane, np.repeat([0, 1, 2], 10))

    ours = bench.convoy_initial_positions(case)
    np.testing.assert_array_equal(ours, case.corridor.initial_positions_m())

    bench.write_bench_sumo(case, tmp_path, 2.0)
    vehicles = _routes(tmp_path)
    assert [v.get("id") for v in vehicles] == vehicle_ids(case.scenario)
    np.testing.assert_array_equal([float(v.get("departPos", "nan")) for v in vehicles], ours)
    assert [v.get("route") for v in vehicles] == [f"r{c}" for c in case.lane]
    assert {v.get("depart") for v in vehicles} == {"0"}
    assert {float(v.get("departSpeed", "nan")) for v in vehicles} == {bench.SPEED_MPS}


@needs_sumo
def test_sumo_runs_every_truck_and_heads_cruise(small_lanes: None, tmp_path: Path) -> None:
    case = bench.bench_case(30, 2.0)
    cfg = bench.write_bench_sumo(case, tmp_path, 2.0)
    fcd = tmp_path / "fcd.xml"
    run = bench.run_sumo(cfg, 2.0, case.trucks, ["--fcd-output", str(fcd)])
    assert (run.inserted, run.running, run.waiting) == (30, 30, 0)

    x0 = dict(zip(vehicle_ids(case.scenario), bench.convoy_initial_positions(case), strict=True))
    lane_of = dict(zip(vehicle_ids(case.scenario), case.lane, strict=True))
    steps = ET.parse(fcd).getroot().findall("timestep")
    assert len(steps) == 20  # t = 0.0 ... 1.9: every truck from the very first step
    for step in steps:
        t = float(step.get("time", "nan"))
        seen = step.findall("vehicle")
        assert len(seen) == 30
        for v in seen:
            vid = v.get("id", "")
            assert v.get("lane") == f"{bench._lane_edge(int(lane_of[vid]))}_0"
            speed = float(v.get("speed", "nan"))
            assert abs(speed - bench.SPEED_MPS) < 0.5
            if vid.endswith(".0"):  # a head: no speed profile, so it cruises
                assert float(v.get("pos", "nan")) == pytest.approx(
                    x0[vid] + bench.SPEED_MPS * t, abs=0.01
                )


@needs_sumo
def test_a_run_that_lost_trucks_is_refused(tmp_path: Path) -> None:
    case = bench.bench_case(10, 1.0)
    cfg = bench.write_bench_sumo(case, tmp_path, 1.0)
    with pytest.raises(RuntimeError, match="expected 11"):
        bench.run_sumo(cfg, 1.0, case.trucks + 1)
