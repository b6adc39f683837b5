"""Hub release timing: the optimal threshold (one-step look-ahead) rule against the periodic rule.

Documented case: trucks arrive at 6 per hour; the lead premium is one driver-trip of 2 h
(137.5 CNY) and a waiting truck costs 156.25 CNY/h (``ReleaseCosts.ordos``, costs.md). Then
``2λΔ/c = 2·6·137.5/156.25 = 10.56``, so the optimal platoon size is the least m with
``m(m+1) >= 10.56``: m = 3 (2·3 = 6 < 10.56 <= 12). The expected cost per truck is
``J(3) = 137.5/3 + 156.25·2/(2·6) = 45.83 + 26.04 = 71.88`` CNY. Periodic release at its best
period costs about 85 CNY (about 86 at T = 30 min: 137.5·1.034/3 + 156.25·0.25), so the threshold
rule saves some 15 %.
"""

from __future__ import annotations

import pytest

from convoy.cloud.entities import EntityError
from convoy.cloud.release import (
    PeriodicRelease,
    ReleaseCosts,
    ThresholdRelease,
    compare_release,
    cost_per_truck,
    evaluate_release,
    optimal_threshold,
    poisson_arrivals,
)

COSTS = ReleaseCosts.ordos(trip_h=2.0)
RATE_PER_H = 6.0


def test_default_costs_come_from_costs_md() -> None:
    # 11,000 CNY/month x 1.3 / (26 x 8 h) = 68.75 CNY/h; x 2 h.
    assert COSTS.lead_premium_cny == pytest.approx(137.5)
    # 1 M CNY / (320 days x 20 h).
    assert COSTS.wait_cny_per_truck_h == pytest.approx(156.25)


def test_optimal_threshold_by_hand() -> None:
    assert optimal_threshold(RATE_PER_H, COSTS, max_size=5) == 3
    # λ = 12/h: 2λΔ/c = 21.12 -> 4·5 = 20 < 21.12 <= 30 = 5·6 -> m = 5, or the cap.
    assert optimal_threshold(12.0, COSTS, max_size=5) == 5
    assert optimal_threshold(12.0, COSTS, max_size=4) == 4
    # J(m) is minimal at the threshold among all sizes.
    js = {m: cost_per_truck(m, RATE_PER_H, COSTS) for m in range(1, 6)}
    assert min(js, key=lambda m: js[m]) == 3
    assert js[3] == pytest.approx(137.5 / 3 + 156.25 * 2 / 12)


def test_look_ahead_rule_holds_exactly_below_the_threshold() -> None:
    """Hold while λ(g - C_f) > k·c with g = J(m*): true for k < m*, false from m* on."""
    rule = ThresholdRelease(RATE_PER_H, COSTS, max_size=5)
    assert [rule.hold(k) for k in range(1, 6)] == [True, True, False, False, False]
    fast = ThresholdRelease(12.0, COSTS, max_size=5)
    assert [fast.hold(k) for k in range(1, 6)] == [True, True, True, True, False]


def test_deterministic_arrivals_by_hand() -> None:
    """Trucks every 10 min from t = 5 min. Threshold 3 releases at each third arrival: waits
    20, 10, 0 min (mean 10). Periodic every 30 min releases at 30 and 60 min: waits 25, 15,
    5 min (mean 15). Both form two platoons of three."""
    arrivals = [300.0, 900.0, 1500.0, 2100.0, 2700.0, 3300.0]
    thr = evaluate_release(arrivals, ThresholdRelease(RATE_PER_H, COSTS, 5), COSTS, 5)
    per = evaluate_release(arrivals, PeriodicRelease(1800.0), COSTS, 5)
    assert (thr.n_platoons, thr.mean_size, thr.mean_wait_s) == (2, 3.0, pytest.approx(600.0))
    assert (per.n_platoons, per.mean_size, per.mean_wait_s) == (2, 3.0, pytest.approx(900.0))
    # Cost per truck: (2 Δ + total wait · c) / 6.
    assert thr.cost_per_truck_cny == pytest.approx((2 * 137.5 + 6 * 600 / 3600 * 156.25) / 6)
    assert thr.saving_per_truck_cny == pytest.approx(137.5 - thr.cost_per_truck_cny)


def test_periodic_release_splits_platoons_above_the_cap() -> None:
    """Seven trucks released together with a cap of 5 leave as two platoons."""
    out = evaluate_release([10.0 * k for k in range(7)], PeriodicRelease(100.0), COSTS, 5)
    assert out.n_platoons == 2


def test_max_wait_caps_the_first_trucks_wait() -> None:
    rule = ThresholdRelease(RATE_PER_H, COSTS, max_size=5, max_wait_s=600.0)
    out = evaluate_release([0.0, 3000.0], rule, COSTS, 5)
    assert out.n_platoons == 2
    # Each truck waits out the 600 s cap alone: released at 600 s and 3600 s.
    assert out.mean_wait_s == pytest.approx(600.0)
    closing = evaluate_release([0.0, 3000.0], rule, COSTS, 5, close_s=3300.0)
    assert closing.mean_wait_s == pytest.approx((600.0 + 300.0) / 2)


def test_threshold_beats_the_best_periodic_rule_on_a_poisson_stream() -> None:
    """The documented case over 1,000 h of seeded arrivals: the threshold rule costs less per
    truck than periodic release at any period from 5 to 120 min, matches J(3) within 3 %, and
    forms platoons of 3."""
    horizon = 1_000 * 3600.0
    arrivals = poisson_arrivals(RATE_PER_H, horizon, seed=7)
    thr = evaluate_release(arrivals, ThresholdRelease(RATE_PER_H, COSTS, 5), COSTS, 5, horizon)
    best_periodic = min(
        evaluate_release(arrivals, PeriodicRelease(60.0 * m), COSTS, 5, horizon).cost_per_truck_cny
        for m in range(5, 125, 5)
    )
    assert thr.mean_size == pytest.approx(3.0, abs=0.01)
    assert thr.cost_per_truck_cny == pytest.approx(cost_per_truck(3, RATE_PER_H, COSTS), rel=0.03)
    assert thr.cost_per_truck_cny < 0.9 * best_periodic
    assert thr.saving_per_truck_cny > 0.45 * COSTS.lead_premium_cny


def test_compare_release_reports_both_rules() -> None:
    out = compare_release(RATE_PER_H, 200 * 3600.0, COSTS, 5, period_s=1800.0, seed=1)
    assert set(out) == {"periodic", "threshold"}
    assert out["threshold"].n_trucks == out["periodic"].n_trucks > 1000
    assert out["threshold"].cost_per_truck_cny < out["periodic"].cost_per_truck_cny
    # Periodic release at 30 min: mean wait about T/2 = 15 min.
    assert out["periodic"].mean_wait_s == pytest.approx(900.0, rel=0.05)


def test_bad_costs_are_named() -> None:
    with pytest.raises(EntityError, match="lead_premium_cny = -1"):
        ReleaseCosts(-1.0, 10.0)
    with pytest.raises(EntityError, match="period_s"):
        PeriodicRelease(0.0)
