"""Modal dialogs: yes/no confirmation (stop), the three-way quit choice, and the error/traceback panel."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    """Yes / No. Dismisses with True for yes."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 60; max-width: 95%; height: auto;
        border: thick $warning; background: $surface; padding: 1 2;
    }
    ConfirmScreen #question { width: 1fr; margin-bottom: 1; }
    ConfirmScreen Horizontal { height: auto; align-horizontal: right; }
    ConfirmScreen Button { margin-left: 2; }
    """
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question = question
        self.yes, self.no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, id="question")
            with Horizontal():
                yield Button(f"{self.no} (n)", id="no")
                yield Button(f"{self.yes} (y)", id="yes", variant="warning")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class QuitScreen(ModalScreen[str | None]):
    """Stop training and quit / leave it running and quit / cancel. Dismisses with "stop", "detach" or None."""

    DEFAULT_CSS = """
    QuitScreen { align: center middle; }
    QuitScreen > Vertical {
        width: 64; max-width: 95%; height: auto;
        border: thick $primary; background: $surface; padding: 1 2;
    }
    QuitScreen #title { text-style: bold; margin-bottom: 1; }
    QuitScreen Button { width: 1fr; margin-bottom: 1; }
    """
    BINDINGS = [
        Binding("s", "choose('stop')", "Stop and quit"),
        Binding("d,l", "choose('detach')", "Leave running"),
        Binding("c,escape", "choose(None)", "Cancel"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Training is still running. Quit the monitor?", id="title")
            yield Button("Stop training and quit (s)", id="stop", variant="error")
            yield Button("Leave training running in background and quit (d)", id="detach", variant="primary")
            yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)


class ErrorScreen(ModalScreen[None]):
    """The error of a failed run and its traceback, scrollable."""

    DEFAULT_CSS = """
    ErrorScreen { align: center middle; }
    ErrorScreen > Vertical {
        width: 90%; height: 90%;
        border: thick $error; background: $surface; padding: 0 1;
    }
    ErrorScreen #error-title { text-style: bold; color: $error; height: auto; }
    ErrorScreen #error-text { height: auto; margin-bottom: 1; }
    ErrorScreen VerticalScroll { height: 1fr; background: $background; }
    ErrorScreen #traceback { width: 1fr; color: $text; }
    ErrorScreen #error-hint { height: 1; color: $text-muted; }
    """
    BINDINGS = [Binding("escape,e,q,enter", "close", "Close")]

    def __init__(self, error: str, traceback: str) -> None:
        super().__init__()
        self.error = error
        self.traceback = traceback

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Training failed", id="error-title")
            yield Static(self.error or "no error message", id="error-text", markup=False)
            with VerticalScroll(id="traceback-scroll"):
                yield Static(
                    self.traceback
                    or (
                        "(no traceback: the error above is the whole report)"  # e.g. a full disk
                        if self.error
                        else "(no traceback was received: the training process died without reporting)"
                    ),
                    id="traceback",
                    markup=False,
                )
            yield Label("↑↓ pgup pgdn scroll · esc close · e reopens", id="error-hint")

    def on_mount(self) -> None:
        self.query_one("#traceback-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
