"""The Images screen (key ``i``): the real app under ``App.run_test()``, fed Snapshot events of the
declared shapes through a ListSource (numpy-built: UI tests do not import torch), and a real run file of
``toy2d_mlp`` written by the real CLI for the replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_events import T0, make_batch, run_started, vgg_layers
from pilot_helpers import screen_text, until

from tests.clirun import tt
from tuitrain import events as E
from tuitrain.events import (
    BOUNDARY,
    FIRST_LAYER,
    MISCLASSIFIED,
    POINTS,
    TOKEN_MIXING,
    RunFinished,
    Snapshot,
    SnapshotField,
    SnapshotSpec,
)
from tuitrain.runfile import open_run
from tuitrain.ui.app import TuitrainApp
from tuitrain.ui.replay.launch import replay_app
from tuitrain.ui.snapshot_history import NO_SNAPSHOTS_FILE, NO_SNAPSHOTS_LIVE
from tuitrain.ui.source import ListSource
from tuitrain.ui.widgets.image_panel import ImagePanel
from tuitrain.view.halfblock import cell_colors, halfblock
from tuitrain.view.images import CLASS_COLORS

DATA = Path(__file__).resolve().parents[1] / "data"
STEPS_PER_EPOCH = 40
EPOCHS = 3
G = 16  # boundary grid


def rgb255(c: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(int(round(255 * v)) for v in c)  # type: ignore[return-value]


def kernel_weight(epoch: int) -> np.ndarray:
    """(4, 3, 3, 3): kernel i is constant-coloured with a gradient, a different hue per kernel."""
    w = np.zeros((4, 3, 3, 3), np.float32)
    ramp = np.linspace(0, 1, 9, dtype=np.float32).reshape(3, 3)
    for i in range(4):
        w[i, i % 3] = ramp * (epoch + 2)
    return w


def specs() -> list[SnapshotSpec]:
    return [
        SnapshotSpec(
            FIRST_LAYER,
            (SnapshotField("weight", (4, 3, 3, 3), "float32"),),
            "epoch",
            10,
            {"module": "stem", "type": "Conv2d", "out_total": 4},
        ),
        SnapshotSpec(
            BOUNDARY,
            (SnapshotField("pred", (G, G), "int16"), SnapshotField("prob", (G, G), "float16")),
            "epoch",
            10,
            {"extent": [-1.0, 1.0, -1.0, 1.0], "grid": G, "num_classes": 2},
        ),
        SnapshotSpec(
            POINTS,
            (SnapshotField("xy", (2,), "float32"), SnapshotField("label", (), "int16")),
            "start",
            100,
            {"split": "test"},
        ),
        SnapshotSpec(
            MISCLASSIFIED,
            (
                SnapshotField("index", (), "int64"),
                SnapshotField("true", (), "int16"),
                SnapshotField("pred", (), "int16"),
                SnapshotField("prob", (), "float16"),
                SnapshotField("image", (3, 8, 8), "uint8"),
            ),
            "end",
            64,
            {"split": "test", "n_total": 100, "class_names": ["cat", "dog", "ship"]},
        ),
    ]


def boundary(epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 right of x = 0 (at init: everything class 0)."""
    pred = np.zeros((1, G, G), np.int16)
    if epoch >= 0:
        pred[0, :, G // 2 :] = 1
    return pred, np.full((1, G, G), 0.99, np.float16)


def snapshot_run(*, with_specs: bool = True, finish: bool = True) -> list:
    layers = vgg_layers(blocks_per_stage=1)
    start = run_started(layers, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH)
    start.snapshots = specs() if with_specs else []
    events: list = [start]
    rng = np.random.default_rng(0)
    if with_specs:
        xy = np.array([[-0.5, 0.0], [0.5, 0.0], [0.5, 0.5]], np.float32)  # the last one: label 0, right side
        events.append(Snapshot(POINTS, -1, 0, {"xy": xy, "label": np.array([0, 1, 0], np.int16)}, T0))
    for epoch in range(-1, EPOCHS):
        step = (epoch + 1) * STEPS_PER_EPOCH
        if epoch >= 0:
            events.append(
                make_batch(
                    step - STEPS_PER_EPOCH,
                    STEPS_PER_EPOCH,
                    layers,
                    rng,
                    steps_per_epoch=STEPS_PER_EPOCH,
                    t=T0 + step,
                )
            )
        if with_specs:
            events.append(Snapshot(FIRST_LAYER, epoch, step, {"weight": kernel_weight(epoch)[None]}, T0))
            pred, prob = boundary(epoch)
            events.append(Snapshot(BOUNDARY, epoch, step, {"pred": pred, "prob": prob}, T0))
    end = EPOCHS * STEPS_PER_EPOCH
    if with_specs:
        img = np.zeros((2, 3, 8, 8), np.uint8)
        img[0, 0], img[1, 2] = 255, 255  # a red sample and a blue one
        events.append(
            Snapshot(
                MISCLASSIFIED,
                EPOCHS - 1,
                end,
                {
                    "index": np.array([7, 42], np.int64),
                    "true": np.array([0, 2], np.int16),
                    "pred": np.array([1, 0], np.int16),
                    "prob": np.array([0.91, 0.55], np.float16),
                    "image": img,
                },
                T0,
            )
        )
    if finish:
        events.append(E.TestResult(loss=0.5, acc=0.9, time=T0 + 5))
        events.append(RunFinished("completed", end, time=T0 + 5))
    return events


def make_app(events, **kw) -> TuitrainApp:
    return TuitrainApp(ListSource(events), clock=lambda: T0 + 10.0, cpu_budget=None, **kw)


def panel(app, name: str) -> ImagePanel:
    return app.screen.query_one(f"#image-{name}", ImagePanel)


def colours(p: ImagePanel) -> set[tuple[int, int, int]]:
    assert p.text is not None
    return {c for row in cell_colors(p.text) for cell in row for c in cell if c is not None}


def test_halfblock_keeps_the_aspect_and_centres():
    rgb = np.zeros((4, 2, 3), np.float32)  # 2 wide, 4 tall: red top half, blue bottom half
    rgb[:2] = (1, 0, 0)
    rgb[2:] = (0, 0, 1)
    t = halfblock(rgb, 10, 2)  # 10 x 4 pixels: 2 x 4 fits unscaled, centred in columns 4-5
    cells = cell_colors(t)
    assert len(cells) == 2 and all(len(r) == 10 for r in cells)
    assert t.plain.splitlines()[0] == "    ▀▀    "
    assert cells[0][4] == ((255, 0, 0), (255, 0, 0)) and cells[1][5] == ((0, 0, 255), (0, 0, 255))
    assert cells[0][0] == (None, None)
    big = halfblock(rgb, 40, 8)  # upscaled to 8 x 16 pixels: 8 lines of 8 cells
    assert big.plain.splitlines()[0].strip() == "▀" * 8


async def test_i_shows_the_panels_titles_and_colours():
    app = make_app(snapshot_run())
    async with app.run_test(size=(120, 40)) as pilot:
        assert await until(pilot, lambda: app.history.is_finished)
        await pilot.press("i")
        assert app.current_mode == "images"
        assert await until(pilot, lambda: panel(app, FIRST_LAYER).text is not None)
        kern, bound, mis = panel(app, FIRST_LAYER), panel(app, BOUNDARY), panel(app, MISCLASSIFIED)
        assert not app.screen.query_one("#image-token_mixing").display  # the run has no token mixing
        last = f"epoch {EPOCHS} · step {EPOCHS * STEPS_PER_EPOCH}"
        assert last in kern.border_title and last in bound.border_title
        assert "stem (Conv2d)" in kern.border_subtitle
        # 4 kernels, one hue each (red, green, blue, red: min-max normalised, so their brightest is 255)
        kc = colours(kern)
        assert {(255, 0, 0), (0, 255, 0), (0, 0, 255)} <= kc
        # two classes: both class colours (at 0.99 nearly full), the points darker, the wrong one black
        bc = colours(bound)
        near = [
            min(sum(abs(a - b) for a, b in zip(c, rgb255(CLASS_COLORS[k]), strict=True)) for c in bc)
            for k in (0, 1)
        ]
        assert max(near) < 12, (near, bc)
        assert (0, 0, 0) in bc  # the label-0 point on class 1's side
        assert "1 of 3 test points wrong" in bound.border_subtitle
        # misclassified: two tiles with "true→pred prob" under each, class names from the meta
        assert mis.text is not None
        assert "cat→dog 0.91" in mis.text.plain and "ship→cat 0.55" in mis.text.plain
        assert {(255, 0, 0), (0, 0, 255)} <= colours(mis)
        assert "10 wrong in 100 test samples" in mis.border_subtitle
        text = screen_text(app)
        assert "kernels · epoch 3" in text
        await pilot.press("i")
        assert app.current_mode == "dashboard"
        await pilot.press("i")
        await pilot.press("escape")
        assert app.current_mode == "dashboard"


async def test_cursor_back_shows_the_init_row():
    app = make_app(snapshot_run())
    async with app.run_test(size=(120, 40)) as pilot:
        assert await until(pilot, lambda: app.history.is_finished)
        await pilot.press("i")
        kern, bound, mis = panel(app, FIRST_LAYER), panel(app, BOUNDARY), panel(app, MISCLASSIFIED)
        assert await until(pilot, lambda: kern.text is not None)
        await pilot.press("home")
        assert await until(pilot, lambda: "at init · step 0" in kern.border_title), kern.border_title
        assert "at init · step 0" in bound.border_title
        assert (0, 0, 0) in colours(bound)  # at init all is class 0: the label-1 point is wrong
        assert "1 of 3 test points wrong" in bound.border_subtitle
        assert mis.text is None and "taken at the end" in mis.message  # before the end: not yet
        await pilot.press("shift+right")
        assert await until(pilot, lambda: "epoch 1 · step 40" in kern.border_title), kern.border_title
        await pilot.press("end")
        assert await until(pilot, lambda: "epoch 3 · step 120" in kern.border_title)
        assert mis.text is not None


async def test_live_updates_as_snapshots_arrive():
    events = snapshot_run(finish=False)
    cut = next(i for i, e in enumerate(events) if isinstance(e, Snapshot) and e.epoch == 0)
    source = ListSource(events[:cut], live=True)
    app = TuitrainApp(source, clock=lambda: T0 + 10.0, cpu_budget=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("i")
        kern = panel(app, FIRST_LAYER)
        assert await until(pilot, lambda: kern.text is not None and "at init" in kern.border_title)
        source.feed(events[cut:])  # the rest arrive as a live run's would: through the app's messages
        assert await until(pilot, lambda: "epoch 3 · step 120" in kern.border_title), kern.border_title


async def test_a_run_without_snapshots_says_why():
    app = make_app(snapshot_run(with_specs=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("i")
        assert await until(pilot, lambda: NO_SNAPSHOTS_LIVE[:40] in screen_text(app))


async def test_80x24_shows_every_panel():
    app = make_app(snapshot_run())
    async with app.run_test(size=(80, 24)) as pilot:
        assert await until(pilot, lambda: app.history.is_finished)
        await pilot.press("i")
        assert await until(
            pilot, lambda: all(panel(app, n).text is not None for n in (FIRST_LAYER, BOUNDARY, MISCLASSIFIED))
        )
        for n in (FIRST_LAYER, BOUNDARY, MISCLASSIFIED):
            p = panel(app, n)
            assert p.size.width >= 20 and p.size.height >= 10, (n, p.size)
            assert "▀" in p.text.plain
            assert "epoch 3" in p.border_title
        assert "cat→dog" in panel(app, MISCLASSIFIED).text.plain


@pytest.fixture(scope="module")
def toy2d_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("images") / "toy2d.h5"
    p = tt("run", "toy2d_mlp", "--no-ui", "--set", "train.epochs=2", "--out", str(out), timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    return out


async def test_replay_of_a_real_toy2d_run_shows_its_boundary(toy2d_file):
    rf = open_run(toy2d_file)
    assert BOUNDARY in rf.snapshot_specs
    app = replay_app([rf], mode="images", cpu_budget=None)
    async with app.run_test(size=(100, 30)) as pilot:
        bound = panel(app, BOUNDARY)
        assert await until(
            pilot, lambda: bound.text is not None and "epoch 2" in (bound.border_title or ""), 10
        )
        assert "test points wrong" in bound.border_subtitle
        ncls = int(rf.snapshot_specs[BOUNDARY].meta["num_classes"])
        bc = colours(bound)
        for k in range(ncls):  # every class's hue appears (regions or points)
            target = rgb255(CLASS_COLORS[k])
            hue = np.asarray(target, float) / max(1, max(target))
            assert any(
                np.allclose(np.asarray(c, float) / max(1, max(c)), hue, atol=0.25) for c in bc if max(c) > 0
            ), (k, bc)
        await pilot.press("home")
        assert await until(pilot, lambda: "at init" in bound.border_title, 5), bound.border_title
    rf.close()


def test_messages_name_the_causes():
    assert "snapshot_mb = 0" in NO_SNAPSHOTS_FILE and "snapshot_mb = 0" in NO_SNAPSHOTS_LIVE


async def test_token_mixing_panel_is_blue_white_red():
    layers = vgg_layers(blocks_per_stage=1)
    start = run_started(layers, epochs=1, steps_per_epoch=STEPS_PER_EPOCH)
    start.snapshots = [
        SnapshotSpec(
            TOKEN_MIXING,
            (SnapshotField("weight", (2, 4), "float32"),),
            "epoch",
            5,
            {"module": "blocks.0.mlp_tokens.fc1", "grid": [2, 2], "hidden_total": 2},
        )
    ]
    w = np.array([[[1.0, -1.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0]]], np.float32)  # red, blue and white cells
    app = make_app([start, Snapshot(TOKEN_MIXING, 0, STEPS_PER_EPOCH, {"weight": w}, T0)])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("i")
        tok = panel(app, TOKEN_MIXING)
        assert await until(pilot, lambda: tok.text is not None)
        assert {(255, 0, 0), (0, 0, 255), (255, 255, 255)} <= colours(tok)
        assert "epoch 1 · step 40" in tok.border_title
        assert "blocks.0.mlp_tokens.fc1" in tok.border_subtitle
        assert not panel(app, FIRST_LAYER).display


async def test_several_runs_show_the_selected_one(toy2d_file):
    """``r`` switches the screen to the next run: here an old file (schema 1) without snapshots."""
    runs = [open_run(toy2d_file), open_run(DATA / "run_v1.h5")]
    app = replay_app(runs, mode="images", cpu_budget=None)
    async with app.run_test(size=(100, 30)) as pilot:
        bound = panel(app, BOUNDARY)
        assert await until(pilot, lambda: bound.text is not None, 10)
        await pilot.press("r")
        assert await until(pilot, lambda: NO_SNAPSHOTS_FILE[:40] in screen_text(app), 5)
        assert not app.screen.query_one("#images-main").display
        await pilot.press("r")
        assert await until(
            pilot, lambda: app.screen.query_one("#images-main").display and bound.text is not None
        )
    for rf in runs:
        rf.close()
