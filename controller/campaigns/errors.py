"""Errors of campaign files.

    ValueError
    └── CampaignError       a campaign file is not valid TOML or breaks a rule;
                            the message names the file, the field and what is wrong

The admin CLI maps CampaignError to its UsageError (exit 2) at its one
boundary; nothing in this package knows about exit codes.
"""

from __future__ import annotations


class CampaignError(ValueError):
    """A campaign file is invalid.

    ``field`` is the dotted path of the offending value, as a person would
    find it in the file (``rollout.rings[1].gate.min_success``; empty when
    the file is not TOML at all); ``problem`` says what is wrong with it.
    """

    def __init__(self, field: str, problem: str, source: str = "") -> None:
        self.field = field
        self.problem = problem
        self.source = source
        where = ": ".join(part for part in (source, field) if part)
        super().__init__(f"{where}: {problem}" if where else problem)
