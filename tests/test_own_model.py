"""A preset with a model of the user's own: ``model.name = "mymodels:build"`` (tuitrain/train/own_model.py).

The module is tests/scripts/mymodels.py, copied into the run's working directory: the ``tuitrain``
console script (not ``python -m``, which would put the directory on sys.path itself) must find it
there. Every way the reference can be wrong is exit 2 with one paragraph and no traceback.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import PRESETS, cli_env
from tuitrain.config import ConfigError, from_toml, load_config, to_toml
from tuitrain.runfile import open_run

TOY = str(PRESETS / "toy2d_mlp.toml")
MYMODELS = Path(__file__).parent / "scripts" / "mymodels.py"
CONSOLE = Path(sys.executable).parent / "tuitrain"  # the installed console script
QUICK = ("--no-ui", "--max-steps", "6", "--set", "data.train_size=256", "--set", "train.checkpoint=false")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project folder: their model module beside where they run tuitrain."""
    shutil.copy(MYMODELS, tmp_path / "mymodels.py")
    return tmp_path


def console(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [str(CONSOLE)] if CONSOLE.exists() else [sys.executable, "-m", "tuitrain"]
    env = {**cli_env(), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=180, env=env, cwd=cwd)


def test_a_preset_trains_an_own_model_and_the_file_names_its_layers(project: Path, tmp_path_factory) -> None:
    out = project / "own.h5"
    sets = ("--set", "model.name=mymodels:build", "--set", "model.width_tiny=12")
    p = console("run", TOY, *QUICK, *sets, "--out", str(out), cwd=project)
    assert p.returncode == 0, p.stdout + p.stderr
    with open_run(out) as rf:
        assert rf.status == "completed" and rf.n_steps == 6
        names = [layer.name for layer in rf.layers]
        assert names == ["encoder.weight", "encoder.bias", "classifier.weight", "classifier.bias"]
        assert rf.params == 2 * 12 + 12 + 12 * 3 + 3  # toy2d: 2 inputs, 3 classes; width_tiny = 12
        cfg = from_toml(rf.config_toml)
    assert cfg.model.name == "mymodels:build" and cfg.model.options == {"width_tiny": 12}
    # info opens it anywhere: it never imports the model's module
    info = console("info", str(out), cwd=tmp_path_factory.mktemp("elsewhere"))
    assert info.returncode == 0, info.stdout + info.stderr
    assert "mymodels:build" in info.stdout and "width_tiny = 12" in info.stdout


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("nomodule:build", ["no module named 'nomodule'", "module:function"]),  # before torch loads
        (
            "mymodels:broken",
            ["mymodels:broken raised ValueError: width_tiny must be even", "mymodels.py, line"],
        ),
        ("mymodels", ["is not allowed", "a model of your own as `module:function`"]),
    ],
)
def test_a_bad_own_model_is_a_clean_error_from_run(project: Path, name: str, needles: list[str]) -> None:
    out = project / "bad.h5"
    p = console("run", TOY, *QUICK, "--set", f"model.name={name}", "--out", str(out), cwd=project)
    assert_clean_error(p, *needles, code=2)
    assert not out.exists()  # bad input leaves no run behind


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("mymodels:not_a_module", "mymodels:not_a_module returned a str, not a torch.nn.Module"),
        ("mymodels:buld", "has no `buld`. Did you mean `mymodels:build`?"),
        ("mymodels:NOT_CALLABLE", "mymodels:NOT_CALLABLE is an int, not a function"),
        ("mymodels:TinyNet.nope", "mymodels.TinyNet ("),
        ("my models:build", "a model of your own is named `module:function`"),
        ("nomodule.sub:build", "no module named 'nomodule'"),
    ],
)
def test_each_way_an_own_model_fails_is_one_config_error(
    monkeypatch: pytest.MonkeyPatch, project: Path, name: str, needle: str
) -> None:
    from tuitrain.train.models import build_model

    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    with pytest.raises(ConfigError) as e:
        build_model(load_config(TOY, [f"model.name={name}"]).model, (2,), 3)
    assert needle in str(e.value) and f"`model.name` = {name!r}" in str(e.value)


def test_a_bad_own_model_is_a_clean_error_from_watch_without_a_terminal(project: Path) -> None:
    """``watch`` whose stdin is not a terminal trains headless: the same paragraph, exit 2."""
    out = project / "bad.h5"
    p = subprocess.run(
        [*([str(CONSOLE)] if CONSOLE.exists() else [sys.executable, "-m", "tuitrain"]), "watch", TOY,
         "--max-steps", "6", "--set", "model.name=mymodels:NOT_CALLABLE", "--out", str(out)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180,
        env={**cli_env(), "OMP_NUM_THREADS": "1"}, cwd=project,
    )  # fmt: skip
    assert_clean_error(p, "mymodels:NOT_CALLABLE is an int, not a function", code=2)
    nomod = tt("watch", TOY, "--set", "model.name=nomodule:build", "--out", str(out), cwd=project)
    assert_clean_error(nomod, "no module named 'nomodule'", code=2)  # found out before any dashboard


def test_the_builder_is_called_with_as_many_arguments_as_it_takes(
    monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    from tuitrain.train.models import build_model

    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    sets = ["model.name=mymodels:build_cfg_only", "model.inputs=5", "model.outputs=7", "model.width_tiny=4"]
    cfg = load_config(TOY, sets)
    model = build_model(cfg.model, (2,), 3)  # the shape and classes come from its own keys here
    assert (model.encoder.in_features, model.encoder.out_features, model.classifier.out_features) == (5, 4, 7)
    full = load_config(TOY, ["model.name=mymodels:build", "model.init=xavier"])
    model = build_model(full.model, (3, 4, 4), 10)  # input_shape and num_classes passed
    assert model.encoder.in_features == 48 and model.classifier.out_features == 10
    assert float(model.encoder.bias.detach().abs().sum()) == 0.0  # model.init applies to an own model too


def test_own_keys_round_trip_and_builtin_keys_stay_checked() -> None:
    sets = [
        "model.name=pkg.sub:make.net",
        'model.tag="a \\"quoted\\" tag"',
        "model.sizes=[1, 2, 3]",
        "model.flag=true",
        "model.rate=0.5",
        "model.options=7",  # even a key named like the field that holds them
    ]
    cfg = load_config(TOY, sets)
    assert cfg.model.options == {
        "tag": 'a "quoted" tag',
        "sizes": [1, 2, 3],
        "flag": True,
        "rate": 0.5,
        "options": 7,
    }
    assert from_toml(to_toml(cfg)) == cfg
    assert "[model.options]" not in to_toml(cfg)  # spelt as plain [model] keys
    for bad, needle in [
        (["model.name=a:b", "model.dropout=x"], "`model.dropout` must be a number"),
        (["model.name=a:b", "model.when=1979-05-27"], "a key of your own model must be"),
        (["model.name=mlp", "model.width_tiny=3"], "A model of your own"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            load_config(TOY, bad)
