"""The Monitor under a user's own loop: optimizer hooks around ``optimizer.step()``, ``log()`` to commit
a step, pluggable probes next to the gradient probe, and the live queue's merging of such batches.

Real models and optimizers throughout; the reference values are computed in the test with plain torch
in float64, straight from the definitions of the gradient probe's quantities.
"""

from __future__ import annotations

import math
import queue

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.recorder import Recorder
from tuitrain.config import MonitorConfig
from tuitrain.events import (
    GRAD,
    PROBE_NAMES,
    STEP_SCALARS,
    Alert,
    ProbeBlock,
    ProbeSpec,
    Quantity,
    RunStarted,
    StepBatch,
)
from tuitrain.train.monitor import Diverged, Monitor
from tuitrain.train.probe_protocol import GradientProbe, Probe, empty_block
from tuitrain.train.sinks import QueueSink


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    )


def data(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


def hooked(monitor: Monitor, opt: torch.optim.Optimizer) -> None:
    """What ``run.watch(model, optimizer)`` installs: the monitor around every optimizer step."""
    opt.register_step_pre_hook(lambda *_: monitor.before_step())
    opt.register_step_post_hook(lambda *_: monitor.after_optimizer_step())


def blocks_of(rec: Recorder, probe: str) -> ProbeBlock:
    bs = [b.blocks[probe] for b in rec.batches() if probe in b.blocks]
    return ProbeBlock(probe, np.concatenate([b.steps for b in bs]), np.concatenate([b.values for b in bs]))


def column(rec: Recorder, name: str) -> np.ndarray:
    return np.concatenate([b.scalar(name) for b in rec.batches()])


class MaxAbsGrad:
    """A probe written by a user: max |grad| per parameter tensor, read with one stack per step."""

    def __init__(self, every: int = 1) -> None:
        self.spec = ProbeSpec("maxgrad", "tensor", (Quantity("max_abs_grad", "max |grad|"),), every)
        self.params: list[torch.nn.Parameter] = []
        self.rows: list[tuple[int, np.ndarray]] = []
        self.calls: list[tuple[str, int]] = []

    def attach(self, model, optimizer) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]

    def before_step(self, step: int) -> None:
        self.calls.append(("before", step))
        vals = torch.stack([p.grad.abs().max() for p in self.params]).numpy()
        self.rows.append((step, vals[None].astype(np.float32)))

    def after_step(self, step: int) -> None:
        self.calls.append(("after", step))

    def collect(self, force: bool = False) -> ProbeBlock:
        rows, self.rows = self.rows, []
        if not rows:
            return empty_block(self.spec, len(self.params))
        return ProbeBlock(
            self.spec.name, np.array([s for s, _ in rows], np.int64), np.stack([v for _, v in rows])
        )

    def detach(self) -> None:
        self.params = []


def test_a_custom_probe_lands_in_the_step_batch_next_to_the_gradient_probe() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rec = Recorder()
    mine = MaxAbsGrad(every=2)
    assert isinstance(mine, Probe)
    monitor = Monitor([rec], MonitorConfig(emit_seconds=1e9))
    monitor.add_probe(GradientProbe(every=1), model, opt)
    monitor.add_probe(mine, model)
    hooked(monitor, opt)
    want = {}
    for i, (x, y) in enumerate(data(7)):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if i % 2 == 0:
            want[i] = [float(p.grad.abs().max()) for p in model.parameters()]
        opt.step()
        monitor.log({"loss": loss}, epoch=0)
        if i == 3:
            monitor.flush()
    monitor.flush(force=True)
    assert [type(e) for e in rec.events[:1]] == [StepBatch] and len(rec.batches()) == 2
    for b in rec.batches():  # every batch carries both blocks, each with the rows of its own steps
        assert set(b.blocks) == {GRAD, "maxgrad"} and set(b.blocks["maxgrad"].steps) <= set(b.steps)
    got = blocks_of(rec, "maxgrad")
    assert got.steps.tolist() == [0, 2, 4, 6] and got.values.shape == (4, 1, 6)
    np.testing.assert_array_equal(got.values[:, 0, :], np.array([want[s] for s in (0, 2, 4, 6)], np.float32))
    assert blocks_of(rec, GRAD).steps.tolist() == list(range(7))
    assert mine.calls[:4] == [("before", 0), ("after", 0), ("before", 2), ("after", 2)]
    assert [s.name for s in monitor.specs] == [GRAD, "maxgrad"]
    with pytest.raises(RuntimeError, match="before the run starts"):
        monitor.add_probe(MaxAbsGrad())


def reference(before: list[torch.Tensor], grads: list[torch.Tensor], after: list[torch.Tensor]) -> np.ndarray:
    out = np.zeros((len(PROBE_NAMES), len(before)))
    for i, (w, g, w1) in enumerate(zip(before, grads, after, strict=True)):
        w, g, w1 = w.double(), g.double(), w1.double()
        out[:, i] = [g.norm(), g.abs().mean(), w.norm(), (w1 - w).norm() / w.norm()]
    return out


@pytest.mark.parametrize("optim", ["adadelta", "sgd"])
def test_user_loop_gradient_block_matches_plain_torch(optim: str) -> None:
    model = mlp(1)
    params = list(model.parameters())
    opt = torch.optim.Adadelta(params, lr=1.0) if optim == "adadelta" else torch.optim.SGD(params, lr=0.1)
    rec = Recorder()
    announced: list[tuple[str, ...]] = []

    def announce(names: tuple[str, ...]) -> None:
        announced.append(names)
        monitor.emit(RunStarted("loop", "", "mlp", layers=probe.layers, probes=monitor.specs))

    monitor = Monitor([rec], MonitorConfig(emit_seconds=1e9), announce=announce)
    probe = GradientProbe(every=3)
    monitor.add_probe(probe, model, opt)
    hooked(monitor, opt)
    assert [layer.name for layer in probe.layers] == [n for n, _ in model.named_parameters()]
    want, logged = {}, []
    for i, (x, y) in enumerate(data(14, seed=2)):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        before = [p.detach().clone() for p in params]
        grads = [p.grad.detach().clone() for p in params]
        opt.step()
        want[i] = reference(before, grads, [p.detach() for p in params])
        acc = (logits.argmax(1) == y).float().mean()
        values = {"loss": loss, "acc": acc, "grad_clip": 0.25 * i, "tokens": torch.tensor(1000 + i)}
        if i % 4 == 1:
            values["val/score"] = torch.tensor(i / 7, dtype=torch.float64)
        monitor.log(values, epoch=i // 5, lr=opt.param_groups[0]["lr"], n_samples=16)
        logged.append(values)
        if i == 0:
            assert not rec.events and not announced  # nothing is sent before the first flush
        if i in (4, 9):
            monitor.flush()
    monitor.flush(force=True)
    assert announced == [(*STEP_SCALARS, "grad_clip", "tokens", "val/score")]
    assert isinstance(rec.events[0], RunStarted) and isinstance(rec.events[1], StepBatch)
    assert not [e for e in rec.events if isinstance(e, Alert)]
    got = blocks_of(rec, GRAD)
    assert got.steps.tolist() == [0, 3, 6, 9, 12]
    for k, step in enumerate(got.steps.tolist()):
        np.testing.assert_allclose(got.values[k], want[step], rtol=1e-3, atol=0)
    # every value comes back exactly as logged (float32 tensors to float64 are exact), in its own column
    steps = np.concatenate([b.steps for b in rec.batches()])
    assert steps.tolist() == list(range(14))
    np.testing.assert_array_equal(column(rec, "loss"), [float(v["loss"].detach()) for v in logged])
    np.testing.assert_array_equal(column(rec, "acc"), [float(v["acc"]) for v in logged])
    np.testing.assert_array_equal(column(rec, "grad_clip"), [0.25 * i for i in range(14)])
    np.testing.assert_array_equal(column(rec, "tokens"), [1000.0 + i for i in range(14)])
    score = column(rec, "val/score")
    np.testing.assert_array_equal(score[1::4], [i / 7 for i in range(1, 14, 4)])
    assert np.isnan(np.delete(score, np.s_[1::4])).all()  # NaN where a step did not log the key
    assert (column(rec, "lr") == opt.param_groups[0]["lr"]).all()
    sps = column(rec, "samples_per_s")
    assert math.isnan(sps[0]) and (sps[1:] > 0).all()
    epochs = np.concatenate([b.epochs for b in rec.batches()])
    assert epochs.tolist() == [i // 5 for i in range(14)]


def test_epoch_means_weigh_by_n_samples_and_skip_steps_without_a_loss() -> None:
    monitor = Monitor([Recorder()], MonitorConfig(emit_seconds=1e9))
    monitor.log({"loss": torch.tensor(1.0), "acc": 0.5}, 0, n_samples=10)
    monitor.log({"loss": 4.0}, 0, n_samples=30)
    monitor.log({"other": 3.0}, 0)  # no loss, no acc: not in the means
    assert monitor.take_epoch_means() == pytest.approx((1.0 * 0.25 + 4.0 * 0.75, 0.5))
    monitor.log({"loss": 2.0}, 1)
    monitor.log({"loss": 6.0}, 1)  # no n_samples: one per step
    loss, acc = monitor.take_epoch_means()
    assert loss == 4.0 and math.isnan(acc)


def test_optimizer_steps_without_log_still_count_and_a_silent_monitor_announces() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder()
    calls = []
    monitor = Monitor([rec], MonitorConfig(emit_seconds=1e9), announce=calls.append)
    monitor.flush()
    assert calls == []  # a plain flush with nothing to send announces nothing
    monitor.add_probe(GradientProbe(), model, opt)
    hooked(monitor, opt)
    for x, y in data(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert monitor.step == 4 and monitor.stepped  # the fifth step is open until the next one
    monitor.flush(force=True)  # commits it
    assert calls == [STEP_SCALARS] and monitor.step == 5
    b = rec.batches()[0]
    assert b.steps.tolist() == list(range(5)) and np.isnan(b.scalar("loss")).all()
    assert b.blocks[GRAD].steps.tolist() == list(range(5))
    empty = Monitor([rec := Recorder()], MonitorConfig(), announce=calls.append)
    empty.flush(force=True)  # no step at all: announced once, nothing sent
    empty.flush(force=True)
    assert calls == [STEP_SCALARS, STEP_SCALARS] and rec.events == []
    assert empty.specs == [] and all(math.isnan(v) for v in empty.take_epoch_means())


def test_a_logged_non_finite_loss_alerts_and_stops_as_for_presets() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder()
    monitor = Monitor([rec], MonitorConfig(emit_seconds=1e9, nan_patience=1))
    monitor.add_probe(GradientProbe(), model, opt)
    hooked(monitor, opt)
    for i, (x, y) in enumerate(data(6)):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.log({"loss": loss * (math.nan if i >= 3 else 1.0)} if i != 4 else {"other": 1.0}, 0)
    monitor.flush()  # the NaN losses of steps 3 and 5 (4 logged none): two in a row
    alerts = [e for e in rec.events if isinstance(e, Alert)]
    assert [(a.kind, a.step) for a in alerts] == [("nan", 3)] and "loss = nan" in alerts[0].message
    with pytest.raises(Diverged, match="diverged: loss is NaN at step 3"):
        monitor.take_epoch_means()


def test_log_refuses_what_is_not_a_scalar() -> None:
    monitor = Monitor([Recorder()])
    with pytest.raises(ValueError, match="'h'.*shape \\(2,\\)"):
        monitor.log({"h": torch.ones(2)}, 0)
    with pytest.raises(TypeError, match="'s' is a str"):
        monitor.log({"loss": 1.0, "s": "high"}, 0)
    assert monitor.step == 0 and monitor.scalar_names == STEP_SCALARS  # nothing half-committed


def batch(steps: list[int], names: tuple[str, ...], probe_steps: list[int], n_layers: int = 2) -> StepBatch:
    n = len(steps)
    scalars = np.arange(n * len(names), dtype=np.float64).reshape(n, len(names)) + 100 * steps[0]
    vals = (
        np.ones((len(probe_steps), len(PROBE_NAMES), n_layers), np.float32)
        * np.array(probe_steps)[:, None, None]
    )
    mine = ProbeBlock("maxgrad", np.array(steps, np.int64), np.ones((n, 1, n_layers), np.float32))
    return StepBatch(
        np.array(steps, np.int64),
        np.zeros(n, np.int32),
        scalars,
        names,
        {GRAD: ProbeBlock(GRAD, np.array(probe_steps, np.int64), vals), "maxgrad": mine},
    )


class FullQueue:
    def put_nowait(self, item) -> None:
        raise queue.Full


def test_queue_sink_merges_batches_with_blocks_and_new_columns_and_thins_them() -> None:
    sink = QueueSink(FullQueue(), max_pending_rows=8)
    names_b = (*STEP_SCALARS, "tokens")
    a, b = batch([0, 1, 2], STEP_SCALARS, [0, 2]), batch([3, 4, 5, 6], names_b, [4, 6])
    sink.emit(a)
    sink.emit(b)
    (m,) = sink.pending
    assert m.scalar_names == names_b and m.steps.tolist() == list(range(7)) and sink.dropped == 0
    tokens = m.scalar("tokens")
    assert np.isnan(tokens[:3]).all() and tokens[3:].tolist() == b.scalar("tokens").tolist()
    np.testing.assert_array_equal(m.scalars[:3, :5], a.scalars)
    np.testing.assert_array_equal(m.scalars[3:], b.scalars)
    assert m.probe_steps.tolist() == [0, 2, 4, 6] and m.blocks["maxgrad"].steps.tolist() == list(range(7))
    # past max_pending_rows: every other row and the newest; the probe rows of dropped steps go too
    sink.emit(batch([7, 8], STEP_SCALARS, [8]))
    (m,) = sink.pending
    assert sink.dropped == 4 and m.scalar_names == names_b
    assert m.steps.tolist() == [0, 2, 4, 6, 8] and m.blocks["maxgrad"].steps.tolist() == [0, 2, 4, 6, 8]
    assert m.probe_steps.tolist() == [0, 2, 4, 6, 8] and m.probes[:, 0, 0].tolist() == [
        0.0,
        2.0,
        4.0,
        6.0,
        8.0,
    ]
    assert np.isnan(m.scalar("tokens")[[0, 1, 4]]).all()


def test_a_flush_between_before_and_after_the_optimizer_step_keeps_the_probed_step_whole() -> None:
    """Manual probing (the Lightning callback's order): a forced flush may come between the two calls;
    the probed step's gradients, copied before it, still meet its W_{t+1}."""
    model = mlp(3)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    rec = Recorder()
    monitor = Monitor([rec], MonitorConfig(emit_seconds=1e9))
    monitor.add_probe(GradientProbe(), model)
    want = {}
    for i, (x, y) in enumerate(data(4)):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        before = [p.detach().clone() for p in params]
        grads = [p.grad.detach().clone() for p in params]
        monitor.before_step()
        opt.step()
        if i >= 1:
            monitor.flush(force=True)  # reduces the waiting slots while step i is half-measured
        monitor.after_optimizer_step()
        monitor.log({"loss": loss.detach()}, 0)
        want[i] = reference(before, grads, [p.detach() for p in params])
    monitor.flush(force=True)
    got = blocks_of(rec, GRAD)
    assert got.steps.tolist() == [0, 1, 2, 3]
    for k in range(4):
        np.testing.assert_allclose(got.values[k], want[k], rtol=1e-3, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_user_loop_on_cuda_makes_no_host_sync_per_step() -> None:
    """Logged CUDA tensors are kept as references and the gradient probe copies non-blocking: steps
    under ``set_sync_debug_mode("error")``; the flush (outside) reads them all."""
    dev = torch.device("cuda")
    model = mlp().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = Recorder()
    monitor = Monitor([rec], MonitorConfig(emit_seconds=1e9))
    monitor.add_probe(GradientProbe(), model, opt)
    hooked(monitor, opt)
    batches = [(x.to(dev), y.to(dev)) for x, y in data(4)]
    want = []

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc = (logits.argmax(1) == y).float().mean()
        monitor.log({"loss": loss, "acc": acc, "count": (y == 0).sum()}, 0)
        want.append((loss.detach(), acc, (y == 0).sum()))

    for i in range(6):  # warm-up: optimizer state, the probe's pinned buffers and events
        step(i)
    monitor.flush(force=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(6, 20):
            step(i)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    monitor.flush(force=True)
    steps = np.concatenate([b.steps for b in rec.batches()])
    assert steps.tolist() == list(range(20)) and blocks_of(rec, GRAD).steps.tolist() == list(range(20))
    assert np.isfinite(blocks_of(rec, GRAD).values).all()
    np.testing.assert_array_equal(column(rec, "loss"), [float(w[0]) for w in want])
    np.testing.assert_array_equal(column(rec, "acc"), [float(w[1]) for w in want])
    np.testing.assert_array_equal(column(rec, "count"), [float(w[2]) for w in want])
