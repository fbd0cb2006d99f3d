"""A sandboxed host that can "reboot": for end-to-end tests of the agent's
reboot path with real apt, a real controller and the real agent.

What a reboot does to what the agent sees is played by a test double: the
agent's reboot command (agent.toml [agent] reboot_command) is
/usr/local/sbin/fp-reboot, which records the call and, like a shutdown,
SIGTERMs the agent; once the agent is gone the machine "comes back" with a
new boot id (agent.toml boot_id_file) running the newest kernel in /boot
(agent.toml kernel_release_file), or the one GRUB's saved entry names.
/run is emptied as a boot empties it. The test then starts the agent again,
as systemd would at boot.

Kernels are .debs shipping /boot/vmlinuz-RELEASE (`kernel_deb`); the agent
finds them as it finds real ones.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.apthost import STATE, AptHost
from tests.support.debrepo import DebFile, DebSpec
from tests.support.waiting import scaled

TEST_DIR = "/var/lib/fp-test"
BOOT_ID = f"{TEST_DIR}/boot_id"
OSRELEASE = f"{TEST_DIR}/osrelease"
REBOOTS = f"{TEST_DIR}/reboots.log"
OLD_KERNEL = "6.1.0-13-fp"
NEW_KERNEL = "6.1.0-99-fp"

FP_REBOOT = f"""#!/bin/sh
# Stand-in for `systemctl reboot` (see tests/support/reboot_host.py).
echo "asked $(cat {BOOT_ID}) $*" >> {REBOOTS}
agent=$PPID
(
    kill -TERM "$agent"
    while kill -0 "$agent" 2>/dev/null; do sleep 0.05; done
    saved=$(sed -n 's/^saved_entry=.*>gnulinux-\\(.*\\)-advanced-fp$/\\1/p' \
        /boot/grub/grubenv 2>/dev/null)
    newest=$(ls /boot | sed -n 's/^vmlinuz-//p' | sort -V | tail -n 1)
    if [ -n "$saved" ] && [ -e "/boot/vmlinuz-$saved" ]; then next=$saved; else next=$newest; fi
    echo "${{next:-{OLD_KERNEL}}}" > {OSRELEASE}
    rm -rf /run/reboot-required /run/reboot-required.pkgs
    cat /proc/sys/kernel/random/uuid > {BOOT_ID}
    echo "booted $(cat {BOOT_ID}) $(cat {OSRELEASE})" >> {REBOOTS}
) >/dev/null 2>&1 &
exit 0
"""

# fp-demo --check, the host's health check, fails on the new kernel when the
# kernel package installed a marker saying so (a regression on the new kernel).
CHECK = f"""#!/bin/sh
if [ "$1" = --check ]; then
    if [ "$(cat {OSRELEASE})" = {NEW_KERNEL} ] && [ -e /etc/fp-kernel-broken ]; then
        echo "fp-demo: broken on kernel {NEW_KERNEL}" >&2; exit 1
    fi
    exit 0
fi
echo fp-demo
"""


def kernel_deb(version: str, release: str, broken: bool = False) -> DebSpec:
    files: dict[str, bytes | str | DebFile] = {f"/boot/vmlinuz-{release}": f"kernel {release}\n"}
    if broken:
        files["/etc/fp-kernel-broken"] = "yes\n"
    return DebSpec("linux-image-fp", version, files=files)


def demo_deb() -> DebSpec:
    return DebSpec("fp-demo", "1.0", files={"/usr/bin/fp-demo": DebFile(CHECK, 0o755)})


class RebootHost:
    """An AptHost whose agent reboots through fp-reboot."""

    def __init__(self, host: AptHost, reboot_timeout: str = "30s") -> None:
        self.host = host
        sandbox = host.sandbox
        sandbox.run(["mkdir", "-p", TEST_DIR, "/usr/local/sbin"])
        sandbox.path(BOOT_ID).write_text("00000000-0000-4000-8000-000000000001\n")
        sandbox.path(OSRELEASE).write_text(f"{OLD_KERNEL}\n")
        script = sandbox.path("/usr/local/sbin/fp-reboot")
        script.write_text(FP_REBOOT)
        script.chmod(0o755)
        config = sandbox.path(f"{STATE}/agent.toml")
        text = config.read_text()
        for old, new in (
            ('reboot_command = ["systemctl", "reboot"]',
             'reboot_command = ["/usr/local/sbin/fp-reboot", "--now"]'),
            ('reboot_timeout = "10m"', f'reboot_timeout = "{reboot_timeout}"'),
            ('# boot_id_file = "/proc/sys/kernel/random/boot_id"', f'boot_id_file = "{BOOT_ID}"'),
            ('# kernel_release_file = "/proc/sys/kernel/osrelease"',
             f'kernel_release_file = "{OSRELEASE}"'),
        ):  # fmt: skip
            assert old in text, old
            text = text.replace(old, new)
        config.write_text(text)

    @property
    def boot_id(self) -> str:
        return self.host.sandbox.path(BOOT_ID).read_text().strip()

    @property
    def kernel(self) -> str:
        return self.host.sandbox.path(OSRELEASE).read_text().strip()

    def reboots(self) -> list[str]:
        path = self.host.sandbox.path(REBOOTS)
        return path.read_text().splitlines() if path.exists() else []

    def wait_booted(self, count: int, timeout: float = 60) -> None:
        """Until the machine has come back from ``count`` reboots."""
        deadline = time.monotonic() + scaled(timeout)
        while sum(line.startswith("booted") for line in self.reboots()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reboot number {count}: {self.reboots()}")
            time.sleep(0.05)

    def use_grub(self) -> None:
        """A GRUB the agent can steer: grub.cfg for both kernels,
        GRUB_DEFAULT=saved, and grub-set-default / grub-editenv stand-ins
        that keep the saved entry in /boot/grub/grubenv as the real ones do."""
        sandbox = self.host.sandbox
        sandbox.run(["mkdir", "-p", "/boot/grub", "/etc/default"])
        entries = "".join(
            f"\tmenuentry 'Debian GNU/Linux, with Linux {k}' $menuentry_id_option "
            f"'gnulinux-{k}-advanced-fp' {{\n\t\tlinux\t/boot/vmlinuz-{k} ro quiet\n\t}}\n"
            for k in (NEW_KERNEL, OLD_KERNEL)
        )
        sandbox.path("/boot/grub/grub.cfg").write_text(
            "submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option "
            f"'gnulinux-advanced-fp' {{\n{entries}}}\n"
        )
        sandbox.path("/etc/default/grub").write_text("GRUB_DEFAULT=saved\n")
        tools = {
            "grub-set-default": 'echo "saved_entry=$1" > /boot/grub/grubenv',
            "grub-editenv": "cat /boot/grub/grubenv",
        }
        for name, body in tools.items():
            path = sandbox.path(f"/usr/local/sbin/{name}")
            path.write_text(f"#!/bin/sh\n{body}\n")
            path.chmod(0o755)

    def journal_steps(self, order_id: str) -> list[str]:
        record = next(o for o in self.host.status()["orders"] if o["order_id"] == order_id)
        return [s["state"] for s in record["steps"]]

    def grubenv(self) -> str:
        path: Path = self.host.sandbox.path("/boot/grub/grubenv")
        return path.read_text().strip() if path.exists() else ""
