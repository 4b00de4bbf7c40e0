"""The per-layer figures of a report (issue 12), registered in report order by importing this module:
``gradient_flow``, ``grad_bars``, ``updates`` (:mod:`tuitrain.report.layers_grad`, the gradient
probe) and ``forward_signal`` (:mod:`tuitrain.report.layers_signal`, the activation probe). Each is
drawn once per run (file stem ``<figure>-<run>``); the shared choices (``--exclude``, epochs, saving)
are :mod:`tuitrain.report.layers_util`'s."""

from __future__ import annotations

from tuitrain.report.layers_grad import grad_bars, gradient_flow, updates
from tuitrain.report.layers_signal import forward_signal

__all__ = ["forward_signal", "grad_bars", "gradient_flow", "updates"]
