"""A real Prometheus (Debian's `prometheus` package, which the Makefile
installs) for the tests: its own config and data dir in a temp dir, a free
loopback port, scraping every second the targets a test names, and loading
the rules shipped in packaging/prometheus. Asked through its HTTP API, as
Grafana and a person would."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from fleetpatch.atomicfile import write_atomic

from tests.support.controller import free_port
from tests.support.waiting import scaled

RULES = Path(__file__).resolve().parents[2] / "packaging" / "prometheus" / "fleetpatch-rules.yml"

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: fleetpatch-controller
    file_sd_configs:
      - files: [{targets}]
"""


def binary(name: str) -> str | None:
    """The path of a Prometheus binary (prometheus, promtool), if installed."""
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)


class Prometheus:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.targets_file = workdir / "targets.json"
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = binary("prometheus")
        if exe is None:
            raise RuntimeError("prometheus is not installed")
        self.set_targets([])
        config = self.workdir / "prometheus.yml"
        config.write_text(CONFIG.format(rules=RULES, targets=self.targets_file))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [exe, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + scaled(30)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log.read_text()}")
            try:
                ready = f"{self.url}/-/ready"
                with urllib.request.urlopen(ready, timeout=1) as answer:  # noqa: S310 - http
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus did not become ready:\n{self.log.read_text()}")

    def set_targets(self, targets: list[str]) -> None:
        """Scrape these HOST:PORTs from now on (file service discovery)."""
        doc = [{"targets": targets, "labels": {}}] if targets else []
        write_atomic(self.targets_file, json.dumps(doc).encode())

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - http
                doc = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            doc = json.loads(exc.read())
        if doc.get("status") != "success":
            raise AssertionError(f"{path} {params}: {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": {...}, "value": [t, "v"]}]."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now; None while it has none."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, expected: float, timeout: float = 30) -> float:
        """Wait until ``expr`` is ``expected`` (Prometheus scrapes every
        second and evaluates rules every second); its last value otherwise."""
        deadline = time.monotonic() + scaled(timeout)
        last = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if last is not None and abs(last - expected) < 1e-9:
                return last
            time.sleep(0.25)
        raise AssertionError(f"{expr}: {last}, not {expected}, after {timeout}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=scaled(20))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
