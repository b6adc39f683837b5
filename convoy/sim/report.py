"""Per-run statistics, the terminal summary table, and the platoon speed/gap plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from convoy.sim.engine import RunResult, Trace
from convoy.sim.state import TP_MASS_KG
from convoy.vehicle.truck import TruckSpec


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def summarize(res: RunResult) -> dict[str, Any]:
    """KPIs of a run: totals, per-position energy, safety, and per-truck rows."""
    st, tr, sc = res.state, res.trace, res.scenario
    dist_m = tr.pos_m[-1] - tr.pos_m[0]
    energy = st.energy_kwh.copy()
    payload_t = max(sc.truck.mass_kg - TruckSpec().empty_mass_kg, 0.0) / 1000.0
    km = float(dist_m.sum()) / 1000.0
    total_kwh = float(energy.sum())
    position = res.table.position
    by_pos = []
    solo_ref = None
    for k in range(sc.platoon.trucks):
        sel = position == k
        d = float(dist_m[sel].sum()) / 1000.0
        e = float(energy[sel].sum())
        per_km = e / d if d > 0 else math.nan
        if k == 0:
            solo_ref = per_km
        by_pos.append({"position": k, "kwh_per_km": _finite(per_km)})
    for row in by_pos:
        v = row["kwh_per_km"]
        row["relative_to_head"] = _finite(v / solo_ref) if v and solo_ref else None
    collided = ~np.isnan(st.collided_at_s)
    steps = max(int(st.step[0]), 1)
    followers = position > 0
    return {
        "scenario": sc.name,
        "backend": res.backend,
        "trucks": res.table.n,
        "duration_s": sc.duration_s,
        "vehicle_steps": res.table.n * steps,
        "truck_km": km,
        "tonne_km": km * payload_t,
        "energy_kwh": total_kwh,
        "energy_kwh_per_km": _finite(total_kwh / km) if km > 0 else None,
        "energy_kwh_per_tonne_km": _finite(total_kwh / (km * payload_t))
        if km * payload_t
        else None,
        "energy_by_position": by_pos,
        "min_gap_m": _finite(float(st.min_gap_m.min())),
        "min_ttc_s": _finite(float(st.min_ttc_s.min())),
        "hard_brakes": int(st.hard_brakes.sum()),
        "collisions": int(collided.sum()),
        "acc_fallback_share": float(st.fallback_steps[followers].sum())
        / max(int(followers.sum()) * steps, 1),
        "emergency_brake_steps": int(st.emergency_steps.sum()),
        "mass_kg": float(res.table.phys[0, TP_MASS_KG]),
        "trucks_detail": [
            {
                "vehicle_id": tr.vehicle_id[i],
                "distance_m": float(dist_m[i]),
                "energy_kwh": float(energy[i]),
                "min_gap_m": _finite(float(st.min_gap_m[i])),
                "min_ttc_s": _finite(float(st.min_ttc_s[i])),
                "collided_at_s": _finite(float(st.collided_at_s[i])),
            }
            for i in range(min(res.table.n, 50))
        ],
    }


def summary_table(s: dict[str, Any], wall_s: float) -> Table:
    """A rich table of the headline KPIs."""
    t = Table(title=f"convoy — {s['scenario']}", show_header=True, header_style="bold")
    t.add_column("KPI")
    t.add_column("value", justify="right")

    def fmt(v: Any, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    t.add_row("trucks", str(s["trucks"]))
    t.add_row("simulated time [s]", fmt(s["duration_s"], ".1f"))
    t.add_row("truck-km", fmt(s["truck_km"], ".2f"))
    t.add_row("energy [kWh]", fmt(s["energy_kwh"], ".2f"))
    t.add_row("energy [kWh/km]", fmt(s["energy_kwh_per_km"], ".3f"))
    t.add_row("energy [kWh/t-km]", fmt(s["energy_kwh_per_tonne_km"], ".4f"))
    for row in s["energy_by_position"][:6]:
        t.add_row(f"  position {row['position']} vs head", fmt(row["relative_to_head"], ".3f"))
    t.add_row("min gap [m]", fmt(s["min_gap_m"], ".2f"))
    t.add_row("min time-to-collision [s]", fmt(s["min_ttc_s"], ".2f"))
    t.add_row("hard brakes", str(s["hard_brakes"]))
    t.add_row("ACC fallback share", fmt(s["acc_fallback_share"], ".1%"))
    t.add_row("collisions", str(s["collisions"]))
    rate = s["vehicle_steps"] / wall_s if wall_s > 0 else math.nan
    t.add_row("wall time [s]", f"{wall_s:.2f} ({rate:.3g} vehicle-steps/s)")
    return t


def write_speed_gap_plot(
    trace: Trace, path: str | Path, title: str = "", max_trucks: int = 8
) -> Path:
    """Speeds and gaps of the first platoon's trucks over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(trace.pos_m.shape[1], max_trucks)
    fig, (ax_v, ax_g) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5), dpi=110)
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, n))
    for i in range(n):
        ax_v.plot(
            trace.time_s, trace.speed_mps[:, i], color=colors[i], lw=1.2, label=trace.vehicle_id[i]
        )
        if not np.all(np.isnan(trace.gap_m[:, i])):
            ax_g.plot(trace.time_s, trace.gap_m[:, i], color=colors[i], lw=1.2)
    ax_v.set_ylabel("speed [m/s]")
    ax_g.set_ylabel("gap to predecessor [m]")
    ax_g.set_xlabel("time [s]")
    ax_v.legend(ncol=min(n, 5), fontsize=7, loc="lower right")
    for ax in (ax_v, ax_g):
        ax.grid(alpha=0.3)
    if title:
        ax_v.set_title(title)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    plt.close(fig)
    return p
