"""SUMO as the reference peer: scenario files, TraCI-driven trajectories, plain CLI runs.

SUMO (``eclipse-sumo``/``libsumo``/``traci`` 1.28) is imported lazily inside the functions, so
importing this module never needs SUMO.

Scenario layout: one straight single-lane edge ``road`` from x = 0 to ``road_length_m``. Platoon
``p`` truck ``k`` has the vehicle id ``f"p{p}.{k}"`` (``k = 0`` is the platoon head); platoon 0 is
the front-most. Vehicle positions are front-bumper positions along the lane (SUMO's lane
position), so the bumper-to-bumper gap to the predecessor is
``pos_pred - length_pred - pos_own``.

Time alignment (what :func:`run_sumo_trajectories` does and what a re-implementation must copy):

* All trucks are inserted (``insertionChecks="none"``) during SUMO's first step, exactly at
  their ``departPos``/``departSpeed`` and without moving; that state is row 0 of the trace,
  ``t = 0``, with acceleration 0. SUMO's own clock then reads ``dt``: trace time ``t`` is SUMO
  time ``t + dt`` throughout.
* Before the step that takes the trace from ``t_k = k*dt`` to ``t_{k+1} = (k+1)*dt``, every
  platoon head gets ``setSpeed(profile(t_{k+1}))``, ``t_{k+1}`` computed as ``(k + 1) * dt``:
  the commanded speed is the profile value at the *end* of the step. SUMO limits it by the
  head's acceleration/deceleration bounds (default speed mode 31), see
  :func:`convoy.vehicle.sumo_cfm.sumo_set_speed`.
* Row ``k + 1`` of the returned arrays is the state after that step, at ``t_{k+1}``.
* Without a speed profile, heads are not commanded; their vType gets ``maxSpeed = speed_mps`` so
  they cruise at their initial speed (followers keep ``max_speed_mps``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from convoy.sim.scenario import Scenario

FloatArray = npt.NDArray[np.float64]

#: Edge (and lane ``road_0``) of the one-lane road.
EDGE_ID = "road"
LANE_ID = f"{EDGE_ID}_0"


@dataclass(frozen=True)
class CorridorSpec:
    """A straight one-lane corridor with platoons of identical trucks.

    Attributes:
        trucks_per_platoon: Trucks in each platoon, head included.
        platoon_count: Number of platoons.
        platoon_spacing_m: Bumper gap between the last truck of a platoon and the next head, m.
        gap_m: Initial bumper-to-bumper gap inside a platoon, m.
        speed_mps: Initial speed of every truck, m/s.
        head_pos_m: Front-bumper position of the front-most truck (head of platoon 0), m.
        road_length_m: Length of the road, m. Must leave room for the whole run.
        length_m: Truck length, m.
        min_gap_m: SUMO ``minGap`` (standstill gap the models keep on top of their gap), m.
        max_accel_mps2: SUMO ``accel``, m/s².
        max_decel_mps2: SUMO ``decel``, m/s².
        emergency_decel_mps2: SUMO ``emergencyDecel``, m/s².
        max_speed_mps: SUMO ``maxSpeed`` (also the models' desired speed), m/s.
        car_follow_model: ``"CACC"`` or ``"ACC"``.
        head_car_follow_model: SUMO car-following model of the platoon heads (e.g. ``"ACC"``
            to put a non-cooperative vehicle in front of CACC followers); ``None`` means
            ``car_follow_model``.
        time_gap_s: SUMO ``tau``, the desired time gap, s.
        dt_s: Simulation step length, s.
        duration_s: Simulated time, s.
        speed_profile: ``((time_s, speed_mps), ...)`` breakpoints, linear in between and held
            constant outside, commanded to every head with TraCI ``setSpeed``; ``None`` lets the
            heads drive freely.
        lane_speed_limit_mps: Lane speed limit, m/s. ``None`` picks one far above
            ``max_speed_mps`` so the limit never binds.
    """

    trucks_per_platoon: int = 5
    platoon_count: int = 1
    platoon_spacing_m: float = 100.0
    gap_m: float = 25.0
    speed_mps: float = 22.0
    head_pos_m: float = 1000.0
    road_length_m: float = 10000.0
    length_m: float = 16.5
    min_gap_m: float = 2.5
    max_accel_mps2: float = 1.0
    max_decel_mps2: float = 4.0
    emergency_decel_mps2: float = 7.5
    max_speed_mps: float = 25.0
    car_follow_model: str = "CACC"
    head_car_follow_model: str | None = None
    time_gap_s: float = 1.0
    dt_s: float = 0.1
    duration_s: float = 200.0
    speed_profile: tuple[tuple[float, float], ...] | None = None
    lane_speed_limit_mps: float | None = None

    @property
    def vehicle_count(self) -> int:
        """Total number of trucks."""
        return self.trucks_per_platoon * self.platoon_count

    @property
    def step_count(self) -> int:
        """Number of simulation steps in ``duration_s``."""
        return round(self.duration_s / self.dt_s)

    @property
    def head_model(self) -> str:
        """SUMO car-following model of the platoon heads."""
        return self.head_car_follow_model or self.car_follow_model

    @property
    def head_max_speed_mps(self) -> float:
        """vType ``maxSpeed`` of the heads: ``max_speed_mps``, or the initial speed when there is
        no speed profile (so that uncommanded heads cruise at their initial speed), m/s."""
        if self.speed_profile is None:
            return min(self.speed_mps, self.max_speed_mps)
        return self.max_speed_mps

    @property
    def speed_limit_mps(self) -> float:
        """The lane speed limit written to the network, m/s."""
        if self.lane_speed_limit_mps is not None:
            return self.lane_speed_limit_mps
        return max(2.0 * self.max_speed_mps, 50.0)

    def vehicle_ids(self) -> list[str]:
        """Vehicle ids in platoon-major order, head first: ``p{p}.{k}``."""
        return [
            f"p{p}.{k}" for p in range(self.platoon_count) for k in range(self.trucks_per_platoon)
        ]

    def initial_positions_m(self) -> FloatArray:
        """Front-bumper positions at t = 0 in :meth:`vehicle_ids` order, m."""
        pos = np.empty(self.vehicle_count, dtype=np.float64)
        x = self.head_pos_m
        i = 0
        for _ in range(self.platoon_count):
            for k in range(self.trucks_per_platoon):
                pos[i] = x
                i += 1
                x -= self.length_m + (self.gap_m if k < self.trucks_per_platoon - 1 else 0.0)
            x -= self.platoon_spacing_m
        return pos

    def head_mask(self) -> npt.NDArray[np.bool_]:
        """True for platoon heads, in :meth:`vehicle_ids` order."""
        mask = np.zeros(self.vehicle_count, dtype=np.bool_)
        mask[:: self.trucks_per_platoon] = True
        return mask

    def commanded_speed_mps(self, t_s: float) -> float:
        """The speed profile at time ``t_s``, m/s (linear, held constant outside)."""
        if self.speed_profile is None:
            return self.speed_mps
        times = np.array([p[0] for p in self.speed_profile], dtype=np.float64)
        speeds = np.array([p[1] for p in self.speed_profile], dtype=np.float64)
        return float(np.interp(t_s, times, speeds))

    def validate(self) -> None:
        """Raise ``ValueError`` for an inconsistent spec."""
        if self.car_follow_model not in ("CACC", "ACC"):
            raise ValueError(
                f"car_follow_model must be 'CACC' or 'ACC', not {self.car_follow_model}"
            )
        if self.head_model not in ("CACC", "ACC", "Krauss", "IDM"):
            raise ValueError(f"unsupported head_car_follow_model {self.head_model}")
        if self.trucks_per_platoon < 1 or self.platoon_count < 1:
            raise ValueError("need at least one truck and one platoon")
        pos = self.initial_positions_m()
        if pos[-1] - self.length_m < 0.0:
            raise ValueError("the last truck would start before the road begins")
        reach = self.head_pos_m + self.duration_s * self.max_speed_mps
        if reach > self.road_length_m:
            raise ValueError(
                f"road_length_m={self.road_length_m} is shorter than the head can reach ({reach})"
            )


@dataclass(frozen=True)
class SumoTrace:
    """Trajectories recorded from SUMO, one row per recorded time, one column per truck.

    Attributes:
        vehicle_ids: Column order (platoon-major, head first).
        time_s: Recorded times (T,), starting at 0, s.
        pos_m: Front-bumper lane positions (T, N), m.
        speed_mps: Speeds (T, N), m/s.
        accel_mps2: SUMO's acceleration getter (T, N): ``(v_new - v_old)/dt`` of the last step,
            m/s².
        gap_m: Bumper-to-bumper gap to the predecessor (T, N), NaN for the front-most truck, m.
            SUMO's models see this gap minus the follower's ``minGap``.
        cacc_mode: SUMO's ``caccVehicleMode`` parameter (T, N): ``"CC"``, ``"ACC"``,
            ``"CACC_GAP"``, ``"CACC_GAP_CL"``, ``"CACC_CA"`` for CACC vehicles (the branch of
            the step that led to the row), ``""`` for other models and at t = 0.
    """

    vehicle_ids: tuple[str, ...]
    time_s: FloatArray
    pos_m: FloatArray
    speed_mps: FloatArray
    accel_mps2: FloatArray
    gap_m: FloatArray
    cacc_mode: npt.NDArray[np.str_]


def sumo_binary(name: str = "sumo") -> str:
    """Path of a SUMO executable (``sumo``, ``netconvert``...) from the eclipse-sumo package.

    Raises:
        FileNotFoundError: If the executable cannot be found.
    """
    try:
        import sumolib

        path = str(sumolib.checkBinary(name))
        if os.path.isfile(path):
            return path
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"SUMO executable {name!r} not found; install eclipse-sumo")
    return found


def _fmt(x: float) -> str:
    # repr round-trips a float exactly, so SUMO reads the very value convoy uses.
    return repr(float(x))


def netconvert(nodes: Path, edges: Path, net: Path) -> None:
    """Build the SUMO network ``net`` from plain node and edge files, with SUMO's
    ``netconvert`` (no turnarounds at the ends, warnings off)."""
    subprocess.run(
        [
            sumo_binary("netconvert"),
            "--node-files",
            str(nodes),
            "--edge-files",
            str(edges),
            "--output-file",
            str(net),
            "--no-turnarounds",
            "true",
            "--no-warnings",
            "true",
        ],
        check=True,
        capture_output=True,
    )


def write_sumo_files(spec: CorridorSpec, workdir: Path, fcd: bool = False) -> Path:
    """Write the network, routes and configuration of ``spec`` into ``workdir``.

    Args:
        spec: The scenario.
        workdir: Directory to write into (created if missing).
        fcd: Also request floating-car-data output (``fcd.xml``) in the configuration.

    Returns:
        Path of the ``.sumocfg`` file.
    """
    spec.validate()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    nod = workdir / "corridor.nod.xml"
    edg = workdir / "corridor.edg.xml"
    net = workdir / "corridor.net.xml"
    nod.write_text(
        "<nodes>\n"
        '    <node id="start" x="0.0" y="0.0"/>\n'
        f'    <node id="end" x={quoteattr(_fmt(spec.road_length_m))} y="0.0"/>\n'
        "</nodes>\n"
    )
    edg.write_text(
        "<edges>\n"
        f'    <edge id="{EDGE_ID}" from="start" to="end" numLanes="1" '
        f"speed={quoteattr(_fmt(spec.speed_limit_mps))}/>\n"
        "</edges>\n"
    )
    netconvert(nod, edg, net)

    vtype = f"truck_{spec.car_follow_model}"
    head_vtype = f"head_{spec.head_model}"
    lines = ["<routes>"]
    types = (
        (vtype, spec.car_follow_model, spec.max_speed_mps),
        (head_vtype, spec.head_model, spec.head_max_speed_mps),
    )
    for type_id, model, max_speed in types:
        # speedFactor 1 / speedDev 0 / sigma 0: no randomness anywhere; apparentDecel = decel.
        lines.append(
            f'    <vType id="{type_id}" carFollowModel="{model}" vClass="truck"'
            f" length={quoteattr(_fmt(spec.length_m))} minGap={quoteattr(_fmt(spec.min_gap_m))}"
            f" accel={quoteattr(_fmt(spec.max_accel_mps2))}"
            f" decel={quoteattr(_fmt(spec.max_decel_mps2))}"
            f" emergencyDecel={quoteattr(_fmt(spec.emergency_decel_mps2))}"
            f" apparentDecel={quoteattr(_fmt(spec.max_decel_mps2))}"
            f" maxSpeed={quoteattr(_fmt(max_speed))}"
            f" tau={quoteattr(_fmt(spec.time_gap_s))}"
            ' speedFactor="1" speedDev="0" sigma="0"/>'
        )
    lines.append(f'    <route id="r0" edges="{EDGE_ID}"/>')
    ids_pos = zip(spec.vehicle_ids(), spec.initial_positions_m(), spec.head_mask(), strict=True)
    for vid, pos, is_head in ids_pos:
        lines.append(
            f'    <vehicle id="{vid}" type="{head_vtype if is_head else vtype}" route="r0"'
            # insertionChecks="none": insert exactly as specified, even at unsafe gaps.
            ' depart="0" departLane="0" insertionChecks="none"'
            f" departPos={quoteattr(_fmt(pos))} departSpeed={quoteattr(_fmt(spec.speed_mps))}/>"
        )
    lines.append("</routes>")
    rou = workdir / "corridor.rou.xml"
    rou.write_text("\n".join(lines) + "\n")

    cfg = workdir / "corridor.sumocfg"
    out = f'    <output>\n        <fcd-output value="{workdir / "fcd.xml"}"/>\n    </output>\n'
    cfg.write_text(
        "<configuration>\n"
        "    <input>\n"
        f'        <net-file value="{net.name}"/>\n'
        f'        <route-files value="{rou.name}"/>\n'
        "    </input>\n" + (out if fcd else "") + "    <time>\n"
        '        <begin value="0"/>\n'
        f"        <step-length value={quoteattr(_fmt(spec.dt_s))}/>\n"
        "    </time>\n"
        "    <processing>\n"
        # Euler position update (SUMO's default), stated explicitly: the engine mirrors it.
        '        <step-method.ballistic value="false"/>\n'
        '        <collision.action value="warn"/>\n'
        '        <default.speeddev value="0"/>\n'
        "    </processing>\n"
        "    <report>\n"
        '        <no-step-log value="true"/>\n'
        '        <no-warnings value="true"/>\n'
        '        <duration-log.disable value="true"/>\n'
        "    </report>\n"
        "    <random_number>\n"
        '        <seed value="42"/>\n'
        "    </random_number>\n"
        "</configuration>\n"
    )
    return cfg


def _import_sumo_api() -> Any:
    """libsumo (in-process, fast) unless ``CONVOY_SUMO_API=traci``; traci as the fallback."""
    if os.environ.get("CONVOY_SUMO_API", "").lower() != "traci":
        try:
            # libsumo prints a pyarrow-version warning on import; it is harmless here.
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                import libsumo

            return libsumo
        except ImportError:
            pass
    import traci

    return traci


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="convoy_sumo_") as tmp:
        yield Path(tmp)


def run_sumo_trajectories(spec: CorridorSpec, workdir: Path | None = None) -> SumoTrace:
    """Run ``spec`` in SUMO through TraCI/libsumo and record every truck at every step.

    Heads follow ``spec.speed_profile`` via ``setSpeed`` with the alignment described in the
    module docstring; followers drive ``spec.car_follow_model``.

    Args:
        spec: The scenario.
        workdir: Where to write the SUMO files; a temporary directory if ``None``.

    Returns:
        The trace with ``spec.step_count + 1`` rows (t = 0 included).

    Raises:
        RuntimeError: If a truck is missing from the simulation at some step.
    """
    api = _import_sumo_api()
    ids = spec.vehicle_ids()
    n = len(ids)
    steps = spec.step_count
    heads = [vid for vid, h in zip(ids, spec.head_mask(), strict=True) if h]
    lengths = np.full(n, spec.length_m)

    time_s = np.zeros(steps + 1)
    pos = np.full((steps + 1, n), np.nan)
    speed = np.full((steps + 1, n), np.nan)
    accel = np.full((steps + 1, n), np.nan)
    modes = np.full((steps + 1, n), "", dtype="<U12")
    is_cacc = [
        (spec.head_model if h else spec.car_follow_model) == "CACC" for h in spec.head_mask()
    ]

    with _workdir(workdir) as wd:
        cfg = write_sumo_files(spec, wd)
        args = ["-c", str(cfg), "--no-step-log", "true", "--no-warnings", "true"]
        if api.__name__ == "libsumo":
            api.start([sumo_binary("sumo"), *args])
        else:
            api.start([sumo_binary("sumo"), *args], label=f"convoy{os.getpid()}")
        try:
            veh = api.vehicle
            # First step inserts every truck at its departPos/departSpeed (no motion yet).
            api.simulationStep()
            present = set(veh.getIDList())
            missing = [vid for vid in ids if vid not in present]
            if missing:
                raise RuntimeError(f"SUMO did not insert {missing} at t=0")
            t0 = api.simulation.getTime()
            for k in range(steps + 1):
                if k > 0:
                    if spec.speed_profile is not None:
                        cmd = spec.commanded_speed_mps(k * spec.dt_s)
                        for h in heads:
                            veh.setSpeed(h, cmd)
                    api.simulationStep()
                time_s[k] = api.simulation.getTime() - t0
                for i, vid in enumerate(ids):
                    pos[k, i] = veh.getLanePosition(vid)
                    speed[k, i] = veh.getSpeed(vid)
                    accel[k, i] = veh.getAcceleration(vid)
                    if k > 0 and is_cacc[i]:
                        modes[k, i] = veh.getParameter(vid, "caccVehicleMode")
        finally:
            api.close()

    # Every truck but the front-most one has a predecessor on the single lane (platoon heads
    # follow the previous platoon's last truck).
    gap = np.full((steps + 1, n), np.nan)
    gap[:, 1:] = (pos[:, :-1] - lengths[:-1]) - pos[:, 1:]
    return SumoTrace(
        vehicle_ids=tuple(ids),
        time_s=time_s,
        pos_m=pos,
        speed_mps=speed,
        accel_mps2=accel,
        gap_m=gap,
        cacc_mode=modes,
    )


def run_sumo_cli(spec: CorridorSpec, workdir: Path, end_s: float) -> float:
    """Run the plain ``sumo`` binary (no TraCI, heads unconstrained) until ``end_s``.

    Args:
        spec: The scenario (``speed_profile`` is ignored: no TraCI here).
        workdir: Where to write the SUMO files.
        end_s: Simulation end time, s.

    Returns:
        Wall-clock seconds of the ``sumo`` process (file writing excluded).
    """
    cfg = write_sumo_files(spec, Path(workdir))
    cmd = [
        sumo_binary("sumo"),
        "-c",
        str(cfg),
        "--end",
        _fmt(end_s),
        "--no-step-log",
        "true",
        "--no-warnings",
        "true",
        "--duration-log.disable",
        "true",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def corridor_from_scenario(sc: Scenario) -> CorridorSpec:
    """The SUMO corridor that runs the same trucks, gaps and head profile as ``sc``.

    Raises:
        ValueError: if the scenario's controller has no SUMO counterpart, or it overrides
            the controller of some positions.
    """
    if sc.platoon.overrides:
        raise ValueError(
            f"platoon.overrides = {len(sc.platoon.overrides)} position(s): the SUMO corridor "
            "has one car-following model per platoon; allowed: no overrides"
        )
    model = {"cacc-sumo": "CACC", "acc": "ACC"}.get(sc.platoon.controller.model)
    if model is None:
        raise ValueError(
            f"controller {sc.platoon.controller.model!r} has no SUMO counterpart; "
            "allowed: cacc-sumo, acc"
        )
    tr, p = sc.truck, sc.platoon
    profile = sc.leader.speed_profile
    return CorridorSpec(
        trucks_per_platoon=p.trucks,
        platoon_count=p.count,
        platoon_spacing_m=p.spacing_m,
        gap_m=p.initial.gap_m,
        speed_mps=p.initial.speed_mps,
        head_pos_m=p.initial.head_pos_m,
        road_length_m=max(
            sc.road.length_m, p.initial.head_pos_m + sc.duration_s * tr.max_speed_mps + 1
        ),
        length_m=tr.length_m,
        min_gap_m=tr.min_gap_m,
        max_accel_mps2=tr.max_accel_mps2,
        max_decel_mps2=tr.max_decel_mps2,
        emergency_decel_mps2=tr.emergency_decel_mps2,
        max_speed_mps=tr.max_speed_mps,
        car_follow_model=model,
        time_gap_s=getattr(p.controller, "time_gap_s", 1.0),
        dt_s=sc.dt_s,
        duration_s=sc.duration_s,
        speed_profile=tuple((float(t), float(v)) for t, v in profile) if profile else None,
        lane_speed_limit_mps=sc.road.speed_limit_mps,
    )
