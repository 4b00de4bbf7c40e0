"""The real CLI in subprocesses: fast help, bad input (exit 2, no traceback), a real headless run, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import REPO, cli_env, tuitrain_cmd


def test_help_is_fast_and_does_not_import_torch() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import tuitrain.cli; "
        "print(time.perf_counter() - t); print('torch' in sys.modules, 'textual' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1:] == ["False", "False"]
    for cmd in ([], ["run"], ["info"], ["presets"]):
        p = tt(*cmd, "--help")
        assert p.returncode == 0 and "Usage" in p.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["run", "presets/nope.toml", "--no-ui"], ["nope.toml", "no such preset"]),
        (
            ["run", "presets/vgg38.toml", "--no-ui", "--set", "optim.lrr=1"],
            ["optim.lrr", "Did you mean `optim.lr`"],
        ),
        (["run", "presets/vgg38.toml", "--no-ui", "--set", "optim.lr=-3"], ["optim.lr", "out of range"]),
        (["run", "presets/vgg38.toml", "--no-ui", "--data", "imagenet"], ["data.name", "synthetic"]),
        (["run", "presets/vgg38.toml", "--no-ui", "--set", "train.epochs=many"], ["train.epochs", "integer"]),
        (["run", "presets/vgg38.toml", "--no-ui", "--set", "nokey"], ["KEY=VALUE"]),
        (["info", "runs/does-not-exist.h5"], ["does-not-exist.h5"]),
    ],
)
def test_bad_input_is_one_clear_message(args: list[str], needles: list[str]) -> None:
    assert_clean_error(tt(*args), *needles)


def test_toml_syntax_error_in_preset(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = 2\nbatch_size = = 3\n")
    assert_clean_error(tt("run", str(bad), "--no-ui"), "bad.toml", "line 3")


def test_info_on_a_file_that_is_not_a_run(tmp_path: Path) -> None:
    txt = tmp_path / "notes.h5"
    txt.write_text("hello")
    assert_clean_error(tt("info", str(txt)), "notes.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = [1, 2, 3]
    assert_clean_error(tt("info", str(other)), "other.h5")


def test_cifar_offline_suggests_synthetic(tmp_path: Path) -> None:
    p = tt(
        "run",
        "presets/vgg08.toml",
        "--no-ui",
        "--data-dir",
        str(tmp_path / "empty"),
        "--set",
        "data.download=false",
        "--out",
        str(tmp_path / "r.h5"),
        timeout=180,
    )
    assert_clean_error(p, "--data synthetic")
    assert (p.stdout + p.stderr).count("is not available") == 1, p.stdout + p.stderr  # one paragraph
    assert not (tmp_path / "r.h5").exists()


def test_presets_table_lists_param_counts() -> None:
    p = tt("presets", timeout=180)
    assert p.returncode == 0, p.stderr
    for name, params in (
        ("vgg08", "59,460"),
        ("vgg38", "335,940"),
        ("vgg38_bn", "338,308"),
        ("mlp_cifar10", "3,709,194"),
        ("resnet18_cifar10", "11,173,962"),
        ("mlp_mixer_cifar10", "2,188,298"),
    ):
        line = next(ln for ln in p.stdout.splitlines() if f" {name} " in ln)
        assert params in line, line


def test_headless_run_writes_a_complete_run_file(tmp_path: Path) -> None:
    out = tmp_path / "toy.h5"
    p = tt("run", "presets/toy2d_mlp.toml", "--no-ui", "--epochs", "2", "--out", str(out), timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Train Loss" in p.stdout and "Test Acc" in p.stdout and str(out) in p.stdout
    assert "epoch 2/2" in p.stdout
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "completed"
        n = f["steps/step"].shape[0]
        assert n == f.attrs["steps_per_epoch"] * 2
        assert f["probes/grad/grad_norm"].shape == (n, f["layers/name"].shape[0])
        assert f["epochs/val_acc"].shape == (2,)
    assert out.with_suffix(".pt").exists()
    info = tt("info", str(out), "--json")
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    assert summary["status"] == "completed" and summary["final"]["test_acc"] > 0.34  # 3 classes
    human = tt("info", str(out))
    assert human.returncode == 0 and "Test Acc" in human.stdout and "[model]" in human.stdout


def test_ctrl_c_stops_cleanly_with_130(tmp_path: Path) -> None:
    out = tmp_path / "stopped.h5"
    proc = subprocess.Popen(
        [*tuitrain_cmd(), "run", "presets/toy2d_mlp.toml", "--no-ui", "--epochs", "1000", "--out", str(out)],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until training really runs: rows in the file
        time.sleep(0.5)
        if out.exists():
            try:
                with h5py.File(out, "r", swmr=True) as f:
                    if f["steps/step"].shape[0] > 20:
                        break
            except OSError:
                pass
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "stopped"
        assert f["steps/step"].shape[0] > 20
