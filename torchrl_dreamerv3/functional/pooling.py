"""2x2 max-pooling whose backward keeps the indices and not the input.

``F.max_pool2d`` saves its input for the backward, although the backward kernel reads only that input's
shape and layout (the gradient goes where the saved indices point). In the reference encoder (conv k5 s1,
then pool, at every stage) that input is the full-resolution conv output, which nothing else keeps: at
size1m, B16 x T64 on 64x64 images, 198 MiB held until the backward for no use. :func:`max_pool2x2` runs the
same forward and backward kernels (the same values and gradients, ties included) and saves only the indices,
as int16 (int32 for planes over 181 x 181): in bf16 the int64 indices would be 4x the pooled output.
"""
from __future__ import annotations

import torch

__all__ = ["max_pool2x2"]


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out, index = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
        # an index points into one H x W plane: int16 holds it for planes up to 181 x 181 (a quarter of int64)
        small = torch.int16 if x.shape[-2] * x.shape[-1] <= torch.iinfo(torch.int16).max else torch.int32
        ctx.save_for_backward(index.to(small))
        ctx.input_shape = x.shape
        ctx.channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        index = ctx.saved_tensors[0].to(torch.int64)
        layout = torch.channels_last if ctx.channels_last else torch.contiguous_format
        # stands in for the input: the kernel reads its shape and layout only (never written, never read)
        like = torch.empty(ctx.input_shape, dtype=grad.dtype, device=grad.device, memory_format=layout)
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, like, [2, 2], [2, 2], [0, 0], [1, 1], False,
                                                               index)


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` of a ``(C, H, W)`` or ``(N, C, H, W)`` tensor, its backward holding the indices only."""
    if x.dim() not in (3, 4):
        raise ValueError(f"max_pool2x2 takes (C, H, W) or (N, C, H, W); got shape {tuple(x.shape)}")
    return _MaxPool2x2.apply(x)
