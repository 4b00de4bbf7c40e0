"""What the UI shows about a model before the first step: its monitored layers, parameters and FLOPs.

``layer_infos`` fixes the layer axis of every per-layer probe (input side first, head last), so it
follows ``named_parameters()`` order, which is forward order for tuitrain's models. ``model_summary``
counts forward FLOPs with PyTorch's own ``FlopCounterMode``; it is informational, so it never raises.
"""

from __future__ import annotations

import logging
import platform

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import tuitrain
from tuitrain.events import LayerInfo

log = logging.getLogger(__name__)

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def param_kind(module: nn.Module, param_name: str) -> str:
    """Kind "norm" for the affine parameters of normalisation layers, else "bias" or "weight"."""
    if isinstance(module, NORM_TYPES):
        return "norm"
    return "bias" if param_name == "bias" else "weight"


def layer_infos(model: nn.Module) -> list[LayerInfo]:
    """One :class:`LayerInfo` per trainable parameter tensor, in ``named_parameters()`` order."""
    infos: list[LayerInfo] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        path, _, leaf = name.rpartition(".")
        module = model.get_submodule(path)
        infos.append(
            LayerInfo(
                name=name,
                shape=tuple(p.shape),
                numel=p.numel(),
                kind=param_kind(module, leaf),
                module=path,
                module_type=type(module).__name__,
            )
        )
    return infos


def _leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]


def _rows(model: nn.Module, flops_by_key: dict[str, int], batch: int) -> list[dict]:
    root = type(model).__name__
    rows: list[dict] = []
    for name, module in _leaf_modules(model):
        params = sum(p.numel() for p in module.parameters(recurse=False))
        key = f"{root}.{name}" if name else root
        flops = flops_by_key.get(key, 0) // batch
        if params or flops:
            rows.append(
                {"name": name, "type": type(module).__name__, "params": int(params), "flops": int(flops)}
            )
    return rows


def model_summary(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, list[dict]]:
    """Forward FLOPs for one sample and ``[{"name", "type", "params", "flops"}]`` per leaf module.

    Runs one eval-mode, no-grad forward pass on a zeros batch of 2 (so BatchNorm1d works) and restores
    the training mode. On any failure: 0 FLOPs and parameter-only rows.
    """
    batch = 2
    was_training = model.training
    try:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        x = torch.zeros((batch, *input_shape), device=device, dtype=dtype)
        model.eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
        counts = {k: int(sum(v.values())) for k, v in counter.get_flop_counts().items()}
        total = counter.get_total_flops() // batch
        return int(total), _rows(model, counts, batch)
    except Exception as e:  # the summary is informational: never stop a run over it
        log.warning("FLOP count failed for %s: %s", type(model).__name__, e)
        try:
            return 0, _rows(model, {}, batch)
        except Exception:
            return 0, []
    finally:
        model.train(was_training)


def device_label(device: torch.device) -> str:
    """``cpu``, ``cuda (NVIDIA H200)``, ``mps``: the device as the header shows it (presets and user loops)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return str(device)


def versions() -> dict[str, str]:
    """The versions every run records (a preset adds its data-parallel and thread details)."""
    return {
        "tuitrain": tuitrain.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
