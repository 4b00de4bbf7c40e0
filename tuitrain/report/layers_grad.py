"""The gradient figures of a report, from the gradient probe (``/probes/grad``), one file per run:
gradient flow (the layers x time heatmap of log10 mean |grad| with per-layer mean and spread beside it),
mean |grad| bars per layer at chosen epochs, and the update ratio over time against the 1e-3 guide.

Layers are the rows of ``/layers`` in model order (input side first, drawn at the top); ``--exclude``
patterns match a layer's name or its kind (``bias``, ``norm``), so weights and biases are separable."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tuitrain.report.figure import Made, Options, ReportRun, Skipped, register
from tuitrain.report.layers_util import (
    epoch_rows,
    grad_why,
    kept_layers,
    label_ticks,
    new_figure,
    per_run,
    thin_rows,
)

KIND_COLORS = {"weight": "#333333", "bias": "#d62728", "norm": "#1f77b4"}
GUIDE = 1e-3  # the update-ratio rule of thumb: ||dW||/||W|| near 1e-3 per step
MOST_LINES = 12  # more kept layers than this: the updates figure draws percentiles over layers


def _log10(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(a) & (a > 0), np.log10(np.where(a > 0, a, 1.0)), np.nan)


def _positive(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)


def _grad_columns(rf: Any, opts: Options) -> list[int] | str:
    """The gradient probe's kept layer columns, or why a gradient figure cannot be drawn."""
    why = grad_why(rf)
    if why:
        return why
    cols = kept_layers(rf, opts)
    return cols if cols else "every layer is excluded (--exclude)"


def _draw_flow(r: ReportRun, opts: Options) -> tuple[Any, int] | str:
    rf = r.rf
    cols = _grad_columns(rf, opts)
    if isinstance(cols, str):
        return cols
    rows = thin_rows(rf.probe_rows("grad"))
    steps = rf.probe_steps(rows)
    logs = _log10(rf.probe("grad_mean_abs", rows))[:, cols].T  # (layers, time)
    layers = rf.layers
    names = [layers[i].name for i in cols]
    fig = new_figure(11, max(3.0, 0.16 * len(cols) + 1.6))
    heat, side = fig.subplots(1, 2, sharey=True, width_ratios=[4, 1])
    lo, hi = steps[0], steps[-1] if len(steps) > 1 else steps[0] + 1
    im = heat.imshow(
        logs, aspect="auto", interpolation="nearest", cmap="viridis", extent=(lo, hi, len(cols) - 0.5, -0.5)
    )
    fig.colorbar(im, ax=heat, label="log10 mean |grad|", location="left", pad=0.01)
    heat.set_xlabel("step")
    label_ticks(heat, "y", names)
    for tick, i in zip(
        heat.get_yticklabels(), range(0, len(cols), max(1, -(-len(cols) // 60))), strict=False
    ):
        tick.set_color(KIND_COLORS.get(layers[cols[i]].kind, "#333333"))
    y = np.arange(len(cols))
    with np.errstate(all="ignore"), _quiet():
        mean = np.nanmean(logs, axis=1)
        q1, q3 = np.nanpercentile(logs, 25, axis=1), np.nanpercentile(logs, 75, axis=1)
        mn, mx = np.nanmin(logs, axis=1), np.nanmax(logs, axis=1)
    side.hlines(y, mn, mx, color="#bbbbbb", linewidth=1, label="min-max")
    side.hlines(y, q1, q3, color=r.color, linewidth=4, label="IQR")
    side.plot(mean, y, "o", color="black", markersize=3, label="mean")
    side.set_xlabel("log10 mean |grad|")
    side.legend(fontsize=7, loc="lower right")
    side.tick_params(axis="y", left=False)
    fig.suptitle(f"{r.name}: gradient flow (mean |grad| per layer; weights black, biases red, norms blue)")
    return fig, len(cols)


@register("gradient_flow")
def gradient_flow(runs: list[ReportRun], out: Path, opts: Options) -> Made | Skipped:
    """Where the gradient goes: the layers x time heatmap of log10 mean |grad| (000 s7), with each
    layer's mean, IQR and min-max over time beside it. Facts: ``rows``, the layers drawn."""
    return per_run("gradient_flow", "Gradient flow", runs, out, opts, _draw_flow, "rows")


def _draw_bars(r: ReportRun, opts: Options) -> tuple[Any, dict[str, Any]] | str:
    rf = r.rf
    cols = _grad_columns(rf, opts)
    if isinstance(cols, str):
        return cols
    picks = epoch_rows(rf, opts.epochs)
    if not picks:
        have = [int(e) for e in rf.epochs()["epoch"]]
        if not have:
            return "the run has no finished epoch"
        return f"none of the chosen epochs is in the run (it has epochs {have[0]} to {have[-1]})"
    names = [rf.layers[i].name for i in cols]
    fig = new_figure(max(6.0, 0.22 * len(cols) * len(picks) ** 0.5 + 2), 4.5)
    ax = fig.subplots()
    width = 0.8 / len(picks)
    x = np.arange(len(cols))
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for k, (epoch, row) in enumerate(picks):
        step = int(rf.probe_steps(slice(row, row + 1))[0])
        vals = _positive(rf.probe("grad_mean_abs", slice(row, row + 1))[0, cols])
        shade = cmap(0.15 + 0.7 * k / max(1, len(picks) - 1))
        ax.bar(
            x + (k - (len(picks) - 1) / 2) * width,
            vals,
            width,
            color=shade,
            label=f"epoch {epoch} (step {step})",
        )
    ax.set_yscale("log")
    ax.set_ylabel("mean |grad|")
    label_ticks(ax, "x", names)
    ax.legend(fontsize=7)
    ax.set_title(f"{r.name}: mean |grad| per layer at chosen epochs")
    return fig, {"bars": len(cols), "epochs": [e for e, _ in picks]}


@register("grad_bars")
def grad_bars(runs: list[ReportRun], out: Path, opts: Options) -> Made | Skipped:
    """Mean |grad| per layer at chosen epochs (001 figures 2, 3, 5; 003 figure 2), one bar group per
    epoch, from the probe row nearest the epoch's last step. ``Options.epochs`` are the file's epoch
    indices (from 0); default first, middle, last. Facts: ``bars`` (layers) and ``epochs`` drawn."""
    made = per_run("grad_bars", "Mean |grad| per layer at chosen epochs", runs, out, opts, _draw_bars, "f")
    if isinstance(made, Skipped):
        return made
    facts = dict(made.facts)
    f = facts.pop("f")
    if len(runs) == 1:
        facts.update(f)
    else:
        facts["bars"] = {n: v["bars"] for n, v in f.items()}
        facts["epochs"] = {n: v["epochs"] for n, v in f.items()}
    return Made(made.name, made.paths, made.title, facts)


def _draw_updates(r: ReportRun, opts: Options) -> tuple[Any, int] | str:
    rf = r.rf
    cols = _grad_columns(rf, opts)
    if isinstance(cols, str):
        return cols
    rows = thin_rows(rf.probe_rows("grad"))
    steps = rf.probe_steps(rows)
    # Zeros (a layer that did not move: a vanished gradient) count in the percentiles; log y leaves
    # them out of the drawing, and the title says how many layers stood still at the end.
    ratio = np.asarray(rf.probe("update_ratio", rows)[:, cols], np.float64)
    ratio[~np.isfinite(ratio)] = np.nan
    # Where ||W|| is 0 the file stores ||dW|| itself (docs/run-file.md): not a ratio, not drawn.
    ratio[~(np.asarray(rf.probe("weight_norm", rows)[:, cols], np.float64) > 0)] = np.nan
    fig = new_figure(9, 4.5)
    ax = fig.subplots()
    if len(cols) <= MOST_LINES:
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        for k, i in enumerate(cols):
            shade = cmap(0.9 * k / max(1, len(cols) - 1))
            ax.plot(steps, _positive(ratio[:, k]), color=shade, linewidth=1, label=rf.layers[i].name)
        ax.legend(fontsize=6, ncols=2 if len(cols) > 6 else 1)
        lines = len(cols)
    else:
        with np.errstate(all="ignore"), _quiet():
            p10, p50, p90, top = (_positive(np.nanpercentile(ratio, q, axis=1)) for q in (10, 50, 90, 100))
        ax.fill_between(steps, p10, p90, color=r.color, alpha=0.25, label="10th-90th percentile of layers")
        ax.plot(steps, p10, color=r.color, linewidth=0.8)
        ax.plot(steps, p90, color=r.color, linewidth=0.8)
        ax.plot(steps, p50, color=r.color, linewidth=2, label=f"median over {len(cols)} layers")
        ax.plot(steps, top, color="black", linewidth=0.8, linestyle=":", label="largest of the layers")
        ax.legend(fontsize=7)
        lines = 4
    ax.axhline(GUIDE, color="#d62728", linestyle="--", linewidth=1)
    ax.annotate("1e-3", (steps[0], GUIDE), color="#d62728", fontsize=7, va="bottom")
    ax.set_yscale("log")
    ax.set_xlim(steps[0], max(steps[-1], steps[0] + 1))
    ax.set_xlabel("step")
    ax.set_ylabel("update ratio ||dW|| / ||W||")
    still = int(np.sum(ratio[-1] == 0))
    ax.set_title(
        f"{r.name}: update ratio per layer" + (f" ({still} of {len(cols)} did not move)" if still else "")
    )
    return fig, lines


@register("updates")
def updates(runs: list[ReportRun], out: Path, opts: Options) -> Made | Skipped:
    """The per-layer update ratio ||dW||/||W|| over time (003 figure 3) against the 1e-3 guide line:
    one line per kept layer, or the 10th/50th/90th percentile and the largest over layers when there
    are more than :data:`MOST_LINES`. Facts: ``lines``, the data lines drawn (the guide not counted)."""
    return per_run("updates", "Update ratio per layer", runs, out, opts, _draw_updates, "lines")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """All-NaN rows (a layer whose gradient was never finite) warn in nanmean; they are drawn as gaps."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
