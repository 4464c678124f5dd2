"""Inline SVG plots rendered on the server: readable without JavaScript, no chart library.

:func:`line_plot` draws one or more series against the round (loss and metric curves);
:func:`histogram` draws bars over bin edges. Both return SVG markup with a ``<title>`` and a
``<desc>`` (what a screen reader announces) and use presentation attributes only, so the
portal's Content-Security-Policy (no inline styles) allows them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup

__all__ = ["histogram", "line_plot"]

WIDTH, HEIGHT = 640, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 150, 34, 44
#: a colour-blind-safe palette (Okabe-Ito)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[low, high]``."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5, 10):
        if raw <= step * multiple:
            step *= multiple
            break
    start = math.floor(low / step) * step
    ticks = [round(start, 12)]
    while ticks[-1] < high - step * 1e-9:  # the top tick at or above the highest value
        ticks.append(round(start + step * len(ticks), 12))
    return ticks


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def _frame(title: str, desc: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'class="plot" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{_LEFT}" y="20" font-size="14" font-weight="600" fill="#1d232b">'
        f"{escape(title)}</text>",
    ]


def _axes(
    parts: list[str], xs: tuple[float, float], ys: tuple[float, float], x_label: str
) -> tuple[float, float, float, float]:
    """Draw the grid and axes; returns the y ticks' span (low, high) and the plot box."""
    y_ticks = _ticks(*ys)
    y_low, y_high = y_ticks[0], y_ticks[-1]
    box_w, box_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    for tick in y_ticks:
        y = _TOP + box_h * (1 - (tick - y_low) / ((y_high - y_low) or 1))
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + box_w}" y2="{y:.1f}" '
            'stroke="#e3e3e3" stroke-width="1"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="12" '
            f'fill="#333333">{_label(tick)}</text>'
        )
    parts.append(
        f'<line x1="{_LEFT}" y1="{_TOP + box_h}" x2="{_LEFT + box_w}" y2="{_TOP + box_h}" '
        'stroke="#333333" stroke-width="1"/>'
        f'<text x="{_LEFT + box_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
        f'font-size="13" fill="#333333">{escape(x_label)}</text>'
    )
    return y_low, y_high, box_w, box_h


def line_plot(series: Mapping[str, Sequence[float | None]], title: str) -> Markup:
    """Each series' value per round (round 1 first); a missing value breaks its line."""
    rounds = max((len(v) for v in series.values()), default=0)
    values = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    desc = "; ".join(
        f"{name}: " + ", ".join("-" if v is None else _label(v) for v in points)
        for name, points in series.items()
    )
    parts = _frame(title, desc or "no rounds yet")
    if not values:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" font-size="14" '
            'fill="#555555">No rounds finished yet.</text></svg>'
        )
        return Markup("".join(parts))
    y_low, y_high, box_w, box_h = _axes(parts, (1, rounds), (min(values), max(values)), "round")

    def x_of(index: int) -> float:
        return _LEFT + (box_w * index / (rounds - 1) if rounds > 1 else box_w / 2)

    def y_of(value: float) -> float:
        return _TOP + box_h * (1 - (value - y_low) / ((y_high - y_low) or 1))

    step = max(1, math.ceil(rounds / 10))
    for index in range(0, rounds, step):
        parts.append(
            f'<text x="{x_of(index):.1f}" y="{_TOP + box_h + 16}" text-anchor="middle" '
            f'font-size="12" fill="#333333">{index + 1}</text>'
        )
    for number, (name, points) in enumerate(series.items()):
        colour = PALETTE[number % len(PALETTE)]
        path: list[str] = []
        for index, value in enumerate(points):
            if value is None or not math.isfinite(value):
                continue
            x, y = x_of(index), y_of(value)
            path.append(f"{'M' if not path else 'L'}{x:.1f},{y:.1f}")
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}">'
                f"<title>{escape(name)}, round {index + 1}: {_label(value)}</title></circle>"
            )
        if path:
            parts.append(
                f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        legend_y = _TOP + 14 + 20 * number
        parts.append(
            f'<rect x="{WIDTH - _RIGHT + 14}" y="{legend_y - 9}" width="14" height="4" '
            f'fill="{colour}"/><text x="{WIDTH - _RIGHT + 34}" y="{legend_y - 3}" '
            f'font-size="12" fill="#333333">{escape(name[:18])}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def histogram(edges: Sequence[float], counts: Sequence[float], title: str) -> Markup:
    """Bars of ``counts`` over the bins ``edges`` (``len(edges) == len(counts) + 1``)."""
    if len(edges) != len(counts) + 1:
        raise ValueError(
            f"histogram: expected len(edges) == len(counts) + 1; got {len(edges)} edges and "
            f"{len(counts)} counts"
        )
    desc = ", ".join(
        f"[{_label(edges[i])}, {_label(edges[i + 1])}): {_label(c)}" for i, c in enumerate(counts)
    )
    parts = _frame(title, desc)
    if not counts:
        parts.append("</svg>")
        return Markup("".join(parts))
    _, y_high, box_w, box_h = _axes(parts, (edges[0], edges[-1]), (0.0, max(counts)), "value")
    span = (edges[-1] - edges[0]) or 1.0
    for index, count in enumerate(counts):
        x0 = _LEFT + box_w * (edges[index] - edges[0]) / span
        x1 = _LEFT + box_w * (edges[index + 1] - edges[0]) / span
        height = box_h * count / (y_high or 1)
        parts.append(
            f'<rect x="{x0:.1f}" y="{_TOP + box_h - height:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
            f'height="{height:.1f}" fill="{PALETTE[0]}"><title>[{_label(edges[index])}, '
            f"{_label(edges[index + 1])}): {_label(count)}</title></rect>"
        )
    for edge in (edges[0], edges[len(edges) // 2], edges[-1]):
        x = _LEFT + box_w * (edge - edges[0]) / span
        parts.append(
            f'<text x="{x:.1f}" y="{_TOP + box_h + 16}" text-anchor="middle" font-size="12" '
            f'fill="#333333">{_label(edge)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
