"""The HTTP API and WebSocket of ``convoy serve``: routes, roles, bad input, the live twin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from convoy.service.app import create_app
from convoy.service.settings import Settings, SettingsError, load_settings

ADMIN = "admin-token-for-tests-0123456789"
ORDER: dict[str, Any] = {
    "shipper": "Haerwusu open-pit mine",
    "cargo": "coal",
    "origin_site": "haerwusu-mine",
    "destination_site": "dalu-park",
    "tonnes": 98.0,
    "pickup_start_s": 30_000.0,
    "pickup_end_s": 40_000.0,
    "delivery_start_s": 30_000.0,
    "delivery_end_s": 80_000.0,
}


def _settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {
        "storage_url": "sqlite:///:memory:",
        "admin_token": ADMIN,
        "twin": False,
    }
    base.update(kw)
    return load_settings(environ={}, **base)


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(_settings())) as c:
        yield c


@pytest.fixture(scope="module")
def tokens(client: TestClient) -> dict[str, str]:
    out = {"admin": ADMIN}
    for role in ("viewer", "dispatcher", "operator"):
        r = client.post("/api/v1/tokens", headers=_h(ADMIN), json={"name": role, "role": role})
        assert r.status_code == 201, r.text
        out[role] = r.json()["token"]
    return out


# --- settings -----------------------------------------------------------------------------


def test_settings_env_overrides_file(tmp_path: Any) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("speedup: 10\nstorage_url: sqlite:///x.db\n")
    s = load_settings(str(f), environ={"CONVOY_SPEEDUP": "120"})
    assert s.speedup == 120.0  # the environment wins
    assert s.storage_url == "sqlite:///x.db"  # from the file
    assert s.mqtt_url is None  # default: the in-process bus


def test_settings_errors_name_the_setting(tmp_path: Any) -> None:
    with pytest.raises(SettingsError, match="speedup"):
        load_settings(environ={"CONVOY_SPEEDUP": "-1"})
    f = tmp_path / "s.yaml"
    f.write_text("spedup: 10\n")
    with pytest.raises(SettingsError, match="unknown setting 'spedup'"):
        load_settings(str(f), environ={})


# --- auth ---------------------------------------------------------------------------------


def test_public_routes_need_no_token(client: TestClient) -> None:
    r = client.get("/api/v1/network.geojson")
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "FeatureCollection" and len(body["features"]) > 10
    assert "max-age" in r.headers["cache-control"]
    assert client.get("/api/v1/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    "path", ["/api/v1/orders", "/api/v1/fleet", "/api/v1/kpis", "/api/v1/takeovers"]
)
def test_401_without_or_with_a_bad_token(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 401 and "token" in r.json()["detail"]
    r = client.get(path, headers=_h("cvy.0011223344556677.not-the-secret"))
    assert r.status_code == 401 and r.json()["detail"] == "unknown or revoked token"


# (method, path, body, least role allowed); roles nest: viewer < dispatcher < operator < admin
ROLE_MATRIX: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/api/v1/orders", None, "viewer"),
    ("GET", "/api/v1/fleet", None, "viewer"),
    ("GET", "/api/v1/trucks", None, "viewer"),
    ("GET", "/api/v1/platoons", None, "viewer"),
    ("GET", "/api/v1/kpis", None, "viewer"),
    ("GET", "/api/v1/takeovers?status=open", None, "viewer"),
    ("GET", "/api/v1/runs", None, "viewer"),
    ("POST", "/api/v1/orders", ORDER, "dispatcher"),
    ("POST", "/api/v1/takeovers", {"vehicle_id": "T001"}, "admin"),
    ("POST", "/api/v1/tokens", {"name": "x", "role": "viewer"}, "admin"),
]
ROLES = ["viewer", "dispatcher", "operator", "admin"]


@pytest.mark.parametrize(("method", "path", "body", "least"), ROLE_MATRIX)
def test_each_role_allowed_or_403(
    client: TestClient,
    tokens: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    least: str,
) -> None:
    for role in ROLES:
        if body is not None and "name" in body:
            body = {**body, "name": f"x-{role}"}
        r = client.request(method, path, headers=_h(tokens[role]), json=body)
        if ROLES.index(role) >= ROLES.index(least):
            assert r.status_code in (200, 201), (role, r.text)
        else:
            assert r.status_code == 403, (role, r.text)
            assert least in r.json()["detail"]


def test_claim_and_resolve_need_an_operator(client: TestClient, tokens: dict[str, str]) -> None:
    tk = client.post("/api/v1/takeovers", headers=_h(ADMIN), json={"vehicle_id": "T007"}).json()
    for role in ("viewer", "dispatcher"):
        r = client.post(f"/api/v1/takeovers/{tk['id']}/claim", headers=_h(tokens[role]))
        assert r.status_code == 403
    r = client.post(
        f"/api/v1/takeovers/{tk['id']}/claim",
        headers=_h(tokens["operator"]),
        json={"operator": "wang"},
    )
    assert r.status_code == 200 and r.json()["status"] == "claimed"
    assert r.json()["operator"] == "wang"
    r = client.post(f"/api/v1/takeovers/{tk['id']}/resolve", headers=_h(tokens["dispatcher"]))
    assert r.status_code == 403


# --- orders -------------------------------------------------------------------------------


def test_order_create_list_cancel(client: TestClient, tokens: dict[str, str]) -> None:
    d = _h(tokens["dispatcher"])
    r = client.post("/api/v1/orders", headers=d, json={**ORDER, "id": "ord-1"})
    assert r.status_code == 201
    o = r.json()
    assert o["id"] == "ord-1" and o["status"] == "open" and o["tonnes"] == 98.0
    listed = client.get("/api/v1/orders?status=open", headers=_h(tokens["viewer"])).json()
    assert "ord-1" in [x["id"] for x in listed]
    r = client.post("/api/v1/orders/ord-1/cancel", headers=d)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    # cancelling again is a no-op; the same id again is a conflict
    assert client.post("/api/v1/orders/ord-1/cancel", headers=d).json()["status"] == "cancelled"
    r = client.post("/api/v1/orders", headers=d, json={**ORDER, "id": "ord-1"})
    assert r.status_code == 409 and "ord-1" in r.json()["detail"]


def test_idempotency_key_makes_a_retry_safe(client: TestClient, tokens: dict[str, str]) -> None:
    h = {**_h(tokens["dispatcher"]), "Idempotency-Key": "retry-1"}
    a = client.post("/api/v1/orders", headers=h, json=ORDER)
    b = client.post("/api/v1/orders", headers=h, json=ORDER)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] == b.json()["id"]  # one order, not two
    c = client.post("/api/v1/orders", headers=h, json={**ORDER, "tonnes": 50.0})
    assert c.status_code == 409


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tonnes": -1}, "tonnes"),
        ({"cargo": "gold"}, "cargo"),
        ({"destination_site": "haerwusu-mine"}, "destination_site"),
        ({"pickup_end_s": 1.0}, "pickup_end_s"),
        ({"priority": 7}, "priority"),
        ({"origin_site": "has space"}, "origin_site"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_order_is_422_naming_the_field(
    client: TestClient, tokens: dict[str, str], change: dict[str, Any], field: str
) -> None:
    r = client.post("/api/v1/orders", headers=_h(tokens["dispatcher"]), json={**ORDER, **change})
    assert r.status_code == 422
    assert field in str(r.json()["detail"])


def test_malformed_json_and_unknowns_are_4xx_json(
    client: TestClient, tokens: dict[str, str]
) -> None:
    d = {**_h(tokens["dispatcher"]), "Content-Type": "application/json"}
    r = client.post("/api/v1/orders", headers=d, content=b"{not json")
    assert r.status_code == 422 and "detail" in r.json()
    r = client.post("/api/v1/orders/nope/cancel", headers=d)
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = client.get("/api/v1/orders?status=lost", headers=d)
    assert r.status_code == 422
    r = client.get("/api/v1/trucks/T001", headers=d)  # twin off: no fleet
    assert r.status_code == 404 and "T001" in r.json()["detail"]


def test_an_order_must_name_two_real_sites_and_plain_numbers(
    client: TestClient, tokens: dict[str, str]
) -> None:
    # An order between sites the network does not have was stored (201) and could never be
    # planned; true and "1e3" were taken as 1.0 and 1000.0 tonnes. Each is a 422 that names
    # the field.
    d = _h(tokens["dispatcher"])
    for change, needle in (
        ({"origin_site": "nowhere"}, "origin_site = 'nowhere': no such site"),
        ({"destination_site": ORDER["origin_site"]}, "the origin; allowed: another site"),
        ({"tonnes": True}, "tonnes"),
        ({"tonnes": "1e3"}, "tonnes"),
        ({"pickup_start_s": "30000"}, "pickup_start_s"),
    ):
        r = client.post("/api/v1/orders", headers=d, json={**ORDER, **change})
        assert r.status_code == 422, (change, r.text)
        assert needle in str(r.json()["detail"]), r.text
    assert client.post("/api/v1/orders", headers=d, json={**ORDER, "tonnes": 40}).status_code == 201


def test_a_reused_idempotency_key_naming_another_order_is_a_conflict(
    client: TestClient, tokens: dict[str, str]
) -> None:
    # Same key, same contents, but the second request names another order id: not a retry
    # of the first (it used to answer 201 with the first order and its old id)
    h = {**_h(tokens["dispatcher"]), "Idempotency-Key": "retry-named"}
    a = client.post("/api/v1/orders", headers=h, json={**ORDER, "id": "ord-named-1"})
    assert a.status_code == 201
    again = client.post("/api/v1/orders", headers=h, json={**ORDER, "id": "ord-named-1"})
    assert again.status_code == 201 and again.json()["id"] == "ord-named-1"  # a true retry
    b = client.post("/api/v1/orders", headers=h, json={**ORDER, "id": "ord-named-2"})
    assert b.status_code == 409 and "ord-named-1" in b.json()["detail"]


def test_a_body_over_the_limit_is_413_before_anything_reads_it(client: TestClient) -> None:
    # Without a limit a 112 MB body was read and parsed before the token was checked, and the
    # service stalled for every client; a body of a million unknown keys came back as a
    # 137 MB list of errors. Now: 413 by Content-Length or while it streams, and at most
    # MAX_ERRORS_SHOWN errors listed.
    from convoy.service.app import MAX_BODY_BYTES, MAX_ERRORS_SHOWN

    big = b'{"shipper": "' + b"x" * MAX_BODY_BYTES + b'"}'
    r = client.post("/api/v1/orders", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "request body over" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body streams in pieces
        yield b'{"shipper": "'
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b"x" * 4096
        yield b'"}'

    r = client.post(
        "/api/v1/orders",
        content=chunks(),
        headers={**_h(ADMIN), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    many = {f"k{i}": 1 for i in range(2000)}
    r = client.post("/api/v1/orders", headers=_h(ADMIN), json={**ORDER, **many})
    assert r.status_code == 422
    errors = r.json()["detail"]
    assert len(errors) == MAX_ERRORS_SHOWN + 1
    assert errors[-1]["msg"] == f"and {2000 - MAX_ERRORS_SHOWN:,} more errors"


def test_a_takeover_needs_a_truck_of_the_fleet_with_the_l4_kit() -> None:
    # With the twin's world built, a request for a vehicle that is not in the fleet is a
    # 404, and one for a human-driven truck without the L4 kit a 422 (both were stored: 201)
    s = _settings(twin=True, twin_trucks=20, speedup=60.0)
    with TestClient(create_app(s)) as c:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and not c.get("/api/v1/health").json()["twin_ready"]:
            time.sleep(0.2)
        h = _h(ADMIN)
        fleet = c.get("/api/v1/fleet", headers=h).json()["trucks"]
        human = next(t["id"] for t in fleet if not t["l4_capable"])
        l4 = next(t["id"] for t in fleet if t["l4_capable"])
        r = c.post("/api/v1/takeovers", headers=h, json={"vehicle_id": "NOPE"})
        assert r.status_code == 404 and "'NOPE': no such truck" in r.json()["detail"]
        r = c.post("/api/v1/takeovers", headers=h, json={"vehicle_id": human})
        assert r.status_code == 422 and "L4-capable" in r.json()["detail"]
        assert c.post("/api/v1/takeovers", headers=h, json={"vehicle_id": l4}).status_code == 201


# --- takeovers ----------------------------------------------------------------------------


def test_takeover_first_claimer_wins(client: TestClient, tokens: dict[str, str]) -> None:
    op = _h(tokens["operator"])
    tk = client.post(
        "/api/v1/takeovers", headers=_h(ADMIN), json={"vehicle_id": "T009", "cause": "comm-loss"}
    ).json()
    assert tk["status"] == "open" and tk["cause"] == "comm-loss"
    # a 10 s window (supervision.URGENT_WINDOW_S) scaled by the speed-up: 10 wall seconds
    assert tk["deadline_s"] - tk["requested_s"] == pytest.approx(10.0 * 60.0)
    opened = client.get("/api/v1/takeovers?status=open", headers=op).json()
    assert tk["id"] in [t["id"] for t in opened]
    url = f"/api/v1/takeovers/{tk['id']}"
    assert client.post(url + "/claim", headers=op, json={"operator": "li"}).status_code == 200
    r = client.post(url + "/claim", headers=op, json={"operator": "zhao"})
    assert r.status_code == 409 and "claimed" in r.json()["detail"]
    r = client.post(url + "/resolve", headers=op, json={"operator": "zhao"})
    assert r.status_code == 409  # only the claimer resolves
    r = client.post(url + "/resolve", headers=op, json={"operator": "li"})
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    resolved = client.get("/api/v1/takeovers?status=resolved", headers=op).json()
    assert tk["id"] in [t["id"] for t in resolved]
    r = client.post(
        "/api/v1/takeovers", headers=_h(ADMIN), json={"vehicle_id": "T009", "cause": "boredom"}
    )
    assert r.status_code == 422 and "cause" in str(r.json()["detail"])
    assert client.post("/api/v1/takeovers/nope/claim", headers=op).status_code == 404


def test_websocket_rejects_a_bad_token_and_streams(client: TestClient) -> None:
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as exc, client.websocket_connect("/api/v1/live"):
        pass
    assert exc.value.code == 4401
    tk = client.post("/api/v1/takeovers", headers=_h(ADMIN), json={"vehicle_id": "T011"}).json()
    with client.websocket_connect(f"/api/v1/live?token={ADMIN}") as ws:
        first = ws.receive_json()
        deadline = time.monotonic() + 5.0
        msg = first
        while tk["id"] not in [a["id"] for a in msg["alerts"]] and time.monotonic() < deadline:
            msg = ws.receive_json()
    assert set(first) == {"t_s", "vehicles", "kpis", "alerts"}
    assert msg["t_s"] >= first["t_s"]
    alert = next(a for a in msg["alerts"] if a["id"] == tk["id"])
    assert alert["vehicle_id"] == "T011" and alert["status"] == "open"
    assert alert["deadline_s"] == pytest.approx(tk["deadline_s"])


# --- the live twin ------------------------------------------------------------------------

# Ordos (ordos-sites.md): every road of the network lies in this box.
ORDOS_LON = (106.5, 112.0)
ORDOS_LAT = (37.5, 41.0)


def test_live_twin_drives_the_planned_platoons() -> None:
    s = _settings(twin=True, twin_trucks=20, speedup=600.0, start_s=6.5 * 3600)
    with TestClient(create_app(s)) as c:
        h = _h(ADMIN)
        deadline = time.monotonic() + 60.0
        vehicles: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not vehicles:
            time.sleep(0.5)
            with c.websocket_connect(f"/api/v1/live?token={ADMIN}") as ws:
                msg = ws.receive_json()
            vehicles = msg["vehicles"]
        assert vehicles, "no truck on the road within 60 s"
        plan = c.get("/api/v1/plan", headers=h).json()
        planned = {p["id"]: p for p in plan["platoons"]}
        fleet = {t["id"] for t in c.get("/api/v1/fleet", headers=h).json()["trucks"]}
        assert len(fleet) == 20
        for v in vehicles:
            assert ORDOS_LON[0] < v["lon"] < ORDOS_LON[1]
            assert ORDOS_LAT[0] < v["lat"] < ORDOS_LAT[1]
            assert 0.0 <= v["speed_mps"] <= 30.0
            assert v["id"] in fleet
            p = planned[v["platoon"]]
            # the human-driven truck leads; the planned followers drive driverless (CACC)
            assert v["mode"] == ("human" if v["id"] == p["lead_truck_id"] else "cacc")
            assert v["id"] in [p["lead_truck_id"], *p["follower_ids"]]
            assert p["release_s"] <= msg["t_s"]
        # telemetry is stored in batches: the newest sample of each truck seen on the road
        latest = c.get("/api/v1/trucks", headers=h).json()
        assert latest and {t["vehicle_id"] for t in latest} <= fleet
        assert all(ORDOS_LON[0] < t["lon"] < ORDOS_LON[1] for t in latest)
        kpis = c.get("/api/v1/kpis", headers=h).json()
        assert kpis["twin_ready"] and kpis["distance_km"] > 0 and kpis["energy_kwh"] > 0
        # the day's orders were stored at start-up, once
        from convoy.cloud.orders import ordos_day_orders

        day = {o.id for o in ordos_day_orders(0, n_trucks=20)}
        stored = {o["id"] for o in c.get("/api/v1/orders", headers=h).json()}
        assert stored == day


def test_unclaimed_takeover_ends_in_a_minimal_risk_stop() -> None:
    """The twin's remote-centre rules on a clock the test drives: an unclaimed request
    expires at its deadline and the truck brakes to a stop on the shoulder (day.py's rule);
    a claimed one never expires."""
    from convoy.service.bus import InProcessBus
    from convoy.service.storage import open_storage
    from convoy.service.twin import LiveTwin, build_world

    s = _settings(twin=True, twin_trucks=20, speedup=60.0)
    storage = open_storage("sqlite:///:memory:")
    twin = LiveTwin(s, storage, InProcessBus())
    clock = [6.5 * 3600.0]
    twin.now_s = lambda: clock[0]  # type: ignore[method-assign]
    world = build_world(20, 0)
    twin.world = world
    snap = twin.tick()
    t0 = snap["t_s"]
    far = {p.id for p in world.plan.platoons if p.arrival_s > t0 + 1500.0}
    followers = [v for v in snap["vehicles"] if v["mode"] == "cacc" and v["platoon"] in far]
    assert len(followers) >= 2
    a, b = followers[0]["id"], followers[1]["id"]
    tk_a = twin.request_takeover(a, "sensor-fault")
    tk_b = twin.request_takeover(b, "sensor-fault")
    # 10 s (supervision.URGENT_WINDOW_S) of wall time at x60 is 600 twin seconds
    assert tk_a.deadline_s == pytest.approx(t0 + 600.0)
    clock[0] = t0 + 300.0
    twin.claim(tk_b.id, "li")
    twin.tick()
    assert storage.get_takeover(tk_a.id).status.value == "open"
    clock[0] = t0 + 601.0
    twin.tick()
    assert storage.get_takeover(tk_a.id).status.value == "expired"
    assert storage.get_takeover(tk_b.id).status.value == "claimed"
    for _ in range(10):  # braking from cruise speed takes well under 10 twin minutes
        clock[0] += 60.0
        snap = twin.tick()
    by_id = {v["id"]: v for v in snap["vehicles"]}
    assert by_id[a]["mode"] == "mrm" and by_id[a]["speed_mps"] == 0.0
    assert by_id[b]["mode"] == "cacc" and by_id[b]["speed_mps"] > 5.0
    assert snap["kpis"]["minimal_risk_stops"] == 1
    stops = storage.events(type="minimal-risk-manoeuvre")
    assert [(e.vehicle_id, e.payload["takeover_id"]) for e in stops] == [(a, tk_a.id)]
    storage.close()


def test_scenario_run_gives_the_day_summary(client: TestClient, tokens: dict[str, str]) -> None:
    body = {"hours": 0.5, "seed": 0, "n_trucks": 20}
    r = client.post("/api/v1/runs", headers=_h(tokens["operator"]), json=body)
    assert r.status_code == 403
    r = client.post("/api/v1/runs", headers=_h(ADMIN), json={**body, "hours": 25})
    assert r.status_code == 422 and "hours" in str(r.json()["detail"])
    r = client.post("/api/v1/runs", headers=_h(ADMIN), json=body)
    assert r.status_code == 202 and r.json()["status"] == "running"
    run_id = r.json()["id"]
    deadline = time.monotonic() + 60.0
    run = r.json()
    while run["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        run = client.get(f"/api/v1/runs/{run_id}", headers=_h(tokens["viewer"])).json()
    assert run["status"] == "done", run
    assert run["summary"]["fleet_trucks"] == 20 and run["summary"]["hours"] == 0.5
    assert client.get("/api/v1/runs/nope", headers=_h(ADMIN)).status_code == 404


def test_production_mode_postgresql_and_mosquitto() -> None:
    """The same app on PostgreSQL and Mosquitto (the servers .ci/run starts): the twin's
    states reach the broker as the vehicle link's payloads, and orders outlive the app."""
    import os
    import socket
    import uuid

    import paho.mqtt.client as mqtt
    import psycopg

    from convoy.service.mqtt.messages import VehicleState as LinkState

    pg = os.environ.get("CONVOY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        admin = psycopg.connect(pg, autocommit=True, connect_timeout=3)
        socket.create_connection(("127.0.0.1", 1883), timeout=1.0).close()
    except (psycopg.Error, OSError) as exc:
        pytest.fail(
            f"PostgreSQL ({pg}) or Mosquitto (127.0.0.1:1883) not reachable: {exc}; "
            ".ci/run starts them (a missing service is a broken set-up, not a skip)"
        )
    schema = f"api_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    got: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{schema}")
    sub.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    sub.connect("127.0.0.1", 1883)
    sub.subscribe("convoy/v1/vehicles/+/state")
    sub.loop_start()
    try:
        s = _settings(
            storage_url=f"{pg}?options=-csearch_path%3D{schema}",
            mqtt_url="mqtt://127.0.0.1:1883",
            twin=True,
            twin_trucks=20,
            speedup=600.0,
            start_s=6.5 * 3600,
        )
        with TestClient(create_app(s)) as c:
            r = c.post("/api/v1/orders", headers=_h(ADMIN), json={**ORDER, "id": "pg-1"})
            assert r.status_code == 201
            deadline = time.monotonic() + 30.0
            while not got and time.monotonic() < deadline:
                time.sleep(0.2)
        assert got, "no vehicle state reached the broker in 30 s"
        state = LinkState.model_validate_json(got[0])
        assert ORDOS_LON[0] < state.lon_deg < ORDOS_LON[1]
        assert state.mode in ("head", "follow", "emergency")
        with TestClient(create_app(s)) as c:
            r = c.get("/api/v1/orders/pg-1", headers=_h(ADMIN))
            assert r.status_code == 200 and r.json()["tonnes"] == ORDER["tonnes"]
    finally:
        sub.loop_stop()
        sub.disconnect()
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def test_serve_main_exits_2_on_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from convoy.service.app import serve_main

    monkeypatch.setenv("CONVOY_SPEEDUP", "fast")
    assert serve_main("127.0.0.1", 0, None) == 2
    err = capsys.readouterr().err
    assert "speedup" in err and "'fast'" in err
    monkeypatch.delenv("CONVOY_SPEEDUP")
    monkeypatch.setenv("CONVOY_STORAGE_URL", "ftp://example.org/db")
    assert serve_main("127.0.0.1", 0, None) == 2
    assert "storage URL scheme 'ftp' is unknown" in capsys.readouterr().err
    monkeypatch.setenv("CONVOY_STORAGE_URL", "sqlite:///:memory:")
    monkeypatch.setenv("CONVOY_MQTT_URL", "http://broker")
    assert serve_main("127.0.0.1", 0, None) == 2
    assert "CONVOY_MQTT_URL 'http://broker'" in capsys.readouterr().err


def test_dashboard_is_served_at_the_root(client: TestClient) -> None:
    from convoy.service.app import DASHBOARD_DIR

    assert (DASHBOARD_DIR / "index.html").exists(), "the dashboard ships with the package"
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert r.text == (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")
    # the API still wins over the static mount
    assert client.get("/api/v1/health").json()["status"] == "ok"


def test_storage_outage_is_503_not_500() -> None:
    with TestClient(create_app(_settings())) as c:
        c.app.state.storage.close()  # type: ignore[attr-defined]
        r = c.get("/api/v1/orders", headers=_h(ADMIN))
        assert r.status_code == 503
        assert r.json()["detail"] == "storage unavailable: storage is closed"


def test_a_revoked_token_stops_working_at_once(client: TestClient) -> None:
    tok = client.post(
        "/api/v1/tokens", headers=_h(ADMIN), json={"name": "temp", "role": "viewer"}
    ).json()["token"]
    assert client.get("/api/v1/orders", headers=_h(tok)).status_code == 200  # now cached
    listed = client.get("/api/v1/tokens", headers=_h(ADMIN)).json()
    assert {"name": "temp", "role": "viewer"}.items() <= next(
        t for t in listed if t["name"] == "temp"
    ).items()
    assert all(set(t) == {"name", "role", "created_s"} for t in listed)  # no secrets
    assert client.delete("/api/v1/tokens/temp", headers=_h(tok)).status_code == 403
    assert client.delete("/api/v1/tokens/temp", headers=_h(ADMIN)).status_code == 204
    assert client.get("/api/v1/orders", headers=_h(tok)).status_code == 401
    assert client.delete("/api/v1/tokens/temp", headers=_h(ADMIN)).status_code == 404
