"""The device check (benchmarks/gpu_check.sh) in its CPU rehearsal: every step runs and reports."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_scripts_parse():
    for script in ("gpu_check.sh", "prepare_gpu_wheels.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], check=True)


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_step(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), OMP_NUM_THREADS="1")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    failed = [r for r in results if "returncode" in r and r["step"] != "main" or "error" in r]
    assert not failed, failed
    steps = {(r["step"], r.get("setting"), r.get("learner")) for r in results}
    for setting in ("eager-f32", "compiled-bf16"):
        assert {("learners", setting, "ours"), ("learners", setting, "torchrl")} <= steps
    checks = [r for r in results if r.get("check") == "no recompiles after warm-up"]
    assert [(r["new_graphs"], r["graph_breaks"]) for r in checks] == [(0, {})]
    assert any(r["step"] == "fit" and r["fits"] for r in results)
    main = next(r for r in results if r["step"] == "main")
    assert main["returncode"] == 0 and main["updates"] > 0 and main["env_steps_per_s"] > 0
    assert (tmp_path / "main_job.log").is_file() and (tmp_path / "gpu_check.log").is_file()
