"""The compute part of the run plan: precision and torch.compile resolved for one device, once, by the plan.

What these settings do to the agent is :func:`.acceleration.accelerate`'s (bf16 autocast, float32 output
layers, the compiled pieces); this module only decides them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil

import torch

from .host_memory import HOST_MEMORY

__all__ = ["HOST_MEMORY", "PRECISIONS", "COMPILE_MODES", "COMPILED_NORM_MIN_NUMEL", "Acceleration", "cpp_compiler",
           "native_bf16", "resolve_precision"]

PRECISIONS = ("float32", "bfloat16")
#: ``compile_norms``: channel norms of maps this large are compiled; the smaller ones of acting are not.
COMPILED_NORM_MIN_NUMEL = 1 << 20
#: torch.compile modes; ``reduce-overhead`` adds CUDA graphs (CUDA only).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_ALIASES = {"f32": "float32", "fp32": "float32", "bf16": "bfloat16"}


def native_bf16(device: torch.device | str) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and what says so.

    CUDA: compute capability 8.0 or newer (Ampere on; older cards emulate bf16); no when CUDA is not available
    (a plan made for ``cuda`` on a CPU-only build still resolves). CPU: the instructions
    oneDNN's bf16 kernels use, AVX512-BF16 or AMX (torch reports both; without them bf16 is converted to
    float32 around every op and is slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():  # a CPU-only build, or no card: asking the capability would raise
            return False, "CUDA not available"
        major, minor = torch.cuda.get_device_capability(device)
        return major >= 8, f"CUDA compute capability {major}.{minor}"
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        avx512_bf16 = bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())
        amx = bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)())
        found = [name for name, has in (("avx512_bf16", avx512_bf16), ("amx", amx)) if has]
        return bool(found), f"CPU with {' and '.join(found)}" if found else "CPU without avx512_bf16 or amx"
    return False, f"{device.type} (bf16 not checked)"


def cpp_compiler() -> str | None:
    """The C++ compiler Inductor would build CPU kernels with (``$CXX``, else g++, c++ or clang++), if any."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((path for name in names if (path := shutil.which(name))), None)


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
        host_memory: ``keep`` keeps freed host memory in the process for the next update
            (:mod:`.host_memory`; process-wide, Linux with glibc), ``system`` leaves the allocator alone.
        compile_norms: compile only the channel norms of the conv stacks, for maps of
            :data:`COMPILED_NORM_MIN_NUMEL` elements or more (the update's; acting stays eager); implied
            by ``compile``.
    """

    precision: str = "float32"
    compile: bool = False
    mode: str = "default"
    backend: str = "inductor"
    device_type: str = "cpu"
    note: str | None = None  # what precision=auto chose, and why
    host_memory: str = "system"
    compile_norms: bool = False

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
        if self.host_memory not in HOST_MEMORY:
            raise ValueError(f"host_memory must be one of {HOST_MEMORY}, got {self.host_memory!r}")

    @classmethod
    def from_config(cls, cfg, device: torch.device | str) -> "Acceleration":
        """From the config's ``precision``, ``compile: {enabled, mode}`` and ``host_memory``; ``enabled: auto``
        compiles on CUDA only."""
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
        norms = section.get("norms", False)
        if norms == "auto":
            # where it pays (measured in docs/results.md): bf16 on a CPU, 10 % of the image update; in float32
            # the eager norm is already near one pass. Inductor builds CPU kernels with a C++ compiler.
            norms = device.type == "cpu" and precision == "bfloat16" and not enabled and cpp_compiler() is not None
        elif not isinstance(norms, bool):
            raise ValueError(f"compile.norms must be auto, true or false, got {norms!r}")
        return cls(precision=precision, compile=enabled, mode=section.get("mode", "default"),
                   backend=section.get("backend", "inductor"), device_type=device.type, note=note,
                   host_memory=cfg.get("host_memory", "system"), compile_norms=norms and not enabled)

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
        if self.compile_norms and not self.compile:
            compiled += " (channel norms compiled)"
        chosen = f" [{self.note}]" if self.note else ""
        host = ", freed host memory kept" if self.host_memory == "keep" else ""
        return f"{self.precision}{chosen}, {compiled} on {self.device_type}{host}"
