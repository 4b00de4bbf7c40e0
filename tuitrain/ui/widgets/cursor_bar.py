"""One line under the header: where the time cursor is (step, epoch) and the run's numbers there (loss,
accuracy, learning rate, the last finished epoch's validation), with the cursor keys on the right.
Shown in replay, and on a live dashboard once the cursor has left the latest step."""

from __future__ import annotations

import math

from textual.content import Content
from textual.widget import Widget

from tuitrain.ui.fmt import num_markup
from tuitrain.ui.history import History
from tuitrain.ui.view_state import ViewState

HINTS = ("←→ step  ⇧←→ epoch  home/end  space play", "←→ ⇧←→ home end space", "")


def _pct(v: float) -> str:
    return num_markup(v, pct=True)  # a NaN the run produced: red `nan`, never `—` (missing)


def _num(v: float, digits: int = 4) -> str:
    return num_markup(v, digits)


def cursor_markup(history: History, view: ViewState) -> str:
    """The cursor's position and the numbers of ``history`` there, as markup (no hints)."""
    if history.run is None or not history.scalars.n:
        return "[$text-muted]cursor: no steps yet[/]"
    row = history.scalars_at(view.cursor)
    if row is None:
        return f"[b]step {view.cursor:,}[/] [$text-muted]before the first step[/]"
    step, epoch = int(row["step"]), int(row["epoch"])
    last = history.steps_done - 1
    if view.cursor is None:
        where = f"[b $success]latest[/] step [b]{step:,}[/]"
    else:
        mark = "[b $accent]▶[/]" if view.playing else "[b $accent]◆[/]"
        where = f"{mark} step [b]{step:,}[/][$text-muted]/{last:,}[/]"
    epochs = history.run.epochs
    parts = [
        where,
        f"epoch {epoch + 1}" + (f"/{epochs}" if epochs else ""),
        f"loss [b]{_num(row['loss'])}[/]",
        f"acc [b]{_pct(row['acc'])}[/]",
        f"lr {_num(row['lr'], 2)}",
    ]
    if history.run.source != "preset":  # a user's loop: what it logged at that step, its own keys too
        shown = [
            k for k in ("loss", "acc", "lr", *history.user_scalars) if row.get(k, math.nan) == row.get(k)
        ]
        parts[2:] = [
            f"{k.replace('[', chr(92) + '[')} [b]{_pct(row[k]) if k == 'acc' else _num(row[k])}[/]"
            for k in shown
        ]
    ep = history.epoch_at(view.cursor if view.cursor is not None else step)
    if ep is not None and history.run.source != "preset":
        val = [_num(ep.val_loss)] if not math.isnan(ep.val_loss) else []
        val += [_pct(ep.val_acc)] if not math.isnan(ep.val_acc) else []
        if val:
            parts.append(f"[$warning]val[/] {' / '.join(val)} [$text-muted](ep {ep.epoch + 1})[/]")
    elif ep is not None:
        parts.append(
            f"[$warning]val[/] {_num(ep.val_loss)} / {_pct(ep.val_acc)} [$text-muted](ep {ep.epoch + 1})[/]"
        )
    return " [$text-muted]·[/] ".join(parts)


class CursorBar(Widget):
    DEFAULT_CSS = """
    CursorBar {
        height: 1;
        width: 1fr;
        background: $boost;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.markup = ""
        self._content = Content("")
        self._key: tuple | None = None

    def update_data(self, history: History, view: ViewState) -> None:
        width = self.size.width - 2
        key = (id(history), history.version, view.cursor, view.playing, width)
        if key == self._key:
            return
        self._key = key
        left = Content.from_markup(cursor_markup(history, view))
        for hint in HINTS:
            right = Content.from_markup(f"[$text-muted]{hint}[/]") if hint else Content("")
            if left.cell_length + right.cell_length + 2 <= width:
                break
        pad = max(1, width - left.cell_length - right.cell_length)
        self._content = Content.assemble(left, " " * pad, right).truncate(max(1, width), ellipsis=True)
        self.markup = self._content.plain
        self.refresh()

    def render(self) -> Content:
        return self._content
