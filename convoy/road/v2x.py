"""V2X messages: the T/CSAE 53 set and the T/ITS 0118 platoon messages, typed and validated.

Message sets:

* T/CSAE 53-2017/2020 (合作式智能运输系统 车用通信系统 应用层及应用数据交互标准), first-phase
  messages: ``BSM`` (vehicle state, 10 Hz), ``MAP`` (nodes, links, lanes, speed limits), ``SPAT``
  (signal phases and their remaining time), ``RSI`` (road-side events such as dust, ice or road
  works, with position, radius, paths and a time window) and ``RSM`` (objects a roadside unit
  perceives).
* T/ITS 0118-2020 (营运车辆合作式自动驾驶货车编队行驶), which splits platoon traffic into
  connection-oriented platoon management messages (COPMM: join request, join response, leave)
  and platoon control messages (PCM, sent at no less than 20 Hz).  convoy models the four that
  the engine and the cloud layer use: ``PlatoonJoinRequest``, ``PlatoonJoinAccept`` (which
  also carries a rejection and its reason), ``PlatoonLeave`` and ``PlatoonControl``.

Field names are the standards' camelCase where they have one (``secMark``, ``accelSet``,
``vehicleClass``, ``eventRadius``, ``ptcType``...).  The standards encode values as scaled
integers in ASN.1 UPER; here they travel as JSON numbers in SI units (m, m/s, m/s², degrees,
seconds), and each field's range is the standard's integer range times its scale, noted
beside the type.  Where no range could be checked against the standards' text, the SAE J2735
range for the same element is used and the comment says so.

The wire form is compact JSON (``encode``), and ``decode`` is the one way in: it refuses
anything malformed, unknown, incomplete, out of range or too large with a ``MessageError``
whose reason names the field, and raises nothing else.

Departures from the ASN.1, all for a simulator that exchanges JSON:

* identifiers (8-octet temporary ids, RSU ids) travel as text of 1-16 characters;
* positions inside RSI and RSM are absolute ``Position3D`` values rather than offsets from
  ``refPos``;
* optional sub-structures that convoy never fills (position confidence, steering angle,
  RSI traffic signs, ...) are left out; ``extra="forbid"`` then rejects them.
"""

# Field names are the standards' camelCase on purpose, so that the JSON matches them.
# ruff: noqa: N815

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

# Payloads above this many bytes are refused before parsing.  The JSON form is a few times
# larger than UPER; 64 KiB holds a MAP of dozens of links and any realistic RSI or RSM.
MAX_MESSAGE_BYTES = 65_536
# T/CSAE 53: vehicles broadcast BSM at 10 Hz.
BSM_RATE_HZ = 10.0
# T/ITS 0118-2020: platoon control messages (the platoon heartbeat) at no less than 20 Hz.
PCM_MIN_RATE_HZ = 20.0
# The top of the PCM rate field; 3GPP TS 22.186 sizes platooning for up to 30 msg/s, and
# 100 Hz leaves room for one message per 10 ms engine step.
PCM_MAX_RATE_HZ = 100.0
STANDARD_GRAVITY_MPS2 = 9.80665  # CGPM 1901

# ---- data elements (SI value ranges; the standard's integer range and scale in brackets) ----

MsgCount = Annotated[int, Field(ge=0, le=127, description="message counter, wraps at 127")]
# DSecond: milliseconds within the current UTC minute [0..59999 ms; 60000..65535 = leap/none]
SecMark = Annotated[int, Field(ge=0, le=59_999, description="ms within the UTC minute")]
# MinuteOfTheYear [0..527040, 527040 = invalid]: send nothing instead of the invalid value
MinuteOfTheYear = Annotated[int, Field(ge=0, le=527_039, description="minute of the UTC year")]
# Temporary vehicle id / RSU id: OCTET STRING (SIZE(8)) in the standard, text here
TempId = Annotated[str, Field(pattern=r"^[0-9A-Za-z._:-]{1,16}$", description="1-16 chars")]
# Latitude / Longitude [±900000000 / ±1799999999 in 1e-7 degree]
Latitude = Annotated[float, Field(ge=-90.0, le=90.0, description="WGS84 degrees")]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0, description="WGS84 degrees")]
# Elevation [-4096..61439 in 0.1 m; -4096 = unknown]
Elevation = Annotated[float, Field(ge=-409.5, le=6143.9, description="m above the ellipsoid")]
# Speed [0..8190 in 0.02 m/s; 8191 = unavailable]
Speed = Annotated[float, Field(ge=0.0, le=163.8, description="m/s")]
# Heading [0..28800 in 0.0125 degree, clockwise from true north]
Heading = Annotated[float, Field(ge=0.0, le=360.0, description="degrees from north")]
# Acceleration [-2000..2000 in 0.01 m/s²; 2001 = unavailable]
Acceleration = Annotated[float, Field(ge=-20.0, le=20.0, description="m/s²")]
# VerticalAcceleration [-126..127 in 0.02 g], carried in m/s²
VerticalAcceleration = Annotated[
    float,
    Field(ge=-2.52 * STANDARD_GRAVITY_MPS2, le=2.54 * STANDARD_GRAVITY_MPS2, description="m/s²"),
]
# YawRate [-32767..32767 in 0.01 deg/s]
YawRate = Annotated[float, Field(ge=-327.67, le=327.67, description="deg/s")]
# VehicleWidth [0..1023 cm], VehicleLength [0..4095 cm], VehicleHeight [0..127 in 5 cm]
VehicleWidth = Annotated[float, Field(ge=0.0, le=10.23, description="m")]
VehicleLength = Annotated[float, Field(ge=0.0, le=40.95, description="m")]
VehicleHeight = Annotated[float, Field(ge=0.0, le=6.35, description="m")]
# Radius [0..65535 in 0.1 m]
Radius = Annotated[float, Field(ge=0.0, le=6553.5, description="m")]
# LaneWidth [0..32767 cm]
LaneWidth = Annotated[float, Field(ge=0.0, le=327.67, description="m")]
# TimeMark [0..36000 in 0.1 s; 36000 = one hour or more; 36001 = unknown: leave it out]
TimeMark = Annotated[float, Field(ge=0.0, le=3600.0, description="s from now")]
# 0..65535 identifiers: NodeID, RoadRegulatorID, ptcId, eventType (GB/T 29100-2012 codes)
Uint16 = Annotated[int, Field(ge=0, le=65_535)]
# 0..255 identifiers: LaneID, PhaseID, rteId, BasicVehicleClass
Uint8 = Annotated[int, Field(ge=0, le=255)]
DescriptiveName = Annotated[str, Field(pattern=r"^[\x20-\x7e]{1,63}$", description="ASCII")]
# RSI description: IA5String (SIZE(1..512)), printable ASCII here
Description = Annotated[str, Field(pattern=r"^[\x20-\x7e]{1,512}$", description="ASCII")]

EnableStatus = Literal["unavailable", "off", "on"]
EngageStatus = Literal["unavailable", "off", "on", "engaged"]


class _Model(BaseModel):
    """Frozen, closed and strict: no coercion of "5" to 5, no unknown fields, no NaN."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


# ---- shared data frames ----


class Position3D(_Model):
    """WGS84 position: ``lat``, ``long`` [degrees], ``elevation`` [m] if known."""

    lat: Latitude
    long: Longitude
    elevation: Elevation | None = None


class AccelerationSet4Way(_Model):
    """Accelerations along the vehicle axes: ``long``, ``lat``, ``vert`` [m/s²]; ``yaw`` [deg/s]."""

    long: Acceleration
    lat: Acceleration
    vert: VerticalAcceleration
    yaw: YawRate


class BrakeSystemStatus(_Model):
    """Brake state.  ``brakePadel`` keeps the standard's spelling of "pedal"."""

    brakePadel: EnableStatus | None = None
    traction: EngageStatus | None = None
    abs: EngageStatus | None = None
    scs: EngageStatus | None = None
    brakeBoost: EnableStatus | None = None
    auxBrakes: Literal["unavailable", "off", "on", "reserved"] | None = None


class VehicleSize(_Model):
    """Outline: ``width``, ``length`` and ``height`` [m]."""

    width: VehicleWidth
    length: VehicleLength
    height: VehicleHeight | None = None


class VehicleClassification(_Model):
    """``classification``: BasicVehicleClass (J2735 numbering, e.g. 32 = six-axle
    tractor-semitrailer); ``fuelType`` 0..15 (3 = diesel, 4 = electric)."""

    classification: Uint8
    fuelType: Annotated[int, Field(ge=0, le=15)] | None = None


class NodeReferenceID(_Model):
    """A node (intersection or road end): ``region`` and ``id``, 0..65535 each."""

    region: Uint16 | None = None
    id: Uint16


# ---- BSM ----


class BSM(_Model):
    """Basic safety message, broadcast by every vehicle at ``BSM_RATE_HZ``.

    Attributes:
        msgCnt: counter 0..127.
        id: temporary vehicle id.
        secMark: ms within the UTC minute, 0..59999.
        pos: position.
        speed: m/s, 0..163.8.
        heading: degrees clockwise from north, 0..360.
        accelSet: accelerations [m/s²] and yaw rate [deg/s].
        brakes: brake system status (the hazard brake light of T/CSAE 53's emergency-brake
            warning rides on ``brakePadel`` and ``abs``).
        size: vehicle outline [m].
        vehicleClass: vehicle class and fuel type.
        transmission: gear state, if known.
    """

    msgType: Literal["BSM"] = "BSM"
    msgCnt: MsgCount
    id: TempId
    secMark: SecMark
    pos: Position3D
    speed: Speed
    heading: Heading
    accelSet: AccelerationSet4Way
    brakes: BrakeSystemStatus
    size: VehicleSize
    vehicleClass: VehicleClassification
    transmission: (
        Literal["neutral", "park", "forwardGears", "reverseGears", "unavailable"] | None
    ) = None


# ---- MAP ----


SpeedLimitType = Literal[
    "unknown",
    "maxSpeedInSchoolZone",
    "maxSpeedInSchoolZoneWhenChildrenArePresent",
    "maxSpeedInConstructionZone",
    "vehicleMinSpeed",
    "vehicleMaxSpeed",
    "vehicleNightMaxSpeed",
    "truckMinSpeed",
    "truckMaxSpeed",
    "truckNightMaxSpeed",
    "vehiclesWithTrailersMinSpeed",
    "vehiclesWithTrailersMaxSpeed",
    "vehiclesWithTrailersNightMaxSpeed",
]


class RegulatorySpeedLimit(_Model):
    """A speed limit of one ``type`` [m/s]."""

    type: SpeedLimitType
    speed: Speed


SpeedLimitList = Annotated[tuple[RegulatorySpeedLimit, ...], Field(min_length=1, max_length=9)]


class Lane(_Model):
    """A lane: ``laneID`` 0..255, ``laneWidth`` [m], its speed limits."""

    laneID: Uint8
    laneWidth: LaneWidth | None = None
    speedLimits: SpeedLimitList | None = None


class Link(_Model):
    """A directed link into its node from ``upstreamNodeId``, with 1..32 lanes."""

    name: DescriptiveName | None = None
    upstreamNodeId: NodeReferenceID
    speedLimits: SpeedLimitList | None = None
    linkWidth: LaneWidth | None = None
    lanes: Annotated[tuple[Lane, ...], Field(min_length=1, max_length=32)]


class MapNode(_Model):
    """A MAP node: id, reference position, and the links that enter it (1..32)."""

    name: DescriptiveName | None = None
    id: NodeReferenceID
    refPos: Position3D
    inLinks: Annotated[tuple[Link, ...], Field(min_length=1, max_length=32)] | None = None


class MAP(_Model):
    """Map data: 1..63 nodes with their incoming links, lanes and speed limits."""

    msgType: Literal["MAP"] = "MAP"
    msgCnt: MsgCount
    timeStamp: MinuteOfTheYear | None = None
    nodes: Annotated[tuple[MapNode, ...], Field(min_length=1, max_length=63)]


# ---- SPAT ----

LightState = Literal[
    "unavailable",
    "dark",
    "flashing-red",
    "red",
    "flashing-green",
    "permissive-green",
    "protected-green",
    "yellow",
    "flashing-yellow",
]


class TimeCountingDown(_Model):
    """Phase timing counted from now [s]: when the state started (0 if it already has), and
    its shortest, longest and likely remaining time."""

    startTime: TimeMark
    minEndTime: TimeMark | None = None
    maxEndTime: TimeMark | None = None
    likelyEndTime: TimeMark
    nextStartTime: TimeMark | None = None
    nextDuration: TimeMark | None = None

    @model_validator(mode="after")
    def _ordered(self) -> TimeCountingDown:
        if self.minEndTime is not None and self.minEndTime > self.likelyEndTime:
            raise ValueError(
                f"minEndTime ({self.minEndTime}) exceeds likelyEndTime ({self.likelyEndTime})"
            )
        if self.maxEndTime is not None and self.maxEndTime < self.likelyEndTime:
            raise ValueError(
                f"maxEndTime ({self.maxEndTime}) is below likelyEndTime ({self.likelyEndTime})"
            )
        return self


class PhaseState(_Model):
    """One signal state of a phase and its timing."""

    light: LightState
    timing: TimeCountingDown | None = None


class Phase(_Model):
    """A phase (signal group) ``id`` 1..255 and its current and coming states."""

    id: Uint8
    phaseStates: Annotated[tuple[PhaseState, ...], Field(min_length=1, max_length=16)]


class IntersectionState(_Model):
    """Signal state of one intersection.

    ``status`` is the 16-bit IntersectionStatusObject as an integer (bit 0 manual control,
    bit 5 fixed-time operation, bit 9 off, ...); ``timeStamp`` is ms within the minute.
    """

    intersectionId: NodeReferenceID
    status: Uint16
    moy: MinuteOfTheYear | None = None
    timeStamp: SecMark | None = None
    phases: Annotated[tuple[Phase, ...], Field(min_length=1, max_length=16)]


class SPAT(_Model):
    """Signal phase and timing for 1..32 intersections."""

    msgType: Literal["SPAT"] = "SPAT"
    msgCnt: MsgCount
    moy: MinuteOfTheYear | None = None
    timeStamp: SecMark | None = None
    name: DescriptiveName | None = None
    intersections: Annotated[tuple[IntersectionState, ...], Field(min_length=1, max_length=32)]


# ---- RSI ----

EventSource = Literal["unknown", "police", "government", "meteorological", "internet", "detection"]


class RSITimeDetails(_Model):
    """When an event is active: ``startTime`` and ``endTime`` [minute of the UTC year]."""

    startTime: MinuteOfTheYear | None = None
    endTime: MinuteOfTheYear | None = None

    @model_validator(mode="after")
    def _ordered(self) -> RSITimeDetails:
        if (
            self.startTime is not None
            and self.endTime is not None
            and self.endTime < self.startTime
        ):
            raise ValueError(f"endTime ({self.endTime}) is before startTime ({self.startTime})")
        return self


class ReferencePath(_Model):
    """Where the alert applies: a path of 1..32 points, upstream first, and the distance
    from it within which it applies [m].  A single point makes a round alert area."""

    activePath: Annotated[tuple[Position3D, ...], Field(min_length=1, max_length=32)]
    pathRadius: Radius


class RteData(_Model):
    """One road traffic event.

    Attributes:
        rteId: the RSU's local id of the event, 0..255.
        eventType: GB/T 29100-2012 traffic-event code, 0..65535 (see
            ``convoy.road.hazards.EVENT_TYPE_CODES``).
        eventSource: who reported it.
        eventPos: where it is.
        eventRadius: its radius [m].
        description: free text, printable ASCII, 1..512 characters.
        timeDetails: when it is active.
        priority: 0 (lowest) .. 7 (highest); the standard's top three bits of one octet.
        referencePaths: 1..8 paths along which vehicles are warned.
    """

    rteId: Uint8
    eventType: Uint16
    eventSource: EventSource
    eventPos: Position3D | None = None
    eventRadius: Radius | None = None
    description: Description | None = None
    timeDetails: RSITimeDetails | None = None
    priority: Annotated[int, Field(ge=0, le=7)] | None = None
    referencePaths: (
        Annotated[tuple[ReferencePath, ...], Field(min_length=1, max_length=8)] | None
    ) = None


class RSI(_Model):
    """Road-side information from RSU ``id``: 1..8 road traffic events (dust, ice, road
    works, crosswind, ...) around ``refPos``."""

    msgType: Literal["RSI"] = "RSI"
    msgCnt: MsgCount
    moy: MinuteOfTheYear | None = None
    id: TempId
    refPos: Position3D
    rtes: Annotated[tuple[RteData, ...], Field(min_length=1, max_length=8)]


# ---- RSM ----

ParticipantType = Literal["unknown", "motor", "non-motor", "pedestrian", "rsu"]
SourceType = Literal[
    "unknown", "selfinfo", "v2x", "video", "microwaveRadar", "loop", "lidar", "integrated"
]


class ParticipantData(_Model):
    """One traffic participant an RSU perceives.

    Attributes:
        ptcType: motor vehicle, non-motor vehicle, pedestrian, the RSU itself, or unknown.
        ptcId: the RSU's temporary id for it, 0..65535 (0 is the RSU).
        source: the sensor that saw it.
        id: its own temporary id, when it is a V2X vehicle.
        secMark: ms within the UTC minute of the observation.
        pos: position; speed [m/s]; heading [degrees]; size [m].
        accelSet, vehicleClass: when known.
    """

    ptcType: ParticipantType
    ptcId: Uint16
    source: SourceType
    id: TempId | None = None
    secMark: SecMark
    pos: Position3D
    speed: Speed
    heading: Heading
    size: VehicleSize
    accelSet: AccelerationSet4Way | None = None
    vehicleClass: VehicleClassification | None = None


class RSM(_Model):
    """Roadside safety message: 1..16 participants perceived by RSU ``id``."""

    msgType: Literal["RSM"] = "RSM"
    msgCnt: MsgCount
    id: TempId
    refPos: Position3D
    participants: Annotated[tuple[ParticipantData, ...], Field(min_length=1, max_length=16)]


# ---- T/ITS 0118-2020 platoon management (COPMM) and control (PCM) ----

# Position in the platoon: 0 is the leader (the human-driven head in a hybrid platoon).
PlatoonIndex = Annotated[int, Field(ge=0, le=255)]
JoinRejectReason = Literal[
    "platoonFull", "incompatibleVehicle", "unsafeConditions", "outsideOdd", "leaderBusy", "other"
]
LeaveReason = Literal["destination", "driverTakeover", "outsideOdd", "fault", "dissolved", "other"]


class PlatoonJoinRequest(_Model):
    """A free vehicle ``id`` asks the leader of ``platoonId`` to join (COPMM).

    Attributes:
        desiredIndex: where it wants to join, 1..255; ``None`` = at the tail.
        pos, speed [m/s], heading [degrees]: its state when asking.
    """

    msgType: Literal["PlatoonJoinRequest"] = "PlatoonJoinRequest"
    msgCnt: MsgCount
    id: TempId
    platoonId: TempId
    secMark: SecMark
    pos: Position3D
    speed: Speed
    heading: Heading
    desiredIndex: Annotated[int, Field(ge=1, le=255)] | None = None


class PlatoonJoinAccept(_Model):
    """The leader ``id`` answers ``targetId``'s request (COPMM join response).

    ``accepted`` true needs ``positionIndex`` (1..255, the slot granted) and no ``reason``;
    false needs a ``reason`` and no ``positionIndex``.
    """

    msgType: Literal["PlatoonJoinAccept"] = "PlatoonJoinAccept"
    msgCnt: MsgCount
    id: TempId
    platoonId: TempId
    targetId: TempId
    secMark: SecMark
    accepted: bool
    positionIndex: Annotated[int, Field(ge=1, le=255)] | None = None
    reason: JoinRejectReason | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PlatoonJoinAccept:
        if self.accepted and self.positionIndex is None:
            raise ValueError("positionIndex is required when accepted is true")
        if self.accepted and self.reason is not None:
            raise ValueError("reason must be left out when accepted is true")
        if not self.accepted and self.reason is None:
            raise ValueError("reason is required when accepted is false")
        if not self.accepted and self.positionIndex is not None:
            raise ValueError("positionIndex must be left out when accepted is false")
        return self


class PlatoonLeave(_Model):
    """Member ``id`` leaves ``platoonId`` (COPMM), with the ``reason``."""

    msgType: Literal["PlatoonLeave"] = "PlatoonLeave"
    msgCnt: MsgCount
    id: TempId
    platoonId: TempId
    secMark: SecMark
    reason: LeaveReason


class PlatoonControl(_Model):
    """Platoon control message (PCM) from the leader ``id`` to member ``memberId``.

    Attributes:
        positionIndex: the member's slot, 0 = leader.
        seqNum: sequence number 0..65535, wrapping; lets a member spot lost messages.
        desiredGap: bumper-to-bumper gap to keep [m], 0..655.35 (J2735-like 0.01 m units).
        desiredSpeed: m/s; desiredAccel: m/s².
        rateHz: the rate the leader sends at; T/ITS 0118-2020 requires at least
            ``PCM_MIN_RATE_HZ``.
    """

    msgType: Literal["PlatoonControl"] = "PlatoonControl"
    msgCnt: MsgCount
    id: TempId
    platoonId: TempId
    memberId: TempId
    positionIndex: PlatoonIndex
    seqNum: Uint16
    secMark: SecMark
    desiredGap: Annotated[float, Field(ge=0.0, le=655.35, description="m")]
    desiredSpeed: Speed
    desiredAccel: Acceleration
    rateHz: Annotated[float, Field(ge=PCM_MIN_RATE_HZ, le=PCM_MAX_RATE_HZ)] = PCM_MIN_RATE_HZ


# ---- the union, the wire form, and the schema ----

AnyMessage = (
    BSM
    | MAP
    | SPAT
    | RSI
    | RSM
    | PlatoonJoinRequest
    | PlatoonJoinAccept
    | PlatoonLeave
    | PlatoonControl
)
V2xMessage = Annotated[AnyMessage, Field(discriminator="msgType")]

MESSAGE_TYPES: dict[str, type[BaseModel]] = {
    m.model_fields["msgType"].default: m
    for m in (
        BSM,
        MAP,
        SPAT,
        RSI,
        RSM,
        PlatoonJoinRequest,
        PlatoonJoinAccept,
        PlatoonLeave,
        PlatoonControl,
    )
}
_ADAPTER: TypeAdapter[AnyMessage] = TypeAdapter(V2xMessage)


class MessageError(ValueError):
    """A message that cannot be accepted; ``reason`` says which field and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(msg: AnyMessage) -> bytes:
    """Compact JSON (no spaces, optional fields left out when unset).

    Raises:
        MessageError: the encoded form is larger than ``MAX_MESSAGE_BYTES``.
    """
    data = msg.model_dump_json(exclude_none=True).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(
            f"{msg.msgType} encodes to {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}"
        )
    return data


def decode(data: bytes) -> AnyMessage:
    """Parse and validate one message.

    Raises:
        MessageError: for anything but a valid message, and nothing else: not bytes, over
            ``MAX_MESSAGE_BYTES``, malformed JSON, not an object, no or unknown ``msgType``,
            missing or unknown fields, wrong types, out-of-range or inconsistent values.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageError(f"expected bytes, got {type(data).__name__}")
    size = len(data)
    if size > MAX_MESSAGE_BYTES:
        raise MessageError(f"payload is {size} bytes; the limit is {MAX_MESSAGE_BYTES}")
    try:
        return _ADAPTER.validate_json(bytes(data))
    except ValidationError as exc:
        raise MessageError(_reason(exc)) from None
    except (ValueError, RecursionError) as exc:  # pragma: no cover - pydantic reports these
        raise MessageError(f"malformed message: {exc}") from None


def json_schema(msg_type: str) -> dict[str, Any]:
    """JSON Schema of one message type (e.g. ``"RSI"``), for the service layer.

    Raises:
        MessageError: for an unknown type, listing the known ones.
    """
    try:
        model = MESSAGE_TYPES[msg_type]
    except KeyError:
        known = ", ".join(MESSAGE_TYPES)
        raise MessageError(f"unknown msgType {msg_type!r}; known: {known}") from None
    return model.model_json_schema()


def _reason(exc: ValidationError) -> str:
    """One line naming the first problem's field, the value, and what is allowed."""
    errors = exc.errors(include_url=False)
    # a failed item also makes its tuple "too short"; that echo is not a second problem
    errors = [
        e
        for e in errors
        if not (
            e["type"] == "too_short"
            and any(
                len(o["loc"]) > len(e["loc"]) and o["loc"][: len(e["loc"])] == e["loc"]
                for o in errors
            )
        )
    ] or errors
    err = errors[0]
    kind = err["type"]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if kind == "json_invalid":
        text = f"malformed JSON: {msg.removeprefix('Invalid JSON: ')}"
    elif kind in ("dict_type", "model_type", "model_attributes_type") and not err["loc"]:
        text = "a message must be a JSON object"
    elif kind == "union_tag_not_found":
        text = f"field 'msgType' is required; known: {', '.join(MESSAGE_TYPES)}"
    elif kind == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag", "")
        text = f"field 'msgType' = {tag!r}: unknown message type; known: {', '.join(MESSAGE_TYPES)}"
    elif kind == "missing":
        text = f"field '{loc}' is required"
    elif kind == "extra_forbidden":
        text = f"field '{loc}' is not a known field"
    elif isinstance(err.get("input"), dict | list):
        text = f"field '{loc}': {msg}"
    else:
        shown = repr(err.get("input"))
        if len(shown) > 60:
            shown = shown[:57] + "..."
        text = f"field '{loc}' = {shown}: {msg}"
    return text + more
