"""What the user chose to look at: pure state that the key bindings change and the widgets read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tuitrain.events import PROBE_NAMES

# The chart's ``a`` key steps through the run's per-step scalars (loss, accuracy, then a user loop's
# own keys: History.metric_cycle); an epoch metric swaps with its pair; anything else goes back to the loss.
METRIC_PAIRS = {
    "train_loss": "train_acc",
    "train_acc": "train_loss",
    "val_loss": "val_acc",
    "val_acc": "val_loss",
}


@dataclass
class ViewState:
    """Display choices shared by the widgets and the screens.

    ``cursor`` is the time cursor: the step whose state the bars, sparklines and heatmap show, or None
    for the latest (what a live run shows). ``selected`` is the run those panels show when several
    runs are compared, ``run_tag`` its label for the header (markup, empty for a single run).
    """

    metric: str = "loss"  # a per-step scalar of the run (loss, acc, a user's key) or an epoch metric
    log_y: bool = False
    smoothing: float = 0.9  # EMA strength in [0, 0.999]
    quantity: int = 0  # index into PROBE_NAMES
    hide_bias_norm: bool = False
    follow: bool = True  # the chart's right edge tracks the live step
    span: float | None = None  # steps shown; None: the whole run
    end: float | None = None  # right edge when not following
    cursor: int | None = None  # step shown by the per-layer panels; None: the latest
    playing: bool = False  # the cursor advances by itself (space)
    selected: int = 0  # index of the run shown in header, bars, sparklines and heatmap
    run_tag: str = ""  # "■ 2/5" in the run's colour when several runs are shown
    diagnosis: bool = False  # the Diagnosis panel in the event log's place (key d; tall: both show)

    SMOOTHING_STEPS: ClassVar[tuple[float, ...]] = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)

    @property
    def quantity_name(self) -> str:
        return PROBE_NAMES[self.quantity]

    def toggle_metric(self, cycle: Sequence[str] = ("loss", "acc")) -> None:
        """The next metric: the next of ``cycle`` (the runs' per-step scalars, loss first), an epoch
        metric's pair, or the loss."""
        if self.metric in METRIC_PAIRS:
            self.metric = METRIC_PAIRS[self.metric]
        elif self.metric in cycle:
            self.metric = cycle[(list(cycle).index(self.metric) + 1) % len(cycle)]
        else:
            self.metric = "loss"

    def toggle_log(self) -> None:
        self.log_y = not self.log_y

    def toggle_diagnosis(self) -> None:
        self.diagnosis = not self.diagnosis

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
        """Back to the live view: the whole run, its right edge on the latest step, no cursor."""
        self.follow, self.end, self.span = True, None, None
        self.cursor, self.playing = None, False
