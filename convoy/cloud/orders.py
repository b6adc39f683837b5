"""The built-in Ordos day: coal orders on real lanes of the network, and the default fleet.

``ordos_day_orders(seed)`` draws a day of orders on :data:`ORDOS_LANES`, lanes between real
sites of :func:`convoy.road.ordos.ordos_network` (mines to power plants, chemical parks and rail
loading stations). ``ordos_fleet()`` builds the operator the figures in DESIGN.md describe:
400 connected heavy trucks, mostly electric L4 followers, lead-qualified safety drivers in groups
of 5-7 on two shifts, the Otog centre's 110 charging posts and the swap stations of the network.

How big the day is. The default tonnage is ``n_trucks x trips_per_truck x payload_t`` =
400 x 3 x 31 t = 37,200 t: each truck makes a few round trips on lanes of 11-93 km. At 320
operating days (costs.md §4) that is about 12 Mt a year, in line with the operator's 35 Mt hauled
over several years (DESIGN.md). Lane shares are estimates ([S-est]): costs.md §5 says the trucks
haul coal "to nearby power plants" without naming mines or plants, so the lanes pair each large
mine of ordos-sites.md §2 with its nearest consumers in the network. Lanes are kept within
an electric truck's reach: Bayangaole to Ordos station (134 km) is left out, since a full
282 kWh pack cannot carry a load there and still reach a station with its reserve (the
dispatcher reports such orders as beyond battery range).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from convoy.cloud.entities import (
    DEFAULT_PAYLOAD_T,
    DEFAULT_TRUCKS_PER_OPERATOR,
    HOUR_S,
    Cargo,
    Driver,
    EntityError,
    Fleet,
    Hub,
    Order,
    Powertrain,
    RemoteOperator,
    Station,
    TimeWindow,
    Truck,
)
from convoy.road.network import RoadNetwork, SiteKind
from convoy.road.ordos import ordos_network


@dataclass(frozen=True, slots=True)
class Lane:
    """An origin-destination pair orders are drawn on.

    Attributes:
        origin_site, destination_site: network site ids.
        cargo: what moves.
        share: share of the day's tonnage [-].
        hub: the default fleet's hub that serves it (where its platoons are based).
    """

    origin_site: str
    destination_site: str
    cargo: Cargo
    share: float
    hub: str


# Lanes of the built-in day; shares are estimates (module docstring). One-way road distances in
# the built-in network are given for orientation.
ORDOS_LANES: tuple[Lane, ...] = (
    # Jungar mining area: the two big open pits and their neighbours (ordos-sites.md §2-3).
    Lane("haerwusu-mine", "dalu-park", Cargo.COAL, 0.12, "jungar-depot"),  # 32 km
    Lane("heidaigou-mine", "xuejiawan-ps", Cargo.COAL, 0.12, "jungar-depot"),  # 29 km
    Lane("heidaigou-mine", "zhujiaping-ps", Cargo.COAL, 0.10, "jungar-depot"),  # 28 km
    Lane("haerwusu-mine", "jungar-edz", Cargo.COAL, 0.06, "jungar-depot"),  # 69 km
    Lane("wulanhada-mine", "jungar-edz", Cargo.COAL, 0.06, "jungar-depot"),  # 69 km
    Lane("chaonaoliang-mine", "jungar-edz", Cargo.COAL, 0.05, "jungar-depot"),  # 75 km
    Lane("baijialiang-mine", "jungar-edz", Cargo.COAL, 0.03, "jungar-depot"),  # 93 km
    # Coal-chemical products from the Jungar EDZ to the Haerwusu rail loop.
    Lane("jungar-edz", "haerwusu-loop", Cargo.COKE, 0.02, "jungar-depot"),  # 69 km
    # Shendong mines to the Baoxi railway at Ordos station (Kangbashi side).
    Lane("buertai-mine", "ordos-station", Cargo.COAL, 0.10, "kangbashi-hub"),  # 27 km
    Lane("bulianta-mine", "ordos-station", Cargo.COAL, 0.10, "kangbashi-hub"),  # 43 km
    Lane("hongqingliang-mine", "ordos-station", Cargo.COAL, 0.06, "dalad-depot"),  # 69 km
    Lane("chaonaoliang-mine", "ordos-station", Cargo.COAL, 0.03, "kangbashi-hub"),  # 83 km
    # Otog: Jianyuan mine to the Junzheng plant and the Otog high-tech zone, by the Otog base.
    Lane("jianyuan-mine", "junzheng-ps", Cargo.COAL, 0.11, "otog-hub"),  # 13 km
    Lane("jianyuan-mine", "otog-edz", Cargo.COAL, 0.04, "otog-hub"),  # 11 km
)

# Hubs of the default fleet: the network's platoon hubs plus two depots at swap stations.
# The depots are estimates ([S-est]): the Jungar and Dalad lanes need a base nearby.
ORDOS_HUBS: tuple[Hub, ...] = (
    Hub("otog-hub", "kargobot-otog-hub", "Otog R&D and operations centre"),
    Hub("kangbashi-hub", "kangbashi-hub", "Kangbashi platoon hub"),
    Hub("baotou-hub", "baotou-hub", "Baotou cross-city hub"),
    Hub("jungar-depot", "jungar-mines-swap", "Jungar mining-area depot"),
    Hub("dalad-depot", "dianshigou-1", "Dalad (Dianshigou) depot"),
)

# Share of the fleet based at each hub: the lanes' shares weighted by their round-trip time
# (short Otog lanes need few trucks per tonne). Estimates.
ORDOS_HUB_SHARES: Mapping[str, float] = {
    "jungar-depot": 0.55,
    "kangbashi-hub": 0.25,
    "dalad-depot": 0.08,
    "otog-hub": 0.12,
}

# Two 12 h shifts a day; times past 24 h fall on the next morning. Estimate: coal haulage runs
# around the clock; no source for the shift change time was found.
DAY_SHIFT = TimeWindow(6 * HOUR_S, 18 * HOUR_S)
NIGHT_SHIFT = TimeWindow(18 * HOUR_S, 30 * HOUR_S)
OPERATING_DAY = TimeWindow(DAY_SHIFT.start_s, NIGHT_SHIFT.end_s)

# Station capacities by site id where a source gives them; others take the swap-station default.
# DESIGN.md / ordos-sites.md §7: the Otog operations centre has 110 charging posts [V].
_STATION_OVERRIDES: Mapping[str, tuple[int, int]] = {
    "kargobot-otog-charging": (110, 0),
    # Estimate: the Jungar depot serves over half the fleet, so it gets twice the default.
    "jungar-mines-swap": (8, 4),
}
# Estimate for a swap station with no capacity figure: 4 posts and 2 swap bays.
_DEFAULT_SWAP_STATION = (4, 2)

# Estimate: trucks leave the depot charged overnight to 90 %.
DEFAULT_START_SOC = 0.9


def lane_sites(lanes: tuple[Lane, ...] = ORDOS_LANES) -> set[str]:
    """All site ids the lanes name."""
    return {s for ln in lanes for s in (ln.origin_site, ln.destination_site)}


def _check_lanes(lanes: tuple[Lane, ...], network: RoadNetwork) -> None:
    for ln in lanes:
        for s in (ln.origin_site, ln.destination_site):
            if s not in network.sites:
                raise EntityError(
                    f"Lane {ln.origin_site}->{ln.destination_site}: site {s!r} is not in "
                    f"network {network.name!r}"
                )
    total = sum(ln.share for ln in lanes)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise EntityError(f"lanes: shares sum to {total:g}; allowed: 1")


def ordos_day_orders(
    seed: int = 0,
    *,
    n_trucks: int = 400,
    trips_per_truck: float = 3.0,
    payload_t: float = DEFAULT_PAYLOAD_T,
    lanes: tuple[Lane, ...] = ORDOS_LANES,
    day: TimeWindow = OPERATING_DAY,
    network: RoadNetwork | None = None,
) -> tuple[Order, ...]:
    """A seeded day of orders on the built-in lanes.

    Each lane gets ``share x n_trucks x trips_per_truck x payload_t`` tonnes, cut into orders of
    300-1,200 t (rounded to 10 t). An order's pickup window opens at a random quarter hour and
    stays open 6-10 h (clipped to the day); unloading may start as soon as loading can and must
    start within 6 h of the pickup window's close. One order in ten is high priority (1).

    Args:
        seed: seed of the generator; the same seed gives the same orders.
        n_trucks, trips_per_truck, payload_t: size of the day (module docstring).
        lanes: the lanes and their shares (summing to 1).
        day: the operating day; windows lie inside it.
        network: the network the lanes' sites must exist in (default: the built-in one).

    Raises:
        EntityError: a lane naming an unknown site, shares not summing to 1, or bad sizes.
    """
    net = network or ordos_network()
    _check_lanes(lanes, net)
    for name, value in (
        ("n_trucks", n_trucks),
        ("trips_per_truck", trips_per_truck),
        ("payload_t", payload_t),
    ):
        if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
            raise EntityError(f"ordos_day_orders: {name} = {value!r}; allowed: a number > 0")
    rng = np.random.default_rng(seed)
    total_t = n_trucks * trips_per_truck * payload_t
    quarter = 900.0
    orders: list[Order] = []
    for k, ln in enumerate(lanes):
        left = round(ln.share * total_t / 10.0) * 10.0
        shipper = net.sites[ln.origin_site].name_en
        j = 0
        while left > 0:
            size = float(min(left, round(rng.uniform(300.0, 1_200.0) / 10.0) * 10.0))
            if left - size < 100.0:  # no crumbs: fold a small remainder into this order
                size = left
            left -= size
            latest_open = day.end_s - 6 * HOUR_S
            open_s = day.start_s + quarter * math.floor(
                rng.uniform(0.0, latest_open - day.start_s) / quarter
            )
            close_s = min(open_s + rng.uniform(6.0, 10.0) * HOUR_S, day.end_s)
            delivery_end = min(close_s + 6 * HOUR_S, day.end_s)
            priority = 1 if rng.random() < 0.1 else 0
            orders.append(
                Order(
                    id=f"O{k:02d}-{j:02d}",
                    shipper=shipper,
                    cargo=ln.cargo,
                    origin_site=ln.origin_site,
                    destination_site=ln.destination_site,
                    tonnes=size,
                    pickup=TimeWindow(open_s, close_s),
                    delivery=TimeWindow(open_s, delivery_end),
                    priority=priority,
                )
            )
            j += 1
    return tuple(orders)


def _split(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``total`` by ``shares``."""
    s = sum(shares.values())
    raw = {k: total * v / s for k, v in shares.items()}
    out = {k: math.floor(v) for k, v in raw.items()}
    rest = total - sum(out.values())
    for k in sorted(raw, key=lambda k: raw[k] - out[k], reverse=True)[:rest]:
        out[k] += 1
    return out


def ordos_stations(network: RoadNetwork | None = None) -> tuple[Station, ...]:
    """Stations at the network's charging and swap sites (capacities: see the module notes)."""
    net = network or ordos_network()
    out = []
    for site in net.sites.values():
        if site.kind not in (SiteKind.CHARGING_STATION, SiteKind.SWAP_STATION):
            continue
        if site.id in _STATION_OVERRIDES:
            posts, bays = _STATION_OVERRIDES[site.id]
        elif site.kind == SiteKind.CHARGING_STATION:
            posts, bays = int(site.capacity or _DEFAULT_SWAP_STATION[0]), 0
        else:
            posts, bays = _DEFAULT_SWAP_STATION
        out.append(Station(id=site.id, site_id=site.id, charge_posts=posts, swap_bays=bays))
    return tuple(out)


def ordos_fleet(
    n_trucks: int = 400,
    max_followers: int = 4,
    *,
    hub_shares: Mapping[str, float] = ORDOS_HUB_SHARES,
    diesel_lead_every: int = 10,
    start_soc: float = DEFAULT_START_SOC,
    network: RoadNetwork | None = None,
) -> Fleet:
    """The default operator: trucks, drivers, remote operators, stations and hubs.

    - Trucks: one lead truck (L2 + V2V, not L4) per ``1 + max_followers`` trucks, the rest L4
      followers; every ``diesel_lead_every``-th lead truck is diesel/LNG (the operator's first
      platoons ran LNG Shaanxi Delong trucks, costs.md §5), all others electric with 282 kWh swap
      packs. Trucks are split over the hubs by ``hub_shares``, whole platoons at a time.
    - Drivers: per hub and shift, enough lead-qualified drivers for every platoon plus 5 %
      spare, in groups of 6, 7 and 5 in turn (DESIGN.md: groups of 5-7). The seventh member of
      a group of 7 is a trainee, not yet lead-qualified.
    - Remote operators: one per ``DEFAULT_TRUCKS_PER_OPERATOR`` L4 trucks per shift.
    - Stations: :func:`ordos_stations`.

    Args:
        n_trucks: fleet size (DESIGN.md: more than 400 connected heavy trucks).
        max_followers: followers per lead truck the fleet is sized for ("1+4" by default).
        hub_shares: share of platoons based at each hub (keys: hub ids of ``ORDOS_HUBS``).
        diesel_lead_every: every k-th lead truck is diesel; 0 for an all-electric fleet.
        start_soc: state of charge at the start of the day.
        network: the network the stations and hubs stand in (default: built-in).

    Raises:
        EntityError: bad sizes or an unknown hub.
    """
    net = network or ordos_network()
    if not isinstance(n_trucks, int) or n_trucks < 1:
        raise EntityError(f"ordos_fleet: n_trucks = {n_trucks!r}; allowed: an integer >= 1")
    if not isinstance(max_followers, int) or not 0 <= max_followers <= 5:
        raise EntityError(
            f"ordos_fleet: max_followers = {max_followers!r}; allowed: 0-5 (DESIGN.md: 1+N, N<=5)"
        )
    hub_ids = {h.id for h in ORDOS_HUBS}
    for h in hub_shares:
        if h not in hub_ids:
            raise EntityError(
                f"ordos_fleet: hub_shares names {h!r}; allowed: {', '.join(sorted(hub_ids))}"
            )
    size = 1 + max_followers
    n_sets = math.ceil(n_trucks / size)
    sets_at = _split(n_sets, hub_shares)
    trucks: list[Truck] = []
    drivers: list[Driver] = []
    left = n_trucks
    lead_no = 0
    for hub, n_h in sets_at.items():
        for _ in range(n_h):
            members = min(size, left)
            left -= members
            lead_no += 1
            diesel = diesel_lead_every > 0 and lead_no % diesel_lead_every == 0
            for m in range(members):
                lead = m == 0
                pt = Powertrain.DIESEL if lead and diesel else Powertrain.ELECTRIC
                trucks.append(
                    Truck(
                        id=f"T{len(trucks) + 1:03d}",
                        powertrain=pt,
                        battery_kwh=0.0 if pt == Powertrain.DIESEL else 282.0,
                        soc=start_soc,
                        home_hub=hub,
                        l4_capable=not lead,
                        swappable=pt == Powertrain.ELECTRIC,
                    )
                )
        for shift_name, shift in (("D", DAY_SHIFT), ("N", NIGHT_SHIFT)):
            need = math.ceil(n_h * 1.05)
            qualified = 0
            g = 0
            while qualified < need:
                gsize = (6, 7, 5)[g % 3]
                group = f"{hub}-{shift_name}{g + 1:02d}"
                for k in range(gsize):
                    trainee = gsize == 7 and k == 6
                    drivers.append(
                        Driver(
                            id=f"{group}-{k + 1}",
                            group=group,
                            lead_qualified=not trainee,
                            shift=shift,
                            home_hub=hub,
                        )
                    )
                    qualified += 0 if trainee else 1
                g += 1
    n_l4 = sum(t.l4_capable for t in trucks)
    operators = [
        RemoteOperator(id=f"RO-{name}{k + 1:02d}", shift=shift)
        for name, shift in (("D", DAY_SHIFT), ("N", NIGHT_SHIFT))
        for k in range(math.ceil(n_l4 / DEFAULT_TRUCKS_PER_OPERATOR))
    ]
    fleet = Fleet.build(
        trucks=trucks,
        drivers=drivers,
        stations=ordos_stations(net),
        hubs=ORDOS_HUBS,
        operators=operators,
    )
    fleet.check_sites(net.sites)
    return fleet
