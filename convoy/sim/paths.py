"""Output paths a command is given, checked before its work starts."""

from __future__ import annotations

import os
from pathlib import Path


def folder_problem(path: Path) -> str | None:
    """Why the folder ``path`` could not be made and written, found without making it (its
    nearest existing ancestor must be a writable folder); None when it can."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return "it is a file" if probe == path else f"{probe} is a file"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None
