"""Sources deliver batched messages from a reader thread; importing the UI never loads torch."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import threading
import time

from fake_events import fake_run

from tuitrain.events import EventBatch, RunFinished, StatusChanged
from tuitrain.ui.source import EventsArrived, ListSource, LiveSource, QueueControl, SourceEnded


class Collector:
    """A message target that records what a source posted (post_message is all a source may call)."""

    def __init__(self) -> None:
        self.messages = []
        self.threads = set()
        self.done = threading.Event()

    def post_message(self, message) -> bool:
        self.messages.append(message)
        self.threads.add(threading.current_thread().name)
        if isinstance(message, SourceEnded):
            self.done.set()
        return True

    def events(self):
        return [e for m in self.messages if isinstance(m, EventsArrived) for e in m.events]


def test_live_source_batches_a_multiprocessing_queue_until_run_finished():
    q = mp.Queue()
    events = fake_run(epochs=1, steps_per_epoch=60, batch_steps=5)
    target = Collector()
    src = LiveSource(q, batch_seconds=0.1)
    src.start(target)
    t0 = time.monotonic()
    for i in range(0, len(events), 3):
        q.put(EventBatch(events[i : i + 3], dropped_steps=1 if i == 0 else 0))
        time.sleep(0.01)
    assert target.done.wait(5.0)
    src.stop()
    got = target.events()
    assert [type(e) for e in got] == [type(e) for e in events]
    assert isinstance(got[-1], RunFinished)
    batches = [m for m in target.messages if isinstance(m, EventsArrived)]
    # ~100 ms batches: far fewer messages than queue items
    assert len(batches) <= (time.monotonic() - t0) / 0.1 + 2
    assert len(batches) < len(range(0, len(events), 3))
    assert sum(m.dropped_steps for m in batches) == 1
    assert target.threads == {"tuitrain-LiveSource"}  # posted from the reader thread, not the caller
    q.close()
    q.join_thread()


def test_live_source_ends_on_sentinel_and_stops_promptly():
    q = mp.Queue()
    target = Collector()
    src = LiveSource(q)
    src.start(target)
    q.put(StatusChanged("running", 0))
    q.put(None)
    assert target.done.wait(3.0)
    assert [type(e) for e in target.events()] == [StatusChanged]
    # an idle source stops within its poll timeout
    q2 = mp.Queue()
    src2 = LiveSource(q2)
    src2.start(Collector())
    t0 = time.monotonic()
    src2.stop()
    assert time.monotonic() - t0 < 1.0 and not src2.running
    q.close()
    q2.close()


def test_list_source_delivers_everything_at_start_or_paced():
    events = fake_run(epochs=1, steps_per_epoch=20)
    target = Collector()
    ListSource(events).start(target)
    assert len(target.messages) == 1 and target.events() == events
    target = Collector()
    src = ListSource(events, chunk=4, interval=0.01)
    src.start(target)
    assert target.done.wait(3.0)
    assert target.events() == events and len(target.messages) > 2
    src.feed([StatusChanged("paused", 3)])
    assert isinstance(target.messages[-1], EventsArrived)


def test_queue_control_puts_commands():
    q = mp.Queue()
    QueueControl(q).send("pause")
    assert q.get(timeout=2) == "pause"
    q.close()


def test_history_needs_no_textual():
    code = "import sys, tuitrain.ui.history; sys.exit(1 if 'textual' in sys.modules else 0)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_importing_the_ui_does_not_load_torch():
    code = (
        "import sys, tuitrain.ui.app, tuitrain.ui.source, tuitrain.ui.history;"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
