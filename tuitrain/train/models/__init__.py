"""Model registry: one builder per ``model.name``, and the optional re-initialisation (``model.init``).

Every builder takes ``(cfg, input_shape, num_classes)`` with a per-sample ``input_shape`` such as
``(3, 32, 32)`` or ``(2,)``, and declares its modules in forward order so that per-layer probes, which
follow ``named_parameters()``, read from the input side to the head. A ``model.name`` of the form
``module:function`` is the user's own model (:mod:`tuitrain.train.own_model`, which documents the call).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tuitrain.config import ModelConfig, is_own_model
from tuitrain.train.models.mixer import MlpMixer, build_mlp_mixer
from tuitrain.train.models.mlp import MLP, build_mlp
from tuitrain.train.models.resnet import ResNet18, build_resnet18
from tuitrain.train.models.vgg import VGG, build_vgg

Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]

MODELS: dict[str, Builder] = {
    "mlp": build_mlp,
    "vgg": build_vgg,
    "resnet18": build_resnet18,
    "mlp_mixer": build_mlp_mixer,
}

__all__ = ["MLP", "MODELS", "VGG", "MlpMixer", "ResNet18", "apply_init", "build_model"]


def apply_init(model: nn.Module, init: str) -> nn.Module:
    """Re-initialise conv/linear weights (biases to zero). "default" leaves PyTorch's init untouched,
    which matters: the report's VGG38 fails *because* of the default init, and that must be visible."""
    if init == "default":
        return model
    if init not in ("kaiming", "xavier"):
        raise ValueError(f"unknown init {init!r}; allowed: default, kaiming, xavier")
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                continue
            if init == "kaiming":
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build ``cfg.name`` for per-sample ``input_shape`` and ``num_classes``, then apply ``cfg.init``.
    A model of the user's own that cannot be built is a ConfigError (bad input, exit 2)."""
    shape = tuple(int(d) for d in input_shape)
    if is_own_model(cfg.name):
        from tuitrain.train.own_model import build_own_model

        return apply_init(build_own_model(cfg, shape, int(num_classes)), cfg.init)
    try:
        builder = MODELS[cfg.name]
    except KeyError:
        raise ValueError(f"unknown model {cfg.name!r}; allowed: {', '.join(MODELS)}") from None
    model = builder(cfg, shape, int(num_classes))
    return apply_init(model, cfg.init)
