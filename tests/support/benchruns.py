"""A benchmark run as a person runs it, `python -m benchmarks.NAME ARGS`,
from the checkout; what it said and its exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip
