"""benchmarks/same_weights.py and init_internals.py: the reference's batch in our layout, and the reference's
parameters (names and shapes as its agent holds them, tests/data/reference_param_shapes_kfm_size1m.json)
mapped one to one onto ours."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_scripts import load_benchmark

SHAPES = json.loads((Path(__file__).parent / "data" / "reference_param_shapes_kfm_size1m.json").read_text())["shapes"]
KFM = ["env=atari100k", "env.task=kung_fu_master", "size=size1m", "batch_size=16", "batch_length=32"]


@pytest.fixture(scope="module")
def same_weights():
    return load_benchmark("same_weights")


@pytest.fixture(scope="module")
def init_internals():
    return load_benchmark("init_internals")


def _reference_batch(B=2, L=4, actions=14):
    """A batch as the reference's stream yields it: images HWC, integer actions, a reward per row."""
    rng = np.random.default_rng(0)
    is_first = np.zeros((B, L), bool)
    is_first[:, 0] = True
    action = rng.integers(0, actions, (B, L)).astype(np.int32)
    action[0, 0] = actions - 1  # the action count is read from the largest action seen
    return {"image": rng.integers(0, 256, (B, L, 64, 64, 3)).astype(np.uint8), "action": action,
            "reward": np.arange(B * L, dtype=np.float32).reshape(B, L), "is_first": is_first,
            "is_last": np.zeros((B, L), bool), "is_terminal": np.zeros((B, L), bool),
            "dyn/deter": rng.normal(size=(B, L, 512)).astype(np.float32),
            "dyn/stoch": np.eye(4, dtype=np.float32)[rng.integers(0, 4, (B, L, 32))]}


def test_the_reference_batch_in_our_replay_layout(init_internals):
    batch = _reference_batch()
    learner = init_internals.build_learner(batch, KFM, seed=0)
    window = init_internals.window_from_reference(batch, learner.modules_)
    assert window.batch_size == torch.Size([2, 4])
    # channels first, the same pixels
    assert torch.equal(window["pixels"][1, 2, 0], torch.from_numpy(batch["image"][1, 2, :, :, 0]))
    assert torch.equal(window["action"].argmax(-1), torch.from_numpy(batch["action"]).long())
    # our row t holds the reward that follows its action: the reference's reward of row t + 1
    assert window["next", "reward"][0, :3, 0].tolist() == [1.0, 2.0, 3.0]
    assert window["is_first"][:, 0].all() and not window["is_first"][:, 1:].any()
    assert torch.equal(window["deter"], torch.from_numpy(batch["dyn/deter"]))


def test_every_parameter_maps_one_to_one_onto_the_reference(same_weights, init_internals):
    learner = init_internals.build_learner(_reference_batch(), KFM, seed=0)
    params = {name: np.random.default_rng(i).normal(size=shape).astype(np.float32)
              for i, (name, shape) in enumerate(SHAPES.items())}
    mapping = same_weights.load_reference_params(learner, params)
    used = [ref for ref, _ in mapping.values()]
    assert len(used) == len(set(used)), "two of our parameters read the same reference parameter"
    assert set(used) == set(SHAPES), f"reference parameters left unread: {sorted(set(SHAPES) - set(used))}"
    state = learner.state_dict()
    for ours, (ref, kind) in mapping.items():  # the values arrived, converted
        torch.testing.assert_close(state[ours], same_weights.to_ours(params[ref], kind), rtol=0, atol=0)
    # the conversions: (in, out) kernels transposed, HWIO conv kernels to OIHW, the decoder's convs reversed
    dec = learner.modules_.decoder.module
    torch.testing.assert_close(dec.sp1.weight.detach(), torch.from_numpy(params["dec/sp1/kernel"]).T)
    torch.testing.assert_close(dec.convs[0].weight.detach(),
                               torch.from_numpy(params["dec/conv2/kernel"]).permute(3, 2, 0, 1))
    torch.testing.assert_close(learner.modules_.rssm.core.gates.weight.detach(), torch.from_numpy(params["dyn/dyngru/kernel"]))
    # the slow critic gets the reference's slow value net, not the online one
    slow = state["value_loss.target_critic_network_params.module.head.out.weight"]
    torch.testing.assert_close(slow, torch.from_numpy(params["slowval/head/logits/kernel"]).T)


def test_a_missing_reference_parameter_is_named(same_weights, init_internals):
    learner = init_internals.build_learner(_reference_batch(), KFM, seed=0)
    params = {name: np.zeros(shape, np.float32) for name, shape in SHAPES.items() if name != "dyn/obslogit/bias"}
    with pytest.raises(KeyError, match="post_out.bias"):
        same_weights.load_reference_params(learner, params)
