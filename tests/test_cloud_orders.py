"""The built-in Ordos day and fleet, and the entities' input checks."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from convoy.cloud.entities import (
    Driver,
    EntityError,
    Fleet,
    HoursOfService,
    Hub,
    Order,
    Powertrain,
    Station,
    TimeWindow,
    Truck,
    check_orders,
)
from convoy.cloud.orders import (
    DAY_SHIFT,
    NIGHT_SHIFT,
    OPERATING_DAY,
    ORDOS_LANES,
    ordos_day_orders,
    ordos_fleet,
)
from convoy.road.network import SiteKind
from convoy.road.ordos import ordos_network

NET = ordos_network()
H = 3600.0


def _order(**over: object) -> Order:
    base: dict[str, object] = dict(
        id="o1",
        shipper="mine",
        cargo="coal",
        origin_site="haerwusu-mine",
        destination_site="dalu-park",
        tonnes=100.0,
        pickup=TimeWindow(8 * H, 12 * H),
        delivery=TimeWindow(8 * H, 16 * H),
    )
    base.update(over)
    return Order(**base)  # type: ignore[arg-type]


def test_orders_run_from_mines_to_consumers_of_the_network() -> None:
    orders = ordos_day_orders(0)
    consumers = {SiteKind.POWER_PLANT, SiteKind.CHEMICAL_PARK, SiteKind.RAIL_LOADING}
    for o in orders:
        origin, dest = NET.sites[o.origin_site], NET.sites[o.destination_site]
        assert dest.kind in consumers
        if o.cargo == "coal":
            assert origin.kind == SiteKind.COAL_MINE
    assert check_orders(orders, NET.sites) == orders
    assert Counter(o.cargo for o in orders).most_common(1)[0][0] == "coal"


def test_day_tonnage_is_a_few_round_trips_of_the_fleet() -> None:
    """400 trucks x 3 trips x 31 t = 37,200 t, split by lane shares (each rounded to 10 t)."""
    orders = ordos_day_orders(0)
    total = sum(o.tonnes for o in orders)
    assert abs(total - 37_200.0) <= 10.0 * len(ORDOS_LANES)
    for ln in ORDOS_LANES:
        lane_t = sum(
            o.tonnes
            for o in orders
            if (o.origin_site, o.destination_site) == (ln.origin_site, ln.destination_site)
        )
        assert lane_t == pytest.approx(ln.share * 37_200.0, abs=5.0)
    assert all(100.0 <= o.tonnes <= 1_300.0 for o in orders)
    assert sum(ln.share for ln in ORDOS_LANES) == pytest.approx(1.0)


def test_windows_lie_in_the_operating_day_and_are_consistent() -> None:
    for o in ordos_day_orders(4):
        assert OPERATING_DAY.start_s <= o.pickup.start_s < o.pickup.end_s <= OPERATING_DAY.end_s
        assert o.delivery.start_s == o.pickup.start_s
        assert o.pickup.end_s <= o.delivery.end_s <= OPERATING_DAY.end_s
        assert o.pickup.start_s % 900.0 == 0.0  # quarter hours
        assert o.priority in (0, 1)


def test_orders_are_seeded() -> None:
    assert ordos_day_orders(3) == ordos_day_orders(3)
    assert ordos_day_orders(3) != ordos_day_orders(4)
    half = ordos_day_orders(0, n_trucks=200)
    assert sum(o.tonnes for o in half) == pytest.approx(18_600.0, abs=10.0 * len(ORDOS_LANES))


def test_default_fleet_matches_the_operator_figures() -> None:
    """DESIGN.md: >400 trucks, mostly electric L4 followers; drivers in groups of 5-7; the Otog
    centre's 110 charging posts."""
    fleet = ordos_fleet()
    trucks = list(fleet.trucks.values())
    assert len(trucks) == 400
    assert sum(t.l4_capable for t in trucks) == 320  # 80 lead trucks for 1+4
    assert sum(t.powertrain == Powertrain.ELECTRIC for t in trucks) == 392  # 8 diesel leads
    assert all(not t.l4_capable for t in trucks if t.powertrain == Powertrain.DIESEL)
    groups = Counter(d.group for d in fleet.drivers.values())
    assert set(groups.values()) <= {5, 6, 7}
    # Per hub and shift: at least one qualified driver per crew of 1 + 4.
    for hub in fleet.hubs:
        crews = math.ceil(sum(t.home_hub == hub for t in trucks) / 5)
        for shift in (DAY_SHIFT, NIGHT_SHIFT):
            qualified = sum(
                d.lead_qualified and d.home_hub == hub and d.shift == shift
                for d in fleet.drivers.values()
            )
            assert qualified >= crews
    assert fleet.stations["kargobot-otog-charging"].charge_posts == 110
    for st in fleet.stations.values():
        assert NET.sites[st.site_id].kind in (SiteKind.CHARGING_STATION, SiteKind.SWAP_STATION)
    for hub in fleet.hubs.values():
        assert hub.site_id in NET.sites
    # 1 operator per 10 L4 trucks, per shift.
    assert len(fleet.operators) == 2 * 32


def test_fleet_for_1_plus_5() -> None:
    fleet = ordos_fleet(120, max_followers=5)
    assert sum(not t.l4_capable for t in fleet.trucks.values()) == 20
    with pytest.raises(EntityError, match="max_followers = 6"):
        ordos_fleet(120, max_followers=6)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"destination_site": "haerwusu-mine"}, r"destination_site = 'haerwusu-mine'.*other than"),
        ({"cargo": "gold"}, r"cargo = 'gold'; allowed: 'coal', 'coke'"),
        ({"tonnes": -5.0}, r"tonnes = -5.0; allowed: a finite number > 0"),
        ({"priority": 7}, r"priority = 7; allowed: 0 \(normal\), 1 \(high\) or 2 \(urgent\)"),
        ({"delivery": TimeWindow(1 * H, 2 * H)}, r"delivery .* ending at or after pickup"),
    ],
)
def test_bad_orders_name_field_value_and_allowed(over: dict[str, object], match: str) -> None:
    with pytest.raises(EntityError, match=match):
        _order(**over)


def test_other_entities_check_their_fields() -> None:
    with pytest.raises(EntityError, match=r"TimeWindow.end_s = 1.0; allowed: >= start_s"):
        TimeWindow(2.0, 1.0)
    with pytest.raises(EntityError, match=r"Truck 'T1'.soc = 1.5; allowed: a number in \[0, 1\]"):
        Truck("T1", "electric", soc=1.5, home_hub="h")
    with pytest.raises(EntityError, match=r"powertrain = 'steam'; allowed: 'electric', 'diesel'"):
        Truck("T1", "steam", home_hub="h")  # type: ignore[arg-type]
    with pytest.raises(EntityError, match="charge_posts = 0"):
        Station("s", "site")
    hub = Hub("h", "kangbashi-hub")
    t = Truck("T1", Powertrain.ELECTRIC, home_hub="h")
    with pytest.raises(EntityError, match="'T1' appears twice"):
        Fleet.build([t, t], [], hubs=[hub])
    with pytest.raises(EntityError, match=r"home_hub = 'nowhere'; allowed: a hub id \(h\)"):
        Fleet.build([Truck("T2", "electric", home_hub="nowhere")], [], hubs=[hub])
    with pytest.raises(EntityError, match="origin_site = 'atlantis'"):
        check_orders([_order(origin_site="atlantis")], NET.sites)
    with pytest.raises(EntityError, match="'o1' appears twice"):
        check_orders([_order(), _order()], NET.sites)
    with pytest.raises(EntityError, match=r"shift = .* at most 24 h"):
        Driver("d", "g", True, TimeWindow(0.0, 25 * H), "h")


def test_hours_of_service_rules() -> None:
    """Art. 62(7): 4 h continuous; the Beidou alarm: 2 h when driving touches 22:00-06:00."""
    hos = HoursOfService()
    assert hos.continuous_limit_s(8 * H, 11 * H) == 4 * H
    assert hos.continuous_limit_s(20 * H, 22.5 * H) == 2 * H  # runs into the night
    assert hos.continuous_limit_s(26 * H, 27 * H) == 2 * H  # 02:00-03:00 next day
    assert hos.continuous_limit_s(30 * H, 31 * H) == 4 * H  # 06:00-07:00 next day
    assert hos.max_daily_driving_s == 8 * H
    assert hos.min_rest_s == 20 * 60
    with pytest.raises(EntityError, match="max_continuous_night_s"):
        HoursOfService(max_continuous_night_s=5 * H)
