"""Environments as continuing TorchRL streams with DreamerV3's reference time layout."""
from .factories import (
    ATARI_PRESETS,
    ENV_PRESETS,
    GYM_PRESETS,
    make_atari_env,
    make_dmc_env,
    make_env,
    make_gym_env,
)
from .stream import FLAG_KEYS, STAT_KEYS, EpisodeStream
from .transforms import (
    ChannelFirstPixels,
    ReferenceAtariPreprocessing,
    RenderedPixels,
    float32_observations,
    has_continuous_actions,
    normalize_actions,
)
from .world_model_env import DreamerWorldModelEnv, LatentFeatures, latent_features

__all__ = [
    "EpisodeStream",
    "FLAG_KEYS",
    "STAT_KEYS",
    "make_env",
    "make_atari_env",
    "make_gym_env",
    "make_dmc_env",
    "ATARI_PRESETS",
    "GYM_PRESETS",
    "ENV_PRESETS",
    "normalize_actions",
    "has_continuous_actions",
    "float32_observations",
    "ChannelFirstPixels",
    "RenderedPixels",
    "ReferenceAtariPreprocessing",
    "DreamerWorldModelEnv",
    "LatentFeatures",
    "latent_features",
]
