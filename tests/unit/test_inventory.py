"""fleetpatch.inventory: the hash agent and controller both compute."""

from __future__ import annotations

import hashlib

import pytest
from fleetpatch.inventory import inventory_hash
from hypothesis import given
from hypothesis import strategies as st

PACKAGES = [("bash", "5.2-1", "amd64"), ("zlib1g", "1:1.3", "amd64"), ("tzdata", "2024a", "all")]

# Realistic package fields: no tabs or newlines (dpkg and rpm output is tab-separated).
_FIELD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.+-:~_", min_size=1, max_size=12)
_PACKAGE = st.tuples(_FIELD, _FIELD, _FIELD)


def test_format_is_sha256_of_sorted_tab_separated_lines():
    """Pinned: changing the format makes every host in the fleet resend its inventory."""
    lines = "bash\t5.2-1\tamd64\ntzdata\t2024a\tall\nzlib1g\t1:1.3\tamd64\n"
    assert inventory_hash(PACKAGES) == "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def test_empty_inventory():
    assert inventory_hash([]) == "sha256:" + hashlib.sha256(b"").hexdigest()


def test_accepts_any_iterable():
    assert inventory_hash(iter(PACKAGES)) == inventory_hash(PACKAGES)


@given(st.lists(_PACKAGE, max_size=30), st.randoms(use_true_random=False))
def test_order_independent(packages, rng):
    shuffled = list(packages)
    rng.shuffle(shuffled)
    assert inventory_hash(shuffled) == inventory_hash(packages)


@pytest.mark.parametrize("field", [0, 1, 2])
def test_changes_with_each_field(field):
    changed = list(PACKAGES)
    package = list(changed[1])
    package[field] += "x"
    changed[1] = (package[0], package[1], package[2])
    assert inventory_hash(changed) != inventory_hash(PACKAGES)


def test_changes_when_a_package_is_added_removed_or_duplicated():
    base = inventory_hash(PACKAGES)
    assert inventory_hash([*PACKAGES, ("curl", "8.5", "amd64")]) != base
    assert inventory_hash(PACKAGES[:-1]) != base
    assert inventory_hash([*PACKAGES, PACKAGES[0]]) != base


def test_fields_do_not_run_into_each_other():
    assert inventory_hash([("ab", "c", "d")]) != inventory_hash([("a", "bc", "d")])
    assert inventory_hash([("a", "b", "cd")]) != inventory_hash([("a", "bc", "d")])


@given(st.lists(_PACKAGE, min_size=1, max_size=10), st.data())
def test_any_single_field_change_changes_the_hash(packages, data):
    index = data.draw(st.integers(0, len(packages) - 1))
    field = data.draw(st.integers(0, 2))
    replacement = data.draw(_FIELD.filter(lambda v: v != packages[index][field]))
    changed = [list(p) for p in packages]
    changed[index][field] = replacement
    changed_tuples = [(p[0], p[1], p[2]) for p in changed]
    assert inventory_hash(changed_tuples) != inventory_hash(packages)


@given(st.lists(_PACKAGE, max_size=10))
def test_shape(packages):
    value = inventory_hash(packages)
    assert value.startswith("sha256:")
    assert len(value) == len("sha256:") + 64
    int(value.removeprefix("sha256:"), 16)


def test_sources_pinned_after_the_packages_they_build():
    """Pinned as the format above: a package whose source differs carries
    its source and source version after its own fields."""
    sources = {"zlib1g": ("zlib", "1:1.3")}
    lines = "bash\t5.2-1\tamd64\ntzdata\t2024a\tall\nzlib1g\t1:1.3\tamd64\tzlib\t1:1.3\n"
    expected = "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    assert inventory_hash(PACKAGES, sources) == expected
