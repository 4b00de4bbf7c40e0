"""Per-layer training statistics, computed for all parameter tensors at once on the device.

Why fused: a model like ResNet18 has 62 parameter tensors and a deep MLP hundreds; one Python call and
one kernel launch per tensor per statistic would cost more than a tiny model's whole step. The
``torch._foreach_*`` ops take the whole list in one call.

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
from dataclasses import dataclass

import numpy as np
import torch

from tuitrain.events import PROBE_NAMES


class LayerProbe:
    """Snapshot before ``optimizer.step()``, measure after it."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        if not params:
            raise ValueError("the model has no trainable parameters to monitor")
        self.params = params
        device = params[0].device
        self.numel = torch.tensor([float(p.numel()) for p in params], device=device)
        # One copy of the weights: the price of an exact update ratio for every tensor.
        self._prev = [torch.empty_like(p, memory_format=torch.preserve_format) for p in params]
        self._zeros: dict[int, torch.Tensor] = {}
        self._pre: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def n_layers(self) -> int:
        return len(self.params)

    def _grads(self) -> list[torch.Tensor]:
        grads = []
        for i, p in enumerate(self.params):
            if p.grad is None:  # unused in this step's forward (e.g. a branch not taken)
                if i not in self._zeros:
                    self._zeros[i] = torch.zeros_like(p)
                grads.append(self._zeros[i])
            else:
                grads.append(p.grad)
        return grads

    @torch.no_grad()
    def before_step(self) -> None:
        grads = self._grads()
        gn = torch.stack(torch._foreach_norm(grads, 2))
        g1 = torch.stack(torch._foreach_norm(grads, 1)) / self.numel
        wn = torch.stack(torch._foreach_norm(self.params, 2))
        torch._foreach_copy_(self._prev, [p.detach() for p in self.params])
        self._pre = (gn, g1, wn)

    @torch.no_grad()
    def after_step(self) -> torch.Tensor:
        """Return a ``(len(PROBE_NAMES), n_layers)`` float32 device tensor for this step."""
        assert self._pre is not None, "before_step() must run before after_step()"
        gn, g1, wn = self._pre
        self._pre = None
        torch._foreach_sub_(self._prev, [p.detach() for p in self.params])  # prev := W_t - W_{t+1}
        un = torch.stack(torch._foreach_norm(self._prev, 2))
        ratio = un / wn.clamp_min(torch.finfo(wn.dtype).tiny)
        out = torch.stack([gn, g1, wn, ratio]).float()
        assert out.shape[0] == len(PROBE_NAMES)
        return out


@dataclass
class _Pending:
    meta: tuple
    host: torch.Tensor
    event: torch.cuda.Event | None


class HostReadback:
    """Hands small device vectors to the host without a host synchronisation per step.

    On CPU the tensor is already host memory and comes back at once. On CUDA it is copied
    non-blocking into a pooled pinned buffer and released once its event has completed, or once
    more than ``depth`` are waiting (then we wait on the oldest, which is ``depth`` steps old and
    almost always done already).
    """

    def __init__(self, device: torch.device, depth: int = 4) -> None:
        self.cuda = device.type == "cuda"
        self.depth = depth
        self._pending: deque[_Pending] = deque()
        self._pool: dict[int, list[torch.Tensor]] = {}

    def push(self, meta: tuple, vec: torch.Tensor) -> None:
        vec = vec.detach().reshape(-1).float()
        if not self.cuda:
            self._pending.append(_Pending(meta, vec, None))
            return
        n = vec.numel()
        pool = self._pool.setdefault(n, [])
        host = pool.pop() if pool else torch.empty(n, dtype=torch.float32, pin_memory=True)
        host.copy_(vec, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append(_Pending(meta, host, event))

    def pop_ready(self, force: bool = False) -> list[tuple[tuple, np.ndarray]]:
        out = []
        while self._pending:
            head = self._pending[0]
            if head.event is not None and not (force or len(self._pending) > self.depth or head.event.query()):
                break
            self._pending.popleft()
            if head.event is not None:
                head.event.synchronize()  # no-op in steady state: the event has completed
                arr = head.host.numpy().copy()
                self._pool.setdefault(head.host.numel(), []).append(head.host)
            else:
                arr = head.host.numpy()
            out.append((head.meta, arr))
        return out
