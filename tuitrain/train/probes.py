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

Why deferred on CPU: copying is all that has to happen inside the step (the gradients and W_t before
``optimizer.step()``, W_{t+1} after it); the arithmetic can wait. The flat path keeps up to ``capacity``
probed steps in slots of one buffer and reduces all of them in one pass when the monitor flushes
(:meth:`LayerProbe.collect`, about ten times a second): a dozen numpy calls for the lot instead of a
dozen per probed step, and run outside the step, where caches are warm (inside it each call costs
several times as much).

Why no ``.item()``: on CUDA every host read is a synchronisation that stalls the launch queue. The
probe builds one small device vector per step, :class:`HostReadback` copies it into pinned host memory
with ``non_blocking=True`` and hands it back a few steps later, once its CUDA event has completed.

What is measured (per parameter tensor ``W`` with gradient ``g`` at step ``t``):
- ``grad_norm``     ||g||_2
- ``grad_mean_abs`` mean |g| = ||g||_1 / numel (what 001 and 003 plot as "gradient flow")
- ``weight_norm``   ||W_t||_2, the weights the gradient was computed at
- ``update_ratio``  ||W_{t+1} - W_t||_2 / ||W_t||_2, the relative size of the optimizer's step

The update ratio of a zero tensor (a zero-initialised bias or BatchNorm shift before its first step) is
undefined, not infinite: dividing by ``max(||W_t||, float32 tiny)`` overflowed to Inf for any real step
and raised a false NaN/Inf alert. Where ``||W_t||`` is zero, or so close to it that the quotient is not a
finite float32, the stored value is ``||dW||`` itself (0 where nothing moved), the step measured
against a unit weight norm (docs/run-file.md). A ratio is non-finite only when ``W`` or ``dW`` is.
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
_FLAT_ORDER = [1, 0, 2, 3]  # rows of the flat path's sums (|g|, g^2, W^2, dW^2) in PROBE_NAMES order

# Largest model (elements over all parameter tensors) the CPU flat path takes: below it the per-tensor
# call overhead of ``_foreach_norm`` dominates; above it the flat path's extra passes over memory cost
# more than they save (ResNet18, 11M: ~100 ms a step flat, ~60 ms with _foreach on one core), and it
# holds 7 extra floats per parameter where the _foreach path holds 1.
_FLAT_MAX_NUMEL = 1 << 20
# Memory the flat path may hold for probed steps waiting to be reduced (7 floats per parameter per
# slot); at most _MAX_SLOTS slots. Tiny models get 64 slots, a 1M-element model 2.
_DEFER_BYTES = 64 << 20
_MAX_SLOTS = 64


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
        self._done: list[np.ndarray] = []  # deferred results already computed, oldest first
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
        self._sizes = sizes
        self._starts = np.cumsum([0, *sizes[:-1]]).astype(np.intp)
        self._numel_np = np.asarray(sizes, dtype=np.float32)
        self.capacity = int(min(_MAX_SLOTS, max(1, _DEFER_BYTES // (7 * 4 * total))))
        # slot k of _buf: the grads, W_t and W_{t+1} (then W_{t+1} - W_t) of one probed step, every
        # tensor flattened in turn; slot k of _terms: what is summed per tensor, |g|, g^2, W_t^2, dW^2
        self._buf = torch.empty((self.capacity, 3, total), dtype=torch.float32)
        self._buf_np = self._buf.numpy()  # the same memory, seen by numpy
        self._terms = np.empty((self.capacity, _N_PROBES, total), dtype=np.float32)
        self._slot_views: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []  # made on first use
        self._slot = 0  # probed steps copied and not yet reduced: slots [0, _slot)

    def _views(self, k: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Views of slot ``k`` shaped like the parameters: (grads + W_t, W_{t+1})."""
        while len(self._slot_views) <= k:
            rows = self._buf[len(self._slot_views)]
            self._slot_views.append((self._shaped(rows[0]) + self._shaped(rows[1]), self._shaped(rows[2])))
        return self._slot_views[k]

    def _shaped(self, row: torch.Tensor) -> list[torch.Tensor]:
        starts = self._starts.tolist()
        return [
            row[s : s + n].view(p.shape) for s, n, p in zip(starts, self._sizes, self.params, strict=True)
        ]

    @property
    def n_layers(self) -> int:
        return len(self.params)

    @property
    def pending(self) -> int:
        """Probed steps measured and not yet returned by :meth:`collect`."""
        return (self._slot if self.flat else 0) + sum(len(d) for d in self._done)

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
            if self._slot == self.capacity:  # every slot waits: reduce them now to free them
                self._done.append(self._reduce_slots())
            torch._foreach_copy_(self._views(self._slot)[0], grads + self.params)
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
        du, w = out[3], out[2]
        ratio = du / w  # ||dW|| / ||W_t||; Inf or NaN where ||W_t|| is 0 (see the module docstring)
        undefined = ~torch.isfinite(ratio) & torch.isfinite(du) & torch.isfinite(w)
        out[3] = torch.where(undefined, du, ratio)  # on the device: no host sync
        return out

    @torch.no_grad()
    def after_step_deferred(self) -> None:
        """Finish this probed step's measurement for a later :meth:`collect` (CPU models).

        The flat path only copies W_{t+1} into the step's slot; the ``_foreach`` path (large models,
        whose steps dwarf the arithmetic) computes at once and keeps the result.
        """
        if not self.flat:
            self._done.append(self.after_step().numpy()[None])
            return
        assert self._armed, "before_step() must run before after_step()"
        self._armed = False
        torch._foreach_copy_(self._views(self._slot)[1], self.params)
        self._slot += 1

    def collect(self) -> np.ndarray:
        """Every deferred step's statistics, oldest first: a new ``(steps, len(PROBE_NAMES), n_layers)``
        float32 array (zero steps when nothing waits)."""
        parts, self._done = self._done, []
        if self.flat and self._slot:
            armed = self._slot  # the slot a before_step() without its after_step() yet copied into
            parts.append(self._reduce_slots())
            if self._armed:  # called between the two: that step's grads and W_t move to slot 0
                self._buf[0, :2] = self._buf[armed, :2]
        if not parts:
            return np.zeros((0, _N_PROBES, self.n_layers), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @torch.no_grad()
    def after_step_host(self) -> np.ndarray:
        """:meth:`after_step` as a new numpy array, computed now (for callers that do not defer)."""
        if self.pending:
            raise RuntimeError("deferred steps are waiting: collect() them before after_step_host()")
        self.after_step_deferred()
        return self.collect()[0]

    def _reduce_slots(self) -> np.ndarray:
        """Reduce the waiting slots in one pass (one numpy call per operation for all of them)."""
        k, self._slot = self._slot, 0
        f, t = self._buf_np[:k], self._terms[:k]
        # A diverging run overflows here (squares past 3.4e38, Inf - Inf): Inf and NaN are then the
        # right statistics, which the alerts report; numpy's RuntimeWarning must not reach the user.
        with np.errstate(over="ignore", invalid="ignore"):
            np.subtract(f[:, 2], f[:, 1], out=f[:, 2])  # W_{t+1} - W_t
            np.abs(f[:, 0], out=t[:, 0])
            np.square(f, out=t[:, 1:])
            sums = np.add.reduceat(t, self._starts, axis=2)  # per-tensor segment sums, pairwise: accurate
            np.sqrt(sums[:, 1:], out=sums[:, 1:])
        out = sums[:, _FLAT_ORDER]  # ||g||_2, ||g||_1, ||W_t||, ||dW||: PROBE_NAMES order (a copy)
        out[:, 1] /= self._numel_np
        update_ratio(out[:, 3], out[:, 2])
        return out


def update_ratio(du: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``du`` (||dW||) divided by ``w`` (||W_t||) in place, without a warning: where the quotient is
    undefined (``w`` zero, or so small that it overflows) and both are finite, ``du`` is kept."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ratio = du / w
    undefined = ~np.isfinite(ratio) & np.isfinite(du) & np.isfinite(w)
    np.copyto(du, ratio, where=~undefined)
    return du


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
        self._new_event: Callable[[], _EventLike] | None = event_factory or (
            torch.cuda.Event if self.cuda else None
        )
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
