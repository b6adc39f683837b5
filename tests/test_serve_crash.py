"""``kill -9`` of ``convoy serve`` mid-stream loses no acknowledged order or takeover.

The service runs as a real process (``python -m convoy.service.app``) on a loopback port
with SQLite in a temporary folder and the live twin driving. Two clients post orders and
takeover requests as fast as they can; the process is killed with SIGKILL while requests
are in flight, restarted on the same database, and every write that got a 2xx answer (and its
event) must be there, unchanged (storage commits before a route answers).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

ADMIN = "admin-token-for-crash-test-0123456789"
H = {"Authorization": f"Bearer {ADMIN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CONVOY_STORAGE_URL": f"sqlite:///{db}",
        "CONVOY_ADMIN_TOKEN": ADMIN,
        "CONVOY_TWIN": "true",
        "CONVOY_TWIN_TRUCKS": "20",
        "CONVOY_SPEEDUP": "600",
        "CONVOY_TELEMETRY_EVERY_S": "5",
    }
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "convoy.service.app", "--port", str(port)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def _wait_up(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/api/v1/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server not up in 30 s:\n{log.read_text()[-3000:]}")


def _order(i: int, worker: int) -> dict[str, Any]:
    return {
        "id": f"crash-{worker}-{i}",
        "shipper": "Haerwusu open-pit mine",
        "cargo": "coal",
        "origin_site": "haerwusu-mine",
        "destination_site": "dalu-park",
        "tonnes": 10.0 + i,
        "pickup_start_s": 30_000.0,
        "pickup_end_s": 40_000.0,
        "delivery_start_s": 30_000.0,
        "delivery_end_s": 80_000.0,
    }


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    db, log = tmp_path / "convoy.db", tmp_path / "serve.log"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(db, port, log)
    acked_orders: dict[str, dict[str, Any]] = {}
    acked_takeovers: dict[str, str] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def post(worker: int) -> None:
        with httpx.Client(base_url=base, headers=H, timeout=5.0) as c:
            i = 0
            while not stop.is_set():
                try:
                    if i % 5 == 4:
                        r = c.post("/api/v1/takeovers", json={"vehicle_id": f"T{i:03d}"})
                        if r.status_code == 201:
                            with lock:
                                acked_takeovers[r.json()["id"]] = r.json()["vehicle_id"]
                    else:
                        body = _order(i, worker)
                        r = c.post("/api/v1/orders", json=body)
                        if r.status_code == 201:
                            with lock:
                                acked_orders[body["id"]] = body
                except httpx.HTTPError:
                    return  # the server is gone
                i += 1

    try:
        _wait_up(base, proc, log)
        workers = [threading.Thread(target=post, args=(w,)) for w in range(2)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 20.0
        while len(acked_orders) < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # mid-stream: the workers are still posting
        proc.wait(10)
        stop.set()
        for w in workers:
            w.join(10)
        assert len(acked_orders) >= 60, log.read_text()[-3000:]
        assert acked_takeovers

        proc = _start(db, port, log)
        _wait_up(base, proc, log)
        with httpx.Client(base_url=base, headers=H, timeout=10.0) as c:
            stored = {o["id"]: o for o in c.get("/api/v1/orders?limit=10000").json()}
            takeovers = {t["id"]: t for t in c.get("/api/v1/takeovers?limit=10000").json()}
            events = c.get("/api/v1/events?type=takeover-request&limit=10000").json()
        missing = sorted(set(acked_orders) - set(stored))
        assert not missing, f"{len(missing)} acknowledged orders lost: {missing[:5]}"
        for oid, body in acked_orders.items():
            assert stored[oid]["tonnes"] == body["tonnes"]
            assert stored[oid]["status"] == "open"
        lost = sorted(set(acked_takeovers) - set(takeovers))
        assert not lost, f"{len(lost)} acknowledged takeovers lost"
        for tid, vid in acked_takeovers.items():
            assert takeovers[tid]["vehicle_id"] == vid
        # ... and the event of each acknowledged request
        logged = {e["payload"]["takeover_id"]: e["vehicle_id"] for e in events}
        assert {t: logged.get(t) for t in acked_takeovers} == acked_takeovers
    finally:
        stop.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
