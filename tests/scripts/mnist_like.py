"""A training script written like PyTorch's MNIST example (its own nn.Module with convolutions and
linear layers, a DataLoader, Adadelta, StepLR), on small synthetic 1x8x8 images of 10 classes, with
the three lines of tuitrain's API. Tests run it as a user would (``python mnist_like.py``, or under
``tuitrain watch`` / ``run``) and import it to train the same model in plain torch for reference.

Flags beyond the example's: ``--fail-at N`` raises after step N (a deliberate bug), ``--sleep S``
sleeps S seconds a step (time to press Ctrl-C), ``--with`` uses ``with tuitrain.init(...) as run``,
``--no-finish`` leaves the ending to the interpreter's exit, ``--compile`` trains a torch.compile'd
model.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset

import tuitrain


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1)  # 8x8 -> 6x6
        self.conv2 = nn.Conv2d(4, 8, 3, 1)  # 6x6 -> 4x4, pooled to 2x2
        self.fc1 = nn.Linear(32, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="MNIST-like training on synthetic 8x8 images")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--gamma", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--name", default=None)
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--fail-at", type=int, default=-1)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--with", dest="with_block", action="store_true")
    p.add_argument("--no-finish", action="store_true")
    p.add_argument("--compile", action="store_true")
    return p.parse_args(argv)


def dataset(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


def build(args: argparse.Namespace):
    """Model, loaders, optimizer and scheduler, seeded: the same in the script and in a test."""
    torch.manual_seed(args.seed)
    model = Net()
    train_loader = DataLoader(dataset(args.train_size, args.seed), batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(dataset(32, args.seed + 1), batch_size=16)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    return model, train_loader, val_loader, optimizer, scheduler


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    model.eval()
    loss = correct = n = 0
    for x, y in loader:
        out = model(x)
        loss += F.nll_loss(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        n += len(y)
    model.train()
    return loss / n, correct / n


def fit(args, model, train_loader, val_loader, optimizer, scheduler, run=None) -> int:
    """The example's loop; ``run`` None is plain torch (the tests' reference). Returns the steps."""
    forward = torch.compile(model) if args.compile else model
    steps = 0
    for _epoch in range(args.epochs):
        for x, y in train_loader:
            optimizer.zero_grad()
            out = forward(x)
            loss = F.nll_loss(out, y)
            loss.backward()
            optimizer.step()
            if run is not None:
                acc = (out.argmax(1) == y).float().mean()
                run.log({"loss": loss, "acc": acc, "margin": out.max(1).values.mean()})
            if steps == args.fail_at:
                raise RuntimeError(f"deliberate failure at step {steps}")
            steps += 1
            if args.sleep:
                print(f"step {steps}", flush=True)
                time.sleep(args.sleep)
        val_loss, val_acc = evaluate(model, val_loader)
        if run is not None:
            run.log_epoch({"val_loss": val_loss, "val_acc": val_acc, "val_error": 1 - val_acc})
        scheduler.step()
    return steps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model, train_loader, val_loader, optimizer, scheduler = build(args)
    kwargs = dict(
        name=args.name,
        out=args.out,
        config=vars(args),
        epochs=args.epochs,
        steps_per_epoch=len(train_loader),
        batch_size=args.batch_size,
        num_classes=10,
        every=args.every,
    )
    if args.with_block:
        with tuitrain.init(**kwargs) as run:
            run.watch(model, optimizer)
            steps = fit(args, model, train_loader, val_loader, optimizer, scheduler, run)
            run.log_test(dict(zip(("test_loss", "test_acc"), evaluate(model, val_loader), strict=True)))
    else:
        run = tuitrain.init(**kwargs)
        run.watch(model, optimizer)
        steps = fit(args, model, train_loader, val_loader, optimizer, scheduler, run)
        run.log_test(dict(zip(("test_loss", "test_acc"), evaluate(model, val_loader), strict=True)))
        if not args.no_finish:
            run.finish()
    print(f"steps {steps}", flush=True)
    print(f"run file {run.path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
