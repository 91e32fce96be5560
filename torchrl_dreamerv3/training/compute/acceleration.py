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

Each compiled piece has its backward compiled too (AOTAutograd). The whole loss is not compiled as one
graph: its Python loops (64 observe steps, 15 imagination steps) unroll into graphs whose Inductor
warm-up on a CPU takes many minutes, and it graph-breaks at the observe loop's host-side reset list
and at TorchRL's distribution wrappers in the actor (see ``graph_breaks`` below and the report in
``benchmarks/gpu_check.py``).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import torch
from torch import nn

__all__ = ["PRECISIONS", "COMPILE_MODES", "Acceleration", "accelerate", "enable_tf32", "compiled_graphs",
           "graph_breaks", "f32_output_modules", "native_bf16", "resolve_precision"]

PRECISIONS = ("float32", "bfloat16")
#: torch.compile modes; ``reduce-overhead`` adds CUDA graphs (CUDA only).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_CACHE_ENTRIES = 64
_ALIASES = {"f32": "float32", "fp32": "float32", "bf16": "bfloat16"}


def native_bf16(device: torch.device | str) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and what says so.

    CUDA: compute capability 8.0 or newer (Ampere on; older cards emulate bf16). CPU: the instructions
    oneDNN's bf16 kernels use, AVX512-BF16 or AMX (torch reports both; without them bf16 is converted to
    float32 around every op and is slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major >= 8, f"CUDA compute capability {major}.{minor}"
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        avx512_bf16 = bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())
        amx = bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)())
        found = [name for name, has in (("avx512_bf16", avx512_bf16), ("amx", amx)) if has]
        return bool(found), f"CPU with {' and '.join(found)}" if found else "CPU without avx512_bf16 or amx"
    return False, f"{device.type} (bf16 not checked)"


def resolve_precision(precision: str, device: torch.device | str) -> tuple[str, str | None]:
    """``auto``: bfloat16 where the device computes it natively (:func:`native_bf16`), else float32.
    Returns ``(precision, note)``, the note saying what ``auto`` chose and why (None otherwise)."""
    if precision != "auto":
        return precision, None
    native, why = native_bf16(device)
    chosen = "bfloat16" if native else "float32"
    return chosen, f"precision=auto: {chosen} ({why})"


@dataclasses.dataclass(frozen=True)
class Acceleration:
    """Resolved compute settings for one device.

    Args:
        precision: ``float32`` | ``bfloat16`` (aliases ``f32``, ``bf16``); the config's ``auto`` is resolved
            by :func:`resolve_precision` before it gets here.
        compile: compile the per-step pieces (see the module docstring).
        mode: the torch.compile mode (:data:`COMPILE_MODES`).
        backend: the torch.compile backend; ``inductor`` generates kernels, ``aot_eager`` only traces
            (forward and backward graphs, no code generation): the tests use it to check the graphs cheaply.
        device_type: ``cpu`` or ``cuda``: where autocast applies.
    """

    precision: str = "float32"
    compile: bool = False
    mode: str = "default"
    backend: str = "inductor"
    device_type: str = "cpu"
    note: str | None = None  # what precision=auto chose, and why

    def __post_init__(self):
        precision = _ALIASES.get(self.precision, self.precision)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS} (or f32/bf16), or auto in the config, "
                             f"got {self.precision!r}")
        object.__setattr__(self, "precision", precision)
        if self.mode not in COMPILE_MODES:
            raise ValueError(f"compile.mode must be one of {COMPILE_MODES}, got {self.mode!r}")
        if self.mode == "reduce-overhead" and self.device_type != "cuda":
            raise ValueError(f"compile.mode='reduce-overhead' uses CUDA graphs; the device is {self.device_type}")

    @classmethod
    def from_config(cls, cfg, device: torch.device | str) -> "Acceleration":
        """From the config's ``precision`` and ``compile: {enabled, mode}``; ``enabled: auto`` compiles on CUDA only."""
        device = torch.device(device)
        section = cfg.get("compile", None) or {}
        enabled = section.get("enabled", "auto")
        # Compiled functions do not pickle, and multisync (ray) sends the policy to one process (actor) per worker.
        collector = (cfg.get("run", None) or {}).get("collector", "sync")
        pickled = collector in ("multisync", "ray")
        if enabled == "auto":
            enabled = device.type == "cuda" and not pickled
        elif not isinstance(enabled, bool):
            raise ValueError(f"compile.enabled must be auto, true or false, got {enabled!r}")
        elif enabled and pickled:
            raise ValueError(f"compile.enabled=true cannot run with run.collector={collector} (the compiled policy "
                             "does not pickle into the env processes); use compile.enabled=false or auto")
        precision, note = resolve_precision(cfg.get("precision", "float32"), device)
        return cls(precision=precision, compile=enabled, mode=section.get("mode", "default"),
                   backend=section.get("backend", "inductor"), device_type=device.type, note=note)

    @property
    def bf16(self) -> bool:
        return self.precision == "bfloat16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward-pass context: bf16 autocast, or nothing for float32."""
        if self.bf16:
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> str:
        compiled = f"compile {self.mode} ({self.backend})" if self.compile else "eager"
        chosen = f" [{self.note}]" if self.note else ""
        return f"{self.precision}{chosen}, {compiled} on {self.device_type}"


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
    agent run them too. TF32 is switched on for CUDA. Returns ``acc``.
    """
    if agent is None:
        agent = learner.modules_
    if acc.device_type == "cuda":
        enable_tf32()
    if acc.bf16:
        _cast_outputs_to_f32(agent)
    for owner in (learner, *policies):
        if owner is not None:
            owner.forward_context = acc.autocast
    if acc.compile:
        # One code object (e.g. MLPHead.forward) serves every head instance, each at its own batch
        # shapes and grad modes: more cache entries than Dynamo's default limit of 8, all legitimate.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _CACHE_ENTRIES)
        torch._dynamo.config.accumulated_recompile_limit = max(
            torch._dynamo.config.accumulated_recompile_limit, 16 * _CACHE_ENTRIES)
        _compile_agent(agent, acc)
    return acc


def compiled_graphs() -> int:
    """Graphs Dynamo has compiled in this process so far (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def graph_breaks() -> dict[str, int]:
    """Graph-break reasons counted by Dynamo in this process."""
    from torch._dynamo.utils import counters

    return dict(counters["graph_break"])
