"""A sink that keeps every event, for tests of the monitor and the probes."""

from __future__ import annotations

from tuitrain.events import StepBatch


class Recorder:
    def __init__(self) -> None:
        self.events: list = []

    def emit(self, event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass

    def batches(self) -> list[StepBatch]:
        return [e for e in self.events if isinstance(e, StepBatch)]
