"""Benchmark: what tuitrain's per-layer probing every step costs a training loop (a script, not a test).

Three ways to train the same model on the same data with the same optimizer and seed, run side by side
in ONE process, in interleaved blocks (a, b, c, b, c, a, ...) so that a noisy, shared machine slows
all three alike:

(a) ``bare``  a plain PyTorch loop: forward, cross-entropy, backward, ``optimizer.step()``. The loss is
    summed on the device and read to the host once per block, as a careful user logs it (never per
    step on CUDA).
(b) ``tuitrain``  the same loop around tuitrain's real :class:`~tuitrain.train.monitor.Monitor` with
    every probe on (``monitor.every`` = 1, or 10 for the ``mlp10`` case), feeding the same sinks the
    ``watch`` worker uses: a :class:`~tuitrain.runfile.writer.RunFileWriter` writing an HDF5 run file
    in a temporary directory, and a :class:`~tuitrain.train.sinks.QueueSink` into a ``spawn``
    ``multiprocessing`` queue that a consumer process drains (so pickling and queueing are paid for).
    It hands the monitor the logits and targets, from which it counts correct predictions per step
    (the engine's call), which the bare loop does not.
(d) ``user``  the same loop written as a user writes it with the public API (``tuitrain.init``,
    ``run.watch(model, optimizer)``, ``run.log({"loss": loss, "acc": acc})`` after ``optimizer.step()``:
    the probes run in the optimizer's step hooks), feeding the same two sinks as (b); the live queue
    reaches ``init`` through a :class:`tuitrain.hosted.Host`, as under ``tuitrain watch script.py``.
    Its accuracy is what a user computes on the device each step, not the engine's count at the flush.
(e) ``act``  (b) plus the forward-signal probe at its default (``monitor.activations_every`` = 20,
    :class:`~tuitrain.train.activations.ActivationProbe`), as ``engine.train()`` adds it: armed by
    ``monitor.before_forward()`` before each forward (which (b) calls too, as the engine does with the
    probe off), its rows in the same run file (``/modules``, ``/probes/act``) and queue. Its ratio is
    (e)/(b): what the probe adds to the engine, side by side with the engine without it. Only in the
    cases that have an ``act`` target (the tiny MLP, and the small VGG38 / ResNet18 ``vgg38s`` /
    ``resnet18s``: 16 x 16 inputs, ResNet18 at width 16), whose blocks are a whole number of probe
    periods, so that every block holds as many probed steps as every other (a median of per-round
    ratios would otherwise ignore the few rounds that hold one). ``--no-act`` skips it.
(c) ``tensorboard``  the bare loop plus what people write by hand with
    ``torch.utils.tensorboard.SummaryWriter`` for the same per-layer gradient norms every step:
    ``add_scalar(name, p.grad.norm().item(), step)`` per parameter tensor, plus the loss. Skipped
    cleanly when tensorboard is not installed (``pip install tensorboard``).

Each block times ``--steps`` steps (synchronising the device at both ends). After ``--warmup`` untimed
blocks of each variant come ``--blocks`` rounds; a round runs one block of each variant back to back,
in an order that rotates from round to round (a b c, b c a, c a b, ...) so that none always goes first.
The step time of a variant is the median over its blocks; the ratios (b)/(a) and (c)/(a) are medians
of the per-round ratios, which a slow drift in the machine's load affects far less than a ratio of
medians. Absolute times are only comparable within one run; compare ratios across runs.

Columns besides those: ``cpu (x)/(a)``, the same ratios of this process's CPU time (all its threads),
which preemption by other processes does not inflate; ``cpu in (b)`` / ``cpu in (c)``, the CPU time the
training thread spent inside the Monitor's calls (its flushes included) or
inside the TensorBoard lines, over the bare step's CPU time: the direct part of the overhead, nearly
free of noise (reading that clock costs (b) six reads per step and (c) four, about a microsecond). ``--sinkless`` adds (b0), the Monitor with no sinks, so that the sinks' share shows.

Targets for (b)/(a), and the same for (d)/(a): <= 1.02 for VGG38 and ResNet18, <= 1.15 for the tiny MLP probing every step,
<= 1.03 for it at every = 10; and (b) must cost less than (c). For (e)/(b) (issue 11): <= 1.03 for
VGG38 and ResNet18 (small), <= 1.05 for the tiny MLP. (d), the user loop, runs without the
activation probe (``activations_every=0``), so that its ratio stays comparable with (b)'s. The exit status is 1 only when a target
is missed by far: over twice the allowed overhead in three rounds out of four (at least three rounds),
or in the direct part alone. Noise alone should not fail it.

    python bench/overhead.py                      # every case: 10 to 15 minutes on a shared 2-core CPU
    python bench/overhead.py --quick              # the tiny-MLP cases only, fewer blocks: about a minute
    python bench/overhead.py --models vgg38s,resnet18s,mlp10 --no-user --no-tensorboard   # (e)/(b) only
    python bench/overhead.py --models mlp,vgg38 --blocks 5 --steps 2
    python bench/overhead.py --device cuda        # on a GPU machine

On CPU the benchmark runs torch with ``--threads 1`` by default: on an oversubscribed machine two
OpenMP threads that wait for each other make tiny steps 10-50x slower and erratic, which would hide
the very overhead being measured. ``--threads 0`` keeps torch's default.
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

import tuitrain
from tuitrain.config import RunConfig, load_config, to_toml
from tuitrain.diagnosis.live import wrap as diagnosed
from tuitrain.events import EventBatch, RunFinished, RunStarted, StatusChanged, StepBatch
from tuitrain.runfile import open_run
from tuitrain.runfile.writer import RunFileWriter
from tuitrain.train.activations import ActivationProbe
from tuitrain.train.data import toy2d_points
from tuitrain.train.engine import build_optimizer
from tuitrain.train.models import build_model
from tuitrain.train.monitor import Monitor
from tuitrain.train.sinks import QueueSink
from tuitrain.train.summary import layer_infos, model_summary

PRESETS = Path(__file__).resolve().parents[1] / "tuitrain" / "presets"


@dataclass(frozen=True)
class Case:
    """One row of the table: a model, its batch, how often tuitrain probes, and the (b)/(a) target."""

    key: str  # --models name
    label: str
    preset: str  # file under presets/: the model and optimizer come from it
    input_shape: tuple[int, ...]
    classes: int
    batch: int
    every: int
    target: float  # allowed (b)/(a)
    steps: int  # steps per block by default (a block should take well over 100 ms)
    blocks: int  # timed blocks by default
    quick_steps: int
    quick_blocks: int
    act_target: float | None = None  # allowed (e)/(b); None: no (e) in this case
    width: int = 0  # the model's width, when not the preset's (the small ResNet18)

    @property
    def limit(self) -> float:
        """Beyond this (b)/(a) the target is missed by far: twice the allowed overhead."""
        return 1.0 + 2.0 * (self.target - 1.0)


CASES: dict[str, Case] = {
    c.key: c
    for c in (
        # The tiny MLP of 002 (2-D spirals, 6 x 32 with BatchNorm): a step is about a millisecond, so
        # per-step Python overhead shows here first.
        # A block of 400 steps lasts about a second, the run file's flush period: each block pays the
        # one file flush a second that training pays (shorter blocks would pay it more often).
        Case("mlp", "tiny MLP", "toy2d_mlp.toml", (2,), 3, 128, 1, 1.15, 400, 21, 200, 9, 1.05),
        Case("mlp10", "tiny MLP", "toy2d_mlp.toml", (2,), 3, 128, 10, 1.03, 400, 21, 200, 9, 1.05),
        # CIFAR-sized models on synthetic 32 x 32 inputs held on the device; seconds per step on a CPU.
        Case("vgg38", "VGG38", "vgg38.toml", (3, 32, 32), 100, 100, 1, 1.02, 2, 6, 1, 3),
        Case("resnet18", "ResNet18", "resnet18_cifar10.toml", (3, 32, 32), 10, 128, 1, 1.02, 1, 3, 1, 3),
        # Small versions for (e), the activation probe every 10 steps: a block is 10 steps (one probed).
        Case("vgg38s", "VGG38 small", "vgg38.toml", (3, 16, 16), 100, 32, 1, 1.02, 10, 9, 10, 3, 1.03),
        Case(
            "resnet18s",
            "ResNet18 small",
            "resnet18_cifar10.toml",
            (3, 16, 16),
            10,
            32,
            1,
            1.02,
            10,
            9,
            10,
            3,
            1.03,
            16,
        ),
    )
}


# ---------------------------------------------------------------------------------------------
# the three variants


class Variant(Protocol):
    name: str

    def block(self, steps: int) -> tuple[float, float]: ...

    def close(self) -> str: ...


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Setup:
    """Everything the three variants share: config, data batches and the initial model state."""

    def __init__(self, case: Case, device: torch.device, seed: int, n_batches: int = 8) -> None:
        self.case = case
        self.device = device
        self.cfg: RunConfig = load_config(PRESETS / case.preset)
        self.cfg.monitor = replace(self.cfg.monitor, every=case.every)
        if case.width:
            self.cfg.model = replace(self.cfg.model, width=case.width)
        self.cfg.train.batch_size = case.batch
        self.cfg.train.seed = seed
        torch.manual_seed(seed)
        self.base = build_model(self.cfg.model, case.input_shape, case.classes).to(device)
        self.batches = self._batches(n_batches, seed)

    def _batches(self, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A few fixed batches held on the device and cycled: no data pipeline cost in any variant."""
        c, g = self.case, torch.Generator().manual_seed(seed)
        if c.input_shape == (2,):
            x, y = toy2d_points("spirals", [n * c.batch], c.classes, seed, 0.1)
            x = (x - x.mean(0)) / x.std(0)
        else:
            x = torch.randn(n * c.batch, *c.input_shape, generator=g)
            y = torch.randint(0, c.classes, (n * c.batch,), generator=g)
        x, y = x.to(self.device), y.to(self.device)
        return [(x[i * c.batch : (i + 1) * c.batch], y[i * c.batch : (i + 1) * c.batch]) for i in range(n)]

    def model(self) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """A fresh copy of the same initial weights, and the preset's optimizer for it."""
        model = copy.deepcopy(self.base)
        return model, build_optimizer(self.cfg, [p for p in model.parameters() if p.requires_grad])

    def stream(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self.batches


class Bare:
    """(a) What a careful user writes without any monitor."""

    name = "bare"

    def __init__(self, s: Setup) -> None:
        self.device = s.device
        self.model, self.opt = s.model()
        self.data = s.stream()
        self.loss_sum = torch.zeros((), device=s.device)

    def block(self, steps: int) -> tuple[float, float]:
        model, opt, data, loss_sum = self.model, self.opt, self.data, self.loss_sum
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            x, y = next(data)
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
        loss_sum.item()  # the one host read per logging interval
        sync(self.device)
        return time.perf_counter() - t0, time.process_time() - c0

    def close(self) -> str:
        return ""


def drain(q: Any, results: Any) -> None:
    """The consumer process: what the dashboard's LiveSource does with the queue, minus drawing."""
    results.put("ready")
    rows = dropped = batches = 0
    while True:
        item = q.get()
        if item is None:
            break
        batches += 1
        if isinstance(item, EventBatch):
            dropped += item.dropped_steps
            rows += sum(len(e) for e in item.events if isinstance(e, StepBatch))
    results.put((batches, rows, dropped))


class Monitored:
    """(b) The same loop with tuitrain's Monitor, a run file and a live queue to another process.

    With ``sinks=False`` it is (b0), the Monitor alone (``--sinkless``): the difference between (b0)
    and (b) is what the run file, the queue and its consumer cost, which on a machine with no spare
    core is mostly competition for the CPU. With ``act`` it is (e): the activation probe added, at
    ``monitor.activations_every``, as the engine adds it.
    """

    def __init__(self, s: Setup, tmp: Path, sinks: bool = True, act: bool = False) -> None:
        self.name = "act" if act else "tuitrain" if sinks else "monitor"
        self.inside = 0.0  # CPU seconds the last block spent inside the Monitor's calls (and its flushes)
        self.device = s.device
        self.model, self.opt = s.model()
        self.data = s.stream()
        cfg, model = s.cfg, self.model
        params = [p for p in model.parameters() if p.requires_grad]
        layers = layer_infos(model)
        self.writer: RunFileWriter | None = None
        self.live: QueueSink | None = None
        self.act: ActivationProbe | None = None
        if not sinks:
            self.monitor = Monitor.for_model(params, layers, [], cfg.monitor, s.device)
            return
        ctx = mp.get_context("spawn")  # as `tuitrain watch` does; the consumer never shares tensors
        self.q = ctx.Queue(maxsize=64)
        self.results = ctx.Queue()
        self.consumer = ctx.Process(target=drain, args=(self.q, self.results), daemon=True)
        self.consumer.start()
        if self.results.get(timeout=120) != "ready":  # its start-up must not overlap the timing
            raise RuntimeError("the queue consumer did not start")
        self.path = tmp / f"{s.case.key}{'-act' if act else ''}.h5"
        self.writer = RunFileWriter(self.path, cfg.monitor.flush_seconds)
        self.live = QueueSink(self.q)
        flops, modules = model_summary(model, s.case.input_shape)
        # as engine.train() wraps them: live diagnosis (monitor.diagnose_seconds) runs over the sinks' events
        sinks = diagnosed([self.writer, self.live], cfg.monitor)
        self.monitor = Monitor.for_model(params, layers, sinks, cfg.monitor, s.device)
        if act:  # as engine.train() adds it
            self.act = ActivationProbe(every=cfg.monitor.activations_every)
            self.monitor.add_probe(self.act, model)
        self.monitor.emit(
            RunStarted(  # as engine.train() builds it
                run_name=f"overhead-{s.case.key}",
                config_toml=to_toml(cfg),
                model_name=cfg.model.name,
                dataset="synthetic" if s.case.input_shape != (2,) else "toy2d",
                device=str(s.device),
                params=sum(p.numel() for p in params),
                layers=layers,
                flops=int(flops),
                module_summary=modules,
                epochs=1,
                steps_per_epoch=1 << 30,
                batch_size=s.case.batch,
                num_classes=s.case.classes,
                out_path=str(self.path),
                probes=self.monitor.specs,
                modules=self.monitor.modules,
                versions={
                    "tuitrain": tuitrain.__version__,
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                    "numpy": np.__version__,
                },
            )
        )
        self.monitor.emit(StatusChanged("running", 0))

    def block(self, steps: int) -> tuple[float, float]:
        model, opt, data, monitor = self.model, self.opt, self.data, self.monitor
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        monitor.pause_clock()  # the other variants ran since this one's last step
        inside = 0.0
        clock = time.thread_time  # CPU time of this thread: preemption by other processes does not count
        for _ in range(steps):
            x, y = next(data)
            t0f = clock()
            monitor.before_forward()  # as the engine calls it, probe or not
            inside += clock() - t0f
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t1 = clock()
            monitor.before_step()
            t2 = clock()
            lr = opt.param_groups[0]["lr"]
            opt.step()
            t3 = clock()
            monitor.after_step(loss, logits, y, lr, 0)
            inside += t2 - t1 + clock() - t3
        # Settle the sinks' deferred work inside this block, so that none of it lands in the next
        # variant's: a run-file flush per block, as training pays one a second (blocks last about that).
        t1 = clock()
        monitor.flush()
        if self.writer is not None:
            self.writer.flush()
        sync(self.device)
        self.inside = inside + clock() - t1
        return time.perf_counter() - t0, time.process_time() - c0

    def close(self) -> str:
        """Finish the run like the engine does, then check that every step reached both sinks."""
        m = self.monitor
        m.flush(force=True)
        if self.writer is None or self.live is None:
            return ""
        finished = RunFinished("completed", m.step)
        for sink in m.sinks:  # through the live diagnosis, whose last pass comes before RunFinished
            sink.emit(finished)
            sink.close()
        self.q.put(None)
        batches, rows, dropped = self.results.get(timeout=60)
        self.consumer.join(timeout=10)
        with open_run(self.path) as rf:
            file_rows, probe_rows = rf.n_steps, rf.n_probe_rows
            act_rows = rf.probe_rows("act") if rf.has_probe("act") else 0
        expected_probes = len(range(0, m.step, m.cfg.every))
        expected_act = len(range(0, m.step, self.act.spec.every)) if self.act is not None else 0
        ok = file_rows == m.step and probe_rows == expected_probes and rows + dropped == m.step
        ok = ok and act_rows == expected_act
        act = f" + {act_rows} act rows x {self.act.n_modules} modules" if self.act is not None else ""
        return (
            f"({self.name}) {m.step} steps: run file {file_rows} rows / {probe_rows} probe rows{act} "
            f"({self.path.stat().st_size / 1e6:.2f} MB), queue {rows} rows + {dropped} thinned "
            f"in {batches} items{'' if ok else '  MISMATCH'}"
        )


class UserLoop:
    """(d) The loop a user writes with ``tuitrain.init`` / ``run.watch`` / ``run.log``, same sinks as (b).

    ``inside`` counts ``run.log`` only; the probes' copies run in the optimizer's step hooks, inside
    ``opt.step()``, so they show in the step time and the ratios but not in ``cpu in (d)``.
    """

    name = "user"

    def __init__(self, s: Setup, tmp: Path) -> None:
        from tuitrain import hosted

        self.inside = 0.0
        self.device = s.device
        self.every = s.case.every
        self.model, self.opt = s.model()
        self.data = s.stream()
        ctx = mp.get_context("spawn")
        self.q = ctx.Queue(maxsize=64)
        self.results = ctx.Queue()
        self.consumer = ctx.Process(target=drain, args=(self.q, self.results), daemon=True)
        self.consumer.start()
        if self.results.get(timeout=120) != "ready":
            raise RuntimeError("the queue consumer did not start")
        self.path = tmp / f"{s.case.key}-user.h5"
        hosted.install(hosted.Host(sinks=[QueueSink(self.q)]))  # what `tuitrain watch script.py` does
        try:
            self.run = tuitrain.init(
                name=f"overhead-{s.case.key}-user",
                out=self.path,
                batch_size=s.case.batch,
                every=self.every,
                activations_every=0,  # comparable with (b); the probe's cost is (e)/(b)
            )
        finally:
            hosted.install(None)
        self.run.watch(self.model, self.opt)

    def block(self, steps: int) -> tuple[float, float]:
        model, opt, data, run = self.model, self.opt, self.data, self.run
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        inside = 0.0
        clock = time.thread_time
        for _ in range(steps):
            x, y = next(data)
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()  # the watched optimizer's hooks probe around it
            acc = (logits.argmax(1) == y).float().mean()  # on the device: no host read
            t1 = clock()
            run.log({"loss": loss, "acc": acc})
            inside += clock() - t1
        sync(self.device)
        self.inside = inside
        return time.perf_counter() - t0, time.process_time() - c0

    def close(self) -> str:
        """Finish the run as a script does, then check that every step reached both sinks."""
        from tuitrain.runfile import open_run

        steps = self.run.step
        self.run.finish()
        self.q.put(None)
        batches, rows, dropped = self.results.get(timeout=60)
        self.consumer.join(timeout=10)
        with open_run(self.path) as rf:
            file_rows, probe_rows = rf.n_steps, rf.n_probe_rows
        ok = file_rows == steps and probe_rows == len(range(0, steps, self.every)) and rows + dropped == steps
        return (
            f"(d) {steps} steps: run file {file_rows} rows / {probe_rows} probe rows, "
            f"queue {rows} rows + {dropped} thinned in {batches} items{'' if ok else '  MISMATCH'}"
        )


class Tensorboard:
    """(c) The bare loop plus the per-layer gradient norms people log by hand with TensorBoard."""

    name = "tensorboard"

    def __init__(self, s: Setup, tmp: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.device = s.device
        self.model, self.opt = s.model()
        self.data = s.stream()
        self.named = [(f"grad_norm/{n}", p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.writer = SummaryWriter(str(tmp / f"tb-{s.case.key}"))
        self.step = 0
        self.inside = 0.0  # CPU seconds the last block spent in the logging code

    def block(self, steps: int) -> tuple[float, float]:
        model, opt, data, writer, named = self.model, self.opt, self.data, self.writer, self.named
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        inside = 0.0
        clock = time.thread_time
        for _ in range(steps):
            x, y = next(data)
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t1 = clock()
            for tag, p in named:
                if p.grad is not None:
                    writer.add_scalar(tag, p.grad.norm().item(), self.step)
            t2 = clock()
            opt.step()
            t3 = clock()
            writer.add_scalar("train/loss", loss.item(), self.step)
            self.step += 1
            inside += t2 - t1 + clock() - t3
        t1 = clock()
        writer.flush()  # its thread's deferred writes belong to this block, not the next variant's
        sync(self.device)
        self.inside = inside + clock() - t1
        return time.perf_counter() - t0, time.process_time() - c0

    def close(self) -> str:
        self.writer.close()
        return ""


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# running and reporting


@dataclass
class Result:
    case: Case
    steps: int
    clock: str  # which clock the verdict reads: "wall" or "cpu"
    wall: dict[str, list[float]] = field(default_factory=dict)  # seconds per step, one per block
    cpu: dict[str, list[float]] = field(default_factory=dict)  # process CPU seconds per step
    inside: dict[str, list[float]] = field(default_factory=dict)  # CPU s/step in the logging code
    note: str = ""

    def median(self, name: str) -> float:
        t = self.wall.get(name)
        return statistics.median(t) if t else math.nan

    def ratios(self, name: str, clock: str = "wall", over: str = "bare") -> list[float]:
        """This variant's step time over ``over``'s, round by round (they ran back to back)."""
        times = self.wall if clock == "wall" else self.cpu
        t, a = times.get(name), times.get(over)
        return [x / y for x, y in zip(t, a, strict=True)] if t and a else []

    def ratio(self, name: str, clock: str = "wall", over: str = "bare") -> float:
        """Median of the per-round ratios to the bare loop (or to ``over``)."""
        r = self.ratios(name, clock, over)
        return statistics.median(r) if r else math.nan

    def inside_share(self, name: str) -> float:
        """Median over rounds of the CPU time spent in the variant's logging code (the Monitor's calls,
        or the TensorBoard lines) over the bare loop's CPU time per step: the direct part of the
        overhead, which noise barely touches. It misses what runs elsewhere (writer and queue threads,
        the consumer process, cache effects) and, on CUDA, the GPU's share."""
        t, a = self.inside.get(name), self.cpu["bare"]
        return statistics.median(x / y for x, y in zip(t, a, strict=True)) if t else math.nan

    def verdict(self) -> tuple[str, bool]:
        """("ok" | what was missed, whether it was missed by far), on ``self.clock``'s ratios.

        "By far" has to survive noise: three rounds at least, and three rounds in four beyond the
        limit (the lower quartile of the per-round ratios), or the noise-free direct part alone beyond it.
        """
        c = self.case
        missed, far = [], False
        judge = len(self.wall["bare"]) >= 3
        if self.ratio("tuitrain", self.clock) > c.target:
            missed.append(f"b/a>{c.target:g}")
            far |= judge and lower_quartile(self.ratios("tuitrain", self.clock)) > c.limit
        if 1.0 + self.inside_share("tuitrain") > c.limit:
            missed.append("direct")
            far = True
        if self.ratio("user", self.clock) > c.target:  # (d): the same target as the engine's (b)
            missed.append(f"d/a>{c.target:g}")
            far |= judge and lower_quartile(self.ratios("user", self.clock)) > c.limit
        if c.act_target is not None and self.ratio("act", self.clock, over="tuitrain") > c.act_target:
            missed.append(f"e/b>{c.act_target:g}")
            far |= judge and lower_quartile(self.ratios("act", self.clock, over="tuitrain")) > (
                1.0 + 2.0 * (c.act_target - 1.0)
            )
        b_over_c = self.ratios("tuitrain", self.clock, over="tensorboard")
        if b_over_c and statistics.median(b_over_c) > 1.0:
            missed.append("b>c")
            far |= judge and lower_quartile(b_over_c) > c.limit
        if not missed:
            return "ok", False
        return ("FAIL " if far else "missed ") + ",".join(missed), far


def lower_quartile(values: list[float]) -> float:
    v = sorted(values)
    return v[(len(v) - 1) // 4] if v else math.nan


def run_case(case: Case, args: argparse.Namespace, device: torch.device, tmp: Path) -> Result:
    steps = args.steps or (case.quick_steps if args.quick else case.steps)
    blocks = args.blocks or (case.quick_blocks if args.quick else case.blocks)
    s = Setup(case, device, args.seed)
    act = args.act and case.act_target is not None
    if act:  # a whole number of probe periods a block: as many probed steps in every block
        every = s.cfg.monitor.activations_every
        steps = -(-steps // every) * every
    variants: list[Variant] = [Bare(s), Monitored(s, tmp)]
    if act:
        variants.append(Monitored(s, tmp, act=True))
    if args.user:
        variants.append(UserLoop(s, tmp))
    if args.tensorboard:
        variants.append(Tensorboard(s, tmp))
    if args.sinkless:
        variants.append(Monitored(s, tmp, sinks=False))
    res = Result(case, steps, args.clock, {v.name: [] for v in variants}, {v.name: [] for v in variants})
    t_case = time.perf_counter()
    try:
        for _ in range(args.warmup):
            for v in variants:
                v.block(steps)
        for i in range(blocks):
            # a, b, c, then b, c, a, ...: interleaved, and no variant always runs first in its round
            for v in variants[i % len(variants) :] + variants[: i % len(variants)]:
                wall, cpu = v.block(steps)
                res.wall[v.name].append(wall / steps)
                res.cpu[v.name].append(cpu / steps)
                if v.name in ("tuitrain", "tensorboard", "user", "act"):
                    res.inside.setdefault(v.name, []).append(v.inside / steps)  # type: ignore[attr-defined]
    finally:
        notes = [v.close() for v in variants]
    res.note = " ".join(n for n in notes if n) + f"  [{time.perf_counter() - t_case:.0f} s]"
    return res


def fmt_ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    ms = seconds * 1e3
    return f"{ms:.1f}" if ms >= 100 else f"{ms:.3f}"


def fmt_pct(share: float) -> str:
    return "-" if math.isnan(share) else f"{100 * share:.2f}%"


def fmt_ratio(r: float) -> str:
    return "-" if math.isnan(r) else f"{r:.3f}"


def table(results: list[Result]) -> str:
    """The results as a Markdown table (pasteable into docs/performance.md)."""
    has_c = any("tensorboard" in r.wall for r in results)
    has_b0 = any("monitor" in r.wall for r in results)
    has_d = any("user" in r.wall for r in results)
    has_e = any("act" in r.wall for r in results)
    cols: list[tuple[str, Callable[[Result], str]]] = [
        ("model", lambda r: r.case.label),
        ("every", lambda r: str(r.case.every)),
        ("steps x blocks", lambda r: f"{r.steps} x {len(r.wall['bare'])}"),
        ("(a) bare ms", lambda r: fmt_ms(r.median("bare"))),
        ("(b) tuitrain ms", lambda r: fmt_ms(r.median("tuitrain"))),
    ]
    if has_d:
        cols.append(("(d) user loop ms", lambda r: fmt_ms(r.median("user"))))
    if has_e:
        cols.append(("(e) +act ms", lambda r: fmt_ms(r.median("act"))))
    if has_c:
        cols.append(("(c) tensorboard ms", lambda r: fmt_ms(r.median("tensorboard"))))
    cols += [
        ("(b)/(a)", lambda r: fmt_ratio(r.ratio("tuitrain"))),
        ("target", lambda r: f"<= {r.case.target:g}"),
    ]
    if has_d:
        cols.append(("(d)/(a)", lambda r: fmt_ratio(r.ratio("user"))))
    if has_e:
        cols.append(("(e)/(b)", lambda r: fmt_ratio(r.ratio("act", over="tuitrain"))))
        cols.append(
            ("(e) target", lambda r: "-" if r.case.act_target is None else f"<= {r.case.act_target:g}")
        )
    if has_c:
        cols.append(("(c)/(a)", lambda r: fmt_ratio(r.ratio("tensorboard"))))
    if has_b0:
        cols.append(("(b0)/(a) no sinks", lambda r: fmt_ratio(r.ratio("monitor"))))
    cols.append(("cpu in (b)", lambda r: fmt_pct(r.inside_share("tuitrain"))))
    if has_d:
        cols.append(("cpu in (d)", lambda r: fmt_pct(r.inside_share("user"))))
    if has_c:
        cols.append(("cpu in (c)", lambda r: fmt_pct(r.inside_share("tensorboard"))))
    cols.append(("cpu (b)/(a)", lambda r: fmt_ratio(r.ratio("tuitrain", "cpu"))))
    if has_e:
        cols.append(("cpu (e)/(b)", lambda r: fmt_ratio(r.ratio("act", "cpu", over="tuitrain"))))
    if has_c:
        cols.append(("cpu (c)/(a)", lambda r: fmt_ratio(r.ratio("tensorboard", "cpu"))))
    cols.append(("verdict", lambda r: r.verdict()[0]))
    rows = [[name for name, _ in cols]] + [[cell(r) for _, cell in cols] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    try:
        load = " load {:.2f} {:.2f} {:.2f},".format(*os.getloadavg())
    except OSError:
        load = ""
    return (
        f"{device.type}: {where},{load} torch {torch.__version__} with {torch.get_num_threads()} "
        f"thread(s), python {platform.python_version()}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--models",
        default="",
        help=f"comma-separated cases out of {', '.join(CASES)} (default: all; --quick: mlp,mlp10)",
    )
    p.add_argument("--blocks", type=int, default=0, help="timed blocks per variant (default: per case)")
    p.add_argument("--steps", type=int, default=0, help="steps per block (default: per case)")
    p.add_argument("--warmup", type=int, default=1, help="untimed blocks of each variant first")
    p.add_argument("--quick", action="store_true", help="fewer, shorter blocks; only the tiny MLP by default")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--clock",
        default="wall",
        choices=("wall", "cpu"),
        help="which ratios the verdict reads: wall time (default) or this process's CPU time, "
        "which a loaded machine's preemption does not inflate (CPU devices only)",
    )
    p.add_argument(
        "--sinkless",
        action="store_true",
        help="also run (b0): the Monitor with no sinks, to tell its cost from the sinks'",
    )
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="skip variant (c)")
    p.add_argument("--no-user", dest="user", action="store_false", help="skip variant (d), the user loop")
    p.add_argument(
        "--no-act", dest="act", action="store_false", help="skip variant (e), the activation probe"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    if device.type == "cuda":  # what engine.train() sets
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    keys = [k.strip() for k in args.models.split(",") if k.strip()] or (
        ["mlp", "mlp10"] if args.quick else list(CASES)
    )
    unknown = [k for k in keys if k not in CASES]
    if unknown:
        print(f"unknown case(s) {', '.join(unknown)}; allowed: {', '.join(CASES)}", file=sys.stderr)
        return 2
    if args.tensorboard and not tensorboard_available():
        print("tensorboard is not installed: variant (c) skipped (pip install tensorboard)", file=sys.stderr)
        args.tensorboard = False

    print(f"# tuitrain overhead benchmark: {machine(device)}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="tuitrain-overhead-") as tmp:
        for key in keys:
            res = run_case(CASES[key], args, device, Path(tmp))
            print(f"  {key:<9} {res.note}", flush=True)
            results.append(res)
    print(table(results))
    print(
        "ms = median wall time per step; ratios = median of per-round ratios, of wall time or of this "
        f"process's CPU time (cpu); verdict on {args.clock} ratios. Compare ratios across runs, never times."
    )
    failed = [r.case.key for r in results if r.verdict()[1]]
    if failed:
        print(
            f"targets missed by far (over twice the allowed overhead): {', '.join(failed)}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
