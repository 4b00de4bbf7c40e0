"""Which modules the activation probe (:mod:`tuitrain.train.activations`) hooks, and what it needs to
know of each: the rule is that module's docstring (leaf modules and blocks, post-order, named as
``model.named_modules()`` names them); this file is its code, kept apart so that the probe's module stays
about its measurement."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.modules.pooling import (
    _AdaptiveAvgPoolNd,
    _AdaptiveMaxPoolNd,
    _AvgPoolNd,
    _LPPoolNd,
    _MaxPoolNd,
)

from tuitrain.events import ModuleInfo

__all__ = [
    "CHANNEL_FIRST",
    "ProbedModule",
    "Target",
    "default_is_block",
    "probed_modules",
    "saturation_bounds",
]

_BLOCK_NAME = re.compile(r"block|bottleneck|residual|encoderlayer|decoderlayer", re.IGNORECASE)
_SKIP_CHILDREN = frozenset({"shortcut", "downsample", "skip"})
_NEVER = (nn.Identity, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)
CHANNEL_FIRST = (
    _ConvNd,
    _BatchNorm,
    _InstanceNorm,
    nn.GroupNorm,
    _MaxPoolNd,
    _AvgPoolNd,
    _AdaptiveAvgPoolNd,
    _AdaptiveMaxPoolNd,
    _LPPoolNd,
)


ProbedModule = ModuleInfo  # one column of the probe (tuitrain.events owns the record)


@dataclasses.dataclass(frozen=True)
class Target:
    """A hooked module, its saturation bounds (or None: NaN) and whether its units are on dim 1."""

    module: nn.Module
    bounds: tuple[float, float] | None  # saturation bounds, or None (NaN)
    channel_first: bool  # units on dim 1 whatever the rank


def default_is_block(name: str, module: nn.Module) -> bool:
    """The block rule of the module docstring: by class name, or by a child named like a shortcut."""
    if _BLOCK_NAME.search(type(module).__name__):
        return True
    return any(child in _SKIP_CHILDREN for child, _ in module.named_children())


def saturation_bounds(module: nn.Module) -> tuple[float, float] | None:
    if isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)):
        return (0.0, 1.0)
    if isinstance(module, nn.Tanh):
        return (-1.0, 1.0)
    if type(module) is nn.Hardtanh:  # not ReLU6 (a subclass): its lower bound is ReLU's zero
        return (float(module.min_val), float(module.max_val))
    return None


def _is_leaf(module: nn.Module) -> bool:
    return next(iter(module.children()), None) is None


def probed_modules(
    model: nn.Module, is_block: Callable[[str, nn.Module], bool] | None = None
) -> list[tuple[ProbedModule, nn.Module]]:
    """The modules the probe hooks, post-order (a block after its insides), each shared module once,
    under the name ``model.named_modules()`` gives it."""
    is_block = is_block or default_is_block
    out: list[tuple[ProbedModule, nn.Module]] = []
    seen: set[int] = set()

    def walk(module: nn.Module, prefix: str, root: bool) -> None:
        seen.add(id(module))
        for child_name, child in module.named_children():
            if id(child) not in seen:
                walk(child, f"{prefix}.{child_name}" if prefix else child_name, False)
        if isinstance(module, _NEVER):
            return
        leaf = _is_leaf(module)
        if leaf and isinstance(module, nn.Sequential):
            return  # an empty Sequential passes its input through
        if leaf:
            out.append((ProbedModule(prefix, type(module).__name__, "leaf"), module))
        elif not root and is_block(prefix, module):
            out.append((ProbedModule(prefix, type(module).__name__, "block"), module))

    walk(model, "", True)
    return out
