"""Probe values against a hand computation, and the monitor's batching and alerts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.recorder import Recorder
from tuitrain.config import MonitorConfig
from tuitrain.events import PROBE_NAMES, Alert, LayerInfo, StepBatch
from tuitrain.train.monitor import Monitor
from tuitrain.train.probes import HostReadback, LayerProbe


def tiny() -> torch.nn.Linear:
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
        lin.bias.copy_(torch.tensor([0.25, -0.5]))
    return lin


def layers_of(model: torch.nn.Module) -> list[LayerInfo]:
    return [
        LayerInfo(n, tuple(p.shape), p.numel(), "bias" if n.endswith("bias") else "weight", "", "Linear")
        for n, p in model.named_parameters()
    ]


def test_probe_matches_hand_computation() -> None:
    model = tiny()
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    y = torch.tensor([0, 1])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    params = list(model.parameters())
    w_before = [p.detach().clone() for p in params]
    grads = [p.grad.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.1)

    probe = LayerProbe(params)
    probe.before_step()
    opt.step()
    out = probe.after_step().numpy()

    assert out.shape == (len(PROBE_NAMES), 2)
    for i, (w, g) in enumerate(zip(w_before, grads, strict=True)):
        g64, w64 = g.double().numpy(), w.double().numpy()
        assert out[0, i] == pytest.approx(np.sqrt((g64**2).sum()), rel=1e-5)
        assert out[1, i] == pytest.approx(np.abs(g64).mean(), rel=1e-5)
        assert out[2, i] == pytest.approx(np.sqrt((w64**2).sum()), rel=1e-5)
        # plain SGD: W_{t+1} - W_t = -lr * g, so the ratio is lr * ||g|| / ||W_t||
        assert out[3, i] == pytest.approx(0.1 * np.sqrt((g64**2).sum()) / np.sqrt((w64**2).sum()), rel=1e-4)


def test_probe_update_ratio_for_adam_matches_weights_diff() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    probe = LayerProbe(list(model.parameters()))
    for _ in range(3):
        loss = model(torch.randn(8, 5)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        before = [p.detach().clone() for p in model.parameters()]
        probe.before_step()
        opt.step()
        out = probe.after_step()
        expected = torch.stack(
            [(p.detach() - b).norm() / b.norm() for p, b in zip(model.parameters(), before, strict=True)]
        )
        torch.testing.assert_close(out[3], expected, rtol=1e-5, atol=1e-9)


def test_unused_parameter_reports_zero_gradient() -> None:
    model = torch.nn.ModuleDict({"used": torch.nn.Linear(2, 2), "unused": torch.nn.Linear(2, 2)})
    model["used"](torch.ones(1, 2)).sum().backward()
    params = list(model.parameters())
    probe = LayerProbe(params)
    probe.before_step()
    torch.optim.SGD(params, lr=0.1).step()
    out = probe.after_step().numpy()
    assert (out[0, 2:] == 0).all() and (out[0, :2] > 0).all()


def test_readback_on_cpu_is_immediate() -> None:
    rb = HostReadback(torch.device("cpu"))
    rb.push(("a",), torch.tensor([1.0, 2.0]))
    ready = rb.pop_ready()
    assert ready[0][0] == ("a",) and ready[0][1].tolist() == [1.0, 2.0]


def run_steps(
    monitor: Monitor, model: torch.nn.Module, opt, n: int, lr_value: float = 0.1, scale: float = 1.0
) -> None:
    for _ in range(n):
        x = torch.randn(4, 3)
        logits = model(x) * scale
        y = torch.tensor([0, 1, 0, 1])
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        monitor.before_step()
        opt.step()
        monitor.after_step(loss, logits, y, lr_value, 0)


def test_monitor_batches_every_step_and_probes_every_n() -> None:
    torch.manual_seed(0)
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder()
    mon = Monitor.for_model(
        list(model.parameters()),
        layers_of(model),
        [rec],
        MonitorConfig(every=3, emit_seconds=1e3),
        torch.device("cpu"),
    )
    run_steps(mon, model, opt, 10)
    mon.flush(force=True)
    batches = [e for e in rec.events if isinstance(e, StepBatch)]
    assert len(batches) == 1
    b = batches[0]
    assert b.steps.tolist() == list(range(10))
    assert b.probe_steps.tolist() == [0, 3, 6, 9]
    assert b.probes.shape == (4, len(PROBE_NAMES), 2)
    assert np.all(b.scalar("lr") == 0.1)
    assert np.all((b.scalar("acc") >= 0) & (b.scalar("acc") <= 1))
    assert np.isfinite(b.scalar("loss")).all()
    loss_mean, acc_mean = mon.take_epoch_means()
    assert loss_mean == pytest.approx(b.scalar("loss").mean())


def test_monitor_alerts_on_nan() -> None:
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder()
    mon = Monitor.for_model(
        list(model.parameters()), layers_of(model), [rec], MonitorConfig(), torch.device("cpu")
    )
    run_steps(mon, model, opt, 2, scale=math.nan)
    mon.flush()  # alerts are checked when the rows are read, at the flush (every monitor.emit_seconds)
    alerts = [e for e in rec.events if isinstance(e, Alert)]
    assert len(alerts) == 1 and alerts[0].kind == "nan" and alerts[0].level == "error"
    assert "weight" in alerts[0].message or "bias" in alerts[0].message


def test_monitor_alerts_on_vanishing_gradients() -> None:
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder()
    cfg = MonitorConfig(vanishing=1e3, alert_steps=5)  # every gradient counts as vanishing here
    mon = Monitor.for_model(list(model.parameters()), layers_of(model), [rec], cfg, torch.device("cpu"))
    run_steps(mon, model, opt, 4)
    mon.flush()
    assert not [e for e in rec.events if isinstance(e, Alert)]
    run_steps(mon, model, opt, 3)
    mon.flush()
    alerts = [e for e in rec.events if isinstance(e, Alert)]
    assert len(alerts) == 1 and alerts[0].kind == "vanishing"
    assert "1 of 1 weight layers" in alerts[0].message and "for 5 steps" in alerts[0].message
    # the alert is preceded by the rows that led to it, so a reader sees the cause first
    assert isinstance(rec.events[rec.events.index(alerts[0]) - 1], StepBatch)
