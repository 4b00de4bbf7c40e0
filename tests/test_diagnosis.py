"""The findings engine (tuitrain.diagnosis) and ``tuitrain diagnose``: each rule on synthetic arrays (a
finding opens, and closes when the condition stops holding), and the stories of issue 11 on real run
files from real training runs (trained once for the module, tiny and short)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import REPO, cli_env
from tuitrain.diagnosis import (
    RULES,
    Activations,
    Finding,
    Grads,
    RunData,
    diagnose,
    episodes,
    from_runfile,
    gradients,
    loss,
    signal,
)
from tuitrain.runfile import open_run

# -- episodes -------------------------------------------------------------------------------------


def test_episodes_open_after_n_rows_and_close_after_n_failures() -> None:
    h = np.array([0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1], bool)
    assert episodes(h, 3, 3) == [(1, 5)]  # the last two rows are too few to open again
    assert episodes(h, 1, 1) == [(1, 3), (5, 5), (9, None)]
    assert episodes(np.zeros(5, bool), 1, 1) == []
    assert episodes(np.ones(4, bool), 2, 2) == [(0, None)]


# -- the rules on synthetic arrays ----------------------------------------------------------------


def grads_run(gma: np.ndarray, gn: np.ndarray | None = None, ur: np.ndarray | None = None) -> RunData:
    rows, n = gma.shape
    steps = np.arange(rows, dtype=np.int64)
    gn = np.ones_like(gma) if gn is None else gn
    ur = np.full_like(gma, 1e-3) if ur is None else ur
    return RunData(
        steps=steps,
        layer_names=[f"l{i}.weight" for i in range(n)],
        layer_kinds=["weight"] * n,
        grads=Grads(steps, gn, gma, np.ones_like(gma), ur),
        window=10,
    )


def test_vanishing_gradients_opens_names_its_depth_and_closes() -> None:
    gma = np.full((60, 5), 1e-3)
    gma[5:30, :3] = 1e-12  # the first three layers (input side) vanish from step 5 to 29
    (f,) = gradients.vanishing_gradients(grads_run(gma))
    assert (f.kind, f.severity, f.layer, f.first_step, f.last_step) == (
        "vanishing_gradients",
        "error",
        "l2.weight",
        5,
        29,
    )
    assert f.evidence["depth"] == 3 and f.evidence["first_last_ratio"] == pytest.approx(1e-9)
    assert "BatchNorm" in f.suggestion


def test_vanishing_gradients_needs_a_window() -> None:
    gma = np.full((60, 5), 1e-3)
    gma[5:12, :3] = 1e-12  # 7 rows < window 10
    assert gradients.vanishing_gradients(grads_run(gma)) == []


def test_exploding_gradients_names_the_first_layer() -> None:
    gma = np.full((40, 4), 1e-3)
    gn = np.ones((40, 4))
    gn[10:, 2:] = 1e4
    (f,) = gradients.exploding_gradients(grads_run(gma, gn))
    assert (f.layer, f.first_step, f.last_step, f.evidence["depth"]) == ("l2.weight", 10, None, 3)


@pytest.mark.parametrize(("value", "label"), [(1e-7, "too low"), (0.5, "too high")])
def test_update_ratio_low_and_high(value: float, label: str) -> None:
    ur = np.full((50, 4), 1e-3)
    ur[20:40] = value
    (f,) = gradients.update_ratio(grads_run(np.full((50, 4), 1e-3), ur=ur))
    assert (f.first_step, f.last_step) == (20, 39)
    assert label in f.message and label in f.suggestion
    assert gradients.update_ratio(grads_run(np.full((50, 4), 1e-3))) == []  # 1e-3: healthy


def test_update_ratio_leaves_vanishing_layers_to_vanishing_gradients() -> None:
    ur = np.zeros((50, 4))
    assert gradients.update_ratio(grads_run(np.full((50, 4), 1e-20), ur=ur)) == []


def loss_run(values: np.ndarray, acc: np.ndarray | None = None, classes: int = 10, **kw: object) -> RunData:
    return RunData(steps=np.arange(values.size), loss=values, acc=acc, num_classes=classes, window=20, **kw)


def test_loss_at_init() -> None:
    assert loss.loss_at_init(loss_run(np.full(5, math.log(10)))) == []
    (f,) = loss.loss_at_init(loss_run(np.array([9.0, 2.0])))
    assert f.first_step == 0 and f.evidence["ratio"] == pytest.approx(9 / math.log(10))
    with pytest.raises(Exception, match="number of classes"):
        loss.loss_at_init(loss_run(np.ones(3), classes=0))


def test_stuck_at_chance_opens_and_closes() -> None:
    v = np.full(300, math.log(10))
    v[200:] = 0.5  # learns at step 200 (the window: 4 x 20 steps)
    (f,) = loss.stuck_at_chance(loss_run(v, acc=np.full(300, 0.1)))
    assert f.first_step == 0 and 199 <= f.last_step < 240
    v[70:] = 0.5  # a run that starts at chance and leaves it within the window is not stuck
    assert loss.stuck_at_chance(loss_run(v, acc=np.full(300, 0.1))) == []


def test_diverging_nan_and_rising() -> None:
    v = np.linspace(2, 1, 100)
    v[60:] = np.nan
    kinds = [(f.severity, f.first_step, f.last_step) for f in loss.diverging(loss_run(v))]
    assert kinds == [("error", 60, None)]
    rising = np.concatenate([np.full(50, 1.0), np.linspace(1, 5, 50)])
    (f,) = loss.diverging(loss_run(rising))
    assert f.severity == "warning" and 50 < f.first_step < 100


def test_plateau_is_info() -> None:
    v = np.concatenate([np.linspace(2, 0.5, 100), np.full(100, 0.5)])
    (f,) = loss.plateau(loss_run(v))
    assert f.severity == "info" and f.first_step >= 100
    assert loss.plateau(loss_run(np.linspace(2, 0.1, 200))) == []


def test_overfitting_reads_7_points_as_mild() -> None:
    n = 8
    ep = {
        "epoch": np.arange(n),
        "step": np.arange(n) * 10,
        "train_acc": np.array([0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97]),
        "val_acc": np.array([0.5, 0.6, 0.68, 0.72, 0.76, 0.8, 0.8, 0.8]),
    }
    fs = loss.overfitting(RunData(steps=np.arange(80), epochs=ep))
    assert [(f.severity, f.first_step) for f in fs] == [("warning", 30)]  # 8 points at epoch 3, 17 at 7
    ep["train_acc"] = ep["val_acc"] + np.array([0, 0, 0.08, 0.08, 0.08, 0.08, 0.01, 0.01])
    (f,) = loss.overfitting(RunData(steps=np.arange(80), epochs=ep))  # closed after two epochs without
    assert (f.severity, f.first_step, f.last_step) == ("info", 20, 50)


def acts_run(std: np.ndarray, dead: np.ndarray | None = None, sat: np.ndarray | None = None) -> RunData:
    rows, m = std.shape
    steps = np.arange(rows, dtype=np.int64) * 10
    z = np.zeros_like(std)
    a = Activations(
        steps,
        [f"m{i}" for i in range(m)],
        z,
        std,
        z,
        np.full_like(std, np.nan) if sat is None else sat,
        z if dead is None else dead,
    )
    return RunData(steps=steps, activations=a, window=30)


def test_signal_collapse_names_the_first_module_below_a_hundredth() -> None:
    std = np.tile([1.0, 0.5, 1e-3, 1e-7], (10, 1))
    std[6:] = 1.0  # recovers at row 6 (step 60)
    (f,) = signal.signal_collapse(acts_run(std))
    assert (f.severity, f.layer, f.first_step, f.last_step) == ("error", "m2", 0, 50)
    assert f.evidence["min_std_ratio"] == pytest.approx(1e-7) and "at m3" in f.message
    assert "BatchNorm" in f.suggestion and "residual" in f.suggestion


def test_signal_collapse_needs_six_orders_of_magnitude() -> None:
    # VGG08 at default init: its std falls to ~1e-4 of the first module's and it trains anyway
    assert signal.signal_collapse(acts_run(np.tile([1.0, 0.1, 1e-2, 1e-4, 3e-5], (10, 1)))) == []
    (f,) = signal.signal_collapse(acts_run(np.tile([1.0, 0.1, 1e-2, 1e-4, 9e-7], (10, 1))))
    assert f.layer == "m3"  # the first below 1e-2; COLLAPSE_DEPTH = 1e-6 reached at m4


def test_dead_units_and_saturation_per_module() -> None:
    dead = np.zeros((10, 3))
    dead[2:, 1] = 0.95
    (f,) = signal.dead_units(acts_run(np.ones((10, 3)), dead=dead))
    assert (f.severity, f.layer, f.first_step, f.last_step) == ("error", "m1", 20, None)
    sat = np.full((10, 3), np.nan)
    sat[:, 2] = 0.1
    sat[:4, 2] = 0.8
    (f,) = signal.saturation(acts_run(np.ones((10, 3)), sat=sat))
    assert (f.layer, f.first_step, f.last_step) == ("m2", 0, 30)
    with pytest.raises(Exception, match="no sigmoid or tanh"):
        signal.saturation(acts_run(np.ones((10, 3))))


def test_dead_units_from_the_first_probed_step_are_info_and_units_that_died_are_not() -> None:
    dead = np.zeros((10, 3))
    dead[:, 0] = 0.55  # dead as at the first probed step (at init), a little noise: the init's doing
    dead[5:, 0] = 0.6
    dead[:, 1] = 0.45  # 45% at init, 65% from step 20: 20 points more, they died in training
    dead[2:, 1] = 0.65
    fs = {f.layer: f for f in signal.dead_units(acts_run(np.ones((10, 3)), dead=dead))}
    assert set(fs) == {"m0", "m1"}
    assert (fs["m0"].severity, fs["m0"].first_step) == ("info", 0) and "He/Kaiming" in fs["m0"].suggestion
    assert (fs["m1"].severity, fs["m1"].first_step) == ("warning", 20)
    assert fs["m1"].evidence["at_first_step"] == pytest.approx(0.45) and "died" in fs["m1"].message
    assert "learning rate" in fs["m1"].suggestion
    dead[:, 0] = 0.55
    dead[3:, 0] = 0.66  # 11 points over the first step's: died too (DEAD_GROWTH = 0.1)
    assert signal.dead_units(acts_run(np.ones((10, 3)), dead=dead))[0].severity == "warning"


def test_signal_collapse_leaves_a_dead_module_to_dead_units() -> None:
    std = np.tile([1.0, 0.5, 0.0, 0.5], (10, 1))  # module 2 outputs zeros only: its units are dead
    dead = np.zeros((10, 4))
    dead[:, 2] = 1.0
    assert signal.signal_collapse(acts_run(std, dead=dead)) == []
    dead[:, 2] = 0.8  # most but not nine tenths dead: its std is the signal's own
    (f,) = signal.signal_collapse(acts_run(std, dead=dead))
    assert f.layer == "m2"


def test_rules_needing_absent_data_skip_and_say_why() -> None:
    r = diagnose(RunData(steps=np.arange(3)))
    assert r.findings == []
    assert set(r.skipped) == set(RULES)
    assert "activation probe" in r.skipped["signal_collapse"]
    assert "gradient probe" in r.skipped["vanishing_gradients"]


def test_finding_refuses_an_unknown_severity() -> None:
    with pytest.raises(ValueError, match="severity"):
        Finding("x", "fatal", "", 0, None)


# -- real runs ------------------------------------------------------------------------------------

SMALL_IMAGES = ("--data", "synthetic", "--set", "data.image_size=8", "--set", "data.train_size=200")
SMALL_TOY = ("--set", "data.train_size=512", "--set", "data.val_size=128", "--set", "data.test_size=128")
RUNS: dict[str, tuple[str, ...]] = {
    "vgg38": ("vgg38", *SMALL_IMAGES, "--max-steps", "60"),
    "deep": ("deep_mlp", "--max-steps", "55"),  # 64 sigmoid layers: one window of 50 steps
    "vgg08": ("vgg08", *SMALL_IMAGES, "--max-steps", "60"),  # at chance for these 60 steps, and healthy
    "toy": ("toy2d_mlp",),  # the preset's defaults: 50 epochs, 800 steps
    # 002's ReLU MLP without BatchNorm at lr 1e-5 (SGD: Adam's normalised steps keep the ratio ~1e-4)
    "low_lr": ("mlp_toy2d_lr", "--set", "model.batch_norm=false", "--set", "optim.name=sgd")
    + ("--set", "optim.lr=1e-5", "--max-steps", "150"),
    "nan": ("toy2d_mlp", "--set", "model.batch_norm=false", "--set", "optim.lr=1e6", *SMALL_TOY)
    + ("--max-steps", "200"),
}

NO_PROBES = """
import math, sys
import tuitrain
run = tuitrain.init(name="plain", out=sys.argv[1])
for i in range(30):
    run.log({"loss": 2.0 / (1 + i)})
run.finish()
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("diagnosis")
    out = {}
    for name, args in RUNS.items():
        path = d / f"{name}.h5"
        p = tt("run", *args, "--no-ui", "--out", str(path))
        assert path.exists(), p.stdout + p.stderr
        out[name] = path
    script = d / "plain.py"
    script.write_text(NO_PROBES)
    path = d / "plain.h5"
    p = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, env=cli_env()
    )
    assert p.returncode == 0, p.stderr
    out["plain"] = path
    return out


def findings_of(path: Path) -> list[dict]:
    p = tt("diagnose", str(path), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)


def serious(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["severity"] in ("warning", "error")]


def test_plain_vgg38_vanishing_gradients_naming_its_layers(files: dict[str, Path]) -> None:
    rows = findings_of(files["vgg38"])
    (van,) = [r for r in rows if r["kind"] == "vanishing_gradients"]
    with open_run(files["vgg38"]) as rf:
        names = [x.name for x in rf.layers]
    assert van["severity"] == "error" and van["layer"] in names and van["first_step"] == 0
    assert van["evidence"]["vanishing_layers"] == van["evidence"]["weight_layers"] == 38
    assert "BatchNorm" in van["suggestion"] and "residual" in van["suggestion"]
    assert rows[0]["severity"] == "error"  # worst first
    assert not [r for r in rows if r["kind"] == "update_ratio"]  # not blamed on the learning rate
    p = tt("diagnose", str(files["vgg38"]))  # the text form: one line each, the skipped rules named
    assert p.returncode == 0
    assert "error   vanishing_gradients at " in p.stdout and "since step 0" in p.stdout
    assert "skipped signal_collapse, dead_units, saturation: the run has no activation probe" in p.stdout


def test_deep_mlp_vanishing_gradients_begin_at_a_named_depth(files: dict[str, Path]) -> None:
    (van,) = [r for r in findings_of(files["deep"]) if r["kind"] == "vanishing_gradients"]
    depth, n = van["evidence"]["depth"], van["evidence"]["weight_layers"]
    assert n == 65 and 1 < depth < n  # the layers near the output still learn; below them, nothing
    assert van["layer"] == f"layers.{int(depth) - 1}.linear.weight"
    assert f"(depth {int(depth)})" in van["message"]


def test_a_long_probe_is_read_thinned_and_says_the_same(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuitrain.diagnosis import data

    monkeypatch.setattr(data, "MAX_PROBE_ROWS", 10)
    with open_run(files["deep"]) as rf:
        d = from_runfile(rf)
    assert d.grads is not None and d.grads.steps.size <= 10 and d.grads.steps[1] > 1
    (f,) = [f for f in diagnose(d).findings if f.kind == "vanishing_gradients"]
    assert f.first_step == 0 and f.layer.startswith("layers.")


def test_toy2d_mlp_at_its_defaults_raises_no_warning_or_error(files: dict[str, Path]) -> None:
    assert serious(findings_of(files["toy"])) == []


def test_vgg08_raises_no_error(files: dict[str, Path]) -> None:
    assert [r for r in findings_of(files["vgg08"]) if r["severity"] == "error"] == []


def test_mlp_at_lr_1e5_update_ratio_too_low(files: dict[str, Path]) -> None:
    rows = serious(findings_of(files["low_lr"]))
    (ur,) = [r for r in rows if r["kind"] == "update_ratio"]
    assert "too low" in ur["message"] and ur["evidence"]["median_update_ratio"] < 1e-5
    assert [r["kind"] for r in rows] == ["update_ratio"]  # no false alarms


def test_nan_run_is_diverging_from_its_first_bad_step(files: dict[str, Path]) -> None:
    rows = findings_of(files["nan"])
    with open_run(files["nan"]) as rf:
        lossv, steps = rf.scalar("loss"), rf.scalar("step")
    first_bad = int(steps[np.flatnonzero(~np.isfinite(lossv))[0]])
    (div,) = [r for r in rows if r["kind"] == "diverging" and r["severity"] == "error"]
    assert div["first_step"] == first_bad
    assert all(v is None or math.isfinite(v) for r in rows for v in r["evidence"].values())


def test_script_run_without_probes_and_schema_1_file(files: dict[str, Path]) -> None:
    p = tt("diagnose", str(files["plain"]), str(REPO / "tests" / "data" / "run_v1.h5"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert (
        "skipped vanishing_gradients, exploding_gradients, update_ratio: the run has no gradient probe"
        in (p.stdout)
    )
    assert "the number of classes is unknown" in p.stdout
    assert "run_v1.h5: " in p.stdout
    with open_run(REPO / "tests" / "data" / "run_v1.h5") as rf:
        assert diagnose(from_runfile(rf)).skipped.keys() == {"signal_collapse", "dead_units", "saturation"}


def test_bad_input_is_one_paragraph_exit_2(tmp_path: Path) -> None:
    assert_clean_error(tt("diagnose", str(tmp_path / "missing.h5")), "missing.h5", "no such run file")
    (tmp_path / "x.h5").write_text("not hdf5")
    assert_clean_error(tt("diagnose", str(tmp_path / "x.h5")), "not an HDF5 file")


# -- the forward-signal rules on the real activation probe (tuitrain.train.activations) ------------


def probed_vgg38(batch_norm: bool, residual: bool, steps: int = 3) -> RunData:
    """tuitrain's VGG38 (default init, 8x8 inputs) trained a few Adam steps in plain torch with the
    real ActivationProbe, its rows as the rules read them (as a run file will store them)."""
    import torch

    from tuitrain.train.activations import ACT_PROBE, ActivationProbe
    from tuitrain.train.models.vgg import VGG

    torch.manual_seed(0)
    model = VGG(3, 10, filters=16, stages=3, blocks_per_stage=5, batch_norm=batch_norm, residual=residual)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    probe = ActivationProbe(every=1)
    probe.attach(model, opt)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    for step in range(steps):
        probe.before_forward(step)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        probe.before_step(step)
        opt.step()
        opt.zero_grad()
        probe.after_step(step)
    block = probe.collect(force=True)
    q = {n: block.values[:, i, :].astype(np.float64) for i, n in enumerate(ACT_PROBE.names)}
    acts = Activations(
        block.steps,
        [m.name for m in probe.modules],
        q["mean"],
        q["std"],
        q["zero_frac"],
        q["saturated_frac"],
        q["dead_frac"],
    )
    probe.detach()
    return RunData(steps=block.steps, activations=acts, window=steps)


def test_plain_vgg38_signal_collapse_in_its_first_stage_and_not_with_bn_rc() -> None:
    (f,) = signal.signal_collapse(probed_vgg38(batch_norm=False, residual=False))
    assert f.severity == "error" and f.layer.startswith("stages.0."), f
    assert f.evidence["std_ratio"] < 1e-2 and f.first_step == 0
    assert "BatchNorm" in f.suggestion and "residual" in f.suggestion
    healthy = diagnose(probed_vgg38(batch_norm=True, residual=True))
    assert [x for x in healthy.findings if x.severity == "error"] == []
    assert "signal_collapse" not in healthy.skipped
