"""The fast paths of the probe and the monitor (see bench/overhead.py) against the plain computations.

What is tested and why:

* On CUDA, a training step with the monitor makes no host synchronisation once warm (the readback
  pool is full): checked with ``torch.cuda.set_sync_debug_mode("error")``. Skipped without a GPU.
* The CPU "flat" probe (one copy into flat buffers, numpy segment sums) and the ``_foreach`` probe
  (used on CUDA and for large models) agree with each other and with a float64 computation.
* The deferred readback (pinned buffers and events, pooled) hands back every vector, in order, as a
  copy, and reuses its buffers and events: exercised with a stand-in event on CPU.
* The monitor's CPU path and its readback path produce the same StepBatches.
* ``monitor.every = N`` gives the same probe values on the probed steps as ``every = 1``.
* The alert checks with their healthy-case shortcuts say exactly what the straightforward checks say.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.recorder import Recorder
from tuitrain.config import MonitorConfig
from tuitrain.events import PROBE_NAMES, Alert, LayerInfo, StepBatch
from tuitrain.train import probes as probes_mod
from tuitrain.train.monitor import GradientAlerts, Monitor
from tuitrain.train.probes import HostReadback, LayerProbe
from tuitrain.train.summary import layer_infos


def small_mlp(seed: int = 0) -> torch.nn.Module:
    """The shape of the toy2d preset, smaller: Linear + BatchNorm + ReLU layers, a linear head."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(2, 16),
        torch.nn.BatchNorm1d(16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 16),
        torch.nn.BatchNorm1d(16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 3),
    )


class WithUnused(torch.nn.Module):
    """A model whose second branch never runs: its parameters have no gradient."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.used = torch.nn.Linear(2, 3)
        self.unused = torch.nn.Linear(2, 3)
        self.scale = torch.nn.Parameter(torch.tensor(1.5))  # a 0-dim parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x) * self.scale


def batches(n: int, device: str = "cpu", seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(32, 2, generator=g).to(device), torch.randint(0, 3, (32,), generator=g).to(device))
        for _ in range(n)
    ]


def reference_probes(
    params: list[torch.Tensor], grads: list[torch.Tensor], after: list[torch.Tensor]
) -> np.ndarray:
    """The four statistics in float64, straight from their definitions."""
    out = np.zeros((len(PROBE_NAMES), len(params)))
    for i, (w, g, w1) in enumerate(zip(params, grads, after, strict=True)):
        w, g, w1 = w.double(), g.double(), w1.double()
        out[0, i] = g.norm()
        out[1, i] = g.abs().mean()
        out[2, i] = w.norm()
        du, wn = float((w1 - w).norm()), float(w.norm())
        out[3, i] = du / wn if wn > 0 else du  # a zero tensor's ratio is undefined: ||dW|| is stored
    return out


# ---------------------------------------------------------------------------------------------
# CUDA: no host synchronisation per step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_monitor_step_loop_has_no_host_sync_on_cuda(optim: str) -> None:
    device = torch.device("cuda")
    model = small_mlp().to(device)
    params = list(model.parameters())
    opt = (
        torch.optim.SGD(params, lr=0.1, momentum=0.9) if optim == "sgd" else torch.optim.Adam(params, lr=1e-3)
    )
    rec = Recorder()
    monitor = Monitor.for_model(
        params, layer_infos(model), [rec], MonitorConfig(every=1, emit_seconds=0.0), device
    )
    data = batches(4, "cuda")

    def step(i: int) -> None:
        x, y = data[i % len(data)]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        monitor.before_step()
        lr = opt.param_groups[0]["lr"]
        opt.step()
        monitor.after_step(loss, logits, y, lr, 0)

    for i in range(10):  # warm-up: optimizer state, pinned buffers and events of the readback pool
        step(i)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(10, 30):  # emit_seconds = 0: every step also builds and emits a StepBatch
            step(i)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    monitor.flush(force=True)  # outside the step loop a synchronisation is fine
    steps = np.concatenate([b.steps for b in rec.batches()])
    assert steps.tolist() == list(range(30))
    probes = np.concatenate([b.probes for b in rec.batches()])
    assert probes.shape == (30, len(PROBE_NAMES), len(params)) and np.isfinite(probes).all()


# ---------------------------------------------------------------------------------------------
# the CPU flat probe against the _foreach probe and float64


@pytest.mark.parametrize("make", [small_mlp, WithUnused], ids=["mlp_bn", "unused_and_0dim"])
@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_flat_and_foreach_probes_agree_with_float64(make: Callable[[], torch.nn.Module], optim: str) -> None:
    base = make()
    results = {}
    for flat in (True, False):
        model = copy.deepcopy(base)
        params = list(model.parameters())
        opt = (
            torch.optim.SGD(params, lr=0.1, momentum=0.9)
            if optim == "sgd"
            else torch.optim.Adam(params, lr=1e-2)
        )
        probe = LayerProbe(params, flat=flat)
        assert probe.flat is flat
        got, want = [], []
        for x, y in batches(5):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            before = [p.detach().clone() for p in params]
            grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
            probe.before_step()
            opt.step()
            out = probe.after_step()
            assert out.dtype == torch.float32 and out.shape == (len(PROBE_NAMES), len(params))
            got.append(out.numpy().copy())
            want.append(reference_probes(before, grads, [p.detach() for p in params]))
        got_a, want_a = np.stack(got), np.stack(want)
        np.testing.assert_allclose(got_a, want_a, rtol=2e-5, atol=1e-12)
        results[flat] = got_a
    np.testing.assert_allclose(results[True], results[False], rtol=2e-5, atol=1e-12)


def test_after_step_host_returns_new_arrays() -> None:
    model = small_mlp()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    probe = LayerProbe(params)
    outs = []
    for x, y in batches(3):
        F.cross_entropy(model(x), y).backward()
        probe.before_step()
        opt.step()
        opt.zero_grad()
        outs.append(probe.after_step_host())
    assert len({id(o) for o in outs}) == 3
    assert not np.array_equal(outs[0], outs[1])  # an earlier result is not overwritten by a later step


@pytest.mark.parametrize("slots", [0, 3, 1000], ids=["1 slot", "3 slots", "64 slots"])
def test_deferred_probe_steps_equal_immediate_ones(slots: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slots reduced in one pass at collect(), or early when all are taken, give the values of
    after_step_host() computed at each step, in step order, whatever the capacity."""
    base = small_mlp()
    numel = sum(p.numel() for p in base.parameters())
    monkeypatch.setattr(probes_mod, "_DEFER_BYTES", max(1, slots * 7 * 4 * numel))
    results = {}
    for deferred in (False, True):
        model = copy.deepcopy(base)
        params = list(model.parameters())
        opt = torch.optim.Adam(params, lr=1e-2)
        probe = LayerProbe(params)
        got = []
        for i, (x, y) in enumerate(batches(9)):
            F.cross_entropy(model(x), y).backward()
            probe.before_step()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if not deferred:
                got.append(probe.after_step_host())
                continue
            probe.after_step_deferred()
            if i in (3, 8):  # collect part-way and at the end
                assert probe.pending == (4 if i == 3 else 5)
                got.extend(probe.collect())
                assert probe.pending == 0
        results[deferred] = np.stack(got)
    assert probe.capacity == min(64, max(1, slots))
    np.testing.assert_array_equal(results[True], results[False])
    assert probe.collect().shape == (0, len(PROBE_NAMES), len(params))


def test_monitor_counts_accuracy_of_uneven_batches_and_flushes_early_for_big_logits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CPU rows keep their logits until the flush: batches of different sizes are counted one by one,
    and the flush comes early once the kept logits pass the cap."""
    model = small_mlp()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    rec = Recorder()
    monitor = Monitor.for_model(
        params, layer_infos(model), [rec], MonitorConfig(every=2, emit_seconds=1e9), torch.device("cpu")
    )
    monkeypatch.setattr("tuitrain.train.monitor._MAX_PENDING_ELEMS", (32 + 20 + 32) * 3 - 1)
    want = []
    for i, (x, y) in enumerate(batches(4)):
        if i == 1:
            x, y = x[:20], y[:20]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        monitor.before_step()
        opt.step()
        monitor.after_step(loss, logits, y, 0.1, 0)
        want.append(((logits.argmax(1) == y).float().mean().item(), loss.item()))
    assert len(rec.batches()) == 1 and len(rec.batches()[0]) == 3  # the cap flushed after the third step
    monitor.flush()
    m = merged(rec.batches())
    assert m.steps.tolist() == [0, 1, 2, 3] and m.probe_steps.tolist() == [0, 2]
    np.testing.assert_allclose(m.scalar("acc"), [w[0] for w in want])
    np.testing.assert_allclose(m.scalar("loss"), [w[1] for w in want], rtol=1e-6)
    sizes = [32, 20, 32, 32]
    assert monitor.epoch_sums.tolist() == pytest.approx(
        [
            sum(w[1] * b for w, b in zip(want, sizes, strict=True)),
            sum(sizes),
            sum(w[0] * b for w, b in zip(want, sizes, strict=True)),
            sum(sizes),
        ]
    )


def test_probe_picks_its_path() -> None:
    small = [torch.nn.Parameter(torch.ones(3, 4))]
    assert LayerProbe(small).flat
    big = [torch.nn.Parameter(torch.ones(probes_mod._FLAT_MAX_NUMEL + 1))]
    assert not LayerProbe(big).flat
    doubles = [torch.nn.Parameter(torch.ones(3, dtype=torch.float64))]
    assert not LayerProbe(doubles).flat
    with pytest.raises(ValueError, match="float32"):
        LayerProbe(doubles, flat=True)


def test_probe_still_requires_before_step() -> None:
    probe = LayerProbe([torch.nn.Parameter(torch.ones(2))])
    with pytest.raises(AssertionError):
        probe.after_step()


# ---------------------------------------------------------------------------------------------
# HostReadback: the deferred (CUDA) bookkeeping with a stand-in event


class FakeEvent:
    """Completes when the test says so; counts how it was used."""

    def __init__(self) -> None:
        self.done = False
        self.records = 0
        self.waits = 0

    def record(self) -> None:
        self.records += 1
        self.done = False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.waits += 1
        self.done = True


@pytest.fixture
def fake_events() -> list[FakeEvent]:
    """Every event the readback under test created, in order."""
    return []


def deferred(made: list[FakeEvent], depth: int = 3) -> HostReadback:
    """The CUDA bookkeeping of HostReadback on CPU tensors, with FakeEvents appended to ``made``."""

    def factory() -> FakeEvent:
        made.append(FakeEvent())
        return made[-1]

    return HostReadback(torch.device("cpu"), depth=depth, event_factory=factory)


def test_deferred_readback_waits_for_events_and_keeps_order(fake_events: list[FakeEvent]) -> None:
    rb = deferred(fake_events)
    for i in range(3):
        rb.push((i,), torch.tensor([float(i), 10.0 + i]))
    assert rb.pop_ready() == [] and rb.pending == 3  # nothing completed yet
    fake_events[1].done = True
    assert rb.pop_ready() == []  # the oldest is not done: order is kept
    fake_events[0].done = True
    ready = rb.pop_ready()
    assert [m for m, _ in ready] == [(0,), (1,)]
    assert ready[1][1].tolist() == [1.0, 11.0]
    assert all(e.waits == 0 for e in fake_events)  # completed events are never waited on
    ready = rb.pop_ready(force=True)
    assert [m for m, _ in ready] == [(2,)] and fake_events[2].waits == 1 and rb.pending == 0


def test_deferred_readback_bounds_the_queue_by_depth(fake_events: list[FakeEvent]) -> None:
    rb = deferred(fake_events, depth=3)
    handed = []
    for i in range(10):  # the device never catches up on its own
        rb.push((i,), torch.full((4,), float(i)))
        handed += rb.pop_ready()
        assert rb.pending <= 3
    assert [m[0] for m, _ in handed] == list(range(7))
    assert [a[0] for _, a in handed] == [float(i) for i in range(7)]


def test_deferred_readback_reuses_buffers_and_events(fake_events: list[FakeEvent]) -> None:
    rb = deferred(fake_events, depth=4)
    out = []
    for i in range(200):
        n = 2 if i % 3 else 6  # two vector sizes (probed and plain steps) use two pools
        rb.push((i,), torch.arange(n, dtype=torch.int64) + i)  # not float32: converted
        if i >= 2:  # the device lags two steps behind
            for e in fake_events:
                if e.records and not e.done:
                    e.done = True
                    break
        out += rb.pop_ready()
    out += rb.pop_ready(force=True)
    assert [m[0] for m, _ in out] == list(range(200))
    for (i,), arr in out:
        n = 2 if i % 3 else 6
        assert arr.dtype == np.float32 and arr.tolist() == [float(i + k) for k in range(n)]
    assert len(fake_events) <= 2 * 6  # pooled: bounded by the depth, not by the number of steps
    assert sum(e.records for e in fake_events) == 200


def test_readback_copies_out_of_pooled_buffers(fake_events: list[FakeEvent]) -> None:
    rb = deferred(fake_events, depth=1)
    rb.push(("a",), torch.tensor([1.0, 2.0]))
    ((_, first),) = rb.pop_ready(force=True)
    rb.push(("b",), torch.tensor([3.0, 4.0]))  # reuses the pooled buffer of "a"
    ((_, second),) = rb.pop_ready(force=True)
    assert len(fake_events) == 1
    assert first.tolist() == [1.0, 2.0] and second.tolist() == [3.0, 4.0]


# ---------------------------------------------------------------------------------------------
# the monitor: CPU path vs readback path, every = N vs every = 1


def run_monitor(every: int, readback: bool = False, steps: int = 12, lag: int = 0) -> list[StepBatch]:
    """Train small_mlp under a Monitor; ``readback`` takes the CUDA code path with stand-in events that
    complete ``lag`` pushes later."""
    model = small_mlp()
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    rec = Recorder()
    monitor = Monitor.for_model(
        params, layer_infos(model), [rec], MonitorConfig(every=every, emit_seconds=1e9), torch.device("cpu")
    )
    events: list[FakeEvent] = []
    if readback:

        def factory() -> FakeEvent:
            events.append(FakeEvent())
            return events[-1]

        # What a CUDA device selects, for the engine's loss and count and for the gradient probe's own
        # readback; the rest of the path is the real one.
        monitor._host = False
        monitor.readback = HostReadback(torch.device("cpu"), event_factory=factory)
        probe = monitor.gradient
        assert probe is not None
        probe.host = False
        probe.readback = HostReadback(torch.device("cpu"), event_factory=factory)
    for i, (x, y) in enumerate(batches(steps)):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        monitor.before_step()
        opt.step()
        monitor.after_step(loss, logits, y, 1e-2, i // 5)
        recorded = [e for e in events if e.records and not e.done]
        for e in recorded[: max(0, len(recorded) - lag)]:
            e.done = True
        if i == 6:
            monitor.flush()  # two batches: rows before and after a flush
    monitor.flush(force=True)
    return rec.batches()


def merged(batches_: list[StepBatch]) -> StepBatch:
    return StepBatch.with_grad(
        np.concatenate([b.steps for b in batches_]),
        np.concatenate([b.epochs for b in batches_]),
        np.concatenate([b.scalars for b in batches_]),
        np.concatenate([b.probe_steps for b in batches_]),
        np.concatenate([b.probes for b in batches_]),
    )


def test_step_batches_have_the_documented_layout() -> None:
    bs = run_monitor(every=3)
    assert len(bs) == 2
    for b in bs:
        assert b.steps.dtype == np.int64 and b.epochs.dtype == np.int32
        assert b.scalars.dtype == np.float64 and b.scalars.flags.c_contiguous
        assert b.probe_steps.dtype == np.int64 and b.probes.dtype == np.float32
        assert b.scalars.shape == (len(b), 5) and b.probes.shape[1:] == (len(PROBE_NAMES), 10)
    m = merged(bs)
    assert m.steps.tolist() == list(range(12)) and m.epochs.tolist() == [i // 5 for i in range(12)]
    assert m.probe_steps.tolist() == [0, 3, 6, 9]
    assert np.all(m.scalar("lr") == 1e-2) and np.isfinite(m.scalar("loss")).all()
    assert math.isnan(m.scalar("step_time")[0]) and (m.scalar("step_time")[1:] > 0).all()


@pytest.mark.parametrize("lag", [0, 2, 7])
def test_readback_path_gives_the_same_rows_as_the_cpu_path(lag: int) -> None:
    dev_batches = run_monitor(every=2, readback=True, lag=lag)
    for b in dev_batches:  # a row waits for its probe row: each batch carries its own steps' probe rows
        assert set(b.probe_steps.tolist()) == {s for s in b.steps.tolist() if s % 2 == 0}
    host, dev = merged(run_monitor(every=2)), merged(dev_batches)
    np.testing.assert_array_equal(host.steps, dev.steps)
    np.testing.assert_array_equal(host.epochs, dev.epochs)
    cols = [0, 1, 2]  # loss, acc, lr; samples/s and step time are timings
    np.testing.assert_allclose(host.scalars[:, cols], dev.scalars[:, cols], rtol=1e-6)
    np.testing.assert_array_equal(host.probe_steps, dev.probe_steps)
    np.testing.assert_array_equal(host.probes, dev.probes)


@pytest.mark.parametrize("every", [2, 5])
def test_every_n_probes_equal_every_step_probes_on_probed_steps(every: int) -> None:
    full, sparse = merged(run_monitor(every=1)), merged(run_monitor(every=every))
    assert sparse.probe_steps.tolist() == list(range(0, 12, every))
    np.testing.assert_array_equal(sparse.probes, full.probes[sparse.probe_steps])
    np.testing.assert_array_equal(sparse.scalars[:, :3], full.scalars[:, :3])


def test_epoch_means_from_plain_sums() -> None:
    model = small_mlp()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    monitor = Monitor.for_model(params, layer_infos(model), [], MonitorConfig(), torch.device("cpu"))
    losses, correct = [], 0
    for x, y in batches(4):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        monitor.before_step()
        opt.step()
        monitor.after_step(loss, logits, y, 0.1, 0)
        losses.append(loss.item())
        correct += int((logits.argmax(1) == y).sum())
    monitor.flush()
    assert monitor.epoch_sums.tolist() == pytest.approx([32 * sum(losses), 128, correct, 128])
    mean_loss, acc = monitor.take_epoch_means()
    assert mean_loss == pytest.approx(np.mean(losses)) and acc == pytest.approx(correct / 128)
    assert monitor.epoch_sums.tolist() == [0, 0, 0, 0]


# ---------------------------------------------------------------------------------------------
# the alert checks with shortcuts vs the straightforward ones


class ReferenceAlerts:
    """GradientAlerts.check as first written: every array recomputed at every step, no shortcut."""

    def __init__(self, layers: list[LayerInfo], cfg: MonitorConfig) -> None:
        self.cfg = cfg
        self.names = [layer.name for layer in layers]
        self.weights = np.array([layer.kind == "weight" for layer in layers], dtype=bool)
        if not self.weights.any():
            self.weights[:] = True
        self.streak = np.zeros(len(layers), dtype=np.int64)
        self.vanish_reported = 0
        self.explode_armed = True
        self.nan_epoch = -1

    def check(self, step: int, epoch: int, loss: float, probes: np.ndarray | None) -> list[Alert]:
        alerts: list[Alert] = []
        bad_probe = probes is not None and not np.isfinite(probes).all()
        if (not math.isfinite(loss) or bad_probe) and self.nan_epoch != epoch:
            self.nan_epoch = epoch
            where = ""
            if bad_probe:
                cols = np.nonzero(~np.isfinite(probes).all(axis=0))[0]
                where = f"; non-finite statistics in {len(cols)} tensors, first {self.names[cols[0]]}"
            alerts.append(Alert(step, "error", "nan", f"NaN/Inf at step {step}: loss = {loss}{where}"))
        if probes is None:
            return alerts
        mean_abs = probes[PROBE_NAMES.index("grad_mean_abs")]
        below = (mean_abs < self.cfg.vanishing) & self.weights
        self.streak = np.where(below, self.streak + self.cfg.every, 0)
        stuck = (self.streak >= self.cfg.alert_steps) & self.weights
        n_stuck, n_weights = int(stuck.sum()), int(self.weights.sum())
        if n_stuck and n_stuck >= max(1, self.vanish_reported + max(1, n_weights // 4)):
            first = self.names[int(np.argmax(stuck))]
            alerts.append(
                Alert(
                    step,
                    "warning",
                    "vanishing",
                    f"vanishing gradients: {n_stuck} of {n_weights} weight layers have mean |grad| below "
                    f"{self.cfg.vanishing:g} for {self.cfg.alert_steps} steps (first: {first})",
                )
            )
            self.vanish_reported = n_stuck
        elif self.vanish_reported and n_stuck == 0 and not below.any():
            alerts.append(
                Alert(step, "info", "recovered", "gradients recovered: no weight layer is vanishing now")
            )
            self.vanish_reported = 0
        norms = probes[PROBE_NAMES.index("grad_norm")]
        over = np.isfinite(norms) & (norms > self.cfg.exploding)
        if over.any() and self.explode_armed:
            worst = int(np.argmax(np.where(over, norms, -np.inf)))
            alerts.append(
                Alert(
                    step,
                    "warning",
                    "exploding",
                    f"exploding gradients: {int(over.sum())} tensors have grad norm above {self.cfg.exploding:g} "
                    f"(largest {norms[worst]:.3g} in {self.names[worst]})",
                )
            )
            self.explode_armed = False
        elif not over.any():
            self.explode_armed = True
        return alerts


def probe_sequence(
    rng: np.random.Generator, n_layers: int, steps: int
) -> list[tuple[float, np.ndarray | None]]:
    """Healthy stretches, vanishing stretches (some or all layers), recoveries, bursts of exploding
    norms (finite, +Inf, mixed with NaN), NaN losses and skipped probes, in random order."""
    out: list[tuple[float, np.ndarray | None]] = []
    regime = "healthy"
    for _ in range(steps):
        if rng.random() < 0.08:
            regime = rng.choice(["healthy", "vanish_some", "vanish_all", "explode", "nan"])
        p = np.exp(rng.normal(-6, 1, (len(PROBE_NAMES), n_layers))).astype(np.float32)
        loss = float(rng.random())
        if regime == "vanish_some":
            p[1, : n_layers // 2] = 1e-12
        elif regime == "vanish_all":
            p[1] = 1e-12
        elif regime == "explode":
            p[0, rng.integers(n_layers)] = rng.choice([1e3, np.inf, 5e2])
            if rng.random() < 0.3:
                p[0, rng.integers(n_layers)] = np.nan
        elif regime == "nan":
            if rng.random() < 0.5:
                loss = math.nan
            else:
                p[rng.integers(len(PROBE_NAMES)), rng.integers(n_layers)] = rng.choice([np.nan, np.inf])
        if rng.random() < 0.01:
            p[3] = np.float32(3e38)  # huge but finite: a float32 sum of these would overflow
        out.append((loss, None if rng.random() < 0.2 else p))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_alert_shortcuts_say_what_the_full_checks_say(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 9
    kinds = ["weight", "bias", "norm"]
    layers = [LayerInfo(f"l{i}", (4,), 4, kinds[i % 3], f"m{i}", "Linear") for i in range(n)]
    cfg = MonitorConfig(
        every=int(rng.integers(1, 4)), vanishing=1e-8, exploding=1e2, alert_steps=int(rng.integers(1, 12))
    )
    fast, ref = GradientAlerts(layers, cfg), ReferenceAlerts(layers, cfg)
    said = 0
    for step, (loss, p) in enumerate(probe_sequence(rng, n, 600)):
        epoch = step // 100
        got = fast.check(step, epoch, loss, p)
        want = ref.check(step, epoch, loss, p)
        assert [(a.kind, a.level, a.message) for a in got] == [(a.kind, a.level, a.message) for a in want], (
            step
        )
        said += len(got)
    assert said > 5  # the sequence did exercise the alerts
