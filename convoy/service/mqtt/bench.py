"""Benchmark of the MQTT ingest (not a test): vehicle states through Mosquitto to a sink.

``python -m convoy.service.mqtt.bench [--trucks 10000] [--seconds 5] [--batch 1 10]``

For each batch size it starts a private Mosquitto (``mosquitto`` on a free port, anonymous,
with the queue limits of ``acl.broker_config``) unless ``--port`` names a running one, then:

* ``--publishers`` processes simulate ``--trucks`` trucks at 10 Hz, each truck sending one
  message every ``batch / 10`` s with ``batch`` samples (QoS 1); the newest sample of a message
  is stamped with the wall clock when it is published;
* ``--workers`` ingest processes (:class:`~convoy.service.mqtt.ingest.Ingest` on one shared
  subscription) hand the states to a sink that only counts them and measures latency;
* latency is the sink's clock minus the newest sample's stamp of each message: publish ->
  broker -> ingest -> validated -> in the sink (the samples a truck holds back to batch them
  are not counted);
* loss is states acknowledged to the publishers minus states the sinks got, waiting for the
  ingest to catch up until it makes no progress for 5 s; Mosquitto's own count of dropped
  messages (``$SYS``) is reported beside it.

It reports states/s offered and ingested, p50/p99/max latency, loss, and CPU seconds of each
part (publishers, broker, ingest) per 100,000 states: where the time goes. ``--profile``
adds the ingest worker's top functions (cProfile).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import itertools
import json
import multiprocessing as mp
import os
import pstats
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, Literal

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from convoy.service.mqtt import acl, topics
from convoy.service.mqtt.ingest import (
    BrokerSettings,
    Ingest,
    IngestSettings,
    Protocol,
)
from convoy.service.mqtt.messages import now_ms

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def broker_dropped(port: int, timeout_s: float = 3.0) -> int | None:
    """Mosquitto's count of messages it dropped (``$SYS/broker/publish/messages/dropped``),
    or None if it did not say within ``timeout_s``."""
    got: list[int] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sys-{os.getpid()}")
    c.on_message = lambda _c, _u, m: got.append(int(m.payload))
    c.connect("127.0.0.1", port)
    c.subscribe("$SYS/broker/publish/messages/dropped")
    end = time.monotonic() + timeout_s
    while not got and time.monotonic() < end:
        c.loop(0.05)
    c.disconnect()
    return got[-1] if got else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_broker(mosquitto: str = "mosquitto") -> Iterator[tuple[int, int]]:
    """A throwaway anonymous Mosquitto on a free port: yields (port, pid)."""
    exe = shutil.which(mosquitto) or "/usr/sbin/mosquitto"
    port = _free_port()
    with tempfile.TemporaryDirectory() as d:
        conf = Path(d) / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listener {port} 127.0.0.1",
                    "allow_anonymous true",
                    f"max_queued_messages {acl.MAX_QUEUED_MESSAGES}",
                    f"max_inflight_messages {acl.MAX_INFLIGHT_MESSAGES}",
                    "sys_interval 1",
                    *(["user root"] if os.geteuid() == 0 else []),
                    "",
                ]
            )
        )
        proc = subprocess.Popen(
            [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            end = time.monotonic() + 5.0
            while time.monotonic() < end:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.02)
            yield port, proc.pid
        finally:
            proc.terminate()
            proc.wait(5.0)


# --- publisher process ------------------------------------------------------------------------
def _fixed_header(first: int, length: int) -> bytes:
    """MQTT fixed header: the first byte and the variable-length remaining length."""
    out = bytearray([first])
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


class _RawPublisher:
    """A bare MQTT 3.1.1 QoS 1 publisher, the load generator: PUBLISH packets built by hand
    and written in bulk, PUBACKs counted. paho spends ~40 µs of Python per publish, which on
    2 cores would leave the broker and the ingest too little CPU to measure them."""

    MAX_OUTSTANDING = 60_000  # below the 65,535 packet ids

    def __init__(self, port: int, client_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        cid = client_id.encode()
        # protocol "MQTT" level 4, clean session, keep-alive 0 (off: no pings to answer)
        var = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack("!H", len(cid)) + cid
        self.sock.sendall(_fixed_header(0x10, len(var)) + var)
        connack = self.sock.recv(4)
        if len(connack) != 4 or connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"publisher not accepted: CONNACK {connack!r}")
        self.sock.setblocking(False)
        self.mid = 0
        self.sent = 0
        self.acked = 0
        self._out = bytearray()
        self._partial = 0  # bytes of a PUBACK read so far

    def publish(self, topic: bytes, payload: bytes) -> None:
        """Queue one QoS 1 PUBLISH."""
        while self.sent - self.acked >= self.MAX_OUTSTANDING:
            self.pump(0.01)
        self.mid = self.mid % 65_535 + 1
        head = _fixed_header(0x32, 4 + len(topic) + len(payload))
        self._out += head + struct.pack("!H", len(topic)) + topic
        self._out += struct.pack("!H", self.mid) + payload
        self.sent += 1

    def publish_block(self, block: _Block, stamps_ms: list[int]) -> None:
        """Queue a block's packets (see :class:`_Block`): its timestamps set from
        ``stamps_ms`` (one per sample of a message, oldest first), its packet ids the next
        ones."""
        m = block.messages
        while self.sent + m - self.acked > self.MAX_OUTSTANDING:
            self.pump(0.01)
        self._out += block.fill(self.mid, stamps_ms)
        self.mid = (self.mid + m - 1) % 65_535 + 1
        self.sent += m

    def pump(self, timeout_s: float = 0.0) -> None:
        """Write what is queued and count the PUBACKs that came (4 bytes each)."""
        r, w, _ = select.select([self.sock], [self.sock] if self._out else [], [], timeout_s)
        if w:
            with contextlib.suppress(BlockingIOError):
                n = self.sock.send(self._out)
                del self._out[:n]
        if r:
            with contextlib.suppress(BlockingIOError):
                data = self.sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("broker closed the publisher's connection")
                total = self._partial + len(data)
                self.acked += total // 4
                self._partial = total % 4

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.setblocking(True)
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
            self.sock.close()


#: Payload kinds of the load generator: the topic kind each message goes to.
PayloadKind = Literal["state", "states", "columns"]
_TS_DIGITS = 13  # a time_ms of 2001..2286 has 13 digits
_FIXED = {  # one sample's fields after time_ms, the same for every sample and truck
    "lon_deg": "109.9812345", "lat_deg": "39.8123456", "speed_mps": "22.22",
    "heading_deg": "87.5", "accel_mps2": "0.12", "soc": "0.7734", "mode": '"gap"',
    "edge": '"dongsheng__kangbashi"', "lane": "0",
}  # fmt: skip


def payload_template(kind: PayloadKind, vehicle_id: str, batch: int) -> tuple[bytes, list[int]]:
    """A payload of ``batch`` samples of one truck with zeros where each sample's 13-digit
    ``time_ms`` goes; returns it and the offsets of the timestamps, oldest sample first."""
    ts = "\0" * _TS_DIGITS
    rest = ",".join(f'"{k}":{v}' for k, v in _FIXED.items())
    one = f'{{"id":"{vehicle_id}","time_ms":{ts},{rest}}}'
    if kind == "state":
        if batch != 1:
            raise ValueError("a state message holds one sample")
        text = one
    elif kind == "states":
        text = f'{{"id":"{vehicle_id}","states":[{",".join([one] * batch)}]}}'
    else:
        cols = ",".join(f'"{k}":[{",".join([v] * batch)}]' for k, v in _FIXED.items())
        text = f'{{"id":"{vehicle_id}","time_ms":[{",".join([ts] * batch)}],{cols}}}'
    raw = text.encode()
    offsets, at = [], raw.find(b"\0" * _TS_DIGITS)
    while at >= 0:
        offsets.append(at)
        at = raw.find(b"\0" * _TS_DIGITS, at + _TS_DIGITS)
    if len(offsets) != batch:
        raise AssertionError("timestamp placeholders")
    return raw, offsets


class _Block:
    """The QoS 1 PUBLISH packets of some trucks, built once with placeholders: each use
    copies them and writes the packet ids and timestamps in place with numpy, so the load
    generator spends next to nothing per message."""

    def __init__(self, trucks: list[str], kind: PayloadKind, batch: int) -> None:
        parts: list[bytes] = []
        mid_at: list[int] = []
        ts_at: list[list[int]] = []
        size = 0
        for v in trucks:
            payload, offsets = payload_template(kind, v, batch)
            topic = topics.vehicle_topic(v, kind).encode()
            head = _fixed_header(0x32, 4 + len(topic) + len(payload))
            head += struct.pack("!H", len(topic)) + topic
            mid_at.append(size + len(head))
            body = size + len(head) + 2
            ts_at.append([body + o for o in offsets])
            parts += [head, b"\0\0", payload]
            size = body + len(payload)
        self.messages = len(trucks)
        self.template = np.frombuffer(b"".join(parts), np.uint8)
        self.mid_at = np.asarray(mid_at, np.int64)
        # per sample index j: the byte positions of every message's 13 digits
        digits = np.arange(_TS_DIGITS)
        by_sample = zip(*ts_at, strict=True)
        self.ts_at = [np.asarray(col, np.int64)[:, None] + digits for col in by_sample]

    def fill(self, first_mid: int, stamps_ms: list[int]) -> bytes:
        """The packets with ids ``first_mid + 1, ...`` (wrapping at 65,535) and sample
        ``j`` of every message stamped ``stamps_ms[j]``."""
        buf = self.template.copy()
        mids = (first_mid + np.arange(self.messages)) % 65_535 + 1
        buf[self.mid_at] = mids >> 8
        buf[self.mid_at + 1] = mids & 0xFF
        for at, ms in zip(self.ts_at, stamps_ms, strict=True):
            buf[at] = np.frombuffer(str(ms).encode(), np.uint8)
        return buf.tobytes()


def _publisher(
    port: int,
    index: int,
    trucks: list[str],
    batch: int,
    seconds: float,
    go: EventType,
    out: mp.Queue[Any],
    kind: PayloadKind | None = None,
) -> None:
    """Send ``trucks`` at 10 Hz for ``seconds``, ``batch`` samples per message of ``kind``
    (``state`` for 1, else ``states`` unless given). Each truck sends every ``batch / 10`` s,
    the trucks spread over that period in 10 ms ticks; the newest sample of a message is
    stamped with the wall clock when its tick is sent, the others 100 ms apart before it.

    Puts its counts on ``out``, with the stamp of every tick (``tick_ms``), from which the
    messages sent can be listed (:func:`sent_samples`)."""
    kind = kind or ("state" if batch == 1 else "states")
    c = _RawPublisher(port, f"bench-pub-{index}-{os.getpid()}")
    n = len(trucks)
    period_s = batch / 10.0  # one message per truck every `batch` samples
    tick_s = 0.01
    ticks = max(1, round(period_s / tick_s))  # trucks are spread over the period
    blocks = [_Block(trucks[j * n // ticks : (j + 1) * n // ticks], kind, batch)
              for j in range(ticks)]  # fmt: skip
    ages = [100 * (batch - 1 - j) for j in range(batch)]
    go.wait()
    t0 = time.monotonic()
    sent_states = 0
    tick_ms: list[int] = []
    k = 0
    while True:
        due = t0 + k * tick_s
        now = time.monotonic()
        if now - t0 >= seconds:
            break
        if due > now:
            c.pump(min(due - now, 0.005))
            continue
        block = blocks[k % ticks]
        ms = now_ms()
        c.publish_block(block, [ms - a for a in ages])
        tick_ms.append(ms)
        sent_states += block.messages * batch
        k += 1
        c.pump()
    end = time.monotonic() + 20.0
    while c.acked < c.sent and time.monotonic() < end:
        c.pump(0.01)
    behind = max(0.0, time.monotonic() - t0 - seconds)
    out.put({"index": index, "messages": c.sent, "states": sent_states,
             "acked_messages": c.acked, "acked_states": c.acked * batch, "drain_s": behind,
             "tick_ms": tick_ms, "ticks": ticks})  # fmt: skip
    c.close()


def sent_samples(
    trucks: list[str], batch: int, ticks: int, tick_ms: list[int], messages: int
) -> Iterator[tuple[str, int]]:
    """``(vehicle id, time_ms)`` of every sample of the first ``messages`` messages that
    :func:`_publisher` sent, in the order it sent them."""
    n = len(trucks)
    left = messages
    for k, ms in enumerate(tick_ms):
        j = k % ticks
        for v in trucks[j * n // ticks : (j + 1) * n // ticks]:
            if left <= 0:
                return
            left -= 1
            for a in range(batch - 1, -1, -1):
                yield v, ms - 100 * a


# --- ingest process -----------------------------------------------------------------------------
class _CountingSink:
    """Counts states and the latency of each message's newest sample."""

    def __init__(self, batch: int, counter: Any) -> None:
        self.batch = batch
        self.counter = counter
        self.states = 0
        self.first_s = 0.0
        self.last_s = 0.0
        self.lat_ms: list[np.ndarray] = []

    def __call__(self, states: list[Any]) -> None:
        now = now_ms()
        t = time.monotonic()
        if not self.states:
            self.first_s = t
        self.last_s = t
        self.states += len(states)
        with self.counter.get_lock():
            self.counter.value += len(states)
        if states and isinstance(states[0], tuple):  # the ingest's row mode
            ids, times = [r[0] for r in states], [r[1] for r in states]
        else:
            ids, times = [s.id for s in states], [s.time_ms for s in states]
        stamps = times
        if self.batch > 1:  # the last of each run of one truck's samples is its message's newest
            ends = [a != b for a, b in itertools.pairwise(ids)] + [True]
            stamps = [t for t, end in zip(times, ends, strict=True) if end]
        self.lat_ms.append(now - np.asarray(stamps, dtype=np.int64))


def _worker(
    port: int, index: int, batch: int, profile: bool, protocol: Protocol, rows: bool,
    counter: Any, ready: EventType, stop: EventType, out: mp.Queue[Any],
) -> None:  # fmt: skip
    sink = _CountingSink(batch, counter)
    ing = Ingest(
        sink,
        IngestSettings(
            broker=BrokerSettings("127.0.0.1", port, protocol=protocol),
            client_id=f"bench-ingest-{index}",
            session_expiry_s=0,
        ),
        rows=rows,
    )
    prof = cProfile.Profile() if profile else None
    th = None
    if prof is None:
        th = ing.start()
    else:
        import threading

        def run() -> None:
            prof.runcall(ing.run)

        th = threading.Thread(target=run, daemon=True)
        th.start()
    ing.wait_connected(10.0)
    ready.set()
    stop.wait()
    ing.stop()
    th.join(5.0)
    lat = np.concatenate(sink.lat_ms) if sink.lat_ms else np.zeros(0, np.int64)
    top = ""
    if prof is not None:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
        top = buf.getvalue()
    out.put({"index": index, "states": sink.states, "messages": ing.stats.messages,
             "first_s": sink.first_s, "last_s": sink.last_s, "lat_ms": lat,
             "sink_calls": ing.stats.sink_calls, "rejected": sum(ing.stats.rejected.values()),
             "connects": ing.stats.connects, "profile": top})  # fmt: skip


@dataclass
class Result:
    """One configuration's figures (rates per second of the run, CPU per 100k states)."""

    batch: int
    payload: str
    rows: bool
    protocol: str
    workers: int
    trucks: int
    seconds: float
    offered_states_per_s: float
    ingested_states_per_s: float
    messages_per_s: float
    published_states: int
    acked_states: int
    received_states: int
    lost_states: int
    broker_dropped_messages: int | None
    p50_ms: float
    p99_ms: float
    max_ms: float
    sink_calls: int
    cpu_s_per_100k: dict[str, float]
    publisher_drain_s: float


def run_one(
    batch: int,
    trucks: int,
    seconds: float,
    publishers: int,
    workers: int,
    port: int | None,
    profile: bool = False,
    protocol: Protocol = "5",
    payload: PayloadKind | None = None,
    rows: bool = False,
) -> tuple[Result, str]:
    """Run one configuration; returns its result and the profile text (if asked)."""
    kind: PayloadKind = payload or ("state" if batch == 1 else "states")
    ctx = mp.get_context("fork")
    with contextlib.ExitStack() as stack:
        broker_pid = None
        if port is None:
            port, broker_pid = stack.enter_context(private_broker())
        out: mp.Queue[Any] = ctx.Queue()
        counter = ctx.Value("q", 0)
        stop = ctx.Event()
        go = ctx.Event()
        readies = [ctx.Event() for _ in range(workers)]
        wprocs = [
            ctx.Process(
                target=_worker,
                args=(port, w, batch, profile and w == 0, protocol, rows, counter, readies[w],
                      stop, out),
            )
            for w in range(workers)
        ]  # fmt: skip
        for p in wprocs:
            p.start()
        for e in readies:
            e.wait(15.0)
        ids = acl.truck_ids(trucks)
        pprocs = [
            ctx.Process(
                target=_publisher,
                args=(port, j, ids[j::publishers], batch, seconds, go, out, kind),
            )
            for j in range(publishers)
        ]
        for p in pprocs:
            p.start()
        time.sleep(0.5)  # publishers connect
        cpu0 = {
            "broker": _cpu_s(broker_pid) if broker_pid else float("nan"),
            "ingest": sum(_cpu_s(p.pid or 0) for p in wprocs),
            "publishers": sum(_cpu_s(p.pid or 0) for p in pprocs),
        }
        go.set()
        pubs = [out.get(timeout=seconds + 60.0) for _ in pprocs]
        acked = sum(r["acked_states"] for r in pubs)
        # wait for the ingest to catch up; give up after 5 s without progress
        seen, since = -1, time.monotonic()
        while counter.value < acked and time.monotonic() - since < 5.0:
            if counter.value != seen:
                seen, since = counter.value, time.monotonic()
            time.sleep(0.05)
        cpu1 = {
            "broker": _cpu_s(broker_pid) if broker_pid else float("nan"),
            "ingest": sum(_cpu_s(p.pid or 0) for p in wprocs),
            "publishers": sum(_cpu_s(p.pid or 0) for p in pprocs),
        }
        dropped = broker_dropped(port)
        stop.set()
        wres = [out.get(timeout=30.0) for _ in wprocs]
        for p in [*wprocs, *pprocs]:
            p.join(10.0)
    received = sum(r["states"] for r in wres)
    lat = np.concatenate([r["lat_ms"] for r in wres]) if wres else np.zeros(0)
    first = min(r["first_s"] for r in wres if r["states"]) if received else 0.0
    last = max(r["last_s"] for r in wres) if received else 0.0
    span = max(last - first, 1e-9)
    published = sum(r["states"] for r in pubs)
    per100k = 1e5 / max(received, 1)
    res = Result(
        batch=batch,
        payload=kind,
        rows=rows,
        protocol=protocol,
        workers=workers,
        trucks=trucks,
        seconds=seconds,
        offered_states_per_s=published / seconds,
        ingested_states_per_s=received / span,
        messages_per_s=sum(r["messages"] for r in wres) / span,
        published_states=published,
        acked_states=acked,
        received_states=received,
        lost_states=max(0, acked - received),
        broker_dropped_messages=dropped,
        p50_ms=float(np.percentile(lat, 50)) if lat.size else float("nan"),
        p99_ms=float(np.percentile(lat, 99)) if lat.size else float("nan"),
        max_ms=float(lat.max()) if lat.size else float("nan"),
        sink_calls=sum(r["sink_calls"] for r in wres),
        cpu_s_per_100k={k: round((cpu1[k] - cpu0[k]) * per100k, 3) for k in cpu0},
        publisher_drain_s=max(r["drain_s"] for r in pubs),
    )
    return res, "".join(r["profile"] for r in wres)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one JSON line per configuration."""
    ap = argparse.ArgumentParser(prog="python -m convoy.service.mqtt.bench", description=__doc__)
    ap.add_argument("--trucks", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--publishers", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--port", type=int, help="use a running broker on 127.0.0.1 instead")
    ap.add_argument("--profile", action="store_true", help="cProfile the first ingest worker")
    ap.add_argument("--protocol", choices=["5", "3.1.1"], default="5", help="of the ingest")
    ap.add_argument(
        "--payload", choices=["auto", "states", "columns"], default="auto",
        help="messages of more than one sample: states (auto) or columns",
    )  # fmt: skip
    ap.add_argument("--rows", action="store_true", help="the ingest's row mode (tuples)")
    a = ap.parse_args(argv)
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()} before the run")
    for b in a.batch:
        kind: PayloadKind | None = None if b == 1 or a.payload == "auto" else a.payload
        res, prof = run_one(
            b, a.trucks, a.seconds, a.publishers, a.workers, a.port, a.profile, a.protocol,
            kind, a.rows,
        )  # fmt: skip
        print(json.dumps(asdict(res)))
        if prof:
            print(prof)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
