"""The per-stream replay: online queue order, window boundaries, stamp-checked write-back, config."""
import threading

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict

from torchrl_dreamerv3.replay.buffer import ReplaySettings, make_replay, make_stream_replay
from torchrl_dreamerv3.training.plan import make_plan

L = 4  # window rows (batch_length 3 + context 1)


class Streams:
    """``streams`` env streams whose rows carry ``step`` = 1000 * stream + time, written in chunks."""

    def __init__(self, streams: int, first_every: int = 0):
        self.streams, self.t, self.first_every = streams, 0, first_every

    def chunk(self, n: int) -> TensorDict:
        time = torch.arange(self.t, self.t + n)
        self.t += n
        ids = torch.arange(self.streams)[:, None]
        first = (time % self.first_every == 0) if self.first_every else torch.zeros(n, dtype=torch.bool)
        return TensorDict({
            "step": time.expand(self.streams, n) + 1000 * ids,
            ("collector", "traj_ids"): ids.expand(self.streams, n).clone(),
            "is_first": first.expand(self.streams, n).unsqueeze(-1).clone(),
            "deter": torch.zeros(self.streams, n, 2),
        }, [self.streams, n])


def windows_of(sample) -> list[tuple[int, ...]]:
    return [tuple(row) for row in sample["step"].tolist()]


def assert_consecutive(sample):
    steps = sample["step"]
    assert (steps[:, 1:] - steps[:, :-1] == 1).all(), f"a window jumps: {steps.tolist()}"


def test_each_new_window_is_sampled_once_before_uniform_fallback():
    data, replay = Streams(2), make_stream_replay(capacity=200, streams=2, slice_len=L, batch_size=3)
    for n in (5, 3, 5):  # 13 rows per stream, chunks that do not line up with windows
        replay.extend(data.chunk(n))
    fresh = {tuple(range(s + o, s + o + L)) for s in (0, 4, 8) for o in (0, 1000)}
    assert replay.queued() == 6
    first = windows_of(replay.sample()) + windows_of(replay.sample())
    assert sorted(first) == sorted(fresh)  # all six, each once, before anything else
    assert replay.queued() == 0
    later = [w for _ in range(30) for w in windows_of(replay.sample())]
    assert any(w[0] % 1000 % L for w in later)  # uniform fallback: windows at any offset
    assert all(w[-1] % 1000 <= 12 for w in later)
    # the queue refills with the next windows: rows 12..15 of both streams come next, first
    replay.extend(data.chunk(3))
    assert {(12, 13, 14, 15), (1012, 1013, 1014, 1015)} <= set(windows_of(replay.sample()))


def test_report_windows_leave_the_queue_alone():
    data, replay = Streams(2), make_stream_replay(capacity=200, streams=2, slice_len=L, batch_size=2)
    replay.extend(data.chunk(8))
    report = replay.sample_uniform(3)
    assert report.shape == (3, L)
    assert_consecutive(report)
    assert replay.queued() == 4


def test_windows_run_across_episode_starts():
    data, replay = Streams(1, first_every=3), make_stream_replay(capacity=64, streams=1, slice_len=L, batch_size=2)
    replay.extend(data.chunk(8))
    sample = replay.sample()
    assert windows_of(sample) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert sample["is_first"].squeeze(-1).tolist() == [[True, False, False, True], [False, False, True, False]]


@pytest.mark.parametrize("online", [True, False])
def test_windows_never_straddle_unwritten_rows_or_the_write_cursor(online):
    data = Streams(2)
    replay = make_stream_replay(capacity=20, streams=2, slice_len=L, batch_size=4, online=online)
    replay.extend(data.chunk(6))  # 6 of 10 rows per stream written
    for _ in range(20):
        sample = replay.sample()
        assert_consecutive(sample)
        assert (sample["step"] % 1000 <= 5).all()
    replay.extend(data.chunk(17))  # wrapped: rows 13..22 are live, slot of 22 is next to that of 13
    for _ in range(40):
        sample = replay.sample()
        assert_consecutive(sample)
        assert (sample["step"] % 1000 >= 13).all()


def test_an_overwritten_queued_window_is_dropped():
    data, replay = Streams(1), make_stream_replay(capacity=8, streams=1, slice_len=L, batch_size=2)
    for _ in range(3):  # the third chunk overwrites the slots of window 0..3 before it was sampled
        replay.extend(data.chunk(4))
    assert replay.queued() == 2
    assert sorted(windows_of(replay.sample())) == [(4, 5, 6, 7), (8, 9, 10, 11)]
    assert replay.queued() == 0


def test_write_back_skips_slots_refilled_after_sampling():
    data, replay = Streams(1), make_stream_replay(capacity=8, streams=1, slice_len=L, batch_size=2)
    replay.extend(data.chunk(8))
    sample, info = replay.sample(return_info=True)  # windows 0..3 and 4..7 (the queue)
    assert windows_of(sample) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    replay.extend(data.chunk(2))  # steps 8, 9 refill the slots of steps 0, 1
    latents = TensorDict({"deter": torch.ones(2, L - 1, 2)}, [2, L - 1])
    result = replay.write_back(info, latents)
    assert (result.updated_count, result.stale_count) == (5, 1)  # row 1 of window 0..3 was refilled
    stored = replay[0][:]
    by_step = dict(zip(stored["step"].tolist(), stored["deter"][:, 0].tolist()))
    assert by_step == {8: 0.0, 9: 0.0, 2: 1.0, 3: 1.0, 4: 0.0, 5: 1.0, 6: 1.0, 7: 1.0}
    assert replay.queued() == 0  # a write-back is not a write: it queues no window


def test_write_back_rejects_latents_of_the_wrong_shape():
    data, replay = Streams(1), make_stream_replay(capacity=8, streams=1, slice_len=L, batch_size=2)
    replay.extend(data.chunk(8))
    _, info = replay.sample(return_info=True)
    with pytest.raises(ValueError, match="rows 1..T"):
        replay.write_back(info, TensorDict({"deter": torch.ones(2, L, 2)}, [2, L]))


def test_prefetch_with_a_concurrent_writer():
    data = Streams(2)
    replay = make_stream_replay(capacity=400, streams=2, slice_len=L, batch_size=4, prefetch=2)
    replay.extend(data.chunk(8))
    stop, errors = threading.Event(), []

    def writer():
        try:
            while not stop.is_set():
                replay.extend(data.chunk(3))
        except Exception as error:  # surfaced below
            errors.append(error)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(30):
            sample, info = replay.sample(return_info=True)
            assert sample.shape == (4, L)
            assert_consecutive(sample)
            replay.write_back(info, TensorDict({"deter": torch.ones(4, L - 1, 2)}, [4, L - 1]))
    finally:
        stop.set()
        thread.join()
    assert not errors


def _cfg(**replay):
    from torchrl_dreamerv3 import compose_config

    overrides = {"size": 40, "memmap": False, "online": True, "prefetch": 0, **replay}
    return compose_config(["env=cartpole", "device=cpu", "batch_size=2", "batch_length=3", "run.envs=2",
                           *(f"replay.{k}={v}" for k, v in overrides.items())])


def _settings(**replay) -> ReplaySettings:
    return make_plan(_cfg(**replay)).replay


@pytest.mark.parametrize("memmap", [False, True])
def test_make_replay_from_the_plan(memmap, tmp_path):
    replay, data = make_replay(_settings(memmap=memmap), scratch_dir=str(tmp_path)), Streams(2)
    replay.extend(data.chunk(10))
    assert len(replay) == 20 and replay.streams == 2
    window, info = replay.sample(return_info=True)
    assert window.reshape(2, -1).shape == (2, L)
    assert replay.write_back(info, TensorDict({"deter": torch.zeros(2, L - 1, 2)}, [2, L - 1])).updated_count == 6
    assert make_replay(_settings(online=False)).queued() == 0
    if memmap:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1"]  # one memmap folder per stream


@pytest.mark.parametrize("override, message", [
    (dict(online="yes"), "replay.online"), (dict(prefetch=-1), "replay.prefetch"), (dict(size=6), "replay.size=6")])
def test_the_plan_names_a_bad_replay_setting(override, message):
    with pytest.raises(ValueError, match=message):
        make_plan(_cfg(**override))


def test_the_old_module_path_still_takes_a_config():
    from torchrl_dreamerv3.training.replay_buffer import make_replay as old_make_replay

    assert old_make_replay(_cfg()).streams == 2


def test_a_saved_replay_resumes_with_its_rows_queue_and_write_stamps(tmp_path):
    data = Streams(2)
    replay = make_stream_replay(capacity=24, streams=2, slice_len=L, batch_size=2)
    for n in (9, 9):  # wrapped rings (12 rows each), windows queued
        replay.extend(data.chunk(n))
    _, info = replay.sample(return_info=True)
    assert replay.queued() == 2
    replay.dumps(tmp_path / "replay")
    restored = make_stream_replay(capacity=24, streams=2, slice_len=L, batch_size=2)
    restored.loads(tmp_path / "replay")
    assert len(restored) == len(replay) == 24 and restored.queued() == 2
    assert sorted(windows_of(restored.sample())) == [(12, 13, 14, 15), (1012, 1013, 1014, 1015)]  # the queue
    for _ in range(20):  # the saved ring keeps its end: no window runs from the newest row into the oldest
        assert_consecutive(restored.sample())
    latents = TensorDict({"deter": torch.ones(2, L - 1, 2)}, [2, L - 1])
    assert restored.write_back(info, latents).updated_count == replay.write_back(info, latents).updated_count > 0
    restored.extend(data.chunk(3))
    assert_consecutive(restored.sample())
