"""``car-cut-in``: a car forced into a platoon gap on the network engine.  Known outcomes
from hand kinematics, the batch axis against one-by-one runs, and replay files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from convoy.sim.validation import (
    METRIC_NAMES,
    ValidationError,
    derive_seed,
    get_template,
    net_metrics,
    replay_metrics,
    run_chunk,
    sample_params,
    validate,
    validate_main,
)
from convoy.sim.validation_net import CUT_IN_AT_S, CUT_IN_NAME, NetTrace, _resolve_leaders

V = 22.0
TRUCK_EMERGENCY_MPS2 = 7.5  # network.TRUCK_L4.emergency_decel_mps2
CAR_ACCEL_MPS2 = 2.6  # network.CAR.accel_mps2 (IDM's a)
DT_S = 0.1


def _run(**p: float) -> tuple[NetTrace, dict[str, float]]:
    """One instance: the car cuts in ahead of follower 2 of a platoon at tau = 2 s (46.5 m
    gaps, so the car keeps more than its own IDM gap of 24.5 m to the truck ahead and does
    not brake on its own)."""
    params = {"member": 2.0, "cut_in_gap_m": 5.0, "speed_deficit_mps": 0.0,
              "car_brake_mps2": 0.0, "car_brake_s": 2.0, "time_gap_s": 2.0, **p}  # fmt: skip
    tpl = get_template(CUT_IN_NAME)
    assert tpl.net is not None
    tr = tpl.net([params], 0)[0]
    return tr, net_metrics(tr)


def _after(tr: NetTrace) -> np.ndarray:
    return tr.time_s > CUT_IN_AT_S + 1e-9


def test_car_braking_moderately_5m_ahead_at_the_same_speed_is_survived() -> None:
    # The car cuts in 5 m ahead at the truck's speed and brakes at 3 m/s² for 2 s.  The truck
    # can brake at 7.5 m/s², so even reacting a full second late it loses only
    # 3·1²/2 = 1.5 m plus 1.5 m/s of closing, cancelled at 7.5 - 3 m/s² within
    # 1.5²/(2·4.5) = 0.25 m: the gap stays above 3 m.  The trucks ahead of the car do not
    # notice it.
    tr, m = _run(car_brake_mps2=3.0, car_brake_s=2.0)
    assert m["collided"] == 0.0
    assert m["min_gap_m"] > 5.0 - 1.5 - 0.25
    car = tr.vehicle_id.index("car")
    braking = _after(tr) & (tr.time_s < CUT_IN_AT_S + 2.0 + 1e-9)
    assert np.allclose(tr.accel_mps2[braking, car], -3.0, atol=1e-9)  # the scripted brake
    assert np.nanmin(tr.accel_mps2[:, :2]) == 0.0  # head and follower 1 ride on
    # DRAC on a closing speed of 3 m/s² × 0.1 s over ~5 m, far under the criteria
    assert m["drac_mps2"] < 1.0


def test_car_braking_hard_to_a_stop_5m_ahead_is_survived_by_emergency_braking_only() -> None:
    # The car cuts in 5 m ahead at 22 m/s and brakes at 8 m/s² to a stop (30.25 m).  The
    # truck's best is its emergency 7.5 m/s² from the very first step (32.27 m): it stops
    # 5 + 30.25 - 32.27 = 2.98 m short.  Hand kinematics: the gap shrinks by 0.5·2.75²/2 =
    # 1.89 m while both brake and by 1.375²/15 = 0.13 m after the car has stopped, so the
    # minimum is 5 - 2.02 = 2.98 m.  SUMO's ACC fallback does brake at 7.5 m/s² at once
    # (its collision-avoidance mode acts on the 41 m spacing error), and the engine agrees
    # to a tenth of a metre (the Euler update's discretisation).  A truck reacting 0.5 s
    # later would have lost 22·0.5 = 11 m more and hit the car.
    tr, m = _run(car_brake_mps2=8.0, car_brake_s=3.0)
    assert m["collided"] == 0.0
    assert m["min_gap_m"] == pytest.approx(2.98, abs=0.3)
    behind = tr.vehicle_id.index("t2")
    assert -np.nanmin(tr.accel_mps2[:, behind]) == pytest.approx(TRUCK_EMERGENCY_MPS2)
    step1 = np.searchsorted(tr.time_s, CUT_IN_AT_S + DT_S - 1e-9)
    assert tr.accel_mps2[step1, behind] == pytest.approx(-TRUCK_EMERGENCY_MPS2)


def test_slower_car_braking_hard_5m_ahead_forces_a_collision() -> None:
    # 6 m/s slower (16 m/s) and braking at 8 m/s² to a stop: the car stops within
    # 16²/16 = 16 m, the truck needs 22²/15 = 32.3 m at its emergency 7.5 m/s²; 5 + 16 = 21 m
    # is 11 m short, whatever the truck's controller does.
    _, m = _run(speed_deficit_mps=6.0, car_brake_mps2=8.0, car_brake_s=2.0)
    assert m["collided"] == 1.0
    assert m["min_gap_m"] < 0.0


def test_car_8mps_slower_2m_ahead_forces_a_collision() -> None:
    # No brake, but 8 m/s slower and 2 m ahead.  Braking at 7.5 m/s² from the first step
    # while the car speeds up at most at IDM's 2.6 m/s², the truck needs 8²/(2·10.1) =
    # 3.17 m to match speeds; the engine's Euler update (x += v_new dt) shortens that by
    # dv·dt/2 = 0.4 m to 2.77 m.  Either way more than 2 m: a collision.  (At 3 m the Euler
    # figure lets the truck through by 0.2 m while the continuous one does not; the model
    # says no collision there, which is why the test stays at 2 m.)
    need_m = 8.0**2 / (2.0 * (TRUCK_EMERGENCY_MPS2 + CAR_ACCEL_MPS2)) - 8.0 * DT_S / 2.0
    assert need_m > 2.0
    _, m = _run(cut_in_gap_m=2.0, speed_deficit_mps=8.0)
    assert m["collided"] == 1.0


def test_acc_fallback_brakes_at_its_emergency_limit_for_a_gentle_cut_in() -> None:
    # A finding about the model, pinned: a car 12 m ahead and 2 m/s slower needs a
    # deceleration to avoid the crash (DRAC) of only 2²/(2·12) = 0.17 m/s², yet SUMO's ACC
    # law, which the truck falls back to behind a car, brakes at its emergency 7.5 m/s² at
    # once: its collision-avoidance mode commands 0.8/s² × spacing error (12 - 2.5 m
    # against a desired 1 s × 22 m/s = 22 m: about -10 m/s²), capped at emergencyDecel.  So
    # every cut-in inside the ACC's time gap costs a full emergency brake and a large
    # speed drop (here to about 15 m/s), though no collision.
    tr, m = _run(cut_in_gap_m=12.0, speed_deficit_mps=2.0)
    assert m["drac_mps2"] == pytest.approx(2.0**2 / (2.0 * 12.0), abs=0.02)
    assert m["collided"] == 0.0 and m["min_gap_m"] > 11.0
    assert m["max_decel_mps2"] == pytest.approx(TRUCK_EMERGENCY_MPS2)
    behind = tr.vehicle_id.index("t2")
    assert np.nanmin(tr.speed_mps[:, behind]) < V - 5.0


def test_batch_of_instances_equals_each_instance_run_alone() -> None:
    # run_chunk runs the chunk as one NetSim batch (instance axis); each instance alone,
    # with its own seed, must give exactly the same metrics: the instances share nothing
    # and the scenario draws no random numbers
    tpl = get_template(CUT_IN_NAME)
    assert tpl.net is not None
    rows = sample_params(tpl, 6, 4, grid=False)
    batch = run_chunk(tpl.name, rows, 10, 4)
    for j, row in enumerate(rows):
        params = {r.name: float(v) for r, v in zip(tpl.ranges, row, strict=True)}
        alone = net_metrics(tpl.net([params], derive_seed(4, tpl.name, 10 + j))[0])
        assert [alone[k] for k in METRIC_NAMES] == batch[j].tolist()
    assert not np.isnan(batch).any()


def test_worst_cut_ins_written_out_replay_to_the_same_metrics(tmp_path: Path) -> None:
    code = validate_main(
        ["--scenario", CUT_IN_NAME, "--samples", "8", "--seed", "3", "--out", str(tmp_path),
         "--worst", "2"]
    )  # fmt: skip
    assert code == 0
    o = validate([CUT_IN_NAME], samples=8, seed=3).outcomes[0]
    for rank, i in enumerate(o.worst(2)):
        path = tmp_path / "worst" / f"{CUT_IN_NAME}-worst{rank + 1}.yaml"
        text = path.read_text(encoding="utf-8")
        assert "replay: network" in text and f"index: {i}" in text
        replay = replay_metrics(path)
        assert [replay[k] for k in METRIC_NAMES] == o.metrics[i].tolist()
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert CUT_IN_NAME in html


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("replay: network\ntemplate: nope\nindex: 0\nseed: 1\nparams: {}\n",
         "--scenario = 'nope': not in the library"),
        ("replay: network\ntemplate: car-cut-in\nindex: 0\nseed: 1\nparams: {member: 1.0}\n",
         "params ['member']; allowed: a network-engine template with params ['member', "),
        ("replay: network\ntemplate: lead-emergency-brake\nindex: 0\nseed: 1\nparams: {}\n",
         "a 1-D scenario (write it as a scenario file)"),
        ("replay: network\ntemplate: car-cut-in\nindex: -1\nseed: 1\nparams: {}\n",
         "field 'index' = -1: Input should be greater than or equal to 0"),
        ("replay: network\ntemplate: car-cut-in\nseed: 1\nparams: {}\n",
         "field 'index' = "),
    ],
)  # fmt: skip
def test_bad_replay_file_gets_one_clear_message(tmp_path: Path, body: str, message: str) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(body, encoding="utf-8")
    with pytest.raises(ValidationError) as err:
        replay_metrics(p)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_cut_in_metrics_window_and_units() -> None:
    # steady platoon before the cut-in: the followers sit at SUMO-CACC's gap 2.5 + 2 · 22
    # = 46.5 m; the head drives 22 m/s for the whole 40 s: 0.88 km
    tr, m = _run(cut_in_gap_m=10.0)
    before = tr.time_s < CUT_IN_AT_S - 1e-9
    fol = tr.truck & (tr.position > 0)
    assert np.allclose(tr.gap_m[before][:, fol], 46.5)
    assert m["platoon_km"] == pytest.approx(V * 40.0 / 1000.0, abs=1e-6)
    assert math.isfinite(m["min_ttc_s"])


# Ray starts its processes by fork+exec (subprocess), which JAX's fork warning also flags
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_ray_run_of_car_cut_in_equals_local_run() -> None:
    # 40 instances are two chunks (32 + 8), each one NetSim batch in its own Ray task on
    # one of two worker processes; an instance's metrics depend only on (seed, name, index),
    # so the Ray run's params and metrics are the local run's, bit for bit
    import ray

    try:
        local = validate([CUT_IN_NAME], samples=40, seed=5)
        remote = validate([CUT_IN_NAME], samples=40, seed=5, ray_address="local", ray_workers=2)
    finally:
        ray.shutdown()
    assert np.array_equal(local.outcomes[0].params, remote.outcomes[0].params)
    assert np.array_equal(local.outcomes[0].metrics, remote.outcomes[0].metrics)
    assert remote.platoon_km == local.platoon_km > 0.0
    assert local.outcomes[0].passed.tolist() == remote.outcomes[0].passed.tolist()


def test_a_traces_leader_is_the_nearest_rear_ahead_in_its_lane() -> None:
    # One record of six vehicles (positions of the front bumper, lengths):
    #   0: lane 0 at 10 m        -> leader 5 (its rear at 15 m is the nearest ahead)
    #   1: lane 0 at 50 m, 10 m  -> none ahead in lane 0
    #   2: lane 1 at 30 m        -> none ahead in lane 1 (1 and 4 are in lane 0)
    #   3: off the road (NaN)    -> no leader, and nobody's leader
    #   4: lane 0 at 48 m, 3 m   -> leader 1, which overlaps it: gap 50 - 10 - 48 = -8
    #   5: lane 0 at 20 m, 5 m   -> leader 1 (rear at 40 m, nearer than 4's at 45), not 0
    # and a second record where 1 and 4 have the same rear (40 m): 5 follows the first of them.
    pos = np.array(
        [[[10.0, 50.0, 30.0, np.nan, 48.0, 20.0], [10.0, 50.0, 30.0, np.nan, 43.0, 20.0]]]
    )
    speed = np.array([[[20.0, 15.0, 22.0, np.nan, 16.0, 21.0]] * 2]).reshape(1, 2, 6)
    lane = np.array([[[0.0, 0.0, 1.0, np.nan, 0.0, 0.0]] * 2]).reshape(1, 2, 6)
    length = np.array([[5.0, 10.0, 5.0, 5.0, 3.0, 5.0]])
    gap = np.full(pos.shape, np.nan)
    closing = np.full(pos.shape, np.nan)
    _resolve_leaders(pos, speed, lane, length, gap, closing)
    want_gap = [
        [5.0, np.nan, np.nan, np.nan, -8.0, 20.0],
        [5.0, np.nan, np.nan, np.nan, -3.0, 20.0],
    ]
    want_closing = [
        [-1.0, np.nan, np.nan, np.nan, 1.0, 6.0],
        [-1.0, np.nan, np.nan, np.nan, 1.0, 6.0],
    ]
    assert np.array_equal(gap[0], want_gap, equal_nan=True)
    assert np.array_equal(closing[0], want_closing, equal_nan=True)


def test_jax_runs_the_car_cut_in_as_numba_does(monkeypatch: pytest.MonkeyPatch) -> None:
    # --backend jax runs the chunk on the network engine's JAX step (float64 on the CPU), the
    # backend --backend gpu uses on a GPU (in float32 there). The same laws in the same order
    # give the same metrics to rounding, collisions included (this draw has five). The car's
    # scripted brake is a speed-cap ramp the JAX step applies itself, as Numba's kernel
    # does, so the run is cut only where the cut-in itself is placed (at 5 s): two compiled
    # calls, not one per step of the brake
    from convoy.sim import net_jax

    calls = []
    advance = net_jax.advance

    def counted(*a: object, **k: object) -> object:
        calls.append(1)
        return advance(*a, **k)

    monkeypatch.setattr(net_jax, "advance", counted)
    tpl = get_template(CUT_IN_NAME)
    rows = sample_params(tpl, 16, 6, grid=False)
    numba = run_chunk(tpl.name, rows, 0, 6, backend="cpu")
    assert not calls
    jax_ = run_chunk(tpl.name, rows, 0, 6, backend="jax")
    assert len(calls) == 2
    assert int(numba[:, METRIC_NAMES.index("collided")].sum()) == 5
    assert np.allclose(jax_, numba, rtol=1e-9, atol=1e-9, equal_nan=True)
    assert np.array_equal(np.isnan(jax_), np.isnan(numba))


def test_backend_gpu_without_a_gpu_runs_the_cut_in_on_numba_and_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # CI has no GPU: JAX sees only its CPU, so the chunk runs on Numba as with --backend cpu
    # (the same table) and one line on stderr says so instead of letting it pass unsaid
    args = ["--scenario", CUT_IN_NAME, "--samples", "4", "--seed", "2", "--no-report"]
    assert validate_main([*args, "--out", str(tmp_path / "a")]) == 0
    cpu = capsys.readouterr()
    assert validate_main([*args, "--out", str(tmp_path / "b"), "--backend", "gpu"]) == 0
    gpu = capsys.readouterr()
    assert "JAX sees no GPU" in gpu.err and CUT_IN_NAME in gpu.err
    assert "JAX sees no GPU" not in cpu.err
    table = [ln for ln in cpu.out.splitlines() if CUT_IN_NAME in ln]
    assert table and table == [ln for ln in gpu.out.splitlines() if CUT_IN_NAME in ln]


@pytest.mark.gpu
def test_the_gpu_runs_the_car_cut_in_as_numba_does() -> None:
    # --backend gpu on a GPU: the chunk on the JAX step in float32 (compensated offsets). A
    # GPU rounds otherwise than the CPU (fused multiply-adds, its own division), so a mode
    # switch may come a step apart: 5 cm of gap, 0.2 m/s² of deceleration; the same
    # instances collide
    import jax

    from convoy.sim.validation import net_backend

    if net_backend("gpu") != "gpu":
        pytest.skip(f"no GPU: CI has none (JAX sees {jax.devices()})")
    tpl = get_template(CUT_IN_NAME)
    rows = sample_params(tpl, 64, 6, grid=False)
    numba = run_chunk(tpl.name, rows, 0, 6, backend="cpu")
    gpu = run_chunk(tpl.name, rows, 0, 6, backend="gpu")
    col = {k: METRIC_NAMES.index(k) for k in ("collided", "min_gap_m", "max_decel_mps2")}
    assert np.array_equal(gpu[:, col["collided"]], numba[:, col["collided"]])
    np.testing.assert_allclose(gpu[:, col["min_gap_m"]], numba[:, col["min_gap_m"]], atol=0.05)
    np.testing.assert_allclose(
        gpu[:, col["max_decel_mps2"]], numba[:, col["max_decel_mps2"]], atol=0.2
    )
