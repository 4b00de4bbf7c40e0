"""NaN and divergence, injected for real: toy2d_mlp trained by the real CLI at learning rates that
really diverge (no monkeypatched loss), the run file read back, and the real dashboard under
``App.run_test()`` fed by that file.

Configurations found by running them (toy2d, 16 steps an epoch, seed 0):
- ``DIVERGES``: BatchNorm off, Adam at lr 1e6: the loss is 1.11 at step 0 and NaN from step 1 on.
- ``BLOWS_UP``: BatchNorm off, SGD at lr 1e3: loss 1.11, 1.2e4, 1.4e28, then NaN from step 3 (the
  gradients are already non-finite at step 2).
- Adam at lr 1 on the preset (with BatchNorm): no loss is NaN, but the zero-initialised BN shifts and
  biases have ||W|| = 0 at step 0, the false alarm of issue 9.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import PRESETS, cli_env
from tuitrain.runfile import open_run

SMALL = ("--set", "data.train_size=512", "--set", "data.val_size=128", "--set", "data.test_size=128")
DIVERGES = ("--set", "model.batch_norm=false", "--set", "optim.lr=1e6", *SMALL)
BLOWS_UP = ("--set", "model.batch_norm=false", "--set", "optim.name=sgd", "--set", "optim.lr=1e3", *SMALL)


def strict_env() -> dict[str, str]:
    """Any numpy/Python RuntimeWarning in the training process becomes an error (and fails the run)."""
    env = cli_env()
    env["PYTHONWARNINGS"] = "error::RuntimeWarning"
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_zero_initialised_tensors_raise_no_false_nan_alarm(tmp_path: Path) -> None:
    out = tmp_path / "lr1.h5"
    p = tt(
        "run",
        "toy2d_mlp",
        "--no-ui",
        "--set",
        "optim.lr=1",
        "--max-steps",
        "24",
        "--out",
        str(out),
        env=strict_env(),
    )
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    assert "NaN/Inf" not in text and "RuntimeWarning" not in text, text
    with open_run(out) as rf:
        assert rf.status == "completed"
        names = [layer.name for layer in rf.layers]
        ratio, norms = rf.probe("update_ratio"), rf.probe("weight_norm")
        assert np.isfinite(ratio).all() and np.isfinite(norms).all()
        assert not any(e["kind"] == "nan" for e in rf.events())
    # the BN shift starts at zero: its ratio is undefined and ||dW|| is stored; Adam's first step moves
    # every element by about lr = 1, so ||dW|| = sqrt(numel) = sqrt(32)
    bn_bias = names.index("layers.0.bn.bias")
    assert norms[0, bn_bias] == 0.0
    assert ratio[0, bn_bias] == pytest.approx(math.sqrt(32), rel=1e-3)


# -- non-finite config values -------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "optim.lr=inf",
        "optim.weight_decay=inf",
        "data.noise=inf",
        "monitor.vanishing=inf",
        "monitor.exploding=inf",
        "monitor.emit_seconds=nan",
        "optim.lr=1e999",  # TOML reads it as inf
        "optim.betas=[0.9, -inf]",
    ],
)
def test_non_finite_numbers_are_refused(override: str, tmp_path: Path) -> None:
    out = tmp_path / "never.h5"
    p = tt("run", "toy2d_mlp", "--no-ui", "--set", override, "--max-steps", "1", "--out", str(out))
    key = override.split("=", 1)[0]
    assert_clean_error(p, f"`{key}`", "a finite number is required")
    assert not out.exists()


def test_non_finite_number_in_a_preset_file_names_the_file(tmp_path: Path) -> None:
    preset = tmp_path / "bad.toml"
    preset.write_text(f'extends = "{PRESETS / "toy2d_mlp.toml"}"\n[optim]\nlr = inf\n')
    p = tt("run", str(preset), "--no-ui", "--max-steps", "1", "--out", str(tmp_path / "never.h5"))
    assert_clean_error(p, str(preset), "`optim.lr` = inf", "a finite number is required")


def test_every_float_key_refuses_inf_and_nan() -> None:
    """In process, every float key of the schema (a list of floats too): one clean ConfigError each."""
    import dataclasses
    import typing

    from tuitrain.config import ConfigError, RunConfig
    from tuitrain.config.validate import from_dict

    checked = 0
    for name, sec_cls in typing.get_type_hints(RunConfig).items():
        if not dataclasses.is_dataclass(sec_cls):
            continue
        hints = typing.get_type_hints(sec_cls)
        for f in dataclasses.fields(sec_cls):
            tp = hints[f.name]
            for bad in (math.inf, -math.inf, math.nan):
                if tp is float:
                    value: object = bad
                elif tp == list[float]:
                    value = [bad, 0.5]
                else:
                    continue
                with pytest.raises(ConfigError, match="a finite number is required") as err:
                    from_dict({name: {f.name: value}})
                assert f"`{name}.{f.name}`" in str(err.value)
                checked += 1
    assert checked >= 3 * 14  # every float key of today's schema, three bad values each


# -- divergence: monitor.on_nan -----------------------------------------------------------------


def first_nonfinite_step(path: Path) -> int:
    with open_run(path) as rf:
        loss, steps = rf.scalar("loss"), rf.scalar("step")
    bad = np.flatnonzero(~np.isfinite(loss))
    assert bad.size, "the run never produced a non-finite loss: the test config no longer diverges"
    return int(steps[bad[0]])


@pytest.mark.parametrize(
    ("args", "first_bad"),
    [(DIVERGES, 1), (BLOWS_UP, 3)],
    ids=["adam-lr1e6-nan-at-1", "sgd-lr1e3-nan-at-3"],
)
def test_divergence_stops_the_run_as_failed(args: tuple[str, ...], first_bad: int, tmp_path: Path) -> None:
    out = tmp_path / "diverged.h5"
    p = tt("run", "toy2d_mlp", "--no-ui", *args, "--max-steps", "200", "--out", str(out), env=strict_env())
    text = p.stdout + p.stderr
    message = f"diverged: loss is NaN at step {first_bad}"
    assert p.returncode == 1, text
    assert message in text and "Traceback" not in text and "RuntimeWarning" not in text, text
    assert first_nonfinite_step(out) == first_bad  # the error names the first bad step exactly
    with open_run(out) as rf:
        assert rf.status == "failed"
        assert rf.error == message
        assert rf.n_steps < 200  # it stopped (at the flush or the epoch end after the bad step)
        assert any(e["kind"] == "nan" and e["level"] == "error" for e in rf.events())
    assert not out.with_suffix(".pt").exists()  # no checkpoint of NaN weights


def test_nan_patience_tolerates_that_many_bad_losses_in_a_row(tmp_path: Path) -> None:
    out = tmp_path / "patient.h5"
    p = tt(
        "run", "toy2d_mlp", "--no-ui", *DIVERGES, "--set", "monitor.nan_patience=5",
        "--max-steps", "200", "--out", str(out), env=strict_env(),
    )  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    with open_run(out) as rf:
        assert (
            rf.error
            == "diverged: loss is NaN at step 1 (non-finite for 6 steps in a row; monitor.nan_patience = 5)"
        )
        assert rf.n_steps >= 7  # steps 1..6 were trained before the sixth bad loss stopped it


def test_on_nan_continue_trains_on_and_says_nan(tmp_path: Path) -> None:
    out = tmp_path / "continued.h5"
    p = tt(
        "run", "toy2d_mlp", "--no-ui", *DIVERGES, "--set", "monitor.on_nan=continue",
        "--max-steps", "40", "--out", str(out), env=strict_env(),
    )  # fmt: skip
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    assert "diverged" not in text and "Traceback" not in text, text
    with open_run(out) as rf:
        assert rf.status == "completed" and rf.n_steps == 40
        final = rf.final_metrics()
    assert math.isnan(final["train_loss"]) and math.isnan(final["test_loss"])


def test_divergence_guard_names_the_first_bad_step_across_flushes() -> None:
    """The bookkeeping alone: a run of bad losses split over flushed blocks, reset by a finite loss."""
    from tuitrain.train.alerts import DivergenceGuard

    nan, inf = math.nan, math.inf
    g = DivergenceGuard(patience=2)
    assert g.observe(np.arange(0, 4), np.array([1.0, nan, nan, 1.0])) == ""  # two bad, then finite: reset
    assert g.observe(np.arange(4, 6), np.array([1.0, inf])) == ""  # a new run starts at step 5
    assert g.observe(np.arange(6, 8), np.array([nan, nan])) == (
        "diverged: loss is Inf at step 5 (non-finite for 3 steps in a row; monitor.nan_patience = 2)"
    )
    assert (
        DivergenceGuard(0).observe(np.array([7, 8]), np.array([2.0, nan]))
        == "diverged: loss is NaN at step 8"
    )
