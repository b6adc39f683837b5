"""Safety validation: known outcomes of the scenario library, reproducibility, replay."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pytest

from convoy.sim.batch import run_inputs, stack_instances
from convoy.sim.engine import (
    KernelInputs,
    build,
    padded_profile,
    run_stacked,
    scenario_inputs,
    simulate,
    simulate_many,
)
from convoy.sim.kernel import CHUNK, ENV_ENERGY, ENV_METRICS_FROM_S
from convoy.sim.scenario import parse_scenario
from convoy.sim.validation import (
    LIBRARY,
    METRIC_NAMES,
    RAY_LOCAL_WORKERS,
    WARMUP_S,
    Criteria,
    ValidationError,
    brake_profile,
    brake_profiles,
    derive_seed,
    derive_seeds,
    get_template,
    group_metrics,
    instance,
    instance_count,
    load_criteria,
    net_instance_traces,
    replay_metrics,
    round_us,
    run_chunk,
    run_metrics,
    sample_params,
    summary_lines,
    validate,
    validate_main,
    window_metrics,
)

V_MPS = 22.0


def _lead_brake(**p: float) -> dict[str, float]:
    tpl = get_template("lead-emergency-brake")
    row = [p[r.name] for r in tpl.ranges]
    return run_metrics(simulate(instance(tpl, row, 0, 0)), tpl.warmup_s)


def _acc_platoon(time_gap_s: float, sensor_delay_s: float, end_speed_mps: float):  # type: ignore[no-untyped-def]
    sc = parse_scenario(
        {
            "name": "acc-short-gap",
            "duration_s": 50.0,
            "truck": {"max_decel_mps2": 6.0, "emergency_decel_mps2": 8.0},
            "platoon": {
                "trucks": 5,
                "controller": {
                    "model": "acc",
                    "time_gap_s": time_gap_s,
                    "sensor_delay_s": sensor_delay_s,
                    "actuator_lag_s": 0.5,
                },
                "initial": {"speed_mps": V_MPS, "gap_m": 2.5 + time_gap_s * V_MPS},
            },
            "leader": {"speed_profile": brake_profile(V_MPS, end_speed_mps, 6.0, 10.0)},
            # ACC reads radar only: no beacons, so no start-up fallback and no warm-up
        }
    )
    return simulate(sc)


def test_brake_profile_follows_a_lagged_brake_to_the_end_speed() -> None:
    # a(t) = 6 (1 - exp(-t/0.5)) reaches 95 % of 6 m/s² after 3 tau = 1.5 s; the profile
    # ends at 12 m/s after (22-12)/6 s plus about tau of build-up
    prof = np.array(brake_profile(22.0, 12.0, 6.0, 10.0))
    assert prof[1].tolist() == [10.0, 22.0]
    assert prof[-1, 1] == 12.0
    decel = -np.diff(prof[1:, 1]) / np.diff(prof[1:, 0])
    assert decel.max() <= 6.0 + 1e-9
    assert decel[:-1].max() > 5.5
    assert (22.0 - 12.0) / 6.0 < prof[-1, 0] - 10.0 < (22.0 - 12.0) / 6.0 + 0.7


def test_brake_profile_is_the_lagged_recurrence_sampled_every_step() -> None:
    # The definition written out in Python: the lag closes 1 - exp(-dt/tau) of the gap to the
    # commanded deceleration each step, the speed stops at the end speed, and the sample
    # times are start + k dt rounded to the microsecond. brake_profile computes it compiled,
    # with the times from a cache, and must give the same floats for any parameters.
    rng = np.random.default_rng(7)
    for _ in range(300):
        v0 = float(rng.uniform(5.0, 25.0))
        end = float(rng.choice([0.0, rng.uniform(0.0, 30.0)]))
        dec = float(rng.choice([0.0, rng.uniform(0.3, 8.0)]))
        start = float(rng.choice([10.0, 50.0, rng.uniform(0.0, 300.0)]))
        alpha = 1.0 - math.exp(-0.1 / 0.5)
        want = [[0.0, v0], [start, v0]]
        a, v = 0.0, v0
        while end < v0 and dec > 0.0 and v > end:
            a += alpha * (dec - a)
            v = max(end, v - a * 0.1)
            want.append([round(start + (len(want) - 1) * 0.1, 6), v])
        assert brake_profile(v0, end, dec, start) == want


def test_round_us_is_pythons_round_to_six_digits() -> None:
    # Vectorised rounding must pick Python's float for every value, also where the value
    # times 10^6 lies within rounding of a half (those go to Python's round).
    rng = np.random.default_rng(3)
    halves = (rng.integers(0, 10**9, 5000) + 0.5) / 1e6  # products at n + 0.5 (± rounding)
    x = np.concatenate([rng.uniform(0.0, 400.0, 20000), halves, halves + 1e-13, [0.0, 1e-7]])
    assert round_us(x).tolist() == [round(v, 6) for v in x.tolist()]


def test_ploeg_with_200ms_latency_survives_a_6mps2_lead_brake() -> None:
    # Ploeg CACC feeds the predecessor's commanded acceleration forward, so the follower
    # starts braking one latency (0.2 s) after the head, not after a gap error has built up;
    # with h = 0.5 s (13.5 m at 22 m/s) that leaves metres to spare when the head brakes at
    # 6 m/s² from 22 to 12 m/s, and the disturbance is not amplified down the string.
    m = _lead_brake(brake_decel_mps2=6.0, end_speed_mps=12.0, time_gap_s=0.5, latency_s=0.2)
    assert m["collided"] == 0.0
    assert m["min_gap_m"] > 3.0
    assert m["min_ttc_s"] > 1.0
    assert m["string_index"] < 1.1


def test_ploeg_full_stop_at_6mps2_with_200ms_latency_hits_the_head() -> None:
    # What the models say beyond the claim: a full STOP from 22 m/s at 6 m/s² is not
    # survived.  The first follower reacts after 0.2 s latency + up to 0.1 s beacon period +
    # the 0.5 s actuator lag; the Ploeg law is clamped at max_decel (6 m/s², the head's own
    # rate), so it never wins back the speed lost during that delay, and the 1 s-TTC
    # emergency brake (8 m/s², lagged too) comes too late for a 13.5 m gap.  It is the FIRST
    # follower that hits while the rear stays clear: delay plus saturation, not string
    # instability.  Give the law braking authority above the head's rate (8 m/s²) and cut
    # the latency to 0.1 s, and the same stop is survived.
    tpl = get_template("lead-emergency-brake")
    sc = instance(tpl, [6.0, 0.0, 0.5, 0.2], 0, 0)
    res = simulate(sc)
    assert run_metrics(res, tpl.warmup_s)["collided"] == 1.0
    assert res.state.min_gap_m[1] < 0.0 < res.state.min_gap_m[2:].min()
    data = sc.model_dump(mode="json")
    data["truck"]["max_decel_mps2"] = 8.0
    data["channel"]["latency_s"] = 0.1
    ok = run_metrics(simulate(parse_scenario(data)), tpl.warmup_s)
    assert ok["collided"] == 0.0


def test_string_unstable_acc_at_a_short_gap_collides_at_the_tail() -> None:
    # ACC with h = 0.8 s, sensor delay 0.3 s and actuator lag 0.5 s breaks Xiao, Darbha &
    # Gao's condition h > 2(delay + lag) = 1.6 s, so each truck brakes harder than the one
    # ahead.  Same event as the Ploeg test (6 m/s² from 22 to 12 m/s) and a larger gap
    # (20.1 m against 13.5 m), yet the amplification makes the rear trucks collide while
    # the first follower keeps its distance.
    h, delay, lag = 0.8, 0.3, 0.5
    assert h < 2 * (delay + lag)
    res = _acc_platoon(h, delay, 12.0)
    min_gap = res.state.min_gap_m
    assert min_gap[1] > 2.0  # the first follower survives
    assert (min_gap[2:] < 0.0).all()  # every truck behind it hits the one ahead
    m = run_metrics(res)
    assert m["collided"] == 1.0
    assert m["string_index"] > 1.2  # followers brake harder than the head: amplification


def test_dust_storm_acc_collides_below_the_string_stability_time_gap_only() -> None:
    # The dust scenario's ACC has sensor delay 0.2 s and lag 0.5 s, so Xiao, Darbha & Gao's
    # condition asks for h > 2(0.2 + 0.5) = 1.4 s.  Braking for the storm's speed limit at
    # 22 m/s with 40 m visibility, h = 0.6 s lets the slow-down grow down the string into
    # collisions; h = 1.5 s gets through.  (The criterion is for the linear law; SUMO's ACC
    # is close enough here, but its string index stays above 1 at h = 1.5 s: the gain
    # shrinks, it is not removed.)
    tpl = get_template("dust-sensor-degradation")
    short = run_metrics(simulate(instance(tpl, [40.0, 22.0, 0.6], 0, 0)))
    long_ = run_metrics(simulate(instance(tpl, [40.0, 22.0, 1.5], 0, 0)))
    assert short["collided"] == 1.0
    assert long_["collided"] == 0.0 and long_["min_gap_m"] > 1.0
    assert short["string_index"] > long_["string_index"] > 1.0


def test_criteria_file_overrides_the_defaults(tmp_path: Path) -> None:
    good = tmp_path / "c.yaml"
    good.write_text("ice-low-friction: {min_gap_m: 3.0, allow_collision: true}\n")
    crit = load_criteria(str(good))
    assert crit["ice-low-friction"] == Criteria(min_gap_m=3.0, allow_collision=True)
    bad = tmp_path / "b.yaml"
    bad.write_text("ice-low-friction: {min_gap: 3.0}\n")
    with pytest.raises(ValidationError, match=r"'min_gap'.*allowed fields"):
        load_criteria(str(bad))
    # a limit that is not a number (or a flag that is not true/false) is refused by its name
    # when the file is read, not found by a comparison after the runs
    for text, needle in (
        ("{min_gap_m: abc}", r"ice-low-friction.min_gap_m = 'abc': allowed: a number"),
        ("{max_decel_mps2: true}", r"max_decel_mps2 = True: allowed: a number"),
        ("{allow_collision: 1}", r"allow_collision = 1: allowed: true or false"),
    ):
        bad.write_text(f"ice-low-friction: {text}\n")
        with pytest.raises(ValidationError, match=needle):
            load_criteria(str(bad))
    bad.write_text("ice-low-friction: {min_gap_m: 2, max_string_index: .inf}\n")
    assert load_criteria(str(bad))["ice-low-friction"].max_string_index == math.inf


def test_no_start_up_transient_with_latency() -> None:
    # the engine starts a formed platoon with a beacon of its predecessor already received
    # (stamped t = 0), so even with 0.3 s latency nobody starts in ACC fallback: the platoon
    # cruises at 22 m/s from the first step, and after WARMUP_S too
    tpl = get_template("lead-emergency-brake")
    tr = simulate(instance(tpl, [2.0, 22.0, 0.3, 0.3], 0, 0)).trace
    after = tr.time_s >= tpl.warmup_s
    assert tpl.warmup_s == WARMUP_S
    assert np.abs(tr.speed_mps[after] - 22.0).max() < 0.1
    assert np.abs(tr.speed_mps[~after] - 22.0).max() < 1e-6


def test_metrics_on_a_steady_platoon_are_the_trivial_ones() -> None:
    # a platoon cruising at its equilibrium gap: nobody closes in, nobody brakes, DRAC 0,
    # the head drives 22 m/s × 30 s = 0.66 km
    sc = parse_scenario(
        {
            "duration_s": 30.0,
            "platoon": {
                "trucks": 3,
                "controller": {"model": "cacc-ploeg", "actuator_lag_s": 0.5},
                "initial": {"speed_mps": 22.0, "gap_m": 2.5 + 0.5 * 22.0},
            },
        }
    )
    m = run_metrics(simulate(sc))
    assert m["collided"] == 0.0
    assert m["min_gap_m"] == pytest.approx(13.5, abs=0.05)
    assert m["drac_mps2"] < 1e-6
    assert m["max_decel_mps2"] < 1e-6
    assert m["platoon_km"] == pytest.approx(0.66, abs=1e-6)
    assert m["string_index"] < 1e-3  # no head manoeuvre amplified (floor 0.1 m/s²)


def test_criteria_name_each_broken_limit() -> None:
    m = dict.fromkeys(METRIC_NAMES, 0.0)
    m.update(min_gap_m=5.0, min_ttc_s=3.0, drac_mps2=1.0, string_index=0.9)
    assert Criteria().failures(m) == []
    m.update(collided=1.0, min_gap_m=0.2, drac_mps2=9.0)
    assert Criteria().failures(m) == ["collision", "min_gap_m", "drac_mps2"]
    assert Criteria(allow_collision=True, min_gap_m=0.0).failures(m) == ["drac_mps2"]
    calm = {**m, "collided": 0.0, "min_gap_m": 5.0, "drac_mps2": 1.0}
    assert Criteria(max_string_index=0.5).failures(calm) == ["string_index"]


def test_every_library_scenario_builds_at_its_range_corners() -> None:
    assert len(LIBRARY) == 11
    for tpl in LIBRARY.values():
        rows = sample_params(tpl, 2 ** len(tpl.ranges), 0, grid=True)
        assert rows.shape == (2 ** len(tpl.ranges), len(tpl.ranges))
        for r, col in zip(tpl.ranges, rows.T, strict=True):
            assert set(np.unique(col)) == {r.low, r.high}
        corners = rows[[0, len(rows) - 1]]
        if tpl.net is not None:
            # the network engine's scenarios build and run their instances as one batch
            traces = net_instance_traces(tpl, corners, 7, 0)
            assert len(traces) == 2 and all(t.truck.sum() == 5 for t in traces)
            with pytest.raises(ValidationError, match="runs on the network engine"):
                instance(tpl, rows[0], 7, 0)
            continue
        for i in (0, len(rows) - 1):
            sc = instance(tpl, rows[i], 7, i)
            assert sc.name == f"{tpl.name}[{i}]"


def test_sampling_is_seeded_and_chunking_does_not_change_results() -> None:
    tpl = get_template("human-lead-late-reaction")
    a = sample_params(tpl, 6, 3, grid=False)
    assert np.array_equal(a, sample_params(tpl, 6, 3, grid=False))
    assert not np.array_equal(a, sample_params(tpl, 6, 4, grid=False))
    lo = np.array([r.low for r in tpl.ranges])
    hi = np.array([r.high for r in tpl.ranges])
    assert ((a >= lo) & (a <= hi)).all()
    whole = run_chunk(tpl.name, a, 0, 3)
    split = np.concatenate([run_chunk(tpl.name, a[:2], 0, 3), run_chunk(tpl.name, a[2:], 2, 3)])
    assert np.array_equal(whole, split)


def test_worst_case_written_out_replays_to_the_same_metrics(tmp_path: Path) -> None:
    code = validate_main(
        ["--scenario", "lead-emergency-brake", "--samples", "4", "--seed", "5",
         "--out", str(tmp_path), "--worst", "2"]
    )  # fmt: skip
    assert code == 0
    run = validate(["lead-emergency-brake"], samples=4, seed=5)
    o = run.outcomes[0]
    worst = o.worst(2)
    for rank, i in enumerate(worst):
        path = tmp_path / "worst" / f"lead-emergency-brake-worst{rank + 1}.yaml"
        replay = replay_metrics(path)
        for k, name in enumerate(METRIC_NAMES):
            assert replay[name] == o.metrics[i, k] or (
                math.isnan(replay[name]) and math.isnan(o.metrics[i, k])
            )
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "lead-emergency-brake" in html and html.count("data:image/png;base64") >= 4


def test_list_shows_every_scenario_with_its_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    assert validate_main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "brake_decel_mps2: 2 .. 8" in out
    assert all(name in out for name in LIBRARY)


def test_bad_input_gets_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert validate_main(["--scenario", "nope", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "lead-emergency-brake" in err
    with pytest.raises(ValidationError, match="--samples = 0"):
        validate(samples=0)
    with pytest.raises(ValidationError, match="--seed = -1: allowed: 0 or more"):
        validate(["cacc-brake-batched"], samples=1, seed=-1)
    assert validate_main(["--worst", "-1", "--no-report"]) == 2
    assert "--worst = -1: allowed: 0 or more" in capsys.readouterr().err
    # a run too big for this machine's memory is refused before it samples anything (it
    # used to fail allocating its parameter table, with a traceback), also as a grid
    with pytest.raises(ValidationError, match=r"--samples = 100000000000 .* GiB.*allowed: about"):
        validate(["cacc-brake-batched"], samples=10**11)
    with pytest.raises(ValidationError, match=r"\(grid\) .* GiB"):
        validate(["lead-emergency-brake"], samples=10**11, grid=True)
    # the count the check uses is the count sampling makes
    tpl = get_template("lead-emergency-brake")
    for n, grid in ((7, False), (100, True), (3, True)):
        assert instance_count(tpl, n, grid) == len(sample_params(tpl, n, 0, grid))


def test_batched_scenario_runs_along_the_batch_axis_exactly_as_single_runs() -> None:
    # run_batch's CPU path advances every instance with the fast step's own block function,
    # so each instance is, bit for bit, its own simulate() run; JAX in float64 agrees to
    # round-off.  The batch path keeps no trace: DRAC and the string index are NaN there.
    tpl = get_template("cacc-brake-batched")
    rows = sample_params(tpl, 5, 2, grid=False)
    batch = run_chunk(tpl.name, rows, 0, 2)
    shared = [METRIC_NAMES.index(k) for k in
              ("collided", "min_gap_m", "min_ttc_s", "max_decel_mps2", "platoon_km")]  # fmt: skip
    for j, row in enumerate(rows):
        m = run_metrics(simulate(instance(tpl, row, 2, j)))
        assert [m[METRIC_NAMES[k]] for k in shared] == batch[j, shared].tolist()
    assert np.isnan(batch[:, METRIC_NAMES.index("drac_mps2")]).all()
    import jax  # noqa: F401  (a dev dependency; missing means a broken set-up)

    on_jax = run_chunk(tpl.name, rows, 0, 2, backend="jax")
    np.testing.assert_allclose(on_jax[:, shared], batch[:, shared], rtol=1e-9, atol=1e-9)


def test_a_batched_chunk_built_as_arrays_is_its_instances_built_one_by_one() -> None:
    # cacc-brake-batched builds a chunk's arrays from the parameter rows (one scenario, the
    # rest by array operations) instead of one scenario per instance: every array must be
    # the one-by-one build's to the last bit, at the ranges' corners (a brake limit below
    # and above the 4 m/s² floor, a full stop and the highest end speed) and at random rows,
    # away from index 0 and with another run seed.
    tpl = get_template("cacc-brake-batched")
    assert tpl.arrays is not None
    lo = [r.low for r in tpl.ranges]
    hi = [r.high for r in tpl.ranges]
    corners = np.array([lo, hi, [lo[0], hi[1], lo[2]], [hi[0], lo[1], hi[2]], [4.0, 8.0, 0.6]])
    rows = np.concatenate([corners, sample_params(tpl, 40, 5, grid=False)])
    fast = tpl.arrays(rows, 5, 17)
    slow = stack_instances([instance(tpl, row, 5, 17 + j) for j, row in enumerate(rows)])
    for f in dataclasses.fields(fast):
        a, b = getattr(fast, f.name), getattr(slow, f.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape, f.name
            assert np.array_equal(a, b, equal_nan=True), f.name
        elif f.name != "table":
            assert a == b, f.name
    # the parameters did change the arrays: the profiles end at each row's own time
    assert len(set(fast.prof_len.tolist())) > 10


def _general_rows(name: str, n_random: int) -> np.ndarray:
    """Rows of 1-D entry ``name``: every corner of its ranges, values on the edges of its
    own rounding and choices, and random rows."""
    tpl = get_template(name)
    lo = np.array([r.low for r in tpl.ranges])
    hi = np.array([r.high for r in tpl.ranges])
    corners = np.array(
        [np.where([(c >> k) & 1 for k in range(len(lo))], hi, lo) for c in range(2 ** len(lo))]
    )
    edges = {
        # a latency of 0.25 s lies on a step's half (round half to even: 2 steps)
        "lead-emergency-brake": [[6.0, 8.0, 0.6, 0.25], [5.9, 0.0, 0.3, 0.05]],
        "v2v-loss-latency": [[0.0, 0.25, 3.0], [0.0, 0.04, 2.0], [0.1, 0.0, 2.0]],
        "rsu-hazard-warning": [[100.0, 10.0, 20.0], [99.9, 10.0, 20.0]],
        "takeover-timeout": [[20.0, 20.0, 3.0], [20.1, 20.0, 3.0]],
        # room = obstacle - 22·reaction at zero and below
        "human-lead-late-reaction": [[2.5, 55.0], [2.5, 60.0], [0.5, 11.0]],
        "mixed-human-late-reaction": [[1.25, 1.0, 5.0, 1.5], [0.55, 1.0, 5.0, 3.49]],
    }.get(name, [])
    rand = sample_params(tpl, n_random, 5, grid=False)
    return np.concatenate([corners, np.array(edges).reshape(-1, len(lo)), rand])


@pytest.mark.parametrize(
    "name",
    [
        "lead-emergency-brake",
        "v2v-loss-latency",
        "dust-sensor-degradation",
        "ice-low-friction",
        "loaded-downgrade",
        "rsu-hazard-warning",
        "takeover-timeout",
        "human-lead-late-reaction",
        "mixed-human-late-reaction",
    ],
)
def test_a_general_chunk_built_as_arrays_is_its_instances_built_one_by_one(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 1-D entry builds a chunk as the general kernel's arrays (one scenario per part of
    # rows of one shape, the rest by array operations) instead of one scenario per
    # instance: every array of every instance must be its own build's to the last bit, at
    # every corner of the ranges, on the edges of the template's rounding and choices (a
    # latency on a step's half, an answered and an unanswered takeover, an RSU at 100 m and
    # none, no room to brake) and at random rows, away from index 0 and with another seed.
    # The profiles are each instance's own, padded to the part's longest (engine.padded_
    # profile, which gives the same speed at every time), and so is the history ring buffer
    # (read only where written). The runs then give the metrics of the one-by-one path, to
    # the last bit: with latencies and delays of several lengths in one part where the
    # template has them.
    tpl = get_template(name)
    assert tpl.inputs is not None
    rows = _general_rows(name, 24)
    parts = tpl.inputs(rows, 5, 17)
    seen = np.concatenate([idx for idx, _ in parts])
    assert sorted(seen.tolist()) == list(range(len(rows)))
    profiles = set()
    histories = set()
    for idx, inp in parts:
        for k, j in enumerate(idx.tolist()):
            own = scenario_inputs(instance(tpl, rows[j], 5, 17 + j))
            assert own.fast_cacc == (not inp.arrays), j
            if not inp.arrays:
                continue
            assert (own.n_steps, own.rec_every, own.dt_s) == (inp.n_steps, inp.rec_every, inp.dt_s)
            p = inp.arrays["prof_t"].shape[1]
            want_t, want_v = padded_profile(own.arrays["prof_t"], own.arrays["prof_v"], p)
            profiles.add(own.arrays["prof_t"].shape[0])
            for key, want in own.arrays.items():
                got = inp.arrays[key][k]
                want = {"prof_t": want_t, "prof_v": want_v}.get(key, want)
                if key == "hist":  # as long as the part's longest, the extra slots the start
                    histories.add(want.shape[0])
                    extra = got.shape[0] - want.shape[0]
                    assert extra >= 0, j
                    want = np.concatenate([want, np.repeat(want[:1], extra, axis=0)])
                assert got.dtype == want.dtype and got.shape == want.shape, (key, j)
                assert np.array_equal(got, want, equal_nan=True), (key, j)
    if name in ("lead-emergency-brake", "v2v-loss-latency", "mixed-human-late-reaction"):
        assert len(histories) > 3 and len(parts) <= 5
    fast = run_chunk(name, rows, 17, 5)
    monkeypatch.setitem(LIBRARY, name, dataclasses.replace(tpl, inputs=None))
    slow = run_chunk(name, rows, 17, 5)
    assert np.array_equal(fast, slow, equal_nan=True)
    # the parameters did change the runs
    assert len({tuple(r) for r in fast.tolist()}) > len(rows) // 2


def test_the_metrics_folded_in_the_run_are_those_of_its_recorded_trace() -> None:
    # The arrays path records nothing: the kernel folds each sample of the metrics window
    # (the start and the state after each step, from env[ENV_METRICS_FROM_S] on) as it runs.
    # Here the same runs are also recorded, with the window starting anywhere from before
    # the start to past the head's brake and recovery, and the folded metrics must be those
    # of the recorded trace, bit for bit, for every start: a window one step too early or
    # too late changes the peak deceleration or the gaps of some of these (tried).
    tpl = get_template("lead-emergency-brake")
    one = scenario_inputs(instance(tpl, [5.0, 8.0, 0.6, 0.1], 3, 0))
    starts = np.concatenate([[-1.0, 0.0, 0.05], np.arange(0.1, 80.0, 0.7)])
    m = starts.size
    arrays = {k: np.repeat(x[None], m, axis=0) for k, x in one.arrays.items()}
    arrays["env"][:, ENV_METRICS_FROM_S] = starts
    run = run_stacked(KernelInputs(one.n_steps, 1, one.dt_s, arrays))
    folded = np.array([window_metrics(run, x)[j] for j, x in enumerate(starts.tolist())])
    recorded = np.array([group_metrics(run, x)[j] for j, x in enumerate(starts.tolist())])
    for j, from_s in enumerate(starts.tolist()):
        assert np.array_equal(folded[j], recorded[j], equal_nan=True), from_s
    # the windows differ: the peak deceleration falls as the window starts later
    decel = folded[:, METRIC_NAMES.index("max_decel_mps2")]
    assert len(set(decel.tolist())) > 20
    # a fleet of more than one block (kernel.CHUNK trucks): the blocks step in turn and the
    # samples are folded after each whole step (run_steps_py), to the same metrics
    sc = instance(tpl, [5.0, 8.0, 0.6, 0.1], 3, 0)
    big = sc.model_copy(
        update={
            "platoon": sc.platoon.model_copy(
                update={
                    "count": 210,
                    "initial": sc.platoon.initial.model_copy(update={"head_pos_m": 45_000.0}),
                }
            ),
            "duration_s": 45.0,
            "road": sc.road.model_copy(update={"length_m": 50_000.0}),
        }
    )
    fleet = scenario_inputs(parse_scenario(big.model_dump(), "big"))
    assert fleet.arrays["model"].shape[0] > CHUNK
    for from_s in (0.0, 41.3, 43.1, 43.9, 44.5):
        arrays = {k: x[None].copy() for k, x in fleet.arrays.items()}
        arrays["env"][:, ENV_METRICS_FROM_S] = from_s
        run = run_stacked(KernelInputs(fleet.n_steps, 1, fleet.dt_s, arrays))
        got, want = window_metrics(run, from_s), group_metrics(run, from_s)
        assert np.array_equal(got, want, equal_nan=True), from_s


def test_a_run_without_the_energy_is_the_same_run_to_the_bit() -> None:
    # Validation's chunks switch the energy off (env[ENV_ENERGY] = 0): no metric reads it,
    # and nothing in the step reads it back. So every other array a run leaves (the state,
    # the recordings, the folded metrics) must be the same to the bit, and the energy must
    # stay at 0, where with it on the trucks drew kWh. Entries with the grade and the
    # motor's traction limit, latency and V2V loss, a human driver and the ACC fallback;
    # with the energy read back anywhere (an energy-dependent limit) this fails.
    cases = {
        "loaded-downgrade": [-5.0, 49_000.0, 1.0],
        "v2v-loss-latency": [0.2, 0.05, 4.0],
        "mixed-human-late-reaction": [2.0, 1.2, 6.0, 2.0],
        "dust-sensor-degradation": [60.0, 18.0, 1.2],
    }
    for name, row in cases.items():
        tpl = get_template(name)
        assert len(row) == len(tpl.ranges), name
        one = scenario_inputs(instance(tpl, row, 5, 0))
        runs = []
        for on in (1.0, 0.0):
            arrays = {k: x[None].copy() for k, x in one.arrays.items()}
            arrays["env"][:, ENV_METRICS_FROM_S] = tpl.warmup_s
            arrays["env"][:, ENV_ENERGY] = on
            runs.append(run_stacked(KernelInputs(one.n_steps, 10, one.dt_s, arrays)))
        with_energy, without = runs
        # every truck drew (or, down the grade, regenerated) energy with it on
        assert with_energy.arg("energy").all(), name
        assert not without.arg("energy").any(), name
        assert not without.arg("rec_energy").any(), name
        skip = {id(with_energy.arg(k)) for k in ("energy", "rec_energy", "env")}
        compared = 0
        for k, (a, b) in enumerate(zip(with_energy.stacked, without.stacked, strict=True)):
            if id(a) not in skip:
                assert np.array_equal(a, b, equal_nan=True), (name, k)
                compared += 1
        assert compared > 50, name
        assert np.array_equal(with_energy.start, without.start), name
        assert np.array_equal(
            window_metrics(with_energy, tpl.warmup_s),
            window_metrics(without, tpl.warmup_s),
            equal_nan=True,
        ), name


def test_derive_seeds_is_numpys_seed_sequence_for_every_index() -> None:
    # the array form of derive_seed must give SeedSequence's own state for every index,
    # with run seeds of one, two and three 32-bit words (the third spills past the pool of
    # four) and indices up to and past 2^32 (those fall back to SeedSequence itself)
    idx = np.concatenate([np.arange(2000), [2**31, 2**32 - 1, 2**32, 2**40]])
    for seed in (0, 7, 2**32, 2**40 + 5, 2**64 + 3):
        got = derive_seeds(seed, "cacc-brake-batched", idx)
        want = [derive_seed(seed, "cacc-brake-batched", int(i)) for i in idx]
        assert got.tolist() == want
    assert len(set(derive_seeds(3, "a", np.arange(1000)).tolist())) == 1000


def test_brake_profiles_are_each_rows_brake_profile_padded() -> None:
    # The array form runs the scalar recurrence over all rows at once; a row that does not
    # brake (an end speed at or above the speed, or no deceleration) keeps its two points.
    end = np.array([0.0, 12.5, 22.0, 30.0, 5.0, 21.99])
    dec = np.array([8.0, 2.0, 3.0, 3.0, 0.0, 0.5])
    times, speeds, lengths = brake_profiles(22.0, end, dec, 10.0)
    longest = max(len(brake_profile(22.0, e, d, 10.0)) for e, d in zip(end, dec, strict=True))
    assert times.shape == speeds.shape == (6, longest)
    for j, (e, d) in enumerate(zip(end, dec, strict=True)):
        pts = np.array(brake_profile(22.0, e, d, 10.0))
        assert lengths[j] == len(pts)
        want_t, want_v = padded_profile(pts[:, 0], pts[:, 1], longest)
        assert np.array_equal(times[j], want_t) and np.array_equal(speeds[j], want_v)
    assert lengths.tolist()[2:5] == [2, 2, 2]


def test_the_batched_step_leaves_its_inputs_as_they_were() -> None:
    # run_inputs works on copies of the state, so the same inputs run twice give the same
    # outcome (a chunk is never half-advanced by an earlier call)
    tpl = get_template("cacc-brake-batched")
    assert tpl.arrays is not None
    x = tpl.arrays(sample_params(tpl, 6, 9, grid=False), 9, 0)
    before = {f.name: np.copy(getattr(x, f.name)) for f in dataclasses.fields(x)
              if isinstance(getattr(x, f.name), np.ndarray)}  # fmt: skip
    one, two = run_inputs(x), run_inputs(x)
    for name, arr in before.items():
        assert np.array_equal(arr, getattr(x, name), equal_nan=True), name
    assert np.array_equal(one.pos_m, two.pos_m) and np.array_equal(one.min_gap_m, two.min_gap_m)
    assert (one.pos_m[:, 0] > x.pos[:, 0, 0] + 220.0).all()  # 10 s at 22 m/s, then a brake


# Ray starts its processes by fork+exec (subprocess), which JAX's fork warning also flags
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_ray_run_equals_local_run() -> None:
    import ray

    try:
        local = validate(["human-lead-late-reaction"], samples=8, seed=11)
        calls: list[tuple[int, int]] = []
        remote = validate(
            ["human-lead-late-reaction"],
            samples=8,
            seed=11,
            ray_address="local",
            progress=lambda d, t: calls.append((d, t)),
        )
        assert calls == [(0, 8), (8, 8)]  # the start, then one chunk of 8 runs as it finished

        # the local Ray's workers share the cores out instead of each starting a Numba
        # thread per core (2 workers on this 2-core machine: one thread each)
        def numba_threads() -> str | None:
            return os.environ.get("NUMBA_NUM_THREADS")

        got = ray.get(ray.remote(numba_threads).remote())
        assert got == str(max(1, (os.cpu_count() or 1) // RAY_LOCAL_WORKERS))
        if not ray.cluster_resources().get("GPU", 0.0):
            # backend gpu over a cluster without a GPU: one line, not a task left pending
            # (the address is not dialled: the Ray started above is still connected)
            with pytest.raises(ValidationError, match="the Ray cluster has no GPU"):
                validate(["cacc-brake-batched"], samples=1, backend="gpu", ray_address="x:1")
    finally:
        ray.shutdown()
    assert np.array_equal(local.outcomes[0].params, remote.outcomes[0].params)
    assert np.array_equal(local.outcomes[0].metrics, remote.outcomes[0].metrics)
    # Starting a local Ray and its workers takes seconds: the run tells that part of its wall
    # time apart (a local run has none), and prints the rate without it above the usual line
    assert local.startup_s == 0.0 and local.km_per_hour_running == local.km_per_hour
    assert 0.5 < remote.startup_s < remote.wall_s
    assert remote.km_per_hour_running > remote.km_per_hour
    lines = summary_lines(remote)
    assert lines[-2].startswith(f"Ray's start-up took {remote.startup_s:.2f} s of them: ")
    assert lines[-1].endswith("platoon-km simulated per hour")
    assert not any("start-up" in line for line in summary_lines(local))


def test_gpu_backend_without_a_gpu_is_one_line_before_any_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # JAX on this machine sees no GPU (the test is skipped where it does): the library with
    # the batched scenario stops at once with exit 2 and one line naming what to install,
    # before any scenario runs (run_chunk would fail the test)
    import jax

    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("JAX sees a GPU here")

    def no_run(*_: object, **__: object) -> None:
        raise AssertionError("a scenario ran before the GPU check")

    monkeypatch.setattr("convoy.sim.validation.run_chunk", no_run)
    assert validate_main(["--backend", "gpu", "--samples", "2", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "needs a CUDA GPU visible to JAX" in err and "install JAX for CUDA 12" in err


def test_gpu_backend_says_when_the_general_scenarios_fall_back_to_the_cpu(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # CI has no GPU: the general 1-D entries then run on the CPU, and validate says so in
    # one line instead of letting --backend gpu pass unsaid (the results are the CPU's)
    assert validate_main(["--backend", "gpu", "--scenario", "takeover-timeout",
                          "--samples", "1", "--no-report"]) == 0  # fmt: skip
    out = capsys.readouterr()
    assert "Numba sees no CUDA GPU, so the general 1-D scenarios (takeover-timeout)" in out.err
    assert "takeover-timeout" in out.out


def test_ray_workers_only_with_a_local_ray(capsys: pytest.CaptureFixture[str]) -> None:
    assert validate_main(["--ray-workers", "2", "--no-report"]) == 2
    assert "--ray-workers = 2 with --ray = None" in capsys.readouterr().err
    with pytest.raises(ValidationError, match="--ray-workers = 0 with --ray = 'local'"):
        validate(samples=1, ray_address="local", ray_workers=0)
    with pytest.raises(ValidationError, match="ray start --num-cpus"):
        validate(samples=1, ray_address="10.0.0.1:6379", ray_workers=2)


def test_a_ray_address_where_nothing_listens_is_refused_at_once() -> None:
    # Ray retries an unreachable head for a minute or more; validate checks the address
    # first and stops in a moment with a line that names it
    import socket
    import time

    with socket.socket() as s:  # a loopback port that was free a moment ago: refused now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ValidationError, match=rf"--ray = '127.0.0.1:{port}': no Ray cluster"):
        validate(["cacc-brake-batched"], samples=1, ray_address=f"127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 10.0


def test_run_chunk_runs_the_1d_library_along_the_instance_axis_exactly() -> None:
    # A 1-D chunk is one call of the general kernel along its instance axis (instances of
    # equal shapes; profiles padded), parallel over instances on Numba's threads; each
    # instance's metrics are, bit for bit, those of its own simulate() run. The latency
    # drawn for lead-emergency-brake sets the history buffer's length, so its chunk holds
    # several shape groups; the caller's thread count is left as it was.
    import numba

    before = numba.get_num_threads()
    for name in ("lead-emergency-brake", "mixed-human-late-reaction"):
        tpl = get_template(name)
        rows = sample_params(tpl, 6, 8, grid=False)
        chunk = run_chunk(tpl.name, rows, 0, 8)
        assert numba.get_num_threads() == before
        for j, row in enumerate(rows):
            m = run_metrics(simulate(instance(tpl, row, 8, j)), tpl.warmup_s)
            assert [m[k] for k in METRIC_NAMES] == chunk[j].tolist()


def test_simulate_many_equals_simulate_to_the_last_bit() -> None:
    # Instances of three library scenarios (histories of several lengths, profiles of
    # several lengths, an RSU table) and one for the fast CACC step, interleaved: every
    # trace and every state array equals the scenario's own simulate() run, in order.
    scs = []
    for name in ("lead-emergency-brake", "rsu-hazard-warning", "human-lead-late-reaction"):
        tpl = get_template(name)
        scs += [instance(tpl, r, 3, j) for j, r in enumerate(sample_params(tpl, 4, 3, False))]
    fast = get_template("cacc-brake-batched")
    scs.insert(5, instance(fast, sample_params(fast, 1, 3, False)[0], 3, 0))
    many = simulate_many(scs)
    assert [r.scenario.name for r in many] == [sc.name for sc in scs]
    shapes = {build(sc)[1].hist.shape for sc in scs}
    assert len(shapes) > 1  # groups of different history lengths
    for sc, got in zip(scs, many, strict=True):
        ref = simulate(sc, backend="cpu", chunks=1)
        for f in ("time_s", "pos_m", "speed_mps", "accel_mps2", "gap_m", "mode", "energy_kwh",
                  "odd_flags", "spat_phase"):  # fmt: skip
            np.testing.assert_array_equal(getattr(got.trace, f), getattr(ref.trace, f), f)
        for f in dataclasses.fields(ref.state):
            np.testing.assert_array_equal(
                getattr(got.state, f.name), getattr(ref.state, f.name), f.name
            )


def test_compiled_metrics_follow_their_definitions_on_the_trace() -> None:
    # The metrics are computed in one compiled pass per run (batched over a chunk's runs);
    # here they are recomputed from the trace, plainly, by their definitions: over the
    # window after the warm-up, the least bumper gap of the followers, the least gap over
    # closing speed where they close in, the deepest deceleration, the largest DRAC
    # (closing² / 2 gap) and the followers' peak |a| over the head's; the head's km over
    # the whole run. In dust at the low corner of visibility, speed and time gap the
    # platoon collides (a negative gap, TTC 0), so no figure keeps its trivial value.
    tpl = get_template("dust-sensor-degradation")
    row = [r.low for r in tpl.ranges]
    res = simulate(instance(tpl, row, 0, 0))
    m = run_metrics(res, tpl.warmup_s)
    tr, table = res.trace, res.table
    w = tr.time_s >= tpl.warmup_s - 1e-9
    fol = table.position > 0
    gap = tr.gap_m[w][:, fol]
    closing = tr.speed_mps[w][:, fol] - tr.speed_mps[w][:, table.leader[fol]]
    closes = closing > 0.0
    acc = tr.accel_mps2[w]
    peak = np.abs(acc).max(axis=0)
    assert m["collided"] == 1.0
    assert m["min_gap_m"] == gap.min() < 0.0
    assert m["min_ttc_s"] == (np.maximum(gap, 0.0)[closes] / closing[closes]).min()
    assert m["max_decel_mps2"] == -acc.min() > 0.0
    ok = closes & (gap > 0.0)
    assert m["drac_mps2"] == (closing[ok] ** 2 / (2.0 * gap[ok])).max() > 0.0
    assert m["string_index"] == peak[fol].max() / max(peak[~fol].max(), 0.1)
    heads = table.position == 0
    assert m["platoon_km"] == (tr.pos_m[-1, heads] - tr.pos_m[0, heads]).sum() / 1000.0 > 0.1


def test_progress_counts_runs_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    # convoy validate's progress bar is fed at the start (the total known) and after every
    # chunk: 7 runs of a 1-D entry in chunks of 3 (3 + 3 + 1), then 7 of the car cut-in in
    # one network-engine chunk.
    import convoy.sim.validation as v

    monkeypatch.setattr(v, "CHUNK_INSTANCES_1D", 3)
    calls: list[tuple[int, int]] = []
    validate(
        ["lead-emergency-brake", "car-cut-in"],
        samples=7,
        seed=2,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(0, 14), (3, 14), (6, 14), (7, 14), (14, 14)]
