"""V2X messages: every type survives the wire, and bad input is refused with a reason.

The ranges checked here are the T/CSAE 53 integer ranges times their scale (see
``convoy.road.v2x``): e.g. Speed 0..8190 x 0.02 m/s = 163.8 m/s, secMark 0..59999 ms.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convoy.road.v2x import (
    BSM,
    MAP,
    MAX_MESSAGE_BYTES,
    MESSAGE_TYPES,
    PCM_MIN_RATE_HZ,
    RSI,
    RSM,
    SPAT,
    AccelerationSet4Way,
    BrakeSystemStatus,
    IntersectionState,
    Lane,
    Link,
    MapNode,
    MessageError,
    NodeReferenceID,
    ParticipantData,
    Phase,
    PhaseState,
    PlatoonControl,
    PlatoonJoinAccept,
    PlatoonJoinRequest,
    PlatoonLeave,
    Position3D,
    ReferencePath,
    RegulatorySpeedLimit,
    RSITimeDetails,
    RteData,
    TimeCountingDown,
    VehicleClassification,
    VehicleSize,
    decode,
    encode,
    json_schema,
)

POS = Position3D(lat=39.82, long=109.98, elevation=1350.2)
SIZE = VehicleSize(width=2.55, length=16.5, height=4.0)
ACCEL = AccelerationSet4Way(long=-1.25, lat=0.1, vert=0.0, yaw=0.5)

SAMPLES: dict[str, Any] = {
    "BSM": BSM(
        msgCnt=7,
        id="p0.1",
        secMark=59_999,
        pos=POS,
        speed=22.0,
        heading=359.9875,
        accelSet=ACCEL,
        brakes=BrakeSystemStatus(brakePadel="on", abs="engaged"),
        size=SIZE,
        vehicleClass=VehicleClassification(classification=32, fuelType=4),
    ),
    "MAP": MAP(
        msgCnt=1,
        timeStamp=12_345,
        nodes=(
            MapNode(
                id=NodeReferenceID(region=1, id=42),
                refPos=POS,
                inLinks=(
                    Link(
                        name="G65",
                        upstreamNodeId=NodeReferenceID(id=41),
                        speedLimits=(RegulatorySpeedLimit(type="truckMaxSpeed", speed=27.78),),
                        lanes=(Lane(laneID=1, laneWidth=3.75), Lane(laneID=2)),
                    ),
                ),
            ),
        ),
    ),
    "SPAT": SPAT(
        msgCnt=3,
        intersections=(
            IntersectionState(
                intersectionId=NodeReferenceID(id=42),
                status=1 << 5,
                phases=(
                    Phase(
                        id=1,
                        phaseStates=(
                            PhaseState(
                                light="protected-green",
                                timing=TimeCountingDown(
                                    startTime=0.0, minEndTime=10.0, likelyEndTime=12.5
                                ),
                            ),
                            PhaseState(light="red"),
                        ),
                    ),
                ),
            ),
        ),
    ),
    "RSI": RSI(
        msgCnt=127,
        id="rsu-3000",
        refPos=POS,
        rtes=(
            RteData(
                rteId=0,
                eventType=408,
                eventSource="meteorological",
                eventPos=POS,
                eventRadius=750.0,
                description="snow ice; friction 0.15",
                timeDetails=RSITimeDetails(startTime=10, endTime=70),
                priority=7,
                referencePaths=(ReferencePath(activePath=(POS,), pathRadius=20.0),),
            ),
        ),
    ),
    "RSM": RSM(
        msgCnt=0,
        id="rsu-4500",
        refPos=POS,
        participants=(
            ParticipantData(
                ptcType="motor",
                ptcId=1,
                source="microwaveRadar",
                secMark=100,
                pos=POS,
                speed=21.5,
                heading=90.0,
                size=SIZE,
            ),
        ),
    ),
    "PlatoonJoinRequest": PlatoonJoinRequest(
        msgCnt=1, id="free7", platoonId="P0", secMark=5, pos=POS, speed=20.0, heading=45.0
    ),
    "PlatoonJoinAccept": PlatoonJoinAccept(
        msgCnt=2,
        id="p0.0",
        platoonId="P0",
        targetId="free7",
        secMark=6,
        accepted=True,
        positionIndex=5,
    ),
    "PlatoonLeave": PlatoonLeave(
        msgCnt=3, id="p0.4", platoonId="P0", secMark=7, reason="destination"
    ),
    "PlatoonControl": PlatoonControl(
        msgCnt=4,
        id="p0.0",
        platoonId="P0",
        memberId="p0.2",
        positionIndex=2,
        seqNum=65_535,
        secMark=8,
        desiredGap=13.5,
        desiredSpeed=22.0,
        desiredAccel=-0.5,
        rateHz=25.0,
    ),
}


def _json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(encode(SAMPLES[name]))
    return data


def test_every_message_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(MESSAGE_TYPES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str) -> None:
    msg = SAMPLES[name]
    data = encode(msg)
    assert decode(data) == msg
    # compact: byte-identical to json.dumps with no whitespace separators
    assert data == json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(data)["msgType"] == name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_json_schema_describes_the_wire_form(name: str) -> None:
    schema = json_schema(name)
    assert schema["title"] == type(SAMPLES[name]).__name__
    assert set(_json(name)) <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_json_schema_of_unknown_type() -> None:
    with pytest.raises(MessageError, match="known: BSM"):
        json_schema("CAM")


def _with(name: str, path: str, value: Any) -> bytes:
    """The sample ``name`` as JSON with the field at dotted ``path`` set (or removed)."""
    data = _json(name)
    *head, last = path.split(".")
    node: Any = data
    for key in head:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DROP:
        del node[last]
    else:
        node[last] = value
    return json.dumps(data).encode()


_DROP = object()

# (payload, a fragment the reason must contain: the field or the problem)
MALFORMED = [
    (b"", "malformed JSON"),
    (b"{", "malformed JSON"),
    (b"\xff\xfe\x00", "malformed JSON"),
    (b"[1, 2]", "JSON object"),
    (b'"BSM"', "JSON object"),
    (b"{}", "'msgType' is required"),
    (b'{"msgType": "CAM"}', "'msgType' = 'CAM'"),
    (b'{"msgType": 5}', "msgType"),
    (_with("BSM", "secMark", 60_000), "'BSM.secMark' = 60000"),
    (_with("BSM", "secMark", -1), "'BSM.secMark'"),
    (_with("BSM", "speed", 163.9), "'BSM.speed' = 163.9"),
    (_with("BSM", "speed", "22"), "'BSM.speed' = '22'"),
    (_with("BSM", "heading", 360.5), "'BSM.heading'"),
    (_with("BSM", "pos.lat", 90.5), "'BSM.pos.lat' = 90.5"),
    (_with("BSM", "pos.long", -181), "'BSM.pos.long'"),
    (_with("BSM", "pos.elevation", 7000), "'BSM.pos.elevation'"),
    (_with("BSM", "accelSet.long", -25.0), "'BSM.accelSet.long'"),
    (_with("BSM", "size.length", 41.0), "'BSM.size.length'"),
    (_with("BSM", "vehicleClass.classification", 256), "'BSM.vehicleClass.classification'"),
    (_with("BSM", "brakes.brakePadel", "pressed"), "'BSM.brakes.brakePadel'"),
    (_with("BSM", "msgCnt", 128), "'BSM.msgCnt' = 128"),
    (_with("BSM", "msgCnt", 1.5), "'BSM.msgCnt'"),
    (_with("BSM", "id", "x" * 17), "'BSM.id'"),
    (_with("BSM", "id", ""), "'BSM.id'"),
    (_with("BSM", "pos", _DROP), "field 'BSM.pos' is required"),
    (_with("BSM", "colour", "red"), "field 'BSM.colour' is not a known field"),
    (_with("BSM", "speed", None), "'BSM.speed'"),
    (encode(SAMPLES["BSM"]).replace(b'"speed":22.0', b'"speed":NaN'), "'BSM.speed'"),
    (encode(SAMPLES["BSM"]).replace(b'"speed":22.0', b'"speed":1e400'), "'BSM.speed'"),
    (_with("MAP", "nodes", []), "'MAP.nodes'"),
    (
        _with("MAP", "nodes.0.inLinks.0.lanes.0.laneID", 256),
        "'MAP.nodes.0.inLinks.0.lanes.0.laneID'",
    ),
    (_with("SPAT", "intersections.0.phases.0.phaseStates.0.light", "blue"), "light"),
    (
        _with("SPAT", "intersections.0.phases.0.phaseStates.0.timing.minEndTime", 20.0),
        "minEndTime (20.0) exceeds likelyEndTime",
    ),
    (_with("RSI", "rtes", []), "'RSI.rtes'"),
    (_with("RSI", "rtes.0.eventRadius", 7000.0), "'RSI.rtes.0.eventRadius'"),
    (_with("RSI", "rtes.0.priority", 8), "'RSI.rtes.0.priority'"),
    (_with("RSI", "rtes.0.eventType", 65_536), "'RSI.rtes.0.eventType'"),
    (_with("RSI", "rtes.0.timeDetails.endTime", 5), "endTime (5) is before startTime (10)"),
    (_with("RSI", "rtes.0.description", "沙尘暴"), "'RSI.rtes.0.description'"),
    (_with("RSM", "participants.0.ptcType", "truck"), "'RSM.participants.0.ptcType'"),
    (_with("PlatoonControl", "rateHz", PCM_MIN_RATE_HZ / 2), "'PlatoonControl.rateHz' = 10.0"),
    (_with("PlatoonControl", "seqNum", 65_536), "'PlatoonControl.seqNum'"),
    (_with("PlatoonControl", "desiredGap", -1.0), "'PlatoonControl.desiredGap'"),
    (_with("PlatoonJoinAccept", "positionIndex", _DROP), "positionIndex is required"),
    (_with("PlatoonJoinAccept", "accepted", 1), "'PlatoonJoinAccept.accepted'"),
    (_with("PlatoonJoinAccept", "reason", "platoonFull"), "reason must be left out"),
    (_with("PlatoonLeave", "reason", "bored"), "'PlatoonLeave.reason'"),
]


@pytest.mark.parametrize(("payload", "fragment"), MALFORMED)
def test_malformed_messages_are_refused_with_a_reason(payload: bytes, fragment: str) -> None:
    with pytest.raises(MessageError) as err:
        decode(payload)
    assert fragment in err.value.reason, err.value.reason


def test_rejection_without_reason_is_refused() -> None:
    data = _json("PlatoonJoinAccept")
    data.update(accepted=False)
    with pytest.raises(MessageError, match="reason is required"):
        decode(json.dumps(data).encode())
    del data["positionIndex"]
    data["reason"] = "platoonFull"
    assert decode(json.dumps(data).encode()) == PlatoonJoinAccept(
        msgCnt=2,
        id="p0.0",
        platoonId="P0",
        targetId="free7",
        secMark=6,
        accepted=False,
        reason="platoonFull",
    )


def test_oversized_payload_is_refused_before_parsing() -> None:
    big = b'{"msgType":"BSM","pad":"' + b"x" * MAX_MESSAGE_BYTES + b'"}'
    with pytest.raises(MessageError, match=f"limit is {MAX_MESSAGE_BYTES}"):
        decode(big)


def test_deep_nesting_is_refused() -> None:
    depth = 5_000
    with pytest.raises(MessageError, match="malformed JSON"):
        decode(b"[" * depth + b"]" * depth)


def test_non_bytes_are_refused() -> None:
    with pytest.raises(MessageError, match="expected bytes"):
        decode("{}")  # type: ignore[arg-type]


# ---- properties: whatever arrives, decode answers with a message or a MessageError ----

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=30,
)


def _decode_or_reason(data: bytes) -> None:
    try:
        decode(data)
    except MessageError as err:
        assert err.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_message_error(data: bytes) -> None:
    _decode_or_reason(data)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_random_json_raises_only_message_error(value: Any) -> None:
    _decode_or_reason(json.dumps(value).encode())


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.data(),
)
def test_mutated_messages_raise_only_message_error(name: str, data: st.DataObject) -> None:
    """Take a valid message and replace, drop or add one field anywhere in it."""
    doc = _json(name)
    nodes: list[Any] = [doc]
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                nodes.append(child)
                stack.append(child)
    node = data.draw(st.sampled_from(nodes))
    if isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(sorted(node)) | st.text(max_size=8))
        if data.draw(st.booleans()):
            node[key] = data.draw(_json_values)
        else:
            node.pop(key, None)
    elif isinstance(node, list) and node:
        node[data.draw(st.integers(0, len(node) - 1))] = data.draw(_json_values)
    _decode_or_reason(json.dumps(doc).encode())
