"""Two header lines: what runs where (run name, model and parameters, dataset, device, status badge),
then where it is (epoch i/N, step, a progress bar, samples/s, elapsed, ETA). Before RunStarted arrives
it says that the training process is still starting (importing torch, building the model)."""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from tuitrain.ui.fmt import fmt_duration
from tuitrain.ui.history import INCOMPLETE, History
from tuitrain.view.finding_text import chip

STATUS_STYLE = {
    "starting": "$accent",
    "running": "$success",
    "paused": "$accent",  # a status the user chose, not a warning
    "completed": "$primary",
    "stopped": "$secondary",
    "failed": "$error",
    INCOMPLETE: "$error",
}


def human_count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            v = n / div
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return str(n)


def progress_bar(frac: float, width: int) -> str:
    frac = min(1.0, max(0.0, frac))
    full = int(frac * width)
    part = int((frac * width - full) * 8)
    return ("█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part and full < width else "")).ljust(width, "·")


def diverged(history: History) -> bool:
    """A run that ran to its end (``monitor.on_nan = "continue"``) with a loss that went non-finite:
    the header never calls it COMPLETED. (With ``on_nan = "stop"`` the run itself is ``failed``.)"""
    return history.status == "completed" and not history.pending and history.nan_step is not None


def _esc(text: str) -> str:
    return text.replace("[", r"\[")


def run_line(h: History) -> str:
    """The first line's left part as markup: run name, model, parameters, dataset, device; what the
    run does not know (a user's loop: no dataset, maybe no device or parameter count) is left out."""
    r = h.run
    assert r is not None
    seq = [(k, v) for k, v in (("model", _esc(r.model_name)), ("params", r.params)) if v]
    seq += [("plain", v) for v in (_esc(r.dataset), _esc(r.device)) if v]
    out, prev = f"[b]{_esc(r.run_name)}[/]", "name"
    for i, (kind, v) in enumerate(seq):
        sep = " " if prev == "params" or (prev, kind) == ("model", "params") else " [$text-muted]·[/] "
        if kind == "params":  # muted, the separator after it inside the same span
            v = f"[$text-muted]{human_count(int(v))} params{' ·' if i + 1 < len(seq) else ''}[/]"
        out += sep + str(v)
        prev = kind
    return out


class RunHeader(Widget):
    DEFAULT_CSS = """
    RunHeader {
        height: 2;
        width: 1fr;
        background: $panel;
        color: $foreground;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.status = "starting"
        self._content = Content("")
        self._key: tuple | None = None
        self._history: History | None = None
        self.tag = ""  # the run's chip and i/N when several runs are shown (markup)

    def update_data(self, history: History, view=None) -> None:
        self._history = history
        self.tag = getattr(view, "run_tag", "")
        elapsed = history.elapsed() if history.run else history.clock()
        key = (
            id(history),
            history.version,
            int(elapsed or 0),
            self.size.width,
            history.status,
            history.pending,
            self.tag,
            history.findings.drawn,
        )
        if key == self._key:
            return
        self._key = key
        self.status = history.status
        self._content = self.build(history, self.size.width - 2)
        self.refresh()

    def status_text(self, history: History) -> str:
        if diverged(history):
            return "DIVERGED"
        return (history.pending or history.status).upper()

    def build(self, h: History, width: int) -> Content:
        st = h.status
        badge_style = STATUS_STYLE.get(st, "$accent")
        if h.pending:
            badge_style = "$warning"
        elif diverged(h):
            badge_style = "$error"
        badge = Content.from_markup(f"[b $text on {badge_style}] {self.status_text(h)} [/]")
        room = max(4, width - badge.cell_length - 20)  # an open error is never missed; the run name shows
        found = chip(h.findings.open(), press=bool(h.findings.unseen()), width=room)
        if found is not None:
            sev, text = found
            badge = Content.assemble(
                Content.from_markup(f"[b {'$error' if sev == 'error' else '$warning'}]{_esc(text)}[/] "),
                badge,
            )
        if h.run is None:
            left1 = Content.from_markup("[b]tuitrain[/]  [$text-muted]waiting for the training process…[/]")
            line2 = Content.from_markup(
                "[$text-muted]importing torch and building the model (usually 5-10 s)[/]"
            )
        else:
            left1 = Content.from_markup((f"{self.tag} " if self.tag else "") + run_line(h))
            line2 = self._progress(h, width)
        pad = max(1, width - left1.cell_length - badge.cell_length)
        if left1.cell_length + badge.cell_length + 1 > width:
            left1 = left1.truncate(max(0, width - badge.cell_length - 1), ellipsis=True)
            pad = max(1, width - left1.cell_length - badge.cell_length)
        line1 = Content.assemble(left1, " " * pad, badge)
        return Content("\n").join([line1, line2.truncate(width, ellipsis=True)])

    def _progress(self, h: History, width: int) -> Content:
        r = h.run
        assert r is not None
        total = r.total_steps
        done = h.steps_done
        if r.epochs:
            ep = f"epoch [b]{min(h.epoch + 1, r.epochs) if done else 0}[/]/{r.epochs}  "
        else:  # a user's loop that did not say how many epochs: the one it is in, if any
            ep = f"epoch [b]{h.epoch + 1}[/]  " if done and (h.epoch or len(h.epochs)) else ""
        frac = done / total if total else 0.0
        sps = h.samples_per_s
        per_s = h.steps_per_s() if not (sps == sps and sps > 0) else None
        if sps == sps and sps > 0:
            rate, unit = human_count(int(sps)), "samples/s"
        elif per_s is not None and per_s > 0 and not h.is_finished:  # a loop that gave no batch size
            rate, unit = human_count(int(per_s)) if per_s >= 10 else f"{per_s:.1f}", "steps/s"
        else:
            rate, unit = "—", "samples/s"
        eta = h.eta()
        if h.is_finished:
            eta_s = "done"
        else:  # no ETA from an unknown total
            eta_s = f"ETA {fmt_duration(eta)}" if eta is not None else "ETA —" if total else ""
        elapsed = fmt_duration(h.elapsed())
        steps = f"step [b]{done:,}[/]" + (f"/{total:,}" if total else "")
        head = Content.from_markup(ep + steps)
        drop = f"  [$warning]dropped {h.dropped_steps:,}[/]" if h.dropped_steps else ""
        short = "/s" if unit == "samples/s" else " steps/s"
        tails = [
            f"{rate} {unit}  {elapsed} elapsed  {eta_s}".rstrip(),
            f"{rate}{short}  {elapsed} elapsed  {eta_s}".rstrip(),
            f"{rate}{short}  {elapsed}  {eta_s}".rstrip(),
        ]
        if not total:  # no bar and no percentage of an unknown total
            for t in tails:
                tail = Content.from_markup(f"[$text-muted]{t}[/]{drop}")
                if head.cell_length + tail.cell_length + 4 <= width:
                    break
            return Content.assemble(head, "    ", tail)
        pct = f" {frac * 100:3.0f}% "
        for t in tails:
            tail = Content.from_markup(f"[$text-muted]{t}[/]{drop}")
            room = width - head.cell_length - tail.cell_length - len(pct) - 4
            if room >= 0:
                break
        if room >= 6:
            bar_w = min(40, room)
            mid = Content.from_markup(f"  [$primary]{progress_bar(frac, bar_w)}[/]{pct} ")
        else:
            mid = Content(f" {pct} ")
        return Content.assemble(head, mid, tail)

    def render(self) -> Content:
        return self._content
