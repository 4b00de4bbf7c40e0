"""The finding record and the few helpers every rule shares: episodes of a condition over steps (so a
finding that stops holding is closed, not repeated) and rolling means over a window of steps.

Pure numpy: the same code runs live, in replay and offline (``tuitrain diagnose``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# The record is an event too (sent live, stored in the run file): tuitrain.events owns it.
from tuitrain.events import SEVERITIES, SEVERITY_RANK, Finding  # noqa: E402

__all__ = [
    "SEVERITIES",
    "SEVERITY_RANK",
    "Finding",
    "Skipped",
    "current",
    "episodes",
    "fmt",
    "ranked",
    "rolling_mean",
    "rows_for",
]


class Skipped(Exception):
    """Raised by a rule whose data the run does not have; the message says which data and why."""


def episodes(holds: np.ndarray, open_after: int = 1, close_after: int = 1) -> list[tuple[int, int | None]]:
    """Index ranges ``(first, last)`` where ``holds`` is true: an episode opens once the condition held
    for ``open_after`` rows in a row (``first`` is the first of them) and closes once it failed for
    ``close_after`` rows in a row (``last`` is the last row it held); ``last`` is None when it still
    held, or had not failed long enough to close, at the end. Hysteresis keeps a flapping condition one
    finding instead of many."""
    h = np.asarray(holds, dtype=bool)
    out: list[tuple[int, int | None]] = []
    run_start, fails, start, last = -1, 0, -1, -1
    for i, v in enumerate(h.tolist()):
        if start < 0:
            if v:
                run_start = i if run_start < 0 else run_start
                if i - run_start + 1 >= open_after:
                    start, last, fails = run_start, i, 0
            else:
                run_start = -1
        elif v:
            last, fails = i, 0
        else:
            fails += 1
            if fails >= close_after:
                out.append((start, last))
                start, run_start, fails = -1, -1, 0
    if start >= 0:
        out.append((start, None if fails < close_after else last))
    return out


def rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of the last ``n`` values at each index over the finite values only; NaN for the first
    ``n - 1`` indices (no full window yet) and where the window holds no finite value."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    if n < 1 or x.size < n:
        return out
    ok = np.isfinite(x)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    k = np.concatenate([[0], np.cumsum(ok)])
    cnt = k[n:] - k[:-n]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[n - 1 :] = np.where(cnt > 0, (c[n:] - c[:-n]) / np.maximum(cnt, 1), np.nan)
    return out


def rows_for(steps: np.ndarray, window_steps: int) -> int:
    """How many probe rows cover ``window_steps`` steps, given the rows' spacing (at least 1)."""
    s = np.asarray(steps)
    gap = float(np.median(np.diff(s))) if s.size > 1 else 1.0
    return max(1, int(np.ceil(window_steps / max(gap, 1.0))))


def fmt(v: float) -> str:
    """A number for a finding's line: short, exact enough to compare."""
    if not np.isfinite(v):
        return str(v)
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.3g}"


def current(findings: Iterable[Finding]) -> list[Finding]:
    """The latest state of each finding (by :attr:`Finding.key`) of a stream of them: a finding sent
    when it opened and again when it closed is one finding, closed. Ranked as :func:`ranked`."""
    latest: dict[tuple[str, str, int], Finding] = {}
    for f in findings:
        latest[f.key] = f
    return ranked(latest.values())


def ranked(findings: Iterable[Finding]) -> list[Finding]:
    """Worst first, newest first among equals, open ones before closed ones: what a person should read
    first (the Diagnosis panel, ``info``, ``diagnose``)."""
    return sorted(findings, key=lambda f: (f.last_step is not None, SEVERITY_RANK[f.severity], -f.first_step))
