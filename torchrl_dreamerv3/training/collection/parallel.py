"""Collection in step with learning (sync) or beside it in a thread (parallel), at the reference's train ratio.

Both classes offer the loop one interface::

    with collection:                                   # starts / stops the collector thread
        while True:
            owed = collection.updates_due(timeout=1.0)  # 0 after the timeout: time to log, check signals
            for _ in range(owed):
                ...one update...
                collection.update_done()
            if not owed and collection.finished:       # total_steps collected and every update done
                break
            with collection.pause():                   # consistent cut for a checkpoint
                save(...)

``SyncCollection.updates_due`` collects one batch, then returns the updates the ratio owes (today's
loop). ``ParallelCollection`` iterates the TorchRL collector in a background thread; ``updates_due``
waits until the ratio owes an update, so the learner never runs ahead of ``run.train_ratio``, and the
collector waits while it is more than ``max_ahead`` env steps ahead of the updates done.

TorchRL's ``Collector(replay_buffer=...).start()`` also collects in a thread, but it offers no
backpressure (it collects as fast as the envs run), no pause between batches, and writes the raw batch
itself (our ``(envs, time)`` routing and per-batch episode stats need the batch), hence this thread.

Weights: the thread calls the same policy module the learner updates, so every update reaches the
acting policy at once (on CUDA both threads' kernels go through the same stream in order; on CPU an
action may read parameters while an optimiser step writes them, which only mixes two consecutive
versions of the weights). Collector processes (``MultiSyncCollector``) instead need TorchRL's weight
updater (``collector.update_policy_weights_()``) at the cadence the loop chooses.
"""
from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable

from tensordict import TensorDictBase

from .ratio import TrainRatio

__all__ = ["SyncCollection", "ParallelCollection", "episodes_in", "use_parallel"]


def episodes_in(batch: TensorDictBase) -> list[tuple[float, int]]:
    """(return, length) of every episode that ends in ``batch`` (an EpisodeStream's ``is_last`` rows)."""
    finished = batch["is_last"].squeeze(-1)
    return list(zip(batch["episode_reward"].squeeze(-1)[finished].tolist(),
                    batch["episode_length"].squeeze(-1)[finished].tolist()))


def use_parallel(setting, device) -> bool:
    """``run.async_collect``: ``auto`` (parallel on CUDA), ``true`` or ``false``."""
    if setting == "auto":
        return device.type == "cuda"
    if setting in (True, False):
        return setting
    raise ValueError(f"run.async_collect must be auto, true or false, got {setting!r}")


class SyncCollection:
    """One batch, then the updates it earns, in the caller's thread.

    Args:
        collector: an iterable of ``(envs, time)`` (or ``(time,)``) batches, e.g. a TorchRL collector.
        write: called with each batch as ``(envs, time)``; writes it to the replay (may raise, e.g.
            on NaNs: the error reaches the loop).
        ratio: the run's :class:`TrainRatio`; its state is the ratio's part of a checkpoint.
        ready: whether training may start (replay fill, prefill); updates are owed only once it is true.
        env_steps: env steps already done (a resumed run's counter).
        total_steps: no batch is started once ``env_steps`` reaches it (``run.steps``; None: no end).
    """

    def __init__(self, collector: Iterable, write: Callable[[TensorDictBase], None], ratio: TrainRatio, *,
                 ready: Callable[[], bool] = lambda: True, env_steps: int = 0, total_steps: int | None = None):
        self.collector, self.write, self.ratio, self.ready = collector, write, ratio, ready
        self.env_steps = int(env_steps)
        self.total_steps = total_steps
        self.updates = 0
        self._pending = 0  # updates granted by the ratio, not finished yet
        self._episodes: deque = deque()
        self._iterator = None

    def _consume(self, batch: TensorDictBase) -> int:
        batch = batch if batch.batch_dims == 2 else batch.unsqueeze(0)  # (envs, time)
        self.write(batch)
        # stamped with the env steps at the end of their batch: the learner drains them only after its round,
        # and in parallel mode the collector may have run max_ahead steps further by then
        steps = batch.numel()
        self._episodes.extend((value, length, self.env_steps + steps) for value, length in episodes_in(batch))
        return steps

    @property
    def finished(self) -> bool:
        """All ``total_steps`` collected (parallel: the collector thread has ended)."""
        return self._collected_all()

    def _collected_all(self) -> bool:
        return self.total_steps is not None and self.env_steps >= self.total_steps

    def episodes(self) -> list[tuple[float, int, int]]:
        """The (return, length, env steps at the end of its batch) of episodes finished since the last call,
        oldest first."""
        out = []
        while self._episodes:
            out.append(self._episodes.popleft())
        return out

    def start(self):
        self._iterator = iter(self.collector)
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._iterator = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def updates_due(self, timeout: float | None = None) -> int:
        if self.finished:
            return 0
        if self._iterator is None:
            self.start()
        self.env_steps += self._consume(next(self._iterator))
        owed = self.ratio(self.env_steps) if self.ready() else 0
        self._pending += owed
        return owed

    def update_done(self, count: int = 1) -> None:
        self._pending = max(self._pending - count, 0)
        self.updates += count

    def _return_pending(self) -> None:
        """A loop interrupted mid-round: the ratio owes the unfinished updates again later."""
        if self._pending:
            self.ratio.refund(self._pending)
            self._pending = 0

    @contextlib.contextmanager
    def pause(self):
        """Nothing runs between batches in sync mode; only unfinished updates go back to the ratio."""
        self._return_pending()
        yield self


class ParallelCollection(SyncCollection):
    """The collector runs in a daemon thread; the learner takes updates as the train ratio grants them.

    Invariants (``r`` = updates per env step of ``ratio``): the learner is never granted more updates than
    the ratio owes for the env steps written so far; the collector starts no new batch while the env
    steps not yet paid for by finished updates exceed ``max_ahead`` (so at most ``max_ahead`` plus one
    batch). ``max_ahead`` must be at least ``1 / r``: the learner pays in whole updates.

    ``round_updates`` caps the updates granted per call (the loop logs, evaluates and saves between calls);
    the rest stays owed to the next call.

    ``pause()`` waits for the batch in flight to be written and holds the thread there, and returns
    granted but unfinished updates to the ratio: inside it, replay rows == ``env_steps`` and the
    ratio's state matches ``updates``, a consistent cut for a checkpoint.
    """

    def __init__(self, collector: Iterable, write: Callable[[TensorDictBase], None], ratio: TrainRatio, *,
                 max_ahead: int, round_updates: int | None = None, ready: Callable[[], bool] = lambda: True,
                 env_steps: int = 0, total_steps: int | None = None):
        super().__init__(collector, write, ratio, ready=ready, env_steps=env_steps, total_steps=total_steps)
        if max_ahead < 1.0 / ratio.ratio:
            raise ValueError(f"run.max_ahead={max_ahead} env steps is less than one update's worth "
                             f"({1.0 / ratio.ratio:g} env steps at this train ratio); the collector would wait forever")
        if round_updates is not None and round_updates < 1:
            raise ValueError(f"round_updates must be >= 1, got {round_updates}")
        self.max_ahead = max_ahead
        self.round_updates = round_updates
        self._cond = threading.Condition()
        self._paused = self._parked = self._stopping = self._finished = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def finished(self) -> bool:
        return self._finished

    def lag(self) -> float:
        """Env steps written but not yet paid for by finished updates (0 before training starts)."""
        if self.ratio.prev is None:
            return 0.0
        return self.env_steps - self.ratio.prev + self._pending / self.ratio.ratio

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
                steps = self._consume(batch)
                with self._cond:
                    self.env_steps += steps
                    self._cond.notify_all()
        except BaseException as error:  # handed to the learner's thread by updates_due
            with self._cond:
                self._error = error
        finally:
            with self._cond:
                self._finished = self._parked = True
                self._cond.notify_all()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError("the collector thread failed") from self._error

    def updates_due(self, timeout: float | None = None) -> int:
        """Blocks until the ratio owes at least one update (returns how many, at most ``round_updates``) or
        ``timeout`` s pass (0)."""
        self.start()
        with self._cond:
            while True:
                self._raise_if_failed()
                if self.ready():
                    owed = self.ratio(self.env_steps)
                    if self.round_updates is not None and owed > self.round_updates:
                        # the rest stays owed: a round of max_ahead's worth of updates (hundreds on small
                        # tasks) would hold back logging, evaluation and checkpoints for minutes
                        self.ratio.refund(owed - self.round_updates)
                        owed = self.round_updates
                    if owed:
                        self._pending += owed
                        return owed
                if self._finished or not self._cond.wait(timeout):
                    return 0

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
