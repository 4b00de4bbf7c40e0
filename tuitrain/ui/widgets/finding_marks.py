"""The training chart's marks for findings: a dotted vertical line at the first step of every warning
or error finding inside the x window (error red, warning in the theme's warning colour), drawn over
the raw envelope and under the smoothed curve, so the curve stays readable where it crosses a mark.

Kept out of :mod:`~tuitrain.ui.widgets.loss_plot` (which only calls these): the spec gets the marks'
steps (:func:`marks`), the drawing turns them into scatter series for the rasteriser
(:func:`mark_series`), and the chart's subtitle says what the mark means (:func:`legend`). One run
only: an overlay of several runs has no marks (whose finding would a line be?)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tuitrain.ui.history import History
from tuitrain.ui.widgets.chart_raster import RGB, Series

MARK = "╎"  # the NaN mark is "┊" in the error colour: a different dash, so the two never read alike


def marks(history: History, lo: float, hi: float) -> list[tuple[float, str]]:
    """(step, severity) of the warning and error findings that began inside [lo, hi]."""
    return [(float(s), sev) for s, sev in history.findings.first_steps(lo, hi)]


def mark_series(
    found: Sequence[tuple[float, str]], ylim: tuple[float, float] | None, height: int, colors: dict[str, RGB]
) -> list[Series]:
    """One column of :data:`MARK` per mark, over the whole y range: ``colors["nan"]`` (the theme's
    error colour) for errors, ``colors["val"]`` (its warning colour) for warnings."""
    if not found or ylim is None:
        return []
    rows = 4 * max(1, height)
    ys = np.linspace(ylim[0], ylim[1], rows)
    return [
        Series(np.full(rows, x), ys, colors["nan"] if sev == "error" else colors["val"], MARK, lines=False)
        for x, sev in found
    ]


def legend(histories: Sequence[History]) -> str:
    """The subtitle's key for the marks (markup), "" when the chart draws none."""
    if len(histories) != 1:
        return ""
    sev = {f.severity for f in histories[0].findings.current if f.severity in ("error", "warning")}
    if not sev:
        return ""
    return f" [{'$error' if 'error' in sev else '$warning'}]{MARK}[/] finding (d)"
