"""``convoy bench sim``: the engine and SUMO run the same corridor side by side.

The corridor is the issue's: platoons of five trucks in one lane, 25 m gaps inside a
platoon, 100 m between platoons, everyone at 22 m/s, CACC followers, heads cruising (no
speed profile), 0.1 s steps.  Both sides get the same trucks at the same positions (the
engine's ``build`` and SUMO's ``departPos`` agree; ``tests/test_bench.py`` checks it).

Two figures per side and fleet size:

* steady state, vehicle-steps/s: the same run timed for two lengths, the difference of
  the wall times divided into the difference of the vehicle-steps, so start-up,
  compilation, scenario building and SUMO's loading and insertion all cancel out;
* end to end, s: a fresh process that reads the scenario and runs it for the same
  simulated time (``python`` importing the engine with a warm Numba cache, or ``sumo``).

SUMO inserts vehicles that depart at a given position with a linear scan of the lane,
so loading n trucks into one lane costs O(n²) (measured on 2 cores: 1.6 s at 10,000
trucks, about 150-360 s at 100,000).  The SUMO side therefore puts at most
``SUMO_LANE_TRUCKS`` trucks into one lane; larger fleets run as parallel, unconnected
copies of the road, each truck at its own position.  The first head in each extra lane
loses the tail of the platoon ahead, 100 m (4.5 s) away, which the cruising head never
reacts to anyway.  Every SUMO run is checked to report all trucks inserted and still
running at its end: a run that lost them would time an empty road.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from convoy.sim.engine import build, simulate
from convoy.sim.scenario import MAX_PLATOONS, Scenario, parse_scenario
from convoy.sim.sumo_peer import (
    EDGE_ID,
    CorridorSpec,
    corridor_from_scenario,
    netconvert,
    sumo_binary,
    write_sumo_files,
)

TRUCKS_PER_PLATOON = 5
#: The largest fleet the bench runs: as many platoons as a scenario holds.
MAX_BENCH_TRUCKS = MAX_PLATOONS * TRUCKS_PER_PLATOON
GAP_M = 25.0
# The issue allows 60-100 m; 100 m is a 4.5 s headway at 22 m/s, so every head cruises
# in SUMO's speed-control mode (the CACC switches to it above 2 s) as it does in convoy.
PLATOON_SPACING_M = 100.0
SPEED_MPS = 22.0
DT_S = 0.1
# Room behind the last truck and past the farthest head, m.
ROAD_MARGIN_M = 100.0
# Most trucks SUMO gets in one lane (its insertion is quadratic in the lane's trucks).
SUMO_LANE_TRUCKS = 10_000
# Lateral distance between the parallel SUMO roads, m (they are not connected).
SUMO_LANE_PITCH_M = 10.0
# Wall time the longer convoy steady-state run aims at, s.
CONVOY_TARGET_S = 2.0
# Vehicle-steps the SUMO steady-state difference covers (about 3 s at 1.5e6/s).
SUMO_VEHICLE_STEPS = 5_000_000
# Shortest SUMO run, s of simulated time: past the first, slower steps after insertion.
SUMO_MIN_END_S = 1.0
# SUMO runs per end time, the best taken (convoy's side takes the best of 2 too)
SUMO_REPEATS = 2
# Start-up repeats (the median is reported).
STARTUP_REPEATS = 3
# Measurements of the two run lengths before the bench gives up on a busy machine.
STEADY_TRIES = 4

_RUN_SCENARIO = """
import sys
from convoy.sim.engine import simulate
from convoy.sim.scenario import load_scenario
sc = load_scenario(sys.argv[1])
simulate(sc, backend=sys.argv[2], record_every_s=sc.duration_s, chunks=1)
"""

_STARTUP = """
from convoy.sim.engine import simulate
from convoy.sim.scenario import parse_scenario
simulate(parse_scenario({"duration_s": 0.1, "platoon": {"count": 1}}))
"""


class BenchError(RuntimeError):
    """A measurement that cannot be made as asked (for instance on a machine too busy)."""


@dataclass(frozen=True, slots=True)
class BenchCase:
    """One fleet size on both sides.

    Attributes:
        scenario: the convoy scenario.
        corridor: the SUMO corridor of the same trucks (``corridor_from_scenario``).
        lane: (n,) int, the SUMO lane (parallel road) of each truck, in convoy row order.
    """

    scenario: Scenario
    corridor: CorridorSpec
    lane: np.ndarray

    @property
    def trucks(self) -> int:
        """Trucks in the fleet."""
        return self.scenario.n_trucks

    @property
    def lanes(self) -> int:
        """Parallel SUMO roads."""
        return int(self.lane.max()) + 1


@dataclass(frozen=True, slots=True)
class SumoRun:
    """What one ``sumo`` process reported.

    Attributes:
        wall_s: wall time of the process, s.
        inserted, running, waiting: vehicle counts at the end of the run.
        ups: SUMO's own vehicle updates per second (loading excluded), 0 if not reported.
    """

    wall_s: float
    inserted: int
    running: int
    waiting: int
    ups: float


def fleet_platoons(trucks: int) -> int:
    """Platoons of five for a fleet of about ``trucks`` trucks (at least one)."""
    return max(1, round(trucks / TRUCKS_PER_PLATOON))


def scenario_data(trucks: int, duration_s: float) -> dict[str, Any]:
    """The bench scenario as a scenario-file mapping (what ``parse_scenario`` reads).

    The front head starts far enough down the road that the last truck starts
    ``ROAD_MARGIN_M`` past its start; the road reaches past where a head at top speed
    could get in ``duration_s``.
    """
    count = fleet_platoons(trucks)
    length_m = 16.5  # TruckConfig's default, the same on both sides
    platoon_len_m = TRUCKS_PER_PLATOON * length_m + (TRUCKS_PER_PLATOON - 1) * GAP_M
    head_pos_m = (count - 1) * (platoon_len_m + PLATOON_SPACING_M) + platoon_len_m
    head_pos_m += ROAD_MARGIN_M
    max_speed_mps = 25.0  # TruckConfig's default
    road_m = math.ceil(head_pos_m + duration_s * max_speed_mps + ROAD_MARGIN_M)
    return {
        "name": f"bench-{count * TRUCKS_PER_PLATOON}",
        "dt_s": DT_S,
        "duration_s": duration_s,
        "road": {"length_m": float(road_m)},
        "truck": {"length_m": length_m, "max_speed_mps": max_speed_mps},
        "platoon": {
            "trucks": TRUCKS_PER_PLATOON,
            "count": count,
            "spacing_m": PLATOON_SPACING_M,
            "controller": {"model": "cacc-sumo"},
            "initial": {"speed_mps": SPEED_MPS, "gap_m": GAP_M, "head_pos_m": head_pos_m},
        },
        "output": {"record_every_s": duration_s},
    }


def bench_case(trucks: int, duration_s: float) -> BenchCase:
    """The convoy scenario, the SUMO corridor and the lane split for one fleet size."""
    sc = parse_scenario(scenario_data(trucks, duration_s), "bench")
    n = sc.n_trucks
    # whole platoons per lane, so no platoon is split across two roads
    per_lane = max(1, SUMO_LANE_TRUCKS // TRUCKS_PER_PLATOON) * TRUCKS_PER_PLATOON
    lane = np.arange(n) // per_lane
    return BenchCase(scenario=sc, corridor=corridor_from_scenario(sc), lane=lane)


def convoy_initial_positions(case: BenchCase) -> np.ndarray:
    """(n,) front-bumper positions at t = 0 as the engine builds them, m."""
    _, state, _ = build(case.scenario)
    return np.asarray(state.pos_m[state.cur], dtype=np.float64).copy()


def _lane_edge(c: int) -> str:
    return EDGE_ID if c == 0 else f"{EDGE_ID}_{c}"


def write_bench_sumo(case: BenchCase, workdir: Path, end_s: float) -> Path:
    """SUMO files for ``case`` run to ``end_s``; the ``.sumocfg`` path.

    One lane is exactly ``write_sumo_files``; with more, the network gets parallel copies
    of the road and each vehicle the route of its lane, its line otherwise unchanged.
    """
    spec = case.corridor
    if end_s > spec.duration_s:
        raise ValueError(f"end_s = {end_s} is past the corridor's duration {spec.duration_s}")
    cfg = write_sumo_files(spec, workdir)
    if case.lanes == 1:
        return cfg
    road = repr(float(spec.road_length_m))
    speed = repr(float(spec.speed_limit_mps))
    nodes, edges = ["<nodes>"], ["<edges>"]
    for c in range(case.lanes):
        a, b = ("start", "end") if c == 0 else (f"start_{c}", f"end_{c}")
        y = repr(c * SUMO_LANE_PITCH_M)
        nodes.append(f'    <node id="{a}" x="0.0" y="{y}"/>')
        nodes.append(f'    <node id="{b}" x="{road}" y="{y}"/>')
        edges.append(
            f'    <edge id="{_lane_edge(c)}" from="{a}" to="{b}" numLanes="1" speed="{speed}"/>'
        )
    (workdir / "corridor.nod.xml").write_text("\n".join([*nodes, "</nodes>"]) + "\n")
    (workdir / "corridor.edg.xml").write_text("\n".join([*edges, "</edges>"]) + "\n")
    netconvert(
        workdir / "corridor.nod.xml", workdir / "corridor.edg.xml", workdir / "corridor.net.xml"
    )
    rou = workdir / "corridor.rou.xml"
    out: list[str] = []
    k = 0
    for line in rou.read_text().splitlines():
        if "<route " in line:
            out += [f'    <route id="r{c}" edges="{_lane_edge(c)}"/>' for c in range(case.lanes)]
            continue
        if "<vehicle " in line:
            line = line.replace(' route="r0"', f' route="r{int(case.lane[k])}"')
            k += 1
        out.append(line)
    if k != case.trucks:
        raise RuntimeError(f"found {k} vehicles in {rou}, expected {case.trucks}")
    rou.write_text("\n".join(out) + "\n")
    return cfg


def _count(pattern: str, text: str) -> int:
    m = re.search(pattern + r":\s*(\d+)", text)
    return int(m.group(1)) if m else -1


def run_sumo(cfg: Path, end_s: float, expected: int, extra_args: Sequence[str] = ()) -> SumoRun:
    """Run the ``sumo`` binary on ``cfg`` until ``end_s`` and check every truck is in.

    ``extra_args`` go on the command line as they are (an FCD output, say).

    Raises:
        RuntimeError: if SUMO does not report all ``expected`` trucks inserted and
            running at the end (a bench of an emptied road would be meaningless).
    """
    cmd = [
        sumo_binary("sumo"),
        "-c",
        str(cfg),
        "--end",
        repr(float(end_s)),
        "--no-step-log",
        "true",
        "--no-warnings",
        "true",
        # the end-of-run report carries the vehicle counts
        "--duration-log.disable",
        "false",
        "--duration-log.statistics",
        "true",
        *extra_args,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    text = proc.stdout + proc.stderr
    ups = re.search(r"UPS:\s*([0-9.eE+]+)", text)
    run = SumoRun(
        wall_s=wall_s,
        inserted=_count("Inserted", text),
        running=_count("Running", text),
        waiting=_count("Waiting", text),
        ups=float(ups.group(1)) if ups else 0.0,
    )
    if run.inserted != expected or run.running != expected or run.waiting > 0:
        raise RuntimeError(
            f"SUMO run of {cfg} to {end_s} s reported {run.inserted} inserted, "
            f"{run.running} running, {run.waiting} waiting; expected {expected} of each "
            "inserted and running and none waiting"
        )
    return run


def _round_steps(t_s: float) -> float:
    """``t_s`` rounded to a whole number of steps."""
    return round(round(t_s / DT_S) * DT_S, 6)


def sumo_end_times(trucks: int) -> tuple[float, float]:
    """The two SUMO end times, s: their difference covers ``SUMO_VEHICLE_STEPS``."""
    span = _round_steps(max(SUMO_MIN_END_S, SUMO_VEHICLE_STEPS * DT_S / trucks))
    first = _round_steps(max(SUMO_MIN_END_S, span / 4))
    return first, _round_steps(first + span)


def _time_convoy(case: BenchCase, steps: int, backend: str) -> float:
    """Wall time of one engine run of ``steps`` steps, recording only its last state."""
    data = scenario_data(case.trucks, steps * DT_S)
    sc = parse_scenario(data, "bench")
    start = time.perf_counter()
    simulate(sc, backend=backend, record_every_s=sc.duration_s, chunks=1)
    return time.perf_counter() - start


def convoy_steady(
    case: BenchCase, backend: str = "cpu", repeats: int = 2
) -> tuple[float, int, int]:
    """Steady-state vehicle-steps/s of the engine and the two step counts timed.

    A short run first compiles (or loads from the cache) and estimates the rate; the two
    timed runs are then sized so the longer takes about ``CONVOY_TARGET_S``.  Each is the
    best of ``repeats``; building the scenario is in both and cancels out.
    """
    n = case.trucks
    _time_convoy(case, 2, backend)
    probe = max(10, 2_000_000 // n)
    rate = probe * n / max(_time_convoy(case, probe, backend), 1e-6)
    long_steps = max(40, int(CONVOY_TARGET_S * rate / n))
    short_steps = max(10, long_steps // 4)
    for _ in range(STEADY_TRIES):
        t_short = min(_time_convoy(case, short_steps, backend) for _ in range(repeats))
        t_long = min(_time_convoy(case, long_steps, backend) for _ in range(repeats))
        # The longer run does 4x the steps (building the scenario is in both). On a busy
        # machine a stalled short run can make the difference of the two walls meaningless
        # (even negative): measure again then.
        if t_long - t_short > 0.1 * t_long:
            break
    else:
        raise BenchError(
            f"convoy's timings at {n} trucks do not settle ({short_steps} steps: "
            f"{t_short:.2f} s, {long_steps} steps: {t_long:.2f} s, {STEADY_TRIES} tries): "
            "the machine is too busy to measure; rerun when it is quieter"
        )
    vehicle_steps = (long_steps - short_steps) * n
    return vehicle_steps / (t_long - t_short), short_steps, long_steps


def convoy_end_to_end(trucks: int, duration_s: float, workdir: Path, backend: str = "cpu") -> float:
    """Wall time of a fresh ``python`` that loads the scenario file and runs it, s."""
    path = workdir / f"bench-{trucks}.yaml"
    path.write_text(yaml.safe_dump(scenario_data(trucks, duration_s), sort_keys=False))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _RUN_SCENARIO, str(path), backend], check=True)
    return time.perf_counter() - start


def startup_s(repeats: int = STARTUP_REPEATS) -> float:
    """Median wall time of a fresh ``python`` that imports the engine and runs one step.

    One run first makes sure the Numba cache is warm; it is not counted.
    """
    cmd = [sys.executable, "-c", _STARTUP]
    subprocess.run(cmd, check=True)
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        walls.append(time.perf_counter() - start)
    return float(np.median(walls))


def _bench_one(
    trucks: int, sumo: bool, workdir: Path, step: Callable[[str], None], backend: str
) -> dict[str, Any]:
    first_s, end_s = sumo_end_times(fleet_platoons(trucks) * TRUCKS_PER_PLATOON)
    case = bench_case(trucks, end_s)
    n = case.trucks
    row: dict[str, Any] = {
        "trucks": n,
        "dt_s": DT_S,
        "e2e_sim_s": end_s,
        "threads": numba.get_num_threads(),
        "backend": backend,
        # other work on the machine slows the per-step thread barrier; keep it on record
        "load_avg_1min": os.getloadavg()[0],
    }

    step(f"{n:,} trucks: convoy steady state")
    rate, short_steps, long_steps = convoy_steady(case, backend)
    row |= {"convoy_steady_vsps": rate, "convoy_steps": [short_steps, long_steps]}
    step(f"{n:,} trucks: convoy end to end ({end_s:g} s)")
    row["convoy_e2e_s"] = convoy_end_to_end(n, end_s, workdir, backend)
    if not sumo:
        return row

    step(f"{n:,} trucks: SUMO to {first_s:g} s")
    cfg = write_bench_sumo(case, workdir / f"sumo-{n}", end_s)
    # best of as many runs as convoy's side gets, so that a stall hurts neither side alone
    short = min((run_sumo(cfg, first_s, n) for _ in range(SUMO_REPEATS)), key=lambda r: r.wall_s)
    step(f"{n:,} trucks: SUMO to {end_s:g} s")
    long = min((run_sumo(cfg, end_s, n) for _ in range(SUMO_REPEATS)), key=lambda r: r.wall_s)
    sumo_rate = round((end_s - first_s) / DT_S) * n / max(long.wall_s - short.wall_s, 1e-9)
    row |= {
        "sumo_steady_vsps": sumo_rate,
        "sumo_end_s": [first_s, end_s],
        "sumo_e2e_s": long.wall_s,
        "sumo_lanes": case.lanes,
        "sumo_inserted": long.inserted,
        "sumo_running": long.running,
        "sumo_reported_ups": long.ups,
        "steady_ratio": rate / sumo_rate,
        "e2e_ratio": long.wall_s / row["convoy_e2e_s"],
    }
    return row


def _sci(x: float) -> str:
    """``3.92e6`` rather than ``3.92e+06``: the table has eight columns to fit."""
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _table(rows: list[dict[str, Any]], startup: float) -> Table:
    table = Table(
        title="convoy vs SUMO, same corridor: platoons of 5, CACC, 0.1 s step",
        caption=(
            "steady: vehicle-steps/s, start-up excluded; e2e: wall s of a fresh process "
            f"for the simulated time; ratio: convoy's advantage.\nstart-up (fresh python: "
            f"import + warm compile cache + 1 step): {startup:.2f} s"
        ),
    )
    for name in (
        "trucks",
        "convoy\nsteady",
        "SUMO\nsteady",
        "ratio",
        "simulated\ns",
        "convoy\ne2e s",
        "SUMO\ne2e s",
        "ratio",
    ):
        table.add_column(name, justify="right", no_wrap=True)

    def cell(r: dict[str, Any], key: str, fmt: Callable[[float], str]) -> str:
        return fmt(r[key]) if r.get(key) is not None else "-"

    for r in rows:
        table.add_row(
            f"{r['trucks']:,}",
            cell(r, "convoy_steady_vsps", _sci),
            cell(r, "sumo_steady_vsps", _sci),
            cell(r, "steady_ratio", lambda x: f"{x:.1f}×"),
            f"{r['e2e_sim_s']:g}",
            cell(r, "convoy_e2e_s", lambda x: f"{x:.2f}"),
            cell(r, "sumo_e2e_s", lambda x: f"{x:.2f}"),
            cell(r, "e2e_ratio", lambda x: f"{x:.1f}×"),
        )
    return table


def sumo_available(console: Console) -> bool:
    """Whether the ``sumo`` binary is there; if not, say so and run the convoy side only."""
    try:
        sumo_binary("sumo")
    except FileNotFoundError as exc:
        console.print(f"[yellow]{exc}; running the convoy side only[/yellow]")
        return False
    return True


def bench_progress(console: Console) -> Progress:
    """The progress display the benchmarks share (transient: gone when they print)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def bench_sim(
    sizes: list[int], sumo: bool, console: Console, backend: str = "cpu"
) -> list[dict[str, Any]]:
    """Run the corridor at each fleet size in convoy and (unless ``sumo`` is False) SUMO.

    Prints a table of steady-state vehicle-steps/s and end-to-end wall times with their
    ratios, and the engine's start-up time.

    Raises:
        BenchError: a size outside ``TRUCKS_PER_PLATOON``..``MAX_BENCH_TRUCKS``, or a
            measurement that cannot be made.

    Returns:
        One dict per size: ``trucks``, ``convoy_steady_vsps``, ``convoy_steps`` (the two
        step counts timed), ``convoy_e2e_s``, ``e2e_sim_s`` (simulated time of the
        end-to-end runs), and with SUMO ``sumo_steady_vsps``, ``sumo_end_s``,
        ``sumo_e2e_s``, ``sumo_lanes``, ``sumo_inserted``, ``sumo_running``,
        ``sumo_reported_ups``, ``steady_ratio`` and ``e2e_ratio`` (SUMO / convoy); every
        dict also has ``startup_s``, ``threads`` (Numba's), ``backend`` (the engine
        backend timed, ``cpu`` by default) and ``load_avg_1min`` (the machine's load when
        that size started).
    """
    for trucks in sizes:
        if not TRUCKS_PER_PLATOON <= trucks <= MAX_BENCH_TRUCKS:
            raise BenchError(
                f"--trucks {trucks}: allowed: sizes from {TRUCKS_PER_PLATOON} to "
                f"{MAX_BENCH_TRUCKS:,}"
            )
    sumo = sumo and sumo_available(console)
    phases = 4 if sumo else 2
    rows: list[dict[str, Any]] = []
    progress = bench_progress(console)
    with progress, tempfile.TemporaryDirectory(prefix="convoy_bench_") as tmp:
        task = progress.add_task("start-up time", total=len(sizes) * phases)
        started = 0

        def step(what: str) -> None:
            # the bar counts finished phases; the text names the one running now
            nonlocal started
            progress.update(task, description=what, completed=started)
            started += 1

        startup = startup_s()
        for trucks in sizes:
            rows.append(_bench_one(trucks, sumo, Path(tmp), step, backend))
        progress.update(task, completed=started)
    for r in rows:
        r["startup_s"] = startup
    console.print(_table(rows, startup))
    return rows
