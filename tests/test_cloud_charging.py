"""Charging and swap stations: FIFO queues against hand-computed waits, the planning calendar
against the event simulation, and range in the cold against DESIGN.md's winter losses."""

from __future__ import annotations

import math

import pytest

from convoy.cloud.charging import (
    ChargeRequest,
    ServiceMode,
    StationCalendar,
    charge_time_s,
    energy_per_km_kwh,
    poisson_requests,
    simulate_station,
    usable_range_km,
)
from convoy.cloud.entities import EntityError, Station

CHARGE, SWAP = ServiceMode.CHARGE, ServiceMode.SWAP


def _req(name: str, t: float, kwh: float, mode: ServiceMode = CHARGE) -> ChargeRequest:
    """A 100 kWh pack that needs ``kwh`` to reach the 0.95 target."""
    return ChargeRequest(name, t, mode, battery_kwh=100.0, soc=0.95 - kwh / 100.0, target_soc=0.95)


def test_charge_time_is_energy_over_power() -> None:
    # 282 kWh from 20 % to 95 %: 211.5 kWh at 240 kW = 0.88125 h.
    assert charge_time_s(282.0, 0.2, 0.95, 240.0) == pytest.approx(0.88125 * 3600)
    assert charge_time_s(282.0, 0.96, 0.95, 240.0) == 0.0


def test_one_post_serves_first_come_first_served() -> None:
    """One 100 kW post. A needs 50 kWh (30 min) at t=0, B 50 kWh at 10 min, C 25 kWh (15 min)
    at 15 min. By hand: A 0-30 min; B waits to 30, 30-60 (wait 20 min); C, shorter but later,
    waits to 60, 60-75 (wait 45 min)."""
    st = Station("s", "site", charge_posts=1, post_power_kw=100.0)
    run = simulate_station(st, [_req("A", 0, 50), _req("B", 600, 50), _req("C", 900, 25)])
    got = {r.truck_id: (r.start_s, r.end_s, r.wait_s) for r in run.records}
    assert got["A"] == pytest.approx((0, 1800, 0))
    assert got["B"] == pytest.approx((1800, 3600, 1200))
    assert got["C"] == pytest.approx((3600, 4500, 2700))
    assert run.mean_wait_s == pytest.approx((0 + 1200 + 2700) / 3)
    assert run.max_queue == 2  # B and C both waiting during 15-30 min
    # Busy 75 min of 75 min: the post never idles.
    assert run.utilisation == pytest.approx(1.0)


def test_two_posts_and_arrival_order_on_ties() -> None:
    """Two posts: A and B arrive together (A listed first) and take posts 0 and 1; C arrives a
    minute later and waits for the first post free at 30 min."""
    st = Station("s", "site", charge_posts=2, post_power_kw=100.0)
    run = simulate_station(st, [_req("A", 0, 50), _req("B", 0, 40), _req("C", 60, 25)])
    r = {x.truck_id: x for x in run.records}
    assert (r["A"].server, r["B"].server) == (0, 1)
    # B (40 kWh, 24 min) frees post 1 first, at 1440 s.
    assert r["C"].start_s == pytest.approx(1440.0)
    assert r["C"].server == 1
    assert r["C"].wait_s == pytest.approx(1380.0)


def test_swap_queue_does_not_wait_for_chargers() -> None:
    """A swap arriving behind a charging queue goes straight to its bay (5 min, to 95 %)."""
    st = Station("s", "site", charge_posts=1, swap_bays=1, post_power_kw=100.0)
    run = simulate_station(st, [_req("A", 0, 50), _req("B", 10, 50), _req("S", 20, 0, mode=SWAP)])
    r = {x.truck_id: x for x in run.records}
    assert r["S"].start_s == pytest.approx(20.0)
    assert r["S"].end_s == pytest.approx(320.0)
    assert r["S"].soc_after == pytest.approx(0.95)
    assert r["B"].start_s == pytest.approx(1800.0)


def test_station_without_the_service_is_refused_with_a_clear_message() -> None:
    st = Station("bays-only", "site", swap_bays=2)
    with pytest.raises(EntityError, match=r"bays-only.*no charge posts"):
        simulate_station(st, [_req("A", 0, 10)])


def test_fewer_posts_never_shorten_the_queue() -> None:
    """Same seeded stream, 1 vs 3 posts: every truck waits at least as long with fewer posts
    (FIFO multi-server queues are monotone in the number of servers)."""
    reqs = [r for r in poisson_requests(6.0, 8 * 3600, seed=3) if r.mode == CHARGE]
    one = simulate_station(Station("a", "x", charge_posts=1), reqs)
    three = simulate_station(Station("b", "x", charge_posts=3), reqs)
    assert len(one.records) == len(reqs) >= 20
    assert all(a.wait_s >= b.wait_s - 1e-9 for a, b in zip(one.records, three.records, strict=True))
    assert one.mean_wait_s > three.mean_wait_s
    assert poisson_requests(6.0, 8 * 3600, seed=3) == poisson_requests(6.0, 8 * 3600, seed=3)


def test_calendar_booked_in_time_order_matches_the_event_simulation() -> None:
    """The dispatcher's reservation book gives the same service times as the FIFO simulation."""
    st = Station("s", "x", charge_posts=2, swap_bays=1, post_power_kw=120.0)
    reqs = poisson_requests(5.0, 10 * 3600, seed=11)
    run = simulate_station(st, reqs)
    cal = StationCalendar(st)
    for req, rec in zip(reqs, run.records, strict=True):
        dur = (
            st.swap_s
            if req.mode == SWAP
            else charge_time_s(req.battery_kwh, req.soc, req.target_soc, st.post_power_kw)
        )
        ((start, end),) = cal.book(req.mode, req.arrive_s, [dur])
        assert start == pytest.approx(rec.start_s)
        assert end == pytest.approx(rec.end_s)


def test_calendar_fills_gaps_and_respects_outages() -> None:
    st = Station("s", "x", charge_posts=1)
    cal = StationCalendar(st)
    cal.book(CHARGE, 3600.0, [1800.0])  # busy 1:00-1:30
    # A dry run does not book; an earlier truck fits into the gap before 1:00.
    assert cal.book(CHARGE, 0.0, [1200.0], commit=False) == [(0.0, 1200.0)]
    assert cal.book(CHARGE, 3000.0, [1200.0]) == [(5400.0, 6600.0)]  # no room before 1:00
    cal.add_outage(7000.0, 9000.0)
    assert cal.book(CHARGE, 6600.0, [600.0]) == [(9000.0, 9600.0)]
    with pytest.raises(EntityError, match="offers no swap"):
        cal.book(SWAP, 0.0, [300.0])


def test_cold_reduces_range_within_design_winter_losses() -> None:
    """DESIGN.md: winter range losses of 15-40 %. The energy model (heating, cold battery, dense
    air) gives about 21 % less range at -20 °C than at +20 °C, fully loaded at 60 km/h."""
    warm, cold = usable_range_km(20.0), usable_range_km(-20.0)
    assert 0.15 < 1 - cold / warm < 0.40
    temps = [20.0, 0.0, -10.5, -20.0, -31.0]  # down to the Ordos record low
    ranges = [usable_range_km(t) for t in temps]
    assert ranges == sorted(ranges, reverse=True)
    # An empty truck goes further than a loaded one.
    assert energy_per_km_kwh(-10.5, mass_kg=18_000.0) < energy_per_km_kwh(-10.5)
    # Usable energy is (soc - reserve) x pack: 0.8 x 282 kWh at the defaults.
    assert warm * energy_per_km_kwh(20.0) == pytest.approx(0.8 * 282.0)
    assert not math.isnan(cold)
