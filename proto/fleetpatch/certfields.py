"""What the agent reads of certificates at every check-in, without the
cryptography package: the DER of each certificate of a PEM bundle, the
digest of a CA bundle (`catrust.bundle_hash` is this same function), and a
certificate's validity period.

Loading cryptography costs the agent's daemon about 10 MiB that it keeps
for as long as it runs (issue 18: at most 40 MiB idle), and nothing here
needs it: these are plain reads of bytes the agent checked with
cryptography when it started (`agent.preflight`). Nothing is verified
here; a signature or a key is never judged without cryptography.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime

_PEM = re.compile(
    rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL
)  # fmt: skip
_SEQUENCE, _INTEGER, _UTC_TIME, _GENERALIZED_TIME, _VERSION = 0x30, 0x02, 0x17, 0x18, 0xA0


def pem_certificates(pem: bytes) -> list[bytes]:
    """The DER of every certificate in a PEM bundle, in order; ValueError
    when there is none, or a block is not base64 or does not read as a
    certificate (`validity`)."""
    blocks = _PEM.findall(pem)
    if not blocks:
        raise ValueError("no PEM certificate")
    try:
        ders = [binascii.a2b_base64(b"".join(block.split()), strict_mode=True) for block in blocks]
    except binascii.Error as exc:
        raise ValueError(f"a PEM certificate is not base64: {exc}") from None
    for der in ders:
        validity(der)
    return ders


def bundle_hash(ders: Iterable[bytes]) -> str:
    """A digest of a set of CA certificates (their DER), whatever their order."""
    return hashlib.sha256(b"".join(hashlib.sha256(d).digest() for d in sorted(ders))).hexdigest()


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start, end) of the content of the DER element at ``at``."""
    tag, length = der[at], der[at + 1]
    at += 2
    if length & 0x80:
        octets = length & 0x7F
        if not 0 < octets <= 4 or at + octets > len(der):
            raise ValueError("not DER: a bad length")
        length = int.from_bytes(der[at : at + octets], "big")
        at += octets
    if at + length > len(der):
        raise ValueError("not DER: an element runs past the end")
    return tag, at, at + length


def _expect(der: bytes, at: int, tag: int) -> tuple[int, int]:
    found, start, end = _element(der, at)
    if found != tag:
        raise ValueError(f"not an X.509 certificate: tag {found:#x} where {tag:#x} belongs")
    return start, end


def _time(der: bytes, at: int) -> tuple[datetime, int]:
    """An X.509 Time (RFC 5280 4.1.2.5: UTCTime or GeneralizedTime, in UTC,
    with seconds) and where the next element starts."""
    tag, start, end = _element(der, at)
    text = der[start:end].decode("ascii")
    if tag == _UTC_TIME and len(text) == 13 and text.endswith("Z"):
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif not (tag == _GENERALIZED_TIME and len(text) == 15 and text.endswith("Z")):
        raise ValueError(f"not an X.509 time: {text!r}")
    if not (text[:-1].isascii() and text[:-1].isdigit()):
        raise ValueError(f"not an X.509 time: {text!r}")
    fields = (text[0:4], text[4:6], text[6:8], text[8:10], text[10:12], text[12:14])
    year, month, day, hour, minute, second = (int(f) for f in fields)
    # datetime checks the ranges (ValueError); strptime would load _strptime.
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC), end


def validity(der: bytes) -> tuple[datetime, datetime]:
    """(not before, not after) of a DER certificate, in UTC; ValueError when
    it does not read as one."""
    try:
        start, _ = _expect(der, 0, _SEQUENCE)  # Certificate
        at, _ = _expect(der, start, _SEQUENCE)  # TBSCertificate
        if der[at] == _VERSION:
            at = _element(der, at)[2]
        at = _expect(der, at, _INTEGER)[1]  # serialNumber
        at = _expect(der, at, _SEQUENCE)[1]  # signature (the algorithm)
        at = _expect(der, at, _SEQUENCE)[1]  # issuer
        at, _ = _expect(der, at, _SEQUENCE)  # validity
        not_before, at = _time(der, at)
        not_after, _ = _time(der, at)
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"not an X.509 certificate: {exc}") from None
    return not_before, not_after
