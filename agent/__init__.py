"""The fleetpatch host agent."""


def console() -> None:
    """The `fleetpatch-agent` console script: agent.daemon, with Ctrl-C
    while it loads one line (fleetpatch.launch)."""
    from fleetpatch.launch import launch

    launch("agent.daemon")
