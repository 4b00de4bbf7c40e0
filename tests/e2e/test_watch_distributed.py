"""`tuitrain watch --nproc-per-node 2` inside tmux: the dashboard is fed by rank 0 of a torchrun job
through the worker's relay; pause, resume and stop reach both ranks; nothing is left behind."""

from __future__ import annotations

import time
from pathlib import Path

import h5py

from tests.e2e.tmux import (
    descendants,
    needs_tmux,
    pause_and_resume,
    quit_and_stop,
    running,
    step_of,
    watch_in_tmux,
)

pytestmark = needs_tmux


def test_watch_two_ranks_live_pause_and_stop(tmp_path: Path) -> None:
    out = tmp_path / "ddp.h5"
    args = f"presets/toy2d_mlp.toml --epochs 400 --device cpu --nproc-per-node 2 --out {out}"
    with watch_in_tmux(args) as (t, pane, workers):
        screen = t.wait_for(
            lambda s: "RUNNING" in s and step_of(s) > 0 and "head.w" in s,
            120,
            "a running header with steps and gradient bars",
        )
        assert "2 x cpu (gloo)" in screen
        workers.extend(descendants(pane))  # worker, torchrun, 2 ranks (and their helpers)
        assert len(workers) >= 4
        first = step_of(screen)
        t.wait_for(lambda s: step_of(s) > first, 30, "steps to advance")
        paused_at = pause_and_resume(t)
        quit_and_stop(t, pane)
        # ranks close the file and exit just after the dashboard: allow them a bounded moment
        deadline = time.time() + 30
        while time.time() < deadline and any(running(pid) for pid in workers):
            time.sleep(0.25)
        alive = [pid for pid in workers if running(pid)]
        assert alive == [], "worker, torchrun or a rank outlived the dashboard"
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "stopped"
        assert f.attrs["device"] == "2 x cpu (gloo)"
        n = f["steps/step"].shape[0]
        assert n > paused_at and f["probes/grad/grad_norm"].shape[0] == n
