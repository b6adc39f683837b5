"""The live web dashboard: static files the API serves at ``/``.

The page (``static/index.html`` + ``app.js``) draws convoy's own network GeoJSON with
MapLibre GL JS (vendored in ``static/vendor``, no tile sources, so it works offline), the
trucks and platoons from the live WebSocket, the KPI panel, alerts, the remote operator's
takeover console and the order board. It talks to the API only through this contract:

- ``GET /api/v1/network.geojson`` (public): edges, sites and RSUs;
- ``WS /api/v1/live?token=TOKEN``: ``{"t_s", "vehicles": [...], "kpis": {...}, "alerts": [...]}``;
- ``GET /api/v1/takeovers?status=open``, ``POST /api/v1/takeovers/{id}/claim``
  (body ``{"operator": ...}``), ``POST /api/v1/takeovers/{id}/resolve``;
- ``GET /api/v1/orders``.

Calls carry ``Authorization: Bearer TOKEN``; the page takes the token from ``?token=``.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR: Path = Path(__file__).resolve().parent / "static"
"""Directory to mount at ``/`` (``StaticFiles(directory=STATIC_DIR, html=True)``)."""

MAPLIBRE_VERSION = "5.24.1"
"""Version of ``maplibre-gl`` copied into ``static/vendor`` (see ``VENDOR.md``, ``build.py``)."""

__all__ = ["MAPLIBRE_VERSION", "STATIC_DIR"]
