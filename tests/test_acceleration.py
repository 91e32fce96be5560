"""Compute settings (training/compute/acceleration.py): compiled pieces match eager, bf16 keeps float32 state and math.

The compile tests use the ``aot_eager`` backend: Dynamo captures the same forward graphs and AOTAutograd
the same backward graphs as with Inductor, without C++ code generation, whose warm-up on a 2-core CPU
(minutes for every piece and shape) does not fit a test. ``benchmarks/gpu_check.py --device cpu``
(tests/test_gpu_check.py) runs the Inductor path.
"""
import copy

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, OneHot

from torchrl_dreamerv3.functional import twohot_mean, twohot_nll, symexp_twohot_bins, unimix_log_probs
from torchrl_dreamerv3.modules import DreamerV3Policy, make_dreamerv3
from torchrl_dreamerv3.training import DreamerV3Learner
from torchrl_dreamerv3.training.compute.acceleration import Acceleration, accelerate, compiled_graphs, graph_breaks

from test_objectives import IMG, VEC, _grad_owners, _window


COMPILED = Acceleration(compile=True, backend="aot_eager")


def _twin_learners(shapes, spec, acc, opt_kwargs=None):
    torch.manual_seed(0)
    agent = make_dreamerv3(shapes, spec, "debug")
    twin = copy.deepcopy(agent)
    eager, other = DreamerV3Learner(agent, opt_kwargs=opt_kwargs), DreamerV3Learner(twin, opt_kwargs=opt_kwargs)
    accelerate(other, acc)
    return eager, other


def _update(learner, window, seed):
    torch.manual_seed(seed)  # imagination and the latents sample: both learners draw the same numbers
    before = [p.detach().clone() for p in learner.modules_.parameters()]
    metrics, latents = learner.update(window.clone())
    deltas = [p.detach() - b for p, b in zip(learner.modules_.parameters(), before)]
    return metrics, latents, deltas


def _assert_rel_close(actual, expected, rtol, what):
    scale = expected.abs().max().clamp_min(1e-12)
    assert (actual - expected).abs().max() <= rtol * scale, f"{what}: {actual} vs {expected}"


def test_compiled_update_matches_eager_and_does_not_recompile_after_warm_up():
    eager, compiled = _twin_learners(VEC, OneHot(3), COMPILED, opt_kwargs=dict(warmup=0))
    graphs = []
    for seed in range(3):  # new data every update
        window = _window(eager.modules_, VEC, B=3, T=4, seed=seed)
        m_e, lat_e, d_e = _update(eager, window, seed)
        m_c, lat_c, d_c = _update(compiled, window, seed)
        graphs.append(compiled_graphs())
        for key in m_e.keys():
            _assert_rel_close(m_c[key], m_e[key], 1e-5, f"update {seed} {key}")
        for i, (a, b) in enumerate(zip(d_c, d_e)):
            _assert_rel_close(a, b, 1e-5, f"update {seed} parameter {i} delta")
        torch.testing.assert_close(lat_c["deter"], lat_e["deter"], rtol=1e-5, atol=1e-6)
    assert any(d.abs().sum() > 0 for d in d_e)  # the updates moved the parameters
    assert graphs[0] > 0
    assert graphs[1] == graphs[2], f"recompiled after warm-up: graphs per update {graphs}"
    assert not graph_breaks(), graph_breaks()  # each compiled piece is one whole graph


def _policy_state(agent, n, seed):
    g = torch.Generator().manual_seed(seed)
    c = agent.cfg
    return TensorDict({
        "observation": torch.randn(n, 5, generator=g), "is_first": torch.zeros(n, 1, dtype=torch.bool),
        "deter": torch.randn(n, c.deter, generator=g), "stoch": torch.zeros(n, c.stoch, c.classes),
        "prev_action": torch.zeros(n, agent.action_dim)}, batch_size=[n])


@pytest.mark.parametrize("spec", [OneHot(3), Bounded(-1, 1, (2,))])
def test_compiled_policy_gives_the_eager_actions_and_compiles_once_per_batch_size(spec):
    torch.manual_seed(0)
    agent = make_dreamerv3(VEC, spec, "debug")
    twin = copy.deepcopy(agent)
    accelerate(None, COMPILED, agent=twin)
    eager, compiled = DreamerV3Policy(agent), DreamerV3Policy(twin)
    td_e, td_c = _policy_state(agent, 4, 0), _policy_state(agent, 4, 0)
    counts = []
    for step in range(4):
        torch.manual_seed(step)
        td_e = eager(td_e)
        torch.manual_seed(step)
        td_c = compiled(td_c)
        torch.testing.assert_close(td_c["action"], td_e["action"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(td_c["deter"], td_e["deter"], rtol=1e-5, atol=1e-6)
        td_e["observation"] = td_c["observation"] = torch.randn(4, 5)
        counts.append(compiled_graphs())
    assert counts[1] == counts[3]
    compiled(_policy_state(agent, 7, 1))  # a new acting batch size compiles once
    after_new_size = compiled_graphs()
    compiled(_policy_state(agent, 7, 2))
    assert compiled_graphs() == after_new_size > counts[3]


BF16 = Acceleration(precision="bf16")


@pytest.mark.parametrize("shapes, spec", [(IMG, OneHot(3)), (VEC, Bounded(-1, 1, (2,)))])
def test_bf16_update_keeps_float32_state_and_stays_near_float32(shapes, spec):
    f32, bf16 = _twin_learners(shapes, spec, BF16, opt_kwargs=dict(warmup=0))
    window = _window(f32.modules_, shapes, seed=3)
    m_f, lat_f, d_f = _update(f32, window, 0)
    m_b, lat_b, d_b = _update(bf16, window, 0)
    assert all(p.dtype == torch.float32 for p in bf16.modules_.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in bf16.modules_.parameters())
    state = [v for s in bf16.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.is_floating_point()]
    assert state and all(v.dtype == torch.float32 for v in state)
    assert lat_b["deter"].dtype == lat_b["stoch"].dtype == torch.float32
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in m_b.values() if v.is_floating_point())
    # Stated tolerance: bf16 keeps 8 significand bits (relative rounding 2^-9 per op); the losses sum
    # over thousands of bf16 products, so 3 % of each loss (plus 0.02 absolute for losses near 0).
    for key in [k for k in m_f.keys() if k.startswith("loss")]:
        assert abs(float(m_b[key] - m_f[key])) <= 0.03 * abs(float(m_f[key])) + 0.02, (key, m_b[key], m_f[key])
    # LaProp normalises each update, so the parameter steps agree in sign for most elements.
    flat_f, flat_b = torch.cat([d.flatten() for d in d_f]), torch.cat([d.flatten() for d in d_b])
    moved = flat_f.abs() > 0
    assert (torch.sign(flat_b[moved]) == torch.sign(flat_f[moved])).float().mean() > 0.8


def test_bf16_runs_matmuls_in_bf16_and_output_layers_in_float32():
    torch.manual_seed(0)
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    learner = DreamerV3Learner(agent)
    accelerate(learner, BF16)
    seen = {}
    def record(name):
        def hook(module, args, out):
            seen.setdefault(name, out.dtype)
        return hook

    hooks = [module.register_forward_hook(record(name))
             for name, module in (("reward_hidden", agent.reward.module.head.mlp[1]),
                                  ("prior_out", agent.rssm.prior_out))]
    losses, data = learner.losses(_window(agent, VEC))
    for h in hooks:
        h.remove()
    assert seen["reward_hidden"] == torch.bfloat16  # autocast is on for the forward pass
    assert seen["prior_out"] == torch.float32  # output layers come back in float32
    assert data["reward_logits"].dtype == data["prior_logits"].dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in losses.values() if v.is_floating_point())


@pytest.mark.parametrize("shapes, spec", [(IMG, OneHot(3)), (VEC, Bounded(-1, 1, (2,)))])
def test_gradient_flow_table_holds_under_bf16(shapes, spec):
    torch.manual_seed(0)
    agent = make_dreamerv3(shapes, spec, "debug")
    with torch.no_grad():  # zero-initialised output layers would block every gradient behind them
        for p in [*agent.reward.parameters(), *agent.critic.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    learner = DreamerV3Learner(agent)
    accelerate(learner, BF16)
    losses, _ = learner.losses(_window(agent, shapes))
    assert _grad_owners(agent, losses["loss_rec"]) == {"enc", "dyn", "dec"}
    assert _grad_owners(agent, losses["loss_rew"]) == {"enc", "dyn", "rew"}
    assert _grad_owners(agent, losses["loss_con"]) == {"enc", "dyn", "con"}
    assert _grad_owners(agent, losses["loss_dyn"]) <= {"enc", "dyn"}
    assert _grad_owners(agent, losses["loss_policy"]) == {"pol"}
    assert _grad_owners(agent, losses["loss_value"]) == {"val"}
    assert _grad_owners(agent, losses["loss_repval"]) == {"val", "enc", "dyn"}


def test_twohot_and_unimix_math_is_float32_under_autocast():
    bins = symexp_twohot_bins(255)
    logits = torch.randn(64, 255).bfloat16()
    target = torch.randn(64) * 30
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mean, nll, lp = twohot_mean(logits, bins), twohot_nll(logits, target, bins), unimix_log_probs(logits)
    assert mean.dtype == nll.dtype == lp.dtype == torch.float32
    torch.testing.assert_close(mean, twohot_mean(logits.float(), bins), rtol=0, atol=0)  # the product in float32
    torch.testing.assert_close(nll, twohot_nll(logits.float(), target, bins), rtol=0, atol=0)


def test_settings_from_config():
    cfg = {"precision": "bfloat16", "compile": {"enabled": "auto", "mode": "default"}}
    acc = Acceleration.from_config(cfg, "cpu")
    assert acc.bf16 and not acc.compile  # auto compiles on CUDA only
    assert Acceleration.from_config({"compile": {"enabled": True}}, "cpu").compile
    with pytest.raises(ValueError, match="precision must be one of"):
        Acceleration(precision="float16")
    with pytest.raises(ValueError, match="reduce-overhead"):
        Acceleration(compile=True, mode="reduce-overhead", device_type="cpu")
    with pytest.raises(ValueError, match="compile.enabled"):
        Acceleration.from_config({"compile": {"enabled": "yes"}}, "cpu")
    multisync = {"run": {"collector": "multisync"}}
    assert not Acceleration.from_config(dict(multisync, compile={"enabled": "auto"}), "cuda").compile
    assert Acceleration.from_config({"compile": {"enabled": "auto"}}, "cuda").compile
    with pytest.raises(ValueError, match="multisync"):
        Acceleration.from_config(dict(multisync, compile={"enabled": True}), "cpu")


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, "bfloat16"), (False, True, "bfloat16"),
                                                         (False, False, "float32")])
def test_precision_auto_follows_the_cpus_native_bf16(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    acc = Acceleration.from_config({"precision": "auto"}, "cpu")
    assert acc.precision == expected
    # the run's start line says what auto chose and why
    assert f"precision=auto: {expected}" in acc.describe()
    found = " and ".join(name for name, has in (("avx512_bf16", avx512_bf16), ("amx", amx)) if has)
    assert acc.note.endswith(f"(CPU with {found})" if found else "(CPU without avx512_bf16 or amx)")


def test_precision_auto_on_cuda_needs_compute_capability_8(monkeypatch):
    from torchrl_dreamerv3.training.compute.acceleration import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert resolve_precision("auto", "cuda")[0] == "float32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    precision, note = resolve_precision("auto", "cuda")
    assert precision == "bfloat16" and "9.0" in note
    assert resolve_precision("float32", "cuda") == ("float32", None)  # an explicit choice is kept, silently


def test_precision_auto_for_cuda_without_cuda_resolves_to_float32(monkeypatch):
    """A plan made for ``cuda`` where CUDA is absent (a CPU-only build) must not ask for the card's capability."""
    from torchrl_dreamerv3.training.compute.acceleration import resolve_precision

    def no_card(device=None):
        raise AssertionError("Torch not compiled with CUDA enabled")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", no_card)
    assert resolve_precision("auto", "cuda") == ("float32", "precision=auto: float32 (CUDA not available)")
    assert Acceleration.from_config({"precision": "auto"}, "cuda").precision == "float32"
