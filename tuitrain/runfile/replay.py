"""Views derived from a run file: the live event vocabulary again (so a replay feeds the UI exactly
like a live run) and the one-dict summary behind ``tuitrain info``.

Kept apart from :mod:`tuitrain.runfile.reader` (raw slicing) and :mod:`tuitrain.runfile.opening`
(opening and validation) so that each stays small; :class:`~tuitrain.runfile.reader.RunFile` exposes
these as methods.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from tuitrain.events import (
    PROBE_NAMES,
    STEP_SCALARS,
    Alert,
    EpochEnd,
    Event,
    RunFinished,
    RunStarted,
    StatusChanged,
    StepBatch,
    TestResult,
)
from tuitrain.runfile import schema as S

if TYPE_CHECKING:
    from tuitrain.runfile.reader import RunFile


def search_steps(ds: h5py.Dataset, n: int, value: int, right: bool = False) -> int:
    """``np.searchsorted`` on the first ``n`` rows of a sorted on-disk step column.

    Reads O(log n) single elements instead of the column (8 MB per million steps); steps written by
    tuitrain are consecutive, so the first guess (row = step - first step) almost always hits.
    """
    if n == 0:
        return 0
    first = int(ds[0])
    if value < first or (value == first and not right):
        return 0
    last = int(ds[n - 1])
    if value > last or (value == last and right):
        return n
    guess = value - first + (1 if right else 0)
    if 0 < guess < n and int(ds[guess - 1]) == guess - 1 + first and int(ds[guess]) == guess + first:
        return guess
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        v = int(ds[mid])
        if v < value or (right and v == value):
            lo = mid + 1
        else:
            hi = mid
    return lo


def read_batches(rf: RunFile, start_step: int, stop_step: int) -> StepBatch:
    """Steps ``[start_step, stop_step)`` and the probes taken among them, as one StepBatch."""
    d = rf._d  # the reader's dataset handles: the ones refresh() keeps current under SWMR
    n, m, n_layers = rf.n_steps, rf.n_probe_rows, rf.n_layers
    a = search_steps(d("steps/step"), n, start_step)
    b = max(a, search_steps(d("steps/step"), n, stop_step))
    pa = search_steps(d("probes/step"), m, start_step)
    pb = max(pa, search_steps(d("probes/step"), m, stop_step))
    scalars = np.empty((b - a, len(STEP_SCALARS)), np.float64)
    for j, k in enumerate(STEP_SCALARS):
        scalars[:, j] = d(S.path(S.STEPS, k))[a:b]
    probes = np.empty((pb - pa, len(PROBE_NAMES), n_layers), np.float32)
    for j, k in enumerate(PROBE_NAMES):
        probes[:, j, :] = d(S.path(S.PROBES, k))[pa:pb]
    return StepBatch.with_grad(
        steps=d("steps/step")[a:b].astype(np.int64),
        epochs=d("steps/epoch")[a:b].astype(np.int32),
        scalars=scalars,
        probe_steps=d("probes/step")[pa:pb].astype(np.int64),
        probes=probes,
        time=_batch_time(rf, b),
    )


def _batch_time(rf: RunFile, b: int) -> float:
    """When the last of the rows ``[.., b)`` left the engine (``/steps/time``); files without that
    column, or an empty range, give the run's start time."""
    path = S.path(S.STEPS, "time")
    if b <= 0 or not rf.has(path):
        return rf.started_at
    col = rf._d(path)
    if b > col.shape[0]:  # a live file mid-flush: this column not yet as long as the others
        return rf.started_at
    return float(col[b - 1])


def run_started(rf: RunFile) -> RunStarted:
    return RunStarted(
        run_name=rf.run_name,
        config_toml=rf.config_toml,
        model_name=rf.model_name,
        dataset=rf.dataset,
        device=rf.device,
        params=rf.params,
        layers=rf.layers,
        flops=rf.flops,
        module_summary=rf.module_summary,
        epochs=rf.epochs_planned,
        steps_per_epoch=rf.steps_per_epoch,
        batch_size=rf.batch_size,
        num_classes=rf.num_classes,
        out_path=str(rf.path),
        versions=rf.versions,
        started_at=rf.started_at,
        max_steps=rf.max_steps,
        vanishing=rf.thresholds[0],
        exploding=rf.thresholds[1],
    )


def to_events(rf: RunFile, batch_steps: int = 1000) -> Iterator[Event]:
    """Every event of the run in recorded order; see :meth:`RunFile.to_events`."""
    if batch_steps < 1:
        raise ValueError(f"batch_steps must be >= 1, got {batch_steps}")
    yield run_started(rf)
    # Events that are not step rows, keyed by the last step index they follow. An epoch ending at
    # global step count s follows step s - 1; alerts and status changes follow their own step.
    side: list[tuple[int, Event]] = []
    ep = rf.epochs()
    for i in range(len(ep["epoch"])):
        row = {k: v[i].item() for k, v in ep.items()}
        side.append((int(row["step"]) - 1, EpochEnd(**row)))
    finished: RunFinished | None = None
    for e in rf.events():
        if e["kind"] == S.KIND_FINISHED:
            finished = RunFinished(e["message"], e["step"], rf.error, rf.traceback, rf.checkpoint, e["time"])
        elif e["kind"] == S.KIND_STATUS:
            side.append((e["step"], StatusChanged(e["message"], e["step"], e["time"])))
        else:
            side.append((e["step"], Alert(e["step"], e["level"], e["kind"], e["message"], e["time"])))
    side.sort(key=lambda x: x[0])  # stable: events at the same step keep file order
    k, n = 0, rf.n_steps
    if n:
        first, last = int(rf.scalar("step", 0, 1)[0]), int(rf.scalar("step", n - 1, n)[0])
        for lo in range(first, last + 1, batch_steps):
            batch = rf.read_batches(lo, lo + batch_steps)
            while k < len(side) and side[k][0] < lo:
                yield side[k][1]
                k += 1
            yield batch
            upto = int(batch.steps[-1]) if len(batch) else lo - 1
            while k < len(side) and side[k][0] <= upto:
                yield side[k][1]
                k += 1
    for _, event in side[k:]:
        yield event
    t = rf.test()
    if not math.isnan(t["time"]):
        yield TestResult(t["loss"], t["acc"], t["time"])
    if finished is not None:
        yield finished


def _when(t: float) -> str:
    return "" if math.isnan(t) else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def first_nonfinite(rf: RunFile, metric: str) -> int | None:
    """The first step at which ``metric`` (a per-step scalar such as ``loss``, or a per-epoch one such
    as ``val_loss``) is NaN or Inf, the step a diverged run went wrong, exactly; None if it never is.
    A whole per-step column is one contiguous read (8 MB for a million steps)."""
    if rf.has(f"epochs/{metric}"):
        ep = rf.epochs()
        values, steps = ep[metric].astype(np.float64), ep["step"]
    else:
        values, steps = rf.scalar(metric).astype(np.float64), None
    bad = np.flatnonzero(~np.isfinite(values))
    if not bad.size:
        return None
    row = int(bad[0])
    return int(steps[row]) if steps is not None else int(rf.scalar("step", row, row + 1)[0])


def summary(rf: RunFile) -> dict[str, Any]:
    """Everything ``tuitrain info`` shows, as plain JSON-able values (NaN times become None)."""
    started, ended = rf.started_at, rf.ended_at
    return {
        "path": str(rf.path),
        "run_name": rf.run_name,
        "status": rf.status,
        "incomplete": rf.incomplete,
        "is_live": rf.is_live,
        "model_name": rf.model_name,
        "dataset": rf.dataset,
        "device": rf.device,
        "params": rf.params,
        "flops": rf.flops,
        "n_steps": rf.n_steps,
        "last_step": rf.last_step,
        "n_epochs": rf.n_epochs,
        "epochs": rf.epochs_planned,
        "steps_per_epoch": rf.steps_per_epoch,
        "max_steps": rf.max_steps,
        "total_steps": rf.total_steps,
        "batch_size": rf.batch_size,
        "num_classes": rf.num_classes,
        "n_layers": rf.n_layers,
        "n_probe_rows": rf.n_probe_rows,
        "started": _when(started),
        "ended": _when(ended),
        "started_at": None if math.isnan(started) else started,
        "ended_at": None if math.isnan(ended) else ended,
        "error": rf.error,
        "traceback": rf.traceback,
        "checkpoint": rf.checkpoint,
        "final": rf.final_metrics(),
        "diverged_at": first_nonfinite(rf, "loss"),  # first step of a NaN/Inf training loss, or None
        "modules": rf.module_summary,
        "config_toml": rf.config_toml,
        "versions": rf.versions,
        "tuitrain_version": rf.tuitrain_version,
        "schema_version": rf.schema_version,
    }
