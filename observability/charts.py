"""Server-side SVG charts for the dashboard: no JavaScript library, nothing pasted into the repo.

Each chart is a small inline <svg> with a <title> per bar or point, so hovering shows the value and
screen readers get a text alternative (the table under each chart has the same figures).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 640, 160
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 60, 24, 10
COLORS = ("#2563eb", "#d97706", "#dc2626", "#059669")


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    if value == int(value):
        return str(int(value))
    return f"{value:.2f}" if value >= 1 else f"{value:.2g}"  # small amounts (spend) keep their digits


def _frame(title: str, top: float, labels: Sequence[str], body: list[str]) -> SafeString:
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" x2="{WIDTH}" y2="{PAD_TOP + plot_h}" stroke="#cbd5e1"/>',
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 12}" text-anchor="end" font-size="14" fill="#64748b">'
        f"{escape(_fmt(top))}</text>",
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + plot_h}" text-anchor="end" font-size="14" fill="#64748b">0</text>',
    ]
    if labels:
        # First, middle and last bucket, anchored so that no label runs off the chart.
        for i, anchor in ((0, "start"), (len(labels) // 2, "middle"), (len(labels) - 1, "end")):
            x = {"start": PAD_LEFT, "end": WIDTH}.get(anchor, PAD_LEFT + (WIDTH - PAD_LEFT) * (i + 0.5) / len(labels))
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - 4}" text-anchor="{anchor}" font-size="14" fill="#64748b">'
                f"{escape(labels[i])}</text>"
            )
    parts += body
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every text above went through escape()


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], *, unit: str = "") -> SafeString:
    """One bar per time bucket."""
    top = max(values, default=0) or 1
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = (WIDTH - PAD_LEFT) / max(len(values), 1)
    body = []
    for i, value in enumerate(values):
        h = plot_h * value / top
        body.append(
            f'<rect x="{PAD_LEFT + i * slot + slot * 0.1:.1f}" y="{PAD_TOP + plot_h - h:.1f}" '
            f'width="{max(slot * 0.8, 0.5):.1f}" height="{h:.1f}" fill="{COLORS[0]}">'
            f"<title>{escape(labels[i])}: {escape(_fmt(value))}{escape(unit)}</title></rect>"
        )
    return _frame(title, top, labels, body)


def line_chart(
    title: str, labels: Sequence[str], series: dict[str, Sequence[float | None]], *, unit: str = ""
) -> SafeString:
    """One polyline per named series; gaps (None) break the line."""
    values = [v for points in series.values() for v in points if v is not None]
    top = max(values, default=0) or 1
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = (WIDTH - PAD_LEFT) / max(len(labels), 1)
    body = []
    for color, (name, points) in zip(COLORS, series.items(), strict=False):
        segment: list[str] = []
        segments = []
        for i, value in enumerate(points):
            if value is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            x = PAD_LEFT + slot * (i + 0.5)
            y = PAD_TOP + plot_h - plot_h * value / top
            segment.append(f"{x:.1f},{y:.1f}")
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{color}">'
                f"<title>{escape(name)} {escape(labels[i])}: {escape(_fmt(value))}{escape(unit)}</title></circle>"
            )
        if segment:
            segments.append(segment)
        for seg in segments:
            body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(seg)}"/>')
    legend = [
        f'<text x="{PAD_LEFT + 12 + 80 * i}" y="{PAD_TOP + 14}" font-size="14" fill="{color}">{escape(name)}</text>'
        for i, (color, name) in enumerate(zip(COLORS, series, strict=False))
    ]
    return _frame(title, top, labels, body + legend)
