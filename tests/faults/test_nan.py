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

from tests.clirun import tt
from tests.conftest import cli_env
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
