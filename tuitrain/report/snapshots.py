"""The report's figures from the run file's snapshots (``/snapshots``, issue 12): the first layer's
kernels (000 s4.2), a Mixer's token-mixing weights (000 s5.2), the decision boundary of a 2-D run with
its test points (002) and a grid of misclassified test samples. Every picture is made by
:mod:`tuitrain.view.images` (the terminal's Images screen draws the same arrays); this module only lays
them out with matplotlib (imported lazily, through :func:`~tuitrain.report.layers_util.new_figure`).

A run whose file holds no such snapshot (written before snapshots existed, or with
``monitor.snapshot_mb = 0``, or a model that has no such layer) is skipped with the reason, never drawn
empty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tuitrain.events import BOUNDARY, FIRST_LAYER, MISCLASSIFIED, POINTS, TOKEN_MIXING
from tuitrain.report.figure import Made, Options, ReportRun, Skipped, register
from tuitrain.report.layers_util import new_figure, per_run_facts, save, skipped_why
from tuitrain.view.images import BACKGROUND, CLASS_COLORS, kernel_grid, sample_grid, snapshot_at, token_grid

MAX_SAMPLES = 25  # misclassified tiles per run: a 5x5 grid stays readable with a label under each
WHAT = {
    FIRST_LAYER: "its model has no Conv2d and no Linear on flat images",
    TOKEN_MIXING: "its model is not an MLP-Mixer (no token_mixing_weight)",
    BOUNDARY: "its data is not 2-D",
    MISCLASSIFIED: "it has no test split",
}


def no_snapshot(rf: Any, name: str) -> str | None:
    """Why a run has no row of snapshot ``name`` to draw, or None when it has some."""
    if not rf.snapshot_specs:
        return (
            f"the run file holds no {name} snapshot: written before tuitrain 0.1.0 had snapshots, "
            "or with monitor.snapshot_mb = 0"
        )
    if name not in rf.snapshot_specs:
        return f"the run declares no {name} snapshot ({WHAT.get(name, 'not taken for this run')})"
    if rf.n_snapshot_rows(name) == 0:
        if name == MISCLASSIFIED:
            return "no misclassified test sample stored (no test evaluation yet, or none was wrong)"
        return f"the run file holds no {name} row yet"
    return None


def epoch_label(epoch: int, step: int) -> str:
    return f"init (step {step})" if epoch < 0 else f"epoch {epoch} (step {step})"


def chosen_rows(rows: Any, opts: Options, default: str) -> list[int]:
    """Row indices of a per-epoch snapshot to draw, in the order asked: ``--epochs`` (the last row at or
    before each epoch; -1 is init: epochs are thinned by a stride in long runs), else ``--steps`` (the
    last row at or before each step, as the replay cursor shows it), else the default: ``"ends"`` the
    init and the last row, ``"last"`` the last row only."""
    n = len(rows)
    if opts.epochs is not None:
        ep = np.asarray(rows.epoch, np.int64)
        found = (int(np.searchsorted(ep, int(e), side="right")) - 1 for e in opts.epochs)
        return list(dict.fromkeys(i for i in found if i >= 0))
    if opts.steps is not None:
        found2 = (snapshot_at(rows, int(s)) for s in opts.steps)
        return list(dict.fromkeys(i for i in found2 if i is not None))
    return sorted({0, n - 1}) if default == "ends" else [n - 1]


def none_chosen(rows: Any) -> str:
    ep = [int(e) for e in rows.epoch]
    have = ", ".join("init" if e < 0 else str(e) for e in ep)
    return f"no snapshot row at or before the chosen epochs/steps (rows: {have})"


def _panels(pictures: list[tuple[Any, str]], suptitle: str) -> Any:
    """One figure, one panel per (Picture, title) side by side, pixels drawn as they are."""
    n = len(pictures)
    fig = new_figure(max(4.2, 3.4 * n), 3.9)
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    for ax, (pic, title) in zip(axes, pictures, strict=True):
        ax.imshow(pic.rgb, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(suptitle, fontsize=10)
    return fig


def _draw_grid(r: ReportRun, opts: Options, name: str) -> tuple[Any, dict[str, Any]] | str:
    rf = r.rf
    why = no_snapshot(rf, name)
    if why:
        return why
    rows = rf.snapshot_rows(name)
    meta = rows.spec.meta
    picks = chosen_rows(rows, opts, "ends" if name == FIRST_LAYER else "last")
    if not picks:
        return none_chosen(rows)
    w = rows.arrays["weight"]
    module = meta.get("module", "?")
    pics = []
    for i in picks:
        if name == FIRST_LAYER:
            pic = kernel_grid(np.asarray(w[i], np.float32))
        else:
            pic = token_grid(np.asarray(w[i], np.float32), tuple(meta["grid"]))
        pics.append((pic, f"{r.name} · {module} · {epoch_label(int(rows.epoch[i]), int(rows.step[i]))}"))
    k = pics[0][0].tiles
    if name == FIRST_LAYER:
        total = meta.get("out_total", k)
        what = f"{k} of {total} {meta.get('type', '')} outputs, each kernel min-max normalised"
    else:
        total = meta.get("hidden_total", k)
        gh, gw = meta["grid"]
        what = f"{k} of {total} hidden units on the {gh}x{gw} token grid; blue < 0 < red, per unit"
    title = "first-layer kernels" if name == FIRST_LAYER else "token-mixing weights"
    fig = _panels(pics, f"{r.name}: {title} ({what})")
    return fig, {"tiles": k, "panels": len(pics)}


@register("kernels")
def kernels(runs: list[ReportRun], out: Path, opts: Options) -> Made | Skipped:
    """The first layer's kernels as a grid (000 s4.2: ResNet18's 64 first filters in 8x8), each kernel
    min-max normalised on its own, RGB for 3 input channels; one panel per chosen epoch (default init
    and the last row). Facts: ``tiles`` (kernels per panel), ``panels``."""
    return per_run_facts(
        "kernels", "First-layer kernels", runs, out, opts, lambda r, o: _draw_grid(r, o, FIRST_LAYER)
    )


@register("token_mixing")
def token_mixing(runs: list[ReportRun], out: Path, opts: Options) -> Made | Skipped:
    """An MLP-Mixer's first token-mixing Linear, each hidden unit's weights on the token grid in
    blue-white-red symmetric around 0 (000 s5.2, figures 7-8); default the last row. Facts as kernels'."""
    return per_run_facts(
        "token_mixing",
        "Token-mixing weights (first Mixer block)",
        runs,
        out,
        opts,
        lambda r, o: _draw_grid(r, o, TOKEN_MIXING),
    )


@register("boundary")
def boundary(runs: list[ReportRun], out: Path, opts: Options) -> Made | Skipped:
    """Decision boundaries of the 2-D runs (002): one row of panels per run, one panel per chosen epoch
    (default the last row), the predicted class coloured and faded where unsure, the test points over it
    in their true class's colour, the samples misclassified at the end circled (on the last row's
    panel: they are the final model's). One file, ``boundary.png``. Facts: ``panels``, ``points``
    (test points drawn, over every run, once per run)."""
    from tuitrain.view.images import boundary_picture

    drawn: list[tuple[ReportRun, Any, list[int]]] = []
    skipped: dict[str, str] = {}
    for r in runs:
        why = no_snapshot(r.rf, BOUNDARY)
        rows = None if why else r.rf.snapshot_rows(BOUNDARY)
        picks = [] if rows is None else chosen_rows(rows, opts, "last")
        if rows is not None and not picks:
            why = none_chosen(rows)
        if why:
            skipped[r.name] = why
            continue
        drawn.append((r, rows, picks))
    if not drawn:
        return Skipped("boundary", skipped_why(skipped))
    ncol = max(len(p) for _, _, p in drawn)
    fig = new_figure(max(5.2, 4.4 * ncol), 0.5 + 3.9 * len(drawn))
    axes = fig.subplots(len(drawn), ncol, squeeze=False)
    panels = points = 0
    for (r, rows, picks), ax_row in zip(drawn, axes, strict=True):
        meta = rows.spec.meta
        x0, x1, y0, y1 = (float(v) for v in meta["extent"])
        pts = _latest(r.rf, POINTS)
        wrong = _latest(r.rf, MISCLASSIFIED)
        points += 0 if pts is None else len(pts)
        for ax, i in zip(ax_row, picks, strict=False):
            pic = boundary_picture(rows.arrays["pred"][i], rows.arrays["prob"][i], int(meta["num_classes"]))
            ax.imshow(
                pic.rgb, origin="lower", extent=(x0, x1, y0, y1), interpolation="nearest", aspect="auto"
            )
            if pts is not None:
                lab = np.asarray(pts.arrays["label"], np.int64)
                col = np.asarray(CLASS_COLORS)[lab % len(CLASS_COLORS)]
                xy = pts.arrays["xy"]
                ax.scatter(xy[:, 0], xy[:, 1], c=col, s=6, linewidths=0.3, edgecolors="white", zorder=2)
            title = f"{r.name} · {epoch_label(int(rows.epoch[i]), int(rows.step[i]))}"
            if wrong is not None and "xy" in wrong.arrays and i == len(rows) - 1:
                wxy = wrong.arrays["xy"]
                ax.scatter(
                    wxy[:, 0], wxy[:, 1], s=40, facecolors="none", edgecolors="black", lw=0.8, zorder=3
                )
                title += f" · ○ {len(wrong)}{wrong_of(r.rf, wrong)} misclassified (test)"
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
            ax.set_title(title, fontsize=8)
            ax.tick_params(labelsize=6)
            panels += 1
        for ax in ax_row[len(picks) :]:
            ax.set_axis_off()
    fig.suptitle(
        "Decision boundaries\n(faded: the model is unsure; dots: test samples by true class)", fontsize=9
    )
    facts: dict[str, Any] = {"panels": panels, "points": points}
    if skipped:
        facts["skipped"] = skipped
    return Made("boundary", save(fig, out, "boundary", opts), "Decision boundaries", facts)


def wrong_of(rf: Any, wrong: Any) -> str:
    """`` of N`` with N the test samples wrong in all (round((1 - test acc) * n_total): the file keeps at
    most 64 of them), or "" when the run has no test accuracy."""
    acc = rf.test().get("acc", float("nan"))
    n_total = int(wrong.spec.meta.get("n_total", 0))
    return f" of {round((1 - acc) * n_total)}" if n_total and np.isfinite(acc) else ""


def sample_labels(wrong: Any, n: int) -> list[str]:
    """``"true→pred (p=0.91)"`` for the first n rows, with the dataset's class names when it has them."""
    names = list(wrong.spec.meta.get("class_names") or [])

    def cls(c: int) -> str:
        return names[c] if 0 <= c < len(names) else str(c)

    a = wrong.arrays
    return [
        f"{cls(int(a['true'][i]))}→{cls(int(a['pred'][i]))} (p={float(a['prob'][i]):.2f})" for i in range(n)
    ]


def _latest(rf: Any, name: str) -> Any:
    """A start/end snapshot's rows of its last group (a resumed run's file holds one per part)."""
    rows = rf.snapshot_rows(name) if name in rf.snapshot_specs else None
    return None if rows is None else rows.latest()


def _draw_wrong(r: ReportRun, opts: Options) -> tuple[Any, dict[str, Any]] | str:
    rf = r.rf
    why = no_snapshot(rf, MISCLASSIFIED)
    if why:
        return why
    wrong = _latest(rf, MISCLASSIFIED)
    assert wrong is not None  # no_snapshot said it has rows
    if "image" not in wrong.arrays:
        return "2-D data: the boundary figure circles its misclassified points"
    n = min(MAX_SAMPLES, len(wrong))
    h, w = wrong.arrays["image"].shape[-2:]
    gap = max(2, round(0.3 * h))  # room for a label under each tile (one image: 25 axes cost ~0.6 s)
    pic = sample_grid(wrong.arrays["image"][:n], sample_labels(wrong, n), gap=gap)
    rows, cols = pic.grid
    fig = new_figure(max(4.5, 1.45 * cols), 0.6 + 1.45 * rows)
    ax = fig.subplots()
    H, W = pic.rgb.shape[:2]
    ax.imshow(pic.rgb, interpolation="nearest", extent=(-0.5, W - 0.5, H - 0.5, -0.5))
    for j, label in enumerate(pic.labels):
        y, x = pic.tile_origin(j, gap)
        ax.text(
            x + (w - 1) / 2,
            y + h - 0.5 + gap / 2,
            label,
            ha="center",
            va="center",
            fontsize=6.5,
            color="white",
        )
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5 + gap, -0.5)
    ax.set_facecolor(BACKGROUND)
    ax.set_xticks([])
    ax.set_yticks([])
    of = wrong_of(rf, wrong)
    fig.suptitle(
        f"{r.name}: misclassified test samples (first {n}{of} wrong; true→pred, p of pred)", fontsize=9
    )
    return fig, {"tiles": n}


@register("misclassified")
def misclassified(runs: list[ReportRun], out: Path, opts: Options) -> Made | Skipped:
    """Per run with image data, the first (up to 25) misclassified test samples as stored, with
    ``true→pred (p=0.91)`` under each (the dataset's class names when it has them). 2-D runs are left to
    the boundary figure. Facts: ``tiles``."""
    return per_run_facts("misclassified", "Misclassified test samples", runs, out, opts, _draw_wrong)
