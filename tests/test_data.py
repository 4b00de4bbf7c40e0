"""Tests for tuitrain.train.data: real tensors, real torchvision classes, no mocks.

Statistical tolerances are set at >= 5 standard deviations of the quantity tested, so a correct
implementation fails them with probability < 1e-6 whatever the seed.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tuitrain.config import ConfigError, DataConfig
from tuitrain.train.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DeviceData,
    augment_batch,
    cifar_from_arrays,
    data_root,
    load_data,
    read_cifar,
    synthetic_images,
)

CPU = torch.device("cpu")
DEVICES = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def gen(device: torch.device, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def small(**kw: object) -> DataConfig:
    base: dict[str, object] = {"train_size": 600, "val_size": 200, "test_size": 300}
    base.update(kw)
    return DataConfig(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# shapes, dtypes, devices, sizes, determinism, balance


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("classes", [10, 100])
def test_synthetic_splits(device: torch.device, classes: int) -> None:
    data = load_data(DataConfig(classes=classes), device)
    assert data.name == "synthetic" and data.num_classes == classes and data.input_shape == (3, 32, 32)
    assert data.sizes == {"train": 5000, "val": 500, "test": 1000}
    for split, n in data.sizes.items():
        x, y = data.x[split], data.y[split]
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.uint8 and x.device.type == device.type
        assert y.shape == (n,) and y.dtype == torch.int64 and y.device.type == device.type
        counts = torch.bincount(y, minlength=classes)
        assert int(counts.max() - counts.min()) <= 1, split  # balanced within every split
        xb, yb = next(data.eval_batches(split, 128))
        assert xb.shape == (min(128, n), 3, 32, 32) and xb.dtype == torch.float32
        assert xb.device.type == device.type and yb.dtype == torch.int64
    xb, yb = next(data.train_batches(64, gen(device), augment=True))
    assert xb.shape == (64, 3, 32, 32) and xb.dtype == torch.float32 and xb.device.type == device.type
    assert yb.shape == (64,) and yb.dtype == torch.int64


def test_synthetic_is_fast_and_normalised_by_its_own_stats() -> None:
    # about 0.2 s wall on 2 idle cores; CPU time (all threads) is robust to a busy machine
    t0 = time.process_time()
    synthetic_images((5000,), 100, 3, 0.1)
    assert time.process_time() - t0 < 2.0
    data = load_data(DataConfig(), CPU)
    x = torch.cat([xb for xb, _ in data.eval_batches("train", 1000)])
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def test_synthetic_sizes_and_other_class_counts() -> None:
    data = load_data(DataConfig(classes=7, train_size=70, val_size=15, test_size=3), CPU)
    assert data.sizes == {"train": 70, "val": 15, "test": 3}
    assert torch.bincount(data.y["train"], minlength=7).tolist() == [10] * 7
    assert (
        load_data(DataConfig(classes=1000, train_size=2000, val_size=10, test_size=10), CPU).num_classes
        == 1000
    )


@pytest.mark.parametrize("name", ["synthetic", "toy2d"])
def test_determinism(name: str) -> None:
    a, b = load_data(small(name=name, seed=5), CPU), load_data(small(name=name, seed=5), CPU)
    c = load_data(small(name=name, seed=6), CPU)
    for split in ("train", "val", "test"):
        assert torch.equal(a.x[split], b.x[split]) and torch.equal(a.y[split], b.y[split])
        assert not torch.equal(a.x[split], c.x[split])
    # same seed -> same batches, augmentation included
    run1 = [xb for xb, _ in a.train_batches(100, gen(CPU, 1), augment=True)]
    run2 = [xb for xb, _ in b.train_batches(100, gen(CPU, 1), augment=True)]
    assert all(torch.equal(p, q) for p, q in zip(run1, run2, strict=True))


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("shape,classes", [("spirals", 3), ("moons", 2), ("blobs", 5)])
def test_toy2d(device: torch.device, shape: str, classes: int) -> None:
    data = load_data(DataConfig(name="toy2d", shape=shape, classes=classes), device)
    assert data.input_shape == (2,) and data.num_classes == classes
    assert data.sizes == {"train": 2000, "val": 500, "test": 500}
    for split, n in data.sizes.items():
        x, y = data.x[split], data.y[split]
        assert x.shape == (n, 2) and x.dtype == torch.float32 and x.device.type == device.type
        assert y.dtype == torch.int64 and int(y.max()) == classes - 1
        counts = torch.bincount(y, minlength=classes)
        assert int(counts.max() - counts.min()) <= 1
    x = data.x["train"].cpu()
    assert torch.allclose(x.mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(x.std(0), torch.ones(2), atol=1e-4)
    # no augmentation for points, even when asked: batches are exactly the stored points
    xb, yb = next(data.train_batches(2000, gen(device), augment=True))
    assert torch.equal(xb.sort(0).values, data.x["train"].sort(0).values)


def test_toy2d_moons_needs_two_classes() -> None:
    with pytest.raises(ConfigError, match=r"`data\.classes` = 3.*moons"):
        load_data(DataConfig(name="toy2d", shape="moons", classes=3), CPU)


# ---------------------------------------------------------------------------------------------
# batches: permutation, partial batch, augment=False, eval order


def tagged(n: int, device: torch.device = CPU) -> DeviceData:
    """Images whose pixel (0, 0) channels 0/1 encode the sample index, so batches can be traced."""
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n) % 256
    x[:, 1, 0, 0] = torch.arange(n) // 256
    y = torch.arange(n) % 10
    xs = {"train": x.to(device), "val": x[:50].to(device), "test": x[:7].to(device)}
    ys = {"train": y.to(device), "val": y[:50].to(device), "test": y[:7].to(device)}
    return DeviceData("tagged", 10, (3, 32, 32), xs, ys, CIFAR10_MEAN, CIFAR10_STD)


def untag(data: DeviceData, xb: torch.Tensor) -> torch.Tensor:
    raw = ((xb - data.shift) / data.scale).round().long()
    return raw[:, 0, 0, 0] + 256 * raw[:, 1, 0, 0]


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_epoch_is_a_permutation_with_the_partial_batch_kept(device: torch.device) -> None:
    data = tagged(1050, device)
    assert data.steps_per_epoch(100) == 11
    g = gen(device, 3)
    orders = []
    for _ in range(2):
        batches = list(data.train_batches(100, g, augment=False))
        assert [len(yb) for _, yb in batches] == [100] * 10 + [50]
        idx = torch.cat([untag(data, xb) for xb, _ in batches])
        assert torch.equal(idx.sort().values.cpu(), torch.arange(1050))  # every sample exactly once
        xb_all = torch.cat([xb for xb, _ in batches])
        yb_all = torch.cat([yb for _, yb in batches])
        # augment=False: exactly the normalised source pixels, with their own labels
        assert torch.equal(xb_all, data.normalize(data.x["train"][idx]))
        assert torch.equal(yb_all, data.y["train"][idx])
        orders.append(idx)
    assert not torch.equal(orders[0], orders[1])  # a fresh order each epoch


def test_eval_batches_in_order_and_normalised_with_cifar_stats() -> None:
    data = tagged(120)
    xs = list(data.eval_batches("val", 16))
    assert [len(y) for _, y in xs] == [16, 16, 16, 2]
    assert torch.equal(torch.cat([x for x, _ in xs]), data.normalize(data.x["val"]))
    assert torch.equal(untag(data, torch.cat([x for x, _ in xs])), torch.arange(50))
    v = torch.full((1, 3, 32, 32), 200, dtype=torch.uint8)
    want = (200 / 255 - torch.tensor(CIFAR10_MEAN)) / torch.tensor(CIFAR10_STD)
    assert torch.allclose(data.normalize(v)[0, :, 5, 5], want, atol=1e-5)
    with pytest.raises(KeyError, match="no split 'dev'"):
        next(data.eval_batches("dev", 10))


def test_generator_on_the_wrong_device_is_a_clear_error() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    with pytest.raises(ValueError, match="torch.Generator"):
        next(tagged(10, torch.device("cuda")).train_batches(5, gen(CPU), augment=False))


# ---------------------------------------------------------------------------------------------
# augmentation


def positions(n: int, device: torch.device) -> torch.Tensor:
    """Channel 0 = row + 1, channel 1 = column + 1, channel 2 = 7: no pixel is 0 except padding."""
    r = torch.arange(1, 33, dtype=torch.uint8, device=device)
    img = torch.stack(
        [r[:, None].expand(32, 32), r[None, :].expand(32, 32), torch.full((32, 32), 7, device=device)]
    )
    return img.expand(n, 3, 32, 32).contiguous()


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_augment_covers_every_offset_and_flips_half(device: torch.device) -> None:
    n, p = 8000, 4
    out = augment_batch(positions(n, device), gen(device, 11), padding=p, flip=True).cpu().long()
    centre_row, centre_col, right_col = out[:, 0, 16, 16], out[:, 1, 16, 16], out[:, 1, 16, 17]
    flipped = right_col < centre_col
    dy = centre_row - 1 - 16
    dx = torch.where(flipped, centre_col - 1 - 15, centre_col - 1 - 16)  # crop, then mirror
    assert int(dy.abs().max()) <= p and int(dx.abs().max()) <= p
    counts = torch.zeros(2 * p + 1, 2 * p + 1)
    counts.index_put_((dy + p, dx + p), torch.ones(n), accumulate=True)
    # 81 offsets, expected 98.8 each (std 9.9): all hit, none more than 5 std away
    assert int(counts.min()) > 0 and float((counts - n / 81).abs().max()) < 5 * math.sqrt(n / 81)
    frac = float(flipped.float().mean())
    assert abs(frac - 0.5) < 5 * 0.5 / math.sqrt(n)  # 5 std of a Binomial(n, 1/2) fraction
    # Each output equals the reference: zero-pad, crop at the inferred offset, mirror if flipped.
    src = F.pad(positions(1, CPU), (p, p, p, p))[0].long()
    for i in range(0, n, 97):
        ref = src[:, p + int(dy[i]) : p + int(dy[i]) + 32, p + int(dx[i]) : p + int(dx[i]) + 32]
        assert torch.equal(out[i], ref.flip(-1) if flipped[i] else ref), i


def test_augment_options_and_dtypes() -> None:
    x = positions(300, CPU)
    assert torch.equal(augment_batch(x, gen(CPU), padding=0, flip=False), x)
    only_flip = augment_batch(x, gen(CPU), padding=0, flip=True)
    flipped = (only_flip == x.flip(-1)).flatten(1).all(1)
    assert bool(((only_flip == x).flatten(1).all(1) | flipped).all()) and 0 < int(flipped.sum()) < 300
    only_crop = augment_batch(x, gen(CPU), padding=2, flip=False)
    assert bool((only_crop[:, 1, 16, 17] > only_crop[:, 1, 16, 16]).all())  # never mirrored
    xf = x.float() / 255
    same_draws = augment_batch(xf, gen(CPU, 4), padding=4, flip=True)
    assert torch.equal(same_draws, augment_batch(x, gen(CPU, 4), padding=4, flip=True).float() / 255)


# ---------------------------------------------------------------------------------------------
# learnability calibration: the synthetic data must make curves move within two short epochs


def small_cnn(classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    for c_in in (3, 32, 32):
        layers += [nn.Conv2d(c_in, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(32 * 4 * 4, classes))


def val_accuracy_after_two_epochs(classes: int, seed: int) -> float:
    data = load_data(DataConfig(classes=classes, train_size=2000, val_size=500, test_size=10, seed=seed), CPU)
    torch.manual_seed(seed)
    model = small_cnn(classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = gen(CPU, seed)
    for _ in range(2):
        for xb, yb in data.train_batches(100, g, augment=True):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    with torch.no_grad():
        correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in data.eval_batches("val", 500))
    return correct / data.sizes["val"]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small convolutions on a busy 2-core machine run ~5x faster on one thread than on two (the
    second thread's spin-waits collide with other processes); results are the same."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("classes,bound,seed", [(100, 0.10, 0), (100, 0.10, 1), (10, 0.50, 0)])
def test_synthetic_is_learnable(one_thread: None, classes: int, bound: float, seed: int) -> None:
    """Measured on 12 data x init seed pairs: 100 classes 0.21-0.32, 10 classes 0.82-0.91 (chance
    0.01 / 0.10), so the bounds hold with about a factor-two margin. About 3 s each."""
    acc = val_accuracy_after_two_epochs(classes, seed)
    assert acc > bound, f"{classes} classes, seed {seed}: val accuracy {acc:.3f}"
    assert acc < 0.99  # and not trivial


# ---------------------------------------------------------------------------------------------
# CIFAR: a fake copy in torchvision's on-disk format, the split, and the offline error


def write_fake_cifar(root: Path, name: str, per_file: int, url: str = "") -> type:
    """Write pickled batches like the real archives and return a torchvision CIFAR subclass whose
    checksums are those of the files written (torchvision verifies md5s before reading)."""
    import torchvision

    base = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    classes, key = (10, "labels") if name == "cifar10" else (100, "fine_labels")
    folder = root / base.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(fname: str, obj: object) -> list[str]:
        blob = pickle.dumps(obj)
        (folder / fname).write_bytes(blob)
        return [fname, hashlib.md5(blob).hexdigest()]

    def batch(fname: str) -> list[str]:
        data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        return dump(fname, {"data": data, key: [int(v) for v in rng.permutation(per_file) % classes]})

    attrs = {
        "train_list": [batch(f) for f, _ in base.train_list],
        "test_list": [batch(f) for f, _ in base.test_list],
        "meta": {
            **base.meta,
            "md5": dump(base.meta["filename"], {base.meta["key"]: list(range(classes))})[1],
        },
        "url": url or base.url,
    }
    return type("Fake" + base.__name__, (base,), attrs)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_fake_cifar_on_disk_to_device(tmp_path: Path, name: str) -> None:
    fake = write_fake_cifar(tmp_path, name, per_file=1000)
    tx, ty, vx, vy = read_cifar(name, tmp_path, download=False, dataset_cls=fake)
    assert tx.shape == (5000 if name == "cifar10" else 1000, 32, 32, 3) and tx.dtype == np.uint8
    classes = 10 if name == "cifar10" else 100
    cfg = DataConfig(name=name, val_size=classes * 3, seed=1)
    data = cifar_from_arrays(name, tx, ty, vx, vy, cfg, CPU)
    assert data.num_classes == classes and data.input_shape == (3, 32, 32)
    assert data.sizes == {"train": len(ty) - classes * 3, "val": classes * 3, "test": 1000}
    assert torch.bincount(data.y["val"], minlength=classes).tolist() == [3] * classes
    # the NCHW tensors hold the same pixels as the pickled rows (which are CHW-flattened)
    assert torch.equal(
        data.x["test"].reshape(1000, -1), torch.from_numpy(vx.transpose(0, 3, 1, 2).reshape(1000, -1))
    )
    every = torch.cat([data.x["train"], data.x["val"]]).reshape(len(ty), -1)
    ref = torch.from_numpy(np.ascontiguousarray(tx.transpose(0, 3, 1, 2)).reshape(len(ty), -1))
    assert torch.equal(every.unique(dim=0), ref.unique(dim=0))  # train + val = the training set
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    assert data.mean == mean and data.std == std


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_split_sizes_and_balanced_val(name: str, classes: int) -> None:
    rng = np.random.default_rng(0)
    tx = np.zeros((50000, 32, 32, 3), dtype=np.uint8)
    ty = rng.permutation(50000) % classes
    vx, vy = np.zeros((10000, 32, 32, 3), dtype=np.uint8), np.arange(10000) % classes
    data = cifar_from_arrays(name, tx, ty, vx, vy, DataConfig(name=name), CPU)
    assert data.sizes == {"train": 47500, "val": 2500, "test": 10000}
    assert torch.bincount(data.y["val"], minlength=classes).tolist() == [2500 // classes] * classes
    again = cifar_from_arrays(name, tx, ty, vx, vy, DataConfig(name=name), CPU)
    assert torch.equal(data.y["val"], again.y["val"])  # fixed by the seed
    capped = cifar_from_arrays(
        name, tx, ty, vx, vy, DataConfig(name=name, train_size=1000, test_size=500), CPU
    )
    assert capped.sizes == {"train": 1000, "val": 2500, "test": 500}
    with pytest.raises(ConfigError, match="train_size"):
        cifar_from_arrays(name, tx, ty, vx, vy, DataConfig(name=name, train_size=47501), CPU)


def test_data_root_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUITRAIN_DATA", str(tmp_path / "env"))
    assert data_root(DataConfig(dir=str(tmp_path / "cfg"))) == tmp_path / "cfg"
    assert data_root(DataConfig()) == tmp_path / "env"
    monkeypatch.delenv("TUITRAIN_DATA")
    assert data_root(DataConfig()) == Path.home() / ".cache/tuitrain/data"


def assert_clean_cifar_error(err: pytest.ExceptionInfo[ConfigError], title: str, where: Path) -> None:
    msg = str(err.value)
    assert title in msg and str(where) in msg
    for hint in ("--data-dir", "TUITRAIN_DATA", "data.dir", "--data synthetic"):
        assert hint in msg
    assert "\n" not in msg and err.value.__cause__ is None and err.value.__suppress_context__


def test_cifar_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_data(DataConfig(name="cifar100", dir=str(tmp_path), download=False), CPU)
    assert_clean_cifar_error(err, "CIFAR-100", tmp_path)
    assert "data.download = false" in str(err.value)


def test_cifar_download_failure_is_fast_and_clean(tmp_path: Path) -> None:
    # Port 9 on localhost refuses connections everywhere, so this exercises torchvision's real
    # download path and our error handling without depending on whether this machine is online.
    fake = write_fake_cifar(tmp_path / "unused", "cifar10", per_file=10, url="http://127.0.0.1:9/c.tar.gz")
    before = socket.getdefaulttimeout()
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        read_cifar("cifar10", tmp_path / "empty", download=True, dataset_cls=fake)
    assert time.perf_counter() - t0 < 10
    assert_clean_cifar_error(err, "CIFAR-10", tmp_path / "empty")
    assert "download failed" in str(err.value) and socket.getdefaulttimeout() == before


def online() -> bool:
    try:
        socket.create_connection(("www.cs.toronto.edu", 443), timeout=2).close()
        return True
    except OSError:
        return False


def test_cifar_offline_via_load_data(tmp_path: Path) -> None:
    if online():
        pytest.skip("online: this would download CIFAR-10 (170 MB)")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_data(DataConfig(name="cifar10", dir=str(tmp_path), download=True), CPU)
    assert time.perf_counter() - t0 < 30  # torchvision import + a failed name lookup
    assert_clean_cifar_error(err, "CIFAR-10", tmp_path)
