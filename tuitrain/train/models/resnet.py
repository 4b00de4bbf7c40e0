"""ResNet18 adapted to 32x32 CIFAR images (003): 3x3 stride-1 stem, no max-pool.

Four stages of two BasicBlocks (width, 2w, 4w, 8w); stages 2-4 start with stride 2 and a 1x1 conv + BN
shortcut. 11,173,962 parameters for width 64 and 10 classes. Modules are declared in forward order so
that ``named_parameters()`` reads from the input side to the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tuitrain.config import ModelConfig


class BasicBlock(nn.Module):
    """conv3x3-bn-relu-conv3x3-bn, plus the (projected when the shape changes) input, then relu."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential()
            self.shortcut.add_module("conv", nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False))
            self.shortcut.add_module("bn", nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResStage(nn.Module):
    """Two BasicBlocks, the first may downsample; probe names read ``stages.1.blocks.0.conv1``."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class ResNet18(nn.Module):
    """The CIFAR ResNet18: stem, 4 x 2 BasicBlocks, global average pool, linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.stem_conv = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        stages = []
        c_in = width
        for i in range(4):
            c_out = width * 2**i
            stride = 1 if i == 0 else 2
            stages.append(ResStage(c_in, c_out, stride))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        for stage in self.stages:
            x = stage(x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build_resnet18(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Registry builder: needs a (C, H, W) image input."""
    if len(input_shape) != 3:
        raise ValueError(f"resnet18 needs image input (C, H, W), got per-sample shape {input_shape}")
    return ResNet18(input_shape[0], num_classes, width=cfg.width)
