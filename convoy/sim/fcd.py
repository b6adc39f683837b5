"""Floating-car data (FCD) output: CSV or Parquet in long form (one row per truck and time),
or SUMO's FCD XML.

Columns, in order (DESIGN.md contract): ``time_s, vehicle_id, pos_m, speed_mps,
accel_mps2, gap_m`` (``gap_m`` empty for a platoon head), then ``energy_kwh``, ``mode``,
``odd_flags`` (the ``convoy.road.hazards.OddFlags`` bits as an integer) and ``spat_phase``
(the phase the truck knows for the nearest traffic signal ahead, ``convoy.road.signals``:
0 green, 1 yellow, 2 red, -1 none known).
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import escape

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


# SUMO's default lane width is 3.2 m and a one-lane edge spreads to the right of its line,
# so the lane's centre runs 1.6 m right of (south of, going east) the edge's x axis.
LANE_CENTRE_Y_M = -1.6


def write_fcd_xml(trace: Trace, path: str | Path, lane: str = "road_0", grade: float = 0.0) -> Path:
    """Write the trace as SUMO's FCD XML (``--fcd-output``), which SUMO's tools read.

    The corridor is SUMO's one-lane road of ``convoy.sim.sumo_peer``: it runs east along the
    x axis from x = 0, so ``x`` is the front bumper's position, ``y`` the lane's centre
    (``LANE_CENTRE_Y_M``), ``angle`` 90°
    (SUMO measures it clockwise from north) and ``pos`` the position along ``lane``.
    ``slope`` is the road's grade in degrees; ``acceleration`` is written as with
    ``--fcd-output.acceleration``. Times are written with 2 decimals, as SUMO does; the
    rest with 6 (SUMO: 2 by default, more with ``--precision``).

    Args:
        trace: the run's trace.
        path: the file to write.
        lane: the lane id to report (``road_0``, the lane ``sumo_peer`` builds).
        grade: the road's grade, rise over run.
    """
    p = Path(path)
    slope_deg = math.degrees(math.atan(grade))
    with p.open("w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        f.write(
            '<fcd-export xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:noNamespaceSchemaLocation="http://sumo.dlr.de/xsd/fcd_file.xsd">\n'
        )
        ids = [escape(v, {'"': "&quot;"}) for v in trace.vehicle_id]
        y = LANE_CENTRE_Y_M
        for r, t in enumerate(trace.time_s):
            f.write(f'    <timestep time="{t:.2f}">\n')
            for k, vid in enumerate(ids):
                x = trace.pos_m[r, k]
                f.write(
                    f'        <vehicle id="{vid}" x="{x:.6f}" y="{y:.6f}" angle="90.00" '
                    f'type="truck" speed="{trace.speed_mps[r, k]:.6f}" pos="{x:.6f}" '
                    f'lane="{lane}" slope="{slope_deg:.2f}" '
                    f'acceleration="{trace.accel_mps2[r, k]:.6f}"/>\n'
                )
            f.write("    </timestep>\n")
        f.write("</fcd-export>\n")
    return p


def write_fcd(trace: Trace, path: str | Path, grade: float = 0.0) -> Path:
    """Write FCD to ``path``: Parquet if it ends in ``.parquet``, SUMO's FCD XML if it ends
    in ``.xml`` (``write_fcd_xml``; ``grade`` is the road's), else CSV."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".xml":
        return write_fcd_xml(trace, p, grade=grade)
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
