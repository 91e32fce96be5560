"""TensorDictModule contracts: keys in/out, remapping, shapes over (B, T), parameter counts, the acting policy."""
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.data import Bounded, Categorical, OneHot

from torchrl_dreamerv3.modules import (
    DreamerKeys,
    DreamerV3Policy,
    make_dreamerv3,
    make_state_primer,
    model_config,
)

IMG = {"pixels": (3, 64, 64)}
VEC = {"observation": (17,)}


def _obs(shapes, *batch):
    out = {}
    for key, shape in shapes.items():
        if len(shape) == 3:
            out[key] = torch.randint(0, 256, (*batch, *shape), dtype=torch.uint8)
        else:
            out[key] = torch.randn(*batch, *shape)
    return out


def _sequence(agent, shapes, B=2, T=3):
    c = agent.cfg
    return TensorDict(
        {
            **_obs(shapes, B, T),
            "is_first": torch.zeros(B, T, 1, dtype=torch.bool),
            "prev_action": torch.zeros(B, T, agent.action_dim),
            "prev_deter": torch.zeros(B, T, c.deter),
            "prev_stoch": torch.zeros(B, T, c.stoch, c.classes),
        },
        batch_size=[B, T],
    )


# (obs shapes, action spec, preset) -> counts from the reference code (enc, dyn, dec, rew, con, pol, val, total)
REFERENCE_COUNTS = [
    (IMG, OneHot(6), "debug", (3_752, 783, 6_339, 189, 153, 198, 189, 11_603)),
    (IMG, OneHot(6), "size1m", (14_304, 376_704, 80_595, 57_663, 41_153, 49_926, 66_111, 686_456)),
    (IMG, OneHot(6), "size12m", (220_416, 5_979_648, 1_272_003, 721_407, 656_129, 789_510, 853_503, 10_492_616)),
    (VEC, Bounded(-1, 1, (6,)), "size1m", (9_664, 364_416, 50_641, 57_663, 41_153, 50_316, 66_111, 639_964)),
    (VEC, Bounded(-1, 1, (6,)), "size12m", (136_960, 5_783_040, 792_337, 721_407, 656_129, 791_052, 853_503, 9_734_428)),
    ({"pixels": (1, 96, 96)}, OneHot(18), "size1m", (13_904, 397_952, 142_273, 57_663, 41_153, 50_706, 66_111, 769_762)),
]


@pytest.mark.parametrize("shapes, spec, size, expected", REFERENCE_COUNTS)
def test_parameter_counts_equal_reference(shapes, spec, size, expected):
    counts = make_dreamerv3(shapes, spec, size).parameter_counts()
    names = ("enc", "dyn", "dec", "rew", "con", "pol", "val", "total")
    assert {n: counts[n] for n in names} == dict(zip(names, expected))


@pytest.mark.parametrize("shapes", [IMG, VEC, {**IMG, **VEC}])
def test_world_model_writes_documented_keys_over_batch_and_time(shapes):
    agent = make_dreamerv3(shapes, OneHot(4), "debug")
    c = agent.cfg
    td = agent.world_model(_sequence(agent, shapes, B=2, T=3))
    assert td["tokens"].shape[:2] == (2, 3)
    assert td["deter"].shape == (2, 3, c.deter)
    assert td["stoch"].shape == (2, 3, c.stoch, c.classes)
    assert td["post_logits"].shape == td["prior_logits"].shape == (2, 3, c.stoch, c.classes)
    assert td["reward_logits"].shape == (2, 3, c.bins) and td["reward_pred"].shape == (2, 3, 1)
    assert td["cont_logits"].shape == td["cont_prob"].shape == (2, 3, 1)
    for key, shape in shapes.items():
        assert td["reco", key].shape == (2, 3, *shape)
        assert td["reco", key].dtype == torch.float32


def test_zero_init_heads_predict_exactly_zero():
    agent = make_dreamerv3(IMG, OneHot(4), "size1m")
    td = agent.world_model(_sequence(agent, IMG))
    assert torch.equal(td["reward_pred"], torch.zeros_like(td["reward_pred"]))
    td = agent.critic(td)
    assert torch.equal(td["state_value"], torch.zeros_like(td["state_value"]))


def test_actor_discrete_and_continuous():
    disc = make_dreamerv3(VEC, OneHot(5), "debug")
    td = disc.actor(TensorDict(deter=torch.randn(4, 3, 8), stoch=torch.rand(4, 3, 2, 4), batch_size=[4, 3]))
    assert td["action"].shape == (4, 3, 5) and torch.equal(td["action"].sum(-1), torch.ones(4, 3))
    cont = make_dreamerv3(VEC, Bounded(-1, 1, (2,)), "debug")
    td = cont.actor(TensorDict(deter=torch.randn(4, 8), stoch=torch.rand(4, 2, 4), batch_size=[4]))
    assert td["action"].shape == (4, 2)
    assert ((td["scale"] >= 0.1) & (td["scale"] <= 1.0)).all() and (td["loc"].abs() <= 1).all()


def test_keys_are_remappable():
    keys = DreamerKeys(deter="h", stoch="z", tokens="emb", is_first="reset", prev_action="a_prev",
                       prev_deter="h_prev", prev_stoch="z_prev", reward_pred="r_hat")
    agent = make_dreamerv3(VEC, OneHot(3), "debug", keys=keys)
    c = agent.cfg
    td = TensorDict(observation=torch.randn(2, 3, 17), reset=torch.zeros(2, 3, 1, dtype=torch.bool),
                    a_prev=torch.zeros(2, 3, 3), h_prev=torch.zeros(2, 3, c.deter),
                    z_prev=torch.zeros(2, 3, c.stoch, c.classes), batch_size=[2, 3])
    td = agent.world_model(td)
    assert {"emb", "h", "z", "r_hat"} <= set(td.keys()) and "deter" not in td.keys()


def test_swapping_the_encoder_for_a_user_module_with_the_same_keys():
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    token_dim = agent.encoder.module.out_features
    agent.world_model[0] = TensorDictModule(torch.nn.Linear(17, token_dim), in_keys=["observation"], out_keys=["tokens"])
    td = agent.world_model(_sequence(agent, VEC))
    assert td["deter"].shape[:2] == (2, 3)


def test_bad_action_specs_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="Categorical"):
        make_dreamerv3(VEC, Categorical(4), "debug")
    with pytest.raises(ValueError, match="unknown size preset 'size3m'"):
        make_dreamerv3(VEC, OneHot(4), "size3m")
    with pytest.raises(ValueError, match="unknown model config keys"):
        model_config("debug", detr=3)


def test_missing_key_names_the_key():
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    td = _sequence(agent, VEC).exclude("prev_deter")
    td["tokens"] = torch.randn(2, 3, agent.encoder.module.out_features)
    with pytest.raises(KeyError, match="prev_deter"):
        agent.observe(td)


def test_policy_carries_state_and_resets_on_is_first():
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    policy = DreamerV3Policy(agent)
    c = agent.cfg
    obs = torch.randn(2, 17)
    td = TensorDict(observation=obs, is_first=torch.tensor([[True], [False]]), deter=torch.randn(2, c.deter),
                    stoch=torch.rand(2, c.stoch, c.classes), prev_action=torch.eye(3)[:2], batch_size=[2])
    out = policy(td.clone())
    assert out["deter"].shape == (2, c.deter) and torch.equal(out["prev_action"], out["action"].float())
    fresh = TensorDict(observation=obs, is_first=torch.tensor([[True], [True]]), deter=torch.zeros(2, c.deter),
                       stoch=torch.zeros(2, c.stoch, c.classes), prev_action=torch.zeros(2, 3), batch_size=[2])
    ref = policy(fresh)
    torch.testing.assert_close(out["deter"][0], ref["deter"][0])  # is_first: carry ignored
    assert not torch.allclose(out["deter"][1], ref["deter"][1])  # otherwise the carry matters


class _PushRightWhenDeterSumPositive(torch.nn.Module):
    """A policy that is not the agent's: reads the posterior deter, writes a one-hot action."""

    def forward(self, deter, stoch):
        return torch.nn.functional.one_hot((deter.sum(-1) > 0).long() + 1, 3).float()


def test_policy_collects_with_another_actor_on_the_posterior():
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    other = TensorDictModule(_PushRightWhenDeterSumPositive(), in_keys=["deter", "stoch"], out_keys=["action"])
    policy = DreamerV3Policy(agent, actor=other)
    c = agent.cfg
    td = TensorDict(observation=torch.randn(4, 17), is_first=torch.ones(4, 1, dtype=torch.bool),
                    deter=torch.zeros(4, c.deter), stoch=torch.zeros(4, c.stoch, c.classes),
                    prev_action=torch.zeros(4, 3), batch_size=[4])
    out = policy(td)
    expected = _PushRightWhenDeterSumPositive()(out["deter"], out["stoch"])  # computed on the new posterior
    assert torch.equal(out["action"], expected) and torch.equal(out["prev_action"], expected)
    assert out["action"][:, 0].sum() == 0  # never the agent's sampled action 0
    bad = TensorDictModule(_PushRightWhenDeterSumPositive(), in_keys=["deter", "stoch"], out_keys=["act"])
    with pytest.raises(ValueError, match="must write the action key 'action'"):
        DreamerV3Policy(agent, actor=bad)


def test_state_primer_specs():
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    primer = make_state_primer(agent)
    c = agent.cfg
    assert primer.primers["deter"].shape == (c.deter,)
    assert primer.primers["stoch"].shape == (c.stoch, c.classes)
    assert primer.primers["prev_action"].shape == (3,)


def test_a_field_shared_by_the_agent_keys_and_a_loss_names_the_same_entry():
    """The learner bridges DreamerKeys and each loss's _AcceptedKeys by field name (agent_keys_for)."""
    import dataclasses

    from torchrl_dreamerv3.agent.learner import agent_keys_for
    from torchrl_dreamerv3.modules import DreamerKeys
    from torchrl_dreamerv3.objectives import ActorLoss, ValueLoss, WorldModelLoss
    from torchrl_dreamerv3.objectives.dreamerv1 import DreamerV1ActorLoss, DreamerV1ValueLoss, DreamerV1WorldModelLoss

    agent = {f.name: f.default for f in dataclasses.fields(DreamerKeys)}
    for loss in (WorldModelLoss, ActorLoss, ValueLoss, DreamerV1WorldModelLoss, DreamerV1ActorLoss, DreamerV1ValueLoss):
        accepted = {f.name: f.default for f in dataclasses.fields(loss._AcceptedKeys)}
        shared = set(accepted) & set(agent)
        assert shared and all(accepted[k] == agent[k] for k in shared), (loss.__name__, shared)
    renamed = DreamerKeys(deter="h", stoch="z", value_logits="v")
    mapped = agent_keys_for(ValueLoss.__new__(ValueLoss), renamed)
    assert mapped["deter"] == "h" and mapped["stoch"] == "z" and mapped["value_logits"] == "v"
    assert "reward" not in mapped  # a loss-only entry keeps the loss's own name
