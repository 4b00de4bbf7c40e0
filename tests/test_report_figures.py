"""The per-layer report figures (tuitrain/report/layers*.py) drawn from real short training runs: the
files exist and open as images of a sane size, and what each figure says it drew matches the run
file (rows of the heatmap = kept layers, bar groups = chosen epochs, lines per module count)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from tests.clirun import tt
from tests.conftest import REPO, cli_env
from tuitrain.report.figure import FIGURES, Made, Options, ReportRun, Skipped
from tuitrain.report.layers import forward_signal, grad_bars, gradient_flow, updates
from tuitrain.runfile import open_run

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

ENV = {**cli_env(), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ReportRun]:
    d = tmp_path_factory.mktemp("runs")
    args = {
        "vgg38": [
            "vgg38",
            "--data",
            "synthetic",
            "--set",
            "data.image_size=8",
            "--set",
            "data.train_size=200",
        ]
        + ["--max-steps", "40", "--set", "monitor.activations_every=10"],
        "toy": ["toy2d_mlp", "--epochs", "3"],
    }
    out = {}
    for i, (name, a) in enumerate(args.items()):
        path = d / f"{name}.h5"
        p = tt("run", *a, "--no-ui", "--set", "train.threads=1", "--out", str(path), env=ENV, timeout=180)
        assert p.returncode == 0, p.stdout + p.stderr
        out[name] = ReportRun(name, ["#4e9ad8", "#f28e2b"][i], path, open_run(path))
    out["v1"] = ReportRun(
        "v1", "#59a14f", REPO / "tests/data/run_v1.h5", open_run(REPO / "tests/data/run_v1.h5")
    )
    yield out
    for r in out.values():
        r.rf.close()


def _image(path: Path) -> np.ndarray:
    with PIL.open(path) as im:
        w, h = im.size
        assert 400 <= w <= 6000 and 250 <= h <= 6000, (path, im.size)
        a = np.asarray(im.convert("L"), np.float64)
    assert a.std() > 5, f"{path} is blank"
    return a


def _made(res: Made | Skipped) -> Made:
    assert isinstance(res, Made), res
    assert res.paths and res.paths[0].suffix == ".png"
    for p in res.paths:
        assert p.is_file() and p.stat().st_size > 1000, p
    return res


def test_registered_in_report_order() -> None:
    names = list(FIGURES)
    assert [n for n in names if n in ("gradient_flow", "grad_bars", "updates", "forward_signal")] == [
        "gradient_flow",
        "grad_bars",
        "updates",
        "forward_signal",
    ]


def test_gradient_flow_rows_are_the_kept_layers(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    for r in (runs["vgg38"], runs["toy"], runs["v1"]):
        layers = r.rf.layers
        made = _made(gradient_flow([r], tmp_path, Options()))
        assert made.facts == {"rows": len(layers)}
        assert made.paths == [tmp_path / f"gradient_flow-{r.name}.png"]
        _image(made.paths[0])
        no_bias = _made(gradient_flow([r], tmp_path / "nb", Options(exclude=("*.bias",))))
        assert no_bias.facts["rows"] == sum(not li.name.endswith(".bias") for li in layers)
        weights = _made(gradient_flow([r], tmp_path / "w", Options(exclude=("bias", "norm"))))
        assert weights.facts["rows"] == sum(li.kind == "weight" for li in layers)
    assert runs["toy"].rf.layers[2].kind == "norm"  # the toy MLP has all three kinds: the cuts above differ
    assert no_bias.facts["rows"] > weights.facts["rows"]


def test_one_file_per_run_and_facts_by_run(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    rs = [runs["vgg38"], runs["toy"]]
    made = _made(gradient_flow(rs, tmp_path, Options()))
    assert made.facts == {"rows": {"vgg38": len(rs[0].rf.layers), "toy": len(rs[1].rf.layers)}}
    assert sorted(p.name for p in made.paths) == ["gradient_flow-toy.png", "gradient_flow-vgg38.png"]


def test_everything_excluded_is_skipped(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    res = gradient_flow([runs["toy"]], tmp_path, Options(exclude=("*",)))
    assert isinstance(res, Skipped) and "excluded" in res.why
    assert not list(tmp_path.iterdir())


def test_grad_bars_epochs_as_chosen(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    toy = runs["toy"]
    assert list(toy.rf.epochs()["epoch"]) == [0, 1, 2]
    made = _made(grad_bars([toy], tmp_path, Options()))
    assert made.facts == {"bars": len(toy.rf.layers), "epochs": [0, 1, 2]}
    _image(made.paths[0])
    chosen = _made(grad_bars([toy], tmp_path, Options(epochs=(2, 0), exclude=("*.bias",))))
    assert chosen.facts["epochs"] == [2, 0]
    assert chosen.facts["bars"] == sum(not li.name.endswith(".bias") for li in toy.rf.layers)
    some = _made(grad_bars([toy], tmp_path, Options(epochs=(1, 9))))
    assert some.facts["epochs"] == [1]
    none = grad_bars([toy], tmp_path, Options(epochs=(9,)))
    assert isinstance(none, Skipped) and "epochs 0 to 2" in none.why
    vgg = runs["vgg38"].rf.epochs()["epoch"]
    v = _made(grad_bars([runs["vgg38"]], tmp_path, Options()))
    assert v.facts["epochs"] == [int(vgg[0]), int(vgg[len(vgg) // 2]), int(vgg[-1])]


def test_updates_lines(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    toy = runs["toy"]
    few = _made(updates([toy], tmp_path, Options(exclude=("bias", "norm"))))
    assert few.facts == {"lines": sum(li.kind == "weight" for li in toy.rf.layers)} == {"lines": 7}
    _image(few.paths[0])
    many = _made(updates([runs["vgg38"]], tmp_path, Options()))
    assert many.facts == {"lines": 4}  # 39 layers: the 10th/50th/90th percentiles and the largest
    _image(many.paths[0])


def test_forward_signal(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    old = forward_signal([runs["v1"]], tmp_path, Options())
    assert isinstance(old, Skipped) and "the run has no activation probe" in old.why
    assert not list(tmp_path.iterdir())
    vgg = runs["vgg38"]
    made = _made(forward_signal([vgg], tmp_path, Options()))
    assert made.facts == {"modules": len(vgg.rf.modules)} and len(vgg.rf.modules) > 30
    _image(made.paths[0])
    mods = vgg.rf.modules
    blocks = _made(forward_signal([vgg], tmp_path, Options(exclude=("*block",), steps=(15,))))
    assert blocks.facts["modules"] == sum(not m.type.endswith("Block") for m in mods) == 38
    both = _made(forward_signal([vgg, runs["v1"]], tmp_path, Options()))
    assert both.facts["modules"] == {"vgg38": len(mods)} and "v1" in both.facts["skipped"]
    late = forward_signal([vgg], tmp_path, Options(steps=(-1,)))
    assert isinstance(late, Skipped) and "first is at step 0" in late.why


def test_svg_format(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    made = _made(forward_signal([runs["toy"]], tmp_path, Options(fmt="svg")))
    assert [p.name for p in made.paths] == ["forward_signal-toy.png", "forward_signal-toy.svg"]
    assert ET.parse(made.paths[1]).getroot().tag.endswith("svg")
    _image(made.paths[0])
    pdf = _made(gradient_flow([runs["toy"]], tmp_path, Options(fmt="pdf")))
    assert pdf.paths[1].read_bytes()[:5] == b"%PDF-"


def test_exclude_matches_names_and_kinds() -> None:
    from tuitrain.report.layers_util import excluded

    assert excluded("head.bias", "bias", ("*.bias",)) and excluded("head.bias", "bias", ("bias",))
    assert not excluded("head.weight", "weight", ("*.bias", "norm"))
    assert excluded("layers.0.act", "ReLU", ("relu",))
    assert excluded("stages.0.blocks.1.conv0.weight", "weight", ("stages.0.*",))


def test_a_loop_without_watch_has_no_gradient_figures(tmp_path: Path) -> None:
    import tuitrain

    path = tmp_path / "nowatch.h5"
    with tuitrain.init(out=path) as run:
        for i in range(3):
            run.log({"loss": 1.0 / (i + 1)})
    with open_run(path) as rf:
        r = ReportRun("nowatch", "#4e9ad8", path, rf)
        for fig in (gradient_flow, grad_bars, updates):
            res = fig([r], tmp_path / "out", Options())
            assert isinstance(res, Skipped) and "no gradient probe" in res.why, res
        res = forward_signal([r], tmp_path / "out", Options())
        assert isinstance(res, Skipped) and "no activation probe" in res.why
    assert not (tmp_path / "out").exists()
