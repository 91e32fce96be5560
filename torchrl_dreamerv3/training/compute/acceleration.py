"""Compute settings of the update and the acting policy: precision (bf16 autocast), torch.compile, TF32.

``precision: bfloat16`` follows the reference's mixed precision: activations and matmuls run in bf16
under :func:`torch.autocast`; parameters, gradients, optimiser state and the LaProp/AGC arithmetic stay
float32 (autocast never touches them, and the update's backward and optimiser step run outside it);
every output layer (the heads, the decoder, the RSSM's prior/posterior logits) is cast back to float32,
so losses, the two-hot / KL / percentile math and the recurrent state are float32 (the functional
guards in :mod:`torchrl_dreamerv3.functional` make sure of it).

``compile`` compiles the pieces that run every step, each with ``dynamic=False`` so that every batch
shape (the observe loop's ``B``, imagination's ``B * T``, the acting batch) is compiled exactly once:

- ``rssm.core.step``: the block-GRU step of the observe loop, of imagination and of acting;
- ``rssm.prior`` and the posterior output layers, every prediction head, the encoder and decoder nets.

None of them draws random numbers (the latent and action samples stay eager), so a compiled run
samples exactly what the eager run samples for the same seed.

``compile_norms`` (``compile.norms``, on by default in bf16 on a CPU) compiles one piece alone, the channel
RMSNorm + SiLU of the encoder's and decoder's conv stages on the update's large maps: eager it makes several
passes over each map with a bf16/float32 conversion in each, compiled its forward and its backward are each one
kernel (1.08 to 1.14x on the bf16 image update on a CPU; a few seconds of compiling at the start). Where Inductor
cannot build them, the norm warns once and runs eager (``nets/layers.py``).

Each compiled piece has its backward compiled too (AOTAutograd). The whole loss is not compiled as one
graph: its Python loops (64 observe steps, 15 imagination steps) unroll into graphs whose Inductor
warm-up on a CPU takes many minutes, and it graph-breaks at the observe loop's host-side reset list
and at TorchRL's distribution wrappers in the actor (see ``graph_breaks`` below and the report in
``benchmarks/gpu_check.py``).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch import nn

from .host_memory import keep_freed_memory
from .settings import COMPILE_MODES, COMPILED_NORM_MIN_NUMEL, PRECISIONS, Acceleration, native_bf16, resolve_precision

__all__ = ["PRECISIONS", "COMPILE_MODES", "Acceleration", "accelerate", "enable_tf32", "compiled_graphs",
           "graph_breaks", "f32_output_modules", "native_bf16", "resolve_precision"]

_CACHE_ENTRIES = 64

def enable_tf32() -> None:
    """TF32 tensor-core matmuls and convolutions for float32 on CUDA (no effect on CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


# ---------------------------------------------------------------- bf16: float32 output layers
def _to_f32(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(_to_f32(v) for v in value)
    return value


def _f32_hook(module, args, output):
    return _to_f32(output)


def f32_output_modules(agent: nn.Module) -> list[nn.Module]:
    """The agent's output layers: every prediction head, the decoder net, the RSSM's prior/posterior logits."""
    from ...nets.decoder import MultiDecoder
    from ...nets.heads import MLPHead

    found = [m for m in agent.modules() if isinstance(m, (MLPHead, MultiDecoder))]
    rssm = getattr(agent, "rssm", None)
    found += [m for name in ("prior_out", "post_out") if (m := getattr(rssm, name, None)) is not None]
    return found


def _cast_outputs_to_f32(agent: nn.Module) -> None:
    for module in f32_output_modules(agent):
        if not getattr(module, "_f32_outputs", False):
            module.register_forward_hook(_f32_hook)
            module._f32_outputs = True


# ---------------------------------------------------------------- compile
def _compiled_pieces(agent: nn.Module) -> Iterator[nn.Module]:
    from ...nets.decoder import MultiDecoder
    from ...nets.encoder import MultiEncoder
    from ...nets.heads import MLPHead

    for module in agent.modules():
        if isinstance(module, (MLPHead, MultiDecoder, MultiEncoder)):
            yield module


def _compile_agent(agent: nn.Module, acc: Acceleration) -> None:
    kwargs = dict(dynamic=False, backend=acc.backend)
    if acc.backend == "inductor":
        kwargs["mode"] = acc.mode
    agent.rssm.compile_steps(**kwargs)  # the recurrent step, prior and posterior head: once per RSSM
    for module in _compiled_pieces(agent):
        if getattr(module, "_compiled_call_impl", None) is None:
            module.compile(**kwargs)


def accelerate(learner: nn.Module | None, acc: Acceleration, agent: nn.Module | None = None,
               policies=()) -> Acceleration:
    """Applies ``acc`` in place to a learner's agent, the learner and the acting ``policies``.

    bf16: float32 output layers on the agent, and the ``forward_context`` of the learner (its loss
    forward) and of each :class:`~torchrl_dreamerv3.modules.DreamerV3Policy` set to autocast.
    compile: the per-step pieces of the agent compiled (module docstring); policies over the same
    agent run them too. TF32 is switched on for CUDA. ``host_memory: keep`` sets the process's allocator
    (:mod:`.host_memory`). Returns ``acc``.
    """
    if acc.host_memory == "keep" and (why_not := keep_freed_memory()) is not None:
        warnings.warn(f"host_memory=keep: {why_not}; the allocator keeps its defaults", stacklevel=2)
    if agent is None:
        agent = learner.modules_
    if acc.device_type == "cuda":
        enable_tf32()
    if acc.bf16:
        _cast_outputs_to_f32(agent)
    for owner in (learner, *policies):
        if owner is not None:
            owner.forward_context = acc.autocast
    if acc.compile or acc.compile_norms:
        # One code object (e.g. MLPHead.forward, the norm's math) serves many instances or stages, each at its
        # own shapes and grad modes: more cache entries than Dynamo's default limit of 8, all legitimate.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _CACHE_ENTRIES)
        torch._dynamo.config.accumulated_recompile_limit = max(
            torch._dynamo.config.accumulated_recompile_limit, 16 * _CACHE_ENTRIES)
    if acc.compile:
        _compile_agent(agent, acc)
    elif acc.compile_norms:
        _compile_channel_norms(agent)
    return acc


def _compile_channel_norms(agent: nn.Module) -> None:
    """The conv stacks' channel norms of large maps through the compiled kernel (``compile_norms``)."""
    from ...nets.layers import ChannelRMSNorm

    for module in agent.modules():
        if isinstance(module, ChannelRMSNorm):
            module.compiled_min_numel = COMPILED_NORM_MIN_NUMEL


def compiled_graphs() -> int:
    """Graphs Dynamo has compiled in this process so far (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def graph_breaks() -> dict[str, int]:
    """Graph-break reasons counted by Dynamo in this process."""
    from torch._dynamo.utils import counters

    return dict(counters["graph_break"])
