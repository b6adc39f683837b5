"""The HTTP API under ``/api/v1`` and the live WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from dataclasses import asdict
from functools import lru_cache
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Body,
    Depends,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.responses import JSONResponse

from convoy.road.geojson import network_to_geojson
from convoy.road.ordos import ordos_network
from convoy.service import auth
from convoy.service.routes.models import (
    Id,
    OperatorIn,
    OrderIn,
    OrderOut,
    Problem,
    RunIn,
    RunOut,
    TakeoverIn,
    TakeoverOut,
    TokenIn,
    TokenOut,
)
from convoy.service.storage import (
    OrderRecord,
    OrderStatus,
    Role,
    Storage,
    TakeoverStatus,
    new_id,
)
from convoy.service.twin import LiveTwin, plan_summary, platoon_dict

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no token, or an unknown one"},
    403: {"model": Problem, "description": "the token's role may not do this"},
    422: {"model": Problem, "description": "bad input"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "none"}}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "not allowed in its current state"}
}

router = APIRouter(prefix="/api/v1", responses=_ERRORS)

Viewer = Annotated[Role, Depends(auth.viewer)]
Dispatcher = Annotated[Role, Depends(auth.dispatcher)]
Operator = Annotated[Role, Depends(auth.operator)]
Admin = Annotated[Role, Depends(auth.admin)]
Limit = Annotated[int, Query(ge=1, le=10_000)]


def _storage(request: Request) -> Storage:
    s: Storage = request.app.state.storage
    return s


def _twin(request: Request) -> LiveTwin:
    t: LiveTwin = request.app.state.twin
    return t


StorageDep = Annotated[Storage, Depends(_storage)]
TwinDep = Annotated[LiveTwin, Depends(_twin)]


# --- public -------------------------------------------------------------------------------


@router.get("/health", responses={})
def health(twin: TwinDep) -> dict[str, Any]:
    """Whether the service is up, the twin's clock and whether its world is built."""
    return {
        "status": "ok",
        "t_s": round(twin.now_s(), 3),
        "twin_ready": twin.ready,
        "twin_error": twin.error,
    }


@lru_cache(maxsize=1)
def ordos_sites() -> frozenset[str]:
    """The ids of the built-in network's sites, where orders may start and end."""
    return frozenset(ordos_network().sites)


@lru_cache(maxsize=1)
def _network_geojson() -> dict[str, Any]:
    return network_to_geojson(ordos_network())


@router.get("/network.geojson", responses={})
def network_geojson(response: Response) -> dict[str, Any]:
    """The Ordos road network as a GeoJSON FeatureCollection (public, cacheable)."""
    response.headers["Cache-Control"] = "public, max-age=3600"
    return _network_geojson()


# --- fleet, trucks, platoons, plan, KPIs --------------------------------------------------


def _live_by_truck(twin: LiveTwin) -> dict[str, dict[str, Any]]:
    snap = twin.bus.latest() or {"vehicles": []}
    return {v["id"]: v for v in snap["vehicles"]}


@router.get("/fleet")
def fleet(_: Viewer, twin: TwinDep) -> dict[str, Any]:
    """Every truck of the fleet with its live state (null while off the road)."""
    world = twin.world
    if world is None:
        return {"twin_ready": False, "trucks": []}
    live = _live_by_truck(twin)
    return {
        "twin_ready": True,
        "trucks": [_truck_dict(t, live.get(t.id)) for t in world.plan.fleet.trucks.values()],
    }


def _truck_dict(t: Any, live: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": t.id,
        "powertrain": t.powertrain.value,
        "l4_capable": t.l4_capable,
        "battery_kwh": t.battery_kwh,
        "payload_t": t.payload_t,
        "home_hub": t.home_hub,
        "live": live,
    }


@router.get("/trucks")
def trucks(_: Viewer, storage: StorageDep) -> list[dict[str, Any]]:
    """The newest stored telemetry sample of every truck (the twin's, or real trucks' via
    the MQTT vehicle link)."""
    return [asdict(v) for v in storage.latest_states()]


@router.get("/trucks/{truck_id}", responses=_NOT_FOUND)
def truck(truck_id: Id, _: Viewer, twin: TwinDep) -> dict[str, Any]:
    """One truck, its live state and its planned platoon movements."""
    world = twin.world
    if world is None or truck_id not in world.plan.fleet.trucks:
        raise HTTPException(404, detail=f"truck_id = {truck_id!r}: no such truck")
    t = world.plan.fleet.trucks[truck_id]
    out = _truck_dict(t, _live_by_truck(twin).get(truck_id))
    out["plan"] = [platoon_dict(p) for p in world.plan.platoons if truck_id in p.truck_ids]
    return out


@router.get("/platoons")
def platoons(_: Viewer, twin: TwinDep) -> dict[str, Any]:
    """Platoons on the road now: their members in order and the plan's movement."""
    world = twin.world
    snap = twin.bus.latest() or {"vehicles": [], "t_s": twin.now_s()}
    members: dict[str, list[dict[str, Any]]] = {}
    for v in snap["vehicles"]:
        members.setdefault(v["platoon"], []).append(v)
    planned = {p.id: p for p in world.plan.platoons} if world is not None else {}
    out = []
    for pid, vs in sorted(members.items()):
        p = planned.get(pid)
        out.append({"id": pid, "vehicles": vs, "plan": platoon_dict(p) if p is not None else None})
    return {"t_s": snap["t_s"], "platoons": out}


@router.get("/plan", responses=_NOT_FOUND)
def plan(_: Viewer, twin: TwinDep, storage: StorageDep) -> dict[str, Any]:
    """The day plan: totals and every platoon movement."""
    if twin.world is not None:
        return plan_summary(twin.world.plan)
    rec = storage.latest_plan("day")
    if rec is None:
        raise HTTPException(404, detail="no day plan yet: the twin is still planning or is off")
    return rec.plan


@router.get("/kpis")
def kpis(_: Viewer, twin: TwinDep, storage: StorageDep) -> dict[str, Any]:
    """Live KPIs of the twin, and orders and takeovers by status."""
    snap = twin.bus.latest()
    out: dict[str, Any] = dict(snap["kpis"]) if snap else {"t_s": round(twin.now_s(), 3)}
    out["orders_by_status"] = dict(Counter(o.status.value for o in storage.list_orders()))
    out["takeovers_by_status"] = dict(Counter(t.status.value for t in storage.list_takeovers()))
    return out


# --- orders -------------------------------------------------------------------------------


@router.get("/orders")
def list_orders(
    _: Viewer,
    storage: StorageDep,
    status: OrderStatus | None = None,
    limit: Limit = 1000,
) -> list[OrderOut]:
    """Orders by creation time, optionally of one status."""
    return [OrderOut.of(o) for o in storage.list_orders(status, limit)]


@router.post("/orders", status_code=201, responses=_CONFLICT)
def create_order(
    body: OrderIn,
    _: Dispatcher,
    storage: StorageDep,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
    ] = None,
) -> OrderOut:
    """Take a freight order (an ``Idempotency-Key`` header makes retries safe)."""
    sites = ordos_sites()
    for field, site in (
        ("origin_site", body.origin_site),
        ("destination_site", body.destination_site),
    ):
        if site not in sites:
            raise HTTPException(
                422, detail=f"{field} = {site!r}: no such site; allowed: {', '.join(sorted(sites))}"
            )
    if body.origin_site == body.destination_site:
        raise HTTPException(
            422,
            detail=f"destination_site = {body.destination_site!r}: the origin; allowed: "
            "another site",
        )
    data = body.model_dump()
    data["id"] = data["id"] or new_id("o")
    rec = OrderRecord(**data)
    stored = storage.create_order(rec, idempotency_key)
    if body.id is not None and stored.id != body.id:
        # the same key and contents, but this request names another order: not a retry
        raise HTTPException(
            409,
            detail=f"Idempotency-Key {idempotency_key!r} was used for order {stored.id!r}; this "
            f"request names order {body.id!r}; use a new key for a new order",
        )
    return OrderOut.of(stored)


@router.get("/orders/{order_id}", responses=_NOT_FOUND)
def get_order(order_id: Id, _: Viewer, storage: StorageDep) -> OrderOut:
    """One order."""
    return OrderOut.of(storage.get_order(order_id))


@router.post("/orders/{order_id}/cancel", responses={**_NOT_FOUND, **_CONFLICT})
def cancel_order(order_id: Id, _: Dispatcher, storage: StorageDep) -> OrderOut:
    """Cancel an open or planned order (a delivered one cannot be)."""
    return OrderOut.of(storage.cancel_order(order_id))


# --- takeovers ----------------------------------------------------------------------------


@router.get("/takeovers")
def list_takeovers(
    _: Viewer,
    storage: StorageDep,
    status: TakeoverStatus | None = None,
    limit: Limit = 1000,
) -> list[TakeoverOut]:
    """Takeover requests by deadline, optionally of one status."""
    return [TakeoverOut.of(t) for t in storage.list_takeovers(status, limit)]


@router.post("/takeovers", status_code=201)
def create_takeover(body: TakeoverIn, _: Admin, twin: TwinDep) -> TakeoverOut:
    """Raise a takeover request for a truck now (drills and tests)."""
    world = twin.world
    if world is not None:  # (before the twin's world is built, the fleet is not known yet)
        t = world.plan.fleet.trucks.get(body.vehicle_id)
        if t is None:
            raise HTTPException(404, detail=f"vehicle_id = {body.vehicle_id!r}: no such truck")
        if not t.l4_capable:
            raise HTTPException(
                422,
                detail=f"vehicle_id = {body.vehicle_id!r}: a human-driven truck (no L4 kit) "
                "does not ask for remote takeover; allowed: an L4-capable truck",
            )
    return TakeoverOut.of(twin.request_takeover(body.vehicle_id, body.cause))


@router.get("/takeovers/{takeover_id}", responses=_NOT_FOUND)
def get_takeover(takeover_id: Id, _: Viewer, storage: StorageDep) -> TakeoverOut:
    """One takeover request."""
    return TakeoverOut.of(storage.get_takeover(takeover_id))


@router.post("/takeovers/{takeover_id}/claim", responses={**_NOT_FOUND, **_CONFLICT})
def claim_takeover(
    takeover_id: Id,
    _: Operator,
    twin: TwinDep,
    body: Annotated[OperatorIn | None, Body()] = None,
) -> TakeoverOut:
    """Claim an open request (the first claimer wins; the others get 409)."""
    who = (body or OperatorIn()).operator
    return TakeoverOut.of(twin.claim(takeover_id, who))


@router.post("/takeovers/{takeover_id}/resolve", responses={**_NOT_FOUND, **_CONFLICT})
def resolve_takeover(
    takeover_id: Id,
    _: Operator,
    twin: TwinDep,
    body: Annotated[OperatorIn | None, Body()] = None,
) -> TakeoverOut:
    """Resolve a request claimed by the same operator; the truck drives on."""
    who = (body or OperatorIn()).operator
    return TakeoverOut.of(twin.resolve(takeover_id, who))


# --- events -------------------------------------------------------------------------------


@router.get("/events")
def events(
    _: Viewer,
    storage: StorageDep,
    since_s: Annotated[float | None, Query(ge=0, le=1e12)] = None,
    type: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")] = None,
    vehicle_id: Id | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    """Stored events in time order."""
    return [
        {"id": e.id, "t_s": e.t_s, "type": e.type, "vehicle_id": e.vehicle_id, "payload": e.payload}
        for e in storage.events(since_s=since_s, type=type, vehicle_id=vehicle_id, limit=limit)
    ]


# --- scenario runs ------------------------------------------------------------------------


class Runs:
    """Scenario runs in a background thread, one at a time (each takes the CPU)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: dict[str, RunOut] = {}

    def start(self, body: RunIn) -> RunOut:
        with self._lock:
            if any(r.status == "running" for r in self.runs.values()):
                raise HTTPException(409, detail="a scenario run is in progress; wait for it")
            run = RunOut(id=new_id("run"), status="running", **body.model_dump())
            self.runs[run.id] = run
        threading.Thread(target=self._go, args=(run.id, body), daemon=True).start()
        return run

    def _go(self, run_id: str, body: RunIn) -> None:
        from convoy.cloud.day import DayConfig, run_day

        try:
            res = run_day(DayConfig(hours=body.hours, seed=body.seed, n_trucks=body.n_trucks))
            done = self.runs[run_id].model_copy(update={"status": "done", "summary": res.summary})
        except Exception as exc:
            done = self.runs[run_id].model_copy(
                update={"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            )
        with self._lock:
            self.runs[run_id] = done


def _runs(request: Request) -> Runs:
    r: Runs = request.app.state.runs
    return r


RunsDep = Annotated[Runs, Depends(_runs)]


@router.post("/runs", status_code=202, responses=_CONFLICT)
def start_run(body: RunIn, _: Admin, runs: RunsDep) -> RunOut:
    """Start a scenario run: an operating day at full speed (one at a time)."""
    return runs.start(body)


@router.get("/runs")
def list_runs(_: Viewer, runs: RunsDep) -> list[RunOut]:
    """Scenario runs of this process, newest last."""
    return list(runs.runs.values())


@router.get("/runs/{run_id}", responses=_NOT_FOUND)
def get_run(run_id: Id, _: Viewer, runs: RunsDep) -> RunOut:
    """One scenario run and, once done, its summary."""
    if run_id not in runs.runs:
        raise HTTPException(404, detail=f"run_id = {run_id!r}: no such run")
    return runs.runs[run_id]


# --- tokens -------------------------------------------------------------------------------


@router.post("/tokens", status_code=201, responses=_CONFLICT)
def create_token(body: TokenIn, _: Admin, storage: StorageDep) -> TokenOut:
    """Make an API token (its plaintext is shown this once)."""
    return TokenOut(name=body.name, role=body.role, token=storage.add_token(body.name, body.role))


@router.get("/tokens")
def list_tokens(_: Admin, storage: StorageDep) -> list[dict[str, Any]]:
    """Stored tokens: name, role and when made (never a secret or its hash)."""
    return [
        {"name": t.name, "role": t.role.value, "created_s": t.created_s}
        for t in storage.list_tokens()
    ]


@router.delete("/tokens/{name}", status_code=204, responses=_NOT_FOUND)
def revoke_token(name: Id, _: Admin, storage: StorageDep, request: Request) -> Response:
    """Revoke the token of ``name``; it stops working at once."""
    if not storage.revoke_token(name):
        raise HTTPException(404, detail=f"name = {name!r}: no such token")
    checker: auth.TokenChecker = request.app.state.tokens
    checker.forget()
    return Response(status_code=204)


# --- live state ---------------------------------------------------------------------------


@router.websocket("/live")
async def live(websocket: WebSocket, token: str | None = None) -> None:
    """The live state about ``live_hz`` times a second: ``{t_s, vehicles, kpis, alerts}``.

    A missing or unknown ``?token=`` closes the socket with code 4401 (1008-style policy)."""
    app = websocket.app
    checker: auth.TokenChecker = app.state.tokens
    role = await asyncio.to_thread(checker.role_of, token)
    if role is None:
        await websocket.close(code=4401, reason="unknown or missing token")
        return
    await websocket.accept()
    twin: LiveTwin = app.state.twin
    period_s = 1.0 / twin.settings.live_hz
    last = None
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            snap = twin.bus.latest()
            if snap is not None and snap is not last:
                await websocket.send_json(snap)
                last = snap
            await asyncio.sleep(period_s)


def problem(status: int, detail: Any) -> JSONResponse:
    """A JSON error body."""
    return JSONResponse({"detail": detail}, status_code=status)
