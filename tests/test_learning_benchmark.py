"""The learning benchmark's bookkeeping (benchmarks/learning.py): when a 10-episode mean first reaches the
target, the per-seed summary, and the side-by-side comparison of two result sets."""

import csv

import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def learning():
    return load_benchmark("learning")


def test_first_reach_is_the_step_of_the_episode_that_lifts_the_window_mean(learning):
    steps = [10, 20, 30, 40]
    # windows of 2: means 15, 25, 35 -> the target 25 is first met by the window ending at episode 3 (step 30)
    assert learning.moving_average_first_reach(steps, [10.0, 20.0, 30.0, 40.0], 25.0, window=2) == 30
    assert learning.moving_average_first_reach(steps, [10.0, 20.0, 30.0, 40.0], 35.0, window=2) == 40
    assert learning.moving_average_first_reach(steps, [10.0, 20.0, 30.0, 40.0], 36.0, window=2) is None
    # fewer episodes than the window never count
    assert learning.moving_average_first_reach([5], [1000.0], 1.0, window=10) is None


def _write(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "env_step", "return"])
        writer.writerows(rows)


def test_compare_prints_each_seed_and_the_hit_count(learning, tmp_path, capsys):
    # set "a": seed 0 reaches 450 with its 10th episode (mean of ten 450s), seed 1 never (all 100)
    _write(tmp_path / "a.csv", [(0, 100 * (i + 1), 450.0) for i in range(12)]
           + [(1, 100 * (i + 1), 100.0) for i in range(12)])
    # set "b": one seed, 9 episodes at 500 (one short of a window) then 0: last-10 mean = 9*500/10 = 450
    _write(tmp_path / "b.csv", [(3, 50 * (i + 1), 500.0) for i in range(9)] + [(3, 500, 0.0)])
    learning.compare_results(["a", "b"], 450.0, "a_vs_b", results=tmp_path)
    out = capsys.readouterr().out
    assert "a | seed 0 | 12 | 450.0 | 1000" in out
    assert "a | seed 1 | 12 | 100.0 | not reached" in out
    assert "a: 1 of 2 seeds reached the target; mean last-10 return 275.0" in out
    assert "b | seed 3 | 10 | 450.0 | 500" in out
    assert (tmp_path / "a_vs_b.png").stat().st_size > 1000


def test_compare_names_a_missing_results_file(learning, tmp_path):
    _write(tmp_path / "a.csv", [(0, 10, 1.0)])
    with pytest.raises(SystemExit, match="nope.csv"):
        learning.compare_results(["a", "nope"], 1.0, "x", results=tmp_path)


def test_runs_are_float32_on_every_machine_unless_overridden(learning, tmp_path, monkeypatch):
    """The default precision=auto differs by CPU; the learning runs pin float32 so a command trains the same
    everywhere, and an extra override (after --) still wins."""
    commands = []
    monkeypatch.setattr(learning.subprocess, "run", lambda cmd, **kw: commands.append(cmd))
    learning.run_seed(["env=cartpole"], 0, 10, tmp_path, [], threads=1)
    learning.run_seed(["env=cartpole"], 0, 10, tmp_path, ["precision=auto"], threads=1)
    assert "precision=float32" in commands[0]
    later = commands[1]
    assert later.index("precision=auto") > later.index("precision=float32")  # Hydra: the last value wins
