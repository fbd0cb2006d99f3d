"""Errors of campaign files.

    ValueError
    └── TableError          (fleetpatch.tomltable: any strictly read TOML document)
        └── CampaignError   a campaign file is not valid TOML or breaks a rule;
                            the message names the file, the field and what is wrong

The admin CLI maps CampaignError to its UsageError (exit 2) at its one
boundary; nothing in this package knows about exit codes.
"""

from __future__ import annotations

from fleetpatch.tomltable import TableError


class CampaignError(TableError):
    """A campaign file is invalid (``field``, ``problem``, ``source``: see
    TableError)."""
