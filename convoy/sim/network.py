"""The network engine: fleets on the road network, with lanes, junctions, sites and platoons.

Build a :class:`NetSim` from a :class:`~convoy.road.network.RoadNetwork`, vehicle types and
a demand (trips of trucks and platoons, flows of background traffic), then :meth:`NetSim.run`.
The step itself is compiled (``net_kernel.run_net_steps``) and runs many steps per call;
Python only comes back to flush outputs, apply a change of the world (a hazard starting or
ending) or advance a platoon manoeuvre.

A batch of independent instances of the same world runs as one array computation:
``NetSim(..., instances=k)`` copies the demand ``k`` times (each copy with its own random
draws), and every per-vehicle output carries its instance.
"""

from __future__ import annotations

import itertools
import math
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numba
import numpy as np
from numpy.typing import NDArray

from convoy.road.network import JunctionType, RoadClass, RoadNetwork, edges_by_node
from convoy.sim import net_kernel as nk
from convoy.sim.manoeuvres import ManoeuvreManager, PlatoonRegistry, V2VLink
from convoy.sim.scenario import ScenarioError
from convoy.vehicle.aero import drag_row as _drag_row
from convoy.vehicle.energy import ElectricPowertrain
from convoy.vehicle.sumo_cfm import MODE_GAP, SumoAccParams, SumoCaccParams

ModelName = Literal["idm", "acc", "cacc"]
_MODEL_CODE = {"idm": nk.NM_IDM, "acc": nk.NM_ACC, "cacc": nk.NM_CACC}
# Road classes ranked for right of way at priority junctions (higher wins).
_RANK = {
    RoadClass.MOTORWAY: 5,
    RoadClass.TRUNK: 4,
    RoadClass.PRIMARY: 3,
    RoadClass.SECONDARY: 2,
    RoadClass.TERTIARY: 1,
    RoadClass.SERVICE: 0,
}


#: The most vehicles per hour one flow may send: ten lanes at their capacity (about 2,000
#: vehicles an hour each, HCM). An infinite rate drew gaps of 0 s and never ended.
MAX_FLOW_VEH_PER_H = 20_000.0


class NetSimError(ValueError):
    """Bad input to the network engine; the message names the field, value and what is allowed."""


@dataclass(frozen=True, slots=True)
class VehicleType:
    """A kind of vehicle.

    Attributes:
        name: id used by trips and flows.
        model: ``idm`` (human drivers), ``acc`` (SUMO ACC, solo L4 trucks) or ``cacc``
            (SUMO CACC, platoon followers).
        length_m, min_gap_m: body length and standstill gap.
        accel_mps2, decel_mps2, emergency_decel_mps2: limits.
        max_speed_mps: top speed.
        time_gap_s: desired time headway: IDM's T, and SUMO's tau for the ACC/CACC laws.
        idm_delta: IDM's acceleration exponent.
        is_truck: trucks book energy (the vehicle layer's powertrain model).
        mass_kg, cd_a_m2, crr: truck body, for the energy.
        speed_factor: share of the speed limit the driver aims for.
        can_change_lane: MOBIL lane changes (never for platoon members, which change as one).
    """

    name: str
    model: ModelName = "idm"
    length_m: float = 5.0
    min_gap_m: float = 2.5
    accel_mps2: float = 2.6
    decel_mps2: float = 4.5
    emergency_decel_mps2: float = 9.0
    max_speed_mps: float = 33.3
    time_gap_s: float = 1.0
    idm_delta: float = 4.0
    is_truck: bool = False
    mass_kg: float = 1_500.0
    cd_a_m2: float = 0.7
    crr: float = 0.01
    speed_factor: float = 1.0
    can_change_lane: bool = True

    def check(self) -> None:
        """Raise :class:`NetSimError` naming the first field out of range."""
        if self.model not in _MODEL_CODE:
            raise NetSimError(
                f"vehicle type {self.name!r}: model = {self.model!r}; allowed: idm, acc, cacc"
            )
        for f in (
            "length_m",
            "accel_mps2",
            "decel_mps2",
            "emergency_decel_mps2",
            "max_speed_mps",
            "time_gap_s",
            "mass_kg",
            "speed_factor",
        ):
            v = getattr(self, f)
            if not (math.isfinite(v) and v > 0):
                raise NetSimError(f"vehicle type {self.name!r}: {f} = {v}; must be > 0")
        if not self.min_gap_m >= 0:
            raise NetSimError(
                f"vehicle type {self.name!r}: min_gap_m = {self.min_gap_m}; must be >= 0"
            )


#: A passenger car: SUMO's passenger defaults (length 5 m, minGap 2.5 m, accel 2.6, decel
#: 4.5, emergencyDecel 9 m/s²) with IDM's T = 1.0 s (Treiber & Kesting 2013, Table 11.2, car).
CAR = VehicleType("car")
#: A human-driven heavy truck (a platoon's lead truck, or a conventional truck): IDM with
#: T = 1.5 s and b = 2 m/s² (Treiber & Kesting 2013, Table 11.2, truck), DESIGN.md's body.
TRUCK_HUMAN = VehicleType(
    "truck-human",
    model="idm",
    length_m=16.5,
    min_gap_m=2.5,
    accel_mps2=1.0,
    decel_mps2=2.0,
    emergency_decel_mps2=7.5,
    max_speed_mps=25.0,
    time_gap_s=1.5,
    is_truck=True,
    mass_kg=49_000.0,
    cd_a_m2=6.0,
    crr=0.006,
    can_change_lane=True,
)
#: A driverless follower: SUMO's CACC law (its default gains), DESIGN.md's body.
TRUCK_L4 = VehicleType(
    "truck-l4",
    model="cacc",
    length_m=16.5,
    min_gap_m=2.5,
    accel_mps2=1.0,
    decel_mps2=4.0,
    emergency_decel_mps2=7.5,
    max_speed_mps=25.0,
    time_gap_s=1.0,
    is_truck=True,
    mass_kg=49_000.0,
    cd_a_m2=6.0,
    crr=0.006,
    can_change_lane=False,
)


@dataclass(frozen=True, slots=True)
class Leg:
    """Part of a trip: a route of edges, then a stop at a site.

    Attributes:
        route: edge ids in driving order (non-empty).
        dwell_s: time at the site at the route's end (loading, unloading, charging).
        site: the site id at the end (its capacity limits how many dwell at once), or
            ``None`` to leave the network there.
    """

    route: tuple[str, ...]
    dwell_s: float = 0.0
    site: str | None = None


@dataclass(frozen=True, slots=True)
class Trip:
    """One vehicle's day: legs driven one after another from ``depart_s``."""

    vehicle_id: str
    vtype: str
    legs: tuple[Leg, ...]
    depart_s: float = 0.0
    speed_cap_mps: float = math.inf
    after: str | None = None  # a vehicle (the same truck's previous trip) that must arrive first


@dataclass(frozen=True, slots=True)
class Platoon:
    """Vehicles (by id, head first) that drive as one platoon; all share the same legs."""

    id: str
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Flow:
    """Background traffic: ``veh_per_h`` vehicles of ``vtype`` along ``route`` (Poisson)."""

    id: str
    route: tuple[str, ...]
    veh_per_h: float
    vtype: str = "car"
    begin_s: float = 0.0
    end_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class SpeedCap:
    """A speed limit on some edges for a while (a dust storm, ice, road works)."""

    edges: tuple[str, ...]
    start_s: float
    end_s: float
    cap_mps: float


@dataclass(frozen=True, slots=True)
class LaneClosure:
    """Road works: lane ``lane`` (0 = rightmost) of ``edge`` closed for a while. Vehicles
    headed for it change lanes before the edge (platoons as one unit) or stop and wait."""

    edge: str
    lane: int
    start_s: float
    end_s: float


@dataclass
class NetResult:
    """What a run produced.

    Attributes:
        vehicle_ids: (n,) ids; row i of every per-vehicle array.
        instance: (n,) the batch instance of each vehicle.
        edge_ids: edge ids, indexed by the FCD's ``edge`` column.
        fcd: dict of column -> array (``FCD_COLUMNS`` plus ``vehicle``), one row per vehicle on
            the road per record time.
        events: list of dicts (time_s, kind, vehicle_id, ...).
        energy_kwh, distance_m, min_ttc_s, hard_brakes, lane_changes: (n,) per vehicle.
        status: (n,) final status (``net_kernel.ST_*``).
        collisions: number of collisions.
        steps: steps run; wall_s: seconds spent in the compiled step.
    """

    vehicle_ids: list[str]
    instance: NDArray[np.int32]
    edge_ids: tuple[str, ...]
    fcd: dict[str, NDArray[np.float64]]
    events: list[dict[str, object]]
    energy_kwh: NDArray[np.float64]
    distance_m: NDArray[np.float64]
    min_ttc_s: NDArray[np.float64]
    hard_brakes: NDArray[np.int32]
    lane_changes: NDArray[np.int32]
    status: NDArray[np.int8]
    collisions: int
    steps: int
    wall_s: float = 0.0

    @staticmethod
    def concat(parts: Sequence[NetResult]) -> NetResult:
        """One result from consecutive ``run`` calls of the same simulation: outputs joined
        in order, per-vehicle totals and status from the last part."""
        last = parts[-1]
        fcd = {k: np.concatenate([p.fcd[k] for p in parts]) for k in last.fcd}
        return NetResult(
            vehicle_ids=last.vehicle_ids,
            instance=last.instance,
            edge_ids=last.edge_ids,
            fcd=fcd,
            events=[e for p in parts for e in p.events],
            energy_kwh=last.energy_kwh,
            distance_m=last.distance_m,
            min_ttc_s=last.min_ttc_s,
            hard_brakes=last.hard_brakes,
            lane_changes=last.lane_changes,
            status=last.status,
            collisions=sum(p.collisions for p in parts),
            steps=last.steps,
            wall_s=sum(p.wall_s for p in parts),
        )


def _bearing_rad(at: tuple[float, float], to: tuple[float, float]) -> float:
    """Direction from ``at`` towards ``to`` (lon, lat) [rad, east = 0, counter-clockwise]."""
    dx = (to[0] - at[0]) * math.cos(math.radians(at[1]))
    return math.atan2(to[1] - at[1], dx)


def edge_arms_rad(network: RoadNetwork, edge_ids: Sequence[str]) -> NDArray[np.float64]:
    """(E, 2): where each edge meets its junctions, seen from them [rad, east = 0,
    counter-clockwise]: column 0 the direction from its end node back along its last
    segment (where it comes from), column 1 the direction from its start node along its
    first segment (where it goes)."""
    arms = np.zeros((len(edge_ids), 2))
    for k, eid in enumerate(edge_ids):
        e = network.edges[eid]
        a, b = network.nodes[e.from_node], network.nodes[e.to_node]
        pts = [(a.lon, a.lat), *e.geometry, (b.lon, b.lat)]
        tail = next((p for p in reversed(pts) if p != pts[-1]), pts[0])
        head = next((p for p in pts if p != pts[0]), pts[-1])
        arms[k, 0] = _bearing_rad(pts[-1], tail)
        arms[k, 1] = _bearing_rad(pts[0], head)
    return arms


def junction_arms_rad(network: RoadNetwork, edge_ids: Sequence[str]) -> NDArray[np.float64]:
    """``edge_arms_rad`` as the junction rules take them: NaN where the edge meets a
    roundabout, a single node here, around whose island paths merge and part but never
    cross (``net_kernel.paths_cross`` is false for a NaN direction), so that there only the
    merge rules apply."""
    arms = edge_arms_rad(network, edge_ids)
    for k, eid in enumerate(edge_ids):
        e = network.edges[eid]
        for col, node in ((0, e.to_node), (1, e.from_node)):
            if network.nodes[node].junction == JunctionType.ROUNDABOUT:
                arms[k, col] = math.nan
    return arms


def junction_links(
    network: RoadNetwork,
    edge_ids: Sequence[str],
    ranks: NDArray[np.int32],
    arms: NDArray[np.float64],
) -> NDArray[np.int64]:
    """(E, 2): column 0 the edge's place among the edges that leave its start node, column 1
    a bit per edge leaving its end node (at that place), set where the movement from this
    edge to that one is minor: at a priority junction, some movement from another approach
    has the right of way over it (``net_kernel.waits_for``; U-turns are no one's foes). A
    minor movement's vehicle comes to its stop line ready to stop, and only within
    ``net_kernel.VISIBILITY_M`` of it may it go on where nothing comes (netconvert's
    lowercase ``m`` links; ``ranks`` from ``junction_ranks``, ``arms`` from
    ``junction_arms_rad``).

    Raises:
        NetSimError: a node that more than 63 edges leave.
    """
    k = {eid: i for i, eid in enumerate(edge_ids)}
    out: dict[str, list[int]] = {}
    into: dict[str, list[int]] = {}
    for eid in edge_ids:
        e = network.edges[eid]
        out.setdefault(e.from_node, []).append(k[eid])
        into.setdefault(e.to_node, []).append(k[eid])
    links = np.zeros((len(edge_ids), 2), np.int64)
    for node_id, leaving in out.items():
        if len(leaving) > 63:
            raise NetSimError(f"node {node_id!r}: {len(leaving)} edges leave it; allowed: 63")
        for place, f in enumerate(leaving):
            links[f, 0] = place

    def u_turn(a: int, b: int) -> bool:
        return network.edges[edge_ids[b]].to_node == network.edges[edge_ids[a]].from_node

    for node_id, arriving in into.items():
        if network.nodes[node_id].junction != JunctionType.PRIORITY:
            continue
        leaving = out.get(node_id, [])
        for a in arriving:
            for place, f in enumerate(leaving):
                a_in, a_out = arms[a, 0], arms[f, 1]
                minor = not u_turn(a, f) and any(
                    nk.waits_for(
                        int(ranks[a]), int(ranks[b]), a_in, a_out, arms[b, 0], arms[g, 1],
                        True, g == f,
                    )
                    for b in arriving
                    if b != a
                    for g in leaving
                    if not u_turn(b, g)
                )  # fmt: skip
                if minor:
                    links[a, 1] |= 1 << place
    return links


def _spread_rad(a: float, b: float) -> float:
    """The angle between two directions, 0 to pi."""
    d = abs(a - b) % (2.0 * math.pi)
    return min(d, 2.0 * math.pi - d)


def junction_ranks(
    network: RoadNetwork, edge_ids: Sequence[str], arms: NDArray[np.float64] | None = None
) -> NDArray[np.int32]:
    """Each edge's rank for right of way at the junction it leads to (higher goes first).

    The road class decides (``_RANK``). Where three or more approaches of the top class meet
    at a priority junction, the two that are most nearly opposite are its main road and the
    others yield to them, as netconvert decides a priority junction whose roads have equal
    priority (SUMO documentation, "Networks/PlainXML", junction type ``priority``: the two
    edges of highest priority are the main road; among equals, those at the widest angle).
    Without this, traffic on the stem of a T of equal roads met the through traffic without
    either giving way. Ranks are ``2 * class rank + 1``, and ``2 * class rank`` for an
    approach left off the main road: the order between classes is unchanged. ``arms``: the
    edges' directions (``edge_arms_rad`` or ``junction_arms_rad``), computed if not given."""
    if arms is None:
        arms = edge_arms_rad(network, edge_ids)
    ranks = np.array([2 * _RANK[network.edges[e].road_class] + 1 for e in edge_ids], np.int32)
    incoming: dict[str, list[int]] = {}
    for k, eid in enumerate(edge_ids):
        incoming.setdefault(network.edges[eid].to_node, []).append(k)
    for node_id, ks in incoming.items():
        if network.nodes[node_id].junction != JunctionType.PRIORITY:
            continue
        top = max(int(ranks[k]) for k in ks)
        tops = [k for k in ks if ranks[k] == top]
        if len(tops) < 3:
            continue
        main = max(
            itertools.combinations(tops, 2), key=lambda p: _spread_rad(arms[p[0], 0], arms[p[1], 0])
        )
        for k in tops:
            if k not in main:
                ranks[k] -= 1
    return ranks


def _signal_rows(network: RoadNetwork, edge_ids: Sequence[str]) -> NDArray[np.float64]:
    """(E, 5) cycle, offset, green start, green end, yellow length per incoming edge."""
    sig = np.zeros((len(edge_ids), 5))
    for k, eid in enumerate(edge_ids):
        node = network.nodes[network.edges[eid].to_node]
        if node.junction != JunctionType.TRAFFIC_SIGNAL or node.signal is None:
            continue
        plan = node.signal
        t = 0.0
        g0 = g1 = -1.0
        yellow = 0.0
        for ph in plan.phases:
            if eid in ph.green_edges:
                if g0 < 0:
                    g0 = t
                g1 = t + ph.duration_s
            elif g1 >= 0 and not ph.green_edges and yellow == 0.0 and abs(t - g1) < 1e-9:
                yellow = ph.duration_s
            t += ph.duration_s
        if g0 < 0:
            g0 = g1 = 0.0  # never green: a closed approach
        sig[k] = (plan.cycle_s, plan.offset_s, g0, g1, yellow)
    return sig


def _check_trip_numbers(tr: Trip) -> None:
    """Refuse a trip's times and speeds that no run can mean: a NaN or negative departure
    (``inf``: never by itself, for a vehicle placed by a script), a NaN or negative dwell, a
    speed cap that is NaN or not above 0.

    Raises:
        NetSimError: naming the trip, the field and what is allowed.
    """
    where = f"trip {tr.vehicle_id!r}"
    if not tr.depart_s >= 0.0:
        raise NetSimError(f"{where}: depart_s = {tr.depart_s}; allowed: 0 or more (or inf)")
    if not tr.speed_cap_mps > 0.0:
        raise NetSimError(
            f"{where}: speed_cap_mps = {tr.speed_cap_mps}; allowed: above 0 (inf: none)"
        )
    for k, lg in enumerate(tr.legs):
        if not 0.0 <= lg.dwell_s < math.inf:
            raise NetSimError(f"{where}: leg {k} dwell_s = {lg.dwell_s}; allowed: 0 or more")


@dataclass
class _Vehicles:
    ids: list[str] = field(default_factory=list)
    vtype: list[int] = field(default_factory=list)
    inst: list[int] = field(default_factory=list)
    depart_s: list[float] = field(default_factory=list)
    leg_lo: list[int] = field(default_factory=list)
    leg_hi: list[int] = field(default_factory=list)
    cap: list[float] = field(default_factory=list)


#: The network engine's backends: ``cpu`` (the Numba kernel, threaded for large fleets),
#: ``jax`` (``net_jax``'s step in float64 on JAX's default device; agrees with ``cpu`` to
#: rounding) and ``gpu`` (the same step in float32 with compensated per-edge offsets on the
#: first CUDA GPU). ``jax`` and ``gpu`` refuse only routes over edges too short to cross
#: in a step (``net_jax.unsupported``).
NET_BACKENDS = ("cpu", "jax", "gpu")
#: the step variants that have run in this process (compiled for the engine's arguments)
_STEPS_RUN: set[Any] = set()


class NetSim:
    """A network-scale simulation, ready to run on one of ``NET_BACKENDS`` (``backend``)."""

    def __init__(
        self,
        network: RoadNetwork,
        trips: Sequence[Trip] = (),
        flows: Sequence[Flow] = (),
        platoons: Sequence[Platoon] = (),
        vtypes: Sequence[VehicleType] = (CAR, TRUCK_HUMAN, TRUCK_L4),
        dt_s: float = 0.1,
        seed: int = 0,
        instances: int = 1,
        loss: float = 0.0,
        beacon_hz: float = 10.0,
        lane_change_period_s: float = 1.0,
        ambient_c: float = 15.0,
        speed_caps: Sequence[SpeedCap] = (),
        lane_closures: Sequence[LaneClosure] = (),
        record_every_s: float = 1.0,
        site_capacity: Mapping[str, int] | None = None,
        manoeuvres: bool = False,
        max_followers: int = 4,
        backend: str = "cpu",
    ) -> None:
        if not (dt_s > 0 and math.isfinite(dt_s)):
            raise NetSimError(f"dt_s = {dt_s}; must be a finite number > 0")
        if instances < 1:
            raise NetSimError(f"instances = {instances}; must be >= 1")
        if not 0.0 <= loss < 1.0:
            raise NetSimError(f"loss = {loss}; allowed: 0 <= loss < 1")
        for name, val in (
            ("record_every_s", record_every_s),
            ("beacon_hz", beacon_hz),
            ("lane_change_period_s", lane_change_period_s),
        ):
            if not 0.0 < val < math.inf:
                raise NetSimError(f"{name} = {val}; must be a finite number > 0")
        self.network = network
        self.dt_s = dt_s
        self.seed = seed
        self.instances = instances
        self.loss = loss
        self.ambient_c = ambient_c
        self.speed_caps = tuple(speed_caps)
        self.lane_closures = tuple(lane_closures)
        self.beacon_period_steps = max(1, round(1.0 / (beacon_hz * dt_s)))
        self.lc_period_steps = max(1, round(lane_change_period_s / dt_s))
        self.record_every = max(1, round(record_every_s / dt_s))
        #: type names by row of ``state["vtype"]``
        self.vtype_names = [t.name for t in vtypes]
        for t in vtypes:
            t.check()
        arrays = network.to_arrays()
        self.edge_ids = arrays.edge_ids
        self._edge_row = {e: k for k, e in enumerate(arrays.edge_ids)}
        self._node_row = {v: k for k, v in enumerate(arrays.node_ids)}
        self._arrays = arrays
        self._net = self._network_tables(network)
        self._vt, self._cacc, self._acc, self._pt = self._type_tables(vtypes)
        self._site_ids = tuple(network.sites)
        self._site_row = {s: k for k, s in enumerate(self._site_ids)}
        caps = dict(site_capacity or {})
        for s in caps:
            if s not in self._site_row:
                raise NetSimError(f"site_capacity names unknown site {s!r}")
        self._site_capacity = np.array(
            [int(caps.get(s, 1_000_000)) for s in self._site_ids] or [0], dtype=np.int64
        )
        self._build_demand(trips, flows, platoons)
        for c in self.lane_closures:
            if c.edge not in self._edge_row:
                raise NetSimError(f"lane closure names unknown edge {c.edge!r}")
            lanes = network.edges[c.edge].lanes
            if not 0 <= c.lane < lanes:
                raise NetSimError(
                    f"lane closure on {c.edge!r}: lane = {c.lane}; allowed: 0..{lanes - 1}"
                )
        self._requests: list[tuple[float, Callable[[], object]]] = []
        # speed-cap ramps the kernel applies step by step (``schedule_speed_ramp``)
        self._cap_ramps: list[tuple[float, ...]] = []
        self._scripted_events: list[dict[str, object]] = []
        self._manager: ManoeuvreManager | None = None
        if manoeuvres:
            self._start_manoeuvres(max_followers)
        self.backend = backend
        self._check_backend()

    # --- tables ---------------------------------------------------------------------------
    def _network_tables(self, network: RoadNetwork) -> dict[str, np.ndarray]:
        a = self._arrays
        n_nodes = len(a.node_ids)
        arms = junction_arms_rad(network, a.edge_ids)
        edge_rank = junction_ranks(network, a.edge_ids, arms)
        pred_ptr, pred_edge = edges_by_node(a.edge_to, n_nodes)
        node_junction = np.array(
            [
                nk.JT_SIGNAL
                if network.nodes[v].junction == JunctionType.TRAFFIC_SIGNAL
                else nk.JT_PRIORITY
                for v in a.node_ids
            ],
            dtype=np.int32,
        )
        return {
            "edge_len_m": a.edge_length_m.copy(),
            "edge_lanes": a.edge_lanes.astype(np.int32),
            "edge_speed_mps": a.edge_speed_mps.copy(),
            "edge_grade": a.edge_grade.copy(),
            "edge_from": a.edge_from.astype(np.int32),
            "edge_to": a.edge_to.astype(np.int32),
            "edge_rank": edge_rank,
            "edge_arm_rad": arms,
            "edge_links": junction_links(network, a.edge_ids, edge_rank, arms),
            "node_junction": node_junction,
            "pred_ptr": pred_ptr,
            "pred_edge": pred_edge,
            "succ_ptr": a.succ_ptr,
            "succ_edge": a.succ_edge,
            "sig": _signal_rows(network, a.edge_ids),
        }

    def _type_tables(
        self, vtypes: Sequence[VehicleType]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self._type_row = {t.name: k for k, t in enumerate(vtypes)}
        nt = len(vtypes)
        vt = np.zeros((nt, nk.VT_SIZE))
        cacc = np.zeros((nt, len(SumoCaccParams().to_vector())))
        acc = np.zeros((nt, len(SumoAccParams().to_vector())))
        pt_row = ElectricPowertrain().to_vector()
        pt = np.zeros((nt, pt_row.shape[0]))
        for k, t in enumerate(vtypes):
            vt[k, nk.VT_LENGTH_M] = t.length_m
            vt[k, nk.VT_MIN_GAP_M] = t.min_gap_m
            vt[k, nk.VT_ACCEL_MPS2] = t.accel_mps2
            vt[k, nk.VT_DECEL_MPS2] = t.decel_mps2
            vt[k, nk.VT_EMERGENCY_DECEL_MPS2] = t.emergency_decel_mps2
            vt[k, nk.VT_MAX_SPEED_MPS] = t.max_speed_mps
            vt[k, nk.VT_MODEL] = _MODEL_CODE[t.model]
            vt[k, nk.VT_TIME_GAP_S] = t.time_gap_s
            vt[k, nk.VT_IDM_DELTA] = t.idm_delta
            vt[k, nk.VT_IS_TRUCK] = 1.0 if t.is_truck else 0.0
            vt[k, nk.VT_MASS_KG] = t.mass_kg
            vt[k, nk.VT_CD_A_M2] = t.cd_a_m2
            vt[k, nk.VT_CRR] = t.crr
            vt[k, nk.VT_SPEED_FACTOR] = t.speed_factor
            vt[k, nk.VT_CAN_CHANGE_LANE] = 1.0 if t.can_change_lane else 0.0
            limits = {
                "min_gap_m": t.min_gap_m,
                "decel_mps2": t.decel_mps2,
                "emergency_decel_mps2": t.emergency_decel_mps2,
                "pred_decel_mps2": t.decel_mps2,
            }
            # SUMO's tau: the ACC/CACC time gap is the type's time gap
            cacc[k] = SumoCaccParams(
                time_gap_s=t.time_gap_s, acc_fallback=SumoAccParams(**limits), **limits
            ).to_vector()
            acc[k] = SumoAccParams(time_gap_s=t.time_gap_s, **limits).to_vector()
            pt[k] = pt_row
        return vt, cacc, acc, pt

    def _route_rows(self, where: str, route: Sequence[str]) -> list[int]:
        if not route:
            raise NetSimError(f"{where}: route is empty; allowed: one or more edge ids")
        rows = []
        for e in route:
            if e not in self._edge_row:
                raise NetSimError(f"{where}: route names unknown edge {e!r}")
            rows.append(self._edge_row[e])
        a = self._arrays
        for x, y in itertools.pairwise(rows):
            if a.edge_to[x] != a.edge_from[y]:
                raise NetSimError(
                    f"{where}: edges {a.edge_ids[x]!r} and {a.edge_ids[y]!r} are not connected"
                )
        return rows

    def _build_demand(
        self, trips: Sequence[Trip], flows: Sequence[Flow], platoons: Sequence[Platoon]
    ) -> None:
        route_edges: list[int] = []
        leg_lo: list[int] = []
        leg_hi: list[int] = []
        leg_dwell: list[float] = []
        leg_site: list[int] = []
        veh = _Vehicles()
        rng = np.random.default_rng(self.seed)
        all_trips = list(trips)
        for f in flows:
            if not (
                0 <= f.veh_per_h <= MAX_FLOW_VEH_PER_H and 0 <= f.begin_s <= f.end_s < math.inf
            ):
                raise NetSimError(
                    f"flow {f.id!r}: veh_per_h = {f.veh_per_h}, begin_s..end_s = "
                    f"{f.begin_s}..{f.end_s}; need 0 <= veh_per_h <= {MAX_FLOW_VEH_PER_H:,.0f} "
                    "and 0 <= begin_s <= end_s, both finite"
                )
            t = f.begin_s
            k = 0
            while f.veh_per_h > 0:
                t += rng.exponential(3600.0 / f.veh_per_h)
                if t >= f.end_s:
                    break
                all_trips.append(Trip(f"{f.id}.{k}", f.vtype, (Leg(f.route),), t))
                k += 1
        seen: set[str] = set()
        for inst in range(self.instances):
            for tr in all_trips:
                if inst == 0:
                    if tr.vehicle_id in seen:
                        raise NetSimError(f"vehicle id {tr.vehicle_id!r} appears twice")
                    seen.add(tr.vehicle_id)
                    if tr.vtype not in self._type_row:
                        raise NetSimError(
                            f"trip {tr.vehicle_id!r}: vtype = {tr.vtype!r}; allowed: "
                            f"{sorted(self._type_row)}"
                        )
                    if not tr.legs:
                        raise NetSimError(f"trip {tr.vehicle_id!r}: no legs")
                    _check_trip_numbers(tr)
                veh.ids.append(tr.vehicle_id if self.instances == 1 else f"{tr.vehicle_id}#{inst}")
                veh.vtype.append(self._type_row[tr.vtype])
                veh.inst.append(inst)
                veh.depart_s.append(tr.depart_s)
                veh.cap.append(tr.speed_cap_mps)
                veh.leg_lo.append(len(leg_lo))
                for lg in tr.legs:
                    rows = self._route_rows(f"trip {tr.vehicle_id!r}", lg.route)
                    if lg.site is not None and lg.site not in self._site_row:
                        raise NetSimError(f"trip {tr.vehicle_id!r}: unknown site {lg.site!r}")
                    leg_lo.append(len(route_edges))
                    route_edges.extend(rows)
                    leg_hi.append(len(route_edges))
                    leg_dwell.append(lg.dwell_s)
                    leg_site.append(-1 if lg.site is None else self._site_row[lg.site])
                veh.leg_hi.append(len(leg_lo))
        n = len(veh.ids)
        self.n = n
        self.vehicle_ids = veh.ids
        self._route_edges = np.array(route_edges or [0], dtype=np.int32)
        self._leg_lo = np.array(leg_lo or [0], dtype=np.int32)
        self._leg_hi = np.array(leg_hi or [0], dtype=np.int32)
        self._leg_dwell = np.array(leg_dwell or [0.0], dtype=np.float64)
        self._leg_site = np.array(leg_site or [-1], dtype=np.int32)
        row_of = {v: k for k, v in enumerate(veh.ids)}
        self._vehicle_row = row_of
        s: dict[str, np.ndarray] = {}
        s["inst"] = np.array(veh.inst, dtype=np.int32)
        per_inst = n // self.instances if n else 0
        s["local"] = (np.arange(n) - s["inst"].astype(np.int64) * per_inst).astype(np.int32)
        s["vtype"] = np.array(veh.vtype, dtype=np.int32)
        s["status"] = np.full(n, nk.ST_WAITING, dtype=np.int8)
        s["edge"] = np.zeros(n, dtype=np.int32)
        s["lane"] = np.zeros(n, dtype=np.int32)
        s["pos_m"] = np.zeros(n)
        s["speed_mps"] = np.zeros(n)
        s["accel_mps2"] = np.zeros(n)
        s["leg"] = np.array(veh.leg_lo, dtype=np.int32)
        s["leg_end"] = np.array(veh.leg_hi, dtype=np.int32)
        s["route_ptr"] = self._leg_lo[s["leg"]] if n else np.zeros(0, np.int32)
        s["route_ptr"] = s["route_ptr"].astype(np.int32)
        s["ready_s"] = np.array(veh.depart_s, dtype=np.float64)
        s["platoon"] = np.full(n, -1, dtype=np.int32)
        s["pred"] = np.full(n, -1, dtype=np.int32)
        s["after"] = np.full(n, -1, dtype=np.int32)
        for k, tr in enumerate(all_trips * self.instances):
            if tr.after is None:
                continue
            key = tr.after if self.instances == 1 else f"{tr.after}#{s['inst'][k]}"
            if key not in row_of:
                raise NetSimError(f"trip {tr.vehicle_id!r}: after = {tr.after!r} is not a vehicle")
            s["after"][k] = row_of[key]
        s["plat_next"] = np.full(n, -1, dtype=np.int32)
        s["drag_row"] = np.full(n, -1, dtype=np.int8)
        s["mode"] = np.zeros(n, dtype=np.int8)
        s["beacon_age_s"] = np.zeros(n)
        s["extra_gap_m"] = np.zeros(n)
        s["speed_cap_mps"] = np.array(veh.cap, dtype=np.float64)
        s["set_speed_mps"] = np.full(n, np.nan)
        s["lc_out"] = np.zeros(n, dtype=np.int8)
        s["energy_kwh"] = np.zeros(n)
        s["distance_m"] = np.zeros(n)
        s["min_ttc_s"] = np.full(n, np.inf)
        s["hard_brakes"] = np.zeros(n, dtype=np.int32)
        s["lane_changes"] = np.zeros(n, dtype=np.int32)
        heads: list[int] = []
        self.platoon_ids: list[str] = []
        for inst in range(self.instances):
            for p in platoons:
                if len(p.members) < 1:
                    raise NetSimError(f"platoon {p.id!r}: no members")
                rows = []
                for m in p.members:
                    key = m if self.instances == 1 else f"{m}#{inst}"
                    if key not in row_of:
                        raise NetSimError(f"platoon {p.id!r} names unknown vehicle {m!r}")
                    rows.append(row_of[key])
                pid = len(heads)
                self.platoon_ids.append(p.id if self.instances == 1 else f"{p.id}#{inst}")
                heads.append(rows[0])
                size = len(rows)
                for pos, r in enumerate(rows):
                    if s["platoon"][r] >= 0:
                        raise NetSimError(f"vehicle {veh.ids[r]!r} is in two platoons")
                    s["platoon"][r] = pid
                    s["pred"][r] = rows[pos - 1] if pos > 0 else -1
                    s["plat_next"][r] = rows[pos + 1] if pos + 1 < size else -1
                    s["drag_row"][r] = _drag_row(size, pos)
                    if pos > 0:
                        # members leave together: depart with (just after) the head
                        s["ready_s"][r] = s["ready_s"][rows[0]]
        self._plat_head = np.array(heads or [-1], dtype=np.int32)
        #: the head vehicle (row) of each platoon, by row of ``state["platoon"]``
        self.platoon_heads = self._plat_head
        self._plat_lc = np.full(max(len(heads), 1), -1, dtype=np.int32)
        self.state = s
        self._site_load = np.zeros((self.instances, len(self._site_capacity)), dtype=np.int64)
        self._order = np.arange(n, dtype=np.int32)
        self._rank = np.arange(n, dtype=np.int32)
        max_lanes = int(self._net["edge_lanes"].max()) if len(self.edge_ids) else 1
        self.max_lanes = max_lanes
        nb = self.instances * len(self.edge_ids) * max_lanes
        self._bucket_start = np.zeros(nb + 2, dtype=np.int64)
        self._scratch = np.zeros(nb + 2, dtype=np.int64)
        self._head_of = np.full(nb + 1, -1, dtype=np.int64)
        self._keys = np.full(n, nb, dtype=np.int32)  # every vehicle off the road
        self._v_next = np.zeros(n)
        self._gap_now = np.full(n, nk.NO_GAP)
        self._ctl_gap = np.full(n, nk.NO_GAP)  # the law's gap (stop lines included)
        self._coop = np.zeros(n, dtype=np.int8)  # the law may use the beacons
        self._leader = np.full(n, -1, dtype=np.int32)
        # MOBIL's target lane, or 100 + lane for a cut-in: a byte where that fits
        self._lc_target = np.full(n, -1, dtype=np.int8 if max_lanes <= 27 else np.int32)
        self._inserted_at = np.full(nb + 1, -1, dtype=np.int64)
        self._step_flags = np.zeros(nk.STEP_FLAGS_LEN, dtype=np.int64)
        self._active = np.zeros(n, dtype=np.uint32)  # the vehicles on the road, per step
        # blocks of vehicles whose lane key the last step may have changed
        self._touched = np.zeros((n >> nk.TOUCH_SHIFT) + 1, dtype=np.uint8)
        # the slot of each vehicle in the arrays the kernel gets: the identity, except during
        # a call of the threaded step, which gets the vehicles in road order (``_renumber``)
        self._slot_of = np.arange(n, dtype=np.int32)
        self._chooser = nk.StepChooser()
        self.step = 0

    # --- platoon manoeuvres -----------------------------------------------------------------
    def _start_manoeuvres(self, max_followers: int) -> None:
        human = [self.vtype_names[t].startswith("truck-human") for t in self.state["vtype"]]
        self.registry = PlatoonRegistry(human, self.vehicle_ids, max_followers)
        s = self.state
        for p in range(len(self.platoon_ids)):
            rows = [int(self._plat_head[p])]
            while s["plat_next"][rows[-1]] >= 0:
                rows.append(int(s["plat_next"][rows[-1]]))
            self.registry.form(rows)
        self._manager = ManoeuvreManager(self.registry)
        self._trip_caps = self.state["speed_cap_mps"].copy()
        # C-V2X sidelink between trucks on an open highway: about 1 km line of sight
        # (5GAA, "V2X functional and performance test report", 2019: reliable reception
        # beyond 1 km for PC5 mode 4)
        self._link = V2VLink(self.dt_s, seed=self.seed, loss=self.loss, range_m=1000.0)
        self._registry_version = -1
        self._sync_platoons()

    def _sync_platoons(self) -> None:
        """Rebuild the engine's platoon tables from the registry after it changed."""
        reg = self.registry
        if reg.version == self._registry_version:
            return
        self._registry_version = reg.version
        s = self.state
        s["platoon"][:] = reg.platoon_of
        s["pred"][:] = reg.pred_of
        s["plat_next"][:] = -1
        s["drag_row"][:] = -1
        top = max(reg.platoons(), default=-1) + 1
        heads = np.full(max(top, 1), -1, dtype=np.int32)
        for p in reg.platoons():
            mem = reg.members(p)
            heads[p] = mem[0]
            for k, v in enumerate(mem):
                if k + 1 < len(mem):
                    s["plat_next"][v] = mem[k + 1]
                s["drag_row"][v] = _drag_row(len(mem), k)
        self._plat_head = heads
        self.platoon_heads = heads
        self._plat_lc = np.full(heads.shape[0], -1, dtype=np.int32)

    def _manoeuvre_tick(self) -> list[dict[str, object]]:
        """Issue the requests that are due and advance the manoeuvres by one control tick."""
        t = self.step * self.dt_s
        due = [r for r in self._requests if r[0] <= t + 1e-9]
        self._requests = [r for r in self._requests if r[0] > t + 1e-9]
        for _, call in due:
            call()
        scripted, self._scripted_events = self._scripted_events, []
        man = self._manager
        if man is None or man.active() == 0:
            return scripted
        raw = man.step(t, _View(self), self._link)
        reg = self.registry
        s = self.state
        s["extra_gap_m"][:] = reg.extra_gap_m
        s["speed_cap_mps"][:] = np.minimum(self._trip_caps, reg.speed_cap_mps)
        s["set_speed_mps"][:] = reg.set_speed_mps
        s["lc_out"][:] = reg.lane_change_out
        self._sync_platoons()
        out: list[dict[str, object]] = scripted
        for e in raw:
            d: dict[str, object] = {
                "time_s": float(e["t_s"]),
                "kind": str(e["type"]).replace("_", "-"),
            }
            d.update((k, v) for k, v in e.items() if k not in ("t_s", "type"))
            out.append(d)
        return out

    def _need_manager(self) -> ManoeuvreManager:
        if self._manager is None:
            raise NetSimError("manoeuvres = False: build NetSim(..., manoeuvres=True) to use them")
        return self._manager

    def _row(self, vehicle_id: str) -> int:
        try:
            return self._vehicle_row[vehicle_id]
        except KeyError:
            raise NetSimError(f"unknown vehicle {vehicle_id!r}") from None

    def _platoon_of(self, vehicle_id: str) -> int:
        p = int(self.registry.platoon_of[self._row(vehicle_id)])
        if p < 0:
            raise NetSimError(f"vehicle {vehicle_id!r} is in no platoon")
        return p

    def request_join(self, t_s: float, vehicle_id: str, platoon_of_vehicle: str) -> None:
        """At ``t_s``, ``vehicle_id`` asks to join at the rear of the platoon that
        ``platoon_of_vehicle`` drives in."""
        man = self._need_manager()
        self._requests.append(
            (
                t_s,
                lambda: man.request_join(
                    self._row(vehicle_id), self._platoon_of(platoon_of_vehicle)
                ),
            )
        )

    def request_leave(self, t_s: float, vehicle_id: str) -> None:
        """At ``t_s``, ``vehicle_id`` asks to leave its platoon."""
        man = self._need_manager()
        self._requests.append((t_s, lambda: man.request_leave(self._row(vehicle_id))))

    def request_split(self, t_s: float, platoon_of_vehicle: str, at_index: int) -> None:
        """At ``t_s``, the platoon splits before its member ``at_index``."""
        man = self._need_manager()
        self._requests.append(
            (t_s, lambda: man.request_split(self._platoon_of(platoon_of_vehicle), at_index))
        )

    def request_merge(self, t_s: float, front_vehicle: str, rear_vehicle: str) -> None:
        """At ``t_s``, the platoon of ``rear_vehicle`` asks to merge behind that of
        ``front_vehicle``."""
        man = self._need_manager()
        self._requests.append(
            (
                t_s,
                lambda: man.request_merge(
                    self._platoon_of(front_vehicle), self._platoon_of(rear_vehicle)
                ),
            )
        )

    # --- scripted vehicles (test scenarios: a formed platoon, a forced cut-in) ----------------
    def _put_on_road(self, row: int, edge: int, lane: int, pos_m: float, speed_mps: float) -> None:
        """Put a waiting vehicle, or move one driving on ``edge``, to a spot on the road."""
        s = self.state
        who = self.vehicle_ids[row]
        length = float(self._net["edge_len_m"][edge])
        if not 0.0 <= pos_m < length:
            raise NetSimError(
                f"vehicle {who!r}: pos_m = {pos_m:.2f} on edge {self.edge_ids[edge]!r}; "
                f"allowed: 0 <= pos_m < {length:g}"
            )
        st = int(s["status"][row])
        if st == nk.ST_DRIVING:
            if s["edge"][row] != edge:
                raise NetSimError(
                    f"vehicle {who!r} drives on edge {self.edge_ids[s['edge'][row]]!r}, not "
                    f"{self.edge_ids[edge]!r}; allowed: a vehicle on that edge or not yet on "
                    "the road"
                )
        elif st == nk.ST_WAITING:
            leg = int(s["leg"][row])
            route = self._route_edges[self._leg_lo[leg] : self._leg_hi[leg]]
            hits = np.flatnonzero(route == edge)
            if hits.size == 0:
                raise NetSimError(
                    f"vehicle {who!r}: edge {self.edge_ids[edge]!r} is not on the route of its "
                    "next leg; allowed: an edge of that route"
                )
            s["route_ptr"][row] = self._leg_lo[leg] + int(hits[0])
            s["status"][row] = nk.ST_DRIVING
        else:
            raise NetSimError(
                f"vehicle {who!r} has status {st} (not waiting or driving); allowed: a vehicle "
                "not yet on the road or driving"
            )
        s["edge"][row] = edge
        s["lane"][row] = lane
        s["pos_m"][row] = pos_m
        s["speed_mps"][row] = speed_mps
        s["accel_mps2"][row] = 0.0
        s["mode"][row] = 0
        s["beacon_age_s"][row] = 0.0

    def place(self, vehicle_id: str, edge: str, lane: int, pos_m: float, speed_mps: float) -> None:
        """Put a vehicle that has not departed on the road now, before ``run``: front bumper
        at ``pos_m`` from the start of ``edge`` (an edge of its route), in ``lane``, at
        ``speed_mps`` (a platoon formed and cruising when the run starts).  Platoon followers
        placed this way hold a fresh beacon of their predecessor and start in SUMO-CACC's gap
        control, as in a formed platoon (from speed control, a time gap in its hysteresis
        band of 1.5-2 s would keep them in speed control, closing in on the truck ahead).

        Raises:
            NetSimError: for an unknown vehicle or edge, a lane or position off the edge, a
                negative speed, or a vehicle already on the road elsewhere.
        """
        row = self._row(vehicle_id)
        if edge not in self._edge_row:
            raise NetSimError(f"place {vehicle_id!r}: unknown edge {edge!r}")
        e = self._edge_row[edge]
        lanes = int(self._net["edge_lanes"][e])
        if not 0 <= lane < lanes:
            raise NetSimError(
                f"place {vehicle_id!r}: lane = {lane} on {edge!r}; allowed: 0..{lanes - 1}"
            )
        if not (speed_mps >= 0.0 and math.isfinite(speed_mps)):
            raise NetSimError(f"place {vehicle_id!r}: speed_mps = {speed_mps}; must be >= 0")
        self._put_on_road(row, e, lane, pos_m, speed_mps)
        if self.state["pred"][row] >= 0:
            self.state["mode"][row] = MODE_GAP

    def set_vehicle_type(self, vehicle_id: str, vtype: str) -> None:
        """Give a vehicle another of this simulation's types before the run starts (each
        instance of a batch its own setting: a CACC time gap, a car's braking).

        Raises:
            NetSimError: for an unknown vehicle or type, after the run has started, or with
                manoeuvres on (their registry was built from the types).
        """
        row = self._row(vehicle_id)
        if vtype not in self._type_row:
            raise NetSimError(
                f"set_vehicle_type {vehicle_id!r}: vtype = {vtype!r}; allowed: "
                f"{sorted(self._type_row)}"
            )
        if self.step > 0 or self._manager is not None:
            raise NetSimError(
                f"set_vehicle_type {vehicle_id!r}: allowed only before the run starts and "
                "without manoeuvres"
            )
        self.state["vtype"][row] = self._type_row[vtype]

    def schedule_cut_in(
        self, t_s: float, vehicle_id: str, ahead_of: str, gap_m: float, speed_mps: float
    ) -> None:
        """At ``t_s``, ``vehicle_id`` cuts in right ahead of ``ahead_of``: it moves into that
        vehicle's lane with its rear bumper ``gap_m`` ahead of that vehicle's front bumper,
        at ``speed_mps`` (TraCI's ``moveTo`` plus ``setSpeed``; a vehicle that has not
        departed enters the road there, as from an adjacent lane this engine did not need to
        simulate).  The vehicle behind then sees it as its leader (a platoon member falls
        back to ACC).  Logged as a ``cut-in`` event; the time is rounded to a step.

        Raises:
            NetSimError: now, for an unknown vehicle, a negative gap or speed; at ``t_s``,
                when ``ahead_of`` is not driving or the car would not fit between it and the
                vehicle ahead of it.
        """
        row, behind = self._row(vehicle_id), self._row(ahead_of)
        if row == behind:
            raise NetSimError(f"cut-in of {vehicle_id!r} ahead of itself; allowed: another vehicle")
        if not (gap_m >= 0.0 and math.isfinite(gap_m)):
            raise NetSimError(f"cut-in of {vehicle_id!r}: gap_m = {gap_m}; must be >= 0")
        if not (speed_mps >= 0.0 and math.isfinite(speed_mps)):
            raise NetSimError(f"cut-in of {vehicle_id!r}: speed_mps = {speed_mps}; must be >= 0")
        step_t = round(t_s / self.dt_s) * self.dt_s

        def go() -> None:
            s = self.state
            t_now = self.step * self.dt_s
            if s["status"][behind] != nk.ST_DRIVING:
                raise NetSimError(
                    f"cut-in of {vehicle_id!r} at {t_now:g} s: {ahead_of!r} is not driving"
                )
            e, ln = int(s["edge"][behind]), int(s["lane"][behind])
            length = self._vt[s["vtype"][row], nk.VT_LENGTH_M]
            front = float(s["pos_m"][behind]) + gap_m + length
            # the room up to the next vehicle ahead in that lane (same instance and edge)
            ahead = np.flatnonzero(
                (s["status"] == nk.ST_DRIVING)
                & (s["inst"] == s["inst"][behind])
                & (s["edge"] == e)
                & (s["lane"] == ln)
                & (s["pos_m"] > s["pos_m"][behind])
            )
            ahead = ahead[ahead != row]
            if ahead.size:
                j = int(ahead[np.argmin(s["pos_m"][ahead])])
                rear = float(s["pos_m"][j] - self._vt[s["vtype"][j], nk.VT_LENGTH_M])
                if front > rear:
                    raise NetSimError(
                        f"cut-in of {vehicle_id!r} at {t_now:g} s: gap_m = {gap_m:g} puts its "
                        f"front {front - rear:.2f} m into {self.vehicle_ids[j]!r}; allowed: "
                        f"gap_m <= {rear - length - float(s['pos_m'][behind]):.2f}"
                    )
            self._put_on_road(row, e, ln, front, speed_mps)
            s["lane_changes"][row] += 1
            ev: dict[str, object] = {
                "time_s": round(t_now, 6),
                "kind": "cut-in",
                "vehicle_id": self.vehicle_ids[row],
                "edge": self.edge_ids[e],
                "lane": ln,
                "ahead_of": self.vehicle_ids[behind],
            }
            if self.instances > 1:
                ev["instance"] = int(s["inst"][row])
            self._scripted_events.append(ev)

        self._requests.append((step_t, go))

    def schedule_speed_cap(self, t_s: float, vehicle_id: str, cap_mps: float) -> None:
        """From ``t_s`` (rounded to a step), ``vehicle_id`` drives at most ``cap_mps`` (its
        driver's own limit, like a trip's ``speed_cap_mps``; ``math.inf`` lifts it).  A cap
        lowered by ``d * dt`` every step brakes a vehicle at ``d`` as long as ``d`` is within
        its type's ``decel_mps2``.

        Raises:
            NetSimError: for an unknown vehicle or a cap that is not > 0.
        """
        row = self._row(vehicle_id)
        if not cap_mps > 0.0:
            raise NetSimError(f"speed cap of {vehicle_id!r}: cap_mps = {cap_mps}; must be > 0")

        def go() -> None:
            self.state["speed_cap_mps"][row] = cap_mps
            if self._manager is not None:
                self._trip_caps[row] = cap_mps  # the manoeuvres rebuild caps from these

        self._requests.append((round(t_s / self.dt_s) * self.dt_s, go))

    def schedule_speed_ramp(
        self,
        t_s: float,
        vehicle_id: str,
        from_mps: float,
        rate_mps2: float,
        steps: int,
        floor_mps: float,
    ) -> None:
        """From ``t_s`` (rounded to a step), a cap on ``vehicle_id`` that falls at
        ``rate_mps2`` for ``steps`` steps: over the ``j``-th step of the ramp the cap is
        ``max(from_mps - rate_mps2 * (j + 1) * dt_s, floor_mps)`` (the speed at its end), and
        after the last one the cap is lifted (``math.inf``); 0 steps do nothing. The same run as
        ``schedule_speed_cap`` called for each of those steps and once with ``math.inf``
        after them, which it stands for: without manoeuvres the step (Numba's or JAX's) sets
        the caps itself, with no call split at every step (``net_kernel.RAMP_*``).

        Raises:
            NetSimError: for an unknown vehicle, a floor that is not > 0, a rate that is not
                finite or a negative number of steps.
        """
        row = self._row(vehicle_id)
        if not (floor_mps > 0.0 and math.isfinite(rate_mps2) and math.isfinite(from_mps)):
            raise NetSimError(
                f"speed ramp of {vehicle_id!r}: from_mps = {from_mps}, rate_mps2 = "
                f"{rate_mps2}, floor_mps = {floor_mps}; allowed: finite, floor_mps > 0"
            )
        if steps < 0:
            raise NetSimError(f"speed ramp of {vehicle_id!r}: steps = {steps}; allowed: >= 0")
        if steps == 0:
            return  # no ramp, and no cap lifted
        if self._manager is not None:
            # the manoeuvres' caps go through the requests
            for j in range(steps):
                cap = nk.ramp_cap_mps(from_mps, rate_mps2, j, self.dt_s, floor_mps)
                self.schedule_speed_cap(t_s + j * self.dt_s, vehicle_id, cap)
            self.schedule_speed_cap(t_s + steps * self.dt_s, vehicle_id, math.inf)
            return
        first = round(t_s / self.dt_s)
        self._cap_ramps.append((row, first, steps, from_mps, rate_mps2, floor_mps))

    @property
    def vehicle_length_m(self) -> NDArray[np.float64]:
        """(n,) each vehicle's body length [m], by row (``vehicle_ids``)."""
        return self._vt[self.state["vtype"], nk.VT_LENGTH_M]

    def _ramp_table(self) -> np.ndarray:
        """The scheduled speed-cap ramps as the steps take them (``nk.RAMP_*`` rows)."""
        return np.array(self._cap_ramps, dtype=np.float64).reshape(-1, nk.RAMP_SIZE)

    # --- backends -------------------------------------------------------------------------
    def _jax(self) -> types.ModuleType:
        """``net_jax``, imported on first use (JAX is an optional dependency)."""
        try:
            from convoy.sim import net_jax
        except ImportError as exc:
            raise NetSimError(
                f"backend {self.backend!r} needs JAX ({exc}); install it (pip install jax), or "
                "for an NVIDIA GPU convoy's gpu extra (JAX for CUDA 12); or use backend 'cpu'"
            ) from None
        return net_jax

    def _gpu(self) -> object:
        """The first GPU JAX sees (``backend_jax.gpu_device``: ScenarioError if none)."""
        self._jax()  # JAX is there, or a NetSimError says how to install it
        from convoy.sim.backend_jax import gpu_device

        return gpu_device()

    def _jax_options(self) -> dict[str, object]:
        if self.backend == "gpu":
            # the fixed-length loops as straight code: 13 % faster on an H200 (the same
            # results; docs/benchmarks.md, the network engine on a GPU)
            return {"precision": "float32", "device": self._gpu(), "unroll_inner": True}
        return {"precision": "float64"}

    def _check_backend(self) -> None:
        """Refuse an unknown backend, and a scenario the JAX step does not run."""
        if self.backend not in NET_BACKENDS:
            raise NetSimError(f"backend = {self.backend!r}; allowed: {', '.join(NET_BACKENDS)}")
        if self.backend == "cpu":
            return
        gaps = self._jax().unsupported(self)
        if gaps:
            raise NetSimError(
                f"backend {self.backend!r}: the JAX network step does not have "
                f"{'; '.join(gaps)}; use backend 'cpu'"
            )
        if self.backend == "gpu":
            try:
                self._gpu()
            except ScenarioError as exc:
                raise NetSimError(str(exc)) from None

    # --- running --------------------------------------------------------------------------
    def _edge_caps(self, t_s: float) -> np.ndarray:
        cap = np.full(len(self.edge_ids), np.inf)
        for c in self.speed_caps:
            if c.start_s <= t_s < c.end_s:
                for e in c.edges:
                    cap[self._edge_row[e]] = min(cap[self._edge_row[e]], c.cap_mps)
        return cap

    def _change_times(self) -> list[float]:
        times = {t for c in self.speed_caps for t in (c.start_s, c.end_s)}
        times |= {t for c in self.lane_closures for t in (c.start_s, c.end_s)}
        return sorted(times)

    def _closed_lanes(self, t_s: float) -> np.ndarray:
        closed = np.zeros((len(self.edge_ids), self.max_lanes), dtype=np.int8)
        for c in self.lane_closures:
            if c.start_s <= t_s < c.end_s:
                closed[self._edge_row[c.edge], c.lane] = 1
        return closed

    def run(
        self,
        until_s: float,
        progress: Callable[[float], None] | None = None,
        chunk_steps: int = 600,
        fcd_rows: int = 2_000_000,
    ) -> NetResult:
        """Run until ``until_s``; ``progress(t_s)`` is called after each compiled chunk.

        Raises:
            NetSimError: for an ``until_s`` that is not a finite time of 0 or more.
        """
        import time

        if not 0.0 <= until_s < math.inf:
            raise NetSimError(f"run: until_s = {until_s}; allowed: a finite time of 0 or more")
        if self.backend != "cpu":
            return self._jax().run(self, until_s, progress, chunk_steps, **self._jax_options())

        end_step = round(until_s / self.dt_s)
        n = self.n
        cap = max(fcd_rows, n + 1)
        fcd = np.zeros((cap, len(nk.FCD_COLUMNS)))
        fcd_veh = np.zeros(cap, dtype=np.int64)
        ev = np.zeros((max(16 * n + 64, 4096), nk.EV_SIZE), dtype=np.int64)
        fcd_parts: list[tuple[np.ndarray, np.ndarray]] = []
        ev_parts: list[np.ndarray] = []
        ev_parts_py: list[dict[str, object]] = []
        changes = [round(t / self.dt_s) for t in self._change_times()]
        s = self.state
        net = self._net
        wall = 0.0
        consts = nk.call_constants(self._vt, self._pt, self.ambient_c, self.dt_s, net["edge_grade"])
        ramps = self._ramp_table()
        while self.step < end_step:
            nxt = min(end_step, self.step + chunk_steps)
            for t_req, _ in self._requests:
                k = round(t_req / self.dt_s)
                if self.step < k < nxt:
                    nxt = k
            man_events = self._manoeuvre_tick()
            if man_events:
                ev_parts_py.extend(man_events)
            if self._manager is not None and self._manager.active() > 0:
                nxt = self.step + 1  # a manoeuvre under way: one control tick per step
            for c in changes:
                if self.step < c < nxt:
                    nxt = c
            caps = self._edge_caps(self.step * self.dt_s)
            closed = self._closed_lanes(self.step * self.dt_s)
            step_fn, nxt = self._chooser.pick(
                nk.step_variant(s["status"], s["ready_s"], nxt * self.dt_s), self.step, nxt
            )
            # (a dispatcher's ``signatures`` hashes its ~90 argument types: 0.2 ms, asked
            # once per variant and process)
            warm = step_fn in _STEPS_RUN or bool(getattr(step_fn, "signatures", None))
            driving = int(np.count_nonzero(s["status"] == nk.ST_DRIVING))
            # (a call of a few steps, a manoeuvre's control tick, is not worth the 0.3 ms)
            threaded = step_fn is nk.run_net_steps_parallel
            perm = self._road_order() if threaded and nxt - self.step >= nk.PROBE_STEPS else None
            if perm is not None:
                self._renumber(perm)
            t0 = time.perf_counter()
            done, fcd_n, ev_n = step_fn(
                net["edge_len_m"],
                net["edge_lanes"],
                net["edge_speed_mps"],
                net["edge_grade"],
                net["edge_from"],
                net["edge_to"],
                net["edge_rank"],
                net["edge_arm_rad"],
                net["edge_links"],
                caps,
                closed,
                net["node_junction"],
                net["pred_ptr"],
                net["pred_edge"],
                net["succ_ptr"],
                net["succ_edge"],
                net["sig"],
                self.max_lanes,
                self._vt,
                self._cacc,
                self._acc,
                self._pt,
                self._route_edges,
                self._leg_lo,
                self._leg_hi,
                self._leg_dwell,
                self._leg_site,
                self._site_capacity,
                self._site_load,
                s["inst"],
                s["local"],
                s["vtype"],
                s["status"],
                s["edge"],
                s["lane"],
                s["pos_m"],
                s["speed_mps"],
                s["accel_mps2"],
                s["route_ptr"],
                s["leg"],
                s["leg_end"],
                s["ready_s"],
                s["platoon"],
                s["pred"],
                s["after"],
                s["plat_next"],
                s["drag_row"],
                s["mode"],
                s["beacon_age_s"],
                s["extra_gap_m"],
                s["speed_cap_mps"],
                s["set_speed_mps"],
                s["lc_out"],
                s["energy_kwh"],
                s["distance_m"],
                s["min_ttc_s"],
                s["hard_brakes"],
                s["lane_changes"],
                self._plat_head,
                self._plat_lc,
                self._order,
                self._rank,
                self._bucket_start,
                self._scratch,
                self._head_of,
                self._keys,
                self._v_next,
                self._gap_now,
                self._ctl_gap,
                self._coop,
                self._leader,
                self._lc_target,
                self._inserted_at,
                self._step_flags,
                self._active,
                self._touched,
                self._slot_of,
                self.step,
                nxt - self.step,
                self.dt_s,
                self.seed,
                self.loss,
                self.beacon_period_steps,
                self.lc_period_steps,
                self.ambient_c,
                self.instances,
                self.record_every,
                fcd,
                fcd_veh,
                0,
                ev,
                0,
                ramps,
                *consts,
            )
            call_s = time.perf_counter() - t0
            if perm is not None:
                self._restore(perm, fcd_veh[:fcd_n], ev[:ev_n])
            _STEPS_RUN.add(step_fn)
            wall += call_s
            self._chooser.record(step_fn, warm, call_s, done, driving * done)
            self.step += done
            if fcd_n:
                fcd_parts.append((fcd[:fcd_n].copy(), fcd_veh[:fcd_n].copy()))
            if ev_n:
                ev_parts.append(ev[:ev_n].copy())
            if progress is not None:
                progress(self.step * self.dt_s)
            if done == 0 and fcd_n == 0 and ev_n == 0:
                raise RuntimeError("network engine made no progress (output buffers too small)")
        res = self._result(fcd_parts, ev_parts, wall)
        if ev_parts_py:
            res.events = sorted(res.events + ev_parts_py, key=lambda e: float(e["time_s"]))  # type: ignore[arg-type]
        return res

    # --- road-order storage for the threaded step ----------------------------------------
    #: per-vehicle arrays of the kernel besides ``state`` (``_active`` is rebuilt by every
    #: call, ``_touched`` fully checked on a call's first step: neither needs renumbering)
    _PER_VEHICLE_SCRATCH = (
        "_rank",
        "_keys",
        "_v_next",
        "_gap_now",
        "_ctl_gap",
        "_coop",
        "_leader",
        "_lc_target",
    )

    def _road_order(self) -> np.ndarray | None:
        """The vehicles in the last lane sort's order (the front-most of each lane first),
        then those off the road by number: the slots for a call of the threaded step, or
        None where the kernel's arrays are not stored by vehicle (a single thread).

        The threaded step splits the vehicles between the threads by slot. Stored by number,
        a vehicle's leader is anywhere in the fleet, and half of the leader reads fetch a line
        the other core wrote in the last step; in road order the neighbours on the road are
        neighbours in memory (the kernel alone on the one-lane bench ring, two threads:
        41.3 -> 30.4 ns per vehicle-step; ``scripts/road_order_storage.py``,
        docs/benchmarks.md)."""
        if numba.get_num_threads() < 2:
            return None
        nb = self._bucket_start.shape[0] - 2
        on = self._order[: self._bucket_start[nb]]
        off = np.ones(self.n, dtype=bool)
        off[on] = False
        return np.concatenate([on, np.flatnonzero(off)]).astype(np.int64)

    def _renumber(self, perm: np.ndarray) -> None:
        """Store the vehicles in slots ``perm`` (``perm[slot]`` = the vehicle's number): every
        per-vehicle array gathered, every array that holds vehicles mapped to slots. The
        kernel's serial passes still go in number order (``_slot_of``), so a call gives the
        same results, events and FCD as with the vehicles stored by number."""
        self._slot_of[perm] = np.arange(self.n, dtype=self._slot_of.dtype)
        self._move_vehicles(perm, to_slots=True)

    def _restore(self, perm: np.ndarray, fcd_veh: np.ndarray, events: np.ndarray) -> None:
        """Undo ``_renumber(perm)``, and turn the slots in a call's FCD rows and events into
        vehicle numbers."""
        self._move_vehicles(perm, to_slots=False)
        self._slot_of[:] = np.arange(self.n, dtype=self._slot_of.dtype)
        fcd_veh[:] = perm[fcd_veh]
        # the events' vehicle, and a collision's other vehicle
        events[:, 2] = perm[events[:, 2]]
        col = events[:, 1] == nk.EV_COLLISION
        events[col, 3] = perm[events[col, 3]]

    def _move_vehicles(self, perm: np.ndarray, to_slots: bool) -> None:
        """Every per-vehicle array from numbers to slots ``perm`` (``to_slots``, with
        ``_slot_of`` already set) or back, and the vehicles held as values mapped alike."""
        s = self.state
        for a in (*s.values(), *(getattr(self, k) for k in self._PER_VEHICLE_SCRATCH)):
            if to_slots:
                a[:] = a[perm]
            else:
                a[perm] = a.copy()
        new_of = self._slot_of if to_slots else perm
        for a in (s["pred"], s["after"], s["plat_next"], self._head_of, self._plat_head):
            has = a >= 0
            a[has] = new_of[a[has]]
        self._order[:] = new_of[self._order]

    def _result(
        self,
        fcd_parts: list[tuple[np.ndarray, np.ndarray]],
        ev_parts: list[np.ndarray],
        wall: float,
    ) -> NetResult:
        s = self.state
        if fcd_parts:
            rows = np.concatenate([p[0] for p in fcd_parts])
            vehs = np.concatenate([p[1] for p in fcd_parts])
        else:
            rows = np.zeros((0, len(nk.FCD_COLUMNS)))
            vehs = np.zeros(0, dtype=np.int64)
        fcd = {c: rows[:, k] for k, c in enumerate(nk.FCD_COLUMNS)}
        fcd["vehicle"] = vehs.astype(np.float64)
        evs = np.concatenate(ev_parts) if ev_parts else np.zeros((0, nk.EV_SIZE), np.int64)
        events = [self._event_dict(r) for r in evs]
        collisions = int(np.sum(evs[:, 1] == nk.EV_COLLISION)) if len(evs) else 0
        return NetResult(
            vehicle_ids=self.vehicle_ids,
            instance=s["inst"].copy(),
            edge_ids=self.edge_ids,
            fcd=fcd,
            events=events,
            energy_kwh=s["energy_kwh"].copy(),
            distance_m=s["distance_m"].copy(),
            min_ttc_s=s["min_ttc_s"].copy(),
            hard_brakes=s["hard_brakes"].copy(),
            lane_changes=s["lane_changes"].copy(),
            status=s["status"].copy(),
            collisions=collisions,
            steps=self.step,
            wall_s=wall,
        )

    def _event_dict(self, r: np.ndarray) -> dict[str, object]:
        step, code, veh, a, b, c = (int(x) for x in r)
        d: dict[str, object] = {
            "time_s": round(step * self.dt_s, 6),
            "kind": nk.EVENT_NAMES[code],
            "vehicle_id": self.vehicle_ids[veh],
        }
        if code in (nk.EV_ARRIVE_SITE, nk.EV_LEAVE_SITE, nk.EV_FINISH):
            d["site"] = self._site_ids[a] if a >= 0 else None
        elif code == nk.EV_COLLISION:
            d["other_id"] = self.vehicle_ids[a]
            d["edge"] = self.edge_ids[b]
            d["lane"] = c
        elif code in (nk.EV_DEPART, nk.EV_CUT_IN, nk.EV_LANE_CHANGE, nk.EV_PLATOON_LANE_CHANGE):
            d["edge"] = self.edge_ids[a]
            d["lane"] = b
        if self.instances > 1:
            d["instance"] = int(self.state["inst"][veh])
        return d


class _View:
    """The engine's state as the manoeuvre manager sees it (``manoeuvres.VehicleView``)."""

    def __init__(self, sim: NetSim) -> None:
        self._sim = sim
        self._s = sim.state
        self.time_s = sim.step * sim.dt_s
        self._len = sim._vt[:, nk.VT_LENGTH_M]
        self._net = sim._net

    def gap_m(self, follower: int, leader: int) -> float:
        s = self._s
        if s["status"][follower] != nk.ST_DRIVING or s["status"][leader] != nk.ST_DRIVING:
            return math.inf
        if s["lane"][follower] != s["lane"][leader]:
            return math.inf
        rear = s["pos_m"][leader] - self._len[s["vtype"][leader]]
        ef, el = s["edge"][follower], s["edge"][leader]
        if ef == el:
            g = rear - s["pos_m"][follower]
            return float(g) if g >= -self._len[s["vtype"][leader]] else math.inf
        rp = s["route_ptr"][follower] + 1
        if rp < self._sim._leg_hi[s["leg"][follower]] and self._sim._route_edges[rp] == el:
            return float(self._net["edge_len_m"][ef] - s["pos_m"][follower] + rear)
        return math.inf

    def speed_mps(self, v: int) -> float:
        return float(self._s["speed_mps"][v])

    def lane(self, v: int) -> int:
        return int(self._s["lane"][v])

    def pos_key(self, v: int) -> float:
        s = self._s
        lo = self._sim._leg_lo[s["leg"][v]]
        before = self._net["edge_len_m"][self._sim._route_edges[lo : s["route_ptr"][v]]].sum()
        return float(before + s["pos_m"][v])

    def distance_m(self, a: int, b: int) -> float:
        return abs(self.pos_key(a) - self.pos_key(b))

    def desired_gap_m(self, follower: int) -> float:
        ty = self._s["vtype"][follower]
        vt = self._sim._vt
        return float(vt[ty, nk.VT_MIN_GAP_M] + vt[ty, nk.VT_TIME_GAP_S] * self.speed_mps(follower))
