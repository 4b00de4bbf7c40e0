"""When did a run's training loss stop being finite? One answer for the dashboard, ``info`` and
``replay --print``.

A preset's engine measures the loss at every step, so there the first NaN or Inf is the divergence.
A user's own loop may log its loss only every few steps (``if i % 10 == 0: run.log(...)``); the steps
between are NaN in the step table, the same NaN a diverged loss gives. So for those runs a NaN loss
counts only once the loss has stayed non-finite for longer than the longest gap between two finite
losses seen so far (a loop that logs every step: the first NaN; every tenth step: after ten NaN
rows), and the divergence is placed at the row after the last finite loss, within one logging
interval of the truth. A later finite loss takes it back (it was a gap, or the run recovered). An Inf
is never a gap: it counts at once, and for good.

numpy only: no torch, no textual.
"""

from __future__ import annotations

import numpy as np


class DivergenceTracker:
    """Fed the loss column batch by batch (``feed``); :attr:`step` is the first step of the divergence,
    or None while the loss is finite (or only missing). ``dense``: every row is a measured loss (a
    preset's engine): the first non-finite row is the answer, and it stays."""

    def __init__(self, dense: bool = True) -> None:
        self.dense = dense
        self.step: int | None = None
        self._inf: int | None = None  # first step of an infinite loss (sparse rule)
        self._seen_finite = False
        self._gap_max = 0  # the longest run of non-finite rows between two finite ones
        self._trail = 0  # non-finite rows since the last finite one
        self._trail_start: int | None = None  # the step of the first of them

    def feed(self, steps: np.ndarray, loss: np.ndarray) -> int | None:
        n = int(loss.shape[0])
        if not n:
            return self.step
        if self.dense:
            if self.step is None:
                bad = ~np.isfinite(loss)
                if bad.any():
                    self.step = int(steps[int(np.argmax(bad))])
            return self.step
        if self._inf is None:
            inf = np.isinf(loss)
            if inf.any():
                self._inf = int(steps[int(np.argmax(inf))])
        fin = np.flatnonzero(np.isfinite(loss))
        if fin.size:
            if self._seen_finite:
                self._gap_max = max(self._gap_max, self._trail + int(fin[0]))
            if fin.size > 1:
                self._gap_max = max(self._gap_max, int(np.diff(fin).max()) - 1)
            self._seen_finite = True
            last = int(fin[-1])
            self._trail = n - 1 - last
            self._trail_start = int(steps[last + 1]) if self._trail else None
        elif self._seen_finite:
            if not self._trail:
                self._trail_start = int(steps[0])
            self._trail += n
        gone = self._trail_start if self._seen_finite and self._trail > self._gap_max else None
        found = [s for s in (self._inf, gone) if s is not None]
        self.step = min(found) if found else None
        return self.step


def first_divergence(steps: np.ndarray, loss: np.ndarray, dense: bool = True) -> int | None:
    """The whole column at once (``info``, ``replay --print``): :class:`DivergenceTracker`'s answer."""
    return DivergenceTracker(dense).feed(np.asarray(steps), np.asarray(loss, dtype=np.float64))
