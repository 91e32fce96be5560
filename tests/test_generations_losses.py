"""DreamerV1/V2 losses, learner, replay split and configs (issues 7 and 12; SPEC_V1_V2 §9 values).

Stand-in world models make the reference numbers exact; tiny V1/V2 agents check where gradients go.
DreamerV1/V2 have loss classes of their own (objectives/dreamerv1.py, dreamerv2.py); the learner builds
a generation from its registry entry (agent/generations.py), DreamerV3 by default.
"""
import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded, OneHot
from torchrl.modules import OneHotCategorical, ProbabilisticActor

from torchrl_dreamerv3.modules import DreamerKeys, DreamerV3Policy, make_dreamerv3, model_config
from torchrl_dreamerv3.objectives import (
    ActorLoss,
    DreamerV1ActorLoss,
    DreamerV1ValueLoss,
    DreamerV1WorldModelLoss,
    DreamerV2ActorLoss,
    DreamerV2ValueLoss,
    DreamerV2WorldModelLoss,
    ValueLoss,
    WorldModelLoss,
)
from torchrl_dreamerv3.optim import GroupAdam
from torchrl_dreamerv3.replay import split_context
from torchrl_dreamerv3.training import DreamerV3Learner

from test_objectives import VEC, _window

TINY = dict(deter=8, hidden=8, units=8, depth=2)


def _agent(generation, spec, shapes=VEC, **overrides):
    torch.manual_seed(0)
    cfg = model_config(generation=generation, **{**TINY, "stoch": 3 if generation == "dreamerv1" else 2,
                                                 **({} if generation == "dreamerv1" else {"classes": 4}), **overrides})
    return make_dreamerv3(shapes, spec, cfg)


class _Writes(nn.Module):
    """A stand-in world model that writes fixed tensors."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, td):
        for key, value in self.outputs.items():
            td.set(key, value)
        return td


def _wm_data(B, T, **extra):
    return TensorDict({"reward": torch.zeros(B, T, 1), "is_terminal": torch.zeros(B, T, 1, dtype=torch.bool),
                       "v": torch.zeros(B, T, 2), **extra}, [B, T])


def _wm_outputs(post, prior, B, T):
    return {"post_logits": post, "prior_logits": prior, "reward_logits": torch.zeros(B, T, 1),
            "cont_logits": torch.zeros(B, T, 1), ("reco", "v"): torch.zeros(B, T, 2)}


# ---------------------------------------------------------------- world model

def test_v1_joint_gaussian_kl_free_nats_after_the_batch_mean():
    """SPEC_V1_V2 §9.1: KL 0.943147; a batch [0.943147, 4.0] has mean 2.47 < 3, so the loss is 3.0 with no gradient."""
    mean = torch.tensor([[[0.5, -1.0], [8 ** 0.5, 0.0]]], requires_grad=True)  # (B=1, T=2, S=2)
    std = torch.tensor([[[1.0, 0.5], [1.0, 1.0]]], requires_grad=True)
    post = torch.stack([mean, std], -1)
    prior = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)], -1)
    loss = DreamerV1WorldModelLoss(_Writes(_wm_outputs(post, prior, 1, 2)), ["v"], latent="gaussian", free_nats=3.0,
                                   cont=False)
    out = loss(_wm_data(1, 2))
    assert set(out.keys()) == {"loss_rec", "loss_rew", "loss_kl", "prior_entropy", "post_entropy", "kl", "rec_v"}
    torch.testing.assert_close(out["kl"], torch.tensor((0.943147 + 4.0) / 2), atol=1e-5, rtol=0)
    assert out["loss_kl"].item() == 3.0
    out["loss_kl"].backward()
    assert mean.grad.abs().sum() == 0 and std.grad.abs().sum() == 0
    # unit-std prior: entropy 0.5 log(2 pi e) per dim
    torch.testing.assert_close(out["prior_entropy"], torch.tensor(2 * 0.5 * math.log(2 * math.pi * math.e)))


def test_v2_balanced_categorical_kl_values_and_gradients():
    """SPEC_V1_V2 §9.2: loss = KL = 0.740483; the prior gets 0.8 (p - q), the posterior 0.2 of the gradient."""
    post = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]]).reshape(1, 1, 2, 3).requires_grad_()
    prior = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]).reshape(1, 1, 2, 3).requires_grad_()
    loss = DreamerV2WorldModelLoss(_Writes(_wm_outputs(post, prior, 1, 1)), ["v"], kl_balance=0.8, free_nats=0.0,
                                   unimix=0.0)
    out = loss(_wm_data(1, 1))
    torch.testing.assert_close(out["loss_kl"], torch.tensor(0.740483), atol=1e-5, rtol=0)
    out["loss_kl"].backward()
    torch.testing.assert_close(prior.grad.reshape(2, 3), torch.tensor(
        [[-0.265526, 0.070884, 0.194642], [0.362922, -0.181461, -0.181461]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(post.grad.reshape(2, 3), torch.tensor(
        [[0.056517, -0.028154, -0.028363], [-0.088889, 0.044444, 0.044444]]), atol=1e-5, rtol=0)
    # free 1.0 on the batch mean: the constant 1.0 and no gradient (KL < 1)
    post.grad = prior.grad = None
    clamped = DreamerV2WorldModelLoss(_Writes(_wm_outputs(post, prior, 1, 1)), ["v"], free_nats=1.0,
                                      unimix=0.0)(_wm_data(1, 1))["loss_kl"]
    clamped.backward()
    assert clamped.item() == 1.0 and post.grad.abs().sum() == 0 and prior.grad.abs().sum() == 0


def test_v1v2_reconstruction_reward_and_discount_terms():
    """Unit-Gaussian 0.5 SSE against x/255 - 0.5 (images) and raw vectors; Normal reward; gamma (1 - terminal)."""
    B, T = 2, 3
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (B, T, 1, 2, 2), generator=g, dtype=torch.uint8)
    vec = 10 * torch.randn(B, T, 2, generator=g)
    reco_img, reco_vec = torch.randn(B, T, 1, 2, 2, generator=g), torch.randn(B, T, 2, generator=g)
    reward, reward_mean = torch.randn(B, T, 1, generator=g), torch.randn(B, T, 1, generator=g)
    cont_logits = torch.randn(B, T, 1, generator=g)
    terminal = torch.zeros(B, T, 1, dtype=torch.bool)
    terminal[0, 1] = True
    post = torch.randn(B, T, 2, 3, generator=g)
    outputs = {**_wm_outputs(post, post.clone(), B, T), ("reco", "img"): reco_img, ("reco", "vec"): reco_vec,
               "reward_logits": reward_mean, "cont_logits": cont_logits}
    data = TensorDict({"img": img, "vec": vec, "reward": reward, "is_terminal": terminal}, [B, T])
    loss = DreamerV2WorldModelLoss(_Writes(outputs), ["img", "vec"], gamma=0.999, con=5.0, unimix=0.0, free_nats=0.0)
    out = loss(data)
    rec = 0.5 * ((reco_img - (img / 255.0 - 0.5)) ** 2).sum((-3, -2, -1)) + 0.5 * ((reco_vec - vec) ** 2).sum(-1)
    torch.testing.assert_close(out["loss_rec"], rec.mean())
    torch.testing.assert_close(out["loss_rew"], (0.5 * (reward - reward_mean) ** 2).mean())
    target = 0.999 * (~terminal).float()
    bce = -(target * nn.functional.logsigmoid(cont_logits) + (1 - target) * nn.functional.logsigmoid(-cont_logits))
    torch.testing.assert_close(out["loss_con"], 5.0 * bce.mean())
    assert out["loss_kl"].item() == 0.0  # identical posterior and prior


def test_grad_heads_detach_the_features_of_the_other_heads():
    """V2's grad_heads: a head not listed trains on sg(features), so its loss does not reach the representation."""
    agent = _agent("dreamerv2", OneHot(3))
    data = split_context(_window(agent, VEC), context="first")
    for stop, reaches in (([], True), ([agent.reward], False)):
        loss = DreamerV2WorldModelLoss(agent.world_model, agent.obs_keys, unimix=0.0, stop_grad_heads=stop)
        agent.zero_grad(set_to_none=True)
        out = loss(data.clone())
        out["loss_rew"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.reward.parameters())
        rssm_grad = any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.rssm.parameters())
        assert rssm_grad == reaches


# ---------------------------------------------------------------- actor and value (stand-in world models)

class _Step(nn.Module):
    def forward(self, deter, stoch, action):
        return deter + 1.0, stoch, torch.zeros_like(stoch)


class _Table(nn.Module):
    """Looks ``deter`` (the step index) up in a table; returns the value twice (logits slot, prediction)."""

    def __init__(self, values):
        super().__init__()
        self.register_buffer("values", torch.tensor(values))

    def forward(self, deter, stoch):
        out = self.values[deter[..., :1].long()]
        return out, out


class _Scaled(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))

    def forward(self, deter, stoch):
        out = self.a * deter[..., :1]
        return out, out


class _Logits(nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.3, -0.2, 0.1]))

    def forward(self, deter, stoch):
        return self.logits.expand(*deter.shape[:-1], -1)


STATE = ["deter", "stoch"]


def _module(net, out):
    return TensorDictModule(net, in_keys=STATE, out_keys=out)


def _actor():
    return ProbabilisticActor(_module(_Logits(), ["logits"]), in_keys=["logits"], out_keys=["action"],
                              distribution_class=OneHotCategorical, default_interaction_type="random")


def _starts(N=1):
    return TensorDict({"deter": torch.zeros(N, 1, 1), "stoch": torch.zeros(N, 1, 2, 2),
                       "is_terminal": torch.zeros(N, 1, 1, dtype=torch.bool)}, [N, 1])


def test_v1_returns_actor_and_value_losses_match_spec_9_3():
    """H = 4 imagined states (start dropped), r = [1..4], v = [10..40], pcont 0.99, lambda 0.95."""
    step = TensorDictModule(_Step(), in_keys=[*STATE, "action"], out_keys=[*STATE, "prior_logits"])
    reward = _module(_Table([0.0, 1, 2, 3, 4]), ["reward_logits", "reward_pred"])
    critic = _module(_Table([0.0, 10, 20, 30, 40]), ["value_logits", "state_value"])
    actor_loss = DreamerV1ActorLoss(_actor(), critic, reward, None, step, horizon=4, gamma=0.99, entropy_coef=0.0)
    data = _starts()
    out = actor_loss(data)
    imagined = data["imagined"]
    assert imagined.shape == (1, 1, 4)  # states 1..4
    torch.testing.assert_close(imagined["return"][0, 0, :3], torch.tensor([42.949057, 43.550300, 42.600000]))
    torch.testing.assert_close(imagined["weight"][0, 0, :3], torch.tensor([1.0, 0.99, 0.9801]))
    torch.testing.assert_close(out["loss_policy"], torch.tensor(-42.605371))
    value = DreamerV1ValueLoss(critic)(data)
    assert set(value.keys()) == {"loss_value", "value_pred"}
    torch.testing.assert_close(value["loss_value"], torch.tensor(298.385251))


def _v2_world(critic_values=(5.0, 6, 7, 8)):
    step = TensorDictModule(_Step(), in_keys=[*STATE, "action"], out_keys=[*STATE, "prior_logits"])
    reward = _module(_Table([0.5, 1, 2, 3]), ["reward_logits", "reward_pred"])
    cont = _module(_Table([0.5, 0.999, 0.0, 0.999]), ["cont_logits", "cont_prob"])  # d_0 is replaced by data
    critic = _module(_Table(list(critic_values)), ["value_logits", "state_value"])
    return step, reward, cont, critic


@pytest.mark.parametrize("actor_grad", ["reinforce", "dynamics"])
def test_v2_targets_weights_and_losses_match_spec_9_4(actor_grad):
    step, reward, cont, critic = _v2_world()
    slow = _module(_Table([5.0, 6, 7, 8]), ["value_logits", "state_value"])
    actor = _actor()
    loss = DreamerV2ActorLoss(actor, _module(_Table([0.0] * 4), ["value_logits", "state_value"]), reward, cont, step,
                              horizon=3, gamma=0.999, first_discount_from_data=True, actor_grad=actor_grad,
                              target_critic=slow, entropy_coef=1e-3)
    data = _starts()
    out = loss(data)
    target = torch.tensor([3.881977, 3.247750, 2.0])
    weight = torch.tensor([1.0, 0.999, 0.998001])
    torch.testing.assert_close(data["imagined", "return"][0, 0, :3], target)
    torch.testing.assert_close(data["imagined", "weight"][0, 0, :3], weight)
    dist = actor.get_dist(data["imagined"][0, 0, :2].select(*STATE))
    actions = data["imagined", "action"][0, 0, :2]
    entropy = dist.entropy()
    if actor_grad == "reinforce":
        objective = dist.log_prob(actions) * (target[1:] - torch.tensor([5.0, 6.0]))
    else:
        objective = target[1:]
    expected = -(weight[:2] * (objective + 1e-3 * entropy)).mean()
    torch.testing.assert_close(out["loss_policy"], expected)
    if actor_grad == "dynamics":  # §9.4 without the entropy term: -mean(w[:2] T[1:])
        torch.testing.assert_close(expected + (weight[:2] * 1e-3 * entropy).mean(), torch.tensor(-2.6228875))
    out["loss_policy"].backward()
    assert actor.module[0].module.logits.grad is not None  # REINFORCE reaches the logits; dynamics through nothing here
    # critic loss with the online critic equal to the slow one: 5.627884 (§9.4)
    torch.testing.assert_close(DreamerV1ValueLoss(critic)(data)["loss_value"], torch.tensor(5.627884))
    torch.testing.assert_close(DreamerV2ValueLoss(critic)(data)["loss_value"], torch.tensor(5.627884))


def test_v2_reinforce_reference_number_with_given_log_probs():
    """§9.4 REINFORCE with log pi = [-1.2, -0.7], entropies [1.0, 0.9]: -2.450900 (the objective ActorLoss feeds)."""
    from torchrl_dreamerv3.functional.returns_v1v2 import v2_actor_loss

    loss = v2_actor_loss(torch.tensor([3.881977, 3.247750, 2.0]), torch.tensor([5.0, 6, 7, 8]),
                         torch.tensor([-1.2, -0.7]), torch.tensor([1.0, 0.9]), torch.tensor([1.0, 0.999, 0.998001]),
                         "reinforce", ent_scale=1e-3)
    torch.testing.assert_close(loss, torch.tensor(-2.450900))


# ---------------------------------------------------------------- gradient flow with real V1/V2 agents

def _grads(module):
    return [p.grad for p in module.parameters() if p.requires_grad]


def _nonzero(module):
    return any(g is not None and g.abs().sum() > 0 for g in _grads(module))


def test_v1_dynamics_backprop_reaches_the_actor_through_the_world_model():
    agent = _agent("dreamerv1", Bounded(-1, 1, (2,)))
    data = split_context(_window(agent, VEC), context="zero")
    agent.world_model(data)
    loss = DreamerV1ActorLoss(agent.actor, agent.critic, agent.reward, None, agent.imagine_step, horizon=3,
                              gamma=0.99, entropy_coef=0.0)
    agent.zero_grad(set_to_none=True)
    loss(data)["loss_policy"].backward()
    assert _nonzero(agent.actor) and _nonzero(agent.rssm) and _nonzero(agent.reward) and _nonzero(agent.critic)
    assert not _nonzero(agent.encoder)  # imagination starts from detached posterior states


def test_v2_reinforce_stops_action_gradients_and_both_keeps_them():
    agent = _agent("dreamerv2", OneHot(3))
    data = split_context(_window(agent, VEC), context="first")
    agent.world_model(data)
    for actor_grad, through_model in (("reinforce", False), ("both", True)):
        loss = DreamerV2ActorLoss(agent.actor, agent.critic, agent.reward, agent.cont, agent.imagine_step, horizon=3,
                                  gamma=0.999, first_discount_from_data=True, actor_grad=actor_grad, entropy_coef=1e-3)
        agent.zero_grad(set_to_none=True)
        td = data.clone()
        loss(td)["loss_policy"].backward()
        assert _nonzero(agent.actor)
        assert _nonzero(agent.rssm) == through_model
        assert td["imagined", "action"].requires_grad is False


def _learner(generation, spec, **kwargs):
    agent = _agent(generation, spec)
    opt = dict(model_lr=1e-3, actor_lr=1e-3, critic_lr=1e-3, eps=1e-5, clip=100.0, weight_decay=1e-6)
    return agent, DreamerV3Learner(agent, generation=generation, opt_kwargs=opt, **kwargs)


V1_LOSSES = {"world_model": dict(free_nats=3.0), "actor": dict(gamma=0.99, horizon=3, entropy_coef=0.0)}


def test_adam3_gives_the_actor_loss_gradient_to_the_actor_only():
    """With every world-model scale 0, the world model's grads stay zero although the actor backprops through it."""
    losses = {"world_model": dict(V1_LOSSES["world_model"], rec=0.0, rew=0.0, kl_scale=0.0),
              "actor": V1_LOSSES["actor"], "value": dict(value=0.0)}
    agent, learner = _learner("dreamerv1", Bounded(-1, 1, (2,)), loss_kwargs=losses)
    before = {k: v.detach().clone() for k, v in agent.state_dict().items()}
    metrics, latents = learner.update(_window(agent, VEC))
    groups = learner.param_groups()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in groups["model"] + groups["critic"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["actor"])
    assert {"opt/model_grad_norm", "opt/actor_grad_norm", "opt/critic_grad_norm", "loss_kl", "loss_policy"} <= set(
        metrics.keys())
    after = agent.state_dict()
    actor_keys = {f"actor.{k}" for k in agent.actor.state_dict()}
    assert any(not torch.equal(before[k], after[k]) for k in actor_keys)
    # model params only decay (wd 1e-6): no gradient step
    for name, value in after.items():
        if name not in actor_keys and value.is_floating_point():
            torch.testing.assert_close(value, before[name] * (1 - 1e-6) if value.requires_grad else before[name])


def test_group_adam_decoupled_weight_decay_is_not_lr_scaled():
    p = nn.Parameter(torch.full((3,), 2.0))
    opt = GroupAdam({"model": [p]}, {"model": 0.0}, weight_decay=0.1)
    p.grad = torch.ones(3)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3,), 1.8))  # lr 0: only the decay
    with pytest.raises(ValueError, match="shares"):
        GroupAdam({"a": [p], "b": [p]}, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="no learning rate"):
        GroupAdam({"a": [p]}, {})


def test_hard_critic_copy_at_update_0_and_every_interval():
    agent, learner = _learner("dreamerv2", OneHot(3), hard_interval=3, loss_kwargs={"actor": dict(gamma=0.999)})
    slow = learner.value_loss.target_critic_network_params
    online = learner.value_loss.critic_network_params
    copied = []
    for update in range(7):
        with torch.no_grad():
            for p in agent.critic.parameters():
                p.add_(0.1)
        learner._update_slow_critic()
        copied.append(all(torch.equal(a, b) for a, b in zip(slow.values(True, True), online.values(True, True))))
    assert copied == [True, False, False, True, False, False, True]
    assert learner.critic_updates.item() == 7 and "critic_updates" in learner.state_dict()
    assert DreamerV3Learner.__init__.__kwdefaults__["hard_interval"] == 100


@pytest.mark.parametrize("generation, spec", [("dreamerv1", Bounded(-1, 1, (2,))), ("dreamerv2", OneHot(3)),
                                              ("dreamerv2", Bounded(-1, 1, (2,)))])
def test_v1_v2_learner_updates_run_and_keep_no_graph(generation, spec):
    if generation == "dreamerv1":
        agent, learner = _learner(generation, spec, loss_kwargs=V1_LOSSES)
    else:
        losses = {"world_model": dict(gamma=0.999, con=5.0, kl_scale=0.1, grad_heads=["decoder", "reward", "cont"]),
                  "actor": dict(gamma=0.999, first_discount_from_data=True,
                                actor_grad="reinforce" if isinstance(spec, OneHot) else "dynamics", horizon=3,
                                critic_for_targets="slow", entropy_coef=1e-3)}
        agent, learner = _learner(generation, spec, loss_kwargs=losses)
    for seed in range(2):
        metrics, latents = learner.update(_window(agent, VEC, seed=seed))
    assert all(torch.isfinite(v).all() and v.grad_fn is None for v in metrics.values())
    assert latents.batch_size == (2, 4) and latents["stoch"].grad_fn is None


# ---------------------------------------------------------------- defaults are DreamerV3

def test_explicit_v3_generation_gives_the_default_numbers():
    """Selecting DreamerV3 by name or by its registry entry builds exactly the default learner."""
    from torchrl_dreamerv3.training import GENERATION_SPECS

    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    results = []
    for kwargs in ({}, dict(generation="dreamerv3"), dict(generation=GENERATION_SPECS["dreamerv3"])):
        torch.manual_seed(0)
        clone = make_dreamerv3(VEC, OneHot(3), "debug")
        clone.load_state_dict(agent.state_dict())
        learner = DreamerV3Learner(clone, opt_kwargs=dict(warmup=0), **kwargs)
        torch.manual_seed(1)
        metrics, _ = learner.update(_window(clone, VEC))
        results.append((metrics, [p.detach().clone() for p in clone.parameters()]))
    (m1, p1), *others = results
    for m2, p2 in others:
        assert set(m1.keys()) == set(m2.keys())
        for key in m1.keys():
            torch.testing.assert_close(m1[key], m2[key], rtol=0, atol=0)
        for a, b in zip(p1, p2):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("generation, classes", [
    ("dreamerv1", (DreamerV1WorldModelLoss, DreamerV1ActorLoss, DreamerV1ValueLoss)),
    ("dreamerv2", (DreamerV2WorldModelLoss, DreamerV2ActorLoss, DreamerV2ValueLoss)),
])
def test_the_learner_builds_the_generations_own_losses(generation, classes):
    agent, learner = _learner(generation, OneHot(3))
    assert tuple(type(loss) for loss in (learner.world_model_loss, learner.actor_loss, learner.value_loss)) == classes
    assert isinstance(learner.optimizer, GroupAdam) and learner.spec.name == generation


# ---------------------------------------------------------------- keys, replay split, errors

def test_an_agent_with_renamed_keys_trains_through_the_learner():
    """Issue 5: the learner hands the agent's DreamerKeys to the losses and the replay split."""
    keys = DreamerKeys(deter="h", stoch="z", action="act", prev_action="a_prev", prev_deter="h_prev",
                       prev_stoch="z_prev", tokens="emb", is_first="reset", reward_pred="r_hat", cont_prob="c_hat",
                       state_value="v", value_logits="v_logits", post_logits="q", prior_logits="p", reco="recon")
    agent = make_dreamerv3({"obs": (4,)}, OneHot(2), "debug", keys=keys)
    window = _window(agent, {"obs": (4,)})
    for old, new in (("action", "act"), ("deter", "h"), ("stoch", "z"), ("is_first", "reset")):
        window.rename_key_(old, new)
    learner = DreamerV3Learner(agent)
    metrics, latents = learner.update(window)
    assert torch.isfinite(metrics["loss"]) and set(latents.keys()) == {"h", "z"}
    assert metrics["loss_rec"] > 0 and metrics["loss_dyn"] > 0


def test_split_context_modes_and_key_names():
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    window = _window(agent, VEC)
    replay = split_context(window)
    zero = split_context(window, context="zero")
    first = split_context(window, context="first")
    assert torch.equal(zero["prev_action"], replay["prev_action"]) and not zero["prev_deter"].any()
    assert not zero["prev_stoch"].any() and torch.equal(zero["is_first"], replay["is_first"])
    assert first["is_first"][:, 0].all() and torch.equal(first["is_first"][:, 1:], replay["is_first"][:, 1:])
    assert torch.equal(first["prev_deter"], replay["prev_deter"])
    renamed = split_context(window, keys=DreamerKeys(prev_action="a0", prev_deter="h0", prev_stoch="z0"),
                            out_reward="rew")
    assert {"a0", "h0", "z0", "rew"} <= set(renamed.keys()) and "prev_action" not in renamed.keys()
    with pytest.raises(ValueError, match="unknown context 'v1'"):
        split_context(window, context="v1")


def test_expl_noise_perturbs_and_clips_continuous_actions():
    agent = make_dreamerv3(VEC, Bounded(-1, 1, (2,)), "debug")
    td = TensorDict({"observation": torch.randn(64, 5), "is_first": torch.ones(64, 1, dtype=torch.bool),
                     "deter": torch.zeros(64, 8), "stoch": torch.zeros(64, 2, 4), "prev_action": torch.zeros(64, 2)},
                    [64])
    torch.manual_seed(0)
    plain = DreamerV3Policy(agent)(td.clone())["action"]
    torch.manual_seed(0)
    noisy = DreamerV3Policy(agent, expl_noise=5.0)(td.clone())["action"]
    assert not torch.equal(plain, noisy) and noisy.abs().max() <= 1.0 and (noisy.abs() == 1.0).any()
    with pytest.raises(ValueError, match="expl_noise"):
        DreamerV3Policy(agent, expl_noise=-1.0)


@pytest.mark.parametrize("discrete", [False, True])
def test_prefill_actor_acts_uniformly_for_its_steps_then_hands_over(discrete):
    from torchrl_dreamerv3.modules import PrefillActor

    spec = OneHot(3) if discrete else Bounded(-1, 1, (2,))
    agent = make_dreamerv3(VEC, spec, "debug")
    dim = 3 if discrete else 2
    td = TensorDict({"observation": torch.randn(500, 5), "is_first": torch.ones(500, 1, dtype=torch.bool),
                     "deter": torch.zeros(500, 8), "stoch": torch.zeros(500, 2, 4), "prev_action": torch.zeros(500, dim)},
                    [500])
    prefill = PrefillActor(agent.actor, spec, steps=600)
    policy = DreamerV3Policy(agent, actor=prefill)
    torch.manual_seed(0)
    first = policy(td.clone())["action"]
    assert prefill.prefilling  # 500 of 600 steps acted: a batch of N envs counts N steps
    if discrete:
        assert torch.equal(first.sum(-1), torch.ones(500)) and (first.float().mean(0) - 1 / 3).abs().max() < 0.07
    else:  # uniform in [-1, 1]: mean 0, variance 1/3 (the tanh-normal actor at init has variance near 1)
        assert first.abs().max() <= 1 and first.mean().abs() < 0.05 and (first.var() - 1 / 3).abs() < 0.04
    policy(td.clone())
    assert not prefill.prefilling
    torch.manual_seed(1)
    handed_over = policy(td.clone())["action"]
    torch.manual_seed(1)
    assert torch.equal(handed_over, DreamerV3Policy(agent)(td.clone())["action"])
    with pytest.raises(ValueError, match="prefill steps"):
        PrefillActor(agent.actor, spec, steps=-1)


@pytest.mark.parametrize("make, message", [
    (lambda a: DreamerV2WorldModelLoss(a.world_model, a.obs_keys, latent="normal"), "unknown latent"),
    (lambda a: DreamerV2WorldModelLoss(a.world_model, a.obs_keys, kl_balance=1.0), "kl_balance"),
    (lambda a: DreamerV2ActorLoss(a.actor, a.critic, a.reward, a.cont, a.imagine_step, actor_grad="dyn"),
     "unknown actor_grad"),
    (lambda a: DreamerV2ActorLoss(a.actor, a.critic, a.reward, None, a.imagine_step, first_discount_from_data=True),
     "needs a cont"),
    (lambda a: DreamerV1ActorLoss(a.actor, a.critic, a.reward, None, a.imagine_step, horizon=1), "horizon must be"),
    (lambda a: ActorLoss(a.actor, a.critic, a.reward, None, a.imagine_step), "needs a cont module"),
    (lambda a: DreamerV3Learner(a, generation="dreamerv4"), "algo.generation='dreamerv4' is unknown"),
    (lambda a: DreamerV3Learner(a, generation="dreamerv2", opt_kwargs=dict(model_lr=1e-3)), "needs model_lr, actor_lr"),
    (lambda a: DreamerV3Learner(a, generation="dreamerv2", hard_interval=0), "hard_interval must be >= 1"),
    (lambda a: DreamerV3Learner(a, loss_kwargs={"critic": {}}), "unknown groups"),
    (lambda a: DreamerV3Learner(a, generation="dreamerv2", opt_kwargs=dict(model_lr=1, actor_lr=1, critic_lr=1),
                                loss_kwargs={"world_model": dict(grad_heads=["decoder", "value"])}), "unknown heads"),
])
def test_bad_option_values_fail_clearly(make, message):
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    with pytest.raises(ValueError, match=message):
        make(agent)


@pytest.mark.parametrize("make", [
    lambda a: WorldModelLoss(a.world_model, a.obs_keys, kl="balanced"),
    lambda a: ActorLoss(a.actor, a.critic, a.reward, a.cont, a.imagine_step, actor_grad="dynamics"),
    lambda a: ValueLoss(a.critic, head_dist="normal"),
])
def test_dreamerv3_losses_take_no_generation_switches(make):
    """The V1/V2 options are not arguments of DreamerV3's losses: they live in the V1/V2 classes."""
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    with pytest.raises(TypeError, match="unexpected keyword"):
        make(agent)


def test_tanh_reward_transform_changes_only_the_reward_target():
    from test_objectives import _FixedWorldModel

    B, T = 2, 3
    g = torch.Generator().manual_seed(0)
    out = {"post_logits": torch.randn(B, T, 4, 1, 2, generator=g), "prior_logits": torch.randn(B, T, 4, 1, 2, generator=g),
           "reward_logits": torch.randn(B, T, 1, generator=g), ("reco", "vec"): torch.randn(B, T, 2, generator=g)}
    data = TensorDict({"reward": 3 * torch.randn(B, T, 1, generator=g), "vec": torch.randn(B, T, 2, generator=g),
                       "is_terminal": torch.zeros(B, T, 1, dtype=torch.bool)}, [B, T])
    common = dict(latent="gaussian", cont=False)
    plain = DreamerV2WorldModelLoss(_FixedWorldModel(out), ["vec"], **common)(data.clone())
    tanh = DreamerV2WorldModelLoss(_FixedWorldModel(out), ["vec"], reward_transform="tanh", **common)(data.clone())
    mean = out["reward_logits"].squeeze(-1)
    torch.testing.assert_close(tanh["loss_rew"], (0.5 * (torch.tanh(data["reward"].squeeze(-1)) - mean) ** 2).mean())
    torch.testing.assert_close(plain["loss_rew"], (0.5 * (data["reward"].squeeze(-1) - mean) ** 2).mean())
    torch.testing.assert_close(tanh["loss_kl"], plain["loss_kl"])
    torch.testing.assert_close(tanh["loss_rec"], plain["loss_rec"])
    with pytest.raises(ValueError, match="unknown reward_transform 'clip'"):
        DreamerV2WorldModelLoss(_FixedWorldModel(out), [], reward_transform="clip")


def test_the_losses_compute_with_the_pinned_functional_pieces(monkeypatch):
    """The V1/V2 math that test_v1v2_math pins (v1_actor_loss, v2_actor_loss, critic_loss_v1v2, discount_target)
    is what the loss classes run: no second inline copy."""
    import torchrl_dreamerv3.objectives.dreamerv1 as v1
    import torchrl_dreamerv3.objectives.dreamerv2 as v2
    import torchrl_dreamerv3.objectives.v1v2 as shared

    calls = []

    def recording(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    for module, name in ((v1, "v1_actor_loss"), (v2, "v2_actor_loss"), (shared, "critic_loss_v1v2"),
                         (shared, "discount_target"), (shared, "imagination_targets_v1v2")):
        recording(module, name)
    for generation, spec in (("dreamerv1", Bounded(-1, 1, (2,))), ("dreamerv2", OneHot(3))):
        agent, learner = _learner(generation, spec)
        learner.update(_window(agent, VEC))
    assert calls.count("v1_actor_loss") == 1 and calls.count("v2_actor_loss") == 1
    assert calls.count("critic_loss_v1v2") == 2 and calls.count("imagination_targets_v1v2") == 2
    assert calls.count("discount_target") == 1  # V2's discount head; V1 has none
