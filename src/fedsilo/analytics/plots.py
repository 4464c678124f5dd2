"""Histogram figures of EDA results, built as ``matplotlib.figure.Figure`` objects.

No pyplot: a Figure made directly is not registered with a global figure manager, so
building plots in a server, a test or a loop neither leaks figures nor needs a display;
notebooks render a returned Figure as an image all the same.

Continuous columns are drawn as step histograms on their agreed edges (datasets overlaid,
which is meaningful because all silos share the edges); categorical columns as grouped bars
of the most frequent categories.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fedsilo.analytics.histograms import category_key, merge_value_counts

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from fedsilo.analytics.stats import ColumnStats

__all__ = ["MAX_CATEGORIES_SHOWN", "column_figure", "grid_figure"]

#: categorical plots show at most this many categories (the most frequent overall)
MAX_CATEGORIES_SHOWN = 25
_PANEL_SIZE = (4.2, 3.0)
_MAX_COLUMNS = 3


def column_figure(name: str, parts: Mapping[str, ColumnStats], title: str) -> Figure:
    """One axes: the histogram of column ``name`` in each dataset of ``parts`` (label -> stats)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    axes = figure.add_subplot()
    draw_column(axes, name, parts)
    axes.set_title(title)
    return figure


def grid_figure(
    columns: Sequence[str], parts: Mapping[str, Mapping[str, ColumnStats]], title: str
) -> Figure:
    """One axes per column (at most three per row); each overlays the datasets that have it.

    Parameters
    ----------
    columns : sequence of str
        Column names, in panel order.
    parts : mapping of dataset label to (mapping of column name to ColumnStats)
    title : str
        The figure's title.
    """
    from matplotlib.figure import Figure

    count = max(len(columns), 1)
    ncols = min(_MAX_COLUMNS, count)
    nrows = math.ceil(count / ncols)
    figure = Figure(
        figsize=(_PANEL_SIZE[0] * ncols, _PANEL_SIZE[1] * nrows + 0.4), layout="constrained"
    )
    grid = figure.subplots(nrows, ncols, squeeze=False)
    flat = list(grid.ravel())
    for axes, name in zip(flat, columns, strict=False):
        present = {label: cols[name] for label, cols in parts.items() if name in cols}
        draw_column(axes, name, present)
        axes.set_title(name)
    for axes in flat[len(columns) :]:
        axes.set_axis_off()
    figure.suptitle(title)
    return figure


def draw_column(axes: Axes, name: str, parts: Mapping[str, ColumnStats]) -> None:
    """Draw column ``name``'s histogram of every dataset in ``parts`` on ``axes``."""
    drawable = {label: stats for label, stats in parts.items() if _has_counts(stats)}
    if not drawable:
        axes.text(0.5, 0.5, "no histogram released", ha="center", va="center")
        axes.set_xticks([])
        axes.set_yticks([])
        return
    kinds = {stats.kind for stats in drawable.values()}
    if kinds == {"categorical"}:
        _draw_categorical(axes, drawable)
    else:
        _draw_continuous(axes, {k: v for k, v in drawable.items() if v.kind == "continuous"})
    axes.set_xlabel(name)
    axes.set_ylabel("count")
    if len(drawable) > 1:
        axes.legend(fontsize="small")


def _has_counts(stats: ColumnStats) -> bool:
    if stats.kind == "categorical":
        return bool(stats.value_counts)
    return stats.histogram is not None and stats.edges is not None


def _draw_continuous(axes: Axes, parts: Mapping[str, ColumnStats]) -> None:
    single = len(parts) == 1
    for label, stats in parts.items():
        assert stats.histogram is not None and stats.edges is not None
        axes.stairs(
            np.asarray(stats.histogram, dtype=np.float64),
            np.asarray(stats.edges, dtype=np.float64),
            label=label,
            fill=single,
            alpha=0.7 if single else 1.0,
        )


def _draw_categorical(axes: Axes, parts: Mapping[str, ColumnStats]) -> None:
    overall = merge_value_counts([stats.value_counts or [] for stats in parts.values()])
    shown = [value for value, _ in overall[:MAX_CATEGORIES_SHOWN]]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in shown):
        shown.sort()  # numeric codes read best in order; other categories by frequency
    positions = np.arange(len(shown), dtype=np.float64)
    width = 0.8 / len(parts)
    for i, (label, stats) in enumerate(parts.items()):
        counts = {category_key(v): c for v, c in stats.value_counts or []}
        heights = [counts.get(category_key(value), 0.0) for value in shown]
        axes.bar(positions + (i - (len(parts) - 1) / 2) * width, heights, width, label=label)
    axes.set_xticks(positions, [str(value) for value in shown], rotation=45, ha="right")
