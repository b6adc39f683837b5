"""The layers import one way: vehicle -> road -> sim -> cloud -> service -> cli.

Each module may import only its own layer and the layers listed before it (STYLE.md 1).
The check reads every module's import statements with ``ast``, so it also sees imports
inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ORDER = ["vehicle", "road", "sim", "cloud", "service", "cli"]
PKG = Path(__file__).resolve().parent.parent / "convoy"


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "convoy" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ORDER else None


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _violations(pkg: Path) -> list[str]:
    bad = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg)
        own = "cli" if rel.parts[0] == "cli.py" else rel.parts[0]
        if own not in ORDER:
            continue
        for line, mod in _imports(path):
            target = _layer(mod)
            if target is not None and ORDER.index(target) > ORDER.index(own):
                bad.append(f"convoy/{rel}:{line} ({own}) imports {mod} ({target})")
    return bad


def test_imports_point_one_way() -> None:
    assert _violations(PKG) == []


def test_every_layer_exists() -> None:
    for layer in ORDER[:-1]:
        assert (PKG / layer / "__init__.py").is_file(), layer
    assert (PKG / "cli.py").is_file()


def test_checker_catches_an_upward_import(tmp_path: Path) -> None:
    """The check itself must fail on a wrong-way import, or it proves nothing."""
    (tmp_path / "vehicle").mkdir()
    (tmp_path / "vehicle" / "bad.py").write_text("from convoy.sim.engine import simulate\n")
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "ok.py").write_text("import convoy.vehicle.rng\n")
    found = _violations(tmp_path)
    assert len(found) == 1 and "vehicle/bad.py:1" in found[0]


@pytest.mark.parametrize("layer", ORDER[:-1])
def test_layers_are_importable(layer: str) -> None:
    __import__(f"convoy.{layer}")
