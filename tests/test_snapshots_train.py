"""Snapshots taken by the training process (issue 12): the planner's size cap over every preset, and
what real short runs take (first-layer kernels, Mixer token mixing, the decision boundary, the test
points, the misclassified samples), compared with the model's data and the run's own test result."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.clirun import assert_clean_error, tt
from tests.conftest import PRESETS, cli_env
from tests.recorder import Recorder
from tuitrain.config import RunConfig, load_config
from tuitrain.events import RunStarted, Snapshot, SnapshotSpec
from tuitrain.events import TestResult as Final
from tuitrain.runfile import open_run
from tuitrain.train.data import load_data
from tuitrain.train.engine import train
from tuitrain.train.models import build_model
from tuitrain.train.snapshots import MB, Snapshotter

pytestmark = pytest.mark.timeout(300)

CPU = torch.device("cpu")
SMALL = ["data.train_size=200", "data.val_size=50", "data.test_size=300", "train.threads=1"]


def config(preset: str, *sets: str) -> RunConfig:
    """A preset made tiny: synthetic 8x8 images for image presets (toy2d stays toy2d)."""
    cfg = load_config(PRESETS / f"{preset}.toml")
    image = [] if cfg.data.name == "toy2d" else ["data.name=synthetic", "data.image_size=8"]
    return load_config(PRESETS / f"{preset}.toml", [*image, *SMALL, *sets])


def run(cfg: RunConfig) -> tuple[RunStarted, list[Snapshot], Final | None, str]:
    rec = Recorder()
    finished = train(cfg, [rec])
    started = next(e for e in rec.events if isinstance(e, RunStarted))
    tests = [e for e in rec.events if isinstance(e, Final)]
    snaps = [e for e in rec.events if isinstance(e, Snapshot)]
    return started, snaps, (tests[0] if tests else None), finished.status


def by_name(snaps: list[Snapshot], name: str) -> list[Snapshot]:
    return [s for s in snaps if s.name == name]


def specs(started: RunStarted) -> dict[str, SnapshotSpec]:
    return {s.name: s for s in started.snapshots}


# -- the planner --------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.toml")))
@pytest.mark.parametrize("mb", [4.0, 0.3, 0.02])
def test_every_preset_plans_within_the_cap(preset: str, mb: float) -> None:
    cfg = load_config(PRESETS / f"{preset}.toml")
    sets = ["data.train_size=100", "data.val_size=50", "data.test_size=100"]
    if cfg.data.name != "toy2d":
        sets += ["data.name=synthetic", "data.image_size=32"]  # CIFAR-shaped: the largest first layers
    cfg = load_config(PRESETS / f"{preset}.toml", sets)
    data = load_data(cfg.data, CPU)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    cfg.monitor.snapshot_mb = mb
    snap = Snapshotter.plan(model, data, cfg.monitor, cfg.train.epochs)
    assert sum(s.max_bytes for s in snap.specs) <= mb * MB
    names = {s.name for s in snap.specs}
    if mb == 4.0:  # the default cap keeps every snapshot the model and data allow
        assert "misclassified" in names
        assert ("boundary" in names) == (cfg.data.name == "toy2d")
        assert ("first_layer" in names) == (cfg.data.name != "toy2d")
        assert ("token_mixing" in names) == (cfg.model.name == "mlp_mixer")
    for s in snap.specs:
        if s.when == "epoch":  # the init row and the last epoch fit beside the strided ones
            stride = s.meta["stride"]
            assert cfg.train.epochs // stride + 2 <= s.max_rows or s.max_rows == cfg.train.epochs + 1


def test_an_mlp_on_cifar_shaped_images_keeps_every_stride_th_epoch_within_the_cap() -> None:
    cfg = load_config(
        PRESETS / "mlp_cifar10.toml",
        ["data.name=synthetic", "data.train_size=100", "data.val_size=50", "data.test_size=100"],
    )
    data = load_data(cfg.data, CPU)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    epochs = 100
    snap = Snapshotter.plan(model, data, cfg.monitor, epochs)
    spec = specs_of(snap)["first_layer"]
    assert spec.fields[0].shape == (64, 3, 32, 32) and spec.fields[0].dtype == "float16"
    assert spec.meta == {
        "module": "layers.0.linear",
        "type": "Linear",
        "out_total": 1024,
        "stride": spec.meta["stride"],
    }
    stride = spec.meta["stride"]
    assert stride > 1 and spec.max_rows < epochs + 1
    assert sum(s.max_bytes for s in snap.specs) <= 4 * MB
    # 100 epochs cut short at epoch 62 (max_steps): init, every stride-th, and the last one at the end
    rows = snap.at_start(0)
    for epoch in range(63):
        rows += snap.epoch_end(epoch, 10 * (epoch + 1))
    rows += snap.at_end(62, 630)
    epochs_taken = [r.epoch for r in rows if r.name == "first_layer"]
    want = [-1, *(e for e in range(63) if (e + 1) % stride == 0)]
    assert epochs_taken == [*want, 62] if want[-1] != 62 else want
    assert len(epochs_taken) <= spec.max_rows
    w = model.layers[0].linear.weight.detach()[:64].reshape(64, 3, 32, 32).half().numpy()
    assert np.array_equal(rows[0].arrays["weight"][0], w)  # the Linear's rows as images


def specs_of(snap: Snapshotter) -> dict[str, SnapshotSpec]:
    return {s.name: s for s in snap.specs}


# -- real runs ----------------------------------------------------------------------------------


def test_toy2d_takes_the_boundary_the_points_and_the_misclassified_points() -> None:
    cfg = config("toy2d_mlp", "train.epochs=4", "data.train_size=400", "optim.lr=1e-2")
    started, snaps, test, status = run(cfg)
    assert status == "completed" and test is not None
    got = specs(started)
    assert list(got) == ["boundary", "points", "misclassified"]  # 2-D input: no image-shaped first layer
    boundary = by_name(snaps, "boundary")
    assert [s.epoch for s in boundary] == [-1, 0, 1, 2, 3]
    for s in boundary:
        assert s.arrays["pred"].shape == (1, 48, 48) and s.arrays["pred"].dtype == np.int16
        assert s.arrays["pred"].min() >= 0 and s.arrays["pred"].max() < 3
        assert s.arrays["prob"].dtype == np.float16 and (s.arrays["prob"] >= 1 / 3 - 1e-3).all()
    assert not np.array_equal(boundary[0].arrays["pred"], boundary[-1].arrays["pred"])  # it learned
    data = load_data(cfg.data, CPU)
    x0, x1, y0, y1 = got["boundary"].meta["extent"]
    lo, hi = data.x["train"].amin(0), data.x["train"].amax(0)
    assert x0 < lo[0] < hi[0] < x1 and y0 < lo[1] < hi[1] < y1
    (points,) = by_name(snaps, "points")
    assert points.epoch == -1 and points.step == 0
    assert np.array_equal(points.arrays["xy"], data.x["test"].numpy())
    assert np.array_equal(points.arrays["label"], data.y["test"].numpy())
    (wrong,) = by_name(snaps, "misclassified")
    n_wrong = round((1 - test.acc) * got["misclassified"].meta["n_total"])
    assert wrong.rows == min(64, n_wrong) > 0
    idx = wrong.arrays["index"]
    assert (np.diff(idx) > 0).all() and (wrong.arrays["pred"] != wrong.arrays["true"]).all()
    assert np.array_equal(wrong.arrays["true"], data.y["test"].numpy()[idx])
    assert np.array_equal(wrong.arrays["xy"], data.x["test"].numpy()[idx])
    assert set(wrong.arrays) == {"index", "true", "pred", "prob", "xy"}


@pytest.mark.parametrize("preset", ["vgg38", "resnet18_cifar10"])
def test_image_runs_take_first_layer_kernels_and_misclassified_images(preset: str) -> None:
    cfg = config(preset, "train.epochs=2")
    started, snaps, test, status = run(cfg)
    assert status == "completed" and test is not None
    got = specs(started)
    assert list(got) == ["first_layer", "misclassified"]
    first = by_name(snaps, "first_layer")
    assert [s.epoch for s in first] == [-1, 0, 1]
    k = got["first_layer"].fields[0].shape[0]
    assert got["first_layer"].meta["type"] == "Conv2d" and k == min(64, got["first_layer"].meta["out_total"])
    for s in first:
        assert s.arrays["weight"].shape == (1, k, 3, 3, 3) and s.arrays["weight"].dtype == np.float32
    if preset == "vgg38":  # plain VGG38 at the default init: its gradients vanish before the first layer
        assert np.allclose(first[0].arrays["weight"], first[-1].arrays["weight"], atol=1e-6)
    else:
        assert not np.array_equal(first[0].arrays["weight"], first[-1].arrays["weight"])
    (wrong,) = by_name(snaps, "misclassified")
    assert wrong.rows == min(64, round((1 - test.acc) * 300))
    data = load_data(cfg.data, CPU)
    idx = wrong.arrays["index"]
    assert wrong.arrays["image"].dtype == np.uint8 and wrong.arrays["image"].shape == (wrong.rows, 3, 8, 8)
    assert np.array_equal(wrong.arrays["image"], data.x["test"].numpy()[idx])
    assert np.array_equal(wrong.arrays["true"], data.y["test"].numpy()[idx])
    assert (wrong.arrays["pred"] != wrong.arrays["true"]).all()
    assert got["misclassified"].meta["class_names"] == []  # synthetic classes have no names


def test_mixer_takes_its_token_mixing_weights_and_the_stem_kernels() -> None:
    cfg = config("mlp_mixer_cifar10", "train.epochs=1", "model.patch_size=2", "model.embed_dim=32")
    started, snaps, _, status = run(cfg)
    assert status == "completed"
    got = specs(started)
    assert list(got) == ["first_layer", "token_mixing", "misclassified"]
    assert got["first_layer"].meta["module"] == "stem"
    assert got["first_layer"].fields[0].shape == (32, 3, 2, 2)
    token = got["token_mixing"]
    gh, gw = token.meta["grid"]
    assert gh * gw == 16 and token.fields[0].shape == (16, 16)  # hidden 0.5 * 32 units x 4x4 tokens
    assert token.meta["module"] == "blocks.0.mlp_tokens.fc1" and token.meta["hidden_total"] == 16
    rows = by_name(snaps, "token_mixing")
    assert [s.epoch for s in rows] == [-1, 0] and rows[0].arrays["weight"].shape == (1, 16, 16)


def test_a_run_cut_by_max_steps_takes_its_last_epoch_at_the_end() -> None:
    # a small cap: the boundary keeps every stride-th of 6 epochs; max_steps ends it inside epoch 3
    cfg = config("toy2d_mlp", "train.epochs=6", "monitor.snapshot_mb=0.046", "train.max_steps=7")
    started, snaps, _, status = run(cfg)
    assert status == "completed"
    spec = specs(started)["boundary"]
    stride = spec.meta["stride"]
    assert stride > 1 and spec.max_rows < 7
    assert sum(s.max_bytes for s in started.snapshots) <= 0.046 * MB
    rows = by_name(snaps, "boundary")
    steps_per_epoch = started.steps_per_epoch
    last = (7 - 1) // steps_per_epoch
    want = [-1, *(e for e in range(last + 1) if (e + 1) % stride == 0)]
    want += [] if want[-1] == last else [last]
    assert [s.epoch for s in rows] == want and rows[-1].step == 7
    assert len(rows) <= spec.max_rows


class StopAfter:
    """A control (the dashboard's part) that says "stop" at its ``n``-th poll: one poll per step."""

    def __init__(self, n: int) -> None:
        self.polls, self.n = 0, n

    def poll(self, timeout: float = 0.0) -> str | None:
        self.polls += 1
        return "stop" if self.polls == self.n else None


def test_a_stopped_run_takes_the_epoch_it_was_stopped_in() -> None:
    cfg = config("toy2d_mlp", "train.epochs=6", "monitor.snapshot_mb=0.046")  # 2 steps an epoch
    rec = Recorder()
    finished = train(cfg, [rec], control=StopAfter(6))  # steps 0-4 trained, stopped inside epoch 2
    assert finished.status == "stopped" and finished.step == 5
    rows = by_name([e for e in rec.events if isinstance(e, Snapshot)], "boundary")
    started = next(e for e in rec.events if isinstance(e, RunStarted))
    assert specs(started)["boundary"].meta["stride"] == 3  # epochs 2 and 5 kept; epoch 2 never ended
    assert [(s.epoch, s.step) for s in rows] == [(-1, 0), (2, 5)]
    assert not any(isinstance(e, Snapshot) and e.name == "misclassified" for e in rec.events)


def test_snapshot_mb_0_takes_nothing() -> None:
    started, snaps, _, status = run(config("toy2d_mlp", "train.epochs=1", "monitor.snapshot_mb=0"))
    assert status == "completed" and started.snapshots == [] and snaps == []


@pytest.mark.parametrize("value", ["-1", '"x"'])
def test_a_bad_snapshot_mb_is_refused_in_one_paragraph(tmp_path: Path, value: str) -> None:
    p = tt(
        "run",
        "toy2d_mlp",
        "--no-ui",
        "--out",
        str(tmp_path / "r.h5"),
        "--set",
        f"monitor.snapshot_mb={value}",
        env={**cli_env(), "OMP_NUM_THREADS": "1"},
    )
    assert_clean_error(p, "monitor.snapshot_mb")
    assert "\n\n" not in (p.stdout + p.stderr).strip()
    assert not (tmp_path / "r.h5").exists()


def test_the_planner_halves_the_kernels_when_three_rows_would_not_fit() -> None:
    cfg = load_config(
        PRESETS / "mlp_cifar10.toml",
        ["data.name=synthetic", "data.train_size=100", "data.val_size=50", "data.test_size=100"],
    )
    data = load_data(cfg.data, CPU)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    cfg.monitor.snapshot_mb = 0.5  # misclassified 64 x 3 KB leave ~0.3 MB: 3 rows of 64 x 6 KB do not fit
    snap = Snapshotter.plan(model, data, cfg.monitor, 30)
    spec = specs_of(snap)["first_layer"]
    k = spec.fields[0].shape[0]
    assert k < 64 and 64 % k == 0 and spec.max_rows >= 3
    assert sum(s.max_bytes for s in snap.specs) <= 0.5 * MB
    assert math.isclose(spec.meta["out_total"], 1024)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_class_names_come_from_the_copy_s_meta_file(tmp_path: Path, name: str) -> None:
    from tests.test_data import write_fake_cifar
    from tuitrain.train.data import cifar_class_names

    assert cifar_class_names(name, tmp_path) == ()  # no copy: no names, no error
    write_fake_cifar(tmp_path, name, per_file=10)
    classes = 10 if name == "cifar10" else 100
    assert cifar_class_names(name, tmp_path) == tuple(str(i) for i in range(classes))


# -- end to end: the real run file --------------------------------------------------------------


def written(cfg: RunConfig, path: Path) -> tuple[RunStarted, list[Snapshot]]:
    from tuitrain.runfile import RunFileWriter

    rec = Recorder()
    finished = train(cfg, [RunFileWriter(path), rec], out_path=str(path))
    assert finished.status == "completed", finished.error
    started = next(e for e in rec.events if isinstance(e, RunStarted))
    return started, [e for e in rec.events if isinstance(e, Snapshot)]


def test_the_run_file_holds_the_rows_the_run_took(tmp_path: Path) -> None:
    path = tmp_path / "toy.h5"
    started, snaps = written(config("toy2d_mlp", "train.epochs=3"), path)
    with open_run(path) as rf:
        assert [s.name for s in rf.snapshot_specs.values()] == [s.name for s in started.snapshots]
        for spec in started.snapshots:
            taken = by_name(snaps, spec.name)
            rows = rf.snapshot_rows(spec.name)
            assert rows is not None and len(rows) == sum(s.rows for s in taken)
            assert rf.snapshot_specs[spec.name].meta == spec.meta
            assert rows.epoch.tolist() == [s.epoch for s in taken for _ in range(s.rows)]
            assert rows.step.tolist() == [s.step for s in taken for _ in range(s.rows)]
            for f in spec.fields:
                want = np.concatenate([s.arrays[f.name] for s in taken])
                assert rows.arrays[f.name].dtype == np.dtype(f.dtype)
                assert np.array_equal(rows.arrays[f.name], want), (spec.name, f.name)


def test_the_cli_run_file_grows_within_the_cap(tmp_path: Path) -> None:
    # CIFAR-shaped images through an MLP: the first Linear's rows are 6 KB images; at 0.5 MB the planner
    # halves the kernels and strides the epochs, and the misclassified images take 40% of the cap.
    sets = [
        "--data", "synthetic", "--epochs", "6", "--set", "model.hidden=[64]", "--set", "train.threads=1",
        "--set", "data.train_size=300", "--set", "data.val_size=50", "--set", "data.test_size=200",
    ]  # fmt: skip
    sizes = {}
    for mb in ("0", "0.5"):
        out = tmp_path / f"mlp-{mb}.h5"
        p = tt(
            "run", "mlp_cifar10", "--no-ui", "--out", str(out), "--set", f"monitor.snapshot_mb={mb}", *sets,
            env={**cli_env(), "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert p.returncode == 0, p.stdout + p.stderr
        sizes[mb] = out.stat().st_size
    with open_run(tmp_path / "mlp-0.5.h5") as rf:
        declared = sum(s.max_bytes for s in rf.snapshot_specs.values())
        first = rf.snapshot_rows("first_layer")
        assert first is not None and first.spec.meta["stride"] > 1
        assert first.arrays["weight"].shape[1] < 64  # fewer kernels
        assert first.epoch[0] == -1 and first.epoch[-1] == 5 and len(first) <= first.spec.max_rows
        assert rf.snapshot_rows("misclassified") is not None
    with open_run(tmp_path / "mlp-0.h5") as rf:
        assert rf.snapshot_specs == {}
    assert declared <= 0.5 * MB
    # what the rows hold is within the cap; HDF5 adds object headers and chunk indexes (a few KB)
    assert sizes["0.5"] - sizes["0"] <= declared + 32 * 1024, (sizes, declared)


def test_data_parallel_rank_0_takes_the_snapshots_with_indices_into_the_whole_split(tmp_path: Path) -> None:
    out = tmp_path / "ddp.h5"
    env = {**cli_env(), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    p = tt(
        "run", "toy2d_mlp", "--no-ui", "--nproc-per-node", "2", "--epochs", "2", "--device", "cpu",
        "--set", "data.test_size=300", "--out", str(out), env=env, timeout=240,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    cfg = load_config(PRESETS / "toy2d_mlp.toml", ["data.test_size=300"])
    data = load_data(cfg.data, CPU)
    with open_run(out) as rf:
        boundary = rf.snapshot_rows("boundary")
        assert boundary is not None and boundary.epoch.tolist() == [-1, 0, 1]  # one row each: rank 0's
        wrong = rf.snapshot_rows("misclassified")
        assert wrong is not None and len(wrong) > 0
        idx = wrong.arrays["index"]
        assert idx.max() < 150  # rank 0 evaluates the first half of the split, from index 0
        assert np.array_equal(wrong.arrays["xy"], data.x["test"].numpy()[idx])
        assert np.array_equal(wrong.arrays["true"], data.y["test"].numpy()[idx])
