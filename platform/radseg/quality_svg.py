"""A quality control chart as a standalone SVG image, for reports and the JSON API.

The same picture as the model version page draws in the browser (``static/quality.js``): one
point per ISO week, the centre line, the limit on the bad side of each week, the baseline weeks
shaded, flagged weeks in red. The input is a chart as :meth:`radseg.quality.Chart.to_dict`
gives it (``value`` in 0..1: a rate or a Dice). No plotting library: a few elements of text.
"""

from __future__ import annotations

from html import escape
from typing import Any

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 28, 40
LINE, LIMIT, FLAG, BASELINE = "#2563eb", "#b91c1c", "#dc2626", "#eef2ff"


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def chart_svg(chart: dict[str, Any]) -> str:
    """The chart as an SVG document (a string, UTF-8 when encoded)."""
    points = chart["points"]
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = inner_w / max(len(points) - 1, 1)

    def sx(i: int) -> float:
        return LEFT + (step * i if len(points) > 1 else inner_w / 2)

    def sy(y: float) -> float:
        return TOP + inner_h * (1 - min(max(y, 0.0), 1.0))

    title = f"{chart['label']} per week"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        f'<text x="{LEFT}" y="16" font-size="13">{escape(title)}</text>',
    ]
    baseline = [i for i, p in enumerate(points) if p["baseline"]]
    if baseline and chart["center"] is not None:
        x0, x1 = sx(baseline[0]) - step / 2, sx(baseline[-1]) + step / 2
        x0, x1 = max(x0, LEFT), min(x1, WIDTH - RIGHT)
        out.append(
            f'<rect class="baseline" x="{_fmt(x0)}" y="{TOP}" width="{_fmt(x1 - x0)}" '
            f'height="{inner_h}" fill="{BASELINE}"><title>baseline</title></rect>'
        )
    out.append(
        f'<path class="axis" d="M{LEFT},{TOP}V{TOP + inner_h}H{WIDTH - RIGHT}" '
        'fill="none" stroke="#666"/>'
    )
    for y in (0.0, 0.5, 1.0):
        out.append(f'<text x="8" y="{_fmt(sy(y) + 4)}">{y:.1f}</text>')
    if not points:
        out.append(f'<text x="{LEFT + 8}" y="{TOP + inner_h / 2}">no reviews yet</text>')
    else:
        for i in sorted({0, len(points) - 1}):
            out.append(
                f'<text x="{_fmt(sx(i) - 24)}" y="{HEIGHT - 22}">{escape(points[i]["week"])}</text>'
            )
    if chart["center"] is not None:
        cy = _fmt(sy(chart["center"]))
        out.append(
            f'<line class="center" x1="{LEFT}" y1="{cy}" x2="{WIDTH - RIGHT}" y2="{cy}" '
            f'stroke="#444" stroke-dasharray="4 3"><title>centre {chart["center"]:.3f}</title>'
            "</line>"
        )
    limits = [(i, p["limit"]) for i, p in enumerate(points) if p["limit"] is not None]
    if limits:
        d = "".join(
            f"{'M' if j == 0 else 'L'}{_fmt(sx(i))},{_fmt(sy(v))}"
            for j, (i, v) in enumerate(limits)
        )
        out.append(
            f'<path class="limit" d="{d}" fill="none" stroke="{LIMIT}" stroke-dasharray="2 2"/>'
        )
    if points:
        d = "".join(
            f"{'M' if i == 0 else 'L'}{_fmt(sx(i))},{_fmt(sy(p['value']))}"
            for i, p in enumerate(points)
        )
        out.append(f'<path class="values" d="{d}" fill="none" stroke="{LINE}" stroke-width="1.5"/>')
    for i, p in enumerate(points):
        limit = f", limit {p['limit']:.3f}" if p["limit"] is not None else ""
        flag = " — flagged" if p["flagged"] else ""
        out.append(
            f'<circle class="{"flagged" if p["flagged"] else "point"}" cx="{_fmt(sx(i))}" '
            f'cy="{_fmt(sy(p["value"]))}" r="{5 if p["flagged"] else 3}" '
            f'fill="{FLAG if p["flagged"] else LINE}"><title>{escape(p["week"])}: '
            f"{p['value']:.3f} (n={p['n']}{limit}){flag}</title></circle>"
        )
    if chart.get("note"):
        out.append(f'<text x="{LEFT}" y="{HEIGHT - 6}" fill="#555">{escape(chart["note"])}</text>')
    out.append("</svg>")
    return "\n".join(out)
