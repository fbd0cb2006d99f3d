"""The report as one self-contained HTML page: a headline, the SLIs, one
coverage-over-time chart per ring (inline SVG: no script, no external
asset), and the table. Halts, resumes, the campaign's duration and the
time each ring reached 50/95/100% are marked on the charts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from html import escape

from .outcome import Curve, Outcome, Row
from .report import COLUMNS, headline, percent, span

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 18, 30

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2430;
       margin: 2rem auto; max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.35rem; margin-bottom: .2rem; } h2 { font-size: 1.05rem; margin-top: 2rem; }
.meta { color: #5a6270; }
.state { padding: .8rem 1rem; border-radius: 6px; margin: 1rem 0; font-weight: 600; }
.completed { background: #e5f5ea; } .halted { background: #fde8e6; }
.running { background: #fff4d6; }
.slis { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: .6rem; }
.sli { border: 1px solid #dde2ea; border-radius: 6px; padding: .5rem .7rem; }
.sli b { display: block; font-size: 1.3rem; } .sli span { color: #5a6270; font-size: .85rem; }
figure { margin: 1rem 0; } figcaption { font-weight: 600; margin-bottom: .3rem; }
svg text { font-size: 11px; } svg > text { fill: #5a6270; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; width: 100%; }
th, td { padding: .25rem .5rem; border-bottom: 1px solid #e6e9ef; text-align: right; }
th:nth-child(2), td:nth-child(2) { text-align: left; } tr.sum td { font-weight: 600; }
.bad { color: #b3261e; } ul { padding-left: 1.2rem; }
"""


def _x(hours: float, span_hours: float) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * hours / span_hours


def _y(share: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - share)


def _chart(outcome: Outcome, curve: Curve, row: Row) -> str:
    # A little room after the last event, so a halt at the end still shows.
    total_hours = max(outcome.simulated, timedelta(hours=1)) / timedelta(hours=1) * 1.04
    hosts = max(curve.hosts, 1)
    right = WIDTH - RIGHT
    parts = [
        f'<svg class="coverage" data-ring="{curve.ring}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-label="ring {curve.ring}: share of hosts patched over '
        f'time" xmlns="http://www.w3.org/2000/svg">'
    ]
    for share, label in ((0, "0%"), (0.5, "50%"), (1, "100%")):
        y = _y(share)
        parts.append(
            f'<line x1="{LEFT}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e9ef"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    y95 = _y(0.95)
    parts.append(
        f'<line x1="{LEFT}" x2="{right}" y1="{y95:.1f}" y2="{y95:.1f}" stroke="#c9cfd9" '
        f'stroke-dasharray="2 3"/><text x="{right}" y="{y95 + 12:.1f}" '
        f'text-anchor="end">95%</text>'
    )
    step = _tick_hours(total_hours)
    hour = 0.0
    while hour <= total_hours + 1e-9:
        x = _x(hour, total_hours)
        label = f"{hour / 24:g}d" if step >= 24 else f"{hour:g}h"
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 10}" text-anchor="middle">{label}</text>')
        hour += step
    duration = outcome.duration / timedelta(hours=1)
    if duration <= total_hours:
        has = span(outcome.duration)
        x = _x(duration, total_hours)
        parts.append(_marker(x, "#8a94a6", has, f"the campaign has {has}", dashed=True))
    for halt in outcome.halts:
        x = _x(halt.after / timedelta(hours=1), total_hours)
        parts.append(_marker(x, "#b3261e", "halt", f"halt: {halt.message}", left=True))
    for resumed in outcome.resumes:
        x = _x(resumed / timedelta(hours=1), total_hours)
        parts.append(_marker(x, "#1e7b34", "resumed", "resumed by a person"))
    end = outcome.simulated / timedelta(hours=1)
    points = [(_x(h, total_hours), _y(n / hosts)) for h, n in curve.points]
    if points:
        last_n = curve.points[-1][1]
        points.append((_x(end, total_hours), _y(last_n / hosts)))
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in _steps(points))
        area = f"{LEFT},{_y(0):.1f} {path} {points[-1][0]:.1f},{_y(0):.1f}"
        parts.append(f'<polygon points="{area}" fill="#2f6fde" fill-opacity=".12"/>')
        parts.append(f'<polyline points="{path}" fill="none" stroke="#2f6fde" stroke-width="2"/>')
    marks = (("50%", row.t50, 0.5), ("95%", row.t95, 0.95), ("100%", row.t100, 1.0))
    for label, at, share in marks:
        if at is not None:
            x, y = _x(at / timedelta(hours=1), total_hours), _y(share)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#2f6fde">'
                         f'<title>{label} at +{span(at)}</title></circle>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _marker(
    x: float, colour: str, label: str, title: str, dashed: bool = False, left: bool = False
) -> str:
    """A vertical line across the plot, labelled on top (to its left when
    asked or when there is no room on its right)."""
    dash = ' stroke-dasharray="4 3"' if dashed else ' stroke-width="2"'
    left = (left and x > LEFT + 40) or x > WIDTH - RIGHT - 48
    anchor, dx = ("end", -3) if left else ("start", 3)
    return (
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="{colour}"'
        f"{dash}><title>{escape(title)}</title></line>"
        f'<text x="{x + dx:.1f}" y="{TOP - 5}" fill="{colour}" text-anchor="{anchor}">'
        f"{escape(label)}</text>"
    )


def _steps(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """A staircase: coverage holds until the next host is patched."""
    out = [points[0]]
    for x, y in points[1:]:
        out.append((x, out[-1][1]))
        out.append((x, y))
    return out


def _tick_hours(total: float) -> float:
    for step in (1, 2, 3, 6, 12, 24, 48, 72, 168):
        if total / step <= 10:
            return step
    return 336


def _table(outcome: Outcome) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    body: list[str] = []
    for ring_row in outcome.rings:
        rows = [r for r in outcome.rows if r.ring == ring_row.ring] + [ring_row]
        body.extend(_tr(row, row is ring_row) for row in rows)
    body.append(_tr(outcome.total, True))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _tr(row: Row, total: bool) -> str:
    def t(delta: timedelta | None) -> str:
        return "-" if delta is None else f"+{span(delta)}"

    values: list[object] = [
        "all" if row.ring < 0 else row.ring, row.region or "(all)", row.hosts, row.succeeded,
        row.failed, row.reverted, row.revert_failed, row.timed_out, row.pending_reboot,
        row.in_flight, row.unpatched, t(row.t50), t(row.t95), t(row.t100),
    ]  # fmt: skip
    cells = []
    for index, value in enumerate(values):
        bad = 4 <= index <= 7 and isinstance(value, int) and value > 0
        cls = ' class="bad"' if bad else ""
        cells.append(f"<td{cls}>{escape(str(value))}</td>")
    return f"<tr{' class=sum' if total else ''}>{''.join(cells)}</tr>"


def render_html(outcome: Outcome, misses: Sequence[str] | None, summary: str) -> str:
    """The whole page."""
    o = outcome
    s = o.slis
    state = "completed" if o.completed_after is not None else o.state
    slis = [
        ("patch success rate", percent(s.patch_success_rate), "M1: succeeded / finished"),
        ("canary failure rate", percent(s.canary_failure_rate), "M3: first ring"),
        ("rollback rate", percent(s.rollback_rate), "M4: reverted / finished"),
        ("time to verification", span(s.verify_p50), f"M6: p50; p95 {span(s.verify_p95)}"),
        ("coverage", percent(s.coverage), "M7: patched / targeted"),
        ("hosts reporting", percent(s.hosts_reporting),
         f"M8: at the end; lowest {percent(s.hosts_reporting_min)}"),
    ]  # fmt: skip
    cards = "".join(
        f'<div class="sli">{escape(name)}<b>{escape(value)}</b><span>{escape(note)}</span></div>'
        for name, value, note in slis
    )
    charts = "".join(
        f'<figure><figcaption>ring {c.ring}: {c.hosts:,} hosts</figcaption>'
        f'{_chart(o, c, row)}</figure>'
        for c, row in zip(o.curves, o.rings, strict=True)
    )  # fmt: skip
    halts = "".join(
        f"<li>+{span(h.after)}: ring {h.ring}, {escape(h.kind)}: {escape(h.message)}</li>"
        for h in o.halts
    ) + "".join(f"<li>+{span(t)}: resumed by a person</li>" for t in o.resumes)
    notes = "".join(f"<li>{escape(n)}</li>" for n in o.notes)
    expected = ""
    if misses is not None:
        verdict = (
            "".join(f'<li class="bad">not met: {escape(m)}</li>' for m in misses) or "<li>met</li>"
        )
        expected = f"<h2>Expected</h2><p>{escape(summary)}</p><ul>{verdict}</ul>"
    windows = f"<br>windows: {escape(', '.join(o.windows))}" if o.windows else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Rehearsal {escape(o.scenario)}: {escape(o.campaign)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Rehearsal {escape(o.scenario)}: campaign {escape(o.campaign)}</h1>
<p class="meta">{o.fleet_hosts:,} hosts, {o.targeted:,} targeted; seed {o.seed};
start {o.start:%Y-%m-%d %H:%M} UTC; the campaign has {span(o.duration)}; simulated
{span(o.simulated)}{windows}</p>
<div class="state {escape(state)}">{escape(headline(o))}</div>
<div class="slis">{cards}</div>
<h2>Coverage over time</h2>{charts}
{f"<h2>Halts</h2><ul>{halts}</ul>" if halts else ""}
<h2>Per ring and region</h2>{_table(o)}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
{expected}
</body></html>
"""
