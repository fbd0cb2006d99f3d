"""The dnf backend (RHEL, Fedora, Rocky, Alma...): real commands, argv lists.

- Plans are `dnf --assumeno upgrade NAMES` (dnf solves, prints the
  transaction table, and stops); security updates come from
  `dnf updateinfo list --security --updates`.
- Another dnf holding the rpmdb lock is Busy (exit_on_lock: dnf's own
  wait has no timeout), retried by the runner.
- Before anything changes, the version each upgrade replaces is fetched
  into the agent's cache (`dnf download`): proof that a repository still
  offers it, which `dnf history undo` needs, and a copy for a person.
- Applies install exactly the planned NEVRAs, in one transaction whose
  history comment names the plan ("fleetpatch apply DIGEST").
- Reverts are `dnf history undo` of exactly that transaction, after
  checking that history was not changed behind the agent's back: no later
  transaction touched the same packages, and rpm still shows what ours
  left. Otherwise the revert refuses and says why.
- `dnf needs-restarting -r` tells whether the host needs a reboot.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetpatch.orderspec import MAX_PACKAGE_NAME

from agent.backends import subp
from agent.backends.base import Busy, Change, Plan, PlanError, Saved, Snapshot, check_minimums
from agent.boot.decide import Reason
from agent.errors import CommandFailed
from agent.host.needs import KERNEL_PACKAGE
from agent.orders.workorder import Target

log = logging.getLogger(__name__)
Runner = Callable[..., subp.Result]
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
EVR = re.compile(r"^(\d+:)?[A-Za-z0-9._+~^]+(-[A-Za-z0-9._+~^]+)?$")
_LOCK = re.compile(r"already locked by \d+|can't create transaction lock")
_NO_MATCH = re.compile(
    r"^(?:No match for argument: (\S+)|Package (\S+) available, but not installed)"
)
_SECTION = re.compile(r"^(Installing|Upgrading|Reinstalling|Downgrading|Removing)\b.*:$")
QF = "%{NAME}\\t%{ARCH}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n"
ENV = {"LC_ALL": "C.UTF-8"}


def check_name(name: str) -> str:
    if len(name) > MAX_PACKAGE_NAME or not NAME.fullmatch(name):
        raise PlanError(f"{name!r} is not an RPM package name")
    return name


def parse_nevra(text: str) -> tuple[str, str, str]:
    """(name, arch, [epoch:]version-release) of "name-[e:]v-r.arch"."""
    rest, _, arch = text.rpartition(".")
    rest, _, release = rest.rpartition("-")
    name, _, version = rest.rpartition("-")
    if not (name and version and release and arch):
        raise ValueError(f"{text!r} is not name-version-release.arch")
    return name, arch, f"{version}-{release}"


def parse_transaction(output: str) -> list[Change]:
    """The changes in the table `dnf --assumeno` prints (new versions only;
    old ones come from rpm). Long names wrap onto the next line."""
    changes: list[Change] = []
    section, pending = "", list[str]()
    for line in output.splitlines():
        if line.startswith("Transaction Summary"):
            break
        if m := _SECTION.fullmatch(line):
            section, pending = m.group(1), list[str]()
            continue
        if not section or not line.startswith(" "):
            continue
        pending += line.split()
        if len(pending) < 4:
            continue  # a wrapped name: the rest is on the next line
        tokens, pending = pending, []
        if tokens[0] == "replacing":  # obsoleted: name.arch evr
            name, _, arch = tokens[1].rpartition(".")
            changes.append(Change(name, arch, tokens[2], ""))
        elif section == "Removing":
            changes.append(Change(tokens[0], tokens[1], tokens[2], ""))
        else:
            changes.append(Change(tokens[0], tokens[1], "", tokens[2], tokens[3]))
    return changes


def parse_history_ids(output: str) -> list[int]:
    """Transaction ids of `dnf history list`, newest first."""
    ids = []
    for line in output.splitlines():
        first = line.split("|", 1)[0].strip()
        if "|" in line and first.isdigit():
            ids.append(int(first))
    return ids


@dataclass(frozen=True)
class HistoryInfo:
    tid: int
    comment: str
    altered: tuple[tuple[str, str, str, str], ...]  # (action, name, arch, evr)

    def after(self) -> dict[str, str]:
        """What the transaction left: name -> evr ("" when it removed it)."""
        left: dict[str, str] = {}
        for action, name, _, evr in self.altered:
            if action in ("Install", "Upgrade", "Downgrade", "Reinstall"):
                left[name] = evr
            elif action in ("Removed", "Obsoleted", "Erase"):
                left.setdefault(name, "")
        return left


def parse_history_info(tid: int, output: str) -> HistoryInfo:
    comment, altered, inside = "", [], False
    for line in output.splitlines():
        if line.startswith("Comment"):
            comment = line.split(":", 1)[1].strip()
        elif line.startswith("Packages Altered"):
            inside = True
        elif inside and (m := re.match(r"^\s+(Reason Change|\S+)\s+(\S+)", line)):
            try:
                altered.append((m.group(1), *parse_nevra(m.group(2))))
            except ValueError:
                continue
        elif inside and line and not line.startswith(" "):
            inside = False
    return HistoryInfo(tid, comment, tuple(altered))


def plan_digest(saved: Iterable[tuple[str, str, str]], new: Iterable[str]) -> str:
    """Names a transaction by what it replaces and adds: the same from the
    plan (at apply) and from the snapshot (at revert)."""
    keys = sorted(f"{n}.{a}={v}" for n, a, v in saved) + sorted(f"{n}=new" for n in new)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def _last(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class Dnf:
    name = "dnf"

    def __init__(self, run: Runner = subp.run) -> None:
        self._run = run

    def _dnf(self, *args: str, timeout: float = 1800, check: bool = True) -> subp.Result:
        argv = ["dnf", "--setopt=exit_on_lock=True", *args]
        done = self._run(argv, env=ENV, check=False, timeout=timeout)
        locked = _LOCK.search(f"{done.stderr}\n{done.stdout}") if done.returncode else None
        if locked is not None:
            line = next(x for x in f"{done.stderr}\n{done.stdout}".splitlines() if locked[0] in x)
            raise Busy(f"the package manager is locked by another process: {line.strip()}")
        if check and done.returncode != 0:
            raise CommandFailed(argv, done.returncode, done.stdout, done.stderr)
        return done

    def recover(self) -> None:
        """An interrupted rpm transaction leaves duplicates (old and new
        version both in the rpmdb): remove the older ones."""
        if self._dnf("-q", "check", "--duplicates", check=False, timeout=300).stdout.strip():
            self._dnf("-y", "remove", "--duplicates")

    def refresh(self) -> None:
        self._dnf("-q", "makecache", "--refresh", timeout=600)

    def _security_names(self) -> list[str]:
        done = self._dnf("-q", "updateinfo", "list", "--security", "--updates", timeout=600)
        names = []
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                try:
                    names.append(parse_nevra(parts[-1])[0])
                except ValueError:
                    continue
        return names

    def plan(self, targets: Sequence[Target], all_security: bool, exclude: Sequence[str]) -> Plan:
        names = [check_name(t.name) for t in targets]
        if all_security:
            names += self._security_names()
        names = sorted({n for n in names if not _excluded(n, exclude)})
        if not names:
            return Plan(())
        excludes = [f"--exclude={p}" for p in exclude]
        # --best: an upgrade that cannot be installed is an error to report,
        # not a package dnf quietly leaves where it is.
        done = self._dnf("--assumeno", "--best", *excludes, "upgrade", *names, check=False,
                         timeout=600)  # fmt: skip
        output = f"{done.stdout}\n{done.stderr}"
        missing = sorted({m.group(1) or m.group(2) for line in output.splitlines()
                          if (m := _NO_MATCH.match(line))})  # fmt: skip
        if missing:
            raise PlanError(f"not installed or unknown here: {', '.join(missing)}")
        if "Nothing to do" in output and done.returncode == 0:
            changes: list[Change] = []
        elif "Operation aborted" in output:
            changes = parse_transaction(done.stdout)
        else:
            raise PlanError(f"dnf cannot plan the update: {_last(done.stderr or done.stdout)}")
        touched = [c.name for c in changes if _excluded(c.name, exclude)]
        if touched:
            raise PlanError(f"the update would touch excluded package(s) {', '.join(touched)}")
        old = self.versions([c.name for c in changes if c.new])
        changes = [Change(c.name, c.arch, old.get(c.name, ""), c.new, c.origin) if c.new else c
                   for c in changes]  # fmt: skip
        for target in targets:
            if target.min_version and not EVR.fullmatch(target.min_version):
                raise PlanError(f"{target.min_version!r} is not an RPM version")
        check_minimums(targets, changes, self.versions, lambda a, b: self.compare(a, b) >= 0)
        return Plan(tuple(sorted(changes, key=lambda c: c.name)))

    def compare(self, a: str, b: str) -> int:
        """rpm's own version comparison: -1, 0 or 1."""
        for v in (a, b):
            if not EVR.fullmatch(v):
                raise PlanError(f"{v!r} is not an RPM version")
        done = self._run(
            ["rpm", "--eval", f'%{{lua: print(rpm.vercmp("{a}", "{b}"))}}'], env=ENV, timeout=30
        )
        return int(done.stdout.strip())

    def snapshot(self, plan: Plan, cache: Path) -> Snapshot:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        saved = [self._keep(c, cache) for c in plan.changes if c.old]
        return Snapshot(tuple(saved), tuple(c.name for c in plan.changes if not c.old))

    def _keep(self, change: Change, cache: Path) -> Saved:
        evr = change.old.split(":", 1)[-1]
        target = cache / f"{change.name}-{evr}.{change.arch}.rpm"
        if not target.is_file():
            spec = f"{change.name}-{change.old}.{change.arch}"
            done = self._dnf("-q", "download", f"--destdir={cache}", spec, check=False,
                             timeout=600)  # fmt: skip
            if done.returncode != 0 or not target.is_file():
                raise PlanError(
                    f"cannot keep a copy of {change.name} {change.old} for a revert: "
                    f"no repository offers it ({_last(done.stderr)})"
                )
        return Saved(change.name, change.arch, change.old, str(target))

    def apply(self, plan: Plan) -> list[Change]:
        if plan.empty:
            return []
        before = self.versions([c.name for c in plan.changes])
        digest = plan_digest(
            [(c.name, c.arch, c.old) for c in plan.changes if c.old],
            [c.name for c in plan.changes if not c.old],
        )
        specs = [f"{c.name}-{c.new}.{c.arch}" for c in plan.changes if c.new]
        self._dnf("-y", f"--comment=fleetpatch apply {digest}", "install", *specs)
        return self._diff(before)

    def _ours(self, snapshot: Snapshot, names: list[str]) -> HistoryInfo:
        """The transaction this agent made for ``snapshot``, checked to be
        the last one that touched its packages. Raises CommandFailed."""
        digest = plan_digest([(s.name, s.arch, s.version) for s in snapshot.saved], snapshot.new)
        ids = parse_history_ids(self._dnf("history", "list", *names, timeout=300).stdout)
        if not ids:
            raise CommandFailed(["dnf", "history"], None, "", "",
                                reason=f"lists no transaction of {', '.join(names)}")  # fmt: skip
        info = parse_history_info(ids[0], self._dnf("history", "info", str(ids[0])).stdout)
        if info.comment != f"fleetpatch apply {digest}":
            raise CommandFailed(
                ["dnf", "history"], None, "", "",
                reason=f"changed behind the agent's back: transaction {info.tid} "
                f"({info.comment or 'not fleetpatch'}) touched {', '.join(names)} last",
            )  # fmt: skip
        return info

    def revert(self, snapshot: Snapshot) -> list[Change]:
        names = [s.name for s in snapshot.saved] + list(snapshot.new)
        before = self.versions(names)
        if self._at_snapshot(snapshot, before):
            return []  # nothing to undo (a rerun after the undo was done)
        info = self._ours(snapshot, names)
        drifted = [f"{n} is at {before.get(n) or 'nothing'}, not {v or 'removed'}"
                   for n, v in info.after().items() if n in before and before[n] != v]  # fmt: skip
        if drifted:
            raise CommandFailed(
                ["dnf", "history"], None, "", "",
                reason=f"does not match the host: {'; '.join(drifted)} "
                f"(changed outside dnf after transaction {info.tid})",
            )  # fmt: skip
        self._dnf("-y", f"--comment=fleetpatch revert of {info.tid}", "history", "undo",
                  str(info.tid))  # fmt: skip
        after = self.versions(names)
        if not self._at_snapshot(snapshot, after):
            raise CommandFailed(["dnf", "history", "undo"], 0, "", "",
                                reason=f"left {after} instead of the snapshot")  # fmt: skip
        return self._diff(before)

    @staticmethod
    def _at_snapshot(snapshot: Snapshot, now: dict[str, str]) -> bool:
        return all(now.get(s.name) == s.version for s in snapshot.saved) and not any(
            now.get(n) for n in snapshot.new
        )

    def _diff(self, before: dict[str, str]) -> list[Change]:
        after = self.versions(list(before))
        return [Change(n, "", before[n], after[n]) for n in sorted(before) if before[n] != after[n]]

    def versions(self, names: Sequence[str]) -> dict[str, str]:
        found = dict.fromkeys(names, "")
        if not names:
            return found
        done = self._run(["rpm", "-q", "--qf", QF, *names], env=ENV, check=False, timeout=60)
        for line in done.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[0] in found:
                found[parts[0]] = parts[2]  # the last installed, for installonly kernels
        return found

    def reboot_reasons(self) -> list[Reason]:
        """`dnf needs-restarting -r`: exit 1 and "  * PACKAGE" lines when
        core packages changed since boot. Raises CommandFailed."""
        done = self._dnf("needs-restarting", "-r", check=False, timeout=300)
        if done.returncode == 0:
            return []
        if done.returncode != 1:
            raise CommandFailed(["dnf", "needs-restarting", "-r"], done.returncode, done.stdout,
                                done.stderr)  # fmt: skip
        pkgs = [line.strip()[2:] for line in done.stdout.splitlines()
                if line.strip().startswith("* ")]  # fmt: skip
        kernel = bool(pkgs) and all(KERNEL_PACKAGE.match(p) for p in pkgs)
        return [Reason("needs-restarting", f"updated since boot: {', '.join(pkgs) or '?'}",
                       kernel=kernel)]  # fmt: skip


def _excluded(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
