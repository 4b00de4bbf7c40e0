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
from tuitrain.events import (
    Alert,
    EpochEnd,
    Event,
    EventBatch,
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
    whole), and each line is made to fit 80 columns in the first place. The progress bars are
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

    def _start(self, e: RunStarted) -> None:
        self.started = e
        c = self.console
        for line in (
            f"[bold]{escape(e.run_name)}[/]: {escape(e.model_name)}, {fmt_count(e.params)} params, "
            f"{fmt_count(e.flops)} FLOPs/sample",
            f"{escape(e.dataset)} ({e.num_classes} classes), device {escape(e.device)}, batch {e.batch_size}",
            f"{e.epochs} epochs x {e.steps_per_epoch} steps"
            + (f", capped at {e.max_steps} steps" if e.max_steps else ""),
        ):
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
        self._epoch_task = self.progress.add_task("epoch", total=e.epochs, info="")
        steps = min(e.steps_per_epoch, e.total_steps)
        self._step_task = self.progress.add_task("step", total=steps, info="")

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
        sps = b.scalar("samples_per_s")
        sps = float(np.nanmedian(sps)) if np.isfinite(sps).any() else math.nan
        done = int(b.steps[-1]) + 1 - int(b.epochs[-1]) * self.started.steps_per_epoch
        self.progress.update(self._step_task, completed=done, info=f"loss {shown}  {sps:,.0f} samples/s")

    def _epoch(self, e: EpochEnd) -> None:
        self.last_epoch = e
        assert self.started is not None
        self._print(epoch_line(e, self.started.epochs, self._width()))
        if self.progress is not None:
            self.progress.update(self._epoch_task, completed=e.epoch + 1)
            left = self.started.total_steps - e.step  # e.step: steps taken so far
            if e.epoch + 1 >= self.started.epochs or left <= 0:  # no next epoch: no empty step bar
                self.progress.update(self._step_task, visible=False)
            else:
                self.progress.reset(self._step_task, total=min(self.started.steps_per_epoch, left))

    def _width(self) -> int:
        return (self.progress.console if self.progress else self.console).width

    def _finish(self, f: RunFinished) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        c = self.console
        if self.started is None and is_bad_input(f.error):
            return  # the command says it once, as bad input (exit 2)
        if self.last_epoch is not None:
            e = self.last_epoch
            c.print(
                final_table(
                    [
                        {
                            "run": self.started.run_name,
                            "train_loss": e.train_loss,
                            "val_loss": e.val_loss,
                            "train_acc": e.train_acc,
                            "val_acc": e.val_acc,
                            "test_loss": self.test.loss if self.test else None,
                            "test_acc": self.test.acc if self.test else None,
                            "params": self.started.params,
                        }
                    ]
                )
            )
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


def epoch_line(e: EpochEnd, epochs: int, width: int = 80) -> str:
    """The headless line of one epoch, in words when that fits ``width``, else in a compact form that
    fits 80 columns even at ``epoch 100/100`` with accuracies of 100%: never wrapped, so the epoch,
    its numbers and its time stay on one line (tests/faults/test_first_contact.py)."""
    head = f"epoch {e.epoch + 1}/{epochs}"
    tail = f"lr {e.lr:.2e}  {e.seconds:.1f} s"
    words = (
        f"{head}  train loss {_loss(e.train_loss)} acc {e.train_acc:.2%}"
        f"  val loss {_loss(e.val_loss)} acc {e.val_acc:.2%}  {tail}"
    )
    if len(words) <= width:
        return words
    return f"{head}  train {_loss(e.train_loss)} {e.train_acc:.2%}  val {_loss(e.val_loss)} {e.val_acc:.2%}  {tail}"


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
    return StepBatch.with_grad(
        steps=np.concatenate([a.steps, b.steps]),
        epochs=np.concatenate([a.epochs, b.epochs]),
        scalars=np.concatenate([a.scalars, b.scalars]),
        probe_steps=np.concatenate([a.probe_steps, b.probe_steps]),
        probes=np.concatenate([a.probes, b.probes]),
        time=b.time,
    )


def _thin(b: StepBatch, max_rows: int, sink: QueueSink) -> StepBatch:
    if len(b) <= max_rows:
        return b
    keep = np.zeros(len(b), dtype=bool)
    keep[::2] = True
    keep[-1] = True  # the newest row always survives: the UI shows "latest"
    pkeep = np.isin(b.probe_steps, b.steps[keep])
    sink.dropped += int((~keep).sum())
    return StepBatch.with_grad(
        b.steps[keep], b.epochs[keep], b.scalars[keep], b.probe_steps[pkeep], b.probes[pkeep], b.time
    )
