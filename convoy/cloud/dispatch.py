"""Day planning for hybrid platoons: crews, lanes, trips, batteries, drivers, and re-planning.

The scarce resource is the lead driver (DESIGN.md, "Platoon formation and dispatch"), so the plan
is built around **crews**: one lead truck and up to ``N`` L4 followers that travel together for
the day (driverless followers never move without a lead). A crew is driven by one qualified
driver per shift; it runs **cycles** on a **lane** (an origin-destination pair of orders):

    [empty leg to a station, charge or swap]  empty leg to the origin  [rest or wait]
    load  loaded leg  unload

How the plan is made, shift by shift (a rolling horizon, so re-planning is the same code):

1. **Estimate.** For every candidate crew and lane, a dry run of cycles on that lane for the
   rest of the shift (no queues, unlimited cargo) gives the trips it could make, the tonnes and
   the cost per tonne. Dry runs are cached by crew state.
2. **Allocate (CP-SAT).** Choose at most one lane per crew, at most as many new crews per hub as
   the hub has lead drivers on the shift, maximising the value of the tonnes moved (freight rate
   x lane km x priority weight) minus their cost (energy, maintenance, driver time) and the cost
   of reaching the lane. OR-Tools CP-SAT solves it under ``PlanParams.cpsat_time_limit_s``; if it
   returns no solution in time (or ``solver="greedy"``), a greedy pass (best marginal profit
   first) allocates instead. ``DayPlan.solves`` says which ran, per shift, with its status and
   wall time.
3. **Build.** Crews are advanced in time order (one event queue). At each decision a crew plans
   its next cycle on its lane: orders are claimed earliest-loadable first, then by priority and
   delivery deadline; charging is inserted when the battery would not cover the empty leg, the
   loaded leg and the way from the destination to the nearest station with the reserve left;
   rests are inserted to keep the hours of service. When its lane has nothing left it may take
   another lane (best profit per hour). Crews the allocation left idle, with a spare driver, then
   pick up what is left.

Energy. A leg's energy per truck comes from the route matrices of :class:`convoy.road.routing.
Router` for an empty and a full truck along the same route, interpolated linearly in the truck's
payload (grade and rolling resistance scale with mass; drag does not). The plan uses solo
energies, an upper bound: platoon drafting only saves. Cold days enter through
``PlanParams.ambient_c`` (heating and battery losses of :mod:`convoy.vehicle.energy`).

Re-planning (:func:`replan`) keeps every record that started before ``t_s`` (a load in progress
is completed), rebuilds each crew's state (place, charge, driver's hours) and runs the same
shifts from ``t_s`` under the changed conditions: a late truck, a closed road, a dust storm, an
urgent order, or a station outage.

Times are seconds from 00:00 of the operating day (may exceed 86,400, see ``entities``).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, get_args

import numpy as np

from convoy.cloud.charging import (
    DEFAULT_CHARGE_TARGET_SOC,
    DEFAULT_RESERVE_SOC,
    ServiceMode,
    StationCalendar,
    service_time_s,
)
from convoy.cloud.entities import (
    Driver,
    EntityError,
    Fleet,
    HoursOfService,
    Order,
    Station,
    TimeWindow,
    Truck,
    check_orders,
)
from convoy.road.hazards import CorridorSpan, HazardEvent, PolygonArea
from convoy.road.network import Edge, RoadNetwork
from convoy.road.ordos import ordos_network
from convoy.road.routing import (
    OBJECTIVES,
    Objective,
    Restrictions,
    Router,
    TruckLoad,
)
from convoy.vehicle.energy import DieselPowertrain, ElectricPowertrain
from convoy.vehicle.truck import TruckSpec

_EPS_T = 1e-6  # tonnes below this count as zero
_INF = math.inf


class DispatchError(ValueError):
    """Bad planning input; the message names the field, the value and what is allowed."""


# --- parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DispatchCosts:
    """Money the plan weighs (all from costs.md; [S] = estimate there).

    Attributes:
        electricity_cny_per_kwh: depot charging, all in (costs.md §3 suggests 0.55-0.75) [S].
        diesel_cny_per_kwh: diesel at 7.25 CNY/L (costs.md §3: 7.0-7.5) over 9.97 kWh/L [S].
        maintenance_cny_per_km: per truck-km, electric (costs.md §4: 0.12-0.20) [S].
        driver_cny_per_h: 11,000 CNY/month x 1.3 employer cost / (26 days x 8 h) (costs.md §1) [S].
        freight_cny_per_tkm: value of moving a tonne one km, the price of leaving it unserved
            (costs.md §4: 0.30-0.50 for Ordos coal) [S].
        priority_weight: multiplier of that value for priority 0, 1 and 2.
    """

    electricity_cny_per_kwh: float = 0.65
    diesel_cny_per_kwh: float = 7.25 / 9.97
    maintenance_cny_per_km: float = 0.16
    driver_cny_per_h: float = 11_000.0 * 1.3 / (26 * 8)
    freight_cny_per_tkm: float = 0.40
    priority_weight: tuple[float, float, float] = (1.0, 2.0, 5.0)


Solver = Literal["auto", "cp-sat", "greedy"]
SOLVERS: tuple[str, ...] = get_args(Solver)


@dataclass(frozen=True, slots=True)
class PlanParams:
    """How the day is planned.

    Attributes:
        max_followers: most driverless followers behind one lead ("1+4" by default; Beijing's
            rules allow "1+5", DESIGN.md). See :func:`parse_platoon_format`.
        route_objective: what routes minimise: "fastest", "shortest" or "energy".
        reserve_soc: state of charge a truck never goes below [-].
        charge_target_soc: where a charge stops [-].
        load_s_per_truck, unload_s_per_truck: loading and tipping one truck [s]; estimates
            (a silo or loader fills a 31 t trailer in a few minutes).
        briefing_s: safety briefing at the start of a shift [s] (DESIGN.md: groups start the
            day with one; its length is an estimate).
        max_wait_for_order_s: longest a crew waits at an origin for a pickup window to open [s].
        max_hold_for_late_truck_s: a crew waits up to this long for a late truck; beyond it the
            crew leaves without it [s].
        ambient_c: ambient temperature for the energy model [°C].
        solver: "auto" (CP-SAT, greedy if it finds nothing in time), "cp-sat" (same; the
            name states the intent) or "greedy" (skip CP-SAT).
        cpsat_time_limit_s: wall-time limit of each CP-SAT solve [s].
        cpsat_workers: CP-SAT search workers.
        costs: the money.
    """

    max_followers: int = 4
    route_objective: Objective = "fastest"
    reserve_soc: float = DEFAULT_RESERVE_SOC
    charge_target_soc: float = DEFAULT_CHARGE_TARGET_SOC
    load_s_per_truck: float = 300.0
    unload_s_per_truck: float = 300.0
    briefing_s: float = 1_200.0
    max_wait_for_order_s: float = 2 * 3_600.0
    max_hold_for_late_truck_s: float = 1_800.0
    ambient_c: float = 20.0
    solver: Solver = "auto"
    cpsat_time_limit_s: float = 2.0
    cpsat_workers: int = 1
    costs: DispatchCosts = field(default_factory=DispatchCosts)

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> DispatchError:
            return DispatchError(f"PlanParams.{name} = {getattr(self, name)!r}; allowed: {allowed}")

        if not isinstance(self.max_followers, int) or not 0 <= self.max_followers <= 5:
            raise bad("max_followers", "an integer 0-5 (DESIGN.md: 1+N with N <= 5)")
        if self.route_objective not in OBJECTIVES:
            raise bad("route_objective", ", ".join(OBJECTIVES))
        if self.solver not in SOLVERS:
            raise bad("solver", ", ".join(SOLVERS))
        if not 0.0 <= self.reserve_soc < self.charge_target_soc <= 1.0:
            raise bad(
                "reserve_soc", f"0 <= reserve_soc < charge_target_soc ({self.charge_target_soc})"
            )
        for name in (
            "load_s_per_truck",
            "unload_s_per_truck",
            "briefing_s",
            "max_wait_for_order_s",
            "max_hold_for_late_truck_s",
        ):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise bad(name, "a finite number >= 0")
        if not (self.cpsat_time_limit_s > 0 and math.isfinite(self.cpsat_time_limit_s)):
            raise bad("cpsat_time_limit_s", "a finite number > 0")
        if not isinstance(self.cpsat_workers, int) or self.cpsat_workers < 1:
            raise bad("cpsat_workers", "an integer >= 1")
        if not (-50.0 <= self.ambient_c <= 50.0):
            raise bad("ambient_c", "a temperature in [-50, 50] °C")


def parse_platoon_format(text: str) -> int:
    """The number of followers in a platoon format such as ``"1+4"`` or ``"1+5"``.

    Raises:
        DispatchError: anything but ``1+N`` with N in 0-5.
    """
    parts = text.replace(" ", "").split("+")
    if len(parts) == 2 and parts[0] == "1" and parts[1].isdigit() and int(parts[1]) <= 5:
        return int(parts[1])
    raise DispatchError(f"platoon format {text!r}; allowed: '1+N' with N from 0 to 5, e.g. '1+4'")


# --- changes for re-planning --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TruckDelay:
    """A truck cannot start anything new until ``delay_s`` after ``t_s`` (or after what it
    is doing at ``t_s``). Its crew waits up to ``max_hold_for_late_truck_s``, else leaves it."""

    truck_id: str
    delay_s: float


@dataclass(frozen=True, slots=True)
class RoadClosure:
    """Edges closed from ``t_s`` until ``until_s`` (inf: the rest of the day)."""

    edge_ids: tuple[str, ...]
    until_s: float = _INF


@dataclass(frozen=True, slots=True)
class DustStorm:
    """A dust-storm hazard (``convoy.road.hazards.HazardEvent``): edges in its area run at its
    speed limit, or are closed if ``closed``, for the event's time window."""

    event: HazardEvent
    closed: bool = False


@dataclass(frozen=True, slots=True)
class UrgentOrder:
    """A new order (its priority as given; 2 is urgent) to serve from ``t_s``."""

    order: Order


@dataclass(frozen=True, slots=True)
class StationOutage:
    """A station serves nobody from ``t_s`` until ``until_s``."""

    station_id: str
    until_s: float = _INF


Change = TruckDelay | RoadClosure | DustStorm | UrgentOrder | StationOutage


# --- the plan ------------------------------------------------------------------------------------


class LegKind(StrEnum):
    """Whether a platoon leg carries cargo."""

    LOADED = "loaded"
    EMPTY = "empty"


class StopKind(StrEnum):
    """What a crew does while not driving."""

    LOAD = "load"
    UNLOAD = "unload"
    CHARGE = "charge"
    REST = "rest"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class PlatoonTrip:
    """One movement of a hybrid platoon from a site to a site.

    Attributes:
        id: unique id.
        crew_id: the crew (lead truck and followers working together).
        cycle: the crew's cycle number (a cycle ends with an unload).
        driver_id: the qualified driver in the lead truck.
        lead_truck_id: the human-driven lead truck.
        follower_ids: driverless followers, front to back.
        kind: loaded or empty.
        origin_site, destination_site: network site ids.
        release_s: departure [s].
        arrival_s: arrival [s].
        route_edge_ids: edges in driving order.
        length_m: route length [m].
        tonnes: cargo on board [t].
        order_tonnes: ``(order id, tonnes)`` carried.
    """

    id: str
    crew_id: str
    cycle: int
    driver_id: str
    lead_truck_id: str
    follower_ids: tuple[str, ...]
    kind: LegKind
    origin_site: str
    destination_site: str
    release_s: float
    arrival_s: float
    route_edge_ids: tuple[str, ...]
    length_m: float
    tonnes: float
    order_tonnes: tuple[tuple[str, float], ...]

    @property
    def order_ids(self) -> tuple[str, ...]:
        """Orders on board."""
        return tuple(o for o, _ in self.order_tonnes)

    @property
    def truck_ids(self) -> tuple[str, ...]:
        """Lead, then followers."""
        return (self.lead_truck_id, *self.follower_ids)


@dataclass(frozen=True, slots=True)
class TruckTrip:
    """One truck's part of a platoon trip.

    Attributes:
        truck_id, trip_id: the truck and its ``PlatoonTrip``.
        position: 0 lead, 1.. followers.
        origin_site, destination_site: sites.
        depart_s, arrive_s: times [s].
        tonnes: its cargo [t].
        energy_kwh: battery energy (electric) or fuel energy (diesel) [kWh].
        soc_depart, soc_arrive: state of charge [-]; nan for diesel.
    """

    truck_id: str
    trip_id: str
    position: int
    origin_site: str
    destination_site: str
    depart_s: float
    arrive_s: float
    tonnes: float
    energy_kwh: float
    soc_depart: float
    soc_arrive: float


@dataclass(frozen=True, slots=True)
class CrewStop:
    """A crew stopped at a site: loading, unloading, charging, resting or waiting."""

    crew_id: str
    cycle: int
    driver_id: str
    kind: StopKind
    site_id: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class StationVisit:
    """One truck served at a station (queue from ``arrive_s``, service ``start_s``-``end_s``)."""

    truck_id: str
    crew_id: str
    cycle: int
    station_id: str
    site_id: str
    mode: ServiceMode
    arrive_s: float
    start_s: float
    end_s: float
    soc_before: float
    soc_after: float


@dataclass(frozen=True, slots=True)
class DriverDuty:
    """A driver's shift as planned.

    Attributes:
        driver_id, crew_id: who drove which crew.
        shift: the driver's duty window.
        first_s, last_s: first departure and last arrival [s].
        driving_s: total driving [s].
        longest_block_s: longest driving without a rest of ``min_rest_s`` [s].
        trips: platoon trips driven.
    """

    driver_id: str
    crew_id: str
    shift: TimeWindow
    first_s: float
    last_s: float
    driving_s: float
    longest_block_s: float
    trips: int


@dataclass(frozen=True, slots=True)
class Unserved:
    """Tonnes of an order the plan does not deliver, and why."""

    order_id: str
    tonnes: float
    reason: str


@dataclass(frozen=True, slots=True)
class SolveReport:
    """How one shift's allocation was solved.

    Attributes:
        shift: the drivers' shift window.
        method: "cp-sat" or "greedy".
        status: CP-SAT's status name, or "greedy".
        wall_s: wall time of the allocation, dry runs included [s].
        solver_s: wall time CP-SAT itself took [s] (0 if it did not run).
        time_limit_s: CP-SAT's limit [s] (0 if it did not run).
        crews: crews given a lane.
        note: why the fallback ran, if it did.
    """

    shift: TimeWindow
    method: str
    status: str
    wall_s: float
    solver_s: float
    time_limit_s: float
    crews: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Crew:
    """A crew: lead truck first, then followers.

    ``DayPlan.crews`` lists the crews formed at the start of the day, then every change a
    re-plan made: a crew held for a late truck, or split from it (the late truck becomes a crew
    of its own). The last record of an id decided at or before a time is the crew then.

    Attributes:
        id: crew id.
        hub: the hub its trucks and drivers belong to.
        truck_ids: lead truck, then followers.
        changed_s: when the record was decided (the re-plan's ``t_s``; -inf at the start).
        ready_s: the crew starts nothing new before this [s] (-inf: no hold).
    """

    id: str
    hub: str
    truck_ids: tuple[str, ...]
    changed_s: float = -_INF
    ready_s: float = -_INF


@dataclass(frozen=True, slots=True)
class PlanSummary:
    """Totals of a plan (km and energy are truck totals)."""

    tonnes_ordered: float
    tonnes_delivered: float
    tonnes_unserved: float
    platoon_trips: int
    loaded_trips: int
    mean_followers: float
    truck_km: float
    empty_share: float
    electricity_kwh: float
    diesel_kwh: float
    charge_visits: int
    trucks_used: int
    drivers_used: int
    cost_cny: float
    method: str


@dataclass(frozen=True)
class DayPlan:
    """The plan of an operating day.

    Attributes:
        platoons: every platoon movement, loaded and empty, by release time.
        truck_trips: every truck's part of them.
        stops: crews' stops (load, unload, charge, rest, wait).
        station_visits: trucks served at stations.
        duties: drivers' shifts.
        unserved: undelivered tonnes with reasons.
        solves: allocation solves, one per shift planned.
        crews: the crews formed at the start of the day.
        orders: the orders planned for (including urgent ones added by re-planning).
        fleet: the fleet.
        params: the parameters.
        wall_s: planning wall time [s].
    """

    platoons: tuple[PlatoonTrip, ...]
    truck_trips: tuple[TruckTrip, ...]
    stops: tuple[CrewStop, ...]
    station_visits: tuple[StationVisit, ...]
    duties: tuple[DriverDuty, ...]
    unserved: tuple[Unserved, ...]
    solves: tuple[SolveReport, ...]
    crews: tuple[Crew, ...]
    orders: tuple[Order, ...]
    fleet: Fleet
    params: PlanParams
    wall_s: float
    context: _Context = field(repr=False, compare=False)

    @property
    def method(self) -> str:
        """ "cp-sat", "greedy", or "mixed" when shifts differ."""
        methods = {s.method for s in self.solves}
        return methods.pop() if len(methods) == 1 else ("mixed" if methods else "none")

    def delivered_tonnes(self) -> dict[str, float]:
        """Tonnes delivered per order id (loaded trips summed)."""
        out: dict[str, float] = defaultdict(float)
        for p in self.platoons:
            for o, t in p.order_tonnes:
                out[o] += t
        return dict(out)

    def trips_of(self, truck_id: str) -> tuple[TruckTrip, ...]:
        """A truck's trips in time order."""
        return tuple(
            sorted(
                (t for t in self.truck_trips if t.truck_id == truck_id), key=lambda t: t.depart_s
            )
        )

    def summary(self) -> PlanSummary:
        """Totals: tonnes, trips, km, energy, use of trucks and drivers, cost."""
        c = self.params.costs
        ordered = sum(o.tonnes for o in self.orders)
        delivered = sum(self.delivered_tonnes().values())
        loaded = [p for p in self.platoons if p.kind == LegKind.LOADED]
        km = sum(p.length_m * len(p.truck_ids) for p in self.platoons) / 1_000.0
        empty_km = (
            sum(p.length_m * len(p.truck_ids) for p in self.platoons if p.kind == LegKind.EMPTY)
            / 1_000.0
        )
        trucks = self.fleet.trucks
        elec = sum(t.energy_kwh for t in self.truck_trips if trucks[t.truck_id].is_electric)
        dsl = sum(t.energy_kwh for t in self.truck_trips if not trucks[t.truck_id].is_electric)
        driving_h = sum(d.driving_s for d in self.duties) / 3_600.0
        cost = (
            elec * c.electricity_cny_per_kwh
            + dsl * c.diesel_cny_per_kwh
            + km * c.maintenance_cny_per_km
            + driving_h * c.driver_cny_per_h
        )
        return PlanSummary(
            tonnes_ordered=ordered,
            tonnes_delivered=delivered,
            tonnes_unserved=sum(u.tonnes for u in self.unserved),
            platoon_trips=len(self.platoons),
            loaded_trips=len(loaded),
            mean_followers=float(np.mean([len(p.follower_ids) for p in loaded])) if loaded else 0.0,
            truck_km=km,
            empty_share=empty_km / km if km else 0.0,
            electricity_kwh=elec,
            diesel_kwh=dsl,
            charge_visits=len(self.station_visits),
            trucks_used=len({t.truck_id for t in self.truck_trips}),
            drivers_used=len({d.driver_id for d in self.duties}),
            cost_cny=cost,
            method=self.method,
        )


# --- route matrices per condition regime --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Regime:
    """Road conditions for departures in ``[start_s, end_s)``: closed and slowed edges."""

    start_s: float
    end_s: float
    closed: frozenset[str] = frozenset()
    slow: tuple[tuple[str, float], ...] = ()  # (edge id, speed limit m/s)


class _Mats:
    """Times, routes and energies between all sites for one regime.

    Loaded legs use the full truck's route; empty legs the empty truck's. ``e_*`` are (k, k)
    per-truck energies [kWh]: ``el_full``/``el_none`` electric along the loaded route with a
    full / no payload, ``el_empty`` along the empty route; ``di_*`` the same for diesel.
    """

    def __init__(
        self,
        router: Router,
        site_ids: tuple[str, ...],
        objective: Objective,
        loads: Mapping[str, TruckLoad],
        restrictions: Restrictions,
    ) -> None:
        mL = router.site_matrix(site_ids, objective, loads["el_full"], restrictions)
        mE = router.site_matrix(site_ids, objective, loads["el_none"], restrictions)
        rows = {e: k for k, e in enumerate(router.arrays.edge_ids)}
        costs = {k: router.edge_costs(v, restrictions).energy_kwh for k, v in loads.items()}
        k = len(site_ids)
        self.t_loaded = mL.travel_time_s
        self.t_empty = mE.travel_time_s
        self.len_loaded = mL.length_m
        self.len_empty = mE.length_m
        self.ok_loaded = mL.reachable
        self.ok_empty = mE.reachable
        self.routes_loaded: dict[tuple[int, int], tuple[str, ...]] = {}
        self.routes_empty: dict[tuple[int, int], tuple[str, ...]] = {}
        z = np.zeros((k, k))
        self.e = {
            name: z.copy()
            for name in ("el_full", "el_none", "el_empty", "di_full", "di_none", "di_empty")
        }
        index = {s: i for i, s in enumerate(site_ids)}
        for matrix, store, names in (
            (mL, self.routes_loaded, (("el_full", "el_full"), ("el_none", "el_none"),
                                      ("di_full", "di_full"), ("di_none", "di_none"))),
            (mE, self.routes_empty, (("el_empty", "el_none"), ("di_empty", "di_none"))),
        ):  # fmt: skip
            for (a, b), r in matrix.routes.items():
                i, j = index[a], index[b]
                store[(i, j)] = r.edge_ids
                idx = np.fromiter((rows[e] for e in r.edge_ids), dtype=np.int64)
                for out_name, cost_name in names:
                    self.e[out_name][i, j] = float(costs[cost_name][idx].sum())


def _point_in_ring(lon: float, lat: float, ring: Sequence[tuple[float, float]]) -> bool:
    inside = False
    n = len(ring)
    for k in range(n):
        (x1, y1), (x2, y2) = ring[k], ring[(k + 1) % n]
        if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def edges_in_area(network: RoadNetwork, area: PolygonArea | CorridorSpan) -> tuple[str, ...]:
    """Edges a hazard area touches: any geometry point (or end node) inside a polygon, or the
    span's edge and its reverse twin."""
    if isinstance(area, CorridorSpan):
        if area.edge not in network.edges:
            raise DispatchError(
                f"CorridorSpan.edge = {area.edge!r}; allowed: an edge of the network"
            )
        e = network.edges[area.edge]
        twins = [
            x.id
            for x in network.edges.values()
            if (x.from_node, x.to_node) == (e.to_node, e.from_node)
        ]
        return (e.id, *twins)
    out = []
    for e in network.edges.values():
        pts = list(e.geometry) or [
            (network.nodes[n].lon, network.nodes[n].lat) for n in (e.from_node, e.to_node)
        ]
        if any(_point_in_ring(lon, lat, area.ring) for lon, lat in pts):
            out.append(e.id)
    return tuple(out)


class _Context:
    """Everything the planner reads: network, fleet, orders, parameters, conditions."""

    def __init__(
        self,
        network: RoadNetwork,
        fleet: Fleet,
        orders: tuple[Order, ...],
        params: PlanParams,
    ) -> None:
        self.network = network
        self.fleet = fleet
        self.orders = orders
        self.params = params
        self.site_ids = tuple(network.sites)
        self.idx = {s: i for i, s in enumerate(self.site_ids)}
        spec = TruckSpec()
        self.spec_payload_t = spec.payload_kg / 1_000.0
        el, di = ElectricPowertrain(), DieselPowertrain()
        amb = params.ambient_c
        self.loads = {
            "el_full": TruckLoad(spec.gross_mass_loaded_kg, el, spec, amb),
            "el_none": TruckLoad(spec.empty_mass_kg, el, spec, amb),
            "di_full": TruckLoad(spec.gross_mass_loaded_kg, di, spec, amb),
            "di_none": TruckLoad(spec.empty_mass_kg, di, spec, amb),
        }
        self.regimes: list[_Regime] = [_Regime(-_INF, _INF)]
        self.outages: list[tuple[str, float, float]] = []
        self._routers: dict[tuple[tuple[str, float], ...], Router] = {(): Router(network)}
        self._mats: dict[tuple[frozenset[str], tuple[tuple[str, float], ...]], _Mats] = {}
        self._by_active: dict[tuple[int, ...], _Mats] = {}
        self.stations: tuple[Station, ...] = tuple(fleet.stations.values())
        self.station_idx = np.array([self.idx[s.site_id] for s in self.stations], dtype=np.int64)

    def derive(self) -> _Context:
        """A copy sharing the route caches, for re-planning with more conditions."""
        new = object.__new__(_Context)
        new.__dict__.update(self.__dict__)
        new.regimes = list(self.regimes)
        new.outages = list(self.outages)
        new._by_active = {}
        return new

    def mats(self, t_s: float) -> _Mats:
        """Route matrices for a departure at ``t_s``: all regimes active then, combined."""
        active = tuple(k for k, r in enumerate(self.regimes) if r.start_s <= t_s < r.end_s)
        hit = self._by_active.get(active)
        if hit is not None:
            return hit
        closed: set[str] = set()
        slow: dict[str, float] = {}
        for k in active:
            r = self.regimes[k]
            closed |= r.closed
            for e, v in r.slow:
                slow[e] = min(v, slow.get(e, _INF))
        key = (frozenset(closed), tuple(sorted(slow.items())))
        if key not in self._mats:
            self._mats[key] = _Mats(
                self._router(key[1]),
                self.site_ids,
                self.params.route_objective,
                self.loads,
                Restrictions(closed_edges=key[0]),
            )
        self._by_active[active] = self._mats[key]
        return self._mats[key]

    def _router(self, slow: tuple[tuple[str, float], ...]) -> Router:
        if slow not in self._routers:
            limits = dict(slow)
            net = self.network
            edges: list[Edge] = [
                dataclasses.replace(e, speed_limit_mps=min(e.speed_limit_mps, limits[e.id]))
                if e.id in limits
                else e
                for e in net.edges.values()
            ]
            slowed = RoadNetwork.build(
                net.nodes.values(), edges, net.sites.values(), net.name, net.rsus.values()
            )
            self._routers[slow] = Router(slowed)
        return self._routers[slow]


# --- crew state, drivers' clocks, demand --------------------------------------------------------


@dataclass
class _Clock:
    """A driver's hours of service as driving is added (module ``entities`` for the rules)."""

    hos: HoursOfService
    driving_s: float = 0.0
    block_start_s: float = -_INF
    block_drive_s: float = 0.0
    last_end_s: float = -_INF

    def copy(self) -> _Clock:
        return dataclasses.replace(self)

    def drive(self, t_s: float, dur_s: float) -> float | None:
        """Book a leg wanting to start at ``t_s``; return its start (after a rest if one is due),
        or None if the day's driving or a single leg's length breaks the rules."""
        h = self.hos
        if self.driving_s + dur_s > h.max_daily_driving_s + 1e-6:
            return None
        if t_s - self.last_end_s < h.min_rest_s:
            limit = h.continuous_limit_s(self.block_start_s, t_s + dur_s)
            if self.block_drive_s + dur_s <= limit + 1e-6:
                self.block_drive_s += dur_s
                self.driving_s += dur_s
                self.last_end_s = t_s + dur_s
                return t_s
            t_s = self.last_end_s + h.min_rest_s  # rest first
        if dur_s > h.continuous_limit_s(t_s, t_s + dur_s) + 1e-6:
            return None
        self.block_start_s = t_s
        self.block_drive_s = dur_s
        self.driving_s += dur_s
        self.last_end_s = t_s + dur_s
        return t_s


@dataclass
class _Duty:
    driver: Driver
    ready_s: float  # earliest work (after the briefing)
    end_s: float  # shift end
    clock: _Clock


@dataclass
class _CrewState:
    id: str
    hub: str
    members: list[str]
    pos: int  # site index
    free_s: float
    soc: dict[str, float]  # kWh, electric members
    cycle: int = 0
    duty: _Duty | None = None
    lane: tuple[int, int] | None = None
    active: bool = True


class _Demand:
    """Tonnes left per order, and the orders of each lane in claiming order."""

    def __init__(self, orders: Iterable[Order], left: Mapping[str, float], idx: Mapping[str, int]):
        self.orders = {o.id: o for o in orders}
        self.left = dict(left)
        self.by_lane: dict[tuple[int, int], list[Order]] = defaultdict(list)
        for o in self.orders.values():
            self.by_lane[(idx[o.origin_site], idx[o.destination_site])].append(o)
        for lst in self.by_lane.values():
            lst.sort(key=lambda o: (-o.priority, o.delivery.end_s, o.pickup.start_s, o.id))

    def lane_tonnes(self, lane: tuple[int, int], t0: float, t1: float) -> dict[int, float]:
        """Tonnes left per priority on a lane whose pickup windows meet ``[t0, t1]``."""
        out: dict[int, float] = defaultdict(float)
        for o in self.by_lane.get(lane, ()):
            if self.left[o.id] > _EPS_T and o.pickup.overlaps(t0, t1):
                out[o.priority] += self.left[o.id]
        return out

    def open_on(self, lane: tuple[int, int], t_s: float, wait_s: float) -> bool:
        """Whether an order on the lane could be loaded from ``t_s`` within ``wait_s``."""
        return any(
            self.left[o.id] > _EPS_T and o.pickup.end_s >= t_s and o.pickup.start_s <= t_s + wait_s
            for o in self.by_lane.get(lane, ())
        )

    def next_pickup(self, lane: tuple[int, int], t_s: float) -> float:
        """When the lane's next cargo can be loaded at or after ``t_s`` (inf: none left)."""
        return min(
            (
                max(t_s, o.pickup.start_s)
                for o in self.by_lane.get(lane, ())
                if self.left[o.id] > _EPS_T and o.pickup.end_s >= t_s
            ),
            default=_INF,
        )

    def lanes(self) -> list[tuple[int, int]]:
        return [
            ln for ln, lst in self.by_lane.items() if any(self.left[o.id] > _EPS_T for o in lst)
        ]


# --- cycle drafts --------------------------------------------------------------------------------


@dataclass
class _LegOp:
    kind: LegKind
    o: int
    d: int
    release_s: float
    arrive_s: float
    route: tuple[str, ...]
    length_m: float
    tonnes: dict[str, float]  # per truck
    energy: dict[str, float]  # per truck, kWh
    soc0: dict[str, float]
    soc1: dict[str, float]
    orders: tuple[tuple[str, float], ...] = ()


@dataclass
class _StopOp:
    kind: StopKind
    site: int
    start_s: float
    end_s: float


@dataclass
class _VisitOp:
    truck: str
    station: Station
    mode: ServiceMode
    arrive_s: float
    start_s: float
    end_s: float
    soc0: float
    soc1: float


_Booking = tuple[Station, ServiceMode, float, list[float]]


@dataclass
class _Class:
    """Interchangeable crews for the allocation: per lane (capacity t, cost per t, reach cost)."""

    hub: str
    fixed: bool
    est: dict[tuple[int, int], tuple[float, float, float]]
    crews: list[_CrewState]


@dataclass
class _Draft:
    ops: list[_LegOp | _StopOp | _VisitOp]
    end_s: float
    pos: int
    soc: dict[str, float]
    clock: _Clock
    claims: list[tuple[str, float]]
    tonnes: float
    cost_cny: float
    bookings: list[_Booking]


# --- the planner ---------------------------------------------------------------------------------


class _Planner:
    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.p = ctx.params
        self.trucks = ctx.fleet.trucks
        self.crews: dict[str, _CrewState] = {}
        self.calendars = {s.id: StationCalendar(s) for s in ctx.stations}
        for sid, a, b in ctx.outages:
            self.calendars[sid].add_outage(a, b)
        self.demand = _Demand(ctx.orders, {o.id: o.tonnes for o in ctx.orders}, ctx.idx)
        self.trips: list[PlatoonTrip] = []
        self.truck_trips: list[TruckTrip] = []
        self.stops: list[CrewStop] = []
        self.visits: list[StationVisit] = []
        self.solves: list[SolveReport] = []
        self.used_drivers: set[str] = set()
        self._est_cache: dict[tuple[object, ...], tuple[int, float, float, float]] = {}
        self._trip_no = 0
        self.crew_list: list[Crew] = []
        self.from_s = -_INF

    # -- crews --

    def form_crews(self) -> list[Crew]:
        """Lead trucks (not L4 first) each with up to N L4 followers, per hub."""
        n_f = self.p.max_followers
        out: list[Crew] = []
        by_hub: dict[str, list[Truck]] = defaultdict(list)
        for t in self.trucks.values():
            by_hub[t.home_hub].append(t)
        for hub in sorted(by_hub):
            ts = sorted(by_hub[hub], key=lambda t: t.id)
            l4 = [t for t in ts if t.l4_capable]
            plain = [t for t in ts if not t.l4_capable]
            n_crews = max(1, math.ceil(len(ts) / (1 + n_f))) if n_f else len(ts)
            n_crews = max(n_crews, math.ceil(len(l4) / n_f) if n_f else 0)
            leads = plain[:n_crews]
            extra_plain = plain[n_crews:]
            while len(leads) < n_crews and l4:
                leads.append(l4.pop())
            groups = [[ld.id] for ld in leads]
            for k, t in enumerate(l4):
                groups[k % len(groups)].append(t.id)
            groups += [[t.id] for t in extra_plain]  # lead-only trucks beyond the need: solo
            for k, g in enumerate(groups):
                out.append(Crew(f"{hub}-C{k + 1:02d}", hub, tuple(g)))
        self.crew_list = list(out)
        for c in out:
            home = self.ctx.fleet.hubs[c.hub].site_id
            soc = {
                t: self.trucks[t].soc * self.trucks[t].battery_kwh
                for t in c.truck_ids
                if self.trucks[t].is_electric
            }
            self.crews[c.id] = _CrewState(
                c.id, c.hub, list(c.truck_ids), self.ctx.idx[home], -_INF, soc
            )
        return out

    # -- energy helpers --

    def _leg_energy(
        self, mats: _Mats, kind: LegKind, i: int, j: int, truck: str, tonnes: float
    ) -> float:
        tr = self.trucks[truck]
        pre = "el" if tr.is_electric else "di"
        if kind == LegKind.EMPTY:
            return float(mats.e[f"{pre}_empty"][i, j])
        f = min(1.0, tonnes / self.ctx.spec_payload_t)
        e0, e1 = mats.e[f"{pre}_none"][i, j], mats.e[f"{pre}_full"][i, j]
        return float(e0 + (e1 - e0) * f)

    def _reserve(self, truck: str) -> float:
        return self.p.reserve_soc * self.trucks[truck].battery_kwh

    def _reach_kwh(self, mats: _Mats, j: int) -> float:
        """Energy for an empty truck from site j to the nearest station."""
        if j in self.ctx.station_idx:
            return 0.0
        cand = mats.e["el_empty"][j, self.ctx.station_idx]
        ok = mats.ok_empty[j, self.ctx.station_idx]
        return float(cand[ok].min()) if ok.any() else _INF

    def _cycle_ok(
        self,
        mats: _Mats,
        soc: Mapping[str, float],
        pos: int,
        o: int,
        d: int,
        members: Sequence[str],
    ) -> bool:
        """Whether every electric truck can go empty pos->o, full o->d, then reach a station."""
        reach = self._reach_kwh(mats, d)
        for t in soc:
            cap = self.trucks[t].battery_kwh
            s = soc[t]
            if pos != o:
                s = min(cap, s - self._leg_energy(mats, LegKind.EMPTY, pos, o, t, 0.0))
                if s < self._reserve(t):
                    return False
            # Energy is linear in the payload, so the worse of empty and full bounds any load.
            e = max(
                self._leg_energy(mats, LegKind.LOADED, o, d, t, 0.0),
                self._leg_energy(mats, LegKind.LOADED, o, d, t, self.trucks[t].payload_t),
            )
            s = min(cap, s - e)
            if s < self._reserve(t) or s - reach < self._reserve(t):
                return False
        return True

    def _stations_by_detour(self, mats: _Mats, pos: int, o: int) -> list[Station]:
        """Stations reachable on the way from ``pos`` to ``o``, shortest detour first."""
        out = []
        for st, si in zip(self.ctx.stations, self.ctx.station_idx, strict=True):
            if mats.ok_empty[pos, si] and mats.ok_empty[si, o]:
                out.append((float(mats.t_empty[pos, si] + mats.t_empty[si, o]), st.id, st))
        return [st for _, _, st in sorted(out)]

    # -- cycle planning --

    def _drive(
        self,
        ops: list[_LegOp | _StopOp | _VisitOp],
        clock: _Clock,
        soc: dict[str, float],
        members: Sequence[str],
        kind: LegKind,
        i: int,
        j: int,
        t_s: float,
        tonnes: Mapping[str, float] | None = None,
        orders: tuple[tuple[str, float], ...] = (),
    ) -> tuple[float, float] | None:
        """Append a leg (with a rest before it if due); return (arrival, energy cost) or None."""
        mats = self.ctx.mats(t_s)
        ok = mats.ok_loaded if kind == LegKind.LOADED else mats.ok_empty
        if not ok[i, j]:
            return None
        dur = float((mats.t_loaded if kind == LegKind.LOADED else mats.t_empty)[i, j])
        start = clock.drive(t_s, dur)
        if start is None:
            return None
        if start > t_s:
            ops.append(_StopOp(StopKind.REST, i, t_s, start))
            mats = self.ctx.mats(start)
        loads = dict(tonnes or {})
        energy = {t: self._leg_energy(mats, kind, i, j, t, loads.get(t, 0.0)) for t in members}
        soc0 = {t: soc[t] for t in soc}
        for t in soc:
            soc[t] = min(self.trucks[t].battery_kwh, soc[t] - energy[t])
            if soc[t] < self._reserve(t) - 1e-6:
                return None
        route = (mats.routes_loaded if kind == LegKind.LOADED else mats.routes_empty)[(i, j)]
        length = float((mats.len_loaded if kind == LegKind.LOADED else mats.len_empty)[i, j])
        ops.append(
            _LegOp(
                kind,
                i,
                j,
                start,
                start + dur,
                route,
                length,
                loads,
                energy,
                soc0,
                dict(soc),
                orders,
            )
        )
        c = self.p.costs
        cost = sum(
            e * (c.electricity_cny_per_kwh if self.trucks[t].is_electric else c.diesel_cny_per_kwh)
            for t, e in energy.items()
        )
        cost += length / 1_000.0 * len(members) * c.maintenance_cny_per_km
        cost += dur / 3_600.0 * c.driver_cny_per_h
        return start + dur, cost

    def _charge(
        self,
        ops: list[_LegOp | _StopOp | _VisitOp],
        soc: dict[str, float],
        station: Station,
        arrive_s: float,
        commit_book: list[_Booking],
        use_calendar: bool,
    ) -> float:
        """Serve the electric trucks at a station; return when the last one is done."""
        cal = self.calendars[station.id]
        groups: dict[ServiceMode, list[tuple[str, float, float]]] = defaultdict(list)
        for t in soc:
            tr = self.trucks[t]
            mode = (
                ServiceMode.SWAP if tr.swappable and station.swap_bays > 0 else ServiceMode.CHARGE
            )
            if mode == ServiceMode.CHARGE and station.charge_posts == 0:
                continue
            frac = soc[t] / tr.battery_kwh
            dur, after = service_time_s(
                station, mode, tr.battery_kwh, frac, self.p.charge_target_soc
            )
            if after <= frac + 1e-9:
                continue
            groups[mode].append((t, dur, after))
        end = arrive_s
        for mode, items in groups.items():
            durs = [d for _, d, _ in items]
            if use_calendar:
                times = cal.book(mode, arrive_s, durs, commit=False)
                commit_book.append((station, mode, arrive_s, durs))
            else:
                times = [(arrive_s, arrive_s + d) for d in durs]
            for (t, _, after), (s0, s1) in zip(items, times, strict=True):
                cap = self.trucks[t].battery_kwh
                ops.append(_VisitOp(t, station, mode, arrive_s, s0, s1, soc[t] / cap, after))
                soc[t] = after * cap
                end = max(end, s1)
        if end > arrive_s:
            ops.append(_StopOp(StopKind.CHARGE, self.ctx.idx[station.site_id], arrive_s, end))
        return end

    def _plan_cycle(
        self, crew: _CrewState, lane: tuple[int, int], t0: float, *, estimate: bool
    ) -> _Draft | str:
        """One cycle of ``crew`` on ``lane`` from ``t0``: a draft, or why it cannot run.

        ``estimate``: unlimited cargo at once, no station queues (the allocation's dry run).
        """
        assert crew.duty is not None
        duty = crew.duty
        p = self.p
        o, d = lane
        members = crew.members
        clock = duty.clock.copy()
        soc = dict(crew.soc)
        ops: list[_LegOp | _StopOp | _VisitOp] = []
        book: list[_Booking] = []
        cost = 0.0
        t = max(t0, crew.free_s, duty.ready_s)
        pos = crew.pos
        mats = self.ctx.mats(t)
        if not mats.ok_loaded[o, d]:
            return "no route"
        if soc and not self._cycle_ok(mats, soc, pos, o, d, members):
            best: tuple[float, list[_LegOp | _StopOp | _VisitOp], _Clock, dict[str, float], float,
                        list[_Booking]] | None = None  # fmt: skip
            for st in self._stations_by_detour(mats, pos, o)[:3]:
                si = self.ctx.idx[st.site_id]
                ops2: list[_LegOp | _StopOp | _VisitOp] = []
                clock2, soc2 = clock.copy(), dict(soc)
                book2: list[_Booking] = []
                t2, c2 = t, 0.0
                if si != pos:
                    r = self._drive(ops2, clock2, soc2, members, LegKind.EMPTY, pos, si, t2)
                    if r is None:
                        continue
                    t2, c2 = r[0], r[1]
                t2 = self._charge(ops2, soc2, st, t2, book2, not estimate)
                if not self._cycle_ok(self.ctx.mats(t2), soc2, si, o, d, members):
                    continue
                if si != o:
                    r = self._drive(ops2, clock2, soc2, members, LegKind.EMPTY, si, o, t2)
                    if r is None:
                        continue
                    t2, c2 = r[0], c2 + r[1]
                if best is None or t2 < best[0]:
                    best = (t2, ops2, clock2, soc2, c2, book2)
            if best is None:
                return "battery"
            t, ops, clock, soc, cost, book = best
            pos = o
        elif pos != o:
            r = self._drive(ops, clock, soc, members, LegKind.EMPTY, pos, o, t)
            if r is None:
                return "hours or route to origin"
            t, cost = r
            pos = o
        # Cargo.
        mats = self.ctx.mats(t)
        cap = {m: self.trucks[m].payload_t for m in members}
        if estimate:
            load_start = t
            picks = [("*", sum(cap.values()))]
        else:
            travel = float(mats.t_loaded[o, d])
            got = self._claim(lane, t, sum(cap.values()), len(members), travel)
            if got is None:
                return "no cargo"
            load_start, picks = got
        if load_start > t:
            ops.append(_StopOp(StopKind.WAIT, o, t, load_start))
        per_truck = self._fill(members, cap, picks)
        n_loaded = sum(1 for m in members if per_truck[m][0] > 0)
        load_end = load_start + n_loaded * p.load_s_per_truck
        ops.append(_StopOp(StopKind.LOAD, o, load_start, load_end))
        tonnes = {m: per_truck[m][0] for m in members}
        total = sum(tonnes.values())
        r = self._drive(
            ops, clock, soc, members, LegKind.LOADED, o, d, load_end, tonnes, tuple(picks)
        )
        if r is None:
            return "hours or battery on the loaded leg"
        arrive, c_leg = r
        cost += c_leg
        unload_start = arrive
        if not estimate:
            orders = [self.demand.orders[oid] for oid, _ in picks]
            unload_start = max([arrive, *(od.delivery.start_s for od in orders)])
            if any(unload_start > od.delivery.end_s for od in orders):
                return "delivery window"
        if unload_start > arrive:
            ops.append(_StopOp(StopKind.WAIT, d, arrive, unload_start))
        unload_end = unload_start + n_loaded * p.unload_s_per_truck
        ops.append(_StopOp(StopKind.UNLOAD, d, unload_start, unload_end))
        if unload_end > duty.end_s:
            return "shift end"
        return _Draft(ops, unload_end, d, soc, clock, picks, total, cost, book)

    def _claim(
        self, lane: tuple[int, int], ready_s: float, cap_t: float, n_trucks: int, travel_s: float
    ) -> tuple[float, list[tuple[str, float]]] | None:
        """Orders to load at the earliest possible time, by priority then deadline."""
        p = self.p
        left = self.demand.left
        cands = [
            o
            for o in self.demand.by_lane.get(lane, ())
            if left[o.id] > _EPS_T
            and o.pickup.end_s >= ready_s
            and o.pickup.start_s - ready_s <= p.max_wait_for_order_s
        ]
        if not cands:
            return None
        start = min(max(ready_s, o.pickup.start_s) for o in cands)
        est_unload = start + n_trucks * p.load_s_per_truck + travel_s
        avail = [
            o
            for o in cands
            if o.pickup.start_s <= start <= o.pickup.end_s
            and est_unload <= o.delivery.end_s
            and o.delivery.start_s <= est_unload + p.max_wait_for_order_s
        ]
        if not avail:
            return None
        cargo = avail[0].cargo
        picks: list[tuple[str, float]] = []
        room = cap_t
        for o in avail:
            if o.cargo != cargo or room <= _EPS_T:
                continue
            take = min(room, left[o.id])
            picks.append((o.id, take))
            room -= take
        return start, picks

    @staticmethod
    def _fill(
        members: Sequence[str], cap: Mapping[str, float], picks: Sequence[tuple[str, float]]
    ) -> dict[str, tuple[float, list[tuple[str, float]]]]:
        """Split the picked tonnes over the trucks, lead first."""
        out: dict[str, tuple[float, list[tuple[str, float]]]] = {m: (0.0, []) for m in members}
        ids = [oid for oid, _ in picks]
        rest = [t for _, t in picks]
        k = 0
        for m in members:
            room = cap[m]
            got: list[tuple[str, float]] = []
            while k < len(ids) and room > _EPS_T:
                take = min(room, rest[k])
                got.append((ids[k], take))
                room -= take
                rest[k] -= take
                if rest[k] <= _EPS_T:
                    k += 1
            out[m] = (cap[m] - room, got)
        return out

    # -- committing a draft into records --

    def _commit(self, crew: _CrewState, draft: _Draft) -> None:
        assert crew.duty is not None
        driver = crew.duty.driver.id
        for st, mode, arrive, durs in draft.bookings:
            self.calendars[st.id].book(mode, arrive, durs, commit=True)
        for oid, t in draft.claims:
            self.demand.left[oid] -= t
        self._emit(crew, driver, draft.ops)
        crew.pos, crew.soc, crew.free_s = draft.pos, draft.soc, draft.end_s
        crew.duty.clock = draft.clock
        crew.cycle += 1

    def _emit(
        self, crew: _CrewState, driver: str, ops: Sequence[_LegOp | _StopOp | _VisitOp]
    ) -> None:
        sites = self.ctx.site_ids
        for op in ops:
            if isinstance(op, _LegOp):
                self._trip_no += 1
                tid = f"{crew.id}-{crew.cycle:02d}-{self._trip_no:05d}"
                self.trips.append(
                    PlatoonTrip(
                        id=tid,
                        crew_id=crew.id,
                        cycle=crew.cycle,
                        driver_id=driver,
                        lead_truck_id=crew.members[0],
                        follower_ids=tuple(crew.members[1:]),
                        kind=op.kind,
                        origin_site=sites[op.o],
                        destination_site=sites[op.d],
                        release_s=op.release_s,
                        arrival_s=op.arrive_s,
                        route_edge_ids=op.route,
                        length_m=op.length_m,
                        tonnes=sum(op.tonnes.values()),
                        order_tonnes=op.orders,
                    )
                )
                for k, m in enumerate(crew.members):
                    cap = self.trucks[m].battery_kwh
                    el = m in op.soc0
                    self.truck_trips.append(
                        TruckTrip(
                            truck_id=m,
                            trip_id=tid,
                            position=k,
                            origin_site=sites[op.o],
                            destination_site=sites[op.d],
                            depart_s=op.release_s,
                            arrive_s=op.arrive_s,
                            tonnes=op.tonnes.get(m, 0.0),
                            energy_kwh=op.energy[m],
                            soc_depart=op.soc0[m] / cap if el else math.nan,
                            soc_arrive=op.soc1[m] / cap if el else math.nan,
                        )
                    )
            elif isinstance(op, _StopOp):
                self.stops.append(
                    CrewStop(
                        crew.id, crew.cycle, driver, op.kind, sites[op.site], op.start_s, op.end_s
                    )
                )
            else:
                self.visits.append(
                    StationVisit(
                        op.truck,
                        crew.id,
                        crew.cycle,
                        op.station.id,
                        op.station.site_id,
                        op.mode,
                        op.arrive_s,
                        op.start_s,
                        op.end_s,
                        op.soc0,
                        op.soc1,
                    )
                )

    # -- allocation --

    def _estimate(
        self, crew: _CrewState, lane: tuple[int, int], t0: float
    ) -> tuple[int, float, float, float]:
        """(trips, tonnes, cost, reach cost) of running ``lane`` for the rest of the duty."""
        assert crew.duty is not None
        duty = crew.duty
        # Dry runs are cached on a coarsened state, rounded the cautious way: charge down to
        # 5 % of the pack, the start up to a quarter hour.
        soc = {
            m: math.floor(v / (0.05 * self.trucks[m].battery_kwh))
            * 0.05
            * self.trucks[m].battery_kwh
            for m, v in crew.soc.items()
        }
        start = math.ceil(max(t0, crew.free_s, duty.ready_s) / 900.0) * 900.0
        clock = duty.clock
        key = (
            crew.pos,
            tuple(
                sorted((self.trucks[m].powertrain, round(soc.get(m, 0.0))) for m in crew.members)
            ),
            start,
            lane,
            duty.end_s,
            round(clock.driving_s / 60.0),
            round(clock.block_drive_s / 60.0),
            round((start - clock.last_end_s) / 60.0) if clock.last_end_s > -_INF else None,
            duty.driver.hours,
        )
        if key in self._est_cache:
            return self._est_cache[key]
        sim_duty = _Duty(duty.driver, duty.ready_s, duty.end_s, clock.copy())
        sim = _CrewState(crew.id, crew.hub, crew.members, crew.pos, start, soc, duty=sim_duty)
        trips, tonnes, cost, first = 0, 0.0, 0.0, 0.0
        t = start
        for _ in range(50):
            draft = self._plan_cycle(sim, lane, t, estimate=True)
            if isinstance(draft, str):
                break
            if trips == 0:
                first = sum(
                    self._op_cost(op, sim.members)
                    for op in draft.ops
                    if isinstance(op, _LegOp) and op.kind == LegKind.EMPTY
                )
            trips += 1
            tonnes += draft.tonnes
            cost += draft.cost_cny
            sim.pos, sim.soc, sim.free_s = draft.pos, draft.soc, draft.end_s
            assert sim.duty is not None
            sim.duty.clock = draft.clock
            t = draft.end_s
        out = (trips, tonnes, cost, first)
        self._est_cache[key] = out
        return out

    def _op_cost(self, op: _LegOp, members: Sequence[str]) -> float:
        c = self.p.costs
        e = sum(
            v * (c.electricity_cny_per_kwh if self.trucks[t].is_electric else c.diesel_cny_per_kwh)
            for t, v in op.energy.items()
        )
        return e + op.length_m / 1_000.0 * len(members) * c.maintenance_cny_per_km

    def _allocate(
        self,
        shift: TimeWindow,
        t0: float,
        fixed: list[_CrewState],
        free: list[_CrewState],
        drivers_at: Mapping[str, int],
    ) -> tuple[dict[str, tuple[int, int]], SolveReport]:
        """Lanes for crews this shift (CP-SAT, greedy fallback).

        Crews with the same hub, the same standing (on duty already or not) and the same dry-run
        results on every lane are interchangeable, so the models count crews per such class
        instead of deciding crew by crew: smaller, and free of symmetric copies.
        """
        wall0 = time.perf_counter()
        c = self.p.costs
        base_mats = self.ctx.mats(t0)
        demand: dict[tuple[int, int], dict[int, int]] = {}
        value: dict[tuple[int, int], dict[int, float]] = {}
        for ln in self.demand.lanes():
            tons = self.demand.lane_tonnes(ln, t0, shift.end_s)
            if not tons or not base_mats.ok_loaded[ln]:
                continue
            km = float(base_mats.len_loaded[ln]) / 1_000.0
            demand[ln] = {q: math.ceil(v) for q, v in tons.items()}
            value[ln] = {q: c.freight_cny_per_tkm * km * c.priority_weight[q] for q in tons}
        groups: dict[tuple[object, ...], _Class] = {}
        fixed_ids = {cr.id for cr in fixed}
        for cr in fixed + free:
            est: dict[tuple[int, int], tuple[float, float, float]] = {}
            for ln in demand:
                trips, tonnes, cost, reach = self._estimate(cr, ln, t0)
                if trips > 0:
                    est[ln] = (tonnes, (cost - reach) / tonnes, reach)
            if not est:
                continue
            key = (cr.hub, cr.id in fixed_ids, tuple(sorted(est.items())))
            if key not in groups:
                groups[key] = _Class(cr.hub, cr.id in fixed_ids, est, [])
            groups[key].crews.append(cr)
        classes = list(groups.values())
        greedy = self._greedy_allocation(classes, demand, value, drivers_at)
        method, status, note, solver_s = "greedy", "greedy", "", 0.0
        counts = greedy
        if self.p.solver == "greedy":
            note = "greedy requested"
        elif classes:
            got, status, note, solver_s = self._cpsat_allocation(
                classes, demand, value, drivers_at, greedy
            )
            if got is not None:
                counts, method = got, "cp-sat"
        alloc: dict[str, tuple[int, int]] = {}
        for k, cl in enumerate(classes):
            crews = iter(sorted(cl.crews, key=lambda cr: cr.id))
            for ln, n in sorted(counts.get(k, {}).items()):
                for _ in range(n):
                    alloc[next(crews).id] = ln
        report = SolveReport(
            shift=shift,
            method=method,
            status=status,
            wall_s=time.perf_counter() - wall0,
            solver_s=solver_s,
            time_limit_s=self.p.cpsat_time_limit_s if solver_s > 0 else 0.0,
            crews=len(alloc),
            note=note,
        )
        return alloc, report

    @staticmethod
    def _greedy_allocation(
        classes: list[_Class],
        demand: Mapping[tuple[int, int], Mapping[int, int]],
        value: Mapping[tuple[int, int], Mapping[int, float]],
        drivers_at: Mapping[str, int],
    ) -> dict[int, dict[tuple[int, int], int]]:
        """Best marginal profit first: one crew at a time to the lane where it earns most."""
        left = {ln: dict(q) for ln, q in demand.items()}
        hub_left = dict(drivers_at)
        spare = [len(cl.crews) for cl in classes]
        counts: dict[int, dict[tuple[int, int], int]] = defaultdict(dict)
        while True:
            best: tuple[float, int, tuple[int, int]] | None = None
            for k, cl in enumerate(classes):
                if spare[k] == 0 or (not cl.fixed and hub_left.get(cl.hub, 0) <= 0):
                    continue
                for ln, (cap, per_t, reach) in cl.est.items():
                    room, gain = cap, -reach
                    for q in sorted(left[ln], reverse=True):
                        take = min(room, left[ln][q])
                        gain += take * (value[ln][q] - per_t)
                        room -= take
                    if gain > 0 and (best is None or gain > best[0]):
                        best = (gain, k, ln)
            if best is None:
                return dict(counts)
            _, k, ln = best
            spare[k] -= 1
            counts[k][ln] = counts[k].get(ln, 0) + 1
            if not classes[k].fixed:
                hub_left[classes[k].hub] -= 1
            room = classes[k].est[ln][0]
            for q in sorted(left[ln], reverse=True):
                take = min(room, left[ln][q])
                left[ln][q] -= math.floor(take)
                room -= take

    def _cpsat_allocation(
        self,
        classes: list[_Class],
        demand: Mapping[tuple[int, int], Mapping[int, int]],
        value: Mapping[tuple[int, int], Mapping[int, float]],
        drivers_at: Mapping[str, int],
        hint: Mapping[int, Mapping[tuple[int, int], int]],
    ) -> tuple[dict[int, dict[tuple[int, int], int]] | None, str, str, float]:
        """Maximise the value of tonnes moved minus their cost, with CP-SAT.

        Variables: ``x[k,l]`` crews of class k on lane l; ``w[k,l]`` tonnes they move;
        ``u[l,q]`` tonnes of priority q moved on l. Constraints: ``sum_l x[k,l] <= |k|``;
        new crews per hub ``<=`` its free drivers; ``w[k,l] <= cap[k,l] x[k,l]``;
        ``u[l,q] <= demand[l,q]``; ``sum_q u[l,q] = sum_k w[k,l]``. Objective:
        ``sum value[l,q] u[l,q] - sum cost_per_t[k,l] w[k,l] - sum reach[k,l] x[k,l]``, money in
        0.1 CNY and tonnes whole.
        """
        from ortools.sat.python import cp_model

        m = cp_model.CpModel()
        x: dict[tuple[int, tuple[int, int]], cp_model.IntVar] = {}
        w: dict[tuple[int, tuple[int, int]], cp_model.IntVar] = {}
        obj = []
        for k, cl in enumerate(classes):
            n = len(cl.crews)
            for ln, (cap, per_t, reach) in cl.est.items():
                x[(k, ln)] = m.new_int_var(0, n, f"x_{k}_{ln}")
                w[(k, ln)] = m.new_int_var(0, math.floor(cap) * n, f"w_{k}_{ln}")
                m.add(w[(k, ln)] <= math.floor(cap) * x[(k, ln)])
                obj.append(-round(10 * per_t) * w[(k, ln)] - round(10 * reach) * x[(k, ln)])
            m.add(sum(v for (k2, _), v in x.items() if k2 == k) <= n)
        for hub, n_drivers in drivers_at.items():
            vs = [v for (k, _), v in x.items() if not classes[k].fixed and classes[k].hub == hub]
            if vs:
                m.add(sum(vs) <= n_drivers)
        for ln, qs in demand.items():
            us = []
            for q, dq in qs.items():
                u = m.new_int_var(0, dq, f"u_{ln}_{q}")
                us.append(u)
                obj.append(round(10 * value[ln][q]) * u)
            m.add(sum(us) == sum(v for (_, l2), v in w.items() if l2 == ln))
        m.maximize(sum(obj))
        for (k, ln), v in x.items():
            m.add_hint(v, hint.get(k, {}).get(ln, 0))
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = self.p.cpsat_time_limit_s
        solver.parameters.num_workers = self.p.cpsat_workers
        solver.parameters.random_seed = 0
        status = solver.solve(m)
        name = solver.status_name(status)
        took = solver.wall_time
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            note = f"CP-SAT returned {name} within {self.p.cpsat_time_limit_s:g} s; greedy used"
            return None, name, note, took
        counts: dict[int, dict[tuple[int, int], int]] = defaultdict(dict)
        for (k, ln), v in x.items():
            if solver.value(v) > 0:
                counts[k][ln] = int(solver.value(v))
        return dict(counts), name, "", took

    # -- the day --

    def _shifts(self) -> list[TimeWindow]:
        wins = {
            (d.shift.start_s, d.shift.end_s)
            for d in self.ctx.fleet.drivers.values()
            if d.lead_qualified
        }
        return [TimeWindow(a, b) for a, b in sorted(wins)]

    def run(self, from_s: float) -> None:
        """Plan every shift that ends after ``from_s``."""
        self.from_s = from_s
        drivers = [d for d in self.ctx.fleet.drivers.values() if d.lead_qualified]
        for shift in self._shifts():
            if shift.end_s <= from_s:
                continue
            t0 = max(shift.start_s, from_s)
            fixed = [
                c for c in self.crews.values()
                if c.active and c.duty is not None and c.duty.end_s == shift.end_s
                and c.duty.driver.shift == shift
            ]  # fmt: skip
            for c in self.crews.values():  # duties of other shifts are over
                if c.duty is not None and c not in fixed and c.duty.end_s <= t0:
                    c.duty = None
            free = [
                c for c in self.crews.values()
                if c.active and c.duty is None and c.free_s < shift.end_s
            ]  # fmt: skip
            pool: dict[str, list[Driver]] = defaultdict(list)
            for d in sorted(drivers, key=lambda d: (d.group, d.id)):
                if d.shift == shift and d.id not in self.used_drivers:
                    pool[d.home_hub].append(d)
            ready = max(shift.start_s + self.p.briefing_s, from_s)
            for c in free:  # provisional duties so that dry runs know the window
                c.duty = _Duty(
                    Driver("?", "?", True, shift, c.hub),
                    ready,
                    shift.end_s,
                    _Clock(HoursOfService()),
                )
            alloc, report = self._allocate(
                shift, t0, fixed, free, {h: len(v) for h, v in pool.items()}
            )
            self.solves.append(report)
            # Drivers, group by group, to the allocated crews sorted by lane.
            working: list[_CrewState] = list(fixed)
            chosen = sorted((c for c in free if c.id in alloc), key=lambda c: (alloc[c.id], c.id))
            for c in free:
                c.duty = None
            for c in chosen:
                d = pool[c.hub].pop(0)
                c.duty = _Duty(d, ready, shift.end_s, _Clock(d.hours))
                self.used_drivers.add(d.id)
                working.append(c)
            for c in working:
                c.lane = alloc.get(c.id)
            self._build(working, t0)
            # Spare drivers take idle crews for what is left.
            reserve: list[_CrewState] = []
            for c in sorted(free, key=lambda c: c.id):
                if c.duty is None and pool[c.hub]:
                    d = pool[c.hub].pop(0)
                    c.duty = _Duty(d, ready, shift.end_s, _Clock(d.hours))
                    c.lane = None
                    reserve.append(c)
            used = self._build(reserve, t0)
            for c in reserve:
                assert c.duty is not None
                if c.id in used:
                    self.used_drivers.add(c.duty.driver.id)
                else:
                    c.duty = None

    def _build(self, crews: list[_CrewState], t0: float) -> set[str]:
        """Advance crews in time order; return the crews that ran at least one cycle."""
        heap = [(max(c.free_s, t0), c.id) for c in crews]
        heapq.heapify(heap)
        used: set[str] = set()
        while heap:
            t, cid = heapq.heappop(heap)
            crew = self.crews[cid]
            draft = self._next_cycle(crew, t)
            if draft is None:
                # Nothing to do now: look again when the next pickup window comes in reach.
                later = self._next_opening(t)
                if crew.duty is not None and later < crew.duty.end_s:
                    heapq.heappush(heap, (later, cid))
                continue
            self._commit(crew, draft)
            used.add(cid)
            heapq.heappush(heap, (crew.free_s, cid))
        return used

    def _next_opening(self, t: float) -> float:
        """Earliest time after ``t`` at which a waiting order comes within the wait limit."""
        wait = self.p.max_wait_for_order_s
        later = [
            o.pickup.start_s - wait
            for o in self.demand.orders.values()
            if self.demand.left[o.id] > _EPS_T and o.pickup.start_s - wait > t
        ]
        return min(later, default=_INF)

    def _next_cycle(self, crew: _CrewState, t: float) -> _Draft | None:
        """The crew's next cycle: on its lane if it can; else the most profitable side job.

        A crew whose lane has more cargo later this shift takes only side jobs that end, with the
        empty run back to its lane, before that cargo opens; a crew whose lane is done (or that
        has none) may move to the lane that earns most per hour, and stays there.
        """
        deadline = _INF
        if crew.lane is not None:
            d = self._plan_cycle(crew, crew.lane, t, estimate=False)
            if not isinstance(d, str):
                return d
            assert crew.duty is not None
            reopen = self.demand.next_pickup(crew.lane, t)
            if reopen < crew.duty.end_s:
                deadline = reopen
        best: tuple[float, _Draft, tuple[int, int]] | None = None
        c = self.p.costs
        mats = self.ctx.mats(t)
        for ln in self.demand.lanes():
            if ln == crew.lane or not self.demand.open_on(ln, t, self.p.max_wait_for_order_s):
                continue
            if deadline < _INF and crew.lane is not None:
                # Quick bound first: driving there, loading, delivering and driving back.
                o, dst = ln
                n = len(crew.members)
                quickest = (
                    t
                    + float(mats.t_empty[crew.pos, o] if crew.pos != o else 0.0)
                    + n * (self.p.load_s_per_truck + self.p.unload_s_per_truck)
                    + float(mats.t_loaded[o, dst])
                    + float(mats.t_empty[dst, crew.lane[0]])
                )
                if quickest > deadline:
                    continue
            d = self._plan_cycle(crew, ln, t, estimate=False)
            if isinstance(d, str):
                continue
            if deadline < _INF:
                home = crew.lane[0] if crew.lane is not None else d.pos
                back = float(mats.t_empty[d.pos, home]) if d.pos != home else 0.0
                if d.end_s + back > deadline:
                    continue
            km = float(mats.len_loaded[ln]) / 1_000.0
            revenue = sum(
                tt
                * c.freight_cny_per_tkm
                * km
                * c.priority_weight[self.demand.orders[oid].priority]
                for oid, tt in d.claims
            )
            gain = revenue - d.cost_cny
            rate = gain / max(d.end_s - t, 1.0)
            if gain > 0 and (best is None or rate > best[0]):
                best = (rate, d, ln)
        if best is None:
            return None
        if deadline == _INF:
            crew.lane = best[2]
        return best[1]

    # -- results --

    def unserved(self) -> list[Unserved]:
        out = []
        delivered: dict[str, float] = defaultdict(float)
        for tr in self.trips:
            for oid, t in tr.order_tonnes:
                delivered[oid] += t
        for o in self.ctx.orders:
            left = o.tonnes - delivered[o.id]
            if left <= _EPS_T:
                continue
            # Conditions when the rest could have been loaded: from the plan's start (a re-plan's
            # t_s) or the pickup window's opening.
            mats = self.ctx.mats(max(self.from_s, o.pickup.start_s))
            out.append(Unserved(o.id, left, self._reason(o, delivered[o.id], mats)))
        return out

    def _reason(self, o: Order, served: float, mats: _Mats) -> str:
        i, j = self.ctx.idx[o.origin_site], self.ctx.idx[o.destination_site]
        if not mats.ok_loaded[i, j]:
            return (
                f"no route from {o.origin_site} to {o.destination_site} under the road "
                "restrictions in force"
            )
        full_soc = {
            t.id: self.p.charge_target_soc * t.battery_kwh
            for t in self.trucks.values()
            if t.is_electric
        }
        if full_soc:
            probe = next(iter(full_soc))
            if not self._cycle_ok(mats, {probe: full_soc[probe]}, i, i, j, [probe]):
                need = self._leg_energy(
                    mats, LegKind.LOADED, i, j, probe, self.trucks[probe].payload_t
                )
                usable = (self.p.charge_target_soc - self.p.reserve_soc) * self.trucks[
                    probe
                ].battery_kwh
                return (
                    f"beyond battery range: the loaded leg needs {need:.0f} kWh plus the way to a "
                    f"station; usable {usable:.0f} kWh"
                )
        leg_s = float(mats.t_loaded[i, j])
        if leg_s > HoursOfService().max_continuous_driving_s:
            return (
                f"the loaded leg takes {leg_s / 3600:.1f} h, over the 4 h continuous-driving limit"
            )
        if served > 0:
            return (
                f"capacity: {served:.0f} of {o.tonnes:.0f} t served; no crew took the remaining "
                f"{o.tonnes - served:.0f} t within its windows"
            )
        return "no crew or lead driver free within the pickup and delivery windows"

    def duties(self) -> list[DriverDuty]:
        by: dict[tuple[str, str], list[PlatoonTrip]] = defaultdict(list)
        for tr in self.trips:
            by[(tr.driver_id, tr.crew_id)].append(tr)
        out = []
        drivers = self.ctx.fleet.drivers
        for (did, cid), trs in sorted(by.items()):
            trs.sort(key=lambda t: t.release_s)
            hos = drivers[did].hours
            longest, block, last_end = 0.0, 0.0, -_INF
            for tr in trs:
                dur = tr.arrival_s - tr.release_s
                block = block + dur if tr.release_s - last_end < hos.min_rest_s else dur
                longest = max(longest, block)
                last_end = tr.arrival_s
            out.append(
                DriverDuty(
                    did,
                    cid,
                    drivers[did].shift,
                    trs[0].release_s,
                    trs[-1].arrival_s,
                    sum(t.arrival_s - t.release_s for t in trs),
                    longest,
                    len(trs),
                )
            )
        return out

    def result(self, wall_s: float) -> DayPlan:
        return DayPlan(
            platoons=tuple(sorted(self.trips, key=lambda t: (t.release_s, t.id))),
            truck_trips=tuple(sorted(self.truck_trips, key=lambda t: (t.depart_s, t.truck_id))),
            stops=tuple(sorted(self.stops, key=lambda s: (s.start_s, s.crew_id))),
            station_visits=tuple(sorted(self.visits, key=lambda v: (v.start_s, v.truck_id))),
            duties=tuple(self.duties()),
            unserved=tuple(self.unserved()),
            solves=tuple(self.solves),
            crews=tuple(self.crew_list),
            orders=self.ctx.orders,
            fleet=self.ctx.fleet,
            params=self.p,
            wall_s=wall_s,
            context=self.ctx,
        )


# --- entry points --------------------------------------------------------------------------------


def _check_fleet(fleet: Fleet, network: RoadNetwork) -> None:
    try:
        fleet.check_sites(network.sites)
    except EntityError as err:
        raise DispatchError(str(err)) from None
    if not fleet.lead_drivers:
        raise DispatchError("fleet.drivers: no lead-qualified driver; allowed: at least one")


def plan_day(
    orders: Iterable[Order],
    fleet: Fleet,
    network: RoadNetwork | None = None,
    params: PlanParams | None = None,
) -> DayPlan:
    """Plan a day of hybrid-platoon operations that serves the orders at least cost.

    Args:
        orders: the day's orders (sites must be in ``network``).
        fleet: trucks, drivers, stations and hubs.
        network: the road network (default: the built-in Ordos network).
        params: planning parameters (default ``PlanParams()``).

    Returns:
        The :class:`DayPlan`; ``plan.solves`` reports CP-SAT or the greedy fallback per shift.

    Raises:
        DispatchError: an order or station naming an unknown site, or no qualified driver.
    """
    wall0 = time.perf_counter()
    net = network or ordos_network()
    p = params or PlanParams()
    try:
        ords = check_orders(orders, net.sites)
    except EntityError as err:
        raise DispatchError(str(err)) from None
    _check_fleet(fleet, net)
    ctx = _Context(net, fleet, ords, p)
    planner = _Planner(ctx)
    planner.form_crews()
    planner.run(-_INF)
    return planner.result(time.perf_counter() - wall0)


def replan(plan: DayPlan, change: Change | Sequence[Change], t_s: float) -> DayPlan:
    """Re-plan the rest of the day from ``t_s`` after a change, keeping the past fixed.

    Every trip, stop and station visit that started before ``t_s`` is kept as it was; a crew
    whose loading started before ``t_s`` completes that delivery (re-routed if its road closed).
    Each crew's place, charge and driver's hours are rebuilt from what was kept, and the
    remaining shifts are planned again under the new conditions.

    Args:
        plan: the plan to change.
        change: one change or several (``TruckDelay``, ``RoadClosure``, ``DustStorm``,
            ``UrgentOrder``, ``StationOutage``).
        t_s: when the change becomes known [s of day].

    Raises:
        DispatchError: a change naming an unknown truck, edge, station or site.
    """
    wall0 = time.perf_counter()
    changes = list(change) if isinstance(change, Sequence) else [change]
    ctx = plan.context.derive()
    net = ctx.network
    delays: list[TruckDelay] = []
    for ch in changes:
        if isinstance(ch, RoadClosure):
            bad = [e for e in ch.edge_ids if e not in net.edges]
            if bad:
                raise DispatchError(f"RoadClosure.edge_ids: {bad} not in network {net.name!r}")
            ctx.regimes.append(_Regime(t_s, ch.until_s, frozenset(ch.edge_ids)))
        elif isinstance(ch, DustStorm):
            ev = ch.event
            edges = edges_in_area(net, ev.area)
            start, end = max(t_s, ev.start_s), ev.end_s
            if ch.closed or ev.speed_limit_mps is None:
                ctx.regimes.append(
                    _Regime(start, end, frozenset(edges) if ch.closed else frozenset())
                )
            if not ch.closed and ev.speed_limit_mps is not None:
                v = ev.speed_limit_mps
                ctx.regimes.append(_Regime(start, end, slow=tuple((e, v) for e in edges)))
        elif isinstance(ch, UrgentOrder):
            if ch.order.id in {o.id for o in ctx.orders}:
                raise DispatchError(f"UrgentOrder.order.id = {ch.order.id!r}; allowed: a new id")
            try:
                ctx.orders = check_orders((*ctx.orders, ch.order), net.sites)
            except EntityError as err:
                raise DispatchError(str(err)) from None
        elif isinstance(ch, StationOutage):
            if ch.station_id not in ctx.fleet.stations:
                raise DispatchError(
                    f"StationOutage.station_id = {ch.station_id!r}; allowed: "
                    f"{', '.join(sorted(ctx.fleet.stations))}"
                )
            ctx.outages.append((ch.station_id, t_s, ch.until_s))
        elif isinstance(ch, TruckDelay):
            if ch.truck_id not in ctx.fleet.trucks:
                raise DispatchError(f"TruckDelay.truck_id = {ch.truck_id!r}; not in the fleet")
            if not (ch.delay_s >= 0 and math.isfinite(ch.delay_s)):
                raise DispatchError(
                    f"TruckDelay.delay_s = {ch.delay_s!r}; allowed: a finite number >= 0"
                )
            delays.append(ch)
        else:
            raise DispatchError(
                f"change {ch!r}; allowed: TruckDelay, RoadClosure, DustStorm, UrgentOrder, "
                "StationOutage"
            )
    planner = _Planner(ctx)
    _restore(planner, plan, t_s)
    for dl in delays:
        _apply_delay(planner, dl, t_s)
    planner.run(t_s)
    return planner.result(time.perf_counter() - wall0)


def _restore(planner: _Planner, plan: DayPlan, t_s: float) -> None:
    """Keep what started before ``t_s``; rebuild crews, drivers' clocks, demand and calendars."""
    ctx = planner.ctx
    idx = ctx.idx
    trucks = ctx.fleet.trucks
    current: dict[str, Crew] = {}
    for c in plan.crews:
        if c.changed_s <= t_s:
            current[c.id] = c
    for c in current.values():
        home = ctx.fleet.hubs[c.hub].site_id
        soc = {
            t: trucks[t].soc * trucks[t].battery_kwh for t in c.truck_ids if trucks[t].is_electric
        }
        planner.crews[c.id] = _CrewState(c.id, c.hub, list(c.truck_ids), idx[home], c.ready_s, soc)
    # A load that started before t_s is completed: keep its cycle's loaded leg and unload.
    loads_started = {
        (s.crew_id, s.cycle) for s in plan.stops if s.kind == StopKind.LOAD and s.start_s < t_s
    }
    completing: dict[tuple[str, int], PlatoonTrip] = {}
    kept_trips: list[PlatoonTrip] = []
    for tr in plan.platoons:
        if tr.release_s < t_s:
            kept_trips.append(tr)
        elif tr.kind == LegKind.LOADED and (tr.crew_id, tr.cycle) in loads_started:
            completing[(tr.crew_id, tr.cycle)] = tr
    kept_ids = {tr.id for tr in kept_trips}
    planner.trips = list(kept_trips)
    planner.truck_trips = [t for t in plan.truck_trips if t.trip_id in kept_ids]
    # A loaded leg under way at t_s ends with its unload (and any wait for the delivery window).
    delivering = {
        (tr.crew_id, tr.cycle): tr.destination_site
        for tr in kept_trips
        if tr.kind == LegKind.LOADED
    }

    def kept_stop(s: CrewStop) -> bool:
        if s.start_s < t_s:
            return True
        at = delivering.get((s.crew_id, s.cycle))
        return s.kind in (StopKind.UNLOAD, StopKind.WAIT) and at == s.site_id

    planner.stops = [s for s in plan.stops if kept_stop(s)]
    planner.visits = [v for v in plan.station_visits if v.start_s < t_s]
    planner.solves = list(plan.solves)
    planner._trip_no = max((int(tr.id.rsplit("-", 1)[1]) for tr in plan.platoons), default=0)
    planner.crew_list = [c for c in plan.crews if c.changed_s <= t_s]
    # Calendars: kept services hold their servers.
    for v in sorted(planner.visits, key=lambda v: v.start_s):
        planner.calendars[v.station_id].hold(v.mode, v.start_s, v.end_s)
    # Demand: what kept loaded trips carry is delivered.
    for tr in kept_trips:
        for o, t in tr.order_tonnes:
            planner.demand.left[o] -= t
    # Crew states from the kept records: each truck's last place, charge and time, and the
    # crew's last cycle.
    last_cycle: dict[str, int] = {}
    for cid, cyc in [(r.crew_id, r.cycle) for r in kept_trips] + [
        (r.crew_id, r.cycle) for r in planner.stops
    ]:
        last_cycle[cid] = max(last_cycle.get(cid, -1), cyc)
    crew_end: dict[str, float] = defaultdict(lambda: -_INF)
    for s_ in planner.stops:
        crew_end[s_.crew_id] = max(crew_end[s_.crew_id], s_.end_s)
    truck_at: dict[str, tuple[float, str]] = {}  # truck -> (free from, site)
    soc_at: dict[str, tuple[float, float]] = {}
    for tt in planner.truck_trips:
        if tt.arrive_s >= truck_at.get(tt.truck_id, (-_INF, ""))[0]:
            truck_at[tt.truck_id] = (tt.arrive_s, tt.destination_site)
        if not math.isnan(tt.soc_arrive) and tt.arrive_s >= soc_at.get(tt.truck_id, (-_INF, 0))[0]:
            soc_at[tt.truck_id] = (tt.arrive_s, tt.soc_arrive)
    for v in planner.visits:
        if v.end_s >= soc_at.get(v.truck_id, (-_INF, 0))[0]:
            soc_at[v.truck_id] = (v.end_s, v.soc_after)
        at = truck_at.get(v.truck_id, (-_INF, v.site_id))
        truck_at[v.truck_id] = (max(at[0], v.end_s), at[1])
    for crew in planner.crews.values():
        placed = [truck_at[t] for t in crew.members if t in truck_at]
        if placed:
            crew.pos = idx[max(placed)[1]]
        crew.free_s = max([crew.free_s, crew_end[crew.id], *(p[0] for p in placed)])
        crew.cycle = last_cycle.get(crew.id, -1) + 1
        for tid in crew.soc:
            if tid in soc_at:
                crew.soc[tid] = soc_at[tid][1] * trucks[tid].battery_kwh
    # Drivers on duty at t_s keep their crew; their clocks replay their kept driving.
    drivers = ctx.fleet.drivers
    by_driver: dict[str, list[PlatoonTrip]] = defaultdict(list)
    for tr in kept_trips:
        by_driver[tr.driver_id].append(tr)
        planner.used_drivers.add(tr.driver_id)
    for did, trs in by_driver.items():
        d = drivers[did]
        trs.sort(key=lambda t: t.release_s)
        crew = planner.crews[trs[-1].crew_id]
        if d.shift.end_s <= t_s:
            continue
        clock = _Clock(d.hours)
        for tr in trs:
            clock.drive(tr.release_s, tr.arrival_s - tr.release_s)
        crew.duty = _Duty(d, d.shift.start_s + planner.p.briefing_s, d.shift.end_s, clock)
    # Complete deliveries whose loading started before t_s.
    for (cid, cyc), tr in sorted(completing.items()):
        crew = planner.crews[cid]
        if crew.duty is None:  # loaded by a driver whose shift is over: the next one drives
            continue
        crew.cycle = cyc
        crew.members = list(tr.truck_ids)
        crew.soc = {t: v for t, v in crew.soc.items() if t in crew.members}
        tonnes = {t.truck_id: t.tonnes for t in plan.truck_trips if t.trip_id == tr.id}
        ops: list[_LegOp | _StopOp | _VisitOp] = []
        clock = crew.duty.clock
        i, j = idx[tr.origin_site], idx[tr.destination_site]
        start = max(tr.release_s, crew.free_s)
        got = planner._drive(
            ops, clock, crew.soc, crew.members, LegKind.LOADED, i, j, start, tonnes, tr.order_tonnes
        )
        if got is None:
            crew.active = False  # stranded with its cargo; its orders show as unserved
            continue
        n_loaded = sum(1 for v in tonnes.values() if v > 0)
        ops.append(
            _StopOp(StopKind.UNLOAD, j, got[0], got[0] + n_loaded * planner.p.unload_s_per_truck)
        )
        planner._emit(crew, crew.duty.driver.id, ops)
        for o, t in tr.order_tonnes:
            planner.demand.left[o] -= t
        crew.pos, crew.free_s = j, got[0] + n_loaded * planner.p.unload_s_per_truck
        crew.cycle = cyc + 1


def _apply_delay(planner: _Planner, dl: TruckDelay, t_s: float) -> None:
    """Hold the truck's crew for it, or leave it behind as a crew of its own."""
    crew = next((c for c in planner.crews.values() if dl.truck_id in c.members), None)
    if crew is None:
        return
    ready = max(crew.free_s, t_s) + dl.delay_s
    if dl.delay_s <= planner.p.max_hold_for_late_truck_s or len(crew.members) == 1:
        crew.free_s = ready
        planner.crew_list.append(Crew(crew.id, crew.hub, tuple(crew.members), t_s, ready))
        return
    crew.members.remove(dl.truck_id)
    soc = {dl.truck_id: crew.soc.pop(dl.truck_id)} if dl.truck_id in crew.soc else {}
    late_id = f"{crew.id}-late"
    while late_id in planner.crews:
        late_id += "-late"
    alone = _CrewState(late_id, crew.hub, [dl.truck_id], crew.pos, ready, soc)
    planner.crews[alone.id] = alone
    planner.crew_list.append(Crew(crew.id, crew.hub, tuple(crew.members), t_s))
    planner.crew_list.append(Crew(alone.id, alone.hub, (dl.truck_id,), t_s, ready))
