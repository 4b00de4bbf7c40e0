"""The real `tuitrain watch lit.py` inside tmux with a Lightning script (tests/test_lightning.py's
SCRIPT): the dashboard shows the module's own layer names, pause really stops Lightning's steps (the
pause blocks inside the callback's ``run.log``), and the dashboard's stop, raised inside a Lightning
hook, goes through Lightning's ``on_exception`` and leaves the file ``stopped``."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest

from tests.e2e.tmux import descendants, needs_tmux, pause_and_resume, quit_and_stop, step_of, watch_in_tmux

pytest.importorskip("lightning.pytorch")

from tests.test_lightning import SCRIPT  # noqa: E402

pytestmark = needs_tmux


def test_watch_lightning_script_shows_its_layers_pauses_and_stops(tmp_path: Path) -> None:
    script, out = tmp_path / "lit.py", tmp_path / "live.h5"
    script.write_text(SCRIPT)
    with watch_in_tmux(f"{script} --out {out} -- 5000 0.05") as (t, pane, workers):
        screen = t.wait_for(
            lambda s: "RUNNING" in s and step_of(s) > 0 and "net.0.w" in s and "net.2.b" in s,
            90,
            "a running header and the module's own layers (net.0.weight ... net.2.bias)",
        )
        assert "Net" in screen
        workers.extend(descendants(pane))
        paused_at = pause_and_resume(t)
        quit_and_stop(t, pane)
        assert descendants(pane) == []
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "stopped"
        assert f.attrs["source"] == "lightning"
        assert paused_at < f["steps/step"].shape[0] < 5000 * 4
        names = [n.decode() if isinstance(n, bytes) else n for n in f["layers/name"][:]]
        assert names == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
