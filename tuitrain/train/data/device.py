"""A dataset held whole on the training device, and the batch iterators over it.

A batch is one ``index_select``, one ``gather`` that does the random crop and flip for the whole batch
(:func:`augment_batch`), and an in-place multiply and add that normalise; all random draws come from
the engine's ``torch.Generator`` on the device, so a run is reproducible from its seed. Data-parallel
ranks each take their share of every epoch here (:meth:`DeviceData.train_batches`,
:meth:`DeviceData.eval_batches`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor


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
    ``class_names`` label the misclassified samples of the report and the Images screen.
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
    # Names of the classes, index = label (CIFAR's, from its meta file); () when the data have none.
    class_names: tuple[str, ...] = ()
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
