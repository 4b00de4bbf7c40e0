"""The rows of committed steps that wait for the Monitor's flush, and how they become one table.

Why rows wait: inside a training step every library call costs several times what it costs outside
it, and on CUDA every read of a value is a host synchronisation. So a step only keeps references
(the engine's loss tensor and logits, a user loop's logged tensors), and the flush, about ten times a
second, reads all of them at once: the engine's losses and accuracy counts as in
:mod:`tuitrain.train.monitor`, a user loop's tensors in one ``torch.stack(...).tolist()`` per
device (one host read per flush, never per step).

Two kinds of rows, one table: :class:`EngineRow` (the preset engine's ``after_step``) and
:class:`UserRow` (``Monitor.log`` from a user's loop). Both resolve to a :class:`RowTable`, whose
``scalars`` columns follow the Monitor's scalar names (``STEP_SCALARS`` first, then a user's keys in
first-seen order; NaN where a step did not log a key).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from tuitrain.events import STEP_SCALARS, ProbeBlock

LOSS, ACC, LR, SPS, STEP_TIME = (
    STEP_SCALARS.index(n) for n in ("loss", "acc", "lr", "samples_per_s", "step_time")
)


class EngineRow(NamedTuple):
    """One step of the preset engine. ``loss`` and ``correct`` are read at the flush on CPU: the loss
    tensor and ``(logits, targets)`` (or, data-parallel, the reduced count tensor); on other devices
    they are floats already read back."""

    step: int
    epoch: int
    lr: float
    step_time: float
    batch_size: int
    loss: torch.Tensor | float
    correct: tuple[torch.Tensor, torch.Tensor] | torch.Tensor | float


class UserRow(NamedTuple):
    """One committed step of a user's loop: ``values`` as (column, value) pairs, a value a float or a
    one-element tensor (read at the flush)."""

    step: int
    epoch: int
    values: list[tuple[int, float | torch.Tensor]]
    lr: float
    n_samples: int
    step_time: float


@dataclass
class RowTable:
    """Resolved rows: ``scalars[i, j]`` is scalar ``j`` of step ``steps[i]`` (float64, NaN = not
    logged). ``has_loss`` says which rows measured a loss (what divergence and the NaN alert look
    at); ``sums`` are (loss x weight, loss weight, acc x weight, acc weight) for the epoch means."""

    steps: np.ndarray  # (n,) int64
    epochs: np.ndarray  # (n,) int32
    scalars: np.ndarray  # (n, n_names) float64
    has_loss: np.ndarray  # (n,) bool
    sums: tuple[float, float, float, float]

    @property
    def losses(self) -> np.ndarray:
        return self.scalars[:, LOSS]

    @classmethod
    def empty(cls, n_names: int) -> RowTable:
        return cls(
            np.zeros(0, np.int64),
            np.zeros(0, np.int32),
            np.zeros((0, n_names)),
            np.zeros(0, bool),
            (0.0,) * 4,
        )


class Columns:
    """The step scalars of a run: ``STEP_SCALARS``, then a user loop's keys in first-seen order (the
    column index of a key never changes)."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = STEP_SCALARS
        self._index: dict[str, int] = {n: i for i, n in enumerate(STEP_SCALARS)}

    def pairs(self, values: Mapping[str, object]) -> list[tuple[int, float | torch.Tensor]]:
        """``values`` as (column, value) pairs; new keys get columns, once every value was accepted."""
        out: list[tuple[int, float | torch.Tensor]] = []
        new: list[str] = []
        index = self._index
        for key, value in values.items():
            col = index.get(key)
            if col is None:
                if not isinstance(key, str) or not key:
                    raise TypeError(f"a logged key must be a non-empty string, not {key!r}")
                if key not in new:
                    new.append(key)
                col = len(self.names) + new.index(key)
            out.append((col, scalar_value(key, value)))
        if new:
            index.update((k, len(self.names) + i) for i, k in enumerate(new))
            self.names += tuple(new)
        return out


def _samples_per_s(samples: np.ndarray, step_time: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((step_time > 0) & (samples > 0), samples / step_time, np.nan)


def engine_table(rows: list[EngineRow], n_names: int) -> RowTable:
    """The engine's rows with their tensors read: the losses, and the accuracy counts in one argmax
    over the stacked logits (per step when batch shapes differ)."""
    first = rows[0]
    if isinstance(first.loss, torch.Tensor):
        losses = [r.loss.item() for r in rows]  # type: ignore[union-attr]
        if isinstance(first.correct, tuple):  # single process: (logits, targets) of every step
            counts = count_correct([r.correct[0] for r in rows], [r.correct[1] for r in rows])  # type: ignore[index]
        else:  # data-parallel: reduced counts
            counts = [r.correct.item() for r in rows]  # type: ignore[union-attr]
    else:
        losses, counts = [r.loss for r in rows], [r.correct for r in rows]
    # step, epoch, loss, correct, lr, step time, batch size; exact in float64 below 2**53
    table = np.array(
        [
            (r.step, r.epoch, loss, count, r.lr, r.step_time, r.batch_size)
            for r, loss, count in zip(rows, losses, counts, strict=True)
        ],
        dtype=np.float64,
    )
    loss, correct, lr, step_time, batch = table[:, 2], table[:, 3], table[:, 4], table[:, 5], table[:, 6]
    cols = [loss, correct / batch, lr, _samples_per_s(batch, step_time), step_time]  # STEP_SCALARS order
    cols += [np.full(len(rows), np.nan)] * (n_names - len(cols))
    n = float(batch.sum())
    return RowTable(
        steps=table[:, 0].astype(np.int64),
        epochs=table[:, 1].astype(np.int32),
        scalars=np.column_stack(cols),
        has_loss=np.ones(len(rows), dtype=bool),
        sums=(float(np.dot(loss, batch)), n, float(correct.sum()), n),
    )


def user_table(rows: list[UserRow], n_names: int) -> RowTable:
    """A user loop's rows: computed columns (step time, samples/s from ``n_samples``) first, then the
    logged values over them, then the ``lr`` argument over those; the tensors read per device."""
    n = len(rows)
    step_time = np.array([r.step_time for r in rows], dtype=np.float64)
    samples = np.array([r.n_samples for r in rows], dtype=np.float64)
    scalars = np.full((n, n_names), np.nan)
    scalars[:, STEP_TIME] = step_time
    scalars[:, SPS] = _samples_per_s(samples, step_time)
    ri: list[int] = []
    ci: list[int] = []
    vals: list[float] = []
    tensors: dict[torch.device, tuple[list[int], list[torch.Tensor]]] = {}
    for i, r in enumerate(rows):
        for c, v in r.values:
            ri.append(i)
            ci.append(c)
            if isinstance(v, torch.Tensor):
                where, ts = tensors.setdefault(v.device, ([], []))
                where.append(len(vals))
                ts.append(v)
                vals.append(math.nan)
            else:
                vals.append(v)
    for where, ts in tensors.values():
        for k, value in zip(where, read_scalars(ts), strict=True):
            vals[k] = value
    logged = np.zeros((n, n_names), dtype=bool)
    if ri:
        scalars[ri, ci] = np.asarray(vals, dtype=np.float64)
        logged[ri, ci] = True
    lr = np.array([r.lr for r in rows], dtype=np.float64)
    given = ~np.isnan(lr)
    scalars[given, LR] = lr[given]
    weight = np.where(samples > 0, samples, 1.0)
    has_loss, has_acc = logged[:, LOSS], logged[:, ACC]
    loss, acc = scalars[:, LOSS], scalars[:, ACC]
    return RowTable(
        steps=np.array([r.step for r in rows], dtype=np.int64),
        epochs=np.array([r.epoch for r in rows], dtype=np.int32),
        scalars=scalars,
        has_loss=has_loss,
        sums=(
            float(np.dot(loss[has_loss], weight[has_loss])),
            float(weight[has_loss].sum()),
            float(np.dot(acc[has_acc], weight[has_acc])),
            float(weight[has_acc].sum()),
        ),
    )


def read_scalars(tensors: list[torch.Tensor]) -> list[float]:
    """The values of one-element tensors of one device, in one host read: one stack (one cast each
    first when their dtypes differ, so that an integer count is not rounded through float32)."""
    flat = [t.reshape(()) for t in tensors]
    dtype = flat[0].dtype
    if any(t.dtype != dtype for t in flat):
        to = torch.float32 if flat[0].device.type == "mps" else torch.float64  # MPS has no float64
        flat = [t.to(to) for t in flat]
    return [float(v) for v in torch.stack(flat).tolist()]


def count_correct(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> list[int]:
    """Correct predictions per step (argmax, the first of equal maxima, as ``Tensor.argmax``).

    All steps at once: one concatenation each of logits and targets, one numpy argmax over the rows
    (several times faster than torch's on CPU for the few classes of small models) and one segment
    sum per step, whatever the batch sizes."""
    if logits[0].dtype != torch.float32 or logits[0].device.type != "cpu" or logits[0].dim() != 2:
        return [int((t.argmax(-1) == y).sum()) for t, y in zip(logits, targets, strict=True)]
    hit = torch.cat(logits).numpy().argmax(1) == torch.cat(targets).numpy()
    starts = np.cumsum([0] + [len(t) for t in targets[:-1]])
    return np.add.reduceat(hit, starts).tolist()


def concat_blocks(a: ProbeBlock, b: ProbeBlock) -> ProbeBlock:
    if not len(a):
        return b
    if not len(b):
        return a
    return ProbeBlock(a.probe, np.concatenate([a.steps, b.steps]), np.concatenate([a.values, b.values]))


def kept_logits(rows: list) -> int:
    """Logits elements the engine's CPU rows keep alive until the flush."""
    return sum(
        r.correct[0].numel() for r in rows if isinstance(r, EngineRow) and isinstance(r.correct, tuple)
    )


def split_block(block: ProbeBlock, last: int) -> tuple[ProbeBlock, ProbeBlock | None]:
    """(the rows of steps up to ``last``, the rest or None)."""
    sent = block.steps <= last
    if sent.all():
        return block, None
    return (
        ProbeBlock(block.probe, block.steps[sent], block.values[sent]),
        ProbeBlock(block.probe, block.steps[~sent], block.values[~sent]),
    )


def scalar_value(key: str, value: object) -> float | torch.Tensor:
    """A logged value as the row keeps it: a float, or a detached one-element real tensor."""
    if type(value) is float:
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise ValueError(
                f"logged value {key!r} is a {value.dtype} tensor of shape {tuple(value.shape)}; allowed: "
                "a number or a real one-element tensor (log a mean or a sum, or each element by name)"
            )
        return value.detach()
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return float(value)
    raise TypeError(
        f"logged value {key!r} is a {type(value).__name__}; allowed: a number or a one-element tensor"
    )
