"""Truck routing: fastest, shortest and least-energy routes under road-class and weight limits.

Costs come from the truck model, per edge and per elevation segment, for one truck load:

- ``shortest``: the edge length [m].
- ``fastest``: free-flow time [s]. On each grade segment the truck drives at the lowest of the
  speed limit, its own legal cap and the speed its full power can hold on that grade
  (:func:`convoy.vehicle.energy.max_traction_accel_mps2` = 0), so a loaded truck crawls up a
  steep climb. Junction delays, signals and acceleration are left out.
- ``energy``: battery (electric) or fuel (diesel) energy [kWh] at that speed, from
  :func:`convoy.vehicle.energy.trajectory_energy_kwh` over every segment of the edge's grade
  profile (not only its mean grade: regeneration is capped, so a profile's steep part saves
  less than its mean suggests). Auxiliaries are included.

Regeneration makes a descending edge's energy negative for an electric truck. Dijkstra needs
non-negative weights, but clamping them to zero would hide exactly the saving that makes a
route downhill cheaper, so the energy search uses Johnson's reweighting instead: node
potentials ``phi`` from one Bellman-Ford pass (a virtual source joined to every node at cost 0)
turn each weight into ``w + phi[from] - phi[to] >= 0``, which changes every path between the
same two nodes by the same constant and so keeps the optimum. A closed loop cannot return
energy (regeneration recovers less than climbing costs and auxiliaries always draw), so a
negative cycle is a model error and is reported as one.

The network converts once into a :class:`Router` (arrays and grade segments); each truck and
restriction set is costed once and cached. Searches run as compiled Numba kernels over the
``NetworkArrays`` CSR successor list.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
from numba import njit
from numpy.typing import NDArray

from convoy.road.network import Edge, RoadClass, RoadNetwork
from convoy.vehicle.energy import (
    DieselPowertrain,
    ElectricPowertrain,
    max_traction_accel_mps2,
    trajectory_energy_kwh,
)
from convoy.vehicle.truck import TruckSpec

Objective = Literal["fastest", "shortest", "energy"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)

# China's Road Traffic Safety Law Implementing Regulations (道路交通安全法实施条例, 2004), art. 78:
# on expressways vehicles other than small passenger cars may not exceed 100 km/h.
TRUCK_MAX_SPEED_MPS = 100.0 / 3.6

# Why an edge is closed to a truck, in ``EdgeCosts.closed_by``.
OPEN = 0
CLOSED_ROAD_CLASS = 1
CLOSED_WEIGHT_LIMIT = 2
CLOSED_BY_CALLER = 3
CLOSED_TOO_STEEP = 4
_REASONS = {
    CLOSED_ROAD_CLASS: "road-class restriction",
    CLOSED_WEIGHT_LIMIT: "weight limit",
    CLOSED_BY_CALLER: "closed-edge list",
    CLOSED_TOO_STEEP: "grade the truck's power cannot climb",
}

# Bisection steps for the sustained climbing speed: 2**-50 of the speed limit, far below 1 mm/s.
_BISECTION_STEPS = 50


class RoutingError(ValueError):
    """No route exists, or a routing request names something unknown; the message says what."""


@dataclass(frozen=True, slots=True)
class TruckLoad:
    """The truck a route is planned for.

    Attributes:
        mass_kg: Combination mass on this trip [kg]; ``TruckSpec`` gives 49,000 loaded and
            18,000 empty. It is also the gross weight checked against weight limits.
        powertrain: Electric or diesel powertrain record.
        body: Drag area, rolling resistance and air density.
        ambient_c: Ambient temperature [°C] (heating and cold-battery losses).
        max_speed_mps: The truck's own speed cap [m/s]; the lower of it and the speed
            limit applies.
    """

    mass_kg: float
    powertrain: ElectricPowertrain | DieselPowertrain = field(default_factory=ElectricPowertrain)
    body: TruckSpec = field(default_factory=TruckSpec)
    ambient_c: float = 20.0
    max_speed_mps: float = TRUCK_MAX_SPEED_MPS

    def __post_init__(self) -> None:
        """Reject impossible values with a message naming the field."""
        if not (self.mass_kg > 0.0 and math.isfinite(self.mass_kg)):
            raise ValueError(f"TruckLoad.mass_kg = {self.mass_kg!r}; must be a finite number > 0")
        if not (self.max_speed_mps > 0.0 and math.isfinite(self.max_speed_mps)):
            raise ValueError(
                f"TruckLoad.max_speed_mps = {self.max_speed_mps!r}; must be a finite number > 0"
            )
        if not math.isfinite(self.ambient_c):
            raise ValueError(f"TruckLoad.ambient_c = {self.ambient_c!r}; must be finite")

    @classmethod
    def loaded(
        cls,
        body: TruckSpec | None = None,
        powertrain: ElectricPowertrain | DieselPowertrain | None = None,
    ) -> TruckLoad:
        """A fully loaded truck (``body.gross_mass_loaded_kg``)."""
        spec = body or TruckSpec()
        return cls(spec.gross_mass_loaded_kg, powertrain or ElectricPowertrain(), spec)

    @classmethod
    def empty(
        cls,
        body: TruckSpec | None = None,
        powertrain: ElectricPowertrain | DieselPowertrain | None = None,
    ) -> TruckLoad:
        """An empty truck (``body.empty_mass_kg``)."""
        spec = body or TruckSpec()
        return cls(spec.empty_mass_kg, powertrain or ElectricPowertrain(), spec)

    @property
    def mass_t(self) -> float:
        """Gross weight [t]."""
        return self.mass_kg / 1_000.0


@dataclass(frozen=True, slots=True)
class Restrictions:
    """What a route may not use, beyond the weight limits the truck's mass already rules out.

    Attributes:
        road_classes: Road classes the route may use (default: all). Strings are accepted
            and converted to ``RoadClass``.
        closed_edges: Edge ids closed for this trip (works, weather, accidents).
    """

    road_classes: frozenset[RoadClass] = frozenset(RoadClass)
    closed_edges: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        """Convert names to ``RoadClass``, rejecting unknown ones with the valid list."""
        classes = set()
        for c in self.road_classes:
            try:
                classes.add(RoadClass(c))
            except ValueError:
                valid = ", ".join(rc.value for rc in RoadClass)
                raise ValueError(
                    f"Restrictions.road_classes: {c!r} is not a road class; valid: {valid}"
                ) from None
        object.__setattr__(self, "road_classes", frozenset(classes))
        object.__setattr__(self, "closed_edges", frozenset(self.closed_edges))


@dataclass(frozen=True, slots=True)
class Route:
    """A route between two nodes.

    Attributes:
        origin, destination: node ids.
        objective: what the route minimises.
        edge_ids: edges in driving order; empty when origin is the destination.
        node_ids: nodes in driving order, origin and destination included.
        length_m: total length [m].
        travel_time_s: free-flow travel time [s].
        energy_kwh: energy drawn [kWh] (battery, or diesel fuel energy); negative when a
            descent regenerates more than the route consumes.
    """

    origin: str
    destination: str
    objective: Objective
    edge_ids: tuple[str, ...]
    node_ids: tuple[str, ...]
    length_m: float
    travel_time_s: float
    energy_kwh: float


@dataclass(frozen=True, slots=True)
class EdgeCosts:
    """Every edge's cost for one truck and restriction set, one row per edge.

    Rows follow ``NetworkArrays.edge_ids``.

    Attributes:
        edge_ids: (E,) edge ids.
        length_m: (E,) float64 length [m].
        travel_time_s: (E,) float64 free-flow time [s]; inf where the truck stalls.
        energy_kwh: (E,) float64 energy [kWh]; negative where regeneration wins; inf where
            the truck stalls.
        closed_by: (E,) int8 ``OPEN`` (0) or why the edge is closed: ``CLOSED_ROAD_CLASS``,
            ``CLOSED_WEIGHT_LIMIT``, ``CLOSED_BY_CALLER``, ``CLOSED_TOO_STEEP``.
    """

    edge_ids: tuple[str, ...]
    length_m: NDArray[np.float64]
    travel_time_s: NDArray[np.float64]
    energy_kwh: NDArray[np.float64]
    closed_by: NDArray[np.int8]

    @property
    def is_open(self) -> NDArray[np.bool_]:
        """(E,) bool: edges this truck may drive."""
        return np.asarray(self.closed_by == OPEN)

    def weight(self, objective: Objective) -> NDArray[np.float64]:
        """(E,) the per-edge cost the objective minimises."""
        if objective == "shortest":
            return self.length_m
        if objective == "fastest":
            return self.travel_time_s
        return self.energy_kwh


@dataclass(frozen=True, slots=True)
class RouteMatrix:
    """Best routes between every pair of a list of sites, for dispatch.

    Attributes:
        site_ids: (k,) site ids; row i is the origin, column j the destination.
        objective: what each route minimises.
        length_m, travel_time_s, energy_kwh: (k, k) float64 totals of the chosen route;
            0 on the diagonal, inf where no route exists.
        reachable: (k, k) bool.
        routes: the routes for every reachable pair with distinct sites, keyed by
            ``(origin_site, destination_site)``.
    """

    site_ids: tuple[str, ...]
    objective: Objective
    length_m: NDArray[np.float64]
    travel_time_s: NDArray[np.float64]
    energy_kwh: NDArray[np.float64]
    reachable: NDArray[np.bool_]
    routes: Mapping[tuple[str, str], Route]


# --- compiled kernels --------------------------------------------------------------------------


@njit(cache=True)
def _sustained_speed_mps(
    pt: NDArray[np.float64],
    mass_kg: float,
    cap_mps: NDArray[np.float64],
    grade: NDArray[np.float64],
    cd_a_m2: float,
    crr: float,
    air_density_kgpm3: float,
) -> NDArray[np.float64]:
    """(S,) highest steady speed <= cap on each grade segment; 0 where full power stalls."""
    out = np.empty(grade.size, dtype=np.float64)
    for i in range(grade.size):
        hi = cap_mps[i]
        if (
            max_traction_accel_mps2(pt, mass_kg, hi, grade[i], 1.0, cd_a_m2, crr, air_density_kgpm3)
            >= 0.0
        ):
            out[i] = hi
            continue
        if (
            max_traction_accel_mps2(
                pt, mass_kg, 0.0, grade[i], 1.0, cd_a_m2, crr, air_density_kgpm3
            )
            <= 0.0
        ):
            out[i] = 0.0
            continue
        # Spare acceleration falls with speed (power / v falls, drag rises): bisect for zero.
        lo = 0.0
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            accel = max_traction_accel_mps2(
                pt, mass_kg, mid, grade[i], 1.0, cd_a_m2, crr, air_density_kgpm3
            )
            if accel >= 0.0:
                lo = mid
            else:
                hi = mid
        out[i] = lo
    return out


@njit(cache=True)
def _potentials(
    n_nodes: int,
    edge_from: NDArray[np.int32],
    edge_to: NDArray[np.int32],
    weight: NDArray[np.float64],
    is_open: NDArray[np.bool_],
) -> tuple[NDArray[np.float64], bool]:
    """Bellman-Ford from a virtual source joined to every node at cost 0.

    Returns the potentials and whether they converged (False: a negative cycle).
    """
    phi = np.zeros(n_nodes, dtype=np.float64)
    for _ in range(n_nodes + 1):
        changed = False
        for e in range(weight.size):
            if is_open[e]:
                cand = phi[edge_from[e]] + weight[e]
                if cand < phi[edge_to[e]]:
                    phi[edge_to[e]] = cand
                    changed = True
        if not changed:
            return phi, True
    return phi, False


@njit(cache=True)
def _dijkstra(
    succ_ptr: NDArray[np.int32],
    succ_edge: NDArray[np.int32],
    edge_to: NDArray[np.int32],
    weight: NDArray[np.float64],
    is_open: NDArray[np.bool_],
    source: int,
    target: int,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Single-source Dijkstra over the CSR list; stops at ``target`` (-1: settle all).

    Returns (V,) distances (inf if unreached) and (V,) the edge row reaching each node (-1).
    """
    n = succ_ptr.size - 1
    dist = np.full(n, np.inf)
    pred = np.full(n, -1, dtype=np.int64)
    done = np.zeros(n, dtype=np.bool_)
    dist[source] = 0.0
    heap = [(0.0, np.int64(source))]
    while len(heap) > 0:
        d, u = heapq.heappop(heap)
        if done[u]:
            continue
        done[u] = True
        if u == target:
            break
        for k in range(succ_ptr[u], succ_ptr[u + 1]):
            e = succ_edge[k]
            if not is_open[e]:
                continue
            v = np.int64(edge_to[e])
            nd = d + weight[e]
            if nd < dist[v]:
                dist[v] = nd
                pred[v] = e
                heapq.heappush(heap, (nd, v))
    return dist, pred


# --- the router --------------------------------------------------------------------------------


def _edge_segments(edge: Edge) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(lengths [m], grades) of an edge's elevation segments, lengths summing to ``length_m``.

    Station spacing is scaled to ``length_m`` so that energy and distance agree when a
    profile was sampled along a slightly different line; zero-length segments are dropped.
    """
    if len(edge.stations_m) >= 2:
        seg = np.diff(np.asarray(edge.stations_m, dtype=np.float64))
        span = float(edge.stations_m[-1] - edge.stations_m[0])
        keep = seg > 0.0
        if span > 0.0 and keep.any():
            return seg[keep] * (edge.length_m / span), edge.grades()[keep]
    return np.array([edge.length_m]), np.zeros(1)


class Router:
    """A road network prepared for routing: arrays and grade segments, built once.

    Costs per truck load and restriction set are cached, so many queries for the same
    fleet cost one costing pass.

    Args:
        network: the road network.
    """

    def __init__(self, network: RoadNetwork) -> None:
        self.network = network
        self.arrays = network.to_arrays()
        self._row = {nid: k for k, nid in enumerate(self.arrays.node_ids)}
        edges = [network.edges[e] for e in self.arrays.edge_ids]
        lengths, grades, rows = [], [], []
        for k, e in enumerate(edges):
            seg_len, seg_grade = _edge_segments(e)
            lengths.append(seg_len)
            grades.append(seg_grade)
            rows.append(np.full(seg_len.size, k, dtype=np.int64))
        self._seg_length_m = np.concatenate(lengths) if edges else np.zeros(0)
        self._seg_grade = np.concatenate(grades) if edges else np.zeros(0)
        self._seg_edge = np.concatenate(rows) if edges else np.zeros(0, dtype=np.int64)
        self._edge_max_weight_t = np.array(
            [math.inf if e.max_weight_t is None else e.max_weight_t for e in edges],
            dtype=np.float64,
        )
        self._costs: dict[tuple[TruckLoad, Restrictions], EdgeCosts] = {}
        self._weights: dict[tuple[TruckLoad, Restrictions, str], NDArray[np.float64]] = {}

    # --- costs ---------------------------------------------------------------------------------

    def edge_costs(self, truck: TruckLoad, restrictions: Restrictions | None = None) -> EdgeCosts:
        """Length, time and energy of every edge for this truck, and which are closed to it."""
        restrictions = restrictions or Restrictions()
        key = (truck, restrictions)
        if key not in self._costs:
            self._costs[key] = self._compute_costs(truck, restrictions)
        return self._costs[key]

    def _compute_costs(self, truck: TruckLoad, restrictions: Restrictions) -> EdgeCosts:
        arr = self.arrays
        n_edges = len(arr.edge_ids)
        pt = truck.powertrain.to_vector()
        body = truck.body
        # Segment speeds: limit, truck cap, and what full power holds on the grade.
        cap_mps = np.minimum(arr.edge_speed_mps[self._seg_edge], truck.max_speed_mps)
        speed_mps = _sustained_speed_mps(
            pt,
            truck.mass_kg,
            np.ascontiguousarray(cap_mps),
            self._seg_grade,
            body.cd_a_m2,
            body.rolling_resistance,
            body.air_density_kgpm3,
        )
        stalled = speed_mps <= 0.0
        seg_time_s = np.where(
            stalled, np.inf, self._seg_length_m / np.where(stalled, 1.0, speed_mps)
        )
        # Segment energy: draw over one second at steady speed, times the segment's duration.
        kwh_per_s = trajectory_energy_kwh(
            pt,
            truck.mass_kg,
            speed_mps,
            0.0,
            self._seg_grade,
            1.0,
            body.cd_a_m2,
            body.rolling_resistance,
            truck.ambient_c,
            1.0,
            body.air_density_kgpm3,
        )
        seg_energy_kwh = np.where(stalled, np.inf, kwh_per_s * np.where(stalled, 0.0, seg_time_s))
        # Edge totals.
        time_s = _edge_sum(self._seg_edge, seg_time_s, n_edges)
        energy_kwh = _edge_sum(self._seg_edge, seg_energy_kwh, n_edges)
        edge_stalled = (
            np.bincount(self._seg_edge, weights=stalled.astype(np.float64), minlength=n_edges) > 0
        )
        # Closures; where several apply, the later assignment names it.
        classes = list(RoadClass)
        class_ok = np.array([c in restrictions.road_classes for c in classes], dtype=bool)
        closed_by = np.zeros(n_edges, dtype=np.int8)
        closed_by[edge_stalled] = CLOSED_TOO_STEEP
        closed_by[np.array([e in restrictions.closed_edges for e in arr.edge_ids], dtype=bool)] = (
            CLOSED_BY_CALLER
        )
        closed_by[truck.mass_t > self._edge_max_weight_t] = CLOSED_WEIGHT_LIMIT
        closed_by[~class_ok[arr.edge_class.astype(np.int64)]] = CLOSED_ROAD_CLASS
        time_s[edge_stalled] = np.inf
        energy_kwh[edge_stalled] = np.inf
        length_m = arr.edge_length_m.copy()
        for a in (length_m, time_s, energy_kwh, closed_by):
            a.flags.writeable = False  # cached and shared between queries
        return EdgeCosts(
            edge_ids=arr.edge_ids,
            length_m=length_m,
            travel_time_s=time_s,
            energy_kwh=energy_kwh,
            closed_by=closed_by,
        )

    # --- searches ------------------------------------------------------------------------------

    def route(
        self,
        origin_node: str,
        dest_node: str,
        objective: Objective,
        truck: TruckLoad,
        restrictions: Restrictions | None = None,
    ) -> Route:
        """The best route from one node to another.

        Args:
            origin_node, dest_node: node ids.
            objective: ``"fastest"``, ``"shortest"`` or ``"energy"``.
            truck: the truck and its load.
            restrictions: road classes allowed and edges closed; default none.

        Raises:
            RoutingError: unknown node or objective, or no route under the restrictions
                (the message names the restriction that cut it).
        """
        _check_objective(objective)
        src, dst = self._node_row(origin_node, "origin"), self._node_row(dest_node, "destination")
        costs = self.edge_costs(truck, restrictions)
        weight = self._search_weight(truck, restrictions, objective)
        _, pred = _dijkstra(
            self.arrays.succ_ptr,
            self.arrays.succ_edge,
            self.arrays.edge_to,
            weight,
            costs.is_open,
            src,
            dst,
        )
        if src != dst and pred[dst] < 0:
            raise RoutingError(
                self._no_route_message(origin_node, dest_node, truck, restrictions, costs)
            )
        return self._build_route(origin_node, dest_node, objective, costs, pred, src, dst)

    def site_matrix(
        self,
        site_ids: Sequence[str],
        objective: Objective,
        truck: TruckLoad,
        restrictions: Restrictions | None = None,
    ) -> RouteMatrix:
        """Best routes between every ordered pair of sites (one search per origin).

        Pairs without a route get inf totals and no entry in ``routes``; they do not raise.

        Raises:
            RoutingError: unknown site or objective, or a site listed twice.
        """
        _check_objective(objective)
        sites = tuple(site_ids)
        for s in sites:
            if s not in self.network.sites:
                raise RoutingError(f"site {s!r} is not in network {self.network.name!r}")
        if len(set(sites)) != len(sites):
            raise RoutingError(f"site_ids lists a site twice: {list(sites)}")
        nodes = [self.network.sites[s].node for s in sites]
        k = len(sites)
        costs = self.edge_costs(truck, restrictions)
        weight = self._search_weight(truck, restrictions, objective)
        length_m = np.full((k, k), np.inf)
        time_s = np.full((k, k), np.inf)
        energy_kwh = np.full((k, k), np.inf)
        routes: dict[tuple[str, str], Route] = {}
        for i, a in enumerate(sites):
            src = self._row[nodes[i]]
            _, pred = _dijkstra(
                self.arrays.succ_ptr,
                self.arrays.succ_edge,
                self.arrays.edge_to,
                weight,
                costs.is_open,
                src,
                -1,
            )
            for j, b in enumerate(sites):
                dst = self._row[nodes[j]]
                if i != j and src != dst and pred[dst] < 0:
                    continue
                r = self._build_route(nodes[i], nodes[j], objective, costs, pred, src, dst)
                length_m[i, j], time_s[i, j], energy_kwh[i, j] = (
                    r.length_m,
                    r.travel_time_s,
                    r.energy_kwh,
                )
                if i != j:
                    routes[(a, b)] = r
        return RouteMatrix(
            site_ids=sites,
            objective=objective,
            length_m=length_m,
            travel_time_s=time_s,
            energy_kwh=energy_kwh,
            reachable=np.isfinite(length_m),
            routes=routes,
        )

    # --- helpers -------------------------------------------------------------------------------

    def _node_row(self, node_id: str, role: str) -> int:
        if node_id not in self._row:
            raise RoutingError(f"{role} node {node_id!r} is not in network {self.network.name!r}")
        return self._row[node_id]

    def _search_weight(
        self, truck: TruckLoad, restrictions: Restrictions | None, objective: Objective
    ) -> NDArray[np.float64]:
        """Non-negative search weights: the objective's costs, Johnson-reweighted if needed."""
        restrictions = restrictions or Restrictions()
        key = (truck, restrictions, objective)
        if key in self._weights:
            return self._weights[key]
        costs = self.edge_costs(truck, restrictions)
        w = costs.weight(objective)
        is_open = costs.is_open
        if (w[is_open] < 0.0).any():
            phi, ok = _potentials(
                len(self.arrays.node_ids), self.arrays.edge_from, self.arrays.edge_to, w, is_open
            )
            if not ok:
                raise RoutingError(
                    f"the {objective} costs of network {self.network.name!r} contain a negative "
                    "cycle (a loop that returns energy); check the edges' elevation profiles"
                )
            reduced = w + phi[self.arrays.edge_from] - phi[self.arrays.edge_to]
            # Exact arithmetic gives reduced >= 0 on open edges; clip only rounding (~1e-15).
            w = np.where(is_open, np.maximum(reduced, 0.0), np.inf)
        self._weights[key] = w
        return w

    def _build_route(
        self,
        origin: str,
        dest: str,
        objective: Objective,
        costs: EdgeCosts,
        pred: NDArray[np.int64],
        src: int,
        dst: int,
    ) -> Route:
        rows: list[int] = []
        v = dst
        while v != src:
            e = int(pred[v])
            rows.append(e)
            v = int(self.arrays.edge_from[e])
        rows.reverse()
        idx = np.asarray(rows, dtype=np.int64)
        arr = self.arrays
        node_ids = (origin, *(arr.node_ids[int(arr.edge_to[e])] for e in rows))
        return Route(
            origin=origin,
            destination=dest,
            objective=objective,
            edge_ids=tuple(arr.edge_ids[e] for e in rows),
            node_ids=node_ids,
            length_m=float(costs.length_m[idx].sum()),
            travel_time_s=float(costs.travel_time_s[idx].sum()),
            energy_kwh=float(costs.energy_kwh[idx].sum()),
        )

    def _reachable(self, src: int, dst: int, is_open: NDArray[np.bool_]) -> bool:
        _, pred = _dijkstra(
            self.arrays.succ_ptr,
            self.arrays.succ_edge,
            self.arrays.edge_to,
            np.ones(len(self.arrays.edge_ids)),
            is_open,
            src,
            dst,
        )
        return src == dst or pred[dst] >= 0

    def _no_route_message(
        self,
        origin: str,
        dest: str,
        truck: TruckLoad,
        restrictions: Restrictions | None,
        costs: EdgeCosts,
    ) -> str:
        """Name the restriction whose lifting alone would give a route."""
        head = f"no route from node {origin!r} to node {dest!r} for a {truck.mass_t:g} t truck"
        src, dst = self._row[origin], self._row[dest]
        everything = np.ones(len(costs.edge_ids), dtype=bool)
        if not self._reachable(src, dst, everything):
            return f"{head}: network {self.network.name!r} has no path between them at all"
        reasons = [r for r in _REASONS if (costs.closed_by == r).any()]
        for r in reasons:
            if self._reachable(src, dst, costs.is_open | (costs.closed_by == r)):
                detail = self._detail(r, costs, truck, restrictions)
                return f"{head}: the {_REASONS[r]} cut every path ({detail})"
        names = " and ".join(_REASONS[r] for r in reasons)
        return f"{head}: the {names} together cut every path"

    def _detail(
        self, reason: int, costs: EdgeCosts, truck: TruckLoad, restrictions: Restrictions | None
    ) -> str:
        closed = [e for e, c in zip(costs.edge_ids, costs.closed_by, strict=True) if c == reason]
        shown = ", ".join(closed[:5]) + (f" and {len(closed) - 5} more" if len(closed) > 5 else "")
        if reason == CLOSED_ROAD_CLASS and restrictions is not None:
            allowed = ", ".join(sorted(c.value for c in restrictions.road_classes)) or "none"
            return f"allowed road classes: {allowed}; closed edges: {shown}"
        if reason == CLOSED_WEIGHT_LIMIT:
            return f"edges with a limit below {truck.mass_t:g} t: {shown}"
        return f"closed edges: {shown}"


def _edge_sum(
    seg_edge: NDArray[np.int64], seg_value: NDArray[np.float64], n_edges: int
) -> NDArray[np.float64]:
    """(E,) sum of per-segment values over each edge's segments."""
    return np.bincount(seg_edge, weights=seg_value, minlength=n_edges).astype(np.float64)


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise RoutingError(f"objective {objective!r} is unknown; valid: {', '.join(OBJECTIVES)}")


# --- functional entry points -------------------------------------------------------------------


def route(
    network: RoadNetwork,
    origin_node: str,
    dest_node: str,
    objective: Objective,
    truck: TruckLoad,
    restrictions: Restrictions | None = None,
) -> Route:
    """The best route between two nodes (see :meth:`Router.route`).

    Builds a :class:`Router` each call; keep one for repeated queries.
    """
    return Router(network).route(origin_node, dest_node, objective, truck, restrictions)


def site_matrix(
    network: RoadNetwork,
    site_ids: Iterable[str],
    objective: Objective,
    truck: TruckLoad,
    restrictions: Restrictions | None = None,
) -> RouteMatrix:
    """Best routes between every pair of sites (see :meth:`Router.site_matrix`)."""
    return Router(network).site_matrix(tuple(site_ids), objective, truck, restrictions)
