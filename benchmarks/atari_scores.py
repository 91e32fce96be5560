"""Atari 100k score tables and the scoring math of ``benchmarks/atari100k.py``.

Random and human scores: the reference's own normaliser, ``baselines.yaml`` of danijar/dreamerv3
(block ``atari57_gamer``: ``atari_<game>: [random, human]``; read at commit f8817c4). For the 26
Atari 100k games these are the numbers of the Atari 100k literature's table (random: Mnih et al.
2015, human: the DQN "human gamer" scores as tabulated by Wang et al. 2016, used by SimPLe, SPR,
IRIS and DreamerV3), so the human-normalised score (HNS) here is the one those papers report.

Reference DreamerV3 per-game scores: the published per-run curves are
``scores/atari100k-dreamerv3.json.gz`` (danijar/dreamerv3, commit 2411f7d; also
``scores/data/atari100k_dreamerv3.json.gz``, commit 423291a). They are gzip'd JSON and could not be
read with the tools of this project, and no per-game table of the paper was retrievable, so every
per-game reference score is ``None`` (shown as "not found"). What is known, from SPEC §12.2, which
recomputed it from that file: mean HNS 1.168, median HNS 0.470 over the 26 games (5 seeds, last bin).

Scoring protocol (:func:`final_score`), as the reference reports Atari 100k: the score files hold
the returns of the *training* episodes (the stochastic policy; ``xs`` = the logged step of each
finished episode, ``ys`` = its return), and the reference's ``scores/plot.py`` (``binning`` and the
loop after it, commit 423291a) cuts ``[lo, hi]`` (the smallest and largest logged step of the game's
runs, over seeds) with ``np.linspace(lo, hi, 30)`` into 29 equal bins, averages the returns of the
episodes in each bin (a bin holds ``start < x <= stop``; an empty bin repeats the previous bin,
``fill='last'``), averages each bin over seeds, and the headline number is the last bin (SPEC §12.2).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = [
    "ATARI100K_GAMES",
    "RANDOM_HUMAN",
    "REFERENCE_DREAMERV3",
    "REFERENCE_AGGREGATE",
    "BINS",
    "game_key",
    "human_normalized",
    "binned_returns",
    "final_score",
    "aggregate",
]

# game -> (random, human); danijar/dreamerv3 baselines.yaml, atari57_gamer, the 26 Atari 100k games
RANDOM_HUMAN: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7),
    "amidar": (5.8, 1719.5),
    "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3),
    "bank_heist": (14.2, 753.1),
    "battle_zone": (2360.0, 37187.5),
    "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5),
    "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4),
    "demon_attack": (152.1, 1971.0),
    "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7),
    "gopher": (257.6, 2412.5),
    "hero": (1027.0, 30826.4),
    "jamesbond": (29.0, 302.8),
    "kangaroo": (52.0, 3035.0),
    "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3),
    "ms_pacman": (307.3, 6951.6),
    "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3),
    "qbert": (163.9, 13455.0),
    "road_runner": (11.5, 7845.0),
    "seaquest": (68.4, 42054.7),
    "up_n_down": (533.4, 11693.2),
}
ATARI100K_GAMES = tuple(RANDOM_HUMAN)
# Per-game DreamerV3 Atari 100k scores: not found (see the module docstring); None = not found.
REFERENCE_DREAMERV3: dict[str, float | None] = {game: None for game in ATARI100K_GAMES}
# SPEC §12.2, recomputed from scores/atari100k-dreamerv3.json.gz with the protocol above.
REFERENCE_AGGREGATE = {"mean_hns": 1.168, "median_hns": 0.470}
BINS = 29  # np.linspace(lo, hi, 30) in the reference's scores/plot.py: 30 borders, 29 bins


def game_key(game: str) -> str:
    """``"KungFuMaster"``, ``"kung_fu_master"``, ``"atari_kung_fu_master"`` -> ``"kung_fu_master"``."""
    name = game.lower().removeprefix("atari_").replace("_", "").replace("-", "")
    for key in RANDOM_HUMAN:
        if key.replace("_", "") == name:
            return key
    raise ValueError(f"unknown Atari 100k game {game!r}; valid: {', '.join(ATARI100K_GAMES)}")


def human_normalized(game: str, score: float) -> float:
    """(score - random) / (human - random) with the table's numbers for ``game``."""
    random, human = RANDOM_HUMAN[game_key(game)]
    return (score - random) / (human - random)


def binned_returns(steps: Sequence[float], returns: Sequence[float], lo: float, hi: float,
                   bins: int = BINS) -> list[float]:
    """Mean return per bin of ``bins`` equal bins over ``[lo, hi]``.

    A bin holds the episodes with ``start < step <= stop`` (so, as in the reference, an episode at
    exactly ``lo`` falls into no bin); an empty bin repeats the previous one (``nan`` while there is none).
    """
    if len(steps) != len(returns):
        raise ValueError(f"steps and returns differ in length: {len(steps)} != {len(returns)}")
    if not hi > lo:
        raise ValueError(f"the bins need hi > lo, got lo={lo}, hi={hi}")
    borders = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    borders[-1] = hi  # no rounding loss at the end: the last episode must fall into the last bin
    values: list[float] = []
    for start, stop in zip(borders[:-1], borders[1:]):
        inside = [r for s, r in zip(steps, returns) if start < s <= stop]
        if inside:
            values.append(sum(inside) / len(inside))
        else:
            values.append(values[-1] if values else math.nan)
    return values


def final_score(runs: Sequence[tuple[Sequence[float], Sequence[float]]], bins: int = BINS) -> float:
    """The reference's Atari 100k score of one game: the last bin, averaged over its runs (seeds).

    ``runs``: one ``(episode steps, episode returns)`` per seed. ``lo`` / ``hi`` are the smallest and
    largest episode step over all runs, as ``scores/plot.py`` takes them; a run without episodes counts
    as ``nan`` and is left out of the mean (``nan`` if no run has one).
    """
    all_steps = [s for steps, _ in runs for s in steps]
    if not all_steps:
        return math.nan
    lo, hi = min(all_steps), max(all_steps)
    if hi == lo:  # a single logged step: the reference's bins would be empty; its episodes are the score
        finals = [sum(r) / len(r) for _, r in runs if r]
    else:
        finals = [binned_returns(s, r, lo, hi, bins)[-1] for s, r in runs if s]
    finals = [f for f in finals if not math.isnan(f)]
    return sum(finals) / len(finals) if finals else math.nan


def aggregate(hns: Sequence[float]) -> dict[str, float]:
    """Mean and median of the finite human-normalised scores (``nan`` when there is none)."""
    finite = [h for h in hns if not math.isnan(h)]
    if not finite:
        return {"mean_hns": math.nan, "median_hns": math.nan, "games": 0}
    return {"mean_hns": sum(finite) / len(finite), "median_hns": statistics.median(finite), "games": len(finite)}
