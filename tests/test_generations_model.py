"""DreamerV1 / V2 presets of the model components (issue 7, model side): shapes, latents, resets,
actor distributions, k4s2 CNNs, parameter counts, config errors and the user-encoder hook."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded, OneHot
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_dreamerv3.functional.actor_dists import StraightThroughOneHot, TanhNormal, TruncatedNormal
from torchrl_dreamerv3.modules import DreamerV3Policy, ModelConfig, make_dreamerv3, model_config
from torchrl_dreamerv3.nets import K4S2Decoder, K4S2Encoder
from torchrl_dreamerv3.rssm import DenseRSSM, GaussianLatent

GENERATIONS = ("dreamerv1", "dreamerv2", "dreamerv2_dmc")
SMALL = dict(deter=12, hidden=8, units=16, depth=2)  # keeps every V1/V2 switch, shrinks the widths
B, T = 2, 3


def small(generation: str, **overrides) -> ModelConfig:
    cfg = model_config(generation=generation, **SMALL, **overrides)
    return cfg.replace(stoch=5) if cfg.latent == "gaussian" else cfg.replace(stoch=3, classes=4)


def batch(agent, obs_shapes, b=B, t=T) -> TensorDict:
    cfg = agent.cfg
    data = {key: (torch.randint(0, 256, (b, t, *shape), dtype=torch.uint8) if len(shape) == 3
                  else torch.randn(b, t, *shape)) for key, shape in obs_shapes.items()}
    data.update(prev_deter=torch.zeros(b, t, cfg.deter), prev_stoch=torch.zeros(b, t, cfg.stoch, cfg.classes),
                prev_action=torch.zeros(b, t, agent.action_dim), is_first=torch.zeros(b, t, 1, dtype=torch.bool))
    data["is_first"][:, 0] = True
    return TensorDict(data, [b, t])


@pytest.mark.parametrize("generation", GENERATIONS)
@pytest.mark.parametrize("discrete", [True, False])
def test_generation_shapes(generation, discrete):
    cfg = small(generation)
    spec = OneHot(5) if discrete else Bounded(-1.0, 1.0, (3,))
    obs = {"image": (3, 64, 64), "state": (4,)}
    agent = make_dreamerv3(obs, spec, cfg)
    td = agent.world_model(batch(agent, obs))
    with set_exploration_type(ExplorationType.RANDOM):
        td = agent.critic(agent.actor(td))
    stats = 2 if cfg.latent == "gaussian" else cfg.classes
    expected = {
        "tokens": (B, T, agent.encoder.module.out_features), "deter": (B, T, cfg.deter),
        "stoch": (B, T, cfg.stoch, cfg.classes), "post_logits": (B, T, cfg.stoch, stats),
        "prior_logits": (B, T, cfg.stoch, stats), ("reco", "image"): (B, T, 3, 64, 64), ("reco", "state"): (B, T, 4),
        "reward_logits": (B, T, 1), "reward_pred": (B, T, 1), "cont_logits": (B, T, 1), "cont_prob": (B, T, 1),
        "value_logits": (B, T, 1), "state_value": (B, T, 1), "action": (B, T, agent.action_dim),
    }
    for key, shape in expected.items():
        assert td.get(key).shape == shape, (key, td.get(key).shape, shape)
        assert td.get(key).dtype == torch.float32 or key == "action", key
    assert td["reward_logits"] is td["reward_pred"] and td["value_logits"] is td["state_value"]
    if cfg.latent == "gaussian":
        assert (td["post_logits"][..., 1] > cfg.min_std).all()  # std = softplus + 0.1
    else:
        assert torch.equal(td["stoch"].sum(-1), torch.ones(B, T, cfg.stoch))  # one-hot
    if not cfg.cont_head:
        assert agent.parameter_counts()["con"] == 0 and torch.equal(td["cont_prob"], torch.ones(B, T, 1))


@pytest.mark.parametrize("generation", GENERATIONS)
def test_generation_acting_policy(generation):
    agent = make_dreamerv3({"image": (1, 64, 64)}, OneHot(4), small(generation))
    cfg = agent.cfg
    td = TensorDict({"image": torch.zeros(3, 1, 64, 64, dtype=torch.uint8), "is_first": torch.ones(3, 1, dtype=torch.bool),
                     "deter": torch.zeros(3, cfg.deter), "stoch": torch.zeros(3, cfg.stoch, cfg.classes),
                     "prev_action": torch.zeros(3, 4)}, [3])
    out = DreamerV3Policy(agent)(td)
    assert torch.equal(out["action"].sum(-1), torch.ones(3, dtype=out["action"].dtype))


def test_gaussian_latent_std_mapping():
    # SPEC_V1_V2 §9.7: softplus(0) + 0.1 = 0.793147; sigmoid2(0) + 0.1 = 1.1. At raw = 1:
    # softplus(1) + 0.1 = log(1 + e) + 0.1 = 1.413262.
    x = torch.tensor([0.5, -1.0, 0.0, 1.0])  # (mean_0, mean_1, raw_0, raw_1)
    stats = GaussianLatent(2).stats(x)
    assert stats.shape == (2, 2)
    torch.testing.assert_close(stats[:, 0], torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(stats[:, 1], torch.tensor([0.793147, 1.413262]), atol=1e-6, rtol=0)
    torch.testing.assert_close(GaussianLatent(2, "sigmoid2").stats(torch.zeros(4))[:, 1], torch.full((2,), 1.1))
    # through the RSSM: with a zero kernel the prior stats are the output bias
    rssm = DenseRSSM(2, 3, GaussianLatent(2), deter=4, hidden=3, cell="gru")
    with torch.no_grad():
        rssm.prior_out.weight.zero_()
        rssm.prior_out.bias.copy_(x)
    torch.testing.assert_close(rssm.prior(torch.randn(5, 4))[0], stats)
    assert rssm.sample(stats.expand(5, 2, 2)).shape == (5, 2, 1)


def test_first_action_masking_v1_vs_v2():
    torch.manual_seed(0)
    v2 = DenseRSSM(2, 3, GaussianLatent(4), deter=6, hidden=5, cell="ln_gru", mask_first_action=True)
    v1 = DenseRSSM(2, 3, GaussianLatent(4), deter=6, hidden=5, cell="ln_gru", mask_first_action=False)
    v1.load_state_dict(v2.state_dict())
    deter, stoch = torch.randn(1, 6), torch.randn(1, 4, 1)
    action, tokens, first = torch.tensor([[1.0, -1.0]]), torch.randn(1, 3), torch.ones(1, dtype=torch.bool)

    def next_deter(rssm, act):
        return rssm.observe_step(deter, stoch, act, tokens, first)[0]

    zero = torch.zeros_like(action)
    # both reset the state; V2 also drops the action, V1 keeps the recorded previous action
    torch.testing.assert_close(next_deter(v2, action), next_deter(v2, zero))
    assert not torch.allclose(next_deter(v1, action), next_deter(v1, zero))
    torch.testing.assert_close(next_deter(v1, zero), next_deter(v2, zero))
    # the sequence path agrees with the single steps
    d, s, stats = v1.observe(deter, stoch, action[:, None], tokens[:, None], first[:, None])
    torch.testing.assert_close(d[:, 0], next_deter(v1, action))


@pytest.mark.parametrize("generation,discrete", [("dreamerv1", False), ("dreamerv1", True), ("dreamerv2", False)])
def test_actor_action_is_reparameterised(generation, discrete):
    spec = OneHot(4) if discrete else Bounded(-1.0, 1.0, (3,))
    agent = make_dreamerv3({"state": (4,)}, spec, small(generation))
    cfg = agent.cfg
    td = TensorDict({"deter": torch.randn(6, cfg.deter), "stoch": torch.randn(6, cfg.stoch, cfg.classes)}, [6])
    with set_exploration_type(ExplorationType.RANDOM):
        action = agent.actor(td)["action"]
    (action * torch.randn_like(action)).sum().backward()
    grads = [p.grad for p in agent.actor.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    dist = agent.actor.get_dist(td)
    expected = StraightThroughOneHot if discrete else (TanhNormal if generation == "dreamerv1" else TruncatedNormal)
    assert isinstance(dist, expected) and dist.has_rsample
    assert dist.log_prob(action.detach()).shape == (6,) and dist.entropy().shape == (6,)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        mode = agent.actor(td.clone())["action"]
    assert mode.shape == action.shape
    if not discrete:
        assert mode.abs().max() <= 1.0


def test_v3_actor_is_unchanged():
    agent = make_dreamerv3({"state": (4,)}, OneHot(4), "debug")
    td = TensorDict({"deter": torch.randn(6, 8), "stoch": torch.randn(6, 2, 4)}, [6])
    dist = agent.actor.get_dist(td)
    assert type(dist).__name__ == "OneHotCategorical" and not dist.has_rsample


def test_truncated_normal_matches_numerical_integration():
    loc, scale = torch.tensor([0.3, -0.9]), torch.tensor([0.5, 1.1])
    dist = TruncatedNormal(loc, scale)
    grid = torch.linspace(-1.0, 1.0, 20001)
    density = torch.stack([TruncatedNormal(loc[i:i + 1], scale[i:i + 1]).log_prob(grid[:, None]).exp()
                           for i in range(2)], -1)  # per-dim densities (grid, 2)
    torch.testing.assert_close(torch.trapezoid(density, grid, dim=0), torch.ones(2), atol=1e-4, rtol=0)
    mean = torch.trapezoid(density * grid[:, None], grid, dim=0)
    entropy = -torch.trapezoid(density * density.log(), grid, dim=0).sum()
    torch.testing.assert_close(dist.mean, mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(dist.entropy(), entropy, atol=1e-4, rtol=0)
    # V2 at raw output 0: mean tanh(0) = 0, std 2 sigmoid(0) + 0.1 = 1.1 (SPEC_V1_V2 §9.7)
    sample = TruncatedNormal(torch.zeros(50000, 1), torch.full((50000, 1), 1.1)).sample()
    assert sample.abs().max() <= 1.0 - 1e-6 + 1e-7 and abs(sample.mean()) < 0.02
    torch.testing.assert_close(dist.mode, loc)


def test_tanh_normal_log_prob_and_sample_estimates():
    loc, scale = torch.tensor([[0.2, -0.4]]), torch.tensor([[0.3, 0.8]])
    dist = TanhNormal(loc, scale, samples=100)
    y = torch.tensor([[0.1, -0.5]])
    x = torch.atanh(y)
    expected = (torch.distributions.Normal(loc, scale).log_prob(x) - torch.log1p(-y.square())).sum(-1)
    torch.testing.assert_close(dist.log_prob(y), expected)
    torch.manual_seed(0)
    mode = dist.mode  # the most likely of 100 draws (reference SampleDist)
    assert mode.shape == (1, 2) and mode.abs().max() < 1.0
    assert dist.entropy().shape == (1,) and torch.isfinite(dist.entropy()).all()


def test_k4s2_encoder_decoder_sizes():
    assert K4S2Encoder({"image": (3, 64, 64)}, depth=32, cnn_act="relu").out_features == 1024
    enc = K4S2Encoder({"image": (1, 64, 64)}, depth=48, cnn_act="elu")
    assert enc.out_features == 1536
    assert enc(torch.zeros(2, 1, 64, 64, dtype=torch.uint8)).shape == (2, 1536)
    dec = K4S2Decoder({"image": (3, 64, 64)}, deter=200, stoch=30, classes=1, depth=4)
    assert [m.kernel_size for m in dec.cnn if isinstance(m, nn.ConvTranspose2d)] == [(5, 5), (5, 5), (6, 6), (6, 6)]
    assert dec(torch.zeros(2, 200), torch.zeros(2, 30, 1))[0].shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="64"):
        K4S2Encoder({"image": (3, 96, 96)})


def test_feature_sizes_and_v2_atari_parameter_count():
    # SPEC_V1_V2 §9.8: features V1 230, V2 Atari 1624, V2 DMC 1224
    feats = {g: model_config(generation=g) for g in GENERATIONS}
    assert {g: c.deter + c.stoch * c.classes for g, c in feats.items()} == {
        "dreamerv1": 230, "dreamerv2": 1624, "dreamerv2_dmc": 1224}
    agent = make_dreamerv3({"image": (1, 64, 64)}, OneHot(18), feats["dreamerv2"])
    counts = agent.parameter_counts()
    # RSSM by hand: img_in (1024+18)->600; LN-GRU (600+600)->1800 + LN(1800); img_out 600->600;
    # prior 600->1024; obs_out (600+1536)->600; posterior 600->1024 (all with bias)
    dense = lambda i, o: i * o + o  # noqa: E731
    dyn = dense(1042, 600) + dense(1200, 1800) + 2 * 1800 + dense(600, 600) + dense(600, 1024) \
        + dense(2136, 600) + dense(600, 1024)
    assert counts["dyn"] == dyn
    # heads: 4 x 400 ELU on the 1624-d feature, output 1 (reward, discount, critic) or 18 (actor)
    head = dense(1624, 400) + 3 * dense(400, 400)
    assert counts["rew"] == counts["con"] == counts["val"] == head + dense(400, 1)
    assert counts["pol"] == head + dense(400, 18)
    # encoder: four k4 s2 convs 1->48->96->192->384
    assert counts["enc"] == sum(16 * i * o + o for i, o in [(1, 48), (48, 96), (96, 192), (192, 384)])


def test_v3_defaults_unchanged():
    cfg = ModelConfig()
    assert (cfg.latent, cfg.cell, cfg.act, cfg.norm, cfg.init, cfg.cnn, cfg.head_dist, cfg.actor_dist) == (
        "categorical", "block_gru", "silu", "rms", "trunc_normal", "v3", "twohot", "auto")
    assert cfg.cont_head and cfg.mask_first_action and cfg.cnn_act is None
    assert model_config("debug") == model_config("debug", generation="dreamerv3")


@pytest.mark.parametrize("overrides,match", [
    (dict(latent="diagonal"), "latent"),
    (dict(cell="lstm"), "cell"),
    (dict(act="gelu"), "act"),
    (dict(cnn_act="tanh"), "cnn_act"),
    (dict(latent="gaussian", classes=4, cell="gru"), "classes=1"),
    (dict(latent="gaussian", classes=1), "block_gru"),
    (dict(mask_first_action=False), "mask_first_action"),
])
def test_bad_configs_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig().replace(**overrides)


def test_bad_generation_and_actor_errors():
    with pytest.raises(ValueError, match="unknown generation"):
        model_config(generation="dreamerv4")
    with pytest.raises(ValueError, match="onehot"):
        make_dreamerv3({"state": (4,)}, Bounded(-1.0, 1.0, (2,)), small("dreamerv2", actor_dist="onehot"))


class _FlatEncoder(nn.Module):
    def __init__(self, out_features=7):
        super().__init__()
        self.linear = nn.Linear(4, out_features)
        self.out_features = out_features

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize("generation", ["dreamerv3", "dreamerv2"])
def test_user_encoder(generation):
    cfg = model_config("debug") if generation == "dreamerv3" else small(generation)
    obs = {"state": (4,)}
    encoder = TensorDictModule(_FlatEncoder(), in_keys=["state"], out_keys=["tokens"])
    agent = make_dreamerv3(obs, OneHot(3), cfg, encoder=encoder)
    assert agent.encoder is encoder and agent.rssm.token_dim == 7
    td = agent.world_model(batch(agent, obs))
    assert td["tokens"].shape == (B, T, 7) and td["deter"].shape == (B, T, cfg.deter)
    # without out_features the width must be given
    bare = TensorDictModule(nn.Sequential(nn.Linear(4, 5), nn.ELU()), in_keys=["state"], out_keys=["tokens"])
    with pytest.raises(ValueError, match="token_dim"):
        make_dreamerv3(obs, OneHot(3), cfg, encoder=bare)
    assert make_dreamerv3(obs, OneHot(3), cfg, encoder=bare, token_dim=5).rssm.token_dim == 5
    wrong_key = TensorDictModule(_FlatEncoder(), in_keys=["state"], out_keys=["embed"])
    with pytest.raises(ValueError, match="tokens"):
        make_dreamerv3(obs, OneHot(3), cfg, encoder=wrong_key)
