"""PID 1 of a `HostSandbox`: started by `unshare`, never imported.

Why a program of our own rather than `sleep infinity`:

- PID 1 of a PID namespace must reap orphans (a daemon that double-forks, a
  command whose `nsenter` parent was killed), or they stay zombies and a test
  that waits for "process gone" waits forever. This loop reaps them.
- It ties the sandbox's life to the test process: its stdin is a pipe whose
  only writer is the test process. When that process dies, even by SIGKILL,
  the pipe reads EOF, this program exits, and the kernel kills everything
  left in the PID namespace; the mount namespace (and the overlay mounted in
  it) goes with the last process. Nothing is left behind on the machine.
- It sets what must be set from inside the new namespaces before anything
  else runs: the hostname (UTS namespace) and, with a private network
  namespace, loopback up (no dependency on iproute2).

Protocol: after setup it writes one line `ready <pid>` to stdout, where
<pid> is its PID as the machine (the initial PID namespace) sees it, then
never writes to stdout again. Errors go to stderr, with a non-zero exit.

Usage: python -I -S _sandbox_init.py --state DIR [--hostname NAME] [--loopback]
(DIR, the sandbox's state directory, is not used here: it is in our command
line so that a later sandbox can tell a live state directory from one left
by a test process that was killed.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import struct
import sys

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    """`ip link set lo up`, with two ioctls."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def reap() -> None:
    """Collect every child that has exited, without blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str]) -> int:
    args = list(argv)
    if "--hostname" in args:
        socket.sethostname(args[args.index("--hostname") + 1])
    if "--loopback" in args:
        loopback_up()

    # SIGCHLD wakes the select() below through the wakeup fd, so no exit is
    # missed between a reap and the next wait.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda _sig, _frame: sys.exit(0))

    # /proc here is still the machine's procfs (the sandbox's own is mounted
    # later, inside its root), so /proc/self names our PID on the machine.
    host_pid = os.readlink("/proc/self")
    sys.stdout.write(f"ready {host_pid}\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)

    while True:
        readable, _, _ = select.select([0, wake_r], [], [])
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        reap()
        if 0 in readable and not os.read(0, 4096):
            return 0  # the test process closed the pipe or died


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
