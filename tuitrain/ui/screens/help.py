"""Every key binding that applies here, from the one table in bindings.py, in two columns that fit
80x24 (a live ``watch`` lists no replay-only keys, a replay no training controls)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from tuitrain.ui.bindings import BUILTIN_KEYS, KEYS, Key


def help_text(groups: list[str], keys: tuple[Key, ...] = KEYS) -> Text:
    """The bindings of ``groups`` as aligned lines: a heading per group, then ``key  help``."""
    out = Text(no_wrap=True, overflow="ellipsis")
    for g in groups:
        out.append(f"{g}\n", style="bold underline")
        rows = [(k.shown_key, k.help) for k in keys if k.group == g]
        if g == "Other":
            rows += list(BUILTIN_KEYS)
        for key, text in rows:
            out.append(f" {key:>3}  ", style="bold")
            out.append(f"{text.removeprefix('chart: ')}\n")
    out.rstrip()
    return out


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 80; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    HelpScreen #help-columns { layout: horizontal; height: auto; }
    HelpScreen .help-col { width: 1fr; height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    HelpScreen .help-col:first-of-type { width: 2fr; }
    HelpScreen #help-foot { color: $text-muted; height: 1; }
    """
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, keys: tuple[Key, ...] = KEYS) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        with Vertical() as v:
            v.border_title = "Keys"
            with Vertical(id="help-columns"):
                yield Static(help_text(["Training", "Views", "Other"], self.keys), classes="help-col")
                yield Static(help_text(["Chart", "Cursor"], self.keys), classes="help-col")
            yield Static(
                "health colours: [$warning]■[/] vanishing  [$success]■[/] normal  [$error]■[/] exploding · esc closes",
                id="help-foot",
            )

    def action_close(self) -> None:
        self.dismiss(None)
