"""Train/val/test splits shared by the generated datasets: sizes with defaults, balanced labels,
consecutive slices moved to the device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tuitrain.config import DataConfig

SPLITS = ("train", "val", "test")


def split_sizes(cfg: DataConfig, defaults: tuple[int, int, int]) -> tuple[int, int, int]:
    return (cfg.train_size or defaults[0], cfg.val_size or defaults[1], cfg.test_size or defaults[2])


def balanced_labels(sizes: Sequence[int], classes: int, generator: torch.Generator) -> Tensor:
    """Labels for consecutive splits of ``sizes``, each split balanced on its own (every class count
    within one of size / classes) and shuffled, so that val and test accuracy weigh classes equally."""
    parts = [(torch.arange(n) % classes)[torch.randperm(n, generator=generator)] for n in sizes]
    return torch.cat(parts)


def to_splits(x: Tensor, y: Tensor, sizes: tuple[int, ...], device: torch.device) -> tuple[dict, dict]:
    xs, ys, start = {}, {}, 0
    for split, n in zip(SPLITS, sizes, strict=True):
        xs[split] = x[start : start + n].to(device)
        ys[split] = y[start : start + n].to(device)
        start += n
    return xs, ys
