"""Does the host need a reboot? Ask what the host itself says:

- /run/reboot-required (and .pkgs): written by Debian/Ubuntu package hooks;
- `needrestart -b` where installed (NEEDRESTART-KSTA: kernel status,
  NEEDRESTART-UCSTA: CPU microcode status);
- `dnf needs-restarting -r` on RPM hosts (see `dnf.Dnf.reboot_reasons`);
- an installed kernel newer than the running one (/boot/vmlinuz-*).

Each probe answers a list of `decide.Reason`s. A probe that cannot run
(not installed, crashed) says nothing rather than failing the order; it
is logged, because a missing signal can hide a needed reboot.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.backends import subp
from agent.boot.decide import Reason
from agent.errors import CommandFailed

log = logging.getLogger(__name__)
Probe = Callable[[], list[Reason]]
Runner = Callable[..., subp.Result]

KERNEL_PACKAGE = re.compile(
    r"^(linux-(image|modules|headers|signed-image|kbuild)-|linux-image$|kernel(-core|-modules)?"
    r"($|-[0-9])|kpatch-patch)"
)


def version_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Order kernel releases the way people read them: numbers as numbers
    (6.1.0-17 after 6.1.0-9), a number after a word (as rpm does)."""
    return tuple(
        (1, int(part), "") if part.isdigit() else (0, 0, part)
        for part in re.findall(r"\d+|[A-Za-z]+", text)
    )


def newest(releases: Sequence[str]) -> str:
    return max(releases, key=version_key) if releases else ""


def read_text(path: Path) -> str:
    """The file's text without surrounding whitespace; "" when unreadable."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def installed_kernels(boot_dir: Path = Path("/boot")) -> list[str]:
    """Releases of the kernels installed in ``boot_dir`` (vmlinuz-RELEASE)."""
    return sorted(
        (p.name.removeprefix("vmlinuz-") for p in boot_dir.glob("vmlinuz-*")), key=version_key
    )


def kernel_reasons(running: str, installed: Sequence[str]) -> list[Reason]:
    """A reason when a kernel newer than ``running`` is installed."""
    latest = newest(installed)
    if not running or not latest or version_key(latest) <= version_key(running):
        return []
    return [Reason("kernel", f"kernel {latest} is installed, {running} is running", kernel=True)]


def reboot_required_reasons(flag: Path) -> list[Reason]:
    """/run/reboot-required, with the packages of /run/reboot-required.pkgs."""
    if not flag.exists():
        return []
    pkgs_file = flag.with_name(flag.name + ".pkgs")
    pkgs = sorted(set(read_text(pkgs_file).split()))
    if not pkgs:
        return [Reason("reboot-required", f"{flag} exists")]
    kernel = all(KERNEL_PACKAGE.match(p) for p in pkgs)
    return [Reason("reboot-required", f"{flag} names {', '.join(pkgs)}", kernel=kernel)]


def needrestart_lines(output: str) -> list[tuple[str, str]]:
    """(KEY, value) of each "NEEDRESTART-KEY: value" line of `needrestart -b`
    (batch mode, apt-dater protocol), in order."""
    found = []
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.startswith("NEEDRESTART-"):
            found.append((key.removeprefix("NEEDRESTART-"), value.strip()))
    return found


def parse_needrestart(output: str) -> list[Reason]:
    """Reasons from `needrestart -b` (batch mode, apt-dater protocol).

    KSTA: 0 unknown, 1 current, 2 ABI-compatible upgrade pending, 3 version
    upgrade pending. UCSTA: 0 unknown, 1 current, 2 obsolete microcode.
    Services to restart (NEEDRESTART-SVC) do not need a reboot.
    """
    fields: dict[str, str] = {}
    for key, value in needrestart_lines(output):
        fields.setdefault(key, value)
    reasons = []
    if fields.get("KSTA") in ("2", "3"):
        what = "an ABI-compatible upgrade" if fields["KSTA"] == "2" else "a new version"
        reasons.append(Reason(
            "needrestart",
            f"kernel {fields.get('KCUR', '?')} is running, {what} "
            f"({fields.get('KEXP', '?')}) is installed",
            kernel=True,
        ))  # fmt: skip
    if fields.get("UCSTA") == "2":
        reasons.append(Reason(
            "needrestart",
            f"CPU microcode {fields.get('UCCUR', '?')} is loaded, "
            f"{fields.get('UCEXP', '?')} is installed",
        ))  # fmt: skip
    return reasons


class RebootSignals:
    """Every probe of this host, run in turn; `collect` is the one to call."""

    def __init__(
        self,
        kernel: Callable[[], str],
        run: Runner = subp.run,
        reboot_required: Path = Path("/run/reboot-required"),
        boot_dir: Path = Path("/boot"),
        extra: Sequence[Probe] = (),
    ) -> None:
        self._kernel = kernel
        self._run = run
        self._flag = reboot_required
        self._boot_dir = boot_dir
        self._extra = tuple(extra)

    def needrestart(self) -> list[Reason]:
        try:
            done = self._run(["needrestart", "-b", "-r", "l"], check=False, timeout=120)
        except CommandFailed as exc:
            if exc.returncode is None and "not installed" in str(exc):
                return []
            raise
        return parse_needrestart(done.stdout)

    def probes(self) -> list[tuple[str, Probe]]:
        return [
            ("reboot-required", lambda: reboot_required_reasons(self._flag)),
            ("kernel", lambda: kernel_reasons(self._kernel(), installed_kernels(self._boot_dir))),
            ("needrestart", self.needrestart),
            *((f"extra-{i}", probe) for i, probe in enumerate(self._extra)),
        ]

    def collect(self) -> list[Reason]:
        """Every reason the host gives; duplicates (same source and detail) once."""
        found: dict[tuple[str, str], Reason] = {}
        for name, probe in self.probes():
            try:
                for reason in probe():
                    found.setdefault((reason.source, reason.detail), reason)
            except (CommandFailed, OSError) as exc:
                log.warning("reboot signal %s unavailable: %s", name, exc)
        return list(found.values())
