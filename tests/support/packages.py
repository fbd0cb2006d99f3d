"""The fleetpatch .deb packages, built for tests, and what tests ask of them.

`build_debs(out, version)` runs packaging/build_debs.py exactly as `make
packages` does (the project venv's python, a subprocess), with zstd
compression: about 50 times faster than the release default (xz) and read
by the same dpkg. `built_debs(version)` caches that per test session, so
each version is built once whichever test module asks first; `agent_rpm(version)`
does the same for the agent's RPM. Under pytest-xdist the workers share one
directory for the session (tests/conftest.py names it in BUILDS_ENV) and
take turns on each build (a file lock): a version is built once for the
run, not once per worker.

`build_script()` imports packaging/build_debs.py as a module (it is a script,
not a package) for tests of its pure parts (versions).

`Dpkg` wraps the package queries a test makes inside a HostSandbox;
`SystemdContainer` boots systemd on a HostSandbox's root, for the units.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

from tests.support.sandbox import DEFAULT_ENV, HostSandbox
from tests.support.scratch import until_exit
from tests.support.waiting import scaled, stop_group

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "packaging" / "build_debs.py"
SYSTEMD_DIR = ROOT / "packaging" / "systemd"
#: Where tests bind the built packages inside a sandbox.
DEB_MOUNT = "/srv/fleetpatch-debs"


@dataclass(frozen=True)
class BuiltDebs:
    version: str  # PEP 440, as fleetpatch.__version__ reports it
    deb_version: str  # as dpkg reports it
    agent: Path
    controller: Path
    public_key: Path | None = None  # the release key they were signed with

    @property
    def directory(self) -> Path:
        return self.agent.parent


@cache
def build_script() -> ModuleType:
    """packaging/build_debs.py, imported."""
    spec = importlib.util.spec_from_file_location("fleetpatch_build_debs", BUILD_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def packaging_available() -> str | None:
    """None when packages can be built here, else why not (for pytest.skip)."""
    if shutil.which("dpkg-deb") is None:
        return "dpkg-deb is not installed (dpkg)"
    if not Path("/usr/bin/python3").is_file():
        return "/usr/bin/python3 is not installed (the packages' interpreter)"
    done = subprocess.run(
        ["/usr/bin/python3", "-c", "import venv, sys; assert sys.version_info >= (3, 11)"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0:
        return "/usr/bin/python3 is older than 3.11 or has no venv module (python3-venv)"
    return None


def next_version(version: str) -> str:
    """A PEP 440 version above `version`: its release with the last part + 1."""
    release = re.match(r"[0-9]+(\.[0-9]+)*", version)
    assert release is not None, version
    parts = release.group(0).split(".")
    parts[-1] = str(int(parts[-1]) + 1)
    return ".".join(parts)


def inside(path: Path) -> str:
    """Where a file under session_debs_root() is seen in a sandbox that
    binds it at DEB_MOUNT."""
    return f"{DEB_MOUNT}/{path.relative_to(session_debs_root())}"


def build_debs(
    out: Path, version: str | None = None, key: Path | None = None, timeout: float = 600
) -> BuiltDebs:
    """Build both packages into `out` with the build script (signed with
    the release private key `key`, if given, its public key beside it as
    *.pub); fail the test with the script's output when it fails."""
    argv = [sys.executable, str(BUILD_SCRIPT), "--out", str(out), "--compression", "zstd"]
    if version is not None:
        argv += ["--version", version]
    if key is not None:
        argv += ["--key", str(key)]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )
    if done.returncode != 0:
        raise AssertionError(f"build_debs.py exited {done.returncode}:\n{done.stderr[-5000:]}")
    debs = [Path(line) for line in done.stdout.split()]
    by_name = {p.name.split("_", 1)[0]: p for p in debs}
    version = version or build_script().project_version()
    return BuiltDebs(
        version=version,
        deb_version=build_script().debian_version(version),
        agent=by_name["fleetpatch-agent"],
        controller=by_name["fleetpatch-controller"],
        public_key=key.with_suffix(".pub") if key is not None else None,
    )


@dataclass
class Dpkg:
    """dpkg inside a sandbox, with the packages bound at DEB_MOUNT."""

    sandbox: HostSandbox

    def install(self, *debs: Path) -> subprocess.CompletedProcess[str]:
        """dpkg -i the debs (host paths under the bound directory)."""
        inside = [f"{DEB_MOUNT}/{deb.parent.name}/{deb.name}" for deb in debs]
        return self.sandbox.run(["dpkg", "-i", *inside], timeout=300)

    def remove(self, name: str) -> subprocess.CompletedProcess[str]:
        return self.sandbox.run(["dpkg", "--remove", name], timeout=300)

    def purge(self, name: str) -> subprocess.CompletedProcess[str]:
        return self.sandbox.run(["dpkg", "--purge", name], timeout=300)

    def state(self, name: str) -> tuple[str, str]:
        """(status abbreviation, version): ("ii", "1.0") installed, ("rc", "1.0")
        removed with its config kept, ("", "") unknown (purged)."""
        done = self.sandbox.run(
            ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Version}", name], check=False
        )
        if done.returncode != 0:
            return "", ""
        abbrev, _, version = done.stdout.partition("|")
        return abbrev.strip(), version

    def exists(self, path: str) -> bool:
        """Whether path exists inside (a symlink counts, even dangling)."""
        return self.sandbox.run(["stat", "-c", "%F", path], check=False).returncode == 0

    def readlink(self, path: str) -> str:
        return self.sandbox.run(["readlink", path]).stdout.strip()

    def mode_owner(self, path: str) -> str:
        """e.g. "700 fleetpatch:fleetpatch"."""
        return self.sandbox.run(["stat", "-c", "%a %U:%G", path]).stdout.strip()


# -- one build per test session --------------------------------------------------------

# The directory the session's builds go to, shared by its pytest-xdist
# workers (set by tests/conftest.py in the controlling process, which
# removes it at the end); without it, one of this process's own.
BUILDS_ENV = "FLEETPATCH_TEST_BUILDS"

_BUILT: dict[str, BuiltDebs] = {}


@cache
def session_debs_root() -> Path:
    """The directory of this test session's builds."""
    shared = os.environ.get(BUILDS_ENV)
    if shared:
        return Path(shared)
    return until_exit("fleetpatch-test-debs-")


def _done(name: str) -> Path:
    """What build ``name`` made, written once it is complete: beside its
    directory, whose files a release check wants all signed."""
    return session_debs_root() / f".{name}.built.json"


@contextlib.contextmanager
def _one_at_a_time(name: str) -> Iterator[None]:
    """Hold the session's lock on ``name``: the other workers wait for
    what this one is building."""
    with open(session_debs_root() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def built_debs(version: str | None = None) -> BuiltDebs:
    """Both packages at `version` (default: the project's), built and signed
    once per test session whichever test module, on whichever worker, asks
    first. Directory names under session_debs_root() are the versions."""
    name = version or build_script().project_version()
    if name not in _BUILT:
        done = _done(name)
        with _one_at_a_time(name):
            if not done.is_file():
                built = build_debs(session_debs_root() / name, version, session_release_key())
                done.write_text(json.dumps({k: str(v) for k, v in vars(built).items()}))
        record = json.loads(done.read_text())
        _BUILT[name] = BuiltDebs(
            version=record["version"], deb_version=record["deb_version"],
            agent=Path(record["agent"]), controller=Path(record["controller"]),
            public_key=Path(record["public_key"]),
        )  # fmt: skip
    return _BUILT[name]


@cache
def session_release_key() -> Path:
    """A release key pair for this test session: release.key, release.pub."""
    from controller.releases.signed import keygen

    key = session_debs_root() / "release.key"
    with _one_at_a_time("release-key"):
        if not key.with_suffix(".pub").is_file():
            keygen(key)
    return key


def agent_rpm(version: str | None = None) -> Path:
    """The agent RPM at ``version`` (default: the project's), built once per
    session, whichever test module asks first, and signed with the
    session's release key (SHA256SUMS and its signature beside it: the
    .rpm itself is what an unsigned build makes)."""
    name = version or build_script().project_version()
    out = session_debs_root() / f"rpm-{name}"
    done = _done(f"rpm-{name}")
    with _one_at_a_time(f"rpm-{name}"):
        if done.is_file():
            return Path(json.loads(done.read_text())["rpm"])
        argv = [sys.executable, str(BUILD_SCRIPT), "--out", str(out), "--package", "agent",
                "--rpm", "--compression", "zstd", "--key", str(session_release_key())]  # fmt: skip
        if version is not None:
            argv += ["--version", version]
        ran = subprocess.run(
            argv, capture_output=True, text=True, timeout=900, cwd=ROOT, check=False
        )
        assert ran.returncode == 0, ran.stderr[-5000:]
        (rpm,) = [Path(line) for line in ran.stdout.split() if line.endswith(".rpm")]
        done.write_text(json.dumps({"rpm": str(rpm)}))
        return rpm


# -- a booted systemd ------------------------------------------------------------------


# Units of the machine a test container does without (see SystemdContainer).
MASKED_IN_CONTAINERS = ("postgresql.service", "postgresql@.service", "prometheus.service")


class SystemdContainer:
    """systemd booted as PID 1 of a container (systemd-nspawn --boot) whose
    root is a HostSandbox's copy-on-write root: the units run under a real
    service manager, sandboxing included, and the machine stays untouched.

    The sandbox's own /dev, /proc, /sys, /tmp and /run mounts are taken away
    first (nspawn sets up its own), so the sandbox is only usable through
    this container afterwards. nspawn itself runs in the sandbox's mount
    namespace (not chrooted), with a tmpfs on /run there for its runtime
    files. Commands run in the container's namespaces with `nsenter --all`.
    """

    def __init__(self, sandbox: HostSandbox, log: Path, boot_timeout: float = 180) -> None:
        self.sandbox = sandbox
        self.log = log
        enter = ["nsenter", f"--target={sandbox.pid}", "--mount", "--"]
        commands = [
            ["umount", "--recursive", f"{sandbox.root}/{mount}"]
            for mount in ("dev", "proc", "sys", "tmp", "run")
        ]
        # nspawn keeps locks and mount-propagation dirs in its own /run: a
        # tmpfs there, in the sandbox's mount namespace only, keeps them off
        # the machine's /run.
        commands.append(["mount", "-t", "tmpfs", "-o", "mode=0755", "fp-nspawn-run", "/run"])
        # The machine's own servers that `make deps` installs for other tests
        # (PostgreSQL, Prometheus) are enabled there: masked in the copy,
        # the container boots only what its test is about, and sooner.
        units = Path(f"{sandbox.root}/etc/systemd/system")
        commands += [
            ["ln", "-sfn", "/dev/null", str(units / unit)] for unit in MASKED_IN_CONTAINERS
        ]
        for command in commands:
            subprocess.run([*enter, *command], check=True, capture_output=True, timeout=60)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*enter, "systemd-nspawn", f"--directory={sandbox.root}", "--boot",
                 "--register=no", "--keep-unit", "--quiet", "--console=passive",
                 f"--machine=fp-{sandbox.pid}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        boot_timeout = scaled(boot_timeout)
        try:
            self.pid = self._find_init(boot_timeout)
            self._wait_booted(boot_timeout)
        except BaseException:
            self.stop()
            raise

    def _find_init(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self.proc.returncode}: {self._tail()}")
            for pid in _descendants(self.proc.pid):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    program = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    continue
                # PID 1 of its namespace, once nspawn has exec'd systemd in it
                # (before that, it is nspawn's child, still in the old root).
                nspid = next((x for x in status.splitlines() if x.startswith("NSpid:")), "")
                pid_one = nspid.split()[-1:] == ["1"] and len(nspid.split()) > 2
                if pid_one and program.endswith("/systemd"):
                    return pid
            time.sleep(0.1)
        raise RuntimeError(f"no init in the container after {timeout:.0f}s: {self._tail()}")

    def _wait_booted(self, timeout: float) -> None:
        # systemctl prints "offline" until PID 1 has made /run/systemd/system
        # and cannot connect until it has made its private socket: both only
        # mean "not yet" (seen on a busy machine, where they last seconds).
        # Then --wait waits for the boot to finish, up to the same deadline.
        deadline = time.monotonic() + timeout
        while True:
            left = max(1.0, deadline - time.monotonic())
            state = self.run(
                ["systemctl", "is-system-running", "--wait"], check=False, timeout=left
            )
            said = state.stdout.strip()
            if said in ("running", "degraded"):
                return
            not_yet = said in ("offline", "initializing", "starting", "") or (
                "Failed to connect to bus" in state.stderr
            )
            if not not_yet or time.monotonic() > deadline:
                raise RuntimeError(
                    f"systemd did not boot in {timeout:.0f}s (is-system-running: "
                    f"{said or '-'} {state.stderr.strip()}): {self._tail()}"
                )
            time.sleep(0.2)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the container (as root, its namespaces, its root)."""
        done = subprocess.run(
            ["nsenter", f"--target={self.pid}", "--all", "--root", "--wd", "--", *argv],
            capture_output=True, text=True, errors="replace", timeout=timeout,
            stdin=subprocess.DEVNULL, env=DEFAULT_ENV, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"{list(argv)} exited {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        return done

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """`systemctl show` properties of a unit."""
        out = self.run(["systemctl", "show", unit, *(f"--property={p}" for p in properties)])
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    def hosts(self) -> list[dict[str, object]]:
        """The controller's hosts (`fleetpatch hosts list --json`, run inside)."""
        found: list[dict[str, object]] = json.loads(
            self.run(["fleetpatch", "hosts", "list", "--json"]).stdout
        )
        return found

    def reported_agent_version(self) -> object:
        """The version the (only) host reported at its last check-in, if any."""
        listed = self.hosts()
        if not listed or not listed[0].get("last_seen"):
            return None
        facts = listed[0]["facts"]
        assert isinstance(facts, dict)
        return facts["agent_version"]

    def stop(self) -> None:
        """Power the container off (SIGTERM to nspawn), kill it if it hangs."""
        stop_group(self.proc)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def systemd_container_available() -> str | None:
    """None when SystemdContainer can be tried here, else why not."""
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is not installed (Debian package systemd-container)"
    if not Path("/lib/systemd/systemd").exists():
        return "systemd is not installed (the container boots this machine's /lib/systemd/systemd)"
    return None
