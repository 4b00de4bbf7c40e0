"""What the per-layer figures share: which layers and modules a report keeps (``--exclude``), which
probe rows stand for an epoch or a step, file names, and saving one figure in the chosen formats.

Matplotlib is imported inside the functions (it is the optional extra ``tuitrain[report]``) and only
through :class:`matplotlib.figure.Figure`, never pyplot: no global figure state, no GUI backend, so
figures draw the same on a headless machine as anywhere."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tuitrain.report.figure import Made, Options, ReportRun, Skipped


def excluded(name: str, kind: str, patterns: tuple[str, ...]) -> bool:
    """A layer (or module) is left out when a pattern matches its name or its kind (``weight``,
    ``bias``, ``norm`` for layers; the class name such as ``ReLU`` for modules), so ``*.bias``
    and ``bias`` both drop the biases."""
    return any(fnmatch.fnmatchcase(name, p) or fnmatchcase_ci(kind, p) for p in patterns)


def fnmatchcase_ci(kind: str, pattern: str) -> bool:
    return bool(kind) and fnmatch.fnmatchcase(kind.lower(), pattern.lower())


def kept_layers(rf: Any, opts: Options) -> list[int]:
    """Column indices (rows of /layers) of the layers the figure shows, in model order."""
    return [i for i, li in enumerate(rf.layers) if not excluded(li.name, li.kind, opts.exclude)]


def kept_modules(rf: Any, opts: Options) -> list[int]:
    """Column indices (rows of /modules) of the probed modules the figure shows, input side first."""
    return [i for i, m in enumerate(rf.modules) if not excluded(m.name, m.type, opts.exclude)]


def thin_rows(n: int, most: int = 1200) -> slice:
    """A strided row slice: a million-row probe is drawn from at most ``most`` rows (one read)."""
    return slice(0, n, max(1, -(-n // most)))


def grad_why(rf: Any) -> str | None:
    """Why a run has no gradient data to draw, or None when it has some."""
    if not rf.has_probe("grad"):
        return "the run has no gradient probe (a loop that never called run.watch)"
    if rf.probe_rows("grad") == 0:
        return "the run has no gradient probe rows yet"
    return None


def epoch_rows(rf: Any, chosen: tuple[int, ...] | None) -> list[tuple[int, int]]:
    """(epoch, grad probe row) for each chosen epoch the file has (default: first, middle, last): the
    probe row nearest the epoch's last step (``/epochs/step`` counts steps done, so step - 1)."""
    ep = rf.epochs()
    epochs = [int(e) for e in ep["epoch"]]
    if not epochs or rf.probe_rows("grad") == 0:
        return []
    if chosen is None:
        picks = sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]})
    else:
        picks = [e for e in dict.fromkeys(chosen) if e in epochs]
    steps = rf.probe_steps()
    out = []
    for e in picks:
        last = int(ep["step"][epochs.index(e)]) - 1
        out.append((e, int(np.argmin(np.abs(steps.astype(np.int64) - last)))))
    return out


def safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save(fig: Any, out: Path, stem: str, opts: Options) -> list[Path]:
    """Write ``<stem>.png`` (always: the README shows it) and ``<stem>.<fmt>`` when another format was
    chosen; returns the paths, the PNG first."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png"]
    if opts.fmt != "png":
        paths.append(out / f"{stem}.{opts.fmt}")
    for p in paths:
        fig.savefig(p, dpi=opts.dpi, format=p.suffix[1:])
    return paths


def skipped_why(skipped: dict[str, str]) -> str:
    """Why a figure drew no run: the one reason they share, or each run's."""
    whys = sorted(set(skipped.values()))
    return whys[0] if len(whys) == 1 else "; ".join(f"{k}: {v}" for k, v in skipped.items())


def per_run_facts(
    name: str,
    title: str,
    runs: list[ReportRun],
    out: Path,
    opts: Options,
    draw: Callable[[ReportRun, Options], tuple[Any, dict[str, Any]] | str],
) -> Made | Skipped:
    """One file per run, ``<name>-<run>.png``: ``draw(run, opts) -> (figure, facts) | why``. Facts as
    the draw says them for one run; for several, each fact by run name (``{"tiles": {"a": 64}}``), and
    ``skipped`` naming the runs left out and why. Skipped when no run could be drawn."""
    paths: list[Path] = []
    got: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    used: set[str] = set()
    for r in runs:
        res = draw(r, opts)
        if isinstance(res, str):
            skipped[r.name] = res
            continue
        fig, facts = res
        stem = f"{name}-{safe_stem(r.name)}"
        while stem in used:
            stem += "_"
        used.add(stem)
        paths += save(fig, out, stem, opts)
        got[r.name] = facts
    if not got:
        return Skipped(name, skipped_why(skipped))
    paths.sort(key=lambda p: p.suffix != ".png")
    if len(runs) == 1:
        facts = dict(next(iter(got.values())))
    else:
        keys = dict.fromkeys(k for f in got.values() for k in f)
        facts = {k: {run: f[k] for run, f in got.items() if k in f} for k in keys}
    if skipped:
        facts["skipped"] = skipped
    return Made(name, paths, title, facts)


def per_run(
    name: str, title: str, runs: list[ReportRun], out: Path, opts: Options, draw: Any, key: str
) -> Made | Skipped:
    """:func:`per_run_facts` for a draw that gives one fact, ``(figure, fact) | why``, named ``key``:
    ``{key: fact}`` for one run, ``{key: {run name: fact}}`` for several."""

    def one(r: ReportRun, o: Options) -> tuple[Any, dict[str, Any]] | str:
        res = draw(r, o)
        return res if isinstance(res, str) else (res[0], {key: res[1]})

    return per_run_facts(name, title, runs, out, opts, one)


def label_ticks(ax: Any, axis: str, labels: list[str], most: int = 60) -> None:
    """Tick labels for every row or column, or every k-th when there are more than ``most``."""
    k = max(1, -(-len(labels) // most))
    ticks = list(range(0, len(labels), k))
    size = 7 if len(labels) <= 30 else 5
    if axis == "y":
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=size)
    else:
        ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=size, rotation=90)
