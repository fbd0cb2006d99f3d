"""`controller init` is all or nothing: every option is checked before
anything is made, the settings by the reader `serve` uses, and a failure
after the data dir was made removes what init made."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from controller.datadir import DataDir
from controller.errors import DataDirError, UsageError
from controller.fleet.bootstrap import init_data_dir
from controller.store import Store


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"interval": "0s"}, "--checkin-interval: checkin.interval must be at least 1s"),
        ({"interval": "500ms"}, "--checkin-interval: checkin.interval"),
        ({"listen": "127.0.0.1:65535"}, "--listen: server.listen: '127.0.0.1:65535' leaves no"),
        ({"listen": "127.0.0.1"}, "--listen: '127.0.0.1' is not an address"),
        ({"hostname": "ünïcode.example"}, "--hostname 'ünïcode.example' is not a host name"),
        ({"hostname": "-oops"}, "--hostname '-oops' is not a host name"),
        ({"hostname": "a" * 300}, "is 300 characters long, at most 253"),
        ({"owner": "a b"}, "admin name 'a b'"),
    ],
)
def test_an_option_serve_would_refuse_is_refused_and_nothing_is_made(
    tmp_path: Path, options: dict[str, str], said: str
) -> None:
    args = {"hostname": "localhost", "listen": "127.0.0.1:7443", **options}
    with pytest.raises(UsageError) as refused:
        init_data_dir(tmp_path / "parent" / "ctl", **args)
    assert said in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "parent").exists()


def test_what_init_writes_serve_reads(tmp_path: Path) -> None:
    made = init_data_dir(tmp_path / "ctl", "ctl.example.net.", "0.0.0.0:7443", "1s")
    settings = DataDir(made.path).settings()
    assert settings.advertise == "ctl.example.net:7443"  # the trailing dot dropped
    assert settings.checkin_interval.total_seconds() == 1


def _failing_store(*_: object, **__: object) -> object:
    raise OSError(errno.ENOSPC, "No space left on device", "controller.db")


def test_a_failure_after_the_dir_was_made_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Store, "open", _failing_store)
    with pytest.raises(DataDirError, match=r"cannot initialise .*No space left on device"):
        init_data_dir(tmp_path / "parent" / "ctl", "localhost", "127.0.0.1:7443")
    assert not (tmp_path / "parent").exists()


def test_in_a_dir_that_was_there_only_what_init_wrote_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    there = tmp_path / "ctl"
    there.mkdir()
    (there / "notes.txt").write_text("mine\n")

    def broken(*_: object, **__: object) -> object:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Store, "open", broken)
    with pytest.raises(DataDirError, match="disk I/O error"):
        init_data_dir(there, "localhost", "127.0.0.1:7443")
    assert sorted(p.name for p in there.iterdir()) == ["notes.txt"]


def test_an_interrupted_init_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: object, **__: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "open", interrupted)
    with pytest.raises(KeyboardInterrupt):
        init_data_dir(tmp_path / "ctl", "localhost", "127.0.0.1:7443")
    assert not (tmp_path / "ctl").exists()
    # ... and it can be run again.
    monkeypatch.undo()
    init_data_dir(tmp_path / "ctl", "localhost", "127.0.0.1:7443")
    assert DataDir(tmp_path / "ctl").settings().advertise == "localhost:7443"
