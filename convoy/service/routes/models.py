"""Request and response bodies of the HTTP API (the OpenAPI schema's components)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from convoy.cloud.entities import Cargo
from convoy.cloud.supervision import TakeoverCause
from convoy.service.storage import OrderRecord, OrderStatus, Role, TakeoverRecord, TakeoverStatus

# Ids: what storage accepts (printable, no spaces, <= 64), narrowed to URL-safe characters
# so that every id can be used in a path.
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$")]
#: Latest time accepted in an order [s]: ten years of seconds (epoch times are refused by
#: the planner anyway, but may be stored).
MAX_TIME_S = 3.2e8
# numbers are strict: JSON numbers only (true and "1e3" were taken as 1.0 and 1000.0)
Time = Annotated[float, Field(ge=0, le=MAX_TIME_S, strict=True)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderIn(_In):
    """A new freight order; ``id`` is made if left out."""

    id: Id | None = None
    shipper: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    cargo: Cargo
    origin_site: Id
    destination_site: Id
    tonnes: float = Field(gt=0, le=100_000, strict=True)
    pickup_start_s: Time
    pickup_end_s: Time
    delivery_start_s: Time
    delivery_end_s: Time
    priority: int = Field(0, ge=0, le=2, strict=True)


class OrderOut(BaseModel):
    """An order as stored."""

    id: str
    shipper: str
    cargo: str
    origin_site: str
    destination_site: str
    tonnes: float
    pickup_start_s: float
    pickup_end_s: float
    delivery_start_s: float
    delivery_end_s: float
    priority: int
    status: OrderStatus
    created_s: float | None

    @classmethod
    def of(cls, rec: OrderRecord) -> OrderOut:
        return cls(**asdict(rec))


class TakeoverIn(_In):
    """A takeover request raised by hand (admin; for drills and tests)."""

    vehicle_id: Id
    cause: TakeoverCause = TakeoverCause.SENSOR_FAULT


class OperatorIn(_In):
    """Who claims or resolves a request (default: ``operator``)."""

    operator: Id = "operator"


class TakeoverOut(BaseModel):
    """A takeover request as stored."""

    id: str
    vehicle_id: str
    cause: str
    requested_s: float
    deadline_s: float
    status: TakeoverStatus
    operator: str | None
    claimed_s: float | None
    resolved_s: float | None

    @classmethod
    def of(cls, rec: TakeoverRecord) -> TakeoverOut:
        return cls(**asdict(rec))


class RunIn(_In):
    """A scenario run: an operating day of the twin at full speed (``convoy run``)."""

    hours: float = Field(1.0, gt=0, le=24, strict=True)
    seed: int = Field(0, ge=0, le=2**31 - 1, strict=True)
    n_trucks: int = Field(40, ge=2, le=400, strict=True)


class RunOut(BaseModel):
    """A scenario run and, once done, its KPI summary."""

    id: str
    status: Literal["running", "done", "failed"]
    hours: float
    seed: int
    n_trucks: int
    error: str | None = None
    summary: dict[str, Any] | None = None


class TokenIn(_In):
    """A new API token for ``name`` with ``role``."""

    name: Id
    role: Role


class TokenOut(BaseModel):
    """A new token; its plaintext is shown this once."""

    name: str
    role: Role
    token: str


class Problem(BaseModel):
    """An error: what was wrong (every 4xx answers with this body)."""

    detail: Any
