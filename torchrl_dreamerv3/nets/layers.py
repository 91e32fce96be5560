"""Building blocks shared by every DreamerV3 network (SPEC §2).

All layers follow the reference's numerics: ``trunc_normal_in`` initialisation with an
``outscale`` factor, zero biases, RMSNorm with ``eps=1e-4`` and a scale but no shift,
and the ``Linear -> RMSNorm -> SiLU`` ordering everywhere.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = [
    "trunc_normal_in_",
    "Linear",
    "BlockLinear",
    "Conv2d",
    "ChannelRMSNorm",
    "NormAct",
    "MLP",
    "RMS_EPS",
]

RMS_EPS = 1e-4
# std of a standard normal truncated to [-2, 2] is 0.87962566; the reference multiplies
# by 1 / 0.87962566 = 1.1368 so that the truncated draw has unit variance.
_TRUNC_STD_CORRECTION = 1.1368


@torch.no_grad()
def trunc_normal_in_(weight: torch.Tensor, fan_in: int, outscale: float = 1.0) -> torch.Tensor:
    """In-place ``trunc_normal_in`` init: ``truncnormal(-2, 2) * 1.1368 / sqrt(fan_in) * outscale``.

    ``outscale == 0`` gives an all-zero kernel (the reference's zero-initialised heads).
    """
    if outscale == 0.0:
        return weight.zero_()
    nn.init.trunc_normal_(weight, mean=0.0, std=1.0, a=-2.0, b=2.0)
    return weight.mul_(_TRUNC_STD_CORRECTION * math.sqrt(1.0 / fan_in) * outscale)


class Linear(nn.Linear):
    """``nn.Linear`` with the reference initialisation (zero bias)."""

    def __init__(self, in_features: int, out_features: int, outscale: float = 1.0):
        self.outscale = outscale
        super().__init__(in_features, out_features)

    def reset_parameters(self) -> None:
        trunc_normal_in_(self.weight, self.in_features, self.outscale)
        nn.init.zeros_(self.bias)


class BlockLinear(nn.Module):
    """Block-diagonal linear layer (reference ``nn.BlockLinear``).

    The input of size ``I`` is split into ``blocks`` groups; group ``g`` is multiplied by its own
    ``(I/G, O/G)`` kernel. The bias has the full output size. The initialiser's fan-in is the
    full input size ``I``, not the per-block size, as in the reference.
    """

    def __init__(self, in_features: int, out_features: int, blocks: int, outscale: float = 1.0):
        super().__init__()
        if in_features % blocks or out_features % blocks:
            raise ValueError(
                f"BlockLinear: in_features={in_features} and out_features={out_features} "
                f"must both be divisible by blocks={blocks}"
            )
        self.in_features, self.out_features, self.blocks = in_features, out_features, blocks
        self.outscale = outscale
        self.weight = nn.Parameter(torch.empty(blocks, in_features // blocks, out_features // blocks))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_in_(self.weight, self.in_features, self.outscale)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.blocks, self.in_features // self.blocks).transpose(0, 1)
        y = torch.bmm(x, self.weight).transpose(0, 1)  # (N, G, O/G)
        return (y.reshape(*lead, self.out_features)) + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, blocks={self.blocks}"


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with 'same' padding and the reference initialisation (fan-in ``k*k*C_in``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, outscale: float = 1.0):
        self.outscale = outscale
        padding = kernel // 2 if stride == 1 else (kernel - 1) // 2
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=padding)

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        trunc_normal_in_(self.weight, fan_in, self.outscale)
        nn.init.zeros_(self.bias)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x.float(), weight.shape, weight, eps).to(x.dtype)


_FUSED_NORM_MIN_NUMEL = 32768  # below this, F.rms_norm's per-op cost is smaller than _RMSNormAct's call cost


def _rms_norm_act_forward(x: torch.Tensor, weight: torch.Tensor, eps: float,
                          act: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused norm's forward: ``(silu(y) or y, r)``, ``y = x * r * weight``, ``r = rsqrt(mean(x^2) + eps)``."""
    size, xf = x.shape[-1], x.float()  # x itself when float32
    ms = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square_().div_(size)  # one read of x
    r = ms.add_(eps).rsqrt_()
    y = (xf * r).mul_(weight).to(x.dtype)
    return (F.silu(y) if act else y), r


def _rms_norm_act_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, r: torch.Tensor, act: bool,
                           need_x: bool, need_weight: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The fused norm's backward: ``(dL/dx, dL/dweight)`` from ``dL/d output`` and what the forward held."""
    size = x.shape[-1]
    xhat = x.float() * r
    own = act or grad.dtype != torch.float32  # gy below is a fresh buffer: in-place is safe
    gy = torch.ops.aten.silu_backward(grad, (xhat * weight).to(x.dtype)) if act else grad  # dL/dy
    gy = gy.float()
    grad_weight = (gy * xhat).reshape(-1, size).sum(0) if need_weight else None
    grad_x = None
    if need_x:
        g = gy.mul_(weight) if own else gy * weight  # dL/dxhat
        dot = (g * xhat).sum(-1, keepdim=True).div_(size)
        grad_x = g.addcmul_(xhat, dot, value=-1.0).mul_(r).to(x.dtype)  # r * (g - xhat * mean(g * xhat))
    return grad_x, grad_weight


class _RMSNormAct(torch.autograd.Function):
    """``y = x * rsqrt(mean(x^2) + eps) * weight`` over the last axis, then optionally ``silu(y)``.

    Same function as ``F.rms_norm`` (+ ``F.silu``) with a hand-written backward. On CPU
    ``F.rms_norm`` is a composite of six ops and autograd records each of them, so a norm costs
    about a dozen full passes over ``x`` forward and backward, each with a fresh temporary; here
    it is about four passes forward and eight backward. Every MLP layer, the RSSM core and the
    conv stacks use it, so this is a large share of the update on CPU.

    bfloat16 activations (``precision=bfloat16``): the norm is computed in float32 and cast back to
    bfloat16, SiLU runs in bfloat16, as the reference's mixed precision does; only the bfloat16 input is
    held for the backward, never a float32 copy of it.
    """

    forward_math = staticmethod(_rms_norm_act_forward)
    backward_math = staticmethod(_rms_norm_act_backward)

    @classmethod
    def forward(cls, ctx, x: torch.Tensor, weight: torch.Tensor, eps: float, act: bool) -> torch.Tensor:
        out, r = cls.forward_math(x, weight, eps, act)
        ctx.act = act
        # y is not kept for SiLU's backward: the backward recomputes it with the same two products (the
        # same values), which costs one pass there and saves a tensor the size of x per layer until then
        ctx.save_for_backward(x, weight, r)
        return out

    @classmethod
    @once_differentiable
    def backward(cls, ctx, grad: torch.Tensor):
        x, weight, r = ctx.saved_tensors
        grad_x, grad_weight = cls.backward_math(grad, x, weight, r, ctx.act, *ctx.needs_input_grad[:2])
        return grad_x, grad_weight, None, None


def rms_norm_act(x: torch.Tensor, weight: torch.Tensor, eps: float, act: bool) -> torch.Tensor:
    """RMSNorm (scale only) over the last axis, followed by SiLU when ``act``; the norm computed in float32.

    Uses :class:`_RMSNormAct` for large float32 or bfloat16 CPU tensors, and ``F.rms_norm`` otherwise: it
    is fused on GPUs, and on small tensors (the 16-row steps of the observe loop) the Python cost of
    a custom autograd function outweighs the passes it saves.
    """
    if (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and weight.dtype == torch.float32
            and x.numel() >= _FUSED_NORM_MIN_NUMEL):
        return _RMSNormAct.apply(x, weight, eps, act)
    y = _rms_norm(x, weight, eps)
    return F.silu(y) if act else y


class _CompiledOnFirstUse:
    """``fn`` through ``torch.compile`` (Inductor, one kernel per shape, made on first use). Where Inductor cannot
    build a kernel on this machine, warns once and runs ``fn`` eager from then on: a run never stops for it."""

    def __init__(self, fn):
        self.fn, self.compiled, self.failed = fn, None, False

    def __call__(self, *args):
        if not self.failed:
            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.fn, dynamic=False)
                return self.compiled(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure; a real error re-raises eager below
                self.failed = True
                first_line = (str(error).splitlines() or [""])[0][:200]
                warnings.warn(f"compile.norms: Inductor could not compile {self.fn.__name__} on this machine "
                              f"({type(error).__name__}: {first_line}); it runs eager", stacklevel=2)
        return self.fn(*args)


class _CompiledRMSNormAct(_RMSNormAct):
    """:class:`_RMSNormAct` with its forward and its backward math each compiled into one kernel: the same saved
    tensors (the same memory), and both compiled outside autograd's graph, so that a compiler failure on this
    machine falls back to the eager math instead of failing the backward pass."""

    forward_math = staticmethod(_CompiledOnFirstUse(_rms_norm_act_forward))
    backward_math = staticmethod(_CompiledOnFirstUse(_rms_norm_act_backward))


def compiled_rms_norm_act(x: torch.Tensor, weight: torch.Tensor, eps: float, act: bool) -> torch.Tensor:
    """:func:`rms_norm_act`'s function with its forward and backward compiled (:class:`_CompiledRMSNormAct`)."""
    return _CompiledRMSNormAct.apply(x, weight, eps, act)


class ChannelRMSNorm(nn.Module):
    """RMSNorm over the channel axis of an ``(N, C, H, W)`` feature map (per pixel), scale only; followed by
    SiLU when ``act`` (one fused function, as :class:`NormAct`).

    ``compiled_min_numel``: maps of at least this many elements go through :func:`compiled_rms_norm_act`
    (``None``, the default: never). Set by ``accelerate`` (``compile.norms``): on a CPU the eager norm of a
    map with few channels makes several passes over it, each with a conversion in bf16, and compiled it makes
    one; the small maps of acting stay eager, where a compiled call costs more than it saves.
    """

    compiled_min_numel: int | None = None

    def __init__(self, channels: int, eps: float = RMS_EPS, act: bool = False):
        super().__init__()
        self.eps, self.act = eps, act
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise the trailing channel axis of the (N, H, W, C) view, which is free for the
        # channels_last maps of the encoder and decoder, with the few-pass rms_norm_act.
        # Computed in float32 as the reference does, then cast back.
        x = x.movedim(1, -1)
        large = self.compiled_min_numel is not None and x.numel() >= self.compiled_min_numel
        norm = compiled_rms_norm_act if large else rms_norm_act
        return norm(x, self.weight, self.eps, act=self.act).movedim(-1, 1)


class NormAct(nn.Module):
    """``SiLU(RMSNorm(x))`` over the last axis (scale only, eps 1e-4)."""

    def __init__(self, features: int, eps: float = RMS_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm_act(x, self.weight, self.eps, act=True)


class MLP(nn.Sequential):
    """``layers`` x [Linear(units) -> RMSNorm -> SiLU] (reference ``nn.MLP``)."""

    def __init__(self, in_features: int, layers: int, units: int):
        blocks = []
        for i in range(layers):
            blocks += [Linear(in_features if i == 0 else units, units), NormAct(units)]
        super().__init__(*blocks)
        self.in_features = in_features
        self.out_features = units if layers else in_features
