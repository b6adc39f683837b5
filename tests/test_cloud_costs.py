"""Cost model: hand-worked truck-days, overrides, the 1+4 platoon against conventional haulage."""

from __future__ import annotations

import dataclasses

import pytest

from convoy.cloud.costs import (
    ITEMS,
    CostError,
    CostParams,
    baseline_cost,
    compare_costs,
    hybrid_cost,
)
from convoy.cloud.kpi import TripRecord


def _leg(
    truck: str, km: float, kwh: float, loaded: bool, pos: int, driver: str | None
) -> TripRecord:
    return TripRecord(truck, km, kwh, loaded, 31.0 if loaded else 0.0, "P", pos, driver)


# One diesel truck-day: 150 km loaded with 31 t, 150 km back empty.
DIESEL_DAY = [_leg("X", 150.0, 0.0, True, 0, "d1"), _leg("X", 150.0, 0.0, False, 0, "d1")]
# A 1+1 hybrid day on the same shuttle: lead L (driver d1), follower F (driverless).
HYBRID_DAY = [
    _leg("L", 150.0, 255.0, True, 0, "d1"),
    _leg("L", 150.0, 157.5, False, 0, "d1"),
    _leg("F", 150.0, 240.0, True, 1, None),
    _leg("F", 150.0, 150.0, False, 1, None),
]


def test_diesel_truck_day_by_hand() -> None:
    c = baseline_cost(DIESEL_DAY)
    # a driver costs 11,000 x 12 x 1.3 = 171,600 CNY/yr = 536.25 per operating day (320)
    assert c.items_cny == pytest.approx(
        {
            "driver_wages": 2 * 536.25,  # two drivers per truck
            "remote_operator_wages": 0.0,
            "energy": (150 * 0.38 + 150 * 0.25) * 7.25,  # 94.5 L at 7.25 CNY/L = 685.125
            "battery_wear": 0.0,
            "truck_capital": 350_000 / 5 / 320,  # 218.75
            "automation_kits": 0.0,
            "maintenance": 300 * 0.30,
            "tolls": 300 * 2.25 * 0.95 * 0.5,  # half the km tolled, ETC -5 %: 320.625
            "insurance": 20_000 / 320,
        }
    )
    assert list(c.items_cny) == list(ITEMS)
    assert c.diesel_l == pytest.approx(94.5) and c.drivers == 2
    assert c.total_cny == pytest.approx(2449.5)
    assert c.tonne_km == 4650.0  # 31 t x 150 km
    assert c.cost_per_tonne_km_cny == pytest.approx(2449.5 / 4650)  # 0.527 CNY/t-km
    assert c.cost_per_km_cny == pytest.approx(2449.5 / 300)


def test_hybrid_day_by_hand() -> None:
    c = hybrid_cost(HYBRID_DAY)
    kwh = 255 + 157.5 + 240 + 150  # 802.5
    expected = {
        "driver_wages": 2 * 536.25,  # only L carries drivers
        "remote_operator_wages": 1 / 20 * 2 * 536.25,  # F's share of a 2-shift seat
        "energy": kwh * 0.65,
        "battery_wear": kwh * 600 / 3500,  # pack price over its cycle life, per kWh drawn
        "truck_capital": 2 * 210_000 / 5 / 320,
        "automation_kits": 150_000 / 5 / 320,  # F's L4 kit; the lead's kit costs 0
        "maintenance": 600 * 0.16,
        "tolls": 600 * 2.25 * 0.95 * 0.5,
        "insurance": 2 * 20_000 / 320,
    }
    assert c.items_cny == pytest.approx(expected)
    assert (c.trucks, c.driverless_trucks, c.drivers) == (2, 1, 2.0)
    assert c.remote_operators == pytest.approx(0.1)
    assert c.total_cny == pytest.approx(3003.821428571)
    assert c.cost_per_tonne_km_cny == pytest.approx(3003.821428571 / 9300)


def test_overrides_change_the_result_as_computed() -> None:
    base = hybrid_cost(HYBRID_DAY)
    dearer = hybrid_cost(
        HYBRID_DAY, CostParams.from_mapping({"electricity_price_cny_per_kwh": 0.85})
    )
    assert dearer.total_cny - base.total_cny == pytest.approx(802.5 * 0.20)
    cheap_driver = CostParams.from_mapping({"driver_wage_cny_per_month": 8_000})
    assert baseline_cost(DIESEL_DAY, cheap_driver).items_cny["driver_wages"] == pytest.approx(
        2 * 8_000 * 12 * 1.3 / 320
    )
    # replace() validates too, and a longer period spreads no variable cost
    p = dataclasses.replace(CostParams(), tolled_share=0.0)
    assert baseline_cost(DIESEL_DAY, p).items_cny["tolls"] == 0.0
    two_days = baseline_cost(DIESEL_DAY, period_days=2.0)
    one_day = baseline_cost(DIESEL_DAY)
    assert two_days.items_cny["energy"] == one_day.items_cny["energy"]
    assert two_days.items_cny["truck_capital"] == 2 * one_day.items_cny["truck_capital"]


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"driver_wage_cny_per_month": -1}, "driver_wage_cny_per_month = -1: must be >= 0"),
        ({"tolled_share": 1.5}, r"tolled_share = 1.5: must be >= 0.0 and <= 1.0"),
        ({"battery_cycles": 0}, "battery_cycles = 0: must be > 0"),
        ({"employer_cost_factor": 0.9}, "employer_cost_factor = 0.9: must be >= 1.0"),
        ({"diesel_price_cny_per_l": "cheap"}, "'cheap': must be a finite number"),
        ({"l4_kit_cny": True}, "l4_kit_cny = True: must be a finite number"),
        ({"driver_wage": 9000}, "'driver_wage' is not known; allowed: driver_wage_cny_per_month"),
    ],
)
def test_bad_cost_input(values: dict[str, object], match: str) -> None:
    with pytest.raises(CostError, match=match):
        CostParams.from_mapping(values)


def test_bad_call_arguments() -> None:
    with pytest.raises(CostError, match="period_days = 0"):
        hybrid_cost(HYBRID_DAY, period_days=0)
    with pytest.raises(CostError, match="powertrain = 'lng'"):
        baseline_cost(DIESEL_DAY, powertrain="lng")  # type: ignore[arg-type]


def test_every_default_cites_a_source() -> None:
    sources = CostParams.sources()
    assert set(sources) == {f.name for f in dataclasses.fields(CostParams)}
    assert all(len(s) > 10 for s in sources.values())


def _one_plus_four_day(p: CostParams) -> list[TripRecord]:
    """A 1+4 platoon's day in Ordos.  Km per day from the one Ordos figure there is:
    117 L of diesel per truck-day (China Daily Ordos 2022, costs.md §3) at the default mean
    consumption (38 + 25) / 2 = 31.5 L/100 km -> 371 km, half loaded (a shuttle).  Energy
    at the default kWh/km without drafting, so the platoon's saving is not flattered."""
    leg_km = 117.0 / 0.315 / 2
    trips = []
    for i in range(5):
        for loaded in (True, False):
            kwh = (p.electric_kwh_per_km_loaded if loaded else p.electric_kwh_per_km_empty) * leg_km
            trips.append(_leg(f"t{i}", leg_km, kwh, loaded, i, "d1" if i == 0 else None))
    return trips


def test_one_plus_four_against_conventional() -> None:
    """DESIGN.md: a 1+4 platoon is reported at -29 % cost per km against conventional
    haulage (Pony.ai, pilot scenarios; costs.md §5 notes the baseline is unpublished).

    With costs.md's defaults the same trucks as *solo electric* trucks with two drivers each
    cost 34.5 % more per km than the 1+4: all items but labour and kits are equal, so the
    saving is (drivers saved - remote operators - L4 kits) / baseline =
    (10 - 2) drivers x 536.25 - 0.4 operators x 536.25 - 4 kits x 93.75 = 3,700.5 CNY of
    10,711 per platoon-day.  That is the like-for-like figure, 5.5 points from the reported
    29 %; the band below is 29 % +- 7 points.

    Against *solo diesel* trucks -- conventional haulage in Ordos today -- the saving is
    48 %: diesel at 7.25 CNY/L and 31.5 L/100 km (2.28 CNY/km) against 1.375 kWh/km at
    0.65 CNY/kWh plus 0.17 CNY/kWh of battery wear (1.13 CNY/km) adds electrification's
    gain to the labour's.  The reported 29 % is not reproduced by that baseline, and the
    inputs are not tuned to make it so; the test pins what the sourced defaults give."""
    p = CostParams()
    day = _one_plus_four_day(p)

    like = compare_costs(day, p, powertrain="electric")
    labour_saved = (10 - 2) * 536.25 - 4 / 20 * 2 * 536.25
    kits = 4 * 150_000 / 5 / 320
    assert like.saving_per_tonne_km == pytest.approx(
        (labour_saved - kits) / like.baseline.total_cny
    )
    saving = like.saving_per_tonne_km
    assert saving is not None
    assert saving == pytest.approx(0.3455, abs=0.001)
    assert 0.29 - 0.07 <= saving <= 0.29 + 0.07

    diesel = compare_costs(day, p)
    assert diesel.saving_per_tonne_km == pytest.approx(0.4827, abs=0.001)
    # per km, as DESIGN.md states it: the same, because both fleets drive the same km
    h, b = diesel.hybrid.cost_per_km_cny, diesel.baseline.cost_per_km_cny
    assert h is not None and b is not None
    assert 1 - h / b == pytest.approx(diesel.saving_per_tonne_km)
    s = diesel.summary()
    assert s["cost_saving_vs_solo_diesel"] == diesel.saving_per_tonne_km
    assert s["solo_diesel_cost_per_tonne_km_cny"] == diesel.baseline.cost_per_tonne_km_cny
