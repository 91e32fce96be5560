"""Atari 100k protocol runner: the main job for every game x seed, scored as the reference scores it.

    python benchmarks/atari100k.py --games pong breakout --seeds 0 1
    python benchmarks/atari100k.py --games pong --seeds 0 --size size12m --steps 100000
    python benchmarks/atari100k.py --games boxing --seeds 0 -- run.train_ratio=64 batch_size=8   # Hydra overrides
    python benchmarks/atari100k.py --all --seeds 0 1 2 3 4                                       # the 26 games

Each run is ``examples/dreamerv3_atari.py env=atari100k env.task=<game> seed=<seed> run.steps=<steps>``
(100k agent steps = 400k frames at action repeat 4) in a subprocess, logging to ``<runs>/<game>_seed<seed>``.
A run counts as complete when the main job exited cleanly and printed ``stopped at N env steps`` with
``N >= steps``; the runner then writes ``atari100k_run.json`` (wall time, steps, command) into the run
directory and skips that run on the next invocation. An interrupted run that left a checkpoint is continued
with ``resume=<run dir>``.

Score of a game (``atari_scores.final_score``): the mean return of the training episodes in the last of 29
equal bins over the logged steps, averaged over seeds, as the reference's ``scores/plot.py`` reports its
published curves (see ``benchmarks/atari_scores.py``). Writes ``results/<name>.md`` and ``results/<name>.csv``:
per game our score (and per seed), the reference's published score (where found), random, human, the
human-normalised score (HNS) and the wall time of each run; then the mean and median HNS.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from atari_scores import (  # noqa: E402
    ATARI100K_GAMES,
    RANDOM_HUMAN,
    REFERENCE_AGGREGATE,
    REFERENCE_DREAMERV3,
    aggregate,
    final_score,
    game_key,
    human_normalized,
)
from torchrl_dreamerv3.training.reporting.report import read_returns_csv  # noqa: E402

DONE_FILE = "atari100k_run.json"
STOPPED = re.compile(r"stopped at (\d+) env steps")


def run_command(game: str, seed: int, steps: int, logdir: Path, size: str | None, threads: int,
                extra: list[str]) -> list[str]:
    """The main job's command line for one game x seed (``resume=`` is added by :func:`run_one`)."""
    size_override = [f"size={size}"] if size else []
    return [sys.executable, str(ROOT / "examples" / "dreamerv3_atari.py"), "env=atari100k", f"env.task={game}",
            *size_override, f"seed={seed}", f"run.steps={steps}", f"logdir={logdir}", f"threads={threads}",
            *extra]


def completed(logdir: Path, steps: int) -> dict | None:
    """The run's record if it finished ``steps`` steps, else ``None``."""
    path = logdir / DONE_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("steps", -1) >= steps else None


def run_one(game: str, seed: int, steps: int, logdir: Path, size: str | None, threads: int,
            extra: list[str]) -> dict:
    """Runs (or continues) one game x seed unless it is complete; returns its record."""
    record = completed(logdir, steps)
    if record is not None:
        print(f"{game} seed {seed}: complete ({record['steps']} steps in {record['wall_s'] / 60:.1f} min), skipped",
              flush=True)
        return record
    cmd = run_command(game, seed, steps, logdir, size, threads, extra)
    resumed = (logdir / "checkpoint").is_dir()
    if resumed:
        cmd.append(f"resume={logdir}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep), "OMP_NUM_THREADS": str(max(threads, 1))}
    print(" ".join(cmd[1:]), flush=True)
    start = time.time()
    returncode, reached, tail = _stream(cmd, env, logdir / "atari100k_stdout.log")
    wall = time.time() - start
    if returncode != 0 or not reached or reached[-1] < steps:
        raise RuntimeError(f"{game} seed {seed} did not finish {steps} steps (exit code {returncode}, "
                           f"reached {reached[-1] if reached else 'unknown'}); output tail:\n" + "\n".join(tail))
    record = {"game": game, "seed": seed, "steps": reached[-1], "wall_s": wall, "resumed": resumed,
              "command": " ".join(cmd[1:])}
    (logdir / DONE_FILE).write_text(json.dumps(record, indent=1))
    print(f"{game} seed {seed}: {reached[-1]} steps in {wall / 60:.1f} min", flush=True)
    return record


def _stream(cmd: list[str], env: dict, log_path: Path) -> tuple[int, list[int], list[str]]:
    """Runs ``cmd``, echoing and appending its output to ``log_path``; returns the exit code, the step counts
    of its ``stopped at N env steps`` lines and its last 15 lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=15)
    reached: list[int] = []
    with open(log_path, "a") as log, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                                       stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            log.write(line)
            sys.stdout.write(line)
            tail.append(line.rstrip())
            reached += [int(n) for n in STOPPED.findall(line)]
    return proc.returncode, reached, list(tail)


def score_game(game: str, logdirs: list[Path]) -> dict:
    """The game's row: our score (mean over seeds and per seed), the reference's, random, human, HNS."""
    runs = []
    for logdir in logdirs:
        path = logdir / "episodes.csv"
        runs.append(read_returns_csv(path) if path.is_file() else ([], []))
    ours = final_score(runs)
    per_seed = [final_score([run]) for run in runs]
    key = game_key(game)
    random, human = RANDOM_HUMAN[key]
    return {"game": key, "score": ours, "per_seed": per_seed, "reference": REFERENCE_DREAMERV3[key],
            "random": random, "human": human, "hns": human_normalized(key, ours) if not math.isnan(ours) else math.nan,
            "episodes": [len(r[1]) for r in runs]}


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "not found"
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def write_tables(rows: list[dict], walls: dict, out: Path, header: str) -> dict:
    """``<out>.md`` and ``<out>.csv``; returns the aggregate HNS."""
    summary = aggregate([row["hns"] for row in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["game", "score", "per_seed", "episodes", "reference_dreamerv3", "random", "human", "hns",
                         "wall_min_per_run"])
        for row in rows:
            writer.writerow([row["game"], row["score"], " ".join(f"{s:.2f}" for s in row["per_seed"]),
                             " ".join(map(str, row["episodes"])),
                             "not found" if row["reference"] is None else row["reference"], row["random"],
                             row["human"], row["hns"], " ".join(f"{w / 60:.1f}" for w in walls[row["game"]])])
    lines = [header, "", "| game | ours | per seed | DreamerV3 (published) | random | human | HNS | wall min per run |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['game']} | {_fmt(row['score'])} | {', '.join(_fmt(s) for s in row['per_seed'])} | "
                     f"{_fmt(row['reference'])} | {row['random']} | {row['human']} | {_fmt(row['hns'], 3)} | "
                     f"{', '.join(f'{w / 60:.1f}' for w in walls[row['game']])} |")
    lines += ["", f"Mean HNS {_fmt(summary['mean_hns'], 3)}, median HNS {_fmt(summary['median_hns'], 3)} "
              f"over {summary['games']} game(s). Reference DreamerV3 over the 26 games: mean "
              f"{REFERENCE_AGGREGATE['mean_hns']}, median {REFERENCE_AGGREGATE['median_hns']} (SPEC §12.2).",
              "", "Score: mean return of the training episodes in the last of 29 equal bins over the logged steps, "
              "averaged over seeds (the reference's scores/plot.py); HNS = (score - random) / (human - random) with "
              "the reference's baselines.yaml (atari57_gamer)."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=["pong"], help="Atari 100k games (e.g. pong kung_fu_master)")
    parser.add_argument("--all", action="store_true", help="the 26 Atari 100k games")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=100_000, help="agent steps per run (100k = 400k frames)")
    parser.add_argument("--size", default=None, help="model size preset (default: the main job's, size=auto)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default="runs/atari100k", help="where the run directories go")
    parser.add_argument("--name", default="atari100k", help="results/<name>.md|csv")
    parser.add_argument("--results", default=str(ROOT / "results"))
    parser.add_argument("extra", nargs="*", help="Hydra overrides passed to every run (after --)")
    args = parser.parse_args(argv)
    games = list(ATARI100K_GAMES) if args.all else [game_key(g) for g in args.games]
    runs = Path(args.runs) if Path(args.runs).is_absolute() else ROOT / args.runs
    rows, walls = [], {}
    for game in games:
        logdirs = [runs / f"{game}_seed{seed}" for seed in args.seeds]
        records = [run_one(game, seed, args.steps, logdir, args.size, args.threads, args.extra)
                   for seed, logdir in zip(args.seeds, logdirs)]
        walls[game] = [r["wall_s"] for r in records]
        rows.append(score_game(game, logdirs))
    header = (f"# Atari 100k: {len(games)} game(s) x seeds {' '.join(map(str, args.seeds))}, {args.steps} agent "
              f"steps, size {args.size or 'auto'}" + (f", overrides {' '.join(args.extra)}" if args.extra else ""))
    summary = write_tables(rows, walls, Path(args.results) / args.name, header)
    print(Path(args.results, args.name + ".md").read_text())
    return {"rows": rows, "walls": walls, **summary}


if __name__ == "__main__":
    main()
