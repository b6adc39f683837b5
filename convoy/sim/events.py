"""The event log of a run: what happened to which truck and when, as JSON lines.

Events come from the run's final state (first contacts, first RSI and SPAT) and from its
recorded trace (mode, ODD-flag and braking transitions, so at the recording interval):

======================  =====================================================================
type                    fields besides ``t_s``, ``type`` and ``vehicle_id``
======================  =====================================================================
``collision``           ``closing_speed_mps``: the closing speed at first contact
``rsi_received``        first hazard warning from an RSU
``spat_received``       first signal timing from an RSU
``signal_seen``         first sight of a traffic light
``odd_enter``           ``flags``: the ODD flags (``OddFlags`` names) the truck now holds
``odd_exit``            ``flags``: the flags it no longer holds
``acc_fallback_start``  CACC lost fresh beacons and runs its ACC fallback
``acc_fallback_end``    fresh beacons again
``emergency_start``     emergency braking (hazard beacon or time-to-collision)
``emergency_end``
``hard_brake``          ``accel_mps2``: a deceleration beyond ``engine.HARD_BRAKE_MPS2`` began
======================  =====================================================================

Events are sorted by time, then by truck row, then by type; times are rounded to 1 µs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from convoy.road.hazards import OddFlags
from convoy.sim.engine import HARD_BRAKE_MPS2, RunResult
from convoy.vehicle.controllers import MODE_ACC_FALLBACK, MODE_EMERGENCY


def _flag_names(bits: int) -> list[str]:
    return [f.name for f in OddFlags if f.value and bits & f.value and f.name]


def _transitions(on: np.ndarray) -> Iterator[tuple[int, int, bool]]:
    """(row, truck, started) wherever the boolean (r, n) ``on`` flips from one row to the
    next; ``row`` is the later row."""
    flips = on[1:] != on[:-1]
    for r, k in zip(*np.nonzero(flips), strict=True):
        yield int(r) + 1, int(k), bool(on[r + 1, k])


def run_events(res: RunResult) -> list[dict[str, Any]]:
    """The events of a run (see the module docstring), sorted."""
    tr, st = res.trace, res.state
    ids = tr.vehicle_id
    t = tr.time_s
    events: list[tuple[float, int, str, dict[str, Any]]] = []

    def add(t_s: float, k: int, kind: str, **fields: Any) -> None:
        events.append((round(float(t_s), 6), k, kind, fields))

    for k in range(len(ids)):
        if not math.isnan(st.collided_at_s[k]):
            add(st.collided_at_s[k], k, "collision",
                closing_speed_mps=round(float(st.collision_speed_mps[k]), 6))  # fmt: skip
        for kind, when in (
            ("rsi_received", res.roadside.rsi_received_at_s[k]),
            ("spat_received", res.roadside.spat_received_at_s[k]),
            ("signal_seen", res.roadside.signal_seen_at_s[k]),
        ):
            if not math.isnan(when):
                add(when, k, kind)

    for mode_code, name in ((MODE_ACC_FALLBACK, "acc_fallback"), (MODE_EMERGENCY, "emergency")):
        for r, k, started in _transitions(tr.mode == mode_code):
            add(t[r], k, f"{name}_{'start' if started else 'end'}")

    # every change of flags, not only none <-> some
    odd = tr.odd_flags.astype(np.int64)
    changed = np.nonzero(odd[1:] != odd[:-1])
    for r0, k in zip(*changed, strict=True):
        r = int(r0) + 1
        before, after = int(odd[r - 1, k]), int(odd[r, k])
        if after & ~before:
            add(t[r], int(k), "odd_enter", flags=_flag_names(after & ~before))
        if before & ~after:
            add(t[r], int(k), "odd_exit", flags=_flag_names(before & ~after))

    hard = tr.accel_mps2 < -HARD_BRAKE_MPS2
    for r, k, started in _transitions(hard):
        if started:
            add(t[r], k, "hard_brake", accel_mps2=round(float(tr.accel_mps2[r, k]), 6))

    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return [{"t_s": ts, "type": kind, "vehicle_id": ids[k], **f} for ts, k, kind, f in events]


def write_events(res: RunResult, path: str | Path) -> Path:
    """Write the run's events to ``path`` as JSON lines; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for e in run_events(res):
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
    return p
