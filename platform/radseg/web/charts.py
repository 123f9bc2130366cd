"""Line charts as inline SVG, drawn on the server: the training curves of a job's page and of a
model version's page (one implementation for both).

A chart is an SVG plot with named axes and ticks, and under it an HTML legend: one checkbox per
line that ``static/charts.js`` uses to hide and show the line (the legend sits outside the plot,
so however many classes there are it never covers a line). Labels come from outside (class
names of a dataset): every one is escaped. No plotting library: a few elements of text, as
:mod:`radseg.quality_svg` does for the quality charts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from radseg.web.curves import Curves, Points

WIDTH, HEIGHT = 720, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 28, 16, 44
#: the colours of lines that are not the mean, in turn (Tableau 10 without the mean's blue)
PALETTE = (
    "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
#: a second round of the palette is dashed, so twenty classes remain told apart
DASHES = ("", "6 3", "2 2")
MAIN = "#1f4e9c"
#: a line with more points than this is drawn without a dot on each (they would be a smear)
MAX_DOTS = 60


@dataclass(frozen=True)
class Line:
    """One line of a chart; ``points`` are ``[[x, y], ...]`` by increasing x."""

    label: str
    points: Points
    color: str
    width: float = 1.5
    opacity: float = 1.0
    dash: str = ""
    dots: bool = False


@dataclass(frozen=True)
class Chart:
    """A line chart: ``x_range`` and ``y_range`` fix the axes (Dice: 0 to 1), else they fit
    the lines."""

    id: str
    title: str
    x_label: str
    y_label: str
    lines: tuple[Line, ...]
    empty: str
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten apart) from ``lo`` to ``hi``."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.3g}"


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def render(chart: Chart) -> Markup:
    """The chart and its legend as one ``<figure>`` (HTML, safe to put in a page)."""
    lines = [line for line in chart.lines if line.points]
    xs = [p[0] for line in lines for p in line.points]
    ys = [p[1] for line in lines for p in line.points]
    x0, x1 = chart.x_range or ((min(xs), max(xs)) if xs else (0.0, 1.0))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if chart.y_range is not None:
        y0, y1 = chart.y_range
    else:
        y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
        pad = (y1 - y0) * 0.05 or abs(y1) * 0.1 or 1.0
        y0, y1 = (0.0 if y0 >= 0 and y0 - pad < 0 else y0 - pad), y1 + pad
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + inner_w * (x - x0) / (x1 - x0)

    def sy(y: float) -> float:
        return TOP + inner_h * (1 - (y - y0) / (y1 - y0))

    title = escape(chart.title)
    out = [
        f'<figure class="line-chart" id="{escape(chart.id)}">',
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{title}</title>",
    ]
    for y in nice_ticks(y0, y1):
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_fmt(sy(y))}" '
            f'y2="{_fmt(sy(y))}"/><text class="tick" x="{LEFT - 6}" y="{_fmt(sy(y) + 4)}" '
            f'text-anchor="end">{_label(y)}</text>'
        )
    if xs:
        for x in nice_ticks(x0, x1):
            out.append(
                f'<text class="tick" x="{_fmt(sx(x))}" y="{TOP + inner_h + 16}" '
                f'text-anchor="middle">{_label(x)}</text>'
            )
    out.append(
        f'<path class="axis" d="M{LEFT},{TOP}V{TOP + inner_h}H{WIDTH - RIGHT}" fill="none"/>'
        f'<text class="axis-name" data-axis="x" x="{LEFT + inner_w / 2}" y="{HEIGHT - 6}" '
        f'text-anchor="middle">{escape(chart.x_label)}</text>'
        f'<text class="axis-name" data-axis="y" transform="rotate(-90)" '
        f'x="{-(TOP + inner_h / 2)}" y="14" text-anchor="middle">{escape(chart.y_label)}</text>'
    )
    if not lines:
        out.append(
            f'<text class="empty" x="{LEFT + inner_w / 2}" y="{TOP + inner_h / 2}" '
            f'text-anchor="middle">{escape(chart.empty)}</text>'
        )
    # thinner lines first, so the mean (and the smoothed loss) is drawn over the rest
    for n, line in sorted(enumerate(lines), key=lambda item: item[1].width):
        label = escape(line.label)
        d = "".join(
            f"{'M' if i == 0 else 'L'}{_fmt(sx(x))},{_fmt(sy(y))}"
            for i, (x, y) in enumerate(line.points)
        )
        dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
        out.append(
            f'<g class="series" data-series="{n}" stroke="{line.color}" fill="{line.color}" '
            f'opacity="{line.opacity}"><title>{label}</title>'
            f'<path d="{d}" fill="none" stroke-width="{line.width}"{dash}/>'
        )
        if (line.dots and len(line.points) <= MAX_DOTS) or len(line.points) == 1:
            out.extend(
                f'<circle cx="{_fmt(sx(x))}" cy="{_fmt(sy(y))}" r="2.5">'
                f"<title>{label}: {_label(x)}, {y:.4g}</title></circle>"
                for x, y in line.points
            )
        out.append("</g>")
    out.append("</svg>")
    if lines:
        out.append(f'<figcaption><ul class="chart-legend" aria-label="{title}: lines">')
        for n, line in enumerate(lines):
            # an SVG sample of the line: the page's CSP allows no style attributes
            dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
            out.append(
                f'<li><label><input type="checkbox" checked data-series="{n}"> '
                '<svg class="line-swatch" width="24" height="8" aria-hidden="true">'
                f'<line x1="0" y1="4" x2="24" y2="4" stroke="{line.color}" stroke-width="3" '
                f'opacity="{max(line.opacity, 0.5)}"{dash}/></svg>'
                f"{escape(line.label)}</label></li>"
            )
        out.append("</ul></figcaption>")
    out.append("</figure>")
    return Markup("".join(out))


def training_charts(curves: Curves, *, prefix: str = "chart") -> list[Markup]:
    """The loss chart (smoothed, raw faint) and the validation Dice chart (the mean, and each
    class in a colour of its own) of :func:`radseg.web.curves.training_curves`."""
    loss, dice = curves["loss"], curves["dice"]
    weight = loss["smoothing"]
    # both charts from iteration 0 to the last one either has, so that they line up
    last = max(
        (p[0] for points in (loss["raw"], dice["mean"], *dice["classes"].values()) for p in points),
        default=None,
    )
    x_range = (0.0, last) if last else None
    loss_chart = Chart(
        id=f"{prefix}-loss",
        title="Training loss against iteration",
        x_label="Iteration (optimizer steps)",
        y_label="Training loss (total_loss, no unit)",
        lines=(
            Line("loss (raw)", loss["raw"], MAIN, width=1.0, opacity=0.3),
            Line(f"loss (moving average, weight {weight:g})", loss["smoothed"], MAIN, width=2.0),
        ),
        empty="no loss logged",
        x_range=x_range,
    )
    class_lines = tuple(
        Line(
            name,
            points,
            PALETTE[i % len(PALETTE)],
            dash=DASHES[(i // len(PALETTE)) % len(DASHES)],
            dots=True,
        )
        for i, (name, points) in enumerate(dice["classes"].items())
    )
    dice_chart = Chart(
        id=f"{prefix}-dice",
        title="Validation Dice against iteration",
        x_label="Iteration (optimizer steps)",
        y_label="Validation Dice (0 to 1)",
        lines=(Line("mean Dice", dice["mean"], MAIN, width=2.5, dots=True), *class_lines),
        empty="no validation recorded (validations run every eval_period iterations)",
        x_range=x_range,
        y_range=(0.0, 1.0),
    )
    return [render(loss_chart), render(dice_chart)]
