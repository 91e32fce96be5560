"""Plain ``nn.Module`` networks of DreamerV3: tensors in, tensors out (SPEC §2, §4, §5)."""
from .decoder import MultiDecoder, TransposedConv2d, UpsampleConv2d, upsample2x
from .encoder import MultiEncoder, SameStridedConv2d
from .conv_k4s2 import K4S2Decoder, K4S2Encoder
from .dense import DenseLinear, DenseMLP, make_linear, make_mlp
from .heads import BinaryHead, BoundedNormalHead, CategoricalHead, MLPHead, NormalHead, TwoHotHead, check_state
from .layers import (
    MLP,
    RMS_EPS,
    BlockLinear,
    ChannelRMSNorm,
    Conv2d,
    Linear,
    NormAct,
    trunc_normal_in_,
)

__all__ = [
    # layers
    "trunc_normal_in_",
    "Linear",
    "BlockLinear",
    "Conv2d",
    "ChannelRMSNorm",
    "NormAct",
    "MLP",
    "RMS_EPS",
    # encoder / decoder
    "MultiEncoder",
    "SameStridedConv2d",
    "MultiDecoder",
    "TransposedConv2d",
    "UpsampleConv2d",
    "upsample2x",
    # heads
    "check_state",
    "MLPHead",
    "TwoHotHead",
    "NormalHead",
    # V1/V2
    "K4S2Encoder",
    "K4S2Decoder",
    "DenseLinear",
    "DenseMLP",
    "make_mlp",
    "make_linear",
    "BinaryHead",
    "CategoricalHead",
    "BoundedNormalHead",
]
