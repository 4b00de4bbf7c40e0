"""Data-parallel training under ``torchrun``: process group, sharding, metric reduction, agreed control.

The engine stays one flat loop; everything that differs between one process and N lives here, and
every helper is a no-op when ``WORLD_SIZE`` is 1 (or unset), so the single-process path costs nothing.

Who does what (the contract the engine and the CLI rely on):

* ``torch.distributed.run`` (torchrun) starts one process per device and sets ``RANK``,
  ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init` reads them.
* Every rank trains on its shard of the data; gradients are averaged by ``DistributedDataParallel``
  during ``backward()``, so after it every rank holds the global gradient and rank 0's per-layer
  probes are the global statistics.
* Only rank 0 has sinks (run file, console, dashboard); the CLI builds none on the other ranks.
* Per-step loss and accuracy are reduced over ranks before they reach the monitor, so every rank's
  monitor sees the same global numbers (and its epoch means are global too, with no extra pass).
* Validation and test: each rank evaluates a contiguous slice of the split and the sums
  (loss, correct, count) are added up, so the whole split is evaluated once, in 1/N of the time.
* Commands (pause, resume, stop, from the dashboard on rank 0 or from Ctrl-C / SIGTERM on any rank)
  are agreed on by a collective, so all ranks stop or pause at the same step and none is left waiting
  in an all-reduce that its peers will never join.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist

from tuitrain.config import ConfigError

# Commands as numbers, so that the collective can agree with one MAX all-reduce: a stop anywhere wins
# over a pause, a pause over a resume, a resume over nothing.
_COMMANDS: tuple[str | None, ...] = (None, "resume", "pause", "stop")


class PeerFailed(ConfigError):
    """Another rank failed first and said why; this one has nothing to add (the CLI exits quietly, so
    that torchrun waits for the rank that failed to finish its report instead of killing it)."""


class Control(Protocol):
    def poll(self, timeout: float = 0.0) -> str | None: ...


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it; 1 outside a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def env_rank() -> int:
    """``RANK`` as torchrun set it; 0 outside a launcher."""
    return int(os.environ.get("RANK", "0") or 0)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job. ``Dist()`` is the single-process job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    control_group: Any = None  # gloo group for host-side agreement (None: the default group)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self, device_label: str) -> tuple[str, dict[str, str]]:
        """The device as the run file shows it ("2 x cpu (gloo)") and the job's entries for
        ``RunStarted.versions``; unchanged and empty on one process."""
        if not self.enabled:
            return device_label, {}
        name, _, detail = device_label.partition(" (")  # "cuda (NVIDIA H100)" -> "cuda (NVIDIA H100, nccl)"
        detail = f"{detail.rstrip(')')}, {self.backend}" if detail else self.backend
        return f"{self.world_size} x {name} ({detail})", {
            "world_size": str(self.world_size),
            "backend": self.backend,
        }

    @contextlib.contextmanager
    def local_main_first(self) -> Iterator[None]:
        """Run the block on local rank 0 first and on the other ranks of the machine after it, e.g. so
        that one process downloads CIFAR and the others read its copy instead of racing to write it.

        If it fails on local rank 0 (CIFAR absent offline), the others do not try again (a second
        20 s download timeout each) nor die in a barrier whose peer has left: they raise a short
        ConfigError pointing at rank 0's message.
        """
        if not self.enabled:
            yield
            return
        ok = torch.ones(1, dtype=torch.int32)
        if self.local_rank != 0:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN, group=self.control_group)  # wait for local rank 0
            if not ok.item():
                raise PeerFailed("local rank 0 could not set up (its error is above).")
            yield
            return
        try:
            yield
        except BaseException:
            ok.zero_()
            raise
        finally:
            with contextlib.suppress(RuntimeError):  # a peer that already left must not hide our error
                dist.all_reduce(ok, op=dist.ReduceOp.MIN, group=self.control_group)

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics), so that all ranks evaluate
        the same model: the one rank 0 writes to the checkpoint. DDP only does this before a forward."""
        if self.enabled:
            for buf in model.buffers():
                dist.broadcast(buf, src=0)

    def local_batch(self, batch_size: int) -> int:
        """Each rank's share of the global ``batch_size``; it must divide evenly, so that the global
        batch, the learning rate that goes with it and the steps per epoch do not change with N."""
        if batch_size % self.world_size:
            raise ConfigError(
                f"`train.batch_size` = {batch_size} is the global batch and must be divisible by the "
                f"number of processes ({self.world_size}); try --batch-size "
                f"{max(self.world_size, batch_size // self.world_size * self.world_size)}."
            )
        return batch_size // self.world_size

    def reduce_step(self, loss: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean of the ranks' losses, sum of their correct counts) for one step.

        Every rank has the same local batch size (the shards are equal), so the mean of the per-rank
        mean losses is the mean loss over the global batch. One all-reduce of two numbers; on CUDA it
        is queued on the stream like any kernel, so it adds no host synchronisation.
        """
        if not self.enabled:
            return loss, correct
        both = torch.stack([loss.detach().float(), correct.detach().float()])
        dist.all_reduce(both, op=dist.ReduceOp.SUM)
        return both[0] / self.world_size, both[1]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (in place, returned for convenience); identity on one process."""
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def wrap_model(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``DistributedDataParallel`` around ``model`` (the model itself on one process).

        DDP broadcasts rank 0's weights and buffers when it is built, so all ranks start equal, and
        averages gradients in ``backward()``. BatchNorm keeps per-rank batch statistics (PyTorch's
        default; SyncBatchNorm would add a collective per layer per step) and rank 0's running
        statistics are broadcast at each forward.
        """
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def control(self, control: Control | None) -> Control | None:
        """``control`` made collective: see :class:`AgreedControl`. Unchanged on one process."""
        return AgreedControl(control, self) if self.enabled else control


class AgreedControl:
    """Every rank's commands, agreed on by all ranks at the same step.

    Each call of :meth:`poll` is a collective: every rank must call it equally often, which the loop
    guarantees because the ranks take the same steps and, once paused, all poll in the same waiting
    loop. The all-reduce runs on the CPU over gloo (a separate group when training uses NCCL), so it
    never synchronises with the GPU; it costs tens of microseconds on one machine, a network round trip
    across machines, and is made only every ``every`` steps while training (a command waits at most
    that many steps) and on every poll while paused.
    """

    def __init__(self, local: Control | None, job: Dist, every: int = 4) -> None:
        self.local = local
        self.group = job.control_group
        self.every = every
        self.calls = 0
        self.flag = torch.zeros(1, dtype=torch.int32)

    def poll(self, timeout: float = 0.0) -> str | None:
        self.calls += 1
        if not timeout and self.calls % self.every:
            return None
        cmd = self.local.poll(timeout) if self.local is not None else None
        self.flag[0] = _COMMANDS.index(cmd) if cmd in _COMMANDS else 0
        dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, group=self.group)
        return _COMMANDS[int(self.flag[0])]


SINGLE = Dist()  # the single-process job


def init(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up, if any, and return this rank's place and device.

    NCCL on CUDA (one GPU per process: ``cuda:LOCAL_RANK``), gloo on the CPU. MPS has no collective
    backend, so a distributed run there is refused with a clear message rather than a crash inside
    the first all-reduce.
    """
    world = env_world_size()
    if world <= 1:
        return SINGLE, device
    rank, local_rank = env_rank(), int(os.environ.get("LOCAL_RANK", "0") or 0)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                "use --nproc-per-node at most the number of GPUs."
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(
            f"distributed training runs on CUDA (nccl) or the CPU (gloo), not on {device.type}; "
            "use --device cpu or cuda."
        )
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    group = dist.new_group(backend="gloo") if backend != "gloo" else None
    return Dist(rank, world, local_rank, backend, group), device


def shutdown() -> None:
    """Leave the process group (also after a failure; harmless when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
