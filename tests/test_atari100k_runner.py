"""The Atari 100k runner (benchmarks/atari100k.py): scoring math against hand-computed values, and one
short end-to-end run of the main job through the runner (Breakout: a random episode lasts ~200 steps)."""

import csv
import math

import pytest
from benchmark_scripts import load_benchmark


def _load(name):
    return load_benchmark(name)


scores = _load("atari_scores")


def test_table_has_the_26_games_with_the_reference_numbers():
    assert len(scores.ATARI100K_GAMES) == 26
    assert scores.RANDOM_HUMAN["pong"] == (-20.7, 14.6)
    assert scores.RANDOM_HUMAN["kung_fu_master"] == (258.5, 22736.3)
    assert all(scores.REFERENCE_DREAMERV3[g] is None for g in scores.ATARI100K_GAMES)  # not found, not guessed


@pytest.mark.parametrize("name", ["KungFuMaster", "kung_fu_master", "atari_kung_fu_master", "kungfumaster"])
def test_game_names_normalise(name):
    assert scores.game_key(name) == "kung_fu_master"


def test_unknown_game_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown Atari 100k game 'tetris'.*pong"):
        scores.game_key("tetris")


def test_human_normalized_score():
    assert scores.human_normalized("pong", -20.7) == 0.0
    assert scores.human_normalized("pong", 14.6) == pytest.approx(1.0)
    assert scores.human_normalized("breakout", 16.1) == pytest.approx(14.4 / 28.8)  # (16.1 - 1.7) / (30.5 - 1.7)
    assert scores.human_normalized("boxing", 78.0) == pytest.approx(77.9 / 12.0)


def test_bins_hold_start_exclusive_stop_inclusive_and_fill_with_the_last():
    # 29 bins of width 1 over [0, 29]: bin i holds steps in (i, i + 1]
    values = scores.binned_returns([1, 1, 3, 29], [2.0, 4.0, 10.0, 7.0], lo=0, hi=29)
    assert len(values) == 29
    assert values[0] == 3.0 and values[1] == 3.0  # empty bin (1, 2] repeats (0, 1]
    assert values[2] == 10.0 and values[27] == 10.0
    assert values[28] == 7.0
    first = scores.binned_returns([0, 29], [100.0, 5.0], lo=0, hi=29)
    assert math.isnan(first[0]) and first[-1] == 5.0  # an episode at exactly lo is in no bin


def test_final_score_is_the_last_bin_averaged_over_seeds():
    # lo=10, hi=290: bin width 280/29; last bin (280.34, 290]. Seed A's episode at 290 -> 3;
    # seed B's last episode (280) falls in bin 27 -> its last bin repeats it -> 9. Mean (3 + 9) / 2 = 6.
    runs = [([10, 290], [1.0, 3.0]), ([100, 280], [5.0, 9.0])]
    assert scores.final_score(runs) == pytest.approx(6.0)
    assert scores.final_score([([100, 200, 300], [1.0, 2.0, 4.0]), ([], [])]) == pytest.approx(4.0)
    assert math.isnan(scores.final_score([([], [])]))


def test_aggregate_mean_and_median():
    assert scores.aggregate([0.1, 0.2, 0.9, 2.0]) == pytest.approx({"mean_hns": 0.8, "median_hns": 0.55, "games": 4})
    out = scores.aggregate([0.0, 0.5, 1.0, math.nan])
    assert out["mean_hns"] == 0.5 and out["median_hns"] == 0.5 and out["games"] == 3


@pytest.mark.slow
def test_runner_end_to_end_then_skips_the_complete_run(tmp_path, capsys):
    runner = _load("atari100k")
    argv = ["--games", "breakout", "--seeds", "0", "--steps", "480", "--size", "debug", "--runs",
            str(tmp_path / "runs"), "--results", str(tmp_path), "--name", "t",
            "--", "batch_size=2", "batch_length=8", "run.train_ratio=2", "run.eval_every=0",
            "run.report_every=100000", "run.log_every=100000", "run.save_every=100000"]
    out = runner.main(argv)
    run_dir = tmp_path / "runs" / "breakout_seed0"
    assert (run_dir / "atari100k_run.json").is_file()
    steps, returns = runner.read_returns_csv(run_dir / "episodes.csv")
    assert len(returns) >= 1 and max(steps) <= 480
    (row,) = out["rows"]
    assert row["score"] == pytest.approx(scores.final_score([(steps, returns)]))
    assert row["hns"] == pytest.approx(scores.human_normalized("breakout", row["score"]))
    assert out["mean_hns"] == pytest.approx(row["hns"])
    with open(tmp_path / "t.csv") as f:
        (written,) = list(csv.DictReader(f))
    assert float(written["score"]) == pytest.approx(row["score"]) and written["reference_dreamerv3"] == "not found"
    assert "| breakout |" in (tmp_path / "t.md").read_text()
    wall = out["walls"]["breakout"][0]
    assert wall > 0
    capsys.readouterr()
    again = runner.main(argv)  # complete: no second training run, the same table
    assert "complete" in capsys.readouterr().out
    assert again["walls"]["breakout"][0] == wall and again["rows"][0]["score"] == row["score"]


def test_budget_projection_formula():
    budget = _load("atari_budget")
    # 9000 s, 45,000 steps at 0.01 s: 8550 s for updates of 0.5 s = 17,100 updates x 256 / 45,000 = 97.28
    assert budget.max_train_ratio(9000, 45_000, 0.01, 0.5, 8, 32) == pytest.approx(17_100 * 256 / 45_000)


def test_curve_bins_episodes_by_end_step_and_compares_the_last_bin_with_random(tmp_path):
    curve = _load("atari_curve")
    assert curve.binned([1, 5, 6, 10, 11], [1.0, 2.0, 3.0, 4.0, 5.0], width=5, top=11) == [[1.0, 2.0], [3.0, 4.0], [5.0]]
    runs = {"a": ([4, 9], [10.0, 30.0]), "b": ([3, 8], [20.0, 50.0])}
    lines = curve.table(runs, random=[0.0, 10.0], width=5)
    assert "| 0-5 | 10 ± 0 (1) | 20 ± 0 (1) | 15 ± 5 (2) |" in lines
    # last bin pooled: 30, 50 -> 40 ± 10; random 5 ± 5; se = sqrt(100/2 + 25/2) = 7.9
    assert any(line.startswith("Last bin against random: 40 - 5 = +35 (standard error 8;") for line in lines)
    run = tmp_path / "run_seed0"
    run.mkdir()
    (run / "episodes.csv").write_text("step,return,length\n4,10.0,4\n9,30.0,5\n")
    (tmp_path / "random.csv").write_text("episode,return,length,seconds\n0,0.0,3,0.1\n1,10.0,3,0.1\n")
    curve.main(["--runs", str(run), "--random", str(tmp_path / "random.csv"), "--bin", "5", "--name", "c",
                "--results", str(tmp_path)])
    assert (tmp_path / "c.png").is_file() and "| 5-10 | 30 ± 0 (1) |" in (tmp_path / "c.md").read_text()
