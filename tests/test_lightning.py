"""The Lightning callback on a real ``Trainer`` (CPU, a tiny MLP on small synthetic tensors).

A second callback, :class:`Reference`, measures in plain torch what the run file must hold: the
gradients Lightning's optimizer step sees (at ``on_before_optimizer_step``, the same place as the
probe), the weights before and after each step, and the losses; the tests compare the file with it.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from tests.clirun import tt  # noqa: E402
from tests.conftest import cli_env  # noqa: E402
from tuitrain.lightning import TuitrainCallback, epoch_metrics, summary_metrics  # noqa: E402
from tuitrain.runfile.reader import open_run  # noqa: E402

pytestmark = [
    pytest.mark.timeout(120),
    # Lightning 2.6 on torch 2.14 warns about its own use of torch's pytree API: not ours to fix
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]

N_TRAIN, BATCH, EPOCHS = 48, 8, 2  # 6 batches an epoch


class Tiny(pl.LightningModule):
    """An MLP classifier that logs what Lightning users log: train/val/test loss and accuracy, and an
    epoch metric of its own from ``on_train_epoch_end`` (which runs after the callbacks' hook)."""

    def __init__(
        self, lr: float = 0.2, hidden: int = 16, fail_at: int = -1, act: type[nn.Module] = nn.Tanh
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # act, a class, is not JSON: the run's config holds its repr
        self.net = nn.Sequential(nn.Linear(6, hidden), act(), nn.Linear(hidden, hidden), nn.Linear(hidden, 3))

    def _eval(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        out = self.net(x)
        return F.cross_entropy(out, y), (out.argmax(1) == y).float().mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.global_step == self.hparams.fail_at:
            raise RuntimeError(f"deliberate failure at step {self.global_step}")
        loss, acc = self._eval(batch)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("train_acc", acc, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._eval(batch)
        self.log("val_loss", loss)
        self.log("val_acc", acc)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._eval(batch)
        self.log("test_loss", loss)
        self.log("test_acc", acc)
        self.log("test_f1ish", 1 - loss)

    def on_train_epoch_end(self) -> None:
        self.log("weight_sum", sum(p.detach().abs().sum() for p in self.parameters()))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)}


class Reference(pl.Callback):
    """Plain-torch values of every optimizer step, keyed by ``trainer.global_step`` at the step."""

    def __init__(self) -> None:
        self.grad_norm: dict[int, list[float]] = {}
        self.update_ratio: dict[int, list[float]] = {}
        self.lr: dict[int, float] = {}
        self.batch_losses: list[tuple[int, float]] = []  # (the step the batch went into, its loss)
        self.epochs: list[dict[str, float]] = []
        self._before: list[torch.Tensor] = []
        self._step = self._batch_step = -1

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self._before and trainer.global_step == self._step:
            return  # the same step evaluates its closure again (LBFGS): its gradient is the first one
        self._finish_step(pl_module)  # manual optimization: the previous optimizer's step is done
        self._step = trainer.global_step
        params = list(pl_module.parameters())
        self.grad_norm[self._step] = [torch.linalg.vector_norm(p.grad.double()).item() for p in params]
        self._before = [p.detach().double().clone() for p in params]
        self.lr[self._step] = optimizer.param_groups[0]["lr"]

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
        loss = outputs["loss"].item() * trainer.accumulate_grad_batches
        self.batch_losses.append((self._batch_step, loss))
        self._finish_step(pl_module)

    def _finish_step(self, pl_module: Any) -> None:
        """||W_{t+1} - W_t|| / ||W_t|| of the step opened last, once it is done."""
        if self._before:
            after = [p.detach().double() for p in pl_module.parameters()]
            self.update_ratio[self._step] = [
                (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()
                for a, b in zip(after, self._before, strict=True)
            ]
            self._before = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        self._batch_step = trainer.global_step  # the optimizer step this batch's gradient goes into

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch:
            self._snapshot(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._snapshot(trainer)

    def _snapshot(self, trainer: Any) -> None:
        """What the module logged for the epoch that just ended, once its own hook has run too."""
        self.epochs.append({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})


def loaders(seed: int = 0, n_train: int = N_TRAIN) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + 16, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    train = DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=BATCH)
    val = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=BATCH)
    return train, val


def trainer(*callbacks: pl.Callback, **kw: Any) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=kw.pop("max_epochs", EPOCHS),
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        **kw,
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One fit of two epochs and a test, watched by the callback, measured by the reference."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("lightning") / "tiny.h5"
    cb, ref, model = TuitrainCallback(out=str(out)), Reference(), Tiny()
    train, val = loaders()
    t = trainer(cb, ref)
    t.fit(model, train, val)
    assert cb.run is not None and not cb.run.finished  # open for the test that follows
    t.test(model, val)
    return {"out": out, "cb": cb, "ref": ref, "model": model, "trainer": t}


def test_layers_are_named_parameters_and_steps_are_optimizer_steps(fitted: dict[str, Any]) -> None:
    with open_run(fitted["out"]) as rf:
        assert [layer.name for layer in rf.layers] == [n for n, _ in fitted["model"].named_parameters()]
        steps = rf.steps()
        assert len(steps["step"]) == fitted["trainer"].global_step == EPOCHS * N_TRAIN // BATCH
        assert steps["step"].tolist() == list(range(fitted["trainer"].global_step))
        ref = fitted["ref"]
        # the logged loss of each step is the batch's loss, and lr the first optimizer's at that step
        want = [loss for _, loss in ref.batch_losses]
        assert steps["loss"].tolist() == pytest.approx(want, rel=1e-6)
        assert steps["lr"].tolist() == pytest.approx([ref.lr[s] for s in sorted(ref.lr)], rel=1e-6)
        assert rf.source == "lightning"
        assert rf.status == "completed"


def test_probes_equal_plain_torch_at_every_step(fitted: dict[str, Any]) -> None:
    ref = fitted["ref"]
    with open_run(fitted["out"]) as rf:
        steps = rf.probe_steps().tolist()
        assert steps == sorted(ref.grad_norm)
        grad = rf.probe("grad_norm")
        ratio = rf.probe("update_ratio")
    for row, step in enumerate(steps):
        assert grad[row].tolist() == pytest.approx(ref.grad_norm[step], rel=1e-3), step
        assert ratio[row].tolist() == pytest.approx(ref.update_ratio[step], rel=1e-3), step
    assert len({tuple(v) for v in ref.grad_norm.values()}) == len(steps)  # the steps really differ


def test_epoch_metrics_test_metrics_and_config(fitted: dict[str, Any]) -> None:
    ref, model = fitted["ref"], fitted["model"]
    with open_run(fitted["out"]) as rf:
        ep = rf.epochs()
        assert ep["epoch"].tolist() == list(range(EPOCHS))
        for e, seen in enumerate(ref.epochs):
            assert ep["val_loss"][e] == pytest.approx(seen["val_loss"], rel=1e-6)
            assert ep["val_acc"][e] == pytest.approx(seen["val_acc"], rel=1e-6)
            assert ep["train_loss"][e] == pytest.approx(seen["train_loss_epoch"], rel=1e-6)
            assert ep["train_acc"][e] == pytest.approx(seen["train_acc_epoch"], rel=1e-6)
            # and independently of Lightning: the mean of the epoch's batch losses (equal batches)
            losses = [loss for step, loss in ref.batch_losses if step // (N_TRAIN // BATCH) == e]
            assert ep["train_loss"][e] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
        extra = rf.metrics("epoch")
        assert "train_loss_step" not in extra  # the last batch's value, not the epoch's
        _, epochs, values = extra["weight_sum"]  # logged in the module's own on_train_epoch_end
        assert epochs.tolist() == list(range(EPOCHS))
        assert values.tolist() == pytest.approx([seen["weight_sum"] for seen in ref.epochs], rel=1e-6)
        test = rf.test()
        tm = fitted["trainer"].callback_metrics
        assert test["loss"] == pytest.approx(float(tm["test_loss"]), rel=1e-6)
        assert test["acc"] == pytest.approx(float(tm["test_acc"]), rel=1e-6)
        _, _, f1 = rf.metrics("test")["test_f1ish"]
        assert f1.tolist() == pytest.approx([float(tm["test_f1ish"])], rel=1e-6)
        assert rf.user_config == {**dict(model.hparams), "act": repr(nn.Tanh)}
        assert rf.user_config["lr"] == 0.2


def test_info_and_replay_read_the_file(fitted: dict[str, Any]) -> None:
    p = tt("info", str(fitted["out"]), timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "completed" in p.stdout and "Tiny" in p.stdout, p.stdout
    assert "Lightning" in p.stdout and "weight_sum" in p.stdout, p.stdout  # the source, its own metric
    p = tt("replay", str(fitted["out"]), "--print", timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Final metrics" in p.stdout and "Tiny" in p.stdout, p.stdout


def test_an_error_in_training_step_fails_the_run_with_its_text(tmp_path: Path) -> None:
    out = tmp_path / "fails.h5"
    cb = TuitrainCallback(out=str(out))
    train, val = loaders()
    with pytest.raises(RuntimeError, match="deliberate failure at step 8"):
        trainer(cb).fit(Tiny(fail_at=8), train, val)
    with open_run(out) as rf:
        assert rf.status == "failed"
        assert "RuntimeError: deliberate failure at step 8" in rf.attr("error")
        assert "training_step" in rf.attr("traceback")
        assert len(rf.steps()["step"]) == 8  # every step before the failure is in the file
        assert rf.epochs()["epoch"].tolist() == [0]  # the epoch that ended before it, too


def test_an_error_before_training_leaves_a_failed_run_that_says_so(tmp_path: Path) -> None:
    class BadValidation(Tiny):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            raise ValueError("broken validation_step")

    out = tmp_path / "sanity.h5"
    train, val = loaders()
    with pytest.raises(ValueError, match="broken validation_step"):  # in Lightning's sanity check
        trainer(TuitrainCallback(out=str(out))).fit(BadValidation(), train, val)
    with open_run(out) as rf:
        assert rf.status == "failed"
        assert "ValueError: broken validation_step" in rf.attr("error")
        assert len(rf.steps()["step"]) == 0


def test_test_alone_is_a_run_of_its_test_metrics(tmp_path: Path) -> None:
    out = tmp_path / "test_only.h5"
    _, val = loaders()
    t = trainer(TuitrainCallback(out=str(out)))
    t.test(Tiny(), val)
    with open_run(out) as rf:
        assert rf.status == "completed"
        assert rf.test()["loss"] == pytest.approx(float(t.callback_metrics["test_loss"]), rel=1e-6)
        assert rf.probe_specs == []  # nothing was trained, so nothing was probed


def test_ctrl_c_stops_the_run(tmp_path: Path) -> None:
    class Interrupt(pl.Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == 3:
                raise KeyboardInterrupt

    out = tmp_path / "stopped.h5"
    train, val = loaders()
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown after Ctrl-C exits 1
            trainer(TuitrainCallback(out=str(out)), Interrupt()).fit(Tiny(), train, val)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT from then on
    with open_run(out) as rf:
        assert rf.status == "stopped"
        assert len(rf.steps()["step"]) == 3


def test_gradient_accumulation_logs_one_row_per_optimizer_step(tmp_path: Path) -> None:
    out = tmp_path / "accum.h5"
    cb, ref = TuitrainCallback(out=str(out), until="fit", every=2), Reference()
    train, val = loaders(n_train=40)  # 5 batches: steps after batches 2, 4 and the last (5)
    t = trainer(cb, ref, max_epochs=1, accumulate_grad_batches=2, num_sanity_val_steps=0)
    t.fit(Tiny(), train, val)
    assert cb.run.finished  # until="fit": completed when fit ends
    with open_run(out) as rf:
        steps = rf.steps()
        assert len(steps["step"]) == t.global_step == 3
        # each step's loss is the mean over the batches it accumulated
        by_step: dict[int, list[float]] = {}
        for step, loss in ref.batch_losses:
            by_step.setdefault(step, []).append(loss)
        assert [len(v) for _, v in sorted(by_step.items())] == [2, 2, 1]
        want = [sum(v) / len(v) for _, v in sorted(by_step.items())]
        assert steps["loss"].tolist() == pytest.approx(want, rel=1e-6)
        assert rf.probe_steps().tolist() == [0, 2]  # every=2
        assert rf.probe("grad_norm")[1].tolist() == pytest.approx(ref.grad_norm[2], rel=1e-3)
        assert rf.status == "completed"
        assert rf.user_config["lr"] == 0.2


def test_an_unknown_keyword_is_said_when_the_callback_is_made() -> None:
    with pytest.raises(TypeError, match="unknown keyword 'overwrit'.*overwrite"):
        TuitrainCallback(out="x.h5", overwrit=True)
    with pytest.raises(ValueError, match="until must be 'fit' or 'test'"):
        TuitrainCallback(until="validate")


def test_epoch_and_test_metric_names() -> None:
    t = torch.tensor
    logged = {
        "train_loss": t(2.0),
        "train_loss_step": t(3.0),
        "train_loss_epoch": t(2.0),
        "valid/accuracy": t(0.5),
        "val_loss": 1.5,
        "val_f1": t(0.25),
        "value": t(7.0),
        "lr-SGD": 0.1,
        "train/f1": t(0.3),  # kept as it is (the run file escapes "/" in its dataset names)
        "time": 3.0,  # a column tuitrain keeps itself: stored as "logged_time"
        "hist": t([1.0, 2.0]),  # not one number: not a metric
    }
    got = epoch_metrics(logged)
    assert {k: float(v) for k, v in got.items()} == {
        "train_loss": 2.0,
        "val_acc": 0.5,
        "val_loss": 1.5,
        "val_f1": 0.25,
        "value": 7.0,
        "lr-SGD": 0.1,
        "train/f1": pytest.approx(0.3),
        "logged_time": 3.0,
    }
    stale = epoch_metrics(logged, val_ran=False)  # no validation this epoch: its values are old
    assert sorted(stale) == ["logged_time", "lr-SGD", "train/f1", "train_loss", "value"]
    tm = summary_metrics({"test_loss": t(1.0), "test/accuracy": t(0.75), "test_f1": 0.5})
    assert {k: float(v) for k, v in tm.items()} == {"loss": 1.0, "acc": 0.75, "test_f1": 0.5}
    assert not math.isnan(float(tm["acc"]))


class TwoOptimizers(Tiny):
    """Manual optimization with two optimizers: two optimizer steps (two global steps) a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        first, second = self.optimizers()
        loss, _ = self._eval(batch)
        first.zero_grad()
        second.zero_grad()
        self.manual_backward(loss)
        first.step()
        second.step()
        return loss

    def configure_optimizers(self) -> Any:
        params = list(self.net.parameters())
        return torch.optim.SGD(params[:2], lr=0.1), torch.optim.Adam(params[2:], lr=0.01)


class Lbfgs(Tiny):
    """LBFGS evaluates its closure (forward, backward, on_before_optimizer_step) several times a step."""

    def configure_optimizers(self) -> Any:
        return torch.optim.LBFGS(self.parameters(), lr=0.5, max_iter=3)


def assert_probes_match(out: Path, ref: Reference) -> list[int]:
    with open_run(out) as rf:
        steps = rf.probe_steps().tolist()
        grad, ratio = rf.probe("grad_norm"), rf.probe("update_ratio")
    assert steps == sorted(ref.grad_norm) == sorted(ref.update_ratio)
    for row, step in enumerate(steps):
        assert grad[row].tolist() == pytest.approx(ref.grad_norm[step], rel=1e-3), step
        assert ratio[row].tolist() == pytest.approx(ref.update_ratio[step], rel=1e-3), step
    return steps


def test_manual_optimization_with_two_optimizers_is_two_steps_a_batch(tmp_path: Path) -> None:
    out, ref = tmp_path / "manual.h5", Reference()
    train, val = loaders()
    t = trainer(TuitrainCallback(out=str(out), until="fit"), ref, max_epochs=1, num_sanity_val_steps=0)
    t.fit(TwoOptimizers(), train, val)
    assert assert_probes_match(out, ref) == list(range(t.global_step)) == list(range(2 * N_TRAIN // BATCH))
    with open_run(out) as rf:
        loss = rf.steps()["loss"]
    assert all(math.isnan(v) for v in loss[0::2])  # the first optimizer's step: no loss yet
    assert loss[1::2].tolist() == pytest.approx([v for _, v in ref.batch_losses], rel=1e-6)


def test_lbfgs_probes_the_gradient_at_the_steps_start_and_the_whole_update(tmp_path: Path) -> None:
    out, ref = tmp_path / "lbfgs.h5", Reference()
    train, val = loaders()
    t = trainer(TuitrainCallback(out=str(out), until="fit"), ref, max_epochs=1, num_sanity_val_steps=0)
    t.fit(Lbfgs(), train, val)
    assert assert_probes_match(out, ref) == list(range(t.global_step)) == list(range(N_TRAIN // BATCH))


# A user's Lightning script: `python lit.py [EPOCHS [SLEEP [notest]]]` (SLEEP seconds a step, for live
# tests; notest: no trainer.test after the fit).
SCRIPT = """
import sys
import time

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tuitrain.lightning import TuitrainCallback


class Net(pl.LightningModule):
    def __init__(self, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    def step(self, batch, name):
        x, y = batch
        out = self.net(x)
        loss = F.cross_entropy(out, y)
        self.log(f"{name}_loss", loss, on_epoch=True, on_step=False)
        self.log(f"{name}_acc", (out.argmax(1) == y).float().mean(), on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch, i):
        time.sleep(SLEEP)
        return self.step(batch, "train")

    def validation_step(self, batch, i):
        self.step(batch, "val")

    def test_step(self, batch, i):
        self.step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
SLEEP = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
torch.manual_seed(0)
x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
train = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=8)
val = DataLoader(TensorDataset(x[32:], y[32:]), batch_size=8)
trainer = pl.Trainer(
    accelerator="cpu", max_epochs=EPOCHS, callbacks=[TuitrainCallback()], logger=False,
    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
)
model = Net()
trainer.fit(model, train, val)
if sys.argv[3:] != ["notest"]:
    trainer.test(model, val)
print("lightning steps", trainer.global_step)
"""


def test_a_lightning_script_runs_under_tuitrain_run(tmp_path: Path) -> None:
    """``tuitrain run train.py --no-ui``: the command's --out reaches the callback's run (the script
    names none), the console shows it, and the file is the Lightning run's."""
    script, out = tmp_path / "lit.py", tmp_path / "runs" / "lit.h5"
    script.write_text(SCRIPT)
    p = tt("run", str(script), "--no-ui", "--out", str(out), env={**cli_env(), "OMP_NUM_THREADS": "1"})
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    assert "Traceback" not in text, text
    assert "lightning steps 8" in p.stdout, text
    with open_run(out) as rf:
        assert (rf.status, rf.source, rf.run_started().run_name) == ("completed", "lightning", "Net")
        assert len(rf.steps()["step"]) == 8
        assert [layer.name for layer in rf.layers] == [
            "net.0.weight",
            "net.0.bias",
            "net.2.weight",
            "net.2.bias",
        ]
        assert rf.epochs()["val_acc"].shape == (2,) and not math.isnan(rf.epochs()["val_loss"][1])
        assert math.isfinite(rf.test()["loss"])


def test_a_script_without_trainer_test_completes_its_run_when_it_exits(tmp_path: Path) -> None:
    """The run stays open after fit for a test that may follow; the script's exit completes it, in
    the default place (runs/<module class>-<time>.h5 under the script's working directory)."""
    script = tmp_path / "lit.py"
    script.write_text(SCRIPT)
    p = subprocess.run(
        [sys.executable, str(script), "1", "0", "notest"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**cli_env(), "OMP_NUM_THREADS": "1"},
    )
    assert p.returncode == 0, p.stdout + p.stderr
    (out,) = (tmp_path / "runs").glob("Net-*.h5")
    with open_run(out) as rf:
        assert rf.status == "completed"
        assert len(rf.steps()["step"]) == 4 and rf.epochs()["epoch"].tolist() == [0]
        assert math.isnan(rf.test()["loss"])
