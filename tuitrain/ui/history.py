"""What the dashboard remembers of a run, as numpy buffers, and the downsampled views the widgets read.

No textual here (and no torch): the app's message handler calls :meth:`History.extend` with the events a
source delivered, and the widgets read arrays back at redraw time. Memory is bounded whatever the run:

* per-step scalars live in a :class:`DecimatingSeries`: full resolution up to ``step_cap`` rows, then
  every other row is dropped and later rows are kept at the coarser stride (a 10-hour run at 10,000
  steps/s still fits in ``step_cap`` rows);
* per-layer probe rows ``(4, L)`` live twice: the most recent ``probe_rows`` in full in a
  :class:`Ring` (the bars read its last row), and the whole run as log10 bucket means in a
  :class:`LogBuckets` whose bucket width doubles when it fills (the heatmap and the sparklines read it);
* epochs are a small table; the event log keeps its last ``event_cap`` entries.

The module-level helpers (:func:`minmax_downsample`, :func:`bucket_mean`, :func:`ema`,
:func:`robust_range`, :func:`log_ticks`) are the downsampling maths, kept here so they are unit-tested
without a terminal.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from tuitrain.events import (
    PROBE_NAMES,
    STEP_SCALARS,
    Alert,
    EpochEnd,
    Event,
    LayerInfo,
    RunFinished,
    RunStarted,
    StatusChanged,
    StepBatch,
    TestResult,
)

LOG_FLOOR = 1e-30  # log10 of a zero probe is drawn as this (no -inf in the maths)
FINISHED = ("completed", "stopped", "failed")

# ---------------------------------------------------------------------------------------------
# Buffers


class DecimatingSeries:
    """Rows of ``width`` float64 columns with bounded memory.

    Appends are amortised O(rows). When ``cap`` rows are held, every other row is dropped and the
    stride doubles: from then on only every ``stride``-th appended row is kept, so the buffer always
    spans the whole run at a uniform stride. ``epoch`` counts compactions (caches key on it).
    """

    def __init__(self, width: int, cap: int = 1 << 18, initial: int = 4096) -> None:
        if cap < 4 or cap % 2:
            raise ValueError("cap must be an even number >= 4")
        self.width = width
        self.cap = cap
        self._data = np.empty((min(initial, cap), width), dtype=np.float64)
        self.n = 0
        self.stride = 1
        self.epoch = 0  # bumped at each compaction
        self._skip = 0  # rows to skip before the next kept one (when stride > 1)

    def __len__(self) -> int:
        return self.n

    @property
    def data(self) -> np.ndarray:
        """The kept rows, oldest first (a view: copy it if you keep it across appends)."""
        return self._data[: self.n]

    def append(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.width)
        while rows.shape[0]:
            k = rows.shape[0]
            s, p = self.stride, self._skip
            idx = np.arange(p, k, s)  # the rows of this chunk that are kept
            room = self.cap - self.n
            if idx.shape[0] <= room:
                self._put(rows[idx])
                self._skip = (s - 1 - (k - 1 - int(idx[-1]))) if idx.shape[0] else p - k
                return
            if room:
                self._put(rows[idx[:room]])
                rows = rows[int(idx[room - 1]) + 1 :]
                self._skip = s - 1
            self._compact()

    def _put(self, rows: np.ndarray) -> None:
        k = rows.shape[0]
        if not k:
            return
        need = self.n + k
        if need > self._data.shape[0]:
            size = self._data.shape[0]
            while size < need:
                size *= 2
            new = np.empty((min(size, self.cap), self.width), dtype=np.float64)
            new[: self.n] = self._data[: self.n]
            self._data = new
        self._data[self.n : need] = rows
        self.n = need

    def _compact(self) -> None:
        """Keep stored rows 0, 2, 4, ... and double the stride, keeping the phase of later appends."""
        old = self.stride
        since = old - 1 - self._skip  # raw rows appended since the last stored row
        last_survives = (self.n - 1) % 2 == 0
        kept = self._data[: self.n : 2].copy()
        self.n = kept.shape[0]
        self._data[: self.n] = kept
        self.stride = old * 2
        self._skip = (self.stride - 1 - since) if last_survives else (old - 1 - since)
        self.epoch += 1


class Ring:
    """The last ``cap`` rows of shape ``row_shape`` (and their int64 keys), grown lazily up to ``cap``."""

    def __init__(self, cap: int, row_shape: tuple[int, ...], dtype=np.float32, initial: int = 256) -> None:
        self.cap = max(1, int(cap))
        self.row_shape = tuple(row_shape)
        self._data = np.empty((min(initial, self.cap), *self.row_shape), dtype=dtype)
        self._keys = np.empty(self._data.shape[0], dtype=np.int64)
        self.n = 0  # rows held (<= cap)
        self.total = 0  # rows ever appended
        self._head = 0  # next write position once full

    def __len__(self) -> int:
        return self.n

    def append(self, keys: np.ndarray, rows: np.ndarray) -> None:
        rows = np.asarray(rows).reshape(-1, *self.row_shape)
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        k = rows.shape[0]
        if not k:
            return
        if k >= self.cap:
            rows, keys = rows[-self.cap :], keys[-self.cap :]
            self._grow(self.cap)
            self._data[:] = rows
            self._keys[:] = keys
            self.n, self._head = self.cap, 0
            self.total += k
            return
        if self.n < self.cap:
            need = self.n + k
            if need <= self.cap:
                self._grow(need)
                self._data[self.n : need] = rows
                self._keys[self.n : need] = keys
                self.n = need
                self._head = need % self.cap
                self.total += k
                return
            self._grow(self.cap)
            first = self.cap - self.n
            self._data[self.n :] = rows[:first]
            self._keys[self.n :] = keys[:first]
            self.n, self._head = self.cap, 0
            self.total += first
            rows, keys, k = rows[first:], keys[first:], k - first
        # full: wrap-around write
        end = self._head + k
        if end <= self.cap:
            self._data[self._head : end] = rows
            self._keys[self._head : end] = keys
        else:
            a = self.cap - self._head
            self._data[self._head :] = rows[:a]
            self._keys[self._head :] = keys[:a]
            self._data[: k - a] = rows[a:]
            self._keys[: k - a] = keys[a:]
        self._head = end % self.cap
        self.total += k

    def _grow(self, need: int) -> None:
        size = self._data.shape[0]
        if need <= size:
            return
        while size < need:
            size *= 2
        size = min(size, self.cap)
        data = np.empty((size, *self.row_shape), dtype=self._data.dtype)
        keys = np.empty(size, dtype=np.int64)
        data[: self.n] = self._data[: self.n]
        keys[: self.n] = self._keys[: self.n]
        self._data, self._keys = data, keys

    def last(self) -> tuple[int, np.ndarray] | None:
        if not self.n:
            return None
        i = (self._head - 1) % self.cap if self.n == self.cap else self.n - 1
        return int(self._keys[i]), self._data[i]

    def window(self, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The last ``count`` rows (all held rows by default), oldest first, as copies."""
        count = self.n if count is None else max(0, min(int(count), self.n))
        if self.n < self.cap:
            return self._keys[self.n - count : self.n].copy(), self._data[self.n - count : self.n].copy()
        idx = (np.arange(self._head - count, self._head)) % self.cap
        return self._keys[idx], self._data[idx]


class LogBuckets:
    """The whole run of probe rows as means of log10 values in at most ``cap`` time buckets.

    Starts one row per bucket; when full, neighbouring buckets merge (weighted by their counts) and
    the bucket width doubles. The heatmap and the sparklines only ever need a few hundred columns,
    so ``cap`` of a couple of thousand keeps them exact for short runs and bounded for long ones.
    """

    def __init__(self, cap: int, row_shape: tuple[int, ...]) -> None:
        if cap < 4 or cap % 2:
            raise ValueError("cap must be an even number >= 4")
        self.cap = cap
        self.row_shape = tuple(row_shape)
        self.values = np.zeros((cap, *self.row_shape), dtype=np.float32)
        self.steps = np.zeros(cap, dtype=np.float64)  # mean step of each bucket
        self.counts = np.zeros(cap, dtype=np.int64)
        self.n = 0
        self.width = 1  # rows per full bucket

    def __len__(self) -> int:
        return self.n

    def append(self, steps: np.ndarray, log_rows: np.ndarray) -> None:
        log_rows = np.asarray(log_rows, dtype=np.float32).reshape(-1, *self.row_shape)
        steps = np.asarray(steps, dtype=np.float64).reshape(-1)
        i = 0
        m = log_rows.shape[0]
        while i < m:
            if self.n and self.counts[self.n - 1] < self.width:
                # top up the last, partial bucket
                j = self.n - 1
                take = min(self.width - int(self.counts[j]), m - i)
                c = float(self.counts[j])
                tot = c + take
                self.values[j] = (self.values[j] * c + log_rows[i : i + take].sum(axis=0)) / tot
                self.steps[j] = (self.steps[j] * c + steps[i : i + take].sum()) / tot
                self.counts[j] += take
                i += take
                continue
            if self.n == self.cap:
                self._merge()
                continue
            # whole new buckets, as many as fit
            rem = m - i
            nb = min(self.cap - self.n, -(-rem // self.width))
            take = min(rem, nb * self.width)
            full = take // self.width
            if full:
                blk = log_rows[i : i + full * self.width].reshape(full, self.width, *self.row_shape)
                self.values[self.n : self.n + full] = blk.mean(axis=1)
                self.steps[self.n : self.n + full] = steps[i : i + full * self.width].reshape(full, -1).mean(axis=1)
                self.counts[self.n : self.n + full] = self.width
                self.n += full
                i += full * self.width
            part = take - full * self.width
            if part:
                self.values[self.n] = log_rows[i : i + part].mean(axis=0)
                self.steps[self.n] = steps[i : i + part].mean()
                self.counts[self.n] = part
                self.n += 1
                i += part

    def _merge(self) -> None:
        h = self.n // 2
        c = self.counts[: 2 * h].reshape(h, 2).astype(np.float64)
        tot = c.sum(axis=1)
        v = self.values[: 2 * h].reshape(h, 2, *self.row_shape).astype(np.float64)
        w = (c / tot[:, None]).reshape(h, 2, *([1] * len(self.row_shape)))
        self.values[:h] = (v * w).sum(axis=1).astype(np.float32).reshape(h, *self.row_shape)
        self.steps[:h] = (self.steps[: 2 * h].reshape(h, 2) * (c / tot[:, None])).sum(axis=1)
        self.counts[:h] = tot.astype(np.int64)
        if self.n % 2:  # an odd bucket out stays as it is
            self.values[h] = self.values[self.n - 1]
            self.steps[h] = self.steps[self.n - 1]
            self.counts[h] = self.counts[self.n - 1]
            h += 1
        self.n = h
        self.width *= 2

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        return self.steps[: self.n], self.values[: self.n]


# ---------------------------------------------------------------------------------------------
# Downsampling maths


def minmax_downsample(x: np.ndarray, y: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """At most two points (the min and the max, in x order) per column of ``columns`` equal index buckets.

    Non-finite y values are dropped first. Returns the points unchanged when they already fit.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y)
    if not ok.all():
        x, y = x[ok], y[ok]
    n = y.shape[0]
    columns = max(1, int(columns))
    if n <= 2 * columns:
        return x, y
    edges = np.linspace(0, n, columns + 1).astype(np.int64)
    starts = edges[:-1]
    starts = starts[starts < n]
    # argmin/argmax per bucket via reduceat on values, then locate them
    mins = np.minimum.reduceat(y, starts)
    maxs = np.maximum.reduceat(y, starts)
    ends = np.append(starts[1:], n)
    # positions: first index in each bucket equal to min / max (vectorised with a bucket id)
    bucket = np.repeat(np.arange(starts.shape[0]), ends - starts)
    is_min = y == mins[bucket]
    is_max = y == maxs[bucket]
    imin = _first_true_per_bucket(is_min, starts, ends)
    imax = _first_true_per_bucket(is_max, starts, ends)
    lo = np.minimum(imin, imax)
    hi = np.maximum(imin, imax)
    idx = np.stack([lo, hi], axis=1).reshape(-1)
    # a flat bucket gives the same point twice: keep it once
    keep = np.ones(idx.shape[0], dtype=bool)
    keep[1::2] = lo != hi
    idx = idx[keep]
    return x[idx], y[idx]


def _first_true_per_bucket(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    pos = np.where(mask, np.arange(mask.shape[0]), mask.shape[0])
    first = np.minimum.reduceat(pos, starts)
    return np.minimum(first, ends - 1)


def bucket_mean(values: np.ndarray, buckets: int, *, stretch: bool = False) -> np.ndarray:
    """Mean of ``values`` (axis 0) over ``buckets`` equal index buckets, ignoring NaN.

    With fewer rows than buckets: the rows as they are, or with ``stretch`` each row repeated so the
    result has exactly ``buckets`` rows (nearest neighbour; used by the heatmap to fill its width).
    A bucket whose values are all NaN stays NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    buckets = max(1, int(buckets))
    if n == 0:
        return values.reshape(0, *values.shape[1:])
    if n <= buckets:
        if not stretch or n == buckets:
            return values
        idx = np.minimum((np.arange(buckets) * n) // buckets, n - 1)
        return values[idx]
    starts = np.linspace(0, n, buckets + 1).astype(np.int64)[:-1]
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    sums = np.add.reduceat(filled, starts, axis=0)
    cnt = np.add.reduceat(finite.astype(np.int64), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sums / cnt
    out[cnt == 0] = np.nan
    return out


def ema(y: np.ndarray, strength: float, *, state: tuple[float, int] | None = None) -> tuple[np.ndarray, tuple[float, int]]:
    """TensorBoard-style debiased exponential moving average, vectorised.

    ``strength`` in [0, 1): 0 is no smoothing, 0.99 is heavy. Non-finite inputs do not move the
    average (the output repeats the last value). ``state`` continues a previous call (the biased
    accumulator and how many finite values it has seen), so appending is incremental.
    Returns ``(smoothed, new_state)``.
    """
    y = np.asarray(y, dtype=np.float64)
    a = float(min(max(strength, 0.0), 0.9999))
    acc, seen = (0.0, 0) if state is None else state
    n = y.shape[0]
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out, (acc, seen)
    fin = np.isfinite(y)
    if a == 0.0:  # no smoothing: the values, non-finite ones replaced by the last finite value
        idx = np.maximum.accumulate(np.where(fin, np.arange(n), -1))
        out = np.where(idx >= 0, y[np.maximum(idx, 0)], acc if seen else np.nan)
        if fin.any():
            acc = float(y[np.flatnonzero(fin)[-1]])
        return out, (acc, seen + int(fin.sum()))
    x = np.where(fin, y, 0.0)
    w = fin.astype(np.float64)  # non-finite points: decay 1 (no change), weight 0
    # block size so that a**-block stays far from overflow
    block = int(min(1024, max(1, math.floor(150.0 / max(-math.log10(a), 1e-12)))))
    i = 0
    while i < n:
        j = min(n, i + block)
        xb, wb = x[i:j], w[i:j]
        # decay per position: a where finite, 1 where not; cumulative product within the block
        d = np.where(wb > 0, a, 1.0)
        cp = np.cumprod(d)  # prod of decays up to and including k
        # acc_k = cp_k * acc_prev + sum_{t<=k} (cp_k / cp_t) * (1-a) * x_t * w_t
        contrib = (1.0 - a) * xb * wb / cp
        out[i:j] = cp * (acc + np.cumsum(contrib))
        acc = float(out[j - 1])
        i = j
    seen_cum = seen + np.cumsum(fin)
    with np.errstate(invalid="ignore", divide="ignore"):
        debias = 1.0 - np.power(a, seen_cum)
        res = np.where(seen_cum > 0, out / debias, np.nan)
    seen = int(seen_cum[-1])
    return res, (acc, seen)


def robust_range(
    *arrays: np.ndarray, skip_frac: float = 0.05, lo_pct: float = 1.0, hi_pct: float = 99.0, pad: float = 0.06
) -> tuple[float, float] | None:
    """A y-range that ignores early outliers (the first ``skip_frac`` of each array when it is long
    enough) and the extreme percentiles, padded by ``pad`` of the span. None when nothing is finite."""
    parts = []
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        if a.size == 0:
            continue
        skip = int(a.shape[0] * skip_frac) if a.shape[0] >= 50 else 0
        a = a[skip:]
        a = a[np.isfinite(a)]
        if a.size:
            parts.append(a)
    if not parts:
        return None
    allv = np.concatenate(parts)
    if allv.size >= 20:
        lo, hi = np.percentile(allv, [lo_pct, hi_pct])
    else:
        lo, hi = float(allv.min()), float(allv.max())
    lo, hi = float(lo), float(hi)
    span = hi - lo
    if span <= 0 or not math.isfinite(span):
        span = abs(hi) * 0.1 or 1.0
        lo, hi = lo - span / 2, hi + span / 2
        return lo, hi
    return lo - span * pad, hi + span * pad


def log_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Tick positions (in log10 units) for a log axis spanning [lo, hi] (log10 units)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return []
    a, b = math.ceil(lo), math.floor(hi)
    decades = list(range(a, b + 1))
    if len(decades) >= 2:
        step = max(1, math.ceil(len(decades) / max_ticks))
        return [float(d) for d in decades[::step]]
    ticks = []
    for d in range(math.floor(lo) - 1, math.ceil(hi) + 1):
        for m in (1, 2, 5):
            v = d + math.log10(m)
            if lo <= v <= hi:
                ticks.append(v)
    return ticks


def fmt_si(v: float, digits: int = 3) -> str:
    """Short number for narrow columns: 0.512, 12.3, 3.1e-09, nan."""
    if v is None or not math.isfinite(v):
        return "nan" if v is not None and math.isnan(v) else ("inf" if v is not None else "—")
    av = abs(v)
    if av == 0:
        return "0"
    if 1e-3 <= av < 1e4:
        s = f"{v:.{digits}g}"
        return s
    return f"{v:.{max(0, digits - 2)}e}".replace("e-0", "e-").replace("e+0", "e+")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}:{m:02d}:{s:02d}"
    return f"{m:d}:{s:02d}"


# ---------------------------------------------------------------------------------------------
# What the user chose to look at (pure state; the widgets read it)


@dataclass
class ViewState:
    """Display choices shared by the widgets and the screens."""

    metric: str = "loss"  # "loss" | "acc"
    log_y: bool = False
    smoothing: float = 0.9  # EMA strength in [0, 0.999]
    quantity: int = 0  # index into PROBE_NAMES
    hide_bias_norm: bool = False
    follow: bool = True  # the chart's right edge tracks the live step
    span: float | None = None  # steps shown; None: the whole run
    end: float | None = None  # right edge when not following

    SMOOTHING_STEPS: ClassVar[tuple[float, ...]] = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)

    @property
    def quantity_name(self) -> str:
        return PROBE_NAMES[self.quantity]

    def toggle_metric(self) -> None:
        self.metric = "acc" if self.metric == "loss" else "loss"

    def toggle_log(self) -> None:
        self.log_y = not self.log_y

    def toggle_bias(self) -> None:
        self.hide_bias_norm = not self.hide_bias_norm

    def cycle_quantity(self) -> str:
        self.quantity = (self.quantity + 1) % len(PROBE_NAMES)
        return self.quantity_name

    def smoother(self, direction: int) -> float:
        levels = self.SMOOTHING_STEPS
        i = int(np.argmin([abs(s - self.smoothing) for s in levels]))
        self.smoothing = levels[max(0, min(len(levels) - 1, i + direction))]
        return self.smoothing

    def x_window(self, first: float, last: float) -> tuple[float, float]:
        """The x range to draw, given the data's first and last step."""
        if last <= first:
            return first, first + 1.0
        full = last - first
        span = full if self.span is None else min(self.span, full)
        end = last if self.follow or self.end is None else min(max(self.end, first + span), last)
        return end - span, end

    def zoom(self, factor: float, first: float, last: float) -> None:
        """factor < 1 zooms in (fewer steps shown), > 1 zooms out."""
        lo, hi = self.x_window(first, last)
        full = max(1.0, last - first)
        span = max(10.0, (hi - lo) * factor)
        if span >= full:
            self.span = None
        else:
            self.span = span
        if not self.follow:
            self.end = hi

    def pan(self, direction: int, first: float, last: float) -> None:
        lo, hi = self.x_window(first, last)
        span = hi - lo
        end = hi + direction * max(1.0, span / 4)
        if direction > 0 and end >= last:
            self.follow, self.end = True, None
            return
        self.follow = False
        self.end = max(first + span, end)

    def follow_live(self) -> None:
        self.follow, self.end, self.span = True, None, None


# ---------------------------------------------------------------------------------------------
# The run's history


@dataclass
class LogEntry:
    step: int
    level: str  # "info" | "success" | "warning" | "error"
    kind: str
    message: str
    time: float


@dataclass
class Thresholds:
    vanishing: float = 1e-6  # mean |grad|
    exploding: float = 1e2  # grad L2 norm


@dataclass
class EpochTable:
    rows: list[EpochEnd] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> np.ndarray:
        return np.array([getattr(r, name) for r in self.rows], dtype=np.float64)


SCALAR_COLUMNS = ("step", "epoch", *STEP_SCALARS)  # columns of History.scalars


class History:
    """Everything the dashboard knows about one run. Fed by :meth:`extend`, read by the widgets."""

    def __init__(
        self,
        *,
        step_cap: int = 1 << 18,
        probe_rows: int = 20_000,
        probe_bytes: int = 32 << 20,
        long_cap: int = 2048,
        event_cap: int = 2000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.clock = clock or time.time
        self.step_cap = step_cap
        self.probe_rows = probe_rows
        self.probe_bytes = probe_bytes
        self.long_cap = long_cap
        self.run: RunStarted | None = None
        self.layers: list[LayerInfo] = []
        self.thresholds = Thresholds()
        self.status = "starting"
        self.pending = ""  # "pausing…" etc., shown until the matching StatusChanged arrives
        self.finished: RunFinished | None = None
        self.process_died = False
        self.test: TestResult | None = None
        self.epochs = EpochTable()
        self.best_val_acc: float | None = None
        self.best_val_loss: float | None = None
        self.best_epoch: int | None = None
        self.scalars = DecimatingSeries(len(SCALAR_COLUMNS), cap=step_cap)
        self.probes: Ring | None = None
        self.long: LogBuckets | None = None
        self.log: deque[LogEntry] = deque(maxlen=event_cap)
        self.log_total = 0  # entries ever logged (widgets key their caches on it)
        self.steps_done = 0
        self.epoch = 0
        self.samples_per_s = float("nan")
        self.dropped_steps = 0
        self.events_seen = 0
        self.steps_seen = 0
        self.version = 0  # bumped by every change; widgets key their caches on it
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)
        self._ema_cache: dict[tuple[str, float], tuple[int, int, np.ndarray, tuple[float, int]]] = {}

    # -- feeding ---------------------------------------------------------------------------------

    def extend(self, events: Iterable[Event], dropped_steps: int = 0) -> None:
        for ev in events:
            self.events_seen += 1
            if isinstance(ev, StepBatch):
                self._on_steps(ev)
            elif isinstance(ev, RunStarted):
                self._on_started(ev)
            elif isinstance(ev, EpochEnd):
                self._on_epoch(ev)
            elif isinstance(ev, Alert):
                self._on_alert(ev)
            elif isinstance(ev, StatusChanged):
                self._on_status(ev)
            elif isinstance(ev, RunFinished):
                self._on_finished(ev)
            elif isinstance(ev, TestResult):
                self.test = ev
                self.add_log(self.steps_done, "success", "test", f"test  loss {ev.loss:.4f}  acc {ev.acc * 100:.2f}%", ev.time)
        if dropped_steps:
            self.dropped_steps += dropped_steps
            msg = f"display dropped {self.dropped_steps:,} steps (queue full); the run file has them all"
            if self.log and self.log[-1].kind == "dropped":
                self.log[-1].message = msg
                self.log_total += 1
            else:
                self.add_log(self.steps_done, "warning", "dropped", msg, self.clock())
        self.version += 1

    def add_log(self, step: int, level: str, kind: str, message: str, when: float | None = None) -> None:
        self.log.append(LogEntry(int(step), level, kind, message, self.clock() if when is None else when))
        self.log_total += 1
        self.version += 1

    def _on_started(self, ev: RunStarted) -> None:
        self.run = ev
        self.layers = list(ev.layers)
        self.thresholds = thresholds_from_toml(ev.config_toml)
        L = len(self.layers)
        row_bytes = max(1, len(PROBE_NAMES) * L * 4)
        rows = max(256, min(self.probe_rows, self.probe_bytes // row_bytes))
        self.probes = Ring(rows, (len(PROBE_NAMES), L))
        self.long = LogBuckets(self.long_cap, (len(PROBE_NAMES), L))
        if self.status == "starting":
            self.status = "running"
        self.add_log(0, "info", "start", f"run {ev.run_name} started: {ev.model_name}, {ev.params:,} params, {ev.dataset} on {ev.device}", ev.started_at)

    def _on_steps(self, ev: StepBatch) -> None:
        n = len(ev)
        if n:
            rows = np.empty((n, len(SCALAR_COLUMNS)), dtype=np.float64)
            rows[:, 0] = ev.steps
            rows[:, 1] = ev.epochs
            rows[:, 2:] = ev.scalars
            self.scalars.append(rows)
            self.steps_done = max(self.steps_done, int(ev.steps[-1]) + 1)
            self.epoch = int(ev.epochs[-1])
            sps = ev.scalars[:, STEP_SCALARS.index("samples_per_s")]
            fin = sps[np.isfinite(sps)]
            if fin.size:
                self.samples_per_s = float(fin[-min(fin.size, 16) :].mean())
            self._rate.append((ev.time, self.steps_done))
            self.steps_seen += n
            if self.status == "starting":
                self.status = "running"
        m = ev.probe_steps.shape[0] if ev.probe_steps is not None else 0
        if m and self.probes is not None and ev.probes.shape[-1] == len(self.layers):
            probes = np.asarray(ev.probes, dtype=np.float32)
            self.probes.append(ev.probe_steps, probes)
            with np.errstate(divide="ignore", invalid="ignore"):
                logs = np.log10(np.maximum(np.abs(probes), LOG_FLOOR))
            logs[~np.isfinite(probes)] = np.nan
            assert self.long is not None
            self.long.append(ev.probe_steps, logs)

    def _on_epoch(self, ev: EpochEnd) -> None:
        self.epochs.rows.append(ev)
        total = self.run.epochs if self.run else 0
        ep = f"epoch {ev.epoch + 1}/{total}" if total else f"epoch {ev.epoch + 1}"
        self.add_log(
            ev.step,
            "info",
            "epoch",
            f"{ep}  train {ev.train_loss:.4f} / {ev.train_acc * 100:.1f}%  val {ev.val_loss:.4f} / {ev.val_acc * 100:.1f}%  {ev.seconds:.1f}s",
            ev.time,
        )
        if math.isfinite(ev.val_loss) and (self.best_val_loss is None or ev.val_loss < self.best_val_loss):
            self.best_val_loss = ev.val_loss
        if math.isfinite(ev.val_acc) and (self.best_val_acc is None or ev.val_acc > self.best_val_acc):
            first = self.best_val_acc is None
            self.best_val_acc = ev.val_acc
            self.best_epoch = ev.epoch
            if not first:
                self.add_log(ev.step, "success", "best", f"new best val acc {ev.val_acc * 100:.2f}% (epoch {ev.epoch + 1})", ev.time)

    def _on_alert(self, ev: Alert) -> None:
        if ev.kind == "best" and self.log and self.log[-1].kind == "best" and self.log[-1].step == ev.step:
            return  # already said it from the EpochEnd
        level = ev.level if ev.level in ("info", "warning", "error") else "info"
        if ev.kind in ("best", "checkpoint") and level == "info":
            level = "success"
        self.add_log(ev.step, level, ev.kind, ev.message, ev.time)

    def _on_status(self, ev: StatusChanged) -> None:
        if self.finished is not None:
            return
        if ev.status != self.status:
            self.add_log(ev.step, "warning" if ev.status == "paused" else "info", "status", f"status: {ev.status} at step {ev.step:,}", ev.time)
        self.status = ev.status
        self.pending = ""

    def _on_finished(self, ev: RunFinished) -> None:
        self.finished = ev
        self.status = ev.status if ev.status in FINISHED else "failed"
        self.pending = ""
        if self.status == "failed":
            text = f"run failed at step {ev.step:,}: {ev.error or 'no error message'}"
            self.add_log(ev.step, "error", "finished", text, ev.time)
        else:
            extra = f"; checkpoint {ev.checkpoint}" if ev.checkpoint else ""
            self.add_log(ev.step, "success", "finished", f"run {self.status} at step {ev.step:,}{extra}", ev.time)

    def mark_process_died(self, detail: str = "") -> None:
        """The training process is gone and never said RunFinished: the run failed."""
        if self.finished is not None:
            return
        self.process_died = True
        msg = "the training process exited without finishing the run" + (f" ({detail})" if detail else "")
        self.finished = RunFinished(status="failed", step=self.steps_done, error=msg, time=self.clock())
        self.status = "failed"
        self.pending = ""
        self.add_log(self.steps_done, "error", "died", msg)

    def set_pending(self, note: str) -> None:
        self.pending = note
        self.version += 1

    # -- reading ---------------------------------------------------------------------------------

    @property
    def is_finished(self) -> bool:
        return self.finished is not None

    def column(self, name: str) -> np.ndarray:
        return self.scalars.data[:, SCALAR_COLUMNS.index(name)]

    def smoothed(self, name: str, strength: float) -> np.ndarray:
        """EMA of a per-step scalar, cached and extended incrementally."""
        y = self.column(name)
        key = (name, round(strength, 6))
        # the stride grows by compaction: adapt the strength so the time constant in steps is kept
        stride = self.scalars.stride
        a = strength ** stride if strength > 0 else 0.0
        cached = self._ema_cache.get(key)
        if cached is not None and cached[0] == self.scalars.epoch and cached[1] <= y.shape[0]:
            _, n0, arr, state = cached
            if n0 == y.shape[0]:
                return arr
            tail, state = ema(y[n0:], a, state=state)
            arr = np.concatenate([arr, tail])
        else:
            arr, state = ema(y, a)
        if len(self._ema_cache) > 8:
            self._ema_cache.clear()
        self._ema_cache[key] = (self.scalars.epoch, y.shape[0], arr, state)
        return arr

    def latest_probes(self) -> tuple[int, np.ndarray] | None:
        """(step, (4, L) array) of the last probed step, or None."""
        return None if self.probes is None else self.probes.last()

    def probe_long(self, quantity: int) -> tuple[np.ndarray, np.ndarray]:
        """(steps (n,), log10 values (n, L)) over the whole run, in time buckets."""
        if self.long is None or not len(self.long):
            return np.zeros(0), np.zeros((0, len(self.layers)))
        steps, vals = self.long.view()
        return steps, vals[:, quantity, :]

    def health(self, probes: np.ndarray) -> np.ndarray:
        """Per-layer health codes from a (4, L) probe row: 0 normal, 1 vanishing, 2 exploding, 3 non-finite."""
        gm = probes[PROBE_NAMES.index("grad_mean_abs")]
        gn = probes[PROBE_NAMES.index("grad_norm")]
        code = np.zeros(gm.shape[0], dtype=np.int8)
        code[gm < self.thresholds.vanishing] = 1
        code[gn > self.thresholds.exploding] = 2
        code[~(np.isfinite(gm) & np.isfinite(gn))] = 3
        return code

    def visible_layers(self, hide_bias_norm: bool) -> np.ndarray:
        if not hide_bias_norm:
            return np.arange(len(self.layers))
        return np.array([i for i, la in enumerate(self.layers) if la.kind not in ("bias", "norm")], dtype=np.int64)

    def elapsed(self) -> float | None:
        if self.run is None:
            return None
        end = self.finished.time if self.finished is not None else self.clock()
        return max(0.0, end - self.run.started_at)

    def steps_per_s(self) -> float | None:
        if len(self._rate) < 2:
            return None
        t1, s1 = self._rate[-1]
        for t0, s0 in self._rate:
            if t1 - t0 <= 30.0 and t1 - t0 > 0.2:
                return (s1 - s0) / (t1 - t0)
        t0, s0 = self._rate[-2]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    def eta(self) -> float | None:
        if self.run is None or self.finished is not None or self.status != "running":
            return None
        total = self.run.total_steps
        rate = self.steps_per_s()
        if not total or not rate or rate <= 0:
            return None
        return max(0.0, (total - self.steps_done) / rate)


def thresholds_from_toml(text: str) -> Thresholds:
    """monitor.vanishing / monitor.exploding of the run's config, or the defaults."""
    try:
        from tuitrain.config import from_toml

        mon = from_toml(text).monitor
        return Thresholds(vanishing=float(mon.vanishing), exploding=float(mon.exploding))
    except Exception:
        return Thresholds()
