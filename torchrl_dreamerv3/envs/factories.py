"""Env factories: every env comes out as an :class:`EpisodeStream` with reference semantics.

Output keys (all unbatched): ``pixels`` uint8 ``(C, H, W)`` and/or ``observation`` float32,
the flags ``is_first / is_last / is_terminal``, the episode statistics ``episode_reward /
episode_length``, ``action`` (``OneHot`` for discrete envs, ``[-1, 1]`` box for continuous
ones) and ``("next", "reward")``. See :mod:`torchrl_dreamerv3.envs.stream` for the time layout.

Any other TorchRL env plugs in the same way::

    from torchrl.envs import GymEnv
    from torchrl_dreamerv3.envs import EpisodeStream, normalize_actions
    env = EpisodeStream(normalize_actions(GymEnv("MountainCarContinuous-v0")))

Atari follows the reference's ``embodied/envs/atari.py`` (SPEC §1.2, §10): gymnasium's ALE
env (sticky actions, action set, 108k-frame cap) under :class:`ReferenceAtariPreprocessing`,
a subclass of gymnasium's ``AtariPreprocessing`` that reproduces the reference's no-ops,
max-pooling, resize and gray conversion. Remaining difference: the 108k-frame cap counts ALE
frames including the reset no-ops (reference: only frames after them), so the cap can come up
to 30 frames (7 agent steps) earlier.
"""
from __future__ import annotations

import os

import gymnasium as gym
from torchrl.envs import (
    CatTensors,
    Compose,
    DoubleToFloat,
    EnvBase,
    GymWrapper,
    PermuteTransform,
    TransformedEnv,
)

from .stream import EpisodeStream
from .transforms import (
    ChannelFirstPixels,
    ReferenceAtariPreprocessing,
    RenderedPixels,
    float32_observations,
    normalize_actions,
)

__all__ = [
    "ATARI_PRESETS",
    "GYM_PRESETS",
    "ENV_PRESETS",
    "make_atari_env",
    "make_gym_env",
    "make_dmc_env",
    "make_env",
]

# SPEC §1.2: atari = 200M-frame protocol, atari100k = Atari 100k benchmark. atari_dreamerv2: DreamerV2's
# Atari (SPEC_V1_V2 §2.6): 64x64 gray, sticky 0.25, minimal action set, area resize as gym's
# AtariPreprocessing, and the 108k-frame cap only ends the episode (is_last), it is not terminal.
ATARI_PRESETS = {
    "atari": dict(size=96, gray=True, sticky=True, all_actions=True, cap_terminal=True),
    "atari100k": dict(size=64, gray=False, sticky=False, all_actions=False, cap_terminal=True),
    "atari_dreamerv2": dict(size=64, gray=True, sticky=True, all_actions=False, cap_terminal=False),
}
ATARI_NOOPS = 30
ATARI_REPEAT = 4
ATARI_MAX_FRAMES = 108_000

# name -> (gymnasium id, pixels)
GYM_PRESETS = {
    "cartpole": ("CartPole-v1", False),
    "pendulum": ("Pendulum-v1", False),
    "acrobot": ("Acrobot-v1", False),
    "mountaincar": ("MountainCarContinuous-v0", False),
    "cartpole_pixels": ("CartPole-v1", True),
    "pendulum_pixels": ("Pendulum-v1", True),
    "acrobot_pixels": ("Acrobot-v1", True),
}
ENV_PRESETS = (*ATARI_PRESETS, *GYM_PRESETS, "gym (with id=<any gymnasium id>)", "dmc_<domain>_<task>")


def _ale_id(task: str) -> str:
    """``"pong"``, ``"james_bond"``, ``"MontezumaRevenge"`` -> ``"ALE/<Game>-v5"``."""
    import ale_py

    gym.register_envs(ale_py)
    games = {
        k[len("ALE/") : -len("-v5")].lower(): k
        for k in gym.registry
        if k.startswith("ALE/") and k.endswith("-v5")
    }
    name = task.replace("_", "").lower()
    if name not in games:
        raise ValueError(f"unknown Atari game {task!r}; valid: {sorted(games)}")
    return games[name]


def make_atari_env(
    task: str = "pong",
    preset: str = "atari100k",
    seed: int | None = None,
    resize: str = "pillow",
) -> EpisodeStream:
    """Atari with the reference's protocol (SPEC §1.2, §10).

    ``atari100k``: 64x64 RGB, minimal action set, no sticky actions. ``atari``: 96x96 gray,
    all 18 actions, sticky actions 0.25. Both: action repeat 4 with max-pooling of the last
    two frames, 0..30 no-ops, no life-loss signal, raw rewards, 108k-frame episode cap marked
    terminal (``terminal_on_truncation=True``, as the reference does). ``atari_dreamerv2``:
    DreamerV2's settings, 64x64 gray, minimal action set, sticky actions 0.25, the cap not terminal
    (use ``resize="opencv"``, the area interpolation of gym's ``AtariPreprocessing``). ``resize``: ``"pillow"``
    (PIL bilinear, the reference presets; needs Pillow) or ``"opencv"`` (area interpolation).

    Examples:
        >>> env = make_atari_env("pong", "atari100k", seed=0)
        >>> env.reset()["pixels"].shape, env.action_spec.shape
        (torch.Size([3, 64, 64]), torch.Size([6]))
    """
    if preset not in ATARI_PRESETS:
        raise ValueError(f"unknown Atari preset {preset!r}; valid: {list(ATARI_PRESETS)}")
    cfg = ATARI_PRESETS[preset]
    env = gym.make(
        _ale_id(task),
        frameskip=1,
        repeat_action_probability=0.25 if cfg["sticky"] else 0.0,
        full_action_space=cfg["all_actions"],
        max_num_frames_per_episode=ATARI_MAX_FRAMES,
    )
    env = ReferenceAtariPreprocessing(
        env,
        noops=ATARI_NOOPS,
        repeat=ATARI_REPEAT,
        size=cfg["size"],
        gray=cfg["gray"],
        resize=resize,
    )
    env = GymWrapper(ChannelFirstPixels(env), device="cpu")
    return _stream(env, seed, terminal_on_truncation=cfg["cap_terminal"])


def make_gym_env(
    name: str = "CartPole-v1",
    pixels: bool = False,
    size: int = 64,
    seed: int | None = None,
) -> EpisodeStream:
    """A gymnasium env (e.g. classic control) with vector or rendered-pixel observations.

    ``pixels=False``: key ``observation`` (float32). ``pixels=True``: key ``pixels``, the
    ``rgb_array`` render resized to ``size x size`` with OpenCV (needs ``pygame`` for
    classic control). Continuous actions are normalized to ``[-1, 1]`` and clipped.
    Time limits (e.g. CartPole's 500 steps) are truncations: ``is_last`` without
    ``is_terminal``.
    """
    env = gym.make(name, render_mode="rgb_array" if pixels else None)
    if pixels:
        env = RenderedPixels(env, size)
    env = GymWrapper(env, device="cpu")
    env = float32_observations(env)
    return _stream(normalize_actions(env), seed)


def make_dmc_env(
    domain: str,
    task: str,
    pixels: bool = True,
    proprio: bool | None = None,
    size: int = 64,
    repeat: int = 1,
    camera: int | None = None,
    seed: int | None = None,
) -> EpisodeStream:
    """DeepMind Control Suite task (optional ``dmc`` extra: ``pip install torchrl_dreamerv3[dmc]``).

    ``pixels``: 64x64 render as ``pixels`` (camera 2 for quadruped, else 0, as the
    reference). ``proprio`` (default ``not pixels``): all proprio entries concatenated into
    ``observation``. ``is_terminal`` = episode end with discount != 1. With ``repeat > 1``
    TorchRL's ``frame_skip`` renders every sub-step (slower; same final frame).
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        from dm_control import suite
    except ImportError as err:
        raise ImportError(
            "make_dmc_env needs dm_control: pip install 'torchrl_dreamerv3[dmc]'"
        ) from err
    from torchrl.envs import DMControlWrapper

    proprio = (not pixels) if proprio is None else proprio
    if not (pixels or proprio):
        raise ValueError("make_dmc_env needs pixels=True or proprio=True")
    camera = ({"quadruped": 2}.get(domain, 0)) if camera is None else camera
    domain = "ball_in_cup" if domain == "cup" else domain
    base = DMControlWrapper(
        suite.load(domain, task),
        from_pixels=pixels,
        pixels_only=not proprio,
        frame_skip=repeat,
        render_kwargs={"height": size, "width": size, "camera_id": camera},
        device="cpu",
    )
    vec_keys = [k for k in base.observation_spec.keys() if k != "pixels"]
    transforms = [DoubleToFloat(in_keys=["reward", *vec_keys], in_keys_inv=["action"])]
    if proprio:
        transforms.append(CatTensors(in_keys=vec_keys, out_key="observation"))
    if pixels:
        transforms.append(PermuteTransform((-1, -3, -2), in_keys=["pixels"]))
    env = TransformedEnv(base, Compose(*transforms))
    return _stream(normalize_actions(env), seed)


def make_env(name: str, task: str | None = None, seed: int | None = None, **kwargs) -> EpisodeStream:
    """Build an env from a preset name.

    * ``atari100k`` / ``atari`` / ``atari_dreamerv2`` (``task`` = game, default ``"pong"``), or
      ``atari100k_pong``;
    * classic control: ``cartpole``, ``pendulum``, ``acrobot``, ``mountaincar`` and the
      ``*_pixels`` variants (``size`` kwarg, default 64);
    * ``gym`` with ``id=<any gymnasium id>`` (and ``pixels``, ``size``): :func:`make_gym_env`;
    * ``dmc_<domain>_<task>``, e.g. ``dmc_walker_walk`` (kwargs go to :func:`make_dmc_env`).

    Examples:
        >>> env = make_env("cartpole", seed=0)
        >>> env.observation_spec["observation"].shape
        torch.Size([4])
    """
    prefix, _, rest = name.partition("_")
    # the longest Atari preset that `name` is or starts with (+ "_<game>"): atari_dreamerv2_pong
    atari = [p for p in ATARI_PRESETS if name == p or name.startswith(p + "_")]
    if atari:
        preset = max(atari, key=len)
        return make_atari_env(task or name[len(preset) + 1:] or "pong", preset, seed=seed, **kwargs)
    if name in GYM_PRESETS:
        gym_id, pixels = GYM_PRESETS[name]
        return make_gym_env(gym_id, pixels=pixels, seed=seed, **kwargs)
    if name == "gym":
        if "id" not in kwargs:
            raise ValueError("env=gym needs env.id=<a gymnasium id>, e.g. env.id=MountainCarContinuous-v0")
        gym_id = kwargs.pop("id")
        if gym_id not in gym.registry:
            raise ValueError(f"env.id={gym_id!r} is not a registered gymnasium id (a package that registers it "
                             "may need importing); e.g. CartPole-v1, MountainCarContinuous-v0")
        return make_gym_env(gym_id, seed=seed, **kwargs)
    if prefix == "dmc":
        domain, _, dmc_task = (task or rest).partition("_")
        if domain == "ball" and dmc_task.startswith("in_cup_"):  # dmc_ball_in_cup_catch
            domain, dmc_task = "ball_in_cup", dmc_task[len("in_cup_") :]
        if not dmc_task:
            raise ValueError(f"DMC presets are dmc_<domain>_<task>, got {name!r}")
        return make_dmc_env(domain, dmc_task, seed=seed, **kwargs)
    raise ValueError(f"unknown env preset {name!r}; valid: {list(ENV_PRESETS)}")


def _stream(env: EnvBase, seed: int | None, **kwargs) -> EpisodeStream:
    stream = EpisodeStream(env, **kwargs)
    if seed is not None:
        stream.set_seed(seed)
    return stream
