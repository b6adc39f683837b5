"""Reproduce ``static/vendor`` from the npm registry: ``python -m convoy.service.dashboard.build``.

Installs the pinned ``maplibre-gl`` with ``npm`` in a temporary directory and copies its
``dist/maplibre-gl.js``, ``dist/maplibre-gl.css`` and ``LICENSE.txt`` into ``static/vendor``.
Only a developer chore: the package ships the copied files, so neither npm nor the internet
is needed to run the dashboard.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from convoy.service.dashboard import MAPLIBRE_VERSION, STATIC_DIR

# dist file -> name in static/vendor
FILES: dict[str, str] = {
    "dist/maplibre-gl.js": "maplibre-gl.js",
    "dist/maplibre-gl.css": "maplibre-gl.css",
    "LICENSE.txt": "maplibre-gl.LICENSE.txt",
}


def vendor(dest: Path = STATIC_DIR / "vendor", version: str = MAPLIBRE_VERSION) -> dict[str, str]:
    """Install ``maplibre-gl@version`` with npm into a temp dir and copy its dist files.

    Args:
        dest: target directory (created if missing).
        version: exact npm version to install.

    Returns:
        Mapping of copied file name to its SHA-256, to compare with ``VENDOR.md``.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found on PATH; install Node.js to rebuild static/vendor")
    dest.mkdir(parents=True, exist_ok=True)
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", tmp, f"maplibre-gl@{version}"],
            check=True,
        )
        pkg = Path(tmp) / "node_modules" / "maplibre-gl"
        for src, name in FILES.items():
            shutil.copyfile(pkg / src, dest / name)
            digests[name] = hashlib.sha256((dest / name).read_bytes()).hexdigest()
    return digests


if __name__ == "__main__":
    for name, digest in vendor().items():
        sys.stdout.write(f"{digest}  {name}\n")
