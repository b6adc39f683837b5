"""Payloads of the MQTT vehicle link: typed, validated, with JSON schemas.

The telemetry payload, :class:`VehicleState`, is a compact subset of the T/CSAE 53 BSM
(``convoy.road.v2x.BSM``) plus what a fleet operator needs and the BSM lacks. Its fields
reuse the BSM's value ranges (``convoy.road.v2x``), in SI units named in the field:

=================  ===============  ===========================================================
field              BSM element      range and unit
=================  ===============  ===========================================================
``id``             ``id``           vehicle id, 1-16 of ``0-9 A-Z a-z . _ : -``
``time_ms``        ``secMark``      UTC Unix time of the sample [ms], 2000-01-01 .. 2100-01-01;
                                    the BSM's ``secMark`` is ``time_ms % 60000``
``lon_deg``        ``pos.long``     WGS84 [degrees], -180..180
``lat_deg``        ``pos.lat``      WGS84 [degrees], -90..90
``speed_mps``      ``speed``        [m/s], 0..163.8
``heading_deg``    ``heading``      clockwise from north [degrees], 0..360
``accel_mps2``     ``accelSet.long`` longitudinal [m/s²], -20..20
``soc``            --               battery state of charge [0..1]; absent for diesel trucks
``mode``           --               control mode (``convoy.vehicle.controllers.MODE_NAMES``)
``edge``           --               road-network edge id, 1-64 printable ASCII characters
``lane``           --               lane index, 0 = rightmost, 0..255
=================  ===============  ===========================================================

A :class:`VehicleStateBatch` carries several samples of one truck in one message, which
costs the broker and the ingest one message instead of ten. :class:`VehicleStateColumns`
carries them as one array per field: half the bytes, and the ingest checks it without
building a model per sample.

:func:`decode` is the way in for the ingest: it never raises on bad input but returns a
:class:`Reject` whose ``reason`` is one of :data:`REJECT_REASONS`, so rejects can be counted
per reason, and whose ``detail`` names the field, the value and what is allowed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import Annotated, Any, Final, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from convoy.road import v2x
from convoy.road.v2x import Acceleration, Heading, Latitude, Longitude, Speed, TempId, Uint8
from convoy.service.mqtt import topics
from convoy.vehicle.controllers import MODE_NAMES

#: Largest payload accepted [bytes]; larger ones are refused before parsing. The same limit as
#: the V2X messages (``convoy.road.v2x.MAX_MESSAGE_BYTES``, 64 KiB).
MAX_PAYLOAD_BYTES: Final = v2x.MAX_MESSAGE_BYTES
#: Most samples in one batch: 30 s at the BSM's 10 Hz. A full batch encodes to about 7 KiB.
MAX_BATCH_STATES: Final = 300
#: A sample as a tuple in :class:`VehicleState`'s field order: ``(id, time_ms, lon_deg,
#: lat_deg, speed_mps, heading_deg, accel_mps2, soc, mode, edge, lane)``, optional fields None
#: when absent. The ingest's row mode hands these to its sink instead of models.
StateRow = tuple[
    str, int, float, float, float, float, float, float | None, str | None, str | None, int | None
]
#: Sample times outside [2000-01-01, 2100-01-01) UTC are out of range [ms since 1970].
MIN_TIME_MS: Final = 946_684_800_000
MAX_TIME_MS: Final = 4_102_444_800_000

#: Why a payload was rejected: the keys of the counts in ``IngestReport``.
RejectReason = Literal[
    "oversized",  # over MAX_PAYLOAD_BYTES
    "malformed_json",  # not JSON (or not UTF-8)
    "schema",  # JSON, but missing or unknown fields, wrong types, empty batch
    "out_of_range",  # a value outside its range: NaN, infinity, speed < 0, unknown mode
    "id_mismatch",  # the payload's vehicle id is not the topic's
    "bad_topic",  # a topic outside the scheme
    "unknown_vehicle",  # a vehicle the fleet does not know
]
REJECT_REASONS: tuple[RejectReason, ...] = get_args(RejectReason)

ControlMode = Literal[
    "speed",
    "gap",
    "gap-closing",
    "collision-avoidance",
    "acc-fallback",
    "emergency",
    "follow",
    "head",
    "collided",
]
assert get_args(ControlMode) == MODE_NAMES, "ControlMode must list MODE_NAMES in order"

TimeMs = Annotated[int, Field(ge=MIN_TIME_MS, lt=MAX_TIME_MS, description="UTC Unix time [ms]")]
EdgeId = Annotated[str, Field(pattern=r"^[\x21-\x7e]{1,64}$", description="edge id")]
StateOfCharge = Annotated[float, Field(ge=0.0, le=1.0, description="state of charge [0..1]")]
Text = Annotated[str, Field(pattern=r"^[\x20-\x7e]{1,512}$", description="printable ASCII")]


class _Model(BaseModel):
    """Frozen, closed and strict (like ``convoy.road.v2x``): no coercion, no unknown fields,
    no NaN or infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class VehicleState(_Model):
    """One telemetry sample of a truck (the BSM subset in the module docstring)."""

    id: TempId
    time_ms: TimeMs
    lon_deg: Longitude
    lat_deg: Latitude
    speed_mps: Speed
    heading_deg: Heading
    accel_mps2: Acceleration
    soc: StateOfCharge | None = None
    mode: ControlMode | None = None
    edge: EdgeId | None = None
    lane: Uint8 | None = None


class VehicleStateBatch(_Model):
    """Samples of one truck ``id``, oldest first, 1..``MAX_BATCH_STATES`` of them; every
    sample's ``id`` must be the batch's."""

    id: TempId
    states: Annotated[tuple[VehicleState, ...], Field(min_length=1, max_length=MAX_BATCH_STATES)]

    @model_validator(mode="after")
    def _one_truck(self) -> VehicleStateBatch:
        for k, s in enumerate(self.states):
            if s.id != self.id:
                raise PydanticCustomError(
                    "id_mismatch",
                    "field 'states.{k}.id' = {got} is not the batch's id {want}",
                    {"k": k, "got": repr(s.id), "want": repr(self.id)},
                )
        return self


_Samples = Field(min_length=1, max_length=MAX_BATCH_STATES)


class VehicleStateColumns(_Model):
    """Samples of one truck ``id`` as columns: element ``k`` of every array is sample ``k``,
    oldest first, 1..``MAX_BATCH_STATES`` of them. The fields, units and ranges are
    :class:`VehicleState`'s; the required ones are arrays of numbers, the optional ones
    (``soc``, ``mode``, ``edge``, ``lane``) may be left out (every sample without it) or hold
    ``null`` for a sample without it. All arrays must have the same length."""

    id: TempId
    time_ms: Annotated[tuple[TimeMs, ...], _Samples]
    lon_deg: Annotated[tuple[Longitude, ...], _Samples]
    lat_deg: Annotated[tuple[Latitude, ...], _Samples]
    speed_mps: Annotated[tuple[Speed, ...], _Samples]
    heading_deg: Annotated[tuple[Heading, ...], _Samples]
    accel_mps2: Annotated[tuple[Acceleration, ...], _Samples]
    soc: Annotated[tuple[StateOfCharge | None, ...], _Samples] | None = None
    mode: Annotated[tuple[ControlMode | None, ...], _Samples] | None = None
    edge: Annotated[tuple[EdgeId | None, ...], _Samples] | None = None
    lane: Annotated[tuple[Uint8 | None, ...], _Samples] | None = None

    @model_validator(mode="after")
    def _same_length(self) -> VehicleStateColumns:
        n = len(self.time_ms)
        for name in _COLUMNS[2:]:
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise PydanticCustomError(
                    "column_length",
                    "field '{name}' has {got} samples, 'time_ms' has {want}",
                    {"name": name, "got": len(col), "want": n},
                )
        return self

    def rows(self) -> list[StateRow]:
        """The samples as :data:`StateRow` tuples, oldest first."""
        n = len(self.time_ms)
        none = (None,) * n
        return list(
            zip(
                repeat(self.id, n), self.time_ms, self.lon_deg, self.lat_deg, self.speed_mps,
                self.heading_deg, self.accel_mps2, self.soc or none, self.mode or none,
                self.edge or none, self.lane or none, strict=True,
            )
        )  # fmt: skip

    def states(self) -> list[VehicleState]:
        """The samples as :class:`VehicleState` models (already checked: not validated again)."""
        make = VehicleState.model_construct
        return [make(None, **dict(zip(_COLUMNS, r, strict=True))) for r in self.rows()]


#: ``VehicleState.model_validate_json`` without its Python wrapper.
_validate_state = VehicleState.__pydantic_validator__.validate_json
#: :class:`VehicleState`'s fields, in order: the columns of :data:`StateRow`.
_COLUMNS = tuple(VehicleState.model_fields)
#: A model's fields as a :data:`StateRow`.
state_row: attrgetter[StateRow] = attrgetter(*_COLUMNS)


VehicleEventType = Literal[
    "takeover_request",
    "takeover",
    "minimal_risk_stop",
    "hard_brake",
    "collision",
    "fault",
    "arrive_site",
    "depart_site",
    "platoon_join",
    "platoon_leave",
]


class VehicleEvent(_Model):
    """Something that happened to a truck, at ``time_ms``, where it was if known."""

    id: TempId
    time_ms: TimeMs
    type: VehicleEventType
    detail: Text | None = None
    lon_deg: Longitude | None = None
    lat_deg: Latitude | None = None


VehicleCommandType = Literal[
    "set_speed_cap", "clear_speed_cap", "minimal_risk_stop", "resume", "join_platoon",
    "leave_platoon",
]  # fmt: skip


class VehicleCommand(_Model):
    """A command from the cloud to one truck; ``command_id`` lets the truck drop repeats.

    ``set_speed_cap`` needs ``speed_cap_mps``; ``join_platoon`` needs ``platoon_id``.
    """

    command_id: TempId
    time_ms: TimeMs
    type: VehicleCommandType
    speed_cap_mps: Speed | None = None
    platoon_id: TempId | None = None
    detail: Text | None = None

    @model_validator(mode="after")
    def _arguments(self) -> VehicleCommand:
        if self.type == "set_speed_cap" and self.speed_cap_mps is None:
            raise ValueError("set_speed_cap needs speed_cap_mps")
        if self.type == "join_platoon" and self.platoon_id is None:
            raise ValueError("join_platoon needs platoon_id")
        return self


class RejectSample(_Model):
    """One rejected payload in a report: its topic, reason, detail and size [bytes]."""

    topic: str
    reason: RejectReason
    detail: str
    size_bytes: int


class IngestReport(_Model):
    """What an ingest worker rejected, published on ``convoy/v1/errors``.

    Attributes:
        worker: the worker's MQTT client id.
        time_ms: when the report was made [UTC ms].
        window_s: the time the ``rejected`` counts cover [s].
        rejected: rejects per reason in the window.
        rejected_total, accepted_total: counts since the worker started (states accepted,
            not messages).
        samples: the first rejects of the window (at most ``MAX_REPORT_SAMPLES``).
    """

    worker: str
    time_ms: int
    window_s: float
    rejected: dict[RejectReason, int]
    rejected_total: dict[RejectReason, int]
    accepted_total: int
    samples: tuple[RejectSample, ...] = ()


#: Rejected payloads described one by one per report; the rest are only counted.
MAX_REPORT_SAMPLES: Final = 20


@dataclass(frozen=True, slots=True)
class Reject:
    """A payload that was not accepted: ``reason`` (one of ``REJECT_REASONS``) and a
    ``detail`` naming the field, the value and what is allowed."""

    reason: RejectReason
    detail: str


_RANGE_ERRORS = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "finite_number",
        "literal_error",
        "string_pattern_mismatch",
    }
)


def _reject(exc: ValidationError) -> Reject:
    """Classify a validation error and describe its first problem."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    kind = err["type"]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if kind == "json_invalid":
        return Reject("malformed_json", f"malformed JSON: {msg.removeprefix('Invalid JSON: ')}")
    if kind == "id_mismatch":
        return Reject("id_mismatch", msg)
    if kind == "column_length":
        return Reject("schema", f"payload: {msg}")
    reason: RejectReason = "out_of_range" if kind in _RANGE_ERRORS else "schema"
    if not err["loc"]:
        return Reject(reason, f"payload: {msg}{more}")
    shown = repr(err.get("input"))
    if isinstance(err.get("input"), dict | list) or kind == "missing":
        return Reject(reason, f"field '{loc}': {msg}{more}")
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return Reject(reason, f"field '{loc}' = {shown}: {msg}{more}")


def _oversized(payload: bytes | bytearray) -> Reject | None:
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Reject(
            "oversized", f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}"
        )
    return None


_Owned = TypeVar("_Owned", VehicleState, VehicleStateBatch, VehicleStateColumns)


def _decode_owned(
    model: type[_Owned], payload: bytes | bytearray, vehicle_id: str | None
) -> _Owned | Reject:
    """Parse ``payload`` as ``model``; ``vehicle_id`` (the topic's) must match its ``id``.
    Never raises on bad input: returns a :class:`Reject` instead."""
    big = _oversized(payload)
    if big is not None:
        return big
    try:
        msg = model.model_validate_json(payload)
    except ValidationError as exc:
        return _reject(exc)
    if vehicle_id is not None and msg.id != vehicle_id:
        return Reject("id_mismatch", f"field 'id' = {msg.id!r} is not the topic's {vehicle_id!r}")
    return msg


def decode_state(
    payload: bytes | bytearray, vehicle_id: str | None = None
) -> VehicleState | Reject:
    """Parse one :class:`VehicleState`; ``vehicle_id`` (the topic's) must match its ``id``.

    Never raises on bad input: returns a :class:`Reject` instead.
    """
    return _decode_owned(VehicleState, payload, vehicle_id)


def decode_batch(
    payload: bytes | bytearray, vehicle_id: str | None = None
) -> list[VehicleState] | Reject:
    """Parse a :class:`VehicleStateBatch` into its samples; ``vehicle_id`` must match."""
    batch = _decode_owned(VehicleStateBatch, payload, vehicle_id)
    return batch if isinstance(batch, Reject) else list(batch.states)


def decode_columns(
    payload: bytes | bytearray, vehicle_id: str | None = None
) -> VehicleStateColumns | Reject:
    """Parse a :class:`VehicleStateColumns`; ``vehicle_id`` must match its ``id``."""
    return _decode_owned(VehicleStateColumns, payload, vehicle_id)


#: Topic kinds that carry vehicle states.
STATE_KINDS: Final = frozenset({"state", "states", "columns"})


def decode_kind(
    kind: str, vehicle_id: str, payload: bytes | bytearray
) -> list[VehicleState] | Reject:
    """The samples in a payload of topic kind ``kind`` (one of :data:`STATE_KINDS`) of
    vehicle ``vehicle_id``, or why it was refused."""
    if kind == "state":
        one = decode_state(payload, vehicle_id)
        return one if isinstance(one, Reject) else [one]
    if kind == "states":
        return decode_batch(payload, vehicle_id)
    cols = decode_columns(payload, vehicle_id)
    return cols if isinstance(cols, Reject) else cols.states()


def decode_rows(kind: str, vehicle_id: str, payload: bytes | bytearray) -> list[StateRow] | Reject:
    """:func:`decode_kind`, with the samples as :data:`StateRow` tuples: the same checks,
    and for ``columns`` payloads no model per sample."""
    if kind == "state" and len(payload) <= MAX_PAYLOAD_BYTES:  # the common case, in one call
        try:
            s = _validate_state(payload)
        except ValidationError as exc:
            return _reject(exc)
        if s.id != vehicle_id:
            return Reject("id_mismatch", f"field 'id' = {s.id!r} is not the topic's {vehicle_id!r}")
        return [state_row(s)]
    if kind == "columns":
        cols = decode_columns(payload, vehicle_id)
        return cols if isinstance(cols, Reject) else cols.rows()
    got = decode_kind(kind, vehicle_id, payload)
    return got if isinstance(got, Reject) else [state_row(s) for s in got]


def route(topic: str, known: frozenset[str] | None = None) -> tuple[str, str] | Reject:
    """``(kind, vehicle id)`` of a topic that carries vehicle states, or why its messages are
    refused (``bad_topic``, ``unknown_vehicle``); see :func:`decode`."""
    try:
        where = topics.parse(topic)
    except topics.TopicError as exc:
        return Reject("bad_topic", str(exc))
    if where.kind not in STATE_KINDS:
        return Reject("bad_topic", f"topic {topic!r} carries no vehicle states")
    if known is not None and where.id not in known:
        return Reject("unknown_vehicle", f"vehicle {where.id!r} is not in the fleet")
    return where.kind, where.id


def decode(
    topic: str, payload: bytes | bytearray, known: frozenset[str] | None = None
) -> list[VehicleState] | Reject:
    """The samples in a message on a ``state``, ``states`` or ``columns`` topic, or why it
    was refused.

    Args:
        topic: the topic it came on.
        payload: its bytes.
        known: the vehicle ids the fleet knows; ``None`` accepts any valid id.
    """
    where = route(topic, known)
    if isinstance(where, Reject):
        return where
    return decode_kind(*where, payload)


def now_ms() -> int:
    """The current UTC Unix time [ms]."""
    return time.time_ns() // 1_000_000


def encode(msg: BaseModel) -> bytes:
    """Compact JSON of any payload here (optional fields left out when unset)."""
    return msg.model_dump_json(exclude_none=True).encode()


#: Payload models by topic kind; the V2X ones come from ``convoy.road.v2x``.
PAYLOADS: dict[str, type[BaseModel]] = {
    "state": VehicleState,
    "states": VehicleStateBatch,
    "columns": VehicleStateColumns,
    "events": VehicleEvent,
    "commands": VehicleCommand,
    "platoon_control": v2x.PlatoonControl,
    "rsi": v2x.RSI,
    "errors": IngestReport,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every topic's payload, keyed by topic kind (``topics.TopicKind``)."""
    return {kind: model.model_json_schema() for kind, model in PAYLOADS.items()}


if __name__ == "__main__":  # python -m convoy.service.mqtt.messages: every payload's schema
    import json

    print(json.dumps(json_schemas(), indent=2))
