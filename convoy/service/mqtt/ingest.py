"""Ingest worker: vehicle states from MQTT, validated, in batches to a sink, then acknowledged.

An :class:`Ingest` subscribes with QoS 1 to the shared subscriptions
``$share/convoy-ingest/convoy/v1/vehicles/+/state``, ``.../+/states`` and ``.../+/columns``,
so that several workers (processes or machines) split the traffic: the broker gives each
message to one worker of the group.

Delivery guarantee: at least once, with nothing acknowledged lost.

* The client uses ``manual_ack``: a message's PUBACK is sent only after the sink has returned
  for the batch that holds its states. If the sink raises, nothing of the batch is
  acknowledged; the worker drops its connection and reconnects, and the broker sends the
  unacknowledged messages again.
* The session is persistent (MQTT 5 ``clean_start=False`` with a session expiry; MQTT 3.1.1
  ``clean_session=False``), so the broker keeps queued and unacknowledged messages while the
  worker or the broker restarts (the broker needs ``persistence true``).
* Redelivery means a sink may see a state twice (after a sink failure or a lost connection):
  the sink should be idempotent on ``(id, time_ms)`` or tolerate duplicates.
* PUBACKs go out in the order the messages came, as MQTT requires.
* The sink runs on the worker's commit thread (``IngestSettings.pipeline``, on by default),
  one batch at a time: while it stores batch *n*, the loop reads and checks batch *n + 1*
  (at most ``receive_maximum / 2`` messages each, so both fit in the broker's window).
  Batch *n*'s PUBACKs go out when its sink call returns, before any of *n + 1*'s; if it
  raises, neither batch is acknowledged. With ``pipeline=False`` the loop calls the sink
  itself and reads nothing meanwhile.

Bad payloads (malformed, oversized, out of range, wrong or unknown vehicle) never reach the
sink: they are counted per reason (``messages.REJECT_REASONS``), acknowledged (in order, with
the batch they came in) so that they are not sent again, and reported on
``convoy/v1/errors`` as an ``IngestReport`` at most once per ``report_period_s``.

Speed: paho's own loop reads one packet per ``select``; in 2.x ``loop_read`` reads one
packet per call whatever ``max_packets`` says, with three or four ``recv`` calls per packet;
every MQTT 5 PUBLISH builds a ``Properties`` object, and every PUBACK is its own ``send``.
This worker runs its own loop on a :class:`ChunkedClient`: after ``select`` says the socket
is readable it splits packets out of 64 KiB ``recv`` chunks itself until the socket would
block; PUBLISH packets without properties skip paho's message objects; topics are parsed
once each and remembered; the PUBACKs of a batch are written as raw bytes in one ``send``;
a batch goes to the sink when the socket is drained (or the sink is free again), so batches
grow by themselves when the sink or the load is heavy. With ``rows=True`` the sink gets
:data:`~convoy.service.mqtt.messages.StateRow` tuples instead of models, and ``columns``
payloads are checked without a model per sample. ``convoy.service.mqtt.bench`` and
``convoy.service.telemetry_bench`` measure it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.client import MalformedPacket, time_func
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from convoy.service.mqtt import messages, topics
from convoy.service.mqtt.messages import (
    MAX_REPORT_SAMPLES,
    IngestReport,
    Reject,
    RejectReason,
    RejectSample,
    StateRow,
    VehicleState,
)

log = logging.getLogger(__name__)

#: A sink takes a batch of valid states and returns once they are safe (stored); it raises if
#: they are not. Messages are acknowledged only after it returns.
Sink = Callable[[list[VehicleState]], None]
#: The sink of an ingest with ``rows=True``: the same, with the states as tuples.
RowSink = Callable[[list[StateRow]], None]
Protocol = Literal["5", "3.1.1"]

#: Bytes asked of the socket per ``recv``: a few hundred state messages.
RECV_CHUNK_BYTES = 65_536
_U16 = struct.Struct("!H")
#: Bytes a client buffers for writing before paho is told to wait (back-pressure).
WRITE_BUFFER_BYTES = 1 << 20
#: A PUBACK without reason code (success), MQTT 3.1.1 and 5: ``0x40 0x02`` and the packet id,
#: as one big-endian 32-bit word.
_PUBACK_WORD = 0x4002_0000
#: Topics a worker remembers the parse of (the fleet's state topics); then it starts afresh.
MAX_ROUTES = 200_000


class IngestError(ValueError):
    """Bad ingest settings; the message names the field, the value and what is allowed."""


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where and how to reach the broker.

    Attributes:
        host, port: the broker.
        username, password: the login (the ``service`` user of ``convoy.service.mqtt.acl``);
            ``None`` for an anonymous broker.
        protocol: ``"5"`` (MQTT 5) or ``"3.1.1"``.
        keepalive_s: MQTT keep-alive [s].
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    protocol: Protocol = "5"
    keepalive_s: int = 30

    def check(self) -> None:
        """Raise :class:`IngestError` naming the first bad field."""
        if self.protocol not in ("5", "3.1.1"):
            raise IngestError(f"protocol = {self.protocol!r}; allowed: '5', '3.1.1'")
        if not 0 < self.port < 65_536:
            raise IngestError(f"port = {self.port}; allowed: 1..65535")
        if not 5 <= self.keepalive_s <= 65_535:
            raise IngestError(f"keepalive_s = {self.keepalive_s}; allowed: 5..65535")


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """How an ingest worker batches, acknowledges, reports and reconnects.

    Attributes:
        broker: the broker.
        client_id: this worker's MQTT client id. Give every worker its own, and keep it across
            restarts: the broker keeps the session (and the unacknowledged messages) under it.
        group: the shared-subscription group; workers of one group split the messages.
        max_batch_states: most states per sink call.
        max_wait_s: longest a received state waits for the sink [s]; a batch also goes when
            the socket has nothing more to read.
        receive_maximum: MQTT 5 Receive Maximum: unacknowledged messages the broker may have
            in flight to this worker (3.1.1 brokers use their own setting, Mosquitto's
            ``max_inflight_messages``). A batch goes when half of it is used.
        session_expiry_s: how long the broker keeps the session of a disconnected worker
            (MQTT 5) [s]; one day by default, to ride out a worker's outage.
        report_period_s: at most one ``IngestReport`` per period, and only after rejects [s].
        reconnect_min_s, reconnect_max_s: reconnect backoff, doubling from min to max [s].
        known_vehicles: the fleet's vehicle ids; others are rejected as ``unknown_vehicle``.
            ``None`` accepts any valid id.
        pipeline: run the sink on a commit thread while the loop reads the next batch (see
            the module docstring); False calls it on the loop's thread.
    """

    broker: BrokerSettings = field(default_factory=BrokerSettings)
    client_id: str = "convoy-ingest-1"
    group: str = topics.INGEST_GROUP
    max_batch_states: int = 5_000
    max_wait_s: float = 0.05
    receive_maximum: int = 2_000
    session_expiry_s: int = 86_400
    report_period_s: float = 1.0
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 10.0
    known_vehicles: frozenset[str] | None = None
    pipeline: bool = True

    def check(self) -> None:
        """Raise :class:`IngestError` naming the first bad field."""
        self.broker.check()
        if not self.client_id or len(self.client_id) > 64:
            raise IngestError(f"client_id = {self.client_id!r}; must be 1..64 characters")
        topics.shared("x", self.group)  # raises TopicError (a ValueError) for a bad group
        if self.max_batch_states < 1:
            raise IngestError(f"max_batch_states = {self.max_batch_states}; must be >= 1")
        if not 0.0 < self.max_wait_s <= 60.0:
            raise IngestError(f"max_wait_s = {self.max_wait_s}; allowed: 0 < max_wait_s <= 60")
        if not 2 <= self.receive_maximum <= 65_535:
            raise IngestError(f"receive_maximum = {self.receive_maximum}; allowed: 2..65535")
        if self.session_expiry_s < 0:
            raise IngestError(f"session_expiry_s = {self.session_expiry_s}; must be >= 0")
        if not self.report_period_s > 0:
            raise IngestError(f"report_period_s = {self.report_period_s}; must be > 0")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise IngestError(
                f"reconnect_min_s = {self.reconnect_min_s}, reconnect_max_s = "
                f"{self.reconnect_max_s}; need 0 < min <= max"
            )


@dataclass
class IngestStats:
    """Counters of one worker since it started (read them from any thread; they are only
    written by the worker's loop).

    Attributes:
        messages: messages received (valid or not, redeliveries included).
        states: states handed to the sink and acknowledged.
        rejected: rejected messages per reason, counted when their batch is acknowledged.
        sink_calls, sink_failures: sink calls that returned and that raised.
        connects: successful connections (the first one included).
        connected: whether the worker is connected and subscribed now.
        last_error: the last connection or sink error, for people.
    """

    messages: int = 0
    states: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    sink_calls: int = 0
    sink_failures: int = 0
    connects: int = 0
    connected: bool = False
    last_error: str = ""


class ChunkedClient(mqtt.Client):
    """A paho client that reads and writes its socket in chunks.

    paho reads a packet with a ``recv`` of 1 byte for the command, 1 per length byte and one
    for the rest, and writes each packet with its own ``send``. Here :meth:`read_packets`
    splits whole packets out of one ``recv`` of ``RECV_CHUNK_BYTES`` itself and hands each to
    paho's handler (PUBLISH packets to ``fast_on_publish``), and the packets of one
    ``loop_write`` (the PUBACKs of a batch, the publishes of a tick) go out in one ``send``.
    ``would_block`` is set when the socket had nothing more to give; :attr:`buffered` says
    whether whole or partial packets wait in the chunk (``select`` cannot see those).

    It overrides paho 2.x internals (``_sock_recv``, ``_sock_send``, ``_sock_close``,
    ``_in_packet``, ``_packet_handle``); the tests run every path through them, so a paho
    release that changes them shows there. TLS is not supported by this client.
    """

    #: If set, ``fast_on_publish(topic, payload, qos, mid)`` takes every QoS 0/1 PUBLISH that
    #: carries no MQTT 5 properties, instead of ``on_message``: no ``MQTTMessage``, no
    #: properties object, no topic matching (paho spends more on those than on the read).
    #: Use it with ``manual_ack=True``: it acknowledges nothing itself. A true return value
    #: ends :meth:`read_packets` after that packet.
    fast_on_publish: Callable[[bytes, bytes, int, int], bool | None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunk = b""
        self._chunk_pos = 0
        self._wbuf = bytearray()
        self.would_block = False

    def reset_buffer(self) -> None:
        """Forget buffered bytes (call on every new connection)."""
        self._chunk = b""
        self._chunk_pos = 0
        self._wbuf.clear()
        self.would_block = False

    @property
    def buffered(self) -> bool:
        """Whether received bytes wait in the chunk, unread."""
        return self._chunk_pos < len(self._chunk)

    def _sock_recv(self, bufsize: int) -> bytes:
        pos = self._chunk_pos
        if pos >= len(self._chunk):
            try:
                data = super()._sock_recv(RECV_CHUNK_BYTES)
            except BlockingIOError:
                self.would_block = True
                raise
            if not data:
                return data
            self._chunk = data
            pos = 0
        out = self._chunk[pos : pos + bufsize]
        self._chunk_pos = pos + len(out)
        return out

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if self._sock is None:
            raise ConnectionError("self._sock is None")
        if len(self._wbuf) >= WRITE_BUFFER_BYTES:
            self._flush_writes()
            if len(self._wbuf) >= WRITE_BUFFER_BYTES:
                raise BlockingIOError  # paho keeps the packet for the next loop_write
        self._wbuf += buf
        return len(buf)

    def _flush_writes(self) -> None:
        """Send what is buffered, as far as the socket takes it without blocking."""
        while self._wbuf and self._sock is not None:
            try:
                n = self._sock.send(self._wbuf)
            except BlockingIOError:
                return
            del self._wbuf[:n]

    def _sock_close(self) -> None:
        with contextlib.suppress(OSError):  # a DISCONNECT still in the buffer goes out first
            self._flush_writes()
        self._wbuf.clear()
        super()._sock_close()

    def loop_write(self) -> MQTTErrorCode:
        """paho's ``loop_write``, then one ``send`` of everything it wrote."""
        rc = super().loop_write()
        try:
            self._flush_writes()
        except OSError:
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        return rc

    def want_write(self) -> bool:
        """Whether packets or buffered bytes wait to be written."""
        return bool(self._wbuf) or super().want_write()

    def ack_all(self, mids: list[int]) -> None:
        """Queue a PUBACK (success) for each QoS 1 packet id of ``mids``, in order, as raw
        bytes (paho keeps no state for incoming QoS 1 messages); ``loop_write`` sends them."""
        if mids and self._sock is not None:
            self._wbuf += struct.pack(f"!{len(mids)}I", *[_PUBACK_WORD | m for m in mids])

    def _handle_publish(self) -> MQTTErrorCode:
        hook = self.fast_on_publish
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if hook is None or qos == 2:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        try:
            (tlen,) = _U16.unpack_from(packet, 0)
            pos = 2 + tlen
            mid = 0
            if qos:
                (mid,) = _U16.unpack_from(packet, pos)
                pos += 2
            if self._protocol == mqtt.MQTTv5:
                if packet[pos] != 0:  # properties: paho's full decoding
                    return super()._handle_publish()
                pos += 1
        except (struct.error, IndexError):
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        hook(bytes(packet[2 : 2 + tlen]), bytes(packet[pos:]), qos, mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_whole(self, header: int, body: bytes) -> MQTTErrorCode:
        """paho's handling of one whole packet (as its own reader would leave it)."""
        self._in_packet = _in_packet(header, body)
        try:
            rc = self._packet_handle()
        except MalformedPacket:
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = _in_packet(0, b"")
        return rc

    def read_packets(self, stop: Callable[[], bool] | None = None) -> MQTTErrorCode:
        """Handle whole packets out of the chunk, refilling it with ``recv``, until the socket
        would block (``would_block`` set), or ``fast_on_publish`` returned true, or ``stop()``
        is true after a packet that paho handled; a lost connection or a protocol error ends
        it (paho's disconnect handling runs)."""
        self.would_block = False
        if self._in_packet["command"]:  # paho's own reader left a packet half read
            rc = self.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._in_packet["command"]:
                return rc
        hook = self.fast_on_publish
        v5 = self._protocol == mqtt.MQTTv5
        while True:
            buf, pos = self._chunk, self._chunk_pos
            n = len(buf)
            end = -1
            if n - pos >= 2:
                header, b = buf[pos], buf[pos + 1]
                if b < 128:
                    start, end = pos + 2, pos + 2 + b
                else:  # the remaining length takes 2 to 4 bytes
                    length, mult, i = b & 127, 128, pos + 2
                    while i < n:
                        b = buf[i]
                        length += (b & 127) * mult
                        i += 1
                        if b < 128:
                            start, end = i, i + length
                            break
                        if i - pos > 4:
                            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_PROTOCOL)
                        mult *= 128
            if end < 0 or end > n:  # no whole packet left: read more
                if self._sock is None:
                    return MQTTErrorCode.MQTT_ERR_NO_CONN
                try:
                    data = self._sock.recv(RECV_CHUNK_BYTES)
                except BlockingIOError:
                    self.would_block = True
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                except OSError:
                    return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
                if not data:
                    return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
                self._chunk = buf[pos:] + data if pos < n else data
                self._chunk_pos = 0
                with self._msgtime_mutex:
                    self._last_bytes_received = time_func()
                continue
            self._chunk_pos = end
            qos = (header & 0x06) >> 1
            if hook is not None and header & 0xF0 == 0x30 and qos < 2 and end - start >= 2:
                # PUBLISH: topic, packet id (QoS 1), properties (MQTT 5: none here), payload
                t_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
                p = t_end + 2 * qos + v5
                if p <= end and not (v5 and buf[p - 1]):
                    mid = (buf[t_end] << 8) | buf[t_end + 1] if qos else 0
                    if hook(buf[start + 2 : t_end], buf[p:end], qos, mid):
                        return MQTTErrorCode.MQTT_ERR_SUCCESS
                    continue
            # anything else, or a PUBLISH with properties: paho's handling
            rc = self._handle_whole(header, buf[start:end])
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return self._loop_rc_handle(rc)
            if stop is not None and stop():
                return MQTTErrorCode.MQTT_ERR_SUCCESS

    def read_all(self, max_packets: int = 100_000) -> MQTTErrorCode:
        """Read packets until the socket would block (or ``max_packets``); paho's error code."""
        left = [max_packets]

        def enough() -> bool:
            left[0] -= 1
            return left[0] <= 0

        return self.read_packets(enough)


def _in_packet(header: int, body: bytes) -> Any:
    """paho's ``_in_packet`` for a whole packet (``header`` 0 and no body: none)."""
    return {
        "command": header,
        "have_remaining": 1 if header else 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": len(body),
        "packet": bytearray(body),
        "to_process": 0,
        "pos": 0,
    }


@dataclass
class _Commit:
    """A batch on the commit thread: its sink call, its PUBACKs, its size, its rejects, its
    connection."""

    future: Future[None]
    acks: list[int]
    states: int
    rejects: list[tuple[str, Reject, int]]
    generation: int


class Ingest:
    """One ingest worker. Run it with :meth:`run` (blocking) or :meth:`start` (a thread)
    and end it with :meth:`stop`.

    Args:
        sink: receives batches of valid states; see :data:`Sink` (:data:`RowSink` with
            ``rows``). With ``settings.pipeline`` it is called on the worker's commit thread.
        settings: see :class:`IngestSettings`.
        rows: hand the sink :data:`~convoy.service.mqtt.messages.StateRow` tuples instead of
            :class:`~convoy.service.mqtt.messages.VehicleState` models (cheaper).
    """

    def __init__(
        self, sink: Sink | RowSink, settings: IngestSettings | None = None, rows: bool = False
    ) -> None:
        self.settings = settings or IngestSettings()
        self.settings.check()
        self.sink: Callable[[list[Any]], None] = sink
        self.rows = rows
        self._decode = messages.decode_rows if rows else messages.decode_kind
        self._max_states = self.settings.max_batch_states
        self._max_acks = self.settings.receive_maximum // 2
        self.stats = IngestStats()
        self._stop = threading.Event()
        self._connected_event = threading.Event()
        self._thread: threading.Thread | None = None
        # pending batch: states, then the mid of every QoS 1 message since the last hand-over
        self._states: list[Any] = []
        self._acks: list[int] = []
        self._rejects: list[tuple[str, Reject, int]] = []  # (topic, why, size) until acked
        self._oldest: float | None = None
        # the batch on the commit thread, and the connection its acks belong to
        self._commit: _Commit | None = None
        self._generation = 0
        self._committer: ThreadPoolExecutor | None = None
        self._wake_r, self._wake_w = -1, -1
        # topic -> (kind, vehicle id) or why its messages are refused
        self._routes: dict[bytes, tuple[str, str] | Reject] = {}
        # report window
        self._window_start = time.monotonic()
        self._window: Counter[str] = Counter()
        self._samples: list[RejectSample] = []
        self._client = self._make_client()

    # --- public -----------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        """Run the worker in a daemon thread and return it."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run, name=f"ingest-{self.settings.client_id}", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout_s: float = 5.0, retire: bool = False) -> None:
        """Hand the pending batch to the sink, acknowledge it, disconnect and end the loop.

        Args:
            timeout_s: how long to wait for the loop's thread.
            retire: also end the worker's session on the broker (:func:`forget_session`), for
                a worker that will not come back. Otherwise the broker keeps the session and
                goes on sharing messages to it (queued until the worker returns).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if retire:
            forget_session(self.settings.broker, self.settings.client_id)

    def wait_connected(self, timeout_s: float = 5.0) -> bool:
        """Wait until the worker is connected and subscribed; False on timeout."""
        return self._connected_event.wait(timeout_s)

    def run(self) -> None:
        """The worker's loop; returns after :meth:`stop`."""
        delay = self.settings.reconnect_min_s
        if self.settings.pipeline:
            self._committer = ThreadPoolExecutor(1, f"commit-{self.settings.client_id}")
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
        try:
            while not self._stop.is_set():
                if self._client.socket() is None and not self._connect():
                    self._stop.wait(delay)
                    delay = min(2.0 * delay, self.settings.reconnect_max_s)
                    continue
                self._step()
                if self.stats.connected:
                    delay = self.settings.reconnect_min_s
        finally:
            self._shutdown()

    # --- connection -------------------------------------------------------------------------
    def _make_client(self) -> ChunkedClient:
        s = self.settings
        b = s.broker
        v5 = b.protocol == "5"
        client = ChunkedClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            clean_session=None if v5 else False,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            manual_ack=True,
        )
        if b.username is not None:
            client.username_pw_set(b.username, b.password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.fast_on_publish = self._on_publish
        # with a write callback registered, paho queues outgoing packets instead of writing
        # each at once; the loop writes them (the acks of a whole batch) together
        client.on_socket_register_write = _noop_socket_cb
        client.on_socket_unregister_write = _noop_socket_cb
        client.max_inflight_messages_set(100)  # our own outgoing reports
        return client

    def _connect(self) -> bool:
        s = self.settings
        b = s.broker
        props = None
        if b.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = s.session_expiry_s
            props.ReceiveMaximum = s.receive_maximum
        self._client.reset_buffer()
        self._drop_pending()
        try:
            if b.protocol == "5":
                self._client.connect(
                    b.host, b.port, b.keepalive_s, clean_start=False, properties=props
                )
            else:
                self._client.connect(b.host, b.port, b.keepalive_s)
        except (OSError, ValueError) as exc:
            self.stats.last_error = f"cannot connect to {b.host}:{b.port}: {exc}"
            log.warning("%s: %s", s.client_id, self.stats.last_error)
            return False
        return True

    def _on_connect(
        self, client: mqtt.Client, _u: object, flags: Any, reason: Any, _p: object
    ) -> None:
        if reason.is_failure:
            self.stats.last_error = f"broker refused the connection: {reason}"
            log.warning("%s: %s", self.settings.client_id, self.stats.last_error)
            return
        filters = [topics.vehicle_filter(c) for c in ("state", "states", "columns")]
        subs = [(topics.shared(f, self.settings.group), 1) for f in filters]
        client.subscribe(subs)
        self.stats.connects += 1

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, _mid: int, reasons: list[Any], _p: object
    ) -> None:
        """SUBACK: only now does the broker route the group's messages to this worker (what
        it receives before the SUBSCRIBE, it drops), so only now is the worker connected."""
        refused = [r for r in reasons if r.is_failure]
        if refused:
            self.stats.last_error = f"broker refused the subscription: {refused[0]}"
            log.warning("%s: %s", self.settings.client_id, self.stats.last_error)
            return
        self.stats.connected = True
        self._connected_event.set()

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object
    ) -> None:
        if self.stats.connected and not self._stop.is_set():
            self.stats.last_error = f"connection lost: {reason}"
            log.warning("%s: %s", self.settings.client_id, self.stats.last_error)
        self.stats.connected = False
        self._connected_event.clear()
        self._drop_pending()

    def _drop_pending(self) -> None:
        """Forget the batch, and the acks of the one being committed: they were not
        acknowledged, so the broker sends them again (on the next connection)."""
        self._take_pending()
        self._generation += 1

    def _take_pending(self) -> tuple[list[Any], list[int], list[tuple[str, Reject, int]]]:
        """The pending batch's states, acks and rejects; a new batch starts empty."""
        states, acks, rejects = self._states, self._acks, self._rejects
        self._states = []
        self._acks = []
        self._rejects = []
        self._oldest = None
        return states, acks, rejects

    # --- the loop ---------------------------------------------------------------------------
    def _full(self) -> bool:
        """Whether the pending batch holds all a batch may (states or unacknowledged
        messages: half the broker's window, the other half for the batch being committed)."""
        return len(self._states) >= self._max_states or len(self._acks) >= self._max_acks

    def _step(self) -> None:
        """One pass: wait for data (or the commit thread), read all there is, hand a batch
        over, write, keep alive."""
        client = self._client
        sock = client.socket()
        if sock is None:
            return
        self._reap()
        if client.socket() is not sock:  # the sink failed: reconnect first
            return
        can_read = not self._full()
        timeout = 0.1  # how often stop() is noticed when idle
        if self._oldest is not None and self._commit is None:
            now = time.monotonic()
            timeout = max(0.0, min(timeout, self._oldest + self.settings.max_wait_s - now))
        if can_read and client.buffered:  # bytes in the chunk that select cannot see
            timeout = 0.0
        rlist: list[Any] = [sock] if can_read else []
        if self._wake_r >= 0:
            rlist.append(self._wake_r)
        wlist = [sock] if client.want_write() else []
        try:
            readable, writable, _ = select.select(rlist, wlist, [], timeout)
        except (OSError, ValueError):  # the socket closed under us
            readable, writable = [], []
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        self._reap()
        drained = True
        if can_read and (sock in readable or client.buffered):
            drained = self._read()
        if (self._acks or self._states) and self._commit is None:
            old = self._oldest is not None and (
                time.monotonic() - self._oldest >= self.settings.max_wait_s
            )
            if drained or old or self._full():
                self._hand_over()
        if (writable or client.want_write()) and client.socket() is not None:
            client.loop_write()
        if client.socket() is not None:
            client.loop_misc()
            self._maybe_report()

    def _read(self) -> bool:
        """Read packets until the socket would block (True) or the batch is full (False)."""
        client = self._client
        rc = client.read_packets(self._full)  # _on_publish says when its batch is full
        return rc != MQTTErrorCode.MQTT_ERR_SUCCESS or client.would_block

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        """A message with MQTT 5 properties (paho decoded it)."""
        self._on_publish(msg._topic, msg.payload, msg.qos, msg.mid)

    def _on_publish(self, topic_b: bytes, payload: bytes | bytearray, qos: int, mid: int) -> bool:
        """Take one message into the pending batch; returns whether the batch is full."""
        self.stats.messages += 1
        where = self._routes.get(topic_b)
        if where is None:
            where = self._route(topic_b)
        if isinstance(where, Reject):
            got: list[Any] | Reject = where
        else:
            got = self._decode(where[0], where[1], payload)
        if isinstance(got, Reject):
            self._rejects.append((topic_b.decode(errors="replace"), got, len(payload)))
        else:
            self._states += got
        if qos > 0:
            self._acks.append(mid)
        if self._oldest is None:
            self._oldest = time.monotonic()
        return len(self._states) >= self._max_states or len(self._acks) >= self._max_acks

    def _route(self, topic_b: bytes) -> tuple[str, str] | Reject:
        """Parse a topic the worker has not seen (or forgot) and remember it."""
        try:
            topic = topic_b.decode()
        except UnicodeDecodeError:
            t = topic_b.decode(errors="replace")
            where: tuple[str, str] | Reject = Reject("bad_topic", f"topic {t!r} is not UTF-8")
        else:
            where = messages.route(topic, self.settings.known_vehicles)
        if len(self._routes) >= MAX_ROUTES:
            self._routes.clear()
        self._routes[topic_b] = where
        return where

    def _count_reject(self, topic: str, rej: Reject, size: int) -> None:
        self.stats.rejected[rej.reason] += 1
        self._window[rej.reason] += 1
        if len(self._samples) < MAX_REPORT_SAMPLES:
            sample = RejectSample(
                topic=topic[:256], reason=rej.reason, detail=rej.detail, size_bytes=size
            )
            self._samples.append(sample)

    def _hand_over(self) -> None:
        """Give the pending batch to the sink: on the commit thread (pipeline), or here and
        then finish it."""
        states, acks, rejects = self._take_pending()
        if self._committer is None or not states:
            exc: BaseException | None = None
            if states:
                try:
                    self.sink(states)
                except Exception as e:  # the sink's failure must not end the worker
                    exc = e
            self._finish(acks, len(states), rejects, exc)
            return
        fut = self._committer.submit(self.sink, states)
        self._commit = _Commit(fut, acks, len(states), rejects, self._generation)
        fut.add_done_callback(self._wake)

    def _wake(self, _fut: Future[None]) -> None:
        """Done callback (commit thread): make the loop's ``select`` return."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def _reap(self, wait: bool = False) -> None:
        """Finish the batch on the commit thread if its sink call returned (or, with
        ``wait``, once it does)."""
        job = self._commit
        if job is None or not (wait or job.future.done()):
            return
        self._commit = None
        exc = job.future.exception()
        if job.generation != self._generation:  # acks of a lost connection: the broker resends
            if exc is None:
                self.stats.sink_calls += 1
                self.stats.states += job.states
            return
        self._finish(job.acks, job.states, job.rejects, exc)

    def _finish(
        self,
        acks: list[int],
        states: int,
        rejects: list[tuple[str, Reject, int]],
        exc: BaseException | None,
    ) -> None:
        """After a batch's sink call: its acks, in arrival order, and its rejects counted; if
        the sink raised, none of that and a reconnect, so that the broker sends the batch
        (and the next) again."""
        if exc is not None:
            self.stats.sink_failures += 1
            self.stats.last_error = f"sink failed: {type(exc).__name__}: {exc}"
            log.warning("%s: %s; reconnecting", self.settings.client_id, self.stats.last_error)
            self._reconnect_after_failure()
            return
        if states:
            self.stats.sink_calls += 1
            self.stats.states += states
        for topic, rej, size in rejects:
            self._count_reject(topic, rej, size)
        self._client.ack_all(acks)

    def _reconnect_after_failure(self) -> None:
        """Drop the connection without acknowledging; the loop reconnects after a pause."""
        client = self._client
        self.stats.connected = False  # a disconnect of our own, not a lost connection
        self._connected_event.clear()
        self._drop_pending()  # the batch read meanwhile: after the failed one, not acked
        if client.want_write():
            client.loop_write()  # acks of earlier, successful batches
        client.disconnect()
        if client.want_write():
            client.loop_write()  # the DISCONNECT; paho closes the socket after it
        client.reset_buffer()  # what was read after the failed batch comes again
        self._stop.wait(self.settings.reconnect_min_s)

    # --- reports ----------------------------------------------------------------------------
    def report(self) -> IngestReport:
        """The report of the current window (rejects since the last report)."""
        now = time.monotonic()
        return IngestReport(
            worker=self.settings.client_id,
            time_ms=messages.now_ms(),
            window_s=round(now - self._window_start, 3),
            rejected=_reasons(self._window),
            rejected_total=_reasons(self.stats.rejected),
            accepted_total=self.stats.states,
            samples=tuple(self._samples),
        )

    def _maybe_report(self, force: bool = False) -> None:
        now = time.monotonic()
        due = force or now - self._window_start >= self.settings.report_period_s
        if not self._window or not due:
            return
        payload = messages.encode(self.report())
        self._client.publish(topics.ERROR_TOPIC, payload, qos=1)
        self._window = Counter()
        self._samples = []
        self._window_start = now

    def _shutdown(self) -> None:
        client = self._client
        if self._commit is not None:
            self._reap(wait=True)
        if client.socket() is not None and self.stats.connected:
            if self._states or self._acks:
                committer, self._committer = self._committer, None
                self._hand_over()  # on this thread
                self._committer = committer
            if client.socket() is not None:
                self._maybe_report(force=True)
                client.loop_write()
                client.disconnect()
                client.loop_write()
        self.stats.connected = False
        self._connected_event.clear()
        if self._committer is not None:
            self._committer.shutdown(wait=True)
            self._committer = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r, self._wake_w = -1, -1


def forget_session(broker: BrokerSettings, client_id: str, timeout_s: float = 5.0) -> bool:
    """End the broker's session of ``client_id`` (a retired worker): connect with a clean
    session and leave with a session expiry of 0. Messages the broker had queued for it are
    dropped by the broker (Mosquitto 2.0 does not hand them to the group's other members), so
    retire a worker only when its queue is empty, e.g. after :meth:`Ingest.stop`.

    Returns whether the broker accepted the connection.
    """
    v5 = broker.protocol == "5"
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else True,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    if broker.username is not None:
        c.username_pw_set(broker.username, broker.password)
    done = threading.Event()
    ok: list[bool] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        ok.append(not reason.is_failure)
        done.set()

    c.on_connect = on_connect
    try:
        if v5:
            c.connect(broker.host, broker.port, broker.keepalive_s, clean_start=True)
        else:
            c.connect(broker.host, broker.port, broker.keepalive_s)
    except OSError:
        return False
    end = time.monotonic() + timeout_s
    while not done.is_set() and time.monotonic() < end:
        c.loop(0.05)
    if v5:
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        c.disconnect(properties=props)
    else:
        c.disconnect()
    c.loop(0.05)
    return bool(ok and ok[0])


def _reasons(c: Counter[str]) -> dict[RejectReason, int]:
    return {r: c[r] for r in messages.REJECT_REASONS if c[r]}


def _noop_socket_cb(_c: mqtt.Client, _u: object, _s: object) -> None:
    """Registered so that paho queues writes for the loop instead of writing at once."""
