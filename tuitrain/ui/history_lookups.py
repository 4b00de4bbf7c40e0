"""The reading side of :class:`tuitrain.ui.history.History`: the lookups the widgets make at redraw
time (columns, smoothed series, probes and scalars at a step, rates and the ETA). A mixin over the
state History keeps, split off so that each module stays short; numpy only, no textual, no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tuitrain.events import GRAD, STEP_SCALARS, EpochEnd
from tuitrain.ui.downsample import ema
from tuitrain.ui.health import health_codes
from tuitrain.ui.replay.compare import EPOCH_METRICS

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Callable

    from tuitrain.events import LayerInfo, RunFinished, RunStarted
    from tuitrain.ui.buffers import DecimatingSeries, LogBuckets, Ring
    from tuitrain.ui.health import Thresholds
    from tuitrain.ui.history import Backing, EpochTable


class HistoryLookups:
    """What the widgets read from a history (the attributes are History's own)."""

    run: RunStarted | None
    layers: list[LayerInfo]
    thresholds: Thresholds
    status: str
    finished: RunFinished | None
    epochs: EpochTable
    scalars: DecimatingSeries
    scalar_names: tuple[str, ...]
    probes: Ring | None
    long: LogBuckets | None
    backing: Backing | None
    row_stride: float
    steps_done: int
    clock: Callable[[], float]
    _col: dict[str, int]
    _rate: deque[tuple[float, int]]
    _ema_cache: dict[tuple[str, float], tuple[int, int, np.ndarray, tuple[float, int], np.ndarray]]

    # -- reading ---------------------------------------------------------------------------------

    @property
    def is_finished(self) -> bool:
        return self.finished is not None

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns of :attr:`scalars`: step, epoch, then every per-step scalar of the run."""
        return ("step", "epoch", *self.scalar_names)

    @property
    def user_scalars(self) -> tuple[str, ...]:
        """The run's own per-step keys (a user's ``run.log``), after the standard STEP_SCALARS."""
        return tuple(n for n in self.scalar_names if n not in STEP_SCALARS)

    @property
    def has_grad(self) -> bool:
        """Whether the run sends per-layer gradient probes (a user's loop without ``run.watch`` does
        not). True until RunStarted says otherwise."""
        return self.run is None or any(p.name == GRAD for p in self.run.probes)

    def has_values(self, name: str) -> bool:
        """Whether the per-step column ``name`` holds any finite value."""
        return name in self._col and bool(np.isfinite(self.column(name)).any())

    @property
    def epoch_keys(self) -> tuple[str, ...]:
        """The loop's own epoch metrics (``run.log_epoch`` keys beyond the standard ones) that are not
        also per-step scalars: each is charted one point per epoch."""
        return tuple(k for k in self.epochs.keys if k not in self._col)

    def metric_cycle(self) -> tuple[str, ...]:
        """What the chart's metric key steps through: loss and accuracy, then the run's own per-step
        scalars, then its own epoch metrics. A user's loop shows only what it logged (loss always, as
        the way back)."""
        if self.run is None or self.run.source == "preset":
            return ("loss", "acc", *self.user_scalars, *self.epoch_keys)
        steps = tuple(m for m in ("loss", "acc", *self.user_scalars) if m == "loss" or self.has_values(m))
        return (*steps, *self.epoch_keys)

    def is_epoch_metric(self, name: str) -> bool:
        """Whether ``name`` is charted per epoch here: a standard epoch metric or one of the loop's own."""
        return name in EPOCH_METRICS or name in self.epoch_keys

    def column(self, name: str) -> np.ndarray:
        """A per-step column (:attr:`columns`); all NaN for a name this run does not have."""
        j = self._col.get(name)
        if j is None:
            return np.full(self.scalars.n, np.nan)
        return self.scalars.data[:, j]

    def smoothed(self, name: str, strength: float) -> np.ndarray:
        """EMA of a per-step scalar, cached and extended incrementally: new rows are smoothed into a
        buffer that grows by doubling, so a redraw costs O(new rows), not a copy of the whole run.
        A view: copy it if you keep it across appends."""
        y = self.column(name)
        n = y.shape[0]
        key = (name, round(strength, 6))
        # the stride grows by compaction: adapt the strength so the time constant in steps is kept
        stride = self.scalars.stride * self.row_stride
        a = strength**stride if strength > 0 else 0.0
        cached = self._ema_cache.get(key)
        if cached is not None and cached[0] == self.scalars.epoch and cached[1] <= n:
            _, n0, buf, state, view = cached
            if n0 == n:
                return view
            tail, state = ema(y[n0:], a, state=state)
            if n > buf.shape[0]:
                buf = np.concatenate([buf[:n0], np.empty(max(n, 2 * n0) - n0)])
            buf[n0:n] = tail
        else:
            buf, state = ema(y, a)
        if len(self._ema_cache) > 8:
            self._ema_cache.clear()
        view = buf[:n]
        self._ema_cache[key] = (self.scalars.epoch, n, buf, state, view)
        return view

    def latest_probes(self) -> tuple[int, np.ndarray] | None:
        """(step, (4, L) array) of the last probed step, or None."""
        return None if self.probes is None else self.probes.last()

    def probes_at(self, step: int | None) -> tuple[int, np.ndarray] | None:
        """(probed step, (4, L) array) of the last probe at or before ``step`` (None: the latest).

        Exact from the backing file or the ring of recent rows; older than the ring, the whole-run
        log10 buckets give the bucket's geometric mean. None before the first probe."""
        if step is None:
            return self.latest_probes()
        if self.backing is not None:
            return self.backing.probes_at(int(step))
        if self.probes is None:
            return None
        got = self.probes.at(int(step))  # the ring holds the latest rows without gaps: exact
        if got is None and self.long is not None and len(self.long):  # older: the long-run buckets
            steps, vals = self.long.view()
            i = int(np.searchsorted(steps, step, "right")) - 1
            if i >= 0:
                return int(round(steps[i])), (10.0 ** vals[i]).astype(np.float32)
        return got

    def scalars_at(self, step: int | None) -> dict[str, float] | None:
        """The per-step values (:attr:`columns`) of the last step at or before ``step`` (None: the
        latest), exact when a backing file has them, else from the stored rows. None before step 0."""
        if step is not None and self.backing is not None:
            got = self.backing.scalars_at(int(step))
            if got is not None:
                return got
        data = self.scalars.data
        if not data.shape[0]:
            return None
        i = data.shape[0] - 1 if step is None else int(np.searchsorted(data[:, 0], step, "right")) - 1
        return None if i < 0 else {k: float(data[i, j]) for j, k in enumerate(self.columns)}

    def epoch_at(self, step: int | None) -> EpochEnd | None:
        """The last epoch finished by ``step`` (an epoch ending at step count s is done after step s - 1)."""
        rows = self.epochs.rows
        if step is None:
            return rows[-1] if rows else None
        done = [r for r in rows if r.step - 1 <= step]
        return done[-1] if done else None

    def probe_long(self, quantity: int) -> tuple[np.ndarray, np.ndarray]:
        """(steps (n,), log10 values (n, L)) over the whole run, in time buckets."""
        if self.long is None or not len(self.long):
            return np.zeros(0), np.zeros((0, len(self.layers)))
        steps, vals = self.long.view()
        return steps, vals[:, quantity, :]

    def health(self, probes: np.ndarray) -> np.ndarray:
        """Per-layer health codes from a (4, L) probe row: 0 normal, 1 vanishing, 2 exploding, 3 non-finite."""
        return health_codes(probes, self.thresholds)

    def visible_layers(self, hide_bias_norm: bool) -> np.ndarray:
        if not hide_bias_norm:
            return np.arange(len(self.layers))
        return np.array(
            [i for i, la in enumerate(self.layers) if la.kind not in ("bias", "norm")], dtype=np.int64
        )

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
