"""The run so far, as the live rules read it (:mod:`tuitrain.diagnosis.live`): a
:class:`~tuitrain.diagnosis.data.RunData` kept up to date from the events as they come, with the same
fields :func:`~tuitrain.diagnosis.data.from_runfile` fills from the finished file, in bounded memory:
scalars in growing buffers (amortised doubling), probe rows thinned past ``MAX_PROBE_ROWS`` as
``from_runfile`` thins a long probe."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tuitrain.diagnosis.data import (
    ACT_QUANTITIES,
    GRAD_QUANTITIES,
    MAX_PROBE_ROWS,
    Activations,
    Grads,
    RunData,
)
from tuitrain.events import ACT, GRAD, EpochEnd, ProbeBlock, RunStarted, StepBatch

# What an EpochEnd keeps: its fields as the run file's /epochs has them (from_runfile's epochs dict).
EPOCH_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EpochEnd) if f.name != "metrics")


class _Grow:
    """A column that grows by amortised doubling: appends copy each value once (on average)."""

    def __init__(self, dtype: Any, fill: float = 0) -> None:
        self.a = np.full(0, fill, dtype=dtype)
        self.n = 0
        self.fill = fill

    def add(self, values: np.ndarray) -> None:
        m = len(values)
        if self.n + m > len(self.a):
            bigger = np.full(max(2 * len(self.a), self.n + m, 1024), self.fill, dtype=self.a.dtype)
            bigger[: self.n] = self.a[: self.n]
            self.a = bigger
        self.a[self.n : self.n + m] = values
        self.n += m

    @property
    def view(self) -> np.ndarray:
        return self.a[: self.n]


class _ProbeRows:
    """One probe's rows for the rules: at most :data:`MAX_PROBE_ROWS` of them. When full, every other
    row is dropped and from then on only every other new row is kept (the stride doubles), so the rows
    kept are every k-th probed row from the first, as ``from_runfile`` reads a long probe thinned.
    Stored float64, ``(quantity, row, column)``: each quantity's rows are one contiguous array."""

    def __init__(self, quantities: list[int], width: int) -> None:
        self.quantities = quantities  # the rules' quantities' indices in the block's axis 1
        self.width = width
        self.steps = np.zeros(0, np.int64)
        self.values = np.zeros((len(quantities), 0, width), np.float64)
        self.n = 0
        self.stride = 1
        self.seen = 0  # probed rows received

    def add(self, block: ProbeBlock) -> None:
        m = len(block)
        if not m or block.values.shape[2] != self.width:
            return
        keep = (np.arange(self.seen, self.seen + m) % self.stride) == 0
        self.seen += m
        steps = block.steps[keep]
        vals = np.moveaxis(block.values[keep][:, self.quantities, :], 1, 0)
        k = len(steps)
        if self.n + k > self.steps.shape[0]:
            # doubling, but never much past MAX_PROBE_ROWS: the rows are thinned back below it
            cap = max(min(2 * self.steps.shape[0], MAX_PROBE_ROWS + k), self.n + k, 256)
            s = np.zeros(cap, np.int64)
            s[: self.n] = self.steps[: self.n]
            v = np.zeros((len(self.quantities), cap, self.width), np.float64)
            v[:, : self.n] = self.values[:, : self.n]
            self.steps, self.values = s, v
        self.steps[self.n : self.n + k] = steps
        self.values[:, self.n : self.n + k] = vals
        self.n += k
        while self.n > MAX_PROBE_ROWS:  # rows 0, 2, 4, ... are every (2 x stride)-th probed row
            half = (self.n + 1) // 2
            self.steps[:half] = self.steps[: self.n : 2]
            self.values[:, :half] = self.values[:, : self.n : 2]
            self.n, self.stride = half, 2 * self.stride

    def columns(self) -> tuple[np.ndarray, list[np.ndarray]]:
        return self.steps[: self.n], [self.values[q, : self.n] for q in range(len(self.quantities))]


def _probe(started: RunStarted, name: str, wanted: tuple[str, ...]) -> list[int] | None:
    """The indices of ``wanted`` among probe ``name``'s quantities, or None when the run lacks it."""
    spec = next((p for p in started.probes if p.name == name), None)
    if spec is None or not set(wanted) <= set(spec.names):
        return None
    return [spec.index(q) for q in wanted]


class RunSoFar:
    """What the rules read of a live run, kept as the events come (the same fields ``from_runfile``
    fills from a file): scalars in growing buffers, probe rows thinned past MAX_PROBE_ROWS."""

    def __init__(self, started: RunStarted, window: int) -> None:
        self.started = started
        self.window = window
        self.steps = _Grow(np.int64)
        declared = set(started.step_scalars)
        self.scalars = {k: _Grow(np.float64, np.nan) for k in ("loss", "acc", "lr") if k in declared}
        self.grad: _ProbeRows | None = None
        self.act: _ProbeRows | None = None
        self._grad_q = _probe(started, GRAD, GRAD_QUANTITIES)
        self._act_q = _probe(started, ACT, ACT_QUANTITIES)
        self.epochs: list[tuple[float, ...]] = []
        self.last_step = -1

    def add(self, b: StepBatch) -> None:
        if not len(b):
            return
        self.steps.add(b.steps)
        for name, col in self.scalars.items():
            col.add(b.scalar(name))
        self.last_step = max(self.last_step, int(b.steps[-1]))
        for name, quantities, attr in ((GRAD, self._grad_q, "grad"), (ACT, self._act_q, "act")):
            blk = b.blocks.get(name)
            if blk is None or quantities is None or not len(blk):
                continue
            rows = getattr(self, attr)
            if rows is None:
                rows = _ProbeRows(quantities, int(blk.values.shape[2]))
                setattr(self, attr, rows)
            rows.add(blk)

    def add_epoch(self, e: EpochEnd) -> None:
        self.epochs.append(tuple(getattr(e, k) for k in EPOCH_KEYS))
        self.last_step = max(self.last_step, int(e.step) - 1)

    def data(self) -> RunData:
        s = self.started
        grads = acts = None
        if self.grad is not None and self.grad.n:
            steps, cols = self.grad.columns()
            grads = Grads(steps, *cols)
        if self.act is not None and self.act.n:
            steps, cols = self.act.columns()
            names = [m.name for m in s.modules]
            names = names if len(names) == self.act.width else [f"module {i}" for i in range(self.act.width)]
            acts = Activations(steps, names, *cols)
        epochs: dict[str, np.ndarray] = {}
        if self.epochs:
            table = list(zip(*self.epochs, strict=True))
            epochs = {k: np.asarray(v) for k, v in zip(EPOCH_KEYS, table, strict=True)}
            epochs["epoch"] = epochs["epoch"].astype(np.int32)
            epochs["step"] = epochs["step"].astype(np.int64)
        col = {k: c.view for k, c in self.scalars.items()}
        return RunData(
            steps=self.steps.view,
            loss=col.get("loss"),
            acc=col.get("acc"),
            lr=col.get("lr"),
            layer_names=[x.name for x in s.layers],
            layer_kinds=[x.kind for x in s.layers],
            grads=grads,
            epochs=epochs,
            num_classes=int(s.num_classes),
            vanishing=float(s.vanishing),
            exploding=float(s.exploding),
            window=self.window,
            activations=acts,
        )
