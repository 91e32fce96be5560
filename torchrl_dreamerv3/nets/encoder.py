"""Observation encoder: CNN for images, MLP for vectors (SPEC §4.1, reference ``rssm.Encoder``).

Images arrive channel-first ``(..., C, H, W)`` as uint8 (TorchRL's convention). The conv stack
runs in ``torch.channels_last`` memory format, i.e. physically NHWC like the reference, which on
CPU is faster and makes the final flatten in the reference's ``(h, w, c)`` order a free view.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torchrl_dreamerv3.functional.pooling import max_pool2x2
from torchrl_dreamerv3.functional.symlog import symlog
from torchrl_dreamerv3.nets.layers import MLP, ChannelRMSNorm, Conv2d

__all__ = ["MultiEncoder", "SameStridedConv2d", "split_obs_shapes"]


def split_obs_shapes(obs_shapes: dict[str, tuple[int, ...]]) -> tuple[list[str], list[str]]:
    """Return ``(vector_keys, image_keys)`` in dict order; 1-D shapes are vectors, 3-D images."""
    vec_keys, img_keys = [], []
    for key, shape in obs_shapes.items():
        shape = tuple(shape)
        if len(shape) == 1:
            vec_keys.append(key)
        elif len(shape) == 3:
            img_keys.append(key)
        else:
            raise ValueError(
                f"observation {key!r}: expected a 1-D vector shape (d,) or a 3-D image shape "
                f"(C, H, W), got shape {shape}"
            )
    if not obs_shapes:
        raise ValueError("obs_shapes is empty: need at least one vector or image observation")
    return vec_keys, img_keys


def image_resolution(obs_shapes: dict[str, tuple[int, ...]], img_keys: list[str], factor: int = 16) -> tuple[int, int]:
    """Common ``(H, W)`` of all image keys; both must be multiples of ``factor`` (4 halvings)."""
    hw = tuple(obs_shapes[img_keys[0]][1:])
    for key in img_keys:
        shape = tuple(obs_shapes[key])
        if shape[1:] != hw:
            raise ValueError(
                f"image {key!r}: all images must share one resolution; expected (H, W) = {hw} "
                f"(from {img_keys[0]!r}), got {shape[1:]}"
            )
        if shape[1] % factor or shape[2] % factor:
            raise ValueError(
                f"image {key!r}: spatial size must be a multiple of {factor} (four 2x down-samplings), "
                f"got (H, W) = {shape[1:]}"
            )
    return hw


class SameStridedConv2d(Conv2d):
    """Stride-2 :class:`Conv2d` with JAX/TF ``'SAME'`` padding.

    For an even input size ``SAME`` pads ``k - 2`` pixels in total, split as ``(k - 2) // 2``
    before and the rest after (1 and 2 for ``k = 5``). PyTorch's symmetric padding would shift
    the sampling grid by one pixel. Instead of padding the input (a full copy of the map), the
    kernel gets the missing leading zero row and column and the conv pads symmetrically by the
    larger amount: the windows and the result are the same.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, outscale: float = 1.0):
        super().__init__(in_channels, out_channels, kernel, stride=2, outscale=outscale)
        total = kernel - 2
        before, after = total // 2, total - total // 2
        self.padding = (after, after)
        self._kernel_pad = (after - before, 0) * 2  # (left, right, top, bottom) zeros of the kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, F.pad(self.weight, self._kernel_pad), self.bias, stride=2, padding=self.padding)


class MultiEncoder(nn.Module):
    """Encode a set of observations into one token vector per step (reference ``Encoder``).

    Args:
        obs_shapes: ``{key: shape}``; 3-D shapes ``(C, H, W)`` are uint8 images, 1-D shapes
            ``(d,)`` float vectors. ``H`` and ``W`` must be multiples of 16.
        depth, mults: the conv stack has ``depth * m`` channels per stage ``m`` in ``mults``.
        layers, units: vector MLP, ``layers`` x [Linear(units) -> RMSNorm -> SiLU].
        kernel: conv kernel size.
        symlog: apply ``symlog`` to the vector inputs.
        strided: stride-2 convs instead of stride-1 conv + 2x2 max-pool (reference ``strided``).

    ``forward(*obs)`` takes one tensor per key in :attr:`keys` (the dict order of ``obs_shapes``),
    each with the same leading batch dims (e.g. ``(B,)`` or ``(B, T)``), and returns tokens
    ``(..., out_features)`` = ``concat(vector_mlp_out, image_cnn_out)``. Vector keys and image keys
    are each concatenated in sorted key order (reference ``DictConcat``/``sorted(imgkeys)``); the
    CNN output is flattened in the reference's ``(h, w, c)`` order.

    Examples:
        >>> enc = MultiEncoder({"pixels": (3, 64, 64), "state": (5,)}, depth=2, units=8, layers=1)
        >>> enc.keys, enc.out_features
        (('pixels', 'state'), 136)
        >>> img = torch.zeros(4, 7, 3, 64, 64, dtype=torch.uint8)
        >>> enc(img, torch.zeros(4, 7, 5)).shape
        torch.Size([4, 7, 136])
    """

    def __init__(
        self,
        obs_shapes: dict[str, tuple[int, ...]],
        depth: int = 64,
        mults: tuple[int, ...] = (2, 3, 4, 4),
        layers: int = 3,
        units: int = 1024,
        kernel: int = 5,
        symlog: bool = True,
        strided: bool = False,
    ):
        super().__init__()
        self.obs_shapes = {k: tuple(v) for k, v in obs_shapes.items()}
        vec_keys, img_keys = split_obs_shapes(self.obs_shapes)
        self.keys = tuple(self.obs_shapes)
        self.vec_keys, self.img_keys = sorted(vec_keys), sorted(img_keys)
        self.symlog, self.strided = symlog, strided
        self.memory_format = torch.channels_last  # conv-stack layout; contiguous_format also works
        self.out_features = 0

        self.mlp = None
        if self.vec_keys:
            self.vec_features = sum(self.obs_shapes[k][0] for k in self.vec_keys)
            self.mlp = MLP(self.vec_features, layers, units)
            self.out_features += self.mlp.out_features

        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        if self.img_keys:
            factor = 2 ** len(mults)
            height, width = image_resolution(self.obs_shapes, self.img_keys, factor)
            channels = sum(self.obs_shapes[k][0] for k in self.img_keys)
            for mult in mults:
                conv = SameStridedConv2d(channels, depth * mult, kernel) if strided else Conv2d(
                    channels, depth * mult, kernel)
                channels = depth * mult
                self.convs.append(conv)
                self.norms.append(ChannelRMSNorm(channels, act=True))  # SiLU(RMSNorm(x)), fused
            self.out_features += (height // factor) * (width // factor) * channels

    def forward(self, *obs: torch.Tensor) -> torch.Tensor:
        if len(obs) != len(self.keys):
            raise ValueError(
                f"MultiEncoder expects {len(self.keys)} inputs for keys {list(self.keys)}, got {len(obs)}"
            )
        named = dict(zip(self.keys, obs))
        lead = self._batch_shape(named)
        outs = []
        if self.mlp is not None:
            outs.append(self._encode_vectors(named, lead))
        if self.img_keys:
            outs.append(self._encode_images(named, lead))
        tokens = outs[0] if len(outs) == 1 else torch.cat(outs, -1)
        return tokens.reshape(*lead, self.out_features)

    def _batch_shape(self, named: dict[str, torch.Tensor]) -> torch.Size:
        lead = None
        for key, x in named.items():
            shape = self.obs_shapes[key]
            if x.ndim < len(shape) or tuple(x.shape[x.ndim - len(shape):]) != shape:
                kind = "image" if len(shape) == 3 else "vector"
                raise ValueError(
                    f"{kind} {key!r}: expected trailing shape {shape}, got tensor of shape {tuple(x.shape)}"
                )
            if len(shape) == 3 and x.dtype != torch.uint8:
                raise TypeError(f"image {key!r}: expected dtype torch.uint8, got {x.dtype}")
            this = x.shape[: x.ndim - len(shape)]
            if lead is None:
                lead, first = this, key
            elif this != lead:
                raise ValueError(
                    f"observation {key!r}: leading batch dims {tuple(this)} differ from "
                    f"{tuple(lead)} of {first!r}"
                )
        return lead

    def _encode_vectors(self, named: dict[str, torch.Tensor], lead: torch.Size) -> torch.Tensor:
        dtype = self.mlp[0].weight.dtype
        xs = [named[k].reshape(-1, self.obs_shapes[k][0]) for k in self.vec_keys]
        x = (xs[0] if len(xs) == 1 else torch.cat(xs, -1)).to(dtype)
        if self.symlog:
            x = symlog(x)
        return self.mlp(x)

    def _encode_images(self, named: dict[str, torch.Tensor], lead: torch.Size) -> torch.Tensor:
        n = math.prod(lead)
        xs = [named[k].reshape(n, *self.obs_shapes[k]) for k in self.img_keys]
        x = xs[0] if len(xs) == 1 else torch.cat(xs, 1)
        # One layout change for the whole stack (convs, pooling and norms keep channels_last),
        # done by the uint8 -> float32 copy; the scaling then runs in place on that one buffer.
        x = x.to(torch.float32, memory_format=self.memory_format)
        x = x.div_(255.0).sub_(0.5).to(self.convs[0].weight.dtype)
        for conv, norm in zip(self.convs, self.norms):
            x = conv(x)
            if not self.strided:
                x = max_pool2x2(x)  # F.max_pool2d(x, 2) without holding x for the backward
            x = norm(x)  # SiLU(RMSNorm(x))
        # NCHW logical view of NHWC memory: permuting back gives a free (h, w, c) flatten.
        return x.permute(0, 2, 3, 1).reshape(n, -1)
