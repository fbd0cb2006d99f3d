"""`[store] url`, a libpq connection URI, checked before libpq reads it.

libpq reads a URI it is given leniently, and quotes it back in its errors:
with a password holding an unencoded '@', '/', '?' or '#', it takes part
of the password for the host or the database, and says so in its "cannot
connect" line; with a stray '%', it quotes the whole password as an
invalid escape. Such URIs are refused here, before any connection, in a
line that quotes nothing of the URI, and every line that does quote
libpq has the password taken out (`scrub`).

Imports nothing of psycopg: the admin CLI checks the settings file too.
"""

from __future__ import annotations

import re
import urllib.parse

SCHEMES = ("postgresql", "postgres")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODE = "percent-encode the user's and password's special characters (@ %40, / %2F, % %25)"


def problem(url: str) -> str | None:
    """What is wrong with ``url`` as a PostgreSQL URI, in words that quote
    none of it; None when libpq may be given it."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # its words may quote the URL
        return f"is not a URL (unbalanced [ ] around an IPv6 host?); {_ENCODE}"
    if parts.scheme not in SCHEMES:
        return "must be a postgresql:// URL (empty: the embedded SQLite file)"
    if _BAD_ESCAPE.search(url):
        return f"holds a '%' that starts no %XX escape: {_ENCODE}"
    return _misread(parts)


def _misread(parts: urllib.parse.SplitResult) -> str | None:
    """An '@' where libpq would cut the URI elsewhere than meant, or a port
    it would refuse later; quoting none of it."""
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if "@" in userinfo:
        return f"holds an '@' in the user or password: {_ENCODE}"
    if "@" in parts.path or "@" in parts.fragment or (not at and "@" in parts.query):
        return f"holds an '@' after the host (a '/', '?' or '#' in the password?): {_ENCODE}"
    for place in hosts.split(","):
        port = _port_of(place)
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            return "names a port that is not a number from 1 to 65535"
    return None


def _port_of(place: str) -> str:
    """ "h:5432" -> "5432", "[::1]:5432" -> "5432", "h" -> ""."""
    if place.startswith("["):
        return place.partition("]:")[2]
    return place.rpartition(":")[2] if ":" in place else ""


def secrets(url: str) -> list[str]:
    """The password of ``url`` as written and as decoded (longest first),
    whatever libpq would make of the rest."""
    try:
        netloc = urllib.parse.urlsplit(url).netloc
    except ValueError:
        netloc = url.partition("://")[2]
    user, colon, password = netloc.rpartition("@")[0].partition(":")
    found = {f"{user}:{password}", password} if colon else set()
    for pair in url.partition("?")[2].split("&"):
        key, _, value = pair.partition("=")
        if key == "password":
            found.add(value)
    found |= {urllib.parse.unquote(s) for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` (libpq's words, say) without the password of ``url``."""
    for secret in secrets(url):
        text = text.replace(secret, "***")
    return text
