"""Vulnerabilities: what the feeds say is broken, which hosts that leaves
exposed, and how fast the fleet closes the gap (issue 15).

    feeds     Debian Security Tracker JSON and OSV records -> `Vuln`s
    releases  a host's distribution release, a feed's ecosystem: one key
    versions  comparison by each distribution's own rules (univers)
    match     a host's inventory against the feed: its exposures
    policy    compliance: grace periods per severity, on policy or not
    plan      a campaign file that fixes exactly what is exposed
"""

from datetime import timedelta

from controller.errors import UsageError

# Most severe first. Feeds' own words are mapped onto these (feeds.severity).
SEVERITIES = ("critical", "high", "medium", "low", "negligible", "unknown")

# How long a fix may wait on a host before it is out of policy, per
# severity: controller.toml [compliance] changes them.
DEFAULT_GRACE = {
    "critical": timedelta(days=7),
    "high": timedelta(days=14),
    "medium": timedelta(days=30),
    "low": timedelta(days=30),
    "negligible": timedelta(days=30),
    "unknown": timedelta(days=30),
}


def check_severity(severity: str, what: str = "severity") -> str:
    """``severity`` itself when it is one of SEVERITIES or empty (none
    asked); raises UsageError naming ``what`` (the option or field)."""
    if severity and severity not in SEVERITIES:
        raise UsageError(f"{what} {severity!r}: one of {', '.join(SEVERITIES)}")
    return severity
