"""Realistic, deterministic event streams for the dashboard's tests, snapshots and benchmark.

The default run looks like the broken VGG38 of the CIFAR-100 report (001): 38 weight layers, each
with a bias, where the gradients reaching the input side vanish (~1e-9) while the layers near the
output stay healthy (~1e-2). Loss falls from a noisy spike; epochs end with validation numbers, the
engine raises a vanishing-gradient alert and writes a checkpoint, and the run completes (or fails, or
is left running).

Everything derives from ``seed`` and ``t0``: timestamps are synthetic, so pair the app with a frozen
clock for pixel-stable snapshots.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from tuitrain.events import (
    PROBE_NAMES,
    STEP_SCALARS,
    Alert,
    EpochEnd,
    Event,
    LayerInfo,
    RunFinished,
    RunStarted,
    StatusChanged,
    StepBatch,
    TestResult,
)

T0 = 1_700_000_000.0

CONFIG_TOML = """name = "vgg38-cifar100"
[model]
name = "vgg"
blocks_per_stage = 5
[data]
name = "cifar100"
[monitor]
vanishing = 1e-6
exploding = 100.0
"""

TRACEBACK = """Traceback (most recent call last):
  File "tuitrain/train/worker.py", line 88, in main
    engine.fit()
  File "tuitrain/train/engine.py", line 214, in fit
    loss = self.step(batch)
  File "tuitrain/train/engine.py", line 171, in step
    logits = self.model(x)
  File "torch/nn/modules/module.py", line 1773, in _call_impl
    return forward_call(*args, **kwargs)
RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total capacity)
"""


def vgg_layers(
    blocks_per_stage: int = 5,
    stages: int = 3,
    filters: int = 32,
    classes: int = 100,
    batch_norm: bool = False,
) -> list[LayerInfo]:
    """Parameter tensors of the course's VGG (input conv, stages of processing + reduction blocks,
    a linear head), input side first. blocks_per_stage=5 gives VGG38."""
    out: list[LayerInfo] = []

    def conv(module: str, cin: int) -> None:
        out.append(
            LayerInfo(f"{module}.weight", (filters, cin, 3, 3), filters * cin * 9, "weight", module, "Conv2d")
        )
        out.append(LayerInfo(f"{module}.bias", (filters,), filters, "bias", module, "Conv2d"))
        if batch_norm:
            bn = module.replace("conv", "bn")
            out.append(LayerInfo(f"{bn}.weight", (filters,), filters, "norm", bn, "BatchNorm2d"))
            out.append(LayerInfo(f"{bn}.bias", (filters,), filters, "norm", bn, "BatchNorm2d"))

    conv("input_conv", 3)
    for s in range(stages):
        for b in range(blocks_per_stage):
            conv(f"stages.{s}.blocks.{b}.conv0", filters)
            conv(f"stages.{s}.blocks.{b}.conv1", filters)
        conv(f"stages.{s}.reduce.conv0", filters)
        conv(f"stages.{s}.reduce.conv1", filters)
    out.append(
        LayerInfo(
            "logits_linear.weight", (classes, filters), classes * filters, "weight", "logits_linear", "Linear"
        )
    )
    out.append(LayerInfo("logits_linear.bias", (classes,), classes, "bias", "logits_linear", "Linear"))
    return out


def mlp_layers(n_tensors: int = 200, width: int = 256) -> list[LayerInfo]:
    """A deep MLP with ``n_tensors`` parameter tensors (weight and bias per Linear)."""
    out: list[LayerInfo] = []
    for i in range(n_tensors // 2):
        out.append(
            LayerInfo(f"layers.{i}.weight", (width, width), width * width, "weight", f"layers.{i}", "Linear")
        )
        out.append(LayerInfo(f"layers.{i}.bias", (width,), width, "bias", f"layers.{i}", "Linear"))
    return out


def run_started(
    layers: list[LayerInfo],
    *,
    epochs: int,
    steps_per_epoch: int,
    name: str = "vgg38-cifar100",
    t0: float = T0,
) -> RunStarted:
    params = sum(la.numel for la in layers)
    return RunStarted(
        run_name=name,
        config_toml=CONFIG_TOML,
        model_name="VGG38" if len(layers) > 40 else "VGG",
        dataset="cifar100",
        device="cuda:0 (NVIDIA H100)",
        params=params,
        layers=layers,
        flops=2 * params * 32 * 32,
        module_summary=[],
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=100,
        num_classes=100,
        out_path="runs/vgg38-cifar100.h5",
        started_at=t0,
        vanishing=1e-6,  # as CONFIG_TOML says
        exploding=100.0,
    )


def layer_profile(n: int) -> np.ndarray:
    """log10 grad L2 norm per layer: ~-9 at the input, ~-2 at the output (vanishing towards the input)."""
    pos = np.linspace(0.0, 1.0, n)
    return -9.0 + 7.0 * pos**3


def make_batch(
    start: int,
    n: int,
    layers: list[LayerInfo],
    rng: np.random.Generator,
    *,
    steps_per_epoch: int,
    probe_every: int = 1,
    t: float,
    profile: np.ndarray | None = None,
) -> StepBatch:
    steps = np.arange(start, start + n, dtype=np.int64)
    epochs = (steps // steps_per_epoch).astype(np.int32)
    s = steps.astype(np.float64)
    # loss: an early spike (outliers the y-range must ignore), then a noisy decay
    noise = rng.standard_normal(n)
    loss = 1.4 + 3.2 * np.exp(-s / 120.0) + 0.1 * noise
    loss = np.where(s < 3, 9.0 - s, loss)
    acc = np.clip(0.62 - 0.6 * np.exp(-s / 140.0) + 0.03 * rng.standard_normal(n), 0, 1)
    lr = 1e-3 * 0.5 * (1 + np.cos(np.pi * np.minimum(s / max(1.0, steps_per_epoch * 4.0), 1.0)))
    sps = 25_000.0 + 300.0 * rng.standard_normal(n)
    st = 100.0 / sps
    scalars = np.stack([loss, acc, lr, sps, st], axis=1).astype(np.float64)
    assert scalars.shape[1] == len(STEP_SCALARS)
    pst = steps[(steps % probe_every) == 0]
    m = pst.shape[0]
    L = len(layers)
    prof = layer_profile(L) if profile is None else profile
    numel = np.array([la.numel for la in layers], dtype=np.float64)
    drift = -0.3 * (pst.astype(np.float64)[:, None] / 1000.0)  # gradients shrink a little over time
    lg = prof[None, :] + drift + 0.15 * rng.standard_normal((m, L))
    gnorm = 10.0**lg
    gmean = gnorm / np.sqrt(numel)[None, :] * 0.8
    wnorm = np.sqrt(numel)[None, :] * 0.05 * (1 + 0.05 * pst[:, None] / 1000.0)
    uratio = 10.0 ** (np.clip(lg + 1.0, -9, -2.3) + 0.1 * rng.standard_normal((m, L)))
    probes = np.stack([gnorm, gmean, wnorm, uratio], axis=1).astype(np.float32)
    assert probes.shape[1] == len(PROBE_NAMES)
    return StepBatch.with_grad(
        steps=steps, epochs=epochs, scalars=scalars, probe_steps=pst, probes=probes, time=t
    )


def iter_fake_run(
    *,
    layers: list[LayerInfo] | None = None,
    epochs: int = 4,
    steps_per_epoch: int = 100,
    batch_steps: int = 10,
    probe_every: int = 1,
    seed: int = 0,
    t0: float = T0,
    steps_per_s: float = 100.0,
    finish: str | None = "completed",
    stop_after: int | None = None,
) -> Iterator[Event]:
    """Yield a run's events in order. ``finish``: "completed", "stopped", "failed" or None (still running).
    ``stop_after``: stop producing steps after this many (the run is then still "running")."""
    rng = np.random.default_rng(seed)
    layers = vgg_layers() if layers is None else layers
    total = epochs * steps_per_epoch
    yield run_started(layers, epochs=epochs, steps_per_epoch=steps_per_epoch, t0=t0)
    yield StatusChanged("running", 0, time=t0 + 0.5)
    prof = layer_profile(len(layers))
    step = 0
    limit = total if stop_after is None else min(total, stop_after)
    vanish_said = False
    while step < limit:
        n = min(batch_steps, limit - step, steps_per_epoch - step % steps_per_epoch)
        t = t0 + 1.0 + (step + n) / steps_per_s
        yield make_batch(
            step, n, layers, rng, steps_per_epoch=steps_per_epoch, probe_every=probe_every, t=t, profile=prof
        )
        step += n
        if not vanish_said and step >= min(60, limit):
            vanish_said = True
            k = int((prof < -7.5).sum())
            yield Alert(
                step,
                "warning",
                "vanishing",
                f"vanishing gradients: mean |grad| < 1e-6 in {k} tensors (input_conv.weight ...) for 200 steps",
                time=t,
            )
        if step % steps_per_epoch == 0:
            e = step // steps_per_epoch - 1
            val_loss = 1.5 + 2.9 * math.exp(-step / 130.0) + 0.03 * math.sin(e * 1.7)
            val_acc = 0.6 - 0.55 * math.exp(-step / 150.0) - 0.01 * math.cos(e * 2.1)
            yield EpochEnd(
                e,
                step,
                1.4 + 3.2 * math.exp(-step / 120.0),
                0.62 - 0.6 * math.exp(-step / 140.0),
                val_loss,
                val_acc,
                1e-3,
                steps_per_epoch / steps_per_s + 0.4,
                time=t + 0.4,
            )
            if e == 1:
                yield Alert(
                    step,
                    "info",
                    "checkpoint",
                    f"checkpoint written: runs/vgg38-cifar100-ep{e + 1}.pt",
                    time=t + 0.5,
                )
    if finish is None or stop_after is not None and stop_after < total:
        return
    t_end = t0 + 1.0 + limit / steps_per_s + 1.0
    if finish == "completed":
        yield TestResult(1.52, 0.581, time=t_end - 0.5)
        yield RunFinished("completed", limit, checkpoint="runs/vgg38-cifar100.pt", time=t_end)
    elif finish == "stopped":
        yield StatusChanged("stopped", limit, time=t_end - 0.1)
        yield RunFinished("stopped", limit, time=t_end)
    else:
        yield RunFinished(
            "failed",
            limit,
            error="RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
            traceback=TRACEBACK,
            time=t_end,
        )


def fake_run(**kw) -> list[Event]:
    return list(iter_fake_run(**kw))


# -- a user's own loop (tuitrain.init / run.log), as its events reach the dashboard ----------------

USER_KEYS = ("grad_scale", "top5")  # the loop's own run.log keys, after STEP_SCALARS


def user_run_started(
    *,
    probes: bool = False,
    layers: list[LayerInfo] | None = None,
    name: str = "mnist",
    t0: float = T0,
    step_scalars: tuple[str, ...] = (*STEP_SCALARS, *USER_KEYS),
) -> RunStarted:
    """What ``tuitrain.init`` announces for a loop that says nothing about its data: no dataset, no
    classes, no epochs or steps per epoch, no FLOPs or module summary; a JSON config; probes only
    when the loop called ``run.watch``."""
    from tuitrain.events import GRAD_PROBE

    layers = (mlp_layers(4, 16) if probes else []) if layers is None else layers
    return RunStarted(
        run_name=name,
        config_toml="",
        model_name="Net",
        device="cpu",
        params=sum(la.numel for la in layers),
        layers=layers,
        out_path=f"runs/{name}.h5",
        started_at=t0,
        probes=[GRAD_PROBE] if probes else [],
        step_scalars=step_scalars,
        source="script",
        config_json='{"lr": 1.0, "gamma": 0.7, "batch_size": 64}',
    )


def user_values(steps: np.ndarray) -> dict[str, np.ndarray]:
    """The loop's logged values at ``steps``: a falling loss, a rising top-5, a grad scale that halves
    every 100 steps (no accuracy, no samples/s: the loop never said its batch size)."""
    s = steps.astype(np.float64)
    return {
        "loss": 2.3 * np.exp(-s / 80.0) + 0.1,
        "lr": np.full(s.shape, 0.5),
        "grad_scale": 65536.0 / 2.0 ** (s // 100),
        "top5": 1.0 - 0.9 * np.exp(-s / 60.0),
    }


def iter_user_run(
    *,
    steps: int = 300,
    batch_steps: int = 25,
    epoch_every: int = 100,
    log_every: int = 1,
    probes: bool = False,
    t0: float = T0,
    finish: str | None = "completed",
    scalar_names: tuple[str, ...] = (*STEP_SCALARS, *USER_KEYS),
) -> Iterator[Event]:
    """A user loop's events: RunStarted (unknown totals), StepBatches whose scalar_names carry the
    loop's own keys (NaN where a step did not log; ``log_every`` > 1 logs every n-th step only),
    EpochEnds with its own metrics beside val_loss, a TestResult with extra metrics, RunFinished."""
    layers = mlp_layers(4, 16) if probes else []
    yield user_run_started(probes=probes, layers=layers, t0=t0, step_scalars=scalar_names)
    rng = np.random.default_rng(1)
    for start in range(0, steps, batch_steps):
        st = np.arange(start, min(steps, start + batch_steps), dtype=np.int64)
        vals = user_values(st)
        scalars = np.full((st.shape[0], len(scalar_names)), np.nan)
        logged = (st % log_every) == 0
        for j, key in enumerate(scalar_names):
            if key in vals:
                scalars[:, j] = np.where(logged, vals[key], np.nan)
        blocks = {}
        if probes:
            from tuitrain.events import GRAD, ProbeBlock

            vals4 = 10.0 ** rng.uniform(-4, -1, (st.shape[0], len(PROBE_NAMES), len(layers)))
            blocks[GRAD] = ProbeBlock(GRAD, st, vals4.astype(np.float32))
        epochs = (st // epoch_every).astype(np.int32)
        yield StepBatch(st, epochs, scalars, scalar_names, blocks, time=t0 + 1.0 + float(st[-1]) / 100.0)
        end = int(st[-1]) + 1
        if end % epoch_every == 0:
            e = end // epoch_every - 1
            yield EpochEnd(
                e,
                end,
                train_loss=float(vals["loss"].mean()),
                val_loss=0.3 + 0.5 / (e + 1),
                time=t0 + 1.0 + end / 100.0,
                metrics={"val_top5": 0.8 + 0.05 * e, "val_f1": 0.7 + 0.1 * e},
            )
    if finish is None:
        return
    t_end = t0 + 2.0 + steps / 100.0
    if finish == "completed":
        yield TestResult(loss=0.31, acc=0.912, time=t_end - 0.5, metrics={"f1": 0.905, "top5": 0.991})
    yield RunFinished(finish, steps, time=t_end)


def user_run(**kw) -> list[Event]:
    return list(iter_user_run(**kw))
