"""Snapshots: small, bounded pictures of the model and its predictions, taken by the training process.

What is taken (the table in docs/run-file.md): ``first_layer`` (the first Conv2d's kernels, or the first
Linear on flat images with its rows reshaped to the image), ``token_mixing`` (a model's own
``token_mixing_weight()``, MLP-Mixer's first block), ``boundary`` (2-D data: the predicted class on a
fixed G x G grid), ``points`` (2-D data: test points, once at the start) and ``misclassified`` (the first
64 wrong test samples in stored order, from the test evaluation itself: no second pass).

**The size cap** (``monitor.snapshot_mb``, MB = 10**6 bytes; 0 = no snapshots): every spec gets a
``max_rows`` so that the sum of ``spec.max_bytes`` stays within the cap, and the writer never stores more:

1. the "start" and "end" specs first (small: points <= 2000 rows of 14 B, misclassified <= 64 rows); one
   that does not fit whole keeps half its rows, again, until it fits (none left: it is not taken);
2. the rest of the cap is split evenly among the per-epoch specs; each wants ``epochs + 1`` rows (the
   init row, epoch -1, and one per epoch) and gets ``max_rows = min(epochs + 1, share // row_bytes)``;
3. a per-epoch spec with fewer rows than it wants keeps every ``stride``-th epoch
   (``stride = ceil(epochs / (max_rows - 2))``: epochs stride-1, 2*stride-1, ...), always the init row
   and the last epoch trained (a run cut short by max_steps or a stop: its last epoch is taken at the end
   if it was not), so at most ``epochs // stride + 2 <= max_rows`` rows;
4. if even 3 rows (or ``epochs + 1``, when fewer) of a spec would not fit, fewer kernels are kept (k
   halves) until they do; the boundary, which has no k, is then not taken.

Reads happen at epoch ends only (``.cpu()`` is a host sync, once per epoch, never per step). Under DDP the
engine builds a Snapshotter on rank 0 only; rank 0's slice of the test split starts at index 0, so the
indices of its misclassified samples are positions in the whole split (only its slice is searched).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tuitrain.events import (
    BOUNDARY,
    FIRST_LAYER,
    MISCLASSIFIED,
    POINTS,
    TOKEN_MIXING,
    Snapshot,
    SnapshotField,
    SnapshotSpec,
)
from tuitrain.train.data import DeviceData

MB = 1_000_000
MAX_KERNELS = 64  # first k = min(outputs, 64) kernels / units
BOUNDARY_GRID = 48
MAX_POINTS = 2000
MAX_WRONG = 64
MARGIN = 0.1  # boundary extent: the training points' range, widened by 10% on each side
ORDER = (FIRST_LAYER, TOKEN_MIXING, BOUNDARY, POINTS, MISCLASSIFIED)  # specs in the design table's order


def _first_layer(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, nn.Module] | None:
    """The first Conv2d, else the first Linear taking a flattened (c, h, w) image; None otherwise."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    if len(input_shape) == 3:
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and m.in_features == math.prod(input_shape):
                return name, m
    return None


def _param_name(model: nn.Module, tensor: Tensor) -> str:
    """The module a parameter belongs to (``blocks.0.mlp_tokens.fc1``), found by identity."""
    for name, p in model.named_parameters():
        if p is tensor:
            return name.rsplit(".", 1)[0] if name.endswith(".weight") else name
    return ""


@dataclass
class Planned:
    """One spec and how to take its rows (per-epoch specs: which epochs)."""

    spec: SnapshotSpec
    k: int = 0  # kernels / units kept (first_layer, token_mixing)
    stride: int = 1
    last_step: int | None = None  # step of the last row taken (per-epoch specs)
    taken: set[int] = field(default_factory=set)  # epochs with a row


def _shrink(spec: SnapshotSpec, k: int) -> SnapshotSpec:
    """The spec with its leading field axis (kernels / units) cut to ``k``."""
    fields = tuple(SnapshotField(f.name, (k, *f.shape[1:]), f.dtype) for f in spec.fields)
    return replace(spec, fields=fields)


class MisclassifiedCollector:
    """Given to the test ``evaluate``: keeps, per batch, the predictions on the device (5 bytes a
    sample), so the search for the wrong ones costs one host sync at the end, not one per batch."""

    def __init__(self) -> None:
        self.pred: list[Tensor] = []
        self.prob: list[Tensor] = []
        self.true: list[Tensor] = []

    def add(self, logits: Tensor, y: Tensor) -> None:
        prob, pred = torch.softmax(logits.float(), dim=1).max(dim=1)
        self.pred.append(pred)
        self.prob.append(prob.half())
        self.true.append(y)

    def first_wrong(self, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(index, true, pred, prob) of the first ``limit`` wrong samples in stored order."""
        if not self.pred:
            empty = np.zeros(0, np.int64)
            return empty, empty.astype(np.int16), empty.astype(np.int16), empty.astype(np.float16)
        pred, prob, true = torch.cat(self.pred), torch.cat(self.prob), torch.cat(self.true)
        idx = (pred != true).nonzero().squeeze(1)[:limit]  # host sync: once, after the test evaluation
        return (
            idx.cpu().numpy().astype(np.int64),
            true[idx].cpu().numpy().astype(np.int16),
            pred[idx].cpu().numpy().astype(np.int16),
            prob[idx].cpu().numpy().astype(np.float16),
        )


class Snapshotter:
    """Plans the specs (:meth:`plan`) and takes their rows; every method returns Snapshot events for
    the engine to emit. ``Snapshotter()`` takes nothing (snapshot_mb = 0, DDP ranks other than 0)."""

    def __init__(self) -> None:
        self.planned: dict[str, Planned] = {}
        self.model: nn.Module | None = None
        self.data: DeviceData | None = None
        self.epochs = 0
        self._first: nn.Module | None = None
        self._token: Any = None
        self._grid: Tensor | None = None

    @property
    def specs(self) -> list[SnapshotSpec]:
        return [self.planned[n].spec for n in ORDER if n in self.planned]

    # -- planning -------------------------------------------------------------------------------
    @classmethod
    def plan(cls, model: nn.Module, data: DeviceData, monitor: Any, epochs: int) -> Snapshotter:
        """The specs this run takes within ``monitor.snapshot_mb`` (the rule: module docstring)."""
        snap = cls()
        cap = int(float(getattr(monitor, "snapshot_mb", 4.0)) * MB)
        if cap <= 0:
            return snap
        snap.model, snap.data, snap.epochs = model, data, max(1, int(epochs))
        once, per_epoch = snap._candidates(model, data)
        for p in once:  # step 1: the start / end specs, halving rows until they fit
            rows = p.spec.max_rows
            while rows and p.spec.row_bytes * rows > cap:
                rows //= 2
            if rows:
                p.spec = replace(p.spec, max_rows=rows)
                cap -= p.spec.max_bytes
                snap.planned[p.spec.name] = p
        want = snap.epochs + 1
        for i, p in enumerate(per_epoch):  # steps 2-4: the rest, split evenly
            share = cap // (len(per_epoch) - i)
            while p.spec.row_bytes * min(3, want) > share and p.k > 1:
                p.k //= 2
                p.spec = _shrink(p.spec, p.k)
            rows = min(want, share // p.spec.row_bytes)
            if rows < min(3, want):
                continue  # does not fit even with one kernel (or a boundary): not taken
            if rows < want:
                p.stride = math.ceil(snap.epochs / (rows - 2))
            p.spec = replace(p.spec, max_rows=rows, meta={**p.spec.meta, "stride": p.stride})
            cap -= p.spec.max_bytes
            snap.planned[p.spec.name] = p
        return snap

    def _candidates(self, model: nn.Module, data: DeviceData) -> tuple[list[Planned], list[Planned]]:
        """Every spec this model and data allow, at full size: (start/end specs, per-epoch specs)."""
        shape = tuple(data.input_shape)
        flat2d = shape == (2,)
        once: list[Planned] = []
        per_epoch: list[Planned] = []
        first = _first_layer(model, shape)
        if first is not None:
            name, m = first
            w = m.weight
            k = min(int(w.shape[0]), MAX_KERNELS)
            if isinstance(m, nn.Conv2d):
                f = SnapshotField("weight", (k, *(int(d) for d in w.shape[1:])), "float32")
            else:
                f = SnapshotField("weight", (k, *shape), "float16")  # rows reshaped to the image
            self._first = m
            meta = {"module": name, "type": type(m).__name__, "out_total": int(w.shape[0])}
            desc = "the first layer's first k kernels (a Linear's rows reshaped to the input image)"
            per_epoch.append(Planned(SnapshotSpec(FIRST_LAYER, (f,), "epoch", 0, meta, desc), k=k))
        offer = getattr(model, "token_mixing_weight", None)
        if callable(offer):
            w, (gh, gw) = offer()
            k = min(int(w.shape[0]), MAX_KERNELS)
            self._token = offer
            meta = {
                "module": _param_name(model, w),
                "grid": [int(gh), int(gw)],
                "hidden_total": int(w.shape[0]),
            }
            f = SnapshotField("weight", (k, int(w.shape[1])), "float32")
            desc = "the first Mixer block's token-mixing weights (first k hidden units x tokens)"
            per_epoch.append(Planned(SnapshotSpec(TOKEN_MIXING, (f,), "epoch", 0, meta, desc), k=k))
        if flat2d:
            train = data.x["train"].float()
            lo, hi = train.amin(0), train.amax(0)
            span = (hi - lo).clamp_min(1e-6)
            lo, hi = (lo - MARGIN * span).tolist(), (hi + MARGIN * span).tolist()
            g = BOUNDARY_GRID
            cx = lo[0] + (torch.arange(g, dtype=torch.float64) + 0.5) * (hi[0] - lo[0]) / g
            cy = lo[1] + (torch.arange(g, dtype=torch.float64) + 0.5) * (hi[1] - lo[1]) / g
            yy, xx = torch.meshgrid(cy, cx, indexing="ij")  # cell [i, j]: row i is y, row 0 lowest
            self._grid = torch.stack([xx, yy], dim=-1).reshape(g * g, 2).float().to(data.device)
            meta = {"extent": [lo[0], hi[0], lo[1], hi[1]], "grid": g, "num_classes": int(data.num_classes)}
            fields = (SnapshotField("pred", (g, g), "int16"), SnapshotField("prob", (g, g), "float16"))
            desc = "predicted class and its probability on a fixed grid over the data (row 0: lowest y)"
            per_epoch.append(Planned(SnapshotSpec(BOUNDARY, fields, "epoch", 0, meta, desc)))
            n = min(int(data.sizes["test"]), MAX_POINTS)
            fields = (SnapshotField("xy", (2,), "float32"), SnapshotField("label", (), "int16"))
            once.append(Planned(SnapshotSpec(POINTS, fields, "start", n, {"split": "test"}, "test points")))
        n_test = int(data.sizes.get("test", 0))
        if n_test:
            fields = [
                SnapshotField("index", (), "int64"),
                SnapshotField("true", (), "int16"),
                SnapshotField("pred", (), "int16"),
                SnapshotField("prob", (), "float16"),
            ]
            if flat2d:
                fields.append(SnapshotField("xy", (2,), "float32"))
            elif len(shape) == 3 and data.x["test"].dtype == torch.uint8:
                fields.append(SnapshotField("image", shape, "uint8"))
            meta = {"split": "test", "n_total": n_test, "class_names": list(data.class_names)}
            desc = "the first misclassified test samples in stored order"
            spec = SnapshotSpec(MISCLASSIFIED, tuple(fields), "end", min(MAX_WRONG, n_test), meta, desc)
            once.append(Planned(spec))
        return once, per_epoch

    # -- taking ---------------------------------------------------------------------------------
    def _epoch_arrays(self, p: Planned) -> dict[str, np.ndarray]:
        """One row of a per-epoch spec, read from the device (host sync: at epoch ends only)."""
        name = p.spec.name
        if name == FIRST_LAYER:
            assert self._first is not None
            w = self._first.weight.detach()[: p.k].float()
            f = p.spec.fields[0]
            return {"weight": w.reshape(1, *f.shape).cpu().numpy().astype(f.dtype)}
        if name == TOKEN_MIXING:
            w, _ = self._token()
            return {"weight": w.detach()[None, : p.k].float().cpu().numpy()}
        assert self.model is not None and self.data is not None and self._grid is not None
        g = BOUNDARY_GRID
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                logits = self.model(self.data.normalize(self._grid))
                prob, pred = torch.softmax(logits.float(), dim=1).max(dim=1)
        finally:
            self.model.train(was)
        return {
            "pred": pred.reshape(1, g, g).cpu().numpy().astype(np.int16),
            "prob": prob.reshape(1, g, g).cpu().numpy().astype(np.float16),
        }

    def _take(self, p: Planned, epoch: int, step: int) -> Snapshot:
        p.taken.add(epoch)
        p.last_step = step
        return Snapshot(p.spec.name, epoch, step, self._epoch_arrays(p))

    def _per_epoch(self) -> list[Planned]:
        return [p for p in self.planned.values() if p.spec.when == "epoch"]

    def at_start(self, step: int) -> list[Snapshot]:
        """Before the first step of a fresh run: the init rows (epoch -1) and the test points."""
        out = [self._take(p, -1, step) for p in self._per_epoch()]
        if POINTS in self.planned:
            assert self.data is not None
            n = self.planned[POINTS].spec.max_rows
            xy = self.data.x["test"][:n].float().cpu().numpy()
            label = self.data.y["test"][:n].cpu().numpy().astype(np.int16)
            out.append(Snapshot(POINTS, -1, step, {"xy": xy, "label": label}))
        return out

    def epoch_end(self, epoch: int, step: int) -> list[Snapshot]:
        """After an epoch's EpochEnd: the per-epoch rows this epoch's stride selects."""
        return [self._take(p, epoch, step) for p in self._per_epoch() if (epoch + 1) % p.stride == 0]

    def collector(self) -> MisclassifiedCollector | None:
        """What the test evaluation fills, when this run takes misclassified samples."""
        return MisclassifiedCollector() if MISCLASSIFIED in self.planned else None

    def at_end(
        self, epoch: int, step: int, collector: MisclassifiedCollector | None = None
    ) -> list[Snapshot]:
        """The end of the run (completed, or cut short: ``collector`` None when there was no test
        evaluation): the last epoch's rows if its stride skipped them, then the misclassified."""
        out = [self._take(p, epoch, step) for p in self._per_epoch() if p.last_step not in (None, step)]
        if collector is not None and MISCLASSIFIED in self.planned:
            assert self.data is not None
            spec = self.planned[MISCLASSIFIED].spec
            index, true, pred, prob = collector.first_wrong(spec.max_rows)
            arrays = {"index": index, "true": true, "pred": pred, "prob": prob}
            samples = self.data.x["test"][torch.as_tensor(index, device=self.data.device)]
            if any(f.name == "xy" for f in spec.fields):
                arrays["xy"] = samples.float().cpu().numpy()
            elif any(f.name == "image" for f in spec.fields):
                arrays["image"] = samples.cpu().numpy().astype(np.uint8)
            if len(index):
                out.append(Snapshot(MISCLASSIFIED, epoch, step, arrays))
        return out
