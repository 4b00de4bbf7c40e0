"""A model of the user's own in a preset: ``model.name = "mypkg.models:build"``.

The call, one rule to remember: ``build(cfg)``, ``build(cfg, input_shape)`` or
``build(cfg, input_shape, num_classes)``, as many of the three as the function takes positionally
(a class works too: its ``__init__`` is the function). ``cfg`` is the whole [model] table as a plain
dict (a copy): the built-in keys with their values (``hidden``, ``dropout``, ... still type-checked by
the config) and every key of the user's own; ``input_shape`` is one sample's shape, e.g. ``(3, 32, 32)``
or ``(2,)``; ``num_classes`` the dataset's classes. It returns a ``torch.nn.Module``; ``model.init``
then applies as to any model. The current directory is importable (as with ``python -m``), and so is
anything on ``PYTHONPATH`` or installed.

Everything that can go wrong (no such module, no such function, not callable, it raised, it returned
something else) is one :class:`~tuitrain.config.ConfigError`, a paragraph naming the model and what to
do, so that ``run`` and ``watch`` exit 2 with it and no traceback. No torch at module level: the CLI
asks :func:`check_importable` before it starts anything, in the dashboard's process too.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuitrain.config import ConfigError, ModelConfig

if TYPE_CHECKING:
    from torch import nn

HOW = (
    "A model of your own is `module:function`: a function in an importable module (the current directory "
    "counts, as do PYTHONPATH and installed packages) called as build(cfg, input_shape, num_classes) "
    "(or with fewer: as many as it takes) that returns a torch.nn.Module; cfg is the [model] table as a dict."
)


def _importable_here() -> None:
    """Make the current directory importable, as ``python -m`` and ``python script.py`` users expect:
    the ``tuitrain`` console script (and the ``watch`` worker it spawns) start without it on sys.path."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _split(name: str) -> tuple[str, list[str]]:
    module, _, attr = name.partition(":")
    return module, attr.split(".")


def _prefix(name: str) -> str:
    return f"`model.name` = {name!r}: "


def check_importable(name: str) -> None:
    """Before anything starts: the module's top-level package can be found. Nothing is imported (the
    user's module may import torch, which the dashboard's process must not): only a missing package
    is caught here; the rest is caught where the model is built."""
    module, _ = _split(name)
    top = module.split(".")[0]
    _importable_here()
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ConfigError(
            f"{_prefix(name)}no module named {top!r} (looked in {os.getcwd()} and sys.path). {HOW}"
        )


def resolve(name: str) -> Callable[..., Any]:
    """The callable ``name`` names, imported; every failure a ConfigError."""
    module_name, attrs = _split(name)
    _importable_here()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ConfigError(
                f"{_prefix(name)}no module named {e.name!r} (looked in {os.getcwd()} and sys.path). {HOW}"
            ) from None
        raise ConfigError(f"{_prefix(name)}importing {module_name} failed: {_said(e)}.") from None
    except Exception as e:  # noqa: BLE001 - the user's module: a syntax error, an import that raised
        raise ConfigError(f"{_prefix(name)}importing {module_name} failed: {_said(e)}.") from None
    obj: Any = module
    for i, attr in enumerate(attrs):
        if not hasattr(obj, attr):
            where = ".".join([module_name, *attrs[:i]])
            known = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
            close = difflib.get_close_matches(attr, known, n=1, cutoff=0.6)
            hint = (
                f" Did you mean `{':'.join([module_name, '.'.join([*attrs[:i], close[0]])])}`?"
                if close
                else ""
            )
            found = getattr(module, "__file__", None) or module_name
            raise ConfigError(f"{_prefix(name)}{where} ({found}) has no `{attr}`.{hint} {HOW}")
        obj = getattr(obj, attr)
    if not callable(obj):
        raise ConfigError(f"{_prefix(name)}{name} is {_a(obj)}, not a function. {HOW}")
    return obj


def model_table(cfg: ModelConfig) -> dict[str, Any]:
    """The [model] table as the function gets it: every built-in key, then the user's own (a copy, so
    that the function cannot change the config the run file stores)."""
    table = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "options"}
    table.update(cfg.options)
    return copy.deepcopy(table)


def _arguments(fn: Callable[..., Any], cfg: dict[str, Any], shape: tuple[int, ...], classes: int) -> tuple:
    """As many of (cfg, input_shape, num_classes) as ``fn`` takes positionally; all three where it
    cannot be inspected or takes ``*args``."""
    full = (cfg, shape, classes)
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return full
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return full
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return full[: max(1, len(positional))]


def build_own_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Import and call the user's function; its result must be an nn.Module."""
    from torch import nn

    fn = resolve(cfg.name)
    try:
        model = fn(*_arguments(fn, model_table(cfg), input_shape, num_classes))
    except Exception as e:  # noqa: BLE001 - the user's code: said as bad input, with where it raised
        raise ConfigError(f"{_prefix(cfg.name)}{cfg.name} raised {_said(e)}.") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{_prefix(cfg.name)}{cfg.name} returned {_a(model)}, not a torch.nn.Module. {HOW}")
    return model


def _a(obj: object) -> str:
    kind = type(obj).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


def _said(e: BaseException) -> str:
    """``Type: message (file, line N)``: the innermost frame of the user's code, not tuitrain's."""
    text = " ".join(str(e).split())[:300]
    where = ""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not _ours(f.filename)]
    if isinstance(e, SyntaxError) and e.filename:
        where = f" ({e.filename}, line {e.lineno})"
        text = str(e.msg)
    elif frames:
        where = f" ({frames[-1].filename}, line {frames[-1].lineno})"
    return f"{type(e).__name__}: {text}{where}"


_TUITRAIN = str(Path(__file__).resolve().parent.parent)


def _ours(filename: str) -> bool:
    return filename.startswith(_TUITRAIN) or filename.startswith("<frozen ")
