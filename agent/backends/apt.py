"""The apt/dpkg backend: real commands, argv lists, explicit environment.

- Non-interactive: DEBIAN_FRONTEND=noninteractive, conffiles keep the
  local version unless the package's default applies (--force-confdef
  --force-confold), so a transaction never stops at a prompt.
- The dpkg lock is waited for (DPkg::Lock::Timeout); when someone else
  still holds it, the result is Busy (retry later) and nobody is killed.
- Plans are simulations (apt-get -s) and applies install exactly the
  planned versions (name=version), so what runs is what was planned.
- Before anything replaces a package, its current .deb is kept in the
  agent's cache (the apt archive, else `apt-get download`, else
  `dpkg-repack` of the installed files), so a revert works with no
  repository at all.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fleetpatch.orderspec import MAX_PACKAGE_NAME, MAX_VERSION

from agent.backends import aptpolicy, repack, subp
from agent.backends.base import Busy, Change, Plan, PlanError, Saved, Snapshot, check_minimums
from agent.backends.packages import is_installed
from agent.errors import CommandFailed
from agent.host.updates import Available, needs_reboot
from agent.orders.workorder import Target

NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
VERSION = re.compile(r"^[A-Za-z0-9.+~:-]+$")
_INST = re.compile(r"^Inst (\S+) (?:\[(\S+)\] )?\((\S+) (.*?)\s*\[(\S+)\]\)")
_REMV = re.compile(r"^Remv (\S+) \[(\S+)\]")
_LOCK = re.compile(
    # What apt and dpkg print when someone else holds a lock; apt prints the
    # second line alone when the holder let go between its two attempts.
    r"(Could not get lock|Unable to acquire the dpkg (frontend )?lock"
    r"|Unable to lock the administration directory|dpkg frontend lock was locked"
    r"|dpkg status database is locked)"
)
ARCHIVES = Path("/var/cache/apt/archives")
# Packages snapshotted at once: a rebuild spends its time in tar, gzip and
# the disk, so a few per core keep both cores and the disk busy.
SNAPSHOT_WORKERS = max(2, min(8, 2 * (os.cpu_count() or 1)))
log = logging.getLogger(__name__)

ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "APT_LISTCHANGES_FRONTEND": "none",
    "NEEDRESTART_SUSPEND": "1",  # the agent decides about restarts, not a prompt
    "UCF_FORCE_CONFFOLD": "1",
}

Runner = Callable[..., subp.Result]


def check_name(name: str) -> str:
    if len(name) > MAX_PACKAGE_NAME or not NAME.fullmatch(name):
        raise PlanError(f"{name!r} is not a Debian package name")
    return name


def check_version(version: str) -> str:
    if len(version) > MAX_VERSION or not VERSION.fullmatch(version):
        raise PlanError(f"{version!r} is not a Debian version")
    return version


def parse_simulation(output: str) -> list[Change]:
    """The changes an `apt-get -s` run announces."""
    changes: dict[str, Change] = {}
    for line in output.splitlines():
        if m := _INST.match(line):
            name, old, new, origin, arch = m.groups()
            changes[name] = Change(name, arch, old or "", new, origin.strip())
        elif m := _REMV.match(line):
            name, old = m.groups()
            changes[name] = Change(name, "", old, "")
    return list(changes.values())


class Apt:
    name = "apt"

    def __init__(self, run: Runner = subp.run, lock_timeout: int = 60) -> None:
        self._run = run
        self._lock_timeout = lock_timeout

    def _apt_get(self, *args: str, simulate: bool = False, timeout: float = 1800) -> subp.Result:
        argv = ["apt-get", "-q", "-y", "-o", f"DPkg::Lock::Timeout={self._lock_timeout}"]
        if simulate:
            argv += ["-s", "-o", "Debug::NoLocking=1"]
        else:
            argv += [
                "-o",
                "Dpkg::Options::=--force-confdef",
                "-o",
                "Dpkg::Options::=--force-confold",
            ]
        return self._checked([*argv, *args], timeout)

    def _checked(self, argv: list[str], timeout: float) -> subp.Result:
        done = self._run(argv, env=ENV, check=False, timeout=timeout + self._lock_timeout)
        if done.returncode != 0:
            if _LOCK.search(done.stderr) or _LOCK.search(done.stdout):
                raise Busy(
                    f"the package manager is locked by another process: {_last(done.stderr)}"
                )
            raise CommandFailed(argv, done.returncode, done.stdout, done.stderr)
        return done

    def recover(self) -> None:
        audit = self._run(["dpkg", "--audit"], env=ENV, check=False, timeout=60)
        if audit.stdout.strip():
            self._checked(
                ["dpkg", "--force-confdef", "--force-confold", "--configure", "-a"], timeout=1800
            )

    def refresh(self) -> None:
        self._apt_get("update", timeout=600)

    def plan(self, targets: Sequence[Target], all_security: bool, exclude: Sequence[str]) -> Plan:
        names = [check_name(t.name) for t in targets]
        for t in targets:
            if t.min_version:
                check_version(t.min_version)
        if all_security:
            names += self._security_fixes()
        names = sorted({n for n in names if not _excluded(n, exclude)})
        if not names:
            return Plan(())
        try:
            done = self._apt_get(
                "install", "--only-upgrade", "--no-install-recommends", *names, simulate=True
            )
        except CommandFailed as exc:
            raise PlanError(
                f"apt cannot plan the update: {_last(exc.stderr or exc.stdout)}"
            ) from None
        changes = parse_simulation(done.stdout)
        touched = [c.name for c in changes if _excluded(c.name, exclude)]
        if touched:
            raise PlanError(f"the update would touch excluded package(s) {', '.join(touched)}")
        check_minimums(targets, changes, self.versions, lambda a, b: self.compare(a, "ge", b))
        return Plan(tuple(sorted(changes, key=lambda c: c.name)))

    def _security_fixes(self) -> list[str]:
        """Upgradable packages with a pending security fix: a security
        source offers a newer version than the installed one (`aptpolicy`);
        the plan takes apt's candidate, which contains it."""
        return sorted(u.name for u in self.available() if u.security)

    def available(self) -> list[Available]:
        """Every upgrade apt would make now (a simulated dist-upgrade of the
        lists as they are: the caller refreshes them), each with whether a
        security source offers a fix for it. Changes nothing."""
        upgradable = [
            c for c in parse_simulation(self._apt_get("dist-upgrade", simulate=True).stdout)
            if c.old and c.new
        ]  # fmt: skip
        if not upgradable:
            return []
        names = sorted({c.name for c in upgradable})
        files = aptpolicy.releases(self._policy())
        fixes = aptpolicy.with_security_fix(self._policy(*names), files, names)
        return [
            Available(c.name, c.arch, c.old, c.new, c.origin, c.name in fixes,
                      reboot=needs_reboot(c.name))
            for c in sorted(upgradable, key=lambda c: c.name)
        ]  # fmt: skip

    def _policy(self, *names: str) -> str:
        return self._checked(["apt-cache", "policy", *names], timeout=300).stdout

    def compare(self, a: str, op: str, b: str) -> bool:
        done = self._run(["dpkg", "--compare-versions", a, op, b], check=False, timeout=30)
        return done.returncode == 0

    def snapshot(self, plan: Plan, cache: Path) -> Snapshot:
        """A checked .deb of every version the plan replaces, several
        packages at a time (a rebuild mostly waits on compression and the
        disk); raises PlanError naming a package no
        copy could be made of, before anything is changed."""
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        replaced = [c for c in plan.changes if c.old]
        with ThreadPoolExecutor(max_workers=SNAPSHOT_WORKERS) as pool:
            saved = list(pool.map(lambda c: self._keep(c, cache), replaced))
        return Snapshot(tuple(saved), tuple(c.name for c in plan.changes if not c.old))

    def _keep(self, change: Change, cache: Path) -> Saved:
        """A .deb of the installed version of ``change.name``, in ``cache``."""
        arch = change.arch or self._arch(change.name)
        filename = f"{change.name}_{change.old.replace(':', '%3a')}_{arch}.deb"
        target = cache / filename
        if not self._is_deb(target, change.name, change.old):
            archived = ARCHIVES / filename
            if self._is_deb(archived, change.name, change.old):
                shutil.copyfile(archived, target)
            else:
                self._fetch(change, cache)
        found = [
            p
            for p in cache.glob(f"{change.name}_*.deb")
            if self._is_deb(p, change.name, change.old)
        ]
        if not found:
            raise PlanError(f"cannot keep a copy of {change.name} {change.old} for a revert")
        return Saved(change.name, arch, change.old, str(found[0]))

    def _fetch(self, change: Change, cache: Path) -> None:
        """Put a .deb of the installed version in ``cache``: from the
        archive if it still has that version, else rebuilt from the host
        (`repack`, then dpkg-repack for what it leaves). Whatever comes out
        is checked by the caller."""
        with contextlib.suppress(CommandFailed):
            argv = ["apt-get", "-q", "download", f"{change.name}={change.old}"]
            self._run(argv, env=ENV, check=True, timeout=600, cwd=str(cache))
            return
        if repack.repack(change.name, change.old, cache, self._run) is not None:
            return
        with contextlib.suppress(CommandFailed):
            self._run(["dpkg-repack", change.name], env=ENV, check=True, timeout=1800,
                      cwd=str(cache))  # fmt: skip

    def _is_deb(self, path: Path, name: str, version: str) -> bool:
        if not path.is_file():
            return False
        fields = deb_fields(path, self._run)
        return fields.get("Package") == name and fields.get("Version") == version

    def _arch(self, name: str) -> str:
        done = self._run(["dpkg-query", "-W", "-f", "${Architecture}", name], check=False)
        return done.stdout.strip() or "all"

    def apply(self, plan: Plan) -> list[Change]:
        if plan.empty:
            return []
        before = self.versions([c.name for c in plan.changes])
        args = [f"{c.name}={c.new}" for c in plan.changes if c.new]
        args += [f"{c.name}-" for c in plan.changes if not c.new]
        self._apt_get("install", "--no-install-recommends", *args)
        return self._diff(before)

    def install_files(self, paths: Sequence[Path]) -> list[Change]:
        """Install .deb files (an agent update), with their dependencies
        from the repositories, downgrades allowed (the caller has checked)."""
        names = [deb_fields(p, self._run).get("Package", "") for p in paths]
        before = self.versions(names)
        self._apt_get(
            "install", "--allow-downgrades", "--no-install-recommends", *[str(p) for p in paths]
        )
        return self._diff(before)

    def revert(self, snapshot: Snapshot) -> list[Change]:
        """Install the kept versions over whatever is there now.

        First with apt, which also removes what the update newly installed.
        It does not start with `dpkg --configure -a`, which would rerun the
        failing postinst of a half-configured new version. If apt refuses
        (another, unrelated package broken on the host is enough), dpkg is
        repaired as far as it goes and the kept .debs are installed with
        dpkg itself, which looks at nothing but them.
        """
        try:
            return self._revert_with(snapshot, self._revert_apt)
        except CommandFailed as exc:
            log.info("revert with apt failed (%s); using dpkg on the kept packages", exc)
        with contextlib.suppress(CommandFailed):
            self.recover()
        return self._revert_with(snapshot, self._revert_dpkg)

    def _revert_apt(self, restore: list[Saved], remove: list[str]) -> None:
        self._apt_get(
            "install", "--allow-downgrades", "--no-install-recommends",
            *[s.path for s in restore], *[f"{n}-" for n in remove],
        )  # fmt: skip

    def _revert_dpkg(self, restore: list[Saved], remove: list[str]) -> None:
        options = ["--force-confdef", "--force-confold", "--force-downgrade"]
        if restore:
            self._checked(["dpkg", *options, "--install", *[s.path for s in restore]], 1800)
        if remove:
            self._checked(["dpkg", "--remove", *remove], 1800)

    def _revert_with(
        self, snapshot: Snapshot, method: Callable[[list[Saved], list[str]], None]
    ) -> list[Change]:
        names = [s.name for s in snapshot.saved] + list(snapshot.new)
        before = self.versions(names)
        restore = [s for s in snapshot.saved if before.get(s.name) != s.version]
        remove = [n for n in snapshot.new if before.get(n)]
        if restore or remove:
            method(restore, remove)
        after = self.versions(names)
        wrong = [s.name for s in snapshot.saved if after.get(s.name) != s.version]
        wrong += [n for n in snapshot.new if after.get(n)]
        if wrong:
            raise CommandFailed(
                ["revert"], 0, "", f"revert left {', '.join(wrong)} at the wrong version"
            )
        return self._diff(before)

    def _diff(self, before: dict[str, str]) -> list[Change]:
        after = self.versions(list(before))
        return [
            Change(name, "", before[name], after[name])
            for name in sorted(before)
            if before[name] != after[name]
        ]

    def files(self, names: Sequence[str]) -> set[str]:
        """The paths installed packages ``names`` own (`dpkg-query -L`;
        names not installed add nothing)."""
        if not names:
            return set()
        done = self._run(["dpkg-query", "-L", *names], check=False, timeout=120)
        return {line for line in done.stdout.splitlines() if line.startswith("/")}

    def versions(self, names: Sequence[str]) -> dict[str, str]:
        if not names:
            return {}
        done = self._run(
            ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n", *names],
            check=False,
        )
        found = {name: "" for name in names}
        for line in done.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and is_installed(parts[2]) and parts[0] in found:
                found[parts[0]] = parts[1]
        return found


def deb_fields(path: Path, run: Runner = subp.run) -> dict[str, str]:
    """Package, Version and Architecture of a .deb file; empty when it is
    not one dpkg-deb can read."""
    done = run(
        ["dpkg-deb", "--field", str(path), "Package", "Version", "Architecture"], check=False
    )
    if done.returncode != 0:
        return {}
    return dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)


def _excluded(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _last(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
