"""MLP-Mixer, timm style (000, sections 4-6).

A patch-embedding conv turns the image into ``num_patches`` tokens of ``embed_dim`` channels; each
MixerBlock mixes across tokens (token MLP on the transposed sequence) and then across channels, both
pre-LayerNorm with residual adds. Patch 4, embed 256, 4 blocks, ratio [0.5, 4.0], 10 classes:
2,188,298 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from tuitrain.config import ModelConfig
from tuitrain.train.models.mlp import make_activation


class MixerMlp(nn.Module):
    """Linear -> act -> Dropout -> Linear -> Dropout (timm's ``Mlp``)."""

    def __init__(self, d: int, hidden: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.act = make_activation(activation)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, d)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class MixerBlock(nn.Module):
    """x + token_mlp(LN(x)^T)^T, then x + channel_mlp(LN(x)). Input and output are (B, tokens, dim)."""

    def __init__(
        self, dim: int, num_tokens: int, mlp_ratio: tuple[float, float], activation: str, dropout: float
    ) -> None:
        super().__init__()
        token_hidden, channel_hidden = int(mlp_ratio[0] * dim), int(mlp_ratio[1] * dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_tokens = MixerMlp(num_tokens, token_hidden, activation, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = MixerMlp(dim, channel_hidden, activation, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.mlp_channels(self.norm2(x))


class MlpMixer(nn.Module):
    """Patch stem, MixerBlocks, final LayerNorm, mean over tokens, linear head."""

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        patch_size: int = 4,
        embed_dim: int = 256,
        num_blocks: int = 4,
        mlp_ratio: tuple[float, float] = (0.5, 4.0),
        activation: str = "gelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        h, w = image_size
        if h % patch_size or w % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide the image size {h}x{w}")
        num_tokens = (h // patch_size) * (w // patch_size)
        self.stem = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(
            MixerBlock(embed_dim, num_tokens, mlp_ratio, activation, dropout) for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self.token_grid = (h // patch_size, w // patch_size)

    def token_mixing_weight(self) -> tuple[torch.Tensor, tuple[int, int]]:
        """The first block's token-mixing MLP's first Linear weight (hidden, tokens) and the token
        grid (gh, gw), token t at row t // gw, col t % gw: what the run file's ``token_mixing``
        snapshot keeps and the report draws as one small image per hidden unit (000 s5.2)."""
        return self.blocks[0].mlp_tokens.fc1.weight, self.token_grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)  # (B, tokens, dim)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))


def build_mlp_mixer(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Registry builder: needs a (C, H, W) image input whose sides the patch size divides."""
    if len(input_shape) != 3:
        raise ValueError(f"mlp_mixer needs image input (C, H, W), got per-sample shape {input_shape}")
    ratio = (float(cfg.mlp_ratio[0]), float(cfg.mlp_ratio[1]))
    return MlpMixer(
        input_shape[0],
        (input_shape[1], input_shape[2]),
        num_classes,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        num_blocks=cfg.num_blocks,
        mlp_ratio=ratio,
        activation=cfg.activation,
        dropout=cfg.dropout,
    )
