"""The activation probe wired in (issue 11): the engine, ``tuitrain.init`` / ``run.watch``, Lightning
and ``--resume`` all write ``/probes/act`` (one column per module of ``/modules``) at the steps
``monitor.activations_every`` selects, and what they write is the forward signal of that step's batch.

Real runs only: the CLI in a subprocess for presets and resume, a user's loop and a Lightning
``Trainer`` in this process, compared with the outputs that plain forward hooks of the test's own
saw in the same forward.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tuitrain
from tests.clirun import tt
from tests.conftest import PRESETS, cli_env
from tests.recorder import Recorder
from tuitrain.config import MonitorConfig
from tuitrain.events import ACT_PROBE, GRAD_PROBE
from tuitrain.runfile import open_run
from tuitrain.train.activations import ActivationProbe
from tuitrain.train.monitor import Monitor
from tuitrain.train.probe_protocol import GradientProbe

pytestmark = pytest.mark.timeout(180)

TOY = str(PRESETS / "toy2d_mlp.toml")
SMALL = ("--data", "synthetic", "--set", "data.image_size=8", "--set", "data.train_size=200")
Q = {name: i for i, name in enumerate(ACT_PROBE.names)}


def run(*args: str) -> subprocess.CompletedProcess:
    p = tt("run", *args, "--no-ui", "--set", "train.threads=1", env={**cli_env(), "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def act_rows(path: Path) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """(module names, probed steps, quantity -> (rows, modules)) of a run file's activation probe."""
    with open_run(path) as rf:
        assert rf.has_probe("act"), [p.name for p in rf.probe_specs]
        names = [m.name for m in rf.modules]
        values = {q: rf.probe(q, probe="act") for q in ACT_PROBE.names}
        return names, rf.probe_steps(probe="act"), values


def stats(y: torch.Tensor, unit_dim: int, bounds: tuple[float, float] | None) -> dict[str, float]:
    """What the probe must have measured of one output, in plain torch (float64)."""
    y = y.double()
    other = tuple(d for d in range(y.ndim) if d != unit_dim)
    out = {
        "mean": y.mean().item(),
        "std": y.std(correction=0).item(),
        "zero_frac": (y == 0).double().mean().item(),
        "dead_frac": (y.abs().amax(dim=other) == 0).double().mean().item(),
        "saturated_frac": math.nan,
    }
    if bounds is not None:
        lo, hi = bounds
        out["saturated_frac"] = ((y - (lo + hi) / 2).abs() >= (hi - lo) / 2 - 0.03).double().mean().item()
    return out


class FirstForward:
    """Plain forward hooks on every named module: a copy of each output of the first training-mode
    forward (grad enabled) after :meth:`next_step`, per step; later calls of the step are ignored,
    as validation (eval, no_grad) is."""

    def __init__(self, model: nn.Module) -> None:
        self.step = 0
        self.outputs: dict[int, dict[str, torch.Tensor]] = {}
        for name, module in model.named_modules():
            if name:
                module.register_forward_hook(self._hook(name))

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if module.training and torch.is_grad_enabled():
                self.outputs.setdefault(self.step, {}).setdefault(name, out.detach().clone())

        return hook


def assert_rows_are_plain_stats(
    names: list[str],
    steps: np.ndarray,
    values: dict[str, np.ndarray],
    seen: dict[int, dict[str, torch.Tensor]],
    bounds: dict[str, tuple[float, float]],
) -> None:
    for row, step in enumerate(steps.tolist()):
        for col, name in enumerate(names):
            want = stats(seen[step][name], seen[step][name].ndim - 1, bounds.get(name))
            for q, v in want.items():
                got = float(values[q][row, col])
                if math.isnan(v):
                    assert math.isnan(got), (step, name, q, got)
                else:
                    assert got == pytest.approx(v, rel=1e-4, abs=1e-7), (step, name, q, got, v)


# -- presets: the engine ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg38(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wiring") / "vgg38.h5"
    run("vgg38", *SMALL, "--max-steps", "21", "--set", "monitor.activations_every=10", "--out", str(out))
    return out


def test_a_preset_run_writes_the_forward_signal_of_every_module_every_10_steps(vgg38: Path) -> None:
    names, steps, values = act_rows(vgg38)
    assert steps.tolist() == [0, 10, 20]  # monitor.activations_every = 10
    with open_run(vgg38) as rf:
        spec = next(p for p in rf.probe_specs if p.name == "act")
        assert (spec.axis, spec.every, spec.names) == ("module", 10, ACT_PROBE.names)
        assert rf.modules[0].name == "input_conv" and rf.modules[0].type == "Conv2d"
        kinds = {m.name: m.kind for m in rf.modules}
    assert kinds["stages.0.blocks.0"] == "block" and kinds["stages.0.blocks.0.conv0"] == "leaf"
    assert all(v.shape == (3, len(names)) for v in values.values())
    assert np.isfinite(values["std"]).all()
    # plain VGG38 at PyTorch's default init: the signal dies within the first stage (001)
    std = values["std"][0]
    last_of_stage0 = max(i for i, n in enumerate(names) if n.startswith("stages.0."))
    assert std[0] > 0.1 and std[last_of_stage0] < 1e-3 * std[0], (std[0], std[last_of_stage0])


def test_activations_every_0_writes_no_activation_probe(tmp_path: Path) -> None:
    out = tmp_path / "off.h5"
    run(TOY, "--max-steps", "3", "--set", "monitor.activations_every=0", "--out", str(out))
    with open_run(out) as rf:
        assert [p.name for p in rf.probe_specs] == ["grad"]
        assert rf.modules == [] and not rf.has_probe("act")
        assert rf.n_steps == 3


def test_a_resumed_run_probes_at_multiples_of_every(tmp_path: Path) -> None:
    """8 steps an epoch, every 5: 0, 5, 10, 15 before the resume at step 16, then 20 (not 16, 21)."""
    out = tmp_path / "a.h5"
    sets = ("--set", "data.train_size=1000", "--set", "monitor.activations_every=5")
    run(TOY, "--epochs", "2", *sets, "--out", str(out))
    run("--resume", str(out), "--epochs", "3")
    names, steps, values = act_rows(out)
    assert steps.tolist() == [0, 5, 10, 15, 20]
    assert np.isfinite(values["std"]).all() and len(names) == values["std"].shape[1]
    with open_run(out) as rf:
        assert rf.n_steps == 24 and rf.status == "completed"


# -- a user's own loop -------------------------------------------------------------------------------


def test_a_user_loop_with_gradient_accumulation_measures_each_steps_first_forward(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    with torch.no_grad():
        model[0].bias[:4] = -100.0  # four units of the ReLU dead for every sample
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    seen = FirstForward(model)
    out = tmp_path / "loop.h5"
    with tuitrain.init(name="loop", out=out, activations_every=3) as r:
        r.watch(model, opt)
        for step in range(8):
            seen.step = step
            opt.zero_grad()
            for _ in range(2):  # two micro-batches a step: the first one's forward is measured
                x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
                (F.cross_entropy(model(x), y) / 2).backward()
            opt.step()
            r.log({"loss": 1.0})
            model.eval()
            with torch.no_grad():  # a validation forward between steps: never counted
                model(torch.randn(5, 4) * 100)
            model.train()
    names, steps, values = act_rows(out)
    assert names == ["0", "1", "2", "3", "4"]
    assert steps.tolist() == [0, 3, 6]
    assert values["dead_frac"][0, 1] == pytest.approx(4 / 16)
    assert_rows_are_plain_stats(names, steps, values, seen.outputs, {"3": (-1.0, 1.0)})
    with open_run(out) as rf:
        assert rf.run_started().modules == rf.modules


def test_a_compiled_model_is_measured_at_every_probed_step(tmp_path: Path) -> None:
    """Under torch.compile the probe's hooks run eagerly: a hook traced into the graph would write to
    the first probed step's lists at every later one (NaN rows after step 0)."""

    def net() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

    torch.manual_seed(0)
    model = net()
    compiled = torch.compile(model, backend="eager")  # dynamo's tracing is the point, not the compiler
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref = net()
    seen = FirstForward(ref)  # plain hooks on a twin with the same weights, never compiled
    out = tmp_path / "compiled.h5"
    with tuitrain.init(name="compiled", out=out, activations_every=2) as r:
        r.watch(compiled, opt)
        for step in range(6):
            x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
            seen.step = step
            ref.load_state_dict(model.state_dict())
            ref(x)
            opt.zero_grad()
            F.cross_entropy(compiled(x), y).backward()
            opt.step()
            r.log({"loss": 0.0})
    names, steps, values = act_rows(out)
    assert names == ["0", "1", "2"] and steps.tolist() == [0, 2, 4]
    assert_rows_are_plain_stats(names, steps, values, seen.outputs, {})


def test_run_watch_can_turn_it_off_or_change_its_period(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for every, want in ((0, None), (2, [0, 2, 4])):
        out = tmp_path / f"every{every}.h5"
        with tuitrain.init(name="w", out=out) as r:
            r.watch(model, opt, activations_every=every)
            for _ in range(5):
                opt.zero_grad()
                model(torch.randn(3, 2)).sum().backward()
                opt.step()
                r.log({"loss": 0.0})
        with open_run(out) as rf:
            assert rf.has_probe("act") == (want is not None)
            if want is not None:
                assert rf.probe_steps(probe="act").tolist() == want
    with pytest.raises(ValueError, match="activations_every must be a whole number, 0 or more"):
        tuitrain.init(name="bad", out=tmp_path / "bad.h5", activations_every=-1)


def monitored(every: int) -> tuple[nn.Module, torch.optim.Optimizer, Monitor, Recorder]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder()
    monitor = Monitor([rec], MonitorConfig(emit_seconds=1e9))
    monitor.add_probe(GradientProbe(), model)
    monitor.add_probe(ActivationProbe(every=every), model)  # armed here for step 0
    return model, opt, monitor, rec


def sent(rec: Recorder, probe: str) -> tuple[list[int], np.ndarray]:
    blocks = [b.blocks[probe] for b in rec.batches() if probe in b.blocks]
    return np.concatenate([b.steps for b in blocks]).tolist(), np.concatenate([b.values for b in blocks])


def test_a_loop_that_never_logs_is_measured_by_the_arming_after_each_optimizer_step() -> None:
    """Only the optimizer hooks' calls: each step is committed by the next step's before_step, after
    its forward, so the arming for a step must come at the previous optimizer step."""
    model, opt, monitor, rec = monitored(every=2)
    for _ in range(6):
        opt.zero_grad()
        model(torch.randn(4, 3)).square().mean().backward()
        monitor.before_step()
        opt.step()
        monitor.after_optimizer_step()
    monitor.flush(force=True)
    steps, values = sent(rec, "act")
    assert steps == [0, 2, 4] and np.isfinite(values[:, Q["std"]]).all()  # every forward was hooked
    assert sent(rec, "grad")[0] == [0, 1, 2, 3, 4, 5]


def test_one_row_per_probed_step_whatever_the_calls_around_the_optimizer_step() -> None:
    """A second before_step keeps the first one's row; a before_step whose optimizer step never
    came still gives its row (its update ratio 0) when the step is logged."""
    model, opt, monitor, rec = monitored(every=1)
    for step in range(4):
        opt.zero_grad()
        model(torch.randn(4, 3)).square().mean().backward()
        monitor.before_step()
        if step == 1:
            monitor.before_step()  # twice
        if step != 2:  # step 2: no optimizer step after before_step
            opt.step()
            monitor.after_optimizer_step()
        monitor.log({"loss": 0.0}, 0)
    monitor.flush(force=True)
    for probe in ("grad", "act"):
        assert sent(rec, probe)[0] == [0, 1, 2, 3], probe
    grad = sent(rec, "grad")[1]
    assert (grad[2, GRAD_PROBE.index("update_ratio")] == 0).all()
    assert (grad[[0, 1, 3], GRAD_PROBE.index("update_ratio")] > 0).all()


# -- Lightning -----------------------------------------------------------------------------------------


def test_lightning_writes_the_forward_signal_of_each_steps_first_batch(tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from tuitrain.lightning import TuitrainCallback

    class Net(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 16), nn.Sigmoid(), nn.Linear(16, 3))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", F.cross_entropy(self.net(batch[0]), batch[1]))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Steps(pl.Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
            seen.step = trainer.global_step  # the optimizer step this batch's gradient goes into

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    train = DataLoader(TensorDataset(x[:48], y[:48]), batch_size=4)  # 12 batches: 6 optimizer steps
    val = DataLoader(TensorDataset(x[48:], y[48:]), batch_size=8)
    module = Net()
    seen = FirstForward(module)
    callback = TuitrainCallback(out=str(tmp_path / "lit.h5"), activations_every=2, until="fit")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        accumulate_grad_batches=2,
        callbacks=[Steps(), callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, train, val)
    names, steps, values = act_rows(tmp_path / "lit.h5")
    assert names == ["net.0", "net.1", "net.2"]
    assert steps.tolist() == [0, 2, 4, 6, 8, 10]
    assert_rows_are_plain_stats(names, steps, values, seen.outputs, {"net.1": (0.0, 1.0)})
