"""The training loop. Reads top to bottom: set up, announce, train with probes, validate, test, finish.

Every number a person sees leaves this module as an event to the sinks (run file, live queue,
console); the loop itself knows nothing about where they go. Host synchronisations happen only where
the numbers are needed on the host: once per epoch for validation and the epoch means, and never per
step (the monitor reads per-step values back a few steps late on CUDA).

Data-parallel under torchrun, the same loop runs in every process: :mod:`tuitrain.train.distributed`
joins the process group, shards the data, wraps the model in DDP and reduces the per-step numbers and
the evaluation sums, so that the monitor of every rank sees global values and only rank 0's sinks hear
about them; each of those is one line here, and a no-op on a single process.

The forward-signal probe (:mod:`tuitrain.train.activations`, every ``monitor.activations_every``
steps, 0 = off) hooks the plain model's modules (not DDP's or torch.compile's wrapper) and is armed by
``monitor.before_forward()`` right before each step's forward. Data-parallel, it runs on rank 0 only:
its rows go only to rank 0's sinks, so on the other ranks it would measure for nothing, and no
collective depends on it (each rank's probes are its own business; the ranks meet only in the
gradient all-reduce, where a slower rank 0 is waited for either way). Its statistics are then those
of rank 0's share of the global batch. A resumed run of a file written before the probe existed
gets it from the resumed step on (the appended file adds the probe: :mod:`tuitrain.runfile.append`).

Snapshots (:mod:`tuitrain.train.snapshots`, within ``monitor.snapshot_mb``) are planned before
RunStarted declares them, taken at the start, after each EpochEnd and after the TestResult (the
misclassified samples come from the test evaluation itself), on rank 0 only, reading the device only
at those moments.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from tuitrain.config import ConfigError, RunConfig, error_text, to_toml
from tuitrain.diagnosis.live import wrap as diagnosed
from tuitrain.events import Alert, EpochEnd, RunFinished, RunStarted, Sink, StatusChanged, TestResult
from tuitrain.runfile.claim import RunFileWriteError
from tuitrain.train import distributed
from tuitrain.train.activations import ActivationProbe
from tuitrain.train.data import DeviceData, load_data
from tuitrain.train.ending import announce_failed, finish, save_checkpoint
from tuitrain.train.models import build_model
from tuitrain.train.monitor import Diverged, Monitor
from tuitrain.train.resume import checkpoint_state, continue_file, restore
from tuitrain.train.snapshots import MisclassifiedCollector, Snapshotter
from tuitrain.train.summary import device_label, layer_infos, model_summary, versions
from tuitrain.train.threads import Threads


class Control(Protocol):
    """Commands from whoever watches the run (the dashboard): "pause", "resume", "stop"."""

    def poll(self, timeout: float = 0.0) -> str | None: ...


class StopTraining(Exception):
    """Raised inside the loop when a stop was asked for; the run ends as ``stopped``."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "`train.device` = 'cuda' but no CUDA device is available here; allowed here: auto, cpu."
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("`train.device` = 'mps' but MPS is not available here; allowed here: auto, cpu.")
    return torch.device(name)


def build_optimizer(cfg: RunConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=o.lr,
            momentum=o.momentum,
            nesterov=o.nesterov and o.momentum > 0,
            weight_decay=o.weight_decay,
        )
    betas = (o.betas[0], o.betas[1])
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=betas, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=betas, weight_decay=o.weight_decay)


def lr_factor(cfg: RunConfig, steps_per_epoch: int, total_steps: int):
    """Learning-rate multiplier per step: warm-up, then none / cosine to zero / step decay by epochs."""
    s = cfg.schedule
    warmup = s.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if s.name == "cosine":
            span = max(1, total_steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))
        if s.name == "step":
            return s.gamma ** ((step // steps_per_epoch) // s.step_size)
        return 1.0

    return factor


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: DeviceData,
    split: str,
    batch_size: int,
    autocast,
    job: distributed.Dist = distributed.SINGLE,
    collect: MisclassifiedCollector | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy over ``split``; data-parallel, each rank evaluates its slice of it.
    ``collect`` keeps the predictions for the misclassified snapshot (the test evaluation's own: no
    second pass over the split; on the device, read once at the end)."""
    job.sync_buffers(model)
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in data.eval_batches(split, batch_size, job.rank, job.world_size):
        with autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        n += y.numel()
        if collect is not None:
            collect.add(logits, y)
    model.train()
    if job.enabled:  # sums, not means, over ranks: the slices may differ in size by one
        sums = torch.tensor([0.0, 0.0, float(n)], dtype=torch.float64, device=device)
        sums[0], sums[1] = loss_sum, correct
        loss_sum, correct, total = job.sum(sums)
        n = int(total.item())
    if n == 0:
        return math.nan, math.nan
    # Host sync: the epoch summary needs these two numbers on the host, once per epoch.
    return loss_sum.item() / n, correct.item() / n


def _emit_all(monitor: Monitor, events: list) -> None:
    for event in events:
        monitor.emit(event)


def _wait_if_paused(control: Control | None, monitor: Monitor) -> None:
    if control is None:
        return
    cmd = control.poll()
    if cmd == "stop":
        raise StopTraining
    if cmd != "pause":
        return
    monitor.flush(force=True)
    monitor.emit(StatusChanged("paused", monitor.step))
    while True:  # really stop stepping until told otherwise
        cmd = control.poll(timeout=0.2)
        if cmd == "stop":
            raise StopTraining
        if cmd == "resume":
            monitor.emit(StatusChanged("running", monitor.step))
            monitor.pause_clock()
            return


def train(
    cfg: RunConfig, sinks: list[Sink], control: Control | None = None, out_path: str = ""
) -> RunFinished:
    """Run one training job described by ``cfg``, sending every event to ``sinks``.

    Always ends by emitting :class:`RunFinished` and closing the sinks, whatever happened. A
    :class:`ConfigError` found while setting up (e.g. CIFAR absent offline) is re-raised after that, so
    the CLI can print it as bad input. Any other failure before the run was announced (out of memory
    while building the model) still gets a run file holding the error. The returned status is decided
    after the run file was closed: a run whose file could not be completed is ``failed``.
    """
    sinks = diagnosed(sinks, cfg.monitor)  # live diagnosis (monitor.diagnose_seconds > 0): rank 0's sinks
    monitor: Monitor | None = None
    job = distributed.SINGLE
    checkpoint = ""
    finished: RunFinished
    pending_error: BaseException | None = None
    announced = False  # RunStarted was sent: the writer created the run file, or said why it could not
    threads: Threads | None = None
    epochs_done, best_val = 0, -math.inf  # what a checkpoint records; --resume starts from its own
    snap = Snapshotter()  # takes nothing until planned (rank 0, monitor.snapshot_mb > 0)
    epoch_now, epoch_first_step = -1, 0  # the epoch in progress: a stopped run's last snapshot rows
    try:
        # ---- setup ---------------------------------------------------------------------------
        t = cfg.train
        threads = Threads.start(t.threads)  # before any torch work: inter-op threads can be set only then
        job, device = distributed.init(pick_device(t.device))  # torchrun: join the process group
        control = job.control(control)  # data-parallel: all ranks agree on pause / stop
        local_batch = job.local_batch(t.batch_size)  # batch_size is global: each rank takes 1/N
        # Rank 0 draws what a single process would; other ranks' initial weights are replaced by rank
        # 0's when DDP is built, and their dropout masks must differ from rank 0's.
        torch.manual_seed(t.seed + job.rank)
        np.random.seed(t.seed + job.rank)
        cuda = device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = t.cudnn_benchmark
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        with job.local_main_first():
            data = load_data(cfg.data, device)
        model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
        channels_last = cuda and t.channels_last and len(data.input_shape) == 3
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        layers = layer_infos(model)
        flops, modules = model_summary(model, data.input_shape)
        params = [p for p in model.parameters() if p.requires_grad]
        net = job.wrap_model(model, device)  # DDP: gradients are averaged over ranks in backward()
        forward = torch.compile(net) if t.compile else net
        optimizer = build_optimizer(cfg, params)
        steps_per_epoch = data.steps_per_epoch(t.batch_size, job.world_size)
        total_steps = t.epochs * steps_per_epoch
        if t.max_steps:
            total_steps = min(total_steps, t.max_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch, total_steps))

        def state() -> dict:  # the checkpoint (tuitrain/train/resume.py), built when it is saved
            assert monitor is not None
            return checkpoint_state(
                cfg, model, optimizer, scheduler, monitor.step, epochs_done, generator, best_val
            )

        def autocast() -> contextlib.AbstractContextManager:
            if cuda and t.bf16:
                return torch.autocast("cuda", dtype=torch.bfloat16)
            return contextlib.nullcontext()

        generator = torch.Generator(device=device)
        generator.manual_seed(t.seed)
        resumed = restore(cfg, out_path, model, optimizer, scheduler, generator) if t.resume else None
        monitor = Monitor.for_model(
            params,
            layers,
            sinks if job.is_main else [],
            cfg.monitor,
            device,
            reduce=job.reduce_step if job.enabled else None,
            world_size=job.world_size,
        )
        if cfg.monitor.activations_every and job.is_main:  # rank 0 only: see the module docstring
            monitor.add_probe(ActivationProbe(every=cfg.monitor.activations_every), model)
        if resumed is not None:  # --resume: the next step and epoch; the run file continued (or copied)
            monitor.step, epochs_done, best_val = resumed.step, resumed.epoch, resumed.best_val
            if job.is_main:
                continue_file(resumed.source, sinks)
        if job.is_main:  # rank 0 only: its sinks are the only ones that hear; see tuitrain.train.snapshots
            snap = Snapshotter.plan(model, data, cfg.monitor, t.epochs)
        device_words, job_versions = job.describe(device_label(device))
        announced = True  # set first: a file the writer could not create is not tried a second time
        monitor.emit(
            RunStarted(
                run_name=cfg.name,
                config_toml=to_toml(cfg),
                model_name=cfg.model.name,
                dataset=data.name,
                device=device_words,
                params=sum(p.numel() for p in params),
                layers=layers,
                flops=int(flops),
                module_summary=modules,
                epochs=t.epochs,
                steps_per_epoch=steps_per_epoch,
                batch_size=t.batch_size,
                num_classes=data.num_classes,
                out_path=out_path,
                max_steps=t.max_steps,
                vanishing=cfg.monitor.vanishing,
                exploding=cfg.monitor.exploding,
                probes=monitor.specs,
                modules=monitor.modules,
                snapshots=snap.specs,
                versions={**versions(), **job_versions, **threads.versions()},
            )
        )
        monitor.emit(StatusChanged("running", monitor.step))
        if resumed is not None:
            monitor.emit(Alert(monitor.step, "info", "resume", resumed.describe()))
        else:  # a resumed run's file has its init rows already
            _emit_all(monitor, snap.at_start(monitor.step))

        # ---- train ---------------------------------------------------------------------------
        for epoch in range(epochs_done, t.epochs):
            epoch_start = time.time()
            epoch_now, epoch_first_step = epoch, monitor.step
            for x, y in data.train_batches(
                local_batch, generator, cfg.data.augment, job.rank, job.world_size
            ):
                _wait_if_paused(control, monitor)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                monitor.before_forward()  # the activation probe's hooks, on the steps it probes
                with autocast():
                    logits = forward(x)
                loss = F.cross_entropy(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                monitor.before_step()
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                monitor.after_step(loss, logits, y, lr, epoch)  # data-parallel: reduced over ranks inside
                scheduler.step()
                if (note := threads.step()) is not None:  # auto: measured and changed the thread count
                    monitor.emit(Alert(monitor.step, "info", "threads", note))
                if t.max_steps and monitor.step >= t.max_steps:
                    break
            train_loss, train_acc = monitor.take_epoch_means()
            val_loss, val_acc = evaluate(model, data, "val", t.eval_batch_size, autocast, job)
            monitor.emit(
                EpochEnd(
                    epoch,
                    monitor.step,
                    train_loss,
                    train_acc,
                    val_loss,
                    val_acc,
                    optimizer.param_groups[0]["lr"],
                    time.time() - epoch_start,
                )
            )
            _emit_all(monitor, snap.epoch_end(epoch, monitor.step))  # before pause_clock: not a slow step
            if val_acc > best_val:
                if epoch > 0:
                    monitor.emit(
                        Alert(
                            monitor.step,
                            "info",
                            "best",
                            f"new best validation accuracy {val_acc:.2%} at epoch {epoch + 1}",
                        )
                    )
                best_val = val_acc
            epochs_done = epoch + 1
            monitor.pause_clock()
            if t.max_steps and monitor.step >= t.max_steps:
                break

        # ---- test and finish ----------------------------------------------------------------
        collector = snap.collector()
        test_loss, test_acc = evaluate(model, data, "test", t.eval_batch_size, autocast, job, collector)
        monitor.emit(TestResult(test_loss, test_acc))
        _emit_all(monitor, snap.at_end(epochs_done - 1, monitor.step, collector))
        if t.checkpoint and job.is_main:
            checkpoint = save_checkpoint(state, out_path, monitor)
        finished = RunFinished("completed", monitor.step, checkpoint=checkpoint)
    except (KeyboardInterrupt, StopTraining):
        if monitor is not None:
            monitor.flush(force=True)
            with contextlib.suppress(Exception):  # the last epoch's rows, if its stride skipped them
                last = epoch_now if monitor.step > epoch_first_step else epoch_now - 1
                _emit_all(monitor, snap.at_end(last, monitor.step))
            if cfg.train.checkpoint and job.is_main:
                checkpoint = save_checkpoint(state, out_path, monitor)
        finished = RunFinished("stopped", monitor.step if monitor else 0, checkpoint=checkpoint)
    except Diverged as e:  # monitor.on_nan = "stop": the loss went non-finite; a result, not a bug
        assert monitor is not None
        with contextlib.suppress(Exception):
            monitor.flush(force=True)
        finished = RunFinished("failed", monitor.step, error=str(e))
    except (Exception, SystemExit) as e:  # noqa: BLE001 - every failure must end up in the run file
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.flush(force=True)
        if isinstance(e, (ConfigError, SystemExit)):
            pending_error = e  # bad input (exit 2) or an exit asked for: re-raised once the file is closed
        if not announced and not isinstance(e, ConfigError) and job.is_main:
            announce_failed(cfg, sinks, out_path)
        finished = RunFinished(
            "failed",
            monitor.step if monitor else 0,
            # A run file that could not be written explains itself in one paragraph, no traceback.
            error=str(e) if isinstance(e, RunFileWriteError) else error_text(e),
            traceback="" if isinstance(e, RunFileWriteError) else traceback.format_exc(),
        )
    finished.time = time.time()
    if threads is not None:
        threads.close()
    finished = finish(sinks, finished)
    with contextlib.suppress(Exception):
        distributed.shutdown()
    if pending_error is not None:
        raise pending_error
    return finished
