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
    address or a host name that resolvers take: labels of 1 to 63
    characters (an internationalised one as its IDNA form), 253 in all."""
    if bracketed:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return True
    if name.rstrip(".").rpartition(".")[2].isdigit():  # "1.2.3", "999999": shorthand IPv4
        return False
    try:
        encoded = name.encode("idna")  # UnicodeError: an empty or long label
    except UnicodeError:
        return False
    return len(encoded.rstrip(b".")) <= 253


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
