"""Controller addresses, as both ends spell them: HOST:PORT, [IPv6]:PORT,
and for the callers (agents, the admin CLI, the simulator) several of
them comma-separated: replicas that share one database.

An address is checked whole where it is given (a setting, an option), so
that a typo is a bad setting now, not a controller that "cannot be
reached" later: gRPC would take a port above 65535 modulo 65536, a
missing port as 443, an unbracketed IPv6 address as a name to resolve.
Errors are `AddressError` (a ValueError); each end words its own line.
"""

from __future__ import annotations

import ipaddress
import re

# Not in a host name, nor an IP literal (a zone id, "%eth0", is).
_NOT_IN_A_HOST = frozenset("[]/,@\"'\\")


class AddressError(ValueError):
    """Not an address (the message names it)."""


def split_address(address: str, *, listening: bool = False) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT -> (host, port). Port 0 (any free port) only
    when ``listening``."""
    host, sep, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    name = host[1:-1] if bracketed else host
    lowest = 0 if listening else 1
    if (
        not sep
        or not name
        or not (port.isascii() and port.isdigit() and lowest <= int(port) <= 65535)
        or any(c.isspace() or c in _NOT_IN_A_HOST for c in name)
        or (":" in name and not bracketed)
        or not _host(name, bracketed)
    ):
        ports = "" if listening else ", port 1-65535"
        raise AddressError(f"{address!r} is not an address (use HOST:PORT{ports})")
    return name, int(port)


def _host(name: str, bracketed: bool) -> bool:
    """Whether ``name`` is an IPv6 address (in brackets), or an IPv4
    address or a host name that resolvers take (`host_problem`)."""
    return is_ipv6(name) if bracketed else not host_problem(name)


def is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


# What a host name holds, as its IDNA form: letters, digits, '-', '_', '.'.
_NAME_CHARACTERS = re.compile(rb"[A-Za-z0-9_.-]+")


def host_problem(host: str, *, characters: bool = False) -> str:
    """Why no resolver would take ``host``, "" when one could: an IP
    address, or a name of labels of 1 to 63 characters (an
    internationalised one as its IDNA form), 253 in all, whose last label
    is not all digits (libc reads "1.2.3" and "999999" as shorthand IPv4,
    another host than meant). ``characters``: the name must also hold only
    letters, digits, '-', '_' and '.'."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return ""
    labels = host.removesuffix(".").split(".")
    why = ""
    if not all(labels):
        why = "a label is empty"
    elif any(len(label) > 63 for label in labels):
        why = "a label is longer than 63 characters"
    elif labels[-1].isdigit():
        why = "it is neither a dotted-quad IPv4 address nor a name"
    elif (encoded := _idna(host)) is None:
        why = "it cannot be IDNA-encoded"
    elif len(encoded.removesuffix(b".")) > 253:
        why = "it is longer than 253 characters"
    elif characters and not _NAME_CHARACTERS.fullmatch(encoded):
        why = "only letters, digits, '-', '_' and '.' may appear in it"
    return why


def _idna(host: str) -> bytes | None:
    try:
        return host.encode("idna")
    except UnicodeError:
        return None


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_addresses(spelled: str) -> list[str]:
    """ "a:7443, b:7443" -> ["a:7443", "b:7443"]: each one checked as an
    address to call, one given twice kept once."""
    found = list(dict.fromkeys(a.strip() for a in spelled.split(",") if a.strip()))
    if not found:
        raise AddressError(f"{spelled!r} names no address (use HOST:PORT[,HOST:PORT...])")
    for address in found:
        split_address(address)
    return found


def port_after(address: str, *, listening: bool = False) -> str:
    """The enrollment listener's default address: the port after
    ``address``'s (an ephemeral port stays ephemeral)."""
    host, port = split_address(address, listening=listening)
    if port == 65535:
        raise AddressError(f"{address!r} leaves no port above it for enrollment")
    return join_address(host, port + 1 if port else 0)
