"""Charging and battery swap at stations: FIFO queues, a planning calendar, cold-day range.

Three tools, from the same station model (:class:`convoy.cloud.entities.Station`: charge posts
of ``post_power_kw``, swap bays taking ``swap_s``):

- :func:`simulate_station`, a seeded discrete-event run of one station. Trucks arrive, join the
  queue of their service (charge or swap) and are served first come, first served by the
  first free post or bay. Events go on one priority queue of ``(time, seq, event)`` (STYLE.md
  8); ``seq`` keeps arrivals in order when times tie.
- :class:`StationCalendar`, the same rule as a reservation book, for the dispatcher: it
  answers "when would these trucks be served if they arrived at t?" and then books them, each
  into the earliest gap of any server.
- :func:`energy_per_km_kwh` and :func:`usable_range_km`, the range of an electric truck at an
  ambient temperature from the cold model of :mod:`convoy.vehicle.energy` (cabin and pack
  heating below 18 °C, battery efficiency falling below 15 °C) and the denser cold air of
  :func:`convoy.vehicle.truck.isa_air_density_kgpm3`. On the flat at 60 km/h, fully loaded,
  the range at -20 °C is about a fifth below the range at +20 °C, inside DESIGN.md's
  15-40 % winter losses and near costs.md §6's -25-30 % for an Ordos winter.

Charging time is ``energy / post_power_kw``: the taper near full and any power limit of a cold
pack are left out (costs.md §6: LFP packs need heating to charge below 0 °C; the swap packs
and depot packs are taken as heated).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from convoy.cloud.entities import EntityError, Station
from convoy.vehicle.energy import ElectricPowertrain, step_energy_kwh
from convoy.vehicle.truck import ORDOS_ALTITUDE_M, TruckSpec, isa_air_density_kgpm3

# Estimate: keep 15 % of the pack as a reserve (no source found; LFP fleets plan with 10-20 %).
DEFAULT_RESERVE_SOC = 0.15
# Estimate: depot charging stops at 95 % (the last few percent charge slowly).
DEFAULT_CHARGE_TARGET_SOC = 0.95


class ServiceMode(StrEnum):
    """How a truck is served: plugged in at a post, or its pack swapped in a bay."""

    CHARGE = "charge"
    SWAP = "swap"


def charge_time_s(battery_kwh: float, soc_from: float, soc_to: float, power_kw: float) -> float:
    """Time to charge a pack from ``soc_from`` to ``soc_to`` at ``power_kw`` [s]; 0 if full."""
    if power_kw <= 0:
        raise EntityError(f"charge_time_s: power_kw = {power_kw!r}; allowed: > 0")
    return max(0.0, soc_to - soc_from) * battery_kwh / power_kw * 3_600.0


def service_time_s(
    station: Station, mode: ServiceMode, battery_kwh: float, soc: float, target_soc: float
) -> tuple[float, float]:
    """(duration [s], state of charge after) of one service at a station."""
    if mode == ServiceMode.SWAP:
        return station.swap_s, station.swap_pack_soc
    return charge_time_s(battery_kwh, soc, target_soc, station.post_power_kw), max(soc, target_soc)


# --- discrete-event simulation of one station -------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """A truck arriving at a station.

    Attributes:
        truck_id: the truck.
        arrive_s: arrival time [s].
        mode: charge at a post or swap in a bay.
        battery_kwh: pack energy [kWh].
        soc: state of charge on arrival [-].
        target_soc: state of charge a charge stops at [-] (a swap gives the rack pack's).
    """

    truck_id: str
    arrive_s: float
    mode: ServiceMode
    battery_kwh: float = 282.0
    soc: float = 0.2
    target_soc: float = DEFAULT_CHARGE_TARGET_SOC

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ServiceMode(self.mode))
        if not (math.isfinite(self.arrive_s) and self.arrive_s >= 0):
            raise EntityError(
                f"ChargeRequest {self.truck_id!r}.arrive_s = {self.arrive_s!r}; allowed: >= 0"
            )
        for name in ("soc", "target_soc"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise EntityError(
                    f"ChargeRequest {self.truck_id!r}.{name} = {v!r}; allowed: [0, 1]"
                )


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """What happened to one request.

    Attributes:
        truck_id, mode, arrive_s: from the request.
        start_s, end_s: service start and end [s].
        wait_s: ``start_s - arrive_s`` [s].
        server: index of the post or bay that served it.
        soc_before, soc_after: state of charge on arrival and on leaving [-].
    """

    truck_id: str
    mode: ServiceMode
    arrive_s: float
    start_s: float
    end_s: float
    wait_s: float
    server: int
    soc_before: float
    soc_after: float


@dataclass(frozen=True, slots=True)
class StationRun:
    """Result of :func:`simulate_station`.

    Attributes:
        records: one per request, in arrival order.
        mean_wait_s: mean queueing time [s].
        max_queue: most trucks waiting at once (both queues together).
        utilisation: busy time of posts and bays over their capacity until the last departure.
    """

    records: tuple[ServiceRecord, ...]
    mean_wait_s: float
    max_queue: int
    utilisation: float


def simulate_station(station: Station, requests: Iterable[ChargeRequest]) -> StationRun:
    """Serve requests at one station, first come first served per service, event by event.

    Args:
        station: posts, bays, post power and swap time.
        requests: arrivals in any order; ties in time keep the given order.

    Raises:
        EntityError: a request for a service the station does not offer.
    """
    reqs = sorted(enumerate(requests), key=lambda kr: (kr[1].arrive_s, kr[0]))
    servers = {ServiceMode.CHARGE: station.charge_posts, ServiceMode.SWAP: station.swap_bays}
    for _, r in reqs:
        if servers[r.mode] == 0:
            raise EntityError(
                f"ChargeRequest {r.truck_id!r}.mode = {r.mode.value!r}; station {station.id!r} "
                f"has no {'charge posts' if r.mode == ServiceMode.CHARGE else 'swap bays'}"
            )
    free: dict[ServiceMode, list[int]] = {m: list(range(n)) for m, n in servers.items()}
    queues: dict[ServiceMode, deque[int]] = {m: deque() for m in ServiceMode}
    events: list[tuple[float, int, str, int, int]] = []  # (time, seq, kind, request, server)
    seq = 0
    for k, (_, r) in enumerate(reqs):
        events.append((r.arrive_s, seq, "arrive", k, -1))
        seq += 1
    heapq.heapify(events)
    out: dict[int, ServiceRecord] = {}
    busy_s = 0.0
    max_queue = 0
    last_s = 0.0

    def start(k: int, now: float) -> None:
        nonlocal seq, busy_s
        r = reqs[k][1]
        server = min(free[r.mode])
        free[r.mode].remove(server)
        dur, soc_after = service_time_s(station, r.mode, r.battery_kwh, r.soc, r.target_soc)
        busy_s += dur
        out[k] = ServiceRecord(
            r.truck_id, r.mode, r.arrive_s, now, now + dur, now - r.arrive_s, server, r.soc,
            soc_after,
        )  # fmt: skip
        heapq.heappush(events, (now + dur, seq, "leave", k, server))
        seq += 1

    while events:
        now, _, kind, k, server = heapq.heappop(events)
        last_s = max(last_s, now)
        mode = reqs[k][1].mode
        if kind == "arrive":
            queues[mode].append(k)
        else:
            free[mode].append(server)
        # Serve the head of each queue while a server of its kind is free.
        while queues[mode] and free[mode]:
            start(queues[mode].popleft(), now)
        max_queue = max(max_queue, sum(len(q) for q in queues.values()))
    n = len(reqs)
    capacity_s = (station.charge_posts + station.swap_bays) * max(last_s - _first(reqs), 1e-9)
    records = tuple(out[k] for k in range(n))
    return StationRun(
        records=records,
        mean_wait_s=float(np.mean([r.wait_s for r in records])) if records else 0.0,
        max_queue=max_queue,
        utilisation=busy_s / capacity_s if n else 0.0,
    )


def _first(reqs: Sequence[tuple[int, ChargeRequest]]) -> float:
    return reqs[0][1].arrive_s if reqs else 0.0


def poisson_requests(
    rate_per_h: float,
    horizon_s: float,
    seed: int = 0,
    *,
    swap_share: float = 0.5,
    soc_range: tuple[float, float] = (0.15, 0.4),
    battery_kwh: float = 282.0,
) -> tuple[ChargeRequest, ...]:
    """A seeded Poisson stream of trucks arriving at a station.

    Args:
        rate_per_h: mean arrivals per hour.
        horizon_s: arrivals fall in ``[0, horizon_s)``.
        seed: generator seed.
        swap_share: share asking for a swap rather than a charge.
        soc_range: arrival state of charge, uniform in this range.
        battery_kwh: pack energy.
    """
    if not rate_per_h > 0 or not horizon_s > 0:
        raise EntityError(
            f"poisson_requests: rate_per_h = {rate_per_h!r}, horizon_s = {horizon_s!r}; "
            "allowed: both > 0"
        )
    rng = np.random.default_rng(seed)
    out: list[ChargeRequest] = []
    t = rng.exponential(3_600.0 / rate_per_h)
    while t < horizon_s:
        mode = ServiceMode.SWAP if rng.random() < swap_share else ServiceMode.CHARGE
        out.append(
            ChargeRequest(
                truck_id=f"R{len(out) + 1:04d}",
                arrive_s=float(t),
                mode=mode,
                battery_kwh=battery_kwh,
                soc=float(rng.uniform(*soc_range)),
            )
        )
        t += rng.exponential(3_600.0 / rate_per_h)
    return tuple(out)


# --- a reservation book for the dispatcher ----------------------------------------------------


@dataclass
class StationCalendar:
    """Bookings of each post and bay of one station, with outages.

    A booking takes, for each truck in turn, the earliest gap on any server of its kind that
    starts at or after the truck's arrival, is long enough, and does not overlap an outage.
    Bookings made in time order are therefore served first come, first served, as in
    :func:`simulate_station`; a booking made later for an earlier time (a re-plan) may still
    use a gap left earlier in the day.

    Attributes:
        station: the station.
        posts: per charge post, its busy ``(start_s, end_s)`` intervals, sorted.
        bays: per swap bay, the same.
        outages: ``(start_s, end_s)`` intervals with no service at all.
    """

    station: Station
    posts: list[list[tuple[float, float]]] = field(default_factory=list)
    bays: list[list[tuple[float, float]]] = field(default_factory=list)
    outages: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.posts:
            self.posts = [[] for _ in range(self.station.charge_posts)]
        if not self.bays:
            self.bays = [[] for _ in range(self.station.swap_bays)]

    def offers(self, mode: ServiceMode) -> bool:
        """Whether the station has servers of this kind."""
        return bool(self.posts if mode == ServiceMode.CHARGE else self.bays)

    def _servers(self, mode: ServiceMode) -> list[list[tuple[float, float]]]:
        return self.posts if mode == ServiceMode.CHARGE else self.bays

    def _earliest(self, busy: list[tuple[float, float]], t_s: float, dur_s: float) -> float:
        """Earliest start >= t_s of a ``dur_s`` service clear of ``busy`` and the outages."""
        blocks = sorted([*busy, *self.outages])
        start = t_s
        for a, b in blocks:
            if start + dur_s <= a:
                break
            if b > start:
                start = b
        return start

    def book(
        self, mode: ServiceMode, arrive_s: float, durations_s: Sequence[float], commit: bool = True
    ) -> list[tuple[float, float]]:
        """Serve several trucks arriving together, in the given order.

        Args:
            mode: charge or swap.
            arrive_s: arrival time of the trucks [s].
            durations_s: service time of each truck [s].
            commit: book the servers; ``False`` only answers.

        Returns:
            ``(start_s, end_s)`` of each truck.

        Raises:
            EntityError: the station has no servers of this kind.
        """
        if not self.offers(mode):
            raise EntityError(f"station {self.station.id!r} offers no {mode.value}")
        servers = self._servers(mode)
        work = servers if commit else [list(b) for b in servers]
        out = []
        for dur in durations_s:
            starts = [self._earliest(b, arrive_s, dur) for b in work]
            k = min(range(len(work)), key=lambda i: (starts[i], i))
            work[k].append((starts[k], starts[k] + dur))
            work[k].sort()
            out.append((starts[k], starts[k] + dur))
        return out

    def hold(self, mode: ServiceMode, start_s: float, end_s: float) -> None:
        """Mark a server busy for a service already fixed (one free then, else the first)."""
        servers = self._servers(mode)
        if not servers:
            raise EntityError(f"station {self.station.id!r} offers no {mode.value}")
        k = next(
            (i for i, b in enumerate(servers) if all(e <= start_s or s >= end_s for s, e in b)),
            0,
        )
        servers[k].append((start_s, end_s))
        servers[k].sort()

    def add_outage(self, start_s: float, end_s: float) -> None:
        """No service in ``[start_s, end_s)``."""
        if not end_s > start_s:
            raise EntityError(
                f"station {self.station.id!r} outage: end_s = {end_s!r}; allowed: > start_s"
            )
        self.outages.append((start_s, end_s))


# --- range in the cold ------------------------------------------------------------------------


def energy_per_km_kwh(
    ambient_c: float,
    *,
    mass_kg: float = 49_000.0,
    speed_mps: float = 60.0 / 3.6,
    powertrain: ElectricPowertrain | None = None,
    body: TruckSpec | None = None,
    altitude_m: float = ORDOS_ALTITUDE_M,
) -> float:
    """Battery energy per km of an electric truck at steady speed on the flat [kWh/km].

    Uses :func:`convoy.vehicle.energy.step_energy_kwh` (heating and cold battery losses) with
    the air density of ``ambient_c`` at ``altitude_m``.
    """
    pt = (powertrain or ElectricPowertrain()).to_vector()
    spec = body or TruckSpec()
    rho = isa_air_density_kgpm3(altitude_m, ambient_c)
    per_s = step_energy_kwh(
        pt, mass_kg, speed_mps, 0.0, 0.0, 1.0, spec.cd_a_m2, spec.rolling_resistance,
        ambient_c, 1.0, rho,
    )  # fmt: skip
    return float(per_s) / (speed_mps / 1_000.0)


def usable_range_km(
    ambient_c: float,
    *,
    battery_kwh: float = 282.0,
    soc: float = DEFAULT_CHARGE_TARGET_SOC,
    reserve_soc: float = DEFAULT_RESERVE_SOC,
    mass_kg: float = 49_000.0,
    speed_mps: float = 60.0 / 3.6,
) -> float:
    """Distance an electric truck can drive on the flat before reaching its reserve [km].

    Args:
        ambient_c: ambient temperature [°C] (Ordos: -10.5 °C January mean, -31 °C record low,
            DESIGN.md).
        battery_kwh: pack energy [kWh].
        soc: state of charge at the start [-].
        reserve_soc: state of charge kept in reserve [-].
        mass_kg: combination mass [kg] (49 t loaded, 18 t empty).
        speed_mps: steady speed [m/s].
    """
    usable = max(0.0, soc - reserve_soc) * battery_kwh
    return usable / energy_per_km_kwh(ambient_c, mass_kg=mass_kg, speed_mps=speed_mps)
