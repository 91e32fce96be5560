"""`benchmarks/update_floor.py`: the heavy kernels of an update recorded with their shapes, replayed alone, summed."""
import re

import pytest
import torch
import torch.nn.functional as F
from benchmark_scripts import load_benchmark

aten = torch.ops.aten


@pytest.fixture(scope="module")
def floor():
    return load_benchmark("update_floor")


def test_record_counts_forward_and_backward_kernels_by_shape(floor):
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    image = torch.randn(2, 3, 8, 8)
    kernel = torch.randn(6, 3, 5, 5, requires_grad=True)

    def step():
        out = F.linear(x, w, b) + F.linear(x, w, b)  # the same addmm twice
        maps = F.conv2d(image, kernel, padding=2)
        (out.sum() + maps.sum()).backward()

    calls, other_calls = floor.record(step)
    assert other_calls > 0  # the sums, the add, the backward's ones and views
    by_kernel = {}
    for (func, args, _), count in calls.items():
        by_kernel.setdefault(func, []).append((args, count))
    (addmm_args, addmm_count), = by_kernel[aten.addmm.default]
    assert addmm_count == 2
    assert [a[0] for a in addmm_args] == [(4,), (5, 3), (3, 4)]  # bias, input, the transposed weight
    assert addmm_args[2][1] == (1, 3)  # the stride of w.t(): layouts are kept
    assert sum(count for _, count in by_kernel[aten.mm.default]) >= 2  # the backward's products
    assert aten.convolution.default in by_kernel and aten.convolution_backward.default in by_kernel
    assert all(func in floor.HEAVY for func in by_kernel)  # nothing else is recorded


def test_replay_times_each_call_times_its_count_and_counts_its_flops(floor):
    a, b = torch.randn(8, 16), torch.randn(16, 32)
    calls, _ = floor.record(lambda: [a @ b for _ in range(3)])
    (row,) = floor.replay(calls, repeats=2)
    group, name, count, ms, flops = row
    assert (group, count) == ("matrix products", 3)
    assert name.startswith("mm") and ms > 0
    assert flops == 3 * 2 * 8 * 16 * 32
    assert floor.by_group([row, row]) == {"matrix products": (6, 2 * ms, 2 * flops)}


def test_max_pool_backward_replays_with_indices_inside_their_windows(floor):
    x = torch.randn(2, 3, 8, 8, requires_grad=True)

    def pool():
        out, index = aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
        grad = torch.ones_like(out)
        aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, index)

    calls, _ = floor.record(pool)
    key = next(k for k in calls if k[0] is aten.max_pool2d_with_indices_backward.default)
    args, _ = floor._arguments(*key)
    index = args[-1]
    assert index.dtype == torch.int64 and index.shape == (2, 3, 4, 4)
    rows, cols = torch.arange(4).view(4, 1), torch.arange(4).view(1, 4)
    assert ((index // 8) // 2 == rows).all() and ((index % 8) // 2 == cols).all()  # each in its own 2x2 window
    rows = floor.replay(calls, repeats=1)
    assert {r[0] for r in rows} == {"max-pools"} and all(r[4] == 0 for r in rows)  # no FLOP formula for pools


def test_main_prints_the_floor_of_an_image_update_below_its_time(floor, capsys):
    floor.main(["--size", "debug", "--obs", "image64", "--batch-size", "2", "--batch-length", "8", "--updates", "1",
                "--warmup", "1", "--repeats", "2", "--target-ms", "1e6"])
    out = capsys.readouterr().out
    update = float(re.search(r"update, median of 1:\s+([\d.]+) ms", out).group(1))
    groups = {m.group(1): float(m.group(2)) for m in re.finditer(r"^  (\S[\w -]*?)\s+\d+ calls\s+([\d.]+) ms", out, re.M)}
    assert set(groups) == {"convolutions", "matrix products", "max-pools"}
    total = float(re.search(r"^  floor\s+([\d.]+) ms", out, re.M).group(1))
    assert total == pytest.approx(sum(groups.values()), abs=0.2)
    assert 0 < total < update
    assert re.search(r"everything else now:\s+[\d.]+ ms in [1-9]\d* other kernel calls", out)
    assert "everything else must take at most" in out
