"""What a long run shows while it runs: a progress bar, throughput scalars and an estimate of its duration."""
from __future__ import annotations

import time

import tqdm

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """The bar (env steps, env steps/s, updates/s, last return) and one duration estimate.

    The estimate is printed once, after ``estimate_after`` seconds of training (prefill excluded),
    from the env steps per second measured since training began: that rate already includes the
    updates the train ratio asks for, so it is the rate of the rest of the run.
    """

    def __init__(self, total: int, counters: dict, estimate_after: float = 60.0, hint: str = "",
                 disable: bool = False):
        self.total, self.estimate_after, self.hint, self.disable = total, estimate_after, hint, disable
        self.bar = tqdm.tqdm(total=total, initial=counters["env_steps"], unit="step", dynamic_ncols=True,
                             desc="env steps", disable=disable)
        self._since = dict(t=time.time(), steps=counters["env_steps"], updates=counters["updates"])
        self._training_began: tuple[float, int] | None = None
        self.estimate: float | None = None  # seconds left, once printed

    def advance(self, steps: int) -> None:
        self.bar.update(steps)

    def throughput(self, counters: dict) -> dict:
        """Env steps and updates per second since the previous call."""
        now = time.time()
        elapsed = max(now - self._since["t"], 1e-9)
        perf = {"fps": (counters["env_steps"] - self._since["steps"]) / elapsed,
                "ups": (counters["updates"] - self._since["updates"]) / elapsed}
        self._since = dict(t=now, steps=counters["env_steps"], updates=counters["updates"])
        return perf

    def show(self, counters: dict, perf: dict, last_return: float | None) -> None:
        self.bar.set_postfix(updates=counters["updates"], sps=f"{perf['fps']:.0f}", ups=f"{perf['ups']:.2f}",
                             ret=None if last_return is None else f"{last_return:.1f}")

    def training_step(self, counters: dict) -> None:
        """Called after each round with updates: starts the clock, then prints the estimate once."""
        now = time.time()
        if self._training_began is None:
            self._training_began = (now, counters["env_steps"])
            return
        began, steps = self._training_began
        if self.disable or self.estimate is not None or now - began < self.estimate_after or counters["env_steps"] <= steps:
            return
        rate = (counters["env_steps"] - steps) / (now - began)
        self.estimate = max(self.total - counters["env_steps"], 0) / rate
        tqdm.tqdm.write(f"estimated time left: {format_duration(self.estimate)} for "
                        f"{self.total - counters['env_steps']:,} env steps at {rate:.1f} env steps/s "
                        f"(measured over the first {now - began:.0f} s of training). {self.hint}")

    def close(self) -> None:
        self.bar.close()
