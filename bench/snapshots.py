"""Benchmark: what the snapshots (``tuitrain.train.snapshots``) cost at the moments they are taken,
against one training epoch of the same model and data (a script, not a test; issue 12).

Per case: the preset's model and data made small (synthetic 16 x 16 images for VGG38, toy2d as it is),
the planner at the default cap, then ``epochs`` plain training epochs (forward, cross-entropy,
backward, Adam), timing ``at_start`` once, ``epoch_end`` after each epoch, and the test evaluation
with and without the misclassified collector plus ``at_end``. Printed as milliseconds and as a share
of the median epoch; the numbers go to docs/performance.md.

    OMP_NUM_THREADS=1 python bench/snapshots.py             # vgg38 small and toy2d_mlp
    OMP_NUM_THREADS=1 python bench/snapshots.py --epochs 2  # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuitrain.config import load_config  # noqa: E402
from tuitrain.train.data import load_data  # noqa: E402
from tuitrain.train.engine import evaluate  # noqa: E402
from tuitrain.train.models import build_model  # noqa: E402
from tuitrain.train.snapshots import Snapshotter  # noqa: E402

PRESETS = Path(__file__).resolve().parents[1] / "tuitrain" / "presets"
CASES = {
    "vgg38 small (16x16 synthetic, 2,000 images)": (
        "vgg38",
        ["data.name=synthetic", "data.image_size=16", "data.train_size=2000", "data.test_size=1000"],
    ),
    "toy2d_mlp (2,000 points)": ("toy2d_mlp", []),
}


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def bench(preset: str, sets: list[str], epochs: int) -> dict[str, float]:
    torch.manual_seed(0)
    cfg = load_config(PRESETS / f"{preset}.toml", sets)
    device = torch.device("cpu")
    data = load_data(cfg.data, device)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    snap = Snapshotter.plan(model, data, cfg.monitor, epochs)
    plan = ms(t0)
    t0 = time.perf_counter()
    snap.at_start(0)
    start = ms(t0)
    epoch_ms, end_ms = [], []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for x, y in data.train_batches(cfg.train.batch_size, g, False):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        epoch_ms.append(ms(t0))
        t0 = time.perf_counter()
        snap.epoch_end(epoch, epoch)
        end_ms.append(ms(t0))
    bs = cfg.train.eval_batch_size
    plain, collected, at_end = [], [], []
    for _ in range(5):  # alternating, medians: a single test evaluation is too noisy to subtract
        t0 = time.perf_counter()
        evaluate(model, data, "test", bs, contextlib.nullcontext)
        plain.append(ms(t0))
        t0 = time.perf_counter()
        collector = snap.collector()
        evaluate(model, data, "test", bs, contextlib.nullcontext, collect=collector)
        collected.append(ms(t0))
        t0 = time.perf_counter()
        snap.at_end(epochs - 1, epochs, collector)
        at_end.append(ms(t0))
    return {
        "epoch": statistics.median(epoch_ms),
        "plan": plan,
        "at_start": start,
        "epoch_end": statistics.median(end_ms),
        "test evaluation": statistics.median(plain),
        "  + the collector in it": statistics.median(collected) - statistics.median(plain),
        "at_end (the misclassified)": statistics.median(at_end),
        "MB declared": sum(s.max_bytes for s in snap.specs) / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    for title, (preset, sets) in CASES.items():
        r = bench(preset, sets, args.epochs)
        epoch = r.pop("epoch")
        mb = r.pop("MB declared")
        print(f"{title}: epoch {epoch:.0f} ms, snapshots declare {mb:.3f} MB")
        for k, v in r.items():
            print(f"  {k:36s} {v:8.2f} ms  {v / epoch:7.2%} of an epoch")


if __name__ == "__main__":
    main()
