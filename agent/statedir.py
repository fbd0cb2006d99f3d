"""The agent's state dir and its config file.

STATE/agent.toml          settings (written by enroll; yours to edit)
STATE/key.pem             the host's private key (0600; never leaves)
STATE/cert.pem            the host's certificate, naming its host id
STATE/ca.pem              the controller CA pinned at enrollment
STATE/trusted_keys.json   work-order signing keys pinned at enrollment
STATE/journal.db          SQLite journal: check-ins, orders, reports
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from fleetpatch.atomicfile import write_atomic
from fleetpatch.identity import Identity, Role, identity_from_certificate
from fleetpatch.tomltable import Table, TableError

from agent.errors import ConfigError, NotEnrolled
from agent.host.checks import CheckSpec, check_from_table
from agent.host.health import ResourceLimits
from agent.orders.policy import Policy, policy_from_table

DEFAULT_STATE_DIR = Path("/var/lib/fleetpatch/agent")


@dataclass(frozen=True)
class Timing:
    """[agent] of agent.toml: how patiently the agent works."""

    lock_timeout: timedelta = timedelta(seconds=60)
    busy_timeout: timedelta = timedelta(minutes=10)
    retry_interval: timedelta = timedelta(seconds=5)
    reboot_timeout: timedelta = timedelta(minutes=10)
    max_retry_delay: timedelta = timedelta(minutes=5)


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


CONFIG_TEMPLATE = """\
# fleetpatch agent settings, written by `fleetpatch-agent enroll`.

[controller]
# Mutual-TLS address of the controller (check-ins, reports).
address = "{address}"
# Enrollment address; only used by `enroll`.
enroll_address = "{enroll_address}"

[agent]
# How long apt waits for the dpkg lock before the step reports "busy".
lock_timeout = "60s"
# How long a step keeps retrying a busy package manager before giving up
# (nothing has changed then: the order fails and says so).
busy_timeout = "10m"
# Pause between retries, and between health-check attempts while verifying.
retry_interval = "5s"
# While the controller cannot be reached, check-ins are retried with
# exponential back-off and full jitter, never waiting longer than this.
max_retry_delay = "5m"
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

# Health checks run before patching (the baseline) and after (verification),
# besides those the work order names. Kinds: systemd, tcp, http, command,
# process, resource. For example:
# [[checks]]
# name = "web"
# kind = "http"
# url = "http://127.0.0.1:8080/healthz"
# expect_status = 200
"""


@dataclass(frozen=True)
class StateDir:
    path: Path

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
    def journal(self) -> Path:
        return self.path / "journal.db"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    def create(self) -> None:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create state dir {self.path}: {exc.strerror}") from None

    def is_enrolled(self) -> bool:
        return self.cert.is_file()

    def require_enrolled(self) -> None:
        if not self.path.is_dir():
            raise NotEnrolled(
                f"state dir {self.path} does not exist (enroll first: fleetpatch-agent enroll)"
            )
        if not self.is_enrolled() or not self.config_file.is_file():
            raise NotEnrolled(
                f"{self.path} holds no enrollment "
                f"(run: fleetpatch-agent enroll --state-dir {self.path})"
            )

    def read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None

    def identity(self) -> Identity:
        """This host's identity, from its certificate; ConfigError naming
        the file when it is missing or is no certificate."""
        try:
            cert = x509.load_pem_x509_certificate(self.read(self.cert))
        except ValueError:
            raise ConfigError(
                f"{self.cert} is not a PEM certificate (damaged? enroll this host again)"
            ) from None
        identity = identity_from_certificate(cert)
        if identity is None or identity.role is not Role.HOST:
            raise ConfigError(f"{self.cert} names no host")
        return identity

    def host_id(self) -> str:
        return self.identity().name

    def write_config(self, address: str, enroll_address: str) -> None:
        text = CONFIG_TEMPLATE.format(address=address, enroll_address=enroll_address)
        write_atomic(self.config_file, text.encode(), mode=0o644)

    def config(self) -> AgentConfig:
        """Read agent.toml; raises ConfigError naming the bad field. Read as
        strictly as a campaign file (fleetpatch.tomltable): a misspelt key
        is refused with the nearest known name, never silently ignored."""
        try:
            doc = tomllib.loads(self.read(self.config_file).decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.config_file}: {exc}") from None
        try:
            return _read_config(Table(doc, "", str(self.config_file)))
        except TableError as exc:
            raise ConfigError(str(exc)) from None

    def trusted_signing_keys(self) -> dict[str, bytes]:
        """The signing keys orders may carry; ConfigError naming the file
        when it is missing or damaged (no order is trusted then)."""
        try:
            doc = json.loads(self.read(self.trusted_keys))
            if not isinstance(doc, dict):
                raise TypeError("not an object")
            return {str(k): bytes.fromhex(v) for k, v in doc.items()}
        except (ValueError, TypeError, AttributeError):
            raise ConfigError(
                f"{self.trusted_keys} is damaged: it is not a JSON object of key ids to hex keys "
                "(enroll this host again to restore it)"
            ) from None

    def write_trusted_signing_keys(self, keys: dict[str, bytes]) -> None:
        doc = {k: v.hex() for k, v in sorted(keys.items())}
        write_atomic(self.trusted_keys, json.dumps(doc, indent=2).encode() + b"\n", mode=0o644)


def _read_config(root: Table) -> AgentConfig:
    ctl = root.table("controller")
    address = ctl.require("address", str)
    if not address:
        raise ctl.error("address", "must not be empty")
    enroll_address = ctl.get("enroll_address", str, "")
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
    agent.finish()
    root.finish()
    return AgentConfig(address, enroll_address, limits, policy, checks, timing, reboot)


def _non_negative(t: Table, key: str, default: float) -> float:
    value = float(t.get(key, float, default))
    if value < 0:
        raise t.error(key, f"must be a number >= 0, not {value}")
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
