"""Local policy: what the host's owner allows any order to do."""

from __future__ import annotations

import re

import pytest

from agent.backends.base import Change, Plan
from agent.orders.policy import Policy, plan_violation, policy_from_config


def test_defaults_are_safe():
    policy = policy_from_config({}, "agent.toml")
    assert policy == Policy()
    assert policy.allow_order_commands is False


def test_config_is_read():
    policy = policy_from_config(
        {
            "allow_reboot": False,
            "allow_order_commands": True,
            "never_touch": ["linux-image-*", "openssh-server"],
            "allowed_sources": ["Debian*"],
            "max_packages": 10,
        },
        "agent.toml",
    )
    assert policy == Policy(False, True, ("linux-image-*", "openssh-server"), ("Debian*",), 10)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"allow_reboots": True},
            "policy.allow_reboots: unknown key (did you mean 'allow_reboot'?)",
        ),
        ({"allow_reboot": "yes"}, "policy.allow_reboot: must be a boolean, not a string"),
        ({"never_touch": "linux-*"}, "policy.never_touch: must be an array, not a string"),
        ({"never_touch": [""]}, "policy.never_touch: must be an array of non-empty patterns"),
        ({"max_packages": 0}, "policy.max_packages: must be a whole number >= 1"),
        ({"max_packages": True}, "policy.max_packages: must be an integer, not a boolean"),
    ],
)
def test_bad_config_names_the_field(table, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        policy_from_config(table, "agent.toml")


def plan(*changes: Change) -> Plan:
    return Plan(changes)


def test_a_plan_within_policy_passes():
    assert (
        plan_violation(plan(Change("openssl", "amd64", "3.0.1", "3.0.2", "Debian:12")), Policy())
        is None
    )


def test_a_dependency_on_a_protected_package_is_caught():
    found = plan_violation(
        plan(Change("openssl", "", "1", "2"), Change("linux-image-6.1", "", "1", "2")),
        Policy(never_touch=("linux-image-*",)),
    )
    assert found == "the update touches protected package linux-image-6.1 ('linux-image-*')"


def test_an_untrusted_source_is_caught_but_removals_have_no_source():
    policy = Policy(allowed_sources=("Debian:*",))
    assert plan_violation(plan(Change("a", "", "1", "2", "Debian:12.5/stable")), policy) is None
    found = plan_violation(plan(Change("a", "", "1", "2", "evil-repo")), policy)
    assert found is not None
    assert "'evil-repo'" in found
    assert plan_violation(plan(Change("a", "", "1", "")), policy) is None


def test_too_many_packages_is_caught():
    changes = [Change(f"p{i}", "", "1", "2") for i in range(3)]
    found = plan_violation(plan(*changes), Policy(max_packages=2))
    assert found is not None
    assert "touches 3 packages" in found


def test_agent_update_settings_are_read_and_checked():
    policy = policy_from_config(
        {"allow_agent_update": False, "allow_agent_downgrade": True,
         "release_key": "/etc/pki/fleetpatch-release.pub"},
        "agent.toml",
    )  # fmt: skip
    assert (policy.allow_agent_update, policy.allow_agent_downgrade) == (False, True)
    assert str(policy.release_key) == "/etc/pki/fleetpatch-release.pub"
    with pytest.raises(ValueError, match=r"policy\.release_key: must be an absolute path"):
        policy_from_config({"release_key": "release.pub"}, "agent.toml")
    with pytest.raises(ValueError, match=r"policy\.allow_agent_update: must be a boolean"):
        policy_from_config({"allow_agent_update": "yes"}, "agent.toml")


def test_a_patch_never_removes_the_agent_itself():
    removal = plan(Change("fleetpatch-agent", "amd64", "0.1.0", ""), Change("b", "", "1", "2"))
    assert plan_violation(removal, Policy()) == (
        "the update would remove fleetpatch-agent, this agent itself"
    )
    upgrade = plan(Change("fleetpatch-agent", "amd64", "0.1.0", "0.1.1", "Debian:12"))
    assert plan_violation(upgrade, Policy()) is None
