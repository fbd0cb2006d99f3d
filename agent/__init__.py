"""The fleetpatch host agent."""
