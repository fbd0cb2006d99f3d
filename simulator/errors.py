"""Errors of the simulator.

    SimError                  exit 1; the message is for a person
    ├── ScenarioError         exit 2; a scenario or failure-model file is invalid:
    │                         names the file, the field and what is wrong
    ├── LoadFailed            `load` cannot go on: the controller refused or could
    │                         not be reached (exit 3 or 4, as the admin CLI's)
    └── ModelGap              exit 1; the agent's state machine has a state the
                              simulator has no model for (add one, see agentmodel)

Campaign files are checked by the controller's own parser; its CampaignError
is shown as is (exit 2). Errors of the controller's admin client (rehearse on
the real fleet) keep their own exit codes. The CLI maps all of them in one
place, `cli.main`.
"""

from __future__ import annotations


class SimError(Exception):
    exit_code = 1


class ScenarioError(SimError):
    """A scenario or failure-model file is invalid.

    ``field`` is the dotted path of the offending value
    (``fleet.regions[1].timezone``; empty when the file is not TOML at all).
    """

    exit_code = 2

    def __init__(self, field: str, problem: str, source: str = "") -> None:
        self.field = field
        self.problem = problem
        self.source = source
        where = ": ".join(part for part in (source, field) if part)
        super().__init__(f"{where}: {problem}" if where else problem)


class LoadFailed(SimError):
    """`load` cannot go on (enrolling its agents failed, say). Raised in a
    worker process and passed to the parent: it pickles as its message and
    exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message, exit_code)
        self.exit_code = exit_code

    def __str__(self) -> str:
        return str(self.args[0])


class NothingToRehearse(SimError):
    """The campaign targets no host of the fleet: a rehearsal would report
    100 % coverage of nothing."""

    exit_code = 2


class ModelGap(SimError):
    """The agent entered a state the simulator cannot drive."""
