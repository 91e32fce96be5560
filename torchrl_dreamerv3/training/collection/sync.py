"""Collection in step with learning: one batch, then the updates it earns, in the loop's thread.

The loop drives every collection (this one and :class:`~.parallel.ParallelCollection`) the same way::

    with collection:                                   # starts / stops the collector thread (parallel)
        while True:
            for batch in collection.receive(timeout=1.0):  # sync: collects one batch now
                replay.extend(batch)                   # the caller stores what was collected
            owed = collection.updates_due()            # what the train ratio owes for the steps received
            for _ in range(owed):
                ...one update...
                collection.update_done()
            if not owed and collection.finished:       # total_steps collected and every update done
                break
            with collection.pause():                   # consistent cut for a checkpoint
                for batch in collection.take_collected(): replay.extend(batch)  # parallel: the inbox
                save(...)

Batches come out as ``(envs, time)``; the collection counts their env steps and the episodes that end in
them, and owns the train ratio (its state is the ratio's part of a checkpoint).
"""
from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from tensordict import TensorDictBase

from .ratio import TrainRatio

__all__ = ["SyncCollection", "episodes_in"]


def episodes_in(batch: TensorDictBase) -> list[tuple[float, int]]:
    """(return, length) of every episode that ends in ``batch`` (an EpisodeStream's ``is_last`` rows)."""
    finished = batch["is_last"].squeeze(-1)
    return list(zip(batch["episode_reward"].squeeze(-1)[finished].tolist(),
                    batch["episode_length"].squeeze(-1)[finished].tolist()))


class SyncCollection:
    """One batch per :meth:`receive`, then the updates it earns, in the caller's thread.

    Args:
        collector: an iterable of ``(envs, time)`` (or ``(time,)``) batches, e.g. a TorchRL collector.
        ratio: the run's :class:`TrainRatio`; its state is the ratio's part of a checkpoint.
        ready: whether training may start (replay fill, prefill); updates are owed only once it is true.
        env_steps: env steps already done (a resumed run's counter).
        total_steps: no batch is started once ``env_steps`` reaches it (``run.steps``; None: no end).
    """

    def __init__(self, collector: Iterable, ratio: TrainRatio, *, ready: Callable[[], bool] = lambda: True,
                 env_steps: int = 0, total_steps: int | None = None):
        self.collector, self.ratio, self.ready = collector, ratio, ready
        self.env_steps = int(env_steps)  # received by the caller
        self.collected = self.env_steps  # taken from the collector (parallel: some may wait in the inbox)
        self.total_steps = total_steps
        self.updates = 0
        self._pending = 0  # updates granted by the ratio, not finished yet
        self._episodes: deque = deque()
        self._iterator = None

    @staticmethod
    def _as_streams(batch: TensorDictBase) -> TensorDictBase:
        return batch if batch.batch_dims == 2 else batch.unsqueeze(0)  # (envs, time)

    def _hand_over(self, batches: list[TensorDictBase]) -> Iterator[TensorDictBase]:
        for batch in batches:
            steps = batch.numel()
            # stamped with the env steps at the end of their batch: the learner drains them only after its
            # round, and in parallel mode the collector may have run max_ahead steps further by then
            self._episodes.extend((value, length, self.env_steps + steps) for value, length in episodes_in(batch))
            self.env_steps += steps
            yield batch

    def receive(self, timeout: float | None = None) -> Iterator[TensorDictBase]:
        """The batches collected since the last call, ``(envs, time)``, each counted in ``env_steps`` as it is
        handed over. Sync: collects one batch now (none once ``total_steps`` are collected)."""
        if self.finished:
            return iter(())
        if self._iterator is None:
            self.start()
        batch = self._as_streams(next(self._iterator))
        self.collected += batch.numel()
        return self._hand_over([batch])

    def take_collected(self) -> Iterator[TensorDictBase]:
        """The batches already collected and not handed over yet, without collecting (sync: none; parallel: the
        collector thread's inbox), counted like :meth:`receive`'s."""
        return iter(())

    @property
    def finished(self) -> bool:
        """All ``total_steps`` collected and received (parallel: the collector thread has ended)."""
        return self._collected_all()

    def _collected_all(self) -> bool:
        return self.total_steps is not None and self.collected >= self.total_steps

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

    def updates_due(self) -> int:
        """The updates the train ratio owes for the env steps received (none before ``ready()``)."""
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
