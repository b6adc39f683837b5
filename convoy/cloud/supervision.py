"""Remote supervision: takeover requests from driverless trucks, queued to remote operators.

A driverless truck asks for help when it leaves its operating design domain (a dust storm,
ice, road works — the ODD flags of ``convoy.road.hazards``), when a sensor fails, or when a
platoon manoeuvre fails.  The request goes to a remote centre with a few operators.  Each
request has a **response deadline**; an operator claims one request at a time and is busy
with it for a **handling time**.  A request still unclaimed at its deadline ends in a
**minimal-risk manoeuvre** (MRM): the truck stops on the shoulder.  The MRM is returned as a
``MinimalRiskManoeuvre`` record (truck, time) for the engine to execute.

Queue discipline: **earliest deadline first**, ties by request time, then by arrival order.
With deadlines that differ by cause (a sensor fault cannot wait as long as a dust storm
reported by an RSU 5 km ahead), EDF lets the urgent request overtake the patient one; among
requests with equal windows it is FIFO.  A free operator takes the head of the queue; when
several are free the lowest-numbered one takes it.

Timing at one instant, in this order: operators whose handling ends are freed; new
requests join the queue; free operators claim; requests whose deadline has come and that
are still unclaimed expire into an MRM.  So a claim at exactly the deadline is in time.

One open request per truck: a trigger for a truck whose request is still pending or being
handled joins that request (it is not queued twice).

Two ways to drive a ``SupervisionCentre``:

* **batch**: ``simulate(triggers, ...)`` runs a discrete-event simulation over a list of
  ``TakeoverTrigger`` records (for example ``triggers_from_events`` over a run's event log,
  plus ``inject_sensor_faults``) and returns the log, the MRMs and the operators' load;
* **live**: the HTTP service calls ``request``, ``claim``, ``resolve`` and ``advance(now)``
  itself, ``advance`` returning the requests that expired into MRMs.

Events are dicts in the style of ``convoy.sim.events`` (keys ``t_s``, ``type``,
``vehicle_id``), so they merge into the run's ``events.jsonl`` by time:

==========================  ==================================================================
type                        fields besides ``t_s``, ``type``, ``vehicle_id``, ``request_id``
==========================  ==================================================================
``takeover_request``        ``cause``, ``deadline_s``
``takeover_claim``          ``operator``, ``waited_s``
``takeover_resolve``        ``operator``, ``handled_s``
``minimal_risk_manoeuvre``  ``cause``, ``waited_s`` (from request to deadline)
==========================  ==================================================================
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import NormalDist
from typing import Any

from convoy.road.hazards import PREVIEW_M, OddFlags
from convoy.vehicle.rng import uniform

# Event types (see the module docstring).
EV_REQUEST = "takeover_request"
EV_CLAIM = "takeover_claim"
EV_RESOLVE = "takeover_resolve"
EV_MRM = "minimal_risk_manoeuvre"

# Driverless trucks per remote operator.  DESIGN.md: reported ratios run from 1 per 3
# vehicles (China's 2023 rule for driverless taxis) to 1 per 15-20 (industry reports); the
# default takes the industry end, as a freight operator sizing for cost would.
DEFAULT_TRUCKS_PER_OPERATOR = 20

# Response windows.  A fault that leaves the truck without a safe way on (sensor fault, lost
# link, failed manoeuvre) gets the 10 s that UN Regulation No. 157 (ALKS) lets a transition
# demand run before the minimal-risk manoeuvre starts.  An ODD exit is known ahead (an RSU's
# RSI reaches the truck upstream, convoy.road.hazards); the window is the time to cover the
# preview distance at which a known hazard starts to bind the speed, PREVIEW_M = 2 km, at
# the 25 m/s (90 km/h) cruise of the default truck: 80 s.
URGENT_WINDOW_S = 10.0
CRUISE_SPEED_MPS = 25.0
ODD_WINDOW_S = PREVIEW_M / CRUISE_SPEED_MPS

# Handling time: log-normal, median 90 s, sigma 0.5 (mean ~102 s, 95 % below ~205 s).  An
# assumption: no public figure for remote assistance of trucks was found; a remote
# operator reads the scene, then authorises a slower pass or a route change, or drives
# the truck past the hazard.  Override it in ``SupervisionConfig``.
DEFAULT_HANDLING_MEDIAN_S = 90.0
DEFAULT_HANDLING_SIGMA = 0.5

# Streams of convoy.vehicle.rng drawn here; the vehicle layer uses 1-4.
PURPOSE_HANDLING = 101
PURPOSE_FAULT = 102

_NORMAL = NormalDist()


class SupervisionError(ValueError):
    """A supervision call or input that cannot be honoured; the message is for a person."""


class TakeoverCause(StrEnum):
    """Why a truck asks for a remote operator."""

    ODD_WEATHER = "odd-weather"  # dust, ice, crosswind, low visibility or friction
    ODD_ROAD_WORKS = "odd-road-works"  # road works, closed lane
    SENSOR_FAULT = "sensor-fault"
    COMM_LOSS = "comm-loss"
    MANOEUVRE_FAILED = "manoeuvre-failed"  # a platoon join, split or lane change that failed


DEFAULT_WINDOWS_S: Mapping[TakeoverCause, float] = {
    TakeoverCause.ODD_WEATHER: ODD_WINDOW_S,
    TakeoverCause.ODD_ROAD_WORKS: ODD_WINDOW_S,
    TakeoverCause.SENSOR_FAULT: URGENT_WINDOW_S,
    TakeoverCause.COMM_LOSS: URGENT_WINDOW_S,
    TakeoverCause.MANOEUVRE_FAILED: URGENT_WINDOW_S,
}

_FLAG_CAUSES: tuple[tuple[OddFlags, TakeoverCause], ...] = (
    (OddFlags.SENSOR_FAULT, TakeoverCause.SENSOR_FAULT),
    (OddFlags.COMM_LOSS, TakeoverCause.COMM_LOSS),
    (OddFlags.ROAD_WORKS | OddFlags.LANE_CLOSED, TakeoverCause.ODD_ROAD_WORKS),
    (
        OddFlags.DUST
        | OddFlags.ICE
        | OddFlags.CROSSWIND
        | OddFlags.LOW_VISIBILITY
        | OddFlags.LOW_FRICTION,
        TakeoverCause.ODD_WEATHER,
    ),
)


def operators_for(
    driverless_trucks: int, trucks_per_operator: float = DEFAULT_TRUCKS_PER_OPERATOR
) -> int:
    """Remote operators a centre needs: one per ``trucks_per_operator`` driverless trucks,
    rounded up, at least one while there is any driverless truck."""
    if driverless_trucks < 0:
        raise SupervisionError(f"driverless_trucks = {driverless_trucks}: must be >= 0")
    if not trucks_per_operator > 0:
        raise SupervisionError(f"trucks_per_operator = {trucks_per_operator}: must be > 0")
    return math.ceil(driverless_trucks / trucks_per_operator)


@dataclass(frozen=True, slots=True)
class SupervisionConfig:
    """Parameters of the remote centre.

    Attributes:
        windows_s: response window per cause [s]; deadline = request time + window.
        handling_median_s: median handling time of a request [s] (log-normal).
        handling_sigma: sigma of the log-normal's underlying normal [-]; 0 = fixed median.
        seed: seed of the handling-time and fault draws.
    """

    windows_s: Mapping[TakeoverCause, float] = field(
        default_factory=lambda: dict(DEFAULT_WINDOWS_S)
    )
    handling_median_s: float = DEFAULT_HANDLING_MEDIAN_S
    handling_sigma: float = DEFAULT_HANDLING_SIGMA
    seed: int = 0

    def __post_init__(self) -> None:
        for cause in TakeoverCause:
            w = self.windows_s.get(cause)
            if w is None or not (math.isfinite(w) and w >= 0):
                raise SupervisionError(
                    f"windows_s[{cause.value!r}] = {w!r}: must be a finite number of "
                    "seconds >= 0, given for every cause"
                )
        if not (math.isfinite(self.handling_median_s) and self.handling_median_s > 0):
            raise SupervisionError(
                f"handling_median_s = {self.handling_median_s!r}: must be finite and > 0"
            )
        if not (math.isfinite(self.handling_sigma) and self.handling_sigma >= 0):
            raise SupervisionError(
                f"handling_sigma = {self.handling_sigma!r}: must be finite and >= 0"
            )

    def handling_s(self, request_id: int) -> float:
        """The handling time of request ``request_id``, drawn from its own key (seed,
        request_id), so it does not depend on the order in which requests are handled."""
        u = uniform(self.seed, request_id, 0, PURPOSE_HANDLING)
        z = _NORMAL.inv_cdf(min(max(u, 1e-12), 1.0 - 1e-12))
        return self.handling_median_s * math.exp(self.handling_sigma * z)


@dataclass(frozen=True, slots=True)
class TakeoverTrigger:
    """A reason for a truck to ask for an operator, at a time.

    Attributes:
        time_s: when the truck raises the request [s].
        vehicle_id: the driverless truck.
        cause: why.
        handling_s: the handling time to use [s]; None draws it from the config.
    """

    time_s: float
    vehicle_id: str
    cause: TakeoverCause
    handling_s: float | None = None


@dataclass(frozen=True, slots=True)
class MinimalRiskManoeuvre:
    """An outcome for the engine: ``vehicle_id`` stops on the shoulder from ``time_s`` [s]."""

    vehicle_id: str
    time_s: float
    request_id: int
    cause: TakeoverCause


class RequestStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    RESOLVED = "resolved"
    EXPIRED = "expired"  # ended in a minimal-risk manoeuvre


@dataclass(slots=True)
class TakeoverRequest:
    """One request and what became of it (times in s; None until it happens)."""

    request_id: int
    vehicle_id: str
    cause: TakeoverCause
    requested_s: float
    deadline_s: float
    handling_s: float | None = None
    status: RequestStatus = RequestStatus.PENDING
    operator: int | None = None
    claimed_s: float | None = None
    resolved_s: float | None = None

    @property
    def open(self) -> bool:
        return self.status in (RequestStatus.PENDING, RequestStatus.CLAIMED)

    def priority(self) -> tuple[float, float, int]:
        """Queue key: earliest deadline, then earliest request, then arrival order."""
        return (self.deadline_s, self.requested_s, self.request_id)


@dataclass(frozen=True, slots=True)
class SupervisionStats:
    """The centre's load over ``[start_s, end_s]``.

    Attributes:
        operators: operators on duty.
        start_s, end_s: the window [s].
        requests: requests raised in the window.
        resolved: requests an operator resolved.
        mrms: requests that ended in a minimal-risk manoeuvre.
        busy_s: operator-seconds spent handling requests inside the window.
        max_wait_s: longest time from request to claim among claimed requests.
    """

    operators: int
    start_s: float
    end_s: float
    requests: int
    resolved: int
    mrms: int
    busy_s: float
    max_wait_s: float

    @property
    def operator_hours(self) -> float:
        return self.operators * max(self.end_s - self.start_s, 0.0) / 3600.0

    @property
    def requests_per_operator_hour(self) -> float | None:
        h = self.operator_hours
        return self.requests / h if h > 0 else None

    @property
    def utilisation(self) -> float | None:
        """Share of operator time spent handling requests [-]."""
        h = self.operator_hours
        return self.busy_s / (h * 3600.0) if h > 0 else None


class SupervisionCentre:
    """The remote centre's state: operators, the queue and every request's history.

    Times passed in must not go backwards (``SupervisionError`` otherwise).  See the
    module docstring for the order of things at one instant: call ``claim`` before
    ``advance`` for the same time.  ``events`` is in call order; an MRM is logged at its
    deadline, which may be before the ``advance`` call that found it.
    """

    def __init__(self, operators: int, config: SupervisionConfig | None = None) -> None:
        if operators < 1:
            raise SupervisionError(f"operators = {operators}: need at least 1")
        self.config = config or SupervisionConfig()
        self.operators = operators
        self.requests: list[TakeoverRequest] = []
        self.events: list[dict[str, Any]] = []
        self.now_s = -math.inf
        self._busy: list[TakeoverRequest | None] = [None] * operators
        self._open_by_vehicle: dict[str, TakeoverRequest] = {}

    # -- clock ---------------------------------------------------------------------------
    def _tick(self, time_s: float, what: str) -> None:
        if not math.isfinite(time_s):
            raise SupervisionError(f"{what}: time_s = {time_s!r} must be finite")
        if time_s < self.now_s:
            raise SupervisionError(
                f"{what}: time_s = {time_s} is before the centre's clock ({self.now_s}); "
                "times must not go backwards"
            )
        self.now_s = time_s

    def _log(self, time_s: float, kind: str, req: TakeoverRequest, **fields: Any) -> None:
        self.events.append(
            {
                "t_s": round(time_s, 6),
                "type": kind,
                "vehicle_id": req.vehicle_id,
                "request_id": req.request_id,
                **fields,
            }
        )

    # -- queries ---------------------------------------------------------------------------
    def pending(self) -> list[TakeoverRequest]:
        """Unclaimed requests, in queue order (earliest deadline first)."""
        return sorted(
            (r for r in self._open_by_vehicle.values() if r.status is RequestStatus.PENDING),
            key=TakeoverRequest.priority,
        )

    def free_operators(self) -> list[int]:
        return [i for i, r in enumerate(self._busy) if r is None]

    def handling(self, operator: int) -> TakeoverRequest | None:
        """The request ``operator`` is handling, if any."""
        self._check_operator(operator)
        return self._busy[operator]

    def _check_operator(self, operator: int) -> None:
        if not 0 <= operator < self.operators:
            raise SupervisionError(
                f"operator = {operator}: not an operator; allowed 0..{self.operators - 1}"
            )

    def _get(self, request: TakeoverRequest | int) -> TakeoverRequest:
        rid = request if isinstance(request, int) else request.request_id
        if not 0 <= rid < len(self.requests):
            raise SupervisionError(f"request_id = {rid}: no such request")
        return self.requests[rid]

    # -- live API --------------------------------------------------------------------------
    def request(
        self,
        vehicle_id: str,
        time_s: float,
        cause: TakeoverCause | str,
        handling_s: float | None = None,
    ) -> TakeoverRequest:
        """A truck asks for an operator.  Returns its request (the open one, if it has one)."""
        try:
            cause = TakeoverCause(cause)
        except ValueError:
            allowed = ", ".join(c.value for c in TakeoverCause)
            raise SupervisionError(f"cause = {cause!r}: unknown; allowed: {allowed}") from None
        if handling_s is not None and not (math.isfinite(handling_s) and handling_s >= 0):
            raise SupervisionError(f"handling_s = {handling_s!r}: must be finite and >= 0")
        self._tick(time_s, "request")
        open_req = self._open_by_vehicle.get(vehicle_id)
        if open_req is not None:
            return open_req
        req = TakeoverRequest(
            request_id=len(self.requests),
            vehicle_id=vehicle_id,
            cause=cause,
            requested_s=time_s,
            deadline_s=time_s + self.config.windows_s[cause],
            handling_s=handling_s,
        )
        self.requests.append(req)
        self._open_by_vehicle[vehicle_id] = req
        self._log(time_s, EV_REQUEST, req, cause=cause.value, deadline_s=round(req.deadline_s, 6))
        return req

    def claim(self, operator: int, request: TakeoverRequest | int, time_s: float) -> None:
        """``operator`` takes ``request`` at ``time_s``; in time up to and at its deadline."""
        self._check_operator(operator)
        req = self._get(request)
        busy = self._busy[operator]
        if busy is not None:
            raise SupervisionError(
                f"operator {operator} is busy with request {busy.request_id}; resolve it first"
            )
        if req.status is not RequestStatus.PENDING:
            raise SupervisionError(
                f"request {req.request_id} is {req.status.value}; only a pending one can be claimed"
            )
        if time_s > req.deadline_s:
            raise SupervisionError(
                f"request {req.request_id}: claim at {time_s} s is past its deadline "
                f"{req.deadline_s} s"
            )
        self._tick(time_s, "claim")
        req.status, req.operator, req.claimed_s = RequestStatus.CLAIMED, operator, time_s
        self._busy[operator] = req
        self._log(
            time_s, EV_CLAIM, req, operator=operator, waited_s=round(time_s - req.requested_s, 6)
        )

    def resolve(self, request: TakeoverRequest | int, time_s: float) -> None:
        """The operator handling ``request`` is done with it at ``time_s``; the truck goes on."""
        req = self._get(request)
        if req.status is not RequestStatus.CLAIMED or req.operator is None:
            raise SupervisionError(
                f"request {req.request_id} is {req.status.value}; only a claimed one can be "
                "resolved"
            )
        self._tick(time_s, "resolve")
        assert req.claimed_s is not None
        req.status, req.resolved_s = RequestStatus.RESOLVED, time_s
        self._busy[req.operator] = None
        del self._open_by_vehicle[req.vehicle_id]
        self._log(
            time_s,
            EV_RESOLVE,
            req,
            operator=req.operator,
            handled_s=round(time_s - req.claimed_s, 6),
        )

    def advance(self, t_s: float) -> list[MinimalRiskManoeuvre]:
        """Move the clock to ``t_s``; every unclaimed request whose deadline is at or before
        it expires.  Returns their minimal-risk manoeuvres, in deadline order, each timed
        at its request's deadline."""
        self._tick(t_s, "advance")
        out = []
        for req in self.pending():
            if req.deadline_s > t_s:
                break
            req.status = RequestStatus.EXPIRED
            del self._open_by_vehicle[req.vehicle_id]
            self._log(
                req.deadline_s,
                EV_MRM,
                req,
                cause=req.cause.value,
                waited_s=round(req.deadline_s - req.requested_s, 6),
            )
            out.append(
                MinimalRiskManoeuvre(req.vehicle_id, req.deadline_s, req.request_id, req.cause)
            )
        return out

    def stats(self, start_s: float, end_s: float) -> SupervisionStats:
        """The load over ``[start_s, end_s]``; handling that overlaps the window counts
        only inside it (an unfinished claim runs to ``end_s``)."""
        busy = 0.0
        waits = []
        for r in self.requests:
            if r.claimed_s is None:
                continue
            waits.append(r.claimed_s - r.requested_s)
            stop = r.resolved_s if r.resolved_s is not None else end_s
            busy += max(0.0, min(stop, end_s) - max(r.claimed_s, start_s))
        in_window = [r for r in self.requests if start_s <= r.requested_s <= end_s]
        return SupervisionStats(
            operators=self.operators,
            start_s=start_s,
            end_s=end_s,
            requests=len(in_window),
            resolved=sum(r.status is RequestStatus.RESOLVED for r in in_window),
            mrms=sum(r.status is RequestStatus.EXPIRED for r in in_window),
            busy_s=busy,
            max_wait_s=max(waits, default=0.0),
        )


@dataclass(frozen=True, slots=True)
class SupervisionResult:
    """What ``simulate`` returns.

    Attributes:
        requests: every request and its history, in request order.
        events: the log (module docstring), sorted by time then by log order.
        mrms: minimal-risk manoeuvres for the engine, in time order.
        stats: the operators' load from the first trigger to the last event.
    """

    requests: list[TakeoverRequest]
    events: list[dict[str, Any]]
    mrms: list[MinimalRiskManoeuvre]
    stats: SupervisionStats


def simulate(
    triggers: Iterable[TakeoverTrigger],
    operators: int,
    config: SupervisionConfig | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
) -> SupervisionResult:
    """Run the remote centre over ``triggers`` as a discrete-event simulation.

    A heap of ``(time, phase, seq, item)`` orders what happens: at one instant handling
    ends (phase 0), then requests arrive (phase 1) and deadlines come (phase 2, a marker
    only); then free operators claim the queue's head, then ``advance`` expires what is
    left past its deadline.

    Args:
        triggers: the takeover triggers, in any order.
        operators: operators on duty (``operators_for`` sizes it from the fleet).
        config: windows, handling times and seed; defaults cited in this module.
        start_s, end_s: the window of the load statistics; default from the first trigger
            to the last event.
    """
    cfg = config or SupervisionConfig()
    centre = SupervisionCentre(operators, cfg)
    heap: list[tuple[float, int, int, Any]] = []
    seq = 0

    def push(t: float, phase: int, item: Any) -> None:
        nonlocal seq
        heapq.heappush(heap, (t, phase, seq, item))
        seq += 1

    trig = sorted(triggers, key=lambda g: g.time_s)
    for g in trig:
        push(g.time_s, 1, g)
    mrms: list[MinimalRiskManoeuvre] = []
    last_s = trig[0].time_s if trig else 0.0
    while heap:
        t = heap[0][0]
        while heap and heap[0][0] == t:
            _, phase, _, item = heapq.heappop(heap)
            if phase == 0:
                centre.resolve(item, t)
            elif phase == 1:
                n_before = len(centre.requests)
                req = centre.request(item.vehicle_id, t, item.cause, item.handling_s)
                if len(centre.requests) > n_before:
                    push(req.deadline_s, 2, None)
        # claims: each free operator takes the head of the queue
        for op, req in zip(centre.free_operators(), centre.pending(), strict=False):
            centre.claim(op, req, t)
            handling = (
                req.handling_s if req.handling_s is not None else cfg.handling_s(req.request_id)
            )
            push(t + handling, 0, req)
        mrms.extend(centre.advance(t))
        last_s = t
    first_s = trig[0].time_s if trig else 0.0
    stats = centre.stats(
        first_s if start_s is None else start_s, last_s if end_s is None else end_s
    )
    events = sorted(centre.events, key=lambda e: e["t_s"])  # stable: log order within a time
    return SupervisionResult(centre.requests, events, mrms, stats)


def cause_for_flags(flags: int) -> TakeoverCause | None:
    """The most urgent cause among ODD ``flags`` (shortest default window, then the order
    sensor fault, lost link, road works, weather); None if no flag calls for a takeover."""
    for mask, cause in _FLAG_CAUSES:
        if flags & mask:
            return cause
    return None


def triggers_from_events(
    events: Iterable[Mapping[str, Any]], driverless: Iterable[str]
) -> list[TakeoverTrigger]:
    """Takeover triggers from a run's event log (``convoy.sim.events.run_events``): every
    ``odd_enter`` of a driverless truck whose new flags call for a takeover.  The lead
    truck has a driver on board and raises none."""
    who = set(driverless)
    out: list[TakeoverTrigger] = []
    for e in events:
        if e.get("type") != "odd_enter" or e.get("vehicle_id") not in who:
            continue
        bits = 0
        for name in e.get("flags", ()):
            try:
                bits |= OddFlags[name]
            except KeyError:
                allowed = ", ".join(f.name for f in OddFlags if f.name)
                raise SupervisionError(
                    f"event at {e.get('t_s')} s: ODD flag {name!r} unknown; allowed: {allowed}"
                ) from None
        cause = cause_for_flags(bits)
        if cause is not None:
            out.append(TakeoverTrigger(float(e["t_s"]), str(e["vehicle_id"]), cause))
    return out


def inject_sensor_faults(
    vehicle_ids: Sequence[str],
    start_s: float,
    end_s: float,
    faults_per_hour: float,
    seed: int = 0,
) -> list[TakeoverTrigger]:
    """Sensor faults as a Poisson process per truck over ``[start_s, end_s)``.

    Draws come from ``convoy.vehicle.rng`` keyed by (seed, truck index, fault number), so a
    truck's faults do not change when trucks are added after it.  The rate has no default:
    no public fault rate for L4 trucks was found, so the caller states one.
    """
    if not (math.isfinite(faults_per_hour) and faults_per_hour >= 0):
        raise SupervisionError(f"faults_per_hour = {faults_per_hour!r}: must be finite and >= 0")
    if not end_s >= start_s:
        raise SupervisionError(f"end_s = {end_s} is before start_s = {start_s}")
    out: list[TakeoverTrigger] = []
    if faults_per_hour == 0:
        return out
    mean_gap_s = 3600.0 / faults_per_hour
    for k, vid in enumerate(vehicle_ids):
        t, n = start_s, 0
        while True:
            u = uniform(seed, k, n, PURPOSE_FAULT)
            t += -mean_gap_s * math.log1p(-u)  # exponential gap; u < 1 so log1p(-u) is finite
            if t >= end_s:
                break
            out.append(TakeoverTrigger(t, vid, TakeoverCause.SENSOR_FAULT))
            n += 1
    out.sort(key=lambda g: (g.time_s, g.vehicle_id))
    return out
