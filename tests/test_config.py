"""Config loading and every kind of bad input, each with a clear message naming file, key, allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuitrain.config import ConfigError, from_toml, load_config, parse_override, to_toml


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    return str(info.value)


def test_every_preset_loads(presets_dir: Path) -> None:
    files = sorted(presets_dir.glob("*.toml"))
    assert len(files) >= 12
    names = {f.stem for f in files}
    for required in (
        "vgg08",
        "vgg38",
        "vgg38_bn",
        "vgg38_rc",
        "vgg38_bn_rc",
        "mlp_cifar10",
        "resnet18_cifar10",
        "resnet18_sgd",
        "mlp_mixer_cifar10",
        "deep_mlp",
        "toy2d_mlp",
    ):
        assert required in names
    for f in files:
        cfg = load_config(f)
        assert cfg.name == f.stem
        assert cfg.description, f"{f.name} has no description"


def test_vgg_presets_follow_001(presets_dir: Path) -> None:
    for stem, bn, rc in (
        ("vgg38", False, False),
        ("vgg38_bn", True, False),
        ("vgg38_rc", False, True),
        ("vgg38_bn_rc", True, True),
    ):
        cfg = load_config(presets_dir / f"{stem}.toml")
        assert (cfg.model.batch_norm, cfg.model.residual) == (bn, rc)
        assert cfg.model.blocks_per_stage == 5 and cfg.model.filters == 32
        assert cfg.data.name == "cifar100" and cfg.data.augment
        assert (cfg.optim.name, cfg.optim.lr, cfg.schedule.name) == ("adam", 1e-3, "cosine")
        assert (cfg.train.batch_size, cfg.train.epochs) == (100, 100)
    assert load_config(presets_dir / "vgg08.toml").model.blocks_per_stage == 0


def test_extends_and_set_override(tmp_path: Path) -> None:
    write(tmp_path, "base.toml", '[optim]\nname = "sgd"\nlr = 0.1\n[train]\nepochs = 3\n')
    child = write(tmp_path, "child.toml", 'extends = "base.toml"\n[optim]\nlr = 0.5\n')
    cfg = load_config(child, ["train.epochs=7", "model.hidden=[8, 4]", "model.name=mlp"])
    assert cfg.optim.name == "sgd" and cfg.optim.lr == 0.5 and cfg.train.epochs == 7
    assert cfg.model.hidden == [8, 4] and cfg.model.name == "mlp"
    assert cfg.name == "child"


def test_toml_round_trip(presets_dir: Path) -> None:
    cfg = load_config(presets_dir / "mlp_mixer_cifar10.toml", ["optim.lr=3e-4"])
    assert from_toml(to_toml(cfg)) == cfg


def test_parse_override_values() -> None:
    assert parse_override("optim.lr=1e-2") == ("optim.lr", 0.01)
    assert parse_override("model.name=vgg") == ("model.name", "vgg")
    assert parse_override("model.batch_norm=true") == ("model.batch_norm", True)


def test_missing_file(tmp_path: Path) -> None:
    msg = error_of(tmp_path / "nope.toml")
    assert "nope.toml" in msg and "no such preset" in msg


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    p = write(tmp_path, "bad.toml", '[optim]\nlr = 1e-3\nname = "adam\n')
    msg = error_of(p)
    assert "bad.toml" in msg and "line 3" in msg


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    p = write(tmp_path, "typo.toml", "[optim]\nlearning_rate = 0.1\nlrr = 0.1\n")
    msg = error_of(p)
    assert "typo.toml" in msg and "optim.learning_rate" in msg and "Allowed in [optim]" in msg
    msg = error_of(None, ["optim.lrr=0.1"])
    assert "Did you mean `optim.lr`" in msg and "--set optim.lrr=0.1" in msg
    msg = error_of(None, ["modle.name=vgg"])
    assert "modle" in msg and "Did you mean `model`" in msg


def test_wrong_type(tmp_path: Path) -> None:
    p = write(tmp_path, "t.toml", '[train]\nepochs = "ten"\n')
    msg = error_of(p)
    assert "t.toml" in msg and "`train.epochs` must be an integer" in msg and "'ten'" in msg
    assert "must be a boolean" in error_of(None, ["model.batch_norm=1"])


def test_out_of_range_and_choices(tmp_path: Path) -> None:
    msg = error_of(None, ["optim.lr=-1"])
    assert "`optim.lr` = -1.0 is out of range" in msg and "(0, inf)" in msg
    msg = error_of(None, ["model.dropout=1.5"])
    assert "model.dropout" in msg and "[0, 1)" in msg
    msg = error_of(None, ["model.activation=relux"])
    assert "Did you mean 'relu'" in msg and "sigmoid" in msg
    p = write(tmp_path, "c.toml", '[data]\nname = "imagenet"\n')
    msg = error_of(p)
    assert "c.toml" in msg and "`data.name` = 'imagenet'" in msg and "cifar100" in msg


def test_error_names_the_file_that_set_the_key(tmp_path: Path) -> None:
    write(tmp_path, "parent.toml", "[train]\nbatch_size = 0\n")
    child = write(tmp_path, "child.toml", 'extends = "parent.toml"\n[optim]\nlr = 0.1\n')
    msg = error_of(child)
    assert "parent.toml" in msg and "train.batch_size" in msg


def test_extends_cycle_and_missing_parent(tmp_path: Path) -> None:
    a = write(tmp_path, "a.toml", 'extends = "b.toml"\n')
    write(tmp_path, "b.toml", 'extends = "a.toml"\n')
    assert "cycle" in error_of(a)
    c = write(tmp_path, "c.toml", 'extends = "gone.toml"\n')
    assert "gone.toml" in error_of(c)


def test_cross_field_checks() -> None:
    assert "toy2d" in error_of(None, ["data.name=toy2d", "model.name=vgg"])
    assert "patch_size" in error_of(None, ["model.name=mlp_mixer", "model.patch_size=5"])
    assert "--set" in error_of(None, ["optim.lr"])


def test_integers_are_bounded_with_the_range_in_the_message() -> None:
    msg = error_of(None, ["train.epochs=1e20"])
    assert "`train.epochs` = 100000000000000000000 is out of range; allowed: [1, 2147483647]" in msg
    assert "allowed: [1, 2147483647]" in error_of(None, [f"train.batch_size={2**64}"])
    assert "allowed: [1, 2147483647]" in error_of(None, ["model.hidden=[8, 4294967296]"])
    assert "allowed: [0, 2147483647]" in error_of(None, ["train.seed=-1"])
    assert "allowed: [0, 2147483647]" in error_of(None, [f"data.seed={2**70}"])
    assert load_config(None, ["train.seed=2147483647"]).train.seed == 2**31 - 1


def test_strings_without_nul_or_invalid_utf8() -> None:
    assert "NUL character" in error_of(None, ['name="a\\u0000b"'])
    assert "NUL character" in error_of(None, [], {"data.dir": "/x\0y"})
    assert "not valid UTF-8" in error_of(None, [], {"name": "\udcff"})  # undecodable argv bytes
    cfg = load_config(None, ['description="tab\\t bell\\u0007 del\\u007f \\"q\\" \\\\ é 🙂"'])
    assert from_toml(to_toml(cfg)) == cfg


def test_huge_values_are_shown_short() -> None:
    msg = error_of(None, [f"model.name={'v' * 100_000}"])
    assert len(msg) < 600 and "..." in msg


def test_presets_must_be_small_regular_files(tmp_path: Path) -> None:
    assert "is a character device" in error_of(Path("/dev/null"))
    big = write(tmp_path, "big.toml", "#" * (1 << 20) + "\n")
    assert "at most 1,048,576 bytes" in error_of(big)
    deep = write(tmp_path, "deep.toml", "a = " + "[" * 50 + "]" * 50 + "\n")
    assert "nested more than 8 levels" in error_of(deep)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'name = "caf\xe9"\n')
    assert "is not UTF-8 text" in error_of(latin)
