"""Host health as the agent sees it. The check-in carries a summary; the
work-order runner (a later part) adds service, port, HTTP and command
checks and compares against a baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.host import sysinfo


@dataclass(frozen=True)
class CheckResult:
    name: str
    kind: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class HealthSummary:
    healthy: bool
    checks: tuple[CheckResult, ...]
    observed_at: datetime


@dataclass(frozen=True)
class ResourceLimits:
    """Thresholds from agent.toml [health]; 0 switches a check off."""

    max_load_per_cpu: float = 4.0
    max_memory_used_ratio: float = 0.97
    max_disk_used_ratio: float = 0.97


def failing(results: Sequence[CheckResult]) -> str:
    """The failed checks of ``results`` and why, on one line."""
    return "; ".join(f"{r.name}: {r.detail}" for r in results if not r.ok)


def resource_checks(limits: ResourceLimits) -> list[CheckResult]:
    results = []
    if limits.max_load_per_cpu:
        per_cpu = sysinfo.load_average() / sysinfo.cpu_count()
        results.append(
            CheckResult(
                "load",
                "resource",
                per_cpu <= limits.max_load_per_cpu,
                f"1-minute load {per_cpu:.2f} per CPU (limit {limits.max_load_per_cpu:g})",
            )
        )
    if limits.max_memory_used_ratio:
        memory = sysinfo.memory()
        used = 1 - memory.available / memory.total
        results.append(
            CheckResult(
                "memory",
                "resource",
                used <= limits.max_memory_used_ratio,
                f"{used:.0%} of memory in use (limit {limits.max_memory_used_ratio:.0%})",
            )
        )
    if limits.max_disk_used_ratio:
        disk = sysinfo.disk_usage("/")
        used = disk.used / disk.total if disk.total else 0.0
        results.append(
            CheckResult(
                "disk",
                "resource",
                used <= limits.max_disk_used_ratio,
                f"{used:.0%} of / in use (limit {limits.max_disk_used_ratio:.0%})",
            )
        )
    return results


def summarize(results: Sequence[CheckResult], now: datetime | None = None) -> HealthSummary:
    return HealthSummary(
        healthy=all(r.ok for r in results),
        checks=tuple(results),
        observed_at=now or datetime.now(UTC),
    )
