"""Train ratio: how many updates to run as env steps come in (SPEC §9, ``elements.when.Ratio``)."""
from __future__ import annotations

__all__ = ["TrainRatio"]


class TrainRatio:
    """Updates per env step = ``train_ratio / (batch_size * batch_length)``, with a fractional carry.

    ``train_ratio`` counts trained time steps (context excluded) per env step summed over envs.
    The first call returns 1; afterwards ``int((step - prev) * ratio)`` updates, and ``prev``
    advances by exactly the steps those updates account for, so no fraction is lost.

    Examples:
        >>> ratio = TrainRatio(train_ratio=256, batch_size=16, batch_length=64)  # 1 update / 4 steps
        >>> [ratio(step) for step in (1024, 1025, 1027, 1028, 1040)]
        [1, 0, 0, 1, 3]
        >>> ratio(1052, at_most=2), ratio(1052)  # 3 owed: 2 now, 1 left owed
        (2, 1)
    """

    def __init__(self, train_ratio: float, batch_size: int, batch_length: int):
        if train_ratio <= 0:
            raise ValueError(f"train_ratio must be > 0, got {train_ratio}")
        self.ratio = train_ratio / (batch_size * batch_length)
        self.prev: float | None = None

    def __call__(self, step: int, at_most: int | None = None) -> int:
        """The updates owed at env step ``step``, counted as run; ``at_most`` caps them and the rest stays
        owed (the next call returns it)."""
        if self.prev is None:
            self.prev = step
            return 1
        repeats = int((step - self.prev) * self.ratio)
        if at_most is not None:
            repeats = min(repeats, at_most)
        self.prev += repeats / self.ratio
        return repeats

    def due(self, step: int) -> int:
        """What ``self(step)`` would return, without counting it."""
        return 1 if self.prev is None else int((step - self.prev) * self.ratio)

    def refund(self, updates: int) -> None:
        """Gives back ``updates`` that were counted but not run (a stop request ended the round early)."""
        if self.prev is not None:
            self.prev -= updates / self.ratio

    def restart(self) -> None:
        """Forgets the accounting: the next call starts it afresh (1 update, then the ratio from there).

        For a resume without the saved replay: the steps that refill the buffer must not be owed as a
        burst of updates once it holds a batch again. (Restarting at the resume step would not do: the
        restored ``prev`` already is about the resume step; the burst is the refill itself.)
        """
        self.prev = None

    def state_dict(self) -> dict:
        return {"prev": self.prev}

    def load_state_dict(self, state: dict) -> None:
        self.prev = state["prev"]
