"""Short numbers and durations for narrow terminal columns.

A missing value (nothing recorded yet) is ``—``; a NaN or Inf that the run itself produced is shown as
``nan`` / ``inf`` (in red where markup is used: :func:`num_markup`), never as a number and never as
missing."""

from __future__ import annotations

import math

MISSING = "—"  # no value (yet): not the same as a NaN the run produced


def nonfinite_text(v: float) -> str:
    """``nan``, ``inf`` or ``-inf``: what a diverged run produced, never a number and never missing."""
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def fmt_si(v: float, digits: int = 3) -> str:
    """Short number for narrow columns: 0.512, 12.3, 3.1e-09, nan, -inf; ``—`` for None."""
    if v is None:
        return MISSING
    if not math.isfinite(v):
        return nonfinite_text(v)
    av = abs(v)
    if av == 0:
        return "0"
    if 1e-3 <= av < 1e4:
        s = f"{v:.{digits}g}"
        return s
    return f"{v:.{max(0, digits - 2)}e}".replace("e-0", "e-").replace("e+0", "e+")


def num_markup(v: float | None, digits: int = 4, *, pct: bool = False) -> str:
    """A value for Textual markup: ``—`` when missing (None), a bold red ``nan`` / ``inf`` when the
    run produced a non-finite value, else the short number (``pct``: a fraction shown in percent)."""
    if v is None:
        return MISSING
    if not math.isfinite(v):
        return f"[b $error]{nonfinite_text(v)}[/]"
    return f"{v * 100:.1f}%" if pct else fmt_si(v, digits)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}:{m:02d}:{s:02d}"
    return f"{m:d}:{s:02d}"
