"""compile.norms: the conv stacks' channel norms compiled alone (nets/layers.py, training/compute).

The module must route only large maps through the compiled kernel; a compiler failure must fall back to the
eager math with one warning; the setting must resolve as documented; and the Inductor kernels themselves
(skipped without a C++ compiler) must give the eager values and gradients.
"""
import warnings

import pytest
import torch
from torchrl.data import OneHot

from torchrl_dreamerv3.modules import make_dreamerv3
from torchrl_dreamerv3.nets import layers
from torchrl_dreamerv3.nets.layers import ChannelRMSNorm, rms_norm_act
from torchrl_dreamerv3.training.compute import settings
from torchrl_dreamerv3.training.compute.acceleration import Acceleration, accelerate

from test_objectives import IMG


def _norm_and_grads(norm, x, weight, act, grad):
    x = x.detach().clone().requires_grad_(True)
    weight = weight.detach().clone().requires_grad_(True)
    y = norm(x, weight, 1e-4, act)
    y.backward(grad)
    return y.detach(), x.grad, weight.grad


def _failing_compile(fn, **kwargs):
    def compiled(*args):
        raise RuntimeError("C++ compile error\nthe details")
    return compiled


@pytest.mark.parametrize("fails_in", ["forward", "backward"])
def test_a_compiler_failure_warns_once_and_the_norm_runs_eager(monkeypatch, fails_in):
    """Inductor cannot build kernels everywhere (no compiler, an ISA it mis-handles): the run goes on eager."""
    forward, backward = layers._CompiledOnFirstUse(layers._rms_norm_act_forward), \
        layers._CompiledOnFirstUse(layers._rms_norm_act_backward)
    failing = forward if fails_in == "forward" else backward
    failing.compiled = _failing_compile(failing.fn)
    working = backward if fails_in == "forward" else forward
    working.compiled = working.fn  # stands for a kernel that compiled
    monkeypatch.setattr(layers._CompiledRMSNormAct, "forward_math", staticmethod(forward))
    monkeypatch.setattr(layers._CompiledRMSNormAct, "backward_math", staticmethod(backward))
    torch.manual_seed(0)
    x = torch.randn(2, 6, 6, 8).to(torch.bfloat16)
    weight = torch.rand(8) + 0.5
    grad = torch.randn(x.shape).to(torch.bfloat16)
    with pytest.warns(UserWarning, match="compile.norms: Inductor could not compile .*RuntimeError: C\\+\\+ compile"):
        compiled = _norm_and_grads(layers.compiled_rms_norm_act, x, weight, True, grad)
    assert failing.failed and not working.failed
    eager = _norm_and_grads(rms_norm_act, x, weight, True, grad)
    for a, b in zip(compiled, eager):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the next call neither tries again nor warns
        _norm_and_grads(layers.compiled_rms_norm_act, x, weight, True, grad)


def test_only_maps_of_the_threshold_or_more_take_the_compiled_kernel(monkeypatch):
    calls = []

    def recording(x, weight, eps, act):
        calls.append(tuple(x.shape))
        return rms_norm_act(x, weight, eps, act)

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
def test_inductor_kernel_gives_the_eager_values_and_gradients(monkeypatch):
    forward = layers._CompiledOnFirstUse(layers._rms_norm_act_forward)
    backward = layers._CompiledOnFirstUse(layers._rms_norm_act_backward)
    monkeypatch.setattr(layers._CompiledRMSNormAct, "forward_math", staticmethod(forward))
    monkeypatch.setattr(layers._CompiledRMSNormAct, "backward_math", staticmethod(backward))
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
    if forward.failed or backward.failed:  # warned; the fallback test covers what the run then does
        pytest.skip("Inductor could not build these kernels here (e.g. under ATEN_CPU_CAPABILITY=default)")
    assert forward.compiled is not None and backward.compiled is not None
    for eager, compiled in zip(*results):
        assert eager.dtype == compiled.dtype and eager.shape == compiled.shape
        torch.testing.assert_close(compiled.float(), eager.float(), rtol=2e-2, atol=3e-2)
