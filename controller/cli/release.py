"""`fleetpatch release`: keygen, sign and verify release files, publish an
agent package to the controller and list what is published. The formats
and checks are controller.releases.signed's; this is the CLI over them.

    fleetpatch release keygen KEY [--public-key PUB]
    fleetpatch release sign ARTIFACT... --key KEY
    fleetpatch release verify DIR|ARTIFACT --public-key PUB
    fleetpatch release publish PACKAGE [--public-key PUB]
    fleetpatch release list [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from fleetpatch import render
from fleetpatch.cliapp import exit_codes_epilog, new_app, run
from fleetpatch.v1 import admin_pb2

from controller.api import times
from controller.cli import jsondoc
from controller.cli.common import ControllerOption, DataDirOption, JsonOption, client
from controller.datadir import DEFAULT_DATA_DIR
from controller.errors import EXIT_CODES, FleetpatchError, UsageError
from controller.releases.signed import (
    CHUNK,
    keygen,
    prepare_publish,
    sign_artifacts,
    verify,
)

release_app = new_app(help="Signed releases: a release key, SHA256SUMS and its Ed25519 signature.")


@release_app.command("keygen")
def keygen_command(
    key: Annotated[Path, typer.Argument(help="Where to write the private key (mode 0600).")],
    public_key: Annotated[
        Path | None,
        typer.Option(help="Where to write the public key; default: KEY with .pub."),
    ] = None,
) -> None:
    """Make a release key pair.

    Keep the private key offline; give the public key and its fingerprint to
    whoever installs the packages.
    """
    public_path, name = keygen(key, public_key)
    print(f"private key {key} (mode 0600: keep it offline)")
    print(f"public key  {public_path}")
    print(f"fingerprint {name}")


@release_app.command("sign")
def sign_command(
    artifacts: Annotated[list[Path], typer.Argument(help="Files of one release, one directory.")],
    key: Annotated[Path, typer.Option(help="Release private key (from `release keygen`).")],
) -> None:
    """Write SHA256SUMS beside the artifacts and SHA256SUMS.sig over it."""
    signed = sign_artifacts(artifacts, key)
    print(f"signed {len(signed.entries)} artifact(s) with {signed.fingerprint}")
    print(f"  {signed.manifest}\n  {signed.signature}")


@release_app.command("verify")
def verify_command(
    target: Annotated[
        Path, typer.Argument(help="A release directory (every file in it) or one artifact.")
    ],
    public_key: Annotated[Path, typer.Option(help="The pinned release public key.")],
) -> None:
    """Check artifacts against the signed SHA256SUMS beside them.

    Exit 0 only when every one matches a manifest this key signed; 4 when
    anything is refused.
    """
    done = verify(target, public_key)
    for artifact in done.artifacts:
        print(f"ok  {artifact}")
    print(f"verified {len(done.artifacts)} artifact(s) signed by {done.fingerprint}")


@release_app.command("publish")
def publish_command(
    package: Annotated[
        Path,
        typer.Argument(
            help="The agent package (fleetpatch-agent_<version>_<arch>.deb for apt hosts, "
            "fleetpatch-agent-<version>-<release>.<arch>.rpm for dnf hosts), with the "
            "release's SHA256SUMS and SHA256SUMS.sig beside it."
        ),
    ],
    public_key: Annotated[
        Path | None,
        typer.Option(help="Check the release's signature with this public key before sending."),
    ] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:
    """Publish an agent package to the controller, for agent-update campaigns.

    The package must match its line of SHA256SUMS (checked here, and again
    by the controller on the bytes it receives); with --public-key the
    signature is checked here too. Publish each family's package of a
    version (the .deb and the .rpm of one signed release): an agent-update
    campaign hands each host the package of its package manager, and hosts
    of a family with none published wait. Publishing a version's package
    again with the same file changes nothing; with another one it is
    refused (exit 6).
    """
    from controller.releases.publishing import version_of

    version_of(package.name)  # a wrong name fails here, before any bytes travel
    ready = prepare_publish(package, public_key)
    header = admin_pb2.PublishAgentReleaseHeader(
        artifact=package.name, manifest=ready.manifest, signature=ready.signature, size=ready.size
    )
    try:
        handle = package.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read {package}: {exc.strerror}") from None
    with handle, client(data_dir, controller) as admin:
        published = admin.publish_release(header, iter(lambda: handle.read(CHUNK), b""))
    print(f"published agent release {published.version}: {published.artifact}, "
          f"{render.size(published.size)}, sha256 {published.sha256.hex()}")  # fmt: skip
    if published.key_fingerprint:
        print(f"  the controller checked its signature with release key "
              f"{published.key_fingerprint}")  # fmt: skip
    elif ready.fingerprint:
        print(f"  signature checked here with release key {ready.fingerprint}")
    print(f'  campaigns may now name it: [agent_update] version = "{published.version}"')


def release_doc(published: admin_pb2.AgentRelease) -> dict[str, object]:
    """An agent release as JSON, its digest in hex (as sha256sum writes it)."""
    return jsondoc.doc(published)


@release_app.command("list")
def list_command(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """List the agent releases published to the controller, oldest first."""
    with client(data_dir, controller) as admin:
        found = admin.list_releases()
    if json_out:
        render.print_json([release_doc(r) for r in found])
        return
    render.table(
        ["VERSION", "FAMILY", "ARTIFACT", "SIZE", "SHA256", "RELEASE KEY", "PUBLISHED", "BY"],
        [
            (
                r.version, r.family or "-", r.artifact, render.size(r.size), r.sha256.hex()[:16],
                r.key_fingerprint or "-",
                f"{times.from_timestamp(r.published_at):%Y-%m-%d %H:%M}Z", r.published_by,
            )
            for r in found
        ],
    )  # fmt: skip
    if not found:
        print("no agent releases published (fleetpatch release publish PACKAGE)", file=sys.stderr)


def main() -> None:
    """`python -m controller.cli.release ...`, with `fleetpatch`'s error handling:
    one line and an exit code for every error."""
    try:
        run(release_app, "fleetpatch release", exit_codes_epilog(EXIT_CODES))
    except FleetpatchError as exc:
        print(f"fleetpatch: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
