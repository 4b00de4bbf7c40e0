"""``tuitrain replay --print``: the comparison without a TUI, on stdout. The final table (rich), then a
plotext chart of the chosen metric with one series per run; plain text when stdout is not a terminal
(a pipe, a file, CI), distinct markers per run then instead of colours. No torch, no textual.

Long runs are read lazily: a per-step metric is read with a stride (at most ``8 * width`` rows) and
averaged per chart column; epoch metrics come from the small /epochs table.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
from rich.console import Console
from rich.measure import Measurement
from rich.text import Text

from tuitrain.runfile.reader import RunFile
from tuitrain.ui.downsample import bucket_mean
from tuitrain.ui.replay.compare import (
    EPOCH_METRICS,
    LABELS,
    PERCENT,
    file_divergence,
    hex_rgb,
    own_metric,
    rich_config_table,
    rich_table,
    rows_from_files,
    unique_names,
)

MARKERS = ("•", "x", "+", "o", "*", "#", "@", "%", "&", "=")  # without colour, markers tell runs apart


def series(rf: RunFile, metric: str, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of ``metric`` for one run, at most ``columns`` points (means per column); finite only."""
    if metric in EPOCH_METRICS:
        ep = rf.epochs()
        x, y = ep["step"].astype(np.float64), ep[metric].astype(np.float64)
    elif metric not in rf.step_scalars:  # a user loop's key in /metrics (a later step key, an epoch one)
        steps, values = own_metric(rf, metric)
        x, y = steps.astype(np.float64), values.astype(np.float64)
        if x.shape[0] > columns:
            both = bucket_mean(np.stack([x, y], axis=1), columns)
            x, y = both[:, 0], both[:, 1]
    else:
        n = rf.n_steps
        stride = max(1, -(-n // (8 * columns)))
        x = rf.scalar("step", 0, n, stride).astype(np.float64)
        y = rf.scalar(metric, 0, n, stride).astype(np.float64)
        if x.shape[0] > columns:
            both = bucket_mean(np.stack([x, y], axis=1), columns)
            x, y = both[:, 0], both[:, 1]
    ok = np.isfinite(y)
    scale = 100.0 if metric in PERCENT else 1.0
    return x[ok], y[ok] * scale


def chart(
    runs: Sequence[RunFile],
    names: Sequence[str],
    colors: Sequence[str],
    metric: str,
    width: int,
    height: int,
    color: bool,
) -> str:
    """The plotext chart of ``metric`` for every run, as text (ANSI colours only with ``color``)."""
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("pro" if color else "clear")
    drawn = 0
    last = 0.0
    for i, (rf, name) in enumerate(zip(runs, names, strict=True)):
        x, y = series(rf, metric, max(8, width - 12))
        bad = file_divergence(rf, metric)
        if bad is not None:  # a vertical line where the values stopped being finite (drawn: none)
            plt.vline(bad, hex_rgb(colors[i]) if color else "default")
            n = rf.n_steps
            last = max(last, float(rf.scalar("step", n - 1, n)[0]) if n else 0.0, float(bad))
        if not x.size:
            continue
        kw = (
            {"color": hex_rgb(colors[i]), "marker": "braille"}
            if color
            else {"marker": MARKERS[i % len(MARKERS)]}
        )
        if (metric in EPOCH_METRICS or metric in rf.metrics("epoch")) and color:
            kw["marker"] = "●" if x.size == 1 else "braille"
        plt.plot(x.tolist(), y.tolist(), label=name, **kw)
        drawn += 1
    if not drawn:
        return f"(no finite {metric} values to plot)"
    if last:  # the non-finite stretch stays in view, so its line is
        plt.xlim(None, last)
    plt.title(f"{LABELS.get(metric, metric)} · {len(runs)} run{'s' if len(runs) != 1 else ''}")
    plt.xlabel("step")
    text = plt.build()
    return text if color else plt.uncolorize(text)


def wait_finished(runs: Sequence[RunFile], poll: float = 0.5, timeout: float = math.inf) -> None:
    """``--follow --print``: wait until no run is still being written (finished, stopped or dead)."""
    end = time.monotonic() + timeout
    while any(rf.is_live for rf in runs) and time.monotonic() < end:
        time.sleep(poll)
        for rf in runs:
            rf.refresh()


def nonfinite_notes(runs: Sequence[RunFile], names: Sequence[str], metric: str) -> list[str]:
    """One line per run whose ``metric`` went non-finite: from which step (the chart's vertical line)."""
    notes = []
    for rf, name in zip(runs, names, strict=True):
        bad = file_divergence(rf, metric)
        if bad is not None:
            notes.append(
                f"{name}: {metric} is not finite (nan/inf) from step {bad:,}: │ in the chart, not drawn"
            )
    return notes


def print_report(
    runs: Sequence[RunFile],
    metric: str,
    *,
    console: Console | None = None,
    width: int | None = None,
    height: int = 20,
) -> None:
    """Print the final table and the chart of ``metric`` for ``runs`` (open run files)."""
    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:  # a pipe or a file: wide enough for the table, whatever COLUMNS says
            console = Console(highlight=False, width=max(console.width, 120))
    color = console.is_terminal and not console.no_color
    names = unique_names([rf.run_name for rf in runs], [str(rf.path) for rf in runs])
    rows, keys = rows_from_files(runs, names)
    title = "Final metrics" if len(runs) == 1 else f"Final metrics of {len(runs)} runs"
    table = rich_table(rows, keys, title=title)
    if keys and Measurement.get(console, console.options.update_width(10**6), table).maximum > console.width:
        console.print(rich_table(rows, [], title=title))  # too wide: the differing keys get their own table
        console.print(rich_config_table(rows, keys))
    else:
        console.print(table)
    for rf, name in zip(runs, names, strict=True):
        if rf.incomplete:
            console.print(
                f"{name}: incomplete: the writing process is gone and never finished {rf.path} "
                f"({rf.n_steps:,} steps)",
                markup=False,
                soft_wrap=True,
            )
        elif rf.is_live:
            console.print(
                f"{name}: still running ({rf.n_steps:,} steps so far; --follow waits for the end)",
                markup=False,
                soft_wrap=True,
            )
        elif rf.status == "failed" and rf.error:
            console.print(f"{name}: failed: {rf.error}", markup=False, soft_wrap=True)
    w = width or min(console.width, 120)
    text = chart(runs, names, [r.color for r in rows], metric, w, height, color)
    if color:
        console.print(Text.from_ansi(text))
    else:
        console.file.write(text + "\n")
    for note in nonfinite_notes(runs, names, metric):
        console.print(note, style="bold red" if color else "", markup=False, soft_wrap=True)
