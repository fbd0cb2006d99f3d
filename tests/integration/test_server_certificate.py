"""The controller's TLS server certificate over its life, with real `serve`
processes and the real admin CLI: one ending soon is warned of and exposed
to Prometheus; one that has ended stops `serve` in one line;
`renew-server-cert` issues a new one that agents' CA accepts; a replica
answering to an address of its own gets a certificate for it."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.test_cli_errors import _one_line
from tests.support.controller import BIN, Controller, cli, free_port, ok
from tests.support.waiting import wait_for

NOBODY = 65534


def _server_cert_ending(data_dir: Path, not_after: datetime) -> None:
    """server.pem/.key replaced by a certificate from the data dir's CA for
    the same names, ending at ``not_after``."""
    ca_key = serialization.load_pem_private_key((data_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate((data_dir / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=825))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (data_dir / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )  # fmt: skip
    (data_dir / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _with_metrics(ctl: Controller) -> str:
    config = ctl.data_dir / "controller.toml"
    metrics = f"127.0.0.1:{free_port()}"
    text = config.read_text()
    assert "\n[metrics]\n" in text
    head, _, tail = text.partition("\n[metrics]\n")
    tail = tail.replace('listen = ""', f'listen = "{metrics}"', 1)
    config.write_text(f"{head}\n[metrics]\n{tail}")
    return metrics


def _server_ends(metrics: str) -> float:
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = re.search(
        r'^fleetpatch_certificate_not_after_timestamp_seconds\{certificate="server"\} (\S+)$',
        text, re.M,
    )  # fmt: skip
    assert found, "the gauge is not exposed"
    return float(found.group(1))


def _ends(data_dir: Path) -> float:
    cert = x509.load_pem_x509_certificate((data_dir / "server.pem").read_bytes())
    return cert.not_valid_after_utc.timestamp()


def test_a_server_certificate_from_ending_soon_to_ended_to_renewed(tmp_path):
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    metrics = _with_metrics(ctl)

    # Ten days left: served, said in the log, and exposed for the alert.
    _server_cert_ending(ctl.data_dir, datetime.now(UTC) + timedelta(days=10))
    ctl.start()
    try:
        ctl.admin("hosts", "list")  # the admin CLI accepts it: still valid
        assert _server_ends(metrics) == _ends(ctl.data_dir)
    finally:
        assert ctl.stop() == 0
    warned = [line for line in ctl.log.read_text().splitlines() if "server.pem" in line]
    assert len(warned) == 1, warned
    assert re.search(r"WARNING .*the server certificate \(server.pem\) ends on \S+ \S+Z, in 9 day",
                     warned[0]), warned  # fmt: skip
    assert "fleetpatch controller renew-server-cert" in warned[0]

    # Ended: `serve` refuses in one line, exit 2, rather than serve nobody.
    _server_cert_ending(ctl.data_dir, datetime.now(UTC) - timedelta(hours=1))
    _one_line(ctl.serve_to_exit(), 2, "the server certificate (server.pem) ended on",
              "renew-server-cert")  # fmt: skip

    # Renewed: the same names, 825 days, and the CLI trusts it at once.
    renewed = ok("fleetpatch", "controller", "renew-server-cert", "--data-dir", ctl.data_dir)
    assert "for localhost, 127.0.0.1, ::1: valid until" in renewed.stdout, renewed.stdout
    logged = len(ctl.log.read_text())
    ctl.start()
    try:
        ctl.admin("hosts", "list")
        assert _server_ends(metrics) == _ends(ctl.data_dir)
        assert _ends(ctl.data_dir) > (datetime.now(UTC) + timedelta(days=824)).timestamp()
    finally:
        assert ctl.stop() == 0
    assert "server.pem" not in ctl.log.read_text()[logged:]  # nothing to warn of now


def test_a_replica_answering_to_an_address_of_its_own_gets_a_certificate_for_it(tmp_path):
    """A second data dir copied from the first, listening on 127.0.0.2,
    which the first's certificate does not name: the admin CLI refuses it
    (exit 7, TLS trust) until `renew-server-cert` there adds the address."""
    first = Controller(tmp_path / "a")
    first.init()
    second = Controller(tmp_path / "b", host="127.0.0.2")
    shutil.copytree(first.data_dir, second.data_dir,
                    ignore=shutil.ignore_patterns("controller.db*", "endpoints.json"))  # fmt: skip
    config = second.data_dir / "controller.toml"
    config.write_text(config.read_text().replace(first.address, second.address))
    second.start()
    try:
        refused = cli("fleetpatch", "hosts", "list", "--data-dir", second.data_dir,
                      "--controller", second.address)  # fmt: skip
        _one_line(refused, 7, "TLS")
    finally:
        assert second.stop() == 0
    renewed = ok("fleetpatch", "controller", "renew-server-cert", "--data-dir", second.data_dir,
                 "--hostname", "localhost,127.0.0.2")  # fmt: skip
    assert "for localhost, 127.0.0.1, ::1, 127.0.0.2: valid until" in renewed.stdout
    second.start()
    try:
        listed = ok("fleetpatch", "hosts", "list", "--data-dir", second.data_dir,
                    "--controller", second.address, "--json")  # fmt: skip
        assert listed.stdout.strip() == "[]"
    finally:
        assert second.stop() == 0


def test_run_as_root_on_the_services_data_dir_it_leaves_files_the_service_reads():
    """The packaged controller runs as its own user, whose data dir it is;
    an operator runs `renew-server-cert` (or `rotate-key`) as root. The
    new key used to be root's, 0600: the service could not read it and
    would not start. Files written in a data dir someone else owns are
    now given to that owner; `serve` as that user starts."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv(1) to run the controller as another user")
    # Not under pytest's own temp dir: root's, which nobody else may enter.
    parent = Path(tempfile.mkdtemp(prefix="fp-owned-"))
    parent.chmod(0o755)
    try:
        _served_by_its_owner(Controller(parent / "ctl"))
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _served_by_its_owner(ctl: Controller) -> None:
    ctl.init()
    for path in (ctl.data_dir, *ctl.data_dir.iterdir()):
        os.chown(path, NOBODY, NOBODY)
    ok("fleetpatch", "controller", "renew-server-cert", "--data-dir", ctl.data_dir)
    ok("fleetpatch", "controller", "rotate-key", "--data-dir", ctl.data_dir)
    for name in ("server.key", "server.pem", "signing.key"):
        found = (ctl.data_dir / name).stat()
        assert (found.st_uid, found.st_gid) == (NOBODY, NOBODY), name
    assert (ctl.data_dir / "server.key").stat().st_mode & 0o777 == 0o600
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    with subprocess.Popen(
        [*as_nobody, str(BIN / "fleetpatch"), "controller", "serve", "--data-dir",
         str(ctl.data_dir), "--listen", ctl.address],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    ) as serving:  # fmt: skip
        try:
            wait_for("the controller, as the data dir's owner, to serve",
                     lambda: (ctl.data_dir / "endpoints.json").exists() or serving.poll(),
                     timeout=60)  # fmt: skip
            assert serving.poll() is None, serving.stderr.read() if serving.stderr else ""
            ctl.admin("hosts", "list")
        finally:
            serving.terminate()
            serving.wait(timeout=30)
