"""benchmarks/side_by_side.py: both sides' commands, reading both sides' logs onto one set of names, the tables."""
import json
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def sbs():
    return load_benchmark("side_by_side")


def test_the_commands_give_both_sides_the_same_settings(sbs, tmp_path):
    task = sbs.TASKS["kung_fu_master"]
    ours = sbs.ours_command(task, 3, 1000, tmp_path / "o", 3e-4, core=None)
    assert {"seed=3", "run.steps=1000", "opt.lr=0.0003", "threads=1", "batch_length=32", "run.train_ratio=64"} <= set(ours)
    ref = sbs.reference_command(task, 3, 1000, tmp_path / "r", 3e-4, None, Path("launch.py"), "py")
    flag = lambda name: ref[ref.index(name) + 1]  # noqa: E731
    assert flag("--seed") == "3" and flag("--agent.opt.lr") == "0.0003" and flag("--batch_length") == "32"
    # run.steps counts agent steps on both sides (the reference's logger alone multiplies by the action repeat)
    assert flag("--run.steps") == "1000"
    assert flag("--run.train_ratio") == "64" and flag("--jax.compute_dtype") == "float32"
    assert "precision=float32" in ours  # the reference's float32, whatever the default precision=auto picks here
    road = sbs.TASKS["road_runner"]  # the settings of our 2.5-hour CPU runs, on both sides
    road_ours = sbs.ours_command(road, 0, 100, tmp_path, None, None)
    road_ref = sbs.reference_command(road, 0, 100, tmp_path, None, None, Path("l"), "p")
    assert {"env.task=road_runner", "opt.lr=3e-4", "opt.warmup=100", "run.train_ratio=64"} <= set(road_ours)
    road_flag = lambda name: road_ref[road_ref.index(name) + 1]  # noqa: E731
    assert road_flag("--task") == "atari100k_road_runner" and road_flag("--agent.opt.lr") == "3e-4"
    assert road_flag("--agent.opt.warmup") == "100" and road_flag("--run.steps") == "100"
    cart = sbs.TASKS["cartpole"]
    assert "opt.lr=3e-4" in sbs.ours_command(cart, 0, 10, tmp_path, None, None)  # the task's own lr when not given
    assert "--agent.opt.lr" in sbs.reference_command(cart, 0, 10, tmp_path, None, None, Path("l"), "p")
    # an override of ours goes last, so it wins over the task's settings
    extra = sbs.ours_command(cart, 0, 10, tmp_path, None, None, ("run.steps_per_collect=1", "run.train_ratio=128"))
    assert extra[-2:] == ["run.steps_per_collect=1", "run.train_ratio=128"] and "run.train_ratio=256" in extra


def test_the_reference_log_maps_onto_our_names(sbs, tmp_path):
    (tmp_path / "scores.jsonl").write_text(json.dumps({"step": 400, "episode/score": 300.0}) + "\n")
    rows = [{"step": 80, "episode/score": 1.0},  # a score line in metrics.jsonl: no train metrics
            {"step": 800, "train/opt/grad_norm": 5.0, "train/loss/image": 2.0, "train/loss/state": 0.5,
             "train/loss/rep": 1.5, "train/loss/dyn": 1.5, "train/ent/action": 0.6, "train/rew": 0.1}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    episodes, internals = sbs.read_reference(tmp_path, frames=4)
    assert episodes == [(100, 300.0)]  # frames -> agent steps
    assert internals["loss_rec"] == [(200, 2.5)]  # every observation key's loss, summed
    assert internals["loss_rep"] == [(200, 1.5)] and internals["entropy"] == [(200, 0.6)]
    assert internals["grad_norm"] == [(200, 5.0)] and internals["imag_reward"] == [(200, 0.1)]


def test_our_log_undoes_the_scales_we_log_with(sbs, tmp_path):
    train = tmp_path / "dreamerv3" / "scalars" / "train"
    (train / "actor").mkdir(parents=True)
    (train / "loss_rep.csv").write_text("512,0.1\n576,0.2\n")
    (train / "loss_repval.csv").write_text("512,0.6\n")
    (train / "actor" / "policy_entropy.csv").write_text("512,0.69\n")
    (tmp_path / "episodes.csv").write_text("step,return,length\n16,20.0,20\n40,24.0,24\n")
    episodes, internals = sbs.read_ours(tmp_path)
    assert episodes == [(16, 20.0), (40, 24.0)]
    assert internals["loss_rep"] == [(512, pytest.approx(1.0)), (576, pytest.approx(2.0))]  # logged times 0.1
    assert internals["loss_repval"] == [(512, pytest.approx(2.0))]  # logged times 0.3
    assert internals["entropy"] == [(512, 0.69)] and "loss_dyn" not in internals


def test_the_tables_give_the_first_reach_and_the_binned_medians(sbs):
    ours = [(i * 100, 500.0 if i >= 10 else 10.0) for i in range(30)]
    ref = [(i * 100, 10.0) for i in range(30)]
    runs = {("ours", 0): (ours, {"entropy": [(500, 0.6), (700, 0.4), (2500, 0.1)]}),
            ("ours", 1): (ours, {"entropy": [(600, 0.2)]}),
            ("reference", 0): (ref, {"entropy": [(600, 0.5)]})}
    assert sbs.binned_medians(runs, "ours", "entropy", [0, 1000, 3000]) == [pytest.approx(0.35), pytest.approx(0.1)]
    text = sbs.summary_markdown("t", sbs.TASKS["cartpole"], runs, 10_000)
    # 500 from episode 10 on: nine of ten at 500 make (9 * 500 + 10) / 10 = 451 >= 450, at episode 18 (step 1,800)
    assert "| ours | 0 | 30 | 500.0 | 1,800 |" in text
    assert "| reference | 0 | 30 | 10.0 | not reached |" in text
    assert "| entropy | 0.35 / 0.5 |" in text
    assert sbs._moving_mean([(1, 1.0), (2, 3.0), (3, 5.0)], 2) == [(2, 2.0), (3, 4.0)]


def test_both_sides_are_compared_over_the_same_steps(sbs):
    episodes = [(100, 1.0), (12_000, 2.0), (12_400, 3.0)]
    internals = {"entropy": [(60, 2.9), (11_990, 2.5), (12_300, 2.0)]}
    cut_episodes, cut_internals = sbs.until((episodes, internals), 12_000)
    assert cut_episodes == [(100, 1.0), (12_000, 2.0)]
    assert cut_internals == {"entropy": [(60, 2.9), (11_990, 2.5)]}
