"""The main job under ``torchrun`` on 2 CPU ranks (gloo): it trains, stops on Ctrl-C at one agreed round,
rank 0 saves, and a resumed ``torchrun`` continues the counters."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torchrl_dreamerv3.training.persistence.checkpoint import read_counters

ROOT = Path(__file__).resolve().parents[1]
FAST = ["env=cartpole", "size=debug", "batch_size=2", "batch_length=8", "run.train_ratio=4", "run.log_every=0",
        "run.report_every=0", "run.steps_per_collect=8", "threads=1", "replay.size=10000", "run.eval_every=0",
        "device=cpu"]


def _torchrun(logdir, *overrides, new_session=False):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "examples" / "dreamerv3_atari.py"), f"logdir={logdir}", *FAST, *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=new_session)


@pytest.mark.slow
def test_main_job_trains_on_two_ranks_stops_on_ctrl_c_and_resumes(tmp_path):
    run = _torchrun(tmp_path, "run.steps=1000000", new_session=True)
    deadline = time.monotonic() + 240
    while not (tmp_path / "dreamerv3" / "scalars" / "train" / "loss.csv").exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0][-3000:]
        time.sleep(0.5)
    os.killpg(run.pid, signal.SIGINT)  # a terminal's Ctrl-C: torchrun forwards it once to each rank
    out = run.communicate(timeout=120)[0]
    assert out.count("torchrl_dreamerv3: env=cartpole") == 1, out[-3000:]  # rank 0 alone announces and logs
    assert out.count("saving a checkpoint") == 2, out[-3000:]  # both ranks got the request
    stopped = read_counters(tmp_path)
    assert stopped["updates"] > 0 and stopped["env_steps"] % 16 == 0  # 2 ranks x 8 steps per round

    target = stopped["env_steps"] + 32
    resumed = _torchrun(tmp_path, f"run.steps={target}", f"resume={tmp_path}")
    out = resumed.communicate(timeout=240)[0]
    assert resumed.returncode == 0, out[-3000:]
    after = read_counters(tmp_path)
    assert after["env_steps"] == target and after["updates"] > stopped["updates"], (stopped, after)
    assert f"stopped at {target} env steps" in out


@pytest.mark.slow
def test_what_two_ranks_do_not_support_yet_is_refused_by_name(tmp_path):
    out = _torchrun(tmp_path, "run.steps=64", "checkpoint.replay=true").communicate(timeout=180)[0]
    assert "checkpoint.replay=true is not supported under torchrun yet" in out
    assert not (tmp_path / "config.yaml").exists()  # refused before anything was made
