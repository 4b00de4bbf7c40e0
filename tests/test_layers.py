"""The hard layers, checked in fresh interpreters: training never loads textual, the UI and the run
file never load torch, and the CLI loads neither until a command needs it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("tuitrain.train.engine", {"textual", "textual_plotext", "plotext"}),
        ("tuitrain.train.worker", {"textual", "torch"}),
        ("tuitrain.runfile.reader", {"torch", "textual"}),
        ("tuitrain.runfile.writer", {"torch", "textual"}),
        ("tuitrain.config", {"torch", "textual", "h5py"}),
        ("tuitrain.events", {"torch", "textual", "h5py"}),
        ("tuitrain.cli", {"torch", "torchvision", "textual", "h5py"}),
        ("tuitrain.ui.app", {"torch", "torchvision"}),
    ],
)
def test_import_layers(module: str, forbidden: set[str]) -> None:
    assert not (loaded_after(module) & forbidden)
