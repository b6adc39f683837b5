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


@pytest.fixture
def make_example():  # type: ignore[no-untyped-def]
    return example
