"""The real `tuitrain watch` inside tmux: read the screen, press keys, check the process tree and file."""

from __future__ import annotations

from pathlib import Path

import h5py

from tests.e2e.tmux import descendants, needs_tmux, pause_and_resume, quit_and_stop, step_of, watch_in_tmux

pytestmark = needs_tmux


def test_watch_live_pause_and_quit_and_stop(tmp_path: Path) -> None:
    out = tmp_path / "live.h5"
    with watch_in_tmux(f"presets/toy2d_mlp.toml --epochs 400 --out {out}") as (t, pane, workers):
        # panels are paced (the chart may lag the header by up to a second): wait for all of them
        screen = t.wait_for(
            lambda s: (
                "RUNNING" in s and step_of(s) > 0 and "head.w" in s and ("loss 0." in s or "loss 1." in s)
            ),
            150,
            "a running header with steps, a gradient bar for the head and the latest loss",
        )
        assert "toy2d_mlp" in screen and "Loss" in screen and "Gradients" in screen
        workers.extend(descendants(pane))
        first = step_of(screen)
        screen = t.wait_for(lambda s: step_of(s) > first, 30, "steps to advance")
        paused_at = pause_and_resume(t)
        assert len(descendants(pane)) >= 1  # the training process lives under the UI
        quit_and_stop(t, pane)
        assert descendants(pane) == []
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "stopped"
        n = f["steps/step"].shape[0]
        assert n > paused_at and f["probes/grad/grad_norm"].shape[0] == n
