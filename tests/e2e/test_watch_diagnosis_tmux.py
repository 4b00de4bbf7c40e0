"""The real `tuitrain watch` in tmux at 80x24 with a run the live diagnosis finds a problem in: deep_mlp
(64 sigmoid layers) loses its gradients towards the input. The training process's rules open an error
finding; it reaches the dashboard through the live queue: the header names it and asks for ``d``, the
event log has its line, ``d`` shows the Diagnosis panel with it first (and the header stops asking),
and the run file holds the finding afterwards."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.tmux import descendants, needs_tmux, quit_and_stop, watch_in_tmux
from tuitrain.runfile import open_run

pytestmark = needs_tmux

LOG_LINE = re.compile(r"✗ error (vanishing_gradients at layers\.|stuck_at_chance since)")


def test_live_finding_at_80x24(tmp_path: Path) -> None:
    out = tmp_path / "deep.h5"
    # one long epoch: no epoch lines push the finding's line out of the 3-line event log
    args = f"deep_mlp --epochs 1 --set data.train_size=200000 --set train.threads=1 --out {out}"
    with watch_in_tmux(args, width=80, height=24) as (t, pane, workers):
        # vanishing_gradients opens after one window (50 steps); stuck_at_chance may follow (200 steps)
        t.wait_for(lambda s: "— press d" in s and re.search(r"✗ \d errors?: ", s), 150, "the header's error")
        workers.extend(descendants(pane))
        t.wait_for(lambda s: LOG_LINE.search(s), 15, "the event log's line")
        t.keys("d")
        s = t.wait_for(lambda s: "Diagnosis" in s and "press d" not in s, 15, "the Diagnosis panel")
        assert any("✗ error   vanishing_gradients" in line and "since" in line for line in s.splitlines())
        assert "→" in s  # the top finding's suggestion under it
        quit_and_stop(t, pane)
    with open_run(out) as rf:
        assert any(f.kind == "vanishing_gradients" and f.severity == "error" for f in rf.findings())
