"""compile.norms: the conv stacks' channel norms compiled alone (nets/layers.py, training/compute).

The plain-op norm that the compiler fuses must be the fused eager norm's function, values and gradients; the
module must route only large maps through the compiled kernel; the setting must resolve as documented; and the
Inductor kernel itself (skipped without a C++ compiler) must give the eager values and gradients.
"""
import pytest
import torch
from torchrl.data import OneHot

from torchrl_dreamerv3.modules import make_dreamerv3
from torchrl_dreamerv3.nets import layers
from torchrl_dreamerv3.nets.layers import ChannelRMSNorm, plain_rms_norm_act, rms_norm_act
from torchrl_dreamerv3.training.compute import settings
from torchrl_dreamerv3.training.compute.acceleration import Acceleration, accelerate

from test_objectives import IMG


def _norm_and_grads(norm, x, weight, act, grad):
    x = x.detach().clone().requires_grad_(True)
    weight = weight.detach().clone().requires_grad_(True)
    y = norm(x, weight, 1e-4, act)
    y.backward(grad)
    return y.detach(), x.grad, weight.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("act", [True, False])
def test_plain_norm_is_the_fused_norms_function(dtype, act):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 40).mul(3).to(dtype)  # (N, H, W, C), over the fused path's size threshold
    weight = torch.rand(40) + 0.5
    grad = torch.randn(x.shape).to(dtype)
    fused = _norm_and_grads(rms_norm_act, x, weight, act, grad)
    plain = _norm_and_grads(plain_rms_norm_act, x, weight, act, grad)
    # by hand: y = x / sqrt(mean(x^2) + eps) * w, then SiLU
    xf = x.float()
    by_hand = xf / (xf.pow(2).mean(-1, keepdim=True) + 1e-4).sqrt() * weight
    by_hand = by_hand.to(dtype).float()
    by_hand = by_hand * torch.sigmoid(by_hand) if act else by_hand
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain[0].float(), by_hand, **tol)
    for a, b in zip(fused, plain):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), **tol)


def test_only_maps_of_the_threshold_or_more_take_the_compiled_kernel(monkeypatch):
    calls = []

    def recording(x, weight, eps, act):
        calls.append(tuple(x.shape))
        return plain_rms_norm_act(x, weight, eps, act)

    monkeypatch.setattr(layers, "compiled_rms_norm_act", recording)
    norm = ChannelRMSNorm(4, act=True)
    small, large = torch.randn(1, 4, 8, 8), torch.randn(2, 4, 8, 8)  # 256 and 512 elements
    eager = norm(large)
    assert calls == []  # off by default
    norm.compiled_min_numel = 512
    norm(small)
    assert calls == []  # acting's small maps stay eager
    routed = norm(large)
    assert calls == [(2, 8, 8, 4)]  # the channel axis last: the (N, H, W, C) view
    assert routed.shape == large.shape
    torch.testing.assert_close(routed, eager)


def test_compile_norms_resolves_to_bf16_on_a_cpu_with_a_compiler(monkeypatch):
    monkeypatch.setattr(settings, "cpp_compiler", lambda: "/usr/bin/g++")
    auto = {"compile": {"enabled": "auto", "norms": "auto"}}
    assert Acceleration.from_config({**auto, "precision": "bfloat16"}, "cpu").compile_norms
    assert not Acceleration.from_config({**auto, "precision": "float32"}, "cpu").compile_norms
    # a compiled run compiles the norms with everything else
    assert not Acceleration.from_config({"precision": "bfloat16", "compile": {"enabled": True, "norms": "auto"}},
                                        "cpu").compile_norms
    assert Acceleration.from_config({"precision": "float32", "compile": {"norms": True}}, "cpu").compile_norms
    assert not Acceleration.from_config({"precision": "bfloat16", "compile": {"norms": False}}, "cpu").compile_norms
    with pytest.raises(ValueError, match="compile.norms"):
        Acceleration.from_config({"compile": {"norms": "yes"}}, "cpu")
    acc = Acceleration.from_config({**auto, "precision": "bfloat16"}, "cpu")
    assert "channel norms compiled" in acc.describe()
    monkeypatch.setattr(settings, "cpp_compiler", lambda: None)  # Inductor could not build its kernels
    assert not Acceleration.from_config({**auto, "precision": "bfloat16"}, "cpu").compile_norms


def test_cpp_compiler_follows_cxx(monkeypatch, tmp_path):
    fake = tmp_path / "my-cxx"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    assert settings.cpp_compiler() == str(fake)
    monkeypatch.setenv("CXX", str(tmp_path / "missing"))
    assert settings.cpp_compiler() is None


def test_accelerate_sets_the_threshold_on_every_channel_norm_and_only_then():
    torch.manual_seed(0)
    agent = make_dreamerv3(IMG, OneHot(3), "debug")
    norms = [m for m in agent.modules() if isinstance(m, ChannelRMSNorm)]
    assert norms  # the encoder's and decoder's conv stages
    accelerate(None, Acceleration(precision="bfloat16"), agent=agent)
    assert all(m.compiled_min_numel is None for m in norms)
    accelerate(None, Acceleration(precision="bfloat16", compile_norms=True), agent=agent)
    assert all(m.compiled_min_numel == settings.COMPILED_NORM_MIN_NUMEL for m in norms)


@pytest.mark.skipif(settings.cpp_compiler() is None, reason="Inductor needs a C++ compiler for CPU kernels")
def test_inductor_kernel_gives_the_eager_values_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 16, 16).to(memory_format=torch.channels_last).to(torch.bfloat16)
    grad = torch.randn(x.shape).to(torch.bfloat16)
    results = []
    for threshold in (None, 1):
        norm = ChannelRMSNorm(8, act=True)
        with torch.no_grad():
            norm.weight.copy_(torch.linspace(0.5, 1.5, 8))
        norm.compiled_min_numel = threshold
        xi = x.detach().clone().requires_grad_(True)
        y = norm(xi)
        y.backward(grad)
        results.append((y.detach(), xi.grad, norm.weight.grad))
    for eager, compiled in zip(*results):
        assert eager.dtype == compiled.dtype and eager.shape == compiled.shape
        torch.testing.assert_close(compiled.float(), eager.float(), rtol=2e-2, atol=3e-2)
