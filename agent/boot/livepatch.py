"""Kernel live patching: kpatch and Canonical Livepatch behind one interface,
driven through their command-line contract.

kpatch (RHEL and friends): patch modules arrive as packages
(kpatch-patch-*) and are listed by `kpatch list`:

    Loaded patch modules:
    kpatch_5_14_0_284_11_1_1_2 [enabled]

    Installed patch modules:
    kpatch_5_14_0_284_11_1_1_2 (5.14.0-284.11.1.el9_2.x86_64)

`kpatch load NAME` loads one, `kpatch unload NAME` takes it out again.

Canonical Livepatch (Ubuntu): a daemon applies patches on its own; the
agent asks `canonical-livepatch status --format json` for the running
kernel's entry (State applied|unapplied|nothing-to-apply|..., Version, and
UpgradeRequiredDate: the day Livepatch stops covering this kernel), and
`canonical-livepatch refresh` to apply what is available now. It cannot
unload a patch: a revert says so.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from agent.backends import subp
from agent.boot.decide import LiveOffer
from agent.errors import CommandFailed
from agent.host.needs import version_key

log = logging.getLogger(__name__)
Runner = Callable[..., subp.Result]


class LivepatchError(Exception):
    """A live patch could not be loaded or unloaded; says why. ``partial``:
    it may be half in place (a revert must follow)."""

    def __init__(self, message: str, partial: bool = False) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass(frozen=True)
class Applied:
    provider: str
    patch_id: str
    loaded_by_us: bool  # False: it was loaded already; a revert leaves it alone
    covered_until: date | None = None


class Provider(Protocol):
    name: str
    can_unload: bool  # False: a revert leaves the patch in place, and says so

    def offer(self, kernel: str) -> LiveOffer | None:
        """A patch for the running ``kernel``, or None (no provider here,
        not enabled, nothing for this kernel). Raises nothing."""

    def apply(self, offer: LiveOffer) -> Applied:
        """Load the offered patch (a loaded one is left as it is).
        Raises LivepatchError."""

    def revert(self, patch_id: str) -> None:
        """Unload a patch this agent loaded. Raises LivepatchError,
        also where the provider cannot unload."""


def _quiet(run: Runner, argv: list[str], env: Mapping[str, str] | None) -> subp.Result | None:
    """Run a status command; None when the tool is not installed."""
    try:
        return run(argv, env=env, check=False, timeout=120)
    except CommandFailed as exc:
        log.debug("%s", exc)
        return None


def parse_kpatch_list(output: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(loaded module -> state, [(installed module, kernel release)])."""
    loaded: dict[str, str] = {}
    installed: list[tuple[str, str]] = []
    section = ""
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("Loaded patch modules"):
            section = "loaded"
        elif line.startswith("Installed patch modules"):
            section = "installed"
        elif section == "loaded" and (m := re.match(r"^(\S+) \[(.+)\]$", line)):
            loaded[m.group(1)] = m.group(2)
        elif section == "installed" and (m := re.match(r"^(\S+) \((\S+)\)$", line)):
            installed.append((m.group(1), m.group(2)))
    return loaded, installed


class Kpatch:
    name = "kpatch"
    can_unload = True

    def __init__(self, run: Runner = subp.run, env: Mapping[str, str] | None = None) -> None:
        self._run = run
        self._env = env

    def _list(self) -> tuple[dict[str, str], list[tuple[str, str]]] | None:
        done = _quiet(self._run, ["kpatch", "list"], self._env)
        if done is None or done.returncode != 0:
            return None
        return parse_kpatch_list(done.stdout)

    def offer(self, kernel: str) -> LiveOffer | None:
        listed = self._list()
        if listed is None:
            return None
        loaded, installed = listed
        names = [name for name, release in installed if release == kernel]
        names += [name for name, state in loaded.items() if state == "enabled"]
        if not names:
            return None
        # Cumulative patches: the newest one carries every fix before it.
        best = max(set(names), key=version_key)
        return LiveOffer(self.name, best, loaded=loaded.get(best) == "enabled")

    def apply(self, offer: LiveOffer) -> Applied:
        listed = self._list()
        if listed is not None and listed[0].get(offer.patch_id) == "enabled":
            return Applied(self.name, offer.patch_id, loaded_by_us=False)
        try:
            self._run(["kpatch", "load", offer.patch_id], env=self._env, timeout=300)
        except CommandFailed as exc:
            raise LivepatchError(f"kpatch could not load {offer.patch_id}: {exc}") from None
        listed = self._list()
        state = listed[0].get(offer.patch_id, "not loaded") if listed else "unknown"
        if state != "enabled":
            raise LivepatchError(f"kpatch loaded {offer.patch_id} but it is {state}",
                                 partial=state != "not loaded")  # fmt: skip
        return Applied(self.name, offer.patch_id, loaded_by_us=True)

    def revert(self, patch_id: str) -> None:
        listed = self._list()
        if listed is not None and patch_id not in listed[0]:
            return  # not loaded (any more): a rerun after a crash
        try:
            self._run(["kpatch", "unload", patch_id], env=self._env, timeout=300)
        except CommandFailed as exc:
            raise LivepatchError(f"kpatch could not unload {patch_id}: {exc}") from None
        listed = self._list()
        if listed is None or patch_id in listed[0]:
            raise LivepatchError(f"kpatch unload {patch_id} left it loaded")


COVERING = ("applied", "unapplied")  # a patch exists for this kernel (unapplied: not yet)


def running_entry(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The running kernel's entry of `canonical-livepatch status --format json`."""
    entries = doc.get("Status") or []
    return next((e for e in entries if isinstance(e, dict) and e.get("Running")), None)


def _date(text: object) -> date | None:
    try:
        return date.fromisoformat(str(text)[:10]) if text else None
    except ValueError:
        return None


class CanonicalLivepatch:
    name = "canonical-livepatch"
    can_unload = False

    def __init__(self, run: Runner = subp.run, env: Mapping[str, str] | None = None) -> None:
        self._run = run
        self._env = env

    def _status(self) -> Mapping[str, Any] | None:
        done = _quiet(self._run, ["canonical-livepatch", "status", "--format", "json"], self._env)
        if done is None or done.returncode != 0:
            return None
        try:
            doc = json.loads(done.stdout)
        except json.JSONDecodeError:
            log.warning("canonical-livepatch status printed no JSON: %.200s", done.stdout)
            return None
        return running_entry(doc) if isinstance(doc, dict) else None

    def offer(self, kernel: str) -> LiveOffer | None:
        entry = self._status()
        if entry is None:
            return None
        patch = entry.get("Livepatch") or {}
        if entry.get("Supported") != "supported" or patch.get("CheckState") != "checked":
            return None
        if patch.get("State") not in COVERING:
            return None
        return LiveOffer(
            self.name, str(patch.get("Version") or "pending"),
            loaded=patch.get("State") == "applied",
            covered_until=_date(entry.get("UpgradeRequiredDate")),
        )  # fmt: skip

    def apply(self, offer: LiveOffer) -> Applied:
        entry = self._status()
        state = ((entry or {}).get("Livepatch") or {}).get("State")
        ours = state != "applied"
        if ours:
            try:
                self._run(["canonical-livepatch", "refresh"], env=self._env, timeout=600)
            except CommandFailed as exc:
                raise LivepatchError(f"canonical-livepatch refresh failed: {exc}") from None
            entry = self._status()
        patch = (entry or {}).get("Livepatch") or {}
        if patch.get("State") != "applied":
            raise LivepatchError(
                f"canonical-livepatch did not apply a patch (state {patch.get('State', '?')})"
            )
        return Applied(
            self.name, str(patch.get("Version") or offer.patch_id), loaded_by_us=ours,
            covered_until=_date((entry or {}).get("UpgradeRequiredDate")),
        )  # fmt: skip

    def revert(self, patch_id: str) -> None:
        raise LivepatchError(
            f"canonical-livepatch cannot unload a live patch ({patch_id} stays applied "
            "until the next reboot)"
        )


def find_offer(providers: Sequence[Provider], kernel: str) -> LiveOffer | None:
    """The first provider's patch for ``kernel``, or None."""
    for provider in providers:
        offer = provider.offer(kernel)
        if offer is not None:
            return offer
    return None


def provider_named(providers: Sequence[Provider], name: str) -> Provider:
    """Raises LivepatchError when no provider has that name here."""
    for provider in providers:
        if provider.name == name:
            return provider
    raise LivepatchError(f"no live-patch provider {name!r} on this agent")
