"""``tuitrain report``: three real short runs (toy2d_mlp at three learning rates) reported into a folder;
the tables parse back to the run files' final numbers as the formatter prints them, the best marks sit
on the right rows, the curves figure is a real image with one line per run; overwrite refusal, bad
input, an old file and a machine without matplotlib."""

from __future__ import annotations

import csv
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import REPO, cli_env, tuitrain_cmd
from tuitrain.report.build import report_runs
from tuitrain.report.figure import Made, Options
from tuitrain.runfile.reader import open_run
from tuitrain.view.table import BEST_HIGH, BEST_LOW, COLUMNS, fmt_cell
from tuitrain.view.table_text import csv_table, latex_table, markdown_table, tex_escape

DATA = REPO / "tests" / "data"
LRS = ("0.05", "0.01", "0.002")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three real runs, trained at the same time (each process waits on its own file most of the time)."""
    base = tmp_path_factory.mktemp("runs")
    paths = [base / f"lr{i}.h5" for i in range(len(LRS))]
    env = {**cli_env(), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                *tuitrain_cmd(),
                "run",
                "toy2d_mlp",
                "--no-ui",
                "--max-steps",
                "40",
                "--epochs",
                "2",
                "--set",
                f"optim.lr={lr}",
                "--out",
                str(path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO,
        )  # fmt: skip
        for lr, path in zip(LRS, paths, strict=True)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    return paths


@pytest.fixture(scope="module")
def report(runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "rep"
    t0 = time.perf_counter()
    p = tt("report", *map(str, runs), "--out", str(out))
    print(f"3-run report: {time.perf_counter() - t0:.2f} s")
    assert p.returncode == 0, p.stdout + p.stderr
    return out


def expected(runs: list[Path]) -> list[dict[str, float | None]]:
    out = []
    for path in runs:
        with open_run(path) as rf:
            out.append(rf.final_metrics())
    return out


def best_index(finals: list[dict[str, float | None]], key: str) -> int:
    vals = [float(f[key]) for f in finals]  # type: ignore[arg-type]
    return vals.index(min(vals) if key in BEST_LOW else max(vals))


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def md_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    return split[0], split[2:]


def tex_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    body = [ln for ln in path.read_text().splitlines() if ln.endswith(r"\\")]
    split = [[c.strip() for c in ln[:-2].split(" & ")] for ln in body]
    return split[0], split[1:]


def test_report_writes_every_file(report: Path) -> None:
    for name in ("README.md", "table.md", "table.csv", "table.tex", "curves.png"):
        assert (report / name).stat().st_size > 0, name
    readme = (report / "README.md").read_text()
    assert "![" in readme and "(curves.png)" in readme
    assert "| Run | Train Loss |" in readme  # the table itself, embedded


def test_csv_equals_the_files_final_numbers(runs: list[Path], report: Path) -> None:
    header, rows = read_csv(report / "table.csv")
    finals = expected(runs)
    assert header[: 1 + len(COLUMNS)] == ["Run", *COLUMNS.values()]
    assert "optim.lr" in header and header[-1] == "best"
    assert len(rows) == 3
    for row, final, lr in zip(rows, finals, LRS, strict=True):
        cells = dict(zip(header, row, strict=True))
        for key, title in COLUMNS.items():
            assert cells[title] == fmt_cell(key, final[key]), (key, cells)
        assert float(cells["optim.lr"]) == float(lr)
    for key in (*BEST_LOW, *BEST_HIGH):
        i = best_index(finals, key)
        for j, row in enumerate(rows):
            assert (COLUMNS[key] in row[-1].split(";")) == (j == i), (key, row[-1])


def test_markdown_and_latex_match_csv_with_bold_best(runs: list[Path], report: Path) -> None:
    header, rows = read_csv(report / "table.csv")
    finals = expected(runs)
    for head, body, bold in (
        (*md_rows(report / "table.md"), re.compile(r"^\*\*(.*)\*\*$")),
        (*tex_rows(report / "table.tex"), re.compile(r"^\\textbf\{(.*)\}$")),
    ):
        assert [h.replace(r"\_", "_") for h in head] == header[:-1]
        for j, (row, plain) in enumerate(zip(body, rows, strict=True)):
            for k, cell in enumerate(row):
                m = bold.match(cell)
                text = (m.group(1) if m else cell).replace(r"\_", "_")
                assert text == plain[k], (head[k], cell, plain[k])
                key = next((kk for kk, t in COLUMNS.items() if t == header[k]), None)
                is_best = key in (*BEST_LOW, *BEST_HIGH) and best_index(finals, key) == j  # type: ignore[arg-type]
                assert bool(m) == is_best, (header[k], j, cell)


def test_curves_png_is_an_image_with_a_line_per_run(runs: list[Path], report: Path, tmp_path: Path) -> None:
    import matplotlib.image

    img = matplotlib.image.imread(report / "curves.png")
    h, w = img.shape[:2]
    assert 400 <= w <= 3000 and 300 <= h <= 3000, img.shape
    assert img[..., :3].std() > 0.05  # not a blank canvas
    import tuitrain.report.figures  # noqa: F401
    from tuitrain.report.figure import FIGURES

    files = [open_run(p) for p in runs]
    try:
        got = FIGURES["curves"](report_runs(files), tmp_path, Options())
    finally:
        for rf in files:
            rf.close()
    assert isinstance(got, Made) and got.facts == {"lines": 3}
    assert got.paths == [tmp_path / "curves.png"]


def test_svg_format_writes_svg_beside_the_png(runs: list[Path], tmp_path: Path) -> None:
    p = tt("report", str(runs[0]), "--out", str(tmp_path), "--format", "svg")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "<svg" in (tmp_path / "curves.svg").read_text()[:2000]
    assert (tmp_path / "curves.png").exists()
    assert "[curves.svg](curves.svg)" in (tmp_path / "README.md").read_text()


def test_refuses_to_overwrite_a_report(runs: list[Path], tmp_path: Path) -> None:
    p = tt("report", str(runs[0]), "--out", str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    before = (tmp_path / "table.csv").read_bytes()
    p = tt("report", str(runs[0]), str(runs[1]), "--out", str(tmp_path))
    assert_clean_error(p, "already holds a report", "README.md", "table.csv", "curves.png", "--overwrite")
    assert (tmp_path / "table.csv").read_bytes() == before
    p = tt("report", str(runs[0]), str(runs[1]), "--out", str(tmp_path), "--overwrite")
    assert p.returncode == 0, p.stdout + p.stderr
    _, rows = read_csv(tmp_path / "table.csv")
    assert len(rows) == 2


def test_a_figure_file_alone_is_protected(runs: list[Path], tmp_path: Path) -> None:
    (tmp_path / "curves.svg").write_text("mine")
    (tmp_path / "notes.txt").write_text("mine too")
    assert_clean_error(tt("report", str(runs[0]), "--out", str(tmp_path)), "curves.svg")
    assert (tmp_path / "curves.svg").read_text() == "mine"
    assert not (tmp_path / "README.md").exists()


def test_bad_input_is_one_paragraph_exit_2(runs: list[Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    out = tmp_path / "out"
    assert_clean_error(tt("report", str(tmp_path / "nope.h5"), "--out", str(out)), "nope.h5")
    assert_clean_error(tt("report", str(junk), "--out", str(out)), "junk.h5")
    assert_clean_error(
        tt("report", str(runs[0]), "--out", str(out), "--format", "bmp"), "bmp", "png, svg, pdf"
    )
    assert_clean_error(tt("report", str(runs[0]), "--out", str(out), "--epochs", "one"), "--epochs", "1,5")
    assert_clean_error(tt("report", str(runs[0]), "--out", str(junk)), "is a file")
    assert not out.exists()  # nothing written for bad input


def test_old_file_reports(tmp_path: Path) -> None:
    p = tt("report", str(DATA / "run_v1.h5"), str(DATA / "run_v2_notables.h5"), "--out", str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    header, rows = read_csv(tmp_path / "table.csv")
    with open_run(DATA / "run_v1.h5") as rf:
        final = rf.final_metrics()
    assert rows[0][header.index("Val Loss")] == fmt_cell("val_loss", final["val_loss"])
    assert (tmp_path / "curves.png").exists()


def test_without_matplotlib_tables_and_readme_still_written(runs: list[Path], tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "matplotlib.py").write_text("raise ImportError('no matplotlib here')\n")
    env = cli_env()
    env["PYTHONPATH"] = str(shadow)
    out = tmp_path / "out"
    p = tt("report", *map(str, runs), "--out", str(out), env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr.count('pip install "tuitrain[report]"') == 1, p.stderr
    assert "Traceback" not in p.stderr
    for name in ("README.md", "table.md", "table.csv", "table.tex"):
        assert (out / name).exists()
    assert not (out / "curves.png").exists()
    assert (
        'curves: matplotlib is not installed; for the figures: pip install "tuitrain[report]"'
        in (out / "README.md").read_text()
    )


def test_renderings_escape_names_and_keep_cells() -> None:
    from tuitrain.view.table import FinalRow

    good = {"train_loss": 0.5, "val_loss": 0.5, "test_loss": 0.5, "train_acc": 0.9, "val_acc": 0.9}
    worse = {"train_loss": 0.6, "val_loss": 0.25, "test_loss": 0.6, "train_acc": 0.1, "val_acc": 0.1}
    rows = [
        FinalRow("a_b|c%", {**good, "test_acc": 0.9, "params": 10.0}, config={"x": "1"}),
        FinalRow("d", {**worse, "test_acc": 0.1, "params": 10.0}, config={"x": "2"}),
    ]
    assert r"a\_b|c\%" in latex_table(rows, ["x"])
    assert r"a_b\|c%" in markdown_table(rows, ["x"])
    assert r"**0.2500**" in markdown_table(rows, ["x"])
    header, *body = list(csv.reader(csv_table(rows, ["x"]).splitlines()))
    assert body[0][0] == "a_b|c%" and body[1][-1] == "Val Loss"
    assert body[0][-1] == "Train Loss;Train Acc;Val Acc;Test Loss;Test Acc"
    assert tex_escape("~^\\") == r"\textasciitilde{}\textasciicircum{}\textbackslash{}"


def test_a_broken_figure_keeps_the_tables_and_the_others(runs: list[Path], tmp_path: Path) -> None:
    import tuitrain.report.figures  # noqa: F401
    from tuitrain.report.build import make_report
    from tuitrain.report.figure import FIGURES

    def broken(runs_: list, out: Path, opts: Options) -> Made:
        raise RuntimeError("drawing went wrong")

    FIGURES["zz_broken"] = broken
    files = [open_run(runs[0])]
    try:
        rep = make_report(files, tmp_path, Options())
    finally:
        del FIGURES["zz_broken"]
        for rf in files:
            rf.close()
    assert [s.name for s in rep.failed] == ["zz_broken"]
    assert "curves" in [m.name for m in rep.made]
    readme = (tmp_path / "README.md").read_text()
    assert "zz_broken: failed: RuntimeError: drawing went wrong" in readme
    assert (tmp_path / "table.csv").exists() and (tmp_path / "curves.png").exists()
