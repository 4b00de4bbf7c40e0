"""Gradient health: the thresholds of the run's config and the per-layer code the panels colour by."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuitrain.events import PROBE_NAMES

NORMAL, VANISHING, EXPLODING, NONFINITE = 0, 1, 2, 3


@dataclass
class Thresholds:
    vanishing: float = 1e-6  # mean |grad|
    exploding: float = 1e2  # grad L2 norm


def health_codes(probes: np.ndarray, th: Thresholds) -> np.ndarray:
    """Per-layer codes from a (4, L) probe row: 0 normal, 1 vanishing, 2 exploding, 3 non-finite."""
    gm = probes[PROBE_NAMES.index("grad_mean_abs")]
    gn = probes[PROBE_NAMES.index("grad_norm")]
    code = np.zeros(gm.shape[0], dtype=np.int8)
    code[gm < th.vanishing] = VANISHING
    code[gn > th.exploding] = EXPLODING
    code[~(np.isfinite(gm) & np.isfinite(gn))] = NONFINITE
    return code


def thresholds_from_toml(text: str) -> Thresholds:
    """monitor.vanishing / monitor.exploding of the run's config, or the defaults."""
    try:
        from tuitrain.config import from_toml

        mon = from_toml(text).monitor
        return Thresholds(vanishing=float(mon.vanishing), exploding=float(mon.exploding))
    except Exception:
        return Thresholds()
