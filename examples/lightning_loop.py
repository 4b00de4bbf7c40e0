"""A LightningModule watched by tuitrain: one callback, nothing else changes.

Needs Lightning (``pip install "tuitrain[lightning]"``). Run it live (``tuitrain watch
examples/lightning_loop.py``), headless (``tuitrain run examples/lightning_loop.py --no-ui``) or on its
own (``python examples/lightning_loop.py``). Synthetic data: random 2-D points in two classes split by a
circle, so it needs no download.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tuitrain.lightning import TuitrainCallback


class Circle(L.LightningModule):
    def __init__(self, hidden: int = 32, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()  # the run file keeps them as its config
        self.net = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{split}_loss", loss, on_epoch=True, on_step=False)
        self.log(f"{split}_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def points(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g) * 2 - 1
    y = (x.norm(dim=1) < 0.7).long()
    return DataLoader(TensorDataset(x, y), batch_size=64, shuffle=seed == 0)


def main() -> None:
    p = argparse.ArgumentParser(description="A LightningModule on 2-D points, watched by tuitrain")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", default=None, help="run file (default: runs/<name>-<time>.h5)")
    args = p.parse_args()
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        callbacks=[TuitrainCallback(out=args.out, name="lightning_circle")],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = Circle()
    trainer.fit(model, points(2048, 0), points(512, 1))
    trainer.test(model, points(512, 2), verbose=False)


if __name__ == "__main__":
    main()
