"""Operating entities of the cloud layer: orders, trucks, drivers, operators, stations, hubs.

These are the typed objects the planning half of the cloud layer works on (``orders``,
``dispatch``, ``release``, ``charging``). Each is a frozen dataclass that checks itself on
construction and raises :class:`EntityError` (a ``ValueError``) with one message naming the
record, the field, the value and what is allowed.

Times are seconds from 00:00 of the operating day. The built-in Ordos day runs two 12 h shifts,
06:00-18:00 and 18:00-06:00, so a time may exceed 86,400 s: it then falls on the next calendar
day (30 h = 108,000 s is 06:00 the next morning).

Hours of service (:class:`HoursOfService`) follow costs.md §1:

- at most 4 h of continuous driving, then at least 20 min of rest: 道路交通安全法实施条例
  (Implementing Regulations of the Road Traffic Safety Law) Art. 62(7), which binds every
  driver [V];
- at most 2 h of continuous driving at night (22:00-06:00): the Beidou fatigue alarm on
  freight trucks (道路运输车辆动态监督管理办法, MOT 2014 No. 5) [V, vendor reading];
- at most 8 h of driving a day: the passenger-transport rule (道路旅客运输企业安全管理规范
  Art. 38). costs.md found no freight cap, so this is a conservative default, overridable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

DAY_S = 86_400.0
HOUR_S = 3_600.0


class EntityError(ValueError):
    """A bad entity field; the message names the record, field, value and what is allowed."""


def _fail(record: str, name: str, value: Any, allowed: str) -> EntityError:
    return EntityError(f"{record}.{name} = {value!r}; allowed: {allowed}")


def _check_id(record: str, name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _fail(record, name, value, "a non-empty string")


def _check_finite(record: str, name: str, value: Any, lo: float, hi: float = math.inf) -> None:
    """``lo <= value <= hi`` and finite."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (lo <= value <= hi):
        bound = f"a finite number >= {lo:g}" if hi == math.inf else f"a number in [{lo:g}, {hi:g}]"
        raise _fail(record, name, value, bound)


def _check_positive(record: str, name: str, value: Any) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not value > 0:
        raise _fail(record, name, value, "a finite number > 0")


def _coerce_enum(record: str, name: str, value: Any, enum: type[StrEnum]) -> StrEnum:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise _fail(record, name, value, allowed) from None


class Cargo(StrEnum):
    """What an order carries. Coal dominates the Ordos haul (ordos-sites.md §7)."""

    COAL = "coal"
    COKE = "coke"
    CHEMICALS = "chemicals"
    ORE = "ore"
    AGGREGATE = "aggregate"


class Powertrain(StrEnum):
    """A truck's powertrain kind (DESIGN.md "Truck": electric, or diesel/LNG with a fuel map)."""

    ELECTRIC = "electric"
    DIESEL = "diesel"


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A closed interval ``[start_s, end_s]`` of the operating day [s]."""

    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        _check_finite("TimeWindow", "start_s", self.start_s, 0.0, 3 * DAY_S)
        _check_finite("TimeWindow", "end_s", self.end_s, 0.0, 3 * DAY_S)
        if self.end_s < self.start_s:
            raise _fail("TimeWindow", "end_s", self.end_s, f">= start_s ({self.start_s:g})")

    def contains(self, t_s: float) -> bool:
        """Whether ``start_s <= t_s <= end_s``."""
        return self.start_s <= t_s <= self.end_s

    def overlaps(self, start_s: float, end_s: float) -> bool:
        """Whether the window meets ``[start_s, end_s]``."""
        return self.start_s <= end_s and start_s <= self.end_s


@dataclass(frozen=True, slots=True)
class Order:
    """A freight order: move ``tonnes`` of a cargo from one site to another.

    Attributes:
        id: unique id.
        shipper: who ships it.
        cargo: see :class:`Cargo` (strings are accepted and converted).
        origin_site, destination_site: site ids of the road network (loading, unloading).
        tonnes: payload to move [t]; several truck loads in general.
        pickup: when loading may start [s of day].
        delivery: when unloading may start [s of day]; loads arriving earlier wait.
        priority: 0 normal, 1 high, 2 urgent; higher priorities are served first.
    """

    id: str
    shipper: str
    cargo: Cargo
    origin_site: str
    destination_site: str
    tonnes: float
    pickup: TimeWindow
    delivery: TimeWindow
    priority: int = 0

    def __post_init__(self) -> None:
        rec = f"Order {self.id!r}" if isinstance(self.id, str) else "Order"
        _check_id(rec, "id", self.id)
        _check_id(rec, "shipper", self.shipper)
        object.__setattr__(self, "cargo", _coerce_enum(rec, "cargo", self.cargo, Cargo))
        _check_id(rec, "origin_site", self.origin_site)
        _check_id(rec, "destination_site", self.destination_site)
        if self.origin_site == self.destination_site:
            raise _fail(
                rec, "destination_site", self.destination_site, "a site other than origin_site"
            )
        _check_positive(rec, "tonnes", self.tonnes)
        for name in ("pickup", "delivery"):
            if not isinstance(getattr(self, name), TimeWindow):
                raise _fail(rec, name, getattr(self, name), "a TimeWindow")
        if self.delivery.end_s < self.pickup.start_s:
            raise _fail(
                rec,
                "delivery",
                (self.delivery.start_s, self.delivery.end_s),
                f"a window ending at or after pickup.start_s ({self.pickup.start_s:g})",
            )
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise _fail(rec, "priority", self.priority, "an integer 0 (normal) to 2 (urgent)")
        if not 0 <= self.priority <= 2:
            raise _fail(rec, "priority", self.priority, "0 (normal), 1 (high) or 2 (urgent)")


# TruckSpec (convoy/vehicle/truck.py, DESIGN.md "Truck"): 49 t loaded - 18 t empty = 31 t.
DEFAULT_PAYLOAD_T = 31.0
# DESIGN.md "Truck" / costs.md §3: 282 kWh swap packs are typical in China.
DEFAULT_BATTERY_KWH = 282.0


@dataclass(frozen=True, slots=True)
class Truck:
    """A heavy truck of the fleet.

    Any truck can be the human-driven lead of a hybrid platoon (a driver sits in it); only an
    ``l4_capable`` truck can be a driverless follower.

    Attributes:
        id: unique id.
        powertrain: :class:`Powertrain` (strings are accepted).
        payload_t: payload when full [t]; 31 t from TruckSpec (49 t gross - 18 t empty).
        battery_kwh: usable pack energy [kWh]; 0 for diesel.
        soc: state of charge at the start of the day, in [0, 1]; ignored for diesel.
        home_hub: id of the hub where it starts the day.
        l4_capable: fitted with the L4 kit, so it may drive as a driverless follower.
        swappable: its pack can be swapped at a swap station (282 kWh swap packs, costs.md §3).
    """

    id: str
    powertrain: Powertrain
    payload_t: float = DEFAULT_PAYLOAD_T
    battery_kwh: float = DEFAULT_BATTERY_KWH
    soc: float = 0.9
    home_hub: str = ""
    l4_capable: bool = True
    swappable: bool = True

    def __post_init__(self) -> None:
        rec = f"Truck {self.id!r}" if isinstance(self.id, str) else "Truck"
        _check_id(rec, "id", self.id)
        pt = _coerce_enum(rec, "powertrain", self.powertrain, Powertrain)
        object.__setattr__(self, "powertrain", pt)
        _check_positive(rec, "payload_t", self.payload_t)
        if pt == Powertrain.ELECTRIC:
            _check_positive(rec, "battery_kwh", self.battery_kwh)
        else:
            _check_finite(rec, "battery_kwh", self.battery_kwh, 0.0)
        _check_finite(rec, "soc", self.soc, 0.0, 1.0)
        _check_id(rec, "home_hub", self.home_hub)

    @property
    def is_electric(self) -> bool:
        """Whether it runs on a battery."""
        return self.powertrain == Powertrain.ELECTRIC


@dataclass(frozen=True, slots=True)
class HoursOfService:
    """Driving-time rules for a driver; see the module docstring for the sources.

    Attributes:
        max_continuous_driving_s: longest driving without a qualifying rest [s] (4 h, Art. 62(7)).
        min_rest_s: shortest stop that counts as rest [s] (20 min, Art. 62(7)).
        max_continuous_night_s: longest continuous driving that touches the night window [s]
            (2 h, Beidou fatigue alarm).
        night_start_s, night_end_s: the night window as seconds of a calendar day
            (22:00-06:00, MOT 2014 No. 5); it wraps over midnight.
        max_daily_driving_s: driving per duty day [s] (8 h, passenger rule as a conservative
            default).
    """

    max_continuous_driving_s: float = 4 * HOUR_S
    min_rest_s: float = 20 * 60.0
    max_continuous_night_s: float = 2 * HOUR_S
    night_start_s: float = 22 * HOUR_S
    night_end_s: float = 6 * HOUR_S
    max_daily_driving_s: float = 8 * HOUR_S

    def __post_init__(self) -> None:
        rec = "HoursOfService"
        for name in (
            "max_continuous_driving_s",
            "min_rest_s",
            "max_continuous_night_s",
            "max_daily_driving_s",
        ):
            _check_positive(rec, name, getattr(self, name))
        for name in ("night_start_s", "night_end_s"):
            _check_finite(rec, name, getattr(self, name), 0.0, DAY_S)
        if self.max_continuous_night_s > self.max_continuous_driving_s:
            raise _fail(
                rec,
                "max_continuous_night_s",
                self.max_continuous_night_s,
                f"<= max_continuous_driving_s ({self.max_continuous_driving_s:g})",
            )

    def touches_night(self, start_s: float, end_s: float) -> bool:
        """Whether ``[start_s, end_s]`` overlaps the night window on any day."""
        if end_s - start_s >= DAY_S:
            return True
        a = start_s % DAY_S
        b = a + (end_s - start_s)
        ns, ne = self.night_start_s, self.night_end_s
        # Night windows as intervals on [0, 2 days): wrap-around ones split at midnight.
        nights = (
            [(ns, ne), (ns + DAY_S, ne + DAY_S)]
            if ns < ne
            else [(0.0, ne), (ns, ne + DAY_S), (ns + DAY_S, 2 * DAY_S)]
        )
        return any(a < n_end and n_start < b for n_start, n_end in nights)

    def continuous_limit_s(self, start_s: float, end_s: float) -> float:
        """The continuous-driving limit for a block of driving from ``start_s`` to ``end_s``."""
        if self.touches_night(start_s, end_s):
            return self.max_continuous_night_s
        return self.max_continuous_driving_s


@dataclass(frozen=True, slots=True)
class Driver:
    """A safety driver who can sit in the lead truck of a hybrid platoon.

    Attributes:
        id: unique id.
        group: crew id; drivers work in groups of 5-7 and start with a safety briefing
            (DESIGN.md, "The system").
        lead_qualified: may drive the lead truck of a platoon.
        shift: the duty window [s of day].
        home_hub: hub where the group is based; it drives platoons based there.
        hours: hours-of-service rules.
    """

    id: str
    group: str
    lead_qualified: bool
    shift: TimeWindow
    home_hub: str
    hours: HoursOfService = field(default_factory=HoursOfService)

    def __post_init__(self) -> None:
        rec = f"Driver {self.id!r}" if isinstance(self.id, str) else "Driver"
        _check_id(rec, "id", self.id)
        _check_id(rec, "group", self.group)
        _check_id(rec, "home_hub", self.home_hub)
        if not isinstance(self.shift, TimeWindow):
            raise _fail(rec, "shift", self.shift, "a TimeWindow")
        if self.shift.end_s - self.shift.start_s > DAY_S:
            raise _fail(rec, "shift", (self.shift.start_s, self.shift.end_s), "at most 24 h long")


# DESIGN.md "Remote supervision": reported ratios run from 1 operator per 3 vehicles (China's
# 2023 robotaxi rule) to 1 per 15-20 (industry); 10 is a middle default.
DEFAULT_TRUCKS_PER_OPERATOR = 10


@dataclass(frozen=True, slots=True)
class RemoteOperator:
    """A remote-supervision operator at the cloud centre.

    Attributes:
        id: unique id.
        shift: duty window [s of day].
        max_trucks: driverless trucks one operator watches at once.
    """

    id: str
    shift: TimeWindow
    max_trucks: int = DEFAULT_TRUCKS_PER_OPERATOR

    def __post_init__(self) -> None:
        rec = f"RemoteOperator {self.id!r}" if isinstance(self.id, str) else "RemoteOperator"
        _check_id(rec, "id", self.id)
        if not isinstance(self.shift, TimeWindow):
            raise _fail(rec, "shift", self.shift, "a TimeWindow")
        if not isinstance(self.max_trucks, int) or self.max_trucks < 1:
            raise _fail(rec, "max_trucks", self.max_trucks, "an integer >= 1")


# costs.md §3 (NewsChina): truck chargers are 120-240 kW (a ~300 kWh pack in <= 1 h).
DEFAULT_POST_POWER_KW = 240.0
# costs.md §3: a battery swap takes 3-6 min (ICCT); Qiji swap blocks ~5 min.
DEFAULT_SWAP_S = 300.0
# Estimate: a pack leaves the swap station's racks charged to 95 %; no source found.
DEFAULT_SWAP_PACK_SOC = 0.95


@dataclass(frozen=True, slots=True)
class Station:
    """A charging and/or battery-swap station at a site of the road network.

    Attributes:
        id: unique id.
        site_id: the network site it stands at.
        charge_posts: DC charging posts (one truck each).
        swap_bays: swap lanes (one truck each).
        post_power_kw: power of one post [kW] (taper ignored).
        swap_s: time of one swap [s].
        swap_pack_soc: state of charge of a pack taken from the racks [-].
    """

    id: str
    site_id: str
    charge_posts: int = 0
    swap_bays: int = 0
    post_power_kw: float = DEFAULT_POST_POWER_KW
    swap_s: float = DEFAULT_SWAP_S
    swap_pack_soc: float = DEFAULT_SWAP_PACK_SOC

    def __post_init__(self) -> None:
        rec = f"Station {self.id!r}" if isinstance(self.id, str) else "Station"
        _check_id(rec, "id", self.id)
        _check_id(rec, "site_id", self.site_id)
        for name in ("charge_posts", "swap_bays"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise _fail(rec, name, v, "an integer >= 0")
        if self.charge_posts + self.swap_bays == 0:
            raise _fail(rec, "charge_posts", 0, ">= 1 when swap_bays is 0 (a station needs one)")
        _check_positive(rec, "post_power_kw", self.post_power_kw)
        _check_positive(rec, "swap_s", self.swap_s)
        _check_finite(rec, "swap_pack_soc", self.swap_pack_soc, 0.0, 1.0)


@dataclass(frozen=True, slots=True)
class Hub:
    """A platoon hub or depot: where trucks park overnight and driver groups are briefed.

    Attributes:
        id: unique id.
        site_id: the network site it stands at.
        name: display name.
    """

    id: str
    site_id: str
    name: str = ""

    def __post_init__(self) -> None:
        rec = f"Hub {self.id!r}" if isinstance(self.id, str) else "Hub"
        _check_id(rec, "id", self.id)
        _check_id(rec, "site_id", self.site_id)


def _index(record: str, items: Iterable[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        if it.id in out:
            raise EntityError(f"Fleet.{record}: id {it.id!r} appears twice; ids must be unique")
        out[it.id] = it
    return out


@dataclass(frozen=True)
class Fleet:
    """Trucks, drivers, remote operators, stations and hubs of one operator.

    Build it with :meth:`Fleet.build`, which checks ids and cross-references.
    """

    trucks: Mapping[str, Truck]
    drivers: Mapping[str, Driver]
    operators: Mapping[str, RemoteOperator]
    stations: Mapping[str, Station]
    hubs: Mapping[str, Hub]

    @staticmethod
    def build(
        trucks: Iterable[Truck],
        drivers: Iterable[Driver],
        stations: Iterable[Station] = (),
        hubs: Iterable[Hub] = (),
        operators: Iterable[RemoteOperator] = (),
    ) -> Fleet:
        """Index the entities by id and check that every reference resolves.

        Raises:
            EntityError: a duplicate id, or a truck or driver naming an unknown hub.
        """
        fleet = Fleet(
            trucks=_index("trucks", trucks),
            drivers=_index("drivers", drivers),
            operators=_index("operators", operators),
            stations=_index("stations", stations),
            hubs=_index("hubs", hubs),
        )
        hubs_ok = ", ".join(sorted(fleet.hubs)) or "none defined"
        for t in fleet.trucks.values():
            if t.home_hub not in fleet.hubs:
                raise _fail(f"Truck {t.id!r}", "home_hub", t.home_hub, f"a hub id ({hubs_ok})")
        for d in fleet.drivers.values():
            if d.home_hub not in fleet.hubs:
                raise _fail(f"Driver {d.id!r}", "home_hub", d.home_hub, f"a hub id ({hubs_ok})")
        return fleet

    def check_sites(self, site_ids: Iterable[str]) -> None:
        """Check that every station and hub stands at one of ``site_ids``.

        Raises:
            EntityError: naming the first station or hub at an unknown site.
        """
        known = set(site_ids)
        for rec, items in (("Station", self.stations), ("Hub", self.hubs)):
            for it in items.values():
                if it.site_id not in known:
                    raise _fail(
                        f"{rec} {it.id!r}", "site_id", it.site_id, "a site of the road network"
                    )

    @property
    def l4_trucks(self) -> tuple[Truck, ...]:
        """Trucks that may follow driverless."""
        return tuple(t for t in self.trucks.values() if t.l4_capable)

    @property
    def lead_drivers(self) -> tuple[Driver, ...]:
        """Drivers qualified to lead a platoon."""
        return tuple(d for d in self.drivers.values() if d.lead_qualified)


def check_orders(orders: Iterable[Order], site_ids: Iterable[str]) -> tuple[Order, ...]:
    """Check order ids are unique and every site exists; return the orders as a tuple.

    Raises:
        EntityError: a duplicate id or an unknown site, named.
    """
    known = set(site_ids)
    seen: set[str] = set()
    out = []
    for o in orders:
        if o.id in seen:
            raise EntityError(f"orders: id {o.id!r} appears twice; order ids must be unique")
        seen.add(o.id)
        for name in ("origin_site", "destination_site"):
            if getattr(o, name) not in known:
                raise _fail(f"Order {o.id!r}", name, getattr(o, name), "a site of the road network")
        out.append(o)
    return tuple(out)
