"""Storage of the cloud service: one interface (:class:`Storage`), two backends.

``open_storage(url)`` picks the backend from a URL:

- ``sqlite:///convoy.db`` (the default; a path relative to the working folder),
  ``sqlite:////var/lib/convoy/convoy.db`` (absolute), ``sqlite:///:memory:`` (tests);
- ``postgresql://user[:password]@host[:port]/db`` (also ``postgres://``), any libpq URL.

Every write commits before it returns; records check their fields on construction, so
nothing out of range reaches a database. See ``base.py`` for the records and the interface,
``sqlite.py`` and ``postgres.py`` for each backend's durability and concurrency.
"""

from __future__ import annotations

from convoy.service.storage.base import (
    ORDER_TRANSITIONS,
    ApiToken,
    ConflictError,
    EventRecord,
    NotFoundError,
    OrderRecord,
    OrderStatus,
    PlanRecord,
    RecordError,
    Role,
    Storage,
    StorageError,
    TakeoverRecord,
    TakeoverStatus,
    TripRecord,
    TripStatus,
    VehicleState,
    new_id,
)
from convoy.service.storage.migrations import LATEST as SCHEMA_VERSION

__all__ = [
    "DEFAULT_URL",
    "ORDER_TRANSITIONS",
    "SCHEMA_VERSION",
    "ApiToken",
    "ConflictError",
    "EventRecord",
    "NotFoundError",
    "OrderRecord",
    "OrderStatus",
    "PlanRecord",
    "RecordError",
    "Role",
    "Storage",
    "StorageError",
    "TakeoverRecord",
    "TakeoverStatus",
    "TripRecord",
    "TripStatus",
    "VehicleState",
    "new_id",
    "open_storage",
]

#: Where ``convoy serve`` keeps its data unless told otherwise.
DEFAULT_URL = "sqlite:///convoy.db"
#: Most pooled connections one ``Storage`` may hold.
MAX_POOL_SIZE = 64

_ALLOWED = (
    "sqlite:///RELATIVE/PATH.db, sqlite:////ABSOLUTE/PATH.db, sqlite:///:memory: or "
    "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
)


def open_storage(url: str = DEFAULT_URL, *, migrate: bool = True, pool_size: int = 4) -> Storage:
    """Open the storage at ``url`` and, unless ``migrate=False``, bring its schema up to date.

    Args:
        url: see the module docstring.
        migrate: run :meth:`Storage.migrate` (idempotent) before returning.
        pool_size: most connections held at once, 1 to 64 (SQLite in memory always uses 1).

    Raises:
        StorageError: a URL of another form (the message names it and the allowed forms),
            a database that cannot be opened or reached, or a schema newer than this code.
    """
    if isinstance(pool_size, bool) or not isinstance(pool_size, int):
        raise StorageError(f"pool_size = {pool_size!r}; allowed: an integer 1-{MAX_POOL_SIZE}")
    if not 1 <= pool_size <= MAX_POOL_SIZE:
        raise StorageError(f"pool_size = {pool_size!r}; allowed: an integer 1-{MAX_POOL_SIZE}")
    if not isinstance(url, str) or "://" not in url:
        raise StorageError(f"storage URL {url!r} is not a URL; allowed: {_ALLOWED}")
    scheme, _, rest = url.partition("://")
    storage: Storage
    if scheme == "sqlite":
        # sqlite:///x.db -> "x.db"; sqlite:////abs/x.db -> "/abs/x.db" (SQLAlchemy's reading).
        if not rest.startswith("/") or len(rest) < 2 or "?" in rest or "\x00" in rest:
            raise StorageError(
                f"storage URL {url!r} names no SQLite file (a host or query is not allowed); "
                f"allowed: {_ALLOWED}"
            )
        from convoy.service.storage.sqlite import SQLiteStorage

        storage = SQLiteStorage(rest[1:], url, pool_size)
    elif scheme in ("postgresql", "postgres"):
        if rest in ("", "/"):
            raise StorageError(
                f"storage URL {url!r} names no PostgreSQL server; allowed: {_ALLOWED}"
            )
        # psycopg is imported only here: SQLite users need not have it.
        from convoy.service.storage.postgres import PostgresStorage

        storage = PostgresStorage(url, pool_size)
    else:
        shown = scheme if len(scheme) < 40 else scheme[:37] + "..."
        raise StorageError(f"storage URL scheme {shown!r} is unknown; allowed: {_ALLOWED}")
    if migrate:
        try:
            storage.migrate()
        except BaseException:
            storage.close()
            raise
    return storage
