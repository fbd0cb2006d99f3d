"""The .deb packages, built by packaging/build_debs.py and installed for real.

Built once per session at two versions (the project's, and the next one
through the build script's --version override). What is in a package is
checked on the .deb itself; installing, upgrading, removing and purging
happen with dpkg inside a HostSandbox (a copy-on-write copy of this
machine), where systemd is not running: the maintainer scripts must cope,
and the enablement symlinks must still appear (deb-systemd-helper).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import pytest

from controller.releases import signed as release
from tests.support.controller import free_port
from tests.support.packages import (
    DEB_MOUNT,
    ROOT,
    SYSTEMD_DIR,
    BuiltDebs,
    Dpkg,
    build_script,
    built_debs,
    next_version,
    packaging_available,
    session_debs_root,
)
from tests.support.sandbox import HostSandbox, sandbox_available
from tests.support.waiting import scaled

WANTS = "/etc/systemd/system/multi-user.target.wants"
#: What may differ from the machine after a purge: dpkg's own records, the
#: `fleetpatch` system user (kept on purge, as Debian packages do), and
#: man-db's index (its trigger re-indexes after our manual pages come and go).
PURGE_LEFTOVERS = (
    "/var/lib/dpkg/", "/var/log/dpkg.log", "/etc/.pwd.lock", "/etc/passwd", "/etc/group",
    "/etc/shadow", "/etc/gshadow", "/var/cache/man/",
)  # fmt: skip


@pytest.fixture(scope="session")
def sandboxes() -> None:
    """Skip before building anything when sandboxes cannot run here."""
    reason = sandbox_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def built() -> BuiltDebs:
    reason = packaging_available()
    if reason is not None:
        pytest.skip(reason)
    return built_debs()


@pytest.fixture(scope="session")
def built_v2(built: BuiltDebs) -> BuiltDebs:
    return built_debs(next_version(built.version))


@pytest.fixture
def dpkg(make_sandbox) -> Dpkg:
    sandbox: HostSandbox = make_sandbox()
    sandbox.bind(session_debs_root(), DEB_MOUNT)
    return Dpkg(sandbox)


def deb_field(deb: Path, name: str) -> str:
    done = subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def package_version(dpkg: Dpkg, venv: str) -> str:
    """fleetpatch.__version__ as the package's own interpreter imports it."""
    argv = [f"{venv}/bin/python", "-c", "import fleetpatch; print(fleetpatch.__version__)"]
    return dpkg.sandbox.run(argv).stdout.strip()


def assert_only_leftovers(sandbox: HostSandbox) -> None:
    changed = [p for p in sandbox.upper_changes() if not p.startswith(PURGE_LEFTOVERS)]
    assert changed == [], "left behind after purge"


# -- versions --------------------------------------------------------------------------


def test_debian_versions_sort_like_pep440():
    ordered = [
        "1.0.dev1", "1.0a1", "1.0a2.dev1", "1.0a2", "1.0b1", "1.0rc1.dev2", "1.0rc1", "1.0",
        "1.0.post1.dev1", "1.0.post1", "1.0.1", "1.1", "10.0",
    ]  # fmt: skip
    debian = [build_script().debian_version(v) for v in ordered]
    for lower, higher in itertools.pairwise(debian):
        done = subprocess.run(["dpkg", "--compare-versions", lower, "lt", higher], check=False)
        assert done.returncode == 0, f"{lower} should sort before {higher}"


@pytest.mark.parametrize("version", ["1.0-1", "v1.0", "1.0.0+local", "1.0alpha", ""])
def test_build_refuses_a_version_it_cannot_package(version):
    with pytest.raises(build_script().BuildError, match="is not a release"):
        build_script().debian_version(version)


def test_build_script_refuses_a_bad_version_in_one_line_before_any_work(tmp_path):
    done = subprocess.run(
        [str(Path(__import__("sys").executable)), str(build_script().__file__),
         "--out", str(tmp_path), "--version", "1.0-foo"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "build_debs: error: version '1.0-foo' is not a release, pre-, post- or dev-release "
        "we can package (e.g. 1.2.0, 1.2.0rc1, 1.2.0.post1, 1.2.0.dev3)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_relocation_rewrites_every_place_a_venv_names_itself(tmp_path):
    stage = tmp_path / "fleetpatch-debs-x" / "root"
    venv = stage / "opt/fleetpatch/agent"
    (venv / "bin").mkdir(parents=True)
    info = venv / "lib/python3.11/site-packages/fleetpatch-1.dist-info"
    info.mkdir(parents=True)
    (info / "direct_url.json").write_text(f'{{"url": "file://{tmp_path}/w.whl"}}')
    short = venv / "bin/fleetpatch-agent"
    short.write_text(f"#!{venv}/bin/python\nimport sys\n")
    short.chmod(0o755)
    # pip's form when the interpreter path is too long for a #! line.
    wrapper = venv / "bin/long"
    wrapper.write_text("#!/bin/sh\n'''exec' " + f'"{venv}/bin/python" "$0" "$@"' + "\n' '''\n")
    (venv / "pyvenv.cfg").write_text(f"home = /usr/bin\ncommand = python3 -m venv {venv}\n")
    (venv / "bin/python3").symlink_to("/usr/bin/python3")
    (venv / "lib64").symlink_to("lib")

    script = build_script()
    script.relocate(venv, PurePosixPath("/opt/fleetpatch/agent"))

    assert short.read_text() == "#!/opt/fleetpatch/agent/bin/python\nimport sys\n"
    assert short.stat().st_mode & 0o777 == 0o755
    assert '"/opt/fleetpatch/agent/bin/python" "$0"' in wrapper.read_text()
    assert "venv /opt/fleetpatch/agent" in (venv / "pyvenv.cfg").read_text()
    assert not (info / "direct_url.json").exists()
    assert script.files_containing(stage, str(tmp_path).encode()) == []
    (venv / "bin/bad").symlink_to(venv / "lib")  # a symlink into the staging dir
    assert script.files_containing(stage, str(tmp_path).encode()) == [venv / "bin/bad"]


# -- what is in the packages -----------------------------------------------------------


def test_build_signs_what_it_built(built):
    assert built.public_key is not None
    done = release.verify(built.directory, built.public_key)
    assert done.artifacts == (built.agent, built.controller)


def test_control_fields(built):
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    for deb, extra in ((built.agent, "dpkg-repack"), (built.controller, "adduser")):
        assert deb_field(deb, "Version") == built.deb_version
        assert deb_field(deb, "Architecture") == arch
        depends = [d.strip() for d in deb_field(deb, "Depends").split(",")]
        assert "python3 (>= 3.11)" in depends
        assert "python3 (<< 3.12)" in depends
        assert extra in depends
        assert any(d.startswith("libc6 (>= 2.") for d in depends)
    assert deb_field(built.agent, "Package") == "fleetpatch-agent"
    assert deb_field(built.controller, "Package") == "fleetpatch-controller"


@pytest.fixture(scope="session")
def unpacked(built: BuiltDebs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each package's files and DEBIAN/, unpacked once: short name -> root."""
    roots = {}
    for deb, short in ((built.agent, "agent"), (built.controller, "controller")):
        root = tmp_path_factory.mktemp(short)
        subprocess.run(["dpkg-deb", "-R", str(deb), str(root)], check=True)
        roots[short] = root
    return roots


def test_packages_hold_unit_links_and_conffile(unpacked):
    for short, commands in (
        ("agent", ["fleetpatch-agent"]),
        ("controller", ["fleetpatch", "fleetpatch-sim"]),
    ):
        root = unpacked[short]
        unit = f"fleetpatch-{short}.service"
        assert (root / "lib/systemd/system" / unit).read_bytes() == (
            SYSTEMD_DIR / unit
        ).read_bytes()
        for command in commands:
            link = root / "usr/bin" / command
            assert str(link.readlink()) == f"/opt/fleetpatch/{short}/bin/{command}"
        conffiles = (root / "DEBIAN/conffiles").read_text().splitlines()
        # The environment file, and the administrator's settings.
        assert conffiles == [f"/etc/fleetpatch/{short}.env", f"/etc/fleetpatch/{short}.toml"]
        assert (root / f"usr/share/doc/fleetpatch-{short}/copyright").is_file()
    shared = unpacked["controller"] / "usr/share/fleetpatch"
    assert sorted(str(p.relative_to(shared)) for p in shared.rglob("*") if p.is_file()) == [
        "grafana/fleetpatch-debug.json", "grafana/fleetpatch-executive.json",
        "grafana/fleetpatch-oncall.json", "prometheus/fleetpatch-rules.yml",
    ]  # fmt: skip
    assert not (unpacked["agent"] / "usr/share/fleetpatch").exists()


def test_venvs_name_their_final_path_and_never_the_build_directory(unpacked):
    for short, root in unpacked.items():
        venv = root / "opt/fleetpatch" / short
        scripts = [p for p in (venv / "bin").iterdir() if p.is_file() and not p.is_symlink()]
        for script in scripts:
            head = script.read_bytes()[:200]
            if head.startswith(b"#!") and b"python" in head.split(b"\n")[0]:
                assert head.startswith(f"#!/opt/fleetpatch/{short}/bin/python\n".encode()), script
        assert f"/opt/fleetpatch/{short}" in (venv / "pyvenv.cfg").read_text()
        assert (venv / "bin/python3").readlink() == Path("/usr/bin/python3")
        leaks = build_script().files_containing(root, b"fleetpatch-debs-")
        assert leaks == []
        assert list(venv.glob("lib/python3*/site-packages/*.dist-info/direct_url.json")) == []
        compiled = [p for p in root.rglob("*") if p.name == "__pycache__" or p.suffix == ".pyc"]
        assert compiled == [], "bytecode is compiled at install, not shipped"


def _site(root: Path, short: str) -> Path:
    (site,) = (root / "opt/fleetpatch" / short).glob("lib/python3*/site-packages")
    return site


def _distributions(site: Path) -> set[str]:
    return {p.name.split("-")[0].lower().replace("_", "-") for p in site.glob("*.dist-info")}


def test_agent_package_carries_the_agent_and_only_what_it_imports(unpacked):
    site = _site(unpacked["agent"], "agent")
    assert (site / "agent/cli.py").is_file()
    assert list(site.glob("fleetpatch/v1/*_pb2.py"))
    for absent in ("controller", "simulator", "pip", "rich", "pygments", "prometheus_client",
                   "grpc_health", "tzdata", "_pytest", "mypy", "ruff", "hypothesis"):  # fmt: skip
        assert not (site / absent).exists(), absent
    dists = _distributions(site)
    assert {"grpcio", "protobuf", "cryptography", "psutil", "typer", "click"} <= dists
    # The journal is stdlib sqlite3 (agent.orders.sqlschema): no sqlite-utils.
    unwanted = {"pip", "rich", "pygments", "prometheus-client", "pytest", "tzdata", "sqlite-utils"}
    assert not dists & unwanted
    assert sorted(p.name for p in (unpacked["agent"] / "opt/fleetpatch/agent/bin").iterdir()) == [
        "fleetpatch-agent", "python", "python3", "python3.11",
    ]  # fmt: skip
    # fleetpatch's own record names only what is there: a consistent install.
    (record,) = site.glob("fleetpatch-*.dist-info/RECORD")
    listed = [line.split(",")[0] for line in record.read_text().splitlines()]
    assert not [p for p in listed if p.startswith(("controller/", "simulator/"))]
    assert all((site / p).resolve().exists() for p in listed if not p.endswith("RECORD")), listed
    controller_site = _site(unpacked["controller"], "controller")
    for present in ("agent", "controller", "simulator", "prometheus_client"):
        assert (controller_site / present).is_dir(), present
    assert not (controller_site / "pip").exists()
    assert not (controller_site / "rich").exists()


def test_controller_carries_psycopgs_c_implementation_built_for_debians_libpq(unpacked):
    # pyproject.toml's `c` extra: compiled by the build (it publishes no
    # wheel) against the system's libpq5, which Debian keeps patched, and
    # by the target Python, so no build machine's library path is left in
    # it. psycopg loads it by name, so the venv pruning must know to keep it.
    if importlib.util.find_spec("psycopg_c") is None:
        pytest.skip("this environment has no psycopg-c to ship (make deps builds it as root)")
    site = _site(unpacked["controller"], "controller")
    assert "psycopg-c" in _distributions(site)
    dynamic = {
        obj.name: subprocess.run(["readelf", "-d", str(obj)], capture_output=True, text=True,
                                 check=True).stdout
        for obj in (site / "psycopg_c").rglob("*.so")
    }  # fmt: skip
    assert dynamic
    assert not [name for name, d in dynamic.items() if "RUNPATH" in d or "RPATH" in d], dynamic
    assert any("[libpq.so.5]" in d for d in dynamic.values())
    assert not (_site(unpacked["agent"], "agent") / "psycopg_c").exists()


def test_shared_objects_are_stripped(unpacked):
    for short, root in unpacked.items():
        objects = list(_site(root, short).rglob("*.so"))
        assert objects
        for obj in objects:
            described = subprocess.run(
                ["file", "-b", str(obj)], capture_output=True, text=True, check=True
            ).stdout
            assert ", stripped" in described, (obj, described)


def test_changelog_copyright_and_manual_pages(built, unpacked):
    for short, root in unpacked.items():
        doc = root / f"usr/share/doc/fleetpatch-{short}"
        gz = (doc / "changelog.gz").read_bytes()
        assert gz[3] == 0, "gzip -n: no file name"
        assert gz[4:8] == b"\0\0\0\0", "gzip -n: no time stamp"
        parsed = subprocess.run(
            ["dpkg-parsechangelog", "-l", "-", "-S", "Version"],
            input=gzip.decompress(gz), capture_output=True, check=True,
        ).stdout.decode().strip()  # fmt: skip
        assert parsed == built.deb_version
        assert (
            (doc / "copyright")
            .read_text()
            .startswith(
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
            )
        )
    pages = {
        "agent": ["fleetpatch-agent"],
        "controller": ["fleetpatch", "fleetpatch-sim"],
    }
    for short, progs in pages.items():
        man1 = unpacked[short] / "usr/share/man/man1"
        assert sorted(p.name for p in man1.iterdir()) == sorted(f"{p}.1.gz" for p in progs)
        for prog in progs:
            text = gzip.decompress((man1 / f"{prog}.1.gz").read_bytes()).decode()
            assert text.startswith(f".TH {prog.upper()} 1 ")
            assert "Usage: " + prog.replace("-", "\\-") in text
            # man renders it without a warning (groff's -ww).
            shown = subprocess.run(
                ["man", "--warnings", "-l", "-"], input=text.encode(), capture_output=True,
                env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_STDERR": "1"}, check=False,
            )  # fmt: skip
            if shown.returncode == 0:
                assert shown.stderr == b"", shown.stderr.decode()
    agent_page = gzip.decompress(
        (unpacked["agent"] / "usr/share/man/man1/fleetpatch-agent.1.gz").read_bytes()
    ).decode()
    for verb in ("ENROLL", "RUN", "STATUS", "INVENTORY", "CHECK", "APPLY"):
        assert f"\n.SH {verb}\n" in agent_page, verb


def _lintian() -> str:
    found = shutil.which("lintian")
    if found is None:
        pytest.skip("lintian is not installed (Debian package lintian; make deps installs it)")
    return found


def test_lintian_is_clean_but_for_documented_overrides(built):
    lintian = _lintian()
    for deb in (built.agent, built.controller):
        # The tests build with zstd (fast); lintian 2.116 (bookworm) does not
        # know zstd members yet, which dpkg reads. `make packages` uses xz.
        done = subprocess.run(
            [lintian, "--tag-display-limit", "0", "--suppress-tags", "malformed-deb-archive",
             str(deb)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        tags = [line for line in done.stdout.splitlines() if line[:2] in {"E:", "W:", "I:"}]
        assert tags == [], "\n".join(tags)
        assert done.returncode == 0, done.stdout + done.stderr


def _evictions(script: str) -> str:
    """The lines of a maintainer script that drop the venv's shared objects
    from the page cache (each `find ... '*.so*'`, with its continuation)."""
    lines, keep = [], False
    for line in script.splitlines():
        keep = keep or ("find /opt/fleetpatch/agent/lib" in line and "'*.so*'" in line)
        if keep:
            lines.append(line.strip())
            keep = line.rstrip().endswith("\\")
    return "\n".join(lines)


def test_the_maintainer_scripts_drop_fresh_shared_objects_from_the_page_cache(tmp_path):
    """Just written, grpcio's library sits in the page cache in large
    folios that the kernel maps whole into the agent that starts next (2.5
    MiB more RSS for the life of that process): the postinst and the RPM's
    posttrans drop the venv's shared objects from the cache, which these
    very lines do to a file written here."""
    sys_path = str(ROOT / "packaging")
    rpm_spec = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import rpmpkg; "
         "print(rpmpkg.spec_text(version='1', release='1', python_abi='3.11', summary='s', "
         "description='d', tree=sys.argv[2]))", sys_path, str(tmp_path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    postinst = (ROOT / "packaging/debian/agent/postinst").read_text()
    deb, rpm = _evictions(postinst), _evictions(rpm_spec)
    assert deb.count("find ") == 2
    assert rpm.replace(":", "true") == deb
    lib = tmp_path / "lib" / "grpc"
    lib.mkdir(parents=True)
    library = lib / "cygrpc.cpython-311-x86_64-linux-gnu.so"
    library.write_bytes(os.urandom(4 << 20))  # written, so all of it cached

    def cached() -> int:
        done = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", library],
                              capture_output=True, text=True, check=True)  # fmt: skip
        return int(done.stdout)

    assert cached() == 4 << 20
    subprocess.run(["sh", "-ec", deb.replace("/opt/fleetpatch/agent/lib", str(tmp_path / "lib"))],
                   check=True)  # fmt: skip
    assert cached() == 0
    assert library.stat().st_size == 4 << 20


def test_every_lintian_override_says_why():
    for short in ("agent", "controller"):
        lines = (ROOT / "packaging/debian" / short / "lintian-overrides").read_text().splitlines()
        for number, line in enumerate(lines):
            if line and not line.startswith("#"):
                assert line.startswith(f"fleetpatch-{short}: "), line
                assert lines[number - 1].startswith(("#", f"fleetpatch-{short}: ")), line
                # The nearest comment block above it is the reason.
                above = [x for x in lines[:number] if x.startswith("#")]
                assert above, line


# -- installed, upgraded, removed, purged ----------------------------------------------


def test_agent_package_install_upgrade_remove_purge(sandboxes, built, built_v2, dpkg):
    sandbox = dpkg.sandbox
    dpkg.install(built.agent)
    assert dpkg.state("fleetpatch-agent") == ("ii", built.deb_version)
    compiled_at_install = _unowned(sandbox, "agent")
    owned_modules = [
        f for f in sandbox.run(["dpkg", "-L", "fleetpatch-agent"]).stdout.split()
        if f.endswith(".py") and "/site-packages/" in f
    ]  # fmt: skip
    assert len(compiled_at_install) == len(owned_modules) > 100
    assert all("/__pycache__/" in f and f.endswith(".cpython-311.pyc") for f in compiled_at_install)

    # Unit and enablement (deb-systemd-helper, systemd not running here).
    unit = "/lib/systemd/system/fleetpatch-agent.service"
    assert (
        sandbox.path(unit).read_bytes() == (SYSTEMD_DIR / "fleetpatch-agent.service").read_bytes()
    )
    assert dpkg.readlink(f"{WANTS}/fleetpatch-agent.service") == unit
    sandbox.run(
        ["deb-systemd-helper", "is-enabled", "fleetpatch-agent.service"],
        env={"DPKG_MAINTSCRIPT_PACKAGE": "fleetpatch-agent"},  # it refuses to run otherwise
    )
    verified = sandbox.run(["systemd-analyze", "verify", unit], check=False)
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")

    # The console script, from the package's own venv, not the host's Python.
    assert (
        dpkg.readlink("/usr/bin/fleetpatch-agent") == "/opt/fleetpatch/agent/bin/fleetpatch-agent"
    )
    assert "enroll" in sandbox.run(["fleetpatch-agent", "--help"]).stdout
    facts = json.loads(sandbox.run(["fleetpatch-agent", "inventory", "--json"]).stdout)["facts"]
    assert facts["agent_version"] == built.version
    path = sandbox.run(["/opt/fleetpatch/agent/bin/python", "-c", "import sys; print(sys.path)"])
    assert "dist-packages" not in path.stdout
    assert "/work/" not in path.stdout
    assert dpkg.mode_owner("/var/lib/fleetpatch/agent") == "700 root:root"
    # Bytecode compiled at install (postinst), for every module shipped, and
    # nothing else unowned: running it (as root) wrote no .pyc of its own.
    assert _unowned(sandbox, "agent") == compiled_at_install
    assert sandbox.run(["dpkg", "--verify", "fleetpatch-agent"]).stdout == ""

    # What an enrolled host has, and a local setting.
    sandbox.path("/var/lib/fleetpatch/agent/agent.toml").write_text("# enrolled\n")
    env_file = sandbox.path("/etc/fleetpatch/agent.env")
    env_file.write_text(env_file.read_text() + "FLEETPATCH_AGENT_ARGS=--verbose\n")
    settings = sandbox.path("/etc/fleetpatch/agent.toml")
    settings.write_text(settings.read_text() + '\n[policy]\nnever_touch = ["postgresql-*"]\n')

    dpkg.install(built_v2.agent)
    assert dpkg.state("fleetpatch-agent") == ("ii", built_v2.deb_version)
    assert package_version(dpkg, "/opt/fleetpatch/agent") == built_v2.version
    assert sandbox.path("/var/lib/fleetpatch/agent/agent.toml").read_text() == "# enrolled\n"
    assert env_file.read_text().endswith("FLEETPATCH_AGENT_ARGS=--verbose\n")
    assert settings.read_text().endswith('never_touch = ["postgresql-*"]\n')
    # Every file as shipped, but the settings we changed.
    verify = sandbox.run(["dpkg", "--verify", "fleetpatch-agent"], check=False).stdout
    assert verify == (
        "??5?????? c /etc/fleetpatch/agent.env\n??5?????? c /etc/fleetpatch/agent.toml\n"
    )
    assert dpkg.readlink(f"{WANTS}/fleetpatch-agent.service") == unit

    dpkg.remove("fleetpatch-agent")
    assert dpkg.state("fleetpatch-agent") == ("rc", built_v2.deb_version)
    for gone in ("/opt/fleetpatch", "/usr/bin/fleetpatch-agent", unit):
        assert not dpkg.exists(gone), gone
    assert sandbox.path("/var/lib/fleetpatch/agent/agent.toml").is_file(), "enrollment kept"
    assert env_file.is_file(), "settings kept"

    dpkg.purge("fleetpatch-agent")
    assert dpkg.state("fleetpatch-agent") == ("", "")
    for gone in ("/var/lib/fleetpatch", "/etc/fleetpatch", f"{WANTS}/fleetpatch-agent.service"):
        assert not dpkg.exists(gone), gone
    assert_only_leftovers(sandbox)


def test_controller_package_install_upgrade_remove_purge(sandboxes, built, built_v2, dpkg):
    sandbox = dpkg.sandbox
    dpkg.install(built.controller)
    assert dpkg.state("fleetpatch-controller") == ("ii", built.deb_version)

    user = sandbox.run(["getent", "passwd", "fleetpatch"]).stdout.strip().split(":")
    assert user[5:] == ["/var/lib/fleetpatch/controller", "/usr/sbin/nologin"]
    assert int(user[2]) < 1000, "a system user"
    data = "/var/lib/fleetpatch/controller"
    assert dpkg.mode_owner(data) == "700 fleetpatch:fleetpatch"
    unit = "/lib/systemd/system/fleetpatch-controller.service"
    assert dpkg.readlink(f"{WANTS}/fleetpatch-controller.service") == unit
    verified = sandbox.run(["systemd-analyze", "verify", unit], check=False)
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")

    assert "controller" in sandbox.run(["fleetpatch", "--help"]).stdout
    assert "run" in sandbox.run(["fleetpatch-sim", "--help"]).stdout
    if importlib.util.find_spec("psycopg_c") is not None:  # shipped: it loads on the host's libpq5
        loaded = sandbox.run(["/opt/fleetpatch/controller/bin/python", "-B", "-c",
                              "import psycopg; print(psycopg.pq.__impl__)"]).stdout  # fmt: skip
        assert loaded.split() == ["c"]
    sandbox.run(["fleetpatch", "controller", "init", "--data-dir", "/tmp/ctl", "--hostname", "t"])
    assert sandbox.path("/tmp/ctl/controller.toml").is_file()
    # The documented first step: init as the service user, in the default dir.
    sandbox.run(["runuser", "-u", "fleetpatch", "--", "fleetpatch", "controller", "init",
                 "--hostname", "ctl.example.net"])  # fmt: skip
    assert dpkg.mode_owner(f"{data}/ca.key") == "600 fleetpatch:fleetpatch"
    ca = hashlib.sha256(sandbox.path(f"{data}/ca.pem").read_bytes()).hexdigest()

    dpkg.install(built_v2.controller)
    assert dpkg.state("fleetpatch-controller") == ("ii", built_v2.deb_version)
    assert package_version(dpkg, "/opt/fleetpatch/controller") == built_v2.version
    assert hashlib.sha256(sandbox.path(f"{data}/ca.pem").read_bytes()).hexdigest() == ca
    assert sandbox.run(["dpkg", "--verify", "fleetpatch-controller"]).stdout == ""

    dpkg.remove("fleetpatch-controller")
    assert dpkg.state("fleetpatch-controller") == ("rc", built_v2.deb_version)
    assert not dpkg.exists("/opt/fleetpatch")
    assert not dpkg.exists("/usr/bin/fleetpatch")
    assert sandbox.path(f"{data}/ca.key").is_file(), "the fleet's CA survives a remove"
    assert sandbox.path("/etc/fleetpatch/controller.env").is_file()

    dpkg.purge("fleetpatch-controller")
    assert dpkg.state("fleetpatch-controller") == ("", "")
    for gone in (
        "/var/lib/fleetpatch",
        "/etc/fleetpatch",
        f"{WANTS}/fleetpatch-controller.service",
    ):
        assert not dpkg.exists(gone), gone
    assert sandbox.run(["getent", "passwd", "fleetpatch"]).returncode == 0, "user kept"
    assert_only_leftovers(sandbox)


def _unowned(sandbox: HostSandbox, short: str) -> list[str]:
    """Files under the package's venv that dpkg does not own, sorted."""
    on_disk = sandbox.run(["find", f"/opt/fleetpatch/{short}", "-type", "f"]).stdout.split()
    owned = set(sandbox.run(["dpkg", "-L", f"fleetpatch-{short}"]).stdout.split())
    return sorted(f for f in on_disk if f not in owned)


def _exec_start(sandbox: HostSandbox, unit: str) -> list[str]:
    """ExecStart= of the installed unit, without its $VARIABLES (empty)."""
    text = sandbox.path(f"/lib/systemd/system/{unit}").read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    return [word for word in line.removeprefix("ExecStart=").split() if not word.startswith("$")]


def test_packaged_agent_enrolls_with_packaged_controller(sandboxes, built, dpkg, tmp_path):
    """Both packages on one host, run as their units run them (ExecStart,
    User=, Environment=): the README's install steps, end to end."""
    sandbox = dpkg.sandbox
    dpkg.install(built.agent, built.controller)
    port = free_port()
    sandbox.run(["runuser", "-u", "fleetpatch", "--", "fleetpatch", "controller", "init",
                 "--hostname", "localhost", "--listen", f"127.0.0.1:{port}"])  # fmt: skip
    as_service_user = ["setpriv", "--reuid=fleetpatch", "--regid=fleetpatch", "--init-groups", "--"]
    log = (tmp_path / "controller.log").open("wb")
    controller = sandbox.spawn(
        [*as_service_user, *_exec_start(sandbox, "fleetpatch-controller.service")],
        env={"FLEETPATCH_DATA_DIR": "/var/lib/fleetpatch/controller"},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    endpoints = sandbox.path("/var/lib/fleetpatch/controller/endpoints.json")
    _wait(endpoints.is_file, controller, tmp_path / "controller.log")

    token = sandbox.run(["fleetpatch", "token", "create", "--region", "eu-west", "--ring", "0"])
    sandbox.run(["fleetpatch-agent", "enroll", "--controller", f"127.0.0.1:{port}",
                 "--token", token.stdout.strip().splitlines()[-1],
                 "--ca-cert", "/var/lib/fleetpatch/controller/ca.pem"])  # fmt: skip
    assert sandbox.path("/var/lib/fleetpatch/agent/agent.toml").is_file()  # the unit's condition
    agent = sandbox.spawn(
        _exec_start(sandbox, "fleetpatch-agent.service"),
        env={"FLEETPATCH_AGENT_STATE_DIR": "/var/lib/fleetpatch/agent"},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def checked_in() -> bool:
        hosts = json.loads(sandbox.run(["fleetpatch", "hosts", "list", "--json"]).stdout)
        return len(hosts) == 1 and bool(hosts[0].get("last_seen"))

    _wait(checked_in, agent, tmp_path / "controller.log")
    (host,) = json.loads(sandbox.run(["fleetpatch", "hosts", "list", "--json"]).stdout)
    assert host["facts"]["agent_version"] == built.version

    # SIGTERM to the main process alone (KillMode=process, as systemd stops
    # the agent): both stop gracefully and exit 0, which nsenter reports.
    for proc, program in ((agent, b"fleetpatch-agent"), (controller, b"fleetpatch")):
        _signal_inside(sandbox, program, signal.SIGTERM)
        assert proc.wait(timeout=40) == 0, (tmp_path / "controller.log").read_text()
    log.close()


def _signal_inside(sandbox: HostSandbox, program: bytes, sig: int) -> None:
    """Signal the sandbox process whose script (python's first argument
    after its options: the daemon runs under -OO) ends with program: the
    service's main process, not nsenter."""
    for pid in sandbox.pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        script = next((word for word in argv[1:] if not word.startswith(b"-")), b"")
        if script.endswith(b"/bin/" + program):
            os.kill(pid, sig)
            return
    raise AssertionError(f"no {program!r} process in the sandbox")


def _wait(ready, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout}s:\n{log.read_text()}")
        time.sleep(0.2)
