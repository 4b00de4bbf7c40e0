"""The final table printed from real run files by the real CLI at 60, 80, 120 and 200 columns, with long
run names: `tuitrain info`, `tuitrain replay --print` and the headless `run --no-ui` all format it with
tuitrain.view.table, and no value is ever cut into another one (`332.97K` never `332.97`, a run name
never `■ v`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.clirun import tt
from tests.conftest import cli_env
from tuitrain.runfile import open_run
from tuitrain.view.table import fmt_count

WIDTHS = (60, 80, 120, 200)
LONG = "toy2d_mlp_with_a_rather_long_descriptive_run_name_x"  # 51 characters
SHORT = "t"


def env(width: int) -> dict[str, str]:
    e = cli_env()
    e["COLUMNS"] = str(width)
    return e


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("final_table")
    out = []
    for name, hidden in ((LONG, "[32,32]"), (SHORT, "[64,64,64]")):
        path = d / f"{len(out)}.h5"
        p = tt(
            "run", "toy2d_mlp", "--no-ui", "--epochs", "1", "--name", name, "--out", str(path),
            "--set", "data.train_size=512", "--set", f"model.hidden={hidden}", "--set", "train.checkpoint=false",
            env=env(80),
        )  # fmt: skip
        assert p.returncode == 0, p.stdout + p.stderr
        out.append(path)
    return out


def numbers(path: Path) -> list[str]:
    """What the table must show for the run in ``path``, formatted as the file holds it."""
    with open_run(path) as rf:
        fm = rf.final_metrics()
    return [
        f"{fm['train_loss']:.4f}",
        f"{fm['val_loss']:.4f}",
        f"{100 * fm['train_acc']:.2f}",
        f"{100 * fm['val_acc']:.2f}",
        f"{fm['test_loss']:.4f}",
        f"{100 * fm['test_acc']:.2f}",
        fmt_count(fm["params"]),
    ]


def whole(token: str, text: str) -> bool:
    """``token`` appears as a whole cell: not as a prefix of a longer number, nor cut from one."""
    return re.search(rf"(?<![\w.]){re.escape(token)}(?![\w.])", text) is not None


def table_block(out: str) -> str:
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Final metrics"))
    # the table ends at a blank line or at the lines that follow it ("run completed ...", "run file: ...")
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].strip() or lines[i].startswith("run ")),
        len(lines),
    )
    return "\n".join(lines[start:end])


@pytest.mark.parametrize("width", WIDTHS)
def test_info_prints_every_number_whole(runs: list[Path], width: int) -> None:
    p = tt("info", str(runs[0]), env=env(width))
    assert p.returncode == 0, p.stdout + p.stderr
    block = table_block(p.stdout)
    assert max(len(ln) for ln in block.splitlines()) <= width, block
    for token in numbers(runs[0]):
        assert whole(token, block), f"{token} not whole at {width} columns:\n{block}"
    assert LONG in re.sub(r"\s+", "", block), block  # whole, though it may fold over lines


@pytest.mark.parametrize("width", WIDTHS)
def test_replay_print_two_runs_every_number_whole(runs: list[Path], width: int) -> None:
    p = tt("replay", "--print", *map(str, runs), env=env(width))
    assert p.returncode == 0, p.stdout + p.stderr
    block = table_block(p.stdout)
    for path in runs:
        for token in numbers(path):
            assert whole(token, block), f"{token} not whole at {width} columns:\n{block}"
    assert LONG[:20] in block, block


def test_headless_run_table_fits_80_columns(tmp_path: Path) -> None:
    path = tmp_path / "h.h5"
    p = tt(
        "run", "toy2d_mlp", "--no-ui", "--epochs", "1", "--out", str(path),
        "--set", "data.train_size=512", "--set", "train.checkpoint=false", env=env(80),
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    block = table_block(p.stdout)
    assert "Params" in block and max(len(ln) for ln in block.splitlines()) <= 80, block
    assert "toy2d_mlp" in block and "toy2d_…" not in block  # the name is never cut
    for token in numbers(path):
        assert whole(token, block), f"{token} not whole:\n{block}"


def test_the_formatter_is_plain_data() -> None:
    """tuitrain.view.table is importable by every floor: no torch, no textual, no h5py."""
    import subprocess
    import sys

    code = "import sys, tuitrain.view.table; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not set(out.split()) & {"torch", "textual", "h5py"}
