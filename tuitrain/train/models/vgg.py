"""The VGG08/VGG38 family of the MLP coursework 2 report (001), with its BatchNorm and residual fixes.

Every conv is 3x3, padding 1, no bias, ``filters`` channels. An input conv, then ``stages`` stages of
``blocks_per_stage`` processing blocks and one dimensionality-reduction block (avg-pool 2), then global
average pooling and a linear head. ``blocks_per_stage`` 0 is VGG08 (59,460 params for 100 classes);
5 is VGG38 (335,940). With PyTorch's default init VGG38 does not train: its first-layer gradients
vanish, which is the pathology tuitrain exists to show, so this module never touches initialisation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tuitrain.config import ModelConfig

Act = Callable[[torch.Tensor], torch.Tensor]


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)


def _norm(c: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(c) if batch_norm else nn.Identity()


class ProcessingBlock(nn.Module):
    """conv-bn-act-conv-bn [+ x] -act: the skip joins before the final activation (He et al., Fig. 2)."""

    def __init__(self, c: int, act: Act, batch_norm: bool, residual: bool) -> None:
        super().__init__()
        self.conv0 = _conv(c, c)
        self.bn0 = _norm(c, batch_norm)
        self.conv1 = _conv(c, c)
        self.bn1 = _norm(c, batch_norm)
        self.act = act
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn0(self.conv0(x)))
        out = self.bn1(self.conv1(out))
        if self.residual:
            out = out + x
        return self.act(out)


class ReductionBlock(nn.Module):
    """conv-bn-act, avg-pool 2, conv-bn [+ shortcut] -act.

    The report uses no shortcut here (shapes differ); ``shortcut`` "avgpool" pools the input to match,
    "conv1x1" pools then applies a 1x1 conv (and BN), which costs ``c*c`` extra parameters.
    """

    def __init__(self, c: int, act: Act, batch_norm: bool, shortcut: str) -> None:
        super().__init__()
        self.conv0 = _conv(c, c)
        self.bn0 = _norm(c, batch_norm)
        self.conv1 = _conv(c, c)
        self.bn1 = _norm(c, batch_norm)
        self.act = act
        self.shortcut_kind = shortcut
        self.shortcut: nn.Module | None = None
        if shortcut == "conv1x1":
            self.shortcut = nn.Sequential()
            self.shortcut.add_module("conv", nn.Conv2d(c, c, kernel_size=1, bias=False))
            if batch_norm:
                self.shortcut.add_module("bn", nn.BatchNorm2d(c))
        elif shortcut not in ("none", "avgpool"):
            raise ValueError(f"unknown downsample_shortcut {shortcut!r}; allowed: none, conv1x1, avgpool")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn0(self.conv0(x)))
        out = self.bn1(self.conv1(F.avg_pool2d(out, 2)))
        if self.shortcut_kind != "none":
            skip = F.avg_pool2d(x, 2)
            out = out + (self.shortcut(skip) if self.shortcut is not None else skip)
        return self.act(out)


class Stage(nn.Module):
    """``blocks`` processing blocks, then one reduction block; named so probes read in forward order."""

    def __init__(
        self, c: int, n_blocks: int, act: Act, batch_norm: bool, residual: bool, shortcut: str
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ProcessingBlock(c, act, batch_norm, residual) for _ in range(n_blocks))
        self.reduce = ReductionBlock(c, act, batch_norm, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.reduce(x)


class VGG(nn.Module):
    """Input conv, stages, global average pool, linear head (the only layer with a bias)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        filters: int = 32,
        stages: int = 3,
        blocks_per_stage: int = 5,
        activation: str = "leaky_relu",
        batch_norm: bool = False,
        residual: bool = False,
        downsample_shortcut: str = "none",
    ) -> None:
        super().__init__()
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(f"vgg supports activation relu or leaky_relu, got {activation!r}")
        act: Act = F.relu if activation == "relu" else F.leaky_relu
        self.act = act
        # The report has no shortcut around reduction blocks; one is added only when residual is on.
        shortcut = downsample_shortcut if residual else "none"
        self.input_conv = _conv(in_channels, filters)
        self.input_bn = _norm(filters, batch_norm)
        self.stages = nn.ModuleList(
            Stage(filters, blocks_per_stage, act, batch_norm, residual, shortcut) for _ in range(stages)
        )
        self.head = nn.Linear(filters, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.input_bn(self.input_conv(x)))
        for stage in self.stages:
            x = stage(x)
        return self.head(x.mean(dim=(2, 3)))


def build_vgg(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Registry builder: needs a (C, H, W) input with H and W at least 2**stages."""
    if len(input_shape) != 3:
        raise ValueError(f"vgg needs image input (C, H, W), got per-sample shape {input_shape}")
    return VGG(
        input_shape[0],
        num_classes,
        filters=cfg.filters,
        stages=cfg.stages,
        blocks_per_stage=cfg.blocks_per_stage,
        activation=cfg.activation,
        batch_norm=cfg.batch_norm,
        residual=cfg.residual,
        downsample_shortcut=cfg.downsample_shortcut,
    )
