"""`campaign plan`: a bad --name or --out is one line (exit 2) before the
controller is asked; a file that cannot be written is one line naming it,
and nothing is left half-written."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fleetpatch.v1 import vulns_pb2

from controller.cli import plan as plan_cli
from controller.errors import UsageError

EXPOSURE = vulns_pb2.Exposure(
    host_id="h-0123456789abcdef", vuln_id="CVE-2024-5535", severity="high", package="openssl",
    installed="3.0.11-1~deb12u2", fixed="3.0.15-1~deb12u1", region="eu", ring=0, os="debian 12",
    binaries=[vulns_pb2.BinaryPackage(name="libssl3", version="3.0.11-1~deb12u2")],
)  # fmt: skip


class _Controller:
    def __init__(self) -> None:
        self.asked = 0

    @contextmanager
    def __call__(self, *_: object) -> Iterator[_Controller]:
        yield self

    def exposures(self, _: vulns_pb2.ListExposuresRequest) -> list[vulns_pb2.Exposure]:
        self.asked += 1
        return [EXPOSURE]


@pytest.fixture
def controller(monkeypatch: pytest.MonkeyPatch) -> _Controller:
    fake = _Controller()
    monkeypatch.setattr(plan_cli, "client", fake)
    return fake


def _plan(tmp_path: Path, **options: object) -> None:
    args: dict[str, object] = {
        "cve": ["CVE-2024-5535"], "severity": "", "region": "", "name": "", "template": None,
        "out": None, "data_dir": tmp_path, "controller": None, **options,
    }  # fmt: skip
    plan_cli.plan(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["Bad Name", "-leading", "UPPER", "a" * 64, "under_score"])
def test_a_bad_name_is_refused_before_the_controller_is_asked(
    tmp_path: Path, controller: _Controller, name: str
) -> None:
    with pytest.raises(UsageError) as refused:
        _plan(tmp_path, name=name)
    assert str(refused.value).startswith("--name ")
    assert "\n" not in str(refused.value)
    assert controller.asked == 0
    if name == "Bad Name":
        assert str(refused.value).startswith("--name 'Bad Name' must be lowercase letters")


def test_a_good_name_is_the_campaigns(tmp_path: Path, controller: _Controller) -> None:
    out = tmp_path / "plan.toml"
    _plan(tmp_path, name="fix-openssl", out=out)
    assert tomllib.loads(out.read_text())["campaign"]["name"] == "fix-openssl"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.toml"]  # no temp file left


def test_out_a_directory_is_refused_before_the_controller_is_asked(
    tmp_path: Path, controller: _Controller
) -> None:
    (tmp_path / "adir.toml").mkdir()
    with pytest.raises(UsageError) as refused:
        _plan(tmp_path, out=tmp_path / "adir.toml")
    assert str(refused.value) == f"--out {tmp_path / 'adir.toml'} is a directory; name a file in it"
    assert controller.asked == 0


def test_out_in_no_directory_is_refused(tmp_path: Path, controller: _Controller) -> None:
    out = tmp_path / "missing" / "plan.toml"
    with pytest.raises(UsageError, match=r"^--out .*plan\.toml: there is no directory .*missing$"):
        _plan(tmp_path, out=out)
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"^--out .*: there is no directory .*file$"):
        _plan(tmp_path, out=tmp_path / "file" / "plan.toml")
    assert controller.asked == 0


def test_a_file_that_cannot_be_written_is_one_line(tmp_path: Path, controller: _Controller) -> None:
    # /proc takes no new files, whoever asks (root too).
    with pytest.raises(UsageError) as refused:
        _plan(tmp_path, out=Path("/proc/fleetpatch-plan.toml"))
    assert str(refused.value).startswith("--out /proc/fleetpatch-plan.toml: cannot write it: ")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dangling symlink"])
def test_out_that_is_not_a_regular_file_is_never_renamed_over(
    tmp_path: Path, controller: _Controller, kind: str
) -> None:
    """Written atomically, by a rename over the path: as root, --out
    /dev/full or /dev/stdout replaced the device or the link by a file."""
    out = tmp_path / "out.toml"
    target = tmp_path / "target.toml"
    if kind == "fifo":
        os.mkfifo(out)
    else:
        if kind == "symlink":
            target.write_text("kept")
        out.symlink_to(target)
    with pytest.raises(UsageError, match=r"^--out .* is (a symbolic link|not a regular file); "):
        _plan(tmp_path, out=out)
    assert controller.asked == 0
    assert out.is_symlink() or stat.S_ISFIFO(os.lstat(out).st_mode)
