"""Datasets held whole on the training device, with batched, on-device normalisation and augmentation.

Why not ``Dataset`` + ``DataLoader``: CIFAR is 184 MB as uint8, so every split fits on any GPU, and a
per-sample PIL pipeline (crop, flip, ToTensor, Normalize in worker processes) caps a small CNN at a few
thousand images/s, far below what the GPU can train. Here a batch is one ``index_select``, one
``gather`` that does the random crop and flip for the whole batch, and an in-place multiply and add
that normalise; all random draws come from the engine's ``torch.Generator`` on the device, so a run is
reproducible from its seed. ``bench/data.py`` measures the difference.

Splits are ``train``, ``val`` and ``test``. Images are stored as uint8 N x 3 x 32 x 32 (augmentation runs
on uint8, before normalisation, exactly like torchvision's RandomCrop on a PIL image); toy2d points are
stored as standardised float32 N x 2. Labels are int64.

The parts: :mod:`~tuitrain.train.data.device` (:class:`DeviceData`, batched augmentation, rank
sharding), one module per dataset (:mod:`~tuitrain.train.data.synthetic`,
:mod:`~tuitrain.train.data.toy2d`, :mod:`~tuitrain.train.data.cifar`) and
:mod:`~tuitrain.train.data.splits` (what the generated ones share). Import from
``tuitrain.train.data``.
"""

from __future__ import annotations

import torch

from tuitrain.config import DATASET_CLASSES, ConfigError, DataConfig
from tuitrain.train.data.cifar import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    CIFAR_FOLDERS,
    CIFAR_STATS,
    CIFAR_TITLES,
    CIFAR_VAL_SIZE,
    DOWNLOAD_SOCKET_TIMEOUT,
    cifar_class_names,
    cifar_from_arrays,
    data_root,
    load_cifar,
    read_cifar,
)
from tuitrain.train.data.device import DeviceData, augment_batch
from tuitrain.train.data.splits import SPLITS, balanced_labels
from tuitrain.train.data.synthetic import SYNTHETIC_SIZES, load_synthetic, synthetic_images
from tuitrain.train.data.toy2d import TOY2D_SIZES, load_toy2d, toy2d_points

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR_FOLDERS",
    "CIFAR_STATS",
    "CIFAR_TITLES",
    "CIFAR_VAL_SIZE",
    "DOWNLOAD_SOCKET_TIMEOUT",
    "SPLITS",
    "SYNTHETIC_SIZES",
    "TOY2D_SIZES",
    "DeviceData",
    "augment_batch",
    "balanced_labels",
    "cifar_class_names",
    "cifar_from_arrays",
    "data_root",
    "load_cifar",
    "load_data",
    "load_synthetic",
    "load_toy2d",
    "read_cifar",
    "synthetic_images",
    "toy2d_points",
]


def load_data(cfg: DataConfig, device: torch.device) -> DeviceData:
    """Build the dataset named by ``cfg.name`` with every split on ``device``. Raises ConfigError for
    anything the user must fix (missing CIFAR files offline, moons with classes != 2, sizes too big)."""
    if cfg.name == "synthetic":
        return load_synthetic(cfg, device)
    if cfg.name == "toy2d":
        return load_toy2d(cfg, device)
    if cfg.name in DATASET_CLASSES:
        return load_cifar(cfg, device)
    raise ConfigError(f"`data.name` = {cfg.name!r}; allowed: synthetic, cifar10, cifar100, toy2d.")
