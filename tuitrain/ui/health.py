"""Gradient health: the thresholds of the run and the per-layer code the panels colour by.

The thresholds come from the run itself (:class:`~tuitrain.events.RunStarted` carries
``monitor.vanishing`` and ``monitor.exploding``; the run file stores them as attributes). There is no
default here: the config schema owns the only one, so the dashboard colours exactly what the training
process alerted on."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tuitrain.events import PROBE_NAMES, RunStarted

NORMAL, VANISHING, EXPLODING, NONFINITE = 0, 1, 2, 3


@dataclass
class Thresholds:
    vanishing: float  # mean |grad| below this is vanishing
    exploding: float  # grad L2 norm above this is exploding

    @classmethod
    def of(cls, run: RunStarted) -> Thresholds:
        return cls(vanishing=float(run.vanishing), exploding=float(run.exploding))

    @classmethod
    def none(cls) -> Thresholds:
        """Before the run has started: nothing is vanishing or exploding."""
        return cls(vanishing=0.0, exploding=math.inf)


def health_codes(probes: np.ndarray, th: Thresholds) -> np.ndarray:
    """Per-layer codes from a (4, L) probe row: 0 normal, 1 vanishing, 2 exploding, 3 non-finite."""
    gm = probes[PROBE_NAMES.index("grad_mean_abs")]
    gn = probes[PROBE_NAMES.index("grad_norm")]
    code = np.zeros(gm.shape[0], dtype=np.int8)
    code[gm < th.vanishing] = VANISHING
    code[gn > th.exploding] = EXPLODING
    code[~(np.isfinite(gm) & np.isfinite(gn))] = NONFINITE
    return code
