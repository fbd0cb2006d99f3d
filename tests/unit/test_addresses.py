"""Controller addresses as both ends read them (fleetpatch.addresses)."""

from __future__ import annotations

import pytest
from fleetpatch.addresses import (
    AddressError,
    join_address,
    port_after,
    split_address,
    split_addresses,
)
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("ctl.example.com:7443", "ctl.example.com", 7443),
        ("10.0.0.1:1", "10.0.0.1", 1),
        ("h:65535", "h", 65535),
        ("[::1]:7443", "::1", 7443),
        ("[fe80::1%eth0]:80", "fe80::1%eth0", 80),
        ("b\u00fccher.example:7443", "b\u00fccher.example", 7443),  # resolved as xn--bcher-kva
        ("ctl.example.com.:7443", "ctl.example.com.", 7443),
        (f"{'a' * 63}.example:1", f"{'a' * 63}.example", 1),
    ],
)
def test_an_address_to_call(address, host, port):
    assert split_address(address) == (host, port)


@pytest.mark.parametrize(
    "address",
    [
        "h:0",  # gRPC would fail to connect much later, naming port 1
        "h:65536",
        "h:99999",  # gRPC dials 34463
        "h",  # gRPC dials 443
        "h:",
        ":7443",
        "::1:7443",  # IPv6 without brackets
        "[]:7443",
        "[::1]",
        " h:7443",
        "h :7443",
        "a,b:7443",
        'h"x:7443',
        "h:+7443",
        "h:\uff17443",  # a digit, but not an ASCII one
        # What no resolver takes, where the first connection would fail
        # with a UnicodeError (an empty label, one over 63 characters, a
        # name over 253) instead of a bad setting now:
        "a..b:7443",
        ".a:7443",
        f"{'a' * 64}.example:7443",
        f"{'a.' * 127}a:7443",
        "[not-v6]:7443",
        "[1.2.3.4]:7443",
        "1.2.3:7443",  # libc reads shorthand IPv4: 1.2.0.3
        "999999:7443",  # 0.15.66.63
    ],
)
def test_not_an_address_to_call(address):
    with pytest.raises(AddressError, match="is not an address") as caught:
        split_address(address)
    assert repr(address) in str(caught.value)


def test_port_0_is_for_listening_only():
    assert split_address("0.0.0.0:0", listening=True) == ("0.0.0.0", 0)  # noqa: S104
    with pytest.raises(AddressError, match="port 1-65535"):
        split_address("0.0.0.0:0")


def test_a_list_is_each_checked_and_kept_once():
    assert split_addresses(" a:1, [::1]:2,,a:1 ,") == ["a:1", "[::1]:2"]
    with pytest.raises(AddressError, match="'b:99999' is not an address"):
        split_addresses("a:1,b:99999")
    with pytest.raises(AddressError, match="names no address"):
        split_addresses(" , ")


@pytest.mark.parametrize(
    ("address", "after"),
    [("h:7443", "h:7444"), ("[::1]:7443", "[::1]:7444"), ("h:65534", "h:65535")],
)
def test_the_enrollment_port_is_the_next_one(address, after):
    assert port_after(address) == after


def test_the_last_port_has_none_after_it():
    with pytest.raises(AddressError, match="no port above it"):
        port_after("h:65535")
    assert port_after("h:0", listening=True) == "h:0"  # ephemeral stays ephemeral


@given(
    st.one_of(
        st.ip_addresses().map(str),
        st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True),
    ),
    st.integers(min_value=1, max_value=65535),
)
def test_join_then_split_round_trips(host, port):
    assert split_address(join_address(host, port)) == (host, port)
