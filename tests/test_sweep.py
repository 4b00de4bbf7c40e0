"""``tuitrain sweep``: real ``tuitrain`` processes running real toy2d variants into real run files: a 2 x 2
grid to completion, a failing variant beside completed ones, Ctrl-C stopping all, ``--print-commands``
run by bash giving the same files, bad input refused before anything exists, and the variants' names."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import REPO, cli_env, tuitrain_cmd
from tests.sweeps import reap
from tuitrain.config import ConfigError, from_toml
from tuitrain.runfile.reader import open_run
from tuitrain.sweep.variants import expand, parse_grid, safe_name, variant_names

TINY = ["--epochs", "1", "--set", "data.train_size=500"]
GRID = ["--grid", "optim.lr=0.01,0.001", "--grid", "train.batch_size=32,64"]
NAMES = ["lr=0.01,batch_size=32", "lr=0.01,batch_size=64", "lr=0.001,batch_size=32", "lr=0.001,batch_size=64"]


def manifest(d: Path) -> dict:
    return json.loads((d / "sweep.json").read_text())


def config_without_out(path: Path) -> str:
    with open_run(path) as rf:
        cfg = from_toml(rf.config_toml)
    cfg.out = ""
    from tuitrain.config import to_toml

    return to_toml(cfg)


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    d = tmp_path_factory.mktemp("sweep") / "grid"
    p = tt("sweep", "toy2d_mlp", *GRID, *TINY, "--no-ui", "--out", str(d), timeout=180)
    return p, d


def test_grid_runs_to_completion(grid_sweep: tuple[subprocess.CompletedProcess, Path]) -> None:
    p, d = grid_sweep
    assert p.returncode == 0, p.stdout + p.stderr
    m = manifest(d)
    assert m["format"] == "tuitrain-sweep" and m["version"] == 1
    assert [v["name"] for v in m["variants"]] == NAMES
    for v, name in zip(m["variants"], NAMES, strict=True):
        assert v["status"] == "completed" and v["exit_code"] == 0 and v["file"] == f"{name}.h5"
        assert v["command"][v["command"].index("--out") + 1] == str(d / f"{name}.h5")
        with open_run(d / v["file"]) as rf:
            assert rf.status == "completed"
            assert rf.run_name == name
            cfg = from_toml(rf.config_toml)
        lr, bs = name.split(",")
        assert cfg.optim.lr == float(lr.split("=")[1]) and cfg.train.batch_size == int(bs.split("=")[1])
        assert cfg.train.epochs == 1 and cfg.data.train_size == 500
    table = p.stdout[p.stdout.index("Final metrics") :]
    rows = [ln for ln in table.splitlines() if ln.startswith("■")]
    assert [r.split()[1] for r in rows] == NAMES
    header = next(ln for ln in table.splitlines() if ln.strip().startswith("Run"))
    assert "optim.lr" in header and "train.batch_size" in header


def test_a_failing_variant_leaves_the_others_completed(tmp_path: Path) -> None:
    d = tmp_path / "fail"
    p = tt(
        "sweep", "toy2d_mlp", "--grid", "optim.lr=0.01,1e6", "--set", "optim.name=sgd",
        "--set", "monitor.on_nan=stop", *TINY, "--no-ui", "--out", str(d), timeout=180,
    )  # fmt: skip
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "Traceback" not in out
    good, bad = manifest(d)["variants"]
    assert (good["name"], good["status"]) == ("lr=0.01", "completed")
    assert (bad["name"], bad["status"], bad["exit_code"]) == ("lr=1e6", "failed", 1)
    assert "NaN" in bad["error"]
    with open_run(d / "lr=1e6.h5") as rf:
        assert rf.status == "failed"
    with open_run(d / "lr=0.01.h5") as rf:
        assert rf.status == "completed"
    assert "failed: diverged: loss is NaN" in p.stdout  # its row says why


def _running(path: Path) -> bool:
    try:
        with open_run(path) as rf:
            return rf.status == "running" and rf.n_steps > 0
    except Exception:
        return False


def test_ctrl_c_stops_every_variant(tmp_path: Path) -> None:
    d = tmp_path / "stop"
    cmd = [
        *tuitrain_cmd(), "sweep", "toy2d_mlp", "--grid", "optim.lr=0.01,0.001,0.0001", "--epochs", "500",
        "--parallel", "2", "--no-ui", "--out", str(d),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO
    )
    try:
        files = [d / "lr=0.01.h5", d / "lr=0.001.h5"]
        end = time.monotonic() + 90
        while not all(_running(f) for f in files):
            assert proc.poll() is None and time.monotonic() < end, proc.communicate()
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        reap(d)  # the children run in sessions of their own
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err
    variants = manifest(d)["variants"]
    assert [v["status"] for v in variants] == ["stopped"] * 3
    for f in files:
        with open_run(f) as rf:
            assert rf.status == "stopped"
    assert not (d / "lr=0.0001.h5").exists() and variants[2]["started"] is None


def test_print_commands_run_by_bash_make_the_sweeps_files(
    grid_sweep: tuple[subprocess.CompletedProcess, Path], tmp_path: Path
) -> None:
    _, swept = grid_sweep
    d = tmp_path / "printed"
    p = tt("sweep", "toy2d_mlp", *GRID, *TINY, "--print-commands", "--out", str(d))
    assert p.returncode == 0, p.stdout + p.stderr
    assert not list(d.glob("*.h5"))  # it starts nothing
    m = manifest(d)
    assert [v["status"] for v in m["variants"]] == ["queued"] * 4
    assert [v["name"] for v in m["variants"]] == NAMES
    script = tmp_path / "sweep.sh"
    script.write_text(p.stdout)
    env = cli_env()
    env["OMP_NUM_THREADS"] = "1"
    b = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert b.returncode == 0, b.stdout + b.stderr
    for name in NAMES:
        with open_run(d / f"{name}.h5") as rf:
            assert rf.status == "completed"
        assert config_without_out(d / f"{name}.h5") == config_without_out(swept / f"{name}.h5")
    assert manifest(d) == m  # the runs do not touch it: the runner is its only writer

    slurm = tt(
        "sweep",
        "toy2d_mlp",
        *GRID,
        *TINY,
        "--print-commands",
        "--format",
        "slurm",
        "--out",
        str(tmp_path / "s"),
    )
    assert slurm.returncode == 0, slurm.stderr
    assert "#SBATCH --array=0-3" in slurm.stdout and "SLURM_ARRAY_TASK_ID" in slurm.stdout
    (tmp_path / "slurm.sh").write_text(slurm.stdout)
    assert subprocess.run(["bash", "-n", str(tmp_path / "slurm.sh")]).returncode == 0


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--grid", "optim.lrr=0.1,0.2"], ["lrr=0.1", "optim.lrr"]),
        (["--grid", "optim.lr"], ["--grid 'optim.lr'", "KEY=V1,V2"]),
        (["--grid", "optim.lr=0.1,,0.2"], ["empty value"]),
        (["--grid", "optim.lr="], ["empty value"]),
        (["--grid", "model.hidden=[16],[16,16]"], ["TOML array"]),
        (["--grid", "optim.lr=0.01,1e-2"], ["lr=0.01", "lr=1e-2", "same config"]),
        (["--parallel", "0"], ["--parallel"]),
        (["--format", "slurm"], ["--print-commands"]),
    ],
)
def test_bad_input_is_refused_before_anything_exists(
    tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    d = tmp_path / "never"
    p = tt("sweep", "toy2d_mlp", *args, "--out", str(d))
    assert_clean_error(p, *needles)
    assert p.stderr.count("tuitrain: error:") == 1 and "\n\n" not in p.stderr.strip()
    assert not d.exists()


def test_unknown_preset_and_taken_folder(tmp_path: Path) -> None:
    d = tmp_path / "never"
    p = tt("sweep", "toy2d_mlp", "nosuchpreset", "--out", str(d))
    assert_clean_error(p, "nosuchpreset", "variant")
    assert not d.exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "sweep.json").write_text("{}")
    assert_clean_error(
        tt("sweep", "toy2d_mlp", "--print-commands", "--out", str(taken)), "holds a sweep", "--overwrite"
    )
    assert (taken / "sweep.json").read_text() == "{}"


def test_names_say_what_differs() -> None:
    lr = expand(["toy2d_mlp"], ["optim.lr=1e-3,1e-2"], [], {})
    assert [v.name for v in lr] == ["lr=1e-3", "lr=1e-2"]
    assert [v.cfg.optim.lr for v in lr] == [1e-3, 1e-2]
    hidden = expand(["toy2d_mlp"], ["model.hidden=[[16], [16, 16]]"], [], {})
    assert [v.name for v in hidden] == ["hidden=[16]", "hidden=[16,16]"]
    assert [v.sets for v in hidden] == [["model.hidden=[16]"], ["model.hidden=[16, 16]"]]
    assert [v.cfg.model.hidden for v in hidden] == [[16], [16, 16]]
    presets = expand(["vgg08", "vgg38", "vgg38_bn_rc"], [], [], {"data": "synthetic"})
    assert [v.name for v in presets] == ["vgg08", "vgg38", "vgg38_bn_rc"]
    both = expand(["vgg08", "vgg38"], ["optim.lr=0.1,0.01"], [], {"epochs": 2})
    assert [v.name for v in both] == ["vgg08,lr=0.1", "vgg08,lr=0.01", "vgg38,lr=0.1", "vgg38,lr=0.01"]
    assert both[0].args == ["--epochs", "2"]
    words = expand(["toy2d_mlp"], ["model.activation=relu,tanh", "model.batch_norm=true,false"], [], {})
    assert words[1].name == "activation=relu,batch_norm=false"
    assert expand(["toy2d_mlp"], [], [], {})[0].name == "toy2d_mlp"  # one variant: its preset


def test_name_rules() -> None:
    assert (
        safe_name("a/b c") == "a_b_c" and safe_name("-x") == "_x" and len(safe_name("k=" + "9" * 200)) == 80
    )
    assert variant_names([{"k": "a/b"}, {"k": "a b"}, {"k": "a_b"}]) == ["k=a_b", "k=a_b-2", "k=a_b-3"]
    assert variant_names([{"model.lr": "1", "optim.lr": "2"}, {"model.lr": "3", "optim.lr": "4"}]) == [
        "model.lr=1,optim.lr=2",
        "model.lr=3,optim.lr=4",
    ]
    assert parse_grid("data.shape=['spirals', 'moons']").texts == ('"spirals"', '"moons"')
    with pytest.raises(ConfigError, match="given twice"):
        expand(["toy2d_mlp"], ["optim.lr=1,2", "optim.lr=3"], [], {})


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_shell_script_quotes_awkward_values(tmp_path: Path) -> None:
    from tuitrain.commands.sweep import script

    cmds = [["echo", "it's", "a b", "$HOME"], ["echo", '"q"']]
    text = script(cmds, "x", "shell")
    path = tmp_path / "s.sh"
    path.write_text(text)
    r = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=dict(os.environ, HOME="/h"))
    assert r.stdout == 'it\'s a b $HOME\n"q"\n'
