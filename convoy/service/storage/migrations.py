"""Versioned schema migrations, one SQL text per backend.

``schema_migrations`` records each applied version. A migration runs in one transaction with
its version row, so a crash leaves the database at the version before or after it, never in
between (both SQLite and PostgreSQL have transactional DDL). Never edit a released migration;
add the next one.

Versions:

1. telemetry (``vehicle_states``), orders, plans, events, takeovers, API tokens.
2. order idempotency keys, trips, the newest sample per truck (``vehicle_latest``, filled
   from the stored samples) and an events-by-type index.
3. telemetry in chunks (``vehicle_state_chunks``, see ``chunks.py``): a truck's samples of one
   write as one row. The v2 samples move into chunks (:data:`RECHUNK`); ``vehicle_states``
   and ``vehicle_latest`` are dropped: the newest sample per truck is read from the chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "postgresql"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``version`` is 1, 2, ...; statements run in order."""

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgresql


# The bookkeeping table itself exists before any migration runs.
SCHEMA_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_s REAL NOT NULL)",
    "postgresql": "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_s DOUBLE PRECISION NOT NULL)",
}

_ORDER_STATUS = "CHECK (status IN ('open', 'planned', 'delivered', 'cancelled'))"
_TAKEOVER_STATUS = "CHECK (status IN ('open', 'claimed', 'resolved', 'expired'))"
_ROLE = "CHECK (role IN ('viewer', 'dispatcher', 'operator', 'admin'))"
_TRIP_STATUS = "CHECK (status IN ('planned', 'active', 'done', 'aborted'))"

_STATE_COLUMNS = (
    "vehicle_id {text} NOT NULL, t_s {real} NOT NULL, lon {real} NOT NULL, lat {real} NOT NULL, "
    "speed_mps {real} NOT NULL, heading_deg {real} NOT NULL, accel_mps2 {real} NOT NULL, "
    "edge {text} NOT NULL, lane INTEGER NOT NULL, soc {real}, mode {text} NOT NULL"
)


def _v1(text: str, real: str, json: str, serial_pk: str) -> tuple[str, ...]:
    states = _STATE_COLUMNS.format(text=text, real=real)
    return (
        f"CREATE TABLE vehicle_states ({states})",
        "CREATE INDEX vehicle_states_vehicle_t ON vehicle_states (vehicle_id, t_s)",
        f"CREATE TABLE orders (id {text} PRIMARY KEY, shipper {text} NOT NULL, "
        f"cargo {text} NOT NULL, origin_site {text} NOT NULL, destination_site {text} NOT NULL, "
        f"tonnes {real} NOT NULL CHECK (tonnes > 0), "
        f"pickup_start_s {real} NOT NULL, pickup_end_s {real} NOT NULL, "
        f"delivery_start_s {real} NOT NULL, delivery_end_s {real} NOT NULL, "
        f"priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 2), "
        f"status {text} NOT NULL {_ORDER_STATUS}, created_s {real} NOT NULL)",
        "CREATE INDEX orders_status_created ON orders (status, created_s)",
        f"CREATE TABLE plans (version {serial_pk}, plan_id {text} NOT NULL, "
        f"created_s {real} NOT NULL, plan {json} NOT NULL)",
        "CREATE INDEX plans_plan_id ON plans (plan_id, version)",
        f"CREATE TABLE events (id {serial_pk}, t_s {real} NOT NULL, type {text} NOT NULL, "
        f"vehicle_id {text}, payload {json} NOT NULL)",
        "CREATE INDEX events_t ON events (t_s, id)",
        f"CREATE TABLE takeovers (id {text} PRIMARY KEY, vehicle_id {text} NOT NULL, "
        f"cause {text} NOT NULL, requested_s {real} NOT NULL, deadline_s {real} NOT NULL, "
        f"status {text} NOT NULL {_TAKEOVER_STATUS}, operator {text}, claimed_s {real}, "
        f"resolved_s {real})",
        "CREATE INDEX takeovers_status_deadline ON takeovers (status, deadline_s)",
        f"CREATE TABLE api_tokens (key_id {text} PRIMARY KEY, name {text} NOT NULL UNIQUE, "
        f"role {text} NOT NULL {_ROLE}, token_hash {text} NOT NULL, created_s {real} NOT NULL)",
    )


def _v2(text: str, real: str, backfill: str) -> tuple[str, ...]:
    states = _STATE_COLUMNS.format(text=text, real=real).replace(
        f"vehicle_id {text} NOT NULL", f"vehicle_id {text} PRIMARY KEY", 1
    )
    return (
        f"ALTER TABLE orders ADD COLUMN idempotency_key {text}",
        # NULLs are distinct in a unique index in both databases: keyless orders never clash.
        "CREATE UNIQUE INDEX orders_idempotency_key ON orders (idempotency_key)",
        f"CREATE TABLE trips (id {text} PRIMARY KEY, vehicle_ids {text} NOT NULL, "
        f"driver_id {text}, origin_site {text} NOT NULL, destination_site {text} NOT NULL, "
        f"depart_s {real} NOT NULL, arrive_s {real} NOT NULL, tonnes {real} NOT NULL, "
        f"order_ids {text} NOT NULL, plan_version BIGINT, "
        f"status {text} NOT NULL {_TRIP_STATUS})",
        "CREATE INDEX trips_plan_depart ON trips (plan_version, depart_s)",
        f"CREATE TABLE vehicle_latest ({states})",
        backfill,
        "CREATE INDEX events_type_t ON events (type, t_s, id)",
    )


#: A step of a migration done in Python by the runner, not SQL: move the rows of
#: ``vehicle_states`` into ``vehicle_state_chunks``.
RECHUNK = "-- convoy: move vehicle_states into vehicle_state_chunks"


def _v3(text: str, real: str, blob: str, t_index: str) -> tuple[str, ...]:
    return (
        f"CREATE TABLE vehicle_state_chunks (vehicle_id {text} NOT NULL, "
        f"t_first {real} NOT NULL, t_last {real} NOT NULL, n INTEGER NOT NULL, "
        f"written_s {real} NOT NULL, data {blob} NOT NULL)",
        RECHUNK,
        "DROP TABLE vehicle_states",
        "DROP TABLE vehicle_latest",
        # Per-truck history and the newest chunk per truck (a loose index scan).
        "CREATE INDEX vehicle_state_chunks_vehicle_t ON vehicle_state_chunks (vehicle_id, t_last)",
        # Time windows and retention.
        t_index,
    )


_COLS = "vehicle_id, t_s, lon, lat, speed_mps, heading_deg, accel_mps2, edge, lane, soc, mode"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "telemetry, orders, plans, events, takeovers, api tokens",
        sqlite=(
            *_v1("TEXT", "REAL", "TEXT", "INTEGER PRIMARY KEY AUTOINCREMENT"),
            "CREATE INDEX vehicle_states_t ON vehicle_states (t_s)",
        ),
        postgresql=(
            *_v1(
                "TEXT",
                "DOUBLE PRECISION",
                # json keeps the text as written; jsonb would turn the float 4.58e16 into
                # the integer 45817158516448540, so a payload would not read back unchanged.
                "JSON",
                "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
            ),
            # Telemetry arrives in time order: a BRIN index on time is tiny and cheap to keep
            # up at 10^5 rows/s, and serves retention and time-window queries.
            "CREATE INDEX vehicle_states_t ON vehicle_states USING brin (t_s)",
        ),
    ),
    Migration(
        2,
        "order idempotency keys, trips, newest sample per vehicle, events by type",
        sqlite=_v2(
            "TEXT",
            "REAL",
            # SQLite takes the bare columns of an aggregate query from the row holding MAX().
            f"INSERT INTO vehicle_latest ({_COLS}) SELECT vehicle_id, MAX(t_s), lon, lat, "
            "speed_mps, heading_deg, accel_mps2, edge, lane, soc, mode "
            "FROM vehicle_states GROUP BY vehicle_id",
        ),
        postgresql=_v2(
            "TEXT",
            "DOUBLE PRECISION",
            f"INSERT INTO vehicle_latest ({_COLS}) SELECT DISTINCT ON (vehicle_id) {_COLS} "
            "FROM vehicle_states ORDER BY vehicle_id, t_s DESC",
        ),
    ),
    Migration(
        3,
        "telemetry in chunks: one row per truck per write",
        sqlite=_v3(
            "TEXT",
            "REAL",
            "BLOB",
            "CREATE INDEX vehicle_state_chunks_t ON vehicle_state_chunks (t_first)",
        ),
        postgresql=_v3(
            "TEXT",
            "DOUBLE PRECISION",
            "BYTEA",
            # Chunks arrive in about time order: BRIN stays tiny and cheap to keep up.
            "CREATE INDEX vehicle_state_chunks_t ON vehicle_state_chunks USING brin (t_first)",
        ),
    ),
)

#: The version this code writes and reads.
LATEST = MIGRATIONS[-1].version

assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))
