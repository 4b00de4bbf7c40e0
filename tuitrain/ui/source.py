"""Where the dashboard's events come from: one interface, several sources.

A source delivers a run's events to the app as :class:`EventsArrived` messages, each holding about
``batch_seconds`` (100 ms) of events, and one :class:`SourceEnded` when nothing more will come. Sources
never touch widgets: a reader thread calls ``target.post_message`` (thread-safe) and the app's handler
does the rest on the UI thread.

* :class:`LiveSource` drains the ``multiprocessing.Queue`` a training worker fills with
  :class:`~tuitrain.events.EventBatch` items.
* :class:`ListSource` replays a list of events (tests, snapshots, demos); more can be fed later.
* A ``FileSource`` (replay / follow an HDF5 run file) implements the same :class:`ThreadedSource`
  hook, :meth:`ThreadedSource.read`, and nothing else.
"""

from __future__ import annotations

import queue as queue_mod
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, Protocol

from textual.message import Message

from tuitrain.events import Event, EventBatch, RunFinished


class EventsArrived(Message):
    """A batch of events, in order, for the app to append to its history."""

    def __init__(self, events: list[Event], dropped_steps: int = 0) -> None:
        super().__init__()
        self.events = events
        self.dropped_steps = dropped_steps


class SourceEnded(Message):
    """The source will deliver nothing more (queue closed, RunFinished seen, file fully replayed)."""

    def __init__(self, reason: str = "") -> None:
        super().__init__()
        self.reason = reason


class MessageTarget(Protocol):
    def post_message(self, message: Message) -> bool: ...


class Source(ABC):
    """Delivers a run's events to ``target`` as :class:`EventsArrived` / :class:`SourceEnded`.

    ``live`` says whether a training process is behind it (the app then offers pause/stop).
    """

    live: bool = False
    description: str = ""

    @abstractmethod
    def start(self, target: MessageTarget) -> None:
        """Begin delivering. Must return promptly."""

    @abstractmethod
    def stop(self) -> None:
        """Stop delivering and release resources. Idempotent; safe from the UI thread."""


class ThreadedSource(Source):
    """A reader thread that calls :meth:`read` and coalesces what it returns into ~``batch_seconds``
    messages. Subclasses implement :meth:`read` only."""

    def __init__(self, batch_seconds: float = 0.1) -> None:
        self.batch_seconds = batch_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._target: MessageTarget | None = None

    @abstractmethod
    def read(self, timeout: float) -> tuple[list[Event], int] | None:
        """Return the events available within ``timeout`` seconds (possibly none) and the number of
        steps the sender dropped, or None when the source is exhausted for good."""

    def start(self, target: MessageTarget) -> None:
        self._target = target
        self._thread = threading.Thread(
            target=self._loop, name=f"tuitrain-{type(self).__name__}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=1.0)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        target = self._target
        assert target is not None
        pending: list[Event] = []
        dropped = 0
        deadline = 0.0
        reason = ""
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = max(0.005, deadline - now) if pending else self.batch_seconds
                got = self.read(timeout)
                if got is None:
                    reason = "end of source"
                    break
                events, d = got
                if events or d:
                    if not pending and not dropped:
                        deadline = time.monotonic() + self.batch_seconds
                    pending.extend(events)
                    dropped += d
                if (pending or dropped) and time.monotonic() >= deadline:
                    target.post_message(EventsArrived(pending, dropped))
                    pending, dropped = [], 0
        except Exception as e:  # a broken pipe must not kill the app: say so and end
            reason = f"source error: {type(e).__name__}: {e}"
        if pending or dropped:
            target.post_message(EventsArrived(pending, dropped))
        if not self._stop.is_set():
            target.post_message(SourceEnded(reason))


class LiveSource(ThreadedSource):
    """Drains a ``multiprocessing.Queue`` of :class:`EventBatch` (or bare events; ``None`` ends it).

    Ends after a :class:`RunFinished` has been delivered, or when the queue breaks (the other end
    died and the pipe closed).
    """

    live = True

    def __init__(self, q: Any, batch_seconds: float = 0.1, max_items: int = 256) -> None:
        super().__init__(batch_seconds)
        self.queue = q
        self.max_items = max_items
        self.description = "live"
        self._done = False

    def read(self, timeout: float) -> tuple[list[Event], int] | None:
        if self._done:
            return None
        events: list[Event] = []
        dropped = 0
        try:
            item = self.queue.get(timeout=timeout)
        except queue_mod.Empty:
            return events, 0
        except (EOFError, OSError, ValueError):
            return None
        items = [item]
        for _ in range(self.max_items):
            try:
                items.append(self.queue.get_nowait())
            except queue_mod.Empty:
                break
            except (EOFError, OSError, ValueError):
                self._done = True
                break
        for it in items:
            if it is None:
                self._done = True
                break
            if isinstance(it, EventBatch):
                events.extend(it.events)
                dropped += it.dropped_steps
            else:
                events.append(it)
        if any(isinstance(e, RunFinished) for e in events):
            self._done = True
        return events, dropped


class QueueControl:
    """The control channel to a training worker: ``send("pause" | "resume" | "stop")`` puts the
    command on a ``multiprocessing.Queue`` without blocking the UI (a full or closed queue raises,
    and the app reports it)."""

    def __init__(self, q: Any) -> None:
        self.queue = q

    def send(self, cmd: str) -> None:
        self.queue.put_nowait(cmd)


class ListSource(Source):
    """Replays a list of events: all at once when started (deterministic, for tests and snapshots),
    or paced in chunks of ``chunk`` events every ``interval`` seconds. :meth:`feed` posts more events
    later (from any thread)."""

    live = False

    def __init__(
        self, events: Iterable[Event] = (), *, chunk: int = 0, interval: float = 0.0, live: bool = False
    ) -> None:
        self.events = list(events)
        self.chunk = chunk
        self.interval = interval
        self.live = live
        self.description = "replay"
        self._target: MessageTarget | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, target: MessageTarget) -> None:
        self._target = target
        if self.interval <= 0 or self.chunk <= 0:
            if self.events:
                target.post_message(EventsArrived(list(self.events)))
            return
        self._thread = threading.Thread(target=self._pace, name="tuitrain-ListSource", daemon=True)
        self._thread.start()

    def _pace(self) -> None:
        assert self._target is not None
        for i in range(0, len(self.events), self.chunk):
            if self._stop.wait(self.interval if i else 0.0):
                return
            self._target.post_message(EventsArrived(self.events[i : i + self.chunk]))
        self._target.post_message(SourceEnded("end of list"))

    def feed(self, events: Iterable[Event], dropped_steps: int = 0) -> None:
        """Deliver more events now (after :meth:`start`)."""
        if self._target is None:
            self.events.extend(events)
            return
        self._target.post_message(EventsArrived(list(events), dropped_steps))

    def end(self, reason: str = "end of list") -> None:
        if self._target is not None:
            self._target.post_message(SourceEnded(reason))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
