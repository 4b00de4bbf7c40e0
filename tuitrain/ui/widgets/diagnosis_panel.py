"""The Diagnosis panel: one line per finding of the diagnosis rules, open ones first, the worst and the
newest first (:func:`tuitrain.diagnosis.finding.current`'s order), coloured by severity (error red,
warning yellow, info dim); the top finding gets its evidence and suggestion on the lines under it
when there is room, and on a wide panel every line carries them. Live it shows the current state; with
the time cursor (replay, or live once the cursor moved) what held at the cursor's step.

When there is nothing to show it says why: no findings (yet), diagnosis off for this run, no probes
recorded (only the loss rules can find anything), or a run file written before findings were stored.

At 80x24 the dashboard shows it in the event log's place (key ``d``); from 36 rows both show
(app.tcss). The text is laid out by :mod:`tuitrain.view.finding_text`; this widget only colours it."""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from tuitrain.events import Finding
from tuitrain.ui.history import History
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.titles import set_titles
from tuitrain.view import finding_text as ft

STYLE = {"error": "b $error", "warning": "$warning", "info": "$text-muted"}
DETAIL_WIDTH = 140  # from this many columns inside the panel every line has its evidence and fix


def _esc(text: str) -> str:
    return text.replace("[", r"\[")


def empty_text(history: History, cursor: int | None) -> str:
    """Why the panel is empty, in one line."""
    store = history.findings
    if history.run is None:
        return "waiting for the run…"
    if cursor is not None and len(store):
        later = sum(1 for f in store.current if f.holds_at(cursor))  # held here, found after the cursor
        if later:
            return (
                f"nothing found yet by step {cursor:,}; {later} found later held here (rules need a window)"
            )
        return f"no findings held at step {cursor:,} ({len(store)} in the whole run)"
    if store.stored is False:
        return "no findings stored: this file is from before diagnosis; `tuitrain diagnose FILE` finds them"
    if store.off:
        return "diagnosis off (monitor.diagnose_seconds = 0); `tuitrain diagnose FILE` runs it afterwards"
    if store.no_probes:
        return "no findings · no probes recorded: only the loss rules run"
    return "no findings" + (f" at step {cursor:,}" if cursor is not None else "")


def panel_lines(findings: list[Finding], width: int, rows: int) -> list[tuple[str, str, str]]:
    """The panel's lines as (severity, head, text): one row per finding, the top one's detail lines
    under it when the rows allow, "+N more" when they do not all fit."""
    if rows <= 0 or not findings:
        return []
    wide = width >= DETAIL_WIDTH
    kind_w = max(len(f.kind) for f in findings)
    shown = findings if len(findings) <= rows else findings[: max(1, rows - 1)]
    more = len(findings) - len(shown) if rows > 1 else 0  # one line says how many did not fit
    extra = 0 if wide else rows - len(shown) - (1 if more else 0)  # spare lines: the top one's details
    out: list[tuple[str, str, str]] = []
    for i, f in enumerate(shown):
        head, text = ft.row(f, width, kind_w, detail=wide)
        out.append((f.severity, head, text))
        if i == 0 and extra > 0:
            cut = text.endswith("…")
            out.extend((f.severity, "", d) for d in ft.details(f, width, extra, cut))
    if more:
        out.append(("info", "", f"+{more} more (tuitrain diagnose lists them all)"))
    return out


class DiagnosisPanel(Widget):
    DEFAULT_CSS = """
    DiagnosisPanel {
        border: round $primary-muted;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        overflow: hidden;
    }
    DiagnosisPanel.-error { border: round $error; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._key: tuple | None = None
        self._content = Content("")
        self.lines: list[str] = []  # the text shown, one entry per line (tests read it)
        self.new_keys: set[tuple[str, str, int]] = set()  # findings new when the panel last drew

    def on_mount(self) -> None:
        self.border_title = "Diagnosis"

    def _state(self, history: History, view: ViewState | None) -> tuple:
        cursor = view.cursor if view is not None else None
        size = self.content_region.size
        run = history.run is None
        return (id(history), history.findings.total, run, cursor, size.width, size.height, self.display)

    def has_news(self, history: History, view: ViewState | None = None) -> bool:
        """Whether the panel would show something else than it does now."""
        return self._state(history, view) != self._key

    def update_data(self, history: History, view: ViewState | None = None) -> None:
        key = self._state(history, view)
        if key == self._key:
            return
        store = history.findings
        cursor = view.cursor if view is not None else None
        if key[:2] != (self._key or (None, None))[:2]:  # a new finding (or run): remember what is new
            self.new_keys = {f.key for f in store.news()}
        self._key = key
        width, rows = self.content_region.width or 76, max(1, self.content_region.height or 3)
        findings = store.shown(cursor)
        lines = panel_lines(findings, width, rows)
        if lines:
            parts = []
            for sev, head, text in lines:
                style = STYLE.get(sev, "$text-muted")
                parts.append(
                    f"[{style}]{_esc(head)}[/]{_esc(text)}" if head else f"[$text-muted]{_esc(text)}[/]"
                )
            self.lines = [head + text for _, head, text in lines]
        else:
            self.lines = [ft.clip(empty_text(history, cursor), width)]
            parts = [f"[$text-muted]{_esc(self.lines[0])}[/]"]
        self._content = Content.from_markup("\n".join(parts))
        sub = ft.counts(findings)
        if cursor is not None:
            sub = f"at step {cursor:,}" + (f" · {sub}" if sub else "")
        new = sum(1 for f in findings if f.key in self.new_keys)
        if new and cursor is None:
            sub += f" · {new} new"
        set_titles(self, subtitle=sub)
        self.set_class(any(f.is_open and f.severity == "error" for f in findings), "-error")
        if self.display:
            store.mark_drawn()
        self.refresh()

    def render(self) -> Content:
        return self._content
