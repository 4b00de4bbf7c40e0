"""A user's own training script from the CLI: `tuitrain run train.py --no-ui -- ARGS` and `tuitrain
watch train.py` without a terminal, run for real (the real CLI, the script written like PyTorch's MNIST
example in tests/scripts/mnist_like.py, real run files, real signals). The dashboard side is in
tests/e2e/test_watch_script_tmux.py."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import h5py
import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import REPO, cli_env, tuitrain_cmd

MNIST = REPO / "tests" / "scripts" / "mnist_like.py"
STEPS_PER_EPOCH = 4  # mnist_like's defaults: 64 training samples, batches of 16


def env() -> dict[str, str]:
    return {**cli_env(), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def completed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("script") / "mnist.h5"
    p = tt("run", str(MNIST), "--no-ui", "--out", str(out), "--", "--epochs", "2", env=env())
    return out, p


def test_script_runs_headless_with_its_own_arguments(completed) -> None:
    out, p = completed
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    assert "Traceback" not in text
    assert f"steps {2 * STEPS_PER_EPOCH}" in p.stdout  # the script's own print: its args reached it
    assert [ln.split()[1] for ln in p.stdout.splitlines() if ln.startswith("epoch ")] == ["1/2", "2/2"]
    assert "Final metrics" in p.stdout and "last epoch: val_error" in p.stdout  # the table, its own metrics
    assert "0 epochs" not in p.stdout and "(0 classes)" not in p.stdout  # nothing unknown shown as 0
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "completed"
        assert f["steps/step"].shape[0] == 2 * STEPS_PER_EPOCH
        assert json.loads(f.attrs["config_json"])["epochs"] == 2  # argv as the script parsed it


def test_watch_without_a_terminal_runs_the_script_headless(tmp_path: Path) -> None:
    out = tmp_path / "w.h5"
    p = tt("watch", str(MNIST), "--out", str(out), "--", "--epochs", "1", env=env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "is not a terminal" in p.stderr and "headless" in p.stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "completed" and f["steps/step"].shape[0] == STEPS_PER_EPOCH


def test_a_failing_script_fails_its_run_and_says_so_once(tmp_path: Path) -> None:
    out = tmp_path / "f.h5"
    p = tt(
        "run", str(MNIST), "--no-ui", "--out", str(out), "--", "--epochs", "2", "--fail-at", "3", env=env()
    )
    text = p.stdout + p.stderr
    assert p.returncode == 1, text
    assert text.count("error: RuntimeError: deliberate failure at step 3") == 1, text
    # the script's traceback, as `python mnist_like.py` prints it: none of tuitrain's own frames
    assert 'mnist_like.py", line' in text and "runpy" not in text, text
    assert "tuitrain/commands" not in text and "typer" not in text and "tuitrain/train" not in text, text
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "failed"
        assert "deliberate failure at step 3" in f.attrs["error"]
        assert f["steps/step"].shape[0] == 4  # steps 0..3 were logged before it raised


def test_a_script_that_never_calls_init_is_a_clear_failure(tmp_path: Path) -> None:
    script = tmp_path / "plain.py"
    script.write_text('print("training without tuitrain")\n')
    p = tt("run", str(script), "--no-ui", env=env(), cwd=tmp_path)
    assert_clean_error(
        p, "training without tuitrain", "plain.py ended without calling tuitrain.init()", code=1
    )
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.h5"))


def test_a_script_that_fails_before_init_names_its_error(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text('raise ValueError("no data here")\n')
    p = tt("run", str(script), "--no-ui", env=env(), cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "broken.py failed before tuitrain.init() started a run: ValueError: no data here" in p.stderr
    assert 'broken.py", line 1' in p.stderr and "tuitrain/" not in p.stderr  # its own traceback only


def test_bad_script_arguments_are_exit_2(tmp_path: Path) -> None:
    p = tt("run", str(MNIST), "--no-ui", "--", "--no-such-flag", env=env(), cwd=tmp_path)
    assert_clean_error(p, "unrecognized arguments: --no-such-flag", "exited with code 2 (bad arguments?")


def test_a_missing_script_is_bad_input(tmp_path: Path) -> None:
    for command in (("run", "--no-ui"), ("watch",)):
        p = tt(command[0], str(tmp_path / "nope.py"), *command[1:], cwd=tmp_path)
        assert_clean_error(p, "nope.py: no such script")
    assert not (tmp_path / "runs").exists()


def test_preset_options_and_preset_arguments_are_refused(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("")
    p = tt("run", str(script), "--no-ui", "--epochs", "3", "--set", "a=1", cwd=tmp_path)
    assert_clean_error(p, "--set, --epochs: options of presets", "after --")
    p = tt("run", "toy2d_mlp", "--no-ui", "--", "--epochs", "3", cwd=tmp_path)
    assert_clean_error(p, "toy2d_mlp: a preset takes no arguments")
    p = tt("watch", cwd=tmp_path)
    assert_clean_error(p, "watch what?", "--attach")


def test_sigterm_before_init_stops_the_script_at_once(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text('import time\nprint("loading", flush=True)\ntime.sleep(60)\n')
    proc = subprocess.Popen(
        [*tuitrain_cmd(), "run", str(script), "--no-ui"], cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "loading"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, out + err
    assert time.monotonic() - t0 < 10  # not the script's 60 s
    assert "slow.py was stopped before it called tuitrain.init()" in err and "Traceback" not in err


def test_ctrl_c_stops_the_run_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    proc = subprocess.Popen(
        [*tuitrain_cmd(), "run", str(MNIST), "--no-ui", "--out", str(out), "--", "--epochs", "50",
         "--sleep", "0.05"],
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # the script prints "step N" once it steps
        if line.startswith("step 3"):
            break
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest + err
    assert "run stopped after" in rest and "Traceback" not in rest + err
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "stopped"
        assert 3 <= f["steps/step"].shape[0] < 50 * STEPS_PER_EPOCH


def test_watch_attach_follows_a_run_file(completed) -> None:
    out, _ = completed
    p = tt("watch", "--attach", str(out))  # no terminal: the printed report, as replay --follow gives
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Final metrics" in p.stdout and "mnist_like" in p.stdout
    p = tt("watch", "--attach", str(out), "--out", "x.h5")
    assert_clean_error(p, "--attach", "takes nothing else")
    p = tt("watch", "--attach", str(out.with_name("missing.h5")))
    assert_clean_error(p, "missing.h5")


def test_a_script_run_that_is_refused_its_out_is_bad_input(completed, tmp_path: Path) -> None:
    out, _ = completed  # exists: refused before the script starts, as for a preset
    p = tt("run", str(MNIST), "--no-ui", "--out", str(out), env=env())
    assert_clean_error(p, str(out), "--overwrite")
    # the script's own tuitrain.init(out=...) refused it: the same one paragraph, exit 2, no traceback
    p = tt("run", str(MNIST), "--no-ui", "--", "--epochs", "1", "--out", str(out), env=env())
    assert_clean_error(p, "mnist_like.py: --out", "already exists", "--overwrite")


SCRIPT_WITHOUT_PROGRESS = textwrap.dedent(
    """
    import torch, tuitrain
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tuitrain.init(name="bare")
    run.watch(model, opt)
    for step in range(6):
        opt.zero_grad()
        loss = model(torch.ones(2, 3)).pow(2).mean()
        loss.backward()
        opt.step()
        run.log({"loss": loss, "my_metric": step * 2.0})
    """
)


def test_a_loop_that_says_nothing_of_its_length_runs_headless(tmp_path: Path) -> None:
    script = tmp_path / "bare.py"
    script.write_text(SCRIPT_WITHOUT_PROGRESS)
    p = tt("run", str(script), "--no-ui", env=env(), cwd=tmp_path)  # no epochs, steps, classes, batch
    assert p.returncode == 0, p.stdout + p.stderr
    assert "run completed after 6 steps" in p.stdout
    assert "0 epochs" not in p.stdout and "0 classes" not in p.stdout and "batch 0" not in p.stdout
    (made,) = (tmp_path / "runs").glob("bare-*.h5")  # the script's default name, no --out
    with h5py.File(made, "r") as f:
        assert f.attrs["status"] == "completed" and f["steps/step"].shape[0] == 6


def test_the_console_shows_what_a_loop_logged_and_leaves_out_what_it_did_not() -> None:
    import io

    import numpy as np
    from rich.console import Console

    from tuitrain.events import STEP_SCALARS, EpochEnd, RunFinished, RunStarted, StepBatch, TestResult
    from tuitrain.train.sinks import ConsoleSink, epoch_line, start_lines

    started = RunStarted("mine", "", "Net", params=1234, source="script", step_scalars=(*STEP_SCALARS, "f1"))
    assert start_lines(started) == ["[bold]mine[/]: Net, 1.23K params"]  # no dataset, epochs, batch: unknown
    epoch = EpochEnd(0, 3, val_loss=0.5, metrics={"f1": 0.25}, seconds=1.0)
    assert epoch_line(epoch, 0, own=True) == "epoch 1  val loss 0.5000  f1 0.25  1.0 s"

    out = io.StringIO()
    sink = ConsoleSink(Console(file=out, width=100, force_terminal=False))
    scalars = np.full((3, len(started.step_scalars)), np.nan)
    scalars[:, 0] = [2.0, 1.5, 1.0]  # loss only: no acc, lr or samples/s
    for event in (
        started,
        StepBatch(np.arange(3), np.zeros(3, np.int32), scalars, started.step_scalars),
        epoch,
        TestResult(acc=0.75, metrics={"f1": 0.5}),
        RunFinished("completed", 3),
    ):
        sink.emit(event)
    text = out.getvalue()
    assert "epoch 1  val loss 0.5000  f1 0.25" in text and "run completed after 3 steps" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("mine "))  # the final table's row
    assert "0.5000" in row and "75.00" in row and "nan" not in row  # not logged: "-", never nan
    assert "last epoch: f1 0.25" in text and "test: f1 0.5" in text  # its own metrics, after the table
