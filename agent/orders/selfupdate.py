"""Agent self-update: install a signed new version of this agent, hand over
to it, and get the old one back when the new one does not take over.

An agent-update order runs through the same states as a patch order; only
the steps below differ (`Runner` dispatches to them):

PRECHECK  the package must be of this host's family (a .deb for apt, an
          .rpm for dnf: never the other) and come from a release signed by
          the key pinned on this host (policy.release_key; the controller
          never sends a key): the manifest's signature, the order's digest
          against the signed manifest, then the fetched bytes against that
          digest, then the package's own fields (.deb: Package and Version;
          .rpm: `rpm -qp` Name, Version and no Epoch, its digests intact).
          No downgrade, by the family's own ordering (dpkg
          --compare-versions, rpm's vercmp), unless policy allows it. The
          host must be healthy, as for any patch.
SNAPSHOT  (the runner's own) a package of the running version is kept: the
          backend looks first in the order's cache, where PRECHECK put the
          package the last self-update installed (`_keep_installed`).
APPLY     arms the watchdog, then installs the package. Its postinst asks
          systemd to restart the agent (without waiting): the running,
          old process gets SIGTERM, finishes this step, enters VERIFY and
          hands over (`HandOver`: it exits, systemd starts the new version).
VERIFY    in the new process: it must be the version ordered, reach the
          controller over mutual TLS with this host's key, and pass its
          health checks within verify_timeout. Then it disarms the
          watchdog, keeps the package it came from for the next update's
          rollback, and succeeds. Failing that, REVERT reinstalls the kept
          package (and the old process, restarted, has nothing left to do).
REVERT    (the runner's own) plus disarming the watchdog.

The watchdog is what makes this safe when the new version cannot even
start: before anything is installed, a transient systemd timer is armed
(`SystemdWatchdog`) that, after rollback_after, reinstalls the kept
package (`dpkg -i`; `rpm -U --oldpackage --replacepkgs`), outside the
agent and its cgroup. The reinstalled old agent
resumes the order in VERIFY, finds itself running instead of the new
version, and ends the order REVERTED. A new agent that took over writes a
marker the watchdog's unit is conditioned on, then stops the timer, so a
watchdog firing at the last moment is either harmless or seen.

Why the agent keeps the package it installed: an agent installed from a
file (or by an earlier self-update) is in no repository and no dnf cache.
The signed, checked package of the version running is therefore kept under
CACHE/agent-installed/ when it takes over, and is what the next update
rolls back to: the very bytes of the release. Before the first self-update
there is none (`dnf install ./fleetpatch-agent-...rpm` keeps no copy of
the file): the dnf backend then looks in dnf's cache, then `dnf download`
(an agent from a repository), then rebuilds the package from its installed
files and rpm's header of it (agent.backends.rpmrepack, as the apt backend
rebuilds a .deb; rpmbuild is not needed), checked like any other copy. A
package that cannot be rebuilt (a file replaced by something of another
type) fails SNAPSHOT, before anything changed; an operator can put the
installed .rpm in CACHE/agent-installed/.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import fleetpatch
from fleetpatch.agentrelease import Family, family_of
from fleetpatch.atomicfile import write_atomic
from fleetpatch.orderspec import AGENT_PACKAGE

from agent.backends import subp
from agent.backends.apt import deb_fields
from agent.backends.base import Busy, Change, PackageBackend, Plan, PlanError, Snapshot
from agent.backends.dnf import rpm_fields, rpm_vercmp
from agent.errors import AgentError, CommandFailed
from agent.host.checks import CheckSpec, Probes
from agent.host.health import failing
from agent.orders.handover import HandOver, family, handover_due, installed_version
from agent.orders.journal import OrderRecord
from agent.orders.outcome import Outcome
from agent.orders.policy import Policy
from agent.orders.states import Event
from agent.orders.workorder import AgentUpdate, WorkOrder

if TYPE_CHECKING:
    # releasefmt (and cryptography) are imported where a release is checked:
    # the idle daemon does without them.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

#: Fetch the artifact with this SHA-256 into a path, at most this many bytes.
Fetcher = Callable[[bytes, Path, int], None]
#: One authenticated round trip to the controller; raises AgentError.
Reach = Callable[[], None]
#: Room needed beyond the package itself: the kept copy of the old version
#: and dpkg's unpacking, both about its size.
SPACE_FACTOR = 3
#: How often, and how far apart, the watchdog tries its restore.
RESTORE_ATTEMPTS = 10
RESTORE_RETRY_SECONDS = 20
#: Under the cache: the package of the agent a self-update last installed.
KEPT_DIR = "agent-installed"
#: How long disarming waits for a restore that is still running to finish.
DPKG_WAIT_SECONDS = 300


class Watchdog(Protocol):
    """Restores the old agent after a time, unless disarmed; lives outside
    the agent process so that it outlives a new version that cannot start."""

    def unavailable(self) -> str | None:
        """None when it can be armed here, else why not."""
        ...

    def arm(self, name: str, restore: Path, marker: Path, after: timedelta) -> None:
        """In ``after``, install ``restore`` unless ``marker`` exists.
        Raises AgentError when it cannot be armed (nothing armed then)."""
        ...

    def disarm(self, name: str, marker: Path) -> bool:
        """Stop it; True when it never started its restore."""
        ...


def unit_name(order_id: str) -> str:
    """The watchdog's systemd unit name for an order (without suffix)."""
    return "fleetpatch-agent-rollback-" + re.sub(r"[^A-Za-z0-9-]", "-", order_id)[:64]


class SystemdWatchdog:
    """A transient timer (`systemd-run --on-active`) whose oneshot service
    reinstalls the kept package (`restore_argv`: dpkg -i, or rpm -U
    --oldpackage), retried on failure (a held dpkg lock). RemainAfterExit
    keeps the service loaded after it ran, so `disarm` can tell whether it
    did."""

    def __init__(
        self,
        run: Callable[..., subp.Result] = subp.run,
        dpkg: str = "/usr/bin/dpkg",
        sleep: Callable[[float], None] = time.sleep,
        rpm: str = "/usr/bin/rpm",
    ) -> None:
        self._run = run
        self._dpkg = dpkg
        self._rpm = rpm
        self._sleep = sleep

    def unavailable(self) -> str | None:
        if not Path("/run/systemd/system").is_dir():
            return "systemd is not running this host (the watchdog is a systemd timer)"
        if shutil.which("systemd-run") is None:
            return "systemd-run is not installed"
        return None

    def arm(self, name: str, restore: Path, marker: Path, after: timedelta) -> None:
        self._clear(name)  # a watchdog left by an interrupted earlier attempt
        seconds = max(1, int(after.total_seconds()))
        argv = [
            "systemd-run", f"--unit={name}",
            f"--description=fleetpatch: restore the agent from {restore.name} unless the "
            "new version takes over",
            f"--on-active={seconds}s", "--timer-property=AccuracySec=1s",
            "--property=Type=oneshot", "--property=RemainAfterExit=yes",
            f"--property=ConditionPathExists=!{marker}",
            # dpkg does not wait for its lock: a restore that finds it held
            # (or fails otherwise) is tried again, a bounded number of times.
            "--property=Restart=on-failure", f"--property=RestartSec={RESTORE_RETRY_SECONDS}s",
            "--property=StartLimitIntervalSec=1h",
            f"--property=StartLimitBurst={RESTORE_ATTEMPTS}",
            "--", *self.restore_argv(restore),
        ]  # fmt: skip
        self._run(argv, timeout=60)

    def restore_argv(self, restore: Path) -> list[str]:
        """What reinstalls the kept package, whatever is installed now: dpkg
        for a .deb; for an .rpm, `rpm -U --oldpackage --replacepkgs`, which
        takes it over a newer version or the same one (rpm waits for the
        rpmdb lock itself; dnf would also reach for repositories)."""
        if family_of(restore.name) is Family.RPM:
            return [self._rpm, "-U", "--oldpackage", "--replacepkgs", str(restore)]
        return [self._dpkg, "--force-confdef", "--force-confold", "--install", str(restore)]

    def disarm(self, name: str, marker: Path) -> bool:
        marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        marker.touch()
        self._run(["systemctl", "stop", f"{name}.timer"], check=False, timeout=60)
        shown = self._show(name)
        started = shown.get("ExecMainStartTimestampMonotonic", "0") not in ("", "0")
        # A restore still running (dpkg, its maintainer scripts, then its
        # triggers, man-db's among them: the restored agent can be started
        # before dpkg is done) is waited for, never stopped halfway, then
        # cleared; one still running after DPKG_WAIT_SECONDS is left alone.
        for _ in range(DPKG_WAIT_SECONDS):
            if shown.get("ActiveState") != "activating":
                self._clear(name)
                break
            self._sleep(1.0)
            shown = self._show(name)
        return not started

    def _show(self, name: str) -> dict[str, str]:
        done = self._run(
            ["systemctl", "show", f"{name}.service",
             "--property=ActiveState,ExecMainStartTimestampMonotonic"],
            check=False, timeout=60,
        )  # fmt: skip
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)

    def _clear(self, name: str) -> None:
        for argv in (
            ["systemctl", "stop", f"{name}.timer", f"{name}.service"],
            ["systemctl", "reset-failed", f"{name}.timer", f"{name}.service"],
        ):
            self._run(argv, check=False, timeout=60)


class LocalInstall(Protocol):
    """What a backend needs to install a package file (apt and dnf have it)."""

    def install_files(self, paths: Sequence[Path]) -> list[Change]: ...


def release_key(policy: Policy) -> Ed25519PublicKey:
    """The pinned release key; ValueError naming the file otherwise."""
    from fleetpatch import releasefmt

    try:
        pem = policy.release_key.read_bytes()
    except OSError as exc:
        raise ValueError(
            f"no release key is pinned on this host ({policy.release_key}: {exc.strerror})"
        ) from None
    return releasefmt.load_public_key(pem, str(policy.release_key))


def signed_digest(update: AgentUpdate, key: Ed25519PublicKey) -> str:
    """The digest the release key signed for the order's artifact, checked
    against the order's own; ValueError otherwise."""
    from fleetpatch import releasefmt

    digest = releasefmt.signed_digest(
        update.release_manifest, update.release_signature, key, update.artifact
    )
    if digest != update.sha256.hex():
        raise ValueError(f"the order's digest for {update.artifact} is not the signed release's")
    return digest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class UpdateSteps:
    """The agent-update steps of the runner (see the module docstring)."""

    def __init__(
        self,
        backend: PackageBackend,
        prober: Probes,
        policy: Policy,
        cache: Path,
        clock: Callable[[], datetime],
        sleep: Callable[[float], None],
        retry_interval: float,
        checks: Callable[[WorkOrder], list[CheckSpec]],
        *,
        fetch: Fetcher | None = None,
        reach: Reach | None = None,
        watchdog: Watchdog | None = None,
        running_version: str | None = None,
        run: Callable[..., subp.Result] = subp.run,
    ) -> None:
        self._backend = backend
        self._prober = prober
        self._policy = policy
        self._cache = cache
        self._clock = clock
        self._sleep = sleep
        self._retry_interval = retry_interval
        self._checks = checks
        self._fetch = fetch
        self._reach = reach
        self._watchdog = watchdog
        self.running_version = running_version or fleetpatch.__version__
        self._run = run

    # -- paths ---------------------------------------------------------------

    def _dir(self, order: WorkOrder) -> Path:
        return self._cache / order.order_id

    def _marker(self, order: WorkOrder) -> Path:
        return self._dir(order) / "taken-over"

    def _package(self, order: WorkOrder) -> Path:
        assert order.agent_update is not None  # noqa: S101 - an agent-update order
        return self._dir(order) / "release" / order.agent_update.artifact

    def _kept_dir(self) -> Path:
        """Where the agent package last installed by a self-update is kept:
        the copy to roll back to at the next one (see `_keep_installed`)."""
        return self._cache / KEPT_DIR

    def _family(self) -> Family | None:
        """The package family this host's backend installs."""
        return family(self._backend)

    def _installed(self) -> str:
        return installed_version(self._backend)

    def _target(self, update: AgentUpdate) -> str:
        """The version field of the package the order installs, in the
        family of its artifact."""
        return (family_of(update.artifact) or Family.DEB).package_version(update.version)

    # -- steps -----------------------------------------------------------------

    def precheck(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        update = order.agent_update
        assert update is not None  # noqa: S101 - from_pb sets it for this action
        installed = self._installed()
        target = self._target(update)
        wrong = self._wrong_family(update)
        if not wrong and installed and installed == target:
            return Outcome(Event.NOTHING_TO_DO, f"{AGENT_PACKAGE} {installed} is already installed")
        problem = (
            wrong or self._cannot_update(installed) or self._downgrade_refused(update, installed)
        )
        if problem:
            return Outcome(Event.FAIL, problem)
        from fleetpatch import releasefmt

        try:
            key = release_key(self._policy)
            signed_digest(update, key)
        except ValueError as exc:
            return Outcome(Event.FAIL, f"refused: {exc}")
        baseline = self._prober.run_all(self._checks(order))
        if not all(r.ok for r in baseline):
            return Outcome(
                Event.FAIL,
                f"host unhealthy before the update, not touching it: {failing(baseline)}",
                checks=baseline,
            )
        try:
            arch = self._fetch_checked(order, update)
        except ValueError as exc:
            return Outcome(Event.FAIL, str(exc), checks=baseline)
        self._seed_kept(order)
        old = self._backend.versions([AGENT_PACKAGE]).get(AGENT_PACKAGE, "")  # as the backend says
        new = target if self._family() is Family.DEB else f"{target}-{self._release(order)}"
        change = Change(AGENT_PACKAGE, arch, old, new, f"release {update.artifact}")
        return Outcome(
            Event.OK,
            f"plan: {AGENT_PACKAGE} {installed} -> {target}, signed by release "
            f"key {releasefmt.fingerprint(key)}",
            columns={"plan": Plan((change,)).to_json()},
            checks=baseline,
            changes=(change,),
        )

    def _wrong_family(self, update: AgentUpdate) -> str | None:
        """Why the order's package is not for this host (a .deb on a dnf
        host, an .rpm on an apt host), or None."""
        mine, theirs = self._family(), family_of(update.artifact)
        if mine is None or theirs is None or mine is not theirs:
            manager = getattr(self._backend, "name", "") or "an unknown package manager"
            return (
                f"refused: {update.artifact} is {'an' if theirs is Family.RPM else 'a'} "
                f".{theirs or '?'} package and this host installs "
                f"{f'.{mine}' if mine else 'no agent'} packages ({manager})"
            )
        return None

    def _cannot_update(self, installed: str) -> str | None:
        why: str | None
        if self._fetch is None or self._reach is None:
            why = "it needs the controller (the package comes from it)"
        elif self._watchdog is None:
            why = "there is no rollback watchdog"
        elif not hasattr(self._backend, "install_files"):
            why = f"the {getattr(self._backend, 'name', '')} backend installs no package files"
        elif not installed:
            why = (
                f"this agent is not installed from the {AGENT_PACKAGE} package; "
                "update it the way it was installed"
            )
        else:
            why = self._watchdog.unavailable()
        return f"cannot update the agent here: {why}" if why else None

    def _downgrade_refused(self, update: AgentUpdate, installed: str) -> str | None:
        target = self._target(update)
        if self._family() is Family.RPM:
            try:
                is_older = rpm_vercmp(target, installed, self._run) < 0
            except PlanError as exc:
                return f"cannot compare {target} with the installed {installed}: {exc}"
        else:
            older = self._run(["dpkg", "--compare-versions", target, "lt", installed], check=False)
            is_older = older.returncode == 0
        if is_older and not self._policy.allow_agent_downgrade:
            return (
                f"refused by local policy: {target} is older than the installed {installed} "
                "and policy.allow_agent_downgrade is false"
            )
        return None

    def _fetch_checked(self, order: WorkOrder, update: AgentUpdate) -> str:
        """Fetch the package (unless the signed one is here already) and
        check it is what the order says; returns its architecture. Raises
        ValueError saying what is wrong."""
        assert self._fetch is not None  # noqa: S101 - _cannot_update said so
        path = self._package(order)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not (path.is_file() and sha256_file(path) == update.sha256.hex()):
            free = shutil.disk_usage(path.parent).free
            if free < SPACE_FACTOR * update.size:
                raise ValueError(
                    f"not enough disk space for the update: {free // 2**20} MiB free in "
                    f"{path.parent}, {SPACE_FACTOR * update.size // 2**20 + 1} MiB needed"
                )
            try:
                self._fetch(update.sha256, path, update.size)
            except AgentError as exc:
                raise ValueError(f"cannot fetch {update.artifact}: {exc}") from None
        target = self._target(update)
        if self._family() is Family.RPM:
            got = rpm_fields(path, self._run)
            fields = {"Name": got.get("NAME", ""), "Version": got.get("VERSION", ""),
                      "Epoch": got.get("EPOCH", "")}  # fmt: skip
            wanted = {"Name": AGENT_PACKAGE, "Version": target, "Epoch": ""}
            arch = got.get("ARCH", "")
        else:
            fields = deb_fields(path, self._run)
            wanted = {"Package": AGENT_PACKAGE, "Version": target}
            arch = fields.get("Architecture", "")
        wrong = {k: fields.get(k, "") for k, v in wanted.items() if fields.get(k, "") != v}
        if wrong:
            path.unlink(missing_ok=True)
            said = f"it says {wrong}" if any(fields.values()) else "it is no readable package"
            raise ValueError(
                f"refused: {update.artifact} is signed but is not {AGENT_PACKAGE} {target} ({said})"
            )
        return arch

    def _release(self, order: WorkOrder) -> str:
        """The RPM Release of the order's fetched, checked package."""
        return rpm_fields(self._package(order), self._run).get("RELEASE", "")

    def _seed_kept(self, order: WorkOrder) -> None:
        """Put the kept copy of the running agent's package beside the
        order's snapshot, where the backend looks first for a copy of the
        installed version (it checks the copy itself: name, version, arch,
        digests). Without one, the backend finds its own (apt archive,
        download, repack; dnf cache or download) or SNAPSHOT fails."""
        for kept in sorted(self._kept_dir().glob(f"{AGENT_PACKAGE}*")):
            target = self._dir(order) / kept.name
            if not target.exists():
                with contextlib.suppress(OSError):
                    shutil.copyfile(kept, target)

    def _keep_installed(self, order: WorkOrder) -> None:
        """The new version took over: keep its package (signed and checked
        at PRECHECK) as the copy the next self-update rolls back to. dnf has
        no dpkg-repack; an agent installed from a file is in no repository
        or cache: keeping the installed file is what makes a rollback
        possible there."""
        kept = self._kept_dir()
        source = self._package(order)
        try:
            kept.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(kept / source.name, source.read_bytes(), 0o600)
            for other in kept.iterdir():
                if other.name != source.name:
                    other.unlink()
        except OSError as exc:
            log.warning("order %s: cannot keep %s for the next rollback: %s", order.order_id,
                        source.name, exc)  # fmt: skip

    def apply(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        update = order.agent_update
        assert update is not None  # noqa: S101
        assert self._watchdog is not None  # noqa: S101 - precheck said so
        if order.window_closes_at is not None and self._clock() >= order.window_closes_at:
            return Outcome(Event.ABORT, "the maintenance window closed before the update began")
        snapshot = Snapshot.from_json(record.snapshot or {"saved": [], "new": []})
        kept = [s for s in snapshot.saved if s.name == AGENT_PACKAGE]
        if not kept:
            return Outcome(Event.ABORT, f"no kept copy of {AGENT_PACKAGE} to roll back to")
        name = unit_name(order.order_id)
        self._marker(order).unlink(missing_ok=True)
        try:
            self._watchdog.arm(name, Path(kept[0].path), self._marker(order), update.rollback_after)
        except AgentError as exc:
            return Outcome(Event.ABORT, f"cannot arm the rollback watchdog, not updating: {exc}")
        log.info("order %s: watchdog %s armed for %s", order.order_id, name, update.rollback_after)
        installer: LocalInstall = self._backend  # type: ignore[assignment]
        try:
            changes = installer.install_files([self._package(order)])
        except Busy as exc:
            self._watchdog.disarm(name, self._marker(order))
            return Outcome(Event.ABORT, f"gave up waiting for the package manager: {exc}")
        except CommandFailed as exc:
            return Outcome(Event.FAIL, f"installing {update.artifact} failed: {exc}")
        return Outcome(
            Event.OK,
            f"installed {AGENT_PACKAGE} {self._target(update)}; the rollback watchdog "
            f"restores {kept[0].version} unless it takes over within "
            f"{update.rollback_after.total_seconds():.0f}s",
            {"changes": [vars(c) for c in changes]},
            changes=changes,
        )

    def verify(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        update = order.agent_update
        assert update is not None  # noqa: S101
        if self.running_version != update.version:
            installed = self._installed()
            if installed == self._target(update):
                raise HandOver(
                    f"{AGENT_PACKAGE} {installed} is installed; this agent "
                    f"({self.running_version}) exits so that it takes over"
                )
            return Outcome(
                Event.FAIL,
                f"{AGENT_PACKAGE} {self._target(update)} did not take over; "
                f"{installed or 'nothing'} is installed (the rollback watchdog restored it)",
            )
        deadline = self._clock() + order.verify_timeout
        while True:
            results = self._prober.run_all(self._checks(order))
            unreachable = self._unreachable()
            if unreachable is None and all(r.ok for r in results):
                break
            if self._clock() >= deadline:
                why = "; ".join(
                    x for x in (unreachable and f"controller: {unreachable}", failing(results)) if x
                )
                return Outcome(
                    Event.FAIL,
                    f"the new agent {update.version} failed its checks within "
                    f"{order.verify_timeout.total_seconds():.0f}s: {why}",
                    checks=results,
                )
            self._sleep(self._retry_interval)
        assert self._watchdog is not None  # noqa: S101
        if not self._watchdog.disarm(unit_name(order.order_id), self._marker(order)):
            raise HandOver(
                "the rollback watchdog fired before this agent took over; the restored "
                "agent finishes the order"
            )
        self._keep_installed(order)
        return Outcome(
            Event.OK,
            f"running {AGENT_PACKAGE} {update.version}: reached the controller, healthy",
            checks=results,
        )

    def _unreachable(self) -> str | None:
        assert self._reach is not None  # noqa: S101
        try:
            self._reach()
        except AgentError as exc:
            return str(exc)
        return None

    def after_revert(self, order: WorkOrder) -> None:
        """The old version is back: the watchdog has nothing left to do."""
        if self._watchdog is not None and self._watchdog.unavailable() is None:
            self._watchdog.disarm(unit_name(order.order_id), self._marker(order))

    def handover_due(self) -> str | None:
        """Why this process must exit now (the installed agent is another
        version than the one running), or None."""
        return handover_due(self._backend, self.running_version)
