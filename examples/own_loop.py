"""Your own training loop, watched by tuitrain: PyTorch's MNIST example, on synthetic 1x28x28 digits.

Three lines make it a tuitrain run (``tuitrain.init``, ``run.watch``, ``run.log``); everything else is
the plain PyTorch loop. Run it on its own (``python examples/own_loop.py --out runs/mnist.h5``, then ``tuitrain
replay runs/mnist.h5``), live in the dashboard (``tuitrain watch examples/own_loop.py``), or headless
(``tuitrain run examples/own_loop.py --no-ui -- --epochs 2``). The data is random noise with random
labels, so it needs no download: the point is the loop, not the accuracy.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset

import tuitrain


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 1)
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(16 * 12 * 12, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout(torch.flatten(x, 1))
        return F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)


def digits(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    model.eval()
    loss = correct = n = 0.0
    for x, y in loader:
        out = model(x)
        loss += F.nll_loss(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        n += len(y)
    model.train()
    return loss / n, correct / n


def main() -> None:
    p = argparse.ArgumentParser(description="MNIST-style training on synthetic digits, watched by tuitrain")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--gamma", type=float, default=0.7)
    p.add_argument("--train-size", type=int, default=2048)
    p.add_argument("--out", default=None, help="run file (default: runs/own_loop-<time>.h5)")
    args = p.parse_args()

    torch.manual_seed(1)
    model = Net()
    train_loader = DataLoader(digits(args.train_size, 1), batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(digits(512, 2), batch_size=256)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)

    run = tuitrain.init(
        name="own_loop",
        out=args.out,
        config=vars(args),
        epochs=args.epochs,
        steps_per_epoch=len(train_loader),
        batch_size=args.batch_size,
        num_classes=10,
    )
    run.watch(model, optimizer)  # per-tensor probes at every optimizer step: no other change to the loop
    for _epoch in range(args.epochs):
        for x, y in train_loader:
            optimizer.zero_grad()
            out = model(x)
            loss = F.nll_loss(out, y)
            loss.backward()
            optimizer.step()
            run.log({"loss": loss, "acc": (out.argmax(1) == y).float().mean()})  # tensors: no host sync
        val_loss, val_acc = evaluate(model, val_loader)
        run.log_epoch({"val_loss": val_loss, "val_acc": val_acc})
        scheduler.step()
    test_loss, test_acc = evaluate(model, val_loader)
    run.log_test({"loss": test_loss, "acc": test_acc})
    run.finish()


if __name__ == "__main__":
    main()
