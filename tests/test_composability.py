"""DreamerV3's parts inside other TorchRL code: the world-model env, latent features, swaps by keys, PPO example."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import OneHot
from torchrl.envs import GymEnv, StepCounter, TransformedEnv
from torchrl.envs.utils import RandomPolicy, check_env_specs
from torchrl.modules import MLP, OneHotCategorical, ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

from test_objectives import _window
from torchrl_dreamerv3.envs import DreamerWorldModelEnv, LatentFeatures, latent_features, make_env
from torchrl_dreamerv3.functional import symexp_twohot_bins, twohot_mean
from torchrl_dreamerv3.modules import DreamerKeys, DreamerV3Policy, make_dreamerv3
from torchrl_dreamerv3.objectives import ActorLoss, ValueLoss, WorldModelLoss
from torchrl_dreamerv3.replay import split_context
from torchrl_dreamerv3.training import DreamerV3Learner

ROOT = Path(__file__).resolve().parents[1]
VEC = {"observation": (4,)}


@pytest.fixture(scope="module")
def cartpole():
    return make_env("cartpole", seed=0)


@pytest.fixture(scope="module")
def agent(cartpole):
    torch.manual_seed(0)
    return make_dreamerv3(VEC, cartpole.action_spec, "debug")


def _mlp_actor(in_key, feature_dim, action_spec):
    net = MLP(in_features=feature_dim, out_features=action_spec.shape[-1], num_cells=[16])
    return ProbabilisticActor(TensorDictModule(net, in_keys=[in_key], out_keys=["logits"]), in_keys=["logits"],
                              distribution_class=OneHotCategorical, spec=action_spec, return_log_prob=True)


# ---------------------------------------------------------------- the world model as a TorchRL env

@pytest.mark.parametrize("decode", [False, True])
def test_world_model_env_passes_check_env_specs_with_the_real_specs(agent, cartpole, decode):
    env = DreamerWorldModelEnv(agent, cartpole, batch_size=[4], decode=decode)
    check_env_specs(env, seed=0)
    assert env.action_spec[0] == cartpole.action_spec
    assert env.full_reward_spec[0] == cartpole.full_reward_spec
    assert env.full_done_spec[0] == cartpole.full_done_spec
    assert ("observation" in env.observation_spec.keys()) == decode
    check_env_specs(DreamerWorldModelEnv(agent, batch_size=[2]))  # specs from the agent alone


def test_rollout_with_random_and_mlp_policies_auto_resets(agent, cartpole):
    env = DreamerWorldModelEnv(agent, cartpole, batch_size=[3], termination="threshold", cont_threshold=0.6)
    td = env.rollout(6, RandomPolicy(env.action_spec), break_when_any_done=False)
    assert td.batch_size == (3, 6) and td["next", "reward"].shape == (3, 6, 1)
    actor = _mlp_actor("feature", env.observation_spec["feature"].shape[-1], env.action_spec[0])
    td = TransformedEnv(env, StepCounter(4)).rollout(10, actor, break_when_any_done=False)
    assert td["next", "feature"].shape == (3, 10, 8 + 2 * 4) and td["action"].sum(-1).eq(1).all()
    # termination from the continue head (debug init: cont_prob ~ 0.5), auto-reset from the pool
    always = DreamerWorldModelEnv(agent, cartpole, batch_size=[2], cont_threshold=1.0)
    pool = TensorDict({"deter": torch.full((5, 8), 7.0), "stoch": torch.zeros(5, 2, 4)}, [5])
    td = always.set_start_states(pool).rollout(3, break_when_any_done=False)
    assert td["next", "terminated"].all() and (td["deter"][:, 1:] == 7.0).all()
    never = DreamerWorldModelEnv(agent, cartpole, batch_size=[2], termination="never")
    assert not never.rollout(5)["next", "done"].any()


def test_reset_from_observations_or_stored_latents(agent):
    env = DreamerWorldModelEnv(agent, batch_size=[5])
    obs = TensorDict({"observation": torch.randn(5, 4)}, [5])
    start = env.reset(obs.clone())
    assert start.batch_size == (5,) and start["feature"].shape == (5, 16)
    carry = {"prev_deter": torch.zeros(5, 8), "prev_stoch": torch.zeros(5, 2, 4), "prev_action": torch.zeros(5, 2),
             "is_first": torch.ones(5, 1, dtype=torch.bool)}
    step = agent.encoder(obs.clone().update(carry))
    torch.testing.assert_close(start["deter"], agent.observe_step(step)["deter"])  # posterior of the observation
    stored = TensorDict({"deter": torch.randn(5, 8), "stoch": torch.zeros(5, 2, 4)}, [5])
    torch.testing.assert_close(env.reset(stored.clone())["deter"], stored["deter"])
    td = env.rollout(4, tensordict=env.reset(stored.clone()), auto_reset=False)
    assert td.shape[0] == 5
    unlocked = DreamerWorldModelEnv(agent, batch_size=())  # batch_size=(): any batch, set by the reset tensordict
    assert unlocked.rollout(3, tensordict=unlocked.reset(obs.clone()), auto_reset=False).shape[0] == 5


# ---------------------------------------------------------------- recipe: replace the image encoder

class _TinyImageEncoder(nn.Module):
    def __init__(self, shape, tokens):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(-3), nn.Linear(int(torch.tensor(shape).prod()), tokens), nn.SiLU())

    def forward(self, pixels):
        return self.net(pixels.float() / 255.0 - 0.5)


def test_recipe_replace_image_encoder_training_still_runs():
    shapes = {"pixels": (3, 16, 16)}
    encoder = TensorDictModule(_TinyImageEncoder(shapes["pixels"], 24), in_keys=["pixels"], out_keys=["tokens"])
    agent = make_dreamerv3(shapes, OneHot(3), "debug", encoder=encoder, token_dim=24)
    assert agent.encoder is encoder and agent.world_model[0] is encoder and agent.rssm.token_dim == 24
    learner = DreamerV3Learner(agent)
    before = agent.encoder.module.net[1].weight.detach().clone()
    for seed in range(3):
        metrics, _ = learner.update(_window(agent, shapes, seed=seed))
        assert torch.isfinite(metrics["loss"])
    assert not torch.equal(before, agent.encoder.module.net[1].weight)  # the new encoder trains
    td = TensorDict({"pixels": torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "deter": torch.zeros(2, 8),
                     "stoch": torch.zeros(2, 2, 4), "prev_action": torch.zeros(2, 3),
                     "is_first": torch.ones(2, 1, dtype=torch.bool)}, [2])
    assert DreamerV3Policy(agent)(td)["action"].shape == (2, 3)  # and it acts


# ---------------------------------------------------------------- recipe: latent features for another agent

def test_recipe_latent_features_feed_a_torchrl_ppo_agent(agent, cartpole):
    env = TransformedEnv(GymEnv("CartPole-v1"), LatentFeatures(agent))
    check_env_specs(env, seed=0)
    env.set_seed(0)
    actor = _mlp_actor("feature", 16, env.action_spec)
    critic = ValueOperator(MLP(in_features=16, out_features=1, num_cells=[16]), in_keys=["feature"])
    with torch.no_grad():
        td = env.rollout(12, actor, break_when_any_done=False)
    torch.testing.assert_close(td["feature"], latent_features(td["deter"], td["stoch"]))
    # the carry: step t+1 is one posterior step from step t's latents and action
    step = TensorDict({"observation": td["next", "observation"][0:1], "prev_deter": td["deter"][0:1],
                       "prev_stoch": td["stoch"][0:1], "prev_action": td["action"][0:1].float(),
                       "is_first": torch.zeros(1, 1, dtype=torch.bool)}, [1])
    torch.testing.assert_close(agent.observe_step(agent.encoder(step))["deter"], td["next", "deter"][0:1])
    GAE(gamma=0.99, lmbda=0.95, value_network=critic)(td)
    losses = ClipPPOLoss(actor, critic)(td)
    (losses["loss_objective"] + losses["loss_critic"]).backward()
    assert all(p.grad is not None for p in actor.parameters())
    # next to the DreamerV3 policy on an EpisodeStream, under other keys
    stream = TransformedEnv(make_env("cartpole", seed=1), LatentFeatures(agent, deter_key="h", stoch_key="z"))
    td = stream.rollout(8)
    assert td["h"].shape == (8, 8) and td["next", "is_first"].shape == (8, 1)


# ---------------------------------------------------------------- recipe: our actor/value losses, another world model

class _MLPDynamics(nn.Module):
    """A tiny MLP world model step: deter' = tanh(W [deter, stoch, action]); stoch' = one-hot sample."""

    def __init__(self, deter, stoch, classes, actions):
        super().__init__()
        self.stoch, self.classes = stoch, classes
        self.core = nn.Linear(deter + stoch * classes + actions, deter)
        self.logits = nn.Linear(deter, stoch * classes)

    def forward(self, deter, stoch, action):
        deter = torch.tanh(self.core(torch.cat([deter, stoch.flatten(-2), action.float()], -1)))
        logits = self.logits(deter).unflatten(-1, (self.stoch, self.classes))
        sample = nn.functional.one_hot(torch.distributions.Categorical(logits=logits).sample(), self.classes)
        return deter, sample.float(), logits


class _ActionReward(nn.Module):
    """reward = 1 when the last action was action 0 (the dynamics copy it into deter[..., :2]), continue = 1."""

    def forward(self, deter, stoch):
        return deter[..., :1], torch.ones_like(deter[..., :1])


class _CopyAction(nn.Module):
    def forward(self, deter, stoch, action):
        deter = torch.cat([action.float(), deter[..., action.shape[-1]:]], -1)
        return deter, stoch, torch.zeros_like(stoch)


def _mlp_world_model(keys):
    """Modules reading/writing the given key names: ``(deter, stoch, action, reward_pred, cont_prob)``."""
    deter, stoch, action, reward_pred, cont_prob = keys
    step = TensorDictModule(_CopyAction(), in_keys=[deter, stoch, action], out_keys=[deter, stoch, "prior_logits"])
    heads = TensorDictModule(_ActionReward(), in_keys=[deter, stoch], out_keys=[reward_pred, cont_prob])
    return step, heads


def test_recipe_actor_and_value_losses_train_against_another_world_model():
    agent = make_dreamerv3(VEC, OneHot(2), "debug")  # only its actor and critic are used
    step, heads = _mlp_world_model(("deter", "stoch", "action", "reward_pred", "cont_prob"))
    mlp_step = TensorDictModule(_MLPDynamics(8, 2, 4, 2), in_keys=["deter", "stoch", "action"],
                                out_keys=["deter", "stoch", "prior_logits"])
    for dynamics in (mlp_step, step):  # a learned MLP model runs; the copy model checks that the actor learns
        actor_loss = ActorLoss(agent.actor, agent.critic, heads, heads, dynamics, horizon=5, entropy_coef=0.0)
        value_loss = ValueLoss(agent.critic)
        optim = torch.optim.Adam(list(agent.actor.parameters()) + list(agent.critic.parameters()), lr=3e-3)
        for _ in range(60 if dynamics is step else 2):
            data = TensorDict({"deter": torch.zeros(4, 6, 8), "stoch": torch.zeros(4, 6, 2, 4),
                               "reward": torch.ones(4, 6, 1), "is_terminal": torch.zeros(4, 6, 1, dtype=torch.bool),
                               "is_last": torch.zeros(4, 6, 1, dtype=torch.bool)}, [4, 6])
            losses = actor_loss(data)
            losses.update(value_loss(data))
            optim.zero_grad()
            sum(v for key, v in losses.items() if key.startswith("loss_")).backward()
            optim.step()
        assert all(torch.isfinite(losses[key]) for key in ("loss_policy", "loss_value", "loss_repval"))
        assert all(p.grad is None for p in dynamics.parameters())  # imagination carries no gradient
    probs = agent.actor.get_dist(TensorDict({"deter": torch.zeros(1, 8), "stoch": torch.zeros(1, 2, 4)}, [1])).probs
    assert probs[0, 0] > 0.6, probs  # REINFORCE through the copy model prefers the rewarded action


def test_actor_loss_samples_imagined_actions():
    torch.manual_seed(0)
    agent = make_dreamerv3(VEC, OneHot(2), "debug")
    step, heads = _mlp_world_model(("deter", "stoch", "action", "reward_pred", "cont_prob"))
    data = TensorDict({"deter": torch.zeros(4, 8, 8), "stoch": torch.zeros(4, 8, 2, 4)}, [4, 8])
    ActorLoss(agent.actor, agent.critic, heads, heads, step, horizon=3)(data)
    actions = data["imagined", "action"][..., :-1, :].reshape(-1, 2)
    assert (actions.sum(-1) == 1).all()  # one-hot (the mode of tied logits is [1, 1])
    assert len(actions.unique(dim=0)) == 2  # 96 samples of a near-uniform policy contain both actions


# ---------------------------------------------------------------- recipe: rename keys

def test_recipe_rename_keys_on_modules_and_losses():
    keys = DreamerKeys(deter="h", stoch="z", action="act", reward_pred="r_hat", cont_prob="c_hat",
                       state_value="v", value_logits="v_logits", post_logits="q", prior_logits="p")
    agent = make_dreamerv3({"obs": (4,)}, OneHot(2), "debug", keys=keys)
    window = _window(agent, {"obs": (4,)})
    window.rename_key_("action", "act")
    window.rename_key_("deter", "h")
    window.rename_key_("stoch", "z")
    data = split_context(window, action="act", deter="h", stoch="z")  # writes prev_action/prev_deter/prev_stoch/reward
    data.rename_key_("reward", "rew")
    wm = WorldModelLoss(agent.world_model, ["obs"])
    wm.set_keys(reward="rew", post_logits="q", prior_logits="p")
    actor = ActorLoss(agent.actor, agent.critic, agent.reward, agent.cont, agent.imagine_step)
    actor.set_keys(deter="h", stoch="z", action="act", reward_pred="r_hat", cont_prob="c_hat", state_value="v")
    value = ValueLoss(agent.critic)
    value.set_keys(deter="h", stoch="z", value_logits="v_logits", state_value="v", reward="rew")
    losses = TensorDict({}, [])
    for loss in (wm, actor, value):
        losses.update(loss(data))
    total = sum(v for key, v in losses.items() if key.startswith("loss_"))
    assert torch.isfinite(total) and {"h", "z", "q", "p", "imagined"} <= set(data.keys())
    total.backward()
    assert all(p.grad is not None for p in agent.rssm.parameters() if p.requires_grad)
    # the other recipes follow the keys too: the world-model env and the latent-feature transform
    env = DreamerWorldModelEnv(agent, batch_size=[2], feature_key="latent")
    check_env_specs(env)
    assert {"h", "z", "latent"} <= set(env.rollout(3)["next"].keys())


# ---------------------------------------------------------------- the PPO example, at toy scale

def test_ppo_in_imagination_quick_runs(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "ppo_in_imagination.py"), "--quick",
                           "--logdir", str(tmp_path / "wm")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("mean_real_return: ") and float(last.split()[-1]) > 0, proc.stdout[-2000:]
    # the Dyna round ran: the world model's run went on past its 200 steps, collecting with the PPO policy
    assert "before refinement: mean real return" in proc.stdout
    steps = [int(line.split(",")[0]) for line in (tmp_path / "wm" / "episodes.csv").read_text().splitlines()[1:]]
    assert max(steps) > 200
