"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

The API (``convoy.service.app``) is written separately, so this test serves the real static
dashboard beside a small FastAPI app of its own that implements exactly the contract in
``convoy.service.dashboard``: the Ordos network as GeoJSON, a live WebSocket with trucks
advancing along real edges of ``ordos_network()`` (positions known in closed form, so the
page's numbers can be checked), a takeover queue and an order board, all behind a bearer
token. Set ``CONVOY_WRITE_SCREENSHOT=1`` to also copy the screenshot to
``docs/img/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# A missing package or browser is a broken set-up, not a reason to skip: these imports fail
# loudly (`make test` installs the packages; .ci/run installs Debian's chromium).
import uvicorn
import websockets  # noqa: F401  (uvicorn's WebSocket protocol)
from dashboard_browser import CHROMIUM, assert_network_drawn, launch
from fastapi import Depends, FastAPI, Header, HTTPException, WebSocket
from fastapi.staticfiles import StaticFiles
from PIL import Image
from playwright import sync_api
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect

from convoy.road.geojson import network_to_geojson
from convoy.road.network import Edge
from convoy.road.ordos import ordos_network
from convoy.service.dashboard import STATIC_DIR

pytestmark = [pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def _chromium_installed() -> None:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does: apt-get install chromium)"
    )


TOKEN = "dash-test-token"
TIME_SCALE = 60.0  # simulated seconds per wall second, so trucks visibly move in a second
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Truck:
    """A truck driving an edge's geometry at constant speed, wrapping at its end."""

    id: str
    edge: Edge
    start_m: float
    speed_mps: float
    platoon: str | None
    mode: str

    def lonlat(self, t_s: float) -> tuple[float, float]:
        """Position at simulated time t_s, linear in arc length between geometry points."""
        s_m = (self.start_m + self.speed_mps * t_s) % self.edge.length_m
        st = np.asarray(self.edge.stations_m)
        pts = np.asarray(self.edge.geometry)
        return float(np.interp(s_m, st, pts[:, 0])), float(np.interp(s_m, st, pts[:, 1]))


class World:
    """The test app's state: trucks, takeovers and orders."""

    def __init__(self) -> None:
        net = ordos_network()
        g65 = net.edges["baotou__shulinzhao"]
        other = net.edges["dongsheng__kangbashi"]
        # A 1+2 hybrid platoon (P1), a 1+1 platoon (P2) and a solo truck; gaps of 20 m.
        self.trucks = [
            Truck("T1", g65, 1000.0, 22.0, "P1", "human"),
            Truck("T2", g65, 980.0, 22.0, "P1", "cacc"),
            Truck("T3", g65, 960.0, 22.0, "P1", "cacc"),
            Truck("T4", other, 500.0, 20.0, "P2", "human"),
            Truck("T5", other, 480.0, 20.0, "P2", "cacc"),
            Truck("T6", g65, 15000.0, 18.0, None, "acc"),
        ]
        self.t0 = time.monotonic()
        self.takeovers: dict[str, dict[str, Any]] = {
            "TK-1": {
                "id": "TK-1",
                "vehicle_id": "T3",
                "cause": "dust_storm",
                "deadline_s": 600.0,
                "status": "open",
                "operator": None,
            }
        }
        # The API's OrderOut fields (a subset); the board shows them by name.
        self.orders = [
            {"id": "O-1", "shipper": "s1", "cargo": "coal", "origin_site": "mine-a",
             "destination_site": "plant-b", "tonnes": 3200.0, "status": "in_progress"},
            {"id": "O-2", "shipper": "s1", "cargo": "coal", "origin_site": "mine-c",
             "destination_site": "rail-d", "tonnes": 1800.0, "status": "open"},
            {"id": "O-3", "shipper": "s2", "cargo": "methanol", "origin_site": "chem-e",
             "destination_site": "rail-d", "tonnes": 900.0, "status": "delivered"},
        ]  # fmt: skip
        self.ws_rejected = 0

    def t_s(self) -> float:
        return (time.monotonic() - self.t0) * TIME_SCALE

    def live(self) -> dict[str, Any]:
        t_s = self.t_s()
        vehicles = []
        for tr in self.trucks:
            lon, lat = tr.lonlat(t_s)
            vehicles.append({"id": tr.id, "lon": lon, "lat": lat, "speed_mps": tr.speed_mps,
                             "platoon": tr.platoon, "mode": tr.mode})  # fmt: skip
        alerts = [
            {k: t[k] for k in ("id", "vehicle_id", "cause", "deadline_s", "status")}
            for t in self.takeovers.values()
        ]
        kpis = {"trucks": len(self.trucks), "platoons": 2, "tonnes": 3200.0, "open_takeovers":
                sum(t["status"] == "open" for t in self.takeovers.values())}  # fmt: skip
        return {"t_s": t_s, "vehicles": vehicles, "kpis": kpis, "alerts": alerts}


class ClaimBody(BaseModel):
    operator: str


def make_app(world: World) -> FastAPI:
    """A stand-in for convoy's API that implements the dashboard's contract, no more."""
    app = FastAPI()
    geojson = network_to_geojson(ordos_network())

    def auth(authorization: str | None = Header(default=None)) -> None:
        if authorization != f"Bearer {TOKEN}":
            raise HTTPException(401, "missing or wrong bearer token")

    @app.get("/api/v1/network.geojson")
    def network() -> dict[str, Any]:
        return geojson

    @app.get("/api/v1/takeovers", dependencies=[Depends(auth)])
    def takeovers(status: str | None = None) -> list[dict[str, Any]]:
        return [t for t in world.takeovers.values() if status is None or t["status"] == status]

    @app.post("/api/v1/takeovers/{tid}/claim", dependencies=[Depends(auth)])
    def claim(tid: str, body: ClaimBody) -> dict[str, Any]:
        t = world.takeovers.get(tid)
        if t is None or t["status"] != "open":
            raise HTTPException(409, f"takeover {tid} is not open")
        t.update(status="claimed", operator=body.operator)
        return t

    @app.post("/api/v1/takeovers/{tid}/resolve", dependencies=[Depends(auth)])
    def resolve(tid: str, body: ClaimBody) -> dict[str, Any]:
        t = world.takeovers.get(tid)
        if t is None or t["status"] != "claimed" or t["operator"] != body.operator:
            raise HTTPException(409, f"takeover {tid} is not claimed by {body.operator}")
        t.update(status="resolved")
        return t

    @app.get("/api/v1/orders", dependencies=[Depends(auth)])
    def orders() -> list[dict[str, Any]]:
        return world.orders

    @app.websocket("/api/v1/live")
    async def live(ws: WebSocket, token: str = "") -> None:
        if token != TOKEN:
            world.ws_rejected += 1
            await ws.close(code=1008)
            return
        await ws.accept()
        try:
            while True:
                await ws.send_json(world.live())
                await asyncio.sleep(0.5)  # ~2 messages/s, as the real feed
        except (WebSocketDisconnect, RuntimeError):
            return

    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")
    return app


@pytest.fixture()
def served() -> Iterator[tuple[str, World]]:
    world = World()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(make_app(world), host="127.0.0.1", port=port, log_level="warning",
                            ws="websockets-sansio", timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", world
    server.should_exit = True
    thread.join(timeout=5)


def _vehicles(page: Any) -> dict[str, dict[str, str]]:
    """Every truck row's data attributes plus the t_s of the same message, read atomically."""
    return page.evaluate(
        """() => {
            const out = {};
            for (const li of document.querySelectorAll('#vehicles li')) {
                out[li.dataset.id] = {...li.dataset};
            }
            out.__t = {t_s: document.querySelector('#clock').dataset.tS};
            return out;
        }"""
    )


def test_dashboard_in_browser(served: tuple[str, World], tmp_path: Path) -> None:
    base, world = served
    with sync_api.sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 950})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/?token={TOKEN}")

            # The network is drawn: every edge, site and RSU of the served GeoJSON, by MapLibre.
            assert_network_drawn(page)
            style = page.evaluate("() => window.convoyDashboard.map.getStyle().sources")
            assert all(src["type"] == "geojson" for src in style.values()), style  # no tiles

            # Trucks arrive and move; each shown position is the server's for that message.
            page.wait_for_function("() => document.querySelectorAll('#vehicles li').length == 6")
            first = _vehicles(page)
            page.wait_for_function(
                f"() => Number(document.querySelector('#clock').dataset.tS) > "
                f"{float(first['__t']['t_s'])} + 30"
            )
            second = _vehicles(page)
            for snap in (first, second):
                t_s = float(snap["__t"]["t_s"])
                for tr in world.trucks:
                    lon, lat = tr.lonlat(t_s)
                    assert float(snap[tr.id]["lon"]) == pytest.approx(lon, abs=1e-9)
                    assert float(snap[tr.id]["lat"]) == pytest.approx(lat, abs=1e-9)
            # >= 30 simulated s at 22 m/s is >= 660 m along the G65: the truck moved.
            moved_m = 111_000 * abs(float(second["T1"]["lat"]) - float(first["T1"]["lat"]))
            assert moved_m > 300
            # Colour by platoon: one colour within a platoon, different across platoons.
            assert first["T1"]["color"] == first["T2"]["color"] == first["T3"]["color"]
            assert first["T4"]["color"] == first["T5"]["color"] != first["T1"]["color"]
            assert first["T6"]["platoon"] == "" and first["T6"]["color"] != first["T1"]["color"]
            # Trucks are drawn as features of the map's vehicle layer.
            n_drawn = page.evaluate(
                "() => window.convoyDashboard.map.querySourceFeatures('vehicles').length"
            )
            assert n_drawn >= 6

            # KPI panel and order board show the served values.
            assert page.inner_text("#kpis dd[data-key='trucks']") == "6"
            assert page.inner_text("#kpis dd[data-key='tonnes']") == "3,200"
            page.wait_for_function(
                "() => document.querySelectorAll('#orders tbody tr').length == 3"
            )
            heads = page.eval_on_selector_all(
                "#orders thead th", "els => els.map(e => e.textContent)"
            )
            assert heads[:7] == [
                "id", "shipper", "cargo", "origin site", "destination site", "tonnes", "status",
            ]  # fmt: skip
            cells = page.eval_on_selector_all(
                "#orders tbody tr[data-id='O-2'] td", "els => els.map(e => e.textContent)"
            )
            assert cells == ["O-2", "s1", "coal", "mine-c", "rail-d", "1,800", "open"]
            assert page.inner_text("#alerts li[data-id='TK-1']").startswith("T3: dust_storm")

            # Takeover console: claim as 'alice', then resolve; the server sees both.
            row = "#takeovers tbody tr[data-id='TK-1']"
            page.wait_for_selector(f"{row}[data-status='open']")
            page.fill("#operator", "alice")
            page.click(f"{row} button.claim")
            page.wait_for_selector(f"{row}[data-status='claimed']")
            assert world.takeovers["TK-1"]["status"] == "claimed"
            assert world.takeovers["TK-1"]["operator"] == "alice"
            assert "alice" in page.inner_text(row)
            page.wait_for_selector("#alerts li[data-id='TK-1'][data-status='claimed']")
            # Screenshot, with the claim on the console. The map must show the drawn network,
            # not just its background colour.
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            map_shot = tmp_path / "map.png"
            page.locator("#map").screenshot(path=str(map_shot))
            px = np.asarray(Image.open(map_shot).convert("RGB")).astype(int)
            background = np.array([0x0F, 0x1A, 0x23])
            drawn = np.abs(px - background).sum(axis=2) > 60
            assert drawn.mean() > 0.01, f"map looks empty: {drawn.mean():.4f} drawn"
            page.click(f"{row} button.resolve")
            page.wait_for_selector(row, state="detached")
            assert world.takeovers["TK-1"]["status"] == "resolved"
            page.wait_for_selector("#alerts li[data-id='TK-1'][data-status='resolved']")
            assert page.inner_text("#kpis dd[data-key='open_takeovers']") == "0"
            assert page.inner_text("#status") == "live"
            assert world.ws_rejected == 0
            assert not errors, errors
        finally:
            browser.close()
    if os.environ.get("CONVOY_WRITE_SCREENSHOT") == "1":
        (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "img" / "dashboard.png")


def test_dashboard_without_token_or_webgl(served: tuple[str, World], tmp_path: Path) -> None:
    """No ?token=: the public network is drawn, the rest is refused (401, WebSocket closed).

    WebGL is switched off too, so the page must fall back to its 2-D canvas renderer.
    """
    base, world = served
    with sync_api.sync_playwright() as pw:
        browser = launch(pw, ["--disable-3d-apis"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(f"{base}/")
            page.wait_for_selector("#net-stats[data-ready='1']", timeout=15000)
            stats = page.eval_on_selector("#net-stats", "e => ({...e.dataset})")
            assert stats["renderer"] == "canvas2d"
            assert int(stats["edges"]) == 100
            map_shot = tmp_path / "map2d.png"
            page.locator("#map").screenshot(path=str(map_shot))
            px = np.asarray(Image.open(map_shot).convert("RGB")).astype(int)
            drawn = np.abs(px - np.array([0x0F, 0x1A, 0x23])).sum(axis=2) > 60
            assert drawn.mean() > 0.01, f"2-D map looks empty: {drawn.mean():.4f} drawn"
            page.wait_for_function("() => !!document.querySelector('#takeover-msg').textContent")
            assert "401" in page.inner_text("#takeover-msg")
            page.wait_for_selector("#status[data-state='closed']")
            assert world.ws_rejected >= 1
            assert page.eval_on_selector_all("#vehicles li", "els => els.length") == 0
        finally:
            browser.close()
