"""The command line as a person uses it: real subprocesses, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from convoy.sim.scenarios import builtin_names, builtin_path

CONVOY = [sys.executable, "-m", "convoy.cli"]
FCD_HEAD = ["time_s", "vehicle_id", "pos_m", "speed_mps", "accel_mps2", "gap_m"]


def _convoy(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONVOY, *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )


def test_sim_writes_fcd_csv(tmp_path: Path) -> None:
    out = tmp_path / "fcd.csv"
    r = _convoy("sim", str(builtin_path("brake-and-recover")), "--fcd", str(out))
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert lines[0].split(",")[:6] == FCD_HEAD
    # 2001 recorded times x 5 trucks + header
    assert len(lines) == 2001 * 5 + 1
    first = lines[1].split(",")
    assert first[1] == "p0.0" and float(first[2]) == 2000.0 and first[5] == ""
    second = lines[2].split(",")
    assert second[1] == "p0.1" and float(second[5]) == pytest.approx(25.0)


def test_sim_writes_parquet_by_suffix(tmp_path: Path) -> None:
    out = tmp_path / "fcd.parquet"
    r = _convoy("sim", "cold-day", "--fcd", str(out), "--summary", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    t = pq.read_table(out)
    assert t.column_names[:6] == FCD_HEAD
    assert t.num_rows == 2001 * 5
    gap = t.column("gap_m").to_numpy(zero_copy_only=False)
    assert np.isnan(gap[0]) and gap[1] == pytest.approx(25.0)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["collisions"] == 0 and summary["trucks"] == 5


def test_cold_day_costs_more_energy_than_a_mild_one(tmp_path: Path) -> None:
    cold = _convoy("sim", "cold-day", "--summary", str(tmp_path / "c.json"))
    mild = _convoy("sim", "brake-and-recover", "--summary", str(tmp_path / "m.json"))
    assert cold.returncode == mild.returncode == 0
    c = json.loads((tmp_path / "c.json").read_text())["energy_kwh_per_km"]
    m = json.loads((tmp_path / "m.json").read_text())["energy_kwh_per_km"]
    assert 1.15 < c / m < 1.4  # DESIGN.md: 15-40 % winter range loss


def test_downhill_loaded_regenerates(tmp_path: Path) -> None:
    r = _convoy("sim", "downhill-loaded", "--summary", str(tmp_path / "d.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "d.json").read_text())["energy_kwh"] < 0.0


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("name: x\nplatoon: {controller: {model: magic}}\n", "platoon.controller.model"),
        ("truck: {mass_kg: -49000}\n", "truck.mass_kg"),
        ("leader: {speed_profile: [[0, 22], [60, 22], [30, 12]]}\n", "leader.speed_profile"),
        ("platoon: {trucks: 5\n  count: [\n", "malformed YAML"),
        ("dt_s: 0.1\nduration_s: 10.05\n", "whole number of steps"),
        ("channel: {loss: 1.5}\n", "channel.loss"),
        ("trcuk: {}\n", "trcuk"),
        # a latency of 10^9 s asked for a 1.5 TiB history (a NumPy MemoryError)
        ("channel: {latency_s: 1.0e9}\n", "channel.latency_s = 1000000000.0"),
    ],
)
def test_bad_scenario_gets_one_clear_line_and_exit_2(
    tmp_path: Path, yaml_text: str, needle: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text)
    r = _convoy("sim", str(bad))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert needle in r.stderr
    assert r.stderr.strip().startswith("error:")


def test_missing_scenario_file() -> None:
    r = _convoy("sim", "/no/such/scenario.yaml")
    assert r.returncode == 2 and "no such scenario file" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_backend_is_bad_input() -> None:
    r = _convoy("sim", "brake-and-recover", "--backend", "warp")
    assert r.returncode == 2 and "valid backends: cpu" in r.stderr
    r = _convoy("bench", "sim", "--backend", "warp")
    assert r.returncode == 2 and "valid backends: cpu, cpu-general" in r.stderr
    assert "Traceback" not in r.stderr
    for what in ("sim", "network"):
        r = _convoy("bench", what, "--trucks", "abc", "--no-sumo")
        assert r.returncode == 2 and "give comma-separated integers" in r.stderr
        assert "Traceback" not in r.stderr
    # fleets the benchmarks cannot build are refused by size (the network bench used to start
    # building a ring of 10^11 trucks, the 1-D one to fail in the scenario's validation)
    for what, needle in (("sim", "from 5 to 50,000,000"), ("network", "1 to 1,000,000")):
        for size in ("0", "100000000000"):
            r = _convoy("bench", what, "--trucks", size, "--no-sumo")
            assert r.returncode == 2 and needle in r.stderr, r.stderr
            assert "Traceback" not in r.stderr


def test_general_backend_gives_the_same_run(tmp_path: Path) -> None:
    """cpu picks the fast CACC step for this scenario; cpu-general must agree to the bit."""
    outs = []
    for backend in ("cpu", "cpu-general"):
        out = tmp_path / f"{backend}.csv"
        r = _convoy("sim", "brake-and-recover", "--fcd", str(out), "--backend", backend)
        assert r.returncode == 0, r.stderr
        outs.append(out.read_text())
    assert outs[0] == outs[1]


def test_run_writes_the_main_job_outputs(tmp_path: Path) -> None:
    """``convoy run`` drives the built-in Ordos day (here its first 9 hours) and writes the
    four contract files; the summary's tonnes are the delivered loads, never more than the
    orders, and nobody collides."""
    r = _convoy("run", "--hours", "9", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    s = json.loads((out / "summary.json").read_text())
    assert s["collisions"] == 0
    assert 0 < s["tonnes_t"] <= s["tonnes_ordered"]
    assert s["platoon_format"] == "1+4" and s["fleet_trucks"] == 400
    assert s["cost_per_tonne_km_cny"] < s["solo_diesel_cost_per_tonne_km_cny"]
    assert (out / "fcd.parquet").read_bytes()[:4] == b"PAR1"
    first = json.loads((out / "events.jsonl").read_text().splitlines()[0])
    assert "t_s" in first and "type" in first
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6


def test_run_rejects_a_bad_day_file(tmp_path: Path) -> None:
    bad = tmp_path / "day.yaml"
    bad.write_text("hours: 30\n")
    r = _convoy("run", str(bad), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert "hours = 30.0" in r.stderr and "Traceback" not in r.stderr
    bad.write_text("trucks: 5\n")
    r = _convoy("run", str(bad), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "unknown setting 'trucks'" in r.stderr
    # a negative seed and a fleet far beyond any day were tracebacks or a hang
    for text, needle in (
        ("seed: -1\n", "seed = -1; allowed: 0 or more"),
        ("n_trucks: 100000000\n", "n_trucks = 100000000; allowed: 2 to 20,000"),
    ):
        bad.write_text(text)
        r = _convoy("run", str(bad), "--out", str(tmp_path / "out"))
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_a_day_too_short_to_deliver_shows_no_kpi_it_does_not_have(tmp_path: Path) -> None:
    # Half a second of the day: no tonne-km, no deliveries, nobody closing in. The table
    # shows "–" where a KPI is undefined (it raised formatting None) and the files are
    # written as for any day.
    day = tmp_path / "day.yaml"
    day.write_text("hours: 0.0001\n")
    r = _convoy("run", str(day), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in r.stdout.splitlines() if line.count("│") == 3}  # fmt: skip
    assert rows["tonnes delivered"] == "0 t"
    assert rows["on-time share"] == "–" and rows["cost per tonne-km, hybrid"] == "–"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["tonne_km"] == 0 and summary["on_time_share"] is None


def test_an_output_path_that_cannot_be_written_stops_the_command_before_it_runs(
    tmp_path: Path,
) -> None:
    # An output folder that is a file, or a file whose folder is a file, is found before the
    # work starts (the day, the runs, the benchmark), so no results are computed and then
    # lost: one line naming the option, exit 2, no traceback, nothing on stdout.
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (("run", "--out", str(a_file)), "--out"),
        (("sim", "brake-and-recover", "--fcd", str(a_file / "fcd.csv")), "--fcd"),
        (("sim", "brake-and-recover", "--summary", str(tmp_path)), "is a folder"),
        (("validate", "--scenario", "cacc-brake-batched", "--samples", "2", "--out", str(a_file)),
         "--out"),
        (("bench", "network", "--no-sumo", "--trucks", "10", "--json", str(a_file / "b.json")),
         "--json"),
    ]  # fmt: skip
    for args, needle in cases:
        r = _convoy(*args)
        assert r.returncode == 2, args
        assert needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stdout.strip() == "", (args, r.stdout)
    assert a_file.read_text() == "x"


def test_every_shipped_scenario_is_valid() -> None:
    from convoy.sim.scenario import load_scenario

    names = builtin_names()
    assert {
        "brake-and-recover",
        "sinusoidal-leader",
        "cut-off-v2v",
        "downhill-loaded",
        "cold-day",
    } <= set(names)
    for name in names:
        assert load_scenario(builtin_path(name)).name == name


def test_mqtt_acl_writes_hashed_per_vehicle_credentials(tmp_path: Path) -> None:
    r = _convoy("mqtt-acl", "--trucks", "2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "passwd").read_text().split()
    users = [line.split(":", 1)[0] for line in lines]
    assert {"T0001", "T0002"} <= set(users)
    assert all(line.split(":", 1)[1].startswith("$7$") for line in lines)
    assert "topic write convoy/v1/vehicles/T0001/" in (tmp_path / "acl").read_text()
