"""benchmarks/acting_speed.py: both precisions act, the carry advances, the report names both."""
import torch

from benchmark_scripts import load_benchmark

acting = load_benchmark("acting_speed")


def test_policy_step_carries_its_state_in_both_precisions():
    for precision in ("float32", "bfloat16"):
        policy, step = acting.make_policy("debug", "image64", 4, precision)
        before = step["deter"].clone()
        times = acting.time_calls(policy, step, 3)
        assert len(times) == 3 and all(t > 0 for t in times)
        assert not torch.equal(step["deter"], before) and step["deter"].dtype == torch.float32
        assert step["prev_action"].sum() == 1  # one-hot: the action just taken


def test_report_prints_both_precisions_and_their_ratio(capsys):
    acting.main(["--size", "debug", "--obs", "vector17", "--steps", "4"])
    out = capsys.readouterr().out
    assert "float32   median" in out and "bfloat16  median" in out and "bf16 / float32:" in out
