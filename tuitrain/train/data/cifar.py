"""CIFAR-10 / CIFAR-100 via torchvision's on-disk format: found or downloaded, split into train and a
class-balanced val, moved to the device once."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tuitrain.config import DATASET_CLASSES, ConfigError, DataConfig
from tuitrain.train.data.device import DeviceData

# Per-channel statistics of the 50,000 training images, in [0, 1] units (population std, which is what
# Normalize should divide by; the often-copied (0.2023, 0.1994, 0.2010) is a different statistic).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR_STATS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}
CIFAR_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
# The meta file of each copy and the key of its class names (what torchvision reads too).
CIFAR_META = {"cifar10": ("batches.meta", "label_names"), "cifar100": ("meta", "fine_label_names")}

CIFAR_VAL_SIZE = 2500
DOWNLOAD_SOCKET_TIMEOUT = 20.0  # seconds per blocking socket operation, so an offline fetch cannot hang


def data_root(cfg: DataConfig) -> Path:
    """``data.dir``, else $TUITRAIN_DATA, else ~/.cache/tuitrain/data."""
    root = cfg.dir or os.environ.get("TUITRAIN_DATA", "") or "~/.cache/tuitrain/data"
    return Path(root).expanduser()


def read_cifar(
    name: str, root: Path, download: bool, dataset_cls: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images NHWC uint8, train labels, test images, test labels) read by torchvision.

    Any failure (files absent, download impossible, corrupt archive) becomes one ConfigError telling
    the user where we looked and how to fix it. While torchvision runs, the process-wide default
    socket timeout is 20 s, so a firewalled network fails instead of hanging; offline, name lookup
    fails in milliseconds. ``dataset_cls`` replaces torchvision's class (tests use a subclass whose
    checksums match a small fake copy).
    """
    import torchvision  # here, not at module level: importing it costs seconds

    cls = dataset_cls or (
        torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    )
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except Exception as e:  # urllib, tarfile, pickle, torchvision errors: all mean "no usable copy"
        title, folder = CIFAR_TITLES[name], root / CIFAR_FOLDERS[name]
        how = (
            f"the download failed ({type(e).__name__}: {e})"
            if download
            else "downloading is off (`data.download = false`)"
        )
        raise ConfigError(
            f"{title} is not available: no usable copy in {folder} and {how}. If you have a copy, point "
            f"tuitrain at the directory that contains `{CIFAR_FOLDERS[name]}` with --data-dir DIR, the "
            "TUITRAIN_DATA environment variable or `data.dir` in the preset; otherwise connect to the "
            "network and keep `data.download = true`, or use --data synthetic, which needs no files."
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)
    return train.data, np.asarray(train.targets), test.data, np.asarray(test.targets)


def cifar_class_names(name: str, root: Path) -> tuple[str, ...]:
    """The class names from the copy's meta file (index = label), or () when it is absent or
    unreadable: names only label pictures (misclassified samples), so their absence is no error."""
    fname, key = CIFAR_META[name]
    try:
        with open(root / CIFAR_FOLDERS[name] / fname, "rb") as f:
            names = pickle.load(f, encoding="latin1")[key]
    except Exception:  # noqa: BLE001 - absent, truncated or foreign: no names
        return ()
    if len(names) != DATASET_CLASSES[name]:
        return ()
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def cifar_from_arrays(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    cfg: DataConfig,
    device: torch.device,
    class_names: tuple[str, ...] = (),
) -> DeviceData:
    """CIFAR arrays as torchvision holds them (N x 32 x 32 x 3 uint8) -> DeviceData.

    Validation is a class-balanced subset of ``val_size`` (2,500) training images chosen with
    ``cfg.seed``; train is the rest in original order (its first ``train_size`` if set); test is the
    first ``test_size`` of the test set. The NHWC -> NCHW copy happens once, here.
    """
    classes = DATASET_CLASSES[name]
    n = len(train_y)
    val_size = cfg.val_size or CIFAR_VAL_SIZE
    if val_size >= n:
        raise ConfigError(f"`data.val_size` = {val_size} leaves no training images; {name} has {n}.")
    labels = torch.as_tensor(train_y, dtype=torch.int64)
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(n, generator=g)
    # Group the shuffled indices by class (stable sort keeps the shuffle within a class); rank each
    # index within its class and keep the first quota[c] of class c.
    grouped = perm[torch.sort(labels[perm], stable=True).indices]
    counts = torch.bincount(labels, minlength=classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[labels[grouped]]
    quota = torch.full((classes,), val_size // classes)
    quota[: val_size % classes] += 1
    if bool((quota > counts).any()):
        raise ConfigError(f"`data.val_size` = {val_size} asks for more images of a class than {name} has.")
    val_idx = grouped[rank < quota[labels[grouped]]].sort().values
    train_idx = torch.ones(n, dtype=torch.bool).index_fill_(0, val_idx, False).nonzero().squeeze(1)
    for key, want, have in (
        ("train_size", cfg.train_size, len(train_idx)),
        ("test_size", cfg.test_size, len(test_y)),
    ):
        if want > have:
            raise ConfigError(f"`data.{key}` = {want} but {name} has only {have} images for that split.")
    if cfg.train_size:
        train_idx = train_idx[: cfg.train_size]
    n_test = cfg.test_size or len(test_y)

    # Raw NHWC bytes go to the device once; selecting and the NCHW transpose then run there.
    images = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.uint8)).to(device)
    test_images = torch.from_numpy(np.ascontiguousarray(test_x[:n_test], dtype=np.uint8)).to(device)

    def pick(idx: Tensor) -> Tensor:
        return images.index_select(0, idx.to(device)).permute(0, 3, 1, 2).contiguous()

    xs = {
        "train": pick(train_idx),
        "val": pick(val_idx),
        "test": test_images.permute(0, 3, 1, 2).contiguous(),
    }
    ys = {
        "train": labels[train_idx],
        "val": labels[val_idx],
        "test": torch.as_tensor(np.asarray(test_y[:n_test])),
    }
    ys = {split: t.to(device, torch.int64) for split, t in ys.items()}
    mean, std = CIFAR_STATS[name]
    return DeviceData(
        name, classes, (3, 32, 32), xs, ys, mean, std, cfg.crop_padding, cfg.flip, True, tuple(class_names)
    )


def load_cifar(cfg: DataConfig, device: torch.device) -> DeviceData:
    """Read (or download) CIFAR from :func:`data_root` and put every split on ``device``."""
    root = data_root(cfg)
    arrays = read_cifar(cfg.name, root, cfg.download)
    return cifar_from_arrays(cfg.name, *arrays, cfg, device, cifar_class_names(cfg.name, root))
