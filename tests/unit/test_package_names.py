"""Package names and versions, checked by each family's rules with a full
match and a length bound (a trailing newline once slipped through)."""

from __future__ import annotations

import pytest

from agent.backends import apt, dnf
from agent.backends.base import PlanError


@pytest.mark.parametrize("name", ["openssl\n", "a" * 201, "", "-x", "Open SSL"])
def test_a_package_name_off_policy_is_refused_by_both_backends(name):
    with pytest.raises(PlanError):
        apt.check_name(name)
    with pytest.raises(PlanError):
        dnf.check_name(name)
