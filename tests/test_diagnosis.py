"""The findings engine (tuitrain.diagnosis) and ``tuitrain diagnose``: each rule on synthetic arrays (a
finding opens, and closes when the condition stops holding), and the stories of issue 11 on real run
files: tests/test_diagnosis_stories.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.clirun import assert_clean_error, tt
from tuitrain.diagnosis import (
    RULES,
    Activations,
    Finding,
    Grads,
    RunData,
    diagnose,
    episodes,
    gradients,
    loss,
    signal,
)

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


def test_a_rising_loss_is_no_plateau() -> None:
    # a loss growing 100x (toy2d_mlp with leaky ReLU at Adam lr 1) is diverging's, not "flat"
    assert loss.plateau(loss_run(np.geomspace(1, 100, 200))) == []
    v = np.concatenate([np.full(100, 0.5), np.full(100, 0.504)])  # 0.8% up: flat, within 1% either way
    (f,) = loss.plateau(loss_run(v))
    assert f.first_step < 100 and f.last_step is None  # held across the 0.8% step up


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


def test_dead_units_leave_sigmoid_and_tanh_modules_to_saturation() -> None:
    dead = np.zeros((10, 2))
    dead[2:] = 0.9  # both modules' outputs exact zeros from step 20; module 1 is a sigmoid pinned at 0
    sat = np.full((10, 2), np.nan)
    sat[:, 1] = 1.0
    (f,) = signal.dead_units(acts_run(np.ones((10, 2)), dead=dead, sat=sat))
    assert f.layer == "m0"
    (s,) = signal.saturation(acts_run(np.ones((10, 2)), dead=dead, sat=sat))
    assert s.layer == "m1"


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


# -- tuitrain diagnose's bad input (the stories on real runs: tests/test_diagnosis_stories.py) ------


def test_bad_input_is_one_paragraph_exit_2(tmp_path: Path) -> None:
    assert_clean_error(tt("diagnose", str(tmp_path / "missing.h5")), "missing.h5", "no such run file")
    (tmp_path / "x.h5").write_text("not hdf5")
    assert_clean_error(tt("diagnose", str(tmp_path / "x.h5")), "not an HDF5 file")
