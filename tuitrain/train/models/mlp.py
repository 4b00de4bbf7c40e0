"""A plain multi-layer perceptron: the model of the activation/BatchNorm/depth experiments (000, 002).

Each hidden layer is its own small module (``layers.<i>.linear``, ``layers.<i>.bn``) so that per-layer
probes get readable names that read input side first.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tuitrain.config import ModelConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


def make_activation(name: str) -> nn.Module:
    """An activation module by config name; shared by the MLP and the Mixer."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(_ACTIVATIONS)}") from None


class MLPLayer(nn.Module):
    """Linear -> [BatchNorm1d] -> activation -> [Dropout]: BN sits before the activation, as in 002."""

    def __init__(self, d_in: int, d_out: int, activation: str, batch_norm: bool, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.bn = nn.BatchNorm1d(d_out) if batch_norm else nn.Identity()
        self.act = make_activation(activation)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.bn(self.linear(x))))


class MLP(nn.Module):
    """Flatten -> hidden layers -> Linear head. 3072-[1024,512,64,64]-10 has 3,709,194 parameters."""

    def __init__(
        self,
        d_in: int,
        hidden: list[int],
        num_classes: int,
        activation: str = "relu",
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [d_in, *hidden]
        self.layers = nn.ModuleList(
            MLPLayer(a, b, activation, batch_norm, dropout)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Registry builder: any per-sample shape works, since the input is flattened."""
    return MLP(
        math.prod(input_shape), list(cfg.hidden), num_classes, cfg.activation, cfg.batch_norm, cfg.dropout
    )
