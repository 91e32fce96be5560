"""Action and observation adapters used by the env factories.

Continuous actions follow the reference (``NormalizeAction`` + ``ClipAction``, SPEC §5.3/§10):
the agent acts in ``[-1, 1]``; the env receives the action clipped to ``[-1, 1]`` and mapped
affinely onto its bounds. Both steps are stock TorchRL transforms (``ClipTransform`` on the
inverse path, then ``ActionScaling``). The tensordict keeps the agent's *unclipped* action,
which is what the reference stores in replay and feeds to the RSSM.

The small gymnasium ``ObservationWrapper``s below run before TorchRL's ``GymWrapper``: they
hand it a ``{"pixels": uint8 (C, H, W)}`` dict, so the key name does not depend on
``GymWrapper``'s shape heuristics and no per-step TorchRL transform is needed.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torchrl.data import Bounded
from torchrl.envs import ActionScaling, ClipTransform, Compose, EnvBase, TransformedEnv

__all__ = [
    "normalize_actions",
    "has_continuous_actions",
    "ChannelFirstPixels",
    "ReferenceAtariPreprocessing",
    "RenderedPixels",
    "resize_image",
    "float32_observations",
]


def has_continuous_actions(env: EnvBase) -> bool:
    """Whether the env's (single) action spec is a bounded continuous box."""
    spec = env.action_spec
    return isinstance(spec, Bounded) and spec.dtype.is_floating_point


def normalize_actions(env: EnvBase, key: str = "action") -> EnvBase:
    """Expose a ``[-1, 1]`` continuous action space, clip and rescale to the env bounds.

    Discrete (``OneHot``/``Categorical``) envs are returned unchanged; a ``TransformedEnv``
    gets the transforms appended in place. Unlike the reference's
    ``NormalizeAction``, dimensions with infinite bounds are not supported (TorchRL's
    ``ActionScaling`` raises); every gymnasium classic-control and DMC task is bounded.

    Examples:
        >>> from torchrl.envs import GymEnv
        >>> env = normalize_actions(GymEnv("Pendulum-v1"))  # env bounds [-2, 2]
        >>> env.action_spec.space.high
        tensor([1.])
    """
    if not has_continuous_actions(env):
        return env
    # ``inv`` runs from the outermost (last) transform inwards: clip first, then scale.
    transforms = [
        ActionScaling(in_keys_inv=[key]),
        ClipTransform(in_keys_inv=[key], low=-1.0, high=1.0),
    ]
    if isinstance(env, TransformedEnv):  # extend in place instead of nesting
        for transform in transforms:
            env.append_transform(transform)
        return env
    return TransformedEnv(env, Compose(*transforms))


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, C)`` uint8 -> ``(size, size, C)`` uint8 with OpenCV's area interpolation."""
    import cv2

    if image.shape[:2] == (size, size):
        return image
    out = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return out if out.ndim == 3 else out[:, :, None]


_GRAY_WEIGHTS = np.array([0.299, 0.587, 1 - (0.299 + 0.587)])


class ReferenceAtariPreprocessing(gym.wrappers.AtariPreprocessing):
    """gymnasium's ``AtariPreprocessing`` with the reference's frame handling (SPEC §1.2, §10).

    Wrap ``gym.make("ALE/<Game>-v5", frameskip=1, ...)``. Per agent step the action is
    repeated ``repeat`` times (rewards summed, stop early at the episode end); the RGB screens
    of the last two repeats are max-pooled, resized, then optionally turned gray with weights
    (0.299, 0.587, 0.114), in the reference's order. Differences from the parent class, all
    taken from ``embodied/envs/atari.py``: no-ops uniform in ``[0, noops]`` (parent:
    ``[1, noops]``); screens are grabbed *before* the episode-end check, so a terminal
    observation is a real frame (the parent returns a stale one); gray after resize (parent:
    ALE palette gray before pooling); resize with PIL bilinear (``"pillow"``) or OpenCV area
    (``"opencv"``), the reference's two options (parent: OpenCV area only).
    """

    def __init__(
        self,
        env: gym.Env,
        noops: int = 30,
        repeat: int = 4,
        size: int = 64,
        gray: bool = False,
        resize: str = "pillow",
    ):
        if resize not in ("pillow", "opencv"):
            raise ValueError(f"resize must be 'pillow' or 'opencv', got {resize!r}")
        if resize == "pillow":
            try:
                import PIL.Image  # noqa: F401
            except ImportError as err:
                raise ImportError(
                    "resize='pillow' needs Pillow (pip install pillow); or use resize='opencv'"
                ) from err
        super().__init__(
            env,
            noop_max=noops,
            frame_skip=repeat,
            screen_size=size,
            terminal_on_life_loss=False,
            grayscale_obs=False,  # RGB buffers; gray is applied after resizing
            scale_obs=False,
        )
        self.gray = bool(gray)
        self.resize = resize
        shape = (size, size, 1 if gray else 3)
        self.observation_space = gym.spaces.Box(0, 255, shape, dtype=np.uint8)

    def reset(self, *, seed=None, options=None):
        _, info = self.env.reset(seed=seed, options=options)
        for _ in range(self.env.unwrapped.np_random.integers(self.noop_max + 1)):
            _, _, terminated, truncated, step_info = self.env.step(0)
            info.update(step_info)
            if terminated or truncated:
                _, info = self.env.reset(options=options)
        self.ale.getScreenRGB(self.obs_buffer[0])
        np.copyto(self.obs_buffer[1], self.obs_buffer[0])
        return self._get_obs(), info

    def step(self, action):
        reward, terminated, truncated, info = 0.0, False, False, {}
        for t in range(self.frame_skip):
            _, r, terminated, truncated, info = self.env.step(action)
            reward += r
            if t >= self.frame_skip - 2:  # pooling over the last two frames
                self.obs_buffer.reverse()
                self.ale.getScreenRGB(self.obs_buffer[0])
            if terminated or truncated:
                break
        return self._get_obs(), reward, terminated, truncated, info

    def _get_obs(self) -> np.ndarray:
        image = np.maximum(self.obs_buffer[0], self.obs_buffer[1])
        if self.resize == "pillow":
            from PIL import Image

            image = np.asarray(Image.fromarray(image).resize(self.screen_size, Image.BILINEAR))
        else:
            image = resize_image(image, self.screen_size[0])
        if self.gray:
            image = (image * _GRAY_WEIGHTS).sum(-1).astype(np.uint8)[:, :, None]
        return image


def _pixels_space(shape_chw: tuple[int, ...]) -> gym.spaces.Dict:
    box = gym.spaces.Box(0, 255, shape_chw, dtype=np.uint8)
    return gym.spaces.Dict({"pixels": box})


class ChannelFirstPixels(gym.ObservationWrapper):
    """``(H, W, C)`` uint8 image observation -> ``{"pixels": (C, H, W)}``."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = _pixels_space((c, h, w))

    def observation(self, observation: np.ndarray) -> dict:
        return {"pixels": np.ascontiguousarray(observation.transpose(2, 0, 1))}


class RenderedPixels(gym.ObservationWrapper):
    """Replace the observation by ``env.render()`` resized to ``size x size``, channel-first.

    The env must be created with ``render_mode="rgb_array"``; it renders once per step.
    """

    def __init__(self, env: gym.Env, size: int = 64):
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError("RenderedPixels needs gym.make(..., render_mode='rgb_array')")
        self.size = int(size)
        self.observation_space = _pixels_space((3, self.size, self.size))

    def observation(self, observation) -> dict:
        image = resize_image(self.env.render(), self.size)
        return {"pixels": np.ascontiguousarray(image.transpose(2, 0, 1))}


def float32_observations(env: EnvBase) -> EnvBase:
    """Cast float64 observations to float32 (``DoubleToFloat``) if there are any."""
    from torchrl.envs import DoubleToFloat

    keys = [
        k
        for k, spec in env.observation_spec.items(True, True)
        if spec.dtype == torch.float64
    ]
    return TransformedEnv(env, DoubleToFloat(in_keys=keys)) if keys else env
