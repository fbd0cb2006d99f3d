"""Rebuild an .rpm of an installed package from the files on the host.

RPM has no dpkg-repack, and hosts have no rpmbuild; an agent installed from
a file (`dnf install ./fleetpatch-agent-...rpm`) is in no repository and no
dnf cache, so before this its first self-update had no copy to roll back to.
The package is written here, in Python, as rpmbuild writes one:

- the header: every tag the installed package's header has that a package
  carries (name, version, dependencies, scriptlets and their interpreters,
  descriptions: `rpm -q --xml`, which escapes every value), with the file
  list rebuilt from the files as they are now (content digests, sizes and
  mtimes from the disk; a file gone from the disk becomes %ghost), and the
  payload's format, compressor and digest;
- the payload: a gzip-compressed cpio (newc) archive of the files;
- the signature header: the header's SHA-1 and SHA-256, the MD5 and size
  of header and payload, as an unsigned rpmbuild package has.

Anything unusual returns None and the caller has no copy (as before): a
package with triggers, files over 4 GiB, a file whose type is not the one
rpm installed, a query that fails. What is produced is checked by the
caller like any other copy (`rpm -qp` reads its name, arch and version,
`rpm -K` its digests). It is unsigned: a host that requires signatures on
every package (`%_pkgverify_level signature`) cannot install it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import stat
import struct
import tempfile
import xml.etree.ElementTree as ET
from base64 import b64decode
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.backends import subp

log = logging.getLogger(__name__)
Runner = Callable[..., subp.Result]
ENV = {"LC_ALL": "C.UTF-8"}

# Header entry types (rpmtag.h).
INT16, INT32, STRING, BIN, STRING_ARRAY, I18NSTRING = 3, 4, 6, 7, 8, 9
REGION_SIGNATURES, REGION_IMMUTABLE = 62, 63
HEADER_MAGIC = b"\x8e\xad\xe8\x01\x00\x00\x00\x00"
LEAD_MAGIC = b"\xed\xab\xee\xdb"
GHOST = 1 << 6  # RPMFILE_GHOST
SHA256_ALGO = 8  # PGPHASHALGO_SHA256

#: Tags copied from the installed header: `rpm -q --xml` name -> (tag,
#: type). Strings of one or several values are told apart by the type.
COPIED = {
    "headeri18ntable": (100, STRING_ARRAY), "name": (1000, STRING), "version": (1001, STRING),
    "release": (1002, STRING), "epoch": (1003, INT32), "summary": (1004, I18NSTRING),
    "description": (1005, I18NSTRING), "buildtime": (1006, INT32), "buildhost": (1007, STRING),
    "vendor": (1011, STRING), "license": (1014, STRING), "packager": (1015, STRING),
    "group": (1016, I18NSTRING), "url": (1020, STRING), "os": (1021, STRING),
    "arch": (1022, STRING), "prein": (1023, STRING), "postin": (1024, STRING),
    "preun": (1025, STRING), "postun": (1026, STRING), "sourcerpm": (1044, STRING),
    "providename": (1047, STRING_ARRAY), "requireflags": (1048, INT32),
    "requirename": (1049, STRING_ARRAY), "requireversion": (1050, STRING_ARRAY),
    "conflictflags": (1053, INT32), "conflictname": (1054, STRING_ARRAY),
    "conflictversion": (1055, STRING_ARRAY), "rpmversion": (1064, STRING),
    "changelogtime": (1080, INT32), "changelogname": (1081, STRING_ARRAY),
    "changelogtext": (1082, STRING_ARRAY),
    "preinprog": (1085, STRING), "postinprog": (1086, STRING), "preunprog": (1087, STRING),
    "postunprog": (1088, STRING), "obsoletename": (1090, STRING_ARRAY),
    "provideflags": (1112, INT32), "provideversion": (1113, STRING_ARRAY),
    "obsoleteflags": (1114, INT32), "obsoleteversion": (1115, STRING_ARRAY),
    "optflags": (1122, STRING), "platform": (1132, STRING), "pretrans": (1151, STRING),
    "posttrans": (1152, STRING), "pretransprog": (1153, STRING), "posttransprog": (1154, STRING),
    "preinflags": (5020, INT32), "postinflags": (5021, INT32), "preunflags": (5022, INT32),
    "postunflags": (5023, INT32), "pretransflags": (5024, INT32),
    "posttransflags": (5025, INT32), "ordername": (5035, STRING_ARRAY),
    "orderversion": (5036, STRING_ARRAY), "orderflags": (5037, INT32),
    "recommendname": (5046, STRING_ARRAY), "recommendversion": (5047, STRING_ARRAY),
    "recommendflags": (5048, INT32), "suggestname": (5049, STRING_ARRAY),
    "suggestversion": (5050, STRING_ARRAY), "suggestflags": (5051, INT32),
    "supplementname": (5052, STRING_ARRAY), "supplementversion": (5053, STRING_ARRAY),
    "supplementflags": (5054, INT32), "enhancename": (5055, STRING_ARRAY),
    "enhanceversion": (5056, STRING_ARRAY), "enhanceflags": (5057, INT32),
    "encoding": (5062, STRING), "modularitylabel": (5096, STRING),
}  # fmt: skip
#: Per-file tags: copied as installed, in the header's file order.
FILE_COPIED = {
    "filerdevs": (1033, INT16),
    "fileusername": (1039, STRING_ARRAY), "filegroupname": (1040, STRING_ARRAY),
    "fileverifyflags": (1045, INT32), "filelangs": (1097, STRING_ARRAY),
    "dirindexes": (1116, INT32), "basenames": (1117, STRING_ARRAY),
    "dirnames": (1118, STRING_ARRAY), "filecolors": (1140, INT32), "fileclass": (1141, INT32),
    "classdict": (1142, STRING_ARRAY), "filedependsx": (1143, INT32),
    "filedependsn": (1144, INT32), "dependsdict": (1145, INT32),
    "filecaps": (5010, STRING_ARRAY),
}  # fmt: skip
#: Rebuilt from the disk: sizes, modes, mtimes, digests, link targets.
SIZE, FILESIZES, FILEMODES, FILEMTIMES, FILEDIGESTS, FILELINKTOS, FILEFLAGS = (
    1009, 1028, 1030, 1034, 1035, 1036, 1037)  # fmt: skip
FILEDEVICES, FILEINODES, FILEDIGESTALGO = 1095, 1096, 5011
PAYLOADFORMAT, PAYLOADCOMPRESSOR, PAYLOADFLAGS = 1124, 1125, 1126
PAYLOADDIGEST, PAYLOADDIGESTALGO = 5092, 5093
#: A package with any of these is left alone (None): triggers run against
#: other packages, and files of 4 GiB and more need another payload format.
REFUSED = ("triggerscripts", "filetriggerscripts", "transfiletriggerscripts", "longfilesizes")

Value = list[str] | list[int] | bytes


def installed_header(nevra: str, run: Runner = subp.run) -> dict[str, Value] | None:
    """The installed package's header as `rpm -q --xml` gives it: tag name
    (lower case) -> its values; None when rpm does not show exactly one
    such package."""
    done = run(["rpm", "-q", "--xml", nevra], env=ENV, check=False, timeout=120)
    if done.returncode != 0 or done.stdout.count("<rpmHeader>") != 1:
        return None
    try:
        root = ET.fromstring(done.stdout)  # noqa: S314 - rpm's own output
    except ET.ParseError:
        return None
    found: dict[str, Value] = {}
    for tag in root.iter("rpmTag"):
        kinds = {child.tag for child in tag}
        name = tag.get("name", "").lower()
        if kinds == {"integer"}:
            found[name] = [int(child.text or "0") for child in tag]
        elif kinds == {"string"}:
            found[name] = [child.text or "" for child in tag]
        elif kinds == {"base64"}:
            found[name] = b"".join(b64decode(child.text or "") for child in tag)
    return found


@dataclass(frozen=True)
class _Entry:
    tag: int
    kind: int
    value: Value


def _strings(header: dict[str, Value], name: str) -> list[str]:
    value = header.get(name, [])
    return [str(v) for v in value] if isinstance(value, list) else []


def _ints(header: dict[str, Value], name: str) -> list[int]:
    value = header.get(name, [])
    return [int(v) for v in value] if isinstance(value, list) else []


def header_blob(entries: list[_Entry], region: int) -> bytes:
    """A header with ``region`` as its region tag (its trailer last), the
    entries sorted by tag, each aligned as rpm aligns it."""
    entries = sorted(entries, key=lambda e: e.tag)
    index, data = [], bytearray()
    for entry in entries:
        count, payload = _encode(entry)
        align = {INT16: 2, INT32: 4}.get(entry.kind, 1)
        data.extend(b"\0" * (-len(data) % align))
        index.append(struct.pack(">IIiI", entry.tag, entry.kind, len(data), count))
        data.extend(payload)
    # The region: its own entry first, its trailer (an entry pointing back
    # over the whole index) at the end of the data.
    count = len(entries) + 1
    trailer = struct.pack(">IIiI", region, BIN, -count * 16, 16)
    index.insert(0, struct.pack(">IIiI", region, BIN, len(data), 16))
    data.extend(trailer)
    return HEADER_MAGIC + struct.pack(">II", count, len(data)) + b"".join(index) + bytes(data)


def _encode(entry: _Entry) -> tuple[int, bytes]:
    value = entry.value
    if entry.kind == BIN:
        assert isinstance(value, bytes)  # noqa: S101
        return len(value), value
    assert isinstance(value, list)  # noqa: S101
    if entry.kind == INT16:
        return len(value), b"".join(struct.pack(">H", int(v) & 0xFFFF) for v in value)
    if entry.kind == INT32:
        return len(value), b"".join(struct.pack(">I", int(v) & 0xFFFFFFFF) for v in value)
    texts = [str(v).encode() + b"\0" for v in value]
    if entry.kind == STRING:
        return 1, texts[0]
    return len(texts), b"".join(texts)


@dataclass(frozen=True)
class _File:
    path: str  # as installed
    source: str  # where it is read (under the root)
    mode: int
    size: int
    mtime: int
    digest: str
    linkto: str
    ghost: bool


def _files(header: dict[str, Value], root: Path) -> list[_File] | None:
    """The package's files as they are on disk now (under ``root``); None
    when one is not of the type rpm installed (replaced by something else)."""
    dirs, bases = _strings(header, "dirnames"), _strings(header, "basenames")
    indexes, modes = _ints(header, "dirindexes"), _ints(header, "filemodes")
    flags = _ints(header, "fileflags")
    if not (len(bases) == len(indexes) == len(modes) == len(flags)):
        return None
    files = []
    for base, index, mode, flag in zip(bases, indexes, modes, flags, strict=True):
        path = dirs[index] + base
        source = str(root / path.lstrip("/"))
        if flag & GHOST:
            files.append(_File(path, source, mode & 0xFFFF, 0, 0, "", "", True))
            continue
        try:
            info = os.lstat(source)
        except OSError:  # gone from the disk: a %ghost
            files.append(_File(path, source, mode & 0xFFFF, 0, 0, "", "", True))
            continue
        if stat.S_IFMT(info.st_mode) != stat.S_IFMT(mode & 0xFFFF):
            log.info("not repacking: %s is not of the type rpm installed", path)
            return None
        digest, linkto, size = "", "", 0
        if stat.S_ISREG(info.st_mode):
            if info.st_size >= 1 << 32:
                return None
            digest, size = _sha256(source), info.st_size
        elif stat.S_ISLNK(info.st_mode):
            linkto = os.readlink(source)
            size = len(os.fsencode(linkto))
        new_mode = stat.S_IFMT(mode & 0xFFFF) | stat.S_IMODE(info.st_mode)
        files.append(_File(path, source, new_mode, size, int(info.st_mtime), digest, linkto, False))
    return files


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _cpio_entry(out: BinaryIO, name: bytes, mode: int, size: int, mtime: int, ino: int) -> int:
    """One newc header and name (padded to 4); returns its length."""
    head = b"070701" + b"".join(
        b"%08X" % v for v in (ino, mode, 0, 0, 1, mtime, size, 0, 0, 0, 0, len(name) + 1, 0)
    )
    written = head + name + b"\0"
    written += b"\0" * (-len(written) % 4)
    out.write(written)
    return len(written)


def _payload(files: list[_File], out: BinaryIO) -> int:
    """The cpio (newc) archive of the files that are not %ghost, in the
    header's order, into ``out``; returns its uncompressed size."""
    total = 0
    for ino, f in enumerate(files, start=1):
        if f.ghost:
            continue
        name = b"." + os.fsencode(f.path)
        if stat.S_ISREG(f.mode):
            total += _cpio_entry(out, name, f.mode, f.size, f.mtime, ino)
            with open(f.source, "rb") as handle:
                left = f.size
                while left > 0:
                    chunk = handle.read(min(left, 1 << 20))
                    if not chunk:
                        raise OSError(f"{f.path} shrank while it was read")
                    out.write(chunk)
                    left -= len(chunk)
            total += f.size
        elif stat.S_ISLNK(f.mode):
            target = os.fsencode(f.linkto)
            total += _cpio_entry(out, name, f.mode, len(target), f.mtime, ino)
            out.write(target)
            total += len(target)
        else:
            total += _cpio_entry(out, name, f.mode, 0, f.mtime, ino)
            continue
        pad = -total % 4
        out.write(b"\0" * pad)
        total += pad
    total += _cpio_entry(out, b"TRAILER!!!", 0, 0, 0, 0)
    return total


def _main_entries(
    header: dict[str, Value], files: list[_File], payload_sha256: str
) -> list[_Entry]:
    entries = []
    for name, (tag, kind) in COPIED.items():
        value = header.get(name)
        if value is None or isinstance(value, bytes) or not value:
            continue
        # A scriptlet interpreter with arguments is an array.
        entries.append(_Entry(tag, STRING_ARRAY if kind == STRING and len(value) > 1 else kind,
                              value))  # fmt: skip
    for name, (tag, kind) in FILE_COPIED.items():
        value = header.get(name)
        if isinstance(value, list) and value:
            entries.append(_Entry(tag, kind, value))
    flags = _ints(header, "fileflags")
    entries += [
        _Entry(FILEFLAGS, INT32,
               [fl | (GHOST if f.ghost else 0) for fl, f in zip(flags, files, strict=True)]),
        _Entry(SIZE, INT32, [sum(f.size for f in files)]),
        _Entry(FILESIZES, INT32, [f.size for f in files]),
        _Entry(FILEMODES, INT16, [f.mode for f in files]),
        _Entry(FILEMTIMES, INT32, [f.mtime for f in files]),
        _Entry(FILEDIGESTS, STRING_ARRAY, [f.digest for f in files]),
        _Entry(FILELINKTOS, STRING_ARRAY, [f.linkto for f in files]),
        _Entry(FILEDEVICES, INT32, [1] * len(files)),
        _Entry(FILEINODES, INT32, list(range(1, len(files) + 1))),
        _Entry(FILEDIGESTALGO, INT32, [SHA256_ALGO]),
        _Entry(PAYLOADFORMAT, STRING, ["cpio"]),
        _Entry(PAYLOADCOMPRESSOR, STRING, ["gzip"]),
        _Entry(PAYLOADFLAGS, STRING, ["6"]),
        _Entry(PAYLOADDIGEST, STRING_ARRAY, [payload_sha256]),
        _Entry(PAYLOADDIGESTALGO, INT32, [SHA256_ALGO]),
    ]  # fmt: skip
    return entries


def _lead(name: str) -> bytes:
    """The 96-byte lead rpm still reads: magic, v3, binary, the NVR."""
    nvr = name.encode()[:65].ljust(66, b"\0")
    return (
        LEAD_MAGIC
        + bytes([3, 0])
        + struct.pack(">hh", 0, 1)
        + nvr
        + struct.pack(">hh", 1, 5)
        + bytes(16)
    )


def repack(
    name: str, arch: str, evr: str, dest: Path, run: Runner = subp.run, root: Path = Path("/")
) -> Path | None:
    """Build ``dest/NAME-VERSION-RELEASE.ARCH.rpm`` from the installed
    package at ``evr`` ([epoch:]version-release), its files read under
    ``root``; None when it cannot."""
    vr = evr.split(":", 1)[-1]
    header = installed_header(f"{name}-{vr}.{arch}", run)
    if header is None or any(key in header for key in REFUSED):
        return None
    epoch, version = _ints(header, "epoch"), _strings(header, "version")
    release = _strings(header, "release")
    if len(version) != 1 or len(release) != 1 or _strings(header, "arch") != [arch]:
        return None
    if f"{f'{epoch[0]}:' if epoch else ''}{version[0]}-{release[0]}" != evr:
        return None
    files = _files(header, root)
    if files is None:
        return None
    target = dest / f"{name}-{vr}.{arch}.rpm"
    try:
        with _staged(dest, name) as stage:
            payload_file = stage / "payload"
            with (
                payload_file.open("wb") as raw,
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as packed,
            ):
                _payload(files, packed)  # type: ignore[arg-type]
            digest = hashlib.sha256()
            with payload_file.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
            main = header_blob(_main_entries(header, files, digest.hexdigest()), REGION_IMMUTABLE)
            signature = _signature(main, payload_file)
            written = stage / target.name
            with written.open("wb") as out, payload_file.open("rb") as handle:
                out.write(_lead(f"{name}-{vr}"))
                out.write(signature + b"\0" * (-len(signature) % 8))
                out.write(main)
                while chunk := handle.read(1 << 20):
                    out.write(chunk)
            os.replace(written, target)
    except OSError as exc:
        log.info("cannot repack %s: %s", name, exc)
        with contextlib.suppress(OSError):
            target.unlink()
        return None
    return target


def _signature(main: bytes, payload: Path) -> bytes:
    """The signature header of an unsigned package: digests and sizes."""
    md5 = hashlib.md5(main, usedforsecurity=False)
    size = len(main)
    with payload.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            md5.update(chunk)
            size += len(chunk)
    return header_blob([
        _Entry(269, STRING, [hashlib.sha1(main, usedforsecurity=False).hexdigest()]),
        _Entry(273, STRING, [hashlib.sha256(main).hexdigest()]),
        _Entry(1000, INT32, [size]),
        _Entry(1004, BIN, md5.digest()),
    ], REGION_SIGNATURES)  # fmt: skip


@contextlib.contextmanager
def _staged(dest: Path, name: str) -> Iterator[Path]:
    stage = Path(tempfile.mkdtemp(prefix=f".rpmrepack-{name}-", dir=dest))
    try:
        yield stage
    finally:
        for child in stage.iterdir():
            child.unlink()
        stage.rmdir()
