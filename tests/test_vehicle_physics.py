"""Physics checks for convoy.vehicle: drag table, road load, powertrain energy.

Each test checks a known outcome: a published figure (DESIGN.md, costs.md), an analytic
value, or an energy balance.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from convoy.vehicle.aero import (
    HR_G0_M,
    HR_ROW_2_FOLLOWER,
    HR_ROW_2_LEADER,
    HR_ROW_4_MIDDLE,
    HR_ROW_4_TRAIL,
    HUSSEIN_RAKHA_TABLE,
    drag_multiplier,
    drag_multiplier_array,
    drag_multiplier_row,
    drag_row,
    platoon_drag_multipliers,
)
from convoy.vehicle.energy import (
    DI_FUEL_KWH_PER_L,
    DI_IDLE_FUEL_KW,
    DI_MARGINAL_EFFICIENCY,
    EL_REGEN_EFFICIENCY,
    EL_REGEN_LIMIT_KW,
    KIND_DIESEL,
    KIND_ELECTRIC,
    PT_AUX_KW,
    PT_DRIVETRAIN_EFFICIENCY,
    PT_KIND,
    PT_POWER_LIMIT_KW,
    PT_VECTOR_LEN,
    DieselPowertrain,
    ElectricPowertrain,
    diesel_litres,
    energy_per_km,
    energy_per_tonne_km,
    max_traction_accel_mps2,
    step_energy_kwh,
    trajectory_energy_kwh,
)
from convoy.vehicle.truck import (
    GRAVITY_MPS2,
    ORDOS_AIR_DENSITY_KGPM3,
    TruckSpec,
    road_load_force_n,
)

TRUCK = TruckSpec()
LOADED_KG = TRUCK.gross_mass_loaded_kg
EMPTY_KG = TRUCK.empty_mass_kg
CDA = TRUCK.cd_a_m2
CRR = TRUCK.rolling_resistance
RHO = TRUCK.air_density_kgpm3
EV = ElectricPowertrain().to_vector()
DIESEL = DieselPowertrain().to_vector()
MILD_C = 20.0  # above the heating and battery thresholds: no cold penalty


def steady_kwh_per_km(
    pt: np.ndarray,
    mass_kg: float,
    speed_kmh: float,
    grade: float = 0.0,
    drag_mult: float = 1.0,
    ambient_c: float = MILD_C,
) -> float:
    """Energy per km at a steady speed: one hour-long step divided by the km covered."""
    speed_mps = speed_kmh / 3.6
    energy = step_energy_kwh(
        pt, mass_kg, speed_mps, 0.0, grade, drag_mult, CDA, CRR, ambient_c, 3600.0, RHO
    )
    return energy_per_km(energy, speed_mps * 3600.0)


# ---------------------------------------------------------------- platoon aerodynamics


def test_four_truck_multipliers_match_design_check_figures_at_10m() -> None:
    # DESIGN.md: at a 10 m gap about 0.98, 0.77, 0.72 (leader, middle, trail).
    mult = platoon_drag_multipliers([10.0, 10.0, 10.0])
    np.testing.assert_allclose(mult, [0.98, 0.77, 0.77, 0.72], atol=0.01)
    # The scalar kernel and the array wrapper agree.
    scalar = [drag_multiplier(4, k, 10.0) for k in range(4)]
    np.testing.assert_array_equal(mult, scalar)


def test_aero_energy_scales_exactly_with_multiplier_in_4_truck_platoon() -> None:
    # Energy balance: aerodynamic energy = E(mult) - E(mult = 0), and must be mult x solo's.
    speed_kmh = 80.0
    no_aero = steady_kwh_per_km(EV, LOADED_KG, speed_kmh, drag_mult=0.0)
    solo_aero = steady_kwh_per_km(EV, LOADED_KG, speed_kmh, drag_mult=1.0) - no_aero
    # Solo aero at the wheels, by hand: 0.5 rho CdA v^2 [N] = J/m -> kWh/km via the efficiency.
    speed_mps = speed_kmh / 3.6
    solo_aero_by_hand = (
        0.5 * RHO * CDA * speed_mps**2 * 1000.0 / 3.6e6 / EV[PT_DRIVETRAIN_EFFICIENCY]
    )
    assert solo_aero == pytest.approx(solo_aero_by_hand, rel=1e-9)
    shares = []
    for mult in platoon_drag_multipliers([10.0, 10.0, 10.0]):
        aero = steady_kwh_per_km(EV, LOADED_KG, speed_kmh, drag_mult=float(mult)) - no_aero
        assert aero == pytest.approx(mult * solo_aero, rel=1e-9)
        shares.append(aero / solo_aero)
    np.testing.assert_allclose(shares, [0.98, 0.77, 0.77, 0.72], atol=0.01)


def test_two_truck_multiplier_is_one_at_and_beyond_g0_and_below_one_inside() -> None:
    for position, row in ((0, HR_ROW_2_LEADER), (1, HR_ROW_2_FOLLOWER)):
        g0_m = float(HUSSEIN_RAKHA_TABLE[row, HR_G0_M])
        assert drag_multiplier(2, position, g0_m) == 1.0
        assert drag_multiplier(2, position, g0_m * 1.5) == 1.0
        assert drag_multiplier(2, position, 1e6) == 1.0
        assert drag_multiplier(2, position, 0.5 * g0_m) < 1.0
    # Hussein & Rakha's 2-truck follower at 10 m: 0.2241 * 10**0.1369 + 0.5016.
    assert drag_multiplier(2, 1, 10.0) == pytest.approx(0.2241 * 10.0**0.1369 + 0.5016)


def test_tabulated_multiplier_follows_the_power_law() -> None:
    """The multiplier is read from a table of the fit (a libm pow per truck and step cost
    more than the rest of the step); between 1 m and 500 m it stays within 1e-6 of
    a*h**b + c, and it is exact at the knots' neighbours g0 and 1 (tested above)."""
    gaps = np.concatenate([np.linspace(1.0, 500.0, 99_991), [2.5, 10.0, 25.0, 49.99, 50.0]])
    for size, position in ((2, 0), (2, 1), (4, 0), (4, 1), (4, 3)):
        row = drag_row(size, position)
        a, b, c, g0_m = HUSSEIN_RAKHA_TABLE[row]
        exact = np.where(gaps < g0_m, np.minimum(a * gaps**b + c, 1.0), 1.0)
        table = np.array([drag_multiplier(size, position, g) for g in gaps])
        assert np.abs(table - exact).max() < 1e-6, (size, position)
        # and the vectorisable form the fast engine step calls agrees to the bit
        pairs = zip(gaps[::97], table[::97], strict=True)
        assert all(drag_multiplier_row(row, g) == m for g, m in pairs)
    assert drag_row(1, 0) == -1
    assert drag_multiplier_row(-1, 10.0) == 1.0


def test_four_truck_inner_rows_reach_one_at_g0() -> None:
    for position, row in ((1, HR_ROW_4_MIDDLE), (3, HR_ROW_4_TRAIL)):
        g0_m = float(HUSSEIN_RAKHA_TABLE[row, HR_G0_M])
        assert drag_multiplier(4, position, g0_m) == 1.0
        assert drag_multiplier(4, position, 0.9 * g0_m) < 1.0


def test_multiplier_edge_cases_and_size_mapping() -> None:
    # Solo, and gaps that are not a finite positive number, draft nothing.
    assert drag_multiplier(1, 0, 5.0) == 1.0
    for bad_gap in (0.0, -3.0, math.nan, math.inf):
        assert drag_multiplier(4, 2, bad_gap) == 1.0
    # 4-truck leader has no g0: its fit crosses 1 near 44 m and is clamped there.
    assert drag_multiplier(4, 0, 43.0) < 1.0
    assert drag_multiplier(4, 0, 100.0) == 1.0
    # Size 3 and 5 use the 4-truck rows: leader / middle (inner) / trail (last).
    for size in (3, 5):
        mult = drag_multiplier_array(size, np.arange(size), 10.0)
        assert mult[0] == drag_multiplier(4, 0, 10.0)
        assert mult[-1] == drag_multiplier(4, 3, 10.0)
        np.testing.assert_array_equal(mult[1:-1], drag_multiplier(4, 1, 10.0))
    with pytest.raises(ValueError, match="position"):
        drag_multiplier(3, 3, 10.0)


# ---------------------------------------------------------------- road load and energy


def test_road_load_matches_hand_calculation() -> None:
    speed_mps, grade = 20.0, 0.03
    theta = math.atan(grade)
    expected = (
        CRR * LOADED_KG * GRAVITY_MPS2 * math.cos(theta)
        + LOADED_KG * GRAVITY_MPS2 * math.sin(theta)
        + 0.5 * RHO * CDA * speed_mps**2
    )
    got = road_load_force_n(LOADED_KG, speed_mps, grade, 1.0, CDA, CRR, RHO)
    assert got == pytest.approx(expected, rel=1e-12)


def test_loaded_electric_at_80kmh_uses_1p1_to_1p7_kwh_per_km() -> None:
    # costs.md §3: 49 t e-trucks measured at ~1.1-1.9 kWh/km; issue check band 1.1-1.7.
    kwh_per_km = steady_kwh_per_km(EV, LOADED_KG, 80.0)
    assert 1.1 <= kwh_per_km <= 1.7
    # The empty truck uses less per km; per payload tonne-km the loaded figure is kWh/km / 31 t.
    assert steady_kwh_per_km(EV, EMPTY_KG, 80.0) < kwh_per_km
    per_tkm = energy_per_tonne_km(kwh_per_km * 100.0, 100_000.0, LOADED_KG, EMPTY_KG)
    assert per_tkm == pytest.approx(kwh_per_km / 31.0)


def test_downgrade_loaded_truck_regenerates_more_than_empty() -> None:
    speed_kmh, grade = 60.0, -0.03
    loaded = steady_kwh_per_km(EV, LOADED_KG, speed_kmh, grade=grade)
    empty = steady_kwh_per_km(EV, EMPTY_KG, speed_kmh, grade=grade)
    # Both trucks are pushed by gravity harder than rolling + aero resist: both regenerate,
    # the heavier one more (grade force scales with mass, aero does not).
    assert loaded < 0.0
    assert empty < 0.0
    assert loaded < empty
    # By hand: battery energy = regen_eff * wheel energy + aux over the km (no limit reached).
    speed_mps = speed_kmh / 3.6
    wheel_j_per_km = road_load_force_n(LOADED_KG, speed_mps, grade, 1.0, CDA, CRR, RHO) * 1000.0
    aux_j_per_km = EV[PT_AUX_KW] * 1e3 * 1000.0 / speed_mps
    expected = (EV[EL_REGEN_EFFICIENCY] * wheel_j_per_km + aux_j_per_km) / 3.6e6
    assert loaded == pytest.approx(expected, rel=1e-9)
    # A diesel on the same slope cuts fuel off: nothing burned, never negative.
    assert steady_kwh_per_km(DIESEL, LOADED_KG, speed_kmh, grade=grade) == 0.0


def test_regen_is_capped_and_friction_brakes_take_the_rest() -> None:
    # 8 % downgrade at 80 km/h, loaded: gravity delivers ~850 kW, far above the 282 kW cap.
    dt_s = 1.0
    energy = step_energy_kwh(EV, LOADED_KG, 80.0 / 3.6, 0.0, -0.08, 1.0, CDA, CRR, MILD_C, dt_s)
    battery_kw = energy * 3600.0 / dt_s
    assert battery_kw == pytest.approx(-EV[EL_REGEN_LIMIT_KW] + EV[PT_AUX_KW], rel=1e-12)


def test_cold_raises_energy_per_km_within_reported_winter_band() -> None:
    # DESIGN.md "Truck": winter range losses of 15-40 % are reported. Heating (0.3 kW/K below
    # 18 °C) and battery cold loss (0.2 %/K below 15 °C) are calibrated to land there at a
    # moderate 60 km/h; air density is held fixed so this checks the powertrain model alone.
    warm = steady_kwh_per_km(EV, LOADED_KG, 60.0, ambient_c=20.0)
    cold = steady_kwh_per_km(EV, LOADED_KG, 60.0, ambient_c=-20.0)
    increase = cold / warm - 1.0
    assert 0.15 <= increase <= 0.40
    # Monotone in temperature: Ordos' January mean (-10.5 °C) sits between.
    january = steady_kwh_per_km(EV, LOADED_KG, 60.0, ambient_c=-10.5)
    assert warm < january < cold


def test_diesel_loaded_at_80kmh_burns_28_to_45_l_per_100km() -> None:
    # costs.md §3: 33 L/100 km (CATL reference truck) to 44 (China chassis-dyno average).
    kwh_per_km = steady_kwh_per_km(DIESEL, LOADED_KG, 80.0)
    l_per_100km = diesel_litres(kwh_per_km * 100.0, DIESEL[DI_FUEL_KWH_PER_L])
    assert 28.0 <= l_per_100km <= 45.0
    # An empty truck burns less.
    assert steady_kwh_per_km(DIESEL, EMPTY_KG, 80.0) < kwh_per_km


def test_accelerate_then_brake_cycle_nets_road_load_work_only() -> None:
    # Lossless electric drive: with eta = 1 both ways, no aux, no regen cap, the kinetic
    # energy put in while accelerating comes back while braking, so the net battery energy
    # equals the road-load work. Mid-step speeds make the kinetic terms telescope exactly.
    lossless = dataclasses.replace(
        ElectricPowertrain(),
        drivetrain_efficiency=1.0,
        regen_efficiency=1.0,
        regen_limit_kw=math.inf,
        aux_kw=0.0,
        heating_kw_per_k=0.0,
    ).to_vector()
    dt_s = 0.1
    accel = np.concatenate((np.full(200, 0.5), np.full(100, -1.0)))  # 15 -> 25 -> 15 m/s
    speed_edges = 15.0 + np.concatenate(([0.0], np.cumsum(accel * dt_s)))
    assert speed_edges[-1] == pytest.approx(speed_edges[0])
    speed_mid = 0.5 * (speed_edges[:-1] + speed_edges[1:])
    grade = 0.01
    energy = trajectory_energy_kwh(
        lossless, LOADED_KG, speed_mid, accel, grade, 1.0, CDA, CRR, MILD_C, dt_s
    )
    road_work_kwh = (
        sum(
            road_load_force_n(LOADED_KG, v, grade, 1.0, CDA, CRR, ORDOS_AIR_DENSITY_KGPM3)
            * v
            * dt_s
            for v in speed_mid
        )
        / 3.6e6
    )
    assert energy.sum() == pytest.approx(road_work_kwh, rel=1e-9)
    # The cycle really did brake hard enough to regenerate (else the check is trivial).
    assert energy.min() < 0.0


def test_power_limited_acceleration_draws_exactly_the_power_limit() -> None:
    # Power balance: at the largest acceleration the motor allows, the battery supplies the
    # motor's power limit plus auxiliaries; the diesel burns idle + limit / marginal eff.
    speed_mps, grade, dt_s = 60.0 / 3.6, 0.01, 1.0
    for pt in (EV, DIESEL):
        a_max = max_traction_accel_mps2(pt, LOADED_KG, speed_mps, grade, 1.0, CDA, CRR)
        assert a_max > 0.0
        energy = step_energy_kwh(
            pt, LOADED_KG, speed_mps, a_max, grade, 1.0, CDA, CRR, MILD_C, dt_s
        )
        power_kw = energy * 3600.0 / dt_s
        if pt[PT_KIND] == KIND_ELECTRIC:
            expected_kw = pt[PT_POWER_LIMIT_KW] + pt[PT_AUX_KW]
        else:
            expected_kw = pt[DI_IDLE_FUEL_KW] + pt[PT_POWER_LIMIT_KW] / pt[DI_MARGINAL_EFFICIENCY]
        assert power_kw == pytest.approx(expected_kw, rel=1e-9)
    # Empty accelerates faster than loaded; a loaded diesel cannot hold 80 km/h up 3 %.
    a_loaded = max_traction_accel_mps2(EV, LOADED_KG, speed_mps, 0.0, 1.0, CDA, CRR)
    a_empty = max_traction_accel_mps2(EV, EMPTY_KG, speed_mps, 0.0, 1.0, CDA, CRR)
    assert a_empty > a_loaded
    assert max_traction_accel_mps2(DIESEL, LOADED_KG, 80.0 / 3.6, 0.03, 1.0, CDA, CRR) < 0.0


def test_vectors_carry_kind_and_reject_unknown_kind() -> None:
    assert EV.shape == DIESEL.shape == (PT_VECTOR_LEN,)
    assert EV[PT_KIND] == KIND_ELECTRIC
    assert DIESEL[PT_KIND] == KIND_DIESEL
    bogus = EV.copy()
    bogus[PT_KIND] = 7.0
    with pytest.raises(ValueError, match="PT_KIND"):
        step_energy_kwh(bogus, LOADED_KG, 20.0, 0.0, 0.0, 1.0, CDA, CRR, MILD_C, 1.0)
    with pytest.raises(ValueError, match="drivetrain_efficiency"):
        ElectricPowertrain(drivetrain_efficiency=1.2)
    with pytest.raises(ValueError, match="empty_mass_kg"):
        TruckSpec(empty_mass_kg=60_000.0)
