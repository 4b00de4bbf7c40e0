"""One sparkline per layer of the update-to-weight ratio ||dW||/||W|| over the whole run, with the
latest value. The series come pre-downsampled from the history's log10 time buckets (a bucket mean
per character cell), each on its own log scale (at least half a decade tall) so the trend shows; the
printed value and the health colour carry the magnitude, and the heatmap compares layers. Rendered as
unicode blocks through the line API; unlike Textual's Sparkline it never rescans the raw data. With the
time cursor set, the sparkline is bright up to the cursor and dim after it, and the value is the one
at the cursor."""

from __future__ import annotations

import numpy as np
from rich.segment import Segment

from tuitrain.events import PROBE_NAMES
from tuitrain.ui.downsample import bucket_mean
from tuitrain.ui.fmt import fmt_si
from tuitrain.ui.history import History
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.layer_rows import HEALTH_CLASSES, SPARKS, LayerRows
from tuitrain.ui.widgets.titles import set_titles

UPDATE_RATIO = PROBE_NAMES.index("update_ratio")


def row_ranges(log_values: np.ndarray, min_span: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (lo, hi) of (rows, columns) log10 values, at least ``min_span`` decades wide."""
    with np.errstate(invalid="ignore"):
        fin = np.isfinite(log_values)
        mn = (
            np.where(fin, log_values, np.inf).min(axis=1)
            if log_values.shape[1]
            else np.zeros(log_values.shape[0])
        )
        mx = (
            np.where(fin, log_values, -np.inf).max(axis=1)
            if log_values.shape[1]
            else np.zeros(log_values.shape[0])
        )
    ok = np.isfinite(mn) & np.isfinite(mx)
    mn, mx = np.where(ok, mn, 0.0), np.where(ok, mx, 1.0)
    mid = (mn + mx) / 2
    narrow = (mx - mn) < min_span
    lo = np.where(narrow, mid - min_span / 2, mn)
    hi = np.where(narrow, mid + min_span / 2, mx)
    return lo, hi


def cursor_column(
    steps: np.ndarray, columns: int, cursor: int | None, *, stretch: bool = False
) -> int | None:
    """The column of a ``bucket_mean(.., columns)`` view of bucket ``steps`` that holds ``cursor``."""
    if cursor is None or steps.shape[0] == 0:
        return None
    cols = bucket_mean(np.asarray(steps, dtype=np.float64).reshape(-1, 1), columns, stretch=stretch)[:, 0]
    return int(np.clip(np.searchsorted(cols, cursor, "right") - 1, 0, cols.shape[0] - 1))


def spark_strings(log_values: np.ndarray, lo, hi) -> list[str]:
    """(rows, columns) log10 values -> one string of block characters per row (NaN -> space; an exact
    zero, -inf, -> the lowest block: a row of zeros is a flat line at the bottom, never mid-height).
    ``lo``/``hi``: the scale, shared (floats) or per row (arrays)."""
    if log_values.size == 0:
        return ["" for _ in range(log_values.shape[0])]
    lo = np.asarray(lo, dtype=np.float64).reshape(-1, 1) if np.ndim(lo) else lo
    hi = np.asarray(hi, dtype=np.float64).reshape(-1, 1) if np.ndim(hi) else hi
    with np.errstate(invalid="ignore"):
        frac = (log_values - lo) / np.maximum(1e-9, hi - lo)
        levels = np.clip(np.floor(frac * len(SPARKS)), 0, len(SPARKS) - 1)
    idx = np.where(np.isfinite(log_values), levels, len(SPARKS))
    idx = np.where(np.isneginf(log_values), 0, idx).astype(np.int64)  # an exact zero sits at the bottom
    # codepoints decoded in one go, then cut into rows (a join per row of numpy strings cost 10x more)
    text = np.ascontiguousarray(_SPARK_CODES[idx]).tobytes().decode("utf-32-le")
    w = log_values.shape[1]
    return [text[i * w : (i + 1) * w] for i in range(log_values.shape[0])]


_SPARK_CODES = np.array([ord(c) for c in SPARKS + " "], dtype="<u4")


class UpdateSparklines(LayerRows):
    DEFAULT_CSS = """
    UpdateSparklines {
        border: round $primary-muted;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
    }
    UpdateSparklines:focus { border: round $primary; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.sparks: list[str] = []
        self.latest = np.zeros(0)
        self.health = np.zeros(0, dtype=np.int8)
        self.empty_text = "waiting for the first updates…"
        self.cursor_col: int | None = None  # spark column of the time cursor; None: no cursor
        self._key: tuple | None = None

    def on_mount(self) -> None:
        self.border_title = "Updates · ||ΔW||/||W||"

    def name_width(self, width: int) -> int:
        return int(min(24, max(8, width * 0.4)))

    def spark_width(self, width: int) -> int:
        return max(4, width - self.name_width(width) - 10)

    def update_data(self, history: History, view: ViewState) -> None:
        if not self.showing:
            return
        width = self.content_width
        key = (id(history), history.version, view.hide_bias_norm, width, len(history.layers), view.cursor)
        if key == self._key:
            return
        self._key = key
        self.set_layers(history, view)
        steps, logs = history.probe_long(UPDATE_RATIO)
        sw = self.spark_width(width)
        self.cursor_col = cursor_column(steps, sw, view.cursor)
        if logs.shape[0] and self.layer_index.size:
            cols = bucket_mean(logs[:, self.layer_index], sw).T  # (rows, <=sw)
            lo, hi = row_ranges(cols)
            self.sparks = spark_strings(cols, lo, hi)
            span = f"steps 0–{int(steps[-1]):,}" if width >= 40 else ""
            if view.cursor is not None and width >= 40:
                span += f" · at step {view.cursor:,}"
            set_titles(self, subtitle=" · ".join(p for p in ("log scale per row", span) if p))
        else:
            self.sparks = ["" for _ in self.layer_index]
        latest = history.probes_at(view.cursor)
        if latest is not None:
            row = latest[1]
            self.latest = row[UPDATE_RATIO][self.layer_index].astype(np.float64)
            self.health = history.health(row)[self.layer_index]
        else:
            self.latest = np.full(len(self.layer_index), np.nan)
            self.health = np.zeros(len(self.layer_index), dtype=np.int8)
        self.refresh()

    def render_row(self, row: int, width: int) -> list[Segment]:
        name_w = self.name_width(width)
        sw = self.spark_width(width)
        code = int(self.health[row]) if row < self.health.shape[0] else 0
        st = self.style(HEALTH_CLASSES[code])
        spark = self.sparks[row] if row < len(self.sparks) else ""
        v = float(self.latest[row]) if row < self.latest.shape[0] else float("nan")
        segs = self.name_segments(row, name_w)
        segs.append(self.gap)
        spark = spark[-sw:]
        c = self.cursor_col
        if c is None or c + 1 >= len(spark):
            segs.append(Segment(spark.ljust(sw), st))
        else:  # bright up to the cursor, dim after it
            segs.append(Segment(spark[: c + 1], st))
            segs.append(Segment(spark[c + 1 :].ljust(sw - c - 1), self.style("dim")))
        segs.append(self.gap)
        segs.append(Segment(fmt_si(v).rjust(8), st if code else self.style("name")))
        return segs
