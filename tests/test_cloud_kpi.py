"""KPIs of a run, checked against arithmetic done by hand on a four-leg day."""

from __future__ import annotations

import json
import math

import pytest

from convoy.cloud.kpi import (
    KpiInputError,
    SafetyRecord,
    SoloReference,
    TripRecord,
    compute_kpis,
    drafting,
    with_extra,
)
from convoy.cloud.supervision import SupervisionStats

# A 1+1 platoon P (A leads with driver d1, B follows driverless) and a solo truck C (driver
# d2) that hauls and comes back empty.
TRIPS = [
    TripRecord("A", 100.0, 160.0, True, 31.0, "P", 0, "d1", 0.0, 6000.0, due_s=7200.0),
    TripRecord("B", 100.0, 150.0, True, 31.0, "P", 1, None, 0.0, 6000.0, due_s=5000.0),
    TripRecord("C", 80.0, 136.0, True, 30.0, None, None, "d2", 0.0, 4800.0, due_s=4800.0),
    TripRecord("C", 80.0, 84.0, False, 0.0, None, None, "d2", 5000.0, 9800.0),
]
SAFETY = [
    SafetyRecord("A", min_ttc_s=3.2, hard_brakes=1),
    SafetyRecord("B", min_ttc_s=1.9, hard_brakes=2),
    SafetyRecord("C", collisions=1),
]
# one operator over 2 h, 2 requests, 6 min busy, one MRM
SUP = SupervisionStats(1, 0.0, 7200.0, requests=2, resolved=1, mrms=1, busy_s=360.0, max_wait_s=4)


def test_kpis_by_hand() -> None:
    k = compute_kpis(TRIPS, SAFETY, SUP)
    assert (k.trips, k.trucks) == (4, 3)
    assert k.tonnes_t == 92.0  # 31 + 31 + 30
    assert k.tonne_km == 8600.0  # 3100 + 3100 + 2400
    assert (k.truck_km, k.loaded_km, k.empty_km) == (360.0, 280.0, 80.0)
    assert k.empty_km_share == pytest.approx(80 / 360)
    assert k.energy_kwh == 530.0  # 160 + 150 + 136 + 84
    assert k.energy_per_tonne_km_kwh == pytest.approx(530 / 8600)  # 0.0616
    # loaded legs: solo 136/80 = 1.7, lead 1.6, follower 1.5 kWh/km
    assert k.loaded_energy_per_km_by_position_kwh == pytest.approx(
        {"solo": 1.7, "0": 1.6, "1": 1.5}
    )
    assert list(k.loaded_energy_per_km_by_position_kwh) == ["solo", "0", "1"]
    # against solo 1.7 kWh/km: lead 1 - 160/170 = 5.9 %, follower 1 - 150/170 = 11.8 %
    assert k.drafting_saving_by_position == pytest.approx({"0": 1 - 160 / 170, "1": 1 - 150 / 170})
    assert k.driverless_km == 100.0
    assert (k.drivers_needed, k.trucks_per_driver) == (2, 1.5)
    # due legs: A 6000 <= 7200 yes, B 6000 > 5000 no, C 4800 <= 4800 yes
    assert k.on_time_share == pytest.approx(2 / 3)
    # 2 requests per 100 driverless km
    assert (k.takeovers, k.takeovers_per_1000_km, k.minimal_risk_manoeuvres) == (2, 20.0, 1)
    assert k.requests_per_operator_hour == 1.0  # 2 requests / 2 operator-hours
    assert k.remote_operator_utilisation == 0.05  # 360 s / 7200 s
    assert (k.min_ttc_s, k.hard_brakes, k.collisions) == (1.9, 3, 1)


def test_drafting_matches_load_state() -> None:
    """A lead that also drove empty is compared with the solo empty rate for those km:
    expected = 100 x 1.7 + 50 x 1.05 = 222.5 kWh, used 160 + 50 = 210 -> 5.6 % saving."""
    trips = [*TRIPS, TripRecord("A", 50.0, 50.0, False, 0.0, "P", 0, "d1")]
    _, savings = drafting(trips)
    assert savings["0"] == pytest.approx(1 - 210 / 222.5)
    # without a solo rate for the load state a position needs, no saving is claimed
    no_solo = [t for t in TRIPS if t.platoon_id is not None]
    assert drafting(no_solo)[1] == {}
    ref = SoloReference(loaded_kwh_per_km=2.0)
    assert drafting(no_solo, ref)[1] == pytest.approx({"0": 0.2, "1": 0.25})


def test_summary_dict_is_json_and_has_units() -> None:
    k = with_extra(compute_kpis(TRIPS[:2]), {"cost_per_tonne_km_cny": 0.3})
    d = k.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["min_ttc_s"] is None  # no safety records: inf -> null
    assert d["takeovers_per_1000_km"] is None  # no supervision given
    assert d["cost_per_tonne_km_cny"] == 0.3 and "extra" not in d
    assert d["drafting_saving_by_position"] == {}  # no solo legs, no reference
    with pytest.raises(KpiInputError, match="clash"):
        with_extra(k, {"tonne_km": 1})


def test_empty_run_has_no_ratios() -> None:
    k = compute_kpis([])
    assert (k.truck_km, k.empty_km_share, k.energy_per_tonne_km_kwh, k.trucks_per_driver) == (
        0.0,
        None,
        None,
        None,
    )
    assert math.isinf(k.min_ttc_s)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"distance_km": -1.0}, "distance_km = -1.0"),
        ({"tonnes": 0.0}, "loaded leg must carry > 0 t"),
        ({"loaded": False}, "empty leg carries 0 t"),
        ({"position_in_platoon": None}, "give both"),
        ({"position_in_platoon": -1}, "position_in_platoon = -1"),
        ({"arrival_s": -5.0}, "arrival_s = -5.0"),
        ({"energy_kwh": math.nan}, "energy_kwh = nan"),
    ],
)
def test_bad_trip(kwargs: dict[str, object], match: str) -> None:
    base = {
        "truck_id": "A",
        "distance_km": 10.0,
        "energy_kwh": 5.0,
        "loaded": True,
        "tonnes": 30.0,
        "platoon_id": "P",
        "position_in_platoon": 0,
    }
    with pytest.raises(KpiInputError, match=match):
        TripRecord(**{**base, **kwargs})  # type: ignore[arg-type]


def test_bad_safety() -> None:
    with pytest.raises(KpiInputError, match="hard_brakes = -1"):
        SafetyRecord("A", hard_brakes=-1)
    with pytest.raises(KpiInputError, match="min_ttc_s"):
        SafetyRecord("A", min_ttc_s=math.nan)
