"""The story of 001 on synthetic data, offline, on a 2-core CPU, with the real engine.

After two short epochs VGG08 and VGG38+BN+RC are clearly above chance while plain VGG38 stays at
chance, and plain VGG38's first-layer mean |grad| is orders of magnitude below VGG08's. The runs go
through the real run-file writer and are checked from the files, as a user would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PRESETS
from tuitrain.cli import build_config
from tuitrain.runfile.reader import open_run
from tuitrain.runfile.writer import RunFileWriter
from tuitrain.train.engine import train

# Ten classes of 16x16 synthetic images keep "two short epochs" short on a 2-core CPU (VGG38 costs
# about 4x less than at 32x32); chance is 10%. Measured with these settings (seeds 0-2): VGG08 0.22-0.40,
# VGG38+BN+RC 0.6-0.8, VGG38 0.10 exactly.
STORY = [
    "data.classes=10",
    "data.image_size=16",
    "data.train_size=2000",
    "data.val_size=500",
    "data.test_size=500",
    "train.batch_size=50",
    "train.eval_batch_size=500",
    "monitor.alert_steps=10",
]


def story_run(tmp_path: Path, preset: str) -> Path:
    cfg = build_config(str(PRESETS / f"{preset}.toml"), STORY, data="synthetic", epochs=2)
    out = tmp_path / f"{preset}.h5"
    finished = train(cfg, [RunFileWriter(str(out))], out_path=str(out))
    assert finished.status == "completed", finished.error + finished.traceback
    return out


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("story")
    return {p: story_run(tmp, p) for p in ("vgg08", "vgg38", "vgg38_bn_rc")}


def first_layer_mean_abs_grad(path: Path) -> float:
    with open_run(path) as rf:
        g = rf.probe("grad_mean_abs")
        return float(np.median(g[:, 0]))


def test_vgg08_and_vgg38_bn_rc_learn_while_vgg38_stays_at_chance(story: dict[str, Path]) -> None:
    acc = {}
    for name, path in story.items():
        with open_run(path) as rf:
            acc[name] = rf.final_metrics()["val_acc"]
    assert acc["vgg08"] > 0.18, acc
    assert acc["vgg38_bn_rc"] > 0.3, acc
    assert acc["vgg38"] < 0.13, acc


def test_vgg38_first_layer_gradients_vanish(story: dict[str, Path]) -> None:
    g08 = first_layer_mean_abs_grad(story["vgg08"])
    g38 = first_layer_mean_abs_grad(story["vgg38"])
    g_fixed = first_layer_mean_abs_grad(story["vgg38_bn_rc"])
    assert g38 < 1e-6 * g08, (g08, g38)
    assert g_fixed > 1e-3 * g08, (g08, g_fixed)


def test_vgg38_run_file_says_so_in_words(story: dict[str, Path]) -> None:
    with open_run(story["vgg38"]) as rf:
        messages = [e["message"] for e in rf.events() if e["kind"] == "vanishing"]
    assert messages and "weight layers have mean |grad| below" in messages[0]
    with open_run(story["vgg08"]) as rf:
        assert not [e for e in rf.events() if e["kind"] == "vanishing"]
