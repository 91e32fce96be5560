"""The complete learner update: outputs, no retained graphs, optimiser/slow-critic bookkeeping, overfitting."""
import gc

import pytest
import torch
from torchrl.data import Bounded, OneHot

from torchrl_dreamerv3.modules import make_dreamerv3, model_config
from torchrl_dreamerv3.training import DreamerV3Learner

from test_objectives import IMG, VEC, _window


def test_update_returns_detached_metrics_and_latents_for_the_trained_steps():
    agent = make_dreamerv3(IMG, OneHot(3), "debug")
    learner = DreamerV3Learner(agent)
    metrics, latents = learner.update(_window(agent, IMG, B=2, T=4))
    assert latents.batch_size == (2, 4)
    assert latents["deter"].shape == (2, 4, agent.cfg.deter) and not latents["deter"].requires_grad
    assert {"loss_rec", "loss_rew", "loss_con", "loss_dyn", "loss_rep", "loss_policy", "loss_value",
            "loss_repval", "loss", "opt/grad_norm"} <= set(metrics.keys())
    assert all(not v.requires_grad and torch.isfinite(v).all() for v in metrics.values())


def test_first_update_is_zero_then_parameters_move_and_slow_critic_follows():
    agent = make_dreamerv3(VEC, Bounded(-1, 1, (2,)), "debug")
    learner = DreamerV3Learner(agent)
    before = [p.detach().clone() for p in agent.parameters()]
    learner.update(_window(agent, VEC))
    assert all(torch.equal(a, b) for a, b in zip(before, agent.parameters()))  # warm-up count 0: lr 0
    learner.update(_window(agent, VEC, seed=1))
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.parameters()))
    slow = learner.value_loss.target_critic_network_params
    online = dict(agent.critic.named_parameters())
    pairs = [(v, online[".".join(k)]) for k, v in slow.items(True, True) if ".".join(k) in online]
    assert pairs and any(not torch.equal(s, o) for s, o in pairs)  # the slow copy lags the online critic


def test_update_keeps_no_graph_alive():
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    learner = DreamerV3Learner(agent)
    for seed in range(2):
        metrics, latents = learner.update(_window(agent, VEC, seed=seed))
    assert all(t.grad_fn is None for t in (*metrics.values(), *latents.values(True, True)))
    del metrics, latents
    gc.collect()
    # FakeTensors are torch.compile's shape-only stand-ins (no data), kept by its caches from earlier tests
    from torch._subclasses.fake_tensor import FakeTensor

    alive = [o for o in gc.get_objects() if torch.is_tensor(o) and o.grad_fn is not None and not isinstance(o, FakeTensor)]
    assert not alive, f"{len(alive)} tensors still attached to an autograd graph"


def test_learner_state_dict_round_trips():
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    learner = DreamerV3Learner(agent)
    for seed in range(3):
        learner.update(_window(agent, VEC, seed=seed))
    clone = DreamerV3Learner(make_dreamerv3(VEC, OneHot(3), "debug"))
    clone.load_state_dict(learner.state_dict())
    clone.optimizer.load_state_dict(learner.optimizer.state_dict())
    for a, b in zip(learner.state_dict().values(), clone.state_dict().values()):
        torch.testing.assert_close(a, b)
    window = _window(agent, VEC, seed=9)
    torch.manual_seed(0)
    m1, _ = learner.update(window.clone())
    torch.manual_seed(0)
    m2, _ = clone.update(window.clone())
    torch.testing.assert_close(m1["loss"], m2["loss"])
    for a, b in zip(learner.parameters(), clone.parameters()):
        torch.testing.assert_close(a, b)


def test_overfits_a_fixed_batch():
    """200 updates on one tiny batch cut reconstruction loss by >= 10x and reward loss by >= 3x."""
    torch.manual_seed(0)
    cfg = model_config("debug", units=32, deter=32, hidden=16, classes=8, stoch=4, bins=255)
    agent = make_dreamerv3(VEC, OneHot(3), cfg)
    learner = DreamerV3Learner(agent, opt_kwargs=dict(lr=3e-3, warmup=0))
    window = _window(agent, VEC, B=4, T=8)
    window["next", "reward"] = torch.linspace(-2, 2, 4 * 9).reshape(4, 9, 1)
    first, _ = learner.update(window.clone())
    for _ in range(199):
        last, _ = learner.update(window.clone())
    assert last["loss_rec"] < first["loss_rec"] / 10, (first["loss_rec"], last["loss_rec"])
    assert last["loss_rew"] < first["loss_rew"] / 3, (first["loss_rew"], last["loss_rew"])


@pytest.mark.parametrize("size", ["debug", "size1m", "size12m", "size25m", "size50m", "size100m", "size200m", "size400m"])
def test_losses_are_finite_at_every_size_preset(size):
    """Every reference preset builds and gives finite losses (forward only; B=1, T=2 keeps memory small)."""
    torch.manual_seed(0)
    shapes = {"pixels": (3, 64, 64), "observation": (5,)}
    agent = make_dreamerv3(shapes, OneHot(4), size)
    learner = DreamerV3Learner(agent)
    with torch.no_grad():
        losses, _ = learner.losses(_window(agent, shapes, B=1, T=2))
    for key, value in losses.items():
        assert torch.isfinite(value).all(), (size, key, value)
