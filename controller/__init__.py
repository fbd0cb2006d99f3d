"""The fleetpatch controller and its admin CLI."""
