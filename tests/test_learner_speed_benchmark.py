"""`benchmarks/learner_speed.py --profile`: phase shares, then the top ops of one update by their own CPU time."""
import re

import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def learner_speed():
    return load_benchmark("learner_speed")


def test_profile_prints_phase_shares_then_the_top_ops_by_own_time(learner_speed, capsys):
    learner_speed.main(["--size", "debug", "--obs", "vector17", "--batch-size", "2", "--batch-length", "8",
                        "--threads", "1", "--profile", "--updates", "1"])
    out = capsys.readouterr().out
    phases, ops = out.split("top ")
    assert "phase shares of our update" in phases and "backward" in phases
    rows = [line for line in ops.splitlines()[1:] if line.strip()]
    assert len(rows) == learner_speed.TOP_OPS
    parsed = [re.match(r"\s*([\d.]+) ms\s+([\d.]+) %\s+(\d+) calls\s+(\S.*)", row) for row in rows]
    assert all(parsed), rows
    own_ms = [float(m.group(1)) for m in parsed]
    assert own_ms == sorted(own_ms, reverse=True)  # by own time, largest first
    assert any(m.group(4).startswith("aten::") for m in parsed)  # single ops, not phases
    assert 0 < sum(float(m.group(2)) for m in parsed) <= 100.5
