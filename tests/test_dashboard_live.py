"""The dashboard in a real browser against the REAL service: ``create_app`` with its live twin.

``tests/test_dashboard.py`` checks the page against a stand-in app whose trucks move in
closed form; this test serves ``convoy.service.app.create_app(settings)`` itself (SQLite in
``tmp_path``, the in-process bus, a 30-truck twin) with uvicorn on a loopback port, and drives
Debian's headless Chromium through Playwright at ``/?token=ADMIN``:

- the Ordos network is drawn by MapLibre (the page's feature counter: 100 edges, every site
  and RSU of ``ordos_network()``);
- the twin's trucks reach the page over the WebSocket and move: two reads of
  ``window.convoyDashboard`` some twin minutes apart differ, no faster than a truck can
  drive, and agree with the telemetry the service stores (``GET /api/v1/trucks``);
- a takeover raised with the admin API (``POST /api/v1/takeovers``) shows up in the console;
  an operator typed into the page claims it, then resolves it, and the API records both;
- a screenshot is saved into ``tmp_path`` (a PNG with a drawn map, not a blank page).

A missing browser or package is a broken set-up: the test fails, it never skips.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

# Fail loudly, never skip, when a package is missing (`make test` installs them).
import uvicorn
import websockets  # noqa: F401  (uvicorn's WebSocket protocol)
from dashboard_browser import CHROMIUM, assert_network_drawn, launch
from PIL import Image
from playwright import sync_api

from convoy.service.app import create_app
from convoy.service.settings import load_settings

pytestmark = [pytest.mark.timeout(90)]

ADMIN = "admin-token-live-dashboard-0123"  # >= 16 characters (Settings.admin_token)
OPERATOR = "wang.li"
# Twin seconds per wall second. 60 (the service's default) moves a truck at 22 m/s about
# 1.3 km per wall second; the platoons on the road at START_S (seed 0, 30 trucks) stay on
# it for the whole test (their planned arrivals are after 26,800 s, 30+ wall s away).
SPEEDUP = 60.0
START_S = 25_000.0  # 06:56:40, when three platoon movements of the seed-0 day are driving
# Upper bound on any truck's speed in the twin [m/s]: the highest speed limit of
# ordos_network() is 100 km/h (27.8 m/s); 34 m/s leaves a margin for the engine's rounding.
MAX_SPEED_MPS = 34.0
BACKGROUND_RGB = np.array([0x0F, 0x1A, 0x23])  # the map's background colour (app.js)


@dataclass(frozen=True)
class Served:
    base: str
    http: httpx.Client


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[Served]:
    settings = load_settings(
        environ={},
        storage_url=f"sqlite:///{tmp_path / 'c.db'}",
        admin_token=ADMIN,
        twin=True,
        twin_trucks=30,
        twin_seed=0,
        speedup=SPEEDUP,
        start_s=START_S,
        live_hz=2.0,
        faults_per_truck_hour=0.0,  # only the takeover this test raises
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                            log_level="warning", ws="websockets-sansio",
                            timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    ) as http:
        # The twin builds its day (about a second) before trucks can be on the road.
        deadline = time.monotonic() + 20
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            health = http.get("/api/v1/health").json()
            if health["twin_ready"] or health["twin_error"]:
                break
            time.sleep(0.1)
        assert health.get("twin_ready"), f"the twin did not come up: {health}"
        yield Served(base, http)
    server.should_exit = True
    thread.join(timeout=10)


def _distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Equirectangular distance, ample at the scale of a few km."""
    kx = math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot((lon1 - lon2) * kx * 111_320.0, (lat1 - lat2) * 110_574.0)


def _live(page: Any) -> dict[str, Any]:
    """The page's last live message (t_s and trucks) and its truck list, read atomically."""
    return page.evaluate(
        """() => {
            const s = window.convoyDashboard;
            const rows = [...document.querySelectorAll('#vehicles li')].map(li => li.dataset.id);
            return {t_s: s.t_s, messages: s.messages, rows,
                    vehicles: s.vehicles.map(v => ({id: v.id, lon: v.lon, lat: v.lat,
                                                    mode: v.mode, platoon: v.platoon}))};
        }"""
    )


def test_dashboard_against_the_real_service(served: Served, tmp_path: Path) -> None:
    # A failure, not a skip: the issue requires this test to run in a real browser.
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does: apt-get install chromium)"
    )
    http = served.http
    with sync_api.sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 950})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{served.base}/?token={ADMIN}")

            # The network is drawn: every edge, site and RSU the service serves, by MapLibre.
            assert_network_drawn(page)

            # The twin's trucks arrive over the WebSocket.
            page.wait_for_selector("#status[data-state='live']", timeout=10000)
            page.wait_for_function(
                "() => window.convoyDashboard.vehicles.length > 0", timeout=15000
            )
            first = _live(page)
            assert sorted(first["rows"]) == sorted(v["id"] for v in first["vehicles"])
            ids = {v["id"] for v in first["vehicles"]}
            assert len(ids) == len(first["vehicles"]), "a truck is listed twice"
            assert ids <= {f"T{i:03d}" for i in range(1, 31)}, ids  # the 30-truck fleet
            # Trucks of a platoon share its movement id; the lead is driven, followers CACC.
            assert {v["mode"] for v in first["vehicles"]} <= {"human", "cacc", "mrm"}

            # ...and agree with the telemetry the service stores for the same trucks. The
            # stored sample may be a tick or two newer than the page's message, so a truck
            # may have moved between them, but no faster than it can drive.
            stored = {r["vehicle_id"]: r for r in http.get("/api/v1/trucks").json()}
            assert ids <= stored.keys(), ids - stored.keys()
            for v in first["vehicles"]:
                rec = stored[v["id"]]
                dt_s = abs(rec["t_s"] - first["t_s"])
                assert dt_s <= 10 * SPEEDUP, (v["id"], rec["t_s"], first["t_s"])
                d_m = _distance_m(v["lon"], v["lat"], rec["lon"], rec["lat"])
                assert d_m <= MAX_SPEED_MPS * dt_s + 5.0, (v["id"], d_m, dt_s)

            # Trucks move: a later message (>= 90 twin s on) has them elsewhere.
            page.wait_for_function(
                f"() => window.convoyDashboard.t_s >= {first['t_s']} + 90", timeout=10000
            )
            second = _live(page)
            assert second["messages"] > first["messages"]
            dt_s = second["t_s"] - first["t_s"]
            before = {v["id"]: v for v in first["vehicles"]}
            moved_m = {
                v["id"]: _distance_m(v["lon"], v["lat"], before[v["id"]]["lon"],
                                     before[v["id"]]["lat"])
                for v in second["vehicles"] if v["id"] in before
            }  # fmt: skip
            assert moved_m, "no truck stayed on the road between the two reads"
            # >= 90 s at a motorway cruise of ~20 m/s is well over 500 m.
            assert max(moved_m.values()) > 500.0, moved_m
            assert all(m <= MAX_SPEED_MPS * dt_s + 5.0 for m in moved_m.values()), (moved_m, dt_s)

            # An admin raises a takeover for a driverless follower now on the road.
            followers = sorted(v["id"] for v in second["vehicles"] if v["mode"] == "cacc")
            assert followers, second["vehicles"]
            truck = followers[0]
            r = http.post("/api/v1/takeovers", json={"vehicle_id": truck, "cause": "odd-weather"})
            assert r.status_code == 201, r.text
            tk = r.json()
            assert tk["status"] == "open" and tk["vehicle_id"] == truck
            row = f"#takeovers tbody tr[data-id='{tk['id']}']"
            page.wait_for_selector(f"{row}[data-status='open']", timeout=10000)
            page.wait_for_selector(f"#alerts li[data-id='{tk['id']}'][data-status='open']")

            # The operator types a name in the console and claims it: the API records them.
            page.fill("#operator", OPERATOR)
            page.click(f"{row} button.claim")
            page.wait_for_selector(f"{row}[data-status='claimed']", timeout=10000)
            got = http.get(f"/api/v1/takeovers/{tk['id']}").json()
            assert got["status"] == "claimed" and got["operator"] == OPERATOR, got
            assert got["claimed_s"] is not None and got["claimed_s"] >= tk["requested_s"]
            assert OPERATOR in page.inner_text(row)
            assert page.inner_text("#takeover-msg") == f"{tk['id']}: claimed by {OPERATOR}"
            page.wait_for_selector(f"#alerts li[data-id='{tk['id']}'][data-status='claimed']")

            # Screenshot with the claim on the console; the map shows the drawn network.
            shot = tmp_path / "dashboard-live.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
            assert px.shape[0] >= 950 and px.shape[1] == 1400, px.shape
            colours = np.unique(px.reshape(-1, 3), axis=0)
            assert len(colours) > 50, f"screenshot looks blank: {len(colours)} colours"
            map_shot = tmp_path / "map-live.png"
            page.locator("#map").screenshot(path=str(map_shot))
            mpx = np.asarray(Image.open(map_shot).convert("RGB")).astype(int)
            drawn = np.abs(mpx - BACKGROUND_RGB).sum(axis=2) > 60
            assert drawn.mean() > 0.01, f"map looks empty: {drawn.mean():.4f} drawn"

            # Resolve: the row leaves the console and the API has it resolved by the same one.
            page.click(f"{row} button.resolve")
            page.wait_for_selector(row, state="detached", timeout=10000)
            got = http.get(f"/api/v1/takeovers/{tk['id']}").json()
            assert got["status"] == "resolved" and got["operator"] == OPERATOR, got
            assert got["resolved_s"] is not None and got["resolved_s"] >= got["claimed_s"]
            assert page.inner_text("#takeover-msg") == f"{tk['id']}: resolved"
            # Resolved requests leave the live feed's alerts (it lists open and claimed ones).
            page.wait_for_selector(f"#alerts li[data-id='{tk['id']}']", state="detached")
            assert http.get("/api/v1/takeovers?status=open").json() == []
            assert page.inner_text("#status") == "live"
            assert not errors, errors
        finally:
            browser.close()
