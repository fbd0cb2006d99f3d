"""The report: a readable table, JSON for machines, and an HTML page that
holds one coverage chart per ring and needs nothing from the network."""

from __future__ import annotations

import io
import json
from html.parser import HTMLParser

from simulator.html import render_html
from simulator.report import print_text, to_json
from tests.unit.test_sim_scenarios import by_name


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in {"meta", "br"}:  # HTML void elements; SVG ones self-close
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        assert self.stack[-1:] == [tag], f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    assert page.stack == []
    return page


def test_the_html_report_has_one_chart_per_ring_and_no_external_assets():
    sc, outcome = by_name("hosts-go-dark")
    page = parse(render_html(outcome, [], sc.expect.summary))
    charts = [attrs for tag, attrs in page.tags if tag == "svg"]
    assert [c.get("data-ring") for c in charts] == ["0", "1", "2"]
    assert all(c.get("class") == "coverage" for c in charts)
    assert "polyline" in {tag for tag, _ in page.tags}
    tags = {tag for tag, _ in page.tags}
    assert "script" not in tags
    assert "link" not in tags
    assert "img" not in tags
    for _, attrs in page.tags:
        for name, value in attrs.items():
            if name in {"src", "href"}:
                raise AssertionError(f"external reference {name}={value}")
    text = " ".join(page.text)
    assert "HALTED" in text
    assert "silent" in text
    assert "hosts reporting" in text
    assert text.count("halt:") == 3  # the halt marked on each ring's chart


def test_the_text_report_shows_every_ring_and_region_and_the_slis():
    sc, outcome = by_name("failed-revert")
    out = io.StringIO()
    print_text(outcome, [], sc.expect.summary, out)
    text = out.getvalue()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("RING"))
    for column in ("HOSTS", "REVERT-FAILED", "TIMED-OUT", "PENDING-REBOOT", "50%", "95%", "100%"):
        assert column in header
    assert sum(1 for line in lines if line.startswith(("0 ", "1 ", "2 "))) == 12
    assert "HALTED" in text
    assert "failure budget" in text
    for sli in ("patch success rate", "canary failure rate", "rollback rate",
                "time to verification", "coverage", "hosts reporting"):  # fmt: skip
        assert sli in text
    assert text.rstrip().endswith("met")


def test_the_json_report_is_json_with_every_part():
    _, outcome = by_name("window-too-short")
    doc = json.loads(json.dumps(to_json(outcome, ["x: expected 1, got 2"], "s")))
    assert doc["outcome"]["finished_in_time"] is False
    assert doc["outcome"]["completed_seconds"] > doc["duration_seconds"]
    assert {r["region"] for r in doc["cells"]} == {"eu-west", "us-east"}
    assert doc["rings"][1]["coverage_seconds"]["p50"] > 0
    assert set(doc["slis"]) >= {
        "patch_success_rate",
        "canary_failure_rate",
        "rollback_rate",
        "time_to_verification_seconds",
        "coverage",
        "hosts_reporting",
    }
    assert doc["coverage_over_time"][1]["points"][-1][1] == doc["rings"][1]["succeeded"]
    assert doc["expected"] == {"summary": "s", "misses": ["x: expected 1, got 2"]}
