"""The example scenarios shipped inside the package (``convoy/scenarios/*.yaml``)."""

from __future__ import annotations

from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"


def builtin_path(name: str) -> Path:
    """Path of the built-in scenario ``name`` (with or without ``.yaml``)."""
    stem = name.removesuffix(".yaml")
    return SCENARIO_DIR / f"{stem}.yaml"


def builtin_names() -> list[str]:
    """Names of the built-in scenarios."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
