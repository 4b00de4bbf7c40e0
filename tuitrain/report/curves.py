"""The report's curves figure: train loss per step (lightly smoothed), val loss, train acc and val acc
per epoch, one line per run in its colour (the same colours as every other figure and the dashboard).

matplotlib is imported inside the figure function, on the Agg backend (no display needed), so importing
this module costs nothing and a missing matplotlib is one message in the report, not an ImportError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tuitrain.report.figure import Made, Options, ReportRun, Skipped, register

MAX_POINTS = 4000  # per run; a long run's step loss is read thinned (RunFile.scalar's stride)
PANELS: tuple[tuple[str, str], ...] = (
    ("loss", "Train loss (per step)"),
    ("val_loss", "Val loss (per epoch)"),
    ("train_acc", "Train acc % (per epoch)"),
    ("val_acc", "Val acc % (per epoch)"),
)


def smooth(values: np.ndarray) -> np.ndarray:
    """A trailing mean over ~2% of the points: light enough to keep the shape, enough to
    make noisy step losses of several runs readable on one axis. NaN stays NaN where it is."""
    n = len(values)
    w = max(1, n // 50)
    if w == 1:
        return values
    finite = np.where(np.isfinite(values), values, 0.0)
    c = np.cumsum(np.concatenate([[0.0], finite]))
    k = np.cumsum(np.concatenate([[0], np.isfinite(values).astype(int)]))
    idx = np.arange(1, n + 1)
    lo = np.maximum(0, idx - w)
    cnt = k[idx] - k[lo]
    out = np.where(cnt > 0, (c[idx] - c[lo]) / np.maximum(cnt, 1), np.nan)
    return np.where(np.isfinite(values), out, np.nan)


def series(rf: Any, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one panel for one run: steps and smoothed step loss, or epochs and an epoch metric
    (accuracies in percent, as the table prints them)."""
    if key == "loss":
        n = int(rf.n_steps)
        stride = max(1, -(-n // MAX_POINTS))
        if "loss" not in rf.step_scalars or n == 0:
            return np.zeros(0), np.zeros(0)
        x = rf.scalar("step", 0, n, stride).astype(float)
        return x, smooth(rf.scalar("loss", 0, n, stride).astype(float))
    ep = rf.epochs()
    y = np.asarray(ep.get(key, np.zeros(0)), float)
    x = np.asarray(ep.get("epoch", np.arange(len(y))), float)
    return x, (100 * y if key.endswith("acc") else y)


@register("curves")
def curves(runs: list[ReportRun], out: Path, opts: Options) -> Made | Skipped:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data = [[series(r.rf, key) for key, _ in PANELS] for r in runs]
    if not any(len(x) for per_run in data for x, _ in per_run):
        return Skipped("curves", "no run has a step or an epoch recorded yet")
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), layout="constrained")
    for ax, (j, (key, title)) in zip(axes.flat, enumerate(PANELS), strict=True):
        for r, per_run in zip(runs, data, strict=True):
            x, y = per_run[j]
            if len(x):
                ax.plot(x, y, color=r.color, label=r.name, lw=1.4, marker="" if key == "loss" else "o", ms=3)
        ax.set_title(title)
        ax.set_xlabel("step" if key == "loss" else "epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes.flat[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, max(1, len(runs))))
    fig.suptitle("Training curves: " + ", ".join(r.name for r in runs))
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "curves.png"]
    if opts.fmt != "png":
        paths.append(out / f"curves.{opts.fmt}")
    for p in paths:
        fig.savefig(p, dpi=opts.dpi)
    plt.close(fig)
    return Made(
        "curves",
        paths,
        "Training curves (train loss per step; val loss, accuracies per epoch)",
        {"lines": len(runs)},
    )
