"""Loss modules: values against formulas, the gradient-flow table of SPEC §6.5, keys, scales, state."""
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded, OneHot
from torchrl.modules import OneHotCategorical, ProbabilisticActor
from torchrl.objectives import SoftUpdate

from torchrl_dreamerv3.functional import binary_nll, dyn_rep_kl, symexp_twohot_bins, symlog, twohot_mean, twohot_nll
from torchrl_dreamerv3.functional import replay_return
from torchrl_dreamerv3.modules import make_dreamerv3
from torchrl_dreamerv3.objectives import ActorLoss, ValueLoss, WorldModelLoss
from torchrl_dreamerv3.replay import split_context
from torchrl_dreamerv3.training import DreamerV3Learner

IMG, VEC = {"pixels": (3, 16, 16)}, {"observation": (5,)}


def _window(agent, shapes, B=2, T=4, seed=0):
    """A random replay window (B, T + 1) in the collector's layout."""
    g = torch.Generator().manual_seed(seed)
    c, L = agent.cfg, T + 1
    obs = {}
    for key, shape in shapes.items():
        obs[key] = (torch.randint(0, 256, (B, L, *shape), generator=g, dtype=torch.uint8) if len(shape) == 3
                    else torch.randn(B, L, *shape, generator=g))
    actions = torch.randn(B, L, agent.action_dim, generator=g)
    if agent.discrete:
        actions = torch.nn.functional.one_hot(actions.argmax(-1), agent.action_dim).float()
    is_last = torch.zeros(B, L, 1, dtype=torch.bool)
    is_last[0, min(2, L - 2)] = True
    is_first = torch.roll(is_last, 1, 1)
    is_first[:, 0] = True
    stoch = torch.nn.functional.one_hot(torch.randint(0, c.classes, (B, L, c.stoch), generator=g), c.classes).float()
    return TensorDict({
        **obs, "action": actions, "is_first": is_first, "is_last": is_last, "is_terminal": is_last.clone(),
        "deter": torch.randn(B, L, c.deter, generator=g), "stoch": stoch,
        ("next", "reward"): torch.randn(B, L, 1, generator=g),
    }, batch_size=[B, L])


def _grad_owners(agent, loss):
    for p in agent.parameters():
        p.grad = None
    loss.backward(retain_graph=True)
    parts = dict(enc=agent.encoder, dyn=agent.rssm, dec=agent.decoder, rew=agent.reward, con=agent.cont,
                 pol=agent.actor, val=agent.critic)
    return {name for name, part in parts.items() if any(p.grad is not None and p.grad.abs().sum() > 0
                                                         for p in part.parameters())}


# ---------------------------------------------------------------- world model

class _FixedWorldModel(nn.Module):
    """Writes given tensors: a stand-in world model to check the loss arithmetic."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, td):
        for key, value in self.outputs.items():
            td.set(key, value)
        return td


def test_world_model_loss_values_match_formulas():
    B, T, S, C, n = 2, 3, 4, 5, 7
    g = torch.Generator().manual_seed(0)
    bins = symexp_twohot_bins(n)
    out = {
        "post_logits": torch.randn(B, T, S, C, generator=g), "prior_logits": torch.randn(B, T, S, C, generator=g),
        ("reco", "pixels"): torch.rand(B, T, 3, 4, 4, generator=g), ("reco", "vec"): torch.randn(B, T, 2, generator=g),
        "reward_logits": torch.randn(B, T, n, generator=g), "cont_logits": torch.randn(B, T, 1, generator=g),
    }
    data = TensorDict({
        "pixels": torch.randint(0, 256, (B, T, 3, 4, 4), generator=g, dtype=torch.uint8),
        "vec": 10 * torch.randn(B, T, 2, generator=g), "reward": torch.randn(B, T, 1, generator=g),
        "is_terminal": torch.tensor([[[False], [True], [False]], [[False], [False], [False]]]),
    }, batch_size=[B, T])
    loss = WorldModelLoss(_FixedWorldModel(out), ["pixels", "vec"], rec=2.0, rew=3.0, con=0.5, dyn=1.5, rep=0.1)
    got = loss(data)
    rec = ((out["reco", "pixels"] - data["pixels"] / 255.0) ** 2).sum((-3, -2, -1)) \
        + ((out["reco", "vec"] - symlog(data["vec"])) ** 2).sum(-1)
    cont_target = (~data["is_terminal"]).float().squeeze(-1) * (1 - 1 / 333)
    dyn, rep = dyn_rep_kl(out["post_logits"], out["prior_logits"], 0.01, 1.0)
    torch.testing.assert_close(got["loss_rec"], 2.0 * rec.mean())
    torch.testing.assert_close(got["loss_rew"], 3.0 * twohot_nll(out["reward_logits"], data["reward"].squeeze(-1), bins).mean())
    torch.testing.assert_close(got["loss_con"], 0.5 * binary_nll(out["cont_logits"].squeeze(-1), cont_target).mean())
    torch.testing.assert_close(got["loss_dyn"], 1.5 * dyn.mean())
    torch.testing.assert_close(got["loss_rep"], 0.1 * rep.mean())
    assert {k for k in got.keys() if k.startswith("loss_")} == {"loss_rec", "loss_rew", "loss_con", "loss_dyn", "loss_rep"}


def test_a_term_without_scale_fails():
    loss = WorldModelLoss(_FixedWorldModel({}), [])
    del loss.scales["rep"]
    with pytest.raises(KeyError, match="every term needs a named scale"):
        loss._scaled({"rec": torch.ones(1), "rep": torch.ones(1)}, {})


def test_set_keys_and_missing_key_errors():
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    loss = WorldModelLoss(agent.world_model, ["observation"])
    data = split_context(_window(agent, VEC))
    data.rename_key_("reward", "rwd")
    with pytest.raises(KeyError, match="'reward'"):
        loss(data.clone())
    loss.set_keys(reward="rwd")
    assert torch.isfinite(loss(data.clone())["loss_rew"])
    with pytest.raises(ValueError, match="not an accepted tensordict key"):
        loss.set_keys(rewrd="x")


# ---------------------------------------------------------------- actor / value with a stand-in world model

class _Step(nn.Module):
    def forward(self, deter, stoch, action):
        return deter + 1.0, stoch, torch.zeros_like(stoch)


class _Affine(nn.Module):
    """Prediction a * deter + b, returned twice (as logits placeholder and prediction)."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, deter, stoch):
        pred = self.a * deter + self.b
        return pred, pred


class _TwoHotCritic(nn.Module):
    def __init__(self, bins=7):
        super().__init__()
        self.lin = nn.Linear(1, bins)
        self.register_buffer("bins", symexp_twohot_bins(bins))

    def forward(self, deter, stoch):
        logits = self.lin(deter)
        return logits, twohot_mean(logits, self.bins).unsqueeze(-1)


class _Logits(nn.Module):
    def __init__(self, n=3):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.3, -0.2, 0.1])[:n])

    def forward(self, deter, stoch):
        return self.logits.expand(*deter.shape[:-1], -1)


def _stand_in_world(horizon=4):
    """A tiny MLP-free 'world model' with the same keys: the actor/value losses must train against it."""
    state = ["deter", "stoch"]
    step = TensorDictModule(_Step(), in_keys=["deter", "stoch", "action"], out_keys=["deter", "stoch", "prior_logits"])
    reward = TensorDictModule(_Affine(0.1, 0.0), in_keys=state, out_keys=["reward_logits", "reward_pred"])
    cont = TensorDictModule(_Affine(0.0, 0.9), in_keys=state, out_keys=["cont_logits", "cont_prob"])
    critic = TensorDictModule(_TwoHotCritic(), in_keys=state, out_keys=["value_logits", "state_value"])
    actor = ProbabilisticActor(TensorDictModule(_Logits(), in_keys=state, out_keys=["logits"]), in_keys=["logits"],
                               out_keys=["action"], distribution_class=OneHotCategorical,
                               default_interaction_type="random")
    return actor, critic, reward, cont, step


def _literal_returns(r, c, v, lam):
    H = r.shape[-1] - 1
    R = [v[..., H]]
    for i in reversed(range(H)):
        R.insert(0, r[..., i + 1] + c[..., i + 1] * ((1 - lam) * v[..., i + 1] + lam * R[0]))
    return torch.stack(R[:-1], -1)


def test_actor_and_value_losses_match_formulas_on_a_stand_in_world_model():
    torch.manual_seed(0)
    actor, critic, reward, cont, step = _stand_in_world()
    H, B, T = 4, 2, 3
    actor_loss = ActorLoss(actor, critic, reward, cont, step, horizon=H)
    value_loss = ValueLoss(critic, slowreg=1.0)
    data = TensorDict(deter=torch.randn(B, T, 1), stoch=torch.zeros(B, T, 1, 2),
                      reward=torch.randn(B, T, 1), is_terminal=torch.zeros(B, T, 1, dtype=torch.bool),
                      is_last=torch.tensor([[[False], [True], [False]], [[False], [False], [False]]]),
                      batch_size=[B, T])
    out = actor_loss(data)
    traj = data["imagined"]
    assert traj.shape == (B, T, H + 1)
    d = traj["deter"].squeeze(-1)
    torch.testing.assert_close(d, data["deter"] + torch.arange(H + 1.0))  # s_0 = start, then the prior steps
    r, c = 0.1 * d, torch.full_like(d, 0.9)
    with torch.no_grad():
        v = critic(traj.clone())["state_value"].squeeze(-1)
    R = _literal_returns(r, c, v, 0.95)
    torch.testing.assert_close(traj["return"][..., :H], R)
    weight = 0.9 ** torch.arange(1.0, H + 2)
    torch.testing.assert_close(traj["weight"], weight.expand_as(d))
    lo = 0.01 * torch.quantile(R.flatten(), 0.05)
    hi = 0.01 * torch.quantile(R.flatten(), 0.95)
    scale = torch.clamp(hi - lo, min=1.0)
    logp = torch.log_softmax(actor.module[0].module.logits, -1)
    action_logp = (traj["action"][..., :H, :] * logp).sum(-1)
    entropy = -(logp.exp() * logp).sum()
    expected = -(weight[:H] * (action_logp * (R - v[..., :H]) / scale + 3e-4 * entropy)).mean()
    torch.testing.assert_close(out["loss_policy"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(actor_loss.normalizer.lo, lo)

    vout = value_loss(data)
    bins = symexp_twohot_bins(7)
    logits = critic.module.lin(traj["deter"][..., :H, :])
    imag = weight[:H] * (twohot_nll(logits, R, bins) + twohot_nll(logits, v[..., :H], bins))
    torch.testing.assert_close(vout["loss_value"], imag.mean(), rtol=1e-5, atol=1e-6)
    rlogits = critic.module.lin(data["deter"])[:, :-1]
    vrep = twohot_mean(rlogits, bins)
    targets = replay_return(data["reward"].squeeze(-1), data["is_terminal"].squeeze(-1),
                            data["is_last"].squeeze(-1), traj["return"][..., 0], 0.95, 1 - 1 / 333)
    rep = (~data["is_last"].squeeze(-1)[:, :-1]).float() * (twohot_nll(rlogits, targets, bins) + twohot_nll(rlogits, vrep, bins))
    torch.testing.assert_close(vout["loss_repval"], 0.3 * rep.mean(), rtol=1e-5, atol=1e-6)


def test_return_normalizer_updates_only_in_training_and_round_trips():
    actor, critic, reward, cont, step = _stand_in_world()
    loss = ActorLoss(actor, critic, reward, cont, step, horizon=3)
    data = TensorDict(deter=10 * torch.randn(2, 3, 1), stoch=torch.zeros(2, 3, 1, 2), batch_size=[2, 3])
    loss.eval()
    loss(data.clone())
    assert loss.normalizer.lo == 0 and loss.normalizer.hi == 0
    loss.train()
    loss(data.clone())
    assert loss.normalizer.hi != 0
    other = ActorLoss(*_stand_in_world(), horizon=3)
    other.load_state_dict(loss.state_dict())
    assert other.normalizer.hi == loss.normalizer.hi and other.normalizer.lo == loss.normalizer.lo


def test_slow_critic_follows_by_soft_update():
    _, critic, *_ = _stand_in_world()
    loss = ValueLoss(critic)
    updater = SoftUpdate(loss, tau=0.02)
    slow_before = loss.target_critic_network_params["module", "lin", "weight"].clone()
    torch.testing.assert_close(slow_before, critic.module.lin.weight.detach())
    with torch.no_grad():
        critic.module.lin.weight.add_(1.0)
    updater.step()
    torch.testing.assert_close(loss.target_critic_network_params["module", "lin", "weight"], slow_before + 0.02)
    restored = ValueLoss(_stand_in_world()[1])
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored.target_critic_network_params["module", "lin", "weight"], slow_before + 0.02)


# ---------------------------------------------------------------- gradient flow table (SPEC §6.5) on the real agent

@pytest.mark.parametrize("shapes, spec", [(IMG, OneHot(3)), (VEC, Bounded(-1, 1, (2,)))])
def test_gradient_flow_table(shapes, spec):
    torch.manual_seed(0)
    agent = make_dreamerv3(shapes, spec, "debug")
    with torch.no_grad():  # zero-initialised output layers would block every gradient behind them
        for p in [*agent.reward.parameters(), *agent.critic.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    learner = DreamerV3Learner(agent)
    losses, _ = learner.losses(_window(agent, shapes))
    wm = {"enc", "dyn", "dec", "rew", "con"}
    for key in ("loss_rec",):
        assert _grad_owners(agent, losses[key]) == {"enc", "dyn", "dec"}
    assert _grad_owners(agent, losses["loss_rew"]) == {"enc", "dyn", "rew"}
    assert _grad_owners(agent, losses["loss_con"]) == {"enc", "dyn", "con"}
    assert _grad_owners(agent, losses["loss_dyn"]) <= wm - {"dec", "rew", "con"}
    assert _grad_owners(agent, losses["loss_policy"]) == {"pol"}
    assert _grad_owners(agent, losses["loss_value"]) == {"val"}
    assert _grad_owners(agent, losses["loss_repval"]) == {"val", "enc", "dyn"}


def test_dyn_trains_prior_not_posterior_and_rep_the_opposite():
    torch.manual_seed(0)
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    loss = WorldModelLoss(agent.world_model, ["observation"], free_nats=0.0)
    data = split_context(_window(agent, VEC, T=1))  # one step: no recurrence mixes the two paths
    out = loss(data)
    prior_params = list(agent.rssm.prior_net.parameters()) + list(agent.rssm.prior_out.parameters())
    post_params = list(agent.rssm.post_out.parameters())
    for name, has, hasnt in (("loss_dyn", prior_params, post_params), ("loss_rep", post_params, prior_params)):
        for p in agent.parameters():
            p.grad = None
        out[name].backward(retain_graph=True)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in has), name
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in hasnt), name
