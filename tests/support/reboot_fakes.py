"""Stand-ins for what cannot run in a test process: a machine that reboots
(a new boot id, maybe a new kernel), a boot loader and a kernel live-patch
provider. They sit behind the same interfaces as the real ones
(`agent.reboot.Rebooter`, `agent.bootloader.Bootloader`,
`agent.livepatch.Provider`); the real ones are tested through their
command-line contract in tests/unit/test_livepatch.py and
tests/unit/test_reboot*.py."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import timedelta

from agent.boot.bootloader import BootloaderError
from agent.boot.decide import LiveOffer, Reason
from agent.boot.livepatch import Applied, LivepatchError
from agent.errors import CommandFailed

_ids = itertools.count(1)


def new_boot_id() -> str:
    return f"{next(_ids):08d}-0000-4000-8000-000000000000"


@dataclass
class FakeMachine:
    """The host's boot: its id, the running kernel, the installed ones, what
    says it needs a reboot, and the kernel it would boot next."""

    kernel: str = "6.1.0-13-amd64"
    installed: list[str] = field(default_factory=lambda: ["6.1.0-13-amd64"])
    reasons: list[Reason] = field(default_factory=list)
    boot_id: str = field(default_factory=new_boot_id)
    next_kernel: str = ""  # "" = the newest installed
    boots: int = 0

    def reboot(self) -> None:
        """What a real reboot does to what the agent can see."""
        self.boots += 1
        self.boot_id = new_boot_id()
        self.kernel = self.next_kernel or max(self.installed)
        self.next_kernel = ""
        self.reasons = []

    def needs_kernel(self, release: str) -> None:
        """A kernel update was installed: newer kernel, reboot-required."""
        self.installed.append(release)
        self.reasons.append(Reason("kernel", f"kernel {release} is installed", kernel=True))


class FakeRebooter:
    """Reboots the fake machine in process (``reboots=True``), or asks and
    nothing happens (a reboot that never comes), or refuses."""

    def __init__(self, machine: FakeMachine, reboots: bool = True, refuse: bool = False) -> None:
        self.machine = machine
        self.reboots = reboots
        self.refuse = refuse
        self.asked = 0
        self.waited: list[timedelta] = []

    def reboot(self) -> None:
        self.asked += 1
        if self.refuse:
            raise CommandFailed(["systemctl", "reboot"], 1, "", "Operation inhibited")

    def wait(self, timeout: timedelta) -> None:
        self.waited.append(timeout)
        if self.reboots:
            self.machine.reboot()


class FakeBootloader:
    name = "fake"

    def __init__(self, machine: FakeMachine, error: str = "") -> None:
        self.machine = machine
        self.error = error
        self.defaults: list[str] = []

    def set_default(self, kernel: str) -> str:
        if self.error:
            raise BootloaderError(self.error)
        self.defaults.append(kernel)
        self.machine.next_kernel = kernel
        return f"fake boot loader boots {kernel} next"


class FakeProvider:
    """A live-patch provider with one patch for the running kernel."""

    def __init__(
        self, name: str = "kpatch", patch: str = "kpatch_6_1_0_13_1", can_unload: bool = True,
        fail: str = "",
    ) -> None:  # fmt: skip
        self.name = name
        self.patch = patch
        self.can_unload = can_unload
        self.fail = fail
        self.loaded: set[str] = set()
        self.calls: list[str] = []

    def offer(self, kernel: str) -> LiveOffer | None:
        return (
            LiveOffer(self.name, self.patch, loaded=self.patch in self.loaded)
            if self.patch
            else None
        )

    def apply(self, offer: LiveOffer) -> Applied:
        self.calls.append(f"load {offer.patch_id}")
        if self.fail:
            raise LivepatchError(self.fail)
        ours = offer.patch_id not in self.loaded
        self.loaded.add(offer.patch_id)
        return Applied(self.name, offer.patch_id, loaded_by_us=ours)

    def revert(self, patch_id: str) -> None:
        self.calls.append(f"unload {patch_id}")
        self.loaded.discard(patch_id)
