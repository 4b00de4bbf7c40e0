"""The report's snapshot figures (tuitrain/report/snapshots.py) from real short training runs: a conv
net, an MLP on flat images, an MLP-Mixer, two 2-D runs, a run with monitor.snapshot_mb = 0 and a file
from before snapshots. Each figure's files exist as images of a sane size, its facts match the run file
(one tile per stored kernel, one panel per chosen epoch, one boundary panel per 2-D run,
min(25, rows) misclassified tiles), and the kernel grid's tiles are counted in the rendered PNG."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, cli_env, tuitrain_cmd
from tuitrain.report.figure import FIGURES, Made, Options, ReportRun, Skipped
from tuitrain.report.snapshots import boundary, kernels, misclassified, sample_labels, token_mixing
from tuitrain.runfile import open_run
from tuitrain.view.images import BACKGROUND

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

ENV = {**cli_env(), "OMP_NUM_THREADS": "1"}
TINY = ["--data", "synthetic", "--set", "data.image_size=8", "--set", "data.train_size=200", "--epochs", "2"]
ARGS = {
    "vgg": ["vgg08", *TINY],
    "mlp": ["mlp_cifar10", *TINY],
    "mix": ["mlp_mixer_cifar10", *TINY],
    "toy": ["toy2d_mlp", "--epochs", "3"],
    "toy_b": ["toy2d_mlp", "--epochs", "2", "--set", "optim.lr=0.002"],
    "nosnap": ["toy2d_mlp", "--epochs", "1", "--set", "monitor.snapshot_mb=0"],
}
COLORS = ["#4e9ad8", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ReportRun]:
    """The runs, trained at the same time (tiny: a few steps each)."""
    d = tmp_path_factory.mktemp("snapruns")
    procs = {
        name: subprocess.Popen(
            [
                *tuitrain_cmd(),
                "run",
                *a,
                "--no-ui",
                "--set",
                "train.threads=1",
                "--out",
                str(d / f"{name}.h5"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV,
            cwd=REPO,
        )
        for name, a in ARGS.items()
    }
    out: dict[str, ReportRun] = {}
    for i, (name, proc) in enumerate(procs.items()):
        text, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, text
        path = d / f"{name}.h5"
        out[name] = ReportRun(name, COLORS[i], path, open_run(path))
    v1 = REPO / "tests/data/run_v1.h5"
    out["v1"] = ReportRun("v1", COLORS[-1], v1, open_run(v1))
    yield out
    for r in out.values():
        r.rf.close()


def _made(res: Made | Skipped) -> Made:
    assert isinstance(res, Made), res
    assert res.paths and res.paths[0].suffix == ".png"
    for p in res.paths:
        assert p.is_file() and p.stat().st_size > 1000, p
    with PIL.open(res.paths[0]) as im:
        w, h = im.size
    assert 400 <= w <= 6000 and 250 <= h <= 6000, (res.paths[0], (w, h))
    return res


def _runs(runs: dict[str, ReportRun], *names: str) -> list[ReportRun]:
    return [runs[n] for n in names]


def _count_tiles(png: Path) -> int:
    """Tiles of a one-panel grid in a rendered PNG: the grid is the bounding box of the background
    colour; bands of columns (rows) that are background all the way are gaps; a cell is a tile when its
    centre is not background (the last row's empty cells are)."""
    with PIL.open(png) as im:
        a = np.asarray(im.convert("RGB"), np.int16)
    bg = np.round(np.asarray(BACKGROUND) * 255).astype(np.int16)
    is_bg = np.abs(a - bg).max(axis=-1) <= 3
    ys, xs = np.nonzero(is_bg)
    box = is_bg[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]

    def bands(all_bg: np.ndarray) -> list[tuple[int, int]]:
        out, start = [], None
        for i, g in enumerate([*all_bg, True]):
            if not g and start is None:
                start = i
            elif g and start is not None:
                out.append((start, i))
                start = None
        return out

    rows, cols = bands(box.all(axis=1)), bands(box.all(axis=0))
    return sum(not box[(y0 + y1) // 2, (x0 + x1) // 2] for y0, y1 in rows for x0, x1 in cols)


def test_registered_after_the_per_layer_figures() -> None:
    import tuitrain.report.figures  # noqa: F401  (registers every figure, in report order)

    names = list(FIGURES)
    mine = ["kernels", "token_mixing", "boundary", "misclassified"]
    assert [n for n in names if n in mine] == mine
    assert names.index("kernels") > names.index("forward_signal")


def test_kernels_one_tile_per_stored_kernel(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    for name, module, k in (("vgg", "input_conv", 32), ("mix", "stem", 64), ("mlp", "layers.0.linear", 64)):
        r = runs[name]
        rows = r.rf.snapshot_rows("first_layer")
        assert rows.arrays["weight"].shape[1] == k and rows.spec.meta["module"] == module
        made = _made(kernels([r], tmp_path, Options()))
        assert made.facts == {"tiles": k, "panels": 2}  # default: init and the last row
        assert made.paths == [tmp_path / f"kernels-{name}.png"]
    one = _made(kernels([runs["vgg"]], tmp_path / "one", Options(epochs=(1,))))
    assert one.facts == {"tiles": 32, "panels": 1}
    assert _count_tiles(one.paths[0]) == 32
    mix = _made(kernels([runs["mix"]], tmp_path / "mix", Options(epochs=(1,))))
    assert _count_tiles(mix.paths[0]) == 64
    three = _made(kernels([runs["vgg"]], tmp_path / "3", Options(epochs=(-1, 0, 1, 7))))
    assert three.facts["panels"] == 3  # epoch 7 is past the end: its last row at or before (1) again
    steps = _made(kernels([runs["vgg"]], tmp_path / "s", Options(steps=(0, 10**6))))
    assert steps.facts["panels"] == 2


def test_kernels_skipped_with_the_reason(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    for name in ("v1", "nosnap"):
        res = kernels([runs[name]], tmp_path, Options())
        assert isinstance(res, Skipped), res
        assert "holds no first_layer snapshot" in res.why and "snapshot_mb = 0" in res.why
    toy = kernels([runs["toy"]], tmp_path, Options())
    assert isinstance(toy, Skipped) and "declares no first_layer" in toy.why
    assert not list(tmp_path.iterdir())  # never an empty picture
    both = _made(kernels(_runs(runs, "vgg", "toy", "mlp"), tmp_path, Options()))
    assert both.facts["tiles"] == {"vgg": 32, "mlp": 64} and set(both.facts["skipped"]) == {"toy"}
    early = kernels([runs["vgg"]], tmp_path, Options(epochs=(-5,)))
    assert isinstance(early, Skipped) and "rows: init, 0, 1" in early.why


def test_token_mixing(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    mix = runs["mix"]
    meta = mix.rf.snapshot_specs["token_mixing"].meta
    assert meta["grid"] == [2, 2]
    made = _made(token_mixing([mix], tmp_path, Options()))
    assert made.facts == {"tiles": 64, "panels": 1}
    assert _count_tiles(made.paths[0]) == 64
    res = token_mixing(_runs(runs, "vgg", "v1"), tmp_path / "none", Options())
    assert isinstance(res, Skipped) and "not an MLP-Mixer" in res.why and "snapshot_mb = 0" in res.why


def test_boundary_one_panel_per_2d_run(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    rs = _runs(runs, "toy", "toy_b", "vgg", "nosnap")
    made = _made(boundary(rs, tmp_path, Options()))
    n_pts = sum(runs[n].rf.n_snapshot_rows("points") for n in ("toy", "toy_b"))
    assert n_pts == 1000
    assert made.facts["panels"] == 2 and made.facts["points"] == n_pts
    assert set(made.facts["skipped"]) == {"vgg", "nosnap"} and "not 2-D" in made.facts["skipped"]["vgg"]
    assert made.paths == [tmp_path / "boundary.png"]
    picked = _made(boundary(rs, tmp_path / "e", Options(epochs=(-1, 2))))
    assert picked.facts["panels"] == 4  # toy_b has epochs 0, 1: epoch 2 is its last row
    res = boundary(_runs(runs, "mix"), tmp_path / "none", Options())
    assert isinstance(res, Skipped) and "not 2-D" in res.why


def test_misclassified_tiles(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    for name in ("vgg", "mix"):
        r = runs[name]
        n = r.rf.n_snapshot_rows("misclassified")
        assert n > 0
        made = _made(misclassified([r], tmp_path, Options()))
        assert made.facts == {"tiles": min(25, n)}
    toy = misclassified([runs["toy"]], tmp_path / "toy", Options())
    assert isinstance(toy, Skipped) and "boundary figure" in toy.why
    old = misclassified([runs["v1"]], tmp_path / "old", Options())
    assert isinstance(old, Skipped) and "holds no misclassified snapshot" in old.why


def test_sample_labels_name_the_classes(runs: dict[str, ReportRun]) -> None:
    rows = runs["vgg"].rf.snapshot_rows("misclassified")
    a = rows.arrays
    got = sample_labels(rows, 3)
    assert got == [f"{int(a['true'][i])}→{int(a['pred'][i])} (p={float(a['prob'][i]):.2f})" for i in range(3)]
    assert all(int(a["true"][i]) != int(a["pred"][i]) for i in range(len(rows)))
    from dataclasses import replace

    names = [f"c{i}" for i in range(100)]
    named = type(rows)(
        replace(rows.spec, meta={**rows.spec.meta, "class_names": names}), rows.epoch, rows.step, a
    )
    assert sample_labels(named, 1)[0].startswith(f"c{int(a['true'][0])}→c{int(a['pred'][0])} (p=")


def test_the_report_command_draws_them(runs: dict[str, ReportRun], tmp_path: Path) -> None:
    paths = [str(runs[n].path) for n in ("vgg", "mix", "toy")]
    t0 = time.perf_counter()
    p = subprocess.run(
        [*tuitrain_cmd(), "report", *paths, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=180,
    )
    took = time.perf_counter() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    print(f"3-run report with the snapshot figures: {took:.1f} s")
    readme = (tmp_path / "README.md").read_text()
    for stem in ("kernels-vgg08", "kernels-mlp_mixer_cifar10", "token_mixing-mlp_mixer_cifar10"):
        assert f"({stem}.png)" in readme and (tmp_path / f"{stem}.png").is_file()
    for title in ("## First-layer kernels", "## Token-mixing weights", "## Decision boundaries"):
        assert title in readme
    assert "(boundary.png)" in readme and "(misclassified-vgg08.png)" in readme
    assert "Not drawn" not in readme


def test_info_lists_the_snapshots_each_run_file_holds(runs: dict[str, ReportRun]) -> None:
    """``tuitrain info`` says which snapshots a file holds, their rows and epochs, within their cap, or
    why there are none (an old file, snapshot_mb = 0), in its human form and in --json."""
    import json

    def info(name: str, *extra: str) -> str:
        p = subprocess.run(
            [*tuitrain_cmd(), "info", str(runs[name].path), *extra],
            capture_output=True,
            text=True,
            env=ENV,
            cwd=REPO,
            timeout=60,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout

    toy = info("toy")
    assert "snapshots: 3," in toy
    assert "  boundary: 4 rows, epochs init, 1-3" in toy  # 3 epochs + the row before training
    assert "  points: " in toy and "rows, at the start" in toy
    assert "  misclassified: " in toy and "rows, at the end" in toy
    mix = info("mix")
    assert (
        "  first_layer: 3 rows, epochs init, 1-2" in mix and "  token_mixing: 3 rows, epochs init, 1-2" in mix
    )
    for name in ("nosnap", "v1"):
        assert "snapshots: none" in info(name)
    data = json.loads(info("toy", "--json"))
    by_name = {s["name"]: s for s in data["snapshots"]}
    with open_run(runs["toy"].path) as rf:
        for name, spec in rf.snapshot_specs.items():
            n = rf.n_snapshot_rows(name)
            assert by_name[name]["rows"] == n and by_name[name]["bytes"] == n * spec.row_bytes
            assert by_name[name]["bytes"] <= by_name[name]["max_bytes"]
