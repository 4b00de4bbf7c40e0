"""The README, as written: every command in its bash blocks runs here (or is listed with the reason it
cannot run on a CPU-only machine), and every claim it makes about what they print is checked from
their output and their run files.

The commands run in a fresh directory that holds only a ``presets`` link to the checkout's presets, as a
user's shell in the checkout would see them, so ``runs/...`` paths never collide with anything.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import REPO, cli_env
from tests.e2e.tmux import Tmux, descendants, kill_all, needs_tmux
from tuitrain.diagnosis import current
from tuitrain.runfile import open_run

README = (REPO / "README.md").read_text()
VENV_BIN = Path(sys.executable).parent

# The quick start's two set-up lines: .ci/run runs their install and test commands (checked below).
QUICK_WATCH = "tuitrain watch presets/vgg38.toml --data synthetic"
HEADLESS = "tuitrain run presets/vgg38.toml --no-ui --data synthetic --set data.image_size=16 --max-steps 60"
# Commands that need what this machine (and CI) does not have; each says why.
NOT_HERE = {
    "tuitrain run resnet18_cifar10 --no-ui --data cifar10 --nproc-per-node 4": "4 GPUs and CIFAR-10",
    "tuitrain watch resnet18_cifar10 --data cifar10 --nproc-per-node 4": "4 GPUs and CIFAR-10",
    "tuitrain run resnet18_cifar10 --no-ui --nproc-per-node 8 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1": (
        "two machines with 8 GPUs each"
    ),
    "tuitrain run resnet18_cifar10 --no-ui --nproc-per-node 8 --nnodes 2 --node-rank 1 --master-addr 10.0.0.1": (
        "two machines with 8 GPUs each"
    ),
}


OWN_LOOP = "tuitrain run examples/own_loop.py --no-ui"  # the block of "Your own training loop"
SWEEP = "--out runs/sweep-toy2d"  # the block of "Sweeps"


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def commands(block: str) -> list[str]:
    """The commands of a block as a person types them: prompts (``node0$``) and comments removed."""
    out = []
    for line in block.splitlines():
        line = re.sub(r"^\S+\$ ", "", line.strip())
        line = "" if line.startswith("#") else line.split("  #")[0].strip()
        if line:
            out.append(" ".join(line.split()))
    return out


def block_with(text: str) -> list[str]:
    (block,) = [b for b in bash_blocks() if text in b]
    return commands(block)


def sh(cmd: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = cli_env()
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    env["COLUMNS"] = "100"
    return subprocess.run(
        ["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def user_dir(tmp: Path) -> Path:
    (tmp / "presets").symlink_to(REPO / "presets")
    (tmp / "examples").symlink_to(REPO / "examples")
    return tmp


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """The story block, run as written, one command after the other."""
    cwd = user_dir(tmp_path_factory.mktemp("story"))
    results = {}
    for cmd in block_with("tuitrain info runs/vgg38.h5"):
        p = sh(cmd, cwd)
        assert p.returncode == 0, f"{cmd}\n{p.stdout}\n{p.stderr}"
        results[cmd] = p
    results["cwd"] = cwd  # type: ignore[assignment]
    return results


def test_every_readme_command_is_run_or_says_why_not() -> None:
    """A command added to the README must be added to a test here (or to NOT_HERE with a reason)."""
    covered = set(NOT_HERE)
    covered.update(block_with("tuitrain info runs/vgg38.h5"))
    covered.update(block_with("tuitrain replay runs/vgg38.h5 --print"))
    covered.update(c for c in block_with("--device cpu --nproc-per-node 2") if c not in NOT_HERE)
    covered.update(block_with(OWN_LOOP))
    covered.update(block_with("tuitrain export runs/vgg38.h5 --csv"))
    covered.update(block_with("tuitrain report runs/vgg08.h5"))
    covered.update(block_with(SWEEP))
    setup = [c for b in bash_blocks() for c in commands(b) if c.startswith("python3 -m venv")]
    assert len(setup) == 2
    found = {c for b in bash_blocks() for c in commands(b) if not c.startswith("python3 -m venv")}
    assert found == covered, (found - covered, covered - found)
    assert setup[0].endswith(f"&& {QUICK_WATCH}") and f"`{HEADLESS}`" in README


def test_ci_runs_the_readme_install_and_test_commands() -> None:
    setup = [c for b in bash_blocks() for c in commands(b) if c.startswith("python3 -m venv")]
    install_and_test = setup[1].split(" && ")
    assert install_and_test[0] == "python3 -m venv .venv" and install_and_test[1] == ". .venv/bin/activate"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert install_and_test[2] in ci and install_and_test[3] in ci
    assert "pip install -e ." in setup[0]


def test_story_vgg38_stays_at_chance_and_says_its_gradients_vanish(story: dict) -> None:
    out = {name: p.stdout + p.stderr for name, p in story.items() if name != "cwd"}
    (vgg38,) = [o for c, o in out.items() if "--out runs/vgg38.h5" in c]
    (vgg08,) = [o for c, o in out.items() if "--out runs/vgg08.h5" in c]
    assert (
        "warning: vanishing gradients: 38 of 38 weight layers have mean |grad| below 1e-08 for 50 steps"
        in vgg38
    ), vgg38
    assert "vanishing" not in vgg08
    cwd: Path = story["cwd"]
    acc, first = {}, {}
    for name in ("vgg08", "vgg38", "vgg38_bn_rc"):
        with h5py.File(cwd / "runs" / f"{name}.h5", "r", swmr=True) as f:
            assert f.attrs["status"] == "completed"
            acc[name] = float(f["epochs/val_acc"][-1])
            first[name] = float(np.median(f["probes/grad/grad_mean_abs"][:, 0]))
            loss = f["epochs/train_loss"][-1]
        if name == "vgg38":
            assert abs(loss - math.log(10)) < 0.01
    assert acc["vgg38"] == pytest.approx(0.10), acc
    assert acc["vgg08"] > 0.15 and acc["vgg38_bn_rc"] > 0.15, acc
    # "about 1e-18, some sixteen orders of magnitude below VGG08's (about 1e-2)"
    assert 1e-19 < first["vgg38"] < 1e-17 and 1e-3 < first["vgg08"] < 1e-1, first
    assert 15 <= math.log10(first["vgg08"] / first["vgg38"]) <= 17.5, first
    info = [o for c, o in out.items() if c.startswith("tuitrain info")][0]
    assert "completed" in info and "vgg38" in info


def test_story_diagnose_says_why(story: dict) -> None:
    """The story's diagnose line: two errors from step 0 for VGG38, stored in the file as found, none
    for VGG08 and VGG38+BN+RC."""
    cwd: Path = story["cwd"]
    p = sh("tuitrain diagnose runs/vgg08.h5 runs/vgg38.h5 runs/vgg38_bn_rc.h5 --json", cwd)
    assert p.returncode == 0, p.stderr
    found: dict[str, list[dict]] = {"vgg08": [], "vgg38": [], "vgg38_bn_rc": []}
    for f in json.loads(p.stdout):  # one dict per finding, with its run file
        found[Path(f["run_file"]).stem].append(f)
    assert found["vgg08"] == [] and found["vgg38_bn_rc"] == [], found
    kinds = {f["kind"]: f for f in found["vgg38"]}
    assert sorted(kinds) == ["signal_collapse", "vanishing_gradients"], found["vgg38"]
    collapse, vanish = kinds["signal_collapse"], kinds["vanishing_gradients"]
    assert all(f["severity"] == "error" and f["first_step"] == 0 for f in (collapse, vanish))
    assert collapse["layer"].startswith("stages.0.") and collapse["evidence"]["std_ratio"] < 1e-2
    assert 1e-17 < collapse["evidence"]["min_std_ratio"] < 1e-15
    assert vanish["evidence"]["vanishing_layers"] == vanish["evidence"]["weight_layers"] == 38
    for f in (collapse, vanish):
        assert all(w in f["suggestion"] for w in ("BatchNorm", "residual", "He/Kaiming")), f
    with open_run(cwd / "runs" / "vgg38.h5") as rf:  # the training process stored the same two
        stored = {(f.kind, f.layer) for f in current(rf.findings())}
    assert stored == {(f["kind"], f["layer"]) for f in found["vgg38"]}
    text = [o.stdout for c, o in story.items() if c.startswith("tuitrain diagnose")][0]
    assert "runs/vgg38.h5: 2 findings" in text and "runs/vgg08.h5: 0 findings" in text, text


def test_replay_commands_as_written(story: dict) -> None:
    cwd: Path = story["cwd"]
    live = sh(
        "tuitrain run presets/toy2d_mlp.toml --no-ui --epochs 3 --out runs/live.h5 > live.out 2>&1 &", cwd
    )
    assert live.returncode == 0
    deadline = time.time() + 120
    while not (cwd / "runs" / "live.h5").exists() and time.time() < deadline:
        time.sleep(0.2)
    for cmd in block_with("tuitrain replay runs/vgg38.h5 --print"):
        # stdout is a pipe here, so the TUI commands print instead, as the README says
        p = sh(cmd, cwd, timeout=300)
        assert p.returncode == 0, f"{cmd}\n{p.stdout}\n{p.stderr}"
        assert "Train Loss" in p.stdout, p.stdout
        if "--follow" in cmd:
            assert "toy2d_mlp" in p.stdout  # the run name, once it has finished
        else:
            assert "vgg38" in p.stdout


def python_blocks(text: str) -> list[str]:
    return [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if text in b]


def test_python_snippet_reads_a_run_file(story: dict) -> None:
    (snippet,) = python_blocks("h5py.File")
    p = subprocess.run(
        [sys.executable, "-c", snippet + "\nprint(grad.shape, len(names))"],
        cwd=story["cwd"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert "(80, 39) 39" in p.stdout, p.stdout


def test_load_and_export_as_written(story: dict) -> None:
    """The run-file section's tuitrain.load snippet and export block, on the story's VGG38 file."""
    cwd: Path = story["cwd"]
    (snippet,) = python_blocks("tuitrain.load(")
    check = "\nprint(len(run.steps), sorted(set(run.probes['grad'].quantity)), list(run.findings.kind))"
    p = subprocess.run(
        [sys.executable, "-c", snippet + check], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert "80 ['grad_mean_abs', 'grad_norm', 'update_ratio', 'weight_norm']" in p.stdout, p.stdout
    assert "signal_collapse" in p.stdout and "vanishing_gradients" in p.stdout, p.stdout
    for cmd in block_with("tuitrain export runs/vgg38.h5 --csv"):
        r = sh(cmd, cwd)
        assert r.returncode == 0, r.stdout + r.stderr
    with open(cwd / "export" / "vgg38" / "steps.csv") as f:
        assert len(f.read().splitlines()) == 81  # header + 80 steps
    assert list((cwd / "tb" / "vgg38").glob("events.out.tfevents.*"))


def test_report_as_written(story: dict) -> None:
    """The report block on the story's three files: the table's best marks and the figures the README
    names, among them the forward signal of plain VGG38 falling by sixteen orders of magnitude."""
    cwd: Path = story["cwd"]
    (cmd,) = block_with("tuitrain report runs/vgg08.h5")
    p = sh(cmd, cwd)
    assert p.returncode == 0, p.stdout + p.stderr
    out = cwd / "report"
    for name in ("README.md", "table.md", "table.csv", "table.tex", "curves.png"):
        assert (out / name).is_file(), name
    for fig in ("gradient_flow", "grad_bars", "updates", "forward_signal"):
        assert len(list(out.glob(f"{fig}-*.png"))) == 3, fig
    rows = {r.split("|")[1].strip(): r for r in (out / "table.md").read_text().splitlines()[2:]}
    assert "**" in rows["vgg38_bn_rc"] and "**" not in rows["vgg38"], rows  # best: BN+RC, never VGG38
    assert "model.batch_norm" in (out / "table.md").read_text()
    with open_run(cwd / "runs" / "vgg38.h5") as rf:  # "sixteen orders of magnitude" in the figure's data
        std = np.asarray(rf.probe("std", slice(0, 1), probe="act"))[0]
    assert 15.5 <= math.log10(std[0] / np.nanmin(std)) <= 17.5, std


def test_headless_main_job(tmp_path: Path) -> None:
    p = sh(HEADLESS, user_dir(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "vanishing gradients: 38 of 38 weight layers" in p.stdout + p.stderr
    (run,) = (tmp_path / "runs").glob("vgg38-*.h5")
    with h5py.File(run, "r") as f:
        assert f.attrs["status"] == "completed" and f["steps/step"].shape[0] == 60


def test_torchrun_on_a_laptop(tmp_path: Path) -> None:
    (cmd,) = [c for c in block_with("--device cpu --nproc-per-node 2") if c not in NOT_HERE]
    p = sh(cmd, user_dir(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = (tmp_path / "runs").glob("toy2d_mlp-*.h5")
    with h5py.File(run, "r") as f:
        assert f.attrs["status"] == "completed" and "2 x cpu" in f.attrs["device"]


@needs_tmux
def test_quick_start_watch_shows_the_pathology(tmp_path: Path) -> None:
    """The main job in a real terminal: flat loss at ln(100), vanishing bars and the event in words."""
    cwd = user_dir(tmp_path)
    t = Tmux(f"cd {shlex.quote(str(cwd))} && exec {VENV_BIN}/{QUICK_WATCH}", width=120, height=36)
    workers: list[int] = []
    try:
        t.wait_for(lambda s: "vgg38" in s, 60, "the dashboard")
        workers.extend(descendants(t.pane_pid()))
        screen = t.wait_for(
            lambda s: "vanishing gradients: 38 of 38" in s, 300, "the vanishing event of the main job"
        )
        assert "4.6" in screen  # the loss at ln(100)
        # the header names the errors found; the Diagnosis panel (shown from 36 rows) says where and why
        screen = t.wait_for(
            lambda s: "signal_collapse" in s.splitlines()[0] and "2 errors" in s.splitlines()[0],
            120,
            "the header's errors",
        )
        assert "Diagnosis" in screen and "stages.0." in screen and "BatchNorm" in screen, screen
        t.keys("v")
        t.wait_for(lambda s: "input_conv" in s and "Signal" in s, 30, "the Signal view")
        t.keys("v")
        bars = re.findall(r"(\d\.\de-(\d\d))[ ▂▄▆█▁▃▅▇]?││", screen)  # gradient bars: "about 1e-16"
        assert bars and all(15 <= int(e) <= 17 for _, e in bars), bars
        t.keys("q")
        t.wait_for(lambda s: "Stop training and quit" in s, 20, "the quit dialog")
        t.keys("s")
        t.wait_for(lambda s: "run stopped" in s or "stopped after" in s, 120, "the exit line")
    finally:
        t.kill()
        kill_all(workers)
    (run,) = (cwd / "runs").glob("vgg38-*.h5")
    with h5py.File(run, "r", swmr=True) as f:
        assert f.attrs["status"] == "stopped"


def code_lines(block: str) -> list[str]:
    return [
        ln.split("  #")[0].strip()
        for ln in block.splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]


def test_own_loop_snippets_are_the_examples_lines() -> None:
    """The README's snippets show what the examples really do: every tuitrain line of them is there."""
    (loop,) = python_blocks("tuitrain.init(")
    example = (REPO / "examples" / "own_loop.py").read_text()
    shown = [ln for ln in code_lines(loop) if "run." in ln and not ln.startswith("run = ")]
    assert len(shown) == 4 and all(ln in example for ln in shown), shown
    (lit,) = python_blocks("TuitrainCallback")
    assert "from tuitrain.lightning import TuitrainCallback" in code_lines(lit)
    assert (
        "from tuitrain.lightning import TuitrainCallback"
        in (REPO / "examples" / "lightning_loop.py").read_text()
    )


def test_own_loop_commands_as_written(tmp_path: Path) -> None:
    """The block of "Your own training loop", in order: headless, on its own, info, attach, watch (no
    terminal here, so it trains headless and says so), then the Lightning example the README links."""
    cwd = user_dir(tmp_path)
    out = {}
    for cmd in block_with(OWN_LOOP):
        p = sh(cmd, cwd, timeout=300)
        assert p.returncode == 0, f"{cmd}\n{p.stdout}\n{p.stderr}"
        out[cmd.split()[1] if cmd.startswith("tuitrain") else "python"] = p.stdout + p.stderr
    assert "run completed after 32 steps" in out["run"], out["run"]
    with h5py.File(cwd / "runs" / "mnist.h5", "r") as f:
        assert f.attrs["status"] == "completed" and f.attrs["source"] == "script"
        assert list(f["layers/name"].asstr()[:4]) == [
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "conv2.bias",
        ]
        assert f["probes/grad/grad_norm"].shape == (32, 8) and f["epochs/val_acc"].shape == (1,)
    assert "source your own loop" in out["info"] and "probe grad" in out["info"], out["info"]
    assert "Train Loss" in out["watch"] and "run completed after 96 steps" in out["watch"], out["watch"]
    p = sh(
        "tuitrain run examples/lightning_loop.py --no-ui -- --epochs 1 --out runs/lit.h5", cwd, timeout=300
    )
    assert p.returncode == 0, p.stdout + p.stderr
    with h5py.File(cwd / "runs" / "lit.h5", "r") as f:
        assert f.attrs["status"] == "completed" and f.attrs["source"] == "lightning"
        assert f["epochs/val_acc"].shape == (1,) and np.isfinite(f["test"].attrs["loss"])


def test_sweep_as_written(tmp_path: Path) -> None:
    """The Sweeps block: a 2 x 2 grid run headless, replayed and reported from its folder, and the
    SLURM script it prints, whose array task 1 run by bash writes that variant's file."""
    cwd = user_dir(tmp_path)
    out = {}
    for cmd in block_with(SWEEP):
        p = sh(cmd, cwd)
        assert p.returncode == 0, f"{cmd}\n{p.stdout}\n{p.stderr}"
        out[cmd.split()[1]] = out.get(cmd.split()[1], []) + [p]
    names = [f"lr={lr},batch_norm={bn}" for lr in ("1e-2", "1e-3") for bn in ("true", "false")]
    sweep = cwd / "runs" / "sweep-toy2d"
    assert json.loads((sweep / "sweep.json").read_text())["format"] == "tuitrain-sweep"
    for name in names:
        with open_run(sweep / f"{name}.h5") as rf:
            assert rf.status == "completed", name
    table = out["replay"][0].stdout
    assert [n for n in names if n in table] == names
    assert sorted(table.index(n) for n in names) == [table.index(n) for n in names]  # variant order
    assert all(n in (cwd / "report-sweep" / "README.md").read_text() for n in names)
    script = (cwd / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0-1" in script
    env = dict(cli_env(), SLURM_ARRAY_TASK_ID="1", PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    p = subprocess.run(
        ["bash", "sweep.sbatch"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stdout + p.stderr
    with open_run(cwd / "runs" / "sweep-slurm" / "lr=1e-3.h5") as rf:
        assert rf.status == "completed"
    assert not (cwd / "runs" / "sweep-slurm" / "lr=1e-2.h5").exists()
