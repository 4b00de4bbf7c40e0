"""From ``run``/``watch`` arguments to what to train and where: a preset path or name, the options
that override it, a validated :class:`~tuitrain.config.RunConfig`, and a writable run-file path."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tuitrain.config import DATASET_CLASSES, ConfigError, RunConfig, load_config


def presets_dir() -> Path:
    """``./presets`` when run from a checkout or a project that has its own, else the package's."""
    local = Path("presets")
    if local.is_dir():
        return local
    return Path(__file__).resolve().parent.parent.parent / "presets"


def resolve_preset(preset: str) -> Path:
    """Accept a path, or a bare preset name such as ``vgg38``."""
    path = Path(preset)
    if path.exists() or path.suffix == ".toml" or os.sep in preset:
        return path
    candidate = presets_dir() / f"{preset}.toml"
    return candidate if candidate.exists() else path


def build_config(
    preset: str,
    sets: list[str] | None,
    data: str | None = None,
    data_dir: str | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    name: str | None = None,
) -> RunConfig:
    extra: dict[str, Any] = {}
    for key, value in (
        ("data.dir", data_dir),
        ("train.epochs", epochs),
        ("train.max_steps", max_steps),
        ("train.batch_size", batch_size),
        ("train.device", device),
        ("train.seed", seed),
        ("name", name),
    ):
        if value is not None:
            extra[key] = value
    path = resolve_preset(preset)
    if data is not None:
        original = load_config(path).data.name  # what the preset was written for
        if data != original:
            extra["data.name"] = data
            user_keys = {s.split("=", 1)[0].strip() for s in sets or []}
            # Keep the head of the model: a CIFAR-100 preset on synthetic data gets 100 synthetic classes.
            if data == "synthetic" and original in DATASET_CLASSES and "data.classes" not in user_keys:
                extra["data.classes"] = DATASET_CLASSES[original]
            # Split sizes belong to the dataset they were written for: the new one starts from its defaults.
            for key in ("data.train_size", "data.val_size", "data.test_size"):
                if key not in user_keys:
                    extra[key] = 0
    cfg = load_config(path, sets, extra)
    return cfg


def default_out(cfg: RunConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{cfg.name}-{stamp}.h5"
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{cfg.name}-{stamp}-{n}.h5"
    return path


def check_out(out: Path) -> None:
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give a file path such as {out / 'run.h5'}.")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create the directory {parent}: {e.strerror}.") from None
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {out}: the directory {parent} is not writable.")
