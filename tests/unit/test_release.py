"""Release signing: keygen, SHA256SUMS + Ed25519 signature, and every refusal
of `verify`, through the functions and through the CLI's one-line errors."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controller.cli import release as release_cli
from controller.errors import Conflict, FleetpatchError, Refused, UsageError
from controller.releases import signed as release


@dataclass
class Release:
    dir: Path
    key: Path
    pub: Path
    artifacts: list[Path]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "release.key"
    pub, _ = release.keygen(key)
    return key, pub


@pytest.fixture
def signed(tmp_path: Path, keys: tuple[Path, Path]) -> Release:
    dist = tmp_path / "dist"
    dist.mkdir()
    artifacts = []
    for name, content in (("a_1.0_amd64.deb", b"agent"), ("b_1.0_amd64.deb", b"controller" * 999)):
        (dist / name).write_bytes(content)
        artifacts.append(dist / name)
    release.sign_artifacts(artifacts, keys[0])
    return Release(dist, keys[0], keys[1], artifacts)


def run_cli(*args: str | Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """release_cli.main() in-process, as `fleetpatch release ...` runs it."""
    old = sys.argv
    sys.argv = ["fleetpatch-release", *(str(a) for a in args)]
    try:
        with pytest.raises(SystemExit) as exited:
            release_cli.main()
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def assert_one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- keygen ------------------------------------------------------------------------


def test_keygen_writes_a_private_key_0600_and_a_public_key(tmp_path):
    key = tmp_path / "release.key"
    pub, name = release.keygen(key)
    assert pub == tmp_path / "release.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert name == release.fingerprint(release.load_public_key(pub))
    assert name.startswith("SHA256:")
    assert len(name) == len("SHA256:") + 32
    private = release.load_private_key(key)
    assert release.fingerprint(private.public_key()) == name


def test_keygen_private_key_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        release.keygen(tmp_path / "k.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600


def test_keygen_refuses_to_overwrite_a_private_key(tmp_path, keys):
    key, _pub = keys
    before = key.read_bytes()
    with pytest.raises(Conflict, match="already exists; refusing to overwrite"):
        release.keygen(key)
    assert key.read_bytes() == before


def test_keygen_refuses_when_only_the_public_key_exists_and_writes_nothing(tmp_path):
    (tmp_path / "r.pub").write_text("someone's key")
    with pytest.raises(Conflict, match=r"r\.pub already exists"):
        release.keygen(tmp_path / "r.key")
    assert not (tmp_path / "r.key").exists()
    assert (tmp_path / "r.pub").read_text() == "someone's key"


def test_keygen_public_key_path_for_other_names(tmp_path):
    assert release.default_public_path(tmp_path / "signer") == tmp_path / "signer.pub"
    pub, _ = release.keygen(tmp_path / "k", tmp_path / "elsewhere.pem")
    assert pub == tmp_path / "elsewhere.pem"
    assert pub.is_file()


def test_keygen_cli_refusal_is_one_line_exit_6(keys, capsys):
    code, _, err = run_cli("keygen", keys[0], capsys=capsys)
    assert code == Conflict.exit_code == 6
    assert_one_line(err, "refusing to overwrite")


# -- sign --------------------------------------------------------------------------


def test_manifest_is_what_sha256sum_writes(signed):
    text = (signed.dir / "SHA256SUMS").read_text()
    expected = "".join(
        f"{hashlib.sha256(a.read_bytes()).hexdigest()}  {a.name}\n" for a in signed.artifacts
    )
    assert text == expected
    if shutil.which("sha256sum"):
        done = subprocess.run(
            ["sha256sum", "--strict", "-c", "SHA256SUMS"],
            cwd=signed.dir, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert len((signed.dir / "SHA256SUMS.sig").read_bytes()) == 64


def test_signature_verifies_with_openssl_alone(signed):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    argv = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(signed.pub), "-rawin"]
    argv += ["-in", str(signed.dir / "SHA256SUMS"), "-sigfile", str(signed.dir / "SHA256SUMS.sig")]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    (signed.dir / "SHA256SUMS").write_text("0" * 64 + "  evil.deb\n")
    assert subprocess.run(argv, capture_output=True, check=False).returncode != 0


def test_sign_refuses_a_private_key_others_can_read(signed):
    signed.key.chmod(0o640)
    with pytest.raises(UsageError, match=r"accessible by others \(mode 0640\); chmod 600"):
        release.sign_artifacts(signed.artifacts, signed.key)


def test_sign_refuses_something_that_is_not_a_key(signed, tmp_path):
    bogus = tmp_path / "bogus.key"
    bogus.write_text("not a key")
    bogus.chmod(0o600)
    with pytest.raises(UsageError, match="not an unencrypted PEM private key"):
        release.sign_artifacts(signed.artifacts, bogus)


def test_sign_refuses_another_kind_of_key(signed, tmp_path):
    other = tmp_path / "ec.key"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    other.write_bytes(pem)
    other.chmod(0o600)
    with pytest.raises(UsageError, match="not an Ed25519 key"):
        release.sign_artifacts(signed.artifacts, other)


def test_sign_refuses_artifacts_in_two_directories(signed, tmp_path):
    stray = tmp_path / "stray.deb"
    stray.write_bytes(b"x")
    with pytest.raises(UsageError, match="in one directory"):
        release.sign_artifacts([*signed.artifacts, stray], signed.key)


@pytest.mark.parametrize("name", ["SHA256SUMS", "SHA256SUMS.sig", ".hidden", "new\nline"])
def test_sign_refuses_names_a_manifest_cannot_hold(signed, name):
    path = signed.dir / name
    path.write_bytes(b"x")
    with pytest.raises(UsageError, match="cannot sign an artifact named"):
        release.sign_artifacts([path], signed.key)


def test_sign_replaces_the_manifest_with_exactly_the_named_artifacts(signed):
    release.sign_artifacts(signed.artifacts[:1], signed.key)
    assert release.parse_manifest((signed.dir / "SHA256SUMS").read_text(), Path("m")) == {
        signed.artifacts[0].name: hashlib.sha256(b"agent").hexdigest()
    }


# -- verify: what passes -----------------------------------------------------------


def test_verify_a_directory_checks_every_artifact(signed):
    done = release.verify(signed.dir, signed.pub)
    assert done.artifacts == tuple(sorted(signed.artifacts))
    assert done.fingerprint == release.fingerprint(release.load_public_key(signed.pub))


def test_verify_one_artifact_ignores_the_others(signed):
    signed.artifacts[1].write_bytes(b"changed, but not the one we install")
    done = release.verify(signed.artifacts[0], signed.pub)
    assert done.artifacts == (signed.artifacts[0],)


def test_verify_cli_prints_each_artifact(signed, capsys):
    code, out, err = run_cli("verify", signed.dir, "--public-key", signed.pub, capsys=capsys)
    assert code == 0, err
    assert f"ok  {signed.artifacts[0]}" in out
    assert "verified 2 artifact(s) signed by SHA256:" in out


# -- verify: each refusal ----------------------------------------------------------


def _modified_artifact(r: Release) -> tuple[Path, str]:
    r.artifacts[0].write_bytes(b"agent with a backdoor")
    return r.artifacts[0], "does not match the signed manifest"


def _modified_artifact_in_dir(r: Release) -> tuple[Path, str]:
    r.artifacts[1].write_bytes(b"controller" * 998 + b"backdoor!!")
    return r.dir, "b_1.0_amd64.deb does not match the signed manifest"


def _wrong_key(r: Release) -> tuple[Path, str]:
    other = r.dir.parent / "other.key"
    release.keygen(other)
    release.sign_artifacts(r.artifacts, other)
    return r.dir, "is not signed by release key"


def _tampered_manifest(r: Release) -> tuple[Path, str]:
    manifest = r.dir / "SHA256SUMS"
    evil = hashlib.sha256(b"evil").hexdigest()
    r.artifacts[0].write_bytes(b"evil")
    manifest.write_text(manifest.read_text().replace(manifest.read_text()[:64], evil))
    return r.artifacts[0], "is not signed by release key"


def _truncated_signature(r: Release) -> tuple[Path, str]:
    sig = r.dir / "SHA256SUMS.sig"
    sig.write_bytes(sig.read_bytes()[:63])
    return r.dir, "is not signed by release key"


def _missing_signature(r: Release) -> tuple[Path, str]:
    (r.dir / "SHA256SUMS.sig").unlink()
    return r.artifacts[0], "no signature: "


def _missing_manifest(r: Release) -> tuple[Path, str]:
    (r.dir / "SHA256SUMS").unlink()
    return r.dir, "no SHA256SUMS in"


def _artifact_not_in_manifest(r: Release) -> tuple[Path, str]:
    extra = r.dir / "c_1.0_amd64.deb"
    extra.write_bytes(b"unsigned")
    return extra, "c_1.0_amd64.deb is not listed in"


def _unlisted_file_in_dir(r: Release) -> tuple[Path, str]:
    (r.dir / "c_1.0_amd64.deb").write_bytes(b"unsigned")
    return r.dir, "c_1.0_amd64.deb is not listed in"


def _listed_artifact_missing(r: Release) -> tuple[Path, str]:
    r.artifacts[1].unlink()
    return r.dir, "b_1.0_amd64.deb is listed in SHA256SUMS but missing"


REFUSALS = [
    _modified_artifact, _modified_artifact_in_dir, _wrong_key, _tampered_manifest,
    _truncated_signature, _missing_signature, _missing_manifest, _artifact_not_in_manifest,
    _unlisted_file_in_dir, _listed_artifact_missing,
]  # fmt: skip


@pytest.mark.parametrize("spoil", REFUSALS, ids=lambda f: f.__name__.strip("_"))
def test_verify_refuses(signed, spoil):
    target, needle = spoil(signed)
    with pytest.raises(Refused) as refused:
        release.verify(target, signed.pub)
    assert needle in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("spoil", REFUSALS, ids=lambda f: f.__name__.strip("_"))
def test_verify_cli_refusal_is_one_line_and_exit_4(signed, spoil, capsys):
    target, needle = spoil(signed)
    code, out, err = run_cli("verify", target, "--public-key", signed.pub, capsys=capsys)
    assert code == Refused.exit_code == 4
    assert_one_line(err, "fleetpatch: error:", needle)
    assert "ok  " not in out


def test_verify_refuses_a_manifest_line_it_did_not_write(signed):
    # Signed, so the signature passes: the content is what is refused.
    key = release.load_private_key(signed.key)
    text = b"garbage\n"
    (signed.dir / "SHA256SUMS").write_bytes(text)
    (signed.dir / "SHA256SUMS.sig").write_bytes(key.sign(text))
    with pytest.raises(Refused, match="line 1 is not a SHA256SUMS line"):
        release.verify(signed.dir, signed.pub)


def test_verify_with_an_unreadable_public_key_is_a_usage_error(signed, tmp_path, capsys):
    with pytest.raises(UsageError, match="does not exist"):
        release.verify(signed.dir, tmp_path / "nope.pub")
    code, _, err = run_cli("verify", signed.dir, "--public-key", signed.key, capsys=capsys)
    assert code == 2
    assert_one_line(err, "is not a PEM public key")


def test_verify_a_missing_target_is_a_usage_error(signed):
    with pytest.raises(UsageError, match="does not exist"):
        release.verify(signed.dir / "nope.deb", signed.pub)


def test_errors_are_fleetpatch_errors():
    for error in (Conflict, Refused, UsageError):
        assert issubclass(error, FleetpatchError)


def test_python_m_entry_point_prints_one_line_not_a_traceback(signed):
    (signed.dir / "SHA256SUMS.sig").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "controller.cli.release", "verify", str(signed.dir),
         "--public-key", str(signed.pub)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 4
    assert_one_line(done.stderr, "no signature")
