"""Routing on hand-made networks with known answers, and the energy costs against physics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from convoy.road.network import Edge, Node, RoadClass, RoadNetwork, Site, SiteKind
from convoy.road.routing import (
    CLOSED_TOO_STEEP,
    TRUCK_MAX_SPEED_MPS,
    Restrictions,
    Router,
    RoutingError,
    TruckLoad,
    route,
    site_matrix,
)
from convoy.vehicle.energy import (
    DieselPowertrain,
    ElectricPowertrain,
    step_energy_kwh,
)
from convoy.vehicle.truck import GRAVITY_MPS2, TruckSpec, road_load_force_n

LOADED = TruckLoad.loaded()
EMPTY = TruckLoad.empty()
KMH = 1 / 3.6


def _profile(length_m: float, elevations: list[float]) -> dict[str, tuple[float, ...]]:
    stations = np.linspace(0.0, length_m, len(elevations))
    return {"stations_m": tuple(stations), "elevation_m": tuple(elevations)}


def _net(edges: list[Edge], sites: tuple[Site, ...] = ()) -> RoadNetwork:
    ids = sorted({n for e in edges for n in (e.from_node, e.to_node)})
    nodes = [Node(n, lon=0.01 * k, lat=0.0) for k, n in enumerate(ids)]
    return RoadNetwork.build(nodes, edges, sites, name="test")


def _hill_network() -> RoadNetwork:
    """A→B over an 8 % hill (2 km up, 2 km down) or round a flat detour 10 % longer."""
    v = 80 * KMH
    return _net(
        [
            Edge("up", "A", "H", 2000.0, speed_limit_mps=v, **_profile(2000.0, [0.0, 160.0])),
            Edge("down", "H", "B", 2000.0, speed_limit_mps=v, **_profile(2000.0, [160.0, 0.0])),
            Edge("flat1", "A", "F", 2200.0, speed_limit_mps=v),
            Edge("flat2", "F", "B", 2200.0, speed_limit_mps=v),
        ]
    )


def _expected_energy_kwh(edge: Edge, truck: TruckLoad, speed_mps: float) -> float:
    """Independent sum over the edge's elevation segments with the vehicle model's step."""
    pt = truck.powertrain.to_vector()
    s = np.asarray(edge.stations_m) if edge.stations_m else np.array([0.0, edge.length_m])
    z = np.asarray(edge.elevation_m) if edge.elevation_m else np.zeros(2)
    total = 0.0
    for k in range(len(s) - 1):
        seg_m = s[k + 1] - s[k]
        total += step_energy_kwh(
            pt,
            truck.mass_kg,
            speed_mps,
            0.0,
            (z[k + 1] - z[k]) / seg_m,
            1.0,
            truck.body.cd_a_m2,
            truck.body.rolling_resistance,
            truck.ambient_c,
            seg_m / speed_mps,
            truck.body.air_density_kgpm3,
        )
    return total


# --- known routes -------------------------------------------------------------------------------


def test_shortest_differs_from_fastest_when_a_longer_motorway_is_faster() -> None:
    net = _net(
        [
            Edge(
                "road", "A", "B", 10_000.0, speed_limit_mps=40 * KMH, road_class=RoadClass.TERTIARY
            ),
            Edge("m1", "A", "M", 7_000.0, speed_limit_mps=120 * KMH, road_class=RoadClass.MOTORWAY),
            Edge("m2", "M", "B", 7_000.0, speed_limit_mps=120 * KMH, road_class=RoadClass.MOTORWAY),
        ]
    )
    shortest = route(net, "A", "B", "shortest", LOADED)
    fastest = route(net, "A", "B", "fastest", LOADED)
    assert shortest.edge_ids == ("road",) and shortest.node_ids == ("A", "B")
    assert shortest.length_m == 10_000.0
    assert shortest.travel_time_s == pytest.approx(10_000.0 / (40 * KMH))
    assert fastest.edge_ids == ("m1", "m2") and fastest.node_ids == ("A", "M", "B")
    # The truck keeps to its 100 km/h cap on a 120 km/h motorway (art. 78).
    assert fastest.length_m == 14_000.0
    assert fastest.travel_time_s == pytest.approx(14_000.0 / TRUCK_MAX_SPEED_MPS)


def test_least_energy_avoids_a_steep_climb_for_a_loaded_truck() -> None:
    net = _hill_network()
    shortest = route(net, "A", "B", "shortest", LOADED)
    energy = route(net, "A", "B", "energy", LOADED)
    assert shortest.edge_ids == ("up", "down")
    assert energy.edge_ids == ("flat1", "flat2")
    assert energy.length_m == pytest.approx(1.1 * shortest.length_m)
    # The climb costs m g h / eta and regeneration (capped) wins back far less.
    climb_kwh = LOADED.mass_kg * GRAVITY_MPS2 * 160.0 / 0.85 / 3.6e6
    assert shortest.energy_kwh - energy.energy_kwh > 0.4 * climb_kwh


def test_origin_equal_to_destination_is_an_empty_route() -> None:
    r = route(_hill_network(), "A", "A", "energy", LOADED)
    assert r.edge_ids == () and r.node_ids == ("A",)
    assert (r.length_m, r.travel_time_s, r.energy_kwh) == (0.0, 0.0, 0.0)


# --- restrictions ------------------------------------------------------------------------------


def _bridge_network(detour: bool) -> RoadNetwork:
    edges = [
        Edge("bridge", "A", "B", 1_000.0, max_weight_t=30.0),
        Edge("b2", "B", "C", 1_000.0),
    ]
    if detour:
        edges += [Edge("d1", "A", "D", 2_000.0), Edge("d2", "D", "C", 2_000.0)]
    return _net(edges)


def test_weight_limit_reroutes_a_loaded_truck_but_not_an_empty_one() -> None:
    net = _bridge_network(detour=True)
    assert route(net, "A", "C", "shortest", EMPTY).edge_ids == ("bridge", "b2")
    assert route(net, "A", "C", "shortest", LOADED).edge_ids == ("d1", "d2")


def test_weight_limit_without_detour_names_the_limit() -> None:
    net = _bridge_network(detour=False)
    with pytest.raises(RoutingError) as err:
        route(net, "A", "C", "fastest", LOADED)
    msg = str(err.value)
    assert "'A'" in msg and "'C'" in msg and "weight limit" in msg and "bridge" in msg


def test_road_class_restriction_reroutes_or_names_the_classes() -> None:
    net = _net(
        [
            Edge("short", "A", "B", 1_000.0, road_class=RoadClass.SERVICE),
            Edge("long", "A", "B", 3_000.0, road_class=RoadClass.TRUNK),
            Edge("onward", "B", "C", 1_000.0, road_class=RoadClass.SERVICE),
        ]
    )
    no_service = Restrictions(road_classes=frozenset({RoadClass.TRUNK, RoadClass.PRIMARY}))
    assert route(net, "A", "B", "shortest", LOADED).edge_ids == ("short",)
    assert route(net, "A", "B", "shortest", LOADED, no_service).edge_ids == ("long",)
    with pytest.raises(RoutingError, match=r"road-class restriction.*primary, trunk"):
        route(net, "A", "C", "shortest", LOADED, no_service)


def test_closed_edges_and_unreachable_nodes_give_clear_errors() -> None:
    net = _bridge_network(detour=False)
    with pytest.raises(RoutingError, match="closed-edge list"):
        route(net, "A", "C", "shortest", EMPTY, Restrictions(closed_edges=frozenset({"b2"})))
    with pytest.raises(RoutingError, match="no path between them at all"):
        route(net, "C", "A", "shortest", EMPTY)
    with pytest.raises(RoutingError, match="origin node 'X' is not in network"):
        route(net, "X", "A", "shortest", EMPTY)
    with pytest.raises(RoutingError, match="valid: fastest, shortest, energy"):
        route(net, "A", "C", "cheapest", EMPTY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'gravel' is not a road class"):
        Restrictions(road_classes=frozenset({"gravel"}))  # type: ignore[arg-type]


def test_a_grade_beyond_the_trucks_power_closes_the_edge_for_it_only() -> None:
    # Loaded: 49 t x g x 15 % = 71 kN > 60 kN of full-power start force; empty: 26 kN.
    net = _net([Edge("wall", "A", "B", 500.0, **_profile(500.0, [0.0, 75.0]))])
    costs = Router(net).edge_costs(LOADED)
    assert costs.closed_by[0] == CLOSED_TOO_STEEP and math.isinf(costs.travel_time_s[0])
    with pytest.raises(RoutingError, match="grade the truck's power cannot climb"):
        route(net, "A", "B", "fastest", LOADED)
    assert route(net, "A", "B", "fastest", EMPTY).edge_ids == ("wall",)


# --- costs against physics ---------------------------------------------------------------------


def test_flat_edge_energy_matches_road_load_over_drivetrain_efficiency() -> None:
    length_m, v = 10_000.0, 60 * KMH
    net = _net([Edge("flat", "A", "B", length_m, speed_limit_mps=v)])
    body, pt = TruckSpec(), ElectricPowertrain()
    force_n = road_load_force_n(
        LOADED.mass_kg, v, 0.0, 1.0, body.cd_a_m2, body.rolling_resistance, body.air_density_kgpm3
    )
    time_s = length_m / v
    expected_kwh = (
        force_n * length_m / pt.drivetrain_efficiency + pt.aux_kw * 1e3 * time_s
    ) / 3.6e6
    r = route(net, "A", "B", "energy", LOADED)
    assert r.travel_time_s == pytest.approx(time_s)
    assert r.energy_kwh == pytest.approx(expected_kwh, rel=1e-12)


def test_climbing_speed_is_where_full_power_meets_the_road_load() -> None:
    net = _hill_network()
    costs = Router(net).edge_costs(LOADED)
    v = 2000.0 / costs.travel_time_s[costs.edge_ids.index("up")]
    body, pt = TruckSpec(), ElectricPowertrain()
    grade = 160.0 / 2000.0
    force_n = road_load_force_n(
        LOADED.mass_kg, v, grade, 1.0, body.cd_a_m2, body.rolling_resistance, body.air_density_kgpm3
    )
    wheel_kw = pt.motor_power_kw * pt.drivetrain_efficiency
    assert v < 80 * KMH
    assert force_n * v / 1e3 == pytest.approx(wheel_kw, rel=1e-9)


@pytest.mark.parametrize("powertrain", [ElectricPowertrain(), DieselPowertrain()])
def test_route_energy_is_the_sum_over_its_edges_and_their_grade_segments(
    powertrain: ElectricPowertrain | DieselPowertrain,
) -> None:
    v = 60 * KMH  # low enough that full power holds it on every segment below
    rolling = [0.0, 25.0, 10.0, 35.0, 35.0, 0.0]  # up to 2.5 % up and 3.5 % down
    edges = [
        Edge("e1", "A", "B", 5_000.0, speed_limit_mps=v, **_profile(5_000.0, rolling)),
        Edge("e2", "B", "C", 3_000.0, speed_limit_mps=v, **_profile(3_000.0, [5.0, -20.0])),
        Edge("e3", "C", "D", 2_000.0, speed_limit_mps=v),
    ]
    net = _net(edges)
    truck = TruckLoad(49_000.0, powertrain)
    r = route(net, "A", "D", "energy", truck)
    expected = [_expected_energy_kwh(e, truck, v) for e in edges]
    assert r.edge_ids == ("e1", "e2", "e3")
    assert r.energy_kwh == pytest.approx(sum(expected), rel=1e-12)
    costs = Router(net).edge_costs(truck)
    assert costs.energy_kwh == pytest.approx(expected, rel=1e-12)
    # The mean grade alone would miss the capped regeneration on e1's steep descent.
    mean_only = Edge("m", "A", "B", 5_000.0, speed_limit_mps=v)  # e1 starts and ends at 0 m
    assert costs.energy_kwh[0] != pytest.approx(_expected_energy_kwh(mean_only, truck, v))


def test_empty_truck_uses_less_energy_than_loaded_on_the_same_route() -> None:
    net = _hill_network()
    for path in (("up", "down"), ("flat1", "flat2")):
        closed = frozenset(net.edges) - frozenset(path)
        keep = Restrictions(closed_edges=closed)
        loaded = route(net, "A", "B", "shortest", LOADED, keep)
        empty = route(net, "A", "B", "shortest", EMPTY, keep)
        assert loaded.edge_ids == empty.edge_ids == path
        assert 0.0 < empty.energy_kwh < loaded.energy_kwh


# --- negative energies: Johnson potentials -----------------------------------------------------


def test_a_regenerating_descent_is_negative_and_the_search_uses_it() -> None:
    # From the hilltop: straight down (regenerates) or a flat 2 km then a gentler descent.
    v = 60 * KMH
    net = _net(
        [
            Edge("steep", "H", "B", 3_000.0, speed_limit_mps=v, **_profile(3_000.0, [150.0, 0.0])),
            Edge(
                "ridge", "H", "R", 2_000.0, speed_limit_mps=v, **_profile(2_000.0, [150.0, 150.0])
            ),
            Edge("gentle", "R", "B", 3_000.0, speed_limit_mps=v, **_profile(3_000.0, [150.0, 0.0])),
        ]
    )
    costs = Router(net).edge_costs(LOADED)
    assert costs.energy_kwh[0] < 0.0
    r = route(net, "H", "B", "energy", LOADED)
    assert r.edge_ids == ("steep",) and r.energy_kwh < 0.0


def _all_simple_path_energies(
    net: RoadNetwork, costs: np.ndarray, src: str, dst: str
) -> list[float]:
    out: dict[str, list[tuple[str, int]]] = {}
    for k, e in enumerate(net.edges.values()):
        out.setdefault(e.from_node, []).append((e.to_node, k))
    found: list[float] = []

    def walk(node: str, seen: set[str], total: float) -> None:
        if node == dst:
            found.append(total)
            return
        for nxt, k in out.get(node, []):
            if nxt not in seen:
                walk(nxt, seen | {nxt}, total + costs[k])

    walk(src, {src}, 0.0)
    return found


@pytest.mark.parametrize("seed", range(6))
def test_least_energy_equals_brute_force_on_random_hilly_networks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 7
    height = rng.uniform(0.0, 120.0, n)
    edges = []
    for a, b in itertools.permutations(range(n), 2):
        if rng.random() < 0.45:
            length = float(rng.uniform(1_500.0, 4_000.0))
            mid = 0.5 * (height[a] + height[b]) + rng.uniform(-20.0, 20.0)
            edges.append(
                Edge(
                    f"{a}-{b}",
                    f"n{a}",
                    f"n{b}",
                    length,
                    speed_limit_mps=60 * KMH,
                    **_profile(length, [height[a], mid, height[b]]),
                )
            )
    net = _net(edges)
    router = Router(net)
    costs = router.edge_costs(LOADED)
    assert (costs.energy_kwh < 0).any()
    order = [net.edges[e] for e in costs.edge_ids]
    assert [e.id for e in order] == list(net.edges)
    for src, dst in itertools.permutations(sorted(net.nodes), 2):
        energies = _all_simple_path_energies(net, costs.energy_kwh, src, dst)
        if not energies:
            with pytest.raises(RoutingError):
                router.route(src, dst, "energy", LOADED)
            continue
        r = router.route(src, dst, "energy", LOADED)
        assert r.energy_kwh == pytest.approx(min(energies), abs=1e-9)


def test_a_loop_that_returns_energy_is_reported_as_a_model_error() -> None:
    # Inconsistent data: both directions descend 100 m.
    net = _net(
        [
            Edge("ab", "A", "B", 1_500.0, **_profile(1_500.0, [100.0, 0.0])),
            Edge("ba", "B", "A", 1_500.0, **_profile(1_500.0, [100.0, 0.0])),
        ]
    )
    with pytest.raises(RoutingError, match="negative cycle"):
        route(net, "A", "B", "energy", LOADED)


# --- all pairs between sites -------------------------------------------------------------------


def test_site_matrix_agrees_with_single_routes_and_marks_unreachable_pairs() -> None:
    base = _hill_network()
    extra = [Edge("back", "B", "A", 4_400.0), Edge("spur", "B", "S", 1_000.0)]
    edges = [*base.edges.values(), *extra]
    sites = (
        Site("mine", SiteKind.COAL_MINE, "Mine", "矿", "A", 0.0, 0.0),
        Site("plant", SiteKind.POWER_PLANT, "Plant", "电厂", "B", 0.0, 0.0),
        Site("depot", SiteKind.PLATOON_HUB, "Depot", "枢纽", "S", 0.0, 0.0),
    )
    net = _net(edges, sites)
    m = site_matrix(net, ["mine", "plant", "depot"], "energy", LOADED)
    assert np.all(np.diag(m.length_m) == 0.0)
    for i, a in enumerate(m.site_ids):
        for j, b in enumerate(m.site_ids):
            if i == j:
                continue
            origin, dest = net.sites[a].node, net.sites[b].node
            try:
                r = route(net, origin, dest, "energy", LOADED)
            except RoutingError:
                assert not m.reachable[i, j] and math.isinf(m.energy_kwh[i, j])
                assert (a, b) not in m.routes
                continue
            assert m.routes[(a, b)] == r
            assert (m.length_m[i, j], m.travel_time_s[i, j], m.energy_kwh[i, j]) == (
                r.length_m,
                r.travel_time_s,
                r.energy_kwh,
            )
    assert not m.reachable[2, 0]  # nothing leaves the depot spur
    with pytest.raises(RoutingError, match="site 'nowhere' is not in network"):
        site_matrix(net, ["mine", "nowhere"], "energy", LOADED)
