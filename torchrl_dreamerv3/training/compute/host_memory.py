"""Host memory: keep freed blocks in the process, so that large CPU tensors stop page-faulting every update.

PyTorch's CPU tensors come from ``malloc``. With glibc's defaults, a block above the dynamic mmap threshold
(128 KiB at start, raised by what gets freed) is a fresh ``mmap`` and goes back to the kernel on ``free``,
and the heap's top is trimmed back to the kernel as soon as 128 KiB lie free there. The update allocates
and frees the same tensors every time, tens of MiB each on images, so every update writes into fresh pages:
one page fault and one kernel zeroing per 4 KiB. On one core of this project's CPU that makes writing a
fresh 32 MiB tensor about 6x slower than writing into a reused one (``x.float()`` of 8 M elements: 32 ms
against 6 ms), and the image update about 18 % slower (docs/results.md, "Host memory").

``keep``: the mmap threshold at glibc's maximum (32 MiB; larger blocks are still mapped), no trimming, and the
heap grown 256 MiB at a time, so the blocks an update frees are there for the next. The process then keeps
its peak heap resident between updates instead of returning it. Linux with glibc only; elsewhere nothing
changes. These are glibc's ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_``
environment settings, applied at run time with ``mallopt``. Setting any one of them alone switches off
glibc's dynamic threshold and is slower than the default, so they are set together.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

__all__ = ["HOST_MEMORY", "keep_freed_memory"]

HOST_MEMORY = ("keep", "system")

# mallopt parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 * 2**20  # glibc's largest accepted value on 64-bit (HEAP_MAX_SIZE / 2)
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB free at the heap's top, never reached, so never trimmed
_TOP_PAD = 256 * 2**20


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> str | None:
    """Applies ``keep`` (module docstring) once per process. Returns None when applied, else why not."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return f"needs Linux with glibc, this is {platform.system()} with {platform.libc_ver()[0] or 'another libc'}"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    refused = [name for name, param, value in (
        ("M_MMAP_THRESHOLD", _M_MMAP_THRESHOLD, _MMAP_THRESHOLD), ("M_TRIM_THRESHOLD", _M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
        ("M_TOP_PAD", _M_TOP_PAD, _TOP_PAD)) if libc.mallopt(param, value) != 1]
    return f"mallopt refused {', '.join(refused)}" if refused else None
