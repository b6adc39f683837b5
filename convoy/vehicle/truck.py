"""Truck body: mass, size and the longitudinal road load of a 6-axle tractor-semitrailer.

Road load on a grade ``theta = atan(grade)`` at speed ``v``::

    F_road = crr * m * g * cos(theta)            rolling
           + m * g * sin(theta)                  grade (negative downhill)
           + 0.5 * rho * CdA * drag_mult * v**2  aerodynamic

and the tractive force needed to follow an acceleration ``a`` is
``F_tr = rotating_mass_factor * m * a + F_road``. All forces are at the wheels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from numba import njit

# CGPM 1901 standard gravity; local g in Ordos (~40° N, ~1.4 km) is ~9.80, 0.1 % lower.
GRAVITY_MPS2 = 9.80665

# ISO 2533:1975 standard atmosphere, troposphere layer.
ISA_SEA_LEVEL_PRESSURE_PA = 101_325.0
ISA_SEA_LEVEL_TEMPERATURE_K = 288.15
ISA_LAPSE_RATE_KPM = 0.0065
ISA_PRESSURE_EXPONENT = 5.25588  # g0 * M / (R * L), ISO 2533:1975
DRY_AIR_GAS_CONSTANT_JPKGK = 287.053  # ISO 2533:1975 specific gas constant of dry air
ZERO_CELSIUS_K = 273.15  # SI definition of the Celsius scale

# DESIGN.md: the Ordos freight network runs at 850-2,150 m; 1,400 m is a representative
# plateau elevation for its main corridors (estimate within that range).
ORDOS_ALTITUDE_M = 1_400.0


def isa_air_density_kgpm3(altitude_m: float, ambient_c: float | None = None) -> float:
    """Dry-air density at an altitude, from ISA pressure and the actual air temperature.

    Args:
        altitude_m: Geometric altitude above sea level [m], troposphere (< 11 km).
        ambient_c: Air temperature [°C]; ``None`` uses the ISA temperature at that altitude.

    Returns:
        Air density [kg/m³]. At 1,400 m and ISA temperature (5.9 °C) it is about 1.069;
        at -20 °C about 1.18, since cold air is denser.
    """
    isa_temperature_k = ISA_SEA_LEVEL_TEMPERATURE_K - ISA_LAPSE_RATE_KPM * altitude_m
    pressure_pa = (
        ISA_SEA_LEVEL_PRESSURE_PA
        * (isa_temperature_k / ISA_SEA_LEVEL_TEMPERATURE_K) ** ISA_PRESSURE_EXPONENT
    )
    temperature_k = isa_temperature_k if ambient_c is None else ambient_c + ZERO_CELSIUS_K
    return pressure_pa / (DRY_AIR_GAS_CONSTANT_JPKGK * temperature_k)


# ISO 2533:1975 at ORDOS_ALTITUDE_M and ISA temperature: ≈ 1.069 kg/m³ (13 % below sea level).
ORDOS_AIR_DENSITY_KGPM3 = isa_air_density_kgpm3(ORDOS_ALTITUDE_M)


@dataclass(frozen=True, slots=True)
class TruckSpec:
    """Body of a 6-axle tractor-semitrailer (China's 49 t class).

    Attributes:
        gross_mass_loaded_kg: Gross combination mass, fully loaded [kg].
        empty_mass_kg: Unladen combination mass [kg].
        length_m: Overall length, bumper to bumper [m].
        drag_coefficient: Solo aerodynamic drag coefficient Cd [-].
        frontal_area_m2: Frontal area A [m²].
        rolling_resistance: Rolling resistance coefficient crr [-].
        air_density_kgpm3: Air density used for the aerodynamic drag [kg/m³].
    """

    gross_mass_loaded_kg: float = 49_000.0  # DESIGN.md "Truck": GB 1589-2016 49 t limit
    empty_mass_kg: float = 18_000.0  # DESIGN.md "Truck": about 18 t empty
    length_m: float = 16.5  # DESIGN.md "Truck"
    drag_coefficient: float = 0.6  # DESIGN.md "Truck": Cd about 0.6
    frontal_area_m2: float = 10.0  # DESIGN.md "Truck": about 10 m²
    rolling_resistance: float = 0.006  # DESIGN.md "Truck": US averages 0.0045-0.0077
    air_density_kgpm3: float = ORDOS_AIR_DENSITY_KGPM3  # ISO 2533 ISA at 1,400 m, see above

    def __post_init__(self) -> None:
        """Reject physically impossible values with a message naming the field."""
        positive = {
            "gross_mass_loaded_kg": self.gross_mass_loaded_kg,
            "empty_mass_kg": self.empty_mass_kg,
            "length_m": self.length_m,
            "drag_coefficient": self.drag_coefficient,
            "frontal_area_m2": self.frontal_area_m2,
            "air_density_kgpm3": self.air_density_kgpm3,
        }
        for name, value in positive.items():
            if not (value > 0.0 and math.isfinite(value)):
                raise ValueError(f"TruckSpec.{name} = {value!r}; must be a finite number > 0")
        if not (0.0 <= self.rolling_resistance < 1.0):
            raise ValueError(
                f"TruckSpec.rolling_resistance = {self.rolling_resistance!r}; must be in [0, 1)"
            )
        if self.empty_mass_kg > self.gross_mass_loaded_kg:
            raise ValueError(
                f"TruckSpec.empty_mass_kg = {self.empty_mass_kg!r} exceeds "
                f"gross_mass_loaded_kg = {self.gross_mass_loaded_kg!r}; must be <= it"
            )

    @property
    def cd_a_m2(self) -> float:
        """Drag area Cd·A [m²]."""
        return self.drag_coefficient * self.frontal_area_m2

    @property
    def payload_kg(self) -> float:
        """Payload when fully loaded [kg]: gross minus empty mass."""
        return self.gross_mass_loaded_kg - self.empty_mass_kg

    def mass_kg(self, load_fraction: float = 1.0) -> float:
        """Combination mass at a fill level [kg].

        Args:
            load_fraction: Payload carried as a share of the full payload, in [0, 1].
        """
        if not (0.0 <= load_fraction <= 1.0):
            raise ValueError(f"load_fraction = {load_fraction!r}; must be in [0, 1]")
        return self.empty_mass_kg + load_fraction * self.payload_kg


@njit(cache=True, error_model="numpy")
def road_load_force_n(
    mass_kg: float,
    speed_mps: float,
    grade: float,
    drag_mult: float,
    cd_a_m2: float,
    crr: float,
    air_density_kgpm3: float,
) -> float:
    """Resistance at the wheels: rolling + grade + aerodynamic drag.

    Args:
        mass_kg: Combination mass [kg].
        speed_mps: Forward speed [m/s], >= 0.
        grade: Road grade as rise over run [-]; 0.03 is a 3 % climb, negative downhill.
        drag_mult: Platoon drag multiplier [-] (1 solo), see :mod:`convoy.vehicle.aero`.
        cd_a_m2: Solo drag area Cd·A [m²].
        crr: Rolling resistance coefficient [-].
        air_density_kgpm3: Air density [kg/m³].

    Returns:
        Road-load force [N]; negative on a downgrade steep enough to push the truck.
    """
    cos_theta, sin_theta = grade_angle(grade)
    return road_load_angle_n(
        mass_kg, speed_mps, cos_theta, sin_theta, drag_mult, cd_a_m2, crr, air_density_kgpm3
    )


@njit(cache=True, error_model="numpy")
def grade_angle(grade: float) -> tuple[float, float]:
    """(cos, sin) of the road's angle for a grade given as rise over run [-]: cos for the
    normal load, sin for the along-road weight."""
    cos_theta = 1.0 / math.sqrt(1.0 + grade * grade)
    return cos_theta, grade * cos_theta


@njit(cache=True, error_model="numpy")
def road_load_angle_n(
    mass_kg: float,
    speed_mps: float,
    cos_theta: float,
    sin_theta: float,
    drag_mult: float,
    cd_a_m2: float,
    crr: float,
    air_density_kgpm3: float,
) -> float:
    """:func:`road_load_force_n` with the road's angle given by :func:`grade_angle`: a
    kernel computes it once per road rather than once per truck and step (a square root and
    a division), to the same result."""
    weight_n = mass_kg * GRAVITY_MPS2
    rolling_n = crr * weight_n * cos_theta
    grade_n = weight_n * sin_theta
    # speed * |speed| keeps drag opposing motion should a caller pass a tiny negative speed.
    aero_n = 0.5 * air_density_kgpm3 * cd_a_m2 * drag_mult * speed_mps * abs(speed_mps)
    return rolling_n + grade_n + aero_n


@njit(cache=True, error_model="numpy")
def tractive_force_n(
    mass_kg: float,
    speed_mps: float,
    accel_mps2: float,
    grade: float,
    drag_mult: float,
    cd_a_m2: float,
    crr: float,
    air_density_kgpm3: float,
    rotating_mass_factor: float,
) -> float:
    """Force at the wheels needed to follow an acceleration: inertia + road load.

    Args:
        mass_kg: Combination mass [kg].
        speed_mps: Forward speed [m/s], >= 0.
        accel_mps2: Longitudinal acceleration [m/s²].
        grade: Road grade, rise over run [-].
        drag_mult: Platoon drag multiplier [-].
        cd_a_m2: Solo drag area Cd·A [m²].
        crr: Rolling resistance coefficient [-].
        air_density_kgpm3: Air density [kg/m³].
        rotating_mass_factor: Equivalent-mass factor for wheel and driveline inertia [-]
            (>= 1).

    Returns:
        Tractive force [N]; negative when the truck must brake (regen and/or friction).
    """
    cos_theta, sin_theta = grade_angle(grade)
    return tractive_force_angle_n(
        mass_kg,
        speed_mps,
        accel_mps2,
        cos_theta,
        sin_theta,
        drag_mult,
        cd_a_m2,
        crr,
        air_density_kgpm3,
        rotating_mass_factor,
    )


@njit(cache=True, error_model="numpy")
def tractive_force_angle_n(
    mass_kg: float,
    speed_mps: float,
    accel_mps2: float,
    cos_theta: float,
    sin_theta: float,
    drag_mult: float,
    cd_a_m2: float,
    crr: float,
    air_density_kgpm3: float,
    rotating_mass_factor: float,
) -> float:
    """:func:`tractive_force_n` with the road's angle given by :func:`grade_angle`."""
    inertia_n = rotating_mass_factor * mass_kg * accel_mps2
    return inertia_n + road_load_angle_n(
        mass_kg, speed_mps, cos_theta, sin_theta, drag_mult, cd_a_m2, crr, air_density_kgpm3
    )
