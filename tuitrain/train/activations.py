"""The forward-signal probe ``"act"`` (issue 11): per module, what its output looked like in a training
forward pass. A plugin through :class:`~tuitrain.train.probe_protocol.Probe`, on by default in the
engine (``monitor.activations_every``), ``tuitrain.init`` / ``run.watch`` and Lightning.

Why: a gradient bar says *that* a first layer does not learn; the forward signal says *why*. Plain VGG38
at PyTorch's default init scales the variance of its signal by about 1/6 per conv + leaky ReLU, so the
activation std falls by orders of magnitude within its first stage (the signal-propagation plots of
Brock et al., 2021); with BatchNorm it stays near 1. A ReLU layer after too large a learning rate has
units that are zero for every sample (dead units, 002); a sigmoid stack pins its outputs at 0 and 1.

What is probed (:func:`probed_modules`), in the order their outputs are produced, named as
``model.named_modules()`` names them (wrappers of ``torch.compile`` / DDP unwrapped):
- every leaf module but ``nn.Identity`` and empty containers (their output is their input, or they are
  never called), and
- every *block*: a non-leaf module whose class name contains ``Block``, ``Bottleneck``, ``Residual``,
  ``EncoderLayer`` or ``DecoderLayer`` (torchvision's BasicBlock/Bottleneck, timm's Block, tuitrain's
  ProcessingBlock, ReductionBlock, BasicBlock, MixerBlock, ``nn.TransformerEncoderLayer``), or that has
  a direct child named ``shortcut``, ``downsample`` or ``skip``. Whether the skip is on is not asked:
  plain VGG38's ProcessingBlock is the same unit as the residual one, and its output is where the
  story is. Pass ``is_block(name, module)`` to decide otherwise. The root module is not probed (its
  output is the head's), unless it is itself a leaf.
A block comes after the modules inside it (post-order): its output is produced after theirs.

When (the step must be known before the forward, and the Monitor calls probes only after it): the
caller calls :meth:`ActivationProbe.before_forward` with the step index just before the forward pass
of every step (the engine before ``model(x)``; a user loop's monitor when it commits the previous step,
and at the start). On a probed step (``step % every == 0``) that installs the forward hooks; on the
others it does nothing, so unprobed steps pay nothing at all. The Monitor's usual ``before_step(step)``
(just before ``optimizer.step()``, after the forward and backward) then stacks the step's values into
one row and removes the hooks. Every ``before_step`` gives exactly one row (the Monitor counts on it):
NaN for a module that did not run, and for every module when ``before_forward`` was not called.

What counts: the *first* call of each module in a training forward of the probed step (a module called
twice per forward, a second micro-batch of gradient accumulation, a checkpointed recomputation in the
backward: later calls are not measured). Calls in eval mode (``module.training`` false) and under
``torch.no_grad()`` / ``inference_mode`` do not count: that is validation or a user's own side pass,
not the training signal. A tuple or list output is measured by its first floating-point tensor
(an LSTM's output, an attention's output); an output with no floating-point tensor is skipped (NaN).

What is measured per output (the hook runs under ``no_grad``: nothing enters the autograd graph):
- ``mean``, ``std``: over every element (``std`` with correction 0, as the norm of the deviations
  from the mean over sqrt(numel): one op, where ``std_mean`` cost ~5x more on CPU); half inputs upcast;
- ``zero_frac``: fraction of exact zeros;
- ``saturated_frac``: fraction within ``margin`` (0.03) of the bounds, for outputs of ``nn.Sigmoid``,
  ``nn.Hardsigmoid`` (0, 1), ``nn.Tanh`` (-1, 1) and ``nn.Hardtanh`` (its min_val, max_val); NaN for
  every other module (a bound is known only for these);
- ``dead_frac``: fraction of units zero for every sample of the batch: units are channels (dim 1) of
  the outputs of convolutions, norms and pools and of any output of 4 or more dims (N, C, H, W), and the
  last dim otherwise (features of (N, F) and of token outputs (B, T, D)); NaN for outputs of < 2 dims.
  An activation module after a Conv1d ((N, C, L), 3 dims) is read as features on its last dim: a
  known limitation of deciding by the module alone.

Where, and how values reach the host (never a host read before ``collect()``):
- CUDA (and any device but the CPU): the hook reduces on the device (mean, norm, three counts: a
  handful of kernels), ``before_step`` stacks the step's row in one op and copies it non-blocking into
  pinned memory (:class:`~tuitrain.train.probes.HostReadback`, as the gradient probe); ``collect()``
  returns the rows whose copies completed (all with ``force``).
- CPU, small outputs (up to ``_DEFER_MAX`` elements: an MLP's): inside a step every op costs several
  times its tight-loop price (cold caches), so the hook only copies the output (one op; a copy,
  because a later in-place op such as ``ReLU(inplace=True)`` would change it) and ``collect()``
  reduces the copies with numpy at the flush, all copies of one shape together. At most
  ``_DEFER_ELEMS`` elements wait; past that an output is reduced in its hook, as on CUDA.
- CPU, larger outputs (a conv net's): the arithmetic, not the call, is the cost, and a deferred copy
  would add a write and a read of the whole output to it; so the hook reduces them in place with
  torch's float32 ops, as on CUDA (the values stay CPU tensors until ``collect()`` reads them all).
The host divides the counts by the sizes the hook noted (shapes are host metadata: no sync).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from tuitrain.config.schema import MonitorConfig
from tuitrain.events import ACT, ACT_PROBE, ProbeBlock
from tuitrain.train.activation_modules import (
    CHANNEL_FIRST,
    ProbedModule,
    Target,
    default_is_block,
    probed_modules,
    saturation_bounds,
)
from tuitrain.train.probe_protocol import empty_block, unwrap_model
from tuitrain.train.probes import HostReadback

__all__ = ["ACT", "ACT_PROBE", "ActivationProbe", "ProbedModule", "default_is_block", "probed_modules"]

_N_Q = len(ACT_PROBE.quantities)
MARGIN = 0.03  # "within 0.03 of the bounds" (issue 11)

_HALF = (torch.float16, torch.bfloat16)
# CPU: outputs of a probed step are copied (one op each) and reduced at collect() with numpy, up to this
# many elements waiting (16 MB); past it a module is reduced in its hook with torch ops (see _measure).
_DEFER_ELEMS = 1 << 22
# ... and only outputs up to this many elements (128 KB) are deferred: for larger ones the copy costs
# more than the cold calls it saves (see the module docstring).
_DEFER_MAX = 1 << 15


def _first_float(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output if output.is_floating_point() else None
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                return item
    return None


def _eager(hook: Callable[..., None]) -> Callable[..., None]:
    """``hook`` run eagerly under ``torch.compile``. Traced into a compiled graph, a hook's writes go to
    the lists of the step it was traced at, and the graph is reused at every later probed step (the
    hooks are there again, so its guards pass): every row after the first would be NaN. Eager, it is a
    graph break at each hooked module on the probed steps only (a second compiled variant of the
    model, kept beside the unhooked one). Only when torch._dynamo is loaded (importing it costs ~2 s)."""
    return torch.compiler.disable(hook)


class ActivationProbe:
    """The probe ``"act"``: per probed module, mean, std, zero / saturated / dead fractions of its
    output (:data:`ACT_PROBE`, axis "module", columns :attr:`modules`). See the module docstring for
    what is hooked, when and how; ``margin`` is the saturation band, ``depth`` the CUDA copies in
    flight before ``collect`` waits for the oldest."""

    def __init__(
        self,
        every: int = MonitorConfig.activations_every,
        *,
        is_block: Callable[[str, nn.Module], bool] | None = None,
        margin: float = MARGIN,
        depth: int = 4,
        defer: bool | None = None,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"the activation probe's `every` must be a whole number >= 1, not {every!r}")
        self.spec = dataclasses.replace(ACT_PROBE, every=every)
        self.margin = float(margin)
        self._is_block = is_block
        self._depth = depth
        self._defer_opt = defer
        self.defer = False  # copy in the hook, reduce at collect (CPU; see _DEFER_ELEMS)
        self._held_elems = 0  # elements of the copies waiting for collect()
        self._modules: list[ProbedModule] = []
        self._targets: list[Target] = []
        self._bounded = np.zeros(0, dtype=bool)
        self.device = torch.device("cpu")
        self.readback: HostReadback | None = None  # CUDA only
        self._handles: list[RemovableHandle] = []
        self._armed: int | None = None  # the step whose forward the installed hooks measure
        # this step's values per module: 5 device scalars, or (deferred) a copy of the output
        self._vals: list[tuple[torch.Tensor, ...] | torch.Tensor | None] = []
        self._sizes = np.zeros((2, 0))  # this step's element count and unit count per module (host)
        self._nan: tuple[torch.Tensor, ...] = ()
        self._rows: list[tuple[int, np.ndarray, list]] = []  # host path: (step, sizes, per-module values)
        self._ready: list[tuple[tuple, np.ndarray]] = []  # CUDA path: rows back, not yet collected
        self.attached = False

    # -- what is probed ----------------------------------------------------------------------------
    @property
    def modules(self) -> list[ProbedModule]:
        """The columns, in order: (name, type, kind) per probed module."""
        return list(self._modules)

    @property
    def n_modules(self) -> int:
        return len(self._modules)

    def attach(self, model: nn.Module | None, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Choose the modules of ``model`` (the optimizer is not needed). Installs no hook yet:
        :meth:`before_forward` of a probed step does."""
        if model is None:
            raise ValueError("the activation probe needs a model to watch")
        if self.attached:
            return
        model = unwrap_model(model)
        chosen = probed_modules(model, self._is_block)
        self._modules = [info for info, _ in chosen]
        self._targets = [Target(m, saturation_bounds(m), isinstance(m, CHANNEL_FIRST)) for _, m in chosen]
        self._bounded = np.array([t.bounds is not None for t in self._targets], dtype=bool)
        first = next(iter(model.parameters()), None)
        if first is None:
            first = next(iter(model.buffers()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.readback = HostReadback(self.device, self._depth) if self.device.type == "cuda" else None
        cpu = self.device.type == "cpu"
        if self._defer_opt and not cpu:
            raise ValueError(f"the activation probe defers only on CPU, not on {self.device.type}")
        self.defer = cpu if self._defer_opt is None else self._defer_opt
        nan = torch.full((), float("nan"), device=self.device)
        self._nan = (nan,) * _N_Q
        self.attached = True

    # -- around the forward and the optimizer step -------------------------------------------------
    def before_forward(self, step: int) -> None:
        """Just before the forward pass of ``step``: arm the hooks if ``every`` selects it. Values of
        an earlier armed forward that no ``before_step`` took are dropped."""
        if self._armed is not None:  # its copies are dropped with it
            self._held_elems -= sum(v.numel() for v in self._vals if isinstance(v, torch.Tensor))
            self._disarm()
        if step % self.spec.every or not self.attached:  # an unprobed step: this modulo, nothing more
            return
        n = len(self._targets)
        self._armed = step
        self._vals = [None] * n
        self._sizes = np.full((2, n), np.nan)
        hooks = [partial(self._hook, i) for i in range(n)]
        if "torch._dynamo" in sys.modules:  # a model may be compiled: see _eager
            hooks = [_eager(h) for h in hooks]
        self._handles = [t.module.register_forward_hook(h) for t, h in zip(self._targets, hooks, strict=True)]

    def before_step(self, step: int) -> None:
        """Just before ``optimizer.step()`` of a probed step: its row (NaN where nothing was measured).
        Stacks on the device; no host read."""
        assert self._nan, "attach() the activation probe to a model first"
        n = len(self._targets)
        nan = self._nan
        vals = self._vals if self._armed == step else [None] * n
        sizes = self._sizes if self._armed == step else np.full((2, n), np.nan)
        self._disarm()
        if self.readback is None:  # host memory (or meta): what the hooks left, reduced at collect()
            self._rows.append((step, sizes, vals))
            if 2 * self._held_elems > _DEFER_ELEMS:  # reduce now, so that later steps defer again
                self._reduce_held()
            return
        row = torch.stack([s for v in vals for s in (v if isinstance(v, tuple) else nan)]) if n else None
        if row is None:  # (n * 5,): module-major; collect() turns it to (5, n)
            row = nan[0].expand(0)
        elif row.dtype != torch.float32:
            row = row.float()
        self.readback.push((step, sizes), row)  # non-blocking copy into pinned memory: no sync
        self._ready += self.readback.pop_ready()

    def after_step(self, step: int) -> None:
        """Nothing to do: the row was taken before the optimizer step."""

    def _disarm(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._armed = None
        self._vals = []

    def _hook(self, i: int, module: nn.Module, args: Any, output: Any) -> None:
        if self._armed is None or self._vals[i] is not None:
            return  # not armed, or not the module's first call in this step
        if not module.training or not torch.is_grad_enabled():
            return  # eval mode, no_grad or inference_mode: not a training forward
        y = _first_float(output)
        if y is None or y.numel() == 0:
            return
        numel = y.numel()
        if (
            self.defer
            and numel <= _DEFER_MAX
            and y.device.type == "cpu"
            and self._held_elems + numel <= _DEFER_ELEMS
        ):
            # One op in the step (a step's ops cost several times their tight-loop price); the
            # arithmetic waits for collect(), when caches are warm. A copy: an in-place op later in
            # the forward (ReLU(inplace=True)) must not change what was measured.
            self._vals[i] = y.detach().to(torch.float32, copy=True)
            self._held_elems += y.numel()
            self._sizes[0, i] = y.numel()
            self._sizes[1, i] = y.shape[self._unit_dim(i, y)] if y.ndim >= 2 else 0
            return
        with torch.no_grad():
            self._measure(i, y.detach())

    def _unit_dim(self, i: int, y: torch.Tensor) -> int:
        return 1 if (self._targets[i].channel_first or y.ndim >= 4) else y.ndim - 1

    def _measure(self, i: int, y: torch.Tensor) -> None:
        # Each op here costs its fixed dispatch price (several us on CPU) more than its arithmetic on
        # a small model, so: one op per number where one exists, no stack per module (the row is
        # stacked once in before_step), and the divisions left to the host. (std_mean alone cost
        # ~50 us on a 128 x 32 CPU tensor; mean, a subtraction and a norm cost ~10.)
        if y.dtype in _HALF:
            y = y.float()
        t = self._targets[i]
        mean = y.mean()
        norm = torch.linalg.vector_norm(y - mean)  # sqrt(sum (y - mean)^2): std * sqrt(numel)
        nnz = torch.count_nonzero(y)
        if t.bounds is not None:
            lo, hi = t.bounds
            mid, half = (lo + hi) / 2, (hi - lo) / 2
            sat = torch.count_nonzero((y - mid).abs_() >= half - self.margin)
        else:
            sat = nnz  # a placeholder: collect() writes NaN for a module without bounds
        units = 0
        alive = nnz
        if y.ndim >= 2:
            dim = self._unit_dim(i, y)
            units = y.shape[dim]
            alive = torch.count_nonzero(y.abs().amax(dim=tuple(d for d in range(y.ndim) if d != dim)))
        vals = (mean, norm, nnz, sat, alive)
        if y.device != self.device:
            vals = tuple(v.to(self.device, non_blocking=True) for v in vals)
        self._vals[i] = vals
        self._sizes[0, i] = y.numel()
        self._sizes[1, i] = units

    # -- to the host -------------------------------------------------------------------------------
    def collect(self, force: bool = False) -> ProbeBlock:
        """Every row since the last call, oldest first: ``(m, 5, n_modules)`` float32. The one place
        values are read to the host (one read for all rows on CPU)."""
        n = len(self._targets)
        if self.readback is None:
            self._reduce_held()
            rows, self._rows = self._rows, []
            if not rows:
                return empty_block(self.spec, n)
            steps = [s for s, _, _ in rows]
            sizes = np.stack([z for _, z, _ in rows])
            raw = np.full((len(rows), n, _N_Q), np.nan)
            where = [
                (k, i) for k, (_, _, vals) in enumerate(rows) for i, v in enumerate(vals) if v is not None
            ]
            scalars = [rows[k][2][i] for k, i in where if isinstance(rows[k][2][i], tuple)]
            if scalars:  # every value measured on the device, in one read
                read = iter(torch.stack([x for v in scalars for x in v]).cpu().numpy().reshape(-1, _N_Q))
            for k, i in where:
                v = rows[k][2][i]
                raw[k, i] = next(read) if isinstance(v, tuple) else v
        else:
            ready, self._ready = self._ready + self.readback.pop_ready(force=force), []
            if not ready:
                return empty_block(self.spec, n)
            steps = [meta[0] for meta, _ in ready]
            sizes = np.stack([meta[1] for meta, _ in ready])
            raw = np.stack([vec.reshape(n, _N_Q) for _, vec in ready])
        return ProbeBlock(self.spec.name, np.asarray(steps, dtype=np.int64), self._fractions(raw, sizes))

    def _reduce_held(self) -> None:
        """Reduce the deferred copies of the waiting rows now (numpy; host memory: no device read).
        Copies of one shape (and unit axis and bounds) are reduced together, a handful of numpy calls
        per shape rather than per module and step: on a small model each call costs its fixed price
        many times over its arithmetic (an MLP's outputs are all one shape)."""
        groups: dict[tuple, list[tuple[list, int, np.ndarray]]] = {}
        for _, _, vals in self._rows:
            for i, v in enumerate(vals):
                if isinstance(v, torch.Tensor):
                    a = v.numpy()
                    t = self._targets[i]
                    dim = -1 if a.ndim < 2 else (1 if (t.channel_first or a.ndim >= 4) else a.ndim - 1)
                    groups.setdefault((a.shape, dim, t.bounds), []).append((vals, i, a))
        for (_, dim, bounds), items in groups.items():
            stats = self._reduce_stack(np.stack([a for _, _, a in items]), dim, bounds)
            for (vals, i, _), row in zip(items, stats, strict=True):
                vals[i] = row
        self._held_elems = 0

    def _reduce_stack(self, s: np.ndarray, dim: int, bounds: tuple[float, float] | None) -> np.ndarray:
        """What :meth:`_measure` computes on the device, for ``k`` deferred copies of one shape stacked
        on axis 0 (``dim``: the unit axis of one copy, -1 for none), in float64: ``(k, 5)``."""
        k = s.shape[0]
        flat = s.reshape(k, -1)
        mean = flat.mean(axis=1, dtype=np.float64)
        d = flat - mean[:, None]
        nnz = np.count_nonzero(flat, axis=1)
        sat = nnz
        if bounds is not None:
            lo, hi = bounds
            sat = np.count_nonzero(np.abs(flat - (lo + hi) / 2) >= (hi - lo) / 2 - self.margin, axis=1)
        alive = nnz
        if dim >= 0:
            axes = tuple(j for j in range(1, s.ndim) if j != dim + 1)
            alive = np.count_nonzero(np.abs(s).max(axis=axes), axis=1)
        return np.stack([mean, np.sqrt(np.einsum("ij,ij->i", d, d)), nnz, sat, alive], axis=1).astype(
            np.float64
        )

    def _fractions(self, raw: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Raw (m, n, 5) device values (mean, norm of the deviations, counts) and (m, 2, n) element /
        unit counts to the (m, 5, n) quantities."""
        raw = raw.transpose(0, 2, 1).astype(np.float64)
        out = raw.astype(np.float32)
        numel, units = sizes[:, 0], sizes[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, 1] = raw[:, 1] / np.sqrt(numel)
            out[:, 2] = 1.0 - raw[:, 2] / numel
            out[:, 3] = np.where(self._bounded, raw[:, 3] / numel, np.nan)
            out[:, 4] = np.where(units > 0, 1.0 - raw[:, 4] / units, np.nan)
        return out

    def detach(self) -> None:
        """Remove any installed hook; ``collect(force=True)`` still returns what was measured."""
        self._disarm()
