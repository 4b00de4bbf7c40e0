"""The public API for a user's own loop (tuitrain.init / run.watch / run.log), on real torch and real
run files: the issue's snippet in tests/scripts/mnist_like.py, run as a user runs it, checked against
plain torch; how runs end (exception, Ctrl-C, SIGTERM, interpreter exit); the hosted path; the checks
of what a user passes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tuitrain
from tests.clirun import tt
from tests.conftest import REPO, cli_env
from tests.recorder import Recorder
from tests.scripts import mnist_like
from tuitrain import hosted
from tuitrain.events import EpochEnd, RunFinished, RunStarted, StatusChanged, StepBatch
from tuitrain.runfile import open_run
from tuitrain.runfile.claim import OutTaken

SCRIPT = REPO / "tests" / "scripts" / "mnist_like.py"
ARGS = ["--epochs", "3", "--train-size", "64", "--batch-size", "16"]  # 4 steps an epoch, 12 in all


def script_env() -> dict[str, str]:
    env = cli_env()
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_script(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=script_env(),
    )


def reference(args: list[str]) -> tuple[list[str], dict[str, np.ndarray], int]:
    """The same training in plain torch, measured by the test's own optimizer hooks in float64:
    per parameter tensor, at every step, ||g||, mean |g|, ||W_t|| and ||W_{t+1} - W_t|| / ||W_t||."""
    a = mnist_like.parse_args(args)
    model, train_loader, val_loader, optimizer, scheduler = mnist_like.build(a)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rows: dict[str, list] = {"grad_norm": [], "grad_mean_abs": [], "weight_norm": [], "update_ratio": []}
    before: list[torch.Tensor] = []

    def pre(opt, *_):
        before[:] = [p.detach().double().clone() for _, p in params]
        g = [p.grad.detach().double() for _, p in params]
        rows["grad_norm"].append([x.norm().item() for x in g])
        rows["grad_mean_abs"].append([x.abs().mean().item() for x in g])
        rows["weight_norm"].append([w.norm().item() for w in before])

    def post(opt, *_):
        rows["update_ratio"].append(
            [
                (p.detach().double() - w).norm().item() / w.norm().item()
                for (_, p), w in zip(params, before, strict=True)
            ]
        )

    optimizer.register_step_pre_hook(pre)
    optimizer.register_step_post_hook(post)
    steps = mnist_like.fit(a, model, train_loader, val_loader, optimizer, scheduler, run=None)
    return [n for n, _ in params], {k: np.array(v) for k, v in rows.items()}, steps


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-12)))


# ---- the snippet, as a user runs it ---------------------------------------------------


def test_the_snippet_stores_what_plain_torch_measures(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "mnist.h5"
    p = run_script(*ARGS, "--out", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    script_steps = int(p.stdout.split("steps ")[1].split()[0])
    names, want, ref_steps = reference(ARGS)
    assert script_steps == ref_steps == 12
    with open_run(out) as rf:
        assert rf.status == "completed"
        assert (
            [layer.name for layer in rf.layers]
            == names
            == [n for n, _ in mnist_like.Net().named_parameters()]
        )
        assert rf.n_steps == script_steps
        assert list(rf.probe_steps()) == list(range(script_steps))
        for q in ("grad_norm", "grad_mean_abs", "weight_norm", "update_ratio"):
            got = rf.probe(q).astype(np.float64)
            assert got.shape == want[q].shape
            for step in (0, 1, 5, 11):  # several steps, every layer
                assert rel_err(got[step], want[q][step]) < 1e-3, (q, step, got[step], want[q][step])
        assert np.isfinite(rf.scalar("loss")).all() and np.isfinite(rf.scalar("acc")).all()
        # lr from the watched optimizer at each step (Adadelta 1.0, StepLR x0.7 an epoch); samples/s
        # from init's batch_size and the time since the step before (none for an epoch's first step:
        # validation is not a slow step)
        assert np.allclose(rf.scalar("lr"), np.repeat([1.0, 0.7, 0.49], 4))
        first = np.arange(12) % 4 == 0
        sps = rf.scalar("samples_per_s")
        assert np.isnan(sps[first]).all() and np.isfinite(sps[~first]).all()
        assert "margin" in rf.step_scalars  # a user's own key is stored
        assert np.isfinite(rf.scalar("margin")).all()
        epochs = rf.epochs()
        assert len(epochs["epoch"]) == 3 and np.isfinite(epochs["val_loss"]).all()
        assert "val_error" in rf.metrics("epoch")
        assert rf.source == "script"
        assert rf.user_config["batch_size"] == 16 and rf.user_config["epochs"] == 3
        assert math.isfinite(rf.test()["acc"])
    info = tt("info", str(out))
    assert info.returncode == 0, info.stdout + info.stderr
    assert "mnist_like" in info.stdout and "completed" in info.stdout
    replay = tt("replay", "--print", str(out))
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "mnist_like" in replay.stdout


@pytest.mark.parametrize("form", ["plain", "with"])
def test_a_deliberate_exception_fails_the_run_with_its_error(tmp_path: Path, form: str) -> None:
    out = tmp_path / "fail.h5"
    p = run_script(
        *ARGS, "--out", str(out), "--fail-at", "5", *(["--with"] if form == "with" else []), cwd=tmp_path
    )
    assert p.returncode == 1
    assert "RuntimeError: deliberate failure at step 5" in p.stderr  # the user's traceback, as always
    assert "Traceback" in p.stderr
    with open_run(out) as rf:
        assert rf.status == "failed"
        assert rf.attr("error") == "RuntimeError: deliberate failure at step 5"
        assert "mnist_like.py" in rf.attr("traceback")
        assert rf.n_steps == 6  # steps 0..5 were logged before the raise


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"the script never printed {text!r} (exit {proc.poll()}): {proc.stderr.read()}")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, None), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_stop_the_run(tmp_path: Path, sig: signal.Signals, code: int | None) -> None:
    out = tmp_path / "stop.h5"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--epochs", "100", "--sleep", "0.1", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=script_env(),
    )
    try:
        _wait_for(proc, "step 3")
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if code is not None:
        assert rc == code
    else:
        assert rc != 0
    with open_run(out) as rf:
        assert rf.status == "stopped"
        assert rf.n_steps >= 3


def test_a_script_that_never_calls_finish_completes_at_exit(tmp_path: Path) -> None:
    out = tmp_path / "exit.h5"
    p = run_script(*ARGS, "--out", str(out), "--no-finish", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    with open_run(out) as rf:
        assert rf.status == "completed"
        assert rf.n_steps == 12
        assert math.isfinite(rf.test()["loss"])
    # sys.exit(3) without finish(): the script failed, and the file says so (the exit status is 3)
    code = f"import sys, tuitrain; run = tuitrain.init(out={str(tmp_path / 'x3.h5')!r}); run.log({{'loss': 1.0}}); sys.exit(3)"
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert p.returncode == 3, p.stderr
    with open_run(tmp_path / "x3.h5") as rf:
        assert rf.status == "failed" and "exited with 3" in rf.attr("error")


# ---- in-process: the API's own rules ------------------------------------------------------------


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def tiny_steps(run, model: nn.Module, opt: torch.optim.Optimizer, n: int, forward=None) -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(n):
        x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy((model if forward is None else forward)(x), y)
        loss.backward()
        opt.step()
        run.log({"loss": loss})


def test_default_out_is_a_fresh_name_under_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = tuitrain.init(name="my run")
    second = tuitrain.init(name="my run")
    first.finish()
    second.finish()
    assert first.path != second.path
    for run in (first, second):
        assert run.path.parent == Path("runs") and run.path.name.startswith("my_run-")
        with open_run(run.path) as rf:
            assert rf.status == "completed" and rf.n_steps == 0


def test_bad_input_is_said_in_words(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"config\['opt'\]\['fn'\].*cannot store"):
        tuitrain.init(out=tmp_path / "a.h5", config={"lr": 0.1, "opt": {"fn": print}})
    with pytest.raises(TypeError, match="config must be a dict"):
        tuitrain.init(out=tmp_path / "a.h5", config=[1, 2])
    assert not (tmp_path / "a.h5").exists()
    with pytest.raises(ValueError, match=r"\.pt is the suffix"):
        tuitrain.init(out=tmp_path / "a.pt")
    with tuitrain.init(out=tmp_path / "a.h5", config={"lr": np.float32(0.5)}) as run:
        with pytest.raises(ValueError, match="cannot name a column"):
            run.log({"a\0b": 1.0})
        with pytest.raises(ValueError, match="a column tuitrain keeps itself"):
            run.log({"step": 1})
        with pytest.raises(ValueError, match="shape"):
            run.log({"x": torch.ones(3)})
        with pytest.raises(TypeError, match="'name' is a str"):
            run.log({"name": "abc"})
    with pytest.raises(OutTaken, match="already exist"):  # never replaced without being asked
        tuitrain.init(out=tmp_path / "a.h5")
    with tuitrain.init(out=tmp_path / "a.h5", overwrite=True, config={"lr": 1}) as run:
        run.log({"loss": 1.0})
    with open_run(tmp_path / "a.h5") as rf:
        assert rf.n_steps == 1


def test_watch_after_the_first_log_is_refused(tmp_path: Path) -> None:
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tuitrain.init(out=tmp_path / "w.h5") as run:
        tiny_steps(run, model, opt, 1)
        with pytest.raises(
            RuntimeError, match=r"call run.watch\(model, optimizer\) before the first run.log"
        ):
            run.watch(model, opt)


def test_keys_with_a_slash_are_stored_and_read_by_their_own_names(tmp_path: Path) -> None:
    """``train/loss`` (the naming of other trackers) is one column, read back by that name, declared at
    the start or first logged later (then in /metrics), at steps and epochs alike."""
    import h5py

    with tuitrain.init(out=tmp_path / "s.h5") as run:
        for i in range(3):
            run.log({"loss": 1.0 / (i + 1), "train/loss": torch.tensor(2.0 * i), "100%/x": i})
        run.log_epoch({"val/f1": 0.25})  # flushes: the file now exists, declaring the keys so far
        run.log({"late/key": 5.0})
    with open_run(tmp_path / "s.h5") as rf:
        assert {"train/loss", "100%/x"} <= set(rf.step_scalars)
        assert list(rf.scalar("train/loss")[:3]) == [0.0, 2.0, 4.0]
        assert list(rf.scalar("100%/x")[:3]) == [0, 1, 2]
        assert rf.metrics("step")["late/key"][2].tolist() == [5.0]
        assert rf.epoch_metrics()[0]["val/f1"] == 0.25
    with h5py.File(tmp_path / "s.h5", "r") as f:  # one dataset each, the name escaped
        assert "train%2Floss" in f["steps"] and "100%25%2Fx" in f["steps"]
    p = tt("info", str(tmp_path / "s.h5"))
    assert p.returncode == 0 and "train/loss" in p.stdout, p.stdout + p.stderr


def test_a_loop_without_watch_stores_its_scalars_and_no_probe(tmp_path: Path) -> None:
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tuitrain.init(out=tmp_path / "n.h5") as run:
        tiny_steps(run, model, opt, 5)
        run.log({"loss": 2.0, "extra": 3}, step=7)  # steps 5 and 6 are empty rows
        with pytest.warns(UserWarning, match="steps only go forward"):
            run.log({"loss": 1.0}, step=2)
        run.log({"extra": 4}, commit=False)
        run.log({"loss": 0.5})
        assert run.step == 9
    with open_run(tmp_path / "n.h5") as rf:
        assert rf.status == "completed"
        assert rf.n_steps == 9
        assert rf.probe_specs == [] and rf.n_probe_rows == 0
        loss = rf.scalar("loss")
        assert np.isnan(loss[5:7]).all() and loss[7] == 2.0 and loss[8] == 0.5
        assert list(rf.scalar("extra")[7:]) == [3.0, 4.0]


def test_compiled_and_ddp_models_are_named_as_the_user_knows_them(tmp_path: Path) -> None:
    import torch.distributed as dist

    model = Tiny()
    names = [n for n, _ in model.named_parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    compiled = torch.compile(model, backend="eager")  # the wrapper is the point, not the compiler
    with tuitrain.init(out=tmp_path / "c.h5") as run:
        run.watch(compiled, opt)
        tiny_steps(run, model, opt, 3, forward=compiled)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(Tiny())
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        with tuitrain.init(out=tmp_path / "d.h5") as run:
            run.watch(ddp, opt)
            tiny_steps(run, ddp, opt, 3)
    finally:
        dist.destroy_process_group()
    for path in ("c.h5", "d.h5"):
        with open_run(tmp_path / path) as rf:
            assert [layer.name for layer in rf.layers] == names
            assert rf.n_probe_rows == 3


def test_other_ranks_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tuitrain.init(out=tmp_path / "r.h5") as run:
        run.watch(model, opt)
        tiny_steps(run, model, opt, 3)
        run.log_epoch({"val_loss": 1.0})
    assert run.path is None and run.step == 3 and run.finished
    assert list(tmp_path.iterdir()) == []


def test_amp_gradients_are_read_unscaled(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, plain = Tiny(), Tiny()
    plain.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    F.cross_entropy(plain(x), y).backward()
    want = np.array([p.grad.norm().item() for p in plain.parameters()])
    with tuitrain.init(out=tmp_path / "amp.h5") as run:
        run.watch(model, opt)
        loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)  # unscale_, then optimizer.step(): the pre-hook sees unscaled gradients
        scaler.update()
        run.log({"loss": loss})
    with open_run(tmp_path / "amp.h5") as rf:
        assert rel_err(rf.probe("grad_norm")[0].astype(np.float64), want) < 1e-3


# ---- hosted: what tuitrain watch / run give a script ---------------------------------------------


class Script:
    """A host's control that says pause, then resume, then stop, one command per poll."""

    def __init__(self, commands: list[str | None]) -> None:
        self.commands = list(commands)

    def poll(self, timeout: float = 0.0) -> str | None:
        time.sleep(min(timeout, 0.01))
        return self.commands.pop(0) if self.commands else None


def test_a_host_adds_its_sinks_and_its_out_and_its_stop_ends_the_block(tmp_path: Path) -> None:
    sink = Recorder()
    host = hosted.Host(
        sinks=[sink], control=Script(["pause", None, "resume", "stop"]), out=str(tmp_path / "h.h5")
    )
    hosted.install(host)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        with tuitrain.init(out=tmp_path / "ignored.h5") as run:
            run.watch(model, opt)
            for _ in range(100):
                tiny_steps(run, model, opt, 1)
                time.sleep(0.06)  # polled at most every 50 ms
        after = run.step
    finally:
        hosted.install(None)
    assert host.runs == [str(tmp_path / "h.h5")]
    assert not (tmp_path / "ignored.h5").exists()
    assert after < 100  # the stop ended the with block (StopRun), quietly
    kinds = [type(e).__name__ for e in sink.events]
    assert kinds[0] == "RunStarted"
    statuses = [e.status for e in sink.events if isinstance(e, StatusChanged)]
    assert statuses == ["running", "paused", "running"]
    finished = sink.events[-1]
    assert isinstance(finished, RunFinished) and finished.status == "stopped"
    started = sink.events[0]
    assert isinstance(started, RunStarted) and started.source == "script" and started.layers
    assert sum(len(b) for b in sink.events if isinstance(b, StepBatch)) == after
    with open_run(tmp_path / "h.h5") as rf:
        assert rf.status == "stopped" and rf.n_steps == after


def test_epoch_means_and_metrics_reach_the_sinks(tmp_path: Path) -> None:
    sink = Recorder()
    hosted.install(hosted.Host(sinks=[sink]))
    try:
        with tuitrain.init(out=tmp_path / "e.h5", config={"a": 1}, batch_size=8) as run:
            for v in (1.0, 2.0, 3.0):
                run.log({"loss": torch.tensor(v), "acc": 0.5})
            run.log_epoch({"val_loss": torch.tensor(0.25), "val_acc": 0.75, "val_f1": 0.5})
            run.log_test({"test_acc": 0.7, "auc": 0.9})
    finally:
        hosted.install(None)
    (epoch,) = [e for e in sink.events if isinstance(e, EpochEnd)]
    assert epoch.train_loss == pytest.approx(2.0) and epoch.train_acc == pytest.approx(0.5)
    assert epoch.val_loss == 0.25 and epoch.val_acc == 0.75 and epoch.metrics == {"val_f1": 0.5}
    started = sink.events[0]
    assert json.loads(started.config_json) == {"a": 1} and started.probes == []
    assert started.batch_size == 8
    with open_run(tmp_path / "e.h5") as rf:
        assert rf.test()["acc"] == pytest.approx(0.7)


def test_values_logged_without_commit_belong_to_the_step_just_taken(tmp_path: Path) -> None:
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with tuitrain.init(out=tmp_path / "k.h5") as run:
        run.watch(model, opt)
        for i in range(3):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            run.log({"loss": loss}, commit=False)  # closed by the next optimizer step's pre-hook
            run.log({"grad_steps": i}, commit=False)
    with open_run(tmp_path / "k.h5") as rf:
        assert rf.n_steps == 3 and rf.n_probe_rows == 3
        assert list(rf.scalar("grad_steps")) == [0.0, 1.0, 2.0]
        assert np.isfinite(rf.scalar("loss")).all()
        assert np.allclose(rf.scalar("lr"), 0.1)
