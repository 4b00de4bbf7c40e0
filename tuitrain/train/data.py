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
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tuitrain.config import DATASET_CLASSES, ConfigError, DataConfig

# Per-channel statistics of the 50,000 training images, in [0, 1] units (population std, which is what
# Normalize should divide by; the often-copied (0.2023, 0.1994, 0.2010) is a different statistic).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR_STATS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}
CIFAR_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}

SPLITS = ("train", "val", "test")
SYNTHETIC_SIZES = (5000, 500, 1000)
TOY2D_SIZES = (2000, 500, 500)
CIFAR_VAL_SIZE = 2500
DOWNLOAD_SOCKET_TIMEOUT = 20.0  # seconds per blocking socket operation, so an offline fetch cannot hang


def augment_batch(x: Tensor, generator: torch.Generator, padding: int, flip: bool) -> Tensor:
    """Random crop with ``padding`` pixels of **zero** padding, and a horizontal flip of each image
    with probability 1/2, for a whole N x C x H x W batch at once (any dtype; on x's device).

    Zero padding is torchvision's ``RandomCrop(32, padding=4)`` default, so on uint8 input this matches
    the reference pipeline pixel for pixel. The batch is padded once; each output pixel is then fetched
    with one ``gather`` whose flat index folds in the sample's (dy, dx) offset and, for flipped samples,
    the reversed column order, so there is no Python loop over samples and no per-sample kernel launch.
    Offsets are uniform over {0..2p}^2 of the padded image, i.e. shifts in [-p, p]^2.
    """
    n, c, h, w = x.shape
    if n == 0 or (padding == 0 and not flip):
        return x
    dev = x.device
    hp, wp = h + 2 * padding, w + 2 * padding
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    off = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=dev)
    rows = torch.arange(h, device=dev)[:, None] * wp
    cols = torch.arange(w, device=dev)
    index = (rows + cols).view(1, h * w)  # flat pixel index of the window at offset (0, 0)
    if flip:
        flipped = torch.rand(n, generator=generator, device=dev) < 0.5
        index = torch.where(flipped[:, None], (rows + (w - 1 - cols)).view(1, h * w), index)
    index = (index + (off[:, :1] * wp + off[:, 1:])).view(n, 1, h * w).expand(n, c, h * w)
    out = padded.reshape(n, c, hp * wp).gather(2, index)
    return out.reshape(n, c, h, w)


@dataclass
class DeviceData:
    """Every split of one dataset as tensors on the training device, and the batch iterators over them.

    ``scale``/``shift`` fold ``(x / 255 - mean) / std`` into one multiply-add per channel (identity for
    toy2d, whose points are standardised when generated). ``padding``/``flip`` are the augmentation
    settings from the config; ``augmentable`` is False for data where a crop means nothing (toy2d).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    x: dict[str, Tensor]
    y: dict[str, Tensor]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    padding: int = 4
    flip: bool = True
    augmentable: bool = True
    scale: Tensor = field(init=False, repr=False)
    shift: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        mean = torch.tensor(self.mean or (0.0,), dtype=torch.float64)
        std = torch.tensor(self.std or (1 / 255,), dtype=torch.float64)  # no stats: identity
        self.scale = (
            (1.0 / (255.0 * std)).float().view(1, -1, *[1] * (len(self.input_shape) - 1)).to(self.device)
        )
        self.shift = (-mean / std).float().view_as(self.scale).to(self.device)

    @property
    def device(self) -> torch.device:
        return self.x["train"].device

    @property
    def sizes(self) -> dict[str, int]:
        return {split: int(t.shape[0]) for split, t in self.x.items()}

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        """Optimiser steps in one epoch of global batch ``batch_size``: the last, partial batch counts
        (it is kept). Over ``world_size`` ranks each rank has ``n // world_size`` samples in batches of
        ``batch_size // world_size`` (see :meth:`train_batches`)."""
        return math.ceil(self.sizes["train"] // world_size / (batch_size // world_size))

    def normalize(self, x: Tensor) -> Tensor:
        """Stored samples (uint8 images or float points) -> float32 model input."""
        return x.to(torch.float32, copy=True).mul_(self.scale).add_(self.shift)  # in place: 3x faster

    def train_batches(
        self, batch_size: int, generator: torch.Generator, augment: bool, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of (inputs, labels) in a fresh order drawn with ``generator`` on the device, the
        last partial batch included; crop/flip applied when ``augment`` and the data are images.

        Data-parallel (``world_size`` > 1, ``batch_size`` the per-rank batch): every rank seeds its
        generator alike, so all draw the same permutation, and rank r keeps entries r, r + N, r + 2N...
        of it, cut to ``n // world_size`` so that all ranks take the same number of steps (at most
        N - 1 samples an epoch are left out, a different few each epoch). The ranks' k-th batches
        together are then exactly the single-process k-th batch of the global size. The generator stays
        in step across ranks because every rank draws the same amounts from it.
        """
        n = self.sizes["train"]
        if generator.device.type != self.device.type:
            raise ValueError(
                f"the generator is on {generator.device} but the data are on {self.device}; "
                f"create it with torch.Generator(device={str(self.device)!r})"
            )
        perm = torch.randperm(n, generator=generator, device=self.device)
        if world_size > 1:
            perm = perm[rank : n // world_size * world_size : world_size].contiguous()
            n = perm.numel()
        x_all, y_all = self.x["train"], self.y["train"]
        augment = augment and self.augmentable
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            xb = x_all.index_select(0, idx)
            if augment:
                xb = augment_batch(xb, generator, self.padding, self.flip)
            yield self.normalize(xb), y_all.index_select(0, idx)

    def eval_batches(
        self, split: str, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """(inputs, labels) of ``split`` in stored order, normalised, never augmented. Over
        ``world_size`` ranks, rank r gets the r-th of N contiguous slices (sizes differ by at most one,
        nothing is dropped: evaluation sums are exact however the split is cut)."""
        if split not in self.x:
            raise KeyError(f"no split {split!r}; this dataset has {', '.join(self.x)}")
        x_all, y_all = self.x[split], self.y[split]
        if world_size > 1:
            n = x_all.shape[0]
            lo, hi = n * rank // world_size, n * (rank + 1) // world_size
            x_all, y_all = x_all[lo:hi], y_all[lo:hi]
        for start in range(0, x_all.shape[0], batch_size):
            yield self.normalize(x_all[start : start + batch_size]), y_all[start : start + batch_size]


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


def _sizes(cfg: DataConfig, defaults: tuple[int, int, int]) -> tuple[int, int, int]:
    return (cfg.train_size or defaults[0], cfg.val_size or defaults[1], cfg.test_size or defaults[2])


def balanced_labels(sizes: Sequence[int], classes: int, generator: torch.Generator) -> Tensor:
    """Labels for consecutive splits of ``sizes``, each split balanced on its own (every class count
    within one of size / classes) and shuffled, so that val and test accuracy weigh classes equally."""
    parts = [(torch.arange(n) % classes)[torch.randperm(n, generator=generator)] for n in sizes]
    return torch.cat(parts)


def _split(x: Tensor, y: Tensor, sizes: tuple[int, ...], device: torch.device) -> tuple[dict, dict]:
    xs, ys, start = {}, {}, 0
    for split, n in zip(SPLITS, sizes, strict=True):
        xs[split] = x[start : start + n].to(device)
        ys[split] = y[start : start + n].to(device)
        start += n
    return xs, ys


# ---------------------------------------------------------------------------------------------
# synthetic: class prototypes made of smooth colour blobs, seen through translation, contrast and noise


def synthetic_images(
    sizes: Sequence[int], classes: int, seed: int, noise: float, size: int = 32
) -> tuple[Tensor, Tensor]:
    """uint8 3 x ``size`` x ``size`` images (32: CIFAR-shaped) and labels for consecutive splits of ``sizes`` (each balanced), as CPU
    tensors, deterministic from ``seed``.

    Each class has a prototype on a 36 x 36 canvas: bicubic-upsampled random noise at two scales
    (4 x 4 colour blobs plus weaker 8 x 8 detail), half-blended with a class colour (a cue a CNN picks
    up within a few dozen steps, so that curves move at once even with 100 classes). A sample is a
    random 32 x 32 window of it (shifts of up to +-2 px), mirrored with probability 1/2 (classes are
    flip-invariant like photographs, so flip augmentation preserves labels), with random contrast
    (0.6..1.4) and brightness (+-0.15), up to 25% of another class's prototype blended in, and Gaussian
    pixel noise of std ``noise`` + 0.05 in [0, 1] units. 15% of samples are an even 50/50 blend of two
    classes: ambiguous images that cap accuracy near 92%, so long runs plateau below 100% as on real
    data. Calibration (3 conv layers of 32 filters, Adam 1e-3, batch 100, 2 epochs of 2,000 images,
    crop+flip): 21-32% val accuracy on 100 classes and 82-91% on 10 over 12 seed pairs; after 10 epochs
    of 5,000 images 88% and 93%. Fast: blocks of 512 samples, about 0.2 s for 5,000 images on 2 cores.
    """
    g = torch.Generator().manual_seed(seed)
    canvas = size + 4
    coarse = F.interpolate(torch.rand(classes, 3, 4, 4, generator=g), size=(canvas, canvas), mode="bicubic")
    fine = F.interpolate(torch.rand(classes, 3, 8, 8, generator=g), size=(canvas, canvas), mode="bicubic")
    protos = coarse + 0.5 * fine
    lo = protos.amin(dim=(1, 2, 3), keepdim=True)
    hi = protos.amax(dim=(1, 2, 3), keepdim=True)
    tint = torch.rand(classes, 3, 1, 1, generator=g)
    protos = (0.5 * (protos - lo) / (hi - lo) + 0.5 * tint).reshape(classes, 3, canvas * canvas)
    y = balanced_labels(sizes, classes, g)
    n = len(y)
    other = (y + torch.randint(1, classes, (n,), generator=g)) % classes
    # Window offsets and mirroring become one flat pixel index per sample, as in augment_batch.
    off = torch.randint(0, canvas - size + 1, (n, 2), generator=g)
    cols = torch.arange(size).expand(n, size)
    cols = torch.where((torch.rand(n, generator=g) < 0.5)[:, None], size - 1 - cols, cols)
    rows = off[:, :1] + torch.arange(size)
    pix = (rows[:, :, None] * canvas + (off[:, 1:] + cols)[:, None, :]).reshape(n, 1, size * size)
    # x = 0.5 + contrast * ((1 - mix) * own + mix * other - 0.5) + brightness, as w_own, w_other, bias.
    mix = 0.25 * torch.rand(n, 1, 1, generator=g)
    mix = torch.where(torch.rand(n, 1, 1, generator=g) < 0.15, torch.full_like(mix, 0.5), mix)
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, generator=g)
    bias = 0.5 - 0.5 * contrast + 0.3 * (torch.rand(n, 1, 1, generator=g) - 0.5)
    w_own, w_other = contrast * (1 - mix), contrast * mix
    out = torch.empty(n, 3, size * size, dtype=torch.uint8)
    chunk = 512  # small blocks: the allocator reuses them, where 60 MB temporaries would page-fault
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        img = torch.addcmul(bias[s:e], protos[y[s:e]], w_own[s:e])
        img.addcmul_(protos[other[s:e]], w_other[s:e])
        img = img.gather(2, pix[s:e].expand(-1, 3, -1))
        img.add_(torch.randn(img.shape, generator=g), alpha=noise + 0.05)
        out[s:e] = img.clamp_(0, 1).mul_(255).round_()
    return out.reshape(n, 3, size, size), y


def load_synthetic(cfg: DataConfig, device: torch.device) -> DeviceData:
    """The offline default: needs no files and no network; normalised with its own training stats."""
    sizes = _sizes(cfg, SYNTHETIC_SIZES)
    x, y = synthetic_images(sizes, cfg.classes, cfg.seed, cfg.noise, cfg.image_size)
    train = x[: sizes[0]].double() / 255
    mean = tuple(train.mean(dim=(0, 2, 3)).tolist())
    std = tuple(train.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    xs, ys = _split(x, y, sizes, device)
    return DeviceData(
        "synthetic", cfg.classes, (3, cfg.image_size, cfg.image_size), xs, ys, mean, std, cfg.crop_padding, cfg.flip, True
    )


# ---------------------------------------------------------------------------------------------
# toy2d: spirals, moons and blobs, for MLPs whose decision boundaries can be drawn


def toy2d_points(
    shape: str, sizes: Sequence[int], classes: int, seed: int, noise: float
) -> tuple[Tensor, Tensor]:
    """Raw float32 2-D points and labels for consecutive splits of ``sizes`` (each balanced),
    deterministic from ``seed``.

    spirals: one arm per class, radius 0..1 over 1.5 turns, arms rotated 2 pi / classes apart.
    moons: sklearn's two interleaved half circles (2 classes only). blobs: isotropic Gaussians of
    std 0.25 + noise around centres drawn uniformly in [-2, 2]^2. ``noise`` is the std of the Gaussian
    jitter added to spirals and moons.
    """
    if shape == "moons" and classes != 2:
        raise ConfigError(
            f"`data.classes` = {classes} but toy2d moons has exactly 2 classes; set data.classes = 2."
        )
    g = torch.Generator().manual_seed(seed)
    y = balanced_labels(sizes, classes, g)
    n = len(y)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    jitter = torch.randn(n, 2, generator=g, dtype=torch.float64)
    if shape == "spirals":
        theta = 3 * math.pi * t + 2 * math.pi * y / classes
        pts = t[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1) + noise * jitter
    elif shape == "moons":
        upper = torch.stack([torch.cos(math.pi * t), torch.sin(math.pi * t)], dim=1)
        lower = torch.stack([1 - torch.cos(math.pi * t), 0.5 - torch.sin(math.pi * t)], dim=1)
        pts = torch.where((y == 0)[:, None], upper, lower) + noise * jitter
    elif shape == "blobs":
        centres = 4 * torch.rand(classes, 2, generator=g, dtype=torch.float64) - 2
        pts = centres[y] + (0.25 + noise) * jitter
    else:
        raise ConfigError(f"`data.shape` = {shape!r} is not allowed; allowed: spirals, moons, blobs.")
    return pts.float(), y


def load_toy2d(cfg: DataConfig, device: torch.device) -> DeviceData:
    """Points standardised with the training split's mean/std, so an MLP's default init suits them."""
    sizes = _sizes(cfg, TOY2D_SIZES)
    x, y = toy2d_points(cfg.shape, sizes, cfg.classes, cfg.seed, cfg.noise)
    train = x[: sizes[0]]
    x = (x - train.mean(0)) / train.std(0).clamp_min(1e-6)
    xs, ys = _split(x, y, sizes, device)
    return DeviceData("toy2d", cfg.classes, (2,), xs, ys, augmentable=False)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 via torchvision's on-disk format


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


def cifar_from_arrays(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    cfg: DataConfig,
    device: torch.device,
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
    return DeviceData(name, classes, (3, 32, 32), xs, ys, mean, std, cfg.crop_padding, cfg.flip, True)


def load_cifar(cfg: DataConfig, device: torch.device) -> DeviceData:
    """Read (or download) CIFAR from :func:`data_root` and put every split on ``device``."""
    arrays = read_cifar(cfg.name, data_root(cfg), cfg.download)
    return cifar_from_arrays(cfg.name, *arrays, cfg, device)
