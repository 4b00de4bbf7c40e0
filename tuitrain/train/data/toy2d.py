"""toy2d: spirals, moons and blobs, for MLPs whose decision boundaries can be drawn."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from tuitrain.config import ConfigError, DataConfig
from tuitrain.train.data.device import DeviceData
from tuitrain.train.data.splits import balanced_labels, split_sizes, to_splits

TOY2D_SIZES = (2000, 500, 500)


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
    sizes = split_sizes(cfg, TOY2D_SIZES)
    x, y = toy2d_points(cfg.shape, sizes, cfg.classes, cfg.seed, cfg.noise)
    train = x[: sizes[0]]
    x = (x - train.mean(0)) / train.std(0).clamp_min(1e-6)
    xs, ys = to_splits(x, y, sizes, device)
    return DeviceData("toy2d", cfg.classes, (2,), xs, ys, augmentable=False)
