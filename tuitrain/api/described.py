"""What a user loop's run says about itself: its device in words, the versions it ran with, its test
metrics as the :class:`~tuitrain.events.TestResult` the run file stores."""

from __future__ import annotations

import math
import platform

import numpy as np
import torch

import tuitrain
from tuitrain.events import TestResult


def device_label(device: torch.device) -> str:
    """``cpu``, ``cuda (NVIDIA H200)``, ``mps``: what the header shows (the engine's wording)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return str(device)


def versions() -> dict[str, str]:
    return {
        "tuitrain": tuitrain.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def test_result(metrics: dict[str, float]) -> TestResult:
    """``test_loss`` (or ``loss``) and ``test_acc`` (or ``acc``) are the standard columns; every other
    key goes to ``TestResult.metrics``."""
    rest = dict(metrics)
    standard = {}
    for field, names in (("loss", ("test_loss", "loss")), ("acc", ("test_acc", "acc"))):
        found = [rest.pop(n) for n in names if n in rest]
        standard[field] = found[0] if found else math.nan
    return TestResult(metrics=rest, **standard)
