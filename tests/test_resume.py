"""Checkpoints that resume (tuitrain/train/resume.py, ``run``/``watch --resume RUN.h5``).

The strongest check there is: a run trained 2 epochs and resumed to 4 is the run that trained 4
epochs without stopping, loss for loss (weights, optimizer state, schedule and the data generator's
RNG all come back), whether it continues in the same file or in a copy at a new ``--out``. Every way
a resume can be wrong is exit 2 with one paragraph, and changes nothing on disk.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import PRESETS, REPO, cli_env, tuitrain_cmd
from tests.e2e.tmux import descendants, needs_tmux, watch_in_tmux
from tuitrain.runfile import open_run

TOY = str(PRESETS / "toy2d_mlp.toml")
# 8 steps per epoch; a learning rate at which 2 epochs move the loss well away from its start;
# one thread, so that two processes compute bit for bit alike
SETS = ("--set", "data.train_size=1000", "--set", "optim.lr=0.01", "--set", "train.threads=1")


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    p = tt("run", *args, cwd=cwd, env={**cli_env(), "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def history(path: Path) -> tuple[str, np.ndarray, np.ndarray, int, list[str]]:
    with open_run(path) as rf:
        steps = rf.steps()
        events = [e["message"] for e in rf.events() if e["kind"] == "resume"]
        return rf.status, steps["step"], steps["loss"], rf.n_epochs, events


def assert_same_snapshots(resumed: Path, full: Path) -> None:
    """The resumed run's snapshots are the uninterrupted run's: the boundary of every epoch (the
    resumed part's rows appended: more epochs raise the file's cap), the end's misclassified points
    (the resumed end's group of rows is the snapshot), the test points of the start."""
    with open_run(resumed) as r, open_run(full) as f:
        assert set(r.snapshot_specs) == set(f.snapshot_specs) == {"boundary", "points", "misclassified"}
        b, fb = r.snapshot_rows("boundary"), f.snapshot_rows("boundary")
        assert b.epoch.tolist() == fb.epoch.tolist() == [-1, 0, 1, 2, 3]
        assert b.step.tolist() == fb.step.tolist()
        np.testing.assert_array_equal(b.arrays["pred"], fb.arrays["pred"])
        for name in ("misclassified", "points"):
            got, want = r.snapshot_rows(name).latest(), f.snapshot_rows(name).latest()
            assert got.step.tolist() == want.step.tolist() and len(got) > 0
            for k in want.arrays:
                np.testing.assert_array_equal(got.arrays[k], want.arrays[k])
        wrong = r.snapshot(name="misclassified")
        assert wrong is not None and wrong.step == 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A 2-epoch run with its checkpoint, and the same run trained 4 epochs without stopping."""
    d = tmp_path_factory.mktemp("resume")
    run(TOY, "--no-ui", "--epochs", "2", *SETS, "--out", str(d / "a.h5"))
    run(TOY, "--no-ui", "--epochs", "4", *SETS, "--out", str(d / "full.h5"))
    return {"dir": d, "a": d / "a.h5", "full": d / "full.h5"}


def test_the_checkpoint_loads_with_weights_only(trained: dict[str, Path]) -> None:
    import torch

    ck = torch.load(trained["a"].with_suffix(".pt"), weights_only=True)
    assert ck["format"] == "tuitrain.checkpoint" and ck["version"] == 1
    assert (ck["step"], ck["epoch"]) == (16, 2)
    assert {"model", "optimizer", "scheduler", "rng", "config_toml"} <= set(ck)
    assert "hidden = [" in ck["config_toml"] and ck["optimizer"]["state"]  # Adam's moments


def test_a_resumed_run_is_the_run_that_never_stopped(trained: dict[str, Path], tmp_path: Path) -> None:
    a = tmp_path / "a.h5"
    a.write_bytes(trained["a"].read_bytes())
    a.with_suffix(".pt").write_bytes(trained["a"].with_suffix(".pt").read_bytes())
    _, _, full_loss, _, _ = history(trained["full"])

    # a new --out: a copy of the old history, continued; the resumed file and checkpoint untouched
    before = (digest(a), digest(a.with_suffix(".pt")))
    run("--resume", str(a), "--epochs", "4", "--no-ui", "--out", str(tmp_path / "b.h5"))
    assert (digest(a), digest(a.with_suffix(".pt"))) == before
    status, steps, loss, epochs, said = history(tmp_path / "b.h5")
    assert status == "completed" and epochs == 4 and steps.tolist() == list(range(32))
    np.testing.assert_array_equal(loss, full_loss)  # bit for bit: nothing was lost or re-drawn
    assert said == [
        f"resumed from {a.with_suffix('.pt')} at step 16, epoch 3, into the copy {tmp_path / 'b.h5'}"
    ]
    assert_same_snapshots(tmp_path / "b.h5", trained["full"])

    # the same file, appended
    run("--resume", str(a), "--epochs", "4", "--no-ui")
    status, steps, loss, epochs, said = history(a)
    assert status == "completed" and epochs == 4 and steps.tolist() == list(range(32))
    np.testing.assert_array_equal(loss, full_loss)
    assert_same_snapshots(a, trained["full"])  # and the pictures of the model: every epoch's, the end's
    # and so the first resumed steps go on from the trained weights' loss, far from a fresh init's
    first, last, fresh = loss[16:20].mean(), loss[12:16].mean(), loss[0:4].mean()
    assert abs(first - last) < abs(fresh - last) / 2, (first, last, fresh)
    import torch

    ck = torch.load(a.with_suffix(".pt"), weights_only=True)
    assert (ck["step"], ck["epoch"]) == (32, 4)  # the new checkpoint resumes again


def test_resume_with_a_preset_and_from_watch_without_a_terminal(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """``watch --resume`` whose stdin is not a terminal trains headless; a PRESET given as well is
    the base config, and must build the same model."""
    out = tmp_path / "w.h5"
    p = subprocess.run(
        [*tuitrain_cmd(), "watch", TOY, *SETS, "--resume", str(trained["a"]), "--epochs", "3", "--out", str(out)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180,
        env={**cli_env(), "OMP_NUM_THREADS": "1"}, cwd=REPO,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    status, steps, _, epochs, _ = history(out)
    assert status == "completed" and epochs == 3 and len(steps) == 24


def test_resume_errors_are_bad_input_and_change_nothing(trained: dict[str, Path], tmp_path: Path) -> None:
    a = trained["a"]
    before = digest(a)
    cases = [
        (("--resume", str(a), "--epochs", "4", "--set", "model.hidden=[8]"), "`model.hidden` [32, 32, 32, 32, 32, 32] -> [8]"),
        (("--resume", str(a), "--epochs", "4", "--set", "optim.name=sgd"), "`optim.name` 'adam' -> 'sgd'"),
        (("--resume", str(a)), "has trained 2 epochs already and train.epochs = 2; give --epochs above 2"),
        (("--resume", str(a), "--epochs", "4", "--max-steps", "10"), "give --max-steps above 16"),
        (("--resume", str(tmp_path / "none.h5")), "no such run file"),
        (("--resume", str(a.with_suffix(".pt"))), "give the run file"),
        (("--resume", str(a), "--epochs", "4", "--out", str(trained["full"])), "already exist"),
        (("train.py", "--resume", str(a)), "a training script (train.py) resumes itself"),
    ]  # fmt: skip
    for args, needle in cases:
        assert_clean_error(tt("run", "--no-ui", *args), needle, code=2)
    # a PRESET given with --resume that builds another model
    p = tt("run", "vgg08", "--resume", str(a), "--epochs", "4", "--no-ui")
    assert_clean_error(p, "`model.name` 'mlp' -> 'vgg'", code=2)
    assert digest(a) == before

    # no checkpoint; an unreadable one; one of the weights alone (what older versions saved)
    b = tmp_path / "b.h5"
    run(TOY, "--no-ui", "--max-steps", "4", "--set", "train.checkpoint=false", "--out", str(b))
    assert_clean_error(
        tt("run", "--no-ui", "--resume", str(b), "--epochs", "60"), "the run has no checkpoint"
    )
    b.with_suffix(".pt").write_bytes(b"not a checkpoint")
    p = tt("run", "--no-ui", "--resume", str(b), "--epochs", "60", "--max-steps", "0")
    assert_clean_error(p, "cannot read the checkpoint", code=2)
    import torch

    ck = torch.load(a.with_suffix(".pt"), weights_only=True)
    torch.save(ck["model"], b.with_suffix(".pt"))
    p = tt("run", "--no-ui", "--resume", str(b), "--epochs", "60", "--max-steps", "0")
    assert_clean_error(p, "is not a tuitrain checkpoint that can resume", code=2)
    with open_run(b) as rf:
        assert rf.status == "completed" and rf.n_steps == 4  # untouched by all three


def test_a_run_still_being_written_or_killed_is_not_resumed(tmp_path: Path) -> None:
    out = tmp_path / "live.h5"
    proc = subprocess.Popen(
        [*tuitrain_cmd(), "run", TOY, "--no-ui", "--epochs", "1000", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**cli_env(), "OMP_NUM_THREADS": "1"}, cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if out.exists():
                with open_run(out) as rf:
                    if rf.n_steps > 0:
                        break
            time.sleep(0.2)
        else:
            raise AssertionError("the run never wrote a step")
        out_b = tmp_path / "b.h5"
        p = tt("run", "--no-ui", "--resume", str(out), "--epochs", "2000", "--out", str(out_b))
        assert_clean_error(p, "is still being written by its run", code=2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        p = tt("run", "--no-ui", "--resume", str(out), "--epochs", "2000", "--out", str(out_b))
        assert_clean_error(p, "was never closed: its training process was killed", code=2)
        assert not out_b.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_scripts_run_is_not_resumed(tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    out = tmp_path / "script.h5"
    script.write_text(
        "import tuitrain\n"
        f"run = tuitrain.init(name='loop', out={str(out)!r})\n"
        "for i in range(3):\n"
        "    run.log({'loss': 1.0 / (i + 1)})\n"
        "run.finish()\n"
    )
    p = subprocess.run(
        [tuitrain_cmd()[0], str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    out.with_suffix(".pt").write_bytes(b"")  # even with a file where a checkpoint would be
    p = tt("run", "--no-ui", "--resume", str(out), "--epochs", "5")
    assert_clean_error(p, "written by a script", "Resume it in the script itself", code=2)


@needs_tmux
def test_watch_resumes_a_watched_run_in_the_dashboard(tmp_path: Path) -> None:
    """The dashboard path: the background training process continues the same file, and its log too
    (the watched run left one; it is appended to, not refused as an existing file)."""
    out = tmp_path / "w.h5"
    log = out.with_suffix(".log")
    runs = [(f"{TOY} --epochs 2 {' '.join(SETS)} --out {out}", 2), (f"--resume {out} --epochs 3", 3)]
    for done, (args, epochs) in enumerate(runs, start=1):
        with watch_in_tmux(args) as (t, pane, workers):
            wait_until(lambda: bool(descendants(pane)), 60, "the training process")
            workers.extend(descendants(pane))
            wait_until(
                lambda d=done: log.exists() and log.read_text().count("run completed") == d, 150, "its end"
            )
            t.wait_for(lambda s: "COMPLETED" in s, 30, "the dashboard to say so")
            t.keys("q")
        status, steps, _, n_epochs, said = history(out)
        assert status == "completed" and n_epochs == epochs and steps.tolist() == list(range(8 * epochs))
    assert said == [f"resumed from {out.with_suffix('.pt')} at step 16, epoch 3"]
    assert log.read_text().count("run completed after") == 2  # one log, both runs


def test_a_run_stopped_inside_an_epoch_resumes_at_the_start_of_that_epoch(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    proc = subprocess.Popen(
        [*tuitrain_cmd(), "run", TOY, "--no-ui", "--epochs", "1000", "--set", "data.train_size=20000", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**cli_env(), "OMP_NUM_THREADS": "1"}, cwd=REPO,
    )  # fmt: skip
    try:
        per_epoch = 157  # 20,000 samples in batches of 128

        def mid_epoch() -> bool:
            if not out.exists():
                return False
            with open_run(out) as rf:
                return rf.n_steps > per_epoch + 10

        wait_until(mid_epoch, 120, "a step inside the second epoch")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    status, steps, _, closed, _ = history(out)
    assert status == "stopped" and closed >= 1
    run("--resume", str(out), "--epochs", str(closed + 1), "--no-ui")
    status, steps, _, epochs, said = history(out)
    assert status == "completed" and epochs == closed + 1 and steps.tolist() == list(range(len(steps)))
    with open_run(out) as rf:
        epoch_of_step = rf.steps()["epoch"]
    assert (epoch_of_step[-per_epoch:] == closed).all()  # the unfinished epoch, trained whole again
    assert said and f"epoch {closed + 1}" in said[0]
