"""run.collector=ray: env workers in Ray actors on a local cluster (loopback), the learner in this process.

The end-to-end runs start a local Ray cluster each (about 15 s of start-up on a busy 2-core machine)."""
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensordict import TensorDict

from torchrl_dreamerv3.training import loop
from torchrl_dreamerv3.training.compute.acceleration import Acceleration
from torchrl_dreamerv3.training.config_checks import check_config
from torchrl_dreamerv3.training.collection.environment import env_factory
from torchrl_dreamerv3.training.collection.ray_collection import WeightPushingCollector, ray_init_config
from torchrl_dreamerv3.training.plan import make_plan
from torchrl_dreamerv3.training.compute.distributed import check_supported

ROOT = Path(__file__).resolve().parents[1]
FAST = ["size=debug", "batch_size=2", "batch_length=8", "run.train_ratio=4", "run.log_every=0",
        "run.report_every=0", "run.steps_per_collect=8", "threads=1", "replay.size=10000", "run.eval_every=0",
        "env=cartpole", "device=cpu"]
RAY = ["run.collector=ray", "run.ray.workers=2", "run.envs=2"]


def _cfg(*overrides):
    with initialize_config_dir(str(ROOT / "torchrl_dreamerv3" / "configs"), version_base=None):
        return compose("config", overrides=["logdir=unused", *overrides])


# --- the settings -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("run.ray.workers=0", r"run.ray.workers=0 is out of range: it must be an integer >= 1"),
    ("run.ray.workers=1.5", r"run.ray.workers=1.5 \(float\) must be an integer >= 1"),
    ("run.ray.workers=two", r"run.ray.workers='two' \(str\) must be an integer"),
    ("run.ray.workers=3", r"run.envs=2 streams do not split over run.ray.workers=3"),
    ("run.ray.address=5", r"run.ray.address=5 must be null .* auto or host:port"),
])
def test_bad_ray_settings_fail_naming_the_setting(override, message):
    with pytest.raises(ValueError, match=message):
        check_config(_cfg(*RAY, override))


def test_the_ray_collector_without_ray_installed_names_the_extra(monkeypatch):
    if importlib.util.find_spec("ray") is not None:  # installed here (the dev extra includes it)
        check_config(_cfg(*RAY))
    monkeypatch.setitem(sys.modules, "ray", None)  # what importlib sees when ray is not installed
    with pytest.raises(ValueError, match=re.escape('run.collector=ray needs ray, which is not installed: '
                                                   'pip install -e ".[distributed]"')):
        check_config(_cfg(*RAY))
    check_config(_cfg("run.collector=sync"))  # the other collectors do not need it


def test_what_does_not_combine_with_ray_is_refused_by_name():
    cfg = _cfg(*RAY)
    plan = make_plan(cfg)
    with pytest.raises(ValueError, match="run.collector=ray is not supported under torchrun"):
        check_supported(plan, world_size=2)
    check_supported(plan, world_size=1)
    with pytest.raises(ValueError, match="compile.enabled=true cannot run with run.collector=ray"):
        Acceleration.from_config(OmegaConf.merge(cfg, {"compile": {"enabled": True}}), "cpu")
    assert not Acceleration.from_config(cfg, "cuda").compile  # auto: the policy must pickle into the actors


def test_a_local_cluster_listens_on_loopback_only_and_a_given_address_is_joined():
    local = ray_init_config(None, 3)
    assert local["_node_ip_address"] == "127.0.0.1" and local["num_cpus"] == 3 and not local["include_dashboard"]
    assert ray_init_config("auto", 3) == {"address": "auto", "log_to_driver": False}


# --- a run ------------------------------------------------------------------------------------------------------

def _ray_process_ids(run):
    """The actors' and the local cluster's processes (gcs, raylet, ...), while the run is alive."""
    import ray

    actors = [ray.get(actor.__ray_call__.remote(lambda _: os.getpid()))
              for actor in run.collector.collector.remote_collectors]
    node = ray._private.worker._global_node
    cluster = [info.process.pid for infos in node.all_processes.values() for info in infos]
    return actors, cluster


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _first_observation(make, seed):
    return make(seed).reset()["observation"]


def test_two_ray_workers_collect_train_get_the_weights_and_stop_cleanly(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    cfg = _cfg(*FAST, *RAY, f"logdir={tmp_path}", "run.steps=192")
    pushed = []  # (update count, the learner's weights) at every push
    real_push = WeightPushingCollector.push_weights

    def recording_push(self):
        sent = real_push(self)
        if sent:
            pushed.append((self.version(), TensorDict.from_module(self.policy).data.clone()))
        return sent

    seen = {}
    real_finish = loop.finish

    def checking_finish(run):
        seen["rows"] = len(run.replay)
        seen["per_stream"] = [len(s) for s in run.replay._storage._storages]
        seen["first_rows"] = [s[0]["observation"] for s in run.replay._storage._storages]
        seen["remote"] = [run.collector.remote_weights(w) for w in range(2)]
        seen["processes"] = _ray_process_ids(run)
        return real_finish(run)

    monkeypatch.setattr(WeightPushingCollector, "push_weights", recording_push)
    monkeypatch.setattr(loop, "finish", checking_finish)
    counters = loop.train(cfg)

    assert counters["env_steps"] == 192 and counters["updates"] > 0
    assert seen["rows"] == counters["env_steps"] and seen["per_stream"] == [96, 96]
    # the batch layout: row w of every batch is worker w's stream, seeded seed + w as in the in-process collectors
    make = env_factory(cfg)
    for stream, first in enumerate(seen["first_rows"]):
        assert torch.equal(first, _first_observation(make, cfg.seed + stream).to(first.dtype))
    assert not torch.equal(seen["first_rows"][0], seen["first_rows"][1])
    # weights: pushed once before the first batch, then after each training round (only when the updates moved)
    versions = [version for version, _ in pushed]
    assert versions[0] == 0 and len(versions) >= 3 and versions == sorted(set(versions))
    assert versions[-1] < counters["updates"]  # the last round trained after the last push
    last = pushed[-1][1]
    assert (last != pushed[0][1]).any()  # trained weights went out
    for remote in seen["remote"]:  # each remote policy copy holds exactly the last pushed weights
        assert (remote == last).all()
    # stopped cleanly: Ray shut down, no actor or cluster process left
    assert not ray.is_initialized()
    actors, cluster = seen["processes"]
    assert len(actors) == 2 and cluster
    deadline = time.time() + 20
    while any(_alive(pid) for pid in actors + cluster) and time.time() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in actors + cluster if _alive(pid)]
    assert (tmp_path / "checkpoint").is_dir()


@pytest.mark.slow
def test_ctrl_c_stops_the_main_job_with_ray_workers_and_async_collection_cleanly(tmp_path):
    """Ctrl-C reaches the whole process group (the driver, the cluster and the actors): the run saves and
    exits 0, and nothing of the group is left."""
    pytest.importorskip("ray")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "dreamerv3_atari.py"), f"logdir={tmp_path}",
                             *FAST, *RAY, "run.steps=100000", "run.async_collect=true", "run.max_ahead=64"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # its own group, as a terminal's foreground job
    output = []
    threading.Thread(target=lambda: output.extend(iter(lambda: proc.stdout.read1(4096).decode(errors="replace"),
                                                       "")), daemon=True).start()
    try:
        deadline = time.time() + 150
        while time.time() < deadline and proc.poll() is None:
            updates = re.findall(r"updates=(\d+)", "".join(output))
            if updates and int(updates[-1]) >= 3:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "".join(output)[-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = "".join(output)
    assert proc.returncode == 0, text[-3000:]
    assert "saving a checkpoint" in text and re.search(r"stopped at \d+ env steps, [1-9]\d* updates", text)
    assert (tmp_path / "checkpoint").is_dir()
    deadline = time.time() + 20
    while time.time() < deadline and _group_members(proc.pid):
        time.sleep(0.5)
    assert not _group_members(proc.pid)


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members
