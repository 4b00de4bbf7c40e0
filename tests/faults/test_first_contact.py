"""First contact: what a new user types first and reads first, through the real CLI.

``--version`` and ``-h``; a mistyped preset name; ``tuitrain presets``, a headless run and
``tuitrain info`` piped (not a terminal) at 80 columns, where names, numbers and times must never be
broken across lines and the config ``info`` prints must stay valid TOML. The wheel itself is tested in
tests/test_packaging.py.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import h5py
import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import PRESETS, cli_env
from tuitrain.config import MODEL_KEYS, MODELS, ModelConfig, from_toml, load_config, to_flat

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def env80() -> dict[str, str]:
    env = cli_env()
    env.update(COLUMNS="80", LINES="24", OMP_NUM_THREADS="1")
    return env


# --- --version and -h -------------------------------------------------------------------------------


def test_version() -> None:
    from tuitrain import __version__

    for flag in ("--version", "-V"):
        p = tt(flag)
        assert p.returncode == 0, p.stdout + p.stderr
        assert p.stdout == f"tuitrain {__version__}\n"


@pytest.mark.parametrize("command", ["", "run", "watch", "presets", "info", "replay"])
def test_short_help_on_the_app_and_every_command(command: str) -> None:
    args = [command, "-h"] if command else ["-h"]
    p = tt(*args)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(rf"Usage: (python -m )?tuitrain {command}".rstrip(), p.stdout), p.stdout
    assert p.stdout == tt(*args[:-1], "--help").stdout  # -h is --help, not something of its own


# --- preset names -----------------------------------------------------------------------------------


def test_a_mistyped_preset_name_gets_a_did_you_mean() -> None:
    p = tt("run", "vgg83", "--no-ui", env=env80())
    assert_clean_error(p, "vgg83", "Did you mean", "`vgg38`", "`tuitrain presets` lists them all")
    assert "Traceback" not in p.stderr and p.stdout == ""
    w = tt("watch", "vgg83", env=env80())
    assert_clean_error(w, "vgg83", "`vgg38`")


def test_a_missing_preset_path_names_the_preset_it_may_have_meant(tmp_path: Path) -> None:
    p = tt("run", str(tmp_path / "vgg38.toml"), "--no-ui")
    assert_clean_error(p, "no such preset file", "The name `vgg38` alone finds the preset", "vgg38.toml")
    p = tt("run", str(tmp_path / "vgg83.toml"), "--no-ui")
    assert_clean_error(p, "no such preset file", "Did you mean", "`vgg38`")


def test_the_projects_own_presets_come_first_and_extends_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "presets" / "base").mkdir(parents=True)
    (tmp_path / "presets" / "base" / "tiny.toml").write_text(
        '[model]\nname = "mlp"\nhidden = [4]\n[data]\nname = "toy2d"\n[train]\nepochs = 1\n'
    )
    # Shadows the packaged toy2d_mlp by name; extends a file beside it, not one in the working dir.
    (tmp_path / "presets" / "toy2d_mlp.toml").write_text(
        'extends = "base/tiny.toml"\ndescription = "mine, not the packaged one"\n'
    )
    listing = tt("presets", cwd=tmp_path, env=env80(), timeout=180)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    out = listing.stdout
    assert "Presets in presets (this project's" in out and "(shipped with tuitrain)" in out
    assert out.index("mine, not the packaged one") < out.index("Presets in", out.index("this project's") + 1)
    assert "Found first by name: toy2d_mlp from presets." in out
    run = tt("run", "toy2d_mlp", "--no-ui", "--max-steps", "2", "--out", "r.h5", cwd=tmp_path, env=env80())
    assert run.returncode == 0, run.stdout + run.stderr
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert from_toml(f.attrs["config_toml"]).model.hidden == [4]  # the project's, via extends


# --- tuitrain presets, piped, 80 columns ------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 60, 140])
def test_presets_piped_never_wrap_names_or_numbers(columns: int) -> None:
    env = env80()
    env["COLUMNS"] = str(columns)
    p = tt("presets", env=env, timeout=180)  # captured: stdout is a pipe, not a terminal
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert all(len(line) <= columns for line in lines[1:]), [ln for ln in lines if len(ln) > columns]
    rows = {}
    for f in sorted(PRESETS.glob("*.toml")):
        hits = [ln for ln in lines if ln.split()[:1] == [f.stem]]
        assert len(hits) == 1, (f.stem, hits)  # whole, on one line, once
        rows[f.stem] = hits[0]
        assert re.search(r"\s\d{1,3}(,\d{3})*(\s|$)", hits[0]), hits[0]  # the count, in one piece
    for name, params in (("vgg08", "59,460"), ("vgg38", "335,940"), ("resnet18_cifar10", "11,173,962")):
        assert f" {params}" in rows[name], rows[name]
    # No fragment of a name or a number sits alone on a line of its own (the old `moid` under
    # `mlp_cifar10_sig`): every other line is a header, a rule or description text.
    stems = {f.stem for f in PRESETS.glob("*.toml")}
    for line in lines:
        word = line.strip()
        assert not (word and word not in stems and any(s.endswith(word) and s != word for s in stems)), line
        assert not re.fullmatch(r"[\d,]+", word), line
    # Descriptions may wrap, but every word of them is there, in order.
    desc = load_config(PRESETS / "mlp_cifar10.toml").description
    assert " ".join(" ".join(lines).split()).count(" ".join(desc.split())) == 1


# --- a headless run at 80 columns -------------------------------------------------------------------


def test_headless_epoch_lines_fit_80_columns_and_no_bar_is_left(tmp_path: Path) -> None:
    out = tmp_path / "toy.h5"
    name = "toy2d_mlp_with_a_name_longer_than_usual"
    p = tt("run", "toy2d_mlp", "--no-ui", "--epochs", "3", "--name", name, "--out", str(out), env=env80())
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith(f"{name}: mlp"), lines[0]  # the name whole, on the first line
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in epochs] == ["1/3", "2/3", "3/3"], p.stdout
    for ln in epochs:  # loss, accuracy, lr and the time all on the epoch's own line, within 80 columns
        assert re.fullmatch(r"epoch \d/3  train .+%  val .+%  lr \S+  \d+\.\d s", ln), ln
        assert len(ln) <= 80, ln
    assert not any(re.fullmatch(r"\s*\d+\.\d s", ln) for ln in lines), p.stdout  # no time on its own
    assert "━" not in p.stdout and not re.search(r"\bstep\b.*\d+/\d+", p.stdout), p.stdout  # no stale bar
    assert f"run file: {out}" in lines


def test_epoch_line_words_when_wide_compact_within_80_columns_at_worst() -> None:
    from tuitrain.events import EpochEnd
    from tuitrain.train.sinks import epoch_line

    worst = EpochEnd(99, 10**6, 1234.5678, 1.0, float("nan"), 1.0, 1e-3, 12345.6)
    assert len(epoch_line(worst, 100, 80)) <= 80
    wide = epoch_line(EpochEnd(1, 32, 0.93, 0.58, 1.02, 0.45, 1e-3, 0.1), 3, 120)
    assert wide == "epoch 2/3  train loss 0.9300 acc 58.00%  val loss 1.0200 acc 45.00%  lr 1.00e-03  0.1 s"
    assert epoch_line(worst, 100, 80).startswith("epoch 100/100  train 1.23e+03 100.00%  val nan")


# --- tuitrain info at 80 columns --------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("info") / "vgg.h5"
    description = 'a description longer than eighty columns, with "quotes", a \\\\ backslash and more words'
    p = tt(
        "run",
        "vgg08",
        "--no-ui",
        "--data",
        "synthetic",
        "--set",
        "data.image_size=8",
        "--set",
        "data.train_size=200",
        "--set",
        f"description='{description}'",
        "--set",
        "model.hidden=[7, 7]",  # set, but a VGG does not read it: info must not show it
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--out",
        str(out),
        env=env80(),
        timeout=240,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return out


def test_info_at_80_columns_prints_valid_toml_of_the_keys_that_apply(vgg_run: Path) -> None:
    p = tt("info", str(vgg_run), env=env80())
    assert p.returncode == 0, p.stdout + p.stderr
    start = p.stdout.index("\n# config") + 1
    block = p.stdout[start:]
    shown = tomllib.loads(block)  # whole: not cut at 80 columns, not wrapped into invalid TOML
    with h5py.File(vgg_run, "r") as f:
        stored = tomllib.loads(f.attrs["config_toml"])
    assert stored["model"]["hidden"] == [7, 7] and "patch_size" in stored["model"]  # the file has all
    assert set(shown["model"]) == set(MODEL_KEYS["vgg"])
    assert shown["model"] == {k: stored["model"][k] for k in MODEL_KEYS["vgg"]}
    assert {k: v for k, v in shown.items() if k != "model"} == {
        k: v for k, v in stored.items() if k != "model"
    }
    assert len(stored["description"]) > 80 and shown["description"] == stored["description"]
    for key in ("hidden", "patch_size", "embed_dim", "mlp_ratio", "width"):
        assert not re.search(rf"^{key} =", p.stdout, re.M), key
    # Loaded as a preset, the printed config is the same run: equal in every key a VGG reads.
    with h5py.File(vgg_run, "r") as f:
        full = to_flat(from_toml(f.attrs["config_toml"]))
    printed = to_flat(from_toml(block))
    hidden = {
        f"model.{k}" for k in {f.name for f in dataclasses.fields(ModelConfig)} - set(MODEL_KEYS["vgg"])
    }
    assert {k: v for k, v in printed.items() if k not in hidden} == {
        k: v for k, v in full.items() if k not in hidden
    }


def test_info_header_lines_fit_80_columns(vgg_run: Path) -> None:
    p = tt("info", str(vgg_run), env=env80())
    head = p.stdout[: p.stdout.index("Final metrics")].splitlines()
    assert head[0].split() == ["vgg08", str(vgg_run)]
    assert all(len(line) <= 80 for line in head[1:]), head


# --- which model keys apply to which model --------------------------------------------------------


SMALL = {
    "mlp": ModelConfig(name="mlp", hidden=[8, 8], activation="relu"),
    "vgg": ModelConfig(name="vgg", filters=4, stages=2, blocks_per_stage=1),
    "resnet18": ModelConfig(name="resnet18", width=4),
    "mlp_mixer": ModelConfig(name="mlp_mixer", patch_size=4, embed_dim=8, num_blocks=1, activation="gelu"),
}
OTHER_VALUE = {
    "activation": "tanh",
    "batch_norm": True,
    "dropout": 0.3,
    "hidden": [3, 5, 7],
    "filters": 6,
    "stages": 3,
    "blocks_per_stage": 2,
    "residual": True,
    "downsample_shortcut": "conv1x1",
    "width": 6,
    "patch_size": 2,
    "embed_dim": 12,
    "num_blocks": 2,
    "mlp_ratio": [1.0, 2.0],
}


def test_model_keys_cover_every_model_and_every_key() -> None:
    assert set(MODEL_KEYS) == set(MODELS)
    fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"options"}  # a model of one's own
    assert set().union(*MODEL_KEYS.values()) == fields
    assert set(OTHER_VALUE) == fields - {"name", "init"}


@pytest.mark.parametrize("family", sorted(SMALL))
def test_keys_left_out_of_a_model_change_nothing_in_it(family: str) -> None:
    """What info hides must not matter: a model built with any other value of a key its family does
    not read is the same model, module for module."""
    import torch

    from tuitrain.train.models import build_model

    shape = (3, 8, 8)
    base = SMALL[family]
    torch.manual_seed(0)
    ref = build_model(base, shape, 10)
    for key in sorted(set(OTHER_VALUE) - set(MODEL_KEYS[family])):
        torch.manual_seed(0)
        other = build_model(dataclasses.replace(base, **{key: OTHER_VALUE[key]}), shape, 10)
        assert repr(other) == repr(ref), (family, key)
        assert all(
            torch.equal(a, b)
            for a, b in zip(ref.state_dict().values(), other.state_dict().values(), strict=True)
        )


@pytest.mark.parametrize(
    "stored",
    [
        'name = "a \\"quoted\\" \\\\ name"\ndescription = "two\\nlines"\n[model]\nname = "mlp"\nhidden = '
        + str([64] * 64)
        + "\nfilters = 3\n[optim]\nbetas = [0.9, 0.999]\nlr = inf\n",
        'x = 1\n[model]\nname = "some_future_model"\nnew_key = [[1, 2], [3]]\n[a.b]\nc = 1979-05-27\n',
    ],
)
def test_config_block_reads_back_as_the_stored_config(stored: str) -> None:
    """Whatever a run file holds, what info prints of it parses back to the same table (less the
    [model] keys the model does not read), lists on one line where they can be."""
    from tuitrain.commands.show import config_block

    block = config_block(stored)
    want = tomllib.loads(stored)
    if want["model"]["name"] in MODEL_KEYS:
        want["model"] = {k: v for k, v in want["model"].items() if k in MODEL_KEYS[want["model"]["name"]]}
    assert tomllib.loads(block) == want
    if "hidden" in want["model"]:
        assert f"hidden = {[64] * 64}" in block.splitlines()  # one line, not 66
    assert config_block("x = = 1").endswith("x = = 1")  # not TOML: printed as stored, and says so
