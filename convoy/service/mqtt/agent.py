"""Simulated trucks on MQTT: ``convoy vehicle-agent``.

The agent drives a fleet in the network engine (``convoy.sim.network.NetSim``) on the
built-in Ordos network, or replays floating-car data (the ``fcd.parquet`` of ``convoy run``,
or a CSV with the same columns), and publishes every truck's state at the BSM's 10 Hz,
in real time or faster, the way real trucks would:

* ``convoy/v1/vehicles/{id}/state`` with one :class:`~convoy.service.mqtt.messages.VehicleState`
  per message, or, with ``batch > 1``, ``.../states`` with a
  :class:`~convoy.service.mqtt.messages.VehicleStateBatch` of ``batch`` samples;
* QoS 1, persistent sessions: paho keeps unacknowledged messages and sends them again after a
  reconnect, so a broker restart loses nothing the agent has published;
* one multiplexed client (the ``gateway`` login of ``convoy.service.mqtt.acl``) by default,
  or one client per truck, each with its own login (``per_vehicle``).

The trajectory is a :class:`Track`: arrays ``(T, n)`` sampled every ``period_s``; sample
``k`` of every truck is sent at ``start + k * period_s / speedup`` of the wall clock and
stamped ``time_ms = start_ms + k * period_ms``.
"""

from __future__ import annotations

import argparse
import math
import selectors
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from numpy.typing import NDArray
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from convoy.road.network import RoadNetwork
from convoy.road.v2x import BSM_RATE_HZ
from convoy.service.mqtt import acl, messages, topics
from convoy.service.mqtt.ingest import BrokerSettings, ChunkedClient
from convoy.service.mqtt.messages import VehicleState
from convoy.vehicle.controllers import MODE_NAMES
from convoy.vehicle.energy import ElectricPowertrain

#: Samples per second of every truck: the BSM rate of T/CSAE 53 (10 Hz).
SAMPLE_PERIOD_S = 1.0 / BSM_RATE_HZ
#: State of charge the simulated trucks leave the depot with (an estimate: charged
#: overnight, not to 100 % to spare the pack).
START_SOC = 0.9
#: Decimals on the wire: 1e-7 degree (the BSM's position unit), 0.01 m/s, 0.01 degree,
#: 0.01 m/s², 1e-4 of the battery.
_DECIMALS = {"lon": 7, "lat": 7, "speed": 2, "heading": 2, "accel": 2, "soc": 4}
#: Unacknowledged QoS 1 messages a client may have in flight (paho's default is 20, which
#: caps one multiplexed client at 20 messages per round trip).
MAX_INFLIGHT = 1_000
#: Session expiry of the agents' MQTT 5 sessions [s]: a broker restart must not end them.
SESSION_EXPIRY_S = 3_600


class AgentError(ValueError):
    """Bad agent input; the message names the field, the value and what is allowed."""


@dataclass(frozen=True, slots=True)
class Track:
    """Trajectories of ``n`` trucks, sampled every ``period_s`` from time 0.

    Attributes:
        vehicle_ids: (n,) ids as published (valid V2X ids).
        period_s: sample period [s].
        lon_deg, lat_deg, speed_mps, heading_deg, accel_mps2, soc: (T, n) float64, NaN
            where the truck is not on the road (not yet departed, or arrived); ``soc`` is
            NaN for a truck without a battery.
        edge: (T, n) int32 row of ``edge_ids``, -1 for none.
        lane: (T, n) int16 lane, -1 for none.
        mode: (T, n) int8 index of ``MODE_NAMES``, -1 for none.
        edge_ids: edge ids indexed by ``edge``.
    """

    vehicle_ids: tuple[str, ...]
    period_s: float
    lon_deg: NDArray[np.float64]
    lat_deg: NDArray[np.float64]
    speed_mps: NDArray[np.float64]
    heading_deg: NDArray[np.float64]
    accel_mps2: NDArray[np.float64]
    soc: NDArray[np.float64]
    edge: NDArray[np.int32]
    lane: NDArray[np.int16]
    mode: NDArray[np.int8]
    edge_ids: tuple[str, ...]

    @property
    def steps(self) -> int:
        """Number of sample times T."""
        return int(self.lon_deg.shape[0])

    def on_road(self, k: int) -> NDArray[np.int64]:
        """Columns of the trucks that have a sample at step ``k``."""
        return np.flatnonzero(~np.isnan(self.lon_deg[k]))

    def payload(self, k: int, i: int, time_ms: int) -> str:
        """JSON of truck ``i``'s sample at step ``k``, stamped ``time_ms`` (the wire form;
        it decodes to :meth:`state`)."""
        d = _DECIMALS
        parts = [
            f'{{"id":"{self.vehicle_ids[i]}","time_ms":{time_ms}',
            f',"lon_deg":{round(float(self.lon_deg[k, i]), d["lon"])!r}',
            f',"lat_deg":{round(float(self.lat_deg[k, i]), d["lat"])!r}',
            f',"speed_mps":{round(float(self.speed_mps[k, i]), d["speed"])!r}',
            f',"heading_deg":{round(float(self.heading_deg[k, i]), d["heading"])!r}',
            f',"accel_mps2":{round(float(self.accel_mps2[k, i]), d["accel"])!r}',
        ]
        soc = float(self.soc[k, i])
        if not math.isnan(soc):
            parts.append(f',"soc":{round(soc, d["soc"])!r}')
        mode = int(self.mode[k, i])
        if mode >= 0:
            parts.append(f',"mode":"{MODE_NAMES[mode]}"')
        edge = int(self.edge[k, i])
        if edge >= 0:
            parts.append(f',"edge":"{self.edge_ids[edge]}","lane":{int(self.lane[k, i])}')
        parts.append("}")
        return "".join(parts)

    def state(self, k: int, i: int, time_ms: int) -> VehicleState:
        """Truck ``i``'s sample at step ``k`` as a validated :class:`VehicleState`."""
        return VehicleState.model_validate_json(self.payload(k, i, time_ms))


def _heading_from_positions(
    lon: NDArray[np.float64], lat: NDArray[np.float64]
) -> NDArray[np.float64]:
    """(T, n) heading of travel from successive samples; a standing truck keeps its last
    heading (0 before it first moves)."""
    T = lon.shape[0]
    east = np.radians(np.diff(lon, axis=0)) * np.cos(np.radians(lat[1:] + lat[:-1]) / 2)
    north = np.radians(np.diff(lat, axis=0))
    h = np.zeros_like(lon)
    h[1:] = np.degrees(np.arctan2(east, north)) % 360.0
    moving = np.zeros(lon.shape, dtype=bool)
    moving[1:] = np.hypot(east, north) > 1e-10  # NaN compares False
    # carry the last moving sample's heading forward: index of the latest moving row
    last = np.maximum.accumulate(np.where(moving, np.arange(T)[:, None], 0), axis=0)
    out = np.take_along_axis(h, last, axis=0)
    if T > 1:
        out[0] = out[1]  # the first sample takes the heading of the first step
    return np.where(np.isnan(lon), np.nan, out)


def track_from_fcd(
    columns: dict[str, Any],
    vehicle_names: Sequence[str],
    edge_ids: Sequence[str],
    network: RoadNetwork | None = None,
    period_s: float = SAMPLE_PERIOD_S,
    battery_kwh: float | None = ElectricPowertrain().battery_kwh,
    ids: Sequence[str] | None = None,
) -> Track:
    """A :class:`Track` from FCD columns (one row per vehicle and record time).

    Args:
        columns: ``time_s``, ``vehicle`` (row of ``vehicle_names``), ``edge`` (row of
            ``edge_ids``), ``lane``, ``pos_m`` (or ``lon`` and ``lat``), ``speed_mps``,
            ``accel_mps2``, and optionally ``energy_kwh`` and ``mode`` (index of
            ``MODE_NAMES``), as arrays.
        vehicle_names, edge_ids: what ``vehicle`` and ``edge`` index.
        network: places ``pos_m`` on the map and gives the heading; without it ``lon``,
            ``lat`` are needed and the heading comes from successive positions.
        period_s: sample period; rows between sample times are dropped.
        battery_kwh: pack size for the state of charge, ``START_SOC - energy / pack``;
            ``None`` for trucks without one.
        ids: published ids (default ``T0001``...), one per vehicle name.

    Raises:
        AgentError: missing columns, or ids outside the topic scheme.
    """
    from convoy.sim.net_output import EdgeGeometry

    need = {"time_s", "vehicle", "edge", "lane", "speed_mps", "accel_mps2"}
    missing = need - set(columns)
    if network is None:
        missing |= {"lon", "lat"} - set(columns)
    elif "pos_m" not in columns:
        missing.add("pos_m")
    if missing:
        raise AgentError(f"FCD lacks columns {sorted(missing)}; it has {sorted(columns)}")
    pub = list(ids) if ids is not None else acl.truck_ids(len(vehicle_names))
    if len(pub) != len(vehicle_names):
        raise AgentError(f"{len(pub)} ids for {len(vehicle_names)} vehicles")
    for name in pub:
        try:
            topics.check_id("vehicle", name)
        except topics.TopicError as exc:
            raise AgentError(str(exc)) from None
    t = np.asarray(columns["time_s"], dtype=np.float64)
    step = np.rint(t / period_s).astype(np.int64)
    on_grid = np.abs(step * period_s - t) < 1e-6 * max(1.0, period_s)
    rows = np.flatnonzero(on_grid)
    k = step[rows] - (int(step[rows].min()) if rows.size else 0)
    v = np.asarray(columns["vehicle"])[rows].astype(np.int64)
    T, n = (int(k.max()) + 1 if rows.size else 0), len(vehicle_names)

    def grid(values: NDArray[Any], fill: float, dtype: Any) -> NDArray[Any]:
        g = np.full((T, n), fill, dtype=dtype)
        g[k, v] = values
        return g

    def col(name: str) -> NDArray[Any]:
        return np.asarray(columns[name])[rows]

    edge = col("edge").astype(np.int64)
    if network is not None:
        geo = EdgeGeometry.build(network, list(edge_ids))
        lon, lat, brg = geo.place(edge, np.asarray(columns["pos_m"], dtype=np.float64)[rows])
        heading = grid(brg, np.nan, np.float64)
    else:
        lon = np.asarray(columns["lon"], dtype=np.float64)[rows]
        lat = np.asarray(columns["lat"], dtype=np.float64)[rows]
        heading = None
    lon_g, lat_g = grid(lon, np.nan, np.float64), grid(lat, np.nan, np.float64)
    if heading is None:
        heading = _heading_from_positions(lon_g, lat_g)
    if battery_kwh is not None and "energy_kwh" in columns:
        e = np.asarray(columns["energy_kwh"], dtype=np.float64)[rows]
        soc = grid(np.clip(START_SOC - e / battery_kwh, 0.0, 1.0), np.nan, np.float64)
    else:
        soc = np.full((T, n), np.nan)
    mode = (
        grid(np.asarray(columns["mode"])[rows].astype(np.int8), -1, np.int8)
        if "mode" in columns
        else np.full((T, n), -1, np.int8)
    )
    return Track(
        vehicle_ids=tuple(pub),
        period_s=period_s,
        lon_deg=lon_g,
        lat_deg=lat_g,
        speed_mps=np.clip(
            grid(np.asarray(columns["speed_mps"])[rows], np.nan, np.float64), 0, 163.8
        ),
        heading_deg=np.where(np.isnan(lon_g), np.nan, np.nan_to_num(heading) % 360.0),
        accel_mps2=np.clip(
            grid(np.asarray(columns["accel_mps2"])[rows], np.nan, np.float64), -20, 20
        ),
        soc=soc,
        edge=grid(edge, -1, np.int32),
        lane=grid(np.asarray(columns["lane"])[rows], -1, np.int16),
        mode=mode,
        edge_ids=tuple(edge_ids),
    )


def ordos_track(n_trucks: int, duration_s: float, seed: int = 0, platoon_size: int = 4) -> Track:
    """Drive ``n_trucks`` as hybrid platoons (a human-driven head and L4 followers) from coal
    mines to power plants on the Ordos network for ``duration_s``, sampled at 10 Hz.

    Platoons take the mine-to-plant routes of 50 km or more in turn, the next platoon on a
    route leaving 30 s after the one before. Trucks are ``T0001``.. in platoon order.
    """
    from convoy.road.network import SiteKind
    from convoy.road.ordos import ordos_network
    from convoy.road.routing import Router, TruckLoad
    from convoy.sim.network import Leg, NetSim, Platoon, Trip

    if n_trucks < 1:
        raise AgentError(f"trucks = {n_trucks}; must be >= 1")
    if not duration_s > 0:
        raise AgentError(f"duration_s = {duration_s}; must be > 0")
    if not 1 <= platoon_size <= 6:
        raise AgentError(f"platoon_size = {platoon_size}; allowed 1..6 (DESIGN.md: 1+N, N <= 5)")
    net = ordos_network()
    router = Router(net)
    mines = [s for s in net.sites.values() if s.kind == SiteKind.COAL_MINE]
    plants = [s for s in net.sites.values() if s.kind == SiteKind.POWER_PLANT]
    routes: list[tuple[str, ...]] = []
    for m in mines:
        for p in plants:
            r = router.route(m.node, p.node, "fastest", TruckLoad.loaded())
            if r.length_m >= 50_000.0:
                routes.append(r.edge_ids)
            if len(routes) >= 8:
                break
        if len(routes) >= 8:
            break
    ids = acl.truck_ids(n_trucks)
    trips: list[Trip] = []
    platoons: list[Platoon] = []
    for j, start in enumerate(range(0, n_trucks, platoon_size)):
        members = ids[start : start + platoon_size]
        route = routes[j % len(routes)]
        depart = 30.0 * (j // len(routes))
        for pos, vid in enumerate(members):
            kind = "truck-human" if pos == 0 else "truck-l4"
            trips.append(Trip(vid, kind, (Leg(route),), depart_s=depart))
        if len(members) > 1:
            platoons.append(Platoon(f"P{j + 1:03d}", tuple(members)))
    sim = NetSim(net, trips, platoons=platoons, seed=seed, record_every_s=SAMPLE_PERIOD_S)
    res = sim.run(duration_s)
    return track_from_fcd(
        res.fcd, res.vehicle_ids, res.edge_ids, network=net, ids=list(res.vehicle_ids)
    )


def read_fcd(path: str | Path, network: RoadNetwork | None = None) -> Track:
    """A :class:`Track` from an FCD file of ``convoy run`` (Parquet) or a CSV with the columns
    ``time_s, vehicle_id, lon, lat, speed_mps, accel_mps2`` and optionally ``edge``,
    ``lane``, ``mode``, ``energy_kwh``. Vehicles are renamed ``T0001``.. in order of
    their ids.

    Raises:
        AgentError: an unreadable file or missing columns.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    p = Path(path)
    try:
        table = pq.read_table(p) if p.suffix == ".parquet" else pacsv.read_csv(p)
    except (OSError, pa.ArrowInvalid) as exc:
        raise AgentError(f"cannot read FCD {str(p)!r}: {exc}") from None
    need = {"time_s", "vehicle_id", "lon", "lat", "speed_mps", "accel_mps2"}
    if need - set(table.column_names):
        raise AgentError(f"FCD {str(p)!r} lacks columns {sorted(need - set(table.column_names))}")

    def codes(name: str) -> tuple[NDArray[np.int64], list[str]]:
        col = pc.cast(table[name], pa.string())
        names = sorted(set(col.to_pylist()) - {None})
        idx = pc.index_in(col, value_set=pa.array(names, pa.string()))
        return np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), np.int64), names

    veh, vnames = codes("vehicle_id")
    cols: dict[str, Any] = {
        c: table[c].to_numpy(zero_copy_only=False)
        for c in ("time_s", "lon", "lat", "speed_mps", "accel_mps2", "energy_kwh")
        if c in table.column_names
    }
    cols["vehicle"] = veh
    edge_ids: list[str] = []
    if "edge" in table.column_names:
        cols["edge"], edge_ids = codes("edge")
    else:
        cols["edge"] = np.full(len(veh), -1)
    cols["lane"] = (
        np.nan_to_num(table["lane"].to_numpy(zero_copy_only=False), nan=-1)
        if "lane" in table.column_names
        else np.full(len(veh), -1)
    )
    if "mode" in table.column_names:
        m, mnames = codes("mode")
        lut = np.array([MODE_NAMES.index(x) if x in MODE_NAMES else -1 for x in mnames] + [-1])
        cols["mode"] = lut[m]
    del network  # positions come from lon/lat; the heading from successive positions
    return track_from_fcd(cols, vnames, edge_ids, network=None)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """How the agent publishes.

    Attributes:
        broker: the broker (its login is the gateway's in multiplexed mode).
        per_vehicle: one MQTT client per truck, logging in with ``credentials``.
        credentials: per-truck passwords (``acl.FleetCredentials``); needed by
            ``per_vehicle`` unless the broker is anonymous.
        batch: samples per message; 1 sends ``state`` messages, more send ``states``.
        speedup: how much faster than real time (1 = real time).
        qos: 0 or 1.
        duration_s: simulated seconds to send (default: the whole track).
        client_prefix: client ids are ``{prefix}-gw`` or ``{prefix}-{truck}``.
    """

    broker: BrokerSettings = field(default_factory=BrokerSettings)
    per_vehicle: bool = False
    credentials: acl.FleetCredentials | None = None
    batch: int = 1
    speedup: float = 1.0
    qos: int = 1
    duration_s: float | None = None
    client_prefix: str = "convoy-agent"

    def check(self) -> None:
        """Raise :class:`AgentError` naming the first bad field."""
        self.broker.check()
        if not 1 <= self.batch <= messages.MAX_BATCH_STATES:
            raise AgentError(f"batch = {self.batch}; allowed 1..{messages.MAX_BATCH_STATES}")
        if not (self.speedup > 0 and math.isfinite(self.speedup)):
            raise AgentError(f"speedup = {self.speedup}; must be a finite number > 0")
        if self.qos not in (0, 1):
            raise AgentError(f"qos = {self.qos}; allowed: 0, 1")
        if self.duration_s is not None and not self.duration_s > 0:
            raise AgentError(f"duration_s = {self.duration_s}; must be > 0")


@dataclass
class AgentStats:
    """What the agent sent: ``states`` and ``messages`` published, ``acked`` messages the
    broker acknowledged, ``connects`` of all clients, ``late_s`` how far the sending fell
    behind the schedule at worst [s]."""

    states: int = 0
    messages: int = 0
    acked: int = 0
    connects: int = 0
    late_s: float = 0.0


class Agent:
    """Publishes a :class:`Track` as live trucks. Use :meth:`run` (blocking) and
    :meth:`stop` from another thread to end it early."""

    def __init__(self, track: Track, settings: AgentSettings | None = None) -> None:
        self.track = track
        self.settings = settings or AgentSettings()
        self.settings.check()
        if self.settings.per_vehicle and self.settings.credentials is not None:
            missing = [v for v in track.vehicle_ids if v not in self.settings.credentials.vehicles]
            if missing:
                raise AgentError(f"credentials lack trucks {missing[:5]} (and the rest)")
        self.stats = AgentStats()
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._clients: list[ChunkedClient] = []
        self._registered: list[Any] = []
        self._retry_at: list[float] = []
        self._client_of: list[int] = []  # truck column -> client
        self._pending: list[list[str]] = [[] for _ in track.vehicle_ids]
        self.start_ms = 0

    def stop(self) -> None:
        """End :meth:`run` at its next tick."""
        self._stop.set()

    # --- clients ----------------------------------------------------------------------------
    def _make_client(
        self, client_id: str, username: str | None, password: str | None
    ) -> ChunkedClient:
        b = self.settings.broker
        v5 = b.protocol == "5"
        c = ChunkedClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if v5 else False,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        if username is not None:
            c.username_pw_set(username, password)
        c.max_inflight_messages_set(MAX_INFLIGHT)
        c.max_queued_messages_set(0)
        c.on_publish = self._on_publish
        c.on_connect = self._on_connect
        return c

    def _on_publish(self, *_a: object) -> None:
        self.stats.acked += 1

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if not reason.is_failure:
            self.stats.connects += 1

    def _connect(self, c: ChunkedClient) -> None:
        b = self.settings.broker
        try:
            if b.protocol == "5":
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = SESSION_EXPIRY_S
                c.connect(b.host, b.port, b.keepalive_s, clean_start=False, properties=props)
            else:
                c.connect(b.host, b.port, b.keepalive_s)
        except OSError:
            return  # _service tries again

    def _open(self) -> None:
        s = self.settings
        creds = s.credentials
        if s.per_vehicle:
            for v in self.track.vehicle_ids:
                pw = creds.vehicles[v] if creds is not None else None
                user = v if creds is not None else s.broker.username
                self._clients.append(self._make_client(f"{s.client_prefix}-{v}", user, pw))
            self._client_of = list(range(len(self.track.vehicle_ids)))
        else:
            user, pw = s.broker.username, s.broker.password
            if creds is not None and creds.gateway_user and user is None:
                user, pw = creds.gateway_user, creds.gateway_password
            self._clients.append(self._make_client(f"{s.client_prefix}-gw", user, pw))
            self._client_of = [0] * len(self.track.vehicle_ids)
        self._registered = [None] * len(self._clients)
        self._retry_at = [0.0] * len(self._clients)
        for c in self._clients:
            self._connect(c)

    def _register(self, j: int, c: ChunkedClient) -> None:
        """Keep the selector in step with client ``j``'s current socket."""
        sock = c.socket()
        old = self._registered[j]
        if sock is old:
            return
        if old is not None:
            self._sel.unregister(old)
        if sock is not None:
            self._sel.register(sock, selectors.EVENT_READ, j)
        self._registered[j] = sock

    def _service(self, timeout_s: float) -> None:
        """Read acks, write what is queued, keep alive, reconnect lost clients."""
        now = time.monotonic()
        for j, c in enumerate(self._clients):
            if c.socket() is None and now >= self._retry_at[j]:
                try:
                    c.reconnect()
                except OSError:
                    self._retry_at[j] = now + 0.5  # the broker is down: try again soon
            self._register(j, c)
        if self._registered.count(None) == len(self._clients):
            time.sleep(max(0.0, min(timeout_s, 0.05)))
            return
        for key, _ in self._sel.select(max(0.0, timeout_s)):
            self._clients[key.data].read_all()
        for j, c in enumerate(self._clients):
            if c.socket() is not None and c.want_write():
                c.loop_write()
            if c.socket() is not None:
                c.loop_misc()
            self._register(j, c)

    # --- sending ----------------------------------------------------------------------------
    def _send(self, i: int, payloads: list[str]) -> None:
        vid = self.track.vehicle_ids[i]
        c = self._clients[self._client_of[i]]
        if len(payloads) == 1 and self.settings.batch == 1:
            c.publish(topics.state_topic(vid), payloads[0], qos=self.settings.qos)
        else:
            body = f'{{"id":"{vid}","states":[{",".join(payloads)}]}}'
            c.publish(topics.states_topic(vid), body, qos=self.settings.qos)
        self.stats.messages += 1
        self.stats.states += len(payloads)

    def run(self) -> AgentStats:
        """Send the track on schedule, then wait (up to 10 s) for the broker's acks."""
        s = self.settings
        tr = self.track
        self._open()
        steps = tr.steps
        if s.duration_s is not None:
            steps = min(steps, round(s.duration_s / tr.period_s))
        period_ms = round(tr.period_s * 1000)
        t0 = time.monotonic()
        self.start_ms = messages.now_ms()
        for k in range(steps):
            if self._stop.is_set():
                break
            due = t0 + k * tr.period_s / s.speedup
            while (wait := due - time.monotonic()) > 0:
                self._service(wait)
            self.stats.late_s = max(self.stats.late_s, time.monotonic() - due)
            stamp = self.start_ms + k * period_ms
            for i in tr.on_road(k):
                buf = self._pending[i]
                buf.append(tr.payload(k, int(i), stamp))
                if len(buf) >= s.batch:
                    self._send(int(i), buf)
                    self._pending[i] = []
            self._service(0.0)
        for i, buf in enumerate(self._pending):
            if buf:
                self._send(i, buf)
                self._pending[i] = []
        end = time.monotonic() + 10.0
        while self.stats.acked < self.stats.messages and time.monotonic() < end and s.qos:
            self._service(0.05)
        self.close()
        return self.stats

    def close(self) -> None:
        """Disconnect every client."""
        for j, c in enumerate(self._clients):
            if c.socket() is not None:
                c.disconnect()
                c.loop_write()
            self._register(j, c)
        self._clients = []
        self._sel.close()


def main_agent(argv: Sequence[str] | None = None) -> int:
    """``convoy vehicle-agent``: simulated trucks on an MQTT broker; returns the exit status."""
    ap = argparse.ArgumentParser(
        prog="convoy vehicle-agent",
        description="Publish simulated trucks' state to an MQTT broker as real vehicles would "
        f"({topics.PREFIX}/vehicles/<id>/state at 10 Hz).",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--username", help="gateway login (multiplexed mode)")
    ap.add_argument("--password")
    ap.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    ap.add_argument("--trucks", type=int, default=20, help="trucks on the Ordos network")
    ap.add_argument("--fcd", help="replay this FCD file (Parquet or CSV) instead")
    ap.add_argument("--duration", type=float, default=600.0, help="simulated seconds")
    ap.add_argument("--speedup", type=float, default=1.0, help="x real time")
    ap.add_argument("--batch", type=int, default=1, help="samples per message")
    ap.add_argument("--qos", type=int, default=1, choices=[0, 1])
    ap.add_argument("--per-vehicle", action="store_true", help="one client and login per truck")
    ap.add_argument("--credentials", help="credentials.json from `convoy mqtt-acl`")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        creds = acl.FleetCredentials.load(a.credentials) if a.credentials else None
        track = read_fcd(a.fcd) if a.fcd else ordos_track(a.trucks, a.duration, seed=a.seed)
        settings = AgentSettings(
            broker=BrokerSettings(
                host=a.host,
                port=a.port,
                username=a.username,
                password=a.password,
                protocol=a.protocol,
            ),
            per_vehicle=a.per_vehicle,
            credentials=creds,
            batch=a.batch,
            speedup=a.speedup,
            qos=a.qos,
            duration_s=a.duration,
        )
        agent = Agent(track, settings)
    except ValueError as exc:
        print(f"convoy vehicle-agent: {exc}")
        return 2
    print(
        f"{len(track.vehicle_ids)} trucks, {track.steps * track.period_s:.0f} s of track, "
        f"to {a.host}:{a.port} ({'per-vehicle' if a.per_vehicle else 'multiplexed'}, "
        f"batch {a.batch}, x{a.speedup})"
    )
    try:
        stats = agent.run()
    except KeyboardInterrupt:
        agent.close()
        stats = agent.stats
    if stats.connects == 0:
        # nothing reached a broker: say so, rather than count states "sent" into the void
        print(
            f"convoy vehicle-agent: no MQTT broker answered at {a.host}:{a.port} during the "
            f"run; none of the {stats.states} states was delivered; allowed: the address of a "
            "running broker (--host, --port)",
            file=sys.stderr,
        )
        return 1
    print(
        f"sent {stats.states} states in {stats.messages} messages, {stats.acked} acknowledged; "
        f"{stats.connects} connections; at worst {stats.late_s:.3f} s behind schedule"
    )
    return 0 if stats.acked >= stats.messages or a.qos == 0 else 1
