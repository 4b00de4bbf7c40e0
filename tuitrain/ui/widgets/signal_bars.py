"""The Signal view's bars: per probed module, from input (top) to output, the activation std of one
probed step as a log bar with its value (the signal-propagation plot of Brock et al. 2021, live), the
fraction of dead units beside it and, where the module has bounds (sigmoid/tanh), the fraction
saturated. Blocks (a residual or processing block's output) are marked ``◆``.

Live it shows the latest probed step; with the time cursor set (replay, or a live run looked back on),
the row at the cursor. The log scale is whole decades spanning the whole run's std (at least
:data:`MIN_SCALE`), so a cursor move changes the bars, never the scale. A std fallen below
:data:`~tuitrain.diagnosis.signal.COLLAPSE_FRACTION` of the first module's (the ``signal_collapse``
rule's threshold), a dead fraction at or above ``DEAD_FRACTION`` and a saturated one at or above
``SATURATED_FRACTION`` are drawn in the warning colour: the rules own those numbers."""

from __future__ import annotations

import math

import numpy as np
from rich.segment import Segment
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Size
from textual.widgets import Static

from tuitrain.diagnosis.signal import COLLAPSE_FRACTION, DEAD_FRACTION, SATURATED_FRACTION
from tuitrain.ui.fmt import fmt_si
from tuitrain.ui.history import History
from tuitrain.ui.signal_history import NO_PROBE, SignalHistory, SignalRow
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.layer_rows import LayerRows, decade_label, frac_bar, log_bar
from tuitrain.ui.widgets.titles import set_titles

MIN_SCALE = (-3.0, 1.0)  # the bars' decades at least: 1e-3 .. 1e1 (a healthy net's std sits near 1)
BLOCK_MARK = "◆"


def std_scale(signal: SignalHistory) -> tuple[float, float]:
    """Whole decades spanning the finite log10 std of the whole run, and at least :data:`MIN_SCALE`."""
    _, logs = signal.std_long()
    fin = logs[np.isfinite(logs)]
    lo, hi = MIN_SCALE
    if fin.size:
        lo = min(lo, float(math.floor(float(fin.min()))))
        hi = max(hi, float(math.ceil(float(fin.max()))))
    return lo, hi


def signal_state(history: History) -> str:
    """The empty text of the Signal view's panels; "" when there is a row to show."""
    sig = history.signal
    if history.run is None:
        return "waiting for the training process…"
    if not sig.has_probe:
        return NO_PROBE
    if not sig.n_rows:
        return f"waiting for the first probed step (the activation probe runs every {sig.every} steps)…"
    return ""


class ModuleRows(LayerRows):
    """One line per probed module (``history.signal.modules``), blocks marked with ``◆``."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.kinds: list[str] = []

    def set_modules(self, history: History) -> str:
        """Take the run's modules (none while the view has nothing to show); returns the empty text."""
        state = signal_state(history)
        self.empty_text = state
        mods = history.signal.modules if not state else []
        names = [m.name for m in mods]
        if names != self.names:
            self.names = names
            self.kinds = [m.kind for m in mods]
            self.layer_index = np.arange(len(names), dtype=np.int64)
        height = max(1, len(self.names))
        if self.virtual_size.height != height:
            self.virtual_size = Size(self.content_width, height)
        return state

    def _name_segments(self, row: int, width: int) -> list[Segment]:
        segs = super()._name_segments(row, max(1, width - 2))
        block = row < len(self.kinds) and self.kinds[row] == "block"
        mark = Segment(f"{BLOCK_MARK} " if block else "  ", self.style("normal" if block else "dim"))
        return [segs[0], mark, *segs[1:]]


class SignalBars(ModuleRows):
    DEFAULT_CSS = """
    SignalBars { height: 1fr; background: $surface; }
    """
    VALUE_W = 8
    DEAD_W = 9  # "▇▇▇▇ 100%"
    SAT_W = 5  # " 100%"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.row: SignalRow | None = None
        self.std = self.dead = self.sat = np.zeros(0)
        self.collapsed = np.zeros(0, dtype=bool)
        self.scale = MIN_SCALE
        self.show_sat = False
        self._key: tuple | None = None

    def name_width(self, width: int) -> int:
        return int(min(30, max(10, width * 0.3)))

    def bar_width(self, width: int) -> int:
        fixed = self.name_width(width) + self.VALUE_W + self.DEAD_W + (self.SAT_W if self.show_sat else 0)
        return max(4, width - fixed - 3)

    def update_data(self, history: History, view: ViewState) -> None:
        key = (id(history), history.version, view.cursor, self.content_width)
        if key == self._key:
            return
        self._key = key
        self.set_modules(history)
        sig = history.signal
        self.row = sig.at(view.cursor, history.backing) if self.names else None
        n = len(self.names)
        if self.row is None:
            self.std = self.dead = self.sat = np.full(n, np.nan)
        else:
            self.std, self.dead, self.sat = self.row.std, self.row.dead_frac, self.row.saturated_frac
        self.show_sat = bool(np.isfinite(self.sat).any())
        self.scale = std_scale(sig)
        with np.errstate(invalid="ignore"):
            ref = self.std[0] if n else np.nan
            self.collapsed = (self.std < COLLAPSE_FRACTION * ref) & (ref > 0)
        self.refresh()

    def render_row(self, row: int, width: int) -> list[Segment]:
        v = float(self.std[row]) if row < self.std.shape[0] else math.nan
        bar_w = self.bar_width(width)
        if math.isnan(v):  # not measured (the module did not run in that forward), or NaN itself
            st, bar = self.style("dim"), " " * bar_w
        elif not math.isfinite(v):
            st, bar = self.style("nonfinite"), "×".ljust(bar_w)
        else:
            st = self.style(
                "vanishing" if row < self.collapsed.shape[0] and self.collapsed[row] else "normal"
            )
            bar = log_bar(v, *self.scale, bar_w)
        segs = self.name_segments(row, self.name_width(width))
        segs += [self.gap, Segment(bar, st), self.gap, Segment(fmt_si(v).rjust(self.VALUE_W), st), self.gap]
        segs.append(self._frac(self.dead, row, DEAD_FRACTION, bar=True))
        if self.show_sat:
            segs.append(self._frac(self.sat, row, SATURATED_FRACTION, bar=False))
        return segs

    def _frac(self, values: np.ndarray, row: int, warn: float, *, bar: bool) -> Segment:
        f = float(values[row]) if row < values.shape[0] else math.nan
        w = self.DEAD_W if bar else self.SAT_W
        if not math.isfinite(f):
            return Segment("—".rjust(w) if bar else " " * w, self.style("dim"))
        pct = f"{f * 100:4.0f}%"
        text = (frac_bar(f, w - 5) + pct) if bar else pct.rjust(w)
        return Segment(text, self.style("vanishing" if f >= warn else ("name" if f > 0 else "dim")))


class SignalPanel(Vertical):
    """Column headings over the bars; the title says which step they show."""

    DEFAULT_CSS = """
    SignalPanel {
        border: round $primary-muted;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        height: 1fr;
    }
    SignalPanel > .signal-head { height: 1; width: 1fr; color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.bars = SignalBars(id="signal-bars")
        self.head = Static("", classes="signal-head", markup=False)
        self._head_text = ""

    def compose(self) -> ComposeResult:
        yield self.head
        yield self.bars

    def on_mount(self) -> None:
        self.border_title = "Signal"

    def update_data(self, history: History, view: ViewState) -> None:
        bars = self.bars
        bars.update_data(history, view)
        row = bars.row
        at = ""
        if row is not None:
            at = f" @ step {row.step:,}" + ("" if row.exact else " (bucket mean)")
        set_titles(self, title=f"Signal{at} · activation std per module, input at the top")
        n = len(bars.names)
        lo, hi = bars.scale
        sub = f"{n} modules · {BLOCK_MARK} block · {decade_label(lo)}…{decade_label(hi)}" if n else ""
        if n and bars.collapsed.any():
            sub += f" · [$warning]■[/] std < {COLLAPSE_FRACTION:g}x the first's"
        set_titles(self, subtitle=sub)
        head = ""
        if n:
            width = bars.content_width
            bw = bars.bar_width(width)
            scale = f"{decade_label(lo)} ─ std (log) ─ {decade_label(hi)}"
            head = (
                "module".ljust(bars.name_width(width))
                + " "
                + (scale if len(scale) <= bw else "std (log)")[:bw].ljust(bw)
                + " "
                + "value".rjust(bars.VALUE_W)
                + " "
                + "dead".rjust(bars.DEAD_W)
                + ("sat".rjust(bars.SAT_W) if bars.show_sat else "")
            )
        if head != self._head_text:
            self._head_text = head
            self.head.update(head)
