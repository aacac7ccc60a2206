"""Plots of results: a field against a hyperparameter, one series per value of another (matplotlib, Agg)."""

from __future__ import annotations

from typing import Any

from repype.optional import require


def _numbers(frame: Any, column: str) -> Any:
    pandas = require("pandas", "a plot of results")
    values = pandas.to_numeric(frame[column], errors="coerce")
    if values.isna().all():
        raise ValueError(f"column '{column}' holds no numbers to plot")
    return values


def plot_table(frame: Any, x: str, y: str, by: str | None = None, title: str | None = None) -> Any:
    """A matplotlib Figure of column `y` against column `x` of `frame` (e.g. a :meth:`Store.table`).

    Every row with a number in `y` is a point (one per task and input); a line joins the mean of
    `y` at each value of `x`. With `by`, there is one series (colour) per value of that column.
    The figure uses the non-interactive Agg canvas: save it with `figure.savefig(path)`.
    """
    require("matplotlib", "a plot of results")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for column in (x, y, by):
        if column is not None and column not in frame.columns:
            raise ValueError(f"no column '{column}' to plot (columns: {list(frame.columns)})")
    frame = frame.assign(**{y: _numbers(frame, y)}).dropna(subset=[y])
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    groups = [(None, frame)] if by is None else sorted(frame.groupby(by, dropna=False), key=lambda kv: str(kv[0]))
    for value, rows in groups:
        label = None if by is None else f"{by} = {value}"
        points = axes.scatter(rows[x], rows[y], s=16, alpha=0.45)
        means = rows.groupby(x, sort=True)[y].mean()
        axes.plot(means.index, means.values, marker="o", color=points.get_facecolor()[0][:3], label=label)
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    if by is not None:
        axes.legend(title=None, frameon=False)
    if title:
        axes.set_title(title)
    return figure
