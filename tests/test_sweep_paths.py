"""`tuitrain replay DIR` / `tuitrain report DIR` on a sweep folder: real `tuitrain run` processes write
the variants' files into it, next to a manifest saved here (as the runner or --print-commands does)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import REPO, cli_env, tuitrain_cmd
from tuitrain.runfile import open_run
from tuitrain.sweep import manifest as M

FAST = ("--epochs", "1", "--set", "data.train_size=500")


def save_sweep(directory: Path, lrs: tuple[str, ...]) -> None:
    variants = [
        M.Variant(
            name=f"lr={lr}",
            preset="toy2d_mlp",
            sets=[f"optim.lr={lr}"],
            file=f"lr={lr}.h5",
            command=["tuitrain", "run", "toy2d_mlp", "--no-ui", "--set", f"optim.lr={lr}"],
        )
        for lr in lrs
    ]
    M.save(M.Manifest(name=directory.name, created=time.time(), parallel=2, variants=variants), directory)


def start_run(directory: Path, lr: str, *extra: str) -> subprocess.Popen[str]:
    out = directory / f"lr={lr}.h5"
    cmd = [
        *tuitrain_cmd(),
        "run",
        "toy2d_mlp",
        "--no-ui",
        "--set",
        f"optim.lr={lr}",
        *extra,
        "--out",
        str(out),
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep of three variants: 1e-1 and 1e-2 written by two real runs side by side, 1e-3 still queued."""
    d = tmp_path_factory.mktemp("sweep") / "sweep-toy2d_mlp-test"
    save_sweep(d, ("1e-1", "1e-2", "1e-3"))
    procs = [start_run(d, lr, *FAST) for lr in ("1e-2", "1e-1")]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    return d


def test_replay_a_sweep_folder_shows_its_files_in_variant_order(sweep: Path) -> None:
    p = tt("replay", "--print", str(sweep))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Final metrics of 2 runs" in p.stdout
    assert p.stdout.index("lr=1e-1") < p.stdout.index("lr=1e-2")
    assert "not yet written: lr=1e-3 (queued)" in p.stderr
    assert "Traceback" not in p.stderr


def test_report_a_sweep_folder(sweep: Path, tmp_path: Path) -> None:
    p = tt("report", str(sweep), "--out", str(tmp_path / "rep"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "not yet written: lr=1e-3 (queued)" in p.stderr
    readme = (tmp_path / "rep" / "README.md").read_text()
    assert "lr=1e-1" in readme and "lr=1e-2" in readme


def test_a_sweep_folder_and_a_run_file_together(sweep: Path) -> None:
    p = tt("replay", "--print", str(sweep), str(sweep / "lr=1e-2.h5"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Final metrics of 3 runs" in p.stdout


def test_bad_folders_are_one_clear_error(tmp_path: Path) -> None:
    assert_clean_error(tt("replay", "--print", str(tmp_path)), "not a sweep folder (no sweep.json)")
    save_sweep(tmp_path / "empty", ("1e-1", "1e-2"))
    p = tt("report", str(tmp_path / "empty"), "--out", str(tmp_path / "rep"))
    assert_clean_error(p, "no variant has written its run file yet", "lr=1e-1 (queued)", "--follow")
    assert not (tmp_path / "rep").exists()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "sweep.json").write_text('{"format": "tuitrain-sweep", "version": 7}')
    assert_clean_error(
        tt("replay", "--print", str(tmp_path / "broken")), "not a valid sweep manifest", "version 7"
    )


def test_follow_waits_for_the_first_file_and_then_follows_it(tmp_path: Path) -> None:
    """As on a SLURM login node: the watcher starts before any variant; it waits, then follows the run to
    its end and prints the table."""
    d = tmp_path / "sw"
    save_sweep(d, ("1e-2", "1e-3"))
    watch = subprocess.Popen(
        [*tuitrain_cmd(), "replay", "--follow", "--print", str(d)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=REPO,
    )
    time.sleep(2.0)
    assert watch.poll() is None  # still waiting: nothing written yet
    run = start_run(d, "1e-2", "--epochs", "3", "--set", "data.train_size=3000")
    try:
        out, err = watch.communicate(timeout=120)
    finally:
        run.wait(timeout=120)
    assert watch.returncode == 0, out + err
    assert "waiting for the first one" in err
    assert "not yet written: lr=1e-3 (queued)" in err
    assert "Final metrics" in out and "toy2d_mlp" in out  # one run: named by its run name
    with open_run(d / "lr=1e-2.h5") as rf:
        assert rf.status == "completed"


def test_info_of_a_sweep_folder_lists_each_variant_with_its_file_status(sweep: Path) -> None:
    p = tt("info", str(sweep))
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {
        line.split()[0]: line.split()[1:3] for line in p.stdout.splitlines() if line.strip().startswith("lr=")
    }
    assert rows == {
        "lr=1e-1": ["completed", "lr=1e-1.h5"],
        "lr=1e-2": ["completed", "lr=1e-2.h5"],
        "lr=1e-3": ["queued", "(not"],
    }
    p = tt("info", str(sweep), "--json")
    data = json.loads(p.stdout)
    assert [(v["name"], v["status"], v["exists"]) for v in data["variants"]] == [
        ("lr=1e-1", "completed", True), ("lr=1e-2", "completed", True), ("lr=1e-3", "queued", False)
    ]  # fmt: skip
    assert_clean_error(tt("info", str(sweep.parent)), "not a sweep folder")
