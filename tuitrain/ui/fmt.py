"""Short numbers and durations for narrow terminal columns."""

from __future__ import annotations

import math


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
