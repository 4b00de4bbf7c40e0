"""The text under the training chart: two stats lines for one run (latest, EMA, best, validation), or
a legend for several (each run's colour, name and value at the time cursor). Markup for
:class:`~tuitrain.ui.widgets.loss_plot.StatsLines`; pure apart from Textual's markup measure."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from textual.content import Content

from tuitrain.ui.fmt import fmt_si
from tuitrain.ui.history import History
from tuitrain.ui.replay.compare import EPOCH_METRICS, PERCENT
from tuitrain.ui.view_state import ViewState


def value_at(history: History, metric: str, step: int | None) -> float:
    """``metric`` of a run at ``step`` (None: the latest): the step's value, or the last finished epoch's."""
    if metric in EPOCH_METRICS:
        ep = history.epoch_at(step)
        return float(getattr(ep, metric)) if ep is not None else math.nan
    row = history.scalars_at(step)
    return float(row[metric]) if row is not None and metric in row else math.nan


def fmt_metric(metric: str, v: float) -> str:
    if not math.isfinite(v):
        return "—"
    return f"{v * 100:.1f}%" if metric in PERCENT else fmt_si(v, 4)


def legend_markup(runs: Sequence[tuple[str, str, History]], view: ViewState, width: int, max_lines: int) -> str:
    """One entry per run (colour, name, value of the metric at the cursor), packed into lines; runs
    that do not fit are counted at the end. The selected run's name is bold."""
    entries = []
    for i, (name, color, h) in enumerate(runs):
        nm = name.replace("[", r"\[")
        nm = f"[b]{nm}[/]" if i == view.selected else nm
        entries.append(f"[{color}]━━[/] {nm} {fmt_metric(view.metric, value_at(h, view.metric, view.cursor))}")
    lines: list[str] = []
    cur = ""
    for i, e in enumerate(entries):
        cand = f"{cur}  {e}" if cur else e
        if _plain_len(cand) <= width or not cur:
            cur = cand
            continue
        if len(lines) == max_lines - 1:
            cur += f"  [$text-muted]+{len(entries) - i} more[/]"
            break
        lines.append(cur)
        cur = e
    lines.append(cur)
    return "\n".join(lines)


def _last_finite(a: np.ndarray) -> float:
    fin = a[np.isfinite(a)]
    return float(fin[-1]) if fin.size else float("nan")


def stats_markup(history: History, view: ViewState, width: int) -> str:
    """Two lines: loss and accuracy (latest, EMA, best step value, validation and best validation)."""
    lines = []
    if history.scalars.n == 0:
        return "[b]loss[/] —\n[b]acc [/] —"
    for metric in ("loss", "acc"):
        y = history.column(metric)
        pct = metric == "acc"
        f = (lambda v: "—" if not math.isfinite(v) else f"{v * 100:.1f}%") if pct else (lambda v: fmt_si(v, 4) if math.isfinite(v) else "—")
        latest = _last_finite(y)
        sm = _last_finite(history.smoothed(metric, view.smoothing)) if y.shape[0] else float("nan")
        fin = y[np.isfinite(y)]
        best = (float(fin.max()) if pct else float(fin.min())) if fin.size else float("nan")
        ep = history.epochs
        val = ep.column("val_acc" if pct else "val_loss") if len(ep) else np.zeros(0)
        vlast = _last_finite(val)
        vbest = history.best_val_acc if pct else history.best_val_loss
        vbest = float("nan") if vbest is None else vbest
        label = "acc " if pct else "loss"
        hl = "[b $primary]" if view.metric == metric else "[b]"
        full = f"{hl}{label}[/] [b]{f(latest)}[/] [$text-muted]ema[/] {f(sm)} [$text-muted]{'max' if pct else 'min'}[/] {f(best)}  [$warning]val[/] [b]{f(vlast)}[/] [$text-muted]best[/] {f(vbest)}"
        short = f"{hl}{label}[/] [b]{f(latest)}[/] [$text-muted]ema[/] {f(sm)} [$warning]val[/] [b]{f(vlast)}[/] [$text-muted]best[/] {f(vbest)}"
        tiny = f"{hl}{label}[/] [b]{f(latest)}[/] [$warning]val[/] {f(vlast)} [$text-muted]best[/] {f(vbest)}"
        for cand in (full, short, tiny):
            if _plain_len(cand) <= width:
                lines.append(cand)
                break
        else:
            lines.append(tiny)
    return "\n".join(lines)


def _plain_len(markup: str) -> int:
    return Content.from_markup(markup).cell_length
