"""Telemetry chunks: the samples of one truck from one write, stored as one row.

At 10 Hz per truck, a row per sample makes the database pay a heap tuple and an index entry
per sample (100,000 a second for 10,000 trucks). Like TimescaleDB's compressed chunks,
storage keeps a truck's samples from one ``write_states`` call as one row of
``vehicle_state_chunks``: ``(vehicle_id, t_first, t_last, n, written_s, data)``, where
``data`` holds the ``n`` samples column by column (:func:`encode_chunk`). With 10 samples per
MQTT message that is about a tenth of the rows and index entries; readers get the same
per-sample records back (:func:`decode_chunk`).

A chunk's samples are in time order (a stable sort: equal times keep their write order), so
its last sample is its newest. A chunk spans at most :data:`MAX_CHUNK_SPAN_S` seconds and
holds at most :data:`MAX_CHUNK_STATES` samples; a write that holds more for one truck (a
late sample, a backfill) is split (:func:`chunk_rows`). The span bound lets a time-window
query find every chunk with a sample at or after ``since`` among those with
``t_first >= since - MAX_CHUNK_SPAN_S``.

``data`` format 1, little-endian::

    u8 format (1), u8 flags, u16 n,
    f64[n] t_s, f64[n] lon, f64[n] lat, f64[n] speed_mps, f64[n] heading_deg,
    f64[n] accel_mps2, f64[n] soc (NaN = None: storage refuses a NaN soc),
    u8[n] lane,
    UTF-8 text: edges, 0x1E, modes.

The edges (and the modes) are joined by 0x1F, or, when all ``n`` are equal (flag bit 0 for
edges, bit 1 for modes), written once. Neither separator can occur in an edge id or a mode
token (both are printable).
"""

from __future__ import annotations

import functools
import math
import operator
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from convoy.service.storage.base import StateRow

__all__ = [
    "CHUNK_COLS",
    "MAX_CHUNK_SPAN_S",
    "MAX_CHUNK_STATES",
    "Chunk",
    "chunk_rows",
    "decode_chunk",
    "decode_last",
    "encode_chunk",
]

#: Longest time span of one chunk [s].
MAX_CHUNK_SPAN_S = 60.0
#: Most samples in one chunk (a minute at 10 Hz).
MAX_CHUNK_STATES = 600
#: The columns of ``vehicle_state_chunks``, in the order of a :data:`Chunk`.
CHUNK_COLS = "vehicle_id, t_first, t_last, n, written_s, data"

#: One row of ``vehicle_state_chunks``: ``(vehicle_id, t_first, t_last, n, written_s, data)``.
Chunk = tuple[str, float, float, int, float, bytes]

_FORMAT = 1
_HEAD = struct.Struct("<BBH")
_EDGES_SAME, _MODES_SAME = 1, 2
_NAN = math.nan
_t_of = operator.itemgetter(1)


@functools.lru_cache(maxsize=1024)
def _body(n: int) -> struct.Struct:
    return struct.Struct(f"<BBH{7 * n}d{n}B")


def encode_chunk(rows: Sequence[StateRow]) -> bytes:
    """``data`` for the samples ``rows`` of one truck, in the given order (at most 65,535;
    lanes in [0, 255]; checked rows)."""
    n = len(rows)
    _, t, lon, lat, speed, heading, accel, edge, lane, soc, mode = zip(*rows, strict=True)
    socs = [_NAN if x is None else x for x in soc]
    flags = 0
    e0, m0 = edge[0], mode[0]
    if edge.count(e0) == n:
        flags |= _EDGES_SAME
        edges = e0
    else:
        edges = "\x1f".join(edge)
    if mode.count(m0) == n:
        flags |= _MODES_SAME
        modes = m0
    else:
        modes = "\x1f".join(mode)
    head = _body(n).pack(_FORMAT, flags, n, *t, *lon, *lat, *speed, *heading, *accel, *socs, *lane)
    return head + f"{edges}\x1e{modes}".encode()


def decode_chunk(vehicle_id: str, data: bytes | memoryview) -> list[StateRow]:
    """The samples of a chunk, as :data:`StateRow` tuples in the chunk's (time) order."""
    fmt, flags, n = _HEAD.unpack_from(data)
    if fmt != _FORMAT:
        raise ValueError(f"telemetry chunk format {fmt} is unknown; this convoy reads {_FORMAT}")
    body = _body(n)
    v = body.unpack_from(data)
    text = bytes(data[body.size :]).decode()
    edges_text, _, modes_text = text.partition("\x1e")
    edges = [edges_text] * n if flags & _EDGES_SAME else edges_text.split("\x1f")
    modes = [modes_text] * n if flags & _MODES_SAME else modes_text.split("\x1f")
    ids = [vehicle_id] * n
    k = 3
    cols = [v[k + i * n : k + (i + 1) * n] for i in range(8)]
    socs = [None if x != x else x for x in cols[6]]  # NaN -> None
    return list(
        zip(ids, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], edges, cols[7], socs,
            modes, strict=True)
    )  # fmt: skip


_F64 = struct.Struct("<d")
_ONE = _body(1)


def decode_last(vehicle_id: str, data: bytes | memoryview) -> StateRow:
    """The last (newest) sample of a chunk: ``decode_chunk(vehicle_id, data)[-1]``, without
    decoding the rest."""
    fmt, flags, n = _HEAD.unpack_from(data)
    if fmt != _FORMAT:
        return decode_chunk(vehicle_id, data)[-1]  # raises
    at = _HEAD.size + 8 * (n - 1)
    f = [_F64.unpack_from(data, at + 8 * n * i)[0] for i in range(7)]
    lane = data[_HEAD.size + 56 * n + n - 1]
    text = bytes(data[_body(n).size :]).decode()
    edges, _, modes = text.partition("\x1e")
    edge = edges if flags & _EDGES_SAME else edges.rsplit("\x1f", 1)[-1]
    mode = modes if flags & _MODES_SAME else modes.rsplit("\x1f", 1)[-1]
    soc = None if f[6] != f[6] else f[6]
    return (vehicle_id, f[0], f[1], f[2], f[3], f[4], f[5], edge, lane, soc, mode)


def _split(vehicle_id: str, g: list[Any], written_s: float, out: list[Chunk]) -> None:
    """Append the chunks of one truck's time-sorted samples ``g`` to ``out``."""
    n = len(g)
    if n == 1:  # one sample per message: skip the column shuffle
        r = g[0]
        soc = _NAN if r[9] is None else r[9]
        data = _ONE.pack(_FORMAT, _EDGES_SAME | _MODES_SAME, 1, *r[1:7], soc, r[8])
        out.append((vehicle_id, r[1], r[1], 1, written_s, data + f"{r[7]}\x1e{r[10]}".encode()))
        return
    if n <= MAX_CHUNK_STATES and g[-1][1] - g[0][1] <= MAX_CHUNK_SPAN_S:
        out.append((vehicle_id, g[0][1], g[-1][1], n, written_s, encode_chunk(g)))
        return
    i = 0
    while i < n:
        t0 = g[i][1]
        j = i + 1
        while j < n and j - i < MAX_CHUNK_STATES and g[j][1] - t0 <= MAX_CHUNK_SPAN_S:
            j += 1
        part = g[i:j]
        out.append((vehicle_id, t0, part[-1][1], len(part), written_s, encode_chunk(part)))
        i = j


def chunk_rows(rows: Iterable[StateRow], written_s: float) -> list[Chunk]:
    """The chunks of checked samples: per truck (in order of first appearance), the truck's
    samples sorted by time (stable), split to the span and size bounds."""
    groups: dict[str, list[StateRow]] = {}
    for r in rows:
        g = groups.get(r[0])
        if g is None:
            groups[r[0]] = [r]
        else:
            g.append(r)
    out: list[Chunk] = []
    for vid, g in groups.items():
        if len(g) > 1:
            g.sort(key=_t_of)
        _split(vid, g, written_s, out)
    return out
