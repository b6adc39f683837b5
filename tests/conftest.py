"""Shared helpers: scenarios built from the shipped examples with fields overridden."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from convoy.sim.scenario import Scenario, parse_scenario
from convoy.sim.scenarios import builtin_path


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        # a controller is replaced whole: its fields depend on its model
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "controller":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def example(name: str, **over: Any) -> Scenario:
    """A shipped example scenario with nested fields replaced."""
    data = yaml.safe_load(builtin_path(name).read_text())
    return parse_scenario(_merge(data, over), name)


def collision_course() -> Scenario:
    """brake-and-recover with trucks that can brake at only 1 m/s², 0.3 m apart on a 0.1 s
    time gap, behind a head that stops: every truck collides."""
    return example(
        "brake-and-recover",
        truck={"max_decel_mps2": 1.0, "emergency_decel_mps2": 1.0},
        platoon={
            "initial": {"gap_m": 0.3, "speed_mps": 22, "head_pos_m": 2000},
            "controller": {"model": "cacc-sumo", "time_gap_s": 0.1},
        },
        leader={"speed_profile": [[0, 22], [5, 22], [10, 0]]},
    )


@pytest.fixture
def make_example():  # type: ignore[no-untyped-def]
    return example
