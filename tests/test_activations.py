"""The forward-signal probe (tuitrain.train.activations) on real torch models: its values against plain
torch, when it measures, dead units, what it skips, where values reach the host, and the story of
issue 11 (plain VGG38's signal dies in its first stage; with BatchNorm it does not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import tuitrain
from tests.recorder import Recorder
from tuitrain.config import MonitorConfig, load_config
from tuitrain.train.activations import ACT_PROBE, ActivationProbe
from tuitrain.train.models import build_model
from tuitrain.train.models.resnet import ResNet18
from tuitrain.train.models.vgg import VGG
from tuitrain.train.monitor import Monitor

Q = {name: i for i, name in enumerate(ACT_PROBE.names)}


def probed_step(probe: ActivationProbe, model: nn.Module, x: torch.Tensor, step: int = 0) -> None:
    """One training step as the engine will drive it: before_forward, forward, backward, the
    Monitor's before_step/after_step around the optimizer step."""
    probe.before_forward(step)
    model(x).float().pow(2).mean().backward()
    probe.before_step(step)
    probe.after_step(step)


def expected_stats(y: torch.Tensor, bounds: tuple[float, float] | None, unit_dim: int) -> list[float]:
    """Plain torch, float64: what the probe should report for output ``y``."""
    y = y.detach().double()
    sat = float("nan")
    if bounds is not None:
        lo, hi = bounds
        sat = ((y <= lo + 0.03) | (y >= hi - 0.03)).double().mean().item()
    others = [d for d in range(y.ndim) if d != unit_dim]
    dead = (y == 0).permute(unit_dim, *others).reshape(y.shape[unit_dim], -1).all(dim=1)
    return [
        y.mean().item(),
        y.std(correction=0).item(),
        (y == 0).double().mean().item(),
        sat,
        dead.double().mean().item(),
    ]


@pytest.mark.parametrize("defer", [True, False])
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_mlp_values_equal_plain_torch(act: str, defer: bool) -> None:
    torch.manual_seed(0)
    acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    model = nn.Sequential(nn.Linear(6, 16), acts[act](), nn.Linear(16, 8), acts[act](), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight.mul_(10.0)  # push some outputs into saturation / zero
    probe = ActivationProbe(every=1, defer=defer)  # both CPU paths: copied and reduced later, or in the hook
    probe.attach(model)
    assert [m.name for m in probe.modules] == ["0", "1", "2", "3", "4"]
    assert [m.type for m in probe.modules] == [type(layer).__name__ for layer in model]
    x = torch.randn(32, 6)
    probed_step(probe, model, x)
    block = probe.collect()
    assert block.probe == "act" and block.steps.tolist() == [0]
    assert block.values.shape == (1, 5, 5) and block.values.dtype == np.float32

    bounds = {"relu": None, "sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}[act]
    y = x
    for j, layer in enumerate(model):
        y = layer(y)
        b = bounds if j in (1, 3) else None
        want = expected_stats(y, b, 1)
        np.testing.assert_allclose(block.values[0, :, j], want, rtol=1e-4, atol=1e-6, equal_nan=True)
    if act == "relu":
        assert block.values[0, Q["zero_frac"], 1] > 0.2  # the ReLU's zeros are counted
    else:
        assert block.values[0, Q["saturated_frac"], 1] > 0.2  # weights x10: outputs pinned at the bounds


def test_dead_units_of_a_layer_forced_dead() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 2))
    with torch.no_grad():
        model[0].bias[:3] = -1e3  # units 0..2 can never fire
    probe = ActivationProbe(every=1)
    probe.attach(model)
    probed_step(probe, model, torch.randn(64, 4))
    v = probe.collect().values[0]
    assert v[Q["dead_frac"], 1] == pytest.approx(0.3)  # 3 of 10 features zero for every sample
    assert v[Q["dead_frac"], 0] == 0.0  # the Linear's outputs before the ReLU are not zero
    with torch.no_grad():
        model[0].bias[:] = -1e3  # the whole layer dead
    probed_step(probe, model, torch.randn(64, 4), step=1)
    v = probe.collect().values[0]
    assert v[Q["dead_frac"], 1] == 1.0 and v[Q["zero_frac"], 1] == 1.0
    assert v[Q["std"], 1] == 0.0


@pytest.mark.parametrize("defer", [True, False])
def test_conv_dead_channels_are_counted_over_batch_and_space(defer: bool) -> None:
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 25, 2)
    )
    with torch.no_grad():
        model[0].bias[:] = torch.tensor([-1e3, 0.0, 0.0, -1e3])
    probe = ActivationProbe(every=1, defer=defer)
    probe.attach(model)
    x = torch.randn(8, 2, 5, 5)
    probed_step(probe, model, x)
    v = probe.collect().values[0]
    assert v[Q["dead_frac"], 1] == pytest.approx(0.5)  # channels 0 and 3 of 4
    conv = model[0](x)
    # the conv's output as it was, before the in-place ReLU overwrote it
    np.testing.assert_allclose(v[:, 0], expected_stats(conv, None, 1), rtol=1e-4, atol=1e-6, equal_nan=True)
    want = expected_stats(torch.relu(conv), None, 1)
    np.testing.assert_allclose(v[:, 1], want, rtol=1e-4, atol=1e-6, equal_nan=True)


def test_cpu_copies_past_their_memory_budget_are_reduced_in_the_hook(monkeypatch) -> None:  # noqa: ANN001
    import tuitrain.train.activations as activations

    monkeypatch.setattr(activations, "_DEFER_ELEMS", 100)  # outputs of 64, 64, 32 elements
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8))
    probe = ActivationProbe(every=1)
    probe.attach(model)
    xs = [torch.randn(4, 6) for _ in range(3)]
    for step, x in enumerate(xs):
        probed_step(probe, model, x, step)
        assert probe._held_elems <= 100
    held = [type(v).__name__ for v in probe._rows[-1][2]]
    assert held == ["ndarray", "tuple", "ndarray"]  # copied (then reduced early), in the hook, copied
    block = probe.collect()
    for k, x in enumerate(xs):
        y = x
        for j, layer in enumerate(model):
            y = layer(y)
            want = expected_stats(y, None, 1)
            np.testing.assert_allclose(block.values[k, :, j], want, rtol=1e-4, atol=1e-6, equal_nan=True)


def test_probes_only_every_steps_and_installs_hooks_only_then() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))
    probe = ActivationProbe(every=3)
    probe.attach(model)
    hooked: list[int] = []
    for step in range(8):
        probe.before_forward(step)
        hooked.append(sum(len(m._forward_hooks) for m in model.modules()))
        model(torch.randn(4, 3)).sum().backward()
        if step % probe.spec.every == 0:  # the Monitor's gating
            probe.before_step(step)
            probe.after_step(step)
        assert sum(len(m._forward_hooks) for m in model.modules()) == 0  # removed after the step
    assert hooked == [3, 0, 0, 3, 0, 0, 3, 0]  # three probed modules, on steps 0, 3, 6 only
    block = probe.collect()
    assert block.steps.tolist() == [0, 3, 6]
    assert np.isfinite(block.values[:, Q["std"]]).all()
    assert len(probe.collect()) == 0  # collected once


def test_a_step_without_before_forward_is_a_nan_row() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    probe = ActivationProbe(every=1)
    probe.attach(model)
    model(torch.randn(2, 3)).sum().backward()  # before_forward was not called
    probe.before_step(0)
    probed_step(probe, model, torch.randn(2, 3), step=1)
    block = probe.collect()
    assert block.steps.tolist() == [0, 1]  # one row per before_step, as the Monitor counts
    assert np.isnan(block.values[0]).all() and np.isfinite(block.values[1, Q["mean"]]).all()


class Odd(nn.Module):
    """A leaf whose output is a tuple, one whose output is integral, and a module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)
        self.twice = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # (output, (h, c)): the output is measured
        first = self.twice(out[:, -1])
        second = self.twice(first * 100.0)  # a second call in the same forward: not measured
        return self.head(second)


class IntLeaf(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).long()


def test_tuple_outputs_repeated_calls_and_non_float_outputs() -> None:
    torch.manual_seed(0)
    model = Odd()
    probe = ActivationProbe(every=1)
    probe.attach(model)
    assert [m.name for m in probe.modules] == ["lstm", "twice", "head"]
    x = torch.randn(5, 7, 3)
    probed_step(probe, model, x)
    v = probe.collect().values[0]
    out, _ = model.lstm(x)
    np.testing.assert_allclose(v[:, 0], expected_stats(out, None, 2), rtol=1e-4, atol=1e-6, equal_nan=True)
    first = model.twice(out[:, -1])
    np.testing.assert_allclose(v[:, 1], expected_stats(first, None, 1), rtol=1e-4, atol=1e-6, equal_nan=True)

    ints = nn.Sequential(nn.Linear(3, 3), IntLeaf())
    p2 = ActivationProbe(every=1)
    p2.attach(ints)
    p2.before_forward(0)
    ints(torch.randn(2, 3))
    p2.before_step(0)
    v = p2.collect().values[0]
    assert np.isfinite(v[Q["mean"], 0]) and np.isnan(v[:, 1]).all()  # the integral output is skipped


def test_eval_mode_and_no_grad_forwards_do_not_count() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    probe = ActivationProbe(every=1)
    probe.attach(model)
    probe.before_forward(0)
    model.eval()
    model(torch.randn(4, 3))  # validation in eval mode
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3))
    with torch.inference_mode():
        model(torch.randn(4, 3))
    probe.before_step(0)
    assert np.isnan(probe.collect().values).all()
    train_x = torch.randn(4, 3)
    probe.before_forward(1)
    with torch.no_grad():
        model(train_x * 1e3)  # a side pass first: not counted, the training forward is
    model(train_x).sum().backward()
    probe.before_step(1)
    v = probe.collect().values[0]
    np.testing.assert_allclose(v[:, 0], expected_stats(model[0](train_x), None, 1), rtol=1e-4, atol=1e-6)


def test_resnet_blocks_are_probed_after_their_insides_and_match_plain_torch() -> None:
    torch.manual_seed(0)
    model = ResNet18(3, 10, width=4)
    probe = ActivationProbe(every=1)
    probe.attach(model)
    names = [m.name for m in probe.modules]
    modules = dict(model.named_modules())
    assert all(n in modules for n in names)  # named as named_modules() names them
    kinds = {m.name: m.kind for m in probe.modules}
    assert kinds["stages.0.blocks.0"] == "block" and kinds["stages.0.blocks.0.conv1"] == "leaf"
    assert "stages.0" not in kinds and "" not in kinds  # a stage is not a block; the root is not probed
    assert names.index("stages.0.blocks.0") > names.index("stages.0.blocks.0.bn2")  # post-order
    assert names.index("stages.1.blocks.0.shortcut.bn") < names.index("stages.1.blocks.0")
    x = torch.randn(4, 3, 8, 8)
    probed_step(probe, model, x)
    v = probe.collect().values[0]
    stem = torch.relu(model.stem_bn(model.stem_conv(x)))
    block_out = model.stages[0].blocks[0](stem)
    j = names.index("stages.0.blocks.0")
    np.testing.assert_allclose(
        v[:, j], expected_stats(block_out, None, 1), rtol=1e-4, atol=1e-6, equal_nan=True
    )
    assert 0.0 <= v[Q["dead_frac"], j] <= 1.0


PRESETS = Path(tuitrain.__file__).parent / "presets"


def stage0_std(preset: str) -> tuple[float, float]:
    """Activation std at the input conv and at the end of stage 0 of a preset's model, as the registry
    builds it (PyTorch's default init), at 8 x 8 inputs."""
    torch.manual_seed(0)
    cfg = load_config(PRESETS / preset)
    model = build_model(cfg.model, (3, 8, 8), 100)
    probe = ActivationProbe(every=1)
    probe.attach(model)
    probed_step(probe, model, torch.randn(4, 3, 8, 8))
    names = [m.name for m in probe.modules]
    std = probe.collect().values[0, Q["std"]]
    return float(std[names.index("input_conv")]), float(std[names.index("stages.0.reduce")])


def test_plain_vgg38_signal_collapses_in_its_first_stage_and_not_with_batchnorm() -> None:
    first, end_of_stage0 = stage0_std("vgg38.toml")
    assert end_of_stage0 < first * 1e-3  # orders of magnitude within stage 0 (default init)
    for fixed in ("vgg38_bn.toml", "vgg38_bn_rc.toml"):
        first, end_of_stage0 = stage0_std(fixed)
        assert first * 0.1 < end_of_stage0 < first * 10, fixed


class NoReads(TorchDispatchMode):
    """Records every aten op; a host read of a value is ``_local_scalar_dense`` (item, float, bool)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_values_reach_the_host_only_in_collect() -> None:
    # On the meta device any read of a value raises: steps run, collect() (the one read) cannot.
    model = VGG(3, 10, filters=4, stages=2, blocks_per_stage=1).to("meta")
    probe = ActivationProbe(every=2)
    probe.attach(model)
    assert probe.device.type == "meta"
    for step in range(4):
        probe.before_forward(step)
        model(torch.randn(2, 3, 8, 8, device="meta")).sum().backward()
        if step % 2 == 0:
            probe.before_step(step)
            probe.after_step(step)
    with pytest.raises((NotImplementedError, RuntimeError)):
        probe.collect()
    # On CPU: no scalar read in the probed steps, and the rows wait as tensors until collect().
    torch.manual_seed(0)
    cpu_model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2), nn.Sigmoid())
    cpu_probe = ActivationProbe(every=1)
    cpu_probe.attach(cpu_model)
    with NoReads() as mode:
        for step in range(3):
            probed_step(cpu_probe, cpu_model, torch.randn(2, 3, 8, 8), step)
    assert mode.ops and not [op for op in mode.ops if "_local_scalar_dense" in op]
    waiting = [v for _, _, vals in cpu_probe._rows for v in vals]  # copies or device scalars, no numbers
    assert waiting and all(isinstance(v, (torch.Tensor, tuple)) for v in waiting)
    assert len(cpu_probe.collect()) == 3


def test_with_the_real_monitor_its_block_goes_out_in_the_step_batches() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder()
    probe = ActivationProbe(every=2)
    monitor = Monitor([rec], MonitorConfig(), probes=[probe])
    probe.attach(model)
    for _ in range(5):
        x, y = torch.randn(16, 2), torch.randint(0, 3, (16,))
        probe.before_forward(monitor.step)  # the call the engine will make (not wired yet)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        monitor.before_step()
        opt.step()
        monitor.after_step(loss, logits, y, 0.1, 0)
    monitor.flush(force=True)
    blocks = [b.block("act") for b in rec.batches() if "act" in b.blocks]
    steps = np.concatenate([b.steps for b in blocks])
    assert steps.tolist() == [0, 2, 4]
    assert all(b.values.shape[1:] == (5, 3) for b in blocks)
    assert np.isfinite(np.concatenate([b.values for b in blocks])[:, Q["std"]]).all()


def test_detach_removes_hooks_and_bad_every_is_refused() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    probe = ActivationProbe(every=1)
    probe.attach(model)
    probe.before_forward(0)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 2
    probe.detach()
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="whole number >= 1"):
            ActivationProbe(every=bad)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_probed_steps_never_synchronise() -> None:
    torch.manual_seed(0)
    model = VGG(3, 10, filters=8, stages=2, blocks_per_stage=2).cuda()
    probe = ActivationProbe(every=1)
    probe.attach(model)
    x = torch.randn(8, 3, 8, 8, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(3):
            probed_step(probe, model, x, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    block = probe.collect(force=True)
    assert block.steps.tolist() == [0, 1, 2]
    cpu = ActivationProbe(every=1)
    cpu_model = model.cpu()
    cpu.attach(cpu_model)
    probed_step(cpu, cpu_model, x.cpu())
    np.testing.assert_allclose(
        block.values[-1], cpu.collect().values[0], rtol=1e-3, atol=1e-5, equal_nan=True
    )
