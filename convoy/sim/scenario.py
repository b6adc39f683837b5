"""Scenario files: typed, validated on load, with one clear message per mistake.

A scenario is YAML validated by the pydantic models below.  ``load_scenario`` turns any
problem (unreadable file, malformed YAML, a wrong field) into a ``ScenarioError`` whose
message names the field, the value and what is allowed; the CLI prints it and exits 2.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from convoy.road.hazards import (
    DEFAULT_RSI_ALERT_RANGE_M,
    CorridorSpan,
    HazardEvent,
    HazardKind,
)
from convoy.road.signals import FixedTimeSignal
from convoy.vehicle.channel import ChannelSpec
from convoy.vehicle.controllers import IdmParams, PathParams, PloegParams

# Defaults of the lag-free laws come from the vehicle layer's records, where they are cited.
_PATH = PathParams()
_PLOEG = PloegParams()
_IDM = IdmParams()


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message is meant for a person."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1)]


class RoadConfig(_Strict):
    """A straight one-lane road with a constant grade."""

    length_m: PosFloat = 100_000.0
    grade_pct: Annotated[float, Field(ge=-15, le=15)] = 0.0
    speed_limit_mps: PosFloat | None = None


class PowertrainConfig(_Strict):
    """Powertrain; values left out take the vehicle layer's cited defaults."""

    kind: Literal["electric", "diesel"] = "electric"
    battery_kwh: PosFloat = 282.0  # DESIGN.md: 282 kWh swap pack
    initial_soc: Probability = 0.9
    motor_power_kw: PosFloat | None = None
    limit_traction: bool = Field(
        default=False,
        description=(
            "Cap acceleration by motor/engine power and grade. Off by default so that the "
            "kinematic limits alone bind, as in SUMO."
        ),
    )


class TruckConfig(_Strict):
    """Truck dimensions and limits (DESIGN.md: 6-axle tractor-semitrailer, 49 t)."""

    length_m: PosFloat = 16.5
    min_gap_m: NonNegFloat = 2.5
    max_accel_mps2: PosFloat = 1.0
    max_decel_mps2: PosFloat = 4.0
    emergency_decel_mps2: PosFloat = 7.5
    max_speed_mps: PosFloat = 25.0
    mass_kg: Annotated[float, Field(gt=1000, le=100_000)] = 49_000.0
    drag_coefficient: PosFloat = 0.6
    frontal_area_m2: PosFloat = 10.0
    rolling_resistance: Annotated[float, Field(gt=0, lt=0.05)] = 0.006
    powertrain: PowertrainConfig = PowertrainConfig()

    @model_validator(mode="after")
    def _decel_order(self) -> TruckConfig:
        if self.emergency_decel_mps2 < self.max_decel_mps2:
            raise ValueError(
                f"emergency_decel_mps2 ({self.emergency_decel_mps2}) must be at least "
                f"max_decel_mps2 ({self.max_decel_mps2})"
            )
        return self


class CaccSumoConfig(_Strict):
    """SUMO's CACC law; gains default to SUMO 1.28's."""

    model: Literal["cacc-sumo"]
    time_gap_s: PosFloat = 1.0
    fallback_time_gap_s: PosFloat = 1.5
    actuator_lag_s: NonNegFloat = 0.0
    emergency_braking: bool = Field(
        default=False,
        description="Add convoy's hazard-beacon and TTC emergency braking on top of the law; "
        "off by default so the law stays exactly SUMO's.",
    )


class AccConfig(_Strict):
    """SUMO's ACC law, optionally with a sensor delay and actuator lag."""

    model: Literal["acc"]
    time_gap_s: PosFloat = 1.0
    sensor_delay_s: NonNegFloat = 0.0
    actuator_lag_s: NonNegFloat = 0.0
    emergency_braking: bool = Field(
        default=False,
        description="Add convoy's hazard-beacon and TTC emergency braking on top of the law; "
        "off by default so the law stays exactly SUMO's.",
    )


class PathConfig(_Strict):
    """PATH CACC (Rajamani eq. 7.39)."""

    model: Literal["cacc-path"]
    spacing_m: PosFloat = _PATH.spacing_m
    c1: Probability = _PATH.c1
    xi: PosFloat = _PATH.xi
    omega_n_radps: PosFloat = _PATH.omega_n_radps
    actuator_lag_s: NonNegFloat = _PATH.actuator_lag_s
    fallback_time_gap_s: PosFloat = 1.5
    emergency_braking: bool = Field(
        default=True,
        description="Brake at the emergency limit on a hazard beacon or a TTC under 1 s.",
    )


class PloegConfig(_Strict):
    """Ploeg CACC (Ploeg et al. 2011)."""

    model: Literal["cacc-ploeg"]
    time_gap_s: PosFloat = _PLOEG.time_gap_s
    kp_per_s2: PosFloat = _PLOEG.kp_per_s2
    kd_per_s: PosFloat = _PLOEG.kd_per_s
    actuator_lag_s: NonNegFloat = _PLOEG.actuator_lag_s
    fallback_time_gap_s: PosFloat = 1.5
    emergency_braking: bool = Field(
        default=True,
        description="Brake at the emergency limit on a hazard beacon or a TTC under 1 s.",
    )


class HumanConfig(_Strict):
    """Human driver: IDM with reaction delay and bounded noise."""

    model: Literal["human"]
    time_gap_s: PosFloat = _IDM.time_gap_s
    comfort_decel_mps2: PosFloat = _IDM.comfort_decel_mps2
    delta: PosFloat = _IDM.delta
    reaction_time_s: NonNegFloat = _IDM.reaction_time_s
    noise_mps2: NonNegFloat = _IDM.noise_mps2
    actuator_lag_s: NonNegFloat = _IDM.actuator_lag_s
    emergency_braking: bool = Field(
        default=True,
        description="Brake at the emergency limit on a hazard beacon or a TTC under 1 s.",
    )


ControllerConfig = Annotated[
    CaccSumoConfig | AccConfig | PathConfig | PloegConfig | HumanConfig,
    Field(discriminator="model"),
]


class InitialConfig(_Strict):
    """Initial state of every platoon."""

    speed_mps: NonNegFloat = 22.0
    gap_m: NonNegFloat = 25.0
    head_pos_m: NonNegFloat = 2000.0


class OverrideConfig(_Strict):
    """One position of every platoon driven by another controller than ``platoon.controller``
    (a mixed platoon: a human-driven truck among L4 ones).  ``index`` counts from the head
    (0), which follows ``leader.speed_profile`` and cannot be overridden."""

    index: Annotated[int, Field(ge=1)]
    controller: ControllerConfig


#: The most platoons a scenario holds.
MAX_PLATOONS = 10_000_000


class PlatoonConfig(_Strict):
    """Platoons of identical trucks, one behind another in the lane; every follower drives
    ``controller`` except the positions listed in ``overrides``."""

    trucks: Annotated[int, Field(ge=1, le=100)] = 5
    count: Annotated[int, Field(ge=1, le=MAX_PLATOONS)] = 1
    spacing_m: NonNegFloat = 60.0
    controller: ControllerConfig = CaccSumoConfig(model="cacc-sumo")
    overrides: list[OverrideConfig] = []
    initial: InitialConfig = InitialConfig()

    def controller_at(self, index: int) -> ControllerConfig:
        """The controller of the truck at ``index`` (0 = head) of each platoon."""
        for o in self.overrides:
            if o.index == index:
                return o.controller
        return self.controller


class LeaderConfig(_Strict):
    """What every platoon head does: follow a speed profile, linear in between points."""

    speed_profile: list[tuple[NonNegFloat, NonNegFloat]] | None = None

    @field_validator("speed_profile")
    @classmethod
    def _increasing(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("needs at least one [time_s, speed_mps] point")
        times = [t for t, _ in v]
        for a, b in itertools.pairwise(times):
            if b <= a:
                raise ValueError(
                    f"times must increase strictly, but {b} follows {a} (times given: {times})"
                )
        return v


class BurstConfig(_Strict):
    """Gilbert–Elliott bursty loss."""

    loss_bad: Probability = 1.0
    p_good_to_bad: Probability = 0.05
    p_bad_to_good: Annotated[float, Field(gt=0, le=1)] = 0.2


class ChannelConfig(_Strict):
    """V2V channel (see ``convoy.vehicle.channel``)."""

    rate_hz: Annotated[float, Field(gt=0, le=100)] = 10.0
    latency_s: NonNegFloat = 0.0
    loss: Probability = 0.0
    range_m: PosFloat = 300.0
    burst: BurstConfig | None = None
    stale_after_s: PosFloat = 0.5
    outages: list[tuple[NonNegFloat, NonNegFloat]] = []

    @field_validator("outages")
    @classmethod
    def _windows(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for start, end in v:
            if end <= start:
                raise ValueError(f"outage window [{start}, {end}] must end after it starts")
        return v

    def spec(self) -> ChannelSpec:
        """The vehicle layer's channel record."""
        return ChannelSpec(
            rate_hz=self.rate_hz,
            latency_s=self.latency_s,
            range_m=self.range_m,
            loss=self.loss,
            burst_loss=self.burst.loss_bad if self.burst else None,
            p_good_to_bad=self.burst.p_good_to_bad if self.burst else 0.0,
            p_bad_to_good=self.burst.p_bad_to_good if self.burst else 1.0,
            stale_after_s=self.stale_after_s,
            outages=tuple(self.outages),
        )


class WeatherConfig(_Strict):
    """Ambient conditions (Ordos: -10.5 °C January mean, -31 °C record low)."""

    ambient_c: Annotated[float, Field(ge=-50, le=55)] = 20.0


class RsuConfig(_Strict):
    """A roadside unit beside the road; it broadcasts, as RSI, the hazards within
    ``alert_range_m`` of it, and the SPAT of the signals whose stop line lies within
    ``alert_range_m`` of it, to trucks within ``radius_m`` of it."""

    pos_m: NonNegFloat
    # C-V2X PC5 RSU broadcast reaches ~300-1,000 m (5GAA 2020: 300 m typical); 500 m as
    # convoy.road.network.RoadsideUnit
    radius_m: PosFloat = 500.0
    alert_range_m: PosFloat = DEFAULT_RSI_ALERT_RANGE_M


class HazardConfig(_Strict):
    """A weather or road hazard over ``[start_m, end_m]`` of the road, active for
    ``start_s <= t < end_s``; effects left out take the kind's cited defaults
    (``convoy.road.hazards.KIND_DEFAULTS``)."""

    kind: HazardKind
    start_m: NonNegFloat
    end_m: PosFloat
    start_s: NonNegFloat
    end_s: PosFloat
    speed_limit_mps: PosFloat | None = None
    friction: Annotated[float, Field(gt=0, le=1.5)] | None = None
    visibility_m: PosFloat | None = None

    @model_validator(mode="after")
    def _ordered(self) -> HazardConfig:
        if self.end_m <= self.start_m:
            raise ValueError(f"end_m ({self.end_m}) must be after start_m ({self.start_m})")
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        return self

    def event(self, k: int) -> HazardEvent:
        """The road layer's event, with id ``hazard{k}``."""
        return HazardEvent.create(
            f"hazard{k}",
            self.kind,
            CorridorSpan(self.start_m, self.end_m),
            self.start_s,
            self.end_s,
            speed_limit_mps=self.speed_limit_mps,
            visibility_m=self.visibility_m,
            friction=self.friction,
        )


class SignalConfig(_Strict):
    """A fixed-time traffic signal with its stop line at ``pos_m``: green, yellow, red, in
    that order from ``t + offset_s = 0`` (``convoy.road.signals``).  RSUs whose alert range
    reaches the line relay its SPAT."""

    pos_m: PosFloat
    green_s: PosFloat
    yellow_s: PosFloat
    red_s: PosFloat
    offset_s: NonNegFloat = 0.0

    def signal(self, k: int) -> FixedTimeSignal:
        """The road layer's signal, with id ``signal{k}``."""
        return FixedTimeSignal(
            f"signal{k}", self.pos_m, self.green_s, self.yellow_s, self.red_s, self.offset_s
        )


class OutputConfig(_Strict):
    """What the run records."""

    record_every_s: PosFloat | None = None


class Scenario(_Strict):
    """A microscopic platoon experiment."""

    name: str = "scenario"
    dt_s: Annotated[float, Field(gt=0, le=1)] = 0.1
    duration_s: PosFloat = 200.0
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    road: RoadConfig = RoadConfig()
    truck: TruckConfig = TruckConfig()
    platoon: PlatoonConfig = PlatoonConfig()
    leader: LeaderConfig = LeaderConfig()
    channel: ChannelConfig = ChannelConfig()
    weather: WeatherConfig = WeatherConfig()
    rsus: list[RsuConfig] = []
    hazards: list[HazardConfig] = []
    signals: list[SignalConfig] = []
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _fits(self) -> Scenario:
        steps = self.duration_s / self.dt_s
        if not math.isclose(steps, round(steps), rel_tol=0, abs_tol=1e-6):
            raise ValueError(
                f"duration_s ({self.duration_s}) must be a whole number of steps of "
                f"dt_s ({self.dt_s})"
            )
        seen: set[int] = set()
        last = self.platoon.trucks - 1
        for k, o in enumerate(self.platoon.overrides):
            if o.index > last or o.index in seen:
                why = "given twice" if o.index in seen else "beyond the platoon's last truck"
                allowed = f"1..{last}, each once" if last >= 1 else "none (a one-truck platoon)"
                raise ValueError(
                    f"platoon.overrides.{k}.index = {o.index}: {why} "
                    f"(platoon.trucks = {self.platoon.trucks}); allowed: {allowed}"
                )
            seen.add(o.index)
        road = self.road.length_m
        for k, r in enumerate(self.rsus):
            if r.pos_m > road:
                raise ValueError(
                    f"rsus.{k}.pos_m = {r.pos_m}: beyond the road end (road.length_m = {road})"
                )
        for k, hz in enumerate(self.hazards):
            if hz.end_m > road:
                raise ValueError(
                    f"hazards.{k}.end_m = {hz.end_m}: beyond the road end (road.length_m = {road})"
                )
        for k, sig in enumerate(self.signals):
            if sig.pos_m > road:
                raise ValueError(
                    f"signals.{k}.pos_m = {sig.pos_m}: beyond the road end "
                    f"(road.length_m = {road}); allowed: 0 < pos_m <= {road}"
                )
        return self

    @property
    def n_trucks(self) -> int:
        """Trucks in the scenario."""
        return self.platoon.trucks * self.platoon.count

    @property
    def n_steps(self) -> int:
        """Steps in the run."""
        return round(self.duration_s / self.dt_s)


def _describe(err: dict[str, Any]) -> str:
    # drop the discriminator tag pydantic inserts after a tagged union ("controller.acc.x")
    parts = [str(p) for p in err["loc"]]
    parts = [p for i, p in enumerate(parts) if not (i and parts[i - 1] == "controller")]
    loc = ".".join(parts)
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict) else "{…}"
    if len(shown) > 80:
        shown = shown[:77] + "…"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"field '{loc}' is required"
    if err["type"] == "union_tag_invalid":
        allowed = err.get("ctx", {}).get("expected_tags", "")
        tag = err.get("ctx", {}).get("tag", "")
        return f"field '{loc}.model' = {tag!r}: not a known model; allowed: {allowed}"
    if err["type"] == "extra_forbidden":
        return f"field '{loc}' is not a known field (value {shown})"
    if loc:
        return f"field '{loc}' = {shown}: {msg}"
    return msg


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    """Validate a mapping into a ``Scenario``.

    Raises:
        ScenarioError: naming the first wrong field, its value and what is allowed.
    """
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        lines = [_describe(dict(e)) for e in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise ScenarioError(f"{source}: " + "; ".join(lines) + more) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a YAML scenario file.

    Raises:
        ScenarioError: for a missing or unreadable file, malformed YAML or a wrong field.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{p}: cannot read scenario file ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ScenarioError(f"{p}: malformed YAML{where}: {problem}") from None
    return parse_scenario(data, str(p))
