"""agent.backends.rpmrepack without rpm: the header layout rpm reads, the
installed header as `rpm -q --xml` gives it, what is refused, and the
package written from files in a temp root. (Real rpm reads, checks and
installs what it writes in tests/integration/test_dnf_backend.py,
test_selfupdate_rpm.py and test_packaging_rpm.py.)"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path
from typing import Any

from agent.backends import rpmrepack
from agent.backends.rpmrepack import (
    INT16,
    INT32,
    REGION_IMMUTABLE,
    STRING,
    STRING_ARRAY,
    _Entry,
    header_blob,
    installed_header,
)
from agent.backends.subp import Result

XML = """<rpmHeader>
  <rpmTag name="Name"><string>fp-t</string></rpmTag>
  <rpmTag name="Version"><string>1.0</string></rpmTag>
  <rpmTag name="Release"><string>1</string></rpmTag>
  <rpmTag name="Arch"><string>noarch</string></rpmTag>
  <rpmTag name="Summary"><string>a &lt;test&gt; &amp; more</string></rpmTag>
  <rpmTag name="Postin"><string>echo post
exit 0</string></rpmTag>
  <rpmTag name="Postinprog"><string>/bin/sh</string></rpmTag>
  <rpmTag name="Sigmd5"><base64>AAEC
</base64></rpmTag>
  <rpmTag name="Filemodes"><integer>16877</integer><integer>33188</integer>
    <integer>41471</integer><integer>33188</integer></rpmTag>
  <rpmTag name="Fileflags"><integer>0</integer><integer>17</integer><integer>0</integer>
    <integer>0</integer></rpmTag>
  <rpmTag name="Dirindexes"><integer>0</integer><integer>1</integer><integer>1</integer>
    <integer>1</integer></rpmTag>
  <rpmTag name="Basenames"><string>fp-t</string><string>a</string><string>b</string>
    <string>gone</string></rpmTag>
  <rpmTag name="Dirnames"><string>/opt/</string><string>/opt/fp-t/</string></rpmTag>
  <rpmTag name="Fileusername"><string>root</string><string>root</string><string>root</string>
    <string>root</string></rpmTag>
  <rpmTag name="Filedigests"><string/><string>x</string><string/><string>y</string></rpmTag>
</rpmHeader>
"""


def _runner(stdout: str, returncode: int = 0) -> Any:
    def run(argv: list[str], **_: object) -> Result:
        return Result(list(argv), returncode, stdout, "")

    return run


def _parse(blob: bytes) -> tuple[list[tuple[int, int, int, int]], bytes]:
    assert blob[:8] == b"\x8e\xad\xe8\x01\0\0\0\0"
    il, dl = struct.unpack(">II", blob[8:16])
    index = [struct.unpack(">IIiI", blob[16 + 16 * i : 32 + 16 * i]) for i in range(il)]
    data = blob[16 + 16 * il : 16 + 16 * il + dl]
    assert len(data) == dl
    return index, data


def test_the_header_has_its_region_first_and_its_trailer_last_each_entry_aligned():
    blob = header_blob(
        [_Entry(1000, STRING, ["fp-t"]), _Entry(1030, INT16, [0o100644, 0o40755]),
         _Entry(1028, INT32, [3, 0]), _Entry(1117, STRING_ARRAY, ["a", "b"])],
        REGION_IMMUTABLE,
    )  # fmt: skip
    index, data = _parse(blob)
    assert [e[0] for e in index] == [63, 1000, 1028, 1030, 1117]
    region = index[0]
    assert region[1:] == (7, len(data) - 16, 16)
    assert struct.unpack(">IIiI", data[-16:]) == (63, 7, -5 * 16, 16)
    offsets = [e[2] for e in index[1:]]
    assert offsets == sorted(offsets), "data in index order, none overlapping"
    for tag, kind, offset, _count in index[1:]:
        assert offset % {INT16: 2, INT32: 4}.get(kind, 1) == 0, tag
        if tag == 1030:
            assert struct.unpack(">HH", data[offset : offset + 4]) == (0o100644, 0o40755)
    assert data[index[1][2] : index[1][2] + 5] == b"fp-t\0"


def test_the_installed_header_is_read_from_rpms_xml_with_its_escapes():
    header = installed_header("fp-t-1.0-1.noarch", _runner(XML))
    assert header is not None
    assert header["summary"] == ["a <test> & more"]
    assert header["postin"] == ["echo post\nexit 0"]
    assert header["filemodes"] == [16877, 33188, 41471, 33188]
    assert header["filedigests"] == ["", "x", "", "y"]
    assert header["sigmd5"] == b"\x00\x01\x02"
    assert installed_header("fp-t", _runner("", 1)) is None
    assert installed_header("fp-t", _runner(XML + XML)) is None, "two packages: which one?"
    assert installed_header("fp-t", _runner("<rpmHeader>")) is None


def test_a_package_with_triggers_or_another_version_is_not_rebuilt(tmp_path):
    triggered = XML.replace("</rpmHeader>", '<rpmTag name="Triggerscripts"><string>x</string>'
                            "</rpmTag></rpmHeader>")  # fmt: skip
    assert rpmrepack.repack("fp-t", "noarch", "1.0-1", tmp_path, _runner(triggered)) is None
    assert rpmrepack.repack("fp-t", "noarch", "1.1-1", tmp_path, _runner(XML)) is None
    assert rpmrepack.repack("fp-t", "x86_64", "1.0-1", tmp_path, _runner(XML)) is None
    assert rpmrepack.repack("fp-t", "noarch", "1:1.0-1", tmp_path, _runner(XML)) is None


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "opt/fp-t").mkdir(parents=True)
    (root / "opt/fp-t/a").write_text("hi\n")
    os.symlink("a", root / "opt/fp-t/b")
    return root


def test_a_package_is_written_from_the_files_as_they_are(tmp_path):
    root = _root(tmp_path)
    dest = tmp_path / "out"
    dest.mkdir()
    rpm = rpmrepack.repack("fp-t", "noarch", "1.0-1", dest, _runner(XML), root=root)
    assert rpm is not None
    assert rpm == dest / "fp-t-1.0-1.noarch.rpm"
    assert list(dest.iterdir()) == [rpm], "no staging left behind"
    data = rpm.read_bytes()
    assert data[:4] == b"\xed\xab\xee\xdb"
    signature, sig_data = _parse(data[96:])
    sig_end = 96 + 16 + 16 * len(signature) + len(sig_data)
    main_start = sig_end + (-sig_end % 8)
    main, main_data = _parse(data[main_start:])
    main_end = main_start + 16 + 16 * len(main) + len(main_data)
    payload = data[main_end:]
    values = {e[0]: e for e in signature}
    at = values[273][2]
    assert sig_data[at : at + 64].decode() == hashlib.sha256(data[main_start:main_end]).hexdigest()
    archive = gzip.decompress(payload)
    assert b"./opt/fp-t/a\0" in archive
    assert b"hi\n" in archive
    assert b"./opt/fp-t/gone" not in archive, "gone from the disk: a %ghost, no content"
    assert archive.rstrip(b"\0").endswith(b"TRAILER!!!")
    tags = [e[0] for e in main]
    for tag in (1000, 1024, 1086, 1028, 1030, 1035, 1037, 1124, 1125, 5011, 5092, 5093):
        assert tag in tags, tag
    assert 1004 in tags, "the summary is kept"


def test_a_file_of_another_type_than_rpm_installed_stops_the_rebuild(tmp_path):
    root = _root(tmp_path)
    (root / "opt/fp-t/a").unlink()
    (root / "opt/fp-t/a").mkdir()
    assert rpmrepack.repack("fp-t", "noarch", "1.0-1", tmp_path, _runner(XML), root=root) is None
