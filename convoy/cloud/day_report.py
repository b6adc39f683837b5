"""What ``convoy run`` writes: summary.json, report.html, fcd.parquet and events.jsonl."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq

from convoy.cloud.day import DayResult
from convoy.sim.net_output import net_events, net_fcd_table

_SUPERVISION_KEYS = ("takeover_request", "takeover_claim", "takeover_resolve")


def write_day_outputs(day: DayResult, out: Path) -> dict[str, Path]:
    """Write the four files into ``out`` (created if needed) and return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": out / "summary.json",
        "report": out / "report.html",
        "fcd": out / "fcd.parquet",
        "events": out / "events.jsonl",
    }
    paths["summary"].write_text(json.dumps(day.summary, indent=2, default=_json_default) + "\n")
    pq.write_table(net_fcd_table(day.result, day.network), paths["fcd"], compression="zstd")
    events = net_events(day.result) + [dict(e) for e in day.supervision.events]
    events.sort(key=lambda e: float(e.get("t_s", e.get("time_s", 0.0))))
    with paths["events"].open("w") as fh:
        for e in events:
            fh.write(json.dumps(e, default=_json_default) + "\n")
    paths["report"].write_text(report_html(day))
    return paths


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _map(day: DayResult) -> str:
    net = day.network
    use: Counter[str] = Counter()
    for p in day.plan.platoons:
        use.update(p.route_edge_ids)
    top = max(use.values()) if use else 1
    fig, ax = plt.subplots(figsize=(8, 7))
    for e in net.edges.values():
        pts = e.geometry or (
            (net.nodes[e.from_node].lon, net.nodes[e.from_node].lat),
            (net.nodes[e.to_node].lon, net.nodes[e.to_node].lat),
        )
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, color="#cccccc", lw=0.8, zorder=1)
        if use.get(e.id):
            color = "#e6550d" if e.id in day.storm_edges else "#3182bd"
            ax.plot(xs, ys, color=color, lw=0.5 + 6.0 * use[e.id] / top, alpha=0.7, zorder=2)
    for s in net.sites.values():
        ax.plot(s.lon, s.lat, "o", ms=3, color="#333333", zorder=3)
    for s in net.sites.values():
        if s.kind in ("coal_mine", "power_plant", "rail_loading", "chemical_park"):
            ax.annotate(
                s.name_en, (s.lon, s.lat), fontsize=6, xytext=(3, 3), textcoords="offset points"
            )
    ax.set_title("Platoon flows (width: platoon trips per edge; orange: dust storm)")
    ax.set_xlabel("longitude [°E]")
    ax.set_ylabel("latitude [°N]")
    ax.set_aspect(1.0 / math.cos(math.radians(39.5)))
    return _png(fig)


def _tonnage(day: DayResult) -> str:
    loaded = sorted((r.arrival_s, r.tonnes) for r in day.trip_records if r.loaded)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if loaded:
        t = np.array([x for x, _ in loaded]) / 3600.0
        ax.step(t, np.cumsum([y for _, y in loaded]), where="post", color="#31a354")
    ax.set_xlabel("hour of day")
    ax.set_ylabel("tonnes delivered")
    ax.set_title("Tonnage over the day")
    ax.grid(alpha=0.3)
    return _png(fig)


def _positions(day: DayResult) -> str:
    by = day.summary.get("loaded_energy_per_km_by_position_kwh") or {}
    fig, ax = plt.subplots(figsize=(6, 3.2))
    keys = sorted(by, key=lambda k: int(k))
    ax.bar(
        [("lead" if k == "0" else f"#{k}") for k in keys], [by[k] for k in keys], color="#756bb1"
    )
    ax.set_ylabel("kWh per km (loaded)")
    ax.set_title("Energy by platoon position")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _soc(day: DayResult) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    trips = [t for t in day.plan.truck_trips if math.isfinite(t.soc_depart)]
    trucks = sorted({t.truck_id for t in trips})[:8]
    for truck in trucks:
        pts = sorted(
            (x, s)
            for t in trips
            if t.truck_id == truck
            for x, s in ((t.depart_s, t.soc_depart), (t.arrive_s, t.soc_arrive))
        )
        ax.plot([p[0] / 3600 for p in pts], [p[1] * 100 for p in pts], lw=1, label=truck)
    ax.set_xlabel("hour of day")
    ax.set_ylabel("state of charge [%]")
    ax.set_title("State of charge of some trucks (planned, charging included)")
    ax.legend(fontsize=6, ncol=4)
    ax.grid(alpha=0.3)
    return _png(fig)


def _takeovers(day: DayResult) -> str:
    fig, ax = plt.subplots(figsize=(7, 2.6))
    kinds = {
        "takeover_request": ("#3182bd", 0),
        "takeover_claim": ("#31a354", 1),
        "minimal_risk_manoeuvre": ("#de2d26", 2),
    }
    for e in day.supervision.events:
        kind = str(e.get("type"))
        if kind in kinds:
            color, y = kinds[kind]
            ax.plot(float(e["t_s"]) / 3600.0, y, "|", color=color, ms=12)
    ax.set_yticks([0, 1, 2], ["request", "claimed", "minimal-risk stop"])
    ax.set_xlim(0, day.config.hours)
    ax.set_xlabel("hour of day")
    ax.set_title("Remote supervision: takeover timeline")
    return _png(fig)


def _cost(day: DayResult) -> str:
    s = day.summary
    hy = s.get("cost_per_tonne_km_cny")
    base = s.get("solo_diesel_cost_per_tonne_km_cny")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(
        ["hybrid 1+N platoons", "solo diesel, human"],
        [hy or 0.0, base or 0.0],
        color=["#3182bd", "#969696"],
    )
    ax.set_ylabel("CNY per tonne-km")
    ax.set_title("Hybrid vs conventional haulage")
    return _png(fig)


def _kpi_rows(summary: dict[str, Any]) -> str:
    rows = []
    for k, v in summary.items():
        if isinstance(v, dict | list):
            v = json.dumps(v, default=_json_default)
        elif isinstance(v, float):
            v = f"{v:,.4g}"
        rows.append(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>")
    return "\n".join(rows)


def report_html(day: DayResult) -> str:
    """A self-contained page: KPI table, map of flows, and the day's plots (inline PNGs)."""
    figs = [
        ("Network and flows", _map(day)),
        ("Tonnage over the day", _tonnage(day)),
        ("Energy by platoon position", _positions(day)),
        ("State of charge", _soc(day)),
        ("Takeovers", _takeovers(day)),
        ("Cost", _cost(day)),
    ]
    body = "\n".join(
        f'<h2>{html.escape(t)}</h2><img alt="{html.escape(t)}" src="{src}">' for t, src in figs
    )
    cfg = day.config
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>convoy: operating day</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:auto;padding:1em}}
table{{border-collapse:collapse}}td{{border:1px solid #ddd;padding:2px 8px;font-size:13px}}
img{{max-width:100%}}</style></head><body>
<h1>convoy: Ordos operating day</h1>
<p>{cfg.n_trucks} trucks, 1+{cfg.max_followers} hybrid platoons, {cfg.hours:g} h at a
{cfg.dt_s:g} s step, seed {cfg.seed}.</p>
<h2>KPIs</h2><table>{_kpi_rows(day.summary)}</table>
{body}
</body></html>
"""
