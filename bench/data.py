"""Benchmark: tuitrain's on-device data pipeline vs torchvision Dataset + DataLoader + transforms.

Both sides serve the same 50,000 CIFAR-shaped uint8 images (random arrays: real CIFAR needs a
download) with the same augmentation: random 32 x 32 crop of the 4-pixel zero-padded image, random
horizontal flip, then per-channel normalisation, in shuffled batches of float32 N x 3 x 32 x 32.
The reference is the usual recipe: PIL images, ``RandomCrop(32, padding=4)``,
``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize(mean, std)``, ``DataLoader(shuffle=True)``,
with 0 and with ``--workers`` worker processes. Prints samples/s side by side and the ratio of the
best of ours (default threads, one thread) to the best reference; exits 1 if below 5 (target 10).

    python bench/data.py [--device cpu] [--batch-size 128] [--batches 0] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import Tensor

from tuitrain.train.data import CIFAR10_MEAN, CIFAR10_STD, DeviceData

N_IMAGES = 50_000
TARGET, FLOOR = 10.0, 5.0


class ArrayCIFAR(torch.utils.data.Dataset):
    """What torchvision's CIFAR10 does per item: a PIL image from an HWC uint8 row, then transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def measure(batches: Iterable[tuple[Tensor, Tensor]], limit: int, device: torch.device) -> tuple[float, int]:
    """Samples/s over up to ``limit`` batches (0: all) after two warm-up batches."""
    it = iter(batches)
    for _ in range(2):
        next(it)
    n, t0 = 0, time.perf_counter()
    for i, (x, _) in enumerate(it):
        n += x.shape[0]
        if limit and i + 1 >= limit:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=0, help="timed batches per pipeline (0: one epoch)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the second reference run")
    args = ap.parse_args()
    default_threads = torch.get_num_threads()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_IMAGES, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, N_IMAGES)

    # ours: the same NHWC -> NCHW step as the CIFAR loader, everything in the training split
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels).to(device)
    splits_x, splits_y = {"train": x, "val": x[:1], "test": x[:1]}, {"train": y, "val": y[:1], "test": y[:1]}
    data = DeviceData("bench", 10, (3, 32, 32), splits_x, splits_y, CIFAR10_MEAN, CIFAR10_STD, 4, True)
    g = torch.Generator(device=device).manual_seed(0)

    def ours() -> Iterable[tuple[Tensor, Tensor]]:
        while True:  # epochs back to back, so warm-up batches never shorten the timed run
            yield from data.train_batches(args.batch_size, g, augment=True)

    # Ours at torch's default intra-op threads and at one: on a busy 2-core machine the second
    # thread's spin-waits can cost more than it gains on these small tensors (both rows are shown).
    rows: list[tuple[str, float, int]] = []
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        rate, n = measure(ours(), args.batches or N_IMAGES // args.batch_size, device)
        rows.append((f"tuitrain DeviceData ({device.type}, {threads} thr)", rate, n))
    torch.set_num_threads(default_threads)
    n_ours = len(rows)

    from torchvision import transforms

    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )
    dataset = ArrayCIFAR(images, labels, tf)
    for workers in sorted({0, args.workers}):
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
        )

        def reference(loader: torch.utils.data.DataLoader = loader) -> Iterable[tuple[Tensor, Tensor]]:
            while True:
                for xb, yb in loader:
                    yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

        rate, n = measure(reference(), args.batches or N_IMAGES // args.batch_size - 3, device)
        rows.append((f"torchvision DataLoader, {workers} workers", rate, n))

    best_ours = max(r for _, r, _ in rows[:n_ours])
    best_ref = max(r for _, r, _ in rows[n_ours:])
    ratio = best_ours / best_ref
    print(
        f"{N_IMAGES:,} CIFAR-shaped images, batch {args.batch_size}, crop(pad 4)+flip+normalise, "
        f"torch {torch.__version__}"
    )
    print(f"{'pipeline':<40} {'samples/s':>12} {'timed':>8} {'vs ours':>8}")
    for name, rate, n in rows:
        print(f"{name:<40} {rate:>12,.0f} {n:>8,} {best_ours / rate:>7.1f}x")
    verdict = "ok" if ratio >= TARGET else ("below target" if ratio >= FLOOR else "FAIL")
    print(
        f"ratio best of ours / best reference: {ratio:.1f}x (target >= {TARGET:g}x, fail < {FLOOR:g}x): {verdict}"
    )
    return 0 if ratio >= FLOOR else 1


if __name__ == "__main__":
    sys.exit(main())
