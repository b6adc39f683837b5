"""Weather and road hazards: events with an area and a time window, their ODD flags, their RSI.

A ``HazardEvent`` is a dust storm, snow or ice, road works or a strong crosswind over an area
(a lon/lat polygon, or a corridor span of one edge) for ``[start_s, end_s)``.  It carries
effects — a speed limit, a visibility that bounds the sensor range, a tyre-road friction that
bounds braking, closed lanes, a crosswind — with cited defaults per kind, and the
operating-design-domain (ODD) flags that remote supervision in the cloud layer acts on.
Roadside units within ``alert_range_m`` of an event broadcast it as an RSI message
(``rsi_for``, ``rsus_in_range``).

For the 1-D corridor engine the events and RSUs become arrays (``hazard_table``,
``rsu_table``) and ``hazard_effects`` is the compiled per-truck step.  Its semantics:

* **Knowing.**  A truck knows an active hazard once its front bumper is inside the span (its
  own sensors) or once it is within the coverage radius of an RSU whose alert range reaches
  the span (the RSI broadcast).  The second happens upstream, so the truck learns ahead of
  the hazard.  Knowledge is kept until the hazard ends.
* **Acting.**  A known hazard that is ahead within ``PREVIEW_M`` or under the truck imposes
  its speed limit through a braking envelope: the allowed speed at distance ``d`` before the
  span is ``sqrt(v_lim² + 2·b·max(d - APPROACH_MARGIN_M, 0))`` with ``b =
  APPROACH_DECEL_MPS2``, so the truck slows gently and reaches ``v_lim`` a margin before it
  enters.  A truck that learns only on entering cannot do that and brakes inside.
* **Physics.**  Inside the span, whatever the truck knows, friction caps the deceleration at
  ``μ·g`` and visibility caps the sensor range.
* **ODD flags.**  Set while the truck knows an active hazard it has not yet passed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntFlag, StrEnum

import numpy as np
from numba import njit

from convoy.road.network import RoadsideUnit, haversine_m
from convoy.road.v2x import (
    RSI,
    EventSource,
    Position3D,
    ReferencePath,
    RSITimeDetails,
    RteData,
)

STANDARD_GRAVITY_MPS2 = 9.80665  # CGPM 1901

# A known hazard this far ahead starts to bind the speed (through the envelope below).
PREVIEW_M = 2_000.0
# Deceleration of the approach envelope.  Gentle on purpose — a quarter of the 2 m/s²
# comfortable deceleration of trucks in IDM (Treiber & Kesting 2013, Table 11.2) — so that a
# CACC string tracks it without amplifying it.
APPROACH_DECEL_MPS2 = 0.5
# The envelope reaches the hazard's limit this far before the span, so a truck is at or below
# the limit when its front bumper enters even with one step of travel at 0.1 s.
APPROACH_MARGIN_M = 50.0
# How far from an RSU the events it broadcasts may lie.  A design value: the traffic centre
# feeds each RSU the events of the next few kilometres, enough to slow a platoon from
# 25 m/s to 8 m/s at APPROACH_DECEL_MPS2 (~560 m) with room to spare.
DEFAULT_RSI_ALERT_RANGE_M = 5_000.0
# 《道路交通安全法实施条例》(Regulations on the Implementation of the PRC Road Traffic
# Safety Law, 2004), Art. 81, expressways in fog, rain, snow, sand-dust or hail: visibility
# < 200 m -> at most 60 km/h; < 100 m -> 40 km/h; < 50 m -> 20 km/h (and leave at the next
# exit).  Below 200 m is "low visibility" for the ODD flag.
LOW_VISIBILITY_M = 200.0
_VISIBILITY_LIMITS_KMH = ((50.0, 20.0), (100.0, 40.0), (200.0, 60.0))
# Below this tyre-road friction the road counts as slippery (Wallman & Åström, VTI
# meddelande 911A, 2001: packed snow ~0.2-0.3, ice ~0.1-0.2, dry asphalt 0.7-0.9).
LOW_FRICTION = 0.3

# Knowledge states in the per-truck ``known`` row.
KNOWN_NOT = 0
KNOWN_SENSED = 1  # entered the span: own sensors
KNOWN_RSI = 2  # heard an RSU's RSI broadcast

# Columns of the (k, HZ_SIZE) float64 hazard table.
HZ_START_M = 0
HZ_END_M = 1
HZ_START_S = 2
HZ_END_S = 3
HZ_SPEED_LIMIT_MPS = 4  # inf if none
HZ_MAX_DECEL_MPS2 = 5  # μ·g, inf if the friction is not reduced
HZ_SENSOR_RANGE_M = 6  # visibility, inf if not reduced
HZ_ODD_FLAGS = 7  # OddFlags as a float (exact up to 2**53)
HZ_SIZE = 8

# Columns of the (m, RSU_SIZE) float64 RSU table.
RSU_POS_M = 0
RSU_RADIUS_M = 1
RSU_ALERT_RANGE_M = 2
RSU_SIZE = 3


def _kmh(v: float) -> float:
    return v / 3.6


class HazardKind(StrEnum):
    """What the hazard is."""

    DUST_STORM = "dust_storm"
    SNOW_ICE = "snow_ice"
    ROAD_WORKS = "road_works"
    CROSSWIND = "crosswind"


class OddFlags(IntFlag):
    """Operating-design-domain flags a truck carries; the cloud layer's remote supervision
    raises takeover requests on them.  Hazards set the first seven; ``SENSOR_FAULT`` and
    ``COMM_LOSS`` are for the vehicle and channel models."""

    NONE = 0
    DUST = 1
    ICE = 2
    ROAD_WORKS = 4
    CROSSWIND = 8
    LOW_VISIBILITY = 16
    LOW_FRICTION = 32
    LANE_CLOSED = 64
    SENSOR_FAULT = 128
    COMM_LOSS = 256


KIND_FLAGS: dict[HazardKind, OddFlags] = {
    HazardKind.DUST_STORM: OddFlags.DUST,
    HazardKind.SNOW_ICE: OddFlags.ICE,
    HazardKind.ROAD_WORKS: OddFlags.ROAD_WORKS,
    HazardKind.CROSSWIND: OddFlags.CROSSWIND,
}

# RTEData.eventType codes (GB/T 29100-2012, the code list T/CSAE 53 names).  408 ("road
# slippery") is the code open CSAE 53 implementations use; the table itself could not be
# checked, so the other kinds carry convoy-local codes above 60000, clear of the standard's
# three-digit range, until they are.
EVENT_TYPE_CODES: dict[HazardKind, int] = {
    HazardKind.SNOW_ICE: 408,
    HazardKind.DUST_STORM: 60_001,
    HazardKind.ROAD_WORKS: 60_002,
    HazardKind.CROSSWIND: 60_003,
}
_EVENT_SOURCES: dict[HazardKind, EventSource] = {
    HazardKind.DUST_STORM: "meteorological",
    HazardKind.SNOW_ICE: "meteorological",
    HazardKind.ROAD_WORKS: "government",
    HazardKind.CROSSWIND: "meteorological",
}
# RSI priority 0..7, convoy's ranking by how much the hazard takes from braking and sight.
_PRIORITIES: dict[HazardKind, int] = {
    HazardKind.SNOW_ICE: 7,
    HazardKind.DUST_STORM: 6,
    HazardKind.CROSSWIND: 5,
    HazardKind.ROAD_WORKS: 4,
}


@dataclass(frozen=True, slots=True)
class HazardDefaults:
    """Effects a kind has when the event does not say otherwise (``None`` = no effect)."""

    speed_limit_mps: float | None
    visibility_m: float | None = None
    friction: float | None = None
    lanes_closed: int = 0
    crosswind_mps: float | None = None


KIND_DEFAULTS: dict[HazardKind, HazardDefaults] = {
    # Dust storm: visibility < 1 km (WMO; GB/T 20480-2006 沙尘天气等级: 沙尘暴 < 1 km,
    # 强沙尘暴 < 500 m, 特强沙尘暴 < 50 m).  150 m is a strong dust storm, where Art. 81
    # limits expressway traffic to 60 km/h.
    HazardKind.DUST_STORM: HazardDefaults(speed_limit_mps=_kmh(60.0), visibility_m=150.0),
    # Snow and ice: μ ≈ 0.1-0.2 on ice (Wallman & Åström 2001); Art. 46 of the same
    # regulations caps speed on icy or snowy roads at 30 km/h.
    HazardKind.SNOW_ICE: HazardDefaults(speed_limit_mps=_kmh(30.0), friction=0.15),
    # Road works: one lane closed; JTG H30-2015 (公路养护安全作业规程) steps expressway
    # work-zone limits down to 40-60 km/h — 60 km/h is an estimate from that range.
    HazardKind.ROAD_WORKS: HazardDefaults(speed_limit_mps=_kmh(60.0), lanes_closed=1),
    # Strong crosswind: Beaufort 8 starts at 17.2 m/s (WMO).  High-sided vehicles are at risk
    # of overturning there; 60 km/h is an estimate of the restrictions expressway operators
    # apply at that level.
    HazardKind.CROSSWIND: HazardDefaults(speed_limit_mps=_kmh(60.0), crosswind_mps=17.2),
}


class HazardError(ValueError):
    """A hazard or RSU that cannot be used; the message names it and the problem."""


def speed_limit_for_visibility_mps(visibility_m: float) -> float | None:
    """Art. 81 expressway limit for a visibility [m/s], ``None`` at 200 m and above."""
    for below_m, kmh in _VISIBILITY_LIMITS_KMH:
        if visibility_m < below_m:
            return _kmh(kmh)
    return None


@dataclass(frozen=True, slots=True)
class PolygonArea:
    """An area as a lon/lat ring (WGS84 degrees), closed implicitly, at least 3 points."""

    ring: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class CorridorSpan:
    """A stretch of one edge, ``[start_m, end_m]`` from its start.  ``edge = ""`` is the
    single road of a 1-D scenario."""

    start_m: float
    end_m: float
    edge: str = ""


@dataclass(frozen=True, slots=True)
class HazardEvent:
    """A hazard over an area and a time window.

    Build one with ``HazardEvent.create`` to fill the effects left out from
    ``KIND_DEFAULTS``.

    Attributes:
        id: unique id.
        kind: see ``HazardKind``.
        area: a polygon or a corridor span.
        start_s, end_s: active for ``start_s <= t < end_s`` [s]; ``end_s`` may be inf.
        speed_limit_mps: speed limit inside [m/s], ``None`` if none.
        visibility_m: visibility inside; sensors see no farther [m], ``None`` if not reduced.
        friction: tyre-road friction coefficient μ inside; braking is capped at ``μ·g``.
        lanes_closed: lanes closed (road works).
        crosswind_mps: crosswind speed [m/s].
    """

    id: str
    kind: HazardKind
    area: PolygonArea | CorridorSpan
    start_s: float
    end_s: float
    speed_limit_mps: float | None = None
    visibility_m: float | None = None
    friction: float | None = None
    lanes_closed: int = 0
    crosswind_mps: float | None = None

    def __post_init__(self) -> None:
        where = f"hazard {self.id!r}"
        if not self.start_s >= 0 or not self.end_s > self.start_s:
            raise HazardError(
                f"{where}: time window [{self.start_s}, {self.end_s}] must have "
                "0 <= start_s < end_s"
            )
        a = self.area
        if isinstance(a, CorridorSpan):
            if not (math.isfinite(a.start_m) and math.isfinite(a.end_m)) or not (
                0 <= a.start_m < a.end_m
            ):
                raise HazardError(
                    f"{where}: span [{a.start_m}, {a.end_m}] m must have 0 <= start_m < end_m"
                )
        elif len(a.ring) < 3:
            raise HazardError(f"{where}: a polygon needs at least 3 points, got {len(a.ring)}")
        else:
            for lon, lat in a.ring:
                if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                    raise HazardError(f"{where}: polygon point ({lon}, {lat}) is not lon/lat")
        checks = (
            ("speed_limit_mps", self.speed_limit_mps, 0.0, math.inf),
            ("visibility_m", self.visibility_m, 0.0, math.inf),
            ("friction", self.friction, 0.0, 1.5),
            ("crosswind_mps", self.crosswind_mps, 0.0, 100.0),
        )
        for name, value, lo, hi in checks:
            if value is not None and not (lo < value <= hi):
                raise HazardError(f"{where}: {name} = {value}; allowed: > {lo} and <= {hi}")
        if self.lanes_closed < 0:
            raise HazardError(f"{where}: lanes_closed = {self.lanes_closed}; must be >= 0")

    @staticmethod
    def create(
        id: str,
        kind: HazardKind,
        area: PolygonArea | CorridorSpan,
        start_s: float,
        end_s: float,
        *,
        speed_limit_mps: float | None = None,
        visibility_m: float | None = None,
        friction: float | None = None,
        lanes_closed: int | None = None,
        crosswind_mps: float | None = None,
    ) -> HazardEvent:
        """An event with the kind's defaults for what is left out.

        A visibility given without a speed limit also brings the Art. 81 limit for it.
        """
        d = KIND_DEFAULTS[kind]
        vis = visibility_m if visibility_m is not None else d.visibility_m
        limit = speed_limit_mps
        if limit is None:
            limit = d.speed_limit_mps
            by_vis = speed_limit_for_visibility_mps(vis) if vis is not None else None
            if by_vis is not None:
                limit = by_vis if limit is None else min(limit, by_vis)
        return HazardEvent(
            id=id,
            kind=kind,
            area=area,
            start_s=start_s,
            end_s=end_s,
            speed_limit_mps=limit,
            visibility_m=vis,
            friction=friction if friction is not None else d.friction,
            lanes_closed=lanes_closed if lanes_closed is not None else d.lanes_closed,
            crosswind_mps=crosswind_mps if crosswind_mps is not None else d.crosswind_mps,
        )

    @property
    def odd_flags(self) -> OddFlags:
        """The flags a truck that knows this event carries."""
        f = KIND_FLAGS[self.kind]
        if self.visibility_m is not None and self.visibility_m < LOW_VISIBILITY_M:
            f |= OddFlags.LOW_VISIBILITY
        if self.friction is not None and self.friction < LOW_FRICTION:
            f |= OddFlags.LOW_FRICTION
        if self.lanes_closed > 0:
            f |= OddFlags.LANE_CLOSED
        return f

    @property
    def max_decel_mps2(self) -> float:
        """Braking bound ``μ·g`` [m/s²] (Coulomb friction on a level road), inf if unset."""
        return self.friction * STANDARD_GRAVITY_MPS2 if self.friction is not None else math.inf

    @property
    def sensor_range_m(self) -> float:
        """How far sensors see inside [m]: the visibility, inf if unset.  Cameras and lidar
        degrade with visibility, radar less so; taking the visibility is the cautious bound."""
        return self.visibility_m if self.visibility_m is not None else math.inf

    def active(self, t_s: float) -> bool:
        """Whether the event is active at ``t_s``."""
        return self.start_s <= t_s < self.end_s


# ---- objects: which RSUs broadcast an event, and what they send ----


def _local_xy_m(lon: float, lat: float, lon0: float, lat0: float) -> tuple[float, float]:
    """Equirectangular projection around (lon0, lat0) [m]; fine over tens of kilometres."""
    r = 6_371_008.8
    x = math.radians(lon - lon0) * r * math.cos(math.radians(lat0))
    y = math.radians(lat - lat0) * r
    return x, y


def _polygon_distance_m(lon: float, lat: float, ring: Sequence[tuple[float, float]]) -> float:
    """Distance from a point to a lon/lat polygon [m], 0 inside it."""
    pts = [_local_xy_m(a, b, lon, lat) for a, b in ring]
    inside = False
    best = math.inf
    for k in range(len(pts)):
        (x1, y1), (x2, y2) = pts[k], pts[(k + 1) % len(pts)]
        if (y1 > 0) != (y2 > 0) and x1 + (0 - y1) * (x2 - x1) / (y2 - y1) > 0:
            inside = not inside
        dx, dy = x2 - x1, y2 - y1
        seg2 = dx * dx + dy * dy
        w = 0.0 if seg2 == 0 else min(max(-(x1 * dx + y1 * dy) / seg2, 0.0), 1.0)
        best = min(best, math.hypot(x1 + w * dx, y1 + w * dy))
    return 0.0 if inside else best


def distance_to_rsu_m(event: HazardEvent, rsu: RoadsideUnit) -> float | None:
    """Distance from an RSU to the event's area [m]; ``None`` for a span on another edge,
    where an along-road distance needs the route between them."""
    a = event.area
    if isinstance(a, CorridorSpan):
        if a.edge != rsu.edge:
            return None
        return max(a.start_m - rsu.offset_m, rsu.offset_m - a.end_m, 0.0)
    return _polygon_distance_m(rsu.lon, rsu.lat, a.ring)


def rsus_in_range(
    event: HazardEvent,
    rsus: Iterable[RoadsideUnit],
    alert_range_m: float = DEFAULT_RSI_ALERT_RANGE_M,
) -> list[RoadsideUnit]:
    """The RSUs that broadcast ``event``: those within ``alert_range_m`` of its area."""
    out = []
    for r in rsus:
        d = distance_to_rsu_m(event, r)
        if d is not None and d <= alert_range_m:
            out.append(r)
    return out


def _describe(event: HazardEvent) -> str:
    parts = [event.kind.value.replace("_", " ")]
    if isinstance(event.area, CorridorSpan):
        edge = f"edge {event.area.edge} " if event.area.edge else ""
        parts.append(f"{edge}{event.area.start_m:.0f}-{event.area.end_m:.0f} m")
    if event.speed_limit_mps is not None:
        parts.append(f"limit {event.speed_limit_mps * 3.6:.0f} km/h")
    if event.visibility_m is not None:
        parts.append(f"visibility {event.visibility_m:.0f} m")
    if event.friction is not None:
        parts.append(f"friction {event.friction:.2f}")
    if event.lanes_closed:
        parts.append(f"{event.lanes_closed} lane(s) closed")
    if event.crosswind_mps is not None:
        parts.append(f"crosswind {event.crosswind_mps:.0f} m/s")
    text = "; ".join(parts)
    return text.encode("ascii", "replace").decode()[:512]


def rsi_for(
    event: HazardEvent,
    rsu: RoadsideUnit,
    *,
    msg_cnt: int = 0,
    rte_id: int = 0,
    epoch_moy: int = 0,
) -> RSI:
    """The RSI message ``rsu`` broadcasts for ``event``.

    Args:
        event: the hazard.
        rsu: the broadcasting RSU (its id and position head the message).
        msg_cnt: message counter, 0..127.
        rte_id: the RSU's local id for the event, 0..255.
        epoch_moy: the UTC minute of the year at simulation time 0; the event's window is
            rounded outwards to whole minutes from it.
    """
    area = event.area
    pos: Position3D | None = None
    radius: float | None = None
    paths: tuple[ReferencePath, ...] | None = None
    if isinstance(area, PolygonArea):
        lon_c = sum(p[0] for p in area.ring) / len(area.ring)
        lat_c = sum(p[1] for p in area.ring) / len(area.ring)
        pos = Position3D(lat=lat_c, long=lon_c)
        radius = max(haversine_m(lon_c, lat_c, lon, lat) for lon, lat in area.ring)
        pick = np.linspace(0, len(area.ring) - 1, min(len(area.ring), 32)).round().astype(int)
        ring = tuple(Position3D(lat=area.ring[k][1], long=area.ring[k][0]) for k in pick)
        paths = (ReferencePath(activePath=ring, pathRadius=0.0),)
    else:
        radius = 0.5 * (area.end_m - area.start_m)
    last_moy = 527_039
    start = min(epoch_moy + math.floor(event.start_s / 60.0), last_moy)
    end = (
        min(epoch_moy + math.ceil(event.end_s / 60.0), last_moy)
        if math.isfinite(event.end_s)
        else None
    )
    rte = RteData(
        rteId=rte_id,
        eventType=EVENT_TYPE_CODES[event.kind],
        eventSource=_EVENT_SOURCES[event.kind],
        eventPos=pos,
        eventRadius=min(radius, 6553.5),
        description=_describe(event),
        timeDetails=RSITimeDetails(startTime=start, endTime=end),
        priority=_PRIORITIES[event.kind],
        referencePaths=paths,
    )
    return RSI(
        msgCnt=msg_cnt,
        id=rsu.id,
        refPos=Position3D(lat=rsu.lat, long=rsu.lon),
        rtes=(rte,),
    )


# ---- arrays for the 1-D engine ----


def hazard_table(events: Sequence[HazardEvent]) -> np.ndarray:
    """The events as a (k, HZ_SIZE) float64 table for ``hazard_effects``.

    Raises:
        HazardError: for an event whose area is not a corridor span.
    """
    hz = np.zeros((len(events), HZ_SIZE))
    for k, e in enumerate(events):
        if not isinstance(e.area, CorridorSpan):
            raise HazardError(
                f"hazard {e.id!r}: the corridor engine needs a corridor span, not a polygon"
            )
        hz[k, HZ_START_M] = e.area.start_m
        hz[k, HZ_END_M] = e.area.end_m
        hz[k, HZ_START_S] = e.start_s
        hz[k, HZ_END_S] = e.end_s
        hz[k, HZ_SPEED_LIMIT_MPS] = e.speed_limit_mps if e.speed_limit_mps is not None else math.inf
        hz[k, HZ_MAX_DECEL_MPS2] = e.max_decel_mps2
        hz[k, HZ_SENSOR_RANGE_M] = e.sensor_range_m
        hz[k, HZ_ODD_FLAGS] = float(int(e.odd_flags))
    return hz


def rsu_table(
    pos_m: Sequence[float],
    radius_m: Sequence[float] | float,
    alert_range_m: Sequence[float] | float = DEFAULT_RSI_ALERT_RANGE_M,
) -> np.ndarray:
    """RSUs along the 1-D road as a (m, RSU_SIZE) float64 table.

    Args:
        pos_m: positions along the road [m].
        radius_m: coverage radius [m], one per RSU or one for all.
        alert_range_m: how far from the RSU the events it broadcasts may lie [m].

    Raises:
        HazardError: for a negative position or a non-positive radius or range.
    """
    pos = np.asarray(pos_m, dtype=np.float64).reshape(-1)
    tab = np.zeros((pos.size, RSU_SIZE))
    tab[:, RSU_POS_M] = pos
    tab[:, RSU_RADIUS_M] = radius_m
    tab[:, RSU_ALERT_RANGE_M] = alert_range_m
    if pos.size and not (
        np.all(pos >= 0)
        and np.all(tab[:, RSU_RADIUS_M] > 0)
        and np.all(tab[:, RSU_ALERT_RANGE_M] > 0)
    ):
        raise HazardError("RSUs need pos_m >= 0 and a positive radius_m and alert_range_m")
    return tab


@njit(cache=True, inline="always")
def hazard_effects(
    pos_m: float,
    t_s: float,
    hz: np.ndarray,
    rsus: np.ndarray,
    known: np.ndarray,
) -> tuple[float, float, float, int, bool]:
    """What the active hazards do to one truck at one step (see the module docstring).

    Args:
        pos_m: front-bumper position along the road [m].
        t_s: time [s].
        hz: (k, HZ_SIZE) hazard table.
        rsus: (m, RSU_SIZE) RSU table.
        known: (k,) int8 knowledge of each hazard (``KNOWN_*``), updated in place.

    Returns:
        ``(speed_limit_mps, max_decel_mps2, sensor_range_m, odd_flags, learned_by_rsi)``:
        the speed cap (inf if none), the braking cap (inf if none), the sensor range (inf if
        unlimited), the ODD flags, and whether an RSI taught the truck a hazard this step.
    """
    v_lim = np.inf
    decel_cap = np.inf
    sensor_range = np.inf
    flags = 0
    learned_by_rsi = False
    for h in range(hz.shape[0]):
        if not (hz[h, HZ_START_S] <= t_s < hz[h, HZ_END_S]):
            continue
        a = hz[h, HZ_START_M]
        b = hz[h, HZ_END_M]
        inside = a <= pos_m <= b
        # know: own sensors inside the span, or an RSI from an RSU whose coverage we are in
        if known[h] == KNOWN_NOT:
            if inside:
                known[h] = KNOWN_SENSED
            else:
                for r in range(rsus.shape[0]):
                    p = rsus[r, RSU_POS_M]
                    to_span = max(a - p, p - b, 0.0)
                    covered = abs(pos_m - p) <= rsus[r, RSU_RADIUS_M]
                    if covered and to_span <= rsus[r, RSU_ALERT_RANGE_M]:
                        known[h] = KNOWN_RSI
                        learned_by_rsi = True
                        break
        # physics: the surface and the air act whether the truck knows or not
        if inside:
            decel_cap = min(decel_cap, hz[h, HZ_MAX_DECEL_MPS2])
            sensor_range = min(sensor_range, hz[h, HZ_SENSOR_RANGE_M])
        # act: flags until passed, the speed envelope within the preview distance
        if known[h] != KNOWN_NOT and pos_m <= b:
            flags |= int(hz[h, HZ_ODD_FLAGS])
            d = a - pos_m
            if d <= PREVIEW_M:
                lim = hz[h, HZ_SPEED_LIMIT_MPS]
                ahead = d - APPROACH_MARGIN_M
                if ahead > 0.0:
                    lim = math.sqrt(lim * lim + 2.0 * APPROACH_DECEL_MPS2 * ahead)
                v_lim = min(v_lim, lim)
    return v_lim, decel_cap, sensor_range, flags, learned_by_rsi
