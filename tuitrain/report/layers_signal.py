"""The forward-signal figure of a report, from the activation probe (``/probes/act``, issue 11): the
std of each probed module's output from input to output, one line per chosen step, and the fraction of
dead units beside it. A file without the probe (before issue 11, or ``monitor.activations_every = 0``)
has no such figure: the figure says so instead of drawing an empty one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tuitrain.report.figure import Made, Options, ReportRun, Skipped, register
from tuitrain.report.layers_util import kept_modules, label_ticks, new_figure, per_run

ACT = "act"
NO_ACT = (
    "the run has no activation probe (files from before issue 11, or runs with "
    "monitor.activations_every = 0, do not measure the forward signal)"
)


def step_rows(rf: Any, chosen: tuple[int, ...] | None) -> list[tuple[int, int]]:
    """(step, act probe row) for each chosen step: the last probe row at or before it (steps before the
    first probe are left out); default the first, middle and last probe rows."""
    n = rf.probe_rows(ACT)
    if chosen is None:
        rows = sorted({0, n // 2, n - 1})
    else:
        found = (rf.probe_row_at(int(s), ACT) for s in chosen)
        rows = list(dict.fromkeys(r for r in found if r is not None))
    steps = rf.probe_steps(None, ACT)
    return [(int(steps[r]), r) for r in rows]


def _draw_signal(r: ReportRun, opts: Options) -> tuple[Any, int] | str:
    rf = r.rf
    if not rf.has_probe(ACT) or not rf.modules:
        return NO_ACT
    if rf.probe_rows(ACT) == 0:
        return "the run has no activation probe rows yet"
    cols = kept_modules(rf, opts)
    if not cols:
        return "every probed module is excluded (--exclude)"
    picks = step_rows(rf, opts.steps)
    if not picks:
        first = int(rf.probe_steps(slice(0, 1), ACT)[0])
        return f"no activation probe at or before the chosen steps (the first is at step {first})"
    mods = rf.modules
    names = [mods[i].name or "(model)" for i in cols]
    fig = new_figure(max(8.0, 0.14 * len(cols) + 4), 4.8)
    sig, dead = fig.subplots(1, 2, width_ratios=[3, 2])
    from matplotlib import colormaps

    cmap = colormaps["plasma"]
    x = np.arange(len(cols))
    for k, (step, row) in enumerate(picks):
        shade = cmap(0.1 + 0.75 * k / max(1, len(picks) - 1))
        rs = slice(row, row + 1)
        std = np.asarray(rf.probe("std", rs, probe=ACT)[0, cols], np.float64)
        frac = np.asarray(rf.probe("dead_frac", rs, probe=ACT)[0, cols], np.float64)
        sig.plot(x, np.where(std > 0, std, np.nan), "-o", markersize=2, color=shade, label=f"step {step}")
        dead.plot(x, frac, "-o", markersize=2, color=shade, label=f"step {step}")
    sig.set_yscale("log")
    sig.set_ylabel("activation std")
    sig.set_title("forward signal (input to output)", fontsize=9)
    dead.set_ylim(-0.02, 1.02)
    dead.set_ylabel("fraction of dead units")
    dead.set_title("dead units", fontsize=9)
    for ax in (sig, dead):
        label_ticks(ax, "x", names, most=40)
        ax.legend(fontsize=7)
    fig.suptitle(f"{r.name}: forward signal per module")
    return fig, len(cols)


@register("forward_signal")
def forward_signal(runs: list[ReportRun], out: Path, opts: Options) -> Made | Skipped:
    """Activation std per probed module from input to output (log y, one line per chosen step:
    ``Options.steps``, default first, middle, last probe) and dead units beside it. ``--exclude``
    matches a module's name or class (``ReLU``). Facts: ``modules``, the modules drawn."""
    return per_run("forward_signal", "Forward signal per module", runs, out, opts, _draw_signal, "modules")
