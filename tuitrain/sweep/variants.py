"""From ``tuitrain sweep`` arguments to the variants it runs: the grids parsed, the cartesian product of
presets x grids expanded in the order given, a name per variant from what differs, and every variant's
config built and validated up front with the code ``run`` uses (:func:`tuitrain.commands.resolve.
build_config`), so bad input is refused before any child starts. No torch here.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from tuitrain.config import ConfigError, RunConfig, to_toml
from tuitrain.view.file_rows import fmt_config

NAME_MAX = 80  # characters of a variant name (its file is <name>.h5): long grids stay readable paths

# The options of `run` a sweep passes on to every variant, as (option, config key) in `run`'s order.
RUN_OPTIONS: tuple[str, ...] = (
    "--data",
    "--data-dir",
    "--epochs",
    "--max-steps",
    "--batch-size",
    "--device",
    "--seed",
)


@dataclass(frozen=True)
class Grid:
    """One ``--grid KEY=V1,V2,...``: the key and each value as TOML text for ``--set`` (``texts``),
    with the short form a variant's name shows (``labels``)."""

    key: str
    texts: tuple[str, ...]
    labels: tuple[str, ...]


@dataclass
class Planned:
    """A variant before it runs: its name, preset argument, ``--set`` strings (the sweep's own, then
    its grid values: those win), the shared ``run`` options, and its validated config."""

    name: str
    preset: str
    sets: list[str]
    args: list[str]
    cfg: RunConfig
    axes: dict[str, str] = field(default_factory=dict)  # what makes it this variant: key -> label


def _toml_value(value: Any) -> str:
    """One value as one line of TOML text (``--set`` parses it back to the same value): arrays and
    tables inline, scalars as tomli_w writes them."""
    import tomli_w

    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _label(value: Any) -> str:
    return value if isinstance(value, str) else fmt_config(value)


def parse_grid(text: str) -> Grid:
    """``"optim.lr=1e-2,1e-3"`` or ``"model.hidden=[[16], [16, 16]]"`` -> a :class:`Grid`. Raises
    :class:`ConfigError` for a grid without ``=``, without a key, or with an empty value."""
    example = "e.g. --grid optim.lr=1e-2,1e-3 or --grid 'model.hidden=[[16], [16, 16]]'"
    if "=" not in text:
        raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2,...; {example}.")
    key, _, rest = text.partition("=")
    key, rest = key.strip(), rest.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--grid {text!r}: the key is empty or malformed; {example}.")
    if rest.startswith("["):  # one TOML array of values: list-valued keys work too
        try:
            values = tomllib.loads(f"v = {rest}")["v"]
        except (tomllib.TOMLDecodeError, RecursionError):
            raise ConfigError(
                f"--grid {text!r}: a value list that starts with `[` must be one TOML array of the "
                f"values; {example}."
            ) from None
        if not values:
            raise ConfigError(f"--grid {text!r}: the array of values is empty; {example}.")
        return Grid(key, tuple(_toml_value(v) for v in values), tuple(_label(v) for v in values))
    texts = tuple(v.strip() for v in rest.split(","))
    if not rest or any(not v for v in texts):
        raise ConfigError(
            f"--grid {text!r}: an empty value (every value between commas is needed); {example}."
        )
    return Grid(key, texts, tuple(v.strip("\"'") for v in texts))


def run_args(options: dict[str, Any]) -> list[str]:
    """The ``run`` options given to the sweep, as arguments every variant's command carries."""
    args: list[str] = []
    for opt in RUN_OPTIONS:
        value = options.get(opt.lstrip("-").replace("-", "_"))
        if value is not None:
            args += [opt, str(value)]
    return args


def safe_name(text: str) -> str:
    """A variant name a file can have: no path separators or control characters, whitespace as
    ``_``, no leading dot or dash, at most :data:`NAME_MAX` characters."""
    text = re.sub(r",\s+", ",", text)
    text = re.sub(r"\s+", "_", text)
    text = re.sub(r"[/\\\x00-\x1f\x7f]", "_", text)
    text = re.sub(r"^[.\-]+", "_", text)
    return text[:NAME_MAX] or "variant"


def variant_names(axes: Sequence[dict[str, str]]) -> list[str]:
    """Names from what differs between the variants: ``key=value`` per differing key (its last dotted
    component, the full key where two differing keys share it), joined by ``,``; the preset's name
    alone first (``"preset"`` axis). Collisions get ``-2``, ``-3``."""
    keys = list(dict.fromkeys(k for a in axes for k in a))
    differ = [k for k in keys if len({a.get(k) for a in axes}) > 1]
    short = {k: k.rsplit(".", 1)[-1] for k in differ}
    clash = {s for s in short.values() if list(short.values()).count(s) > 1}
    names: list[str] = []
    for a in axes:
        parts = [
            a[k] if k == "preset" else f"{short[k] if short[k] not in clash else k}={a[k]}" for k in differ
        ]
        names.append(safe_name(",".join(parts) or a.get("preset", "variant")))
    seen: dict[str, int] = {}
    taken = set(names)
    for i, n in enumerate(names):
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            k = seen[n]
            while f"{n}-{k}" in taken:
                k += 1
            names[i] = f"{n}-{k}"
            taken.add(names[i])
    return names


def preset_label(preset: str) -> str:
    """A preset argument's name: ``vgg38`` for ``vgg38`` and for ``presets/vgg38.toml``."""
    p = Path(preset)
    return p.stem if p.suffix == ".toml" else p.name


def expand(
    presets: Sequence[str], grid_texts: Sequence[str], sets: Sequence[str], options: dict[str, Any]
) -> list[Planned]:
    """Every variant, validated: presets x the cartesian product of the grids, in the order given.
    Raises :class:`ConfigError` (one paragraph naming the variant) for a bad grid, preset, key or
    value, and for two variants with the same config."""
    from tuitrain.commands.resolve import build_config

    if not presets:
        raise ConfigError(
            "sweep what? Give one or more presets: tuitrain sweep toy2d_mlp --grid optim.lr=1e-2,1e-3."
        )
    grids = [parse_grid(t) for t in grid_texts]
    repeated = [g.key for i, g in enumerate(grids) if g.key in {h.key for h in grids[:i]}]
    if repeated:
        raise ConfigError(f"--grid {repeated[0]}: given twice; put all its values in one --grid.")
    combos = [
        (preset, picks)
        for preset in presets
        for picks in itertools.product(*(range(len(g.texts)) for g in grids))
    ]
    axes = []
    for preset, picks in combos:
        a = {"preset": preset_label(preset)} if len(presets) > 1 else {}
        a.update({g.key: g.labels[i] for g, i in zip(grids, picks, strict=True)})
        axes.append(a)
    names = variant_names(axes) if len(combos) > 1 else [safe_name(preset_label(presets[0]))]
    args = run_args(options)
    planned: list[Planned] = []
    seen: dict[str, str] = {}
    for (preset, picks), a, name in zip(combos, axes, names, strict=True):
        own = [f"{g.key}={g.texts[i]}" for g, i in zip(grids, picks, strict=True)]
        variant_sets = [*sets, *own]
        try:
            cfg = build_config(preset, variant_sets, name=name, **options)
        except ConfigError as e:
            what = f"variant {name} ({preset}{''.join(' --set ' + s for s in own)})"
            raise ConfigError(f"{what}: {e}") from None
        same = to_toml(replace(cfg, name=""))
        if same in seen:
            raise ConfigError(
                f"variants {seen[same]} and {name} have the same config (a value given twice, or a "
                "--set that overrides the grid); remove one of them."
            )
        seen[same] = name
        planned.append(Planned(name, preset, variant_sets, args, cfg, a))
    return planned
