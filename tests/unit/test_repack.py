"""The pure parts of the quick repack: status fields, conffiles, layout."""

from __future__ import annotations

from agent.backends import repack

STATUS = """\
Package: adduser
Status: install ok installed
Priority: important
Version: 3.134
Conffiles:
 /etc/adduser.conf cc3493ecd2d09837ffdcc3e25fdfff18
 /etc/old.conf 11a06baf8245fd8d690b99024d228c1f obsolete
 /etc/going.conf 11a06baf8245fd8d690b99024d228c1f remove-on-upgrade
Description: add and remove users and groups
 This package includes the 'adduser' and 'deluser' commands.
"""


def test_status_fields_keep_their_continuation_lines():
    fields = repack.parse_status(STATUS)
    assert fields["Version"] == "3.134"
    assert fields["Description"] == (
        "add and remove users and groups\n This package includes the 'adduser' and 'deluser'"
        " commands."
    )


def test_obsolete_and_leaving_conffiles_are_left_out():
    live, dropped = repack.conffiles(repack.parse_status(STATUS))
    assert live == ["/etc/adduser.conf"]
    assert dropped == {"/etc/old.conf", "/etc/going.conf"}


def test_a_symlinked_directory_with_files_of_the_package_below_it_is_a_directory(tmp_path):
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "usr" / "bin" / "tool").write_text("")
    (tmp_path / "bin").symlink_to("usr/bin")  # merged /usr
    (tmp_path / "lib").symlink_to("usr/bin")  # a link the package ships, nothing below it
    paths = [str(tmp_path / p) for p in ("usr", "usr/bin", "bin", "bin/tool", "lib")]
    dirs, members = repack.layout(paths)
    assert dirs == [str(tmp_path / p) for p in ("usr", "usr/bin", "bin")]
    assert members == [str(tmp_path / "bin/tool"), str(tmp_path / "lib")]
