"""Property tests of the config loader and the TOML round trip (hypothesis).

The strategies are derived from the schema itself (dataclass types, CHOICES, RANGES), so a key added
later is generated too. Properties:

* every valid config survives ``to_toml`` -> ``from_toml`` unchanged, and its TOML also loads as a
  preset file (what a run file's ``config_toml``, a ``watch`` worker and each data-parallel rank rely
  on); strings carry quotes, backslashes, newlines, control characters and any Unicode;
* whatever text a preset file holds, and whatever a ``--set`` says, loading ends in a config or one
  ConfigError: never another exception (RecursionError, UnicodeError, TypeError, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tuitrain.config import (
    CHOICES,
    RANGES,
    ConfigError,
    RunConfig,
    from_dict,
    from_toml,
    load_config,
    to_toml,
)
from tuitrain.config.dump import to_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

INT32 = 2**31 - 1
SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)

# Text a run's name or description may hold: anything but NUL and lone surrogates (which neither a
# path nor the run file can hold; validate refuses them). Weighted towards what breaks TOML writers.
NASTY = st.sampled_from(
    [
        '"',
        "'",
        "\\",
        "\n",
        "\r",
        "\t",
        '"""',
        "'''",
        "\x7f",
        "\x1b",
        "\x01",
        "é",
        "日本",
        "🙂",
        "\u2028",
        "#",
        "=",
        "[",
        "]",
    ]
)
TEXT = st.lists(
    st.one_of(
        NASTY, st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
    ),
    max_size=8,
).map("".join)


def _number(key: str, integer: bool) -> st.SearchStrategy[Any]:
    lo, hi, lo_inc, hi_inc = RANGES.get(key, (None, None, True, True))
    if integer:
        low = -INT32 - 1 if lo is None else (math.ceil(lo) if lo_inc else math.floor(lo) + 1)
        high = INT32 if hi is None else (math.floor(hi) if hi_inc else math.ceil(hi) - 1)
        return st.integers(max(low, -INT32 - 1), min(high, INT32))
    return st.floats(
        lo if lo is not None else -1e300,
        hi if hi is not None else 1e300,
        exclude_min=lo is not None and not lo_inc,
        exclude_max=hi is not None and not hi_inc,
        allow_nan=False,
        allow_infinity=False,
    )


def _value(key: str, tp: Any) -> st.SearchStrategy[Any]:
    if key in CHOICES:
        return st.sampled_from(CHOICES[key])
    if tp is bool:
        return st.booleans()
    if tp is int:
        return _number(key, True)
    if tp is float:
        return _number(key, False)
    if tp is str:
        return TEXT
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        if inner is int:
            return st.lists(st.integers(1, INT32), min_size=1, max_size=6)
        return st.lists(st.floats(0.001, 0.999, allow_nan=False), min_size=2, max_size=2)
    if isinstance(tp, types.UnionType):  # train.threads: "auto" or a count
        return st.one_of(st.just("auto"), st.integers(1, 256))
    raise AssertionError(f"no strategy for {key}: {tp}")


def _section(prefix: str, cls: type) -> st.SearchStrategy[dict[str, Any]]:
    hints = typing.get_type_hints(cls)
    fields = {  # ModelConfig.options (a model of the user's own) is spelt as [model] keys, not a table
        f.name: _value(f"{prefix}{f.name}", hints[f.name])
        for f in dataclasses.fields(cls)
        if typing.get_origin(hints[f.name]) is not dict
    }
    return st.fixed_dictionaries({}, optional=fields)  # any subset of the keys, like a real preset


def _raw() -> st.SearchStrategy[dict[str, Any]]:
    hints = typing.get_type_hints(RunConfig)
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(RunConfig):
        tp = hints[f.name]
        parts[f.name] = _section(f"{f.name}.", tp) if dataclasses.is_dataclass(tp) else _value(f.name, tp)
    return st.fixed_dictionaries({}, optional=parts)


def _fix(raw: dict[str, Any]) -> dict[str, Any]:
    """Steer random tables towards the combinations that can train (validate's cross-key rules), so
    that few examples are thrown away; the rest are filtered by from_dict itself."""
    model, data = raw.setdefault("model", {}), raw.setdefault("data", {})
    if data.get("name", "synthetic") != "synthetic":
        data["image_size"] = 32
    if data.get("name") == "toy2d":
        model["name"] = "mlp"
    if model.get("name", "vgg") == "vgg" and model.get("activation") not in (None, "relu", "leaky_relu"):
        model["activation"] = "relu"
    if model.get("downsample_shortcut", "none") != "none":
        model["residual"] = True
    if model.get("name") == "mlp_mixer":
        model["patch_size"] = 1
    return raw


@st.composite
def valid_configs(draw: st.DrawFn) -> RunConfig:
    raw = _fix(draw(_raw()))
    try:
        return from_dict(raw)
    except ConfigError:
        assume(False)
        raise  # pragma: no cover - assume(False) does not return


@SETTINGS
@given(valid_configs())
def test_every_valid_config_round_trips_through_toml(cfg: RunConfig) -> None:
    text = to_toml(cfg)
    assert tomllib.loads(text) == to_dict(cfg)
    assert from_toml(text) == cfg


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(valid_configs())
def test_the_toml_of_every_valid_config_loads_as_a_preset(tmp_path: Path, cfg: RunConfig) -> None:
    path = tmp_path / "stored.toml"
    path.write_text(to_toml(cfg), encoding="utf-8")
    assert load_config(path) == cfg


def test_the_strategies_reach_every_choice() -> None:
    """The generator is not stuck in a corner: every model, dataset and optimizer appears."""
    seen: dict[str, set[Any]] = {k: set() for k in ("model.name", "data.name", "optim.name")}

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(valid_configs())
    def collect(cfg: RunConfig) -> None:
        seen["model.name"].add(cfg.model.name)
        seen["data.name"].add(cfg.data.name)
        seen["optim.name"].add(cfg.optim.name)

    collect()
    for key, values in seen.items():
        assert values == set(CHOICES[key]), (key, values)


# -- the loader never raises anything but ConfigError ------------------------------------------------

TOMLISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        TEXT,
        st.dates(),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)


@SETTINGS
@given(st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(RunConfig)] + ["x"]), TOMLISH))
def test_any_table_gives_a_config_or_a_config_error(raw: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        from_dict(raw)


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_any_preset_text_gives_a_config_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("p") / "any.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    with contextlib.suppress(ConfigError):
        load_config(path)


SET_KEYS = st.sampled_from(
    ["name", "model.hidden", "train.epochs", "train.seed", "optim.lr", "model", "a.b.c", ""]
)


@SETTINGS
@given(st.lists(st.tuples(SET_KEYS, st.text(max_size=40)), max_size=3))
def test_any_set_override_gives_a_config_or_a_config_error(sets: list[tuple[str, str]]) -> None:
    with contextlib.suppress(ConfigError):
        load_config(None, [f"{k}={v}" for k, v in sets])
