"""Remote supervision: queue order, deadlines and minimal-risk manoeuvres, worked by hand."""

from __future__ import annotations

import pytest

from convoy.cloud.supervision import (
    DEFAULT_HANDLING_MEDIAN_S,
    EV_CLAIM,
    EV_MRM,
    EV_REQUEST,
    EV_RESOLVE,
    ODD_WINDOW_S,
    URGENT_WINDOW_S,
    MinimalRiskManoeuvre,
    RequestStatus,
    SupervisionCentre,
    SupervisionConfig,
    SupervisionError,
    TakeoverCause,
    TakeoverTrigger,
    inject_sensor_faults,
    operators_for,
    simulate,
    triggers_from_events,
)

W = TakeoverCause.ODD_WEATHER
S = TakeoverCause.SENSOR_FAULT


def _four(a_handling_s: float) -> list[TakeoverTrigger]:
    # Default windows: 80 s for an ODD exit (2 km preview at 25 m/s), 10 s for a sensor fault.
    return [
        TakeoverTrigger(0.0, "a", W, handling_s=a_handling_s),  # deadline 80
        TakeoverTrigger(5.0, "b", W, handling_s=30.0),  # deadline 85
        TakeoverTrigger(20.0, "c", W, handling_s=30.0),  # deadline 100
        TakeoverTrigger(30.0, "d", S, handling_s=70.0),  # deadline 40
    ]


def test_default_windows_are_the_cited_ones() -> None:
    assert ODD_WINDOW_S == 80.0  # PREVIEW_M 2,000 m / 25 m/s
    assert URGENT_WINDOW_S == 10.0  # UN R157 transition demand


def test_two_operators_four_requests_by_hand() -> None:
    """t=0: op0 takes a (busy to 101).  t=5: op1 takes b (busy to 35).  t=20: c queues
    (deadline 100).  t=30: d queues (sensor fault, deadline 40).  t=35: op1 is free; earliest
    deadline first, so it takes d although c asked earlier (FIFO would take c and let d
    expire at 40); op1 is busy to 105.  t=100: c's deadline, nobody free (op0 until 101) ->
    c stops on the shoulder at 100.  t=101, 105: a and d resolved."""
    res = simulate(_four(a_handling_s=101.0), operators=2)
    by = {r.vehicle_id: r for r in res.requests}
    assert [(v, by[v].operator, by[v].claimed_s) for v in "abd"] == [
        ("a", 0, 0.0),
        ("b", 1, 5.0),
        ("d", 1, 35.0),
    ]
    assert by["c"].status is RequestStatus.EXPIRED and by["c"].claimed_s is None
    assert [by[v].resolved_s for v in "abd"] == [101.0, 35.0, 105.0]
    assert res.mrms == [MinimalRiskManoeuvre("c", 100.0, by["c"].request_id, W)]

    log = [(e["t_s"], e["type"], e["vehicle_id"]) for e in res.events]
    assert log == [
        (0.0, EV_REQUEST, "a"),
        (0.0, EV_CLAIM, "a"),
        (5.0, EV_REQUEST, "b"),
        (5.0, EV_CLAIM, "b"),
        (20.0, EV_REQUEST, "c"),
        (30.0, EV_REQUEST, "d"),
        (35.0, EV_RESOLVE, "b"),
        (35.0, EV_CLAIM, "d"),
        (100.0, EV_MRM, "c"),
        (101.0, EV_RESOLVE, "a"),
        (105.0, EV_RESOLVE, "d"),
    ]
    claim_d = next(e for e in res.events if e["type"] == EV_CLAIM and e["vehicle_id"] == "d")
    assert claim_d["waited_s"] == 5.0 and claim_d["operator"] == 1

    # load from t=0 to the last event (105): busy 101 + 30 + 70 = 201 operator-s of 210
    st = res.stats
    assert (st.requests, st.resolved, st.mrms, st.busy_s) == (4, 3, 1, 201.0)
    assert st.utilisation == pytest.approx(201.0 / 210.0)
    assert st.requests_per_operator_hour == pytest.approx(4 / (2 * 105 / 3600))
    assert st.max_wait_s == 5.0


def test_claim_at_the_deadline_is_in_time() -> None:
    """Same case with a handled in 100 s: op0 is free at t=100, c's deadline; the freed
    operator claims before the deadline expires requests, so nobody stops."""
    res = simulate(_four(a_handling_s=100.0), operators=2)
    c = next(r for r in res.requests if r.vehicle_id == "c")
    assert (c.operator, c.claimed_s, c.resolved_s) == (0, 100.0, 130.0)
    assert res.mrms == []


def test_one_operator_lets_the_urgent_request_expire() -> None:
    """One operator busy with a until 101: b, c and d all wait; d (deadline 40), b (85) and
    c (100) all expire, in deadline order."""
    res = simulate(_four(a_handling_s=101.0), operators=1)
    assert [(m.vehicle_id, m.time_s) for m in res.mrms] == [("d", 40.0), ("b", 85.0), ("c", 100.0)]


def test_a_second_trigger_joins_the_open_request() -> None:
    trig = [TakeoverTrigger(0.0, "a", W, 10.0), TakeoverTrigger(3.0, "a", S)]
    res = simulate(trig, operators=1)
    assert len(res.requests) == 1 and res.requests[0].resolved_s == 10.0


def test_live_api() -> None:
    c = SupervisionCentre(operators=1)
    r1 = c.request("t1", 0.0, "sensor-fault")
    r2 = c.request("t2", 1.0, TakeoverCause.ODD_ROAD_WORKS)
    assert c.pending() == [r1, r2] and r1.deadline_s == 10.0 and r2.deadline_s == 81.0
    c.claim(0, r2, 2.0)  # the operator may choose another order than the queue's
    with pytest.raises(SupervisionError, match="busy"):
        c.claim(0, r1, 3.0)
    assert c.advance(9.0) == []
    assert c.advance(10.0) == [MinimalRiskManoeuvre("t1", 10.0, 0, S)]
    with pytest.raises(SupervisionError, match="expired"):
        c.resolve(r1, 11.0)
    c.resolve(r2, 30.0)
    assert c.free_operators() == [0] and r2.status is RequestStatus.RESOLVED
    with pytest.raises(SupervisionError, match="before the centre's clock"):
        c.request("t3", 29.0, S)
    with pytest.raises(SupervisionError, match="unknown; allowed: odd-weather"):
        c.request("t3", 31.0, "alien")
    with pytest.raises(SupervisionError, match=r"allowed 0\.\.0"):
        c.claim(1, r2, 31.0)
    r3 = c.request("t3", 40.0, S)
    with pytest.raises(SupervisionError, match="past its deadline"):
        c.claim(0, r3, 50.5)
    assert [e["type"] for e in c.events] == [
        EV_REQUEST,
        EV_REQUEST,
        EV_CLAIM,
        EV_MRM,
        EV_RESOLVE,
        EV_REQUEST,
    ]


def test_operators_for_uses_the_industry_ratio() -> None:
    # DESIGN.md: 1 per 15-20 (industry); default 20
    assert [operators_for(n) for n in (0, 1, 20, 21, 100)] == [0, 1, 1, 2, 5]
    assert operators_for(9, trucks_per_operator=3) == 3  # China's 2023 robotaxi rule
    with pytest.raises(SupervisionError, match="trucks_per_operator"):
        operators_for(5, 0)


def test_bad_config() -> None:
    with pytest.raises(SupervisionError, match="handling_median_s = -1"):
        SupervisionConfig(handling_median_s=-1)
    with pytest.raises(SupervisionError, match="windows_s"):
        SupervisionConfig(windows_s={W: 10.0})


def test_handling_times_are_seeded_log_normal() -> None:
    cfg = SupervisionConfig(seed=7)
    draws = sorted(cfg.handling_s(i) for i in range(4001))
    assert draws == sorted(SupervisionConfig(seed=7).handling_s(i) for i in range(4001))
    assert draws != sorted(SupervisionConfig(seed=8).handling_s(i) for i in range(4001))
    # median of a log-normal is exp(mu): 90 s; the sample median of 4,001 draws lies within
    # ~3 % (its standard error is 1.25 sigma / sqrt(n) = 1 % in log terms)
    assert draws[2000] == pytest.approx(DEFAULT_HANDLING_MEDIAN_S, rel=0.03)
    assert SupervisionConfig(handling_sigma=0.0).handling_s(3) == DEFAULT_HANDLING_MEDIAN_S


def test_triggers_from_run_events() -> None:
    events = [
        {"t_s": 1.0, "type": "odd_enter", "vehicle_id": "f1", "flags": ["DUST"]},
        {"t_s": 2.0, "type": "odd_enter", "vehicle_id": "lead", "flags": ["DUST"]},
        {"t_s": 3.0, "type": "odd_enter", "vehicle_id": "f2", "flags": ["ROAD_WORKS", "ICE"]},
        {"t_s": 4.0, "type": "odd_exit", "vehicle_id": "f1", "flags": ["DUST"]},
        {"t_s": 5.0, "type": "odd_enter", "vehicle_id": "f1", "flags": ["SENSOR_FAULT", "ICE"]},
    ]
    got = triggers_from_events(events, driverless=["f1", "f2"])
    assert got == [
        TakeoverTrigger(1.0, "f1", W),
        TakeoverTrigger(3.0, "f2", TakeoverCause.ODD_ROAD_WORKS),
        TakeoverTrigger(5.0, "f1", S),
    ]
    with pytest.raises(SupervisionError, match="'FOG' unknown"):
        triggers_from_events([{**events[0], "flags": ["FOG"]}], ["f1"])


def test_injected_faults_are_poisson() -> None:
    ids = [f"t{i}" for i in range(50)]
    faults = inject_sensor_faults(ids, 0.0, 36_000.0, faults_per_hour=0.2, seed=3)
    assert faults == inject_sensor_faults(ids, 0.0, 36_000.0, 0.2, seed=3)
    assert all(0.0 <= f.time_s < 36_000.0 and f.cause is S for f in faults)
    # 50 trucks x 10 h x 0.2 /h = 100 expected; Poisson sd 10 -> within 4 sd
    assert abs(len(faults) - 100) < 40
    # a truck's faults do not depend on the trucks after it
    first = [f for f in faults if f.vehicle_id == "t0"]
    assert first == inject_sensor_faults(ids[:1], 0.0, 36_000.0, 0.2, seed=3)
    assert inject_sensor_faults(ids, 0.0, 100.0, 0.0) == []
    with pytest.raises(SupervisionError, match="faults_per_hour"):
        inject_sensor_faults(ids, 0.0, 1.0, -1.0)


def test_more_operators_fewer_mrms() -> None:
    """60 driverless trucks, 1 sensor fault per truck-hour over 2 h: with 10 s windows a
    fault needs a free operator almost at once, so each added operator saves trucks from
    the shoulder; every request ends resolved or in an MRM."""
    ids = [f"t{i}" for i in range(60)]
    trig = inject_sensor_faults(ids, 0.0, 7200.0, faults_per_hour=1.0, seed=1)
    runs = {n: simulate(trig, n, SupervisionConfig(seed=1)) for n in (1, 3, 6)}
    mrms = [len(runs[n].mrms) for n in (1, 3, 6)]
    assert mrms[0] > mrms[1] > mrms[2]
    st = runs[3].stats
    assert st.resolved + st.mrms == st.requests <= len(trig)
    assert st.requests == len(runs[3].requests)
