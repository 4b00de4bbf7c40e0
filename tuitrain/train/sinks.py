"""Sinks that are not the run file: the headless console and the live queue to a dashboard.

Both follow :class:`tuitrain.events.Sink`. The run-file writer (``tuitrain.runfile.writer``) is the
third, lossless one; these two may summarise or drop, the file never does.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import sys
import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from tuitrain.config import is_bad_input
from tuitrain.diagnosis.engine import line as finding_line
from tuitrain.events import (
    Alert,
    EpochEnd,
    Event,
    EventBatch,
    Finding,
    ProbeBlock,
    RunFinished,
    RunStarted,
    StatusChanged,
    StepBatch,
    TestResult,
)
from tuitrain.view.table import FinalTableRenderable, fmt_count, rich_table, row_from_dict

_LEVEL_STYLE = {"info": "cyan", "warning": "yellow", "error": "bold red"}


def final_table(rows: list[dict[str, Any]], title: str = "Final metrics") -> FinalTableRenderable:
    """The table of the course reports, one row per run (``{"run": name, "train_loss": ..., ...}``;
    None where missing). Formatted by :mod:`tuitrain.view.table`, like ``info``, ``replay --print`` and
    the dashboard."""
    return rich_table([row_from_dict(r) for r in rows], title=title)


class PipeSafeConsole(Console):
    """A console whose reader may go away (``tuitrain run --no-ui | head -2``) without taking the run
    with it. rich's default answer to a broken pipe is ``SystemExit(1)`` raised from inside a print,
    which would end training mid-step and leave a run file that still looks alive; here the console
    goes quiet instead, says so once on stderr, and training carries on: the run file gets everything
    and its status and the exit code stay those of the run."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # later writes, and the exit-time flush, go nowhere
        os.close(devnull)
        with contextlib.suppress(OSError):  # stderr gone as well: nobody left to tell
            print(
                "tuitrain: stdout was closed (broken pipe): console output stops here; training "
                "goes on and the run file gets everything",
                file=sys.stderr,
                flush=True,
            )


class ConsoleSink:
    """``tuitrain run --no-ui``: rich progress bars, one line per epoch, the final table.

    Every line it prints is printed with ``soft_wrap``: rich never breaks it, so a run name, a path or
    an epoch's time is never split across lines (a narrow terminal may fold a line; a pipe gets it
    whole), and each line is made to fit 80 columns in the first place (but a finding's, printed whole
    as ``tuitrain diagnose`` prints it: what, where, since when, evidence, fix). The progress bars are
    transient: they are live feedback on a terminal only, and leave nothing behind in a pipe or a
    log, nor a stale bar at the end of the run.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or PipeSafeConsole()
        self.progress: Progress | None = None
        self.started: RunStarted | None = None
        self.last_epoch: EpochEnd | None = None
        self.test: TestResult | None = None
        self._epoch_task = self._step_task = 0
        self._loss_ema = math.nan
        self._told: set[tuple[str, str, int]] = set()  # the findings printed (their keys)

    def emit(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._start(event)
        elif isinstance(event, StepBatch) and self.progress is not None and len(event):
            self._steps(event)
        elif isinstance(event, EpochEnd):
            self._epoch(event)
        elif isinstance(event, Alert):
            style = _LEVEL_STYLE.get(event.level, "")
            self._print(f"[{style}]{event.level}[/]: {event.message}")
        elif isinstance(event, Finding):
            self._finding(event)
        elif isinstance(event, StatusChanged) and event.status == "paused":
            self._print("[yellow]paused[/]")
        elif isinstance(event, TestResult):
            self.test = event
        elif isinstance(event, RunFinished):
            self._finish(event)

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress else self.console).print(
            text, highlight=False, soft_wrap=True
        )

    def _finding(self, f: Finding) -> None:
        """A warning or error finding, once, when first heard of; closings and info findings stay off
        the console (the run file, the dashboard and ``tuitrain diagnose`` have them all)."""
        if f.severity == "info" or f.key in self._told:
            return
        self._told.add(f.key)
        self._print(f"[{_LEVEL_STYLE[f.severity]}]{escape(finding_line(f))}[/]")

    def _start(self, e: RunStarted) -> None:
        self.started, self.last_epoch, self.test = e, None, None
        self._told = set()
        self._loss_ema, self._epoch_start = math.nan, 0
        c = self.console
        for line in start_lines(e):
            c.print(line, highlight=False, soft_wrap=True)
        if e.out_path:
            c.print(f"run file {escape(str(e.out_path))}", highlight=False, soft_wrap=True)
        self.progress = Progress(
            TextColumn("{task.description:>5}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True, overflow="ellipsis")),
            console=c,
            transient=True,
            refresh_per_second=4,
        )
        self.progress.start()
        self._epoch_task = self.progress.add_task("epoch", total=e.epochs or None, info="")  # None: ?
        steps = min(e.steps_per_epoch, e.total_steps) if e.epochs else e.steps_per_epoch
        self._step_task = self.progress.add_task("step", total=steps or None, info="")

    def _steps(self, b: StepBatch) -> None:
        assert self.progress is not None and self.started is not None
        losses = b.scalar("loss")
        for loss in losses:
            if math.isfinite(loss):
                self._loss_ema = loss if math.isnan(self._loss_ema) else 0.9 * self._loss_ema + 0.1 * loss
        last = float(losses[-1])  # a diverged loss is shown as such, not as the EMA of the finite ones
        shown = (
            f"{self._loss_ema:.4f}"
            if math.isfinite(last)
            else f"[bold red]{'nan' if last != last else 'inf'}[/]"
        )
        own = self.started.source != "preset"
        info = [f"loss {shown}"] if not (own and np.isnan(losses).all()) else []
        acc = b.scalar("acc")
        if own and np.isfinite(acc).any():  # a loop's own accuracy, when it logs one
            info.append(f"acc {float(acc[np.isfinite(acc)][-1]):.2%}")
        sps = b.scalar("samples_per_s")
        if np.isfinite(sps).any():  # a user loop measures it only when it gave its batch size
            info.append(f"{float(np.nanmedian(sps)):,.0f} samples/s")
        spe = self.started.steps_per_epoch
        # the steps of this epoch: from the epoch's index when the epoch's length is known, else
        # counted from the step the last epoch ended at
        done = int(b.steps[-1]) + 1 - (int(b.epochs[-1]) * spe if spe else self._epoch_start)
        self.progress.update(self._step_task, completed=done, info="  ".join(info))

    def _epoch(self, e: EpochEnd) -> None:
        self.last_epoch = e
        assert self.started is not None
        own = self.started.source != "preset"
        self._print(epoch_line(e, self.started.epochs, self._width(), own=own))
        self._epoch_start = e.step
        if self.progress is not None:
            self.progress.update(self._epoch_task, completed=e.epoch + 1)
            spe, total = self.started.steps_per_epoch, self.started.total_steps
            left = total - e.step if total else spe or 1  # e.step: steps taken so far
            last = self.started.epochs and e.epoch + 1 >= self.started.epochs
            if last or left <= 0:  # no next epoch: no empty step bar
                self.progress.update(self._step_task, visible=False)
            else:
                self.progress.reset(self._step_task, total=min(spe, left) if spe else None)

    def _width(self) -> int:
        return (self.progress.console if self.progress else self.console).width

    def _finish(self, f: RunFinished) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        c = self.console
        if self.started is None and is_bad_input(f.error):
            return  # the command says it once, as bad input (exit 2)
        if self.started is not None and (self.last_epoch is not None or self.test is not None):
            c.print(final_table([final_row(self.started, self.last_epoch, self.test)]))
            for label, ev in (("last epoch", self.last_epoch), ("test", self.test)):
                if ev is not None and ev.metrics:  # a user loop's own metrics, after the standard table
                    c.print(f"{label}: {_metrics_text(ev.metrics)}", highlight=False, soft_wrap=True)
        style = {"completed": "green", "stopped": "yellow", "failed": "bold red"}.get(f.status, "")
        c.print(f"run [{style}]{f.status}[/] after {f.step} steps", highlight=False)
        if f.error:
            c.print(f"[bold red]error:[/] {escape(f.error)}", highlight=False)
        if self.started is not None and self.started.out_path:
            c.print(f"run file: {escape(str(self.started.out_path))}", highlight=False, soft_wrap=True)
        if f.checkpoint:
            c.print(f"checkpoint: {escape(str(f.checkpoint))}", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def start_lines(e: RunStarted) -> list[str]:
    """The lines that open a headless run: what it trains, on what, for how long. What a user's loop
    did not say (0 or "": unknown) is left out rather than printed as 0."""
    model = ", ".join(
        [escape(e.model_name)]
        + ([f"{fmt_count(e.params)} params"] if e.params or e.source == "preset" else [])
        + ([f"{fmt_count(e.flops)} FLOPs/sample"] if e.flops or e.source == "preset" else [])
    )
    lines = [f"[bold]{escape(e.run_name)}[/]: {model}"]
    if e.source == "preset":
        lines.append(
            f"{escape(e.dataset)} ({e.num_classes} classes), device {escape(e.device)}, batch {e.batch_size}"
        )
        lines.append(f"{e.epochs} epochs x {e.steps_per_epoch} steps")
    else:
        classes = f"{e.num_classes} classes" if e.num_classes else ""
        data = f"{escape(e.dataset)} ({classes})" if e.dataset and classes else escape(e.dataset) or classes
        parts = [data] if data else []
        parts += [f"device {escape(e.device)}"] if e.device else []
        parts += [f"batch {e.batch_size}"] if e.batch_size else []
        lines += [", ".join(parts)] if parts else []
        if e.epochs and e.steps_per_epoch:
            lines.append(f"{e.epochs} epochs x {e.steps_per_epoch} steps")
        elif e.epochs or e.steps_per_epoch:
            lines.append(f"{e.epochs} epochs" if e.epochs else f"{e.steps_per_epoch} steps per epoch")
    if e.max_steps:
        lines[-1] += f", capped at {e.max_steps} steps"
    return lines


def final_row(started: RunStarted, e: EpochEnd | None, test: TestResult | None) -> dict[str, Any]:
    """The final table's row of a run. A user loop's NaN means "not logged" and shows as missing; a
    preset's NaN is a diverged result and shows as such."""
    own = started.source != "preset"

    def v(x: float | None) -> float | None:
        return None if x is None or (own and math.isnan(x)) else x

    return {
        "run": started.run_name,
        "train_loss": v(e.train_loss) if e else None,
        "val_loss": v(e.val_loss) if e else None,
        "train_acc": v(e.train_acc) if e else None,
        "val_acc": v(e.val_acc) if e else None,
        "test_loss": v(test.loss) if test else None,
        "test_acc": v(test.acc) if test else None,
        "params": started.params or None,
    }


def _metrics_text(metrics: dict[str, float]) -> str:
    return "  ".join(f"{escape(k)} {v:.4g}" for k, v in metrics.items())


def epoch_line(e: EpochEnd, epochs: int, width: int = 80, own: bool = False) -> str:
    """The headless line of one epoch, in words when that fits ``width``, else in a compact form that
    fits 80 columns even at ``epoch 100/100`` with accuracies of 100%: never wrapped, so the epoch,
    its numbers and its time stay on one line (tests/faults/test_first_contact.py). ``own``: a user
    loop's epoch, which shows what it logged (its own keys too) and leaves out what it did not."""
    if own:
        return _own_epoch_line(e, epochs)
    head = f"epoch {e.epoch + 1}/{epochs}"
    tail = f"lr {e.lr:.2e}  {e.seconds:.1f} s"
    words = (
        f"{head}  train loss {_loss(e.train_loss)} acc {e.train_acc:.2%}"
        f"  val loss {_loss(e.val_loss)} acc {e.val_acc:.2%}  {tail}"
    )
    if len(words) <= width:
        return words
    return f"{head}  train {_loss(e.train_loss)} {e.train_acc:.2%}  val {_loss(e.val_loss)} {e.val_acc:.2%}  {tail}"


def _own_epoch_line(e: EpochEnd, epochs: int) -> str:
    """A user loop's epoch: ``epoch 2/3  train loss 0.93 acc 58.00%  val loss ...  val_error 0.42``, each
    part only when logged (finite), its own keys last."""
    parts = [f"epoch {e.epoch + 1}" + (f"/{epochs}" if epochs else "")]
    for split, loss, acc in (("train", e.train_loss, e.train_acc), ("val", e.val_loss, e.val_acc)):
        got = [f"loss {_loss(loss)}"] if not math.isnan(loss) else []
        got += [f"acc {acc:.2%}"] if not math.isnan(acc) else []
        if got:
            parts.append(f"{split} {' '.join(got)}")
    if e.metrics:
        parts.append(_metrics_text(e.metrics))
    if not math.isnan(e.lr):
        parts.append(f"lr {e.lr:.2e}")
    if not math.isnan(e.seconds):
        parts.append(f"{e.seconds:.1f} s")
    return "  ".join(parts)


def _loss(v: float) -> str:
    """A loss in at most 9 characters: 4 decimals for usual values, 3 significant digits otherwise."""
    return f"{v:.4f}" if not math.isfinite(v) or abs(v) < 1000 else f"{v:.3g}"


class QueueSink:
    """The live stream to a dashboard in another process. Never blocks the training loop.

    ``put_nowait`` only: when the queue is full (the UI is slow or frozen) events wait here; step
    rows are merged and thinned (every other row dropped, counted in ``dropped_steps``) so memory
    stays bounded, while run-level events (start, epochs, alerts, finish) are kept and sent in order
    once there is room. The run file, a different sink, still gets every row.
    """

    def __init__(self, q: Any, max_pending_rows: int = 20_000) -> None:
        self.q = q
        self.max_pending_rows = max_pending_rows
        self.pending: list[Event] = []
        self.dropped = 0

    def emit(self, event: Event) -> None:
        if isinstance(event, StepBatch) and self.pending and isinstance(self.pending[-1], StepBatch):
            self.pending[-1] = _thin(_merge(self.pending[-1], event), self.max_pending_rows, self)
        else:
            self.pending.append(event)
        self._try_send()

    def _try_send(self) -> bool:
        if not self.pending:
            return True
        batch = EventBatch(self.pending, dropped_steps=self.dropped)
        try:
            self.q.put_nowait(batch)
        except queue.Full:
            return False
        self.pending = []
        self.dropped = 0
        return True

    def close(self) -> None:
        """Give the last events (RunFinished above all) up to 2 s to get through."""
        deadline = time.monotonic() + 2.0
        while not self._try_send() and time.monotonic() < deadline:
            time.sleep(0.02)


def _merge(a: StepBatch, b: StepBatch) -> StepBatch:
    """``a`` then ``b`` as one batch: the union of their scalar names (``a``'s order, then ``b``'s new
    ones; NaN where a batch lacks a column) and of their probe blocks."""
    if a.scalar_names == b.scalar_names:
        names, scalars = a.scalar_names, np.concatenate([a.scalars, b.scalars])
    else:
        names = a.scalar_names + tuple(n for n in b.scalar_names if n not in a.scalar_names)
        scalars = np.full((len(a) + len(b), len(names)), np.nan)
        scalars[: len(a), : len(a.scalar_names)] = a.scalars
        scalars[len(a) :, [names.index(n) for n in b.scalar_names]] = b.scalars
    blocks = dict(a.blocks)
    for name, blk in b.blocks.items():
        old = blocks.get(name)
        if old is not None and len(old) and len(blk):
            blk = ProbeBlock(
                name, np.concatenate([old.steps, blk.steps]), np.concatenate([old.values, blk.values])
            )
        elif old is not None and len(old):
            blk = old
        blocks[name] = blk
    return StepBatch(
        np.concatenate([a.steps, b.steps]),
        np.concatenate([a.epochs, b.epochs]),
        scalars,
        names,
        blocks,
        b.time,
    )


def _thin(b: StepBatch, max_rows: int, sink: QueueSink) -> StepBatch:
    """Every other row of ``b`` (and the newest), with the probe rows of the steps kept."""
    if len(b) <= max_rows:
        return b
    keep = np.zeros(len(b), dtype=bool)
    keep[::2] = True
    keep[-1] = True  # the newest row always survives: the UI shows "latest"
    kept = b.steps[keep]
    sink.dropped += int((~keep).sum())
    blocks = {}
    for name, blk in b.blocks.items():
        pkeep = np.isin(blk.steps, kept)
        blocks[name] = ProbeBlock(name, blk.steps[pkeep], blk.values[pkeep])
    return StepBatch(b.steps[keep], b.epochs[keep], b.scalars[keep], b.scalar_names, blocks, b.time)
