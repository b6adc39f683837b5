"""The MQTT topic scheme of the vehicle link, version 1.

Every topic starts with ``convoy/v1``; a change that breaks a payload or a topic gets a new
version prefix, and both versions can run side by side on one broker.

=====================================  =========  ================================================
topic                                  direction  payload (``convoy.service.mqtt.messages``)
=====================================  =========  ================================================
``convoy/v1/vehicles/{id}/state``      up         ``VehicleState``, one sample (10 Hz)
``convoy/v1/vehicles/{id}/states``     up         ``VehicleStateBatch``, samples of one truck
``convoy/v1/vehicles/{id}/columns``    up         ``VehicleStateColumns``, the same as columns
``convoy/v1/vehicles/{id}/events``     up         ``VehicleEvent``
``convoy/v1/vehicles/{id}/commands``   down       ``VehicleCommand``
``convoy/v1/platoons/{id}/control``    down       ``v2x.PlatoonControl`` (T/ITS 0118)
``convoy/v1/rsu/{id}/rsi``             down       ``v2x.RSI`` (T/CSAE 53)
``convoy/v1/errors``                   service    ``IngestReport``: rejected payloads, counted
=====================================  =========  ================================================

Ids are the V2X temporary ids of ``convoy.road.v2x`` (1-16 of ``0-9 A-Z a-z . _ : -``), so an
id can never contain an MQTT wildcard (``+``, ``#``) or a level separator (``/``).

Ingest workers subscribe through a shared subscription, ``$share/convoy-ingest/<filter>``,
so that the broker hands each message to one worker of the group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

#: Version of the topic scheme and its payloads.
VERSION = "v1"
#: Every topic of this scheme starts with this.
PREFIX = f"convoy/{VERSION}"
#: Where ingest workers report rejected payloads (``IngestReport``).
ERROR_TOPIC = f"{PREFIX}/errors"
#: Shared-subscription group of the ingest workers.
INGEST_GROUP = "convoy-ingest"

# The V2X temporary id (convoy.road.v2x.TempId): no wildcard or separator can slip through.
ID_PATTERN = re.compile(r"^[0-9A-Za-z._:-]{1,16}$")

VehicleChannel = Literal["state", "states", "columns", "events", "commands"]
#: The last level of the per-vehicle topics.
VEHICLE_CHANNELS: tuple[VehicleChannel, ...] = ("state", "states", "columns", "events", "commands")
#: Channels a vehicle publishes on (uplink); ``commands`` is its only downlink.
VEHICLE_UPLINK: tuple[VehicleChannel, ...] = ("state", "states", "columns", "events")

TopicKind = Literal[
    "state", "states", "columns", "events", "commands", "platoon_control", "rsi", "errors"
]


class TopicError(ValueError):
    """A topic or an id outside the scheme; the message names it and what is allowed."""


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: ``kind`` and the id it names (``""`` for the error topic)."""

    kind: TopicKind
    id: str


def check_id(entity: str, value: str) -> str:
    """Return ``value`` if it is a valid id, else raise :class:`TopicError`."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise TopicError(
            f"{entity} id {value!r} is not allowed; ids are 1-16 characters of "
            "0-9 A-Z a-z . _ : - (the V2X temporary id)"
        )
    return value


def vehicle_topic(vehicle_id: str, channel: VehicleChannel) -> str:
    """``convoy/v1/vehicles/{vehicle_id}/{channel}``."""
    if channel not in VEHICLE_CHANNELS:
        raise TopicError(f"channel {channel!r} is unknown; known: {', '.join(VEHICLE_CHANNELS)}")
    return f"{PREFIX}/vehicles/{check_id('vehicle', vehicle_id)}/{channel}"


def state_topic(vehicle_id: str) -> str:
    """Topic of one state sample of ``vehicle_id``."""
    return vehicle_topic(vehicle_id, "state")


def states_topic(vehicle_id: str) -> str:
    """Topic of a batch of state samples of ``vehicle_id``."""
    return vehicle_topic(vehicle_id, "states")


def columns_topic(vehicle_id: str) -> str:
    """Topic of a batch of state samples of ``vehicle_id`` as columns."""
    return vehicle_topic(vehicle_id, "columns")


def events_topic(vehicle_id: str) -> str:
    """Topic of the events ``vehicle_id`` reports."""
    return vehicle_topic(vehicle_id, "events")


def command_topic(vehicle_id: str) -> str:
    """Topic of the commands sent down to ``vehicle_id``."""
    return vehicle_topic(vehicle_id, "commands")


def platoon_control_topic(platoon_id: str) -> str:
    """``convoy/v1/platoons/{platoon_id}/control``: T/ITS 0118 platoon control messages."""
    return f"{PREFIX}/platoons/{check_id('platoon', platoon_id)}/control"


def rsi_topic(rsu_id: str) -> str:
    """``convoy/v1/rsu/{rsu_id}/rsi``: road-side information from one RSU."""
    return f"{PREFIX}/rsu/{check_id('RSU', rsu_id)}/rsi"


def vehicle_filter(channel: VehicleChannel) -> str:
    """Filter matching ``channel`` of every vehicle: ``convoy/v1/vehicles/+/{channel}``."""
    if channel not in VEHICLE_CHANNELS:
        raise TopicError(f"channel {channel!r} is unknown; known: {', '.join(VEHICLE_CHANNELS)}")
    return f"{PREFIX}/vehicles/+/{channel}"


def shared(topic_filter: str, group: str = INGEST_GROUP) -> str:
    """The shared-subscription form ``$share/{group}/{topic_filter}`` (MQTT 5, and
    Mosquitto for 3.1.1 clients too)."""
    if not group or any(c in group for c in "/+#"):
        raise TopicError(f"share group {group!r} must be non-empty without '/', '+' or '#'")
    return f"$share/{group}/{topic_filter}"


def parse(topic: str) -> Topic:
    """Parse a topic of this scheme.

    Raises:
        TopicError: anything else, with the reason.
    """
    parts = topic.split("/")
    if topic == ERROR_TOPIC:
        return Topic("errors", "")
    if len(parts) != 5 or parts[0] != "convoy" or parts[1] != VERSION:
        raise TopicError(f"topic {topic!r} is not a {PREFIX}/<kind>/<id>/<channel> topic")
    area, ident, channel = parts[2], parts[3], parts[4]
    if area == "vehicles" and channel in VEHICLE_CHANNELS:
        return Topic(channel, check_id("vehicle", ident))
    if area == "platoons" and channel == "control":
        return Topic("platoon_control", check_id("platoon", ident))
    if area == "rsu" and channel == "rsi":
        return Topic("rsi", check_id("RSU", ident))
    raise TopicError(
        f"topic {topic!r} is not in the scheme; known: {PREFIX}/vehicles/<id>/"
        f"{{{','.join(VEHICLE_CHANNELS)}}}, {PREFIX}/platoons/<id>/control, "
        f"{PREFIX}/rsu/<id>/rsi, {ERROR_TOPIC}"
    )
