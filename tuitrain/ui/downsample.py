"""The downsampling maths the widgets draw with: min/max per pixel column, bucket means, a debiased EMA,
a robust y range and log-axis ticks. Pure numpy, unit-tested without a terminal."""

from __future__ import annotations

import math

import numpy as np


def minmax_indices(y: np.ndarray, columns: int) -> np.ndarray:
    """Indices (ascending) of at most two points per column of ``columns`` equal index buckets: the
    first minimum and the first maximum of ``y`` in each. All indices when they already fit. ``y``
    must be finite.

    A few linear passes: the bucket extremes by ``reduceat``, then the positions equal to them, of
    which the first at or after each bucket's start is in the bucket (it holds its own extreme)."""
    n = y.shape[0]
    columns = max(1, int(columns))
    if n <= 2 * columns:
        return np.arange(n)
    starts = np.linspace(0, n, columns + 1).astype(np.int64)[:-1]
    starts = starts[starts < n]
    sizes = np.diff(np.append(starts, n))
    firsts = []
    for ext in (np.minimum, np.maximum):
        hits = np.flatnonzero(y == np.repeat(ext.reduceat(y, starts), sizes))
        firsts.append(hits[np.searchsorted(hits, starts)])
    lo = np.minimum(*firsts)
    hi = np.maximum(*firsts)
    idx = np.stack([lo, hi], axis=1).reshape(-1)
    # a flat bucket gives the same point twice: keep it once
    keep = np.ones(idx.shape[0], dtype=bool)
    keep[1::2] = lo != hi
    return idx[keep]


def minmax_downsample(x: np.ndarray, y: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """At most two points (the min and the max, in x order) per column of ``columns`` equal index buckets.

    Non-finite y values are dropped first. Returns the points unchanged when they already fit.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y)
    if not ok.all():
        x, y = x[ok], y[ok]
    if y.shape[0] <= 2 * max(1, int(columns)):
        return x, y
    idx = minmax_indices(y, columns)
    return x[idx], y[idx]


def bucket_mean(values: np.ndarray, buckets: int, *, stretch: bool = False) -> np.ndarray:
    """Mean of ``values`` (axis 0) over ``buckets`` equal index buckets, ignoring NaN and +Inf.

    With fewer rows than buckets: the rows as they are, or with ``stretch`` each row repeated so the
    result has exactly ``buckets`` rows (nearest neighbour; used by the heatmap to fill its width).
    A bucket whose values are all NaN stays NaN. -Inf is a value, not a gap: it is how the log10
    buckets hold an exact zero, and a bucket holding one has mean -Inf (the geometric mean is 0).
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
    finite = np.isfinite(values) | np.isneginf(values)
    filled = np.where(finite, values, 0.0)
    sums = np.add.reduceat(filled, starts, axis=0)
    cnt = np.add.reduceat(finite.astype(np.int64), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sums / cnt
    out[cnt == 0] = np.nan
    return out


def ema(
    y: np.ndarray, strength: float, *, state: tuple[float, int] | None = None
) -> tuple[np.ndarray, tuple[float, int]]:
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
