"""Per-vehicle MQTT credentials, and Mosquitto's password file, ACL file and broker config.

Roles, each a Mosquitto user:

* every **vehicle** ``{id}`` may publish only on its own uplink topics
  (``convoy/v1/vehicles/{id}/state|states|columns|events``) and read only its own
  ``convoy/v1/vehicles/{id}/commands``;
* the **service** user (the ingest workers and the cloud) reads everything under
  ``convoy/v1/`` and writes the downlinks (commands, platoon control, RSI) and the error topic;
* the optional **gateway** user publishes the uplinks of every vehicle: a multiplexed client
  such as ``convoy vehicle-agent`` without ``--per-vehicle``, or a depot gateway.

Passwords are stored as Mosquitto 2.0 ``$7$`` hashes:
``$7$<iterations>$<base64 12-byte salt>$<base64 PBKDF2-HMAC-SHA512 64-byte digest>``, the format
``mosquitto_passwd`` writes (mosquitto 2.0 ``src/password_mosq.c``; 101 iterations is its
default). The plain passwords go only into the credentials file that the vehicles use,
written with mode 0600.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from convoy.service.mqtt import topics

#: mosquitto_passwd's default PBKDF2 iteration count (mosquitto 2.0, ``PW_DEFAULT_ITERATIONS``).
MOSQUITTO_ITERATIONS = 101
#: mosquitto_passwd's salt length [bytes] (``SALT_LEN``).
SALT_BYTES = 12
DIGEST_BYTES = 64  # SHA-512
#: Random bytes of a generated password (144 bits, 24 URL-safe characters).
PASSWORD_BYTES = 18
SERVICE_USER = "convoy-ingest"
GATEWAY_USER = "convoy-agent"
#: QoS 1 messages the broker holds per session beyond those in flight; 0 is no limit. A
#: limit makes Mosquitto drop messages it has already acknowledged to the truck once an
#: ingest worker falls that far behind (its default, 1,000, is a 0.1 s stall at 10,000
#: messages/s), so convoy trades memory for zero loss: watch the backlog in
#: ``$SYS/broker/store/messages/count`` instead (``docs/mqtt.md``, "Operating").
MAX_QUEUED_MESSAGES = 0
#: Unacknowledged QoS 1 messages in flight to an MQTT 3.1.1 client (MQTT 5 clients set their
#: own Receive Maximum). Mosquitto's default of 20 caps a worker that acknowledges in batches.
MAX_INFLIGHT_MESSAGES = 1_000
#: Seconds between Mosquitto's ``$SYS`` statistics (its default is 10).
SYS_INTERVAL_S = 5
#: Seconds between Mosquitto's persistence snapshots (its default is 1,800). A clean restart
#: (SIGTERM) always writes one; a crash loses what arrived since the last.
AUTOSAVE_INTERVAL_S = 60


class AclError(ValueError):
    """Bad input to the credential or ACL generators; the message names it."""


@dataclass(frozen=True, slots=True)
class FleetCredentials:
    """Usernames and plain passwords of a fleet, its service user and gateway.

    Attributes:
        vehicles: vehicle id (also its MQTT username) -> password.
        service_user, service_password: the ingest workers' and cloud's login.
        gateway_user, gateway_password: the multiplexed publisher's login, or ``None``.
    """

    vehicles: dict[str, str]
    service_user: str = SERVICE_USER
    service_password: str = ""
    gateway_user: str | None = GATEWAY_USER
    gateway_password: str = ""

    def save(self, path: str | Path) -> Path:
        """Write the credentials as JSON, readable by the owner only (mode 0600)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "service": {"username": self.service_user, "password": self.service_password},
            "gateway": (
                {"username": self.gateway_user, "password": self.gateway_password}
                if self.gateway_user
                else None
            ),
            "vehicles": self.vehicles,
        }
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.chmod(p, 0o600)
        return p

    @staticmethod
    def load(path: str | Path) -> FleetCredentials:
        """Read what :meth:`save` wrote.

        Raises:
            AclError: a missing file or one without the expected keys.
        """
        try:
            data = json.loads(Path(path).read_text())
            gw = data.get("gateway")
            return FleetCredentials(
                vehicles={str(k): str(v) for k, v in data["vehicles"].items()},
                service_user=str(data["service"]["username"]),
                service_password=str(data["service"]["password"]),
                gateway_user=str(gw["username"]) if gw else None,
                gateway_password=str(gw["password"]) if gw else "",
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise AclError(f"credentials file {str(path)!r} cannot be read: {exc}") from None


def generate_credentials(
    vehicle_ids: Iterable[str],
    service_user: str = SERVICE_USER,
    gateway_user: str | None = GATEWAY_USER,
) -> FleetCredentials:
    """Random passwords for every vehicle, the service user and the gateway.

    Raises:
        AclError: an id outside the topic scheme, a duplicate, or a vehicle id that is also
            the service or gateway user.
    """
    ids = list(vehicle_ids)
    for v in ids:
        try:
            topics.check_id("vehicle", v)
        except topics.TopicError as exc:
            raise AclError(str(exc)) from None
    dup = [v for v, n in Counter(ids).items() if n > 1]
    if dup:
        raise AclError(f"vehicle ids appear more than once: {sorted(dup)}")
    for role, user in (("service_user", service_user), ("gateway_user", gateway_user)):
        if user is None:
            continue
        if not user or any(c in user for c in ":/+#\n"):
            raise AclError(f"{role} = {user!r}; must be non-empty without ':', '/', '+', '#'")
        if user in ids:
            raise AclError(f"{role} = {user!r} is also a vehicle id; pick another name")

    def pw() -> str:
        return secrets.token_urlsafe(PASSWORD_BYTES)

    return FleetCredentials(
        vehicles={v: pw() for v in ids},
        service_user=service_user,
        service_password=pw(),
        gateway_user=gateway_user,
        gateway_password=pw() if gateway_user else "",
    )


def hash_password(
    password: str, salt: bytes | None = None, iterations: int = MOSQUITTO_ITERATIONS
) -> str:
    """Mosquitto's ``$7$`` hash of ``password`` (random salt unless given)."""
    if iterations < 1:
        raise AclError(f"iterations = {iterations}; must be >= 1")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, DIGEST_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(want))
    return hmac.compare_digest(got, want)


def password_file(creds: FleetCredentials, iterations: int = MOSQUITTO_ITERATIONS) -> str:
    """The text of a Mosquitto ``password_file``: ``user:$7$...`` lines."""
    users = [(creds.service_user, creds.service_password)]
    if creds.gateway_user:
        users.append((creds.gateway_user, creds.gateway_password))
    users += list(creds.vehicles.items())
    return "".join(f"{u}:{hash_password(p, iterations=iterations)}\n" for u, p in users)


def acl_file(creds: FleetCredentials) -> str:
    """The text of a Mosquitto ``acl_file`` for the roles in the module docstring."""
    p = topics.PREFIX
    lines = [
        "# convoy MQTT ACL (generated by convoy.service.mqtt.acl); one block per user",
        f"user {creds.service_user}",
        f"topic read {p}/#",
        f"topic write {topics.ERROR_TOPIC}",
        f"topic write {p}/vehicles/+/commands",
        f"topic write {p}/platoons/+/control",
        f"topic write {p}/rsu/+/rsi",
        "",
    ]
    if creds.gateway_user:
        lines.append(f"user {creds.gateway_user}")
        lines += [f"topic write {topics.vehicle_filter(c)}" for c in topics.VEHICLE_UPLINK]
        lines.append(f"topic read {topics.vehicle_filter('commands')}")
        lines.append("")
    for v in creds.vehicles:
        lines.append(f"user {v}")
        lines += [f"topic write {topics.vehicle_topic(v, c)}" for c in topics.VEHICLE_UPLINK]
        lines.append(f"topic read {topics.command_topic(v)}")
        lines.append("")
    return "\n".join(lines)


def broker_config(
    port: int,
    password_path: str | Path,
    acl_path: str | Path,
    persistence_dir: str | Path,
    bind: str = "127.0.0.1",
    user: str | None = None,
) -> str:
    """A Mosquitto 2.0 config for the vehicle link: no anonymous logins, the password and
    ACL files, persistence, and queue limits sized so that QoS 1 data is not dropped.

    ``user``: the account Mosquitto runs as when started by root (its default is
    ``mosquitto``, which must then be able to read the files and write the persistence).
    """
    return "\n".join(
        [
            "# convoy vehicle link (generated by convoy.service.mqtt.acl)",
            *([f"user {user}"] if user else []),
            f"listener {int(port)} {bind}",
            "allow_anonymous false",
            f"password_file {Path(password_path).resolve()}",
            f"acl_file {Path(acl_path).resolve()}",
            "persistence true",
            f"persistence_location {Path(persistence_dir).resolve()}/",
            f"autosave_interval {AUTOSAVE_INTERVAL_S}",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
            f"sys_interval {SYS_INTERVAL_S}",
            "",
        ]
    )


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Paths written by :func:`write_broker_files`."""

    config: Path
    passwords: Path
    acl: Path
    credentials: Path
    persistence: Path


def write_broker_files(
    directory: str | Path,
    vehicle_ids: Sequence[str],
    port: int = 1883,
    bind: str = "127.0.0.1",
    creds: FleetCredentials | None = None,
    user: str | None = None,
) -> BrokerFiles:
    """Generate credentials (unless given) and write ``mosquitto.conf``, ``passwd``, ``acl``
    and ``credentials.json`` (0600) into ``directory``; run ``mosquitto -c <config>``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    creds = creds or generate_credentials(vehicle_ids)
    files = BrokerFiles(
        config=d / "mosquitto.conf",
        passwords=d / "passwd",
        acl=d / "acl",
        credentials=d / "credentials.json",
        persistence=d / "data",
    )
    files.persistence.mkdir(exist_ok=True)
    fd = os.open(files.passwords, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password_file(creds))
    files.acl.write_text(acl_file(creds))
    creds.save(files.credentials)
    files.config.write_text(
        broker_config(port, files.passwords, files.acl, files.persistence, bind=bind, user=user)
    )
    return files


def main_acl(argv: Sequence[str] | None = None) -> int:
    """``convoy mqtt-acl``: write broker files for a fleet; returns the exit status."""
    ap = argparse.ArgumentParser(
        prog="convoy mqtt-acl",
        description="Generate per-vehicle MQTT credentials and Mosquitto password/ACL/config.",
    )
    ap.add_argument("--out", required=True, help="directory to write into")
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--trucks", type=int, help="vehicles T0001..TNNNN")
    group.add_argument("--ids", help="file with one vehicle id per line")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--bind", default="127.0.0.1")
    a = ap.parse_args(argv)
    try:
        if a.ids:
            ids = [s.strip() for s in Path(a.ids).read_text().splitlines() if s.strip()]
        else:
            if a.trucks < 1:
                raise AclError(f"--trucks = {a.trucks}; must be >= 1")
            ids = truck_ids(a.trucks)
        files = write_broker_files(a.out, ids, port=a.port, bind=a.bind)
    except (AclError, OSError) as exc:
        print(f"convoy mqtt-acl: {exc}")
        return 2
    print(f"wrote {files.config}, {files.passwords}, {files.acl}, {files.credentials}")
    print(f"start the broker with: mosquitto -c {files.config}")
    return 0


def truck_ids(n: int) -> list[str]:
    """``T0001`` .. ``T{n}``, the ids the simulated fleet uses."""
    width = max(4, len(str(n)))
    return [f"T{k:0{width}d}" for k in range(1, n + 1)]
