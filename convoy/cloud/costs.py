"""Cost model: the hybrid platoon fleet against conventional solo trucks on the same legs.

Every default comes from ``/work/shared/costs.md`` (the cost inputs collected for convoy,
each with its public source); the field's ``source`` metadata names the row, and
``CostParams.sources()`` lists them for a report.  [V] = the value was read in the source,
[S] = secondhand or an estimate, as costs.md marks it.  Override any value with
``CostParams.from_mapping({...})`` or ``dataclasses.replace``; both validate.

What a fleet costs over ``period_days`` operating days (CNY):

* **fixed** (per truck or person and year, spread over ``operating_days_per_year``):
  driver wages (``drivers_per_driven_truck`` per truck that carries a driver, wage x
  ``employer_cost_factor`` x 12), remote-operator wages (the fleet's share of a centre:
  driverless trucks / ``driverless_trucks_per_operator`` seats x ``operators_per_seat``),
  truck capital and automation kits (straight line over ``amortisation_years``, no residual
  value, no interest), insurance;
* **variable**: energy (the legs' own battery energy at the charging price, or diesel at the
  baseline's consumption per km), battery wear (pack price per kWh over its cycle life, per
  kWh drawn — so the pack's capital is paid by use), maintenance per km, tolls per km on
  the tolled share of the km, less the ETC discount.

The hybrid fleet is electric throughout (DESIGN.md: electric followers; the lead is
modelled as the same truck with a driver).  The baseline serves the same legs with solo,
human-driven trucks, one per truck of the hybrid fleet, each with its own crew, diesel by
default (``baseline_cost``).  Cost per tonne-km divides by the loaded legs' tonne-km.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from convoy.cloud.kpi import TripRecord

Powertrain = Literal["diesel", "electric"]
POWERTRAINS: tuple[Powertrain, ...] = ("diesel", "electric")

# Cost items, in report order.
ITEMS = (
    "driver_wages",
    "remote_operator_wages",
    "energy",
    "battery_wear",
    "truck_capital",
    "automation_kits",
    "maintenance",
    "tolls",
    "insurance",
)


class CostError(ValueError):
    """A cost parameter that cannot be used; the message names it, its value and the range."""


def _p(
    default: float,
    source: str,
    *,
    ge: float | None = 0.0,
    gt: float | None = None,
    le: float | None = None,
) -> Any:
    return field(default=default, metadata={"source": source, "ge": ge, "gt": gt, "le": le})


@dataclass(frozen=True, slots=True)
class CostParams:
    """Inputs of the cost model (CNY); the field metadata cites costs.md for each default."""

    # -- labour (costs.md §1) ------------------------------------------------------------
    driver_wage_cny_per_month: float = _p(
        11_000.0, "§1: A2 truck driver 10,000-12,000 CNY/month (孤岛车谈 ep.161) [V]; 11,000 [S]"
    )
    employer_cost_factor: float = _p(
        1.3, "§1: wage x 1.2-1.4 for social insurance, meals, lodging; estimate [S]", ge=1.0
    )
    drivers_per_driven_truck: float = _p(
        2.0, "§1: 2 drivers per truck for 24 h coal shuttles (podcast, ttnews) [S]", gt=0.0
    )
    remote_operator_wage_cny_per_month: float = _p(
        11_000.0, "not in costs.md: assumed paid as a driver (an A2-licensed professional)"
    )
    operators_per_seat: float = _p(
        2.0, "assumed staffed like a driven truck: two shifts per round-the-clock seat", gt=0.0
    )
    driverless_trucks_per_operator: float = _p(
        20.0, "DESIGN.md: 1 operator per 15-20 vehicles (industry reports)", gt=0.0
    )
    operating_days_per_year: float = _p(
        320.0, "§4: 320 operating days/yr, Ordos coal trucks (China Daily Ordos 2022) [V]",
        gt=0.0, le=366.0,
    )  # fmt: skip
    # -- energy (costs.md §3) ------------------------------------------------------------
    diesel_price_cny_per_l: float = _p(
        7.25, "§3: diesel 2025-26 7.0-7.5 CNY/L [S]; 7.61 in Jan 2023 [V]"
    )
    diesel_l_per_100km_loaded: float = _p(
        38.0, "§3: 36-40 L/100 km loaded [S]; ICCT China average 44, CATL reference 33 [V]"
    )
    diesel_l_per_100km_empty: float = _p(25.0, "§3: ~25 L/100 km empty; estimate, unsourced [S]")
    electricity_price_cny_per_kwh: float = _p(
        0.65, "§3: depot charging in Ordos 0.55-0.75 CNY/kWh all-in; estimate [S]"
    )
    electric_kwh_per_km_loaded: float = _p(
        1.7, "§3: 1.6-1.8 kWh/km loaded 49 t, from ranges of 230-513 kWh trucks [S]"
    )
    electric_kwh_per_km_empty: float = _p(1.05, "§3: ~1.0-1.1 kWh/km empty; estimate [S]")
    # -- capital (costs.md §2, §6) -------------------------------------------------------
    diesel_truck_cny: float = _p(350_000.0, "§2: 49 t 6x4 diesel tractor 300,000-400,000 CNY [S]")
    electric_chassis_cny: float = _p(
        210_000.0, "§2: 550 hp swap-truck chassis without battery (chinatruck.net) [V]"
    )
    battery_cny_per_kwh: float = _p(600.0, "§2: truck pack 600 CNY/kWh, dealer 2024 [V]")
    battery_cycles: float = _p(
        3_500.0, "§6: 3,000-4,000 full-equivalent cycles to 80 % SOH [S]", gt=0.0
    )
    l4_kit_cny: float = _p(
        150_000.0, "§2: L4 add-on ~150,000 CNY/truck in series production (KargoBot) [V]"
    )
    lead_kit_cny: float = _p(0.0, "§2: lead-truck L2 + V2V kit 'small'; no figure found")
    amortisation_years: float = _p(
        5.0, "§2: 5-year lifecycle horizon of the 2023 swap-truck broker report [V]", gt=0.0
    )
    # -- other operating costs (costs.md §4) ---------------------------------------------
    maintenance_diesel_cny_per_km: float = _p(0.30, "§4: diesel 0.25-0.35 CNY/km [S]")
    maintenance_electric_cny_per_km: float = _p(
        0.16, "§4: electric 0.12-0.20 CNY/km, consistent with Weiqiao's saving [S]"
    )
    toll_cny_per_km: float = _p(2.25, "§4: 6-axle expressway toll 2.0-2.5 CNY/km per truck [S]")
    toll_discount: float = _p(
        0.05, "§4: ETC 5 % discount on Inner Mongolia expressways (nm.people.com.cn) [V]",
        le=1.0,
    )  # fmt: skip
    tolled_share: float = _p(
        0.5,
        "assumption: half the km on expressways (G65/G18 corridors), the rest on toll-free "
        "mine and local roads; §4 has no figure for the split",
        le=1.0,
    )
    insurance_cny_per_truck_year: float = _p(
        20_000.0, "§4: 15,000-25,000 CNY per tractor-year; estimate [S]"
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise CostError(f"cost parameter {f.name} = {v!r}: must be a finite number")
            ge, gt, le = f.metadata["ge"], f.metadata["gt"], f.metadata["le"]
            bad = (
                (ge is not None and v < ge)
                or (gt is not None and v <= gt)
                or (le is not None and v > le)
            )
            if bad:
                lo = f">= {ge}" if gt is None else f"> {gt}"
                rng = lo if le is None else f"{lo} and <= {le}"
                raise CostError(f"cost parameter {f.name} = {v!r}: must be {rng}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None) -> CostParams:
        """The defaults with ``values`` overriding them (a scenario's ``costs:`` section)."""
        values = dict(values or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise CostError(
                f"cost parameter {unknown[0]!r} is not known; allowed: {', '.join(names)}"
            )
        return cls(**values)

    @classmethod
    def sources(cls) -> dict[str, str]:
        """Each parameter's source, as cited beside its default."""
        return {f.name: f.metadata["source"] for f in fields(cls)}

    # -- derived rates -------------------------------------------------------------------
    def per_day(self, cny_per_year: float) -> float:
        return cny_per_year / self.operating_days_per_year

    @property
    def driver_cny_per_year(self) -> float:
        return 12.0 * self.driver_wage_cny_per_month * self.employer_cost_factor

    @property
    def remote_operator_cny_per_year(self) -> float:
        return 12.0 * self.remote_operator_wage_cny_per_month * self.employer_cost_factor

    @property
    def battery_wear_cny_per_kwh(self) -> float:
        """Pack price spread over its throughput: one capacity per full-equivalent cycle."""
        return self.battery_cny_per_kwh / self.battery_cycles

    @property
    def toll_cny_per_truck_km(self) -> float:
        """Average toll per km driven (tolled share, ETC discount)."""
        return self.toll_cny_per_km * (1.0 - self.toll_discount) * self.tolled_share

    def diesel_l(self, trip: TripRecord) -> float:
        per_100 = self.diesel_l_per_100km_loaded if trip.loaded else self.diesel_l_per_100km_empty
        return per_100 * trip.distance_km / 100.0

    def electric_kwh(self, trip: TripRecord) -> float:
        """Default battery energy of a leg, for legs not simulated."""
        per_km = self.electric_kwh_per_km_loaded if trip.loaded else self.electric_kwh_per_km_empty
        return per_km * trip.distance_km


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """What one fleet costs over ``period_days`` operating days.

    Attributes:
        fleet: ``"hybrid-platoon"``, ``"solo-diesel"`` or ``"solo-electric"``.
        period_days: operating days the legs span (fixed costs are spread over them).
        trucks, driverless_trucks: trucks in the fleet, and those with an L4 kit.
        drivers, remote_operators: staff paid (fractional: a share of shifts or of a centre).
        truck_km, tonne_km: distance and freight work of the legs.
        energy_kwh, diesel_l: energy drawn.
        items_cny: cost per item (``ITEMS``) [CNY].
    """

    fleet: str
    period_days: float
    trucks: int
    driverless_trucks: int
    drivers: float
    remote_operators: float
    truck_km: float
    tonne_km: float
    energy_kwh: float
    diesel_l: float
    items_cny: dict[str, float]

    @property
    def total_cny(self) -> float:
        return sum(self.items_cny.values())

    @property
    def cost_per_km_cny(self) -> float | None:
        return self.total_cny / self.truck_km if self.truck_km > 0 else None

    @property
    def cost_per_tonne_km_cny(self) -> float | None:
        return self.total_cny / self.tonne_km if self.tonne_km > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet,
            "period_days": self.period_days,
            "trucks": self.trucks,
            "driverless_trucks": self.driverless_trucks,
            "drivers": self.drivers,
            "remote_operators": self.remote_operators,
            "truck_km": self.truck_km,
            "tonne_km": self.tonne_km,
            "energy_kwh": self.energy_kwh,
            "diesel_l": self.diesel_l,
            "items_cny": dict(self.items_cny),
            "total_cny": self.total_cny,
            "cost_per_km_cny": self.cost_per_km_cny,
            "cost_per_tonne_km_cny": self.cost_per_tonne_km_cny,
        }


def _check_period(period_days: float) -> None:
    if not (math.isfinite(period_days) and period_days > 0):
        raise CostError(f"period_days = {period_days!r}: must be a finite number > 0")


def hybrid_cost(
    trips: Iterable[TripRecord], params: CostParams | None = None, period_days: float = 1.0
) -> CostBreakdown:
    """The hybrid platoon fleet's cost over the legs: a truck that ever drove without a
    driver carries an L4 kit and counts towards the remote centre; a truck that ever
    carried a driver is crewed with ``drivers_per_driven_truck``.  Energy is the legs' own."""
    p = params or CostParams()
    _check_period(period_days)
    trips = list(trips)
    trucks = {t.truck_id for t in trips}
    driverless = {t.truck_id for t in trips if t.driver_id is None}
    driven = {t.truck_id for t in trips if t.driver_id is not None}
    km = sum(t.distance_km for t in trips)
    kwh = sum(t.energy_kwh for t in trips)
    drivers = len(driven) * p.drivers_per_driven_truck
    operators = len(driverless) / p.driverless_trucks_per_operator * p.operators_per_seat
    kits = len(driverless) * p.l4_kit_cny + len(driven - driverless) * p.lead_kit_cny
    d = period_days
    items = {
        "driver_wages": drivers * p.per_day(p.driver_cny_per_year) * d,
        "remote_operator_wages": operators * p.per_day(p.remote_operator_cny_per_year) * d,
        "energy": kwh * p.electricity_price_cny_per_kwh,
        "battery_wear": sum(max(t.energy_kwh, 0.0) for t in trips) * p.battery_wear_cny_per_kwh,
        "truck_capital": len(trucks) * p.per_day(p.electric_chassis_cny / p.amortisation_years)
        * d,
        "automation_kits": p.per_day(kits / p.amortisation_years) * d,
        "maintenance": km * p.maintenance_electric_cny_per_km,
        "tolls": km * p.toll_cny_per_truck_km,
        "insurance": len(trucks) * p.per_day(p.insurance_cny_per_truck_year) * d,
    }  # fmt: skip
    return CostBreakdown(
        fleet="hybrid-platoon",
        period_days=d,
        trucks=len(trucks),
        driverless_trucks=len(driverless),
        drivers=drivers,
        remote_operators=operators,
        truck_km=km,
        tonne_km=sum(t.tonne_km for t in trips),
        energy_kwh=kwh,
        diesel_l=0.0,
        items_cny=items,
    )


def baseline_cost(
    trips: Iterable[TripRecord],
    params: CostParams | None = None,
    period_days: float = 1.0,
    powertrain: Powertrain = "diesel",
) -> CostBreakdown:
    """The same legs served by conventional solo trucks: one human-driven truck per truck
    of the hybrid fleet, each with ``drivers_per_driven_truck`` drivers, no kits, no remote
    centre.  Diesel uses ``diesel_l_per_100km_loaded``/``_empty``; ``powertrain="electric"``
    uses the default kWh per km (the labour effect alone)."""
    p = params or CostParams()
    _check_period(period_days)
    if powertrain not in POWERTRAINS:
        raise CostError(f"powertrain = {powertrain!r}: allowed: {', '.join(POWERTRAINS)}")
    trips = list(trips)
    n = len({t.truck_id for t in trips})
    km = sum(t.distance_km for t in trips)
    drivers = n * p.drivers_per_driven_truck
    d = period_days
    if powertrain == "diesel":
        litres, kwh = sum(p.diesel_l(t) for t in trips), 0.0
        energy = litres * p.diesel_price_cny_per_l
        truck_cny, maint = p.diesel_truck_cny, p.maintenance_diesel_cny_per_km
    else:
        litres, kwh = 0.0, sum(p.electric_kwh(t) for t in trips)
        energy = kwh * p.electricity_price_cny_per_kwh
        truck_cny, maint = p.electric_chassis_cny, p.maintenance_electric_cny_per_km
    items = {
        "driver_wages": drivers * p.per_day(p.driver_cny_per_year) * d,
        "remote_operator_wages": 0.0,
        "energy": energy,
        "battery_wear": kwh * p.battery_wear_cny_per_kwh,
        "truck_capital": n * p.per_day(truck_cny / p.amortisation_years) * d,
        "automation_kits": 0.0,
        "maintenance": km * maint,
        "tolls": km * p.toll_cny_per_truck_km,
        "insurance": n * p.per_day(p.insurance_cny_per_truck_year) * d,
    }
    return CostBreakdown(
        fleet=f"solo-{powertrain}",
        period_days=d,
        trucks=n,
        driverless_trucks=0,
        drivers=drivers,
        remote_operators=0.0,
        truck_km=km,
        tonne_km=sum(t.tonne_km for t in trips),
        energy_kwh=kwh,
        diesel_l=litres,
        items_cny=items,
    )


@dataclass(frozen=True, slots=True)
class CostComparison:
    """The hybrid fleet against the baseline on the same legs."""

    hybrid: CostBreakdown
    baseline: CostBreakdown

    @property
    def saving_per_tonne_km(self) -> float | None:
        """1 - hybrid / baseline cost per tonne-km (0.29 = 29 % cheaper)."""
        h, b = self.hybrid.cost_per_tonne_km_cny, self.baseline.cost_per_tonne_km_cny
        return 1.0 - h / b if h is not None and b else None

    def summary(self) -> dict[str, Any]:
        """Entries for ``summary.json`` (see ``convoy.cloud.kpi.with_extra``)."""
        b = self.baseline.fleet.replace("-", "_")
        return {
            "cost_per_tonne_km_cny": self.hybrid.cost_per_tonne_km_cny,
            "cost_per_km_cny": self.hybrid.cost_per_km_cny,
            f"{b}_cost_per_tonne_km_cny": self.baseline.cost_per_tonne_km_cny,
            f"{b}_cost_per_km_cny": self.baseline.cost_per_km_cny,
            f"cost_saving_vs_{b}": self.saving_per_tonne_km,
        }


def compare_costs(
    trips: Iterable[TripRecord],
    params: CostParams | None = None,
    period_days: float = 1.0,
    powertrain: Powertrain = "diesel",
) -> CostComparison:
    """Hybrid fleet and conventional baseline on the same legs."""
    trips = list(trips)
    return CostComparison(
        hybrid_cost(trips, params, period_days),
        baseline_cost(trips, params, period_days, powertrain),
    )
