"""How the daemon imports grpcio and hashlib (`lean_imports`), in a module
of its own that imports nothing of the agent's: benchmarks/agent_footprint.py
calls it for its bare grpcio client, which must not load the agent's
modules (agent.daemon brings sqlite3)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType


def lean_imports() -> None:
    """Import grpcio and hashlib as the daemon needs them: without OpenSSL
    and without grpc.aio (the daemon's start-up, before anything imports
    them; too late once they are imported).

    OpenSSL costs the idle daemon about 4.5 MiB (libcrypto, libssl, _ssl,
    _hashlib and OpenSSL's set-up) and neither needs it here: grpcio does
    its TLS with its own BoringSSL, but imports asyncio, which imports ssl
    when it can; hashlib takes OpenSSL's digests when it can, else Python's
    own (the same digests; SHA-256 about half as fast here, 137 against 308
    MB/s, a tenth of a second more for a 30 MB package). Both do without by
    their own `try: import`, so ssl and _hashlib are hidden while grpcio and
    hashlib are imported, then shown again: what imports ssl later (an https
    health check's urllib.request) gets it, with OpenSSL, as ever.

    hashlib keeps OpenSSL where Python has no digests of its own: Fedora's
    and RHEL's Python (the RPM's interpreter) has only blake2 built in, its
    other digests come from OpenSSL alone (FIPS).

    grpc.aio, grpcio's asyncio API, costs about 1 MiB of Python objects and
    the agent uses the threaded one: grpc's `__init__` ends by importing
    it, so an empty stand-in takes its place for that import, and is gone
    after; a later `import grpc.aio` imports the real one."""
    hide = []
    if "asyncio" not in sys.modules and "ssl" not in sys.modules:
        hide.append("ssl")
    if "hashlib" not in sys.modules and "_hashlib" not in sys.modules and builtin_digests():
        hide.append("_hashlib")
    for name in hide:
        sys.modules[name] = None  # type: ignore[assignment]  # `import` raises ImportError
    stand_in = None if "grpc" in sys.modules else ModuleType("grpc.aio")
    if stand_in is not None:
        sys.modules["grpc.aio"] = stand_in
    try:
        import hashlib  # noqa: F401

        import grpc  # noqa: F401
    finally:
        for name in hide:
            del sys.modules[name]
        if stand_in is not None:
            if sys.modules.get("grpc.aio") is stand_in:
                del sys.modules["grpc.aio"]
            grpc_module = sys.modules.get("grpc")
            if grpc_module is not None and getattr(grpc_module, "aio", None) is stand_in:
                del grpc_module.aio


#: The modules of Python's own digests, every one that hashlib sets up at
#: import (3.12 merged _sha256 and _sha512 into _sha2).
BUILTIN_DIGESTS = (
    ("_md5", "_sha1", "_sha256", "_sha512", "_blake2", "_sha3")
    if sys.version_info < (3, 12)
    else ("_md5", "_sha1", "_sha2", "_blake2", "_sha3")
)


def builtin_digests(modules: Sequence[str] = BUILTIN_DIGESTS) -> bool:
    """Whether this Python has every digest of its own, so that hashlib
    without OpenSSL lacks none (and logs no error for one it lacks)."""
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in modules)
