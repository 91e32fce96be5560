"""Collection beside learning: a collector thread, held at the reference's train ratio.

The loop drives it as it drives :class:`~.sync.SyncCollection` (see there): ``receive`` hands over the
batches the thread collected meanwhile (waiting up to ``timeout`` when there are none and no update is
owed), the loop stores them in the replay, and ``updates_due`` grants what the train ratio owes for them.
The thread collects until it is more than ``max_ahead`` env steps ahead of the updates done, so the
learner never runs ahead of ``run.train_ratio`` and the collector never runs far ahead of the learner.

TorchRL's ``Collector(replay_buffer=...).start()`` also collects in a thread, but it offers no
backpressure (it collects as fast as the envs run), no pause between batches, and writes the raw batch
itself (our ``(envs, time)`` routing and per-batch episode stats need the batch), hence this thread. The
thread only collects: every batch reaches the replay in the loop's thread, where the loop shows it.

Weights: the thread calls the same policy module the learner updates, so every update reaches the
acting policy at once (on CUDA both threads' kernels go through the same stream in order; on CPU an
action may read parameters while an optimiser step writes them, which only mixes two consecutive
versions of the weights). Collector processes (``MultiSyncCollector``) instead need TorchRL's weight
updater (``collector.update_policy_weights_()``) at the cadence the loop chooses.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator

from tensordict import TensorDictBase

from .ratio import TrainRatio
from .sync import SyncCollection

__all__ = ["ParallelCollection"]


class ParallelCollection(SyncCollection):
    """The collector runs in a daemon thread; the learner takes updates as the train ratio grants them.

    Invariants (``r`` = updates per env step of ``ratio``): the learner is never granted more updates than
    the ratio owes for the env steps received so far; the collector starts no new batch while the env
    steps collected but not yet paid for by finished updates exceed ``max_ahead`` (so at most ``max_ahead``
    plus one batch). ``max_ahead`` must be at least ``1 / r``: the learner pays in whole updates.

    ``round_updates`` caps the updates granted per call (the loop logs, evaluates and saves between calls);
    the rest stays owed to the next call.

    ``pause()`` waits for the batch in flight to reach the inbox and holds the thread there, and returns
    granted but unfinished updates to the ratio: once the caller has taken the inbox inside it (``take_collected``), replay
    rows == ``env_steps`` and the ratio's state matches ``updates``, a consistent cut for a checkpoint.
    """

    def __init__(self, collector: Iterable, ratio: TrainRatio, *, max_ahead: int, round_updates: int | None = None,
                 ready: Callable[[], bool] = lambda: True, env_steps: int = 0, total_steps: int | None = None):
        super().__init__(collector, ratio, ready=ready, env_steps=env_steps, total_steps=total_steps)
        if max_ahead < 1.0 / ratio.ratio:
            raise ValueError(f"run.max_ahead={max_ahead} env steps is less than one update's worth "
                             f"({1.0 / ratio.ratio:g} env steps at this train ratio); the collector would wait forever")
        if round_updates is not None and round_updates < 1:
            raise ValueError(f"round_updates must be >= 1, got {round_updates}")
        self.max_ahead = max_ahead
        self.round_updates = round_updates
        self._cond = threading.Condition()
        self._inbox: list[TensorDictBase] = []  # collected, not yet received
        self._paused = self._parked = self._stopping = self._thread_done = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def finished(self) -> bool:
        return self._thread_done and not self._inbox

    def lag(self) -> float:
        """Env steps collected but not yet paid for by finished updates (0 before training starts)."""
        if self.ratio.prev is None:
            return 0.0
        return self.collected - self.ratio.prev + self._pending / self.ratio.ratio

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dreamer-collector", daemon=True)
            self._thread.start()
        return self

    def _wait_for_turn(self) -> bool:
        with self._cond:
            while not self._stopping and (self._paused or self.lag() > self.max_ahead):
                self._parked = True
                self._cond.notify_all()
                self._cond.wait()
            self._parked = False
            return not self._stopping

    def _run(self) -> None:
        try:
            iterator = iter(self.collector)
            while self._wait_for_turn() and not self._collected_all():
                batch = next(iterator, None)
                if batch is None:  # a finite collector ran out
                    return
                batch = self._as_streams(batch)
                with self._cond:
                    self._inbox.append(batch)
                    self.collected += batch.numel()
                    self._cond.notify_all()
        except BaseException as error:  # handed to the learner's thread by receive / updates_due
            with self._cond:
                self._error = error
        finally:
            with self._cond:
                self._thread_done = self._parked = True
                self._cond.notify_all()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError("the collector thread failed") from self._error

    def _owes(self) -> bool:
        return self.ready() and self.ratio.due(self.env_steps) > 0

    def receive(self, timeout: float | None = None) -> Iterator[TensorDictBase]:
        """The batches the thread collected since the last call; with none and no update owed, waits up to
        ``timeout`` s for one (none: time to log, check signals)."""
        self.start()
        with self._cond:
            self._raise_if_failed()
            if not self._inbox and not self._thread_done and not self._owes():
                self._cond.wait(timeout)
        return self.take_collected()

    def take_collected(self) -> Iterator[TensorDictBase]:
        with self._cond:
            self._raise_if_failed()
            batches, self._inbox = self._inbox, []
        return self._hand_over(batches)

    def updates_due(self) -> int:
        """The updates the ratio owes for the env steps received, at most ``round_updates``."""
        with self._cond:
            self._raise_if_failed()
            if not self.ready():
                return 0
            # capped, the rest staying owed: a round of max_ahead's worth of updates (hundreds on small
            # tasks) would hold back logging, evaluation and checkpoints for minutes
            owed = self.ratio(self.env_steps, at_most=self.round_updates)
            self._pending += owed
            return owed

    def update_done(self, count: int = 1) -> None:
        with self._cond:
            self._pending = max(self._pending - count, 0)
            self.updates += count
            self._cond.notify_all()

    @contextlib.contextmanager
    def pause(self):
        with self._cond:
            self._paused = True
            self._cond.notify_all()
            while self._thread is not None and not self._parked:
                self._cond.wait()
            self._return_pending()
        try:
            yield self
        finally:
            with self._cond:
                self._paused = False
                self._cond.notify_all()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Lets the batch in flight finish, then ends the thread (the caller shuts the collector down)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._raise_if_failed()
