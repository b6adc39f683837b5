"""What both dashboard tests do in the browser: launch Debian's Chromium with software WebGL,
and check that the page drew the whole Ordos network with MapLibre."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convoy.road.ordos import ordos_network

CHROMIUM = Path("/usr/bin/chromium")
# MapLibre needs WebGL; headless Chromium gets it from SwiftShader
WEBGL_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def launch(pw: Any, args: list[str] | None = None) -> Any:
    """Debian's Chromium under Playwright (``args`` default: software WebGL)."""
    return pw.chromium.launch(
        executable_path=str(CHROMIUM), args=WEBGL_ARGS if args is None else args
    )


def assert_network_drawn(page: Any) -> None:
    """Every edge, site and RSU of the served GeoJSON is on the page, drawn by MapLibre."""
    page.wait_for_selector("#net-stats[data-ready='1']", timeout=15000)
    stats = page.eval_on_selector("#net-stats", "e => ({...e.dataset})")
    net = ordos_network()
    assert int(stats["edges"]) == len(net.edges) == 100
    assert int(stats["sites"]) == len(net.sites)
    assert int(stats["rsus"]) == len(net.rsus)
    assert stats["renderer"] == "maplibre", "WebGL unavailable: fell back to canvas"
    page.wait_for_function(
        "() => window.convoyDashboard.map.loaded() && "
        "window.convoyDashboard.map.queryRenderedFeatures({layers: ['edges']}).length > 50",
        timeout=15000,
    )
