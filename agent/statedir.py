"""The agent's state dir and its config file.

STATE/agent.toml          settings (written by enroll; yours to edit)
STATE/key.pem             the host's private key (0600; never leaves)
STATE/cert.pem            the host's certificate, naming its host id
STATE/renewed/            a renewed key and certificate that worked, being
                          moved into place (finished at the next start)
STATE/ca.pem              the controller CA pinned at enrollment
STATE/trusted_keys.json   work-order signing keys pinned at enrollment
STATE/key_status.json     which of them endorsed which, retired and revoked ones
STATE/journal.db          SQLite journal: check-ins, orders, reports (0600)
STATE/cache/              packages kept for reverts, agent updates (0700)

Every file gets its mode explicitly, whatever the umask. A file that is
missing, empty or damaged, or a state dir that cannot be written, is a
StateDirError naming the file and what to do (exit 2), never a traceback.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetpatch import addresses, certfields, regularfile
from fleetpatch.addresses import AddressError
from fleetpatch.atomicfile import write_atomic
from fleetpatch.tomltable import Table, TableError
from fleetpatch.tomltable import overlay as overlay_toml

from agent.errors import RESTORE, ConfigError, NotEnrolled, StateDirError, storage_error
from agent.host.checks import CheckSpec, check_from_table
from agent.host.health import ResourceLimits
from agent.orders.policy import Policy, policy_from_table

if TYPE_CHECKING:
    # cryptography is imported where a key or certificate is judged, never
    # at module level: the daemon keeps its memory for nothing otherwise
    # (certfields; tests/unit/test_daemon.py holds it to that).
    from cryptography import x509
    from fleetpatch.identity import Identity

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/var/lib/fleetpatch/agent")
#: The administrator's settings of a packaged agent (a conffile of the
#: fleetpatch-agent package): keys set here override those of the state
#: dir's agent.toml, table by table and key by key; [controller] stays the
#: enrollment's. Read for the default state dir, or wherever SETTINGS_ENV
#: points (`settings_for`).
SETTINGS_FILE = Path("/etc/fleetpatch/agent.toml")
SETTINGS_ENV = "FLEETPATCH_AGENT_SETTINGS"
#: What `[agent] package_manager` may name: the package managers the agent
#: has a backend for ("": tell from the host, agent.host.facts.package_manager).
PACKAGE_MANAGERS = ("apt", "dnf")


@dataclass(frozen=True)
class Credentials:
    """What mutual TLS needs, each checked: the pinned CA, this host's key
    and its certificate (issued by that CA, for that key)."""

    ca_pem: bytes
    key_pem: bytes
    cert_pem: bytes


@dataclass(frozen=True)
class Timing:
    """[agent] of agent.toml: how patiently the agent works."""

    lock_timeout: timedelta = timedelta(seconds=60)
    busy_timeout: timedelta = timedelta(minutes=10)
    retry_interval: timedelta = timedelta(seconds=5)
    reboot_timeout: timedelta = timedelta(minutes=10)
    max_retry_delay: timedelta = timedelta(minutes=5)
    scan_interval: timedelta = timedelta(hours=6)


@dataclass(frozen=True)
class RebootSettings:
    """[agent] of agent.toml: how the agent reboots the host and tells,
    after a restart, whether it did (a new boot id) and into what kernel."""

    command: tuple[str, ...] = ("systemctl", "reboot")
    boot_id_file: Path = Path("/proc/sys/kernel/random/boot_id")
    kernel_release_file: Path = Path("/proc/sys/kernel/osrelease")


_REBOOT_KEYS = {"reboot_command", "boot_id_file", "kernel_release_file"}


@dataclass(frozen=True)
class AgentConfig:
    controller: str
    enroll_address: str
    health: ResourceLimits = field(default_factory=ResourceLimits)
    policy: Policy = field(default_factory=Policy)
    checks: tuple[CheckSpec, ...] = ()
    timing: Timing = field(default_factory=Timing)
    reboot: RebootSettings = field(default_factory=RebootSettings)
    # [metrics] textfile: where the node_exporter textfile goes (agent/textfile.py);
    # None: not written.
    textfile: Path | None = None
    # [agent] package_manager: "apt" or "dnf" over what the host's
    # os-release says (agent.host.facts.package_manager); "": detect.
    package_manager: str = ""


CONTROLLER_TEMPLATE = """\
[controller]
# Mutual-TLS address of the controller (check-ins, reports); controller
# replicas sharing a database: several, comma-separated, tried in turn.
address = "{address}"
# Enrollment address; only used by `enroll`.
enroll_address = "{enroll_address}"
"""

CONFIG_TEMPLATE = """\
# fleetpatch agent settings, written by `fleetpatch-agent enroll`.

{controller}
[agent]
# How long apt waits for the dpkg lock before the step reports "busy".
lock_timeout = "60s"
# How long a step keeps retrying a busy package manager before giving up
# (nothing has changed then: the order fails and says so).
busy_timeout = "10m"
# Pause between retries, and between health-check attempts while verifying.
retry_interval = "5s"
# While the controller cannot be reached, check-ins are retried with
# exponential back-off and full jitter, never waiting longer than this nor
# than the check-in interval the controller last announced. An overloaded
# controller is left alone for as long as it asks (once to twice that).
max_retry_delay = "5m"
# How often the agent refreshes the package lists and works out the updates
# available here (reported at check-in; never installed by the scan), with
# up to a tenth of it as jitter. `fleetpatch-agent scan` does it at once.
scan_interval = "6h"
# How the agent reboots the host when an update needs it and the order and
# [policy] allow it (inside the order's maintenance window only).
reboot_command = ["systemctl", "reboot"]
# A reboot not done this long after it was asked for is reported failed
# (the update is then reverted).
reboot_timeout = "10m"
# Where this boot's id and the running kernel are read (a new boot id after
# a restart is how the agent knows the host rebooted).
# boot_id_file = "/proc/sys/kernel/random/boot_id"
# kernel_release_file = "/proc/sys/kernel/osrelease"
# Which package manager patches this host: "apt" or "dnf"; "" tells it from
# /etc/os-release (ID, ID_LIKE), whatever other tools are installed.
package_manager = ""

[health]
# Resource checks reported with every check-in; 0 switches one off.
max_load_per_cpu = 4.0        # 1-minute load average divided by CPUs
max_memory_used_ratio = 0.97  # share of memory not available
max_disk_used_ratio = 0.97    # share of / in use

[policy]
# What any work order may do on this host. The controller cannot change it.
allow_reboot = true
allow_order_commands = false  # may orders name `command` health checks?
never_touch = []              # package names or glob patterns never changed
allowed_sources = []          # apt origins (as apt-get -s prints them) allowed; [] = any
max_packages = 200            # refuse a transaction touching more packages
# Agent self-update (agent-update campaigns): the package must be signed by
# the release key pinned in this file; the controller cannot send a key.
allow_agent_update = true
allow_agent_downgrade = false
release_key = "/etc/fleetpatch/release.pub"

[metrics]
# A node_exporter textfile (Prometheus format) with the last check-in, the
# current order and step, a pending reboot and the last verification, written
# atomically after every check-in and every step. Empty: none. Point it into
# node_exporter's --collector.textfile.directory; the name must end in .prom.
textfile = ""
# textfile = "/var/lib/prometheus/node-exporter/fleetpatch.prom"

# Health checks run before patching (the baseline) and after (verification),
# besides those the work order names. Kinds: systemd, tcp, http, command,
# process, resource. For example:
# [[checks]]
# name = "web"
# kind = "http"
# url = "http://127.0.0.1:8080/healthz"
# expect_status = 200
"""


@dataclass
class KeyStatus:
    """key_status.json: which key endorsed each key the agent learned, when
    each retired key stops being trusted, and the revoked keys (never
    trusted again, whatever endorses them)."""

    endorsed_by: dict[str, str] = field(default_factory=dict)
    retire_at: dict[str, datetime] = field(default_factory=dict)
    revoked: dict[str, datetime] = field(default_factory=dict)

    def withdrawn(self, now: datetime) -> dict[str, str]:
        """Key id -> why it may not sign (for a refusal's line)."""
        why = {k: f"was retired at {t:%Y-%m-%d %H:%M:%SZ}" for k, t in self.retire_at.items()
               if t <= now}  # fmt: skip
        why.update({k: "was revoked" for k in self.revoked})
        return why


def settings_for(state_dir: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """The settings file that goes with state_dir: $FLEETPATCH_AGENT_SETTINGS
    if set, else /etc/fleetpatch/agent.toml for the default state dir (the
    packaged agent), else none (a state dir of its own, a test's)."""
    named = (os.environ if environ is None else environ).get(SETTINGS_ENV, "")
    if named:
        return Path(named)
    return SETTINGS_FILE if state_dir == DEFAULT_STATE_DIR else None


@dataclass(frozen=True)
class StateDir:
    path: Path
    #: The administrator's settings over agent.toml (SETTINGS_FILE); None: none.
    settings: Path | None = None

    @property
    def config_file(self) -> Path:
        return self.path / "agent.toml"

    @property
    def key(self) -> Path:
        return self.path / "key.pem"

    @property
    def cert(self) -> Path:
        return self.path / "cert.pem"

    @property
    def ca(self) -> Path:
        return self.path / "ca.pem"

    @property
    def trusted_keys(self) -> Path:
        return self.path / "trusted_keys.json"

    @property
    def key_status_file(self) -> Path:
        return self.path / "key_status.json"

    @property
    def journal(self) -> Path:
        return self.path / "journal.db"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    @property
    def renewed(self) -> Path:
        """A renewed key.pem and cert.pem, complete and proven to work, that
        replace the current ones: its rename into place is what commits a
        renewal, so a renewal killed after it is finished by the next
        `finish_renewal`, one killed before it leaves the old identity."""
        return self.path / "renewed"

    def finish_renewal(self) -> bool:
        """Move a committed renewal's key and certificate into place (each
        rename atomic, so running again after a crash finishes the job);
        True when there was one. Raises StateDirError."""
        if not self.renewed.is_dir():
            return False
        for name in ("key.pem", "cert.pem"):
            source, target = self.renewed / name, self.path / name
            if source.exists():
                try:
                    os.replace(source, target)
                except OSError as exc:
                    raise storage_error(target, exc) or StateDirError(
                        f"cannot write {target}: {exc.strerror}"
                    ) from None
        fsync_dir(self.path)
        try:
            self.renewed.rmdir()
        except OSError as exc:
            raise storage_error(self.renewed, exc) or StateDirError(
                f"cannot remove {self.renewed}: {exc.strerror}"
            ) from None
        return True

    def create(self) -> None:
        """Make the state dir 0700, and its missing parents 0755 whatever
        the umask: a parent others could write would let them put another
        state dir, and another agent.toml, in its place."""
        try:
            for parent in reversed([p for p in self.path.parents if not p.exists()]):
                parent.mkdir(mode=0o755, exist_ok=True)
                os.chmod(parent, 0o755)  # noqa: S103 - a parent others may read, not write
            self.path.mkdir(mode=0o700, exist_ok=True)
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise storage_error(self.path, exc) or ConfigError(
                f"cannot create state dir {self.path}: {exc.strerror}"
            ) from None

    def private_dir(self, path: Path) -> Path:
        """Make ``path`` (in the state dir) and its missing parents 0700,
        whatever the umask; returns it. Raises StateDirError."""
        try:
            missing = [p for p in (path, *path.parents) if not p.exists()]
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            for made in missing:
                os.chmod(made, 0o700)
        except OSError as exc:
            raise storage_error(path, exc) or StateDirError(
                f"cannot create {path}: {exc.strerror}"
            ) from None
        return path

    def is_enrolled(self) -> bool:
        return self.cert.is_file()

    def require_enrolled(self) -> None:
        if not self.path.is_dir():
            raise NotEnrolled(
                f"state dir {self.path} does not exist (enroll first: fleetpatch-agent enroll)"
            )
        if not os.path.lexists(self.cert) and not os.path.lexists(self.config_file):
            raise NotEnrolled(
                f"{self.path} holds no enrollment "
                f"(run: fleetpatch-agent enroll --state-dir {self.path})"
            )
        for part in (self.cert, self.config_file):
            if not self.present(part):
                raise StateDirError(f"{part} is missing ({RESTORE})")

    def present(self, path: Path) -> bool:
        """Whether a file read whole (agent.toml, cert.pem, the settings
        file) is there. One that exists but is not a regular file (a
        directory, a FIFO that would block its reader, a symlink to
        /dev/null) is refused, saying what it is: ConfigError for the
        settings file, StateDirError for the state dir's; so is one that
        cannot be looked at."""
        try:
            return regularfile.exists(path)
        except regularfile.NotRegularFile as exc:
            if path == self.settings:
                raise ConfigError(_not_settings(path, exc.kind)) from None
            raise StateDirError(
                f"{path} is not a regular file (it is {exc.kind}; {RESTORE})"
            ) from None
        except OSError as exc:
            raise storage_error(path, exc) or StateDirError(
                f"cannot use {path}: {exc.strerror}"
            ) from None

    def read(self, path: Path) -> bytes:
        """A state file's bytes; StateDirError naming it when it is missing,
        empty or unreadable."""
        try:
            data = regularfile.read(path)  # never waits on a FIFO put in its place
        except FileNotFoundError:
            raise StateDirError(f"{path} is missing ({RESTORE})") from None
        except regularfile.NotRegularFile as exc:
            raise StateDirError(
                f"{path} is not a regular file (it is {exc.kind}; {RESTORE})"
            ) from None
        except OSError as exc:
            raise storage_error(path, exc) or StateDirError(
                f"cannot read {path}: {exc.strerror}"
            ) from None
        if not data.strip():
            raise StateDirError(f"{path} is empty ({RESTORE})")
        return data

    def write(self, path: Path, data: bytes, mode: int) -> None:
        """Replace a state file atomically with this mode; StateDirError
        when the state dir cannot be written (the old file stays)."""
        try:
            write_atomic(path, data, mode=mode)
        except OSError as exc:
            raise storage_error(path, exc) or StateDirError(
                f"cannot write {path}: {exc.strerror}"
            ) from None

    def credentials(self) -> Credentials:
        """The CA, key and certificate, checked before any TLS library sees
        them (grpc aborts the process on an empty key, and reports a bad
        one as a network error). A renewal committed but not moved into
        place yet is finished first. Raises StateDirError naming the file."""
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from fleetpatch import catrust

        self.finish_renewal()
        ca_pem, key_pem, cert_pem = self.read(self.ca), self.read(self.key), self.read(self.cert)
        cas = self.trusted_cas(ca_pem)
        cert = _certificate(self.cert, cert_pem)
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise StateDirError(
                f"{self.key} is not a PEM private key (damaged? {RESTORE})"
            ) from None
        if not catrust.same_key(key.public_key(), cert.public_key()):
            raise StateDirError(f"{self.key} is not the key of {self.cert} ({RESTORE})")
        if not catrust.issued_by_any(cert, cas):
            raise StateDirError(
                f"{self.cert} was not issued by the CA pinned in {self.ca} ({RESTORE})"
            )
        return Credentials(ca_pem, key_pem, cert_pem)

    def trusted_cas(self, ca_pem: bytes | None = None) -> list[x509.Certificate]:
        """The CA certificates pinned in ca.pem (two during a CA rotation);
        StateDirError naming the file."""
        from fleetpatch import catrust

        try:
            return catrust.load_bundle(self.read(self.ca) if ca_pem is None else ca_pem)
        except ValueError:
            raise StateDirError(
                f"{self.ca} is not a PEM certificate (damaged? {RESTORE})"
            ) from None

    def trust_hash(self) -> str:
        """The digest of the CA certificates pinned in ca.pem
        (`catrust.bundle_hash`), read without cryptography; StateDirError
        naming the file."""
        try:
            return certfields.bundle_hash(certfields.pem_certificates(self.read(self.ca)))
        except ValueError:
            raise StateDirError(
                f"{self.ca} is not a PEM certificate (damaged? {RESTORE})"
            ) from None

    def certificate(self) -> x509.Certificate:
        """This host's certificate; StateDirError naming the file."""
        return _certificate(self.cert, self.read(self.cert))

    def validity(self) -> tuple[datetime, datetime]:
        """When this host's certificate starts and stops being valid (UTC),
        read without cryptography; StateDirError naming the file."""
        try:
            first = certfields.pem_certificates(self.read(self.cert))[0]
            return certfields.validity(first)
        except ValueError:
            raise StateDirError(
                f"{self.cert} is not a PEM certificate (damaged? {RESTORE})"
            ) from None

    def identity(self) -> Identity:
        """This host's identity, from its certificate; ConfigError naming
        the file when it is missing or is no certificate."""
        from fleetpatch.identity import Role, identity_from_certificate

        cert = _certificate(self.cert, self.read(self.cert))
        identity = identity_from_certificate(cert)
        if identity is None or identity.role is not Role.HOST:
            raise ConfigError(f"{self.cert} names no host")
        return identity

    def host_id(self) -> str:
        return self.identity().name

    def write_config(self, address: str, enroll_address: str, keep: Path | None = None) -> None:
        """Write agent.toml for the controller at ``address``: the defaults,
        or the settings of ``keep`` (an agent.toml a host enrolls again
        over) with only its [controller] table replaced, comments and all,
        so that enrolling again never loosens the local policy."""
        controller = CONTROLLER_TEMPLATE.format(address=address, enroll_address=enroll_address)
        if keep is None or not keep.exists():
            text = CONFIG_TEMPLATE.format(controller=controller)
        else:
            try:
                kept = self.read(keep).decode()
            except UnicodeDecodeError:
                kept = "\0"  # refused below, as a file that does not parse
            text = _with_controller(kept, controller, keep)
        self.write(self.config_file, text.encode(), mode=0o644)

    def hold(self, wait: bool = False) -> int:
        """Hold the state dir for this process: one `run`, `enroll` or
        `apply` at a time, so that two never carry out orders, write the
        journal or enroll over each other. Released when the returned
        descriptor is closed, and at the latest when the process ends
        (a kill included). ``wait``: until the holder lets go (the
        service, started while an `apply` runs); otherwise StateDirError
        at once."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise storage_error(self.path, exc) or StateDirError(
                f"cannot open state dir {self.path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                os.close(fd)
                raise StateDirError(
                    f"{self.path} is in use by another fleetpatch-agent (the service, or an "
                    "enroll or apply): let it finish, or stop the service first "
                    "(systemctl stop fleetpatch-agent)"
                ) from None
            log.warning("%s is in use by another fleetpatch-agent; waiting for it", self.path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def config(self) -> AgentConfig:
        """Read agent.toml; raises ConfigError naming the bad field. Read as
        strictly as a campaign file (fleetpatch.tomltable): a misspelt key
        is refused with the nearest known name, never silently ignored."""
        try:
            doc = tomllib.loads(self.read(self.config_file).decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.config_file}: {exc}") from None
        where = str(self.config_file)
        overlay = self._settings()
        if overlay:
            assert self.settings is not None  # noqa: S101 - _settings read it
            doc = overlay_toml(doc, overlay)
            where = f"{self.config_file} with {self.settings}"
        try:
            return _read_config(Table(doc, "", where))
        except TableError as exc:
            raise ConfigError(str(exc)) from None

    def _settings(self) -> dict[str, Any]:
        """The settings file's tables ({} when there is none); ConfigError
        naming it when it cannot be read or sets [controller]."""
        if self.settings is None:
            return {}
        try:
            doc = tomllib.loads(regularfile.read_text(self.settings))
        except FileNotFoundError:
            return {}
        except regularfile.NotRegularFile as exc:
            raise ConfigError(_not_settings(self.settings, exc.kind)) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.settings}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {self.settings}: {exc.strerror}") from None
        if "controller" in doc:
            raise ConfigError(
                f"{self.settings}: [controller] belongs to the enrollment, in {self.config_file} "
                "(written by `fleetpatch-agent enroll`); set the other tables here"
            )
        return doc

    def trusted_signing_keys(self) -> dict[str, bytes]:
        """The signing keys orders may carry; ConfigError naming the file
        when it is missing or damaged (no order is trusted then)."""
        try:
            doc = json.loads(self.read(self.trusted_keys))
            if not isinstance(doc, dict) or not doc:
                raise TypeError("not an object, or no key")
            return {str(k): bytes.fromhex(v) for k, v in doc.items()}
        except (ValueError, TypeError, AttributeError):
            raise StateDirError(
                f"{self.trusted_keys} is damaged: it is not a JSON object of key ids to hex keys "
                f"({RESTORE})"
            ) from None

    def key_status(self) -> KeyStatus:
        """What the agent knows of its signing keys beyond the keys
        themselves (none before the first rotation); StateDirError naming
        the file when it is damaged."""
        if not self.key_status_file.exists():
            return KeyStatus()
        try:
            doc = json.loads(self.read(self.key_status_file))
            return KeyStatus(
                {str(k): str(v) for k, v in doc["endorsed_by"].items()},
                {str(k): _aware(v) for k, v in doc["retire_at"].items()},
                {str(k): _aware(v) for k, v in doc["revoked"].items()},
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            raise StateDirError(
                f"{self.key_status_file} is damaged: it is not the JSON the agent writes "
                f"({RESTORE})"
            ) from None

    def write_key_status(self, status: KeyStatus) -> None:
        doc = {
            "endorsed_by": dict(sorted(status.endorsed_by.items())),
            "retire_at": {k: v.isoformat() for k, v in sorted(status.retire_at.items())},
            "revoked": {k: v.isoformat() for k, v in sorted(status.revoked.items())},
        }
        self.write(self.key_status_file, json.dumps(doc, indent=2).encode() + b"\n", mode=0o644)

    def usable_signing_keys(self, now: datetime) -> tuple[dict[str, bytes], dict[str, str]]:
        """The signing keys an order may be signed with now, and why each
        pinned key that may not is withdrawn (revoked, or retired)."""
        keys, status = self.trusted_signing_keys(), self.key_status()
        withdrawn = status.withdrawn(now)
        return {k: v for k, v in keys.items() if k not in withdrawn}, withdrawn

    def write_trusted_signing_keys(self, keys: dict[str, bytes]) -> None:
        doc = {k: v.hex() for k, v in sorted(keys.items())}
        self.write(self.trusted_keys, json.dumps(doc, indent=2).encode() + b"\n", mode=0o644)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_HEADER = re.compile(r"^[ \t]*\[\[?[ \t]*([^\]\[#]+?)[ \t]*\]\]?[ \t]*(#.*)?\r?$")


def _with_controller(kept: str, controller: str, where: Path) -> str:
    """``kept`` (an agent.toml) with its [controller] table replaced by
    ``controller``, everything else as it was. Checked by reading the
    result back: anything else is refused (ConfigError) before a token is
    spent, never written with settings lost."""
    try:
        before = tomllib.loads(kept)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{where} does not parse ({exc}), so enrolling again cannot keep its settings: "
            "mend it, or remove it for the defaults"
        ) from None
    lines = kept.splitlines(keepends=True)
    headers = {i: found.group(1) for i, line in enumerate(lines) if (found := _HEADER.match(line))}
    ours = [i for i, name in headers.items() if name.strip("\"'") == "controller"]
    if ours:
        start = ours[0]
        end = next((i for i in headers if i > start), len(lines))
        text = "".join([*lines[:start], controller, "\n" if end < len(lines) else "", *lines[end:]])
    else:
        text = kept + ("" if not kept or kept.endswith("\n") else "\n") + "\n" + controller
    wanted = {**before, "controller": tomllib.loads(controller)["controller"]}
    try:
        if tomllib.loads(text) == wanted:
            return text
    except tomllib.TOMLDecodeError:
        pass
    raise ConfigError(
        f"enrolling again cannot rewrite [controller] in {where} (it is not one [controller] "
        "table): mend it, or remove the file for the defaults"
    )


def _not_settings(path: Path, kind: str) -> str:
    return (
        f"{path} is not a regular file (it is {kind}; the agent's settings must be a TOML "
        f"file: make it one, or name another with {SETTINGS_ENV})"
    )


def _aware(text: str) -> datetime:
    """A time the agent wrote (ISO 8601, with its offset); ValueError for
    anything else, a time without an offset included: it could not be
    compared with the clock's."""
    when = datetime.fromisoformat(text)
    if when.utcoffset() is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return when


def _certificate(path: Path, pem: bytes) -> x509.Certificate:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise StateDirError(f"{path} is not a PEM certificate (damaged? {RESTORE})") from None


def _read_config(root: Table) -> AgentConfig:
    ctl = root.table("controller")
    try:
        address = ",".join(addresses.split_addresses(ctl.require("address", str)))
    except AddressError as exc:
        raise ctl.error("address", str(exc)) from None
    enroll_address = ctl.get("enroll_address", str, "")
    try:
        if enroll_address:
            addresses.split_address(enroll_address)
    except AddressError as exc:
        raise ctl.error("enroll_address", str(exc)) from None
    ctl.finish()
    health = root.table("health")
    limits = ResourceLimits(**{
        key: _non_negative(health, key, default)
        for key, default in dataclasses.asdict(ResourceLimits()).items()
    })  # fmt: skip
    health.finish()
    policy = policy_from_table(root.table("policy"))
    checks = tuple(check_from_table(t) for t in root.tables("checks"))
    agent = root.table("agent")
    timing = Timing(**{
        key: agent.duration(key, default, positive=True)
        for key, default in dataclasses.asdict(Timing()).items()
    })  # fmt: skip
    reboot = _reboot(agent)
    manager = agent.get("package_manager", str, "")
    if manager and manager not in PACKAGE_MANAGERS:
        raise agent.error(
            "package_manager",
            f"must be one of {', '.join(PACKAGE_MANAGERS)}, or \"\" to tell from the host's "
            f"/etc/os-release, not {manager!r}",
        )  # fmt: skip
    agent.finish()
    textfile = _textfile(root.table("metrics"))
    root.finish()
    return AgentConfig(
        address, enroll_address, limits, policy, checks, timing, reboot, textfile, manager
    )


def _textfile(t: Table) -> Path | None:
    value = t.get("textfile", str, "")
    t.finish()
    if not value:
        return None
    if not value.startswith("/") or not value.endswith(".prom"):
        raise t.error(
            "textfile", f"must be an absolute path ending in .prom (node_exporter reads only "
            f"those), not {value!r}",
        )  # fmt: skip
    return Path(value)


def _non_negative(t: Table, key: str, default: float) -> float:
    value = float(t.get(key, float, default))
    if not math.isfinite(value) or value < 0:  # nan: every comparison false, a limit never hit
        raise t.error(key, f"must be a finite number >= 0, not {value}")
    return value


def _reboot(t: Table) -> RebootSettings:
    default = RebootSettings()
    command = t.strings("reboot_command") if t.has("reboot_command") else default.command
    if not command or not all(command):
        raise t.error("reboot_command", "must be a non-empty array of strings (an argv)")
    files = {}
    for key in ("boot_id_file", "kernel_release_file"):
        value = t.get(key, str, str(getattr(default, key)))
        if not value.startswith("/"):
            raise t.error(key, f"must be an absolute path, not {value!r}")
        files[key] = Path(value)
    return RebootSettings(tuple(command), **files)
