"""RSSM: block-GRU core against a literal transcription of SPEC §3.2, resets, loops, gradients, sizes."""
import math

import pytest
import torch
import torch.nn.functional as F

from torchrl_dreamerv3.rssm import RSSM, BlockGRU, scale_action


def _rssm(action_dim=3, token_dim=10, **kw):
    kw = dict(deter=16, hidden=4, stoch=3, classes=5, blocks=4) | kw
    return RSSM(action_dim, token_dim, **kw)


def _literal_core(core: BlockGRU, h, z, a):
    """SPEC §3.2 written out with G copies of x and the reference's split of the gates."""
    def norm_act(mod, x):
        return F.silu(x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-4) * mod[1].weight)

    x0 = norm_act(core.deter_in, core.deter_in[0](h))
    x1 = norm_act(core.stoch_in, core.stoch_in[0](z.flatten(-2)))
    x2 = norm_act(core.action_in, core.action_in[0](a / torch.clamp(a.abs(), min=1.0)))
    x = torch.cat([x0, x1, x2], -1)
    g = core.blocks
    u = torch.cat([h.view(h.shape[0], g, -1), x[:, None, :].expand(-1, g, -1)], -1)  # (N, G, D/G + 3H)
    layer, norm = core.hidden_layers[0], core.hidden_norms[0]
    u = torch.einsum("ngi,gio->ngo", u, layer.weight).reshape(h.shape[0], -1) + layer.bias
    u = F.silu(u * torch.rsqrt(u.square().mean(-1, keepdim=True) + 1e-4) * norm.weight)
    out = torch.einsum("ngi,gio->ngo", u.view(h.shape[0], g, -1), core.gates.weight).reshape(h.shape[0], -1)
    out = out + core.gates.bias
    reset, cand, update = (t.reshape(h.shape[0], -1) for t in torch.chunk(out.view(h.shape[0], g, -1), 3, -1))
    reset = torch.sigmoid(reset)
    cand = torch.tanh(reset * cand)
    update = torch.sigmoid(update - 1)
    return update * cand + (1 - update) * h


def test_core_matches_literal_spec():
    torch.manual_seed(0)
    rssm = _rssm()
    for p in rssm.parameters():  # non-trivial biases and norm scales too
        torch.nn.init.normal_(p, std=0.3)
    h, z, a = torch.randn(7, 16), torch.randn(7, 3, 5), 3 * torch.randn(7, 3)
    ours = rssm.core(h, z, rssm.core.embed_action(a))
    torch.testing.assert_close(ours, _literal_core(rssm.core, h, z, a), rtol=1e-5, atol=1e-5)


def test_update_gate_bias_is_minus_one():
    rssm = _rssm()
    with torch.no_grad():
        rssm.core.gates.weight.zero_()
        rssm.core.gates.bias.zero_()
    h = torch.randn(2, 16)
    out = rssm.core(h, torch.zeros(2, 3, 5), rssm.core.embed_action(torch.zeros(2, 3)))
    # all gate logits 0: cand = tanh(0) = 0, update = sigmoid(-1)
    torch.testing.assert_close(out, h * (1 - torch.sigmoid(torch.tensor(-1.0))))


def test_action_scaling_shrinks_but_does_not_clip_and_stops_gradient_of_divisor():
    a = torch.tensor([0.5, -2.0, 4.0], requires_grad=True)
    out = scale_action(a)
    torch.testing.assert_close(out, torch.tensor([0.5, -1.0, 1.0]))
    out.sum().backward()
    torch.testing.assert_close(a.grad, torch.tensor([1.0, 0.5, 0.25]))  # 1/sg(max(1,|a|))


def test_initial_state_is_zero():
    deter, stoch = _rssm().initial((2, 3))
    assert deter.shape == (2, 3, 16) and stoch.shape == (2, 3, 3, 5)
    assert not deter.any() and not stoch.any()


def test_is_first_zeroes_previous_state_and_action():
    torch.manual_seed(0)
    rssm = _rssm()
    tokens = torch.randn(4, 10)
    first = torch.ones(4, dtype=torch.bool)
    zero = rssm.observe_step(*rssm.initial((4,)), torch.zeros(4, 3), tokens, first)
    junk = rssm.observe_step(torch.randn(4, 16), torch.rand(4, 3, 5), torch.randn(4, 3), tokens, first)
    torch.testing.assert_close(zero[0], junk[0])  # deter = f(0, 0, 0)
    torch.testing.assert_close(zero[2], junk[2])  # same posterior logits
    not_first = rssm.observe_step(torch.randn(4, 16), torch.rand(4, 3, 5), torch.randn(4, 3), tokens, ~first)
    assert not torch.allclose(not_first[0], zero[0])


def test_sequence_observe_equals_repeated_steps():
    rssm = _rssm()
    B, T = 3, 6
    tokens, actions = torch.randn(B, T, 10), torch.randn(B, T, 3)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[0, 2] = is_first[1, 0] = True
    deter0, stoch0 = torch.randn(B, 16), F.one_hot(torch.randint(0, 5, (B, 3)), 5).float()
    torch.manual_seed(1)
    seq = rssm.observe(deter0, stoch0, actions, tokens, is_first)
    torch.manual_seed(1)
    deter, stoch, steps = deter0, stoch0, []
    for t in range(T):
        deter, stoch, logits = rssm.observe_step(deter, stoch, actions[:, t], tokens[:, t], is_first[:, t])
        steps.append((deter, stoch, logits))
    for i in range(3):
        torch.testing.assert_close(seq[i], torch.stack([s[i] for s in steps], 1), rtol=1e-5, atol=1e-6)
    assert seq[0].shape == (B, T, 16) and seq[1].shape == (B, T, 3, 5) and seq[2].shape == (B, T, 3, 5)


def test_samples_are_one_hot_and_straight_through_gradients_reach_posterior_and_tokens():
    rssm = _rssm()
    tokens = torch.randn(2, 4, 10, requires_grad=True)
    deter, stoch, logits = rssm.observe(*rssm.initial((2,)), torch.zeros(2, 4, 3), tokens,
                                        torch.zeros(2, 4, dtype=torch.bool))
    assert torch.equal(stoch.sum(-1), torch.ones(2, 4, 3))
    assert set(stoch.unique().tolist()) <= {0.0, 1.0}
    (stoch * torch.randn_like(stoch)).sum().backward()
    assert tokens.grad.abs().sum() > 0
    assert rssm.post_out.weight.grad.abs().sum() > 0
    assert rssm.core.gates.weight.grad.abs().sum() > 0  # via the recurrence h_t -> z_t -> h_{t+1}
    assert rssm.prior_out.weight.grad is None  # observing does not use the prior


def test_imagine_step_uses_prior_and_no_reset():
    rssm = _rssm()
    deter, stoch = torch.randn(5, 16), F.one_hot(torch.randint(0, 5, (5, 3)), 5).float()
    action = torch.randn(5, 3)
    new_deter, new_stoch, logits = rssm.imagine_step(deter, stoch, action)
    torch.testing.assert_close(new_deter, rssm.core(deter, stoch, rssm.core.embed_action(action)))
    torch.testing.assert_close(logits, rssm.prior(new_deter))
    assert new_stoch.shape == (5, 3, 5)


def test_unimix_applies_to_latent_sampling():
    rssm = _rssm(unimix=0.5)
    logits = torch.full((20000, 3, 5), -1e9)
    logits[..., 0] = 0.0  # without unimix every sample would be class 0
    frac_other = 1 - rssm.sample(logits)[..., 0].mean().item()
    assert abs(frac_other - 0.5 * 4 / 5) < 0.02


@pytest.mark.parametrize(
    "size, token_dim, action_dim, expected",
    [
        ("debug", 128, 6, 783),
        ("size1m", 256, 6, 376_704),
        ("size12m", 1024, 6, 5_979_648),
        ("size1m", 64, 6, 364_416),
        ("size12m", 256, 6, 5_783_040),
        ("size1m", 576, 18, 397_952),
    ],
)
def test_parameter_count_matches_reference(size, token_dim, action_dim, expected):
    from torchrl_dreamerv3.modules.config import model_config

    c = model_config(size)
    rssm = RSSM(action_dim, token_dim, deter=c.deter, hidden=c.hidden, stoch=c.stoch, classes=c.classes,
                blocks=c.blocks)
    assert sum(p.numel() for p in rssm.parameters()) == expected


def test_block_linear_fan_in_is_full_input():
    rssm = _rssm(deter=512, hidden=64, blocks=8)
    w = rssm.core.gates.weight  # (8, 64, 192): fan-in is 512, not 64
    assert math.isclose(w.std().item(), 1 / math.sqrt(512), rel_tol=0.05)
