"""Powertrains and energy: battery-electric and diesel, as flat float64 parameter vectors.

Each powertrain record (:class:`ElectricPowertrain`, :class:`DieselPowertrain`) converts once,
at the boundary, to a ``(PT_VECTOR_LEN,)`` float64 vector with :meth:`to_vector`. Kernels read
it by the index constants below, so one ``(n_trucks, PT_VECTOR_LEN)`` matrix can hold a mixed
fleet. Slot ``PT_KIND`` holds the kind code (``KIND_ELECTRIC`` or ``KIND_DIESEL``); slots 1-5
mean the same for both kinds; slots 6-12 depend on the kind (diesel leaves 9-12 at zero).

Energy in one step (wheel power ``P_w = F_tr * v``, see :mod:`convoy.vehicle.truck`):

- electric: ``P_w / eta_dt`` when driving; when braking the motor returns
  ``eta_regen * |P_w|``, capped at the regen power limit, and the friction brakes take the rest.
  Auxiliaries and cabin/battery heating are drawn all the time. In the cold, the battery's
  internal losses grow: drawing costs ``P / eta_cold``, charging stores ``P * eta_cold``.
- diesel (Willans line): ``P_fuel = P_idle + (P_w / eta_dt + P_aux) / eta_marginal`` while
  driving or standing; zero while braking (overrun fuel cut-off, the road turns the engine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

from convoy.vehicle.truck import (
    ORDOS_AIR_DENSITY_KGPM3,
    grade_angle,
    road_load_angle_n,
    tractive_force_angle_n,
)

# Kind codes stored in slot PT_KIND.
KIND_ELECTRIC = 0
KIND_DIESEL = 1

# Slots shared by both kinds.
PT_KIND = 0
PT_POWER_LIMIT_KW = 1  # motor (electric) or engine (diesel) power limit [kW]
PT_DRIVETRAIN_EFFICIENCY = 2  # battery-to-wheel (electric) or flywheel-to-wheel (diesel) [-]
PT_AUX_KW = 3  # auxiliary load, always on [kW]
PT_ROTATING_MASS_FACTOR = 4  # equivalent-mass factor for rotating inertia [-]
PT_FULL_POWER_SPEED_MPS = 5  # below this speed tractive force is capped at P / this [m/s]
# Electric slots.
EL_BATTERY_KWH = 6  # pack energy [kWh]
EL_REGEN_EFFICIENCY = 7  # wheel-to-battery share of braking power recovered [-]
EL_REGEN_LIMIT_KW = 8  # electrical regen power limit [kW]
EL_HEATING_KW_PER_K = 9  # cabin and pack heating per kelvin below EL_COMFORT_C [kW/K]
EL_COMFORT_C = 10  # ambient temperature below which heating starts [°C]
EL_BATTERY_COLD_LOSS_PER_K = 11  # battery efficiency lost per kelvin below EL_BATTERY_REF_C
EL_BATTERY_REF_C = 12  # ambient temperature below which the battery loses efficiency [°C]
# Diesel slots.
DI_IDLE_FUEL_KW = 6  # Willans intercept: fuel power at zero engine output [kW]
DI_MARGINAL_EFFICIENCY = 7  # Willans slope: engine output per unit of extra fuel power [-]
DI_FUEL_KWH_PER_L = 8  # fuel lower heating value [kWh/L]
PT_VECTOR_LEN = 13

# Road diesel lower heating value: 35.9 MJ/L (issue figure; Argonne GREET's 128,488 Btu/gal
# gives 35.8 MJ/L). 35.9 / 3.6 = 9.97 kWh/L.
DIESEL_LHV_MJ_PER_L = 35.9
DIESEL_KWH_PER_L = DIESEL_LHV_MJ_PER_L / 3.6

# The cold-efficiency factor is floored here so that temperatures far outside the calibrated
# range (about -30 °C, DESIGN.md's Ordos record low is -31 °C) cannot divide by ~0.
_MIN_BATTERY_COLD_EFFICIENCY = 0.5

_W_PER_KW = 1_000.0
_J_PER_KWH = 3.6e6


def _check_positive(record: str, name: str, value: float) -> None:
    if not (value > 0.0 and not math.isnan(value)):
        raise ValueError(f"{record}.{name} = {value!r}; must be > 0")


def _check_fraction(record: str, name: str, value: float) -> None:
    if not (0.0 < value <= 1.0):
        raise ValueError(f"{record}.{name} = {value!r}; must be in (0, 1]")


def _check_nonnegative(record: str, name: str, value: float) -> None:
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{record}.{name} = {value!r}; must be a finite number >= 0")


@dataclass(frozen=True, slots=True)
class ElectricPowertrain:
    """Battery-electric tractor powertrain.

    Cold-weather calibration: with heating of 0.3 kW/K below 18 °C (11.4 kW at -20 °C: cab
    heater plus pack heating) and 0.2 %/K battery efficiency lost below 15 °C (93 % at
    -20 °C), a loaded 49 t truck at a steady 60 km/h on the flat uses about 23 % more energy
    per km at -20 °C than at +20 °C (18 % at 80 km/h, 34 % at 40 km/h). That lies inside the
    15-40 % winter losses in DESIGN.md "Truck" and near costs.md §6's suggested +25-35 %
    kWh/km for an Ordos winter; heating is ~13 % of the energy at -20 °C, 60 km/h, against
    the 15-25 % reported for cab heating (costs.md §6). Denser cold air adds to this when the
    caller passes a temperature-dependent air density (``isa_air_density_kgpm3``).

    Attributes:
        battery_kwh: Pack energy [kWh].
        motor_power_kw: Motor power limit [kW].
        drivetrain_efficiency: Battery-to-wheel efficiency when driving [-].
        regen_efficiency: Share of braking power at the wheels returned to the battery [-].
        regen_limit_kw: Electrical regen power limit [kW]; friction brakes take the excess.
        aux_kw: Auxiliary load (air compressor, steering pump, coolant pumps, 24 V) [kW].
        heating_kw_per_k: Cabin and pack heating per kelvin below ``comfort_c`` [kW/K].
        comfort_c: Ambient temperature below which heating starts [°C].
        battery_cold_loss_per_k: Battery efficiency lost per kelvin below
            ``battery_ref_c`` [1/K].
        battery_ref_c: Ambient temperature below which the battery loses efficiency [°C].
        rotating_mass_factor: Equivalent-mass factor for rotating inertia [-].
        full_power_speed_mps: Speed from which full power is available; below it tractive
            force is capped at ``power / full_power_speed_mps`` [m/s].
    """

    KIND: ClassVar[int] = KIND_ELECTRIC

    # costs.md §3 / DESIGN.md: 141/282 kWh swap packs typical in China; XCMG E7-49T carries 282
    battery_kwh: float = 282.0
    # XCMG E7-49T, 49 t GCW e-tractor: 482 cv = 354.5 kW, 2,000 Nm (salaodocarro.com.br, 2023)
    motor_power_kw: float = 355.0
    # Hoekstra, "Electric trucks ch. 2: Motor" (livinglabsmartcharging.nl): electric > 85 %
    drivetrain_efficiency: float = 0.85
    # ewheelsdaily.com, "Regenerative braking in heavy-duty EVs": up to 70 % recovered
    regen_efficiency: float = 0.70
    # 1C of the 282 kWh pack; costs.md §3 (NewsChina): ~300 kWh packs take 120-480 kW
    regen_limit_kw: float = 282.0
    # estimate: compressor, steering, pumps and 24 V loads of an e-tractor; no source found
    aux_kw: float = 3.0
    # calibrated to DESIGN.md's 15-40 % winter loss, see class docstring
    heating_kw_per_k: float = 0.3
    # conventional heating-degree-day base temperature
    comfort_c: float = 18.0
    # calibrated with heating_kw_per_k, see class docstring; costs.md §6: LFP at -20 °C ~70 %
    battery_cold_loss_per_k: float = 0.002
    # estimate: LFP packs perform at rating above ~15 °C
    battery_ref_c: float = 15.0
    # Gillespie 1992, Fundamentals of Vehicle Dynamics ch. 2: heavy trucks a few % above 1
    rotating_mass_factor: float = 1.04
    # estimate: full power from 18 km/h; ~60 kN start force, ~1.1 m/s² at 49 t
    full_power_speed_mps: float = 5.0

    def __post_init__(self) -> None:
        """Reject physically impossible values with a message naming the field."""
        rec = "ElectricPowertrain"
        for name in ("battery_kwh", "motor_power_kw", "regen_limit_kw", "full_power_speed_mps"):
            _check_positive(rec, name, getattr(self, name))
        for name in ("drivetrain_efficiency", "regen_efficiency"):
            _check_fraction(rec, name, getattr(self, name))
        for name in ("aux_kw", "heating_kw_per_k", "battery_cold_loss_per_k"):
            _check_nonnegative(rec, name, getattr(self, name))
        if not (1.0 <= self.rotating_mass_factor < 2.0):
            raise ValueError(
                f"{rec}.rotating_mass_factor = {self.rotating_mass_factor!r}; must be in [1, 2)"
            )
        for name in ("comfort_c", "battery_ref_c"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{rec}.{name} = {getattr(self, name)!r}; must be finite")

    def to_vector(self) -> NDArray[np.float64]:
        """The ``(PT_VECTOR_LEN,)`` float64 parameter vector read by the kernels."""
        vec = np.zeros(PT_VECTOR_LEN, dtype=np.float64)
        vec[PT_KIND] = self.KIND
        vec[PT_POWER_LIMIT_KW] = self.motor_power_kw
        vec[PT_DRIVETRAIN_EFFICIENCY] = self.drivetrain_efficiency
        vec[PT_AUX_KW] = self.aux_kw
        vec[PT_ROTATING_MASS_FACTOR] = self.rotating_mass_factor
        vec[PT_FULL_POWER_SPEED_MPS] = self.full_power_speed_mps
        vec[EL_BATTERY_KWH] = self.battery_kwh
        vec[EL_REGEN_EFFICIENCY] = self.regen_efficiency
        vec[EL_REGEN_LIMIT_KW] = self.regen_limit_kw
        vec[EL_HEATING_KW_PER_K] = self.heating_kw_per_k
        vec[EL_COMFORT_C] = self.comfort_c
        vec[EL_BATTERY_COLD_LOSS_PER_K] = self.battery_cold_loss_per_k
        vec[EL_BATTERY_REF_C] = self.battery_ref_c
        return vec


@dataclass(frozen=True, slots=True)
class DieselPowertrain:
    """Diesel tractor powertrain with a Willans-line fuel map.

    Fuel power is ``idle_fuel_kw + engine_kw / marginal_efficiency``; with the defaults a
    loaded 49 t truck at 80 km/h on the flat burns about 33 L/100 km, inside costs.md §3's
    reported 33-44 L/100 km, and brake thermal efficiency is ~42 % at that 110 kW load.

    Attributes:
        engine_power_kw: Engine power limit at the flywheel [kW].
        drivetrain_efficiency: Flywheel-to-wheel efficiency (gearbox, axle) [-].
        aux_kw: Engine-driven auxiliary load [kW].
        idle_fuel_kw: Willans intercept, fuel power at zero engine output [kW].
        marginal_efficiency: Willans slope, engine output per unit of extra fuel power [-].
        fuel_kwh_per_l: Fuel lower heating value [kWh/L].
        rotating_mass_factor: Equivalent-mass factor for rotating inertia [-].
        full_power_speed_mps: Speed from which full power is available; below it tractive
            force is capped at ``power / full_power_speed_mps`` [m/s].
    """

    KIND: ClassVar[int] = KIND_DIESEL

    # costs.md §3: "480 hp truck, fully loaded"; 480 PS (马力) × 0.7355 kW/PS = 353 kW
    engine_power_kw: float = 353.0
    # estimate: AMT gearbox and drive axle, 0.92-0.95 at highway load; no source found
    drivetrain_efficiency: float = 0.93
    # estimate: same auxiliary load as the electric truck
    aux_kw: float = 3.0
    # US DOE VTO Fact #861 (2015): combination truck idles at 0.49 gal/h = 1.85 L/h × 9.97
    idle_fuel_kw: float = 18.5
    # production heavy diesels peak at 45-46 % BTE (Weichai 2024 statement, workboat.com)
    marginal_efficiency: float = 0.45
    # Road diesel LHV, see DIESEL_KWH_PER_L
    fuel_kwh_per_l: float = DIESEL_KWH_PER_L
    # Gillespie 1992, Fundamentals of Vehicle Dynamics ch. 2: heavy trucks a few % above 1
    rotating_mass_factor: float = 1.04
    # estimate: full power from 18 km/h (low gears); ~65 kN start force
    full_power_speed_mps: float = 5.0

    def __post_init__(self) -> None:
        """Reject physically impossible values with a message naming the field."""
        rec = "DieselPowertrain"
        for name in ("engine_power_kw", "fuel_kwh_per_l", "full_power_speed_mps"):
            _check_positive(rec, name, getattr(self, name))
        for name in ("drivetrain_efficiency", "marginal_efficiency"):
            _check_fraction(rec, name, getattr(self, name))
        for name in ("aux_kw", "idle_fuel_kw"):
            _check_nonnegative(rec, name, getattr(self, name))
        if not (1.0 <= self.rotating_mass_factor < 2.0):
            raise ValueError(
                f"{rec}.rotating_mass_factor = {self.rotating_mass_factor!r}; must be in [1, 2)"
            )

    def to_vector(self) -> NDArray[np.float64]:
        """The ``(PT_VECTOR_LEN,)`` float64 parameter vector read by the kernels."""
        vec = np.zeros(PT_VECTOR_LEN, dtype=np.float64)
        vec[PT_KIND] = self.KIND
        vec[PT_POWER_LIMIT_KW] = self.engine_power_kw
        vec[PT_DRIVETRAIN_EFFICIENCY] = self.drivetrain_efficiency
        vec[PT_AUX_KW] = self.aux_kw
        vec[PT_ROTATING_MASS_FACTOR] = self.rotating_mass_factor
        vec[PT_FULL_POWER_SPEED_MPS] = self.full_power_speed_mps
        vec[DI_IDLE_FUEL_KW] = self.idle_fuel_kw
        vec[DI_MARGINAL_EFFICIENCY] = self.marginal_efficiency
        vec[DI_FUEL_KWH_PER_L] = self.fuel_kwh_per_l
        return vec


@njit(cache=True, error_model="numpy")
def heating_kw(pt: NDArray[np.float64], ambient_c: float) -> float:
    """Cabin and pack heating load [kW] of an electric truck; 0 for diesel (waste heat)."""
    heating = pt[EL_HEATING_KW_PER_K] * max(0.0, pt[EL_COMFORT_C] - ambient_c)
    return heating if int(pt[PT_KIND]) == KIND_ELECTRIC else 0.0


@njit(cache=True, error_model="numpy")
def battery_cold_efficiency(pt: NDArray[np.float64], ambient_c: float) -> float:
    """Battery efficiency factor in the cold [-]: 1 at or above the reference temperature."""
    loss = pt[EL_BATTERY_COLD_LOSS_PER_K] * max(0.0, pt[EL_BATTERY_REF_C] - ambient_c)
    eta = max(1.0 - loss, _MIN_BATTERY_COLD_EFFICIENCY)
    return eta if int(pt[PT_KIND]) == KIND_ELECTRIC else 1.0


@njit(cache=True, error_model="numpy")
def step_energy_kwh(
    pt: NDArray[np.float64],
    mass_kg: float,
    speed_mps: float,
    accel_mps2: float,
    grade: float,
    drag_mult: float,
    cd_a_m2: float,
    crr: float,
    ambient_c: float,
    dt_s: float,
    air_density_kgpm3: float = ORDOS_AIR_DENSITY_KGPM3,
) -> float:
    """Energy one truck draws over one step, auxiliaries included.

    The kinematics are taken as given: the power limit is not applied here (use
    :func:`max_traction_accel_mps2` to bound the acceleration beforehand). For an exact
    kinetic-energy balance under constant acceleration, pass the mid-step speed.

    Args:
        pt: ``(PT_VECTOR_LEN,)`` powertrain vector from ``to_vector()``.
        mass_kg: Combination mass [kg].
        speed_mps: Speed during the step [m/s], >= 0.
        accel_mps2: Acceleration during the step [m/s²].
        grade: Road grade, rise over run [-].
        drag_mult: Platoon drag multiplier [-] (1 solo).
        cd_a_m2: Solo drag area Cd·A [m²].
        crr: Rolling resistance coefficient [-].
        ambient_c: Ambient temperature [°C].
        dt_s: Step length [s].
        air_density_kgpm3: Air density [kg/m³]; default ISA at Ordos' 1,400 m.

    Returns:
        Electric: energy drawn from the battery [kWh], negative when regeneration exceeds
        the auxiliary and heating loads. Diesel: fuel energy [kWh], never negative
        (litres = kWh / ``pt[DI_FUEL_KWH_PER_L]``).

    Raises:
        ValueError: if ``pt[PT_KIND]`` is not a known kind.
    """
    kind = int(pt[PT_KIND])
    if kind != KIND_ELECTRIC and kind != KIND_DIESEL:
        raise ValueError(
            "step_energy_kwh: pt[PT_KIND] must be KIND_ELECTRIC (0) or KIND_DIESEL (1)"
        )
    return step_energy_kwh_unchecked(
        pt,
        mass_kg,
        speed_mps,
        accel_mps2,
        grade,
        drag_mult,
        cd_a_m2,
        crr,
        ambient_c,
        dt_s,
        air_density_kgpm3,
    )


# Slots of ``energy_prep``'s tuple: what the energy of a step needs from the powertrain
# vector, the weather and the step length, computed once rather than per truck and step.
EP_PER_ETA_DRIVE = 0  # 1 / drivetrain efficiency [-]
EP_REGEN_EFFICIENCY = 1  # wheel-to-battery share of braking power [-]
EP_REGEN_FLOOR_W = 2  # minus the regen power limit [W]
EP_LOADS_W = 3  # auxiliaries and heating, electric [W]
EP_ETA_COLD = 4  # battery cold efficiency [-]
EP_PER_ETA_COLD = 5  # its reciprocal [-]
EP_KWH_PER_WS = 6  # step length over joules per kWh [kWh/W]
EP_AUX_W = 7  # auxiliaries, diesel [W]
EP_IDLE_FUEL_W = 8  # Willans intercept [W]
EP_PER_ETA_MARGINAL = 9  # 1 / Willans slope [-]
EP_ELECTRIC = 10  # 1 for electric, 0 for diesel
EP_ROTATING_MASS_FACTOR = 11  # [-]
EP_LEN = 12


@njit(cache=True, error_model="numpy")
def energy_prep(
    pt: NDArray[np.float64], ambient_c: float, dt_s: float
) -> tuple[float, float, float, float, float, float, float, float, float, float, float, float]:
    """What :func:`step_energy_kwh_prepared` needs, by the ``EP_*`` slots: the efficiencies
    and the step length as reciprocals and one factor (divisions are the slowest part of a
    step; the results move by at most an ulp), the loads at ``ambient_c``."""
    eta_cold = battery_cold_efficiency(pt, ambient_c)
    return (
        1.0 / pt[PT_DRIVETRAIN_EFFICIENCY],
        pt[EL_REGEN_EFFICIENCY],
        -pt[EL_REGEN_LIMIT_KW] * _W_PER_KW,
        (pt[PT_AUX_KW] + heating_kw(pt, ambient_c)) * _W_PER_KW,
        eta_cold,
        1.0 / eta_cold,
        dt_s / _J_PER_KWH,
        pt[PT_AUX_KW] * _W_PER_KW,
        pt[DI_IDLE_FUEL_KW] * _W_PER_KW,
        1.0 / pt[DI_MARGINAL_EFFICIENCY],
        1.0 if int(pt[PT_KIND]) == KIND_ELECTRIC else 0.0,
        pt[PT_ROTATING_MASS_FACTOR],
    )


@njit(cache=True, error_model="numpy")
def step_energy_kwh_prepared(
    prep: NDArray[np.float64] | tuple[float, ...],
    mass_kg: float,
    speed_mps: float,
    accel_mps2: float,
    cos_theta: float,
    sin_theta: float,
    drag_mult: float,
    cd_a_m2: float,
    crr: float,
    air_density_kgpm3: float = ORDOS_AIR_DENSITY_KGPM3,
) -> float:
    """:func:`step_energy_kwh_unchecked` from ``energy_prep``'s values (a tuple, or a row of
    them) and the road's angle (``truck.grade_angle``), to the same result: a kernel prepares
    both once per powertrain and road instead of once per truck and step.

    Without jumps (both kinds and both signs of power are computed and the answer selected),
    so that a loop over many trucks vectorises.
    """
    wheel_w = (
        tractive_force_angle_n(
            mass_kg,
            speed_mps,
            accel_mps2,
            cos_theta,
            sin_theta,
            drag_mult,
            cd_a_m2,
            crr,
            air_density_kgpm3,
            prep[EP_ROTATING_MASS_FACTOR],
        )
        * speed_mps
    )
    # Electric. Motor electrical power: traction, or regen capped at the limit (friction
    # takes the rest).
    traction_w = wheel_w * prep[EP_PER_ETA_DRIVE]
    regen_w = max(wheel_w * prep[EP_REGEN_EFFICIENCY], prep[EP_REGEN_FLOOR_W])
    motor_w = traction_w if wheel_w >= 0.0 else regen_w
    terminal_w = motor_w + prep[EP_LOADS_W]
    # Cold battery: internal losses on the way out and on the way in.
    battery_w = (
        terminal_w * prep[EP_PER_ETA_COLD] if terminal_w > 0.0 else terminal_w * prep[EP_ETA_COLD]
    )
    electric_kwh = battery_w * prep[EP_KWH_PER_WS]
    # Diesel, with the overrun fuel cut-off while braking.
    engine_w = traction_w + prep[EP_AUX_W]
    fuel_w = prep[EP_IDLE_FUEL_W] + engine_w * prep[EP_PER_ETA_MARGINAL]
    diesel_kwh = fuel_w * prep[EP_KWH_PER_WS] if wheel_w >= 0.0 else 0.0
    return electric_kwh if prep[EP_ELECTRIC] > 0.0 else diesel_kwh


@njit(cache=True, error_model="numpy")
def step_energy_kwh_unchecked(
    pt: NDArray[np.float64],
    mass_kg: float,
    speed_mps: float,
    accel_mps2: float,
    grade: float,
    drag_mult: float,
    cd_a_m2: float,
    crr: float,
    ambient_c: float,
    dt_s: float,
    air_density_kgpm3: float = ORDOS_AIR_DENSITY_KGPM3,
) -> float:
    """:func:`step_energy_kwh` for a powertrain vector known to be valid, in kWh.

    Without the check, and without jumps, so that a loop over many trucks vectorises; where
    it is inlined into such a loop with loop-invariant ``pt`` (a tuple), the preparation is
    hoisted out of it.
    """
    cos_theta, sin_theta = grade_angle(grade)
    return step_energy_kwh_prepared(
        energy_prep(pt, ambient_c, dt_s),
        mass_kg,
        speed_mps,
        accel_mps2,
        cos_theta,
        sin_theta,
        drag_mult,
        cd_a_m2,
        crr,
        air_density_kgpm3,
    )


@njit(cache=True, error_model="numpy")
def max_traction_accel_mps2(
    pt: NDArray[np.float64],
    mass_kg: float,
    speed_mps: float,
    grade: float,
    drag_mult: float,
    cd_a_m2: float,
    crr: float,
    air_density_kgpm3: float = ORDOS_AIR_DENSITY_KGPM3,
) -> float:
    """Largest acceleration the motor or engine power allows at this speed.

    Wheel power available is ``power_limit * eta_dt`` (electric) or
    ``(power_limit - aux) * eta_dt`` (diesel, whose engine also drives the auxiliaries);
    below ``PT_FULL_POWER_SPEED_MPS`` the tractive force is held at its value there.

    Args:
        pt: ``(PT_VECTOR_LEN,)`` powertrain vector.
        mass_kg: Combination mass [kg].
        speed_mps: Speed [m/s], >= 0.
        grade: Road grade, rise over run [-].
        drag_mult: Platoon drag multiplier [-].
        cd_a_m2: Solo drag area Cd·A [m²].
        crr: Rolling resistance coefficient [-].
        air_density_kgpm3: Air density [kg/m³].

    Returns:
        Acceleration [m/s²]; negative where full power cannot hold the speed (steep climb).

    Raises:
        ValueError: if ``pt[PT_KIND]`` is not a known kind.
    """
    cos_theta, sin_theta = grade_angle(grade)
    return max_traction_accel_angle(
        wheel_power_max_w(pt),
        pt[PT_FULL_POWER_SPEED_MPS],
        pt[PT_ROTATING_MASS_FACTOR],
        mass_kg,
        speed_mps,
        cos_theta,
        sin_theta,
        drag_mult,
        cd_a_m2,
        crr,
        air_density_kgpm3,
    )


@njit(cache=True, error_model="numpy")
def wheel_power_max_w(pt: NDArray[np.float64]) -> float:
    """Most power the powertrain puts on the wheels [W]: ``power_limit * eta_dt``
    (electric) or ``(power_limit - aux) * eta_dt`` (diesel).

    Raises:
        ValueError: if ``pt[PT_KIND]`` is not a known kind.
    """
    kind = int(pt[PT_KIND])
    if kind == KIND_ELECTRIC:
        return pt[PT_POWER_LIMIT_KW] * _W_PER_KW * pt[PT_DRIVETRAIN_EFFICIENCY]
    if kind == KIND_DIESEL:
        engine_net_kw = max(pt[PT_POWER_LIMIT_KW] - pt[PT_AUX_KW], 0.0)
        return engine_net_kw * _W_PER_KW * pt[PT_DRIVETRAIN_EFFICIENCY]
    raise ValueError(
        "max_traction_accel_mps2: pt[PT_KIND] must be KIND_ELECTRIC (0) or KIND_DIESEL (1)"
    )


@njit(cache=True, error_model="numpy")
def max_traction_accel_angle(
    wheel_max_w: float,
    full_power_speed_mps: float,
    rotating_mass_factor: float,
    mass_kg: float,
    speed_mps: float,
    cos_theta: float,
    sin_theta: float,
    drag_mult: float,
    cd_a_m2: float,
    crr: float,
    air_density_kgpm3: float = ORDOS_AIR_DENSITY_KGPM3,
) -> float:
    """:func:`max_traction_accel_mps2` from :func:`wheel_power_max_w` and the road's angle
    (``truck.grade_angle``), prepared once per powertrain and road, to the same result."""
    force_max_n = wheel_max_w / max(speed_mps, full_power_speed_mps)
    road_n = road_load_angle_n(
        mass_kg, speed_mps, cos_theta, sin_theta, drag_mult, cd_a_m2, crr, air_density_kgpm3
    )
    return (force_max_n - road_n) / (rotating_mass_factor * mass_kg)


@njit(cache=True)
def _trajectory_energy_flat(
    pt: NDArray[np.float64],
    mass_kg: NDArray[np.float64],
    speed_mps: NDArray[np.float64],
    accel_mps2: NDArray[np.float64],
    grade: NDArray[np.float64],
    drag_mult: NDArray[np.float64],
    cd_a_m2: float,
    crr: float,
    ambient_c: NDArray[np.float64],
    dt_s: float,
    air_density_kgpm3: float,
) -> NDArray[np.float64]:
    out = np.empty(speed_mps.size, dtype=np.float64)
    for i in range(speed_mps.size):
        out[i] = step_energy_kwh(
            pt,
            mass_kg[i],
            speed_mps[i],
            accel_mps2[i],
            grade[i],
            drag_mult[i],
            cd_a_m2,
            crr,
            ambient_c[i],
            dt_s,
            air_density_kgpm3,
        )
    return out


def trajectory_energy_kwh(
    pt: NDArray[np.float64],
    mass_kg: ArrayLike,
    speed_mps: ArrayLike,
    accel_mps2: ArrayLike,
    grade: ArrayLike,
    drag_mult: ArrayLike,
    cd_a_m2: float,
    crr: float,
    ambient_c: ArrayLike,
    dt_s: float,
    air_density_kgpm3: float = ORDOS_AIR_DENSITY_KGPM3,
) -> NDArray[np.float64]:
    """Per-step energy of one truck over a time series (:func:`step_energy_kwh` per step).

    Args:
        pt: ``(PT_VECTOR_LEN,)`` powertrain vector.
        mass_kg: Mass [kg], scalar or (n,).
        speed_mps: (n,) speed during each step [m/s] (mid-step for exact balances).
        accel_mps2: (n,) acceleration during each step [m/s²].
        grade: Grade, rise over run [-], scalar or (n,).
        drag_mult: Platoon drag multiplier [-], scalar or (n,).
        cd_a_m2: Solo drag area Cd·A [m²].
        crr: Rolling resistance coefficient [-].
        ambient_c: Ambient temperature [°C], scalar or (n,).
        dt_s: Step length [s].
        air_density_kgpm3: Air density [kg/m³].

    Returns:
        (n,) energy per step [kWh]; ``.sum()`` is the trip total.
    """
    arrays = np.broadcast_arrays(
        *(
            np.asarray(x, dtype=np.float64)
            for x in (mass_kg, speed_mps, accel_mps2, grade, drag_mult, ambient_c)
        )
    )
    m, v, a, g, d, t = (np.ascontiguousarray(x).ravel() for x in arrays)
    pt_c = np.ascontiguousarray(pt, dtype=np.float64)
    return _trajectory_energy_flat(
        pt_c, m, v, a, g, d, float(cd_a_m2), float(crr), t, float(dt_s), float(air_density_kgpm3)
    )


def energy_per_km(energy_kwh: float, distance_m: float) -> float:
    """Energy intensity [kWh/km] of a trip.

    Args:
        energy_kwh: Energy used over the trip [kWh].
        distance_m: Distance driven [m], > 0.
    """
    if not distance_m > 0.0:
        raise ValueError(f"distance_m = {distance_m!r}; must be > 0")
    return energy_kwh / (distance_m / 1_000.0)


def energy_per_tonne_km(
    energy_kwh: float, distance_m: float, gross_mass_kg: float, empty_mass_kg: float
) -> float:
    """Energy per payload tonne-km [kWh/(t·km)], payload = (gross - empty mass) / 1000.

    Args:
        energy_kwh: Energy used over the trip [kWh].
        distance_m: Distance driven [m], > 0.
        gross_mass_kg: Combination mass on the trip [kg].
        empty_mass_kg: Unladen combination mass [kg]; must be below ``gross_mass_kg``
            (an empty run carries no tonne-km, so its intensity is undefined).
    """
    payload_t = (gross_mass_kg - empty_mass_kg) / 1_000.0
    if not payload_t > 0.0:
        raise ValueError(
            f"payload = gross_mass_kg - empty_mass_kg = {payload_t * 1_000.0!r} kg; "
            "must be > 0 (an empty run has no tonne-km)"
        )
    return energy_per_km(energy_kwh, distance_m) / payload_t


def diesel_litres(energy_kwh: float, fuel_kwh_per_l: float = DIESEL_KWH_PER_L) -> float:
    """Fuel volume [L] for a diesel fuel energy [kWh] (default LHV 35.9 MJ/L = 9.97 kWh/L)."""
    return energy_kwh / fuel_kwh_per_l
