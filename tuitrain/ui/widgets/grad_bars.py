"""Per-layer bars of the selected probe quantity (grad L2 norm by default) on a log scale, one row per
parameter tensor in model order (input at the top), coloured by gradient health:
vanishing (mean |grad| below monitor.vanishing), normal, exploding (grad L2 norm above
monitor.exploding), non-finite. With the time cursor set, the bars show the probe taken at (or last
before) the cursor's step, and the title says which."""

from __future__ import annotations

import numpy as np
from rich.segment import Segment

from tuitrain.events import PROBE_LABELS, PROBE_NAMES
from tuitrain.ui.fmt import fmt_si
from tuitrain.ui.history import History
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.layer_rows import HEALTH_CLASSES, LayerRows, decade_label, decade_range, log_bar
from tuitrain.ui.widgets.titles import set_titles


class GradBars(LayerRows):
    DEFAULT_CSS = """
    GradBars {
        border: round $primary-muted;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
    }
    GradBars:focus { border: round $primary; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.values = np.zeros(0)
        self.health = np.zeros(0, dtype=np.int8)
        self.scale: tuple[float, float] = (-9.0, 0.0)
        self.quantity = PROBE_NAMES[0]
        self.probe_step: int | None = None
        self._key: tuple | None = None

    def name_width(self, width: int) -> int:
        bar = max(6, int(width * 0.28))
        return max(8, min(34, width - bar - 10))

    def on_mount(self) -> None:
        self.border_title = f"Gradients · {PROBE_LABELS[self.quantity]}"

    def update_data(self, history: History, view: ViewState) -> None:
        key = (
            id(history),
            history.version,
            view.quantity,
            view.hide_bias_norm,
            len(history.layers),
            view.cursor,
        )
        if key == self._key:
            return
        self._key = key
        self.set_layers(history, view)
        self.quantity = view.quantity_name
        latest = history.probes_at(view.cursor)
        if latest is None:
            self.values = np.full(len(self.layer_index), np.nan)
            self.health = np.zeros(len(self.layer_index), dtype=np.int8)
            self.probe_step = None
        else:
            self.probe_step, row = latest
            self.values = row[view.quantity][self.layer_index].astype(np.float64)
            self.health = history.health(row)[self.layer_index]
            rng = decade_range(self.values)
            if rng is not None:
                self.scale = rng
        shown = (
            f"{len(self.layer_index)}/{len(history.layers)}"
            if view.hide_bias_norm
            else f"{len(history.layers)}"
        )
        at = f" @ {self.probe_step:,}" if view.cursor is not None and self.probe_step is not None else ""
        set_titles(self, title=f"Gradients{at} · {PROBE_LABELS[self.quantity]}")
        lo, hi = self.scale
        legend = "[$warning]■[/]vanish [$success]■[/]ok [$error]■[/]explode"
        parts = (
            [f"{decade_label(lo)}…{decade_label(hi)}", legend] if self.probe_step is not None else [legend]
        )
        if self.size.width >= 56:
            parts.insert(1, f"{shown} tensors")
        if not history.has_grad:  # nothing to colour: no legend for it
            parts = []
        set_titles(self, subtitle=" ".join(parts))
        self.refresh()

    def render_row(self, row: int, width: int) -> list[Segment]:
        value_w = 8
        name_w = self.name_width(width)
        bar_w = max(1, width - name_w - value_w - 2)
        v = float(self.values[row]) if row < self.values.shape[0] else float("nan")
        code = int(self.health[row]) if row < self.health.shape[0] else 0
        st = self.style(HEALTH_CLASSES[code])
        lo, hi = self.scale
        segs = self.name_segments(row, name_w)
        segs.append(self.gap)
        segs.append(Segment(log_bar(v, lo, hi, bar_w), st))
        segs.append(self.gap)
        segs.append(Segment(fmt_si(v).rjust(value_w), st if code else self.style("name")))
        return segs
