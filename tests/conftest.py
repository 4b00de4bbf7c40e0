"""Shared fixtures. Tests run the real parts: real training, real HDF5 files, the real CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "tuitrain" / "presets"  # the packaged presets; ./presets is a link to them


@pytest.fixture
def presets_dir() -> Path:
    return PRESETS


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "120"  # the same width everywhere (pytest-xdist workers inherit other widths)
    return env


def tuitrain_cmd() -> list[str]:
    return [sys.executable, "-m", "tuitrain"]
