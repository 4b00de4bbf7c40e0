"""Typed run configuration: dataclasses, TOML presets with ``extends``, ``--set`` overrides, validation.

Every way a person can get a config wrong (a missing file, a TOML syntax error, an unknown key, a value
of the wrong type or out of range) ends in one :class:`ConfigError` whose message names the file, the
key and what is allowed. The CLI prints it and exits 2; nobody sees a traceback. No torch here: the
CLI validates a preset before paying for ``import torch``.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A bad preset, override or option. The message is meant for the user, as is."""


MODELS = ("mlp", "vgg", "resnet18", "mlp_mixer")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "sigmoid", "tanh")
DATASETS = ("synthetic", "cifar10", "cifar100", "toy2d")
DATASET_CLASSES = {"cifar10": 10, "cifar100": 100}
TOY2D_SHAPES = ("spirals", "moons", "blobs")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine", "step")
DEVICES = ("auto", "cpu", "cuda", "mps")
INITS = ("default", "kaiming", "xavier")
SHORTCUTS = ("none", "conv1x1", "avgpool")


@dataclass
class ModelConfig:
    """Model options. ``name`` picks the family; each option applies to the families noted."""

    name: str = "vgg"
    init: str = "default"  # all: PyTorch default init (as in 001), or kaiming/xavier
    activation: str = "leaky_relu"  # mlp, vgg (leaky_relu/relu), mlp_mixer
    batch_norm: bool = False  # mlp (before activation), vgg (after each conv)
    dropout: float = 0.0  # mlp, mlp_mixer
    hidden: list[int] = field(default_factory=lambda: [1024, 512, 64, 64])  # mlp
    filters: int = 32  # vgg
    stages: int = 3  # vgg
    blocks_per_stage: int = 5  # vgg: 0 -> VGG08, 5 -> VGG38
    residual: bool = False  # vgg: identity shortcuts around processing blocks
    downsample_shortcut: str = "none"  # vgg with residual: none | conv1x1 | avgpool
    width: int = 64  # resnet18: channels of the first stage
    patch_size: int = 4  # mlp_mixer
    embed_dim: int = 256  # mlp_mixer
    num_blocks: int = 4  # mlp_mixer
    mlp_ratio: list[float] = field(default_factory=lambda: [0.5, 4.0])  # mlp_mixer: [token, channel]


@dataclass
class DataConfig:
    name: str = "synthetic"
    classes: int = 10  # synthetic and toy2d; cifar sets its own
    train_size: int = 0  # 0: the dataset's default (synthetic 5000, cifar all but val_size)
    val_size: int = 0  # 0: default (synthetic 500, cifar 2500 split off the training set)
    test_size: int = 0  # 0: default (synthetic 1000, cifar 10000)
    dir: str = ""  # where CIFAR lives or is downloaded to; "" -> $TUITRAIN_DATA or ~/.cache/tuitrain
    download: bool = True
    augment: bool = True  # images: random crop with padding and horizontal flip, on the device
    crop_padding: int = 4
    flip: bool = True
    shape: str = "spirals"  # toy2d: spirals | moons | blobs
    noise: float = 0.1  # toy2d and synthetic
    image_size: int = 32  # synthetic: 32 is CIFAR-shaped; 16 makes CNN experiments 4x cheaper on a CPU
    seed: int = 0  # the dataset itself; train.seed drives init and shuffling


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw


@dataclass
class ScheduleConfig:
    name: str = "cosine"
    step_size: int = 30  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    warmup_epochs: int = 0


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 100
    eval_batch_size: int = 500
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # autocast to bf16; only ever used on CUDA
    channels_last: bool = True  # only ever used on CUDA
    cudnn_benchmark: bool = True
    compile: bool = False
    max_steps: int = 0  # 0: no cap; else stop after this many steps (smoke tests, quick looks)
    checkpoint: bool = True  # save final weights beside the run file


@dataclass
class MonitorConfig:
    every: int = 1  # probe per-layer statistics every N steps
    emit_seconds: float = 0.1  # how often step batches go to the sinks
    flush_seconds: float = 1.0  # run file flush period
    vanishing: float = 1e-8  # mean |grad| below this is "vanishing" (VGG38 at init: ~1e-18; VGG08: ~1e-6)
    exploding: float = 1e2  # grad L2 norm above this is "exploding"
    alert_steps: int = 50  # a vanishing/exploding condition must last this many steps to alert


@dataclass
class RunConfig:
    name: str = "run"
    description: str = ""
    out: str = ""  # run file path; "" -> runs/<name>-<timestamp>.h5
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


# Allowed values and ranges, by dotted key. Checked after every merge so that the message can name
# the key and the allowed set, whichever layer (preset, parent, --set) the bad value came from.
CHOICES: dict[str, tuple[str, ...]] = {
    "model.name": MODELS,
    "model.init": INITS,
    "model.activation": ACTIVATIONS,
    "model.downsample_shortcut": SHORTCUTS,
    "data.name": DATASETS,
    "data.shape": TOY2D_SHAPES,
    "optim.name": OPTIMIZERS,
    "schedule.name": SCHEDULES,
    "train.device": DEVICES,
}
# (low, high, low_inclusive, high_inclusive); None = unbounded
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "model.dropout": (0.0, 1.0, True, False),
    "model.filters": (1, None, True, True),
    "model.stages": (1, 5, True, True),
    "model.blocks_per_stage": (0, None, True, True),
    "model.width": (1, None, True, True),
    "model.patch_size": (1, 32, True, True),
    "model.embed_dim": (1, None, True, True),
    "model.num_blocks": (1, None, True, True),
    "data.classes": (2, 1000, True, True),
    "data.train_size": (0, None, True, True),
    "data.val_size": (0, None, True, True),
    "data.test_size": (0, None, True, True),
    "data.crop_padding": (0, 16, True, True),
    "data.image_size": (8, 64, True, True),
    "data.noise": (0.0, None, True, True),
    "optim.lr": (0.0, None, False, True),
    "optim.momentum": (0.0, 1.0, True, False),
    "optim.weight_decay": (0.0, None, True, True),
    "schedule.step_size": (1, None, True, True),
    "schedule.gamma": (0.0, 1.0, False, True),
    "schedule.warmup_epochs": (0, None, True, True),
    "train.epochs": (1, None, True, True),
    "train.batch_size": (1, None, True, True),
    "train.eval_batch_size": (1, None, True, True),
    "train.max_steps": (0, None, True, True),
    "monitor.every": (1, None, True, True),
    "monitor.emit_seconds": (0.01, 10.0, True, True),
    "monitor.flush_seconds": (0.05, 60.0, True, True),
    "monitor.vanishing": (0.0, None, False, True),
    "monitor.exploding": (0.0, None, False, True),
    "monitor.alert_steps": (1, None, True, True),
}


# ---------------------------------------------------------------------------------------------
# Loading


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: no such preset file. Run `tuitrain presets` to list the presets.")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a preset file (expected a .toml file).")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the preset: {e}.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: TOML syntax error: {e}.") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _load_raw(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, Path]]:
    """Return the merged raw table of a preset and its ``extends`` ancestors, and for each dotted key
    the file that set it (so errors name the right file)."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p.name) for p in (*chain, path))
        raise ConfigError(f"{chain[0]}: `extends` forms a cycle: {cycle}.")
    raw = _read_toml(path)
    parent = raw.pop("extends", None)
    origin = {key: path for key in _dotted_keys(raw)}
    if parent is None:
        return raw, origin
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: `extends` must be a string path to another preset, got {parent!r}.")
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    if not parent_path.exists():
        raise ConfigError(f"{path}: `extends = {parent!r}` names a file that does not exist ({parent_path}).")
    base, base_origin = _load_raw(parent_path, (*chain, path))
    return _merge(base, raw), {**base_origin, **origin}


def _dotted_keys(table: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in table.items():
        if isinstance(v, dict):
            keys.extend(_dotted_keys(v, f"{prefix}{k}."))
        else:
            keys.append(f"{prefix}{k}")
    return keys


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-2"`` -> ``("optim.lr", 0.01)``. Values are TOML; a bare word is a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set optim.lr=1e-2.")
    key, _, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key is empty; expected KEY=VALUE, e.g. --set optim.lr=1e-2.")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value  # bare words: --set model.name=vgg
    return key, parsed


def _set_dotted(table: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = table
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: `{p}` is a value, not a section.")
        node = nxt
    node[parts[-1]] = value


def load_config(
    preset: str | Path | None,
    overrides: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> RunConfig:
    """Build a validated :class:`RunConfig` from a preset file, ``--set`` strings and CLI options.

    ``extra`` holds dotted keys from dedicated CLI options (``--epochs`` -> ``train.epochs``); they are
    applied after ``--set``.
    """
    raw: dict[str, Any] = {}
    origin: dict[str, Path | str] = {}
    if preset is not None:
        path = Path(preset)
        raw, file_origin = _load_raw(path)
        origin.update(file_origin)
        raw.setdefault("name", path.stem)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(raw, key, value)
        origin[key] = f"--set {text}"
    for key, value in (extra or {}).items():
        _set_dotted(raw, key, value)
        origin[key] = "command line"
    return from_dict(raw, origin)


# ---------------------------------------------------------------------------------------------
# Validation


def _where(key: str, origin: dict[str, Path | str]) -> str:
    src = origin.get(key)
    return f"{src}: " if src is not None else ""


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "a boolean (true or false)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner).split(' ', 1)[1]}s"
    return str(tp)


def _coerce(value: Any, tp: Any, key: str, origin: dict[str, Path | str]) -> Any:
    where = _where(key, origin)
    bad = ConfigError(f"{where}`{key}` must be {_type_name(tp)}, got {value!r} ({type(value).__name__}).")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise bad
        return [_coerce(v, inner, key, origin) for v in value]
    raise bad  # pragma: no cover


def _section_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown(key: str, known: list[str], where: str, section: str) -> ConfigError:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
    hint = f" Did you mean `{(section + '.') if section else ''}{close[0]}`?" if close else ""
    allowed = ", ".join(known)
    return ConfigError(
        f"{where}unknown key `{key}`.{hint} Allowed {'in [' + section + ']' if section else 'at the top level'}: {allowed}."
    )


def from_dict(raw: dict[str, Any], origin: dict[str, Path | str] | None = None) -> RunConfig:
    origin = origin or {}
    top_types = _section_types(RunConfig)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in top_types:
            raise _unknown(key, list(top_types), _where(key, origin) or _first_where(key, origin), "")
        tp = top_types[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{_where(key, origin)}`{key}` must be a table ([{key}]), got {value!r}.")
            sec_types = _section_types(tp)
            kwargs = {}
            for sk, sv in value.items():
                dotted = f"{key}.{sk}"
                if sk not in sec_types:
                    raise _unknown(dotted, list(sec_types), _where(dotted, origin), key)
                if isinstance(sv, dict):
                    raise ConfigError(f"{_where(dotted, origin)}`{dotted}` must be a value, not a table.")
                kwargs[sk] = _coerce(sv, sec_types[sk], dotted, origin)
            values[key] = tp(**kwargs)
        else:
            values[key] = _coerce(value, tp, key, origin)
    cfg = RunConfig(**values)
    _check(cfg, origin)
    return cfg


def _first_where(key: str, origin: dict[str, Path | str]) -> str:
    for k, src in origin.items():
        if k == key or k.startswith(key + "."):
            return f"{src}: "
    return ""


def _check(cfg: RunConfig, origin: dict[str, Path | str]) -> None:
    flat = to_flat(cfg)
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            close = difflib.get_close_matches(str(flat[key]), allowed, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{_where(key, origin)}`{key}` = {flat[key]!r} is not allowed.{hint} Allowed: {', '.join(allowed)}."
            )
    for key, (lo, hi, lo_inc, hi_inc) in RANGES.items():
        v = flat[key]
        ok = (lo is None or (v >= lo if lo_inc else v > lo)) and (hi is None or (v <= hi if hi_inc else v < hi))
        if not ok:
            lo_s = "-inf" if lo is None else f"{lo:g}"
            hi_s = "inf" if hi is None else f"{hi:g}"
            rng = f"{'[' if lo_inc else '('}{lo_s}, {hi_s}{']' if hi_inc else ')'}"
            raise ConfigError(f"{_where(key, origin)}`{key}` = {v!r} is out of range; allowed: {rng}.")
    m = cfg.model
    if m.name == "mlp" and not m.hidden:
        raise ConfigError(f"{_where('model.hidden', origin)}`model.hidden` must list at least one width.")
    if any(w < 1 for w in m.hidden):
        raise ConfigError(f"{_where('model.hidden', origin)}`model.hidden` widths must be >= 1, got {m.hidden}.")
    if len(m.mlp_ratio) != 2 or any(r <= 0 for r in m.mlp_ratio):
        raise ConfigError(
            f"{_where('model.mlp_ratio', origin)}`model.mlp_ratio` must be two positive numbers "
            f"[token, channel], got {m.mlp_ratio}."
        )
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        raise ConfigError(
            f"{_where('optim.betas', origin)}`optim.betas` must be two numbers in [0, 1), got {cfg.optim.betas}."
        )
    size = cfg.data.image_size
    if cfg.data.name != "synthetic" and size != 32:
        raise ConfigError(
            f"{_where('data.image_size', origin)}`data.image_size` = {size} applies to synthetic data only; "
            f"{cfg.data.name} images are 32x32."
        )
    if m.name == "mlp_mixer" and size % m.patch_size:
        allowed = ", ".join(str(p) for p in range(1, size + 1) if size % p == 0)
        raise ConfigError(
            f"{_where('model.patch_size', origin)}`model.patch_size` = {m.patch_size} must divide the "
            f"{size}-pixel image size; allowed: {allowed}."
        )
    if cfg.data.name == "toy2d" and m.name != "mlp":
        raise ConfigError(
            f"{_where('data.name', origin)}`data.name` = 'toy2d' gives 2-D points, which only `model.name` = "
            f"'mlp' can take (got {m.name!r})."
        )
    if m.downsample_shortcut != "none" and not m.residual:
        raise ConfigError(
            f"{_where('model.downsample_shortcut', origin)}`model.downsample_shortcut` = {m.downsample_shortcut!r} "
            "needs `model.residual` = true (it is a shortcut across the down-sampling blocks)."
        )
    if m.name == "vgg" and m.activation not in ("relu", "leaky_relu"):
        raise ConfigError(
            f"{_where('model.activation', origin)}`model.activation` = {m.activation!r} is not supported for vgg; "
            "allowed: leaky_relu, relu."
        )


# ---------------------------------------------------------------------------------------------
# Output


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_flat(cfg: RunConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in to_dict(cfg).items():
        if isinstance(v, dict):
            for sk, sv in v.items():
                out[f"{k}.{sk}"] = sv
        else:
            out[k] = v
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))  # pragma: no cover


def to_toml(cfg: RunConfig) -> str:
    """The resolved config as TOML: stored in every run file, loadable again with ``load_config``."""
    lines: list[str] = []
    sections: list[tuple[str, dict[str, Any]]] = []
    for k, v in to_dict(cfg).items():
        if isinstance(v, dict):
            sections.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for name, table in sections:
        lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def from_toml(text: str) -> RunConfig:
    return from_dict(tomllib.loads(text))


def diff_flat(configs: list[RunConfig]) -> list[str]:
    """Dotted keys whose values differ between configs (for comparison tables)."""
    flats = [to_flat(c) for c in configs]
    keys = [k for k in flats[0] if k not in ("name", "description", "out")]
    return [k for k in keys if len({repr(f[k]) for f in flats}) > 1]


