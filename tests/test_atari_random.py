"""The random-agent baseline (benchmarks/atari_random.py) on the package's own Atari 100k env."""


import pytest
from benchmark_scripts import load_benchmark


def _load():
    return load_benchmark("atari_random")


def test_random_episodes_finish_and_repeat_with_the_seed(tmp_path):
    bench = _load()
    first = bench.random_episodes("breakout", 1, seed=3)
    assert len(first) == 1
    for ret, length, wall in first:
        assert ret >= 0 and ret == int(ret)  # Breakout: +1..+7 per brick, no negative rewards
        assert 10 < length < 27_000 and wall >= 0  # 108k-frame cap / action repeat 4
    again = bench.random_episodes("breakout", 1, seed=3)
    assert [(r, n) for r, n, _ in again] == [(r, n) for r, n, _ in first]
    assert bench.random_episodes("breakout", 1, seed=3, max_steps=5) == []  # stopped before any episode ended


def test_summary_and_csv(tmp_path):
    bench = _load()
    assert bench.summarize([1.0, 3.0]) == (2.0, 1.0)
    assert bench.summarize([4.0]) == (4.0, 0.0)
    out = bench.main(["--games", "breakout", "--episodes", "1", "--results", str(tmp_path)])
    lines = (tmp_path / "atari_random_breakout.csv").read_text().splitlines()
    assert lines[0] == "episode,return,length,wall_s" and len(lines) == 2
    assert out["breakout"] == (float(lines[1].split(",")[1]), 0.0, 1)
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        bench.random_episodes("breakout", 0)
