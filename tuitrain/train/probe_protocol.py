"""What a probe is (:class:`Probe`), and the built-in one, the fused gradient probe (:class:`GradientProbe`).

Why a protocol: the Monitor (``tuitrain.train.monitor``) should not know what a probe measures, only
when to ask. It calls ``before_step(step)`` just before ``optimizer.step()`` and ``after_step(step)``
just after it, on the steps the probe's ``spec.every`` selects (``step % every == 0``), and
``collect(force)`` at each flush (about ten times a second). A probe of the forward pass (the
activation probe) also has ``before_forward(step)``, called before every step's forward: the engine
calls it right before ``model(x)`` (``Monitor.before_forward``); a user loop's Monitor calls it itself
for the next step, at ``add_probe``, after each optimizer step and at each commit. Whatever a probe measures goes out in
one :class:`~tuitrain.events.ProbeBlock` per flush, under its ``spec.name``, and the run file stores
it as the spec declares (``/probes/<name>/<quantity>``): a reader needs no list of probes of its own.

Why each probe owns its device-to-host path: what a probe may read, and when, is what decides its
cost. The gradient probe keeps everything of the fused statistics of :mod:`tuitrain.train.probes`:
the flat CPU path with its deferred reduction at the flush, and on CUDA a pinned, pooled
:class:`~tuitrain.train.probes.HostReadback` that never synchronises per step. A probe written in a
test or by a user may be simpler (a ``.item()`` per step is its own business).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from tuitrain.events import GRAD_PROBE, LayerInfo, ProbeBlock, ProbeSpec
from tuitrain.train.probes import HostReadback, LayerProbe

__all__ = ["GradientProbe", "Probe", "empty_block", "unwrap_model"]


@runtime_checkable
class Probe(Protocol):
    """A measurement taken around the optimizer step of the steps ``spec.every`` selects.

    - ``attach(model, optimizer)``: once, before the first step; install the hooks it needs (either
      may be ``None`` when the caller has none to give).
    - ``before_step(step)`` / ``after_step(step)``: just before and just after ``optimizer.step()`` of
      a probed step (``step`` is the Monitor's step index, from 0). Must not read the device.
    - ``before_forward(step)`` (optional; not part of the protocol's check): before the forward pass
      of every step, probed or not (see the module docstring for who calls it); a probe arms its
      forward hooks when ``every`` selects ``step`` and otherwise does no more than that modulo.
    - A probe whose ``before_step(step)`` ran gives exactly one row for ``step`` once its
      ``after_step(step)`` ran (NaN where it measured nothing): the Monitor counts rows owed that way.
    - ``collect(force)``: every row measured since the last call, oldest first, as one
      :class:`ProbeBlock` of shape ``(m, len(spec.quantities), n_axis)``; ``force`` (end of an epoch,
      of the run) means every measured row, even one whose device copy is still in flight.
    - ``detach()``: remove the hooks; no call follows but ``collect(force=True)``.
    """

    spec: ProbeSpec

    def attach(self, model: nn.Module | None, optimizer: torch.optim.Optimizer | None) -> None: ...

    def before_step(self, step: int) -> None: ...

    def after_step(self, step: int) -> None: ...

    def collect(self, force: bool = False) -> ProbeBlock: ...

    def detach(self) -> None: ...


def empty_block(spec: ProbeSpec, n_axis: int) -> ProbeBlock:
    """A block of no rows, of the right shape (what a probe returns when nothing waits)."""
    return ProbeBlock(
        spec.name, np.zeros(0, np.int64), np.zeros((0, len(spec.quantities), n_axis), np.float32)
    )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's own module under ``torch.compile`` (``_orig_mod``) and ``DistributedDataParallel`` /
    ``DataParallel`` (``.module``): parameter names are then those of ``model.named_parameters()``
    without the wrappers' prefixes."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


class GradientProbe:
    """The built-in probe ``"grad"``: per parameter tensor, ||g||, mean |g|, ||W_t|| and
    ||W_{t+1} - W_t|| / ||W_t|| (:data:`~tuitrain.events.GRAD_PROBE`; axis "tensor", the layers of
    ``RunStarted.layers``).

    Give it the parameters and their :class:`LayerInfo` (the engine), or neither and a model at
    :meth:`attach` (a user's loop: every trainable tensor, in ``named_parameters()`` order, wrappers
    unwrapped). It installs no hook: the Monitor calls it around the optimizer step.

    On CPU it copies in the step and reduces at :meth:`collect` (the flat, deferred path); elsewhere
    each probed step's ``(4, n_layers)`` device vector goes through its own :class:`HostReadback`, and
    ``collect`` returns the rows whose copies have completed (all of them with ``force``).
    """

    def __init__(
        self,
        params: list[nn.Parameter] | None = None,
        layers: list[LayerInfo] | None = None,
        *,
        every: int = 1,
        flat: bool | None = None,
        depth: int = 4,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"the gradient probe's `every` must be a whole number >= 1, not {every!r}")
        self.spec = dataclasses.replace(GRAD_PROBE, every=every)
        self.layers: list[LayerInfo] = []
        self.params: list[nn.Parameter] = []
        self.layer_probe: LayerProbe | None = None  # the fused statistics, once bound to parameters
        self.readback: HostReadback | None = None  # devices other than the CPU
        self.host = True  # values are host memory: measured in the step, reduced at collect()
        self._flat, self._depth = flat, depth
        self._steps: list[int] = []  # host path: probed steps measured and not yet collected
        self._ready: list[tuple[tuple, np.ndarray]] = []  # device path: rows back, not yet collected
        if params is not None:
            self._bind(list(params), layers)

    @property
    def n_layers(self) -> int:
        return len(self.params)

    def _bind(self, params: list[nn.Parameter], layers: list[LayerInfo] | None) -> None:
        if layers is None:
            layers = [
                LayerInfo(f"param{i}", tuple(p.shape), p.numel(), "weight", "", "Parameter")
                for i, p in enumerate(params)
            ]
        if len(layers) != len(params):
            raise ValueError(f"{len(params)} parameter tensors but {len(layers)} layers describe them")
        self.layer_probe = LayerProbe(params, flat=self._flat)
        self.params, self.layers = params, list(layers)
        device = params[0].device
        self.host = device.type == "cpu"
        self.readback = None if self.host else HostReadback(device, self._depth)

    def attach(self, model: nn.Module | None, optimizer: torch.optim.Optimizer | None = None) -> None:
        if self.layer_probe is not None:
            return  # built with its parameters
        if model is None:
            raise ValueError("the gradient probe needs a model (or its parameters) to watch")
        from tuitrain.train.summary import layer_infos

        model = unwrap_model(model)
        self._bind([p for p in model.parameters() if p.requires_grad], layer_infos(model))

    def before_step(self, step: int) -> None:
        assert self.layer_probe is not None, "attach() the gradient probe to a model first"
        self.layer_probe.before_step()

    def after_step(self, step: int) -> None:
        probe = self.layer_probe
        assert probe is not None, "attach() the gradient probe to a model first"
        if self.host:
            probe.after_step_deferred()
            self._steps.append(step)
        else:
            rb = self.readback
            assert rb is not None
            rb.push((step,), probe.after_step())  # copied non-blocking: no host sync
            # Take what has arrived (queries, no wait; the oldest past `depth` is long done): at most
            # `depth` copies in flight, so the pool of pinned buffers and events stays that small.
            self._ready += rb.pop_ready()

    def collect(self, force: bool = False) -> ProbeBlock:
        n = self.n_layers
        if self.layer_probe is None:
            return empty_block(self.spec, 0)
        if self.host:
            values = self.layer_probe.collect()
            steps, self._steps = self._steps, []
        else:
            assert self.readback is not None
            ready, self._ready = self._ready + self.readback.pop_ready(force=force), []
            if not ready:
                return empty_block(self.spec, n)
            steps = [meta[0] for meta, _ in ready]
            values = np.stack([vec.reshape(len(self.spec.quantities), n) for _, vec in ready])
        assert len(values) == len(steps), "probed steps and probe results out of step"
        return ProbeBlock(self.spec.name, np.asarray(steps, dtype=np.int64), values)

    def detach(self) -> None:
        """Nothing to remove: the Monitor calls this probe, no hook does."""
