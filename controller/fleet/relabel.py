"""Changing a host's labels, region or ring after enrollment (`fleetpatch
hosts relabel`): the change as asked, checked as enrollment checks it, and
what it does to a host, for the store to apply and the audit trail to say.

Campaigns need no notice: each check-in reads a host's ring, region and
labels from the store, and a campaign's live counts re-join a host whose
decision key changed, so a relabelling takes effect at its next check-in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleetpatch import labels as labelspec

from controller.errors import UsageError
from controller.model import Host


@dataclass(frozen=True)
class Relabel:
    """What to change; None (or empty): leave as it is."""

    set_labels: Mapping[str, str]
    remove_labels: tuple[str, ...] = ()
    region: str | None = None
    ring: int | None = None

    def checked(self) -> Relabel:
        """This change, if every value is one enrollment accepts; else UsageError."""
        try:
            for key, value in self.set_labels.items():
                labelspec.check_label(key, value)
            if self.region is not None:
                labelspec.check_region(self.region)
            if self.ring is not None:
                labelspec.check_ring(self.ring)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        both = set(self.set_labels) & set(self.remove_labels)
        if both:
            raise UsageError(f"label {sorted(both)[0]!r} is both set and removed")
        return self

    def applied_to(self, host: Host) -> Placement:
        """The host's labels, region and ring after this change; UsageError
        when it would carry more labels than a host may."""
        labels = {**host.labels, **self.set_labels}
        for key in self.remove_labels:
            labels.pop(key, None)
        if len(labels) > labelspec.MAX_LABELS:
            raise UsageError(f"at most {labelspec.MAX_LABELS} labels are allowed")
        return Placement(
            labels,
            host.region if self.region is None else self.region,
            host.ring if self.ring is None else self.ring,
        )


@dataclass(frozen=True)
class Placement:
    """Where a host stands for campaigns: what targets it, its turn."""

    labels: Mapping[str, str]
    region: str
    ring: int

    def changes_from(self, host: Host) -> str:
        """The changes from ``host``'s, for the audit trail; "" when none."""
        changes = []
        if self.ring != host.ring:
            changes.append(f"ring {host.ring} -> {self.ring}")
        if self.region != host.region:
            changes.append(f"region {host.region} -> {self.region}")
        for key in sorted(set(host.labels) | set(self.labels)):
            old, new = host.labels.get(key), self.labels.get(key)
            if old != new:
                changes.append(f"label {key}: {old or '-'} -> {new or '-'}")
        return "; ".join(changes)
