"""The text under the training chart: two stats lines for one run (latest, EMA, best, validation), or
a legend for several (each run's colour, name and value at the time cursor). Markup for
:class:`~tuitrain.ui.widgets.loss_plot.StatsLines`; pure apart from Textual's markup measure."""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Sequence

import numpy as np
from rich.cells import cell_len
from textual.content import Content

from tuitrain.ui.fmt import num_markup
from tuitrain.ui.history import History
from tuitrain.ui.replay.compare import EPOCH_METRICS, PERCENT
from tuitrain.ui.view_state import ViewState


def value_at(history: History, metric: str, step: int | None) -> float | None:
    """``metric`` of a run at ``step`` (None: the latest): the step's value, or the last finished
    epoch's; None where there is none (NaN is a value: the run produced it)."""
    if metric in EPOCH_METRICS:
        ep = history.epoch_at(step)
        return float(getattr(ep, metric)) if ep is not None else None
    if history.is_epoch_metric(metric):  # a user loop's own epoch metric
        ep = history.epoch_at(step)
        return float(ep.metrics[metric]) if ep is not None and metric in ep.metrics else None
    row = history.scalars_at(step)
    return float(row[metric]) if row is not None and metric in row else None


def fmt_metric(metric: str, v: float | None) -> str:
    """Markup: ``—`` when missing, a red ``nan`` when the run produced one, else the number."""
    return num_markup(v, 4, pct=metric in PERCENT)


def legend_markup(
    runs: Sequence[tuple[str, str, History]], view: ViewState, width: int, max_lines: int
) -> str:
    """One entry per run (colour, name, value of the metric at the cursor), packed into lines; runs
    that do not fit are counted at the end. The selected run's name is bold."""
    entries = []
    for i, (name, color, h) in enumerate(runs):
        nm = name.replace("[", r"\[")
        nm = f"[b]{nm}[/]" if i == view.selected else nm
        entries.append(
            f"[{color}]━━[/] {nm} {fmt_metric(view.metric, value_at(h, view.metric, view.cursor))}"
        )
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


def last_finite(a: np.ndarray, chunk: int = 256) -> float:
    """The last finite value of ``a`` (NaN if none), looking back from the end a chunk at a time:
    O(1) on a live series instead of a pass over the whole run on every stats refresh."""
    end = a.shape[0]
    while end > 0:
        start = max(0, end - chunk)
        part = a[start:end]
        ok = np.flatnonzero(np.isfinite(part))
        if ok.size:
            return float(part[ok[-1]])
        end, chunk = start, chunk * 4
    return float("nan")


_BEST: weakref.WeakKeyDictionary[History, dict[str, tuple[int, int, int, float]]] = (
    weakref.WeakKeyDictionary()
)


def best_value(history: History, metric: str, largest: bool) -> float:
    """The best (largest or smallest) finite value of a per-step column so far, kept per history and
    extended by the rows added since the last call (recomputed when the rows were decimated)."""
    y = history.column(metric)
    n = y.shape[0]
    key = (id(history.scalars), history.scalars.epoch)
    got = _BEST.setdefault(history, {}).get(metric)
    start, best = (got[2], got[3]) if got is not None and got[:2] == key and got[2] <= n else (0, math.nan)
    tail = y[start:]
    fin = tail[np.isfinite(tail)]
    if fin.size:
        v = float(fin.max() if largest else fin.min())
        best = v if not math.isfinite(best) else (max(best, v) if largest else min(best, v))
    _BEST[history][metric] = (*key, n, best)
    return best


def stats_metrics(history: History, view: ViewState) -> tuple[str, str]:
    """The two per-step scalars under the chart: the loss, then the accuracy, or the user's own key
    the chart shows (or, for a loop that logs no accuracy, its first own key)."""
    own = history.user_scalars
    if view.metric in own:
        return "loss", view.metric
    if own and history.run is not None and history.run.source != "preset" and not history.has_values("acc"):
        return "loss", own[0]
    return "loss", "acc"


def stats_markup(history: History, view: ViewState, width: int) -> str:
    """Two lines: loss and accuracy (latest, EMA, best step value, validation and best validation);
    a user's own scalar instead of the accuracy when the chart shows it (no validation for it)."""
    lines = []
    pair = stats_metrics(history, view)
    if history.scalars.n == 0:
        return "[b]loss[/] —\n" + ("[b]acc [/] —" if pair[1] == "acc" else f"[b]{_esc(pair[1])}[/] —")
    for metric in pair:
        y = history.column(metric)
        pct = metric == "acc"
        own = metric not in ("loss", "acc")
        largest = pct or (own and "acc" in metric.lower())

        def f(v: float | None, pct: bool = pct) -> str:
            return num_markup(v, 4, pct=pct)

        # The latest value as it is: a diverged run's NaN is shown (red), not the last finite value,
        # and neither is the EMA, which only holds its last finite value across NaN steps.
        latest = float(y[-1]) if y.shape[0] else None
        if latest is None or math.isfinite(latest):
            sm = last_finite(history.smoothed(metric, view.smoothing)) if y.shape[0] else math.nan
            sm = sm if math.isfinite(sm) else None
        else:
            sm = latest
        best = best_value(history, metric, largest=largest)  # the best finite value so far; None if none
        best = best if math.isfinite(best) else None
        ep = history.epochs
        hl = "[b $primary]" if view.metric == metric else "[b]"
        if own:  # a user's key: no validation series to show beside it
            label = _esc(metric)
            mm = "max" if largest else "min"
            full = (
                f"{hl}{label}[/] [b]{f(latest)}[/] [$text-muted]ema[/] {f(sm)} [$text-muted]{mm}[/] {f(best)}"
            )
            for cand in (full, f"{hl}{label}[/] [b]{f(latest)}[/] [$text-muted]ema[/] {f(sm)}"):
                if _plain_len(cand) <= width:
                    break
            lines.append(cand)
            continue
        val = ep.column("val_acc" if pct else "val_loss") if len(ep) else np.zeros(0)
        vlast = float(val[-1]) if val.shape[0] else None
        vbest = history.best_val_acc if pct else history.best_val_loss
        label = "acc " if pct else "loss"
        full = f"{hl}{label}[/] [b]{f(latest)}[/] [$text-muted]ema[/] {f(sm)} [$text-muted]{'max' if pct else 'min'}[/] {f(best)}  [$warning]val[/] [b]{f(vlast)}[/] [$text-muted]best[/] {f(vbest)}"
        short = f"{hl}{label}[/] [b]{f(latest)}[/] [$text-muted]ema[/] {f(sm)} [$warning]val[/] [b]{f(vlast)}[/] [$text-muted]best[/] {f(vbest)}"
        tiny = f"{hl}{label}[/] [b]{f(latest)}[/] [$warning]val[/] {f(vlast)} [$text-muted]best[/] {f(vbest)}"
        if vlast is None and vbest is None and history.run is not None and history.run.source != "preset":
            # a user's loop that logs no validation for it: no empty "val — best —" to read
            full = f"{hl}{label}[/] [b]{f(latest)}[/] [$text-muted]ema[/] {f(sm)} [$text-muted]{'max' if pct else 'min'}[/] {f(best)}"
            short = tiny = f"{hl}{label}[/] [b]{f(latest)}[/] [$text-muted]ema[/] {f(sm)}"
        for cand in (full, short, tiny):
            if _plain_len(cand) <= width:
                lines.append(cand)
                break
        else:
            lines.append(tiny)
    return "\n".join(lines)


def _esc(text: str) -> str:
    return text.replace("[", r"\[")


_TAG = re.compile(r"\[[^\[\]]*\]")


def _plain_len(markup: str) -> int:
    """Cells the markup takes on screen. Without escapes (the stats lines: numbers and tags) the tags
    are cut out directly; parsing three candidates per line as Content cost ~2 ms a refresh."""
    if "\\" not in markup:
        return cell_len(_TAG.sub("", markup))
    return Content.from_markup(markup).cell_length
