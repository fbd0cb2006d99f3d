"""Make a kernel the one the host boots next: the second half of reverting
a kernel update (the first is the package revert).

- GRUB with GRUB_DEFAULT=saved (Debian, Ubuntu): the kernel's menu entry
  id is looked up in grub.cfg and saved with `grub-set-default`, then read
  back with `grub-editenv list`.
- GRUB with GRUB_DEFAULT=0 (the Debian default): the first entry boots
  the newest kernel installed; once the package revert has removed the new
  one that is the previous kernel, and nothing needs to change. When it is
  not, the agent does not edit /etc/default/grub behind the owner's back:
  it says so.
- grubby (RHEL and friends): `grubby --set-default`, checked with
  `grubby --default-kernel`.

Where none of this applies, `BootloaderError` says why: the revert is then
reported as failed, never as done.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.backends import subp
from agent.errors import CommandFailed

Runner = Callable[..., subp.Result]
_ENTRY = re.compile(r"^\s*(menuentry|submenu)\s+(['\"])(.*?)\2(.*)\{\s*$")
_ID = re.compile(r"\$menuentry_id_option\s+'([^']+)'")
_LINUX = re.compile(r"^\s*linux(?:efi|16)?\s+(\S+)")


class BootloaderError(Exception):
    """The boot default cannot be set (or checked) here; says why."""


class Bootloader(Protocol):
    name: str

    def set_default(self, kernel: str) -> str:
        """Boot ``kernel`` next and from then on; returns what was done.
        Raises BootloaderError."""


@dataclass(frozen=True)
class MenuEntry:
    path: str  # "submenu-id>entry-id", as grub-set-default takes it
    title: str
    image: str  # the `linux` line's kernel image


def parse_grub_cfg(text: str) -> list[MenuEntry]:
    """Every menu entry of a grub.cfg, in menu order, with its id path."""
    entries: list[MenuEntry] = []
    stack: list[tuple[str, str, str]] = []  # (kind, id, title) of open blocks
    image: dict[int, str] = {}
    for line in text.splitlines():
        if m := _ENTRY.fullmatch(line):
            kind, title, rest = m.group(1), m.group(3), m.group(4)
            found = _ID.search(rest)
            stack.append((kind, found.group(1) if found else title, title))
        elif stack and (m := _LINUX.match(line)):
            image[len(stack)] = m.group(1)
        elif stack and line.strip() == "}":
            kind, ident, title = stack.pop()
            if kind == "menuentry":
                ids = [i for k, i, _ in stack if k == "submenu"] + [ident]
                entries.append(MenuEntry(">".join(ids), title, image.pop(len(stack) + 1, "")))
    return entries


def entry_for(entries: list[MenuEntry], kernel: str) -> MenuEntry | None:
    """The normal (not recovery) entry booting ``kernel``."""
    for entry in entries:
        if entry.image.endswith(f"/vmlinuz-{kernel}") and "recovery" not in entry.path:
            return entry
    return None


def grub_default(files: list[Path]) -> str:
    """GRUB_DEFAULT as /etc/default/grub (and grub.d, read after it) set it."""
    value = "0"
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if m := re.match(r"^\s*GRUB_DEFAULT=(.*)$", line):
                value = m.group(1).strip().strip("'\"")
    return value


class Grub:
    name = "grub"

    def __init__(
        self,
        run: Runner = subp.run,
        grub_cfg: Path = Path("/boot/grub/grub.cfg"),
        defaults: Path = Path("/etc/default/grub"),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._run = run
        self._cfg = grub_cfg
        self._defaults = defaults
        self._env = env

    def set_default(self, kernel: str) -> str:
        try:
            entries = parse_grub_cfg(self._cfg.read_text())
        except OSError as exc:
            raise BootloaderError(f"cannot read {self._cfg}: {exc.strerror}") from None
        files = [self._defaults, *sorted(self._defaults.with_name("grub.d").glob("*.cfg"))]
        default = grub_default(files)
        entry = entry_for(entries, kernel)
        if default != "saved":
            first = entries[0] if entries else None
            if first is not None and first.image.endswith(f"/vmlinuz-{kernel}"):
                return f"GRUB boots its first entry, {first.title!r}, which is kernel {kernel}"
            raise BootloaderError(
                f"GRUB_DEFAULT={default} and GRUB's first entry is not kernel {kernel} "
                "(GRUB_DEFAULT=saved would let the agent choose the boot kernel)"
            )
        if entry is None:
            raise BootloaderError(f"{self._cfg} has no menu entry for kernel {kernel}")
        try:
            self._run(["grub-set-default", entry.path], env=self._env, timeout=60)
            listed = self._run(["grub-editenv", "-", "list"], env=self._env, timeout=60)
        except CommandFailed as exc:
            raise BootloaderError(f"cannot save GRUB's default entry: {exc}") from None
        saved = dict(line.split("=", 1) for line in listed.stdout.splitlines() if "=" in line).get(
            "saved_entry"
        )
        if saved != entry.path:
            raise BootloaderError(f"grub-set-default left saved_entry={saved}, not {entry.path}")
        return f"GRUB's saved default is now {entry.title!r} ({entry.path})"


class Grubby:
    name = "grubby"

    def __init__(self, run: Runner = subp.run, env: Mapping[str, str] | None = None) -> None:
        self._run = run
        self._env = env

    def set_default(self, kernel: str) -> str:
        image = f"/boot/vmlinuz-{kernel}"
        try:
            self._run(["grubby", f"--set-default={image}"], env=self._env, timeout=60)
            now = self._run(["grubby", "--default-kernel"], env=self._env, timeout=60)
        except CommandFailed as exc:
            raise BootloaderError(f"grubby cannot make {image} the default: {exc}") from None
        if now.stdout.strip() != image:
            raise BootloaderError(f"grubby's default kernel is {now.stdout.strip()}, not {image}")
        return f"grubby's default kernel is now {image}"


class NoBootloader:
    """A host whose boot loader the agent does not know how to steer."""

    name = "none"

    def __init__(self, why: str) -> None:
        self._why = why

    def set_default(self, kernel: str) -> str:
        raise BootloaderError(f"cannot make kernel {kernel} the boot default: {self._why}")


def detect(
    run: Runner = subp.run,
    grub_cfg: Path = Path("/boot/grub/grub.cfg"),
    path: str | None = None,
) -> Bootloader:
    """grubby where installed, else GRUB where it has a grub.cfg."""
    if shutil.which("grubby", path=path):
        return Grubby(run)
    if grub_cfg.is_file():
        return Grub(run, grub_cfg)
    return NoBootloader(f"neither grubby nor {grub_cfg} is on this host")
