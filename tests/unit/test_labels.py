"""fleetpatch.labels: one spelling of labels, regions and rings for every entry point."""

from __future__ import annotations

import pytest
from fleetpatch.labels import MAX_LABELS, MAX_RING, check_region, check_ring, parse_labels
from hypothesis import given
from hypothesis import strategies as st


def test_parse_labels_good():
    assert parse_labels(["role=web", "tier=frontend", "team.io/owner=sre-1", "empty="]) == {
        "role": "web",
        "tier": "frontend",
        "team.io/owner": "sre-1",
        "empty": "",
    }


def test_parse_labels_none_is_empty():
    assert parse_labels([]) == {}


def test_value_may_use_capitals_and_the_longest_key_and_value_fit():
    key, value = "k" * 63, "V" * 63
    assert parse_labels([f"{key}={value}", "a=B.c_d-e"]) == {key: value, "a": "B.c_d-e"}


def test_value_may_not_contain_equals():
    with pytest.raises(ValueError, match=r"label value 'a=b' for 'k'"):
        parse_labels(["k=a=b"])


@pytest.mark.parametrize("item", ["role", "", "role:web"])
def test_parse_labels_without_equals_names_the_item(item):
    with pytest.raises(ValueError, match=f"label {item!r} is not KEY=VALUE"):
        parse_labels([item])


@pytest.mark.parametrize(
    "key", ["", "Role", "-role", "role-", ".x", "x/", "ro le", "r\u00f6le", "k" * 64]
)
def test_parse_labels_bad_key_names_it(key):
    with pytest.raises(ValueError, match="label key") as caught:
        parse_labels([f"{key}=v"])
    assert repr(key) in str(caught.value)
    assert "1-63 characters" in str(caught.value)


@pytest.mark.parametrize("value", ["a b", "a/b", "a:b", "v" * 64, "caf\u00e9"])
def test_parse_labels_bad_value_names_value_and_key(value):
    with pytest.raises(ValueError, match="label value") as caught:
        parse_labels([f"role={value}"])
    assert repr(value) in str(caught.value)
    assert "'role'" in str(caught.value)


def test_parse_labels_duplicate_key():
    with pytest.raises(ValueError, match="label 'role' is given twice"):
        parse_labels(["role=web", "role=db"])


def test_parse_labels_at_most_max_labels():
    assert len(parse_labels([f"k{i}=v" for i in range(MAX_LABELS)])) == MAX_LABELS
    with pytest.raises(ValueError, match=f"at most {MAX_LABELS} labels"):
        parse_labels([f"k{i}=v" for i in range(MAX_LABELS + 1)])


_KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


@given(
    st.dictionaries(
        st.text(alphabet=_KEY_CHARS, min_size=1, max_size=63),
        st.text(alphabet=_KEY_CHARS + "ABC._-", max_size=63),
        max_size=MAX_LABELS,
    )
)
def test_parse_labels_round_trips_valid_labels(labels):
    assert parse_labels(f"{k}={v}" for k, v in labels.items()) == labels


@pytest.mark.parametrize("region", ["eu", "us-east-1", "a", "0", "r" * 63])
def test_check_region_good_returns_it(region):
    assert check_region(region) == region


@pytest.mark.parametrize("region", ["", "EU", "eu_west", "-eu", "eu-", "eu west", "r" * 64, "eu.1"])
def test_check_region_bad(region):
    with pytest.raises(ValueError, match="must be lowercase letters, digits and '-'") as caught:
        check_region(region)
    assert repr(region) in str(caught.value)


@pytest.mark.parametrize("ring", [0, 1, MAX_RING])
def test_check_ring_good_returns_it(ring):
    assert check_ring(ring) == ring


@pytest.mark.parametrize("ring", [-1, MAX_RING + 1, 1000])
def test_check_ring_bad(ring):
    with pytest.raises(ValueError, match=rf"ring {ring} is out of range \(0-{MAX_RING}\)"):
        check_ring(ring)


@pytest.mark.parametrize("item", ["role=web\n", "role\n="])
def test_parse_labels_rejects_trailing_newline(item):
    with pytest.raises(ValueError, match="label"):
        parse_labels([item])


def test_check_region_rejects_trailing_newline():
    with pytest.raises(ValueError, match="region"):
        check_region("eu\n")
