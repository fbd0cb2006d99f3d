"""Signed agent releases and agent-update orders for tests.

`agent_deb` and `agent_rpm` make small stand-in agent packages (real
files that dpkg-deb or rpm read); `signed_release` signs packages with
`fleetpatch release sign`'s own code (controller.releases.signed);
`agent_update_order` builds the order a controller hands out for one of
them, from the files as released.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

from fleetpatch import releasefmt
from fleetpatch.agentrelease import Family
from fleetpatch.v1 import types_pb2
from google.protobuf.duration_pb2 import Duration

from controller.releases.signed import keygen, sign_artifacts
from tests.support.debrepo import DebFile, DebSpec, build_deb
from tests.support.dnfrepo import RpmSpec, build_rpm
from tests.support.orders import work_order


def release_key(directory: Path, name: str = "release") -> Path:
    """A new release key pair in ``directory``: NAME.key (0600), NAME.pub."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / f"{name}.key"
    keygen(key)
    return key


def agent_deb(out: Path, debian_version: str, name: str = "fleetpatch-agent") -> Path:
    """A small stand-in agent package: right name and version, one file."""
    spec = DebSpec(
        name=name,
        version=debian_version,
        files={"/opt/fleetpatch-test/VERSION": DebFile(f"{debian_version}\n")},
        architecture="all",
    )
    return build_deb(spec, out)


def agent_rpm(out: Path, rpm_version: str, name: str = "fleetpatch-agent") -> Path:
    """The .rpm stand-in (noarch, release 1): NAME-VERSION-1.noarch.rpm."""
    files = {"/opt/fleetpatch-test/VERSION": f"{rpm_version}\n"}
    return build_rpm(RpmSpec(name, rpm_version, files=files), out)


def signed_release(debs: list[Path], key: Path) -> Path:
    """Sign the debs (one directory); returns that directory."""
    sign_artifacts(debs, key)
    return debs[0].parent


def agent_update_order(
    host_id: str,
    sequence: int,
    deb: Path,
    *,
    version: str | None = None,
    rollback_after: timedelta = timedelta(minutes=10),
    verify_timeout: timedelta = timedelta(seconds=30),
    order_id: str | None = None,
) -> types_pb2.WorkOrder:
    """The agent-update order for a released .deb or .rpm (SHA256SUMS
    beside it); ``version`` (PEP 440) defaults to what the file name says."""
    release = deb.parent
    order = work_order(
        host_id,
        sequence,
        (),
        action=types_pb2.WORK_ORDER_ACTION_AGENT_UPDATE,
        verify_timeout=verify_timeout,
        order_id=order_id,
    )
    rollback = Duration()
    rollback.FromTimedelta(rollback_after)
    order.agent_update.CopyFrom(
        types_pb2.AgentUpdate(
            version=version or _version(deb.name),
            artifact=deb.name,
            sha256=hashlib.sha256(deb.read_bytes()).digest(),
            release_signature=(release / releasefmt.SIGNATURE).read_bytes(),
            release_manifest=(release / releasefmt.MANIFEST).read_bytes(),
            size=deb.stat().st_size,
            rollback_after=rollback,
        )
    )
    return order


def _version(name: str) -> str:
    """The PEP 440 version a package's file name carries, whatever the
    package is called (a test of refusals signs other packages too)."""
    if name.endswith(".rpm"):
        return Family.RPM.pep440(name.rsplit("-", 2)[1])
    return Family.DEB.pep440(name.split("_")[1])
