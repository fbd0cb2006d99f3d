"""What the host is and how it is doing: its facts, health checks and
resource checks, and what needs a reboot or a restart.
"""
