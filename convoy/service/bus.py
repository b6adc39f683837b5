"""The message bus between the live twin and the service: in-process or MQTT.

The twin publishes one snapshot of the live state per tick (``publish_snapshot``); the
in-process bus keeps the newest one and fans it out to subscribers (the WebSocket route).
The MQTT bus does the same and also sends each truck's state to its ``convoy/v1`` state
topic on the broker as the vehicle link's ``VehicleState`` (wall-clock ``time_ms``;
QoS 0: telemetry is replaced by the next sample anyway).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from convoy.service.mqtt.messages import ControlMode
from convoy.service.mqtt.messages import VehicleState as MqttVehicleState
from convoy.service.mqtt.topics import TopicError, state_topic

Snapshot = dict[str, Any]
Subscriber = Callable[[Snapshot], None]


class BusError(ValueError):
    """A bad bus URL or a broker that cannot be reached."""


class InProcessBus:
    """Newest snapshot plus subscribers, all in this process (the embedded default)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: Snapshot | None = None
        self._subs: list[Subscriber] = []

    def start(self) -> None:
        """Nothing to connect."""

    def stop(self) -> None:
        with self._lock:
            self._subs.clear()

    def latest(self) -> Snapshot | None:
        """The newest snapshot, None before the first."""
        with self._lock:
            return self._latest

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn(snapshot)`` on every publish; returns the unsubscribe function."""
        with self._lock:
            self._subs.append(fn)

        def undo() -> None:
            with self._lock:
                if fn in self._subs:
                    self._subs.remove(fn)

        return undo

    def publish_snapshot(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._latest = snapshot
            subs = list(self._subs)
        for fn in subs:
            fn(snapshot)


class MqttBus(InProcessBus):
    """The in-process bus plus each truck's state published to the broker at ``url``."""

    def __init__(self, url: str) -> None:
        super().__init__()
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise BusError(f"CONVOY_MQTT_URL {url!r}; allowed: mqtt://[user:pass@]host[:port]")
        self.host = parts.hostname
        self.port = parts.port or 1883
        self.username = parts.username
        self.password = parts.password
        self._client: Any = None

    def start(self) -> None:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"convoy-serve-{secrets.token_hex(4)}"
        )
        if self.username:
            client.username_pw_set(self.username, self.password)
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise BusError(f"MQTT broker {self.host}:{self.port}: cannot connect: {exc}") from None
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        super().stop()
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None

    def publish_snapshot(self, snapshot: Snapshot) -> None:
        super().publish_snapshot(snapshot)
        client = self._client
        if client is None:
            return
        now_ms = int(time.time() * 1000)
        for v in snapshot.get("vehicles", []):
            try:
                msg = MqttVehicleState(
                    id=v["id"],
                    time_ms=now_ms,
                    lon_deg=float(v["lon"]),
                    lat_deg=float(v["lat"]),
                    speed_mps=float(v["speed_mps"]),
                    heading_deg=float(v.get("heading_deg", 0.0)) % 360.0,
                    accel_mps2=0.0,
                    mode=_MQTT_MODE.get(v["mode"]),
                    edge=v.get("edge") if len(v.get("edge", "")) <= 64 else None,
                    lane=v.get("lane"),
                )
            except (ValidationError, TopicError, KeyError):
                continue  # a sample the link would reject is not sent
            client.publish(state_topic(msg.id), msg.model_dump_json(exclude_none=True), qos=0)


# The twin's modes as the vehicle link's control modes (mqtt/messages.py).
_MQTT_MODE: dict[str, ControlMode] = {"human": "head", "cacc": "follow", "mrm": "emergency"}


def open_bus(mqtt_url: str | None) -> InProcessBus:
    """The in-process bus when ``mqtt_url`` is None, else the MQTT bus (not yet started)."""
    return InProcessBus() if mqtt_url is None else MqttBus(mqtt_url)
