"""The storage interface of the cloud service: typed records, errors and the ``Storage`` ABC.

Records are frozen dataclasses that check themselves on construction, so a record that exists
is one the database may hold: a NaN speed, a longitude outside [-180, 180], an empty id or a
payload that is not plain JSON raises :class:`RecordError` (a ``ValueError``) naming the
record, the field, the value and what is allowed, before anything reaches the database.

Times are floats in seconds (``*_s``): Unix epoch seconds in ``convoy serve``, simulation
seconds in a replay. Storage never reads a clock except to stamp ``created_s`` when a caller
leaves it out.

Two backends implement :class:`Storage` (``sqlite.py``, ``postgres.py``); ``open_storage``
in ``__init__.py`` picks one from a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import operator
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import TracebackType
from typing import Any, Self, TypeVar

import numpy as np

from convoy.cloud.entities import Cargo, Order, TimeWindow

__all__ = [
    "ApiToken",
    "ConflictError",
    "EventRecord",
    "NotFoundError",
    "OrderRecord",
    "OrderStatus",
    "PlanRecord",
    "RecordError",
    "Role",
    "StateRow",
    "Storage",
    "StorageError",
    "TakeoverRecord",
    "TakeoverStatus",
    "TripRecord",
    "TripStatus",
    "VehicleState",
    "check_state_rows",
    "new_id",
]


# --- errors ---------------------------------------------------------------------------------


class StorageError(ValueError):
    """Storage cannot do what was asked; the message is for a person (bad URL, bad record,
    unknown id, conflicting write)."""


class RecordError(StorageError):
    """A record field out of range; the message names record, field, value and what is allowed."""


class NotFoundError(StorageError):
    """No record with that id."""


class ConflictError(StorageError):
    """The write conflicts with what is stored: a takeover someone else claimed, an order id
    that exists, an idempotency key reused for a different order, a forbidden status change."""


# --- field checks ---------------------------------------------------------------------------

#: Longest id (vehicle, order, site, trip, takeover, operator) [characters].
MAX_ID_CHARS = 64
#: Longest free-text name (shipper, token name) [characters].
MAX_NAME_CHARS = 200
#: Largest event payload as JSON [bytes]; events are small facts, not files.
MAX_EVENT_PAYLOAD_BYTES = 64 * 1024
#: Largest plan as JSON [bytes]; a built-in Ordos day plan is well under 1 MiB.
MAX_PLAN_BYTES = 16 * 1024 * 1024
#: Deepest nesting accepted in a JSON payload.
MAX_JSON_DEPTH = 32

# Guards against garbage, not physics limits: a heavy truck is far inside all of them.
MAX_SPEED_MPS = 100.0  # 360 km/h
MAX_ABS_ACCEL_MPS2 = 50.0  # about 5 g
MAX_LANE = 63
MAX_EDGE_CHARS = 128

_E = TypeVar("_E", bound=StrEnum)

_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,32}")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _fail(record: str, name: str, value: Any, allowed: str) -> RecordError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return RecordError(f"{record}.{name} = {shown}; allowed: {allowed}")


def _check_id(record: str, name: str, value: Any) -> None:
    # isprintable() rules out control characters, NUL, lone surrogates and every
    # whitespace but the ASCII space, which is ruled out by hand.
    if not (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_CHARS
        and value.isprintable()
        and " " not in value
    ):
        raise _fail(
            record,
            name,
            value,
            f"a non-empty id of at most {MAX_ID_CHARS} printable characters without spaces",
        )


def _check_opt_id(record: str, name: str, value: Any) -> None:
    if value is not None:
        _check_id(record, name, value)


def _check_name(record: str, name: str, value: Any) -> None:
    if not (
        isinstance(value, str)
        and 0 < len(value) <= MAX_NAME_CHARS
        and value.isprintable()
        and value.strip() == value
        and value
    ):
        raise _fail(
            record,
            name,
            value,
            f"a non-blank name of at most {MAX_NAME_CHARS} printable characters "
            "without leading or trailing spaces",
        )


def _check_token(record: str, name: str, value: Any, pattern: re.Pattern[str]) -> None:
    if not (isinstance(value, str) and pattern.fullmatch(value)):
        raise _fail(record, name, value, f"a token matching {pattern.pattern}")


def _num(record: str, name: str, value: Any, lo: float, hi: float) -> float:
    """``value`` as a float if it is a finite number in ``[lo, hi]``."""
    if type(value) is not float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _fail(record, name, value, _range_text(lo, hi))
        value = float(value)
    if not (lo <= value <= hi and math.isfinite(value)):  # NaN fails the comparison
        raise _fail(record, name, value, _range_text(lo, hi))
    return value


def _range_text(lo: float, hi: float) -> str:
    if hi == math.inf:
        return f"a finite number >= {lo:g}"
    return f"a finite number in [{lo:g}, {hi:g}]"


def _time(record: str, name: str, value: Any) -> float:
    return _num(record, name, value, 0.0, math.inf)


def _opt_time(record: str, name: str, value: Any) -> float | None:
    return None if value is None else _time(record, name, value)


def _int(record: str, name: str, value: Any, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _fail(record, name, value, f"an integer in [{lo}, {hi}]")
    return value


def _enum(record: str, name: str, value: Any, enum: type[_E]) -> _E:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise _fail(record, name, value, allowed) from None


def _check_json_value(record: str, name: str, value: Any, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise _fail(record, name, "...", f"JSON nested at most {MAX_JSON_DEPTH} deep")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(record, name, value, "finite numbers only (JSON has no NaN or Infinity)")
        return
    if isinstance(value, str):
        # PostgreSQL text cannot hold NUL; lone surrogates are not UTF-8.
        if "\x00" in value:
            raise _fail(record, name, value, "strings without NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _fail(record, name, value, "strings of valid Unicode (UTF-8)") from None
        return
    if isinstance(value, list | tuple):
        for v in value:
            _check_json_value(record, name, v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(record, name, k, "JSON object keys that are strings")
            _check_json_value(record, name, k, depth + 1)
            _check_json_value(record, name, v, depth + 1)
        return
    raise _fail(
        record, name, value, "plain JSON: objects, arrays, strings, finite numbers, bools, null"
    )


def dump_json(record: str, name: str, value: Any, max_bytes: int) -> str:
    """Check that ``value`` is a JSON object storable by both backends and return its text.

    Raises:
        RecordError: not a dict, not plain JSON, NaN, NUL in a string, too large.
    """
    if not isinstance(value, Mapping):
        raise _fail(record, name, value, "a JSON object (a dict)")
    _check_json_value(record, name, dict(value), 0)
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise _fail(record, name, f"<{size} bytes of JSON>", f"at most {max_bytes} bytes")
    return text


def _frozen_json(record: str, name: str, value: Any, max_bytes: int) -> dict[str, Any]:
    """A checked private copy of a JSON object, so later changes by the caller do not leak in."""
    out: dict[str, Any] = json.loads(dump_json(record, name, value, max_bytes))
    return out


def new_id(prefix: str) -> str:
    """A fresh random id ``<prefix>-<24 hex digits>`` (96 random bits), e.g. for orders."""
    _check_token("new_id", "prefix", prefix, _TOKEN)
    return f"{prefix}-{secrets.token_hex(12)}"


# --- enumerations ---------------------------------------------------------------------------


class OrderStatus(StrEnum):
    """An order's life: open -> planned -> delivered, or cancelled before delivery."""

    OPEN = "open"
    PLANNED = "planned"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


#: Status changes an order may make (to itself is always allowed, as a no-op).
ORDER_TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.OPEN: frozenset({OrderStatus.PLANNED, OrderStatus.CANCELLED}),
    # Re-planning may hand a planned order back to the pool.
    OrderStatus.PLANNED: frozenset(
        {OrderStatus.OPEN, OrderStatus.DELIVERED, OrderStatus.CANCELLED}
    ),
    OrderStatus.DELIVERED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


class TripStatus(StrEnum):
    """A trip's life: planned -> active -> done, or aborted."""

    PLANNED = "planned"
    ACTIVE = "active"
    DONE = "done"
    ABORTED = "aborted"


class TakeoverStatus(StrEnum):
    """A takeover request: open until an operator claims it (claimed, then resolved) or its
    deadline passes unclaimed (expired: the truck performs a minimal-risk manoeuvre)."""

    OPEN = "open"
    CLAIMED = "claimed"
    RESOLVED = "resolved"
    EXPIRED = "expired"


class Role(StrEnum):
    """What an API token may do, each role including the ones before it."""

    VIEWER = "viewer"
    DISPATCHER = "dispatcher"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role | str) -> bool:
        """Whether this role may do what ``needed`` may (``Role.ADMIN.allows("viewer")``)."""
        order = list(Role)
        return order.index(self) >= order.index(Role(needed))


# --- records --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VehicleState:
    """One telemetry sample of one truck.

    Attributes:
        vehicle_id: the truck.
        t_s: sample time [s] (epoch or simulation seconds, >= 0).
        lon, lat: WGS-84 position [deg], lon in [-180, 180], lat in [-90, 90].
        speed_mps: speed [m/s], in [0, 100].
        heading_deg: heading clockwise from north [deg], in [0, 360].
        accel_mps2: longitudinal acceleration [m/s²], in [-50, 50].
        edge: road-network edge id ("" when off the network).
        lane: lane index on the edge, 0 = rightmost, in [0, 63].
        soc: battery state of charge in [0, 1]; None for a diesel truck.
        mode: driving mode token, e.g. "human", "acc", "cacc", "remote", "mrm".
    """

    vehicle_id: str
    t_s: float
    lon: float
    lat: float
    speed_mps: float
    heading_deg: float
    accel_mps2: float
    edge: str = ""
    lane: int = 0
    soc: float | None = None
    mode: str = "unknown"

    def __post_init__(self) -> None:
        rec = "VehicleState"
        _check_id(rec, "vehicle_id", self.vehicle_id)
        s = object.__setattr__
        s(self, "t_s", _time(rec, "t_s", self.t_s))
        s(self, "lon", _num(rec, "lon", self.lon, -180.0, 180.0))
        s(self, "lat", _num(rec, "lat", self.lat, -90.0, 90.0))
        s(self, "speed_mps", _num(rec, "speed_mps", self.speed_mps, 0.0, MAX_SPEED_MPS))
        s(self, "heading_deg", _num(rec, "heading_deg", self.heading_deg, 0.0, 360.0))
        a = _num(rec, "accel_mps2", self.accel_mps2, -MAX_ABS_ACCEL_MPS2, MAX_ABS_ACCEL_MPS2)
        s(self, "accel_mps2", a)
        if self.edge and not (
            isinstance(self.edge, str)
            and len(self.edge) <= MAX_EDGE_CHARS
            and self.edge.isprintable()
            and " " not in self.edge
        ):
            raise _fail(
                rec,
                "edge",
                self.edge,
                f"an edge id of at most {MAX_EDGE_CHARS} printable "
                "characters without spaces, or '' off the network",
            )
        if not isinstance(self.edge, str):
            raise _fail(rec, "edge", self.edge, "a string")
        _int(rec, "lane", self.lane, 0, MAX_LANE)
        if self.soc is not None:
            s(self, "soc", _num(rec, "soc", self.soc, 0.0, 1.0))
        _check_token(rec, "mode", self.mode, _TOKEN)


#: :class:`VehicleState`'s fields, in order.
_STATE_ROW_FIELDS = tuple(f.name for f in fields(VehicleState))
_state_tuple = operator.attrgetter(*_STATE_ROW_FIELDS)

#: A :class:`VehicleState` as a tuple in its field order: ``(vehicle_id, t_s, lon, lat,
#: speed_mps, heading_deg, accel_mps2, edge, lane, soc, mode)``.
StateRow = tuple[str, float, float, float, float, float, float, str, int, float | None, str]

# Bounds of VehicleState's float fields t_s .. accel_mps2, as columns for the bulk check.
_STATE_LO = np.array([0.0, -180.0, -90.0, 0.0, 0.0, -MAX_ABS_ACCEL_MPS2])[:, None]
_STATE_HI = np.array([np.inf, 180.0, 90.0, MAX_SPEED_MPS, 360.0, MAX_ABS_ACCEL_MPS2])[:, None]


def _edge_ok(edge: Any) -> bool:
    return type(edge) is str and (
        not edge or (len(edge) <= MAX_EDGE_CHARS and edge.isprintable() and " " not in edge)
    )


def check_state_rows(rows: Sequence[Any]) -> list[StateRow]:
    """``rows`` if every one is a :data:`StateRow` that :class:`VehicleState` accepts as it
    is; otherwise each row is built as a record, which raises :class:`RecordError` for the
    first bad one (or converts, e.g. an int time to a float) and the rows are returned anew.

    The same checks as the record, in bulk: a column at a time, with numpy for the ranges
    and one check per distinct id, edge and mode. About a fifth of the cost of a record per
    sample; the path of the telemetry ingest (``Storage.write_state_rows``).
    """
    if not rows:
        return []
    try:
        cols = list(zip(*rows, strict=True))
    except (TypeError, ValueError):
        cols = []
    if len(cols) == len(_STATE_ROW_FIELDS) and _state_cols_ok(cols):
        return rows if isinstance(rows, list) else list(rows)
    return [_state_tuple(VehicleState(*r)) for r in rows]


def _state_cols_ok(cols: list[tuple[Any, ...]]) -> bool:
    ids, *floats = cols[:7]
    edges, lanes, socs, modes = cols[7:]
    if any(set(map(type, c)) != {float} for c in floats):
        return False
    vals = np.array(floats)
    if not ((vals >= _STATE_LO) & (vals <= _STATE_HI) & np.isfinite(vals)).all():
        return False
    if set(map(type, lanes)) != {int} or not 0 <= min(lanes) <= max(lanes) <= MAX_LANE:
        return False
    soc = [x for x in socs if x is not None]
    if soc:
        if set(map(type, soc)) != {float}:
            return False
        a = np.array(soc)
        if not ((a >= 0.0) & (a <= 1.0)).all():  # NaN fails
            return False
    try:
        distinct = (set(ids), set(edges), set(modes))
    except TypeError:  # unhashable: not a string
        return False
    return (
        all(type(v) is str and 0 < len(v) <= MAX_ID_CHARS and v.isprintable() and " " not in v
            for v in distinct[0])
        and all(_edge_ok(e) for e in distinct[1])
        and all(type(m) is str and _TOKEN.fullmatch(m) for m in distinct[2])
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """A freight order as stored (compare :class:`convoy.cloud.entities.Order`).

    Attributes:
        id: unique order id.
        shipper: who ships it (free text).
        cargo: one of :class:`convoy.cloud.entities.Cargo`.
        origin_site, destination_site: site ids, different.
        tonnes: payload to move [t], > 0.
        pickup_start_s, pickup_end_s: when loading may happen [s].
        delivery_start_s, delivery_end_s: when unloading may happen [s].
        priority: 0 normal, 1 high, 2 urgent.
        status: see :class:`OrderStatus`.
        created_s: when it was created [s]; ``create_order`` stamps the clock if None.
    """

    id: str
    shipper: str
    cargo: str
    origin_site: str
    destination_site: str
    tonnes: float
    pickup_start_s: float
    pickup_end_s: float
    delivery_start_s: float
    delivery_end_s: float
    priority: int = 0
    status: OrderStatus = OrderStatus.OPEN
    created_s: float | None = None

    def __post_init__(self) -> None:
        rec = f"Order {self.id!r}" if isinstance(self.id, str) else "Order"
        s = object.__setattr__
        _check_id(rec, "id", self.id)
        _check_name(rec, "shipper", self.shipper)
        s(self, "cargo", _enum(rec, "cargo", self.cargo, Cargo).value)
        _check_id(rec, "origin_site", self.origin_site)
        _check_id(rec, "destination_site", self.destination_site)
        if self.origin_site == self.destination_site:
            raise _fail(rec, "destination_site", self.destination_site, "a site other than origin")
        s(self, "tonnes", _num(rec, "tonnes", self.tonnes, 0.0, math.inf))
        if not self.tonnes > 0:
            raise _fail(rec, "tonnes", self.tonnes, "a finite number > 0")
        for w in ("pickup", "delivery"):
            start = _time(rec, f"{w}_start_s", getattr(self, f"{w}_start_s"))
            end = _time(rec, f"{w}_end_s", getattr(self, f"{w}_end_s"))
            if end < start:
                raise _fail(rec, f"{w}_end_s", end, f">= {w}_start_s ({start:g})")
            s(self, f"{w}_start_s", start)
            s(self, f"{w}_end_s", end)
        if self.delivery_end_s < self.pickup_start_s:
            raise _fail(
                rec,
                "delivery_end_s",
                self.delivery_end_s,
                f">= pickup_start_s ({self.pickup_start_s:g})",
            )
        _int(rec, "priority", self.priority, 0, 2)
        s(self, "status", _enum(rec, "status", self.status, OrderStatus))
        s(self, "created_s", _opt_time(rec, "created_s", self.created_s))

    def same_request(self, other: OrderRecord) -> bool:
        """Whether both ask for the same thing: every field but id, status and created_s."""
        return _request_key(self) == _request_key(other)

    @classmethod
    def from_order(
        cls, order: Order, status: OrderStatus = OrderStatus.OPEN, created_s: float | None = None
    ) -> OrderRecord:
        """The stored form of a cloud-layer :class:`Order`."""
        return cls(
            id=order.id,
            shipper=order.shipper,
            cargo=order.cargo.value,
            origin_site=order.origin_site,
            destination_site=order.destination_site,
            tonnes=order.tonnes,
            pickup_start_s=order.pickup.start_s,
            pickup_end_s=order.pickup.end_s,
            delivery_start_s=order.delivery.start_s,
            delivery_end_s=order.delivery.end_s,
            priority=order.priority,
            status=status,
            created_s=created_s,
        )

    def to_order(self) -> Order:
        """The cloud-layer :class:`Order` (raises its ``EntityError`` if its windows fall
        outside the planning horizon, e.g. epoch seconds)."""
        return Order(
            id=self.id,
            shipper=self.shipper,
            cargo=Cargo(self.cargo),
            origin_site=self.origin_site,
            destination_site=self.destination_site,
            tonnes=self.tonnes,
            pickup=TimeWindow(self.pickup_start_s, self.pickup_end_s),
            delivery=TimeWindow(self.delivery_start_s, self.delivery_end_s),
            priority=self.priority,
        )


def _request_key(o: OrderRecord) -> tuple[Any, ...]:
    return (
        o.shipper,
        o.cargo,
        o.origin_site,
        o.destination_site,
        o.tonnes,
        o.pickup_start_s,
        o.pickup_end_s,
        o.delivery_start_s,
        o.delivery_end_s,
        o.priority,
    )


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """A stored day plan.

    Attributes:
        version: increases by one with every plan saved (any ``plan_id``).
        plan_id: which plan it is, e.g. the operating day "2025-01-15".
        created_s: when it was saved [s] (the storage clock).
        plan: the plan as a JSON object.
    """

    version: int
    plan_id: str
    created_s: float
    plan: dict[str, Any] = field(compare=True)


@dataclass(frozen=True, slots=True)
class TripRecord:
    """One platoon (or solo) movement from a site to a site.

    Attributes:
        id: unique trip id.
        vehicle_ids: trucks, lead first then followers front to back; at least one.
        driver_id: the human driver in the lead truck; None when driverless.
        origin_site, destination_site: site ids.
        depart_s, arrive_s: planned (or actual) times [s], arrive_s >= depart_s.
        tonnes: cargo on board, all trucks together [t], >= 0.
        order_ids: orders on board.
        plan_version: the plan that made it, None if made by hand.
        status: see :class:`TripStatus`.
    """

    id: str
    vehicle_ids: tuple[str, ...]
    driver_id: str | None
    origin_site: str
    destination_site: str
    depart_s: float
    arrive_s: float
    tonnes: float = 0.0
    order_ids: tuple[str, ...] = ()
    plan_version: int | None = None
    status: TripStatus = TripStatus.PLANNED

    def __post_init__(self) -> None:
        rec = f"Trip {self.id!r}" if isinstance(self.id, str) else "Trip"
        s = object.__setattr__
        _check_id(rec, "id", self.id)
        if isinstance(self.vehicle_ids, str) or not isinstance(self.vehicle_ids, Sequence):
            raise _fail(rec, "vehicle_ids", self.vehicle_ids, "a sequence of vehicle ids")
        s(self, "vehicle_ids", tuple(self.vehicle_ids))
        if not self.vehicle_ids:
            raise _fail(rec, "vehicle_ids", self.vehicle_ids, "at least one vehicle id")
        for v in self.vehicle_ids:
            _check_id(rec, "vehicle_ids[]", v)
        if len(set(self.vehicle_ids)) != len(self.vehicle_ids):
            raise _fail(rec, "vehicle_ids", self.vehicle_ids, "each vehicle once")
        _check_opt_id(rec, "driver_id", self.driver_id)
        _check_id(rec, "origin_site", self.origin_site)
        _check_id(rec, "destination_site", self.destination_site)
        s(self, "depart_s", _time(rec, "depart_s", self.depart_s))
        s(self, "arrive_s", _time(rec, "arrive_s", self.arrive_s))
        if self.arrive_s < self.depart_s:
            raise _fail(rec, "arrive_s", self.arrive_s, f">= depart_s ({self.depart_s:g})")
        s(self, "tonnes", _num(rec, "tonnes", self.tonnes, 0.0, math.inf))
        if isinstance(self.order_ids, str) or not isinstance(self.order_ids, Sequence):
            raise _fail(rec, "order_ids", self.order_ids, "a sequence of order ids")
        s(self, "order_ids", tuple(self.order_ids))
        for o in self.order_ids:
            _check_id(rec, "order_ids[]", o)
        if self.plan_version is not None:
            _int(rec, "plan_version", self.plan_version, 1, 2**62)
        s(self, "status", _enum(rec, "status", self.status, TripStatus))


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event of the event log (the keys of ``events.jsonl``: t_s, type, vehicle_id).

    Attributes:
        t_s: when it happened [s].
        type: event type token, e.g. "hard_brake", "takeover_request".
        vehicle_id: the truck concerned, None for fleet-wide events.
        payload: any further fields, a plain JSON object of at most 64 KiB.
        id: set by storage on write: increases in write order.
    """

    t_s: float
    type: str
    vehicle_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def __post_init__(self) -> None:
        rec = "Event"
        object.__setattr__(self, "t_s", _time(rec, "t_s", self.t_s))
        _check_token(rec, "type", self.type, _EVENT_TYPE)
        _check_opt_id(rec, "vehicle_id", self.vehicle_id)
        payload = _frozen_json(rec, "payload", self.payload, MAX_EVENT_PAYLOAD_BYTES)
        object.__setattr__(self, "payload", payload)
        if self.id is not None:
            _int(rec, "id", self.id, 1, 2**62)


@dataclass(frozen=True, slots=True)
class TakeoverRecord:
    """A remote-takeover request (compare ``convoy.cloud.supervision.TakeoverRequest``).

    Attributes:
        id: unique request id.
        vehicle_id: the driverless truck asking.
        cause: a ``convoy.cloud.supervision.TakeoverCause`` value, e.g. "odd-weather".
        requested_s: when it asked [s].
        deadline_s: the latest claim time before a minimal-risk manoeuvre [s].
        status: see :class:`TakeoverStatus`.
        operator: who claimed it; None while open or expired.
        claimed_s, resolved_s: when it was claimed / resolved [s]; None until then.
    """

    id: str
    vehicle_id: str
    cause: str
    requested_s: float
    deadline_s: float
    status: TakeoverStatus = TakeoverStatus.OPEN
    operator: str | None = None
    claimed_s: float | None = None
    resolved_s: float | None = None

    def __post_init__(self) -> None:
        rec = f"Takeover {self.id!r}" if isinstance(self.id, str) else "Takeover"
        s = object.__setattr__
        _check_id(rec, "id", self.id)
        _check_id(rec, "vehicle_id", self.vehicle_id)
        _check_token(rec, "cause", self.cause, _TOKEN)
        s(self, "requested_s", _time(rec, "requested_s", self.requested_s))
        s(self, "deadline_s", _time(rec, "deadline_s", self.deadline_s))
        if self.deadline_s < self.requested_s:
            raise _fail(
                rec, "deadline_s", self.deadline_s, f">= requested_s ({self.requested_s:g})"
            )
        s(self, "status", _enum(rec, "status", self.status, TakeoverStatus))
        _check_opt_id(rec, "operator", self.operator)
        s(self, "claimed_s", _opt_time(rec, "claimed_s", self.claimed_s))
        s(self, "resolved_s", _opt_time(rec, "resolved_s", self.resolved_s))
        claimed = self.status in (TakeoverStatus.CLAIMED, TakeoverStatus.RESOLVED)
        if claimed != (self.operator is not None) or claimed != (self.claimed_s is not None):
            raise _fail(
                rec,
                "operator",
                self.operator,
                "an operator and claimed_s exactly when the status is claimed or resolved",
            )
        if (self.status is TakeoverStatus.RESOLVED) != (self.resolved_s is not None):
            raise _fail(rec, "resolved_s", self.resolved_s, "a time exactly when resolved")


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An API token as stored: never its plaintext.

    Attributes:
        key_id: the public part of the token, used to look it up.
        name: who or what holds it (unique).
        role: see :class:`Role`.
        token_hash: ``scrypt$n$r$p$salt_hex$hash_hex`` of the secret part.
        created_s: when it was made [s].
    """

    key_id: str
    name: str
    role: Role
    token_hash: str
    created_s: float


# --- token hashing --------------------------------------------------------------------------

#: Prefix of every plaintext token: ``cvy.<key_id>.<secret>``.
TOKEN_PREFIX = "cvy"
# scrypt cost n=2**10, r=8, p=1: about 6 ms and 1 MiB per check on this machine. A token's
# secret carries 256 random bits, so the hash needs no high cost to resist guessing; the salt
# and the KDF keep a copied database from being usable, while every API request can afford
# the check. Parameters are stored in each hash, so they can be raised later.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**10, 8, 1


def make_token() -> tuple[str, str, str]:
    """A fresh token: ``(plaintext, key_id, token_hash)``."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return f"{TOKEN_PREFIX}.{key_id}.{secret}", key_id, hash_secret(secret)


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt_hex$hash_hex`` of ``secret`` with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, token_hash: str) -> bool:
    """Whether ``secret`` matches ``token_hash`` (constant time in the digest)."""
    try:
        kind, n, r, p, salt_hex, digest_hex = token_hash.split("$")
        if kind != "scrypt":
            return False
        digest = hashlib.scrypt(
            secret.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


def split_token(plaintext: Any) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed plaintext token, else None."""
    if not isinstance(plaintext, str) or len(plaintext) > 200:
        return None
    parts = plaintext.split(".", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


# --- the interface --------------------------------------------------------------------------


class Storage(ABC):
    """Everything the cloud service keeps: telemetry, orders, plans, trips, events,
    takeovers and API tokens.

    Durability: every write method commits before it returns, so what it acknowledged
    survives the process being killed (``kill -9``). See each backend for power-loss
    guarantees (telemetry may trade those for speed; orders, events and takeovers do not).

    Thread safety: one instance may be shared by threads; each call borrows a connection
    from the instance's small pool and runs in its own transaction. Open a new instance in a
    child process after ``fork``.

    Time filters are half-open: ``since_s`` inclusive, ``until_s`` exclusive.
    """

    url: str

    # -- lifecycle --
    @abstractmethod
    def migrate(self, target: int | None = None) -> int:
        """Apply the pending schema migrations up to ``target`` (default: the latest) in one
        transaction and return the schema version. Idempotent: at or beyond ``target`` it
        changes nothing (there are no downgrades). Safe to call from several processes at
        once.

        Raises:
            StorageError: the database is newer than this code, or ``target`` is unknown.
        """

    @abstractmethod
    def schema_version(self) -> int:
        """The version of the schema in the database (0 = empty)."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection; the instance is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- telemetry --
    @abstractmethod
    def write_states(self, batch: Iterable[VehicleState]) -> int:
        """Store a batch of samples in one transaction and return how many. Duplicates are
        stored as given (MQTT may redeliver); ``latest_states`` keeps the newest per truck."""

    @abstractmethod
    def write_state_rows(self, rows: Sequence[StateRow]) -> int:
        """``write_states`` for samples as :data:`StateRow` tuples: the bulk path of the
        telemetry ingest. The rows get the record's checks in bulk (:func:`check_state_rows`)
        instead of a record each; a bad row raises :class:`RecordError` and nothing is
        stored."""

    @abstractmethod
    def states(
        self,
        vehicle_id: str | None = None,
        since_s: float | None = None,
        until_s: float | None = None,
        limit: int = 10_000,
    ) -> list[VehicleState]:
        """Samples in time order (then vehicle id), at most ``limit``."""

    @abstractmethod
    def latest_states(self) -> list[VehicleState]:
        """The newest stored sample of every truck, by vehicle id; of samples with the same
        time, the later write. Read from the stored telemetry itself, so never stale."""

    @abstractmethod
    def prune_states(self, older_than_s: float) -> int:
        """Delete every sample with ``t_s < older_than_s`` (retention); return how many."""

    # -- orders --
    @abstractmethod
    def create_order(self, order: OrderRecord, idempotency_key: str | None = None) -> OrderRecord:
        """Store a new order and return it as stored (``created_s`` stamped if None).

        With an ``idempotency_key`` seen before, return the order stored under it and store
        nothing, provided the request is the same (``OrderRecord.same_request``).

        Raises:
            ConflictError: the id exists, or the key was used for a different request.
        """

    @abstractmethod
    def get_order(self, order_id: str) -> OrderRecord:
        """The order with this id.

        Raises:
            NotFoundError: none.
        """

    @abstractmethod
    def list_orders(
        self, status: OrderStatus | str | None = None, limit: int = 10_000
    ) -> list[OrderRecord]:
        """Orders by creation time, optionally of one status."""

    @abstractmethod
    def set_order_status(self, order_id: str, status: OrderStatus | str) -> OrderRecord:
        """Move an order to ``status`` along ``ORDER_TRANSITIONS`` (atomic); setting the
        status it has is a no-op.

        Raises:
            NotFoundError: no such order.
            ConflictError: the change is not allowed from its current status.
        """

    def cancel_order(self, order_id: str) -> OrderRecord:
        """Cancel an open or planned order; cancelling a cancelled order is a no-op.

        Raises:
            NotFoundError: no such order.
            ConflictError: it was delivered.
        """
        return self.set_order_status(order_id, OrderStatus.CANCELLED)

    # -- plans and trips --
    @abstractmethod
    def save_plan(self, plan: Mapping[str, Any], plan_id: str = "day") -> int:
        """Store a plan (a JSON object of at most 16 MiB) and return its new version."""

    @abstractmethod
    def latest_plan(self, plan_id: str | None = None) -> PlanRecord | None:
        """The newest plan (of ``plan_id`` if given), None if there is none."""

    @abstractmethod
    def get_plan(self, version: int) -> PlanRecord:
        """The plan of this version.

        Raises:
            NotFoundError: none.
        """

    @abstractmethod
    def save_trips(self, trips: Iterable[TripRecord]) -> int:
        """Insert or replace trips by id in one transaction; return how many."""

    @abstractmethod
    def get_trip(self, trip_id: str) -> TripRecord:
        """The trip with this id.

        Raises:
            NotFoundError: none.
        """

    @abstractmethod
    def list_trips(
        self,
        plan_version: int | None = None,
        status: TripStatus | str | None = None,
        limit: int = 10_000,
    ) -> list[TripRecord]:
        """Trips by departure time, optionally of one plan version and/or status."""

    @abstractmethod
    def set_trip_status(self, trip_id: str, status: TripStatus | str) -> TripRecord:
        """Set a trip's status.

        Raises:
            NotFoundError: no such trip.
        """

    # -- events --
    @abstractmethod
    def append_events(self, events: Iterable[EventRecord]) -> int:
        """Append events in one transaction; return how many. Their ``id`` is ignored."""

    @abstractmethod
    def events(
        self,
        since_s: float | None = None,
        until_s: float | None = None,
        type: str | None = None,
        vehicle_id: str | None = None,
        limit: int = 1_000,
    ) -> list[EventRecord]:
        """Events in time order (then write order), at most ``limit``."""

    # -- takeovers --
    @abstractmethod
    def create_takeover(self, takeover: TakeoverRecord) -> TakeoverRecord:
        """Store a new takeover request.

        Raises:
            ConflictError: the id exists.
        """

    @abstractmethod
    def get_takeover(self, takeover_id: str) -> TakeoverRecord:
        """The takeover with this id.

        Raises:
            NotFoundError: none.
        """

    @abstractmethod
    def claim_takeover(self, takeover_id: str, operator: str, t_s: float) -> TakeoverRecord:
        """Claim an open request for ``operator`` at ``t_s`` (no later than its deadline).
        Atomic: of any number of concurrent claimers exactly one wins.

        Raises:
            NotFoundError: no such takeover.
            ConflictError: it is not open (claimed by someone, resolved, expired) or its
                deadline has passed; the message says which.
        """

    @abstractmethod
    def resolve_takeover(self, takeover_id: str, operator: str, t_s: float) -> TakeoverRecord:
        """Mark a request claimed by ``operator`` as resolved at ``t_s``.

        Raises:
            NotFoundError: no such takeover.
            ConflictError: it is not claimed by ``operator``, or ``t_s`` precedes the claim.
        """

    @abstractmethod
    def expire_takeovers(self, now_s: float) -> list[TakeoverRecord]:
        """Mark every open request whose deadline is before ``now_s`` expired and return them
        by deadline. Claimed requests never expire."""

    @abstractmethod
    def list_takeovers(
        self, status: TakeoverStatus | str | None = None, limit: int = 10_000
    ) -> list[TakeoverRecord]:
        """Takeovers by deadline, optionally of one status."""

    # -- API tokens --
    @abstractmethod
    def add_token(self, name: str, role: Role | str) -> str:
        """Make a token for ``name`` with ``role`` and return its plaintext, which is shown
        this once: only a salted scrypt hash of its secret is stored.

        Raises:
            ConflictError: a token of that name exists.
        """

    @abstractmethod
    def check_token(self, plaintext: str) -> Role | None:
        """The role of a valid token, None for anything else."""

    @abstractmethod
    def list_tokens(self) -> list[ApiToken]:
        """Stored tokens by name (hashes, never plaintexts)."""

    @abstractmethod
    def revoke_token(self, name: str) -> bool:
        """Delete the token of ``name``; whether there was one."""
