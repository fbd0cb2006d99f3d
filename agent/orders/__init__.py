"""One work order's life on the host: its states and their transition
table, the runner that steps through them, the journal that persists each
step before it runs, the local policy that caps what any order may do, and
the agent-update order kind.
"""
