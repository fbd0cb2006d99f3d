"""The dnf backend (RHEL, Fedora, Rocky, Alma...): real commands, argv lists.

- Plans are `dnf --assumeno upgrade NAMES` (dnf solves, prints the
  transaction table, and stops); security updates come from
  `dnf updateinfo list --security --updates`.
- Another dnf holding the rpmdb lock is Busy (exit_on_lock: dnf's own
  wait has no timeout), retried by the runner.
- Before anything changes, every version the plan replaces is kept in
  the agent's cache: a copy from dnf's own package cache (keepcache) when
  it verifies, else all missing ones fetched in one `dnf download`, else
  (a version no repository has: installed from a file) rebuilt from the
  installed files and rpm's header (`rpmrepack`). Each
  file is checked (rpm reads it, its digests hold, name, arch and
  [epoch:]version-release are the installed ones); a package with no
  checked copy fails the order before anything changed.
- Applies install exactly the planned NEVRAs, in one transaction whose
  history comment names the plan ("fleetpatch apply DIGEST").
- Reverts are `dnf history undo` of exactly that transaction, after
  checking that history was not changed behind the agent's back: no later
  transaction touched the same packages, and rpm still shows what ours
  left. Otherwise the revert refuses and says why. When the undo cannot be
  done (a replaced version no repository has any more), the kept files are
  installed back in one transaction instead.
- `dnf needs-restarting -r` tells whether the host needs a reboot,
  `dnf needs-restarting -s` which systemd services still run replaced
  code; `rpm -ql` which files the changed packages own.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import logging
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetpatch.orderspec import MAX_PACKAGE_NAME

from agent.backends import rpmrepack, subp
from agent.backends.base import Busy, Change, Plan, PlanError, Saved, Snapshot, check_minimums
from agent.boot.decide import Reason
from agent.errors import CommandFailed
from agent.host.needs import KERNEL_PACKAGE
from agent.host.updates import Available, needs_reboot
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
_NOT_AVAILABLE = re.compile(r"^No package (\S+) available\.")
_NOT_FILES = re.compile(r"^(?:package \S+ is not installed|\(contains no files\))$")
# A systemd service unit name: systemd allows ASCII letters, digits and
# ":-_.\\", and "@" for templates.
_UNIT = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.service$")
QF = "%{NAME}\\t%{ARCH}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n"
ENV = {"LC_ALL": "C.UTF-8"}
# dnf's package cache: with keepcache=1, every package it installed stays in
# CACHEDIR/REPO-HASH/packages/, often the only copy of a version the
# repositories have since dropped.
DNF_CACHE = Path("/var/cache/dnf")


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


@dataclass(frozen=True)
class Advised:
    """One line of `dnf updateinfo list`: an advisory for a package version."""

    id: str
    security: bool
    severity: str  # "Important" of "Important/Sec."; "" for other types
    nevra: str


SEVERITY_RANK = {"Critical": 4, "Important": 3, "Moderate": 2, "Low": 1}


def parse_updateinfo(output: str) -> dict[str, list[Advised]]:
    """Package name -> the advisories `dnf updateinfo list` names for it
    ("ID TYPE NEVRA"; a security TYPE reads "Severity/Sec.")."""
    found: dict[str, list[Advised]] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        advisory, kind, nevra = parts
        security = kind.endswith("/Sec.") or kind == "security"
        severity = kind.removesuffix("/Sec.") if kind.endswith("/Sec.") else ""
        try:
            name = parse_nevra(nevra)[0]
        except ValueError:
            continue
        found.setdefault(name, []).append(Advised(advisory, security, severity, nevra))
    return found


def parse_check_update(output: str) -> list[tuple[str, str, str, str]]:
    """(name, arch, [epoch:]version-release, repository) of each update
    `dnf check-update` lists; obsoletes after it are not updates."""
    found = []
    for line in output.splitlines():
        if line.startswith("Obsoleting"):
            break
        parts = line.split()
        if len(parts) != 3 or "." not in parts[0]:
            continue
        name, _, arch = parts[0].rpartition(".")
        found.append((name, arch, parts[1], parts[2]))
    return found


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


def parse_needs_restarting_services(output: str) -> list[str]:
    """The systemd services `dnf needs-restarting -s` names, one per line,
    sorted, each once; other lines (blank, messages, warnings) are not."""
    return sorted({line.strip() for line in output.splitlines() if _UNIT.fullmatch(line.strip())})


def parse_file_list(output: str) -> set[str]:
    """The paths in `rpm -ql` output; "(contains no files)" and "package X
    is not installed" lines are not paths."""
    return {line for line in output.splitlines() if line.startswith("/")}


def _vr(evr: str) -> str:
    """version-release of [epoch:]version-release: how files are named."""
    return evr.split(":", 1)[-1]


def _last(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class Dnf:
    name = "dnf"

    def __init__(
        self, run: Runner = subp.run, dnf_cache: Path = DNF_CACHE, root: Path = Path("/")
    ) -> None:
        """``root``: where the host's files are read (a rebuilt copy of an
        installed package); a test's sandbox, whose commands ``run`` runs."""
        self._run = run
        self._dnf_cache = dnf_cache
        self._root = root

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

    def available(self) -> list[Available]:
        """Every update dnf offers now (`check-update`, from the metadata as
        it is: the caller refreshes it), with the advisories that apply
        (`updateinfo list --updates`): a security one marks the update
        security, with its severity. Changes nothing."""
        done = self._dnf("-q", "check-update", check=False, timeout=600)
        if done.returncode not in (0, 100):
            raise CommandFailed(["dnf", "check-update"], done.returncode, done.stdout, done.stderr)
        offered = parse_check_update(done.stdout)
        if not offered:
            return []
        advised = parse_updateinfo(
            self._dnf("-q", "updateinfo", "list", "--updates", timeout=600).stdout
        )
        installed = self.versions(sorted({name for name, _, _, _ in offered}))
        found = []
        for name, arch, version, repo in offered:
            notes = advised.get(name, [])
            security = [n for n in notes if n.security]
            best = max(security, key=lambda n: SEVERITY_RANK.get(n.severity, 0), default=None)
            chosen = best or (notes[0] if notes else None)
            found.append(Available(
                name, arch, installed.get(name, ""), version, repo, best is not None,
                severity=best.severity if best else "", advisory=chosen.id if chosen else "",
                reboot=needs_reboot(name),
            ))  # fmt: skip
        return sorted(found, key=lambda a: (a.name, a.arch))

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
        return rpm_vercmp(a, b, self._run)

    def snapshot(self, plan: Plan, cache: Path) -> Snapshot:
        """A checked .rpm of every version the plan replaces; raises
        PlanError naming each package no copy could be made of, before
        anything is changed."""
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        replaced = [c for c in plan.changes if c.old]
        kept = {c.name: p for c in replaced if (p := self._kept(c, cache)) is not None}
        missing = [c for c in replaced if c.name not in kept]
        reasons = self._download(missing, cache) if missing else {}
        for change in missing:
            if (path := self._checked_in(cache, change)) is not None:
                kept[change.name] = path
            elif (path := self._rebuilt(change, cache)) is not None:
                kept[change.name] = path
                log.info("kept %s %s rebuilt from its installed files", change.name, change.old)
        failed = [c for c in replaced if c.name not in kept]
        if failed:
            raise PlanError("; ".join(
                f"cannot keep a copy of {c.name} {c.old} for a revert: "
                f"{reasons.get(c.name, 'dnf download gave no package that checks out')}, "
                "and it cannot be rebuilt from its installed files"
                for c in failed
            ))  # fmt: skip
        saved = [Saved(c.name, c.arch, c.old, str(kept[c.name])) for c in replaced]
        return Snapshot(tuple(saved), tuple(c.name for c in plan.changes if not c.old))

    def _kept(self, change: Change, cache: Path) -> Path | None:
        """A checked copy already in ``cache`` (a rerun), else one copied
        from dnf's package cache."""
        if (path := self._checked_in(cache, change)) is not None:
            return path
        nvra = f"{change.name}-{_vr(change.old)}.{change.arch}.rpm"
        for found in sorted(self._dnf_cache.glob(f"*/packages/{nvra}")):
            target = cache / found.name
            with contextlib.suppress(OSError):
                shutil.copyfile(found, target)
                if self._is_rpm(target, change):
                    return target
                target.unlink()
        return None

    def _rebuilt(self, change: Change, cache: Path) -> Path | None:
        """A copy rebuilt from the installed files and rpm's header of the
        package (`rpmrepack`: no repository or cache has the version, as
        for an agent installed from a file), checked like any other."""
        path = rpmrepack.repack(change.name, change.arch, change.old, cache, self._run, self._root)
        if path is None:
            return None
        if self._is_rpm(path, change):
            return path
        log.warning("a rebuilt %s does not check out; not kept", path.name)
        path.unlink(missing_ok=True)
        return None

    def _download(self, changes: Sequence[Change], cache: Path) -> dict[str, str]:
        """One `dnf download` of every version in ``changes`` into ``cache``
        (strict off: a version no repository has does not stop the others).
        Returns name -> why, for the versions dnf said it could not find;
        what it did produce is checked by the caller."""
        specs = {f"{c.name}-{c.old}.{c.arch}": c.name for c in changes}
        done = self._dnf("-q", "--setopt=strict=False", "download", f"--destdir={cache}",
                         *specs, check=False, timeout=600 + 60 * len(specs))  # fmt: skip
        output = f"{done.stdout}\n{done.stderr}"
        reasons = {}
        for line in output.splitlines():
            if (m := _NOT_AVAILABLE.match(line.strip())) and m.group(1) in specs:
                reasons[specs[m.group(1)]] = "no repository offers it"
        if done.returncode != 0:
            for name in specs.values():
                reasons.setdefault(name, f"dnf download failed: {_last(done.stderr)}")
        return reasons

    def _checked_in(self, cache: Path, change: Change) -> Path | None:
        """A file in ``cache`` that is the installed version of the package."""
        for path in sorted(cache.glob(f"{glob.escape(change.name)}-*.rpm")):
            if self._is_rpm(path, change):
                return path
        return None

    def _is_rpm(self, path: Path, change: Change) -> bool:
        """Whether ``path`` is a readable, intact .rpm of exactly
        ``change.name`` ``change.arch`` ``change.old``: rpm reads its header,
        and its header and payload digests hold (a truncated download or
        copy fails here, whatever its name says)."""
        if not path.is_file():
            return False
        query = self._run(["rpm", "-qp", "--qf", QF, str(path)], env=ENV, check=False,
                          timeout=60)  # fmt: skip
        if query.returncode != 0 or query.stdout.split("\n", 1)[0].split("\t") != [
            change.name, change.arch, change.old
        ]:  # fmt: skip
            return False
        digests = self._run(["rpm", "-K", "--nosignature", str(path)], env=ENV, check=False,
                            timeout=300)  # fmt: skip
        return digests.returncode == 0

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

    def install_files(self, paths: Sequence[Path]) -> list[Change]:
        """Install .rpm files (an agent update), their dependencies from the
        repositories, in one dnf transaction; older than the installed
        versions (the caller has checked policy) is a `dnf downgrade`, which
        `dnf install` of an older file refuses to do."""
        fields = [rpm_fields(p, self._run) for p in paths]
        unreadable = [str(p) for p, f in zip(paths, fields, strict=True) if not f]
        if unreadable:
            raise CommandFailed(["rpm", "-qp"], None, "", "",
                                reason=f"cannot read {', '.join(unreadable)}")  # fmt: skip
        before = self.versions([f["NAME"] for f in fields])
        older = any(
            before[f["NAME"]]
            and rpm_vercmp(f"{f['VERSION']}-{f['RELEASE']}", _vr(before[f["NAME"]]), self._run) < 0
            for f in fields
        )
        # Named as `apply` names its transactions, so that a revert finds
        # it (`_ours`) and undoes it like any other.
        digest = plan_digest(
            [(f["NAME"], f["ARCH"], before[f["NAME"]]) for f in fields if before[f["NAME"]]],
            [f["NAME"] for f in fields if not before[f["NAME"]]],
        )
        verb = "downgrade" if older else "install"
        self._dnf("-y", f"--comment=fleetpatch apply {digest}", verb, *[str(p) for p in paths])
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
        try:
            self._dnf("-y", f"--comment=fleetpatch revert of {info.tid}", "history", "undo",
                      str(info.tid))  # fmt: skip
        except CommandFailed as exc:
            # Typically a replaced version the repositories no longer carry
            # (the snapshot kept it from dnf's cache): install the kept files.
            if not snapshot.saved or not all(Path(s.path).is_file() for s in snapshot.saved):
                raise
            log.info("dnf history undo %s failed (%s); installing the kept packages", info.tid,
                     exc)  # fmt: skip
            self._undo_from_files(snapshot, info.tid, before)
        after = self.versions(names)
        if not self._at_snapshot(snapshot, after):
            raise CommandFailed(["dnf", "history", "undo"], 0, "", "",
                                reason=f"left {after} instead of the snapshot")  # fmt: skip
        return self._diff(before)

    def _undo_from_files(self, snapshot: Snapshot, tid: int, now: dict[str, str]) -> None:
        """One dnf transaction (a `dnf shell` script beside the kept files)
        that installs the kept versions over the new ones, downgrading them,
        and removes what the update newly installed."""
        restore = [s.path for s in snapshot.saved if now.get(s.name) != s.version]
        remove = [n for n in snapshot.new if now.get(n)]
        lines = [f"install {' '.join(restore)}"] if restore else []
        lines += [f"remove {' '.join(remove)}"] if remove else []
        script = Path(snapshot.saved[0].path).parent / f"revert-of-{tid}.dnf-shell"
        script.write_text("\n".join([*lines, "run", ""]))
        try:
            self._dnf("-y", f"--comment=fleetpatch revert of {tid}", "shell", str(script))
        finally:
            script.unlink(missing_ok=True)

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

    def services_to_restart(self) -> list[str]:
        """The systemd services running code that an update has replaced
        since they started (`dnf needs-restarting -s`, dnf-plugins-core).
        Raises CommandFailed when it cannot tell (plugin missing, no
        systemd to ask, any error exit)."""
        done = self._dnf("-q", "needs-restarting", "-s", timeout=300)
        return parse_needs_restarting_services(done.stdout)

    def files(self, names: Sequence[str]) -> set[str]:
        """Every path the installed packages ``names`` own (`rpm -ql`);
        a name not installed owns nothing. Raises CommandFailed when rpm
        fails otherwise."""
        if not names:
            return set()
        argv = ["rpm", "-ql", *names]
        done = self._run(argv, env=ENV, check=False, timeout=120)
        if done.returncode != 0:
            problems = [line for line in f"{done.stdout}\n{done.stderr}".splitlines()
                        if line.strip() and not line.startswith("/")
                        and not _NOT_FILES.match(line)]  # fmt: skip
            if problems or not done.stdout.strip():
                raise CommandFailed(argv, done.returncode, done.stdout, done.stderr)
        return parse_file_list(done.stdout)


def rpm_vercmp(a: str, b: str, run: Runner = subp.run) -> int:
    """rpm's own comparison of two [epoch:]version[-release]: -1, 0 or 1.
    Raises PlanError for a string that is no RPM version."""
    for v in (a, b):
        if not EVR.fullmatch(v):
            raise PlanError(f"{v!r} is not an RPM version")
    done = run(["rpm", "--eval", f'%{{lua: print(rpm.vercmp("{a}", "{b}"))}}'], env=ENV, timeout=30)
    return int(done.stdout.strip())


def rpm_fields(path: Path, run: Runner = subp.run) -> dict[str, str]:
    """NAME, VERSION, RELEASE, EPOCH ("" for none) and ARCH of an .rpm
    file whose header and payload digests hold; empty when rpm cannot read
    it or it is damaged (a truncated copy, bytes that are no package)."""
    qf = "%{NAME}\\t%{VERSION}\\t%{RELEASE}\\t%|EPOCH?{%{EPOCH}}:{}|\\t%{ARCH}\\n"
    query = run(["rpm", "-qp", "--qf", qf, str(path)], env=ENV, check=False, timeout=60)
    parts = query.stdout.split("\n", 1)[0].split("\t")
    if query.returncode != 0 or len(parts) != 5:
        return {}
    digests = run(["rpm", "-K", "--nosignature", str(path)], env=ENV, check=False, timeout=300)
    if digests.returncode != 0:
        return {}
    return dict(zip(("NAME", "VERSION", "RELEASE", "EPOCH", "ARCH"), parts, strict=True))


def _excluded(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
