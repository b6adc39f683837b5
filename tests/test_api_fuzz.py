"""Property-based fuzz of the HTTP API against its own OpenAPI schema: no input, valid or
not, gets a 5xx (DESIGN.md: "The API answers 4xx with a JSON body, and never 500 for bad
input"). Runs as admin, so every route's handler is reached, not just its auth check.

The live twin runs (20 trucks), so the fleet, plan and platoon routes answer with data.
``POST /api/v1/runs`` is left out: each accepted call starts an operating day on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from convoy.service.app import create_app
from convoy.service.settings import load_settings

ADMIN = "admin-token-for-fuzzing-0123456789"


# Building the app connects nothing (the lifespan does), so the schema loads at import.
APP = create_app(
    load_settings(
        environ={},
        storage_url="sqlite:///:memory:",
        admin_token=ADMIN,
        twin=True,
        twin_trucks=20,
        speedup=600.0,
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(
    method="POST", path="/api/v1/runs"
)


@pytest.fixture(scope="module", autouse=True)
def _lifespan() -> Iterator[None]:
    with TestClient(APP) as c:  # storage, bus and twin stay up for the module
        deadline = time.monotonic() + 30.0
        while not c.get("/api/v1/health").json()["twin_ready"] and time.monotonic() < deadline:
            time.sleep(0.1)
        yield


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors(case: Any) -> None:
    response = case.call(headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code < 500, (case.method, case.path, response.text)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        assert "detail" in response.json()  # every error is a JSON body
