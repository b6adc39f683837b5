"""How many cars a minor road gets across a busy main road: convoy, SUMO and HCM.

A T of two-way roads, 1 km arms, one lane each way: west-east is the main road (primary),
the south arm tertiary. Cars drive west-east and east-west at ``--flows`` vehicles an hour in
all (half each way, shifted-exponential headways of at least 2 s, seeded), and a queue of
cars on the south arm that never empties (one every 2.5 s) turns left, to the west: across
the eastbound stream and into the westbound one. Both engines run the same ``.net.xml`` and
``.rou.xml`` for ``--minutes`` after a 5-minute warm-up; the minor road's capacity is the
left-turners that arrived per hour in that window. netconvert builds the junction with its
internal links, SUMO's default (convoy reads the same file and keeps the node a point):
without them SUMO's first left-turner stood at its line for the whole run at 600 veh/h.

HCM's potential capacity of a minor movement (Harders 1968, Siegloch 1973; HCM 6th ed.,
Equation 20-37) against a conflicting flow ``q`` [veh/s] is
``q exp(-q t_c) / (1 - exp(-q t_f))``, with the base critical headway ``t_c`` = 7.1 s and
follow-up headway ``t_f`` = 3.5 s for a left turn from a minor street across a two-lane main
road (HCM 6th ed., Exhibit 20-11). Printed too with convoy's critical gap (5 s) in place of
7.1 s.

    python scripts/minor_capacity.py                    # conflicting flows 300-1500 veh/h
    python scripts/minor_capacity.py --flows 600,900 --minutes 30
    python scripts/minor_capacity.py --plot docs/img/minor-capacity.png
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
from junction_vs_sumo import cross

from convoy.road.sumo_net import read_sumo_net, write_sumo_net
from convoy.sim.bench_network import (
    DT_S,
    convoy_trip_times,
    run_sumo_net,
    sumo_trip_times,
    write_routes,
    write_sumocfg,
)
from convoy.sim.net_kernel import CRITICAL_GAP_S
from convoy.sim.network import CAR, Leg, NetSim, Trip

#: HCM 6th ed., Exhibit 20-11: a minor-street left turn across a two-lane main road [s]
HCM_CRITICAL_S = 7.1
HCM_FOLLOW_UP_S = 3.5
WARM_UP_S = 300.0
#: a minor car leaves the node 1 km before it arrives: its trip's end is counted this much
#: later than its passage (1 km at the 20 m/s limit; the window's length is what matters)
TRAVEL_S = 50.0
MIN_HEADWAY_S = 2.0
MINOR_HEADWAY_S = 2.5


def demand(flow_vph: float, end_s: float, seed: int) -> list[Trip]:
    """Main-road cars both ways (``flow_vph`` in all) and the minor road's queue."""
    rng = np.random.default_rng(seed)
    trips = []
    mean_s = 3600.0 / (flow_vph / 2.0)
    for a, b in (("w", "e"), ("e", "w")):
        t, k = float(rng.uniform(0.0, mean_s)), 0
        while t < end_s:
            trips.append(Trip(f"{a}{b}.{k}", CAR.name, (Leg((f"{a}j", f"j{b}")),), round(t, 1)))
            t += MIN_HEADWAY_S + float(rng.exponential(mean_s - MIN_HEADWAY_S))
            k += 1
    for k in range(int(end_s / MINOR_HEADWAY_S)):
        trips.append(Trip(f"sw.{k}", CAR.name, (Leg(("sj", "jw")),), k * MINOR_HEADWAY_S))
    return sorted(trips, key=lambda tr: (tr.depart_s, tr.vehicle_id))


def hcm_capacity_vph(flow_vph: float, critical_s: float, follow_up_s: float) -> float:
    """HCM's potential capacity of a minor movement [veh/h] against ``flow_vph``."""
    q = flow_vph / 3600.0
    return 3600.0 * q * math.exp(-q * critical_s) / (1.0 - math.exp(-q * follow_up_s))


def measure(flow_vph: float, minutes: float, seed: int) -> dict[str, float]:
    """Both engines on the T: left-turners per hour in the window, main-road cars per hour."""
    t0 = WARM_UP_S + TRAVEL_S
    t1 = t0 + minutes * 60.0
    end_s = t1 + 60.0
    trips = demand(flow_vph, end_s, seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        net_xml = write_sumo_net(cross("s", "wes"), work / "t.net.xml")
        rou_xml = write_routes(trips, (CAR,), work / "t.rou.xml")
        cfg = write_sumocfg(net_xml, rou_xml, work / "t.sumocfg")
        sim = NetSim(read_sumo_net(net_xml), trips, dt_s=DT_S, record_every_s=1.0e7)
        ours = convoy_trip_times(sim, [sim.run(end_s, fcd_rows=sim.n + 1)])
        trip_xml = work / "tripinfo.xml"
        run_sumo_net(cfg, end_s, ["--tripinfo-output", str(trip_xml)])
        theirs = sumo_trip_times(trip_xml, list(ours.vehicle_ids))
    minor = np.array([v.startswith("sw.") for v in ours.vehicle_ids])
    per_h = 3600.0 / (t1 - t0)
    out = {}
    for name, tt in (("convoy", ours), ("SUMO", theirs)):
        inside = (tt.arrival_s >= t0) & (tt.arrival_s < t1)
        out[name] = float((inside & minor).sum()) * per_h
        out[f"{name} main"] = float((inside & ~minor).sum()) * per_h
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", default="300,600,900,1200,1500", help="main-road veh/h in all")
    ap.add_argument("--minutes", type=float, default=60.0, help="measured minutes")
    ap.add_argument("--seed", type=int, default=1, help="seed of the main-road headways")
    ap.add_argument("--plot", type=Path, help="also draw the curves into this PNG")
    a = ap.parse_args()
    try:
        flows = [float(f) for f in a.flows.split(",")]
    except ValueError:
        ap.error(f"--flows {a.flows!r}: numbers separated by commas")
    if not (all(f > 0.0 for f in flows) and a.minutes > 0.0):
        ap.error("--flows and --minutes must be > 0")
    print("T junction, minor left turn across a two-lane main road; capacity [veh/h]")
    print(
        f"{'main veh/h':>10} {'delivered c/S':>14} {'convoy':>7} {'SUMO':>6} "
        f"{'HCM t_c 7.1':>11} {'HCM t_c 5':>9}"
    )
    rows = []
    for f in flows:
        m = measure(f, a.minutes, a.seed)
        rows.append((f, m["convoy"], m["SUMO"]))
        print(
            f"{f:>10.0f} {m['convoy main']:>6.0f}/{m['SUMO main']:<7.0f} {m['convoy']:>7.0f} "
            f"{m['SUMO']:>6.0f} {hcm_capacity_vph(f, HCM_CRITICAL_S, HCM_FOLLOW_UP_S):>11.0f} "
            f"{hcm_capacity_vph(f, CRITICAL_GAP_S, HCM_FOLLOW_UP_S):>9.0f}"
        )
    if a.plot:
        plot(rows, a.plot)
        print(f"wrote {a.plot}")


def plot(rows: list[tuple[float, float, float]], path: Path) -> None:
    """Capacity against the main road's flow: both engines' points, HCM's curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flow, ours, theirs = (np.array(c) for c in zip(*rows, strict=True))
    q = np.linspace(max(flow.min() * 0.8, 50.0), flow.max() * 1.05, 200)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(
        q,
        [hcm_capacity_vph(x, HCM_CRITICAL_S, HCM_FOLLOW_UP_S) for x in q],
        "k-",
        label=f"HCM, $t_c$ {HCM_CRITICAL_S:g} s, $t_f$ {HCM_FOLLOW_UP_S:g} s",
    )
    ax.plot(
        q,
        [hcm_capacity_vph(x, CRITICAL_GAP_S, HCM_FOLLOW_UP_S) for x in q],
        "k--",
        label=f"HCM, $t_c$ {CRITICAL_GAP_S:g} s (convoy's gap)",
    )
    ax.plot(flow, ours, "o-", color="tab:blue", label="convoy")
    ax.plot(flow, theirs, "s-", color="tab:orange", label="SUMO (internal links)")
    ax.set_xlabel("main-road flow, both ways [veh/h]")
    ax.set_ylabel("minor left turns [veh/h]")
    ax.set_title("Minor-road capacity at a T junction")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
