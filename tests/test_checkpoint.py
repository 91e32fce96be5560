"""Checkpoints: whole or not at all, rotation, replay rows saved and checked, damaged files named.

Defects of issue #13 covered: 2 (atomic saves), 3 (damaged replay), 4 (rows, not capacity), 9 (empty state.pt).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers import SliceSampler

from torchrl_dreamerv3.training.persistence import checkpoint as ckpt
from torchrl_dreamerv3.training.persistence.checkpoint import (CheckpointError, list_checkpoints, load_checkpoint, read_counters,
                                                   save_checkpoint)
from torchrl_dreamerv3.training.collection.ratio import TrainRatio
from torchrl_dreamerv3.replay import io as ckpt_io
from torchrl_dreamerv3.replay.io import replay_feature_spec

ENVS = 2


class _Learner(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(3, 2)
        self.optimizer = torch.optim.Adam(self.parameters())


def _replay(kind="tensor", capacity=400):
    storage = {"tensor": lambda: LazyTensorStorage(capacity, ndim=2),
               "memmap": lambda: LazyMemmapStorage(capacity, ndim=2),
               "flat": lambda: LazyTensorStorage(capacity)}[kind]()
    sampler = SliceSampler(slice_len=4, traj_key=("collector", "traj_ids"), strict_length=True)
    return TensorDictReplayBuffer(storage=storage, sampler=sampler, batch_size=8)


def _batch(step, steps=8, flat=False, features=3):
    """A collected (envs, time) batch whose observation encodes the env step, as the loop extends it."""
    obs = torch.arange(step, step + steps * ENVS, dtype=torch.float32).reshape(steps, ENVS).T
    td = TensorDict({"obs": obs[..., None].expand(ENVS, steps, features).clone(),
                     "is_first": torch.zeros(ENVS, steps, 1, dtype=torch.bool),
                     ("collector", "traj_ids"): torch.arange(ENVS)[:, None].expand(ENVS, steps).clone()},
                    [ENVS, steps])
    if not flat:
        return td
    td = td.transpose(0, 1).reshape(-1)
    td["collector", "traj_ids"].zero_()  # one stream: the sampler needs contiguous trajectories
    return td


def _fill(replay, steps, flat=False):
    for start in range(0, steps, 8 * ENVS):
        replay.extend(_batch(start, flat=flat))
    return steps


def _rows(replay):
    return replay.storage._storage[: ckpt_io._filled_rows(replay.storage)]


def _save(root, replay, steps, learner=None, ratio=None, **kw):
    learner = learner or _Learner()
    ratio = ratio or TrainRatio(16, 2, 4)
    return save_checkpoint(root, learner=learner, counters=dict(env_steps=steps, updates=steps // 4, episodes=1),
                           ratio=ratio, replay=replay, **kw)


def _load(root, replay=None, **kw):
    return load_checkpoint(root, learner=_Learner(), ratio=TrainRatio(16, 2, 4), replay=replay, **kw)


@pytest.mark.parametrize("kind", ["tensor", "memmap", "flat"])
@pytest.mark.parametrize("steps", [96, 480])  # 480 > capacity 400: the storage has wrapped
def test_replay_round_trip_restores_rows_cursor_and_sampling(tmp_path, kind, steps):
    flat = kind == "flat"
    replay = _replay(kind)
    _fill(replay, steps, flat)
    _save(tmp_path / "checkpoint", replay, steps)
    restored = _replay(kind)
    counters = _load(tmp_path, restored, replay_spec=replay_feature_spec(_batch(0, flat=flat)))
    assert counters["replay_restored"] and counters["env_steps"] == steps
    assert len(restored) == len(replay) == min(steps, 400)
    assert (_rows(restored) == _rows(replay)).all()
    torch.manual_seed(1)
    expected = replay.sample()
    torch.manual_seed(1)
    assert (restored.sample() == expected).all()
    # writing on continues where the saved buffer would have: same cursor
    replay.extend(_batch(steps, flat=flat))
    restored.extend(_batch(steps, flat=flat))
    assert (_rows(restored) == _rows(replay)).all()


def test_a_save_writes_the_rows_held_not_the_capacity(tmp_path):  # defect 4
    replay = _replay("tensor", capacity=200_000)
    _fill(replay, 1_024)
    path = _save(tmp_path, replay, 1_024)
    written = sum(f.stat().st_size for f in (path / "replay").iterdir())
    row = 3 * 4 + 1 + 8 + 8  # obs float32 x3, is_first, traj_ids, the buffer's index
    assert written < 1_024 * row + 20_000, written  # capacity would be 200,000 rows


def test_a_failed_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):  # defect 2
    replay = _replay()
    _fill(replay, 96)
    _save(tmp_path, replay, 96)
    _fill(replay, 64)
    monkeypatch.setattr(ckpt, "fsync_tree", lambda path: (_ for _ in ()).throw(OSError("killed mid-save")))
    with pytest.raises(OSError):
        _save(tmp_path, replay, 160)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == ["step_000000160.tmp"]
    restored = _replay()
    counters = _load(tmp_path, restored)
    assert counters["env_steps"] == 96 and len(restored) == 96
    monkeypatch.undo()
    _save(tmp_path, replay, 160)  # the next save clears the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000000096", "step_000000160"]
    assert (tmp_path / "latest").read_text().strip() == "step_000000160"


def test_keeps_the_last_k_checkpoints(tmp_path):
    replay = _replay()
    for steps in (16, 32, 48, 64):
        _fill(replay, 16)
        _save(tmp_path, replay, steps, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000064", "step_000000048"]
    assert read_counters(tmp_path)["env_steps"] == 64


def test_a_truncated_replay_file_is_named_and_the_previous_checkpoint_loads(tmp_path):  # defect 3
    replay = _replay()
    _fill(replay, 96)
    _save(tmp_path, replay, 96)
    _fill(replay, 64)
    newest = _save(tmp_path, replay, 160)
    with open(newest / "replay" / "obs.bin", "r+b") as f:
        f.truncate(100)
    restored = _replay()
    with pytest.warns(UserWarning, match=r"obs.bin has 100 bytes, expected .*falling back .*step_000000096"):
        counters = _load(tmp_path, restored)
    assert counters["env_steps"] == 96 and len(restored) == 96
    ckpt.shutil.rmtree(tmp_path / "step_000000096")
    with pytest.raises(CheckpointError, match="obs.bin has 100 bytes"):
        _load(tmp_path, _replay())


def test_replay_content_damage_and_count_and_spec_mismatches_are_errors(tmp_path):
    replay = _replay()
    _fill(replay, 96)
    path = _save(tmp_path, replay, 96)
    spec = replay_feature_spec(_batch(0))
    with pytest.raises(CheckpointError, match=r"holds 96 rows but the checkpoint's counters say 112"):
        ckpt_io.load_replay_rows(_replay(), path / "replay", expected_len=112)
    wrong = dict(spec, obs=((4,), torch.float32))
    with pytest.raises(CheckpointError, match=r"obs.bin holds torch.float32 \(3,\) per row, expected torch.float32 \(4,\)"):
        _load(tmp_path, _replay(), replay_spec=wrong)
    with pytest.raises(CheckpointError, match=r"obs.bin holds torch.float32 \(3,\) per row, expected torch.float32 \(4,\)"):
        _load(tmp_path, _replay(), replay_spec=_batch(0, features=4))  # the observations themselves, as run.py gives
    with pytest.raises(CheckpointError, match=r"storage of shape \(200, 2\).*replay.size or run.envs"):
        _load(tmp_path, _replay(capacity=800))
    raw = bytearray((path / "replay" / "obs.bin").read_bytes())
    raw[10] ^= 0xFF
    (path / "replay" / "obs.bin").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="obs.bin fails its checksum"):
        _load(tmp_path, _replay())
    (path / "replay" / "manifest.json").write_text('{"format": 1, "len"')
    with pytest.raises(CheckpointError, match="manifest.json is damaged"):
        _load(tmp_path, _replay())


def test_an_empty_state_file_is_named_and_falls_back(tmp_path):  # defect 9 (bare EOFError)
    _save(tmp_path, None, 16)
    newest = _save(tmp_path, None, 32)
    (newest / "state.pt").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"state.pt is empty \(0 bytes\).*falling back"):
        assert _load(tmp_path)["env_steps"] == 16
    ckpt.shutil.rmtree(tmp_path / "step_000000016")
    with pytest.raises(CheckpointError, match=r"step_000000032/state.pt is empty"):
        _load(tmp_path)


def test_old_layout_checkpoints_still_load(tmp_path):
    learner, ratio = _Learner(), TrainRatio(16, 2, 4)
    ratio(100)
    replay = _replay()
    _fill(replay, 96)
    (tmp_path / "checkpoint").mkdir()
    replay.dumps(tmp_path / "checkpoint" / "replay")
    state = {"learner": learner.state_dict(), "optimizer": learner.optimizer.state_dict(), "ratio": ratio.state_dict(),
             "counters": dict(env_steps=96, updates=3, episodes=0), "rng": ckpt._rng_state(), "has_replay": True}
    torch.save(state, tmp_path / "checkpoint" / "state.pt")
    restored = _replay()
    counters = _load(tmp_path, restored)
    assert counters["env_steps"] == 96 and len(restored) == 96
    assert read_counters(tmp_path / "checkpoint")["updates"] == 3


_SAVER = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_checkpoint import _replay, _fill, _save
replay, steps = _replay(capacity=40_000), 0
print("ready", flush=True)
while True:
    steps += _fill(replay, 1_024)
    _save({root!r}, replay, steps)
"""


def test_sigkill_at_random_moments_of_saving_never_leaves_an_unloadable_checkpoint(tmp_path):  # defect 2
    root = tmp_path / "checkpoint"
    code = _SAVER.format(tests=str(Path(__file__).parent), root=str(root))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for delay in (0.05, 0.13, 0.21, 0.34):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.kill()
        proc.wait()
        if not list_checkpoints(tmp_path):
            continue
        restored = _replay(capacity=40_000)
        counters = _load(tmp_path, restored)
        assert len(restored) == counters["env_steps"]
        info = json.loads((ckpt.resolve_checkpoint_dir(tmp_path) / "info.json").read_text())
        assert info["counters"]["env_steps"] == counters["env_steps"]
    assert list_checkpoints(tmp_path), "no save finished in any run: raise the delays"
