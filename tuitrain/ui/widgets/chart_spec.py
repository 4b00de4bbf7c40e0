"""What the training chart draws, computed from the history and the view: pure numpy, already
downsampled (at most about two points per chart column), unit-testable without a terminal.

One run: the raw min/max envelope and the EMA of a per-step metric, with the validation numbers of
the epochs for loss and accuracy; or the per-epoch series of an epoch metric (``val_acc``...).
Several runs (:func:`build_overlay_spec`): one line per run in the run's colour (EMA of a per-step
metric, or the epoch series with a dot per epoch), the selected run drawn last, on top.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tuitrain.ui.downsample import bucket_mean, log_ticks, minmax_downsample, robust_range
from tuitrain.ui.fmt import fmt_si
from tuitrain.ui.history import History
from tuitrain.ui.replay.compare import EPOCH_METRICS, PERCENT
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets import finding_marks

VAL_OF = {"loss": "val_loss", "acc": "val_acc"}  # the epoch series drawn with a per-step metric


@dataclass
class Line:
    """One overlaid series: ``points`` draws a dot per value (epochs), else a braille line."""

    x: np.ndarray
    y: np.ndarray
    color: str  # "#rrggbb"
    points: bool = False


@dataclass
class ChartSpec:
    """Everything one chart build needs, already downsampled."""

    raw_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    raw_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sm_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sm_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    val_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    val_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lines: list[Line] = field(default_factory=list)  # overlaid runs
    nan_x: float | None = None  # the step where the loss stopped being finite, inside the x window
    marks: list[tuple[float, str]] = field(default_factory=list)  # (first_step, severity) of findings
    xlim: tuple[float, float] = (0.0, 1.0)
    ylim: tuple[float, float] | None = None
    yticks: list[float] = field(default_factory=list)
    ylabels: list[str] = field(default_factory=list)
    message: str = ""


def nice_ticks(lo: float, hi: float, count: int, min_step: float = 0.0) -> list[float]:
    """About ``count`` round tick values in [lo, hi], at least ``min_step`` apart (1 for steps, which
    are whole numbers: ticks at 0.5 would be labelled ``0 0 1``)."""
    if not (hi > lo) or count < 2:
        return [lo]
    raw = max((hi - lo) / (count - 1), min_step)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [v for v in np.arange(start, hi + step * 0.001, step)]


def step_label(v: float, digits: int = 3) -> str:
    v = float(v)
    if abs(v) >= 1e6:
        return f"{v / 1e6:.{digits}g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.{digits}g}k"
    return f"{int(round(v))}"


def distinct_labels(ticks: Sequence[float], fmt: Callable[[float, int], str], digits: int = 3) -> list[str]:
    """Labels for ``ticks`` that never repeat: the fewest significant digits (from ``digits``) that
    tell every tick apart (``4.6 4.6`` becomes ``4.605 4.61``, ``100k 100k`` ``100k 100.1k``)."""
    labels = [fmt(t, digits) for t in ticks]
    for d in range(digits + 1, digits + 8):
        if len(set(labels)) == len(labels):
            break
        labels = [fmt(t, d) for t in ticks]
    return labels


def scale_of(metric: str) -> float:
    return 100.0 if metric in PERCENT else 1.0


def epoch_series(history: History, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of an epoch column, each epoch placed at its last step (a finished run's last
    epoch then sits at the run's last step, inside the chart); finite values only."""
    ep = history.epochs
    if not len(ep):
        return np.zeros(0), np.zeros(0)
    x, y = ep.column("step") - 1, ep.column(metric)
    ok = np.isfinite(y)
    return x[ok], y[ok]


def per_epoch(metric: str, histories: Sequence[History]) -> bool:
    """Whether ``metric`` is drawn one point per epoch: a standard epoch metric, or an epoch metric of
    a user's loop (``run.log_epoch``) in any of the runs."""
    return metric in EPOCH_METRICS or any(h.is_epoch_metric(metric) for h in histories)


def data_extent(histories: Sequence[History], metric: str) -> tuple[float, float] | None:
    """(first, last) x of what the chart can show for ``metric`` over every run."""
    lo, hi = [], []
    epochs = per_epoch(metric, histories)
    for h in histories:
        x = epoch_series(h, metric)[0] if epochs else h.column("step")
        if x.shape[0]:
            lo.append(float(x[0]))
            hi.append(float(x[-1]))
    if epochs and lo:  # epochs start at step 0 even if the first ends later
        lo = [min(lo + [0.0])]
    return (min(lo), max(hi)) if lo else None


def _window(x: np.ndarray, lo: float, hi: float) -> tuple[int, int]:
    return int(np.searchsorted(x, lo, "left")), int(np.searchsorted(x, hi, "right"))


def _log(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(y) & (y > 0)
    return x[ok], np.log10(y[ok])


def _finish(spec: ChartSpec, view: ViewState, lo: float, hi: float, skip: float, metric: str) -> ChartSpec:
    """x limits, the robust y range and, on a log axis, the decade ticks."""
    ys = [spec.raw_y, spec.sm_y, spec.val_y, *(ln.y for ln in spec.lines)]
    rng = robust_range(*ys, skip_frac=skip)
    spec.xlim = (lo, hi if hi > lo else lo + 1)
    if rng is None:
        spec.message = f"no finite {metric} values yet"
        return spec
    spec.ylim = rng
    if view.log_y:
        ticks = log_ticks(*rng, max_ticks=5)
        if len(ticks) < 2:
            ticks = list(np.linspace(rng[0], rng[1], 4)[1:-1])
        spec.yticks = ticks
        spec.ylabels = distinct_labels([10**t for t in ticks], fmt_si, 2)
    return spec


def build_spec(history: History, view: ViewState, columns: int) -> ChartSpec:
    """The chart's data for one run and the current view."""
    metric = view.metric
    spec = ChartSpec()
    if per_epoch(metric, [history]):
        return _epoch_spec(history, view, metric)
    x = history.column("step")
    if x.shape[0] == 0:
        spec.message = "waiting for the first steps…" if not history.is_finished else "no steps recorded"
        return spec
    y = history.column(metric)
    ys = history.smoothed(metric, view.smoothing)
    first, last = float(x[0]), float(x[-1])
    lo, hi = view.x_window(first, last)
    i0, i1 = _window(x, lo, hi)
    xr, yr, ysr = x[i0:i1], y[i0:i1], ys[i0:i1]
    if history.nan_step is not None:
        # The EMA holds its last finite value across NaN steps: drawn, that is a flat line where the
        # run has no value at all. Cut it there, and mark the step where the loss stopped being finite.
        ysr = np.where(np.isfinite(yr), ysr, np.nan)
        if lo <= history.nan_step <= hi:
            spec.nan_x = float(history.nan_step)
    spec.marks = finding_marks.marks(history, lo, hi)
    scale = scale_of(metric)
    vx, vy = epoch_series(history, VAL_OF[metric]) if metric in VAL_OF else (np.zeros(0), np.zeros(0))
    sel = (vx >= lo) & (vx <= hi)
    vx, vy = vx[sel], vy[sel] * scale
    # downsample first, scale the few points after: no pass over the whole run beyond the reductions
    spec.raw_x, spec.raw_y = minmax_downsample(xr, yr, columns)
    spec.raw_y = spec.raw_y * scale
    if xr.shape[0] > columns:  # the two columns one at a time (a 2-D reduceat is several times slower)
        spec.sm_x, spec.sm_y = bucket_mean(xr, columns), bucket_mean(ysr, columns) * scale
    else:
        spec.sm_x, spec.sm_y = xr, ysr * scale
    ok = np.isfinite(spec.sm_y)
    spec.sm_x, spec.sm_y = spec.sm_x[ok], spec.sm_y[ok]
    spec.val_x, spec.val_y = vx, vy
    if view.log_y:
        spec.raw_x, spec.raw_y = _log(spec.raw_x, spec.raw_y)
        spec.sm_x, spec.sm_y = _log(spec.sm_x, spec.sm_y)
        spec.val_x, spec.val_y = _log(spec.val_x, spec.val_y)
    return _finish(spec, view, lo, hi, 0.05 if i0 == 0 else 0.0, metric)


def _epoch_spec(history: History, view: ViewState, metric: str) -> ChartSpec:
    spec = ChartSpec()
    ext = data_extent([history], metric)
    if ext is None:
        spec.message = "waiting for the first epoch…" if not history.is_finished else "no epochs recorded"
        return spec
    lo, hi = view.x_window(*ext)
    x, y = epoch_series(history, metric)
    sel = (x >= lo) & (x <= hi)
    spec.val_x, spec.val_y = x[sel], y[sel] * scale_of(metric)
    if view.log_y:
        spec.val_x, spec.val_y = _log(spec.val_x, spec.val_y)
    return _finish(spec, view, lo, hi, 0.0, metric)


def build_overlay_spec(
    histories: Sequence[History], colors: Sequence[str], view: ViewState, columns: int
) -> ChartSpec:
    """One line per run for ``view.metric``; the selected run last so that it is drawn on top."""
    metric = view.metric
    spec = ChartSpec()
    ext = data_extent(histories, metric)
    if ext is None:
        spec.message = "waiting for the first steps…"
        return spec
    lo, hi = view.x_window(*ext)
    scale = scale_of(metric)
    skip = 0.0
    order = [i for i in range(len(histories)) if i != view.selected] + [view.selected]
    epochs = per_epoch(metric, histories)
    for i in order:
        if i >= len(histories):
            continue
        h, color = histories[i], colors[i]
        if epochs:
            x, y = epoch_series(h, metric)
            sel = (x >= lo) & (x <= hi)
            x, y, points = x[sel], y[sel] * scale, True
        else:
            xs = h.column("step")
            if not xs.shape[0]:
                continue
            i0, i1 = _window(xs, lo, hi)
            skip = 0.05 if i0 == 0 else skip
            x, y = xs[i0:i1], h.smoothed(metric, view.smoothing)[i0:i1]
            x, y = (
                (bucket_mean(x, columns), bucket_mean(y, columns) * scale)
                if x.shape[0] > columns
                else (x, y * scale)
            )
            points = False
        ok = np.isfinite(y)
        x, y = x[ok], y[ok]
        if view.log_y:
            x, y = _log(x, y)
        spec.lines.append(Line(x, y, color, points))
    return _finish(spec, view, lo, hi, skip, metric)
