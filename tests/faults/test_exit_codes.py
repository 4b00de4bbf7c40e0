"""Exit codes and statuses that tell the truth (issue 9, section 2). Each test injects the fault into
the real processes: real signals to the real `tuitrain watch` in tmux and to `run --no-ui`, a real
`| head -2` pipeline, a real redirect of the dashboard's stdout, a real limit on file size that makes
the run file's final flush fail, a real out-of-memory while building the model.

The table they check (tuitrain/commands/__init__.py): 0 completed, 1 failed (also: the training
process died, the run file could not be completed), 2 bad input, 130 SIGINT, 143 SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import REPO, cli_env, tuitrain_cmd
from tests.e2e.tmux import Tmux, descendants, needs_tmux, running, step_of

TOY = "presets/toy2d_mlp.toml"


class ShellPane(Tmux):
    """`tuitrain watch ARGS` run by a shell in a tmux pane; the shell writes tuitrain's exit status to a
    file and keeps the pane open, so the test can read that status and what was printed after the
    dashboard gave the terminal back. Signals go to tuitrain itself (:meth:`tuitrain_pid`), not the
    shell."""

    def __init__(self, args: str, status: Path, width: int = 110, height: int = 32) -> None:
        self.status = status
        venv_bin = Path(sys.executable).parent
        cmd = f'{venv_bin}/tuitrain watch {args}; echo "$?" > {status}; exec sleep 600'
        super().__init__(cmd, width, height, extra_env={"OMP_NUM_THREADS": "1"})

    def tuitrain_pid(self) -> int:
        pane = self.pane_pid()
        for pid in descendants(pane):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
                if any(a.endswith("/tuitrain") for a in argv) and "watch" in argv:
                    return pid
        raise AssertionError(f"no tuitrain under the pane's shell {pane}")

    def exit_status(self, timeout: float = 90) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.status.exists() and self.status.read_text().strip():
                return int(self.status.read_text())
            time.sleep(0.25)
        raise AssertionError(f"tuitrain did not exit within {timeout} s; screen:\n{self.screen()}")

    def screen(self) -> str:
        """The screen and its scrollback, long lines unwrapped (-J): messages printed after the
        dashboard can be longer than the pane is wide."""
        return subprocess.run(
            ["tmux", "-L", self.name, "capture-pane", "-p", "-J", "-S", "-", "-t", self.name],
            capture_output=True,
            text=True,
        ).stdout

    def text(self) -> str:
        """What the pane shows, as one line of words."""
        return " ".join(self.screen().split())


def trainer_of(pane: int) -> int:
    """The pid of `watch`'s spawned training process (not multiprocessing's resource tracker)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, ppid = map(int, line.split())
        if ppid == pane and "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "):
            return pid
    raise AssertionError(f"no training process under {pane}")


def gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.time() + timeout
    while running(pid) and time.time() < deadline:
        time.sleep(0.2)
    return not running(pid)


def watch_running(args: str, status: Path) -> tuple[ShellPane, int, int]:
    """`tuitrain watch ARGS` in a pane, once the header says RUNNING with steps: (pane, tuitrain's pid,
    the training process's pid)."""
    t = ShellPane(args, status)
    t.wait_for(lambda s: "RUNNING" in s and step_of(s) > 0, 150, "a running dashboard")
    tuitrain = t.tuitrain_pid()
    return t, tuitrain, trainer_of(tuitrain)


def status_of(path: Path) -> str:
    with h5py.File(path, "r", swmr=True) as f:
        return str(f.attrs["status"])


# ---- watch: the training process dies -----------------------------------------------------------


@needs_tmux
def test_watch_says_the_training_process_died_and_exits_1(tmp_path: Path) -> None:
    out = tmp_path / "killed.h5"
    t, pane, trainer = watch_running(f"{TOY} --epochs 400 --out {out}", tmp_path / "status")
    try:
        os.kill(trainer, signal.SIGKILL)
        t.wait_for(lambda s: "FAILED" in s or "INCOMPLETE" in s, 20, "the dashboard to see the death")
        t.keys("q")
        assert t.exit_status() == 1
        said = t.text()
        assert "training process died (killed by SIGKILL) after" in said, said
        assert "holds everything up to its last flush" in said and "run running" not in said, said
        assert status_of(out) == "running"  # what the file says: never closed, and the message said so
    finally:
        t.kill()
        subprocess.run(["kill", "-9", str(trainer)], capture_output=True)


# ---- watch: SIGTERM and SIGINT are `q` then stop --------------------------------------------------


@needs_tmux
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_watch_stops_training_restores_the_terminal(tmp_path: Path, sig: int, code: int) -> None:
    out = tmp_path / "signalled.h5"
    t, pane, trainer = watch_running(f"{TOY} --epochs 400 --out {out}", tmp_path / "status")
    try:
        os.kill(pane, sig)
        assert t.exit_status() == code
        screen = t.screen()
        # the dashboard left the alternate screen: what is left is the shell's screen and the summary
        assert "Gradients" not in screen and "run stopped after" in t.text(), screen
        assert gone(trainer), "the training process was orphaned"
        assert status_of(out) == "stopped"
    finally:
        t.kill()
        subprocess.run(["kill", "-9", str(trainer)], capture_output=True)


# ---- run --no-ui ----------------------------------------------------------------------------------


def test_sigterm_to_run_no_ui_exits_143_and_the_file_is_stopped(tmp_path: Path) -> None:
    out = tmp_path / "term.h5"
    env = {**cli_env(), "OMP_NUM_THREADS": "1"}
    args = [*tuitrain_cmd(), "run", TOY, "--no-ui", "--epochs", "2000", "--out", str(out)]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the first epoch line: training is under way, the handler installed
            if line.startswith("epoch 1/"):
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stdout + stderr
    assert status_of(out) == "stopped"


def test_a_closed_stdout_does_not_kill_the_run(tmp_path: Path) -> None:
    out = tmp_path / "piped.h5"
    cmd = " ".join([*tuitrain_cmd(), "run", TOY, "--no-ui", "--epochs", "20", "--out", str(out)])
    p = subprocess.run(
        ["bash", "-c", f"{cmd} | head -2; exit ${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**cli_env(), "OMP_NUM_THREADS": "1"},
        cwd=REPO,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(p.stdout.splitlines()) == 2
    assert "broken pipe" in p.stderr and "training goes on" in p.stderr and "Traceback" not in p.stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "completed" and f["steps/step"].shape[0] == 20 * 16


# ---- watch without a terminal ---------------------------------------------------------------------


@needs_tmux
def test_watch_with_stdout_redirected_trains_headless_and_says_so(tmp_path: Path) -> None:
    out, text, err = tmp_path / "redirected.h5", tmp_path / "out.txt", tmp_path / "err.txt"
    t = ShellPane(f"{TOY} --epochs 3 --out {out} > {text} 2> {err}", tmp_path / "status")
    try:
        assert t.exit_status() == 0
    finally:
        t.kill()
    assert "stdout is not a terminal" in err.read_text() and "headless" in err.read_text()
    printed = text.read_text()
    assert "\x1b[" not in printed and "epoch 3/3" in printed, printed
    assert status_of(out) == "completed"


def test_watch_with_stdin_not_a_terminal_trains_headless_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "nostdin.h5"
    p = subprocess.run(
        [*tuitrain_cmd(), "watch", TOY, "--epochs", "2", "--out", str(out)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**cli_env(), "OMP_NUM_THREADS": "1"},
        cwd=REPO,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "stdin is not a terminal" in p.stderr and "\x1b[" not in p.stdout
    assert status_of(out) == "completed"


# ---- bad input: the device -------------------------------------------------------------------------


@needs_tmux
def test_device_cuda_without_cuda_is_bad_input_from_run_and_watch(tmp_path: Path) -> None:
    import torch  # here, not at collection: torch takes seconds to import

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is good input here")
    out = tmp_path / "cuda.h5"
    t = ShellPane(f"{TOY} --device cuda --out {out}", tmp_path / "status")
    try:
        assert t.exit_status() == 2
        said = t.text()
        assert "no CUDA device is available" in said and "Traceback" not in said, said
    finally:
        t.kill()
    p = tt("run", TOY, "--no-ui", "--device", "cuda", "--out", str(out))
    assert_clean_error(p, "no CUDA device is available", code=2)
    assert not out.exists()  # bad input leaves nothing behind


# ---- the run file cannot be completed ---------------------------------------------------------------

# From the last epoch's line on, no regular file of this process may grow past 1 byte (RLIMIT_FSIZE;
# Python ignores SIGXFSZ, so writes fail with EFBIG): the run trained to the end, and its file's last
# flush and close fail. stdout is a pipe, which the limit does not touch.
LIMIT_AT_LAST_EPOCH = textwrap.dedent(
    """
    import io, resource, sys
    last = sys.argv[1]
    class Trip(io.TextIOBase):
        def __init__(self, inner): self.inner = inner
        def write(self, s):
            if f"epoch {last}/{last}" in s:
                resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
            return self.inner.write(s)
        def flush(self): self.inner.flush()
        def isatty(self): return False
        def fileno(self): return self.inner.fileno()
    sys.stdout = Trip(sys.stdout)
    sys.argv = ["tuitrain", *sys.argv[2:]]
    from tuitrain.cli import main
    main()
    """
)


def test_a_run_whose_file_cannot_be_completed_is_not_completed(tmp_path: Path) -> None:
    out = tmp_path / "unfinished.h5"
    args = ["run", TOY, "--no-ui", "--epochs", "5", "--set", "train.checkpoint=false", "--out", str(out)]
    p = subprocess.run(
        [sys.executable, "-c", LIMIT_AT_LAST_EPOCH, "5", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**cli_env(), "OMP_NUM_THREADS": "1"},
        cwd=REPO,
    )
    said = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 1, said
    assert "epoch 5/5" in said and "run completed" not in said and "run failed" in said, said
    # Which write meets the limit first (a background flush after the last epoch, or the final one)
    # varies; either way the error names the run file, and the traceback is not the message.
    said_after = said.split("run failed", 1)[1]
    assert "error:" in said_after and str(out) in said_after and "Traceback" not in said, said


# ---- out of memory while building the model ---------------------------------------------------------


def _address_space(limit: int):
    def apply() -> None:  # whatever this machine could allocate, the model's 360 GB cannot be had
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))

    return apply


def test_out_of_memory_building_the_model_is_in_the_run_file(tmp_path: Path) -> None:
    out = tmp_path / "oom.h5"
    p = subprocess.run(
        [*tuitrain_cmd(), "run", "presets/vgg08.toml", "--no-ui", "--data", "synthetic"]
        + ["--set", "data.image_size=8", "--set", "data.train_size=200", "--set", "model.filters=100000"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**cli_env(), "OMP_NUM_THREADS": "1"},
        cwd=REPO,
        preexec_fn=_address_space(16 << 30),
    )
    said = p.stdout + p.stderr
    assert p.returncode == 1, said
    assert f"the error and traceback are in the run file {out}" in " ".join(said.split()), said
    from tuitrain.runfile.reader import open_run

    with open_run(out) as rf:
        s = rf.summary()
    assert s["status"] == "failed" and s["n_steps"] == 0
    assert "allocate" in s["error"] or "memory" in s["error"], s["error"]
    info = tt("info", str(out))
    assert info.returncode == 0 and "failed" in info.stdout, info.stdout + info.stderr


@needs_tmux
def test_bad_input_met_by_the_training_process_is_exit_2_from_watch(tmp_path: Path) -> None:
    """Bad input that only the training process can see (CIFAR absent, downloads off): the dashboard
    shows it, and after `q` watch exits 2 with the same one paragraph, as `run` does."""
    args = f"{TOY} --data cifar10 --data-dir {tmp_path} --set data.download=false --out {tmp_path / 'x.h5'}"
    t = ShellPane(args, tmp_path / "status")
    try:
        t.wait_for(lambda s: "FAILED" in s, 90, "the dashboard to show the failure")
        deadline = time.time() + 30
        while not t.status.exists() and time.time() < deadline:  # close the error screen, then quit
            t.keys("Escape")
            time.sleep(0.5)
            t.keys("q")
            time.sleep(1.0)
        assert t.exit_status() == 2
        said = t.text()
        assert "tuitrain: error: CIFAR-10 is not available" in said and "Traceback" not in said, said
    finally:
        t.kill()
