"""Views derived from a run file: the live event vocabulary again (so a replay feeds the UI exactly
like a live run) and the one-dict summary behind ``tuitrain info``.

Kept apart from :mod:`tuitrain.runfile.reader` (raw slicing) and :mod:`tuitrain.runfile.opening`
(opening and validation) so that each stays small. One direction only: everything here is built on
:class:`~tuitrain.runfile.reader.RunFile`'s public API (it never touches the reader's handles), and
RunFile exposes these as methods.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from tuitrain.events import (
    Alert,
    EpochEnd,
    Event,
    ProbeBlock,
    RunFinished,
    RunStarted,
    StatusChanged,
    StepBatch,
    TestResult,
)
from tuitrain.runfile import schema as S
from tuitrain.runfile import snapshots as snaps

if TYPE_CHECKING:
    from tuitrain.runfile.reader import RunFile


def _first_row(rf: RunFile, step: int, probe: str | None = None) -> int:
    """The first row whose step is >= ``step`` (steps are integers and sorted)."""
    row = rf.step_row_at(step - 1) if probe is None else rf.probe_row_at(step - 1, probe)
    return 0 if row is None else row + 1


def read_batches(rf: RunFile, start_step: int, stop_step: int) -> StepBatch:
    """Steps ``[start_step, stop_step)`` and the probe rows taken among them, as one StepBatch: the
    declared columns, then any step key of /metrics logged in the range (NaN where a step did not)."""
    a = _first_row(rf, start_step)
    b = max(a, _first_row(rf, stop_step))
    steps = rf.scalar("step", a, b).astype(np.int64)
    names = list(rf.step_scalars)
    extra = {}
    for key, (ms, _, mv) in rf.metrics("step").items():
        keep = (ms >= start_step) & (ms < stop_step)
        if keep.any():
            extra[key] = (ms[keep], mv[keep])
    scalars = np.full((b - a, len(names) + len(extra)), np.nan)
    for j, k in enumerate(names):
        scalars[:, j] = rf.scalar(k, a, b)
    for j, (ms, mv) in enumerate(extra.values(), len(names)):
        if len(steps):
            rows = np.minimum(np.searchsorted(steps, ms), len(steps) - 1)
            ok = steps[rows] == ms
            scalars[rows[ok], j] = mv[ok]
    blocks: dict[str, ProbeBlock] = {}
    for spec in rf.probe_specs:
        pa = _first_row(rf, start_step, spec.name)
        pb = max(pa, _first_row(rf, stop_step, spec.name))
        rows = slice(pa, pb)
        qs = [rf.probe(q, rows, probe=spec.name) for q in spec.names]
        width = qs[0].shape[1] if qs else 0
        values = np.stack(qs, axis=1) if qs else np.zeros((pb - pa, 0, width), np.float32)
        blocks[spec.name] = ProbeBlock(spec.name, rf.probe_steps(rows, spec.name).astype(np.int64), values)
    return StepBatch(
        steps=steps,
        epochs=rf.scalar("epoch", a, b).astype(np.int32),
        scalars=scalars,
        scalar_names=(*names, *extra),
        blocks=blocks,
        time=_batch_time(rf, b),
    )


def _batch_time(rf: RunFile, b: int) -> float:
    """When the last of the rows ``[.., b)`` left the engine (``/steps/time``); files without that
    column, or an empty range, give the run's start time."""
    if b <= 0 or not rf.has(S.path(S.STEPS, "time")):
        return rf.started_at
    t = rf.scalar("time", b - 1, b)
    return float(t[0]) if len(t) else rf.started_at  # a live file mid-flush: the column may lag


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
        probes=rf.probe_specs,
        step_scalars=rf.step_scalars,
        source=rf.source,
        config_json=rf.config_json,
        modules=rf.modules,
        snapshots=list(rf.snapshot_specs.values()),
    )


def epoch_events(rf: RunFile, start: int = 0) -> list[EpochEnd]:
    """The EpochEnd events of rows ``start..`` of /epochs, each with its extra metrics."""
    ep = rf.epochs()
    extras = rf.epoch_metrics()
    out = []
    for i in range(start, len(ep["epoch"])):
        row = {k: v[i].item() for k, v in ep.items()}
        out.append(EpochEnd(**row, metrics=extras[i] if i < len(extras) else {}))
    return out


def test_event(rf: RunFile) -> TestResult | None:
    """The TestResult of the run, with its extra metrics; None when the test never ran."""
    t = rf.test()
    if math.isnan(t["time"]):
        return None
    return TestResult(t["loss"], t["acc"], t["time"], metrics=rf.test_metrics())


def to_events(rf: RunFile, batch_steps: int = 1000) -> Iterator[Event]:
    """Every event of the run in recorded order; see :meth:`RunFile.to_events`. Stored findings follow
    the batch holding their ``at_step``, after the epoch ends and alerts of that step; Snapshot events
    (:func:`tuitrain.runfile.snapshots.events`) after the epoch end of their step."""
    if batch_steps < 1:
        raise ValueError(f"batch_steps must be >= 1, got {batch_steps}")
    yield run_started(rf)
    # Events that are not step rows, keyed by the last step index they follow. An epoch ending at
    # global step count s follows step s - 1; alerts and status changes follow their own step.
    side: list[tuple[int, Event]] = []
    for epoch_end in epoch_events(rf):
        side.append((epoch_end.step - 1, epoch_end))
    finished: RunFinished | None = None
    for e in rf.events():
        if e["kind"] == S.KIND_FINISHED:
            finished = RunFinished(e["message"], e["step"], rf.error, rf.traceback, rf.checkpoint, e["time"])
        elif e["kind"] == S.KIND_STATUS:
            side.append((e["step"], StatusChanged(e["message"], e["step"], e["time"])))
        else:
            side.append((e["step"], Alert(e["step"], e["level"], e["kind"], e["message"], e["time"])))
    for found in rf.findings():  # after the batch holding the step the rules saw it at
        side.append((found.at_step, found))
    for name in rf.snapshot_specs:  # a snapshot at step s follows the EpochEnd of step s
        side.extend((ev.step - 1, ev) for ev in snaps.events(rf, name, 0, rf.started_at))
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
    test = test_event(rf)
    if test is not None:
        yield test
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
        "n_modules": len(rf.modules),  # probed modules (/modules); 0 for a file without the table
        # the stored Finding events in order (openings and closings); None: the file has no table
        "findings": [{**x.to_dict(), "at_step": x.at_step} for x in rf.findings()]
        if rf.has_findings
        else None,
        "config_toml": rf.config_toml,
        "versions": rf.versions,
        "tuitrain_version": rf.tuitrain_version,
        "schema_version": rf.schema_version,
        "source": rf.source,
        "probes": [p.name for p in rf.probe_specs],
        "step_scalars": list(rf.step_scalars),
        "user_config": rf.user_config,  # {} for presets (their config is config_toml)
        "epoch_metrics": (rf.epoch_metrics() or [{}])[-1],  # the last epoch's extra metrics
        "test_metrics": rf.test_metrics(),
    }


def epoch_metrics(rf: RunFile) -> list[dict[str, float]]:
    """One dict per row of ``rf.epochs()``: the EpochEnd.metrics of that epoch ({} for none)."""
    ep = rf.epochs()
    by_row: dict[tuple[int, int], dict[str, float]] = {}
    for key, (steps, epochs, values) in rf.metrics("epoch").items():
        for s_, e_, v in zip(steps.tolist(), epochs.tolist(), values.tolist(), strict=True):
            by_row.setdefault((int(e_), int(s_)), {})[key] = float(v)
    return [by_row.get((int(e), int(s)), {}) for e, s in zip(ep["epoch"], ep["step"], strict=True)]


def final_metrics(rf: RunFile) -> dict[str, float | None]:
    """See :meth:`RunFile.final_metrics`."""
    ep = rf.epochs()
    last = {k: float(v[-1]) if len(v) else None for k, v in ep.items()}
    t: dict[str, float | None] = dict(rf.test())
    if not math.isfinite(t.get("time") or math.nan):  # the test never ran
        t = {k: None for k in t}
    return {
        "train_loss": last["train_loss"],
        "val_loss": last["val_loss"],
        "train_acc": last["train_acc"],
        "val_acc": last["val_acc"],
        "test_loss": t["loss"],
        "test_acc": t["acc"],
        "params": float(rf.params),
    }
