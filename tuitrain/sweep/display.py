"""What a sweep shows without its dashboard: one rich row per variant while it runs (name, status,
epoch and step of its run file, latest loss and accuracy, read from the files ~1/s), then the final
table through the one formatter ``replay --print`` uses (:func:`tuitrain.view.file_rows.rows_from_files`
and :func:`tuitrain.view.table.rich_table`), with the Status column and why a variant failed.

In a terminal the rows are a live table redrawn in place; elsewhere (a pipe, a file, CI) one line per
status change, so a log reads as a story. No torch, no textual.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from tuitrain.sweep.manifest import Manifest, Variant, variant_path

REFRESH_S = 1.0
ERROR_CELL = 60  # characters of a failed variant's error in its row; the whole of it is printed below


def _latest(path: Path) -> dict[str, Any]:
    """The run file's status, epoch, step and latest loss/acc; {} while it cannot be read yet."""
    from tuitrain.runfile.reader import RunFileError, open_run

    if not path.is_file():
        return {}
    try:
        with open_run(path) as rf:
            n = rf.n_steps
            out: dict[str, Any] = {
                "status": "incomplete" if rf.incomplete else rf.status,
                "epoch": rf.n_epochs,
                "epochs": rf.epochs_planned,
                "step": int(rf.scalar("step", n - 1, n)[0]) + 1 if n else 0,
                "steps": rf.total_steps,
            }
            for key in ("loss", "acc"):
                out[key] = float(rf.scalar(key, n - 1, n)[0]) if n and key in rf.step_scalars else None
            return out
    except (RunFileError, OSError, KeyError, ValueError, IndexError):
        return {}


def _num(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{100 * value:.1f}%" if percent else f"{value:.4g}"


class SweepDisplay:
    """The headless view of a running sweep; the runner calls :meth:`changed` and :meth:`tick`."""

    def __init__(self, manifest: Manifest, directory: Path, console: Console | None = None) -> None:
        self.manifest = manifest
        self.directory = directory
        self.console = console or Console(highlight=False)
        self.live: Live | None = None
        self._last = 0.0

    def __enter__(self) -> SweepDisplay:
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, auto_refresh=False, transient=False)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            with contextlib.suppress(Exception):
                self.live.update(self._table(), refresh=True)
            self.live.stop()
            self.live = None

    def _row(self, v: Variant) -> list[str]:
        got = _latest(variant_path(v, self.directory))
        status = got.get("status") or v.status
        epoch = f"{got['epoch']}/{got['epochs']}" if "epoch" in got else "-"
        step = f"{got['step']:,}/{got['steps']:,}" if got.get("steps") else f"{got.get('step', 0):,}"
        return [v.name, status, epoch, step, _num(got.get("loss")), _num(got.get("acc"), percent=True)]

    def _table(self) -> Table:
        done = sum(v.status in ("completed", "stopped", "failed") for v in self.manifest.variants)
        table = Table(title=f"sweep {self.manifest.name}: {done}/{len(self.manifest.variants)} done")
        for col, just in (
            ("Variant", "left"), ("Status", "left"), ("Epoch", "right"), ("Step", "right"),
            ("Loss", "right"), ("Acc", "right"),
        ):  # fmt: skip
            table.add_column(col, justify=just, no_wrap=col == "Variant")  # type: ignore[arg-type]
        for v in self.manifest.variants:
            table.add_row(*self._row(v))
        return table

    def changed(self, v: Variant) -> None:
        """A variant's status changed: a line outside a terminal, a redraw in one."""
        if self.live is not None:
            self.tick(force=True)
            return
        what = {"starting": "started", "stopped": "stopped"}.get(v.status, v.status)
        tail = f": {v.error}" if v.error and v.status in ("failed",) else ""
        if v.status in ("completed", "stopped", "failed"):
            got = _latest(variant_path(v, self.directory))
            if got:
                tail = f" after {got['step']:,} steps (loss {_num(got.get('loss'))}){tail}"
        self.console.print(f"{v.name}: {what}{tail}", markup=False, highlight=False, soft_wrap=True)

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.live is None or (not force and now - self._last < REFRESH_S):
            return
        self._last = now
        self.live.update(self._table(), refresh=True)


def print_final(manifest: Manifest, directory: Path, console: Console | None = None) -> None:
    """The final table of the sweep, every variant a row in variant order: those with a run file from
    it (the one formatter), those without (queued, or failed before writing one) with their status."""
    from tuitrain.runfile.reader import RunFileError, open_run
    from tuitrain.view.file_rows import rows_from_files
    from tuitrain.view.table import COLUMNS, FinalRow, rich_table

    console = console or Console(highlight=False)
    if not console.is_terminal:  # a pipe or a file: wide enough for the table, whatever COLUMNS says
        console = Console(highlight=False, width=max(console.width, 120))
    opened: list[tuple[int, Any]] = []
    with contextlib.ExitStack() as stack:
        for i, v in enumerate(manifest.variants):
            path = variant_path(v, directory)
            if path.is_file():
                with contextlib.suppress(RunFileError, OSError):
                    opened.append((i, stack.enter_context(open_run(path))))
        runs = [rf for _, rf in opened]
        file_rows, keys = rows_from_files(runs, [manifest.variants[i].name for i, _ in opened])
        by_index = dict(zip((i for i, _ in opened), file_rows, strict=True))
        rows: list[FinalRow] = []
        notes: list[str] = []
        for i, v in enumerate(manifest.variants):
            row = by_index.get(i) or FinalRow(v.name, dict.fromkeys(COLUMNS), v.status)
            if v.status == "failed" and v.error:
                short = v.error if len(v.error) <= ERROR_CELL else v.error[: ERROR_CELL - 3] + "..."
                row.status = f"failed: {short}"
                if short != v.error:
                    notes.append(f"{v.name}: failed: {v.error}")
            elif v.status != row.status and row.status in ("starting", "running", "paused"):
                row.status = v.status  # the runner's word once the child is gone
            rows.append(row)
        console.print(rich_table(rows, keys, title=f"Final metrics of sweep {manifest.name}"))
    for note in notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    console.print(f"sweep folder: {directory} (tuitrain replay {directory})", markup=False, highlight=False)
