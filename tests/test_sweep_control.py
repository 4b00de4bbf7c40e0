"""Control of a running sweep from outside its runner (tuitrain.sweep.control), with real ``tuitrain``
processes and real run files: pause and resume one variant while the other keeps stepping, stop a queued
variant through the runner, stop_all (every file stopped, queued ones too), stop one variant while the
other completes, the pid-reuse guard, a detached runner outliving the process that started it and
``sweep --attach DIR`` on it, and ``--attach`` on a folder that is not a sweep."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.clirun import assert_clean_error, tt
from tests.conftest import REPO, cli_env, tuitrain_cmd
from tests.sweeps import reap
from tuitrain.runfile.reader import open_run
from tuitrain.sweep.control import SweepControl
from tuitrain.sweep.manifest import Manifest, Variant, load, save, status_of

LONG = ["--epochs", "400", "--set", "data.train_size=500"]


def until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def steps(path: Path) -> int:
    try:
        with open_run(path) as rf:
            return rf.n_steps
    except Exception:
        return -1


def file_status(d: Path, name: str) -> str:
    v = next(v for v in load(d).variants if v.name == name)
    return status_of(v, d)


def start_sweep(d: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*tuitrain_cmd(), "sweep", "toy2d_mlp", *args, "--no-ui", "--out", str(d)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(), cwd=REPO,
    )  # fmt: skip


def test_pause_resume_stop_queued_and_stop_all(tmp_path: Path) -> None:
    d = tmp_path / "s"
    p = start_sweep(d, "--grid", "optim.lr=0.01,0.02,0.03,0.04", "--parallel", "2", *LONG)
    try:
        a, b, c, e = "lr=0.01", "lr=0.02", "lr=0.03", "lr=0.04"
        until(lambda: steps(d / f"{a}.h5") > 0 and steps(d / f"{b}.h5") > 0, what="both running")
        control = SweepControl(d)
        assert control.runner_alive()
        assert control.send("pause", [a]) == [a]
        until(lambda: file_status(d, a) == "paused", what="a paused")
        time.sleep(0.5)
        a0, b0 = steps(d / f"{a}.h5"), steps(d / f"{b}.h5")
        time.sleep(2.5)  # the file is flushed every ~1 s
        assert steps(d / f"{a}.h5") == a0, "a paused variant kept stepping"
        assert steps(d / f"{b}.h5") > b0, "the other variant stopped stepping"
        assert control.send("resume", [a]) == [a]
        until(lambda: file_status(d, a) == "running", what="a resumed")
        until(lambda: steps(d / f"{a}.h5") > a0, what="a stepping again")

        assert control.send("stop", [c]) == [c]  # queued: through the runner, never started
        until(lambda: file_status(d, c) == "stopped", what="queued c stopped")
        assert not (d / f"{c}.h5").exists()

        control.stop_all()
        out, _ = p.communicate(timeout=90)
    finally:
        p.kill()
        reap(d)  # its children run in sessions of their own
    assert p.returncode == 130, out
    m = load(d)
    assert [v.status for v in m.variants] == ["stopped"] * 4, out
    for name in (a, b):
        with open_run(d / f"{name}.h5") as rf:
            assert rf.status == "stopped"
    assert not (d / f"{e}.h5").exists()
    assert m.runner_pid is None and all(v.pid is None for v in m.variants)
    assert not control.runner_alive()


def test_stop_one_variant_the_other_completes(tmp_path: Path) -> None:
    d = tmp_path / "s"
    p = start_sweep(d, "--grid", "train.epochs=400,3", "--set", "data.train_size=500")
    try:
        long = "epochs=400"
        until(lambda: steps(d / f"{long}.h5") > 0, what="the long variant running")
        assert SweepControl(d).send("stop", [long]) == [long]
        out, _ = p.communicate(timeout=120)
    finally:
        p.kill()
        reap(d)  # its children run in sessions of their own
    assert p.returncode == 130, out  # a variant was stopped (docs/sweeps.md, exit codes)
    statuses = {v.name: v.status for v in load(d).variants}
    assert statuses == {long: "stopped", "epochs=3": "completed"}, out


def test_pid_reuse_guard(tmp_path: Path) -> None:
    """A recorded pid that is dead, or now some other process, is never signalled."""
    sleeper = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        out = str(tmp_path / "a.h5")
        cmd = ["tuitrain", "run", "toy2d_mlp", "--no-ui", "--out", out]
        variants = [
            Variant(
                "a", "toy2d_mlp", file="a.h5", command=cmd, status="starting", pid=sleeper.pid, started=0.0
            ),
            Variant("b", "toy2d_mlp", file="b.h5", command=cmd, status="starting", pid=dead.pid, started=0.0),
        ]
        (tmp_path / "a.h5").write_bytes(b"")  # a "run file" so that a real child would be signalled
        save(Manifest("x", 0.0, variants=variants, runner_pid=sleeper.pid), tmp_path)
        control = SweepControl(tmp_path)
        assert not control.runner_alive()
        for cmd_ in ("pause", "resume", "stop"):
            assert control.send(cmd_) == []
        control.stop_all()
        time.sleep(0.3)
        assert sleeper.poll() is None, "an unrelated process with a recorded pid was signalled"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_detached_runner_outlives_its_starter_and_attach_follows_it(tmp_path: Path) -> None:
    d = tmp_path / "s"
    grid = ["--grid", "optim.lr=0.01,0.001", "--epochs", "3", "--set", "data.train_size=500"]
    p = tt("sweep", "toy2d_mlp", *grid, "--print-commands", "--out", str(d))  # the queued manifest
    assert p.returncode == 0, p.stderr
    starter = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-m', 'tuitrain', 'sweep', '--_run-folder', {str(d)!r}],"
        f" stdin=subprocess.DEVNULL, stdout=open({str(d / 'sweep.log')!r}, 'wb'),"
        " stderr=subprocess.STDOUT, start_new_session=True)\n"
    )
    s = subprocess.run([sys.executable, "-c", starter], env=cli_env(), cwd=REPO, timeout=30)
    assert s.returncode == 0  # the starter is gone now
    control = SweepControl(d)
    until(control.runner_alive, timeout=30, what="the detached runner")
    try:
        a = tt("sweep", "--attach", str(d), timeout=180)  # no terminal: the headless rows, followed
    finally:
        reap(d)
    assert a.returncode == 0, a.stdout + a.stderr
    assert [v.status for v in load(d).variants] == ["completed", "completed"]
    assert "Final metrics" in a.stdout and "lr=0.001" in a.stdout, a.stdout
    assert "Final metrics" in (d / "sweep.log").read_text()
    assert not control.runner_alive()


def test_attach_on_a_folder_that_is_not_a_sweep(tmp_path: Path) -> None:
    assert_clean_error(tt("sweep", "--attach", str(tmp_path)), "not a sweep folder")
    assert_clean_error(tt("sweep", "--attach", str(tmp_path / "nope")), "no such folder")
