"""SIGINT/SIGTERM as a request: the loop finishes the update in flight, saves and exits."""
from __future__ import annotations

import signal

import tqdm

__all__ = ["StopRequest"]


class StopRequest:
    """A context manager whose ``requested`` turns true on the first SIGINT/SIGTERM; a second one exits now."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.tqdm.write(f"signal {signum}: finishing the current step, saving a checkpoint, then exiting")

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
