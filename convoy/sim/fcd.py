"""Floating-car data (FCD) output: CSV or Parquet, in long form (one row per truck and time).

Columns, in order (DESIGN.md contract): ``time_s, vehicle_id, pos_m, speed_mps,
accel_mps2, gap_m`` (``gap_m`` empty for a platoon head), then ``energy_kwh``, ``mode``,
``odd_flags`` (the ``convoy.road.hazards.OddFlags`` bits as an integer) and ``spat_phase``
(the phase the truck knows for the nearest traffic signal ahead, ``convoy.road.signals``:
0 green, 1 yellow, 2 red, -1 none known).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from convoy.sim.engine import Trace
from convoy.vehicle.controllers import MODE_NAMES

FCD_COLUMNS = (
    "time_s",
    "vehicle_id",
    "pos_m",
    "speed_mps",
    "accel_mps2",
    "gap_m",
    "energy_kwh",
    "mode",
    "odd_flags",
    "spat_phase",
)


def fcd_table(trace: Trace) -> pa.Table:
    """The trace as an Arrow table in long form, time-major."""
    rows, n = trace.pos_m.shape
    time_s = np.repeat(np.round(trace.time_s, 9), n)
    ids = pa.DictionaryArray.from_arrays(
        pa.array(np.tile(np.arange(n, dtype=np.int32), rows)), pa.array(trace.vehicle_id)
    )
    gap = trace.gap_m.reshape(-1)
    names = pa.array(MODE_NAMES)
    mode = pa.DictionaryArray.from_arrays(pa.array(trace.mode.reshape(-1).astype(np.int32)), names)
    return pa.table(
        {
            "time_s": time_s,
            "vehicle_id": ids,
            "pos_m": trace.pos_m.reshape(-1),
            "speed_mps": trace.speed_mps.reshape(-1),
            "accel_mps2": trace.accel_mps2.reshape(-1),
            "gap_m": pa.array(gap, mask=np.isnan(gap)),
            "energy_kwh": trace.energy_kwh.reshape(-1),
            "mode": mode,
            "odd_flags": trace.odd_flags.reshape(-1),
            "spat_phase": trace.spat_phase.reshape(-1),
        }
    )


def write_fcd(trace: Trace, path: str | Path) -> Path:
    """Write FCD to ``path``: Parquet if it ends in ``.parquet``, else CSV."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    table = fcd_table(trace)
    if p.suffix == ".parquet":
        pq.write_table(table, p, compression="zstd")
    else:
        plain = table.set_column(
            1, "vehicle_id", table.column("vehicle_id").cast(pa.string())
        ).set_column(7, "mode", table.column("mode").cast(pa.string()))
        # pyarrow quotes header names and strings; ids and mode names hold no commas
        with p.open("wb") as f:
            f.write((",".join(plain.column_names) + "\n").encode())
            pacsv.write_csv(
                plain, f, pacsv.WriteOptions(include_header=False, quoting_style="none")
            )
    return p
