"""The operating day driven in the twin: the plan's rules hold in what the engine did."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest

from convoy.cloud.day import DayConfig, DayError, DayResult, load_day_config, run_day
from convoy.sim import net_kernel as nk


@pytest.fixture(scope="module")
def day() -> DayResult:
    # a morning of the default day, with a remote centre far too small (one operator) and many
    # sensor faults, so that requests expire and minimal-risk manoeuvres must be executed
    return run_day(
        DayConfig(hours=11.0, sensor_faults_per_truck_hour=0.05, trucks_per_operator=10_000)
    )


def test_every_platoon_in_the_twin_has_a_human_head_and_at_most_n_followers(
    day: DayResult,
) -> None:
    types = [day.sim.vtype_names[k] for k in day.sim.state["vtype"]]
    members: dict[int, list[int]] = defaultdict(list)
    for k, p in enumerate(day.sim.state["platoon"]):
        members[int(p)].append(k)
    assert members
    for p, rows in members.items():
        head = int(day.sim.platoon_heads[p])
        assert types[head].startswith("truck-human")
        assert all(types[k].startswith("truck-l4") for k in rows if k != head)
        assert len(rows) - 1 <= day.config.max_followers


def test_no_truck_is_in_two_places(day: DayResult) -> None:
    """A truck's engine vehicles (one per planned leg) never drive at the same time."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    depart = {e["vehicle_id"]: e["time_s"] for e in day.result.events if e["kind"] == "depart"}
    arrive = {e["vehicle_id"]: e["time_s"] for e in day.result.events if e["kind"] == "arrive-site"}
    for vid, t0 in depart.items():
        truck = day.vehicle_trip[str(vid)][0]
        spans[truck].append((float(t0), float(arrive.get(vid, 1e18))))  # type: ignore[arg-type]
    for s in spans.values():
        s.sort()
        for (_, end), (start, _) in itertools.pairwise(s):
            assert start >= end


def test_tonnes_are_those_of_arrived_loaded_legs(day: DayResult) -> None:
    arrived = {e["vehicle_id"] for e in day.result.events if e["kind"] == "arrive-site"}
    tonnes_of = {(t.truck_id, t.trip_id): t.tonnes for t in day.plan.truck_trips}
    loaded = {p.id for p in day.plan.platoons if p.kind == "loaded"}
    expected = sum(
        tonnes_of[(truck, trip)]
        for vid, (truck, trip, _) in day.vehicle_trip.items()
        if vid in arrived and trip in loaded
    )
    assert day.summary["tonnes_t"] == pytest.approx(expected)
    assert 0 < day.summary["tonnes_t"] <= day.summary["tonnes_ordered"]
    assert day.summary["collisions"] == 0


def test_expired_takeovers_end_in_a_stop_on_the_shoulder(day: DayResult) -> None:
    """Each minimal-risk manoeuvre that found its truck on the road left it stopped on the
    shoulder, after the manoeuvre's time; trucks stopped only for that reason."""
    mrm_time = {m.vehicle_id: m.time_s for m in day.supervision.mrms}
    assert len(mrm_time) >= 3
    stops = [e for e in day.result.events if e["kind"] == "minimal-risk-stop"]
    assert stops
    st = day.sim.state
    for e in stops:
        vid = str(e["vehicle_id"])
        truck = day.vehicle_trip[vid][0]
        assert truck in mrm_time
        assert float(e["time_s"]) >= mrm_time[truck]  # type: ignore[arg-type]
        k = day.sim.vehicle_ids.index(vid)
        assert st["status"][k] == nk.ST_SHOULDER and st["speed_mps"][k] == 0.0
    assert day.summary["minimal_risk_stops_driven"] == len(stops)


def test_day_settings_are_checked() -> None:
    with pytest.raises(DayError, match="max_followers = 9"):
        DayConfig(max_followers=9).check()
    with pytest.raises(DayError, match="hours = 0"):
        load_day_config(None, hours=0.0)


def test_storm_takeovers_come_from_rsi_or_from_entering_the_storm() -> None:
    """A follower within an RSU's radius on a road leading into the storm asks at that moment;
    one outside every radius asks only when it enters a storm road; lead trucks (human) never."""
    import numpy as np

    from convoy.cloud.day import _storm_triggers
    from convoy.sim.network import NetResult

    # rows: edge 0 leads into storm edge 1; an RSU on edge 0 at 900 m with radius 500 m
    fcd = {
        "time_s": np.array([10.0, 20.0, 30.0, 40.0, 50.0]),
        "edge": np.array([0.0, 0.0, 0.0, 1.0, 1.0]),
        "pos_m": np.array([100.0, 450.0, 350.0, 5.0, 5.0]),
        "vehicle": np.array([0.0, 0.0, 1.0, 1.0, 2.0]),
    }
    z = np.zeros(3)
    part = NetResult(
        ["a@x", "b@x", "c@x"],
        np.zeros(3, np.int32),
        ("u", "s"),
        fcd,
        [],
        z,
        z,
        z,
        np.zeros(3, np.int32),
        np.zeros(3, np.int32),
        np.zeros(3, np.int8),
        0,
        0,
    )
    trips = {"a@x": ("A", "x", 1), "b@x": ("B", "x", 2), "c@x": ("C", "x", 0)}
    got = _storm_triggers(part, {1}, [(0, 900.0, 500.0)], 0.0, 100.0, trips, set())
    assert [(t.vehicle_id, t.time_s) for t in got] == [("A", 20.0), ("B", 40.0)]
