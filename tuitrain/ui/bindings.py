"""The one table of key bindings. The app's BINDINGS, the footer, the help screen and the command
palette all read :data:`KEYS`; add a key here and it shows up everywhere.

Each key says where it applies (``scope``): everywhere, only with a training process to control (a live
``watch``), only in a replay, or only with several runs. Help and the palette list only the keys that
apply to the dashboard at hand, so a live ``watch`` never offers replay-only actions.

The time-cursor keys (arrows, Home, End) are *priority* bindings of the data screens: a focused panel
(the gradient bars scroll) would otherwise take them for scrolling, which is what made ``Left``, ``Home``
and ``End`` do nothing to the cursor in a live ``watch`` while they worked in replay (where no panel has
focus). Being screen bindings, not app bindings, they leave dialogs and the command palette's input alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class Key:
    keys: str  # textual key spec; comma-separated alternatives
    action: str  # app action name (without "action_")
    description: str  # short, for the footer
    help: str  # one line, for the help screen and the palette
    group: str  # help-screen section
    footer: bool = False  # shown in the footer
    display: str | None = None  # how the key is written (footer and help)
    scope: str = ""  # "": always; "training": a process to control; "replay": replay only; "runs": 2+ runs;
    # "sweep": a sweep dashboard with its runner to control
    priority: bool = False  # bound on the data screens ahead of any focused panel (the time cursor)

    @property
    def shown_key(self) -> str:
        return self.display or self.keys.split(",")[0]


KEYS: tuple[Key, ...] = (
    Key("p", "toggle_pause", "Pause", "pause / resume training", "Training", footer=True, scope="training"),
    Key("s", "stop", "Stop", "stop training (asks first)", "Training", footer=True, scope="training"),
    Key("P", "pause_all", "Pause all", "sweep: pause / resume every variant", "Training", scope="sweep"),
    Key("S", "stop_all", "Stop all", "sweep: stop every variant (asks first)", "Training", scope="sweep"),
    Key("q", "request_quit", "Quit", "quit: stop / leave running", "Training", footer=True),
    Key("e", "show_error", "Error", "error and traceback", "Training"),
    Key("h", "show_view('heatmap')", "Heatmap", "gradient-flow heatmap", "Views", footer=True),
    Key(
        "h,escape",
        "show_view('dashboard', 'heatmap')",
        "Back",
        "back to the dashboard",
        "Views",
        footer=True,
        display="h",
    ),
    Key("v", "show_view('signal')", "Signal", "signal view: activation std per module", "Views", footer=True),
    Key(
        "v,escape",
        "show_view('dashboard', 'signal')",
        "Back",
        "back to the dashboard",
        "Views",
        footer=True,
        display="v",
    ),
    # not in the footer: at 80 columns it is full (help, the palette and README list it)
    Key("i", "show_view('images')", "Images", "images: kernels, boundary, misclassified", "Views"),
    Key(
        "i,escape",
        "show_view('dashboard', 'images')",
        "Back",
        "back to the dashboard",
        "Views",
        footer=True,
        display="i",
    ),
    Key(
        "c",
        "show_view('compare')",
        "Compare",
        "replay: runs overlaid, final table",
        "Views",
        footer=True,
        scope="replay",
    ),
    Key(
        "c,escape",
        "show_view('dashboard', 'compare')",
        "Back",
        "back to the dashboard",
        "Views",
        footer=True,
        display="c",
        scope="replay",
    ),
    Key(
        "r",
        "next_run(1)",
        "Next run",
        "replay: next run in header/bars/heatmap",
        "Views",
        footer=True,
        scope="runs",
    ),
    Key(
        "g",
        "view('cycle_quantity')",
        "Quantity",
        "cycle grad norm, mean |grad|, W norm, ΔW/W",
        "Views",
        footer=True,
    ),
    Key(
        "d",
        "view('toggle_diagnosis')",
        "Diagnosis",
        "diagnosis panel in place of the events",
        "Views",
        footer=True,
    ),
    Key("b", "view('toggle_bias')", "Bias/norm", "hide / show bias and norm tensors", "Views"),
    Key("a", "view('toggle_metric')", "Loss/acc", "chart: loss, acc, own keys", "Chart", footer=True),
    Key("l", "view('toggle_log')", "Log y", "chart: log y axis", "Chart"),
    Key("full_stop", "view('smoother', 1)", "Smooth+", "chart: more smoothing", "Chart", display="."),
    Key("comma", "view('smoother', -1)", "Smooth-", "chart: less smoothing", "Chart", display=","),
    Key("plus,equals_sign", "view('zoom', 0.5)", "Zoom in", "chart: zoom in (x)", "Chart", display="+"),
    Key("minus", "view('zoom', 2.0)", "Zoom out", "chart: zoom out (x)", "Chart", display="-"),
    Key("left_square_bracket", "view('pan', -1)", "Pan left", "chart: pan left", "Chart", display="["),
    Key("right_square_bracket", "view('pan', 1)", "Pan right", "chart: pan right", "Chart", display="]"),
    Key("f", "view('follow_live')", "Follow", "chart: follow the live run", "Chart"),
    # The time cursor: what the bars, sparklines and heatmap show (help texts stay short: a narrow column)
    Key("left", "cursor('step', -1)", "Cursor back", "step back", "Cursor", display="←", priority=True),
    Key("right", "cursor('step', 1)", "Cursor forward", "step forward", "Cursor", display="→", priority=True),
    Key(
        "shift+left",
        "cursor('epoch', -1)",
        "Previous epoch",
        "previous epoch",
        "Cursor",
        display="⇧←",
        priority=True,
    ),
    Key(
        "shift+right", "cursor('epoch', 1)", "Next epoch", "next epoch", "Cursor", display="⇧→", priority=True
    ),
    Key("home", "cursor('home')", "First step", "first step", "Cursor", priority=True),
    Key("end", "cursor('end')", "Latest step", "last step (latest)", "Cursor", priority=True),
    Key("space", "toggle_play", "Play", "play / pause", "Cursor"),
    Key("w", "screenshot", "Screenshot", "save an SVG screenshot here (cwd)", "Other"),
    Key("question_mark", "help", "Help", "this help", "Other", footer=True, display="?"),
)

# Keys that Textual or the focused panel provide, listed in the help screen only.
BUILTIN_KEYS: tuple[tuple[str, str], ...] = (
    ("^p", "command palette (all actions)"),
    ("tab", "next panel; ↑ ↓ pgup pgdn scroll"),
    ("esc", "close a dialog"),
)


def app_bindings() -> list[Binding]:
    """The app's bindings: every key but the priority ones (those are :func:`screen_bindings`)."""
    return [
        Binding(k.keys, k.action, k.description, show=k.footer, key_display=k.display, tooltip=k.help)
        for k in KEYS
        if not k.priority
    ]


def screen_bindings() -> list[Binding]:
    """The time cursor's keys, bound on each data screen with priority over a focused panel."""
    return [
        Binding(
            k.keys,
            f"app.{k.action}",
            k.description,
            show=k.footer,
            key_display=k.display,
            tooltip=k.help,
            priority=True,
        )
        for k in KEYS
        if k.priority
    ]


def applies(key: Key, app: object) -> bool:
    """Whether ``key`` does something on ``app``'s dashboard (help and palette list only these)."""
    if key.scope == "training":
        return getattr(app, "control", None) is not None
    if key.scope == "sweep":
        return getattr(app, "sweep", None) is not None and getattr(app, "control", None) is not None
    if key.scope == "replay":
        return bool(getattr(app, "replay", False))
    if key.scope == "runs":
        return len(getattr(app, "runs", ())) > 1
    return True


def keys_for(app: object) -> tuple[Key, ...]:
    return tuple(k for k in KEYS if applies(k, app))


class ActionsProvider(Provider):
    """Command-palette entries for every action in :data:`KEYS`."""

    def _entries(self) -> list[tuple[str, str, str]]:
        return [(f"{k.description} ({k.shown_key})", k.help, k.action) for k in keys_for(self.app)]

    async def discover(self) -> Hits:
        for title, help_text, action in self._entries():
            yield DiscoveryHit(title, self._runner(action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in self._entries():
            score = max(matcher.match(title), matcher.match(help_text) * 0.9)
            if score > 0:
                yield Hit(score, matcher.highlight(title), self._runner(action), text=title, help=help_text)

    def _runner(self, action: str):
        async def run() -> None:
            await self.app.run_action(action)

        return run
