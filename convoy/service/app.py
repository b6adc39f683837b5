"""The cloud service: ``convoy serve`` (and ``python -m convoy.service.app``).

:func:`create_app` builds the FastAPI application from one :class:`Settings`; nothing
connects at import time. The lifespan opens storage (SQLite by default, PostgreSQL in
production), starts the bus (in-process, or MQTT when ``CONVOY_MQTT_URL`` is set) and the
live twin, and stops them in the reverse order. The dashboard's static files, when present,
are served at ``/``; the API lives under ``/api/v1`` (OpenAPI at ``/openapi.json``, docs at
``/docs``).
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convoy.cloud.supervision import SupervisionError
from convoy.service.auth import TokenChecker
from convoy.service.bus import BusError, open_bus
from convoy.service.routes.api import Runs, problem, router
from convoy.service.settings import Settings, SettingsError, load_settings
from convoy.service.storage import (
    ConflictError,
    NotFoundError,
    RecordError,
    StorageError,
    open_storage,
)
from convoy.service.twin import LiveTwin

log = logging.getLogger("convoy.service")

#: Where the dashboard keeps its static files (written by the dashboard's engineer).
DASHBOARD_DIR = Path(__file__).parent / "dashboard" / "static"


#: Largest request body accepted [bytes]. The largest body any route takes (an order) is
#: under 1 kB; without a limit a 112 MB body was read and parsed before the token was even
#: checked, and the event loop stalled 14 s for every client.
MAX_BODY_BYTES = 64 * 1024
#: Validation errors listed in a 422 body (the rest are counted).
MAX_ERRORS_SHOWN = 20


class BodyLimit:
    """ASGI middleware: a request body over ``limit_bytes`` answers 413 without being read
    further, by its ``Content-Length`` at once or, when it streams, as soon as it passes the
    limit."""

    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit_bytes:
                await problem(413, too_big_detail(self.limit_bytes))(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit_bytes:
                    raise StarletteHTTPException(413, too_big_detail(self.limit_bytes))
            return msg

        await self.app(scope, limited, send)


def too_big_detail(limit_bytes: int) -> str:
    """The 413 answer's detail."""
    return f"request body over {limit_bytes:,} bytes; allowed: at most that"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application for ``settings`` (default: from the environment)."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        storage = open_storage(settings.storage_url)
        bus = open_bus(settings.mqtt_url)
        try:
            bus.start()
        except BaseException:
            storage.close()
            raise
        twin = LiveTwin(settings, storage, bus)
        app.state.settings = settings
        app.state.storage = storage
        app.state.bus = bus
        app.state.twin = twin
        app.state.tokens = TokenChecker(storage, settings.admin_token)
        app.state.runs = Runs()
        twin.start()
        try:
            yield
        finally:
            twin.stop()
            bus.stop()
            storage.close()

    app = FastAPI(
        title="convoy cloud service",
        version="1",
        description=(
            "Fleet, orders, day plan, KPIs, remote supervision and scenario runs of a "
            "hybrid heavy-truck platoon operator, over a live digital twin. Every route "
            "but /api/v1/health and /api/v1/network.geojson needs "
            "'Authorization: Bearer TOKEN' (roles: viewer < dispatcher < operator < admin)."
        ),
        lifespan=lifespan,
    )
    app.include_router(router)
    app.add_middleware(BodyLimit, limit_bytes=MAX_BODY_BYTES)

    @app.exception_handler(NotFoundError)
    async def _not_found(_r: Request, exc: NotFoundError) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(ConflictError)
    async def _conflict(_r: Request, exc: ConflictError) -> JSONResponse:
        return problem(409, str(exc))

    @app.exception_handler(RecordError)
    async def _bad_record(_r: Request, exc: RecordError) -> JSONResponse:
        return problem(422, str(exc))

    # Any other storage error is the database's trouble, not the caller's: 503, retry later.
    async def _unavailable(_r: Request, exc: Exception) -> JSONResponse:
        log.error("storage unavailable: %s", exc)
        return problem(503, f"storage unavailable: {exc}")

    app.add_exception_handler(StorageError, _unavailable)
    app.add_exception_handler(sqlite3.Error, _unavailable)
    try:
        import psycopg

        app.add_exception_handler(psycopg.Error, _unavailable)
    except ImportError:  # pragma: no cover - SQLite-only installs
        pass

    @app.exception_handler(SupervisionError)
    async def _bad_takeover(_r: Request, exc: SupervisionError) -> JSONResponse:
        return problem(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        found = exc.errors()
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in found[:MAX_ERRORS_SHOWN]
        ]
        if len(found) > MAX_ERRORS_SHOWN:  # a body of a million unknown keys: not 137 MB back
            more = len(found) - MAX_ERRORS_SHOWN
            errors.append({"loc": [], "msg": f"and {more:,} more errors", "type": "truncated"})
        return problem(422, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        resp = problem(exc.status_code, exc.detail)
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    if DASHBOARD_DIR.is_dir() and (DASHBOARD_DIR / "index.html").exists():
        app.mount("/", StaticFiles(directory=DASHBOARD_DIR, html=True), name="dashboard")
    return app


def serve_main(host: str = "127.0.0.1", port: int = 8000, settings_path: str | None = None) -> int:
    """Run the service until interrupted; return the exit status (2 on bad settings)."""
    import uvicorn

    if not 0 <= port <= 65535:
        print(f"convoy serve: port = {port}; allowed: 0-65535", file=sys.stderr)
        return 2
    try:
        settings = load_settings(settings_path)
        # Pre-flight: a bad URL or an unreachable server is one line here, not a traceback
        # from inside the lifespan.
        open_storage(settings.storage_url).close()
        bus = open_bus(settings.mqtt_url)
        bus.start()
        bus.stop()
        app = create_app(settings)
    except (SettingsError, BusError, StorageError) as exc:
        print(f"convoy serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    except (StorageError, BusError) as exc:
        print(f"convoy serve: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m convoy.service.app [--host H] [--port P] [--settings FILE]``."""
    p = argparse.ArgumentParser(prog="convoy serve", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--settings", default=None, help="YAML/JSON settings file")
    args = p.parse_args(argv)
    return serve_main(args.host, args.port, args.settings)


if __name__ == "__main__":
    sys.exit(main())
