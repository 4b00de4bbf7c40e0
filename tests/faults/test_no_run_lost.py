"""No run is ever lost or overwritten (issue 9, section 3, and the checkpoint item of section 2).

Each test injects the real fault into the real CLI: an existing ``--out``, two runs on one ``--out`` at
once, symbolic links planted beside the run, a hostile preset name, a full disk (a real 2 MB tmpfs;
skipped, saying why, where it cannot be mounted), a SIGKILL in mid-training and a directory where the
checkpoint goes.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import PRESETS, REPO, cli_env, tuitrain_cmd
from tests.e2e.tmux import descendants, needs_tmux, watch_in_tmux
from tuitrain.runfile import open_run

TOY = str(PRESETS / "toy2d_mlp.toml")
LONG = ("--epochs", "1000", "--max-steps", "100000")  # runs until stopped (about 230 steps/s here)


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def start_long_run(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*tuitrain_cmd(), "run", TOY, "--no-ui", *LONG, "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
        cwd=REPO,
    )


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status_and_steps(path: Path) -> tuple[str, int]:
    with open_run(path) as rf:
        return rf.status, rf.n_steps


# -- an existing --out ---------------------------------------------------------------------------


def test_existing_run_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "a.h5"
    first = tt("run", TOY, "--no-ui", "--max-steps", "24", "--out", str(out))
    assert first.returncode == 0, first.stdout + first.stderr
    pt = out.with_suffix(".pt")
    before = digest(out), digest(pt)

    for cmd in ("run", "watch"):  # refused before anything starts: no terminal needed for watch
        p = tt(cmd, TOY, "--max-steps", "8", "--out", str(out))
        assert_clean_error(p, str(out), str(pt), "--overwrite")
    assert (digest(out), digest(pt)) == before
    assert status_and_steps(out) == ("completed", 24)

    # the checkpoint or log alone is a run too: the same rule
    lone = tmp_path / "b.h5"
    lone.with_suffix(".log").write_text("a log someone wants to keep\n")
    assert_clean_error(tt("run", TOY, "--no-ui", "--out", str(lone)), "b.log", "--overwrite")

    # --out naming a companion suffix would make the run file its own checkpoint
    assert_clean_error(tt("run", TOY, "--no-ui", "--out", str(tmp_path / "c.pt")), ".pt", "c.h5")

    again = tt("run", TOY, "--no-ui", "--max-steps", "8", "--out", str(out), "--overwrite")
    assert again.returncode == 0, again.stdout + again.stderr
    assert status_and_steps(out) == ("completed", 8)
    assert digest(pt) != before[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "a.pt", "b.log"]  # no .lock, no temp

    # a replaced run's checkpoint goes with it: a .pt beside a run file is always that run's
    bare = tt("run", TOY, "--no-ui", "--max-steps", "8", "--out", str(out), "--overwrite", "--set",
              "train.checkpoint=false")  # fmt: skip
    assert bare.returncode == 0, bare.stdout + bare.stderr
    assert not pt.exists() and status_and_steps(out) == ("completed", 8)


def test_an_overwrite_variable_in_the_users_shell_overwrites_nothing(tmp_path: Path) -> None:
    """--overwrite travels to the training processes in $TUITRAIN_OVERWRITE; one left in the user's
    shell must not stand in for the option."""
    out = tmp_path / "a.h5"
    assert tt("run", TOY, "--no-ui", "--max-steps", "8", "--out", str(out)).returncode == 0
    before = digest(out)
    env = {**cli_env(), "TUITRAIN_OVERWRITE": "1"}
    assert_clean_error(
        tt("run", TOY, "--no-ui", "--max-steps", "4", "--out", str(out), env=env), "--overwrite"
    )
    assert digest(out) == before


def test_default_run_names_never_collide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tuitrain.commands.resolve import build_config, default_out

    monkeypatch.chdir(tmp_path)
    cfg = build_config(TOY, None)
    names = {default_out(cfg) for _ in range(3)}  # same name, same second: each reserves its own
    assert len(names) == 3, names
    assert all(p.parent == Path("runs") and not p.exists() and p.with_suffix(".lock").exists() for p in names)


def test_preset_name_cannot_place_the_run_outside_runs(tmp_path: Path) -> None:
    here = tmp_path / "a" / "b"
    here.mkdir(parents=True)
    preset = here / "evil.toml"
    preset.write_text('name = "../../x"\n' + Path(TOY).read_text())
    p = tt("run", str(preset), "--no-ui", "--max-steps", "4", cwd=here)
    assert p.returncode == 0, p.stdout + p.stderr
    made = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if f.is_file())
    assert [m for m in made if m.endswith(".h5")] == [
        m for m in made if re.fullmatch(r"a/b/runs/x-[\d-]+\.h5", m)
    ]
    assert len([m for m in made if m.endswith(".h5")]) == 1, made
    assert not any(f.parent in (tmp_path, tmp_path / "a") for f in tmp_path.rglob("*") if f.is_file())


# -- two runs on one --out -----------------------------------------------------------------------


def test_second_run_on_the_same_out_is_refused_and_readers_still_read(tmp_path: Path) -> None:
    out = tmp_path / "c.h5"
    first = start_long_run(out)
    try:
        lock = out.with_suffix(".lock")
        wait_until(lambda: out.exists() and lock.exists() and lock.read_text().strip(), 60, "the first run")
        assert f"pid {first.pid}" in lock.read_text()
        for extra in ((), ("--overwrite",)):  # --overwrite replaces a finished run, never a live one
            p = tt("run", TOY, "--no-ui", "--max-steps", "8", "--out", str(out), *extra)
            assert_clean_error(p, str(out), f"pid {first.pid}", "is writing it now")
        # the run's lock is not HDF5's: info and replay read the file being written, as before
        for env_value in (None, "FALSE"):
            env = cli_env()
            if env_value:
                env["HDF5_USE_FILE_LOCKING"] = env_value
            info = tt("info", str(out), env=env)
            assert info.returncode == 0 and "running" in info.stdout, info.stdout + info.stderr
        shown = tt("replay", "--print", str(out))
        assert shown.returncode == 0 and "Traceback" not in shown.stdout + shown.stderr, shown.stderr
        first.send_signal(signal.SIGINT)
        out_text, _ = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 130, out_text
    assert status_and_steps(out)[0] == "stopped"
    assert not out.with_suffix(".lock").exists()


def test_writer_lock_is_held_for_the_life_of_the_writer(tmp_path: Path) -> None:
    """The race behind the CLI's check: two writers in the same moment, one file. The second is refused
    (bad input) when it would create the file, and the first one's run is intact."""
    from tests.test_runfile import make_batch, make_started
    from tuitrain.events import RunFinished
    from tuitrain.runfile import RunFileWriter
    from tuitrain.runfile.claim import OutTaken

    path = tmp_path / "race.h5"
    a, b = RunFileWriter(path, flush_seconds=0.0), RunFileWriter(path, flush_seconds=0.0)
    a.emit(make_started())
    a.emit(make_batch(0, 10))
    with pytest.raises(OutTaken, match="is writing it now"):
        b.emit(make_started())
    b.close()
    a.emit(RunFinished("completed", 10))
    a.close()
    assert status_and_steps(path) == ("completed", 10)
    c = RunFileWriter(path, flush_seconds=0.0, overwrite=False)  # finished, but still a run: not replaced
    with pytest.raises(OutTaken, match="--overwrite"):
        c.emit(make_started())
    c.close()
    assert status_and_steps(path) == ("completed", 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.h5"]


# -- links planted beside the run ----------------------------------------------------------------


def test_planted_links_are_never_written_through(tmp_path: Path) -> None:
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    runs.mkdir()
    outside.mkdir()
    out = runs / "r.h5"
    targets = {}
    for suffix in (".pt", ".h5.partial", ".log"):
        target = outside / f"target{suffix}"
        target.write_text(f"precious {suffix}\n")
        (runs / f"r{suffix}").symlink_to(target)
        targets[target] = target.read_text()

    p = tt("run", TOY, "--no-ui", "--max-steps", "8", "--out", str(out))
    assert_clean_error(p, "r.pt (a symbolic link)", "r.log (a symbolic link)", "--overwrite")

    p = tt("run", TOY, "--no-ui", "--max-steps", "8", "--out", str(out), "--overwrite")
    assert p.returncode == 0, p.stdout + p.stderr
    assert {t: t.read_text() for t in targets} == targets  # nothing outside the run was written
    assert sorted(f.name for f in outside.iterdir()) == sorted(t.name for t in targets)
    assert not out.is_symlink() and not out.with_suffix(".pt").is_symlink()
    assert (runs / "r.h5.partial").is_symlink()  # not tuitrain's name: left alone
    assert status_and_steps(out) == ("completed", 8)

    lock_link = runs / "l.lock"
    lock_link.symlink_to(outside / "target.lock")
    assert_clean_error(tt("run", TOY, "--no-ui", "--out", str(runs / "l.h5")), "l.lock", "symbolic link")
    assert not (outside / "target.lock").exists()


@needs_tmux
def test_watch_log_is_not_appended_through_a_planted_link(tmp_path: Path) -> None:
    out = tmp_path / "w.h5"
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious\n")
    log = out.with_suffix(".log")
    log.symlink_to(target)
    p = tt("watch", TOY, "--max-steps", "8", "--out", str(out))
    assert_clean_error(p, "w.log (a symbolic link)", "--overwrite")
    with watch_in_tmux(f"{TOY} --max-steps 40 --out {out} --overwrite") as (t, pane, workers):
        wait_until(lambda: bool(descendants(pane)), 30, "the training process")
        workers.extend(descendants(pane))
        wait_until(lambda: "run completed" in (log.read_text() if log.exists() else ""), 120, "the run's end")
        t.keys("q")
    assert not log.is_symlink() and status_and_steps(out) == ("completed", 40)
    assert target.read_text() == "precious\n"


# -- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB tmpfs, or a skip that says why there is none."""
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    disk.mkdir()
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True
        )
    except OSError as e:
        pytest.skip(f"cannot mount a small tmpfs to fill: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {r.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def assert_disk_full_report(p: subprocess.CompletedProcess, out: Path) -> None:
    text = p.stdout + p.stderr
    assert p.returncode == 1, text  # not 139 (SIGSEGV) nor 135 (SIGBUS)
    # a long path may be wrapped anywhere by the console: compare without whitespace
    assert "".join(f"no space left on device: {out}".split()) in "".join(text.split()), text
    for bad in ("Traceback", ".partial", "Segmentation", "HDF5-DIAG", "slist"):
        assert bad not in text, text


def test_disk_full_during_the_run(small_disk: Path) -> None:
    out = small_disk / "d.h5"
    p = tt("run", TOY, "--no-ui", *LONG, "--out", str(out), timeout=240)
    assert_disk_full_report(p, out)
    assert "says failed" in " ".join((p.stdout + p.stderr).split())
    with open_run(out) as rf:
        s = rf.summary()
        assert rf.status == "failed" and rf.n_steps > 500, s
        assert f"no space left on device: {out}" in s["error"]
        assert len(rf.scalar("loss")) == rf.n_steps
    assert sorted(f.name for f in small_disk.iterdir()) == ["d.h5"]  # no .partial, no .lock, no .pt
    assert tt("replay", "--print", str(out)).returncode == 0


def test_disk_full_at_start(small_disk: Path) -> None:
    subprocess.run(["dd", "if=/dev/zero", f"of={small_disk / 'fill'}", "bs=64k"], capture_output=True)
    out = small_disk / "e.h5"
    p = tt("run", TOY, "--no-ui", "--max-steps", "50", "--out", str(out))
    assert_disk_full_report(p, out)
    assert "could not be created" in " ".join((p.stdout + p.stderr).split())
    assert sorted(f.name for f in small_disk.iterdir()) == ["fill"]


def test_disk_full_in_the_background_flush(small_disk: Path) -> None:
    """The disk fills while the loop is busy elsewhere (validation): the writer's own thread meets
    the error. It must not print a thread traceback; the next emit reports it, and the process exits
    normally (it segfaulted at exit before)."""
    script = textwrap.dedent(
        f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from tests.test_runfile import make_batch, make_started
        from tuitrain.events import RunFinished
        from tuitrain.runfile import RunFileWriter
        from tuitrain.runfile.claim import RunFileWriteError
        w = RunFileWriter({str(small_disk / "f.h5")!r}, flush_seconds=0.5)
        w.emit(make_started())
        w.emit(make_batch(0, 100))
        w.flush()
        subprocess.run(["dd", "if=/dev/zero", "of={small_disk / "fill"}", "bs=4k"], capture_output=True)
        w.emit(make_batch(100, 400))  # buffered: the flush thread writes it, half a second later
        time.sleep(1.5)
        try:
            w.emit(make_batch(500, 10))
        except RunFileWriteError as e:
            print("raised:", e)
        w.emit(RunFinished("failed", 510))  # ignored: the writer already ended the file
        w.close()
        print("exiting")
        """
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    assert f"raised: no space left on device: {small_disk / 'f.h5'}" in text and "exiting" in text, text
    assert "Traceback" not in text and "Exception in thread" not in text, text
    with open_run(small_disk / "f.h5") as rf:
        assert rf.status == "failed" and rf.n_steps == 500  # the rows pending at the failure too


@needs_tmux
def test_disk_full_under_watch_the_dashboard_says_so(small_disk: Path) -> None:
    """The same full disk under the live dashboard: FAILED in the header and the error in words in the
    event log (not "the training process died"); the file keeps its steps and says failed."""
    out = small_disk / "w.h5"
    with watch_in_tmux(f"{TOY} {' '.join(LONG)} --out {out}") as (t, pane, workers):
        t.wait_for(lambda s: "RUNNING" in s, 150, "the run to start")
        workers.extend(descendants(pane))
        screen = t.wait_for(lambda s: "FAILED" in s, 240, "the full disk to end the run")
        t.wait_for(lambda s: "no space left on device" in " ".join(s.split()), 20, "the error in words")
        assert "died" not in screen, screen
    with open_run(out) as rf:
        assert rf.status == "failed" and rf.n_steps > 500
        assert f"no space left on device: {out}" in rf.summary()["error"]


# -- SIGKILL -------------------------------------------------------------------------------------


def sigkill_after(out: Path, epoch_lines: int, then: float, *extra: str) -> tuple[list[int], float]:
    """Start a long run, SIGKILL it ``then`` seconds after its ``epoch_lines``-th epoch line; return
    the epochs the console printed and the time of the kill."""
    proc = start_long_run(out, *extra)
    printed: list[int] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            m = re.match(r"\s*epoch (\d+)/1000\b", line)
            if m:
                printed.append(int(m.group(1)))
                if len(printed) == epoch_lines:
                    break
        time.sleep(then)
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    printed += [int(m) for m in re.findall(r"^\s*epoch (\d+)/1000\b", rest, re.M)]
    assert printed, "no epoch line before the kill"
    return printed, killed_at


def file_after_kill(out: Path) -> tuple[int, float]:
    """Epoch rows in a killed run's file, and when the monitor handed over its last step row."""
    with open_run(out) as rf:
        assert rf.status == "running" and rf.incomplete  # never closed: says so
        epochs, n = rf.n_epochs, rf.n_steps
    with h5py.File(out, "r", swmr=True, libver="latest") as f:
        return epochs, float(f["steps/time"][n - 1])


def test_sigkill_loses_no_epoch_the_console_printed(tmp_path: Path) -> None:
    """toy2d epochs last about 70 ms: the console was 2-13 epochs ahead of the file (each end of epoch
    waited for the next 1 s flush). Now each is flushed before the console prints it."""
    out = tmp_path / "k.h5"
    printed, _ = sigkill_after(out, 20, 0.7)
    epochs_in_file, _ = file_after_kill(out)
    assert max(printed) <= epochs_in_file, (printed[-5:], epochs_in_file)


def test_sigkill_loses_at_most_one_flush_period_of_steps(tmp_path: Path) -> None:
    """Killed 1.3 s into an epoch of about 2.5 s (50,000 samples) with ``monitor.flush_seconds`` 0.5:
    the file holds every step up to one flush period plus the monitor's 0.1 s batching before the kill
    (0.5 s of slack for a busy machine); a writer that flushed only at epoch ends would be 1.3 s behind."""
    out = tmp_path / "m.h5"
    flush = 0.5
    extra = ("--set", "data.train_size=50000", "--set", f"monitor.flush_seconds={flush}")
    printed, killed_at = sigkill_after(out, 1, 1.3, *extra)
    epochs_in_file, last_step_at = file_after_kill(out)
    assert max(printed) <= epochs_in_file
    behind = killed_at - last_step_at
    assert behind < flush + 0.1 + 0.5, f"the file was {behind:.2f} s behind the run when it was killed"


# -- the checkpoint ------------------------------------------------------------------------------


def checkpoint_warning(path: Path) -> str:
    with open_run(path) as rf:
        return next((e["message"] for e in rf.events() if e["kind"] == "checkpoint"), "")


def test_checkpoint_failure_is_a_warning_on_a_completed_run(tmp_path: Path) -> None:
    out = tmp_path / "k.h5"
    out.with_suffix(".pt").mkdir()  # torch.save raises RuntimeError here, not OSError
    p = tt("run", TOY, "--no-ui", "--max-steps", "16", "--out", str(out), "--overwrite")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "checkpoint not written" in p.stdout and "Traceback" not in p.stdout + p.stderr
    assert status_and_steps(out) == ("completed", 16)
    assert checkpoint_warning(out) == f"checkpoint not written: {out.with_suffix('.pt')}: Is a directory"
    assert out.with_suffix(".pt").is_dir() and not any(out.with_suffix(".pt").iterdir())
    assert sorted(f.name for f in tmp_path.iterdir()) == ["k.h5", "k.pt"]  # no temporary left


def test_checkpoint_failure_after_ctrl_c_leaves_the_run_stopped(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    out.with_suffix(".pt").mkdir()
    proc = start_long_run(out, "--overwrite")
    try:
        wait_until(lambda: out.exists() and status_and_steps(out)[1] > 50, 90, "training to start")
        proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, text
    assert status_and_steps(out)[0] == "stopped"
    assert "checkpoint not written" in checkpoint_warning(out)
