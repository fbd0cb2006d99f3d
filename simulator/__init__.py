"""The fleet simulator: rehearse a campaign on a simulated fleet, in virtual
time, with the production scheduler and the agent's state machine.

What is real, and what is simulated:

    real       the campaign file and its parser (`controller.campaigns.parse_campaign`);
               every rollout decision (`decide`, `evaluate_halt`, `is_complete`,
               `is_targeted`, `is_silent`, `is_timed_out`): rings, gates, bake,
               region order, concurrency, windows, deadlines, halts, all of it;
               the meaning of every count (`Tallies`, `CellTally`, checked
               against `controller.tally.count` by a test); the outcome mapping
               (`controller.model.OUTCOME_STATUS`); the agent's states and
               transitions (`agent.states.next_state` over ``TRANSITIONS``); the
               agent's reconnect backoff (`agent.backoff`)
    mirrored   the controller engine's control flow (`controller.engine`): decide
               at check-in, results then evaluate, the tick that times out and
               evaluates, what a resume accepts; the agent's habits (no check-in
               while it runs an order, check in again at once after it, reports
               queued while offline, abort when the window closed before apply)
    simulated  the hosts: check-ins on a fixed interval from a random phase,
               how each step ends and how long it takes (`failures`,
               `agentmodel`), outages, reboots, and the controller's availability

Change a rollout rule in `controller/campaigns` and the rehearsal changes
with it. A real `agent.runner.Runner` (SQLite journal per host) is too heavy
for 100,000 hosts; the integration test runs the same campaign on a real
controller with in-process agents and checks that both agree.

Modules, one job each:

    scenario     the scenario file (fleet, campaign, failures, operator, expect)
    failures     the failure model ([failures]); also a file of its own
    fleet        generating a fleet;  inventory: the real fleet, for `rehearse`
    agentmodel   how a simulated host's order steps end and how long they take
    (the counts, kept incrementally, are controller.campaigns.counts: shared)
    waiting      hosts waiting for the counts to change, in check-in order
    engine       the discrete-event loop
    outcome      what a run found;  expect: checking it against [expect]
    report       text and JSON;  html: the HTML page
    cli          `fleetpatch-sim run` and `fleetpatch-sim rehearse`

Nothing imports the simulator; it imports `agent` and `controller`.
"""


def console() -> None:
    """The `fleetpatch-sim` console script: simulator.cli, with Ctrl-C
    while it loads one line (fleetpatch.launch)."""
    from fleetpatch.launch import launch

    launch("simulator.cli")
