"""Command-line interface: ``convoy run``, ``convoy sim``, ``convoy bench``.

Bad input gets one line naming what was wrong and what is allowed, and exit code 2;
tracebacks are reserved for bugs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from convoy import __version__

EXIT_BAD_INPUT = 2
_err = Console(stderr=True)
_out = Console()


class BadInputError(Exception):
    """Input a person can fix; printed as one line, exit code 2."""


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeRemainingColumn(),
        console=_err,
        transient=True,
        disable=not _err.is_terminal,
    )


def _simulate(scenario_path: str | None, backend: str):  # type: ignore[no-untyped-def]
    from convoy.sim.engine import simulate
    from convoy.sim.scenario import ScenarioError, load_scenario
    from convoy.sim.scenarios import builtin_path

    try:
        path = Path(scenario_path) if scenario_path else builtin_path("brake-and-recover")
        if scenario_path and not path.exists() and builtin_path(scenario_path).exists():
            path = builtin_path(scenario_path)
        sc = load_scenario(path)
        with _progress() as bar:
            task = bar.add_task(f"simulating {sc.name}", total=sc.n_steps)
            return simulate(
                sc, backend=backend, progress=lambda d, _t: bar.update(task, completed=d)
            )
    except ScenarioError as exc:
        raise BadInputError(str(exc)) from None


def _output_dir(path: str, option: str, given: str | None = None) -> Path:
    """The output folder ``path``, created now, before any work, so that a path that cannot
    be written stops the command at once instead of after its run (whose results would be
    lost). ``given``: the option's value when ``path`` is its folder.

    Raises:
        BadInputError: naming the option and why the folder cannot be made or written.
    """
    from convoy.sim.paths import folder_problem

    p = Path(path)
    what = f"{option} {given}: its folder {path}" if given else f"{option} {path}"
    problem = folder_problem(p)
    if problem:
        raise BadInputError(
            f"{what}: {problem}; allowed: a folder that exists or can be created, and that "
            "you can write to"
        )
    p.mkdir(parents=True, exist_ok=True)
    return p


def _output_file(path: str | None, option: str) -> None:
    """Check now, before any work, that the output file ``path`` can be written: not a
    folder, in a folder that exists (or is created now) and is writable.

    Raises:
        BadInputError: naming the option and what is wrong with the path.
    """
    if path is None:
        return
    if Path(path).is_dir():
        raise BadInputError(f"{option} {path}: is a folder; allowed: a file path")
    _output_dir(str(Path(path).parent), option, path)


def cmd_sim(args: argparse.Namespace) -> int:
    """Run a microscopic experiment and write its FCD."""
    from convoy.sim.fcd import write_fcd
    from convoy.sim.report import summarize, summary_table

    for path, option in (
        (args.fcd, "--fcd"),
        (args.events, "--events"),
        (args.summary, "--summary"),
    ):
        _output_file(path, option)
    t0 = time.perf_counter()
    res = _simulate(args.scenario, args.backend)
    wall = time.perf_counter() - t0
    if args.fcd:
        write_fcd(res.trace, args.fcd, grade=res.scenario.road.grade_pct / 100.0)
    if args.events:
        from convoy.sim.events import write_events

        write_events(res, args.events)
    summary = summarize(res)
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2))
    _out.print(summary_table(summary, wall))
    if args.fcd:
        _out.print(f"FCD written to [bold]{args.fcd}[/bold]")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: an operating day (default: the built-in Ordos day) and its outputs."""
    from rich.table import Table

    from convoy.cloud.day import DayError, load_day_config, run_day
    from convoy.cloud.day_report import write_day_outputs

    try:
        cfg = load_day_config(args.scenario, hours=args.hours, seed=args.seed)
    except DayError as exc:
        raise BadInputError(str(exc)) from None
    out = _output_dir(args.out, "--out")
    t0 = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("planning the day", total=1000)

        def show(stage: str, fraction: float) -> None:
            bar.update(task, description=stage, completed=round(1000 * fraction))

        day = run_day(cfg, show)
    paths = write_day_outputs(day, out)
    wall = time.perf_counter() - t0
    s = day.summary
    table = Table(
        title=f"Ordos day: {cfg.n_trucks} trucks, 1+{cfg.max_followers}, {cfg.hours:g} h",
        title_justify="left",
    )
    table.add_column("KPI")
    table.add_column("value", justify="right")
    rows = [
        ("tonnes delivered", _kpi(s["tonnes_t"], ",.0f", " t")),
        ("tonne-km", _kpi(s["tonne_km"], ",.0f")),
        (
            "truck-km",
            f"{_kpi(s['truck_km'], ',.0f', ' km')} (empty {_kpi(s['empty_km_share'], '.0%')})",
        ),
        ("energy per tonne-km", _kpi(s["energy_per_tonne_km_kwh"], ".3f", " kWh")),
        ("trucks per driver", _kpi(s["trucks_per_driver"], ".2f")),
        ("on-time share", _kpi(s["on_time_share"], ".0%")),
        ("takeovers per 1,000 km", _kpi(s["takeovers_per_1000_km"], ".2f")),
        ("minimal-risk manoeuvres", _kpi(s["minimal_risk_manoeuvres"], "d")),
        ("min time-to-collision", _kpi(s["min_ttc_s"], ".1f", " s")),
        ("hard brakes / collisions", f"{s['hard_brakes']} / {s['collisions']}"),
        ("cost per tonne-km, hybrid", _kpi(s["cost_per_tonne_km_cny"], ".3f", " CNY")),
        (
            "cost per tonne-km, solo diesel",
            _kpi(s["solo_diesel_cost_per_tonne_km_cny"], ".3f", " CNY"),
        ),
        ("wall time", f"{wall:.1f} s"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    _out.print(table)
    _out.print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _kpi(value: float | int | None, spec: str, unit: str = "") -> str:
    """A KPI for the table, or "–" where the day gives none (no tonne-km in a short day,
    no truck ever closing in on another)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:{spec}}{unit}"


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the cloud service until interrupted."""
    from convoy.service.app import serve_main

    return serve_main(args.host, args.port, args.settings)


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmarks that run the peer side by side and print the ratio."""
    from convoy.sim.bench import BenchError, bench_sim

    if args.what == "network":
        return _bench_network(args)
    if args.what != "sim":
        raise BadInputError(f"bench {args.what!r}: unknown benchmark; allowed: sim, network")
    sizes = _integers(args.trucks, "--trucks", [1_000, 10_000, 100_000])
    from convoy.sim.engine import get_backend
    from convoy.sim.scenario import ScenarioError

    try:
        get_backend(args.backend)
    except ScenarioError as exc:  # an unknown name, listed with the valid ones
        raise BadInputError(f"--backend: {exc}") from None
    _output_file(args.json, "--json")
    try:
        results = bench_sim(sizes, sumo=not args.no_sumo, console=_out, backend=args.backend)
    except BenchError as exc:
        raise BadInputError(str(exc)) from None
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _integers(text: str | None, option: str, default: list[int]) -> list[int]:
    """A comma-separated list of integers given as ``option`` (``default`` if not given).

    Raises:
        BadInputError: for anything but integers.
    """
    if not text:
        return default
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise BadInputError(f"{option} {text!r}: give comma-separated integers") from None


def _bench_network(args: argparse.Namespace) -> int:
    """``convoy bench network``: the network engine and SUMO on the same network and trucks."""
    from convoy.sim.bench_network import NetBenchError, bench_network

    sizes = _integers(args.trucks, "--trucks", [1_000, 10_000])
    lanes = _integers(args.lanes, "--lanes", [])
    if args.backend != "cpu":
        raise BadInputError(f"--backend {args.backend}: bench network has one; allowed: cpu")
    _output_file(args.json, "--json")
    try:
        results = bench_network(sizes, lanes, sumo=not args.no_sumo, console=_out)
    except NetBenchError as exc:
        raise BadInputError(str(exc)) from None
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    """Summarise the built-in Ordos network and write it as GeoJSON and/or a PNG map."""
    from rich.table import Table

    from convoy.road.geojson import write_geojson
    from convoy.road.mapplot import network_summary, plot_network
    from convoy.road.ordos import ordos_network

    def writable(flag: str, value: str | None) -> Path | None:
        if not value:
            return None
        path = Path(value)
        if path.is_dir():
            raise BadInputError(f"{flag} {value}: is a directory; give a file name")
        if not path.parent.is_dir():
            raise BadInputError(f"{flag} {value}: directory {str(path.parent)!r} does not exist")
        return path

    geojson, png = writable("--geojson", args.geojson), writable("--png", args.png)
    net = ordos_network()
    s = network_summary(net)

    table = Table(title=f"{s.name.capitalize()} network", title_justify="left")
    table.add_column("item")
    table.add_column("value", justify="right")
    for kind, n in s.sites_by_kind.items():
        table.add_row(f"sites: {kind.replace('_', ' ')}", str(n))
    table.add_row("[bold]sites[/bold]", f"[bold]{sum(s.sites_by_kind.values())}[/bold]")
    for cls, km in s.km_by_class.items():
        table.add_row(f"road: {cls}", f"{km:,.1f} km")
    table.add_row("[bold]road (two-way counted once)[/bold]", f"[bold]{s.road_km:,.1f} km[/bold]")
    table.add_row("nodes / directed edges", f"{s.nodes} / {s.edges}")
    table.add_row("roadside units", str(s.rsus))
    table.add_row("elevation", f"{s.elevation_min_m:,.0f}-{s.elevation_max_m:,.0f} m")
    table.add_row("steepest grade", f"{s.max_grade:.1%}")
    _out.print(table)

    for flag, path in (("--geojson", geojson), ("--png", png)):
        if path is None:
            continue
        try:
            if flag == "--png":
                plot_network(net, path)
            else:
                write_geojson(net, path)
        except OSError as exc:
            raise BadInputError(f"{flag} {path}: cannot write: {exc.strerror or exc}") from None
        _out.print(f"{'map' if flag == '--png' else 'GeoJSON'} written to [bold]{path}[/bold]")
    return 0


_FORWARDED = {
    "validate": ("convoy.sim.validation", "validate_main"),
    "vehicle-agent": ("convoy.service.mqtt.agent", "main_agent"),
    "mqtt-acl": ("convoy.service.mqtt.acl", "main_acl"),
}


def _forward(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """A sub-command whose own parser lives in ``module.function(argv)``."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), function)(args.args))

    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all sub-commands."""
    p = argparse.ArgumentParser(
        prog="convoy",
        description="convoy: hybrid-intelligence heavy-truck platoons, from vehicle to cloud.",
    )
    p.add_argument("--version", action="version", version=f"convoy {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="the main job: an operating day (default: the built-in Ordos day)"
    )
    run.add_argument(
        "scenario", nargs="?", help="day settings YAML (default: the built-in Ordos day)"
    )
    run.add_argument("--out", default="out", help="output directory (default: out)")
    run.add_argument("--hours", type=float, help="simulated hours from midnight (default 24)")
    run.add_argument("--seed", type=int, help="random seed (default 0)")
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser("sim", help="run a microscopic platoon experiment")
    sim.add_argument("scenario", help="scenario YAML file, or the name of a built-in one")
    sim.add_argument(
        "--fcd", help="write floating-car data (.csv, .parquet, or .xml: SUMO's FCD format)"
    )
    sim.add_argument("--events", help="write the event log as JSON lines")
    sim.add_argument("--summary", help="write per-truck statistics as JSON")
    sim.add_argument("--backend", default="cpu", help="engine backend (default: cpu)")
    sim.set_defaults(func=cmd_sim)

    bench = sub.add_parser("bench", help="benchmarks against the peer (SUMO)")
    bench.add_argument("what", choices=["sim", "network"], help="which benchmark")
    bench.add_argument(
        "--trucks",
        help="comma-separated fleet sizes (default 1000,10000,100000; network: 1000,10000)",
    )
    bench.add_argument(
        "--lanes", default="1,2", help="network: comma-separated lanes per direction (default 1,2)"
    )
    bench.add_argument("--no-sumo", action="store_true", help="skip the SUMO side")
    bench.add_argument(
        "--backend",
        default="cpu",
        help="engine backend to time (default cpu; cpu-general forces the general kernel)",
    )
    bench.add_argument("--json", help="also write the figures as JSON")
    bench.set_defaults(func=cmd_bench)

    val = sub.add_parser(
        "validate",
        help="safety validation: the scenario library by Monte Carlo or grid (--help for more)",
        add_help=False,
    )
    val.add_argument("args", nargs=argparse.REMAINDER)
    val.set_defaults(func=_forward("convoy.sim.validation", "validate_main"))

    serve = sub.add_parser(
        "serve", help="the cloud service: HTTP API, live twin, dashboard, vehicle link"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--settings", help="settings file (YAML/JSON); CONVOY_* environment variables win"
    )
    serve.set_defaults(func=cmd_serve)

    agent = sub.add_parser(
        "vehicle-agent",
        help="simulated trucks publishing to an MQTT broker as real vehicles (--help for more)",
        add_help=False,
    )
    agent.add_argument("args", nargs=argparse.REMAINDER)
    agent.set_defaults(func=_forward("convoy.service.mqtt.agent", "main_agent"))

    acl = sub.add_parser(
        "mqtt-acl",
        help="per-vehicle MQTT credentials, Mosquitto password file and ACL (--help for more)",
        add_help=False,
    )
    acl.add_argument("args", nargs=argparse.REMAINDER)
    acl.set_defaults(func=_forward("convoy.service.mqtt.acl", "main_acl"))

    map_ = sub.add_parser("map", help="the built-in Ordos network: summary, GeoJSON, PNG map")
    map_.add_argument("--geojson", metavar="OUT", help="write the network as GeoJSON")
    map_.add_argument("--png", metavar="OUT", help="draw the network to a PNG")
    map_.set_defaults(func=cmd_map)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``convoy`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in _FORWARDED:  # these parse their own options
            module, function = _FORWARDED[argv[0]]
            import importlib

            return int(getattr(importlib.import_module(module), function)(argv[1:]))
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except BadInputError as exc:
        _err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except OSError as exc:
        # a path given on the command line that cannot be read or written (an --out that is
        # a file, a folder without write permission, a full disk): one line, not a traceback
        where = f": {exc.filename}" if exc.filename is not None else ""
        _err.print(
            f"[red]error:[/red] {exc.strerror or exc}{where}", highlight=False, soft_wrap=True
        )
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
