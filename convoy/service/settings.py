"""The cloud service's one settings object, read from environment variables and/or a file.

Every setting has an environment variable ``CONVOY_<NAME>``; a settings file (YAML or JSON
mapping of ``name: value``, lower-case names without the prefix) may give them too, and the
environment wins over the file. Unknown names and bad values raise :class:`SettingsError`
naming the setting, the value and what is allowed.

- ``CONVOY_STORAGE_URL`` (default ``sqlite:///convoy.db``): storage, a SQLite file or
  ``postgresql://user[:password]@host[:port]/db`` (production);
- ``CONVOY_MQTT_URL`` (unset): ``mqtt://[user:pass@]host[:port]`` of the broker (production,
  Mosquitto); unset = the in-process bus;
- ``CONVOY_SPEEDUP`` (60): twin seconds per wall second (1 = real time; 60 = a day in 24 min);
- ``CONVOY_ADMIN_TOKEN`` (unset): a token (16-200 characters) accepted as admin; it is not
  stored, so it is the way in on a fresh database (make further tokens with
  ``POST /api/v1/tokens``);
- ``CONVOY_TWIN`` (true): run the live digital twin (false: clock, takeovers and the
  WebSocket run over no vehicles);
- ``CONVOY_TWIN_TRUCKS`` (400, DESIGN.md's operator) and ``CONVOY_TWIN_SEED`` (0): the day's
  fleet size and the seed of its orders and faults;
- ``CONVOY_START_S`` (21600 = 06:00): the twin clock at start-up [s of the day];
- ``CONVOY_LIVE_HZ`` (2): twin ticks and WebSocket messages per second;
- ``CONVOY_TELEMETRY_EVERY_S`` (10): twin seconds between stored telemetry batches;
- ``CONVOY_FAULTS_PER_TRUCK_HOUR`` (0.02): injected sensor faults per driverless truck-hour,
  each a takeover request (an assumption; no public rate exists).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from convoy.service.storage import DEFAULT_URL

ENV_PREFIX = "CONVOY_"


class SettingsError(ValueError):
    """A bad setting; the message names it, its value and what is allowed."""


class Settings(BaseModel):
    """Settings of ``convoy serve`` (see the module docstring for each one's variable)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    storage_url: str = DEFAULT_URL
    mqtt_url: str | None = None
    # One wall minute is one twin hour: a whole day in 24 minutes.
    speedup: float = Field(60.0, gt=0, le=100_000)
    admin_token: str | None = Field(None, min_length=16, max_length=200)
    twin: bool = True
    twin_trucks: int = Field(400, ge=2, le=5000)
    twin_seed: int = Field(0, ge=0, le=2**31 - 1)
    start_s: float = Field(6 * 3600.0, ge=0, le=86_400)
    live_hz: float = Field(2.0, gt=0, le=20)
    telemetry_every_s: float = Field(10.0, gt=0, le=3600)
    # An assumption to exercise the remote centre live, ten times day.py's default so a
    # demo shows requests every few minutes of wall time.
    faults_per_truck_hour: float = Field(0.02, ge=0, le=10)


def _env_values(environ: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in Settings.model_fields:
        key = ENV_PREFIX + name.upper()
        if key in environ and environ[key] != "":
            out[name] = environ[key]
    return out


def _file_values(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"settings file {path}: cannot read: {exc.strerror or exc}") from None
    try:
        if path.endswith(".json"):
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except (ValueError, Exception) as exc:  # yaml.YAMLError or json.JSONDecodeError
        raise SettingsError(f"settings file {path}: not valid YAML/JSON: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SettingsError(f"settings file {path}: must be a mapping, got {type(raw).__name__}")
    return {str(k): v for k, v in raw.items()}


def load_settings(
    path: str | None = None, environ: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Settings from the defaults, then ``path`` (if given), then the environment, then
    ``overrides`` (keyword arguments, e.g. from tests).

    Raises:
        SettingsError: an unknown name or a value out of range.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_file_values(path))
    values.update(_env_values(os.environ if environ is None else environ))
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(Settings.model_fields)
            raise SettingsError(f"unknown setting {name!r}; allowed: {allowed}") from None
        shown = "<hidden>" if name == "admin_token" else repr(err.get("input"))
        raise SettingsError(f"{name} = {shown}; {err['msg']}") from None
