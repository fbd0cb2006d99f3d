"""pki.check_hostnames: the names `controller init` and `renew-server-cert`
put in a server certificate. A name the certificate cannot hold, or that no
resolver would take, is one line naming it (exit 2), before anything is
made; an internationalised one is refused with its A-label (xn--) form."""

from __future__ import annotations

import pytest
from cryptography import x509

from controller.errors import UsageError
from controller.fleet.pki import CertificateAuthority, check_hostnames, names_of


@pytest.mark.parametrize(
    ("given", "held"),
    [
        (["ctl.example.net"], ["ctl.example.net"]),
        (["localhost", "10.0.0.5", "2001:db8::7"], ["localhost", "10.0.0.5", "2001:db8::7"]),
        (["ctl.example.net."], ["ctl.example.net"]),  # the root's dot is not in a certificate
        (["xn--ncode-cta3g.example"], ["xn--ncode-cta3g.example"]),
        (["a-b.c0.example"], ["a-b.c0.example"]),
        (["fleet_ctl.example"], ["fleet_ctl.example"]),  # as certificates issued before hold
        ([f"{'a' * 63}.example"], [f"{'a' * 63}.example"]),
        ([".".join(["a" * 63] * 3 + ["b" * 61])], [".".join(["a" * 63] * 3 + ["b" * 61])]),
    ],
)
def test_names_and_addresses_a_certificate_holds(given: list[str], held: list[str]) -> None:
    assert check_hostnames(given) == held
    issued = CertificateAuthority.create().issue_server(held)
    assert names_of(x509.load_pem_x509_certificate(issued.cert_pem)) == held


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("-oops", "not starting or ending with '-'"),
        ("oops-.example", "not starting or ending with '-'"),
        ("*.example.com", "no '*'"),
        ("a b", "spaces"),
        ("a..b", "empty label"),
        (".example", "empty label"),
        ("", ""),
        (".", ""),
        ("user@ctl.example.com", "letters, digits, '_' and '-'"),
        ("ctl/x", "letters, digits, '_' and '-'"),
        (f"{'a' * 64}.example", "is 64 characters long, at most 63"),
        (".".join(["a" * 63] * 4), "is 255 characters long, at most 253"),
        ("10.0.0.256", "nor an IP address"),
        ("fe80::1%eth0", "zone"),
    ],
)
def test_what_is_not_a_host_name_is_one_line(name: str, said: str) -> None:
    with pytest.raises(UsageError) as refused:
        check_hostnames(["ctl.example.net", name])
    message = str(refused.value)
    assert message.startswith("--hostname ")
    assert said in message
    assert "\n" not in message
    assert len(message) < 300  # a 300-character name is not repeated whole


def test_an_internationalised_name_is_refused_with_its_a_label() -> None:
    with pytest.raises(UsageError) as refused:
        check_hostnames(["ünïcode.example"])
    assert str(refused.value) == (
        "--hostname 'ünïcode.example' is not a host name: give an internationalised name in "
        "its A-label form, as DNS holds it (xn--...; probably xn--ncode-cta3g.example)"
    )


def test_no_a_label_is_offered_where_the_codec_spells_another_name() -> None:
    # Python's codec is IDNA 2003: it maps ß to ss, where DNS (IDNA 2008) keeps it.
    with pytest.raises(UsageError, match=r"as DNS holds it \(xn--\.\.\.\)$"):
        check_hostnames(["faß.example"])


def test_at_least_one_name() -> None:
    with pytest.raises(UsageError, match="at least one name"):
        check_hostnames([])
