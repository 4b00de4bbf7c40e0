"""``tuitrain export``: the CSV tables and TensorBoard event files of a real short run, read back with
the csv module and TensorBoard's own reader, equal the run file's numbers (through RunFile's API)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import REPO, cli_env
from tuitrain.runfile.reader import open_run

DATA = REPO / "tests" / "data"


@pytest.fixture(scope="module")
def run_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "toy.h5"
    p = tt("run", "toy2d_mlp", "--no-ui", "--max-steps", "60", "--epochs", "2", "--out", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    return out


@pytest.fixture(scope="module")
def exported(run_h5: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("export")
    csv_dir, tb_dir = base / "csv", base / "tb"
    p = tt("export", str(run_h5), "--csv", str(csv_dir), "--tensorboard", str(tb_dir))
    assert p.returncode == 0, p.stdout + p.stderr
    return csv_dir, tb_dir


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def num(s: str) -> float:
    return math.nan if s == "" else float(s)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-equal, NaN equal to NaN."""
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def test_steps_and_epochs_parse_back_exactly(run_h5: Path, exported: tuple[Path, Path]) -> None:
    csv_dir, _ = exported
    with open_run(run_h5) as rf:
        steps, epochs, scalars = rf.steps(), rf.epochs(), rf.step_scalars
    header, rows = read_csv(csv_dir / "steps.csv")
    assert header == ["step", "epoch", *scalars]
    assert len(rows) == len(steps["step"]) > 0
    for j, name in enumerate(header):
        col = np.array([num(r[j]) for r in rows])
        assert same(col.astype(steps[name].dtype), steps[name]), name
    assert any(r[header.index("samples_per_s")] == "" for r in rows)  # NaN is an empty cell
    header, rows = read_csv(csv_dir / "epochs.csv")
    assert header == list(epochs) and len(rows) == len(epochs["epoch"]) >= 1
    for j, name in enumerate(header):
        assert same(np.array([num(r[j]) for r in rows]).astype(epochs[name].dtype), epochs[name]), name


def test_probe_rows_and_layers_parse_back_exactly(run_h5: Path, exported: tuple[Path, Path]) -> None:
    csv_dir, _ = exported
    with open_run(run_h5) as rf:
        layers, modules, specs = rf.layers, rf.modules, rf.probe_specs
        probes = {
            s.name: (rf.probe_steps(probe=s.name), {q: rf.probe(q, probe=s.name) for q in s.names})
            for s in specs
        }
    assert {s.name for s in specs} >= {"grad"}
    header, rows = read_csv(csv_dir / "layers.csv")
    assert [r[1] for r in rows] == [la.name for la in layers]
    assert [int(r[3]) for r in rows] == [la.numel for la in layers]
    assert [r[2] for r in rows] == ["x".join(map(str, la.shape)) for la in layers]
    _, rows = read_csv(csv_dir / "modules.csv")
    assert [r[1] for r in rows] == [m.name for m in modules]
    for spec in specs:
        header, rows = read_csv(csv_dir / f"probe_{spec.name}.csv")
        steps, values = probes[spec.name]
        items = [la.name for la in layers] if spec.axis == "tensor" else [m.name for m in modules]
        assert header == ["step", "layer" if spec.axis == "tensor" else "module", *spec.names]
        assert len(rows) == len(steps) * len(items) > 0
        assert [int(r[0]) for r in rows] == np.repeat(steps, len(items)).tolist()
        assert [r[1] for r in rows] == items * len(steps)
        for j, q in enumerate(spec.names, start=2):
            got = np.array([num(r[j]) for r in rows], np.float64).astype(np.float32)
            assert same(got.reshape(len(steps), len(items)), values[q]), (spec.name, q)


def test_other_tables_and_run_json(run_h5: Path, exported: tuple[Path, Path]) -> None:
    csv_dir, _ = exported
    with open_run(run_h5) as rf:
        events, test, name, n_findings = rf.events(), rf.test(), rf.run_name, rf.n_findings
        toml = rf.config_toml
    _, rows = read_csv(csv_dir / "events.csv")
    assert [(int(r[0]), r[3], r[4]) for r in rows] == [(e["step"], e["kind"], e["message"]) for e in events]
    _, rows = read_csv(csv_dir / "test.csv")
    assert {r[0]: num(r[1]) for r in rows}["loss"] == test["loss"]
    _, rows = read_csv(csv_dir / "findings.csv")
    assert len(rows) == n_findings
    header, _ = read_csv(csv_dir / "metrics.csv")
    assert header == ["scope", "key", "step", "epoch", "value"]
    meta = json.loads((csv_dir / "run.json").read_text())
    assert meta["run_name"] == name
    assert meta["config_toml"] == toml and meta["probe_specs"][0]["name"] == "grad"


def test_tensorboard_reads_back_equal(run_h5: Path, exported: tuple[Path, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, tb_dir = exported
    files = list(tb_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1
    acc = EventAccumulator(str(files[0]), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    with open_run(run_h5) as rf:
        steps, loss = rf.scalar("step"), rf.scalar("loss")
        ep, test, layers = rf.epochs(), rf.test(), rf.layers
        grad_steps, gnorm = rf.probe_steps(), rf.probe("grad_norm")
    got = acc.Scalars("train/loss")
    assert [e.step for e in got] == steps.tolist()
    np.testing.assert_allclose([e.value for e in got], loss, rtol=1e-6)
    got = acc.Scalars("epoch/val_loss")
    assert [e.step for e in got] == ep["step"].tolist()
    np.testing.assert_allclose([e.value for e in got], ep["val_loss"], rtol=1e-6)
    assert acc.Scalars("test/acc")[0].value == pytest.approx(test["acc"], rel=1e-6)
    for j, la in enumerate(layers):
        got = acc.Scalars(f"grad/grad_norm/{la.name}")
        assert [e.step for e in got] == grad_steps.tolist()
        np.testing.assert_allclose([e.value for e in got], gnorm[:, j], rtol=1e-6)
    assert any(t.startswith("act/std/") for t in tags)


@pytest.mark.parametrize("name", ["run_v1.h5", "run_v2_notables.h5"])
def test_old_fixtures_export(name: str, tmp_path: Path) -> None:
    p = tt("export", str(DATA / name), "--csv", str(tmp_path / "csv"))
    assert p.returncode == 0, p.stdout + p.stderr
    with open_run(DATA / name) as rf:
        n_steps, n_layers = rf.n_steps, rf.n_layers
    assert len(read_csv(tmp_path / "csv" / "steps.csv")[1]) == n_steps
    assert len(read_csv(tmp_path / "csv" / "layers.csv")[1]) == n_layers
    assert not (tmp_path / "csv" / "findings.csv").exists()  # these files have no findings table


def test_refuses_to_overwrite_then_overwrites(run_h5: Path, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    out.mkdir()
    (out / "steps.csv").write_text("mine\n")
    p = tt("export", str(run_h5), "--csv", str(out))
    assert_clean_error(p, "steps.csv", "--overwrite")
    assert (out / "steps.csv").read_text() == "mine\n"
    assert sorted(x.name for x in out.iterdir()) == ["steps.csv"]  # nothing else was written either
    p = tt("export", str(run_h5), "--csv", str(out), "--overwrite")
    assert p.returncode == 0, p.stderr
    assert read_csv(out / "steps.csv")[0][0] == "step"


def test_bad_input_exit_2(run_h5: Path, tmp_path: Path) -> None:
    assert_clean_error(tt("export", str(run_h5)), "--csv", "--tensorboard")
    assert_clean_error(tt("export", str(tmp_path / "nope.h5"), "--csv", str(tmp_path / "o")), "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    assert_clean_error(tt("export", str(junk), "--csv", str(tmp_path / "o")), "junk.h5")
    assert not (tmp_path / "o").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_clean_error(tt("export", str(run_h5), "--csv", str(afile)), "not a folder")


def test_missing_tensorboard_says_how_to_install(run_h5: Path, tmp_path: Path) -> None:
    # A Python in which `import tensorboard` fails, as it does where the package is not installed.
    code = (
        "import sys; sys.modules['tensorboard'] = None; sys.argv = ['tuitrain'] + sys.argv[1:];"
        "from tuitrain.cli import main; main()"
    )
    args = ["export", str(run_h5), "--tensorboard", str(tmp_path / "tb")]
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=cli_env())
    assert_clean_error(p, 'pip install "tuitrain[tensorboard]"')
    assert not (tmp_path / "tb").exists()
