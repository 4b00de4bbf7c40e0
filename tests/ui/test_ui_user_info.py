"""``tuitrain info`` and ``tuitrain replay --print`` for runs of a user's own loop: a real script run
(tests/scripts/mnist_like.py through ``tuitrain.init``), and files the real RunFileWriter wrote from a
user loop's events (tests/ui/fake_events.py), read back through the real CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_events import user_run

from tests.clirun import assert_clean_error, tt
from tests.conftest import REPO, cli_env
from tuitrain.events import StepBatch
from tuitrain.runfile.writer import RunFileWriter

SCRIPT = REPO / "tests" / "scripts" / "mnist_like.py"


@pytest.fixture(scope="module")
def script_run(tmp_path_factory) -> Path:
    """One real run of the MNIST-like script: 2 epochs of 4 steps, logging loss, acc and its own
    ``margin`` per step, and val_loss, val_acc and its own ``val_error`` per epoch."""
    out = tmp_path_factory.mktemp("script") / "mnist.h5"
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--epochs", "2", "--name", "mnist"],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
        cwd=out.parent,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return out


def write_events(path: Path, events) -> Path:
    with RunFileWriter(path, flush_seconds=math.inf, background=False) as w:
        for ev in events:
            w.emit(ev)
    return path


def test_info_of_a_script_run_shows_its_source_probes_scalars_metrics_and_json_config(script_run):
    p = tt("info", str(script_run))
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert "source your own loop (tuitrain.init)" in out
    assert "probe grad per tensor: grad_norm, grad_mean_abs, weight_norm, update_ratio" in out
    assert "the run's own: margin" in out
    assert "FLOPs" not in out and "data " not in out  # what the loop never said is left out
    assert "8 steps, 2 of 2 epochs" in out
    assert "val_error" in out  # its own epoch metric, a column of the final table
    assert "Model summary" not in out  # none recorded
    config = json.loads(out[out.index("{", out.index("# config of this run")) :])
    assert config["epochs"] == 2 and config["gamma"] == 0.7  # as tuitrain.init(config=vars(args)) got it
    assert "diverged" not in out and "Traceback" not in out
    js = json.loads(tt("info", "--json", str(script_run)).stdout)
    assert js["source"] == "script" and js["diverged_at"] is None
    assert js["probe_specs"][0]["name"] == "grad" and js["probe_specs"][0]["axis"] == "tensor"
    assert set(js["final_extra"]) == {"val_error"}
    assert abs(js["final_extra"]["val_error"] - (1 - js["final"]["val_acc"])) < 1e-9


def test_replay_print_of_a_script_run_charts_its_own_scalar_and_lists_its_metrics(script_run):
    p = tt("replay", str(script_run), "--print", "--metric", "margin")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "margin · 1 run" in p.stdout and "val_error" in p.stdout
    assert "no finite margin values" not in p.stdout
    bad = tt("replay", str(script_run), "--print", "--metric", "margn")
    assert_clean_error(bad, "--metric 'margn'", "margin", "Did you mean 'margin'?")


def test_info_of_a_user_loop_without_probes_or_totals(tmp_path):
    path = write_events(tmp_path / "u.h5", user_run(steps=300))
    out = tt("info", str(path)).stdout
    assert "probes none (per-layer probes need run.watch(model, optimizer))" in out
    assert "the run's own: grad_scale, top5" in out
    assert "300 steps, 3 epochs" in out  # no "of 0"
    head = out[out.index("Run ") :].splitlines()[0]
    for col in ("val_top5", "val_f1", "test_f1", "test_top5"):
        assert col in head, out
    row = out[out.index("Run ") :].splitlines()[2]
    assert "nan" not in row  # no accuracy measured: '-', never nan
    assert row.split()[1:8] == ["0.1639", "0.4667", "-", "-", "0.3100", "91.20", "-"], row  # no params
    assert "0.9910" in row and "0.9050" in row
    assert "# config of this run (tuitrain.init(config=...), as JSON)" in out


def test_info_says_no_divergence_for_a_sparsely_logged_loss_and_one_for_a_loss_gone_nan(tmp_path):
    sparse = write_events(tmp_path / "sparse.h5", user_run(steps=300, log_every=10))
    out = tt("info", str(sparse)).stdout
    assert "diverged" not in out, out
    events = user_run(steps=300)
    for ev in events:
        if isinstance(ev, StepBatch) and ev.steps[0] >= 200:
            ev.scalars[:, 0] = np.nan
    gone = write_events(tmp_path / "gone.h5", events)
    out = tt("info", str(gone)).stdout
    assert "diverged: the training loss is not finite from step 200" in out, out


async def test_replay_of_a_user_loop_file_shows_its_scalars_totals_and_metrics(tmp_path):
    from fake_events import USER_KEYS
    from pilot_helpers import screen_text, until

    from tuitrain.runfile import open_run
    from tuitrain.ui.replay.launch import replay_app
    from tuitrain.ui.widgets.cursor_bar import CursorBar
    from tuitrain.ui.widgets.final_table import FinalTable
    from tuitrain.ui.widgets.layer_rows import NO_PROBES
    from tuitrain.ui.widgets.loss_plot import LossChart

    path = write_events(tmp_path / "u.h5", user_run(steps=300))
    rf = open_run(path)
    app = replay_app([rf], cpu_budget=None)
    async with app.run_test(size=(200, 60)) as pilot:
        h = app.history
        assert await until(pilot, lambda: h.is_finished)
        assert h.user_scalars == USER_KEYS and not h.has_grad
        assert app.metric_cycle() == ("loss", *USER_KEYS, "val_top5", "val_f1")
        app.redraw(force=True)
        await pilot.pause()
        text = screen_text(app)
        head = text.splitlines()[:3]
        assert any("step 300" in line and "done" in line for line in head), head
        assert not any("/0" in line for line in head), head
        assert app.screen.query_one("GradBars").empty_text == NO_PROBES
        await pilot.press("a")  # loss -> grad_scale
        app.redraw(force=True)
        await pilot.pause()
        assert float(app.screen.query_one(LossChart).spec.raw_y.max()) == 65536.0
        await pilot.press("home")  # the cursor at step 0: the file's row, own keys included
        app.redraw(force=True)
        await pilot.pause()
        bar = app.screen.query_one(CursorBar)
        assert "grad_scale 6.55e+4" in bar.markup and "top5" in bar.markup, bar.markup
        assert "acc" not in bar.markup.replace("top5", "")  # never logged: not shown as nan
        await pilot.press("c")
        assert await until(pilot, lambda: app.current_mode == "compare")
        table = app.screen.query_one(FinalTable)
        app.redraw(force=True)
        assert await until(pilot, lambda: len(table.text_rows()) == 2)
        head = table.text_rows()[0]
        for col in ("val_top5", "val_f1", "test_f1", "test_top5"):
            assert col in head, head
        assert "nan" not in table.text_rows()[1]


def test_replay_print_charts_a_loops_own_epoch_metric(tmp_path):
    path = write_events(tmp_path / "u.h5", user_run(steps=300))
    p = tt("replay", str(path), "--print", "--metric", "val_f1")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "val_f1 · 1 run" in p.stdout and "0.900" in p.stdout and "0.700" in p.stdout
    sparse = write_events(tmp_path / "s.h5", user_run(steps=300, log_every=10))
    p = tt("replay", str(sparse), "--print", "--metric", "top5")
    assert p.returncode == 0 and "top5 · 1 run" in p.stdout, p.stdout + p.stderr
    assert "not finite" not in p.stdout  # logged every tenth step: gaps, not a divergence


def test_a_key_first_logged_after_the_start_is_charted_from_the_file(tmp_path):
    """RunStarted declared grad_scale only; top5 arrived later: the file keeps it in /metrics."""
    from tuitrain.events import STEP_SCALARS, RunStarted

    events = user_run(steps=300)
    assert isinstance(events[0], RunStarted)
    events[0].step_scalars = (*STEP_SCALARS, "grad_scale")
    path = write_events(tmp_path / "late.h5", events)
    from tuitrain.runfile import open_run

    with open_run(path) as rf:
        assert "top5" not in rf.step_scalars and "top5" in rf.metrics("step")
    p = tt("replay", str(path), "--print", "--metric", "top5")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "top5 · 1 run" in p.stdout and "no finite top5" not in p.stdout
    assert "not finite" not in p.stdout
