"""Observation decoder: transposed CNN for images, MLP for vectors (SPEC §4.2, reference ``rssm.Decoder``).

Images are produced channel-first ``(..., C, H, W)`` as sigmoid outputs in ``[0, 1]``; vectors are
predictions in symlog space. The conv stack runs in ``torch.channels_last`` memory format (see
:mod:`torchrl_dreamerv3.nets.encoder`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torchrl_dreamerv3.nets.encoder import image_resolution, split_obs_shapes
from torchrl_dreamerv3.nets.heads import check_state
from torchrl_dreamerv3.nets.layers import MLP, BlockLinear, ChannelRMSNorm, Conv2d, Linear, NormAct

__all__ = ["MultiDecoder", "TransposedConv2d", "UpsampleConv2d", "upsample2x"]


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x up-sampling of ``(N, C, H, W)`` (reference ``x.repeat(2, -2).repeat(2, -3)``)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


# ---------------------------------------------------------------- 2x up-sampling convs by output phase
# Both decoder convs compute a stride-1 'SAME' conv of a 2x up-sampled input: the nearest-neighbour
# copy (default decoder) or the zero-stuffed copy (strided decoder). Each output pixel (2m + pr, 2n + pc)
# then only sees input rows/columns near (m, n), through a fixed sum of kernel taps that depends on
# its phase (pr, pc). So the layer equals ONE small stride-1 conv of the un-up-sampled input with
# 4x the output channels (one group per phase), followed by a depth-to-space shuffle. For kernel 5
# the phase kernels are 3x3: the nearest path does 2.8x fewer multiply-adds and never builds the
# 4x larger up-sampled map, and the strided path avoids conv_transpose2d, which has no fast CPU kernel.


def _phase_taps(kernel: int, zero_stuffed: bool) -> torch.Tensor:
    """0/1 matrix ``(2, S, kernel)``: tap ``a`` of the 'SAME' kernel reads phase-``p`` input offset ``o - S // 2``."""
    before = kernel // 2 if not zero_stuffed else (kernel - 1) // 2  # Conv2d padding / JAX 'SAME' split
    links = []  # (phase, input offset, tap)
    for phase in (0, 1):
        for tap in range(kernel):
            pos = phase + tap - before  # position in the up-sampled map relative to 2m
            if zero_stuffed:  # input pixel i sits at 2i + 1; the even positions are zeros
                if (pos - 1) % 2 == 0:
                    links.append((phase, (pos - 1) // 2, tap))
            else:  # nearest: position q holds input pixel q // 2
                links.append((phase, pos // 2, tap))
    reach = max(abs(offset) for _, offset, _ in links)
    taps = torch.zeros(2, 2 * reach + 1, kernel)
    for phase, offset, tap in links:
        taps[phase, offset + reach, tap] = 1.0
    return taps


def _upsampling_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """``conv_same(up2x(x), weight) + bias`` as one phase conv plus a depth-to-space shuffle (see above)."""
    taps = taps.to(weight.dtype)
    # kernels[pr, pc, o, i] = taps[pr] @ weight[o, i] @ taps[pc]^T, channels ordered (pr, pc, out)
    kernels = torch.einsum("pra,oiab,qcb->pqoirc", taps, weight, taps).flatten(0, 2)
    y = F.conv2d(x, kernels, bias.repeat(4), padding=taps.shape[1] // 2)
    n, _, height, width = y.shape
    out = weight.shape[0]
    if y.is_contiguous(memory_format=torch.channels_last):  # physical (n, h, w, pr, pc, out)
        y = y.permute(0, 2, 3, 1).reshape(n, height, width, 2, 2, out).transpose(2, 3)
        return y.reshape(n, 2 * height, 2 * width, out).permute(0, 3, 1, 2)
    y = y.reshape(n, 2, 2, out, height, width).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, out, 2 * height, 2 * width)


class UpsampleConv2d(Conv2d):
    """Nearest 2x up-sampling followed by a stride-1 :class:`Conv2d`: ``forward(x) = conv(upsample2x(x))``.

    Parameters and init are those of :class:`Conv2d` (the layer of the reference decoder); the
    forward pass is computed per output phase without building the up-sampled map.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, outscale: float = 1.0):
        if kernel % 2 == 0:
            raise ValueError(f"UpsampleConv2d: kernel must be odd, got {kernel}")
        super().__init__(in_channels, out_channels, kernel, stride=1, outscale=outscale)
        self.register_buffer("taps", _phase_taps(kernel, zero_stuffed=False), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _upsampling_conv(x, self.weight, self.bias, self.taps)


class TransposedConv2d(Conv2d):
    """Stride-2 "transposed" conv of the reference (``nets.Conv2D(transp=True)``).

    The reference repeats each pixel 2x2, keeps only the copy at odd rows and columns (zeros
    elsewhere) and applies a stride-1 ``'SAME'`` conv. That equals ``conv_transpose2d`` with the
    spatially flipped kernel, padding ``k - 2 - (k - 1) // 2``, cropped to twice the input size;
    it is computed per output phase (see ``_upsampling_conv``), which is faster on CPU.
    The parameter layout and init are those of :class:`Conv2d` (fan-in ``k * k * C_in``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, outscale: float = 1.0):
        if kernel < 2:
            raise ValueError(f"TransposedConv2d: kernel must be >= 2, got {kernel}")
        super().__init__(in_channels, out_channels, kernel, stride=1, outscale=outscale)
        self.register_buffer("taps", _phase_taps(kernel, zero_stuffed=True), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _upsampling_conv(x, self.weight, self.bias, self.taps)


class MultiDecoder(nn.Module):
    """Reconstruct every observation from the RSSM state (reference ``Decoder`` with ``bspace=8``).

    Args:
        obs_shapes: ``{key: shape}``, 3-D ``(C, H, W)`` images and 1-D ``(d,)`` vectors.
        deter, stoch, classes: RSSM sizes ``D``, ``S``, ``Cl``.
        depth, mults, kernel: conv stack, mirror of the encoder's.
        layers, units: vector MLP; the image path's stoch projection has ``2 * units`` units.
        blocks: groups of the ``deter -> image`` block-linear projection (reference ``bspace``, 8).
        outscale: init scale of the output layers (image conv and vector heads).
        strided: stride-2 transposed convs instead of nearest up-sampling + conv.

    ``forward(deter (..., D), stoch (..., S, Cl))`` returns one tensor per key of :attr:`keys`
    (dict order of ``obs_shapes``): images ``(..., C, H, W)`` in ``(0, 1)``, vectors ``(..., d)``
    in symlog space. Several image keys share one conv stack and split its output channels in
    key order. Image outputs keep the stack's channels_last strides (no copy; ``is_contiguous()``
    is False), so use ``reshape`` rather than ``view`` on them.

    Examples:
        >>> dec = MultiDecoder({"pixels": (3, 64, 64), "state": (5,)}, deter=8, stoch=2, classes=4,
        ...                    depth=2, units=8, layers=1)
        >>> img, vec = dec(torch.zeros(4, 7, 8), torch.zeros(4, 7, 2, 4))
        >>> img.shape, vec.shape
        (torch.Size([4, 7, 3, 64, 64]), torch.Size([4, 7, 5]))
    """

    def __init__(
        self,
        obs_shapes: dict[str, tuple[int, ...]],
        deter: int,
        stoch: int,
        classes: int,
        depth: int = 64,
        mults: tuple[int, ...] = (2, 3, 4, 4),
        layers: int = 3,
        units: int = 1024,
        kernel: int = 5,
        blocks: int = 8,
        outscale: float = 1.0,
        strided: bool = False,
    ):
        super().__init__()
        self.obs_shapes = {k: tuple(v) for k, v in obs_shapes.items()}
        self.vec_keys, self.img_keys = split_obs_shapes(self.obs_shapes)
        self.keys = tuple(self.obs_shapes)
        self.deter, self.stoch, self.classes = deter, stoch, classes
        self.strided = strided
        self.memory_format = torch.channels_last  # conv-stack layout; contiguous_format also works
        if self.vec_keys:
            self.mlp = MLP(stoch * classes + deter, layers, units)
            self.vec_out = nn.ModuleList(
                Linear(self.mlp.out_features, self.obs_shapes[k][0], outscale) for k in self.vec_keys)
        if self.img_keys:
            self._build_image_path(depth, mults, units, kernel, blocks, outscale)

    def _build_image_path(self, depth, mults, units, kernel, blocks, outscale) -> None:
        factor = 2 ** len(mults)
        height, width = image_resolution(self.obs_shapes, self.img_keys, factor)
        self.img_channels = [self.obs_shapes[k][0] for k in self.img_keys]
        self.blocks = blocks
        self.min_shape = (height // factor, width // factor, depth * mults[-1])  # (h, w, c) as reference
        size = math.prod(self.min_shape)
        self.sp0 = BlockLinear(self.deter, size, blocks)
        self.sp1 = Linear(self.stoch * self.classes, 2 * units)
        self.sp1_norm = NormAct(2 * units)
        self.sp2 = Linear(2 * units, size)
        self.sp_norm = ChannelRMSNorm(self.min_shape[-1], act=True)  # SiLU(RMSNorm(x)), fused
        conv = TransposedConv2d if self.strided else UpsampleConv2d  # both up-sample 2x
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        channels = self.min_shape[-1]
        for mult in reversed(mults[:-1]):
            self.convs.append(conv(channels, depth * mult, kernel))
            self.norms.append(ChannelRMSNorm(depth * mult, act=True))
            channels = depth * mult
        self.img_out = conv(channels, sum(self.img_channels), kernel, outscale=outscale)

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_state("MultiDecoder", deter, stoch, self.deter, self.stoch, self.classes)
        lead = deter.shape[:-1]
        deter = deter.reshape(-1, self.deter)
        stoch = stoch.reshape(-1, self.stoch * self.classes)
        outs = {}
        if self.vec_keys:
            x = self.mlp(torch.cat([stoch, deter], -1))
            for key, layer in zip(self.vec_keys, self.vec_out):
                outs[key] = layer(x).reshape(*lead, -1)
        if self.img_keys:
            images = self._decode_images(deter, stoch)
            for key, img in zip(self.img_keys, images.split(self.img_channels, 1)):
                outs[key] = img.reshape(*lead, *img.shape[1:])
        return tuple(outs[k] for k in self.keys)

    def _decode_images(self, deter: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        n, (h, w, c), g = deter.shape[0], self.min_shape, self.blocks
        # Reference layout of the block-linear output: '(g h w c) -> h w (g c)'. Summing in the
        # (n, h, w, g, c/g) view gives a contiguous NHWC tensor without an extra copy.
        x0 = self.sp0(deter).view(n, g, h, w, c // g).permute(0, 2, 3, 1, 4)
        x1 = self.sp2(self.sp1_norm(self.sp1(stoch))).view(n, h, w, g, c // g)
        x = (x1 + x0).view(n, h, w, c).permute(0, 3, 1, 2)  # NCHW view of channels_last memory
        x = x.contiguous(memory_format=self.memory_format)  # no-op for channels_last
        x = self.sp_norm(x)
        for conv, norm in zip(self.convs, self.norms):
            x = norm(conv(x))
        x = self.img_out(x)
        return torch.sigmoid(x)
