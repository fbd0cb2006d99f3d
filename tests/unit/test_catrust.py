"""What an agent takes from a controller's CA offer (fleetpatch.catrust):
a new CA only with an endorsement by a CA it trusts already; the CA of
its own certificate is kept until it has renewed."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from fleetpatch import catrust
from fleetpatch.identity import Identity, Role

from controller.fleet.pki import CertificateAuthority

OLD = CertificateAuthority.create("old CA")
NEW = CertificateAuthority.create("new CA")
EVIL = CertificateAuthority.create("new CA")  # same name, another key
HOST = Identity(Role.HOST, "h-0123456789abcdef")


def _host_cert(ca: CertificateAuthority) -> x509.Certificate:
    return ca.issue_client(HOST, ec.generate_private_key(ec.SECP256R1()).public_key())


def test_a_new_ca_endorsed_by_a_trusted_one_is_taken() -> None:
    own = _host_cert(OLD)
    taken = catrust.accept([OLD.cert], [OLD.cert, NEW.cert], [OLD.endorse(NEW.cert)], own)
    assert taken == [OLD.cert, NEW.cert]


def test_a_new_ca_without_a_valid_endorsement_is_refused() -> None:
    own = _host_cert(OLD)
    with pytest.raises(catrust.TrustError, match="without an endorsement"):
        catrust.accept([OLD.cert], [OLD.cert, NEW.cert], [], own)
    # Endorsed by a CA the host does not trust.
    with pytest.raises(catrust.TrustError, match="without an endorsement"):
        catrust.accept([OLD.cert], [NEW.cert], [EVIL.endorse(NEW.cert)], own)
    # An endorsement of another key under the same name.
    with pytest.raises(catrust.TrustError, match="without an endorsement"):
        catrust.accept([OLD.cert], [EVIL.cert], [OLD.endorse(NEW.cert)], own)
    with pytest.raises(catrust.TrustError, match="no CA"):
        catrust.accept([OLD.cert], [], [], own)


def test_the_old_ca_is_dropped_once_the_host_is_on_the_new_one() -> None:
    assert catrust.accept([OLD.cert, NEW.cert], [NEW.cert], [], _host_cert(NEW)) == [NEW.cert]
    # Not yet renewed: the CA of its own certificate stays.
    kept = catrust.accept([OLD.cert, NEW.cert], [NEW.cert], [], _host_cert(OLD))
    assert kept == [NEW.cert, OLD.cert]


def test_bundles() -> None:
    pem = catrust.to_pem([OLD.cert, NEW.cert])
    assert catrust.load_bundle(pem) == [OLD.cert, NEW.cert]
    assert catrust.bundle_hash([OLD.cert, NEW.cert]) == catrust.bundle_hash([NEW.cert, OLD.cert])
    assert catrust.bundle_hash([OLD.cert]) != catrust.bundle_hash([OLD.cert, NEW.cert])
    with pytest.raises(ValueError, match="no PEM"):
        catrust.load_bundle(b"nothing")
    assert catrust.issued_by_any(_host_cert(NEW), [OLD.cert, NEW.cert])
    assert not catrust.issued_by_any(_host_cert(EVIL), [OLD.cert, NEW.cert])
