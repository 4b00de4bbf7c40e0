"""What a user hands ``tuitrain.init`` and ``run.log``, checked once and said in words when wrong.

Checks here run where they cost nothing per step: a config once at ``init``, a logged key once, the
first time it is seen (``run.log`` keeps a set of the keys it has checked); values are passed on as
they are, tensors unread (the monitor reads them at its flush, never one step at a time).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuitrain.events import STEP_SCALARS
from tuitrain.runfile import schema as S
from tuitrain.runfile.declaration import name_problem

# Names a step key may not take: the columns beside every step (/steps/step, epoch, time) and the
# standard scalars the run measures itself. "loss" and "acc" are the standard columns a loop fills;
# "lr" goes to the lr column.
RESERVED_STEP_KEYS = frozenset({"step", "epoch", "time", *STEP_SCALARS} - {"loss", "acc", "lr"})
MAX_KEY_BYTES = S.METRIC_FIELDS["key"].itemsize  # a key first logged late goes to /metrics (S64)


def script_name() -> str:
    """The default run name: the running script's stem (``train.py`` -> ``train``), else ``run``."""
    main = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
    stem = Path(main).stem if main else ""
    return stem or "run"


def config_json(config: Any) -> str:
    """A user's config as JSON text ("" for None). A dict (or an ``argparse.Namespace``) of numbers,
    strings, booleans, None, and lists and dicts of them; numpy scalars count as numbers. Anything
    else is a TypeError naming the key, so the mistake is found at ``init``, not in a reader."""
    if config is None:
        return ""
    if isinstance(config, argparse.Namespace):
        config = vars(config)
    if not isinstance(config, Mapping):
        raise TypeError(
            f"tuitrain.init(config=...): got a {type(config).__name__}; config must be a dict of JSON-able "
            "values (numbers, strings, booleans, None, lists and dicts of them), e.g. vars(args)."
        )
    return json.dumps(_plain(config, "config"), allow_nan=True, sort_keys=False)


def _plain(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _plain(value.item(), where)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"tuitrain.init(config=...): {where} has the key {k!r} ({type(k).__name__}); "
                    "config keys must be strings (JSON objects have string keys)."
                )
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"tuitrain.init(config=...): {where} is a {type(value).__module__}.{type(value).__qualname__}, "
        "which a run file cannot store; config values must be numbers, strings, booleans, None, or "
        "lists and dicts of them (convert it first, e.g. str(value) or float(value))."
    )


def check_key(key: Any, where: str = "run.log") -> str:
    """A logged key, checked the first time it is seen: a name the run file can store (the writer's own
    rule, :func:`~tuitrain.runfile.declaration.name_problem`; ``/`` is fine: ``train/loss`` is one
    column), at most :data:`MAX_KEY_BYTES`, not one of the columns tuitrain keeps itself."""
    if not isinstance(key, str) or not key:
        raise TypeError(
            f"{where}: the key {key!r} is not a non-empty string; keys name columns, e.g. 'loss'."
        )
    problem = name_problem(key, "the key")
    if problem is None and len(key.encode()) > MAX_KEY_BYTES:
        problem = f"the key {key!r} is longer than {MAX_KEY_BYTES} UTF-8 bytes"
    if problem is not None:
        raise ValueError(
            f"{where}: {problem}, so it cannot name a column (keys such as 'loss' or 'train/f1' can)."
        )
    if key in RESERVED_STEP_KEYS:
        raise ValueError(
            f"{where}: the key {key!r} is a column tuitrain keeps itself ({', '.join(sorted(RESERVED_STEP_KEYS))}); "
            f"log it under another name, e.g. 'my_{key}'."
        )
    return key


def check_value(key: str, value: Any, where: str = "run.log") -> None:
    """A logged value must be a Python number or a one-element tensor (read later, at the flush)."""
    if isinstance(value, (int, float)):  # bool included: True counts as 1
        return
    numel = getattr(value, "numel", None)
    if callable(numel) and hasattr(value, "detach"):
        if numel() != 1:
            raise ValueError(
                f"{where}: {key!r} is a tensor of shape {tuple(value.shape)}; log one number per key "
                "(a 0-d tensor, e.g. loss or x.mean())."
            )
        return
    if type(value).__module__ == "numpy" and getattr(value, "size", 0) == 1:
        return
    raise TypeError(
        f"{where}: {key!r} is a {type(value).__name__}; values are Python numbers or one-element tensors."
    )


def to_float(key: str, value: Any, where: str) -> float:
    """An epoch or test metric as a float (a host read: once per epoch, never per step)."""
    check_value(key, value, where)
    return float(value.item() if hasattr(value, "item") else value)
