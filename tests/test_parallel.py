"""Collection beside learning: the train ratio holds with a slow learner and with a slow collector,
pause gives a consistent cut, errors and stops reach the loop. As in the training loop, the caller
stores what ``receive`` hands over (here: ``Rows.write``), then asks ``updates_due``."""
import threading
import time

import pytest
import torch
from tensordict import TensorDict

from torchrl_dreamerv3.training import TrainRatio
from torchrl_dreamerv3.training.collection.parallel import ParallelCollection
from torchrl_dreamerv3.training.plan import use_parallel
from torchrl_dreamerv3.training.collection.sync import SyncCollection, episodes_in

FRAMES = 8  # env steps per collected batch
PER_UPDATE = 4  # env steps per update: TrainRatio(1, 1, 4)


def fake_collector(delay: float = 0.0, batches: int | None = None):
    """Batches of one stream, FRAMES steps each; an episode of length 5 ends at every 5th step."""
    t = 0
    while batches is None or t < batches * FRAMES:
        time.sleep(delay)
        steps = torch.arange(t, t + FRAMES)
        t += FRAMES
        yield TensorDict({"step": steps, "is_last": (steps % 5 == 4).unsqueeze(-1),
                          "episode_reward": steps.float().unsqueeze(-1),
                          "episode_length": torch.full((FRAMES, 1), 5)}, [FRAMES])


class Ratio(TrainRatio):
    """The run's ratio (one update per PER_UPDATE env steps) that remembers the step of its first call."""

    def __init__(self):
        super().__init__(1, 1, PER_UPDATE)
        self.first = None

    def __call__(self, step, at_most=None):
        if self.prev is None:
            self.first = step
        return super().__call__(step, at_most)


class Rows:
    """A stand-in replay that counts the rows written, and what the learner had done at each write."""

    def __init__(self):
        self.rows, self.log, self.collection = 0, [], None

    def write(self, batch):
        self.rows += batch.numel()
        self.log.append((self.rows, self.collection.updates))


def store(collection, rows=None, timeout=None) -> None:
    """The loop's data path: what was collected goes into the (stand-in) replay."""
    for batch in collection.receive(timeout=timeout):
        if rows is not None:
            rows.write(batch)


def due(collection, rows=None, timeout=None) -> int:
    """One turn of the loop: store what was collected, then the updates owed."""
    store(collection, rows, timeout)
    return collection.updates_due()


def run(collection, steps: int, update_time: float = 0.0, on_update=None, rows=None):
    with collection:
        while collection.env_steps < steps:
            for _ in range(due(collection, rows, timeout=1.0)):
                time.sleep(update_time)
                collection.update_done()
                if on_update:
                    on_update()


def make(delay=0.0, max_ahead=16, **kwargs):
    rows = Rows()
    rows.collection = ParallelCollection(fake_collector(delay, **kwargs), Ratio(), max_ahead=max_ahead)
    return rows, rows.collection


def test_a_slow_learner_holds_the_collector_back():
    rows, collection = make(max_ahead=16)
    run(collection, steps=320, update_time=0.003, rows=rows)
    first = collection.ratio.first  # the first update is granted here, then one per PER_UPDATE env steps
    ahead = [written - first - (updates - 1) * PER_UPDATE for written, updates in rows.log if written > first]
    assert max(ahead) <= 16 + FRAMES, ahead
    assert collection.updates >= 1 + (collection.env_steps - first - 16 - FRAMES) / PER_UPDATE


def test_a_slow_collector_holds_the_learner_back():
    rows, collection = make(delay=0.01)
    checks = []
    run(collection, steps=160, on_update=lambda: checks.append((collection.updates, collection.env_steps)), rows=rows)
    first = collection.ratio.first
    owed = [1 + (steps - first) // PER_UPDATE for _, steps in checks]
    assert all(updates <= limit for (updates, _), limit in zip(checks, owed)), checks
    assert collection.updates >= 1 + (collection.env_steps - first - FRAMES) // PER_UPDATE


@pytest.mark.parametrize("parallel", [True, False])
def test_pause_is_a_consistent_cut(parallel):
    rows, collection = make(delay=0.002, max_ahead=10_000)
    if not parallel:
        rows.collection = collection = SyncCollection(fake_collector(0.002), Ratio())
    with collection:
        while collection.env_steps < 64:
            owed = due(collection, rows, timeout=1.0)
            collection.update_done(min(owed, 1))  # an interrupted round: some granted updates left undone
            with collection.pause():
                for batch in collection.take_collected():  # the batches collected before the cut, none collected now
                    rows.write(batch)
                before = (rows.rows, collection.env_steps, collection.collected)
                time.sleep(0.01)  # the collector must not write meanwhile
                assert before == (rows.rows, collection.env_steps, collection.collected)
                assert rows.rows == collection.env_steps == collection.collected
                ratio = collection.ratio
                assert collection.updates == 1 + round((ratio.prev - ratio.first) * ratio.ratio)


def test_collection_resumes_after_a_pause_and_stops():
    rows, collection = make(max_ahead=10_000)
    collection.start()
    with collection.pause():
        frozen = collection.collected
    deadline = time.time() + 5
    while collection.collected <= frozen and time.time() < deadline:
        time.sleep(0.001)
    assert collection.collected > frozen
    collection.stop()
    assert not collection._thread.is_alive()


def test_a_collector_error_reaches_the_learner():
    def failing():
        yield from fake_collector(batches=1)
        raise FloatingPointError("the env broke")

    collection = ParallelCollection(failing(), TrainRatio(1, 1, PER_UPDATE), max_ahead=16)
    with pytest.raises(RuntimeError, match="collector thread failed") as caught:
        for _ in range(3):  # the ratio's first call grants one update before any batch arrived
            due(collection, timeout=5.0)
    assert isinstance(caught.value.__cause__, FloatingPointError)


@pytest.mark.parametrize("parallel", [True, False])
def test_the_run_ends_at_total_steps_with_every_update_it_earned(parallel):
    rows, ratio = Rows(), Ratio()
    kwargs = dict(max_ahead=64) if parallel else {}
    cls = ParallelCollection if parallel else SyncCollection
    rows.collection = collection = cls(fake_collector(), ratio, total_steps=100, **kwargs)
    deadline = time.time() + 20
    with collection:
        while True:
            assert time.time() < deadline, f"still collecting at {collection.env_steps} env steps"
            owed = due(collection, rows, timeout=1.0)
            for _ in range(owed):
                time.sleep(0.001)
                collection.update_done()
            if not owed and collection.finished:
                break
    assert collection.env_steps == rows.rows == 104  # 13 batches: the one that crosses 100 is the last
    assert collection.updates == 1 + (104 - ratio.first) // PER_UPDATE


def test_max_ahead_below_one_update_is_refused():
    with pytest.raises(ValueError, match="run.max_ahead=2"):
        ParallelCollection(fake_collector(), TrainRatio(1, 1, PER_UPDATE), max_ahead=2)


def test_sync_collection_collects_one_batch_per_call_and_keeps_the_ratio():
    rows = Rows()
    rows.collection = collection = SyncCollection(fake_collector(), Ratio())
    owed = [due(collection, rows) for _ in range(4)]
    assert owed == [1, 2, 2, 2] and rows.rows == collection.env_steps == 4 * FRAMES
    # each stamped with the env steps at the end of its batch (batches of FRAMES = 8 steps)
    assert collection.episodes() == [(4.0, 5, 8), (9.0, 5, 16), (14.0, 5, 16), (19.0, 5, 24), (24.0, 5, 32),
                                     (29.0, 5, 32)]


def test_ready_delays_the_first_update():
    rows, collection = make()
    collection.ready = lambda: collection.env_steps >= 40
    with collection:
        owed = 0
        while not owed:  # each call hands over what was collected; none is owed before 40 steps
            owed = due(collection, rows, timeout=5.0)
            assert owed == 0 or collection.env_steps >= 40
        assert owed == 1


def test_episodes_in_a_batch_of_streams():
    batch = TensorDict({"is_last": torch.tensor([[[False], [True]], [[True], [False]]]),
                        "episode_reward": torch.tensor([[[0.0], [3.0]], [[7.0], [0.0]]]),
                        "episode_length": torch.tensor([[[1], [2]], [[9], [0]]])}, [2, 2])
    assert episodes_in(batch) == [(3.0, 2), (7.0, 9)]


@pytest.mark.parametrize("setting, cuda, expected", [("auto", True, True), ("auto", False, False),
                                                      (True, False, True), (False, True, False)])
def test_use_parallel(setting, cuda, expected):
    assert use_parallel(setting, torch.device("cuda" if cuda else "cpu")) is expected
    with pytest.raises(ValueError, match="run.async_collect"):
        use_parallel("sometimes", torch.device("cpu"))


def test_episodes_drained_late_keep_the_step_of_their_batch():
    # a slow learner drains the episodes only after its round, while the collector runs up to max_ahead on
    rows, collection = make(max_ahead=32)
    drained = []
    run(collection, steps=160, update_time=0.004, on_update=lambda: drained.extend(collection.episodes()), rows=rows)
    drained += collection.episodes()
    assert len(drained) == collection.env_steps // 5 >= 32  # every episode once (the thread may pass 160)
    # fake episodes end at step 4, 9, 14, ... and their return is that step: the batch holding it ends at
    # the next multiple of FRAMES
    for value, length, step in drained:
        assert step == (int(value) // FRAMES + 1) * FRAMES, (value, step)


def test_rounds_are_capped_and_the_rest_stays_owed():
    # the collector runs 64 steps ahead (16 updates' worth); each call grants at most 3, the ratio loses none
    rows = Rows()
    rows.collection = collection = ParallelCollection(fake_collector(), Ratio(), max_ahead=64, round_updates=3)
    grants = []
    with collection:
        while collection.env_steps < 320:
            owed = due(collection, rows, timeout=1.0)
            grants.append(owed)
            time.sleep(0.01 * owed)  # a slow learner: the collector is ahead at (nearly) every call
            collection.update_done(owed)
        with collection.pause():
            for batch in collection.take_collected():  # the batches collected before the cut
                rows.write(batch)
            owed_at_cut = int((collection.env_steps - collection.ratio.prev) * collection.ratio.ratio)
            steps, updates = collection.env_steps, collection.updates
    assert max(grants) == 3 and grants.count(3) > 5
    # granted + still owed = what the ratio owes for the steps written (the first update, then 1 per 4 steps)
    assert updates + owed_at_cut == 1 + (steps - collection.ratio.first) // PER_UPDATE


def test_round_updates_below_one_is_refused():
    with pytest.raises(ValueError, match="round_updates must be >= 1"):
        ParallelCollection(fake_collector(), TrainRatio(1, 1, PER_UPDATE), max_ahead=8, round_updates=0)


def test_max_ahead_auto_is_four_batches_or_two_updates():
    from torchrl_dreamerv3 import compose_config
    from torchrl_dreamerv3.training.plan import make_plan

    def max_ahead(value, train_ratio, batch_size, batch_length, envs=1, per_collect=16):
        cfg = compose_config(["env=cartpole", "device=cpu", f"run.max_ahead={value}", f"run.train_ratio={train_ratio}",
                              f"batch_size={batch_size}", f"batch_length={batch_length}", f"run.envs={envs}",
                              f"run.steps_per_collect={per_collect}", "replay.size=100000"])
        return make_plan(cfg).collection.max_ahead

    assert max_ahead("auto", 256, 16, 32) == 64  # 4 x 16 steps; 1 update per 2 steps
    assert max_ahead("auto", 32, 16, 64, envs=16) == 1024  # Atari: 4 x 256 steps
    assert max_ahead("auto", 4, 16, 64) == 512  # 1 update per 256 steps: 2 updates' worth
    assert max_ahead(100, 256, 16, 32) == 100


@pytest.mark.parametrize("parallel", [True, False])
def test_the_cut_takes_what_was_collected_and_collects_nothing(parallel):
    rows = Rows()
    rows.collection = collection = (ParallelCollection(fake_collector(), Ratio(), max_ahead=16) if parallel
                                    else SyncCollection(fake_collector(), Ratio()))
    with collection:
        due(collection, rows, timeout=1.0)
        with collection.pause():
            for batch in collection.take_collected():
                rows.write(batch)
            assert list(collection.take_collected()) == []  # nothing new while paused (sync: never a new batch)
            assert rows.rows == collection.env_steps == collection.collected
            if not parallel:
                assert collection.collected == FRAMES  # the one batch receive() collected
