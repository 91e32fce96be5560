"""DreamerV1/V2 observation encoder and decoder (SPEC_V1_V2 §1.2, §2.2).

Images: four ``Conv2D(k=4, s=2, 'valid')`` with ``depth * (1, 2, 4, 8)`` channels (64 -> 31 -> 14
-> 6 -> 2), flattened channel-last ``(h, w, c)``: 32 * depth features (V1 depth 32: 1024, V2 depth
48: 1536). The decoder mirrors it: ``Dense(32 * depth)`` without activation, viewed as 1 x 1 maps,
then ``ConvTranspose`` with kernels ``(5, 5, 6, 6)`` and stride 2 (1 -> 5 -> 13 -> 30 -> 64). Its
image output is the **mean of a unit Gaussian in the ``x / 255 - 0.5`` space** (no sigmoid).
Vectors (V2 ``mlp_keys``): a plain dense MLP in and out, **no symlog**; the decoder predicts the raw
vector. Layers are Keras-initialised (glorot-uniform, zero bias). Only 64 x 64 images are
supported, as in the reference (the transposed stack always produces 64 x 64).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .dense import DenseLinear, DenseMLP, make_act
from .encoder import split_obs_shapes
from .heads import check_state

__all__ = ["K4S2Encoder", "K4S2Decoder", "K4S2_IMAGE_SIZE"]

K4S2_IMAGE_SIZE = (64, 64)
_MULTS = (1, 2, 4, 8)
_DECODER_KERNELS = (5, 5, 6, 6)


def _keras_init_(conv: nn.Module) -> nn.Module:
    """Glorot-uniform kernel over ``k * k * (in + out)``, zero bias (Keras ``Conv2D``/``Conv2DTranspose``)."""
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _check_images(obs_shapes: dict, img_keys: list[str]) -> None:
    for key in img_keys:
        if tuple(obs_shapes[key][1:]) != K4S2_IMAGE_SIZE:
            raise ValueError(f"image {key!r}: the k4s2 CNN needs {K4S2_IMAGE_SIZE} images, got {obs_shapes[key][1:]}")


class K4S2Encoder(nn.Module):
    """``forward(*obs) -> tokens (..., out_features)``; same interface as :class:`MultiEncoder`.

    Args:
        obs_shapes: ``{key: shape}``; ``(C, 64, 64)`` uint8 images, ``(d,)`` float vectors.
        depth: CNN base depth (V1 32, V2 48). cnn_act: conv activation (V1 ``relu``, V2 ``elu``).
        layers, units, act, norm: vector MLP (V2: 4 x 400, ELU, no norm).

    Examples:
        >>> enc = K4S2Encoder({"pixels": (3, 64, 64)}, depth=32)
        >>> enc.out_features, enc(torch.zeros(2, 5, 3, 64, 64, dtype=torch.uint8)).shape
        (1024, torch.Size([2, 5, 1024]))
    """

    def __init__(self, obs_shapes, depth: int = 32, cnn_act: str = "relu", layers: int = 4, units: int = 400,
                 act: str = "elu", norm: str = "none"):
        super().__init__()
        self.obs_shapes = {k: tuple(v) for k, v in obs_shapes.items()}
        vec_keys, img_keys = split_obs_shapes(self.obs_shapes)
        self.keys = tuple(self.obs_shapes)
        self.vec_keys, self.img_keys = sorted(vec_keys), sorted(img_keys)
        self.out_features = 0
        self.mlp = None
        if self.vec_keys:
            self.mlp = DenseMLP(sum(self.obs_shapes[k][0] for k in self.vec_keys), layers, units, act, norm)
            self.out_features += self.mlp.out_features
        self.cnn = None
        if self.img_keys:
            _check_images(self.obs_shapes, self.img_keys)
            channels = sum(self.obs_shapes[k][0] for k in self.img_keys)
            convs = []
            for mult in _MULTS:
                convs += [_keras_init_(nn.Conv2d(channels, depth * mult, 4, stride=2)), make_act(cnn_act)]
                channels = depth * mult
            self.cnn = nn.Sequential(*convs)
            self.out_features += 2 * 2 * channels

    def forward(self, *obs: torch.Tensor) -> torch.Tensor:
        if len(obs) != len(self.keys):
            raise ValueError(f"K4S2Encoder expects {len(self.keys)} inputs for keys {list(self.keys)}, got {len(obs)}")
        named = dict(zip(self.keys, obs))
        first = self.keys[0]
        lead = named[first].shape[: named[first].ndim - len(self.obs_shapes[first])]
        n = math.prod(lead)
        outs = []
        if self.mlp is not None:
            x = torch.cat([named[k].reshape(n, -1) for k in self.vec_keys], -1).to(self.mlp[0].weight.dtype)
            outs.append(self.mlp(x))
        if self.cnn is not None:
            x = torch.cat([named[k].reshape(n, *self.obs_shapes[k]) for k in self.img_keys], 1)
            x = x.to(self.cnn[0].weight.dtype) / 255.0 - 0.5
            # channel-last flatten (h, w, c), as the reference's NHWC reshape
            outs.append(self.cnn(x).permute(0, 2, 3, 1).reshape(n, -1))
        return torch.cat(outs, -1).reshape(*lead, self.out_features)


class K4S2Decoder(nn.Module):
    """``forward(deter, stoch) -> one tensor per key``; same interface as :class:`MultiDecoder`.

    Images: the unit-Gaussian mean ``(..., C, 64, 64)`` in the ``x / 255 - 0.5`` space. Vectors: the
    raw vector ``(..., d)``. The input feature is ``concat(stoch.flatten(-2), deter)`` (reference
    ``get_feat``).

    Examples:
        >>> dec = K4S2Decoder({"pixels": (1, 64, 64)}, deter=6, stoch=2, classes=3, depth=2)
        >>> dec(torch.zeros(4, 6), torch.zeros(4, 2, 3))[0].shape
        torch.Size([4, 1, 64, 64])
    """

    def __init__(self, obs_shapes, deter: int, stoch: int, classes: int, depth: int = 32, cnn_act: str = "relu",
                 layers: int = 4, units: int = 400, act: str = "elu", norm: str = "none"):
        super().__init__()
        self.obs_shapes = {k: tuple(v) for k, v in obs_shapes.items()}
        self.vec_keys, self.img_keys = split_obs_shapes(self.obs_shapes)
        self.keys = tuple(self.obs_shapes)
        self.deter, self.stoch, self.classes = deter, stoch, classes
        features = deter + stoch * classes
        if self.vec_keys:
            self.mlp = DenseMLP(features, layers, units, act, norm)
            self.vec_out = nn.ModuleList(DenseLinear(self.mlp.out_features, self.obs_shapes[k][0])
                                         for k in self.vec_keys)
        if self.img_keys:
            _check_images(self.obs_shapes, self.img_keys)
            self.img_channels = [self.obs_shapes[k][0] for k in self.img_keys]
            self.embed = DenseLinear(features, 32 * depth)  # no activation (reference)
            widths = (4 * depth, 2 * depth, depth, sum(self.img_channels))
            layers_ = []
            channels = 32 * depth
            for i, (kernel, width) in enumerate(zip(_DECODER_KERNELS, widths)):
                layers_.append(_keras_init_(nn.ConvTranspose2d(channels, width, kernel, stride=2)))
                if i < len(widths) - 1:
                    layers_.append(make_act(cnn_act))
                channels = width
            self.cnn = nn.Sequential(*layers_)

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_state("K4S2Decoder", deter, stoch, self.deter, self.stoch, self.classes)
        lead = deter.shape[:-1]
        feat = torch.cat([stoch.flatten(-2), deter], -1).reshape(-1, self.deter + self.stoch * self.classes)
        outs = {}
        if self.vec_keys:
            x = self.mlp(feat)
            for key, layer in zip(self.vec_keys, self.vec_out):
                outs[key] = layer(x).reshape(*lead, -1)
        if self.img_keys:
            images = self.cnn(self.embed(feat)[:, :, None, None])
            for key, img in zip(self.img_keys, images.split(self.img_channels, 1)):
                outs[key] = img.reshape(*lead, *img.shape[1:])
        return tuple(outs[k] for k in self.keys)
