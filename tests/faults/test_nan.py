"""NaN and divergence, injected for real: toy2d_mlp trained by the real CLI at learning rates that
really diverge (no monkeypatched loss), the run file read back, and the real dashboard under
``App.run_test()`` fed by that file.

Configurations found by running them (toy2d, 16 steps an epoch, seed 0):
- ``DIVERGES``: BatchNorm off, Adam at lr 1e6: the loss is 1.11 at step 0 and NaN from step 1 on.
- ``BLOWS_UP``: BatchNorm off, SGD at lr 1e3: loss 1.11, 1.2e4, 1.4e28, then NaN from step 3 (the
  gradients are already non-finite at step 2).
- Adam at lr 1 on the preset (with BatchNorm): no loss is NaN, but the zero-initialised BN shifts and
  biases have ||W|| = 0 at step 0, the false alarm of issue 9.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.clirun import assert_clean_error, tt
from tests.conftest import PRESETS, cli_env
from tuitrain.runfile import open_run

SMALL = ("--set", "data.train_size=512", "--set", "data.val_size=128", "--set", "data.test_size=128")
DIVERGES = ("--set", "model.batch_norm=false", "--set", "optim.lr=1e6", *SMALL)
BLOWS_UP = ("--set", "model.batch_norm=false", "--set", "optim.name=sgd", "--set", "optim.lr=1e3", *SMALL)


def strict_env() -> dict[str, str]:
    """Any numpy/Python RuntimeWarning in the training process becomes an error (and fails the run)."""
    env = cli_env()
    env["PYTHONWARNINGS"] = "error::RuntimeWarning"
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_zero_initialised_tensors_raise_no_false_nan_alarm(tmp_path: Path) -> None:
    out = tmp_path / "lr1.h5"
    p = tt(
        "run",
        "toy2d_mlp",
        "--no-ui",
        "--set",
        "optim.lr=1",
        "--max-steps",
        "24",
        "--out",
        str(out),
        env=strict_env(),
    )
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    assert "NaN/Inf" not in text and "RuntimeWarning" not in text, text
    with open_run(out) as rf:
        assert rf.status == "completed"
        names = [layer.name for layer in rf.layers]
        ratio, norms = rf.probe("update_ratio"), rf.probe("weight_norm")
        assert np.isfinite(ratio).all() and np.isfinite(norms).all()
        assert not any(e["kind"] == "nan" for e in rf.events())
    # the BN shift starts at zero: its ratio is undefined and ||dW|| is stored; Adam's first step moves
    # every element by about lr = 1, so ||dW|| = sqrt(numel) = sqrt(32)
    bn_bias = names.index("layers.0.bn.bias")
    assert norms[0, bn_bias] == 0.0
    assert ratio[0, bn_bias] == pytest.approx(math.sqrt(32), rel=1e-3)


# -- non-finite config values -------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "optim.lr=inf",
        "optim.weight_decay=inf",
        "data.noise=inf",
        "monitor.vanishing=inf",
        "monitor.exploding=inf",
        "monitor.emit_seconds=nan",
        "optim.lr=1e999",  # TOML reads it as inf
        "optim.betas=[0.9, -inf]",
    ],
)
def test_non_finite_numbers_are_refused(override: str, tmp_path: Path) -> None:
    out = tmp_path / "never.h5"
    p = tt("run", "toy2d_mlp", "--no-ui", "--set", override, "--max-steps", "1", "--out", str(out))
    key = override.split("=", 1)[0]
    assert_clean_error(p, f"`{key}`", "a finite number is required")
    assert not out.exists()


def test_non_finite_number_in_a_preset_file_names_the_file(tmp_path: Path) -> None:
    preset = tmp_path / "bad.toml"
    preset.write_text(f'extends = "{PRESETS / "toy2d_mlp.toml"}"\n[optim]\nlr = inf\n')
    p = tt("run", str(preset), "--no-ui", "--max-steps", "1", "--out", str(tmp_path / "never.h5"))
    assert_clean_error(p, str(preset), "`optim.lr` = inf", "a finite number is required")


def test_every_float_key_refuses_inf_and_nan() -> None:
    """In process, every float key of the schema (a list of floats too): one clean ConfigError each."""
    import dataclasses
    import typing

    from tuitrain.config import ConfigError, RunConfig
    from tuitrain.config.validate import from_dict

    checked: set[str] = set()
    for name, sec_cls in typing.get_type_hints(RunConfig).items():
        if not dataclasses.is_dataclass(sec_cls):
            continue
        hints = typing.get_type_hints(sec_cls)
        for f in dataclasses.fields(sec_cls):
            tp = hints[f.name]
            for bad in (math.inf, -math.inf, math.nan):
                if tp is float:
                    value: object = bad
                elif tp == list[float]:
                    value = [bad, 0.5]
                else:
                    continue
                with pytest.raises(ConfigError, match="a finite number is required") as err:
                    from_dict({name: {f.name: value}})
                assert f"`{name}.{f.name}`" in str(err.value)
                checked.add(f"{name}.{f.name}")
    named = {"optim.lr", "optim.weight_decay", "data.noise", "monitor.vanishing", "monitor.exploding"}
    assert named | {"optim.betas", "model.mlp_ratio", "monitor.emit_seconds"} <= checked, checked


# -- divergence: monitor.on_nan -----------------------------------------------------------------


def first_nonfinite_step(path: Path) -> int:
    with open_run(path) as rf:
        loss, steps = rf.scalar("loss"), rf.scalar("step")
    bad = np.flatnonzero(~np.isfinite(loss))
    assert bad.size, "the run never produced a non-finite loss: the test config no longer diverges"
    return int(steps[bad[0]])


@dataclass
class Trained:
    path: Path
    proc: subprocess.CompletedProcess

    @property
    def text(self) -> str:
        return self.proc.stdout + self.proc.stderr


def train_cli(path: Path, *args: str) -> Trained:
    return Trained(path, tt("run", "toy2d_mlp", "--no-ui", *args, "--out", str(path), env=strict_env()))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    """The real diverging runs every test below reads, trained once per module (~5 s each)."""
    d = tmp_path_factory.mktemp("nan")
    return {
        "nan_at_1": train_cli(d / "nan_at_1.h5", *DIVERGES, "--max-steps", "200"),
        "nan_at_3": train_cli(d / "nan_at_3.h5", *BLOWS_UP, "--max-steps", "200"),
        # on_nan = continue: 10 epochs of 4 steps, every one of them NaN from step 3
        "continued": train_cli(
            d / "continued.h5", *BLOWS_UP, "--set", "monitor.on_nan=continue", "--max-steps", "40"
        ),
    }


@pytest.mark.parametrize(("name", "first_bad"), [("nan_at_1", 1), ("nan_at_3", 3)])
def test_divergence_stops_the_run_as_failed(runs: dict[str, Trained], name: str, first_bad: int) -> None:
    run = runs[name]
    message = f"diverged: loss is NaN at step {first_bad}"
    assert run.proc.returncode == 1, run.text
    assert message in run.text and "Traceback" not in run.text and "RuntimeWarning" not in run.text, run.text
    assert first_nonfinite_step(run.path) == first_bad  # the error names the first bad step exactly
    with open_run(run.path) as rf:
        assert rf.status == "failed"
        assert rf.error == message
        assert rf.n_steps < 200  # it stopped (at the flush or the epoch end after the bad step)
        assert any(e["kind"] == "nan" and e["level"] == "error" for e in rf.events())
    assert not run.path.with_suffix(".pt").exists()  # no checkpoint of NaN weights


def test_nan_patience_tolerates_that_many_bad_losses_in_a_row(tmp_path: Path) -> None:
    run = train_cli(
        tmp_path / "patient.h5", *DIVERGES, "--set", "monitor.nan_patience=5", "--max-steps", "200"
    )
    assert run.proc.returncode == 1, run.text
    with open_run(run.path) as rf:
        assert (
            rf.error
            == "diverged: loss is NaN at step 1 (non-finite for 6 steps in a row; monitor.nan_patience = 5)"
        )
        assert rf.n_steps >= 7  # steps 1..6 were trained before the sixth bad loss stopped it


def test_on_nan_continue_trains_on_and_says_nan(runs: dict[str, Trained]) -> None:
    run = runs["continued"]
    assert run.proc.returncode == 0, run.text
    assert "diverged" not in run.text and "Traceback" not in run.text, run.text
    with open_run(run.path) as rf:
        assert rf.status == "completed" and rf.n_steps == 40
        final = rf.final_metrics()
    assert math.isnan(final["train_loss"]) and math.isnan(final["test_loss"])
    assert_nan_row(run.text, "toy2d_mlp")  # the headless final table


def assert_nan_row(text: str, name: str) -> None:
    """The final-table row of ``name`` shows the three NaN losses as ``nan``, not ``-`` or a number."""
    rows = [
        line.replace("│", " ").replace("■", " ").split()
        for line in text.splitlines()
        if "┤" not in line and "/" not in line  # not a chart's axis line, not the line naming the file
    ]
    rows = [r for r in rows if r and r[0] == name]
    assert rows, text
    cells = rows[-1]
    assert cells.count("nan") == 3 and "-" not in cells, text  # train, val and test loss


def test_info_and_replay_print_show_nan_as_nan(runs: dict[str, Trained]) -> None:
    path = str(runs["continued"].path)
    for args in (("info", path), ("replay", "--print", path)):
        p = tt(*args)
        assert p.returncode == 0, p.stdout + p.stderr
        assert_nan_row(p.stdout, "toy2d_mlp")
        if args[0] == "info":  # completed, but not as if nothing happened
            assert "completed (diverged: the training loss is not finite from step 3)" in p.stdout, p.stdout
    assert "toy2d_mlp: loss is not finite (nan/inf) from step 3" in p.stdout  # under the chart


def test_divergence_guard_names_the_first_bad_step_across_flushes() -> None:
    """The bookkeeping alone: a run of bad losses split over flushed blocks, reset by a finite loss."""
    from tuitrain.train.alerts import DivergenceGuard

    nan, inf = math.nan, math.inf
    g = DivergenceGuard(patience=2)
    assert g.observe(np.arange(0, 4), np.array([1.0, nan, nan, 1.0])) == ""  # two bad, then finite: reset
    assert g.observe(np.arange(4, 6), np.array([1.0, inf])) == ""  # a new run starts at step 5
    assert g.observe(np.arange(6, 8), np.array([nan, nan])) == (
        "diverged: loss is Inf at step 5 (non-finite for 3 steps in a row; monitor.nan_patience = 2)"
    )
    assert (
        DivergenceGuard(0).observe(np.array([7, 8]), np.array([2.0, nan]))
        == "diverged: loss is NaN at step 8"
    )


# -- the dashboard, fed by the real run files (App.run_test) ------------------------------------


def replay(paths: list[Path], size: tuple[int, int] = (120, 36)):
    """Open ``paths`` in the real replay app and hand ``check(app, pilot)`` the loaded screen."""
    import asyncio

    from tests.ui.pilot_helpers import until
    from tuitrain.ui.replay.launch import replay_app
    from tuitrain.ui.widgets.loss_plot import LossChart

    def run(check) -> None:
        async def main() -> None:
            app = replay_app([open_run(p) for p in paths], cpu_budget=None)
            async with app.run_test(size=size) as pilot:

                def loaded() -> bool:
                    charts = app.screen.query(LossChart)
                    return all(h.is_finished for h in app.runs.histories) and (
                        not charts or charts.first().builds > 0
                    )

                assert await until(pilot, loaded, 15.0)
                app.redraw()
                await pilot.pause()
                await check(app, pilot)

        asyncio.run(main())

    return run


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_dashboard_shows_a_continued_nan_run_as_nan(runs: dict[str, Trained]) -> None:
    from tests.ui.pilot_helpers import screen_text, until
    from tuitrain.ui.widgets.cursor_bar import CursorBar
    from tuitrain.ui.widgets.event_log import EventLog
    from tuitrain.ui.widgets.header import RunHeader
    from tuitrain.ui.widgets.loss_plot import LossChart, LossPanel

    async def check(app, pilot) -> None:
        h = app.history
        assert h.status == "completed" and h.nan_step == 3
        # the header never says COMPLETED for it
        header = app.screen.query_one(RunHeader)
        assert "DIVERGED" in header.render().plain and "COMPLETED" not in header.render().plain
        # the stat line: the latest loss is a red nan, not the last finite value (1.4e28)
        panel = app.screen.query_one(LossPanel)
        loss_line = panel.stats.markup.splitlines()[0]
        assert "[b $error]nan[/]" in loss_line and "e+28" not in loss_line.split("min")[0], loss_line
        assert "loss nan" in app.screen.query_one(CursorBar).markup
        # the chart: the EMA stops where the loss stopped being finite (no flat line over 37 NaN
        # steps), and a red dashed column marks step 3
        chart = app.screen.query_one(LossChart)
        assert chart.spec.nan_x == 3.0 and chart.spec.sm_x.size and chart.spec.sm_x.max() < 3
        assert "nan from step 3" in str(panel.border_subtitle)
        assert await until(pilot, lambda: "┊" in screen_text(app))
        # the event log: NaN epochs and the NaN test are errors, never a success tick
        log = app.screen.query_one(EventLog)
        test = [e for e in log.entries if e.kind == "test"]
        assert test and test[0].level == "error" and test[0].message.startswith("test  loss nan")
        assert all(e.level == "error" for e in log.entries if e.kind == "epoch")
        assert not any("✓ test" in line for line in log.text_lines())
        done = [e for e in log.entries if e.kind == "finished"]
        assert done[0].level == "warning" and "not finite from step 3" in done[0].message

    replay([runs["continued"].path])(check)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_dashboard_and_final_table_of_diverged_runs(runs: dict[str, Trained]) -> None:
    from tests.ui.pilot_helpers import until
    from tuitrain.ui.widgets.event_log import EventLog
    from tuitrain.ui.widgets.final_table import FinalTable
    from tuitrain.ui.widgets.header import RunHeader

    async def check(app, pilot) -> None:
        table = app.screen.query_one(FinalTable)
        assert await until(pilot, lambda: len(table.cells) == 2)
        cols = table.header
        continued, stopped = table.cells
        for key in ("Train Loss", "Val Loss", "Test Loss"):
            assert continued[cols.index(key)] == "nan"  # NaN: the run produced it
            assert stopped[cols.index(key)] == "-"  # missing: it stopped before its first epoch ended
        await pilot.press("r", "c")  # the stopped run, on its own dashboard
        assert app.current_mode == "dashboard" and app.view.selected == 1
        await pilot.pause()
        assert "FAILED" in app.screen.query_one(RunHeader).render().plain
        log = app.screen.query_one(EventLog).text_lines()
        assert any("run failed at step" in line and "diverged: loss is NaN at step 3" in line for line in log)

    replay([runs["continued"].path, runs["nan_at_3"].path])(check)


# -- watch: the dashboard of a live run that diverges ------------------------------------------


def test_watch_shows_the_divergence_and_exits_1(tmp_path: Path) -> None:
    """The real `tuitrain watch` in tmux: the header says FAILED, the log gives the error, and after
    `q` the shell gets exit code 1 and the error."""
    import shutil
    import sys
    import time

    from tests.e2e.tmux import Tmux

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    out, rc = tmp_path / "watched.h5", tmp_path / "rc"
    venv_bin = Path(sys.executable).parent
    args = " ".join(DIVERGES)
    t = Tmux(
        f"OMP_NUM_THREADS=1 {venv_bin}/tuitrain watch toy2d_mlp {args} --max-steps 200 --out {out} "
        f"; echo $? > {rc}; sleep 60"
    )
    try:
        screen = t.wait_for(lambda s: "FAILED" in s, 90, "the FAILED header")
        assert "diverged: loss is NaN at step 1" in screen or "NaN/Inf at step 1" in screen, screen
        t.keys("q")
        deadline = time.time() + 60
        while time.time() < deadline and not (rc.exists() and rc.read_text().strip()):
            time.sleep(0.25)
        assert rc.read_text().strip() == "1", t.screen()
        assert "error: diverged: loss is NaN at step 1" in t.screen()  # what the shell is told
    finally:
        t.kill()
    with open_run(out) as rf:
        assert rf.status == "failed" and rf.error == "diverged: loss is NaN at step 1"


# -- the monitor in a user's own loop, on CPU and (where there is one) CUDA ---------------------


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
    ],
)
def test_monitor_raises_diverged_naming_the_first_bad_step(device: str) -> None:
    """A real loop that diverges (SGD at lr 1e3, no BatchNorm) with the Monitor around its optimizer
    step: ``after_step`` raises :class:`Diverged` at the flush that sees the first NaN loss (on CUDA up
    to the read-back depth later, never a sync per step); the message names that step exactly."""
    import torch.nn.functional as F

    from tests.recorder import Recorder
    from tuitrain.config import MonitorConfig
    from tuitrain.train.monitor import Diverged, Monitor
    from tuitrain.train.summary import layer_infos

    torch.manual_seed(0)
    dev = torch.device(device)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 3),
    ).to(dev)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=1e3)
    rec = Recorder()
    monitor = Monitor.for_model(params, layer_infos(model), [rec], MonitorConfig(emit_seconds=0.0), dev)
    x, y = torch.randn(256, 2, device=dev), torch.randint(0, 3, (256,), device=dev)
    with pytest.raises(Diverged) as err:
        for _ in range(200):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            monitor.before_step()
            opt.step()
            monitor.after_step(loss, logits, y, 1e3, 0)
    raised_at = monitor.step
    monitor.flush(force=True)  # what the engine does next: every row reaches the sinks
    steps = np.concatenate([b.steps for b in rec.batches()])
    losses = np.concatenate([b.scalar("loss") for b in rec.batches()])
    first = int(steps[np.flatnonzero(~np.isfinite(losses))[0]])
    assert (
        str(err.value)
        == f"diverged: loss is {'NaN' if math.isnan(losses[steps == first][0]) else 'Inf'} at step {first}"
    )
    late = raised_at - (first + 1)  # steps trained after the first bad one
    assert 0 <= late <= (0 if device == "cpu" else monitor.readback.depth + 1), late


def test_data_parallel_ranks_stop_together_without_hanging(tmp_path: Path) -> None:
    """Two ranks under torchrun see the same reduced losses but flush on their own clocks: they stop
    together at the epoch's end (none is left waiting in an all-reduce), the file says why, exit 1."""
    out = tmp_path / "ddp.h5"
    p = tt(
        "run", "toy2d_mlp", "--no-ui", "--nproc-per-node", "2", *DIVERGES, "--max-steps", "100",
        "--out", str(out), env=strict_env(), timeout=180,
    )  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    assert "diverged: loss is NaN at step 1" in p.stdout + p.stderr
    with open_run(out) as rf:
        assert rf.status == "failed" and rf.error == "diverged: loss is NaN at step 1"
        assert rf.n_steps == 4  # the end of the first epoch (512 samples, batch 128)
