"""Per-layer training statistics, computed for all parameter tensors at once on the device.

Why fused: a model like ResNet18 has 62 parameter tensors and a deep MLP hundreds; one Python call and
one kernel launch per tensor per statistic would cost more than a tiny model's whole step. The
``torch._foreach_*`` ops take the whole list in one call: on CUDA that is a handful of fused kernels.

Why a second, "flat" path on CPU: there ``torch._foreach_norm`` is a loop over the tensors (about 3 us
each), so four statistics of the 26-tensor toy MLP cost ~300 us a step, a tenth or more of its whole
step. For float32 models small enough that the extra memory does not matter (``_FLAT_MAX_NUMEL``), the
probe instead copies the gradients and W_t into one flat buffer before the step and W_{t+1} after it,
one ``torch._foreach_copy_`` call each, and reduces every tensor's segment at once with
``numpy.add.reduceat`` (pairwise summation: as accurate as ``torch.linalg.vector_norm``). On this path
a library call inside a training step costs several times what it costs in a tight loop (cold caches),
so the count of calls is what is kept small. ``bench/overhead.py`` measures the result.

Why no ``.item()``: on CUDA every host read is a synchronisation that stalls the launch queue. The
probe builds one small device vector per step, :class:`HostReadback` copies it into pinned host memory
with ``non_blocking=True`` and hands it back a few steps later, once its CUDA event has completed.

What is measured (per parameter tensor ``W`` with gradient ``g`` at step ``t``):
- ``grad_norm``     ||g||_2
- ``grad_mean_abs`` mean |g| = ||g||_1 / numel (what 001 and 003 plot as "gradient flow")
- ``weight_norm``   ||W_t||_2, the weights the gradient was computed at
- ``update_ratio``  ||W_{t+1} - W_t||_2 / ||W_t||_2, the relative size of the optimizer's step
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from tuitrain.events import PROBE_NAMES

_N_PROBES = len(PROBE_NAMES)
_TINY = float(torch.finfo(torch.float32).tiny)
_FLAT_ORDER = [1, 0, 2, 3]  # rows of the flat path's sums (|g|, g^2, W^2, dW^2) in PROBE_NAMES order

# Largest model (elements over all parameter tensors) the CPU flat path takes: below it the per-tensor
# call overhead of ``_foreach_norm`` dominates; above it the flat path's extra passes over memory cost
# more than they save (ResNet18, 11M: ~100 ms a step flat, ~60 ms with _foreach on one core), and it
# holds 7 extra floats per parameter where the _foreach path holds 1.
_FLAT_MAX_NUMEL = 1 << 20


class LayerProbe:
    """Snapshot before ``optimizer.step()``, measure after it.

    ``flat`` picks the implementation: ``None`` decides (the flat path for CPU float32 models of at most
    ``_FLAT_MAX_NUMEL`` elements, the ``_foreach`` path otherwise); tests force either to compare them.
    Both return the same values up to float32 rounding.
    """

    def __init__(self, params: list[torch.nn.Parameter], flat: bool | None = None) -> None:
        if not params:
            raise ValueError("the model has no trainable parameters to monitor")
        self.params = list(params)
        device = params[0].device
        sizes = [p.numel() for p in self.params]
        self.numel = torch.tensor([float(n) for n in sizes], device=device)
        self._zeros: dict[int, torch.Tensor] = {}
        self._pre: tuple[torch.Tensor, ...] | None = None
        self._armed = False  # flat path: before_step() ran since the last after_step()
        can_flat = (
            device.type == "cpu"
            and all(p.dtype == torch.float32 for p in self.params)
            and all(n > 0 for n in sizes)  # reduceat needs non-empty segments
        )
        if flat is None:
            flat = can_flat and sum(sizes) <= _FLAT_MAX_NUMEL
        elif flat and not can_flat:
            raise ValueError("the flat probe needs float32 CPU parameters with at least one element each")
        self.flat = flat
        if flat:
            self._init_flat(sizes)
        else:
            # One copy of the weights: the price of an exact update ratio for every tensor.
            self._prev = [torch.empty_like(p, memory_format=torch.preserve_format) for p in self.params]

    def _init_flat(self, sizes: list[int]) -> None:
        total = sum(sizes)
        starts = np.cumsum([0, *sizes[:-1]])
        self._starts = starts.astype(np.intp)
        self._numel_np = np.asarray(sizes, dtype=np.float32)
        # rows of _flat: the grads, W_t and W_{t+1} (then W_{t+1} - W_t), every tensor flattened in turn;
        # rows of _terms: what is summed per tensor, |g|, g^2, W_t^2 and (W_{t+1} - W_t)^2
        self._flat = torch.empty((3, total), dtype=torch.float32)
        self._flat_np = self._flat.numpy()  # the same memory, seen by numpy
        self._terms = np.empty((_N_PROBES, total), dtype=np.float32)

        def views(row: int) -> list[torch.Tensor]:
            r = self._flat[row]
            return [r[s : s + n].view(p.shape) for s, n, p in zip(starts, sizes, self.params, strict=True)]

        self._before_views = views(0) + views(1)  # one _foreach_copy_ fills grads and W_t
        self._after_views = views(2)

    @property
    def n_layers(self) -> int:
        return len(self.params)

    def _grads(self) -> list[torch.Tensor]:
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):  # not `None in grads`: that compares tensors, ~30 us each
            for i, p in enumerate(self.params):
                if grads[i] is None:  # unused in this step's forward (e.g. a branch not taken)
                    if i not in self._zeros:
                        self._zeros[i] = torch.zeros_like(p)
                    grads[i] = self._zeros[i]
        return grads  # type: ignore[return-value]

    @torch.no_grad()
    def before_step(self) -> None:
        grads = self._grads()
        if self.flat:
            torch._foreach_copy_(self._before_views, grads + self.params)
            self._armed = True
            return
        n = len(grads)
        l2 = torch._foreach_norm(grads + self.params, 2)  # ||g|| and ||W_t|| in one call
        l1 = torch._foreach_norm(grads, 1)
        torch._foreach_copy_(self._prev, self.params)
        self._pre = (*l2[:n], *l1, *l2[n:])

    @torch.no_grad()
    def after_step(self) -> torch.Tensor:
        """Return a ``(len(PROBE_NAMES), n_layers)`` float32 device tensor for this step (a new one)."""
        if self.flat:
            return torch.from_numpy(self.after_step_host())
        assert self._pre is not None, "before_step() must run before after_step()"
        pre, self._pre = self._pre, None
        torch._foreach_sub_(self._prev, self.params)  # prev := W_t - W_{t+1}
        un = torch._foreach_norm(self._prev, 2)
        out = torch.stack([*pre, *un]).view(_N_PROBES, self.n_layers)  # rows in PROBE_NAMES order
        if out.dtype != torch.float32:
            out = out.float()
        out[1].div_(self.numel)  # ||g||_1 / numel
        out[3].div_(out[2].clamp_min(_TINY))  # ||dW|| / ||W_t||
        return out

    @torch.no_grad()
    def after_step_host(self) -> np.ndarray:
        """:meth:`after_step` as a new numpy array, for CPU models (no tensor round trip on the flat path)."""
        if not self.flat:
            return self.after_step().numpy()
        assert self._armed, "before_step() must run before after_step()"
        self._armed = False
        torch._foreach_copy_(self._after_views, self.params)
        f, t = self._flat_np, self._terms
        np.subtract(f[2], f[1], out=f[2])  # W_{t+1} - W_t
        np.abs(f[0], out=t[0])
        np.square(f, out=t[1:])
        sums = np.add.reduceat(t, self._starts, axis=1)  # per-tensor segment sums, pairwise: accurate
        np.sqrt(sums[1:], out=sums[1:])
        out = sums[_FLAT_ORDER]  # ||g||_2, ||g||_1, ||W_t||, ||dW||: PROBE_NAMES order
        out[1] /= self._numel_np
        out[3] /= np.maximum(out[2], _TINY)
        return out


class _EventLike(Protocol):
    """What :class:`HostReadback` needs of a ``torch.cuda.Event``."""

    def record(self) -> None: ...

    def query(self) -> bool: ...

    def synchronize(self) -> None: ...


@dataclass
class _Pending:
    meta: tuple
    host: torch.Tensor
    event: _EventLike | None


class HostReadback:
    """Hands small device vectors to the host without a host synchronisation per step.

    On CPU the tensor is already host memory and comes back at once. On CUDA it is copied
    non-blocking into a pooled pinned buffer and released once its event has completed, or once
    more than ``depth`` are waiting (then we wait on the oldest, which is ``depth`` steps old and
    almost always done already). Buffers and events are pooled, so the steady state allocates
    neither pinned memory nor CUDA events.

    ``event_factory`` exists for tests: with it the deferred (CUDA) bookkeeping runs on any device,
    with the given event type standing in for ``torch.cuda.Event``.
    """

    def __init__(
        self, device: torch.device, depth: int = 4, *, event_factory: Callable[[], _EventLike] | None = None
    ) -> None:
        self.cuda = device.type == "cuda"
        self.depth = depth
        self._deferred = self.cuda or event_factory is not None
        self._new_event: Callable[[], _EventLike] | None = event_factory or (torch.cuda.Event if self.cuda else None)
        self._pending: deque[_Pending] = deque()
        self._pool: dict[int, list[tuple[torch.Tensor, _EventLike]]] = {}

    @property
    def pending(self) -> int:
        """Vectors pushed and not yet handed back."""
        return len(self._pending)

    def push(self, meta: tuple, vec: torch.Tensor) -> None:
        vec = vec.detach().reshape(-1)
        if vec.dtype != torch.float32:
            vec = vec.float()
        if not self._deferred:
            self._pending.append(_Pending(meta, vec.cpu(), None))  # .cpu(): no copy on CPU
            return
        n = vec.numel()
        pool = self._pool.get(n)
        if pool:
            host, event = pool.pop()
        else:
            assert self._new_event is not None
            host, event = torch.empty(n, dtype=torch.float32, pin_memory=self.cuda), self._new_event()
        host.copy_(vec, non_blocking=True)
        event.record()
        self._pending.append(_Pending(meta, host, event))

    def pop_ready(self, force: bool = False) -> list[tuple[tuple, np.ndarray]]:
        out: list[tuple[tuple, np.ndarray]] = []
        pending = self._pending
        while pending:
            head = pending[0]
            event = head.event
            if event is not None:
                overdue = force or len(pending) > self.depth
                if not overdue and not event.query():  # query() never blocks
                    break
                if overdue:
                    event.synchronize()  # waits only if the copy of `depth` steps ago is still running
            pending.popleft()
            if event is not None:
                arr = head.host.numpy().copy()
                self._pool.setdefault(head.host.numel(), []).append((head.host, event))
            else:
                arr = head.host.numpy()
            out.append((head.meta, arr))
        return out
