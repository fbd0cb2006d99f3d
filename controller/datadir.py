"""The controller's data directory: what `controller init` writes and where.

    DIR/controller.toml   settings (documented in the file and the README)
    DIR/ca.pem ca.key     the fleet's certificate authority
    DIR/ca-next.pem .key  a CA rotation in progress: the new CA, and
    DIR/ca-next-endorsement.pem  its certificate issued by the current one
    DIR/ca-retired-SERIAL.pem .key  CAs retired by `rotate-ca --retire-old`
    DIR/server.pem .key   the controller's TLS certificate
    DIR/admin.pem .key    the first owner's admin certificate (`controller init`)
    DIR/signing.key       Ed25519 key that signs work orders
    DIR/signing-keys.json rotations: each new key endorsed by the one before
    DIR/signing.key.ID    retired signing keys, kept for the record
    DIR/signing-keys-status.json  when each key was first used; revoked keys
    DIR/controller.db     SQLite (WAL)
    DIR/endpoints.json    written by `serve`: the addresses it listens on
    DIR/artifacts/SHA256  published agent packages, named by their digest (0644)

Every key is mode 0600 and the directory 0700.
"""

from __future__ import annotations

import json
import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fleetpatch import addresses
from fleetpatch.atomicfile import write_atomic
from fleetpatch.durations import format_duration, parse_duration
from fleetpatch.tomltable import overlay

from controller import pgurl
from controller.errors import DataDirError, UsageError
from controller.vulns import DEFAULT_GRACE

DEFAULT_DATA_DIR = Path("/var/lib/fleetpatch/controller")
#: The administrator's settings of a packaged controller (a conffile of the
#: fleetpatch-controller package): keys set here override those of the data
#: dir's controller.toml (written by `controller init`), table by table and
#: key by key. Read for the default data dir, or wherever SETTINGS_ENV points.
SETTINGS_FILE = Path("/etc/fleetpatch/controller.toml")
SETTINGS_ENV = "FLEETPATCH_CONTROLLER_SETTINGS"


def settings_for(data_dir: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """The settings file that goes with data_dir: $FLEETPATCH_CONTROLLER_SETTINGS
    if set, else /etc/fleetpatch/controller.toml for the default data dir
    (the packaged controller), else none."""
    named = (os.environ if environ is None else environ).get(SETTINGS_ENV, "")
    if named:
        return Path(named)
    return SETTINGS_FILE if data_dir == DEFAULT_DATA_DIR else None


DEFAULT_PORT = 7443
# The tables of controller.toml ([[webhooks]] is an array of them).
TABLES = {
    "server", "checkin", "campaigns", "releases", "enrollment", "audit", "metrics", "webhooks",
    "certificates", "signing", "vulns", "compliance", "store", "cli",
}  # fmt: skip


@dataclass(frozen=True)
class WebhookSetting:
    """[[webhooks]]: where campaign events are POSTed (controller/notify)."""

    name: str  # names its delivery cursor: renaming one starts it afresh
    url: str
    secret_file: Path  # the HMAC key; read by `serve`


@dataclass(frozen=True)
class Settings:
    listen: str
    enroll_listen: str
    advertise: str
    checkin_interval: timedelta
    checkin_jitter: float
    campaign_tick: timedelta = timedelta(seconds=10)
    checkin_max_batch: int = 1000
    # [releases] public_key: agent packages must be signed with this release
    # key to be published; None: any signed release is taken as it is.
    release_public_key: Path | None = None
    # [enrollment] pending_timeout: how long a newly enrolled host may take
    # to make its first mutual-TLS call before it is forgotten and its
    # token use given back.
    pending_timeout: timedelta = timedelta(hours=1)
    # [audit] refusal_window: a host's refusals after its first are counted,
    # and written as one record per window (controller/refusals.py).
    refusal_window: timedelta = timedelta(minutes=10)
    # [audit] checkpoint_interval: how often a signed checkpoint of the trail
    # goes to the controller's log (controller/checkpoint.py).
    checkpoint_interval: timedelta = timedelta(hours=1)
    # [metrics] listen: HOST:PORT of the Prometheus metrics listener (plain
    # HTTP, controller/metrics/listener.py); empty: no listener.
    metrics_listen: str = ""
    webhooks: tuple[WebhookSetting, ...] = ()
    # [certificates] host_lifetime: how long a host certificate is valid;
    # hosts renew theirs at two thirds of it (controller/fleet/renewal.py).
    host_certificate_lifetime: timedelta = timedelta(days=90)
    # [signing] old_key_grace: after a rotation, how long agents still take
    # orders signed by the old key once the new one is in use.
    old_key_grace: timedelta = timedelta(days=7)
    # [vulns] match_interval: how often hosts whose inventory or scan changed
    # are matched against the imported feeds (at once after an import).
    vuln_match_interval: timedelta = timedelta(minutes=1)
    # [compliance] <severity>: how long a security fix may wait on a host
    # before the host is out of policy (controller/vulns/policy.py).
    compliance_grace: Mapping[str, timedelta] = field(default_factory=lambda: dict(DEFAULT_GRACE))
    # [certificates] admin_lifetime: how long an admin certificate is valid;
    # the admin CLI renews its own at two thirds of it.
    admin_certificate_lifetime: timedelta = timedelta(days=365)
    # [campaigns] require_second_approver: a campaign must be approved by
    # an approver other than the admin who created it.
    require_second_approver: bool = False
    # [store] url: "postgresql://..." keeps the controller's state in that
    # PostgreSQL database (several replicas may share it); empty: the
    # embedded SQLite file DIR/controller.db.
    store_url: str = ""
    # [store] timeout: how long one call to a PostgreSQL database may take
    # (a frozen server, a network cut off without a reset, a lock held)
    # before its callers are answered UNAVAILABLE; while it still hangs,
    # the next calls are answered so at once. Unused on SQLite.
    store_timeout: timedelta = timedelta(seconds=20)
    # [cli] controllers: the replicas the admin CLI asks, in order (it moves
    # to the next when one cannot be reached); empty: the running server's
    # address (endpoints.json), else server.advertise.
    cli_controllers: tuple[str, ...] = ()
    # [checkin] write_behind: a check-in that brings nothing new (the same
    # inventory and updates, an active host) is answered at once and its
    # last_seen, facts and health written within this long
    # (controller/store/heartbeats.py); zero: every check-in is written first.
    checkin_write_behind: timedelta = timedelta(seconds=1)
    # [checkin] held_hosts: at most this many hosts' placements kept in
    # memory for that (about 0.45 KB each); the others are written first.
    checkin_held_hosts: int = 500_000


def split_addresses(spelled: str) -> list[str]:
    """ "a:7443,b:7443" -> ["a:7443", "b:7443"], each checked as an address
    to call; raises UsageError naming the one that is not HOST:PORT."""
    try:
        return addresses.split_addresses(spelled)
    except addresses.AddressError as exc:
        raise UsageError(str(exc)) from None


def default_enroll_address(address: str) -> str:
    """The enrollment listener sits on the port after the mTLS one."""
    try:
        return addresses.port_after(address, listening=True)
    except addresses.AddressError as exc:
        raise UsageError(f"{exc}; set enroll_listen") from None


def split_address(address: str, *, listening: bool = True) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6; port 0 only where
    ``listening``); raises UsageError."""
    try:
        return addresses.split_address(address, listening=listening)
    except addresses.AddressError as exc:
        raise UsageError(str(exc)) from None


join_address = addresses.join_address


@dataclass(frozen=True)
class DataDir:
    path: Path
    #: The administrator's settings over controller.toml (SETTINGS_FILE).
    settings_file: Path | None = None

    @classmethod
    def at(cls, path: Path) -> DataDir:
        """The data dir at path, with the settings file that goes with it."""
        return cls(path, settings_for(path))

    @property
    def ca_cert(self) -> Path:
        return self.path / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.path / "ca.key"

    @property
    def ca_next_cert(self) -> Path:
        """A CA rotation in progress: the new CA (`controller rotate-ca`)."""
        return self.path / "ca-next.pem"

    @property
    def ca_next_key(self) -> Path:
        return self.path / "ca-next.key"

    @property
    def ca_endorsement(self) -> Path:
        """The new CA's certificate, issued by the current one."""
        return self.path / "ca-next-endorsement.pem"

    def ca_retired(self, serial: str, suffix: str) -> Path:
        return self.path / f"ca-retired-{serial}.{suffix}"

    @property
    def server_cert(self) -> Path:
        return self.path / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.path / "server.key"

    @property
    def admin_cert(self) -> Path:
        return self.path / "admin.pem"

    @property
    def admin_key(self) -> Path:
        return self.path / "admin.key"

    @property
    def signing_key(self) -> Path:
        return self.path / "signing.key"

    @property
    def signing_rotations(self) -> Path:
        return self.path / "signing-keys.json"

    @property
    def signing_status(self) -> Path:
        return self.path / "signing-keys-status.json"

    @property
    def config(self) -> Path:
        return self.path / "controller.toml"

    @property
    def database(self) -> Path:
        return self.path / "controller.db"

    @property
    def endpoints(self) -> Path:
        return self.path / "endpoints.json"

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts"

    def require_initialised(self) -> None:
        """Raise DataDirError unless `controller init` has run here."""
        if self.path.exists() and not self.path.is_dir():
            raise DataDirError(f"data dir {self.path} is not a directory (pass --data-dir)")
        if not self.path.is_dir():
            raise DataDirError(
                f"data dir {self.path} does not exist "
                "(run 'fleetpatch controller init --data-dir DIR', or pass --data-dir)"
            )
        missing = [p.name for p in (self.config, self.ca_cert) if not p.is_file()]
        if missing:
            raise DataDirError(
                f"data dir {self.path} is not initialised (no {', '.join(missing)}; "
                "run 'fleetpatch controller init')"
            )

    def read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DataDirError(f"cannot read {path}: {exc.strerror}") from None

    def write_private(self, path: Path, data: bytes) -> None:
        write_atomic(path, data, mode=0o600, owner=self._owner())

    def write_public(self, path: Path, data: bytes) -> None:
        """Certificates and public keys: anyone may read them."""
        write_atomic(path, data, mode=0o644, owner=self._owner())

    def write_group(self, path: Path, data: bytes) -> None:
        """Settings and state an admin group may read, nobody else."""
        write_atomic(path, data, mode=0o640, owner=self._owner())

    def _owner(self) -> tuple[int, int] | None:
        """Whom a file written here is given to: the data dir's owner, when
        this process is root and the dir is someone else's (the packaged
        service's user). A command run as root (`rotate-key`, the admin
        CLI renewing admin.pem) must not leave a key the service cannot
        read. None: the file stays the writer's."""
        if os.geteuid() != 0:
            return None
        try:
            found = self.path.stat()
        except OSError:
            return None
        return None if found.st_uid == 0 else (found.st_uid, found.st_gid)

    def _document(self) -> tuple[dict[str, Any], Path | str]:
        """controller.toml with the administrator's settings over it, and
        what errors name: both files when the administrator's took part."""
        try:
            doc = tomllib.loads(self.read(self.config).decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{self.config}: {exc}") from None
        admin = self._admin_settings()
        if not admin:
            return doc, self.config
        return overlay(doc, admin), f"{self.config} with {self.settings_file}"

    def _admin_settings(self) -> dict[str, Any]:
        """The settings file's tables ({} when there is none); UsageError
        naming it when it cannot be read or names an unknown table."""
        if self.settings_file is None or not self.settings_file.exists():
            return {}
        try:
            over = tomllib.loads(self.settings_file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{self.settings_file}: {exc}") from None
        except OSError as exc:
            raise UsageError(f"cannot read {self.settings_file}: {exc.strerror}") from None
        unknown = set(over) - TABLES
        if unknown:
            raise UsageError(f"{self.settings_file}: unknown table [{sorted(unknown)[0]}]")
        return over

    def settings(self) -> Settings:
        """Read controller.toml; raises UsageError naming the bad field."""
        doc, where = self._document()
        unknown = set(doc) - TABLES
        if unknown:
            raise UsageError(f"{where}: unknown table [{sorted(unknown)[0]}]")
        server = _table(doc, "server", {"listen", "enroll_listen", "advertise"}, where)
        checkin = _table(
            doc, "checkin", {"interval", "jitter", "max_batch", "write_behind", "held_hosts"}, where
        )
        listen = _address(server, "listen", f"0.0.0.0:{DEFAULT_PORT}", where)
        enroll = _address(server, "enroll_listen", "", where)
        try:
            enroll = enroll or default_enroll_address(listen)
        except UsageError as exc:
            raise UsageError(f"{where}: server.listen: {exc}") from None
        advertise = _address(server, "advertise", listen, where)
        try:
            interval = parse_duration(str(checkin.get("interval", "5m")))
        except ValueError as exc:
            raise UsageError(f"{where}: checkin.interval: {exc}") from None
        if interval < timedelta(seconds=1):
            raise UsageError(f"{where}: checkin.interval must be at least 1s")
        jitter = checkin.get("jitter", 0.2)
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter < 1:
            raise UsageError(f"{where}: checkin.jitter must be a number in [0, 1)")
        tick, second = _campaigns(doc, where)
        max_batch = _whole(checkin, "checkin", "max_batch", 1000, where, least=1)
        releases = _table(doc, "releases", {"public_key"}, where)
        public_key = releases.get("public_key", "")
        if not isinstance(public_key, str):
            raise UsageError(f"{where}: releases.public_key must be a path (a string)")
        enrollment = _table(doc, "enrollment", {"pending_timeout"}, where)
        pending = _duration(enrollment, "enrollment", "pending_timeout", "1h", where)
        audit = _table(doc, "audit", {"refusal_window", "checkpoint_interval"}, where)
        refusal_window = _duration(audit, "audit", "refusal_window", "10m", where)
        checkpoints = _duration(audit, "audit", "checkpoint_interval", "1h", where)
        metrics = _table(doc, "metrics", {"listen"}, where)
        metrics_listen = _address(metrics, "listen", "", where, "metrics")
        host_lifetime, admin_lifetime, grace = _identities(doc, where)
        vulns = _table(doc, "vulns", {"match_interval"}, where)
        store = _table(doc, "store", {"url", "timeout"}, where)
        return Settings(
            listen, enroll, advertise, interval, float(jitter), tick, max_batch,
            self.path / public_key if public_key else None, pending, refusal_window, checkpoints,
            metrics_listen, _webhooks(doc, self.path, where), host_lifetime, grace,
            vuln_match_interval=_duration(vulns, "vulns", "match_interval", "1m", where),
            compliance_grace=_compliance(doc, where),
            admin_certificate_lifetime=admin_lifetime, require_second_approver=second,
            store_url=_store_url(store, where),
            store_timeout=_duration(store, "store", "timeout", "20s", where, most="10m"),
            cli_controllers=_cli_controllers(doc, where),
            checkin_write_behind=_duration(checkin, "checkin", "write_behind", "1s", where,
                                           most="60s", zero="off"),
            checkin_held_hosts=_whole(checkin, "checkin", "held_hosts", 500_000, where),
        )  # fmt: skip

    def write_endpoints(self, address: str, enroll_address: str) -> None:
        doc = {"address": address, "enroll_address": enroll_address, "pid": os.getpid()}
        self.write_group(self.endpoints, json.dumps(doc).encode() + b"\n")

    def recorded_endpoints(self) -> tuple[str, str] | None:
        """The addresses the running server wrote (`write_endpoints`): its
        mutual-TLS one and its enrollment one ("" if missing); None when
        none was written, or a damaged one."""
        try:
            doc = json.loads(self.endpoints.read_text())
            address, enroll = doc["address"], doc.get("enroll_address")
            if isinstance(address, str):
                split_address(address, listening=False)
                return address, enroll if isinstance(enroll, str) else ""
        except (OSError, ValueError, KeyError, TypeError, UsageError):
            pass
        return None

    def client_address(self) -> str:
        """Where the admin CLI should connect: the running server's address
        when it wrote one, else the advertised address from the config."""
        recorded = self.recorded_endpoints()
        return recorded[0] if recorded is not None else self.settings().advertise

    def client_addresses(self) -> list[str]:
        """The replicas the admin CLI asks, in order: `[cli] controllers`
        when set, else `client_address()` alone."""
        return list(self.settings().cli_controllers) or [self.client_address()]


def _address(
    table: dict[str, object], key: str, default: str, path: Path | str, name: str = "server"
) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise UsageError(f"{path}: {name}.{key} must be a string HOST:PORT")
    if value:
        try:
            split_address(value)
        except UsageError as exc:
            raise UsageError(f"{path}: {name}.{key}: {exc}") from None
    return value


def _webhooks(doc: dict[str, object], root: Path, path: Path | str) -> tuple[WebhookSetting, ...]:
    """[[webhooks]]: each a name, an http(s) URL and a secret file (relative
    to the data dir unless absolute); raises UsageError naming the field."""
    hooks = doc.get("webhooks", [])
    if not isinstance(hooks, list) or not all(isinstance(h, dict) for h in hooks):
        raise UsageError(f"{path}: webhooks must be an array of tables ([[webhooks]])")
    found: list[WebhookSetting] = []
    for i, hook in enumerate(hooks):
        where = f"{path}: webhooks[{i}]"
        unknown = set(hook) - {"name", "url", "secret_file"}
        if unknown:
            raise UsageError(f"{where}: unknown key {sorted(unknown)[0]}")
        values = {key: hook.get(key) for key in ("name", "url", "secret_file")}
        for key, value in values.items():
            if not isinstance(value, str) or not value:
                raise UsageError(f"{where}.{key} is required (a non-empty string)")
        name, url, secret = str(values["name"]), str(values["url"]), str(values["secret_file"])
        if any(h.name == name for h in found):
            raise UsageError(f"{where}.name: {name!r} is used twice")
        try:
            parts = urllib.parse.urlsplit(url)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:  # unbalanced [ ] around an IPv6 host
            usable = False
        if not usable:
            raise UsageError(f"{where}.url: {url!r} is not an http:// or https:// URL")
        found.append(WebhookSetting(name, url, root / secret))
    return tuple(found)


def _store_url(store: dict[str, object], path: Path | str) -> str:
    """[store] url: empty (SQLite) or a postgresql:// URL; raises UsageError."""
    url = store.get("url", "")
    if not isinstance(url, str):
        raise UsageError(f"{path}: store.url must be a string")
    wrong = pgurl.problem(url) if url else None
    if wrong is not None:
        raise UsageError(f"{path}: store.url {wrong}")
    return url


def _cli_controllers(doc: dict[str, object], path: Path | str) -> tuple[str, ...]:
    """[cli] controllers: an array of HOST:PORT; raises UsageError."""
    cli = _table(doc, "cli", {"controllers"}, path)
    value = cli.get("controllers", [])
    if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value):
        raise UsageError(f"{path}: cli.controllers must be an array of HOST:PORT strings")
    for address in value:
        try:
            split_address(address, listening=False)
        except UsageError as exc:
            raise UsageError(f"{path}: cli.controllers: {exc}") from None
    return tuple(dict.fromkeys(value))


def _campaigns(doc: dict[str, object], path: Path | str) -> tuple[timedelta, bool]:
    """[campaigns] tick and require_second_approver."""
    campaigns = _table(doc, "campaigns", {"tick", "require_second_approver"}, path)
    second = campaigns.get("require_second_approver", False)
    if not isinstance(second, bool):
        raise UsageError(f"{path}: campaigns.require_second_approver must be true or false")
    return _duration(campaigns, "campaigns", "tick", "10s", path), second


def _identities(doc: dict[str, object], path: Path | str) -> tuple[timedelta, timedelta, timedelta]:
    """[certificates] host_lifetime and admin_lifetime, [signing] old_key_grace."""
    certificates = _table(doc, "certificates", {"host_lifetime", "admin_lifetime"}, path)
    host_lifetime = _duration(certificates, "certificates", "host_lifetime", "90d", path)
    admin_lifetime = _duration(certificates, "certificates", "admin_lifetime", "365d", path)
    signing = _table(doc, "signing", {"old_key_grace"}, path)
    return host_lifetime, admin_lifetime, _duration(signing, "signing", "old_key_grace", "7d", path)


def _compliance(doc: dict[str, object], path: Path | str) -> dict[str, timedelta]:
    """[compliance]: the grace period of each severity."""
    table = _table(doc, "compliance", set(DEFAULT_GRACE), path)
    return {
        severity: _duration(table, "compliance", severity, format_duration(default), path)
        for severity, default in DEFAULT_GRACE.items()
    }


def _duration(
    table: dict[str, object],
    name: str,
    key: str,
    default: str,
    path: Path | str,
    *,
    most: str = "",
    zero: str = "",
) -> timedelta:
    """A duration from ``[name] key``: at least 1s, or 0s too where ``zero``
    says what 0s means; at most ``most`` when given. Raises UsageError
    naming it."""
    try:
        value = parse_duration(str(table.get(key, default)))
    except ValueError as exc:
        raise UsageError(f"{path}: {name}.{key}: {exc}") from None
    if value < (timedelta(0) if zero else timedelta(seconds=1)):
        raise UsageError(f"{path}: {name}.{key} must be at least 1s")
    if most and value > parse_duration(most):
        meaning = f" (0s: {zero})" if zero else ""
        raise UsageError(f"{path}: {name}.{key} must be at most {most}{meaning}")
    return value


def _whole(
    table: dict[str, object], name: str, key: str, default: int, path: Path | str, least: int = 0
) -> int:
    """A whole number >= ``least`` from ``[name] key``; raises UsageError naming it."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UsageError(f"{path}: {name}.{key} must be a whole number >= {least}")
    return value


def _table(
    doc: dict[str, object], name: str, keys: set[str], path: Path | str
) -> dict[str, object]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [{name}] must be a table")
    unknown = set(table) - keys
    if unknown:
        raise UsageError(f"{path}: unknown key {name}.{sorted(unknown)[0]}")
    return table


CONFIG_TEMPLATE = """\
# fleetpatch controller settings, written by `fleetpatch controller init`.
# Durations: 30s, 5m, 2h, 7d. Addresses: HOST:PORT.

[server]
# Mutual-TLS listener: agent check-ins, progress reports, the admin CLI.
listen = "{listen}"
# Enrollment listener (server-authenticated TLS plus a token). Empty: the
# port after `listen`, which is where agents look for it by default.
enroll_listen = ""
# The address agents and the admin CLI use to reach this controller; it must
# be a name or address in the server certificate.
advertise = "{advertise}"

[checkin]
# How often agents check in. Each answer is jittered by +/- `jitter` (a
# fraction) so that a fleet never checks in at once.
interval = "{interval}"
jitter = 0.2
# Check-ins arriving while a batch is being written join the next one (group
# commit); at most this many per transaction.
max_batch = 1000
# A check-in that brings nothing new (no inventory or scan, the hashes the
# controller holds, a host active and unchanged since its last check-in
# that was written) is answered at once, and its last_seen, facts and
# health are written within this long, many in one transaction. Anything
# else is written before it is answered. Nothing a host relies on is ever
# written behind: at worst a controller that dies loses this long of
# last_seen, which hosts send again at their next check-in. "0s": every
# check-in is written before it is answered.
write_behind = "1s"
# How many hosts that is done for: what each host's answer needs is held in
# memory, about 0.45 KB per host (225 MB for 500,000); hosts beyond it are
# written first.
held_hosts = 500000

[campaigns]
# How often the controller times out silent orders, halts campaigns whose
# budgets are breached, and completes finished ones.
tick = "10s"
# Two-person rule: a campaign must be approved by an approver (or owner)
# other than the admin who created it; the creator's own approval is
# refused. Off: any approver may approve, their own campaigns too.
require_second_approver = false

[enrollment]
# A newly enrolled host is pending until its first mutual-TLS call (the
# agent's `enroll` makes one); one still pending after this long is
# forgotten and gives its token use back, so an agent that failed after the
# call leaves no orphan host.
pending_timeout = "1h"

[certificates]
# How long a host certificate is valid. Agents renew theirs over mutual TLS
# once two thirds of it have passed (60 days of 90), with a new key made on
# the host; a host whose certificate has expired cannot renew and must be
# enrolled again with a token. Restart `serve` after a change; certificates
# already issued keep their lifetime until they are renewed.
host_lifetime = "90d"
# How long an admin certificate (`fleetpatch admin add`, and the first
# owner's from `controller init`) is valid. The admin CLI renews its own
# once two thirds have passed, when it is used; an admin whose certificate
# expired is added again by an owner (`admin revoke`, then `admin add`).
admin_lifetime = "365d"

[signing]
# After `fleetpatch controller rotate-key`, agents still take orders signed
# by the old key for this long once the controller signs with the new one
# (from its next start), then refuse them. `rotate-key --revoke-old` (a
# leaked key) makes them refuse it at their next check-in, without grace.
old_key_grace = "7d"

[releases]
# Optional: the release public key (the .pub of `fleetpatch release keygen`)
# every agent package must be signed with to be published (`fleetpatch
# release publish`); a path, relative to this directory unless absolute.
# Unset: the controller takes any signed release as it is, and each host
# still checks it against the release key pinned there.
# public_key = "/etc/fleetpatch/release.pub"

[audit]
# A host's first refusal of an order is recorded at once; the ones after it
# within this window are counted and written as one record when it ends, so
# a host refusing thousands of orders cannot flood the audit trail.
refusal_window = "10m"
# How often a checkpoint of the trail (its last record's sequence and hash,
# the time, signed with the work-order key) is written to the controller's
# log, at start and at shutdown too; `fleetpatch audit verify --checkpoint`
# checks the trail against one, which catches a cut-off tail or a rewrite.
checkpoint_interval = "1h"

[metrics]
# Prometheus metrics (plain HTTP, GET /metrics) on a listener of their own;
# empty: none. Keep it on loopback and let a local Prometheus or a proxy
# that restricts who may scrape reach it (README, "Metrics"): the figures
# describe the fleet and the listener has no authentication.
listen = ""
# listen = "127.0.0.1:9464"

[vulns]
# Hosts whose inventory or available updates changed are matched against
# the imported vulnerability feeds (`fleetpatch vulns import`) this often;
# every host is matched at once after an import.
match_interval = "1m"

[compliance]
# How long a security fix may wait on a host, per severity, before the host
# is out of policy (`fleetpatch compliance`). A vulnerability's age runs
# from its disclosure when the feed dates it, else from when the fleet
# first showed it.
critical = "7d"
high = "14d"
medium = "30d"
low = "30d"
negligible = "30d"
unknown = "30d"

[store]
# Where the controller keeps its state. Empty: the SQLite file controller.db
# in this directory (nothing to install; one controller). A PostgreSQL URL
# lets several controller replicas share one database, for example
# "postgresql://fleetpatch@db.example.com/fleetpatch?sslmode=verify-full"
# (a password is better in ~/.pgpass or PGPASSFILE than here). Create the
# database with LOCALE 'C' so that listings sort as they do on SQLite.
url = ""
# PostgreSQL only: how long one database call may take (a frozen server, a
# network cut off without a reset, a lock held) before the calls waiting
# for it are answered UNAVAILABLE with a retry delay; while it still hangs,
# the next are answered so at once (and the admin CLI asks another
# replica). 1s to 10m.
timeout = "20s"

# Campaign events (approved, ring started and promoted, halted with the
# reason, resumed, completed, aborted) POSTed as JSON to each webhook, signed
# with HMAC-SHA256 of the body (X-Fleetpatch-Signature) using the key in
# secret_file (relative to this directory unless absolute), at least once,
# retried with backoff; receivers dedupe on X-Fleetpatch-Delivery.
# [[webhooks]]
# name = "chatops"
# url = "https://hooks.example.com/fleetpatch"
# secret_file = "webhook-chatops.key"
"""
