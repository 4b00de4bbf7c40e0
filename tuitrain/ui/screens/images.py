"""The Images screen (key ``i``, ``i``/escape back): the run's snapshots as pictures (issue 12).

Panels, for what the run has (its ``RunStarted.snapshots``): the first layer's kernels
(``first_layer``, :func:`tuitrain.view.images.kernel_grid`), the Mixer's token mixing
(``token_mixing``, :func:`~tuitrain.view.images.token_grid`), the decision boundary of 2-D data with the
test points over it (``boundary`` + ``points``: each point in its label's colour, black where the
boundary at that step misclassifies it) and the misclassified test samples (``misclassified``: image
tiles, or the points listed for 2-D data, "true→pred prob" under each, class names when the run has them).
Titles say what and when ("kernels · epoch 3 · step 120", "at init · step 0"); subtitles the module
and what the colours mean.

Live it shows the latest rows as the Snapshot events arrive (redrawn only while the screen is shown:
the app redraws the current mode's screens only); with the time cursor (replay, or a live run looked
back on: the same keys as on the Signal view) the last row at or before the cursor's step. With several
runs it shows the selected one (``r``). Panels stand side by side (2x2 for four) and shrink with the
terminal: the half-block pictures keep their aspect ratio at any size, 80x24 included.
"""

from __future__ import annotations

import math

import numpy as np
from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Footer, Static

from tuitrain.events import BOUNDARY, FIRST_LAYER, MISCLASSIFIED, POINTS, TOKEN_MIXING
from tuitrain.ui.history import History
from tuitrain.ui.screens.base import DataScreen
from tuitrain.ui.snapshot_history import SnapshotHistory, SnapshotRow
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.cursor_bar import CursorBar
from tuitrain.ui.widgets.header import RunHeader
from tuitrain.ui.widgets.image_draw import boundary_drawer, points_drawer, samples_drawer, wrong_points
from tuitrain.ui.widgets.image_panel import ImagePanel, picture_drawer
from tuitrain.view.images import class_color, kernel_grid, token_grid

PANELS: tuple[str, ...] = (FIRST_LAYER, TOKEN_MIXING, BOUNDARY, MISCLASSIFIED)  # left to right
LABELS = {
    FIRST_LAYER: "kernels",
    TOKEN_MIXING: "token mixing",
    BOUNDARY: "boundary",
    MISCLASSIFIED: "misclassified",
}


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgb)


def class_label(c: int, names: list[str]) -> str:
    return names[c] if 0 <= c < len(names) else str(c)


class ImagesScreen(DataScreen):
    DEFAULT_CSS = """
    ImagesScreen { layout: vertical; }
    ImagesScreen #images-main { layout: grid; grid-size: 1; grid-gutter: 0; height: 1fr; }
    ImagesScreen #images-why { height: auto; padding: 1 2; color: $text-muted; display: none; }
    ImagesScreen.-empty #images-why { display: block; }
    ImagesScreen.-empty #images-main { display: none; }
    """

    def compose(self) -> ComposeResult:
        self.header = RunHeader(id="header")
        self.cursor_bar = CursorBar(id="cursor")
        self.why = Static("", id="images-why")
        self.panels = {name: ImagePanel(id=f"image-{name}") for name in PANELS}
        yield self.header
        yield self.cursor_bar
        yield self.why
        with Container(id="images-main"):
            yield from self.panels.values()
        yield Footer()

    def refresh_data(
        self, history: History, view: ViewState, *, force: bool = False, pace: float = 1.0
    ) -> bool:
        deferred = False
        if self.show_cursor_bar(view):
            self.cursor_bar.update_data(history, view)
        if self.due(self.header, min(0.5, 0.1 * pace), force):
            self.header.update_data(history, view)
        else:
            deferred = True
        snaps = history.snapshots
        key = (id(history), snaps.version, view.cursor, history.test is not None)
        if key != getattr(self, "_key", None) and (force or self.due("panels", min(1.0, 0.25 * pace))):
            self._key = key
            self.update_panels(history, view)
        elif key != getattr(self, "_key", None):
            deferred = True
        return deferred

    # -- the panels ------------------------------------------------------------------------------

    def update_panels(self, history: History, view: ViewState) -> None:
        snaps = history.snapshots
        why = snaps.why_empty(bool(getattr(self.app, "replay", False)))
        shown = [n for n in PANELS if n in snaps.specs] if not why else []
        if not why and not shown:
            why = "this run's snapshots hold no pictures this screen draws: " + ", ".join(snaps.names())
        self.set_class(bool(why), "-empty")
        self.why.update(why)
        for name, panel in self.panels.items():
            panel.display = name in shown
        main = self.query_one("#images-main")
        main.styles.grid_size_columns = 2 if len(shown) == 4 else max(1, len(shown))
        main.styles.grid_size_rows = 2 if len(shown) == 4 else 1
        for name in shown:
            getattr(self, f"_show_{name}")(self.panels[name], snaps, view.cursor, history)

    def _missing(self, panel: ImagePanel, name: str, snaps: SnapshotHistory, step: int | None) -> None:
        first = snaps.first_step(name)
        spec = snaps.specs[name]
        if first is None:
            when = {"start": "at the start", "epoch": "at init and at each epoch's end", "end": "at the end"}
            msg = f"not taken yet ({when.get(spec.when, spec.when)})"
        elif spec.when == "end":
            msg = f"taken at the end (step {first:,}): End shows it"
        else:
            msg = f"none at or before step {step:,} (the first is at step {first:,})"
        panel.show(("missing", name, first, step), LABELS[name], spec.description[:60], None, msg)

    def _show_first_layer(self, panel: ImagePanel, snaps: SnapshotHistory, step: int | None, _h) -> None:
        row = snaps.at(FIRST_LAYER, step)
        if row is None:
            return self._missing(panel, FIRST_LAYER, snaps, step)
        w = row.arrays["weight"][-1]
        pic = kernel_grid(w)
        meta = row.spec.meta
        k, c, kh, kw = w.shape
        total = int(meta.get("out_total", k))
        colours = "RGB" if c == 3 else ("grey" if c == 1 else f"grey: mean of {c} channels")
        sub = f"{meta.get('module', '?')} ({meta.get('type', '?')}) · {k} of {total} · {kh}x{kw} · {colours}"
        panel.show(
            (FIRST_LAYER, row.index, row.count),
            f"{LABELS[FIRST_LAYER]} · {row.when()}",
            sub,
            picture_drawer(pic.rgb),
            short_title=row.when(),
        )

    def _show_token_mixing(self, panel: ImagePanel, snaps: SnapshotHistory, step: int | None, _h) -> None:
        row = snaps.at(TOKEN_MIXING, step)
        if row is None:
            return self._missing(panel, TOKEN_MIXING, snaps, step)
        meta = row.spec.meta
        w = row.arrays["weight"][-1]
        grid = meta.get("grid") or [1, int(w.shape[-1])]
        pic = token_grid(w, (int(grid[0]), int(grid[1])))
        total = int(meta.get("hidden_total", w.shape[0]))
        sub = f"{meta.get('module', '?')} · {w.shape[0]} of {total} units · {grid[0]}x{grid[1]} tokens · blue - / red +"
        panel.show(
            (TOKEN_MIXING, row.index, row.count),
            f"{LABELS[TOKEN_MIXING]} · {row.when()}",
            sub,
            picture_drawer(pic.rgb),
            short_title=row.when(),
        )

    def _class_names(self, snaps: SnapshotHistory) -> list[str]:
        spec = snaps.specs.get(MISCLASSIFIED)
        return [str(n) for n in (spec.meta.get("class_names") or [])] if spec is not None else []

    def _show_boundary(self, panel: ImagePanel, snaps: SnapshotHistory, step: int | None, _h) -> None:
        row = snaps.at(BOUNDARY, step)
        if row is None:
            return self._missing(panel, BOUNDARY, snaps, step)
        meta = row.spec.meta
        pred = np.asarray(row.arrays["pred"][-1])
        prob = np.asarray(row.arrays["prob"][-1], np.float32)
        ncls = int(meta.get("num_classes", int(pred.max()) + 1))
        extent = meta.get("extent")
        pts = snaps.at(POINTS, None)  # taken once at the start: the same points at every step
        names = self._class_names(snaps)
        legend = " ".join(
            f"[{_hex(class_color(c))}]■[/] {class_label(c, names)}" for c in range(min(ncls, 6))
        )
        xy = labels = wrong = None
        if pts is not None and extent is not None:
            xy = np.asarray(pts.arrays["xy"], np.float32).reshape(-1, 2)
            labels = np.asarray(pts.arrays["label"]).reshape(-1)
            wrong = wrong_points(pred, xy, labels, extent)
            legend += f" · black: {int(wrong.sum())} of {len(labels):,} test points wrong"
        panel.show(
            (BOUNDARY, row.index, row.count, None if pts is None else pts.count),
            f"{LABELS[BOUNDARY]} · {row.when()}",
            legend,
            boundary_drawer(pred, prob, ncls, extent, xy, labels, wrong),
            short_title=row.when(),
        )

    def _show_misclassified(
        self, panel: ImagePanel, snaps: SnapshotHistory, step: int | None, history: History
    ) -> None:
        row = snaps.at(MISCLASSIFIED, step)
        if row is None:
            return self._missing(panel, MISCLASSIFIED, snaps, step)
        labels = self.misclassified_labels(row, self._class_names(snaps))
        n_total = int(row.spec.meta.get("n_total", 0))
        acc = history.test.acc if history.test is not None else math.nan
        sub = f"{len(labels)} kept"
        if n_total and math.isfinite(acc):
            sub += f" of {round((1 - acc) * n_total):,} wrong in {n_total:,} test samples"
        elif n_total:
            sub += f" · {n_total:,} test samples"
        if "image" in row.arrays:
            drawer = samples_drawer(np.asarray(row.arrays["image"]), labels)
        else:
            xy = np.asarray(row.arrays["xy"], np.float32).reshape(-1, 2)
            drawer = points_drawer(xy, labels, row.arrays.get("index"))
        panel.show(
            (MISCLASSIFIED, row.index, row.count, sub),
            f"{LABELS[MISCLASSIFIED]} · {row.when()}",
            sub + " · true→pred prob",
            drawer,
            short_title=row.when(),
        )

    @staticmethod
    def misclassified_labels(row: SnapshotRow, names: list[str]) -> list[str]:
        """ "cat→dog 0.91" per sample (class numbers when the run has no class names)."""
        true = np.asarray(row.arrays["true"]).reshape(-1)
        pred = np.asarray(row.arrays["pred"]).reshape(-1)
        prob = np.asarray(row.arrays.get("prob", np.full(len(true), np.nan)), np.float64).reshape(-1)
        out = []
        for t, p, q in zip(true.tolist(), pred.tolist(), prob.tolist(), strict=False):
            tail = f" {q:.2f}" if math.isfinite(q) else ""
            out.append(f"{class_label(int(t), names)}→{class_label(int(p), names)}{tail}")
        return out
