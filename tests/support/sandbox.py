"""`HostSandbox`: a throwaway copy-on-write copy of this machine, for tests.

Tests of the agent must run the real apt and dpkg, install real `.deb`s,
write real files under /etc, and start the agent as a daemon, without
touching the machine the tests run on. A `HostSandbox` gives each test a
"host" that looks exactly like this machine (same packages, same /work/main
and its .venv) but where every write lands in a temporary directory.

How it works
------------
1. A holder process is started with
   `unshare --mount --pid --uts --ipc [--net] --fork --kill-child -- python _sandbox_init.py`.
   Its child (`_sandbox_init.py`) is PID 1 of a new PID namespace and lives
   in a new, private mount namespace (and UTS and IPC, and with
   `private_network=True` a network namespace with only loopback, up). It
   reaps orphans, sets the hostname, and exits when the test process closes
   its stdin pipe or dies; when PID 1 exits the kernel kills every process
   in the namespace, and the mount namespace with everything mounted in it
   disappears with its last process. That is the cleanup that cannot be
   skipped, even when pytest is SIGKILLed.
2. Inside that mount namespace (`nsenter --target PID --mount ...`), and
   only there, an overlayfs is mounted on `<state>/root`: lowerdir is the
   real `/` (read-only to the overlay), upperdir and workdir are
   `<state>/upper` and `<state>/work` in a temporary directory on disk. Then,
   on top of it: a new procfs (for the new PID namespace) with /proc/sys and
   /proc/sysrq-trigger read-only, a read-only sysfs, /dev bound recursively
   from the machine with a private /dev/shm, and private tmpfs on /tmp and
   /run. The machine's mount table never changes: `mount` on the machine
   shows nothing, before, during or after.
3. Commands run with `nsenter --target PID --mount --pid --uts --ipc [--net]
   --root --wd -- chroot <state>/root argv...`, each in its own process
   group so a timeout kills the command and its children, not just
   `nsenter`. Several commands and background daemons (`spawn`) share one
   sandbox. (`--root`: entering a mount namespace resets the root to the
   namespace's; taking PID 1's instead lets a test that itself runs
   chrooted, e.g. in another sandbox, use sandboxes too.)
4. The test reads and writes sandbox files through `path()`, which is
   `/proc/PID/root/<state>/root/...`: the kernel resolves it through the
   sandbox's mount namespace, where the overlay is mounted.

Why this way: mounting the overlay in the machine's namespace and bind
mounting into it would leave mounts behind whenever cleanup does not run;
a namespace per command (`unshare ... chroot` each time) cannot keep a
daemon and several commands in the same host. A long-lived PID 1 of our
own plus `nsenter` gives both, and its death takes everything with it.

Fallbacks and limits
--------------------
- If the overlay refuses an upperdir on the temporary directory's
  filesystem (it does when that filesystem is itself an overlay, as in most
  containers: "not supported as upperdir"), upper and work go on a tmpfs
  mounted inside the namespace instead (`upper_on_tmpfs` is then True; the
  changes live in RAM and vanish with the sandbox). An overlay as *lower*
  dir works. `volatile` (no fsync on the upper layer; dpkg fsyncs a lot) is
  used when the kernel knows it.
- A project checkout or venv under /tmp or /run (hidden by the private
  tmpfs there) is bound in read-only at the same path, so the agent under
  test runs from a CI clone anywhere.
- The lower layer is one filesystem: mounts under `/` on the machine (other
  than those recreated above) are not visible in the sandbox, they show as
  their empty mount points. On a machine where /work or /home is a separate
  filesystem, bind it in with `bind()`.
- The package managers' state is the same for the whole test run: a
  snapshot of STABLE_DIRS (/var/lib/dpkg, /var/lib/apt but its lists,
  /etc/apt, /var/lib/rpm, /var/lib/dnf) taken when the process starts its
  first sandbox is the lower layer of an overlay of its own on each of
  those directories, so a package installed on the machine meanwhile
  changes no test's view of what is installed. (Not one more lower layer
  of the root overlay: the kernel refuses lower layers that overlap, and
  the snapshot lies under `/`.) `upper_changes` includes their changes.
  The rest of the lower layer is live: what other processes change on the
  machine while the sandbox runs may show through (overlayfs calls this
  undefined; in practice reads see the new content).
- `path()` resolves absolute symlinks against the machine's root, not the
  sandbox's: use it for regular files and directories.
- This is test isolation, not a security boundary: processes run as real
  root, /dev is the machine's /dev.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any, Literal

from tests.support.scratch import until_exit
from tests.support.waiting import scaled

INIT_SCRIPT = Path(__file__).with_name("_sandbox_init.py")
PROJECT_ROOT = Path(__file__).resolve().parents[2]

#: The environment every command in the sandbox starts from: not the test
#: process's (no VIRTUAL_ENV, PYTEST_*, or the developer's locale).
DEFAULT_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "TERM": "dumb",
    # The project's own code runs in the sandbox from the checkout: bytecode
    # it compiled would land in the copy's checkout, and read as a change
    # the agent made to its host.
    "PYTHONDONTWRITEBYTECODE": "1",
}

#: Programs the sandbox needs on the machine (util-linux and coreutils).
REQUIRED_TOOLS = ("unshare", "nsenter", "mount", "chroot")

ChangeKind = Literal["written", "deleted", "dir", "opaque-dir"]
"""What `upper_changes` reports for a path: a file, symlink or special file
created or modified ("written"), a lower file removed ("deleted", an overlay
whiteout), a directory created or copied up ("dir", only with include_dirs),
or a directory whose lower content was hidden (removed and re-created)."""

_File = int | IO[Any] | None


class SandboxError(RuntimeError):
    """The sandbox could not be started, set up or cleaned up."""


class SandboxCommandError(subprocess.CalledProcessError):
    """A command run with `check=True` inside the sandbox exited non-zero.

    Unlike CalledProcessError, its message carries the end of stdout and
    stderr: an apt or dpkg failure is unreadable without them.
    """

    def __str__(self) -> str:
        parts = [super().__str__()]
        for label, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            if text:
                parts.append(f"--- {label} (last 3000 chars) ---\n{str(text)[-3000:]}")
        return "\n".join(parts)


class SandboxProcess(subprocess.Popen[bytes]):
    """A background process inside the sandbox (see `HostSandbox.spawn`).

    `pid` is the host-side `nsenter`, which waits for the real process and
    exits with its status but forwards no signal. So `send_signal`,
    `terminate` and `kill` signal the whole process group: `nsenter` and the
    process inside, and its children that stayed in the group.
    """

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@functools.cache
def _tool(name: str) -> str:
    found = shutil.which(name, path=DEFAULT_ENV["PATH"])
    if found is None:
        raise SandboxError(f"{name} is not installed (util-linux / coreutils)")
    return found


class HostSandbox:
    """A throwaway copy-on-write "host" (see the module docstring).

    Use as a context manager; `stop()` (also run by `__exit__`, and by
    `start()` when it fails half-way) kills everything inside and removes
    the state directory.

    private_network: own network namespace with only loopback (up). Off by
        default: the sandbox then shares the machine's network, so an agent
        inside reaches a controller listening on the machine's 127.0.0.1.
    hostname: hostname inside (own UTS namespace); default the machine's.
    machine_id: written to /etc/machine-id inside, to give several sandboxes
        distinct host identities; default the machine's.
    base_dir: where the state directory is created (default: TMPDIR).
    """

    def __init__(
        self,
        *,
        private_network: bool = False,
        hostname: str | None = None,
        machine_id: str | None = None,
        base_dir: str | Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.private_network = private_network
        self.hostname = hostname
        self.machine_id = machine_id
        self.base_dir = base_dir
        self.start_timeout = start_timeout
        self.upper_on_tmpfs = False
        self.volatile = False
        self._stable: list[tuple[str, Path]] = []  # (directory, its upper layer)
        self._state: Path | None = None
        self._holder: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._mnt_ns: str | None = None
        self._procs: list[SandboxProcess] = []

    # ----------------------------------------------------------------- life

    def __enter__(self) -> HostSandbox:
        if self._holder is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> HostSandbox:
        """Create the namespaces and mounts; returns self."""
        if self._holder is not None:
            raise SandboxError("sandbox already started")
        state = Path(tempfile.mkdtemp(prefix="fp-sandbox-", dir=self.base_dir))
        if any(c in str(state) for c in ",:\\ "):
            shutil.rmtree(state)
            raise SandboxError(f"state dir {state} has a character overlayfs options cannot take")
        self._state = state
        _sweep_stale(state.parent)
        for name in ("upper", "work", "root", "tmpfs"):
            (state / name).mkdir()
        try:
            self._start_init()
            self._mount_root()
            self._mount_system()
            self._bind_project()
            if self.machine_id is not None:
                self.path("/etc/machine-id").write_text(self.machine_id.strip() + "\n")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every process of the sandbox, drop its mounts, remove its state.

        Idempotent. Raises SandboxError if a process of the sandbox is still
        alive afterwards (a leak the caller must hear about).
        """
        holder, self._holder = self._holder, None
        pid, self._pid = self._pid, None
        if holder is not None:
            if pid is not None:
                # PID 1 dying makes the kernel SIGKILL the whole namespace.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if holder.stdin is not None:
                holder.stdin.close()
            try:
                holder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _killpg(holder.pid)
                holder.wait(timeout=30)
            if holder.stdout is not None:
                holder.stdout.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs.clear()
        leaked = self._processes_in_mount_ns()
        if self._state is not None:
            shutil.rmtree(self._state, ignore_errors=True)
            self._state = None
        if leaked:
            raise SandboxError(f"processes still in the sandbox after stop: {leaked}")
        self._mnt_ns = None

    @property
    def running(self) -> bool:
        return self._pid is not None

    @property
    def pid(self) -> int:
        """Host PID of the sandbox's PID 1 (the `nsenter --target`)."""
        if self._pid is None:
            raise SandboxError("sandbox is not running")
        return self._pid

    @property
    def state_dir(self) -> Path:
        """The temporary directory holding upper, work and the root mount point."""
        if self._state is None:
            raise SandboxError("sandbox is not running")
        return self._state

    @property
    def root(self) -> PurePosixPath:
        """Where the sandbox's / is mounted, in the sandbox's mount namespace."""
        return PurePosixPath(self.state_dir / "root")

    # ------------------------------------------------------------- commands

    def command(self, argv: Sequence[str], *, cwd: str | None = None) -> list[str]:
        """The host argv that runs `argv` inside the sandbox (for callers that
        manage the process themselves, e.g. with asyncio)."""
        if not argv:
            raise ValueError("empty argv")
        inner = [str(a) for a in argv]
        if cwd is not None:
            inner = ["env", f"--chdir={cwd}", "--", *inner]
        return [*self._enter(), _tool("chroot"), str(self.root), *inner]

    def environment(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """DEFAULT_ENV updated with `env`: what commands inside start with."""
        return {**DEFAULT_ENV, **(env or {})}

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
        input: str | None = None,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the sandbox and wait; output is captured as text.

        env is added to DEFAULT_ENV (the test's environment is not passed).
        On timeout the command and its process group are killed and
        subprocess.TimeoutExpired is raised; with check, a non-zero exit
        raises SandboxCommandError carrying stdout and stderr. run() waits
        for stdout and stderr to close: a command that leaves a daemon
        holding them (`setsid -f`, `daemon &`) blocks until the timeout;
        start those with spawn(), or redirect their output inside.
        """
        args = [str(a) for a in argv]
        proc = subprocess.Popen(
            self.command(args, cwd=cwd),
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=self.environment(env),
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                # A process that left the group still holds our pipes.
                out, err = "", ""
                for pipe in (proc.stdin, proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
                proc.wait()
            raise subprocess.TimeoutExpired(args, timeout, out, err) from None
        except BaseException:
            _killpg(proc.pid)
            proc.wait()
            raise
        if check and proc.returncode != 0:
            raise SandboxCommandError(proc.returncode, args, out, err)
        return subprocess.CompletedProcess(args, proc.returncode, out, err)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: _File = subprocess.DEVNULL,
        stdout: _File = None,
        stderr: _File = None,
    ) -> SandboxProcess:
        """Start a long-running process (a daemon) inside the sandbox.

        Returns at once. The result's `pid` is the host-side `nsenter`; the
        process itself is among `pids()`. It is killed by `kill_all()` and
        `stop()` at the latest; `terminate()`/`kill()` on the result signal it
        and its process group. stdout/stderr default to the test process's
        own (captured by pytest); pass a file for a log.
        """
        proc = SandboxProcess(
            self.command([str(a) for a in argv], cwd=cwd),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=self.environment(env),
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Host PIDs of every process in the sandbox but its PID 1."""
        return [p for p in self._processes_in_pid_ns() if p != self.pid]

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL every process in the sandbox except PID 1 and wait until
        they are gone; the sandbox stays usable."""
        deadline = time.monotonic() + scaled(timeout)
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise SandboxError(f"processes survive SIGKILL in the sandbox: {pids}")
            time.sleep(0.01)
        for proc in self._procs:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        self._procs.clear()

    # ---------------------------------------------------------------- files

    def path(self, p: str | PurePosixPath) -> Path:
        """The host path through which the test reads or writes sandbox file p
        (absolute, as seen inside). Valid while the sandbox runs."""
        inside = PurePosixPath(p)
        if not inside.is_absolute():
            raise ValueError(f"sandbox path must be absolute: {p}")
        return Path(f"/proc/{self.pid}/root") / str(self.root).lstrip("/") / str(inside)[1:]

    def upper_changes(self, *, include_dirs: bool = False) -> dict[str, ChangeKind]:
        """Paths (as seen inside) that differ from the machine, from the
        overlay's upper layer. Private tmpfs (/tmp, /run, /dev/shm) and /proc
        are not part of it. Call while the sandbox runs."""
        changes: dict[str, ChangeKind] = {}
        self._walk_upper(self._upper_view(), "", include_dirs, changes)
        for directory, upper in self._stable:
            view = upper
            if self.upper_on_tmpfs:
                view = Path(f"/proc/{self.pid}/root") / str(upper)[1:]
            self._walk_upper(view, directory, include_dirs, changes)
        return dict(sorted(changes.items()))

    def bind(self, source: str | Path, target: str, *, read_only: bool = True) -> None:
        """Bind mount a machine path (file or directory) at `target` inside,
        e.g. a package repository or a directory several sandboxes share.
        Writes through a read-write bind reach the machine."""
        src = Path(source).resolve(strict=True)
        if src.is_dir():
            self.run(["mkdir", "-p", target])
        else:
            self.run(["mkdir", "-p", str(PurePosixPath(target).parent)])
            self.run(["touch", target])
        real = self.run(["realpath", "-e", target]).stdout.strip()
        options = ["-o", "ro"] if read_only else []
        self._ns_run(["mount", "--bind", *options, str(src), f"{self.root}{real}"])

    # ------------------------------------------------------------ internals

    def _enter(self) -> list[str]:
        namespaces = ["--mount", "--pid", "--uts", "--ipc"]
        if self.private_network:
            namespaces.append("--net")
        # --root/--wd (no value: those of the target): entering a mount
        # namespace resets the root to the namespace's; the target's is the
        # same, unless this test process itself runs chrooted (a sandbox in
        # a sandbox, some CI containers).
        return [_tool("nsenter"), f"--target={self.pid}", *namespaces, "--root", "--wd", "--"]

    def _ns_run(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run argv in the sandbox's namespaces but *not* chrooted: for mounts."""
        done = subprocess.run(
            [*self._enter(), *argv],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=DEFAULT_ENV,
            timeout=60,
            check=False,
        )
        if check and done.returncode != 0:
            raise SandboxError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
        return done

    def _start_init(self) -> None:
        state = self.state_dir
        unshare = [_tool("unshare"), "--mount", "--pid", "--uts", "--ipc", "--fork"]
        unshare += ["--kill-child", "--propagation", "private"]
        init_args = ["--state", str(state)]
        if self.private_network:
            unshare.append("--net")
            init_args.append("--loopback")
        if self.hostname is not None:
            init_args += ["--hostname", self.hostname]
        log = state / "init.log"
        with log.open("wb") as log_file:
            self._holder = subprocess.Popen(
                [*unshare, "--", sys.executable, "-I", "-S", str(INIT_SCRIPT), *init_args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                env=DEFAULT_ENV,
                cwd="/",
                start_new_session=True,
            )
        stdout = self._holder.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], self.start_timeout)
        line = stdout.readline().decode(errors="replace") if ready else ""
        if not line.startswith("ready "):
            self._holder.poll()
            why = log.read_text(errors="replace").strip() or f"exit {self._holder.returncode}"
            if not ready:
                why = f"no answer in {self.start_timeout:.0f}s; {why}"
            raise SandboxError(f"sandbox init did not start: {why}")
        self._pid = int(line.split()[1])
        self._mnt_ns = os.readlink(f"/proc/{self._pid}/ns/mnt")
        (state / "init.pid").write_text(f"{self._pid} {os.readlink('/proc/self/ns/pid')}\n")

    def _mount_root(self) -> None:
        state, root = self.state_dir, self.root
        errors: list[str] = []
        for on_tmpfs in (False, True):
            if on_tmpfs:
                base = state / "tmpfs"
                self._ns_run(["mount", "-t", "tmpfs", "-o", "mode=0700", "fp-sandbox", str(base)])
                self._ns_run(["mkdir", str(base / "upper"), str(base / "work")])
                self.upper_on_tmpfs = True
            else:
                base = state
            for volatile in (True, False):
                options = f"lowerdir=/,upperdir={base}/upper,workdir={base}/work"
                if volatile:
                    options += ",volatile"
                done = self._ns_run(
                    ["mount", "-t", "overlay", "-o", options, "fp-sandbox", str(root)], check=False
                )
                if done.returncode == 0:
                    self.volatile = volatile
                    self._mount_stable(base, volatile)
                    return
                errors.append(f"[{options}] {done.stderr.strip()}")
        raise SandboxError("overlay mount of / refused: " + " | ".join(errors))

    def _mount_stable(self, base: Path, volatile: bool) -> None:
        """Over each of STABLE_DIRS, an overlay of its own whose lower layer
        is the run's snapshot (`stable_base`), its upper beside the root's."""
        snapshot = stable_base(self.base_dir)
        self._stable.clear()
        for index, directory in enumerate(STABLE_DIRS):
            lower = snapshot / directory.lstrip("/")
            if not lower.is_dir():
                continue
            upper, work = (
                base / "stable" / str(index) / "upper",
                base / "stable" / str(index) / "work",
            )
            self._ns_run(["mkdir", "-p", str(upper), str(work)])
            options = f"lowerdir={lower},upperdir={upper},workdir={work}"
            if volatile:
                options += ",volatile"
            target = f"{self.root}{directory}"
            self._ns_run(["mount", "-t", "overlay", "-o", options, "fp-stable", target])
            self._stable.append((directory, upper))

    def _mount_system(self) -> None:
        r = self.root
        mounts: list[list[str]] = [
            ["-t", "proc", "-o", "nosuid,nodev,noexec", "proc", f"{r}/proc"],
            # Sysctls and sysrq would reach the machine's kernel: read-only.
            ["--bind", "-o", "ro", f"{r}/proc/sys", f"{r}/proc/sys"],
            ["-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", f"{r}/sys"],
            ["--rbind", "/dev", f"{r}/dev"],
            ["-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "shm", f"{r}/dev/shm"],
            ["-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "tmpfs", f"{r}/tmp"],
            ["-t", "tmpfs", "-o", "nosuid,nodev,mode=0755", "tmpfs", f"{r}/run"],
        ]
        if not any(self.state_dir.is_relative_to(d) for d in ("/tmp", "/run", "/dev")):
            # Hide our own upper dir from the sandbox (looking it up through
            # the overlay would be an "overlapping layers" ELOOP anyway).
            mounts.append(
                ["-t", "tmpfs", "-o", "ro,size=4k,mode=0755", "hidden", f"{r}{self.state_dir}"]
            )
        for args in mounts:
            self._ns_run(["mount", *args])
            if args[-1] == f"{r}/proc" and self.path("/proc/sysrq-trigger").exists():
                sysrq = f"{r}/proc/sysrq-trigger"
                self._ns_run(["mount", "--bind", "-o", "ro", sysrq, sysrq])
        self._ns_run(["mkdir", "-m", "1777", f"{r}/run/lock"])

    def _bind_project(self) -> None:
        """Keep the project and its Python visible inside: a checkout or venv
        under /tmp or /run (a CI clone, say) would otherwise be hidden by the
        sandbox's private tmpfs there. Read-only; nothing writes to them."""
        needed = {PROJECT_ROOT, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
        for path in sorted(needed):
            if any(path.is_relative_to(d) for d in ("/tmp", "/run")):
                self.bind(path, str(path))

    def _upper_view(self) -> Path:
        if self.upper_on_tmpfs:
            return Path(f"/proc/{self.pid}/root") / str(self.state_dir / "tmpfs/upper")[1:]
        return self.state_dir / "upper"

    @classmethod
    def _walk_upper(
        cls, directory: Path, inside: str, include_dirs: bool, out: dict[str, ChangeKind]
    ) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                name = f"{inside}/{entry.name}"
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    if _is_opaque(entry.path):
                        out[name] = "opaque-dir"
                    elif include_dirs:
                        out[name] = "dir"
                    cls._walk_upper(Path(entry.path), name, include_dirs, out)
                elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    out[name] = "deleted"
                else:
                    out[name] = "written"

    def _processes_in_pid_ns(self) -> list[int]:
        target = os.readlink(f"/proc/{self.pid}/ns/pid")
        return _processes_with(lambda pid: os.readlink(f"/proc/{pid}/ns/pid") == target)

    def _processes_in_mount_ns(self) -> list[int]:
        target = self._mnt_ns
        if target is None:
            return []
        return _processes_with(lambda pid: os.readlink(f"/proc/{pid}/ns/mnt") == target)


# The package managers' state, the same for a test run (module docstring).
STABLE_DIRS = ("/var/lib/dpkg", "/var/lib/apt", "/etc/apt", "/var/lib/rpm", "/var/lib/dnf")
# Big, and every test brings its own sources: left empty in the snapshot.
_STABLE_EMPTY = ("/var/lib/apt/lists",)


@functools.cache
def stable_base(base_dir: str | Path | None) -> Path:
    """The snapshot of STABLE_DIRS, taken once per test process (the first
    sandbox's start) and removed at exit."""
    snapshot = until_exit("fp-base-", base_dir)
    for source in STABLE_DIRS:
        if not Path(source).is_dir():
            continue
        target = snapshot / source.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", "--", source, str(target)], check=True,
                       capture_output=True, timeout=300)  # fmt: skip
    for emptied in _STABLE_EMPTY:
        path = snapshot / emptied.lstrip("/")
        if path.is_dir():
            shutil.rmtree(path)
            (path / "partial").mkdir(parents=True)
    return snapshot


def _sweep_stale(base: Path) -> None:
    """Remove the state dirs of sandboxes whose test process died without
    stop() (SIGKILL, OOM): their PID 1 exited with it (see _sandbox_init),
    so nothing is mounted there any more; only the files are left."""
    our_pid_ns = os.readlink("/proc/self/ns/pid")
    for candidate in base.glob("fp-sandbox-*"):
        try:
            pid_text, pid_ns = (candidate / "init.pid").read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue  # starting right now, or not ours
        if pid_ns != our_pid_ns:
            continue  # its PIDs are not ours to check (a shared /tmp, a nested sandbox)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            cmdline = []
        if os.fsencode(candidate) not in cmdline:
            shutil.rmtree(candidate, ignore_errors=True)


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _processes_with(predicate: Callable[[int], bool]) -> list[int]:
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if predicate(int(entry)):
                found.append(int(entry))
        except OSError:
            continue  # exited meanwhile, or a zombie without namespaces
    return found


@functools.cache
def sandbox_available() -> str | None:
    """None when a HostSandbox works here, else why not (for pytest.skip).

    Checks the platform, root, the tools, then starts and stops a real
    sandbox once per process (about 0.1 s), so that "overlay of / refused"
    or "namespaces not permitted" become a skip reason, not a failure.
    """
    if sys.platform != "linux":
        return "host sandbox needs Linux (namespaces and overlayfs)"
    if os.geteuid() != 0:
        return "host sandbox needs root (mount/PID namespaces and overlayfs)"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t, path=DEFAULT_ENV["PATH"]) is None]
    if missing:
        return f"host sandbox needs {', '.join(missing)} (util-linux, coreutils)"
    try:
        with HostSandbox() as sandbox:
            sandbox.run(["true"], timeout=30)
    except (SandboxError, OSError, subprocess.SubprocessError) as exc:
        return f"host sandbox cannot start here: {exc}"
    return None
