"""The fleetpatch-agent RPM, made from the same staged tree as the .deb.

build_debs.py stages the agent once (the lean venv at /opt/fleetpatch/agent,
the console script link, the unit, /etc/fleetpatch/agent.env, docs and the
manual page); `build_rpm` lays that tree out as an RPM host expects it (the
unit in /usr/lib/systemd/system, nothing of DEBIAN/ or lintian) and runs
`rpmbuild -bb` (Debian's rpm package) on a spec written here:

- the same layout and unit as the .deb; agent.env and agent.toml (the
  administrator's settings) are %config(noreplace);
  the state dir /var/lib/fleetpatch/agent (0700) is owned, so an erase keeps
  it when it holds an enrollment, as `apt remove` does;
- no bytecode shipped: %posttrans compiles it with the package's own
  interpreter (after an upgrade has removed the old files, so no stale
  bytecode survives), %preun removes it on erase;
- enabled on first install and skipped until enrolled (the unit's
  ConditionPathExists=), as the .deb does; on upgrade the agent is
  restarted without waiting (`systemctl --no-block try-restart`): it may
  be running this very transaction (self-update);
- rpmbuild's own post-processing (brp-* strip, bytecode compile, compress)
  is off: the tree is already stripped, and bytecode is compiled on the host;
- no automatic dependencies (they would name the wheels' private objects);
  Requires: python(abi) = X.Y (the venv's compiled modules are for that
  Python, at /usr/bin/python3) and systemd.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

#: Runs argv (no shell) and returns stdout; raises on failure.
Run = Callable[[Sequence[str | Path]], str]

STATE = "/var/lib/fleetpatch/agent"
UNIT = "fleetpatch-agent.service"
MARK = "/var/lib/rpm-state/fleetpatch-agent/upgrading"


def spec_text(
    *, version: str, release: str, python_abi: str, summary: str, description: str, tree: Path
) -> str:
    """The spec file: %install copies the laid-out tree."""
    return f"""\
Name: fleetpatch-agent
Version: {version}
Release: {release}
Summary: {summary}
License: Apache-2.0
URL: https://github.com/fleetpatch/fleetpatch
AutoReqProv: no
Requires: python(abi) = {python_abi}
Requires: systemd

%define __os_install_post %{{nil}}
%define debug_package %{{nil}}
%define _build_id_links none

%description
{description}

%install
cp -a {tree}/. %{{buildroot}}/

%pre
if [ "$1" -gt 1 ]; then
	mkdir -p "$(dirname {MARK})" && touch {MARK}
fi

%post
if [ "$1" -eq 1 ]; then
	# Enabled (its wants link), with or without a running systemd; skipped
	# at start until the host is enrolled.
	systemctl --no-reload enable {UNIT} >/dev/null 2>&1 || :
fi

%posttrans
# Bytecode is not shipped: compiled here, for the interpreter that runs it,
# once the old version's files are gone; plain, and -OO for the daemon,
# which runs under -OO where the host's Python has the standard library's
# -OO bytecode too (agent.daemon.run_optimized).
PYTHON=/opt/fleetpatch/agent/bin/python
$PYTHON -m compileall -q -j 0 -o 0 -o 2 /opt/fleetpatch/agent/lib >/dev/null
# The shared objects just written, out of the page cache (the .deb's
# postinst says why: the agent that starts next maps less of them).
find /opt/fleetpatch/agent/lib -type f -name '*.so*' -exec sync {{}} + || :
find /opt/fleetpatch/agent/lib -type f -name '*.so*' \\
	-exec dd if={{}} iflag=nocache count=0 status=none \\; || :
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ -e {MARK} ]; then
		# --no-block: the agent may be running this transaction itself.
		systemctl --no-block try-restart {UNIT} >/dev/null 2>&1 || :
	else
		systemctl start {UNIT} >/dev/null 2>&1 || :
	fi
fi
rm -f {MARK}

%preun
if [ "$1" -eq 0 ]; then
	if [ -d /run/systemd/system ]; then
		systemctl stop {UNIT} >/dev/null 2>&1 || :
	fi
	systemctl --no-reload disable {UNIT} >/dev/null 2>&1 || :
	find /opt/fleetpatch/agent -depth -type d -name __pycache__ -exec rm -rf {{}} +
fi

%postun
if [ "$1" -eq 0 ]; then
	rm -rf /opt/fleetpatch/agent
	rmdir /opt/fleetpatch 2>/dev/null || :
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || :
	fi
fi

%files
%dir /opt/fleetpatch
/opt/fleetpatch/agent
/usr/bin/fleetpatch-agent
/usr/lib/systemd/system/{UNIT}
%dir /etc/fleetpatch
%config(noreplace) /etc/fleetpatch/agent.env
%config(noreplace) /etc/fleetpatch/agent.toml
%dir /var/lib/fleetpatch
%dir %attr(0700,root,root) {STATE}
%doc /usr/share/doc/fleetpatch-agent
/usr/share/man/man1/fleetpatch-agent.1.gz
"""


def lay_out(stage: Path, tree: Path) -> None:
    """The staged .deb tree as an RPM host lays it out."""
    shutil.copytree(stage, tree, symlinks=True)
    shutil.rmtree(tree / "DEBIAN")
    shutil.rmtree(tree / "usr/share/lintian")
    units = tree / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    (tree / "lib/systemd/system" / UNIT).rename(units / UNIT)
    shutil.rmtree(tree / "lib")
    (tree / STATE.lstrip("/")).mkdir(parents=True, mode=0o700)


def build_rpm(
    *,
    stage: Path,
    out: Path,
    version: str,
    python_abi: str,
    summary: str,
    description: str,
    run: Run,
) -> Path:
    """fleetpatch-agent-VERSION-1.ARCH.rpm in out, from the staged tree."""
    with tempfile.TemporaryDirectory(prefix="fleetpatch-rpm-") as tmp:
        top = Path(tmp)
        tree = top / "tree"
        lay_out(stage, tree)
        spec = top / "fleetpatch-agent.spec"
        spec.write_text(
            spec_text(
                version=version, release="1", python_abi=python_abi, summary=summary,
                description=description, tree=tree,
            )
        )  # fmt: skip
        run(["rpmbuild", "--define", f"_topdir {top}", "--quiet", "-bb", spec])
        (built,) = top.glob("RPMS/*/fleetpatch-agent-*.rpm")
        target = out / built.name
        shutil.copyfile(built, target)
    return target


def rpm_available() -> str | None:
    """None when rpmbuild runs here, else why not."""
    if shutil.which("rpmbuild") is None:
        return "rpmbuild is not installed (Debian package rpm)"
    done = subprocess.run(["rpmbuild", "--version"], capture_output=True, check=False, timeout=30)
    return None if done.returncode == 0 else "rpmbuild does not run"
