"""Any env into the reference's time layout: a TorchRL env, a gymnasium id, or a Hydra ``_target_``.

Every env the training loop sees is an :class:`EpisodeStream` whose observations the encoder can
read. :func:`as_episode_stream` wraps what is not one yet, and :func:`check_observation_spec` says,
naming the key, its shape and dtype, why an observation cannot be encoded.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torchrl.envs import EnvBase

from .stream import FLAG_KEYS, STAT_KEYS, EpisodeStream
from .transforms import float32_observations, normalize_actions

__all__ = ["as_episode_stream", "check_observation_spec", "model_observation_keys", "SUPPORTED_OBSERVATIONS"]

SUPPORTED_OBSERVATIONS = ("images (C, H, W) uint8 with H and W multiples of 16, channels first",
                          "vectors (d,) float32/float64")

# Written by EpisodeStream or by the acting policy's primer: never encoded.
_NOT_OBSERVATIONS = set(FLAG_KEYS) | set(STAT_KEYS) | {"deter", "stoch", "prev_action"}


def model_observation_keys(env: EnvBase) -> list:
    """The observation keys the model encodes: everything but the stream's flags, stats and carry."""
    return [k for k in env.observation_spec.keys(True, True) if k not in _NOT_OBSERVATIONS]


def _problem(shape: tuple, dtype: torch.dtype) -> str | None:
    if len(shape) == 1:
        return None if dtype.is_floating_point else "integer vectors are not supported (cast them to float)"
    if len(shape) == 3:
        if dtype != torch.uint8:
            return "images must be uint8 (0..255)"
        channels, height, width = shape
        if channels > 4 and width <= 4:
            return "this looks channels-last (H, W, C): add torchrl.envs.PermuteTransform((-1, -3, -2))"
        if height % 16 or width % 16:
            return "image height and width must be multiples of 16 (four 2x down-samplings): add a Resize"
        return None
    return f"{len(shape)}-D observations are not supported"


def check_observation_spec(env: EnvBase) -> None:
    """Raises a ``ValueError`` naming every observation the encoder cannot take, and what it takes."""
    spec, batch = env.observation_spec, len(env.batch_size)
    keys = model_observation_keys(env)
    if not keys:
        raise ValueError("the env has no observation to encode (its observation spec holds only "
                         f"{list(spec.keys(True, True))}); supported: {'; '.join(SUPPORTED_OBSERVATIONS)}")
    problems = []
    for key in keys:
        shape, dtype = tuple(spec[key].shape[batch:]), spec[key].dtype
        reason = _problem(shape, dtype)
        if reason:
            problems.append(f"{key!r} shape {shape} dtype {dtype}: {reason}")
    if problems:
        raise ValueError("observations the encoder cannot take: " + "; ".join(problems)
                         + f". Supported: {'; '.join(SUPPORTED_OBSERVATIONS)}")


def as_episode_stream(env: EnvBase, *, terminal_on_truncation: bool = False) -> EpisodeStream:
    """An :class:`EpisodeStream` over ``env`` (float64 observations cast, continuous actions to [-1, 1]).

    An env that already is an ``EpisodeStream`` (every preset of :func:`~torchrl_dreamerv3.envs.make_env`)
    comes back unchanged.

    Examples:
        >>> from torchrl.envs import GymEnv
        >>> stream = as_episode_stream(GymEnv("MountainCarContinuous-v0"))
        >>> stream.action_spec.space.high, stream.reset()["is_first"]
        (tensor([1.]), tensor([True]))
    """
    if isinstance(env, EpisodeStream):
        return env
    if not isinstance(env, EnvBase):
        raise TypeError(f"expected a TorchRL EnvBase, got {type(env).__name__}; wrap gymnasium envs with "
                        "torchrl.envs.GymWrapper")
    return EpisodeStream(normalize_actions(float32_observations(env)), terminal_on_truncation=terminal_on_truncation)


def seeded(make: Callable[[], EnvBase], seed: int) -> EpisodeStream:
    """``make()`` as a seeded episode stream."""
    stream = as_episode_stream(make())
    stream.set_seed(seed)
    return stream
