"""Push (AgentService.Watch), the word both ends share: the header the
controller sends when it has opened a host's stream, so that the agent
can tell an open stream from a call refused before its first nudge."""

WATCH_OPEN = "fleetpatch-watch-open"
