"""PEP 440 <-> Debian versions of the packages (fleetpatch.debversion)."""

from __future__ import annotations

import pytest
from fleetpatch.debversion import debian_version, pep440_version, version_key
from hypothesis import given
from hypothesis import strategies as st

PAIRS = [
    ("1.2.0", "1.2.0"),
    ("1.2.0rc1", "1.2.0~rc1"),
    ("1.2.0a3", "1.2.0~a3"),
    ("1.2.0.dev3", "1.2.0~~dev3"),
    ("1.2.0rc1.dev3", "1.2.0~rc1~dev3"),
    ("1.2.0.post1", "1.2.0+post1"),
    ("1.2.0.post1.dev2", "1.2.0+post1~dev2"),
]


@pytest.mark.parametrize(("pep440", "debian"), PAIRS)
def test_both_ways(pep440, debian):
    assert debian_version(pep440) == debian
    assert pep440_version(debian) == pep440


@pytest.mark.parametrize("debian", ["1.2.0~dev3", "1.2.0-1", "v1.2", "1.2.0~rc1~~dev3", ""])
def test_a_debian_version_we_never_make_is_refused(debian):
    with pytest.raises(ValueError, match="not the Debian version"):
        pep440_version(debian)


@pytest.mark.parametrize("pep440", ["1.0-1", "v1.0", "1.0.0+local", "1.0alpha", ""])
def test_a_version_we_cannot_package_is_refused(pep440):
    with pytest.raises(ValueError, match="is not a release"):
        debian_version(pep440)


versions = st.builds(
    lambda release, pre, post, dev: (
        ".".join(map(str, release))
        + (f"{pre[0]}{pre[1]}" if pre else "")
        + (f".post{post}" if post is not None else "")
        + (f".dev{dev}" if dev is not None else "")
    ),
    st.lists(st.integers(0, 30), min_size=1, max_size=4),
    st.none() | st.tuples(st.sampled_from(["a", "b", "rc"]), st.integers(0, 9)),
    st.none() | st.integers(0, 9),
    st.none() | st.integers(0, 9),
)


@given(versions)
def test_round_trip(version):
    assert pep440_version(debian_version(version)) == version


ORDERED = [
    "1.0.dev1", "1.0a1", "1.0a2.dev1", "1.0a2", "1.0b1", "1.0rc1.dev2", "1.0rc1", "1.0",
    "1.0.post1.dev1", "1.0.post1", "1.0.1", "1.1", "10.0",
]  # fmt: skip


def test_version_key_orders_as_pep440():
    assert sorted(ORDERED[::-1], key=version_key) == ORDERED
    assert version_key("1.0") == version_key("1.0.0")
    with pytest.raises(ValueError, match="is not a version"):
        version_key("latest")
