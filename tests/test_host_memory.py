"""host_memory=keep: the tensors one update frees are reused by the next without page faults."""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import platform
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from torchrl_dreamerv3.training.compute import acceleration as acc_module
from torchrl_dreamerv3.training.compute.acceleration import Acceleration, accelerate

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
# In a fresh process, so that the allocator settings of this test process stay as they are. glibc's own counters
# (mallinfo2: bytes in mapped blocks, bytes in the heap) say where a 30 MiB tensor came from, and whether the heap
# kept what 256 freed tensors of 1 MiB held, as the next update needs it.
_ALLOCATOR = textwrap.dedent("""
    import ctypes, ctypes.util, json, sys, torch
    from torchrl_dreamerv3.training.compute.host_memory import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                         "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "keep":
        assert keep_freed_memory() is None
    start = libc.mallinfo2()
    large = torch.empty(30 * 2**18).fill_(1.0)
    with_large = libc.mallinfo2()
    del large
    held = [torch.empty(2**18).fill_(1.0) for _ in range(256)]
    with_small = libc.mallinfo2()
    del held
    end = libc.mallinfo2()
    print(json.dumps(dict(large_mapped=with_large.hblkhd - start.hblkhd, heap_held=with_small.arena - start.arena,
                          heap_kept=end.arena - start.arena)))
""")


def _allocator(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _ALLOCATOR, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif(not GLIBC or not hasattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "mallinfo2"),
                    reason="host_memory=keep sets glibc's allocator (mallinfo2: glibc 2.33 on)")
def test_keep_serves_large_tensors_from_a_heap_that_keeps_what_is_freed():
    mib = 2**20
    kept = _allocator("keep")
    assert kept["large_mapped"] == 0  # from the heap, where the next update finds it again
    assert kept["heap_kept"] >= 256 * mib and kept["heap_kept"] == kept["heap_held"]  # nothing returned on free
    system = _allocator("system")
    # glibc's default maps a block this size afresh each time (its dynamic threshold starts at 128 KiB)
    assert system["large_mapped"] >= 30 * mib


def test_host_memory_setting_is_checked_and_described():
    assert Acceleration.from_config({}, "cpu").host_memory == "system"  # a bare config leaves the allocator alone
    keep = Acceleration.from_config({"host_memory": "keep"}, "cpu")
    assert keep.host_memory == "keep" and "freed host memory kept" in keep.describe()
    assert "host memory" not in Acceleration().describe()
    with pytest.raises(ValueError, match="host_memory must be one of"):
        Acceleration(host_memory="always")


def test_keep_warns_where_the_allocator_cannot_be_set(monkeypatch):
    monkeypatch.setattr(acc_module, "keep_freed_memory", lambda: "needs Linux with glibc, this is Darwin")
    with pytest.warns(UserWarning, match="host_memory=keep: needs Linux with glibc"):
        accelerate(None, Acceleration(host_memory="keep"), agent=torch.nn.Linear(2, 2))
    monkeypatch.setattr(acc_module, "keep_freed_memory", lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        accelerate(None, Acceleration(host_memory="keep"), agent=torch.nn.Linear(2, 2))


@pytest.mark.parametrize("host_memory", ["keep", "system"])
def test_learner_speed_prints_peaks_only_where_they_mean_something(capsys, host_memory):
    from benchmark_scripts import load_benchmark

    learner_speed = load_benchmark("learner_speed")
    learner_speed.main(["--size", "debug", "--obs", "vector17", "--updates", "1", "--warmup", "0", "--threads", "1",
                        "--host-memory", host_memory])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("ours ") and "learner" not in line).split()
    # ours | median ms | min ms | transitions/s | params | peak MiB | warm-up s
    if host_memory == "keep":
        assert row[5] == "-" and "peak MiB: run with --host-memory system" in out
        assert "freed host memory kept" in out
    else:
        assert float(row[5]) >= 0 and "--host-memory system" not in out
