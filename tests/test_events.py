"""The event log of a run: the right events, for the right trucks, at the right times."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import collision_course, example

from convoy.sim.engine import simulate
from convoy.sim.events import run_events


def _of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def test_v2v_outage_starts_and_ends_the_acc_fallback() -> None:
    """cut-off-v2v: no beacons from 40 s to 80 s. The last beacon before the outage left
    at 39.9 s and arrives 0.02 s later; it goes stale 0.5 s after it was sent, so every
    follower falls back at 40.5 s and recovers with the first beacon after 80 s."""
    res = simulate(example("cut-off-v2v"))
    events = run_events(res)
    starts, ends = _of(events, "acc_fallback_start"), _of(events, "acc_fallback_end")
    followers = ["p0.1", "p0.2", "p0.3", "p0.4"]
    assert [e["vehicle_id"] for e in starts] == followers
    assert [e["vehicle_id"] for e in ends] == followers
    assert all(40.4 < e["t_s"] < 40.8 for e in starts), starts
    assert all(80.0 < e["t_s"] < 80.3 for e in ends), ends
    assert [e["t_s"] for e in events] == sorted(e["t_s"] for e in events)


def test_collisions_are_logged_once_per_truck_at_first_contact() -> None:
    res = simulate(collision_course())
    hits = _of(run_events(res), "collision")
    assert sorted(e["vehicle_id"] for e in hits) == [f"p0.{k}" for k in range(5)]
    by_id = {e["vehicle_id"]: e for e in hits}
    for k, vid in enumerate(res.trace.vehicle_id):
        assert by_id[vid]["t_s"] == round(float(res.state.collided_at_s[k]), 6)
        assert by_id[vid]["closing_speed_mps"] >= 0.0


def test_dust_storm_warning_comes_before_the_odd_flags() -> None:
    """dust-storm: RSUs warn each truck (RSI) before its own ODD flags go up, and the flags
    come down once it has left the storm."""
    res = simulate(example("dust-storm"))
    events = run_events(res)
    for vid in res.trace.vehicle_id:
        mine = [e for e in events if e["vehicle_id"] == vid]
        rsi = _of(mine, "rsi_received")
        enter = [e for e in _of(mine, "odd_enter") if "DUST" in e["flags"]]
        leave = [e for e in _of(mine, "odd_exit") if "DUST" in e["flags"]]
        assert len(rsi) == 1 and enter and leave, vid
        assert rsi[0]["t_s"] < enter[0]["t_s"] < leave[-1]["t_s"]


def test_no_events_on_a_quiet_cruise() -> None:
    res = simulate(example("brake-and-recover", leader={"speed_profile": [[0, 22]]}))
    assert run_events(res) == []


def test_sim_writes_the_event_log_as_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "logs" / "events.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "convoy.cli", "sim", "signal-stop", "--events", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    spat = _of(lines, "spat_received")
    assert [e["vehicle_id"] for e in spat] == [f"p0.{k}" for k in range(5)]
    assert np.all(np.diff([e["t_s"] for e in spat]) > 0)  # the head first, the tail last
