"""Crash drill: SIGKILL the main job at random moments (saves included), resume, and check nothing is lost.

    python benchmarks/crash_drill.py --kills 20                    # CartPole size=debug, saving every round
    python benchmarks/crash_drill.py --kills 5 --steps 1200 --seed 1

Each round starts ``examples/dreamerv3_atari.py`` (``resume=`` after the first), waits until it has saved at
least once more, then kills it with SIGKILL: half the rounds after a random delay, half while a save is
being written (its ``.tmp`` directory exists; a random 0-20 ms later). At the end a clean run finishes the
steps, and the drill checks that

- every resume loaded (the process got past loading: it printed its model line and saved again);
- the replay holds exactly the env steps counted (``info.json`` counters against the replay manifest);
- ``episodes.csv`` has exactly one row per counted episode;
- the update count is what the train ratio owes for the steps kept (replayed from the config).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "dreamerv3_atari.py"
FAST = ["env=cartpole", "size=debug", "batch_size=2", "batch_length=8", "run.train_ratio=32", "run.log_every=0",
        "run.report_every=0", "run.steps_per_collect=8", "run.eval_every=0", "threads=1", "replay.size=20000",
        "checkpoint.replay=true", "run.save_every=0", "device=cpu"]


def _newest(run: Path) -> Path | None:
    steps = sorted((p for p in (run / "checkpoint").glob("step_*") if not p.name.endswith((".tmp", ".old"))),
                   key=lambda p: p.name)
    return steps[-1] if steps else None


def _overrides(run: Path, steps: int, resume: bool, extra: list[str]) -> list[str]:
    return [f"logdir={run}", *FAST, f"run.steps={steps}", *extra] + ([f"resume={run}"] if resume else [])


class _Forked:
    """The main job's ``train(cfg)`` in a forked child (the imports are paid once): for the test-sized drill."""

    def __init__(self, overrides: list[str]):
        import multiprocessing

        self._process = multiprocessing.get_context("fork").Process(target=_forked_main, args=(overrides,))
        self._process.start()
        self.pid = self._process.pid

    def poll(self):
        return self._process.exitcode

    def wait(self, timeout=None):
        self._process.join(timeout)
        return self._process.exitcode

    @property
    def returncode(self):
        return self._process.exitcode

    def communicate(self, timeout=None):
        return "", self.wait(timeout)

    def output(self) -> str:
        return "(forked child: its output went to this process's stdout)"


def _forked_main(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from torchrl_dreamerv3.training import train

    with initialize_config_dir(config_dir=str(ROOT / "torchrl_dreamerv3" / "configs"), version_base=None):
        cfg = compose("config", overrides=overrides)
    train(cfg)


def _launch(run: Path, steps: int, resume: bool, extra: list[str], fork: bool = False):
    if fork:
        return _Forked(_overrides(run, steps, resume, extra))
    args = [sys.executable, str(SCRIPT), *_overrides(run, steps, resume, extra)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _output(proc) -> str:
    return proc.output() if isinstance(proc, _Forked) else proc.stdout.read()


def _kill_round(run: Path, steps: int, resume: bool, rng: random.Random, extra: list[str], fork: bool,
                max_delay: float) -> dict:
    before = _newest(run)
    proc = _launch(run, steps, resume, extra, fork)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _newest(run) == before:
        time.sleep(0.02)  # wait for this process's first save: proof that it loaded and trained on
    if proc.poll() is not None:
        return {"finished": True, "rc": proc.returncode, "out": _output(proc)}
    if rng.random() < 0.5:  # aim at a save: kill while its .tmp directory is being written
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and not any((run / "checkpoint").glob("step_*.tmp")):
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.02))
    else:
        time.sleep(rng.uniform(0.0, max_delay))
    if proc.poll() is not None:
        return {"finished": True, "rc": proc.returncode, "out": _output(proc)}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _output(proc)
    during_save = any((run / "checkpoint").glob("step_*.tmp"))  # a save it had begun and not published
    return {"finished": False, "rc": proc.returncode, "saved": _newest(run).name, "during_save": during_save}


def owed_updates(steps: int, cfg: dict) -> int:
    """Updates the loop runs for ``steps`` env steps: the ratio's first call once a batch fits, then the ratio."""
    from torchrl_dreamerv3.training.collection.ratio import TrainRatio

    ratio = TrainRatio(cfg["train_ratio"], cfg["batch_size"], cfg["batch_length"])
    per_round = cfg["envs"] * cfg["steps_per_collect"]
    min_fill, total, updates = cfg["batch_size"] * cfg["batch_length"], 0, 0
    while total < steps:
        total += per_round
        if total >= min_fill and total // cfg["envs"] > cfg["batch_length"] + 1:
            updates += ratio(total)
    return updates


def check_run(run: Path, cfg: dict) -> dict:
    newest = _newest(run)
    info = json.loads((newest / "info.json").read_text())["counters"]
    manifest = json.loads((newest / "replay" / "manifest.json").read_text())
    rows = sum(1 for _ in open(run / "episodes.csv")) - 1
    result = {"env_steps": info["env_steps"], "replay_rows": manifest["len"], "episodes": info["episodes"],
              "csv_rows": rows, "updates": info["updates"], "owed_updates": owed_updates(info["env_steps"], cfg)}
    problems = [f"replay rows {manifest['len']} != env steps {info['env_steps']}"] * (manifest["len"] != info["env_steps"])
    problems += [f"episodes.csv rows {rows} != episodes {info['episodes']}"] * (rows != info["episodes"])
    problems += [f"updates {info['updates']} != owed {result['owed_updates']}"] * (info["updates"] != result["owed_updates"])
    return {**result, "problems": problems}


def drill(run: Path, kills: int, steps: int, seed: int = 0, extra: list[str] | None = None, fork: bool = False,
          max_delay: float = 1.5, train_ratio: int = 32, log=print) -> dict:
    """``kills`` rounds of start/resume, wait for a save, SIGKILL after ``U(0, max_delay)`` s; then a clean
    final resume and :func:`check_run`. ``fork``: fork the training from this process instead of starting
    the example script (no import cost per round)."""
    rng, extra = random.Random(seed), [f"run.train_ratio={train_ratio}", *(extra or [])]
    rounds = []
    for i in range(kills):
        outcome = _kill_round(run, steps, resume=i > 0, rng=rng, extra=extra, fork=fork, max_delay=max_delay)
        if outcome["finished"]:
            if outcome["rc"] != 0:
                raise AssertionError(f"round {i}: the run failed (rc {outcome['rc']}):\n{outcome['out'][-3000:]}")
            log(f"round {i}: finished before the kill")
            break
        rounds.append(outcome)
        log(f"round {i}: killed after {outcome['saved']}" + (", during a save" if outcome["during_save"] else ""))
    final = _launch(run, steps, resume=bool(rounds), extra=extra, fork=fork)
    out, _ = final.communicate(timeout=600)
    if final.returncode != 0:
        raise AssertionError(f"the final resume failed (rc {final.returncode}):\n{(out or '')[-3000:]}")
    cfg = dict(train_ratio=train_ratio, batch_size=2, batch_length=8, envs=1, steps_per_collect=8)
    result = {**check_run(run, cfg), "kills": len(rounds), "kills_during_save": sum(r["during_save"] for r in rounds)}
    log(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fork", action="store_true", help="fork the training instead of starting the script")
    parser.add_argument("--max-delay", type=float, default=1.5, help="seconds after a save the kill may wait")
    parser.add_argument("--run", type=Path, default=None, help="run directory (default: a temporary one)")
    args = parser.parse_args()
    import tempfile

    run = args.run or Path(tempfile.mkdtemp(prefix="crash_drill_")) / "run"
    started = time.time()
    result = drill(run, args.kills, args.steps, args.seed, fork=args.fork, max_delay=args.max_delay)
    print(f"crash drill: {result['kills']} kills ({result['kills_during_save']} during a save), {result['env_steps']} env steps, {result['updates']} updates "
          f"(owed {result['owed_updates']}), {result['episodes']} episodes, {time.time() - started:.0f} s; "
          + ("OK" if not result["problems"] else "PROBLEMS: " + "; ".join(result["problems"])))
    sys.exit(1 if result["problems"] else 0)


if __name__ == "__main__":
    main()
