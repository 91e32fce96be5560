"""Reports: the open-loop prediction video (SPEC §9), GIF files and return plots.

The open-loop report (reference ``Agent.report``) shows how far the world model can see ahead:
the first ``context`` steps of a replay window are filtered with the posterior, then the prior
rolls forward from the last posterior state with the *recorded* actions, and every state is
decoded. Each video frame is a grid, one row per sequence (up to ``rows``), three panels per
row::

    truth | prediction | error      error = 0.5 + (prediction - truth) / 2   (grey = exact)

Return plots and the returns CSV reader live in :mod:`.plots` (re-exported here).
"""
from __future__ import annotations

import contextlib
import os

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from ...modules import DreamerV3Modules
from ...replay.context import split_context
from .plots import bin_runs, plot_curves, plot_returns, read_returns_csv

__all__ = ["open_loop_report", "open_loop_video", "openloop_mse", "save_gif", "plot_returns", "plot_curves",
           "bin_runs", "read_returns_csv"]


# ---------------------------------------------------------------- open-loop prediction

def _image_key(modules: DreamerV3Modules, window: TensorDictBase, key: NestedKey | None) -> NestedKey:
    """The reported image key: ``key`` if given, else the first uint8 ``(C, H, W)`` observation."""
    def is_image(k):
        value = window.get(k, None)
        return value is not None and value.dtype == torch.uint8 and value.dim() == window.batch_dims + 3
    if key is not None:
        if not is_image(key):
            raise ValueError(f"key {key!r} is not a uint8 (C, H, W) image observation in the window")
        return key
    for k in modules.obs_keys:
        if is_image(k):
            return k
    raise ValueError(f"video reports need an image observation (uint8, (C, H, W)); the observation keys "
                     f"{modules.obs_keys} have none")


def _reco_key(modules: DreamerV3Modules, key: NestedKey) -> NestedKey:
    prefix = modules.keys.reco
    prefix = prefix if isinstance(prefix, tuple) else (prefix,)
    return (*prefix, *(key if isinstance(key, tuple) else (key,)))


@contextlib.contextmanager
def _frozen(modules: torch.nn.Module, device: torch.device):
    """Eval mode and a forked RNG for the duration, restoring both after: reports change no state."""
    flags = [(m, m.training) for m in modules.modules()]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            modules.eval()
            yield
    finally:
        for m, flag in flags:
            m.training = flag


def _open_loop_predict(modules: DreamerV3Modules, window: TensorDictBase, context: int | None, key: NestedKey):
    """``(truth uint8 (B, T, C, H, W), prediction float in [0, 1] (B, T, C, H, W), context, reward error)``;
    the reward error is ``(predicted - recorded reward) ** 2`` per step ``(B, T)``, from the same latents."""
    if window.batch_dims != 2:
        raise ValueError(f"open-loop reports need a replay window (B, T + 1), got batch shape {tuple(window.shape)}")
    k = modules.keys
    data = split_context(window, keys=k)
    T = data.shape[1]
    context = T // 2 if context is None else int(context)
    if not 1 <= context <= T:
        raise ValueError(f"context must be in [1, T={T}], got {context}")
    # Observed part: encoder + posterior filtering over steps 0..context-1.
    post = modules.observe(modules.encoder(data[:, :context]))
    states = [post.select(k.deter, k.stoch)]
    # Imagined part: the prior, driven by the recorded action that led to each later step.
    # As in the reference, the prior does not reset at an ``is_first`` inside the imagined part.
    state = post[:, -1].select(k.deter, k.stoch)
    for t in range(context, T):
        step = state.clone(False).set(k.action, data[:, t].get(k.prev_action))
        state = modules.imagine_step(step).select(k.deter, k.stoch)
        states.append(state.unsqueeze(1))
    latents = torch.cat(states, dim=1)
    pred = modules.decoder(latents).get(_reco_key(modules, key)).float()
    if getattr(modules.cfg, "cnn", "v3") == "k4s2":
        pred = pred + 0.5  # V1/V2 decoders predict the mean of x/255 - 0.5 (SPEC_V1_V2 §1.2)
    pred = pred.clamp(0, 1)
    reward_pred = modules.reward(latents).get(k.reward_pred).float().reshape(data.shape)
    reward_error = (reward_pred - data.get("reward").float().reshape(data.shape)).square()
    return data.get(key), pred, context, reward_error


def open_loop_report(
    modules: DreamerV3Modules,
    window: TensorDictBase,
    context: int | None = None,
    key: NestedKey | None = None,
    *,
    rows: int = 4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Open-loop video and its errors from one forward pass: ``(frames, metrics)``.

    Args:
        modules: the agent (only the world model is used).
        window: a replay window ``(B, T + 1)``; row 0 is the context row (see
            :func:`~torchrl_dreamerv3.replay.split_context`), so the report covers rows ``1..T``.
        context: steps observed with the posterior (default ``T // 2``); the other ``T - context``
            are predicted by the prior from the recorded actions alone.
        key: the image observation to show (default: the first uint8 image of ``modules.obs_keys``).
        rows: sequences shown in the video (the first ``min(rows, B)``); metrics use the whole batch.

    Returns:
        ``frames``: uint8 ``(T, C, rows * H, 3 * W)`` on the CPU (truth | prediction | error per row;
        images with ``C`` not in ``(1, 3)``, e.g. frame stacks, keep their last channel as grey).
        ``metrics``: 0-d tensors ``openl_mse_obs`` (posterior reconstruction, steps ``< context``)
        and ``openl_mse_imag`` (open-loop prediction, steps ``>= context``; absent if ``context == T``),
        mean squared per-pixel error with pixels in ``[0, 1]``; ``openl_reward_mse_obs`` and
        ``openl_reward_mse_imag``, the mean squared error of the reward head's prediction against the
        recorded reward over the same steps, in squared env reward units (squared, not absolute: the head
        predicts the expected reward, which minimises the squared error; with sparse rewards the absolute
        error would favour predicting zero).

    Runs without gradient, in eval mode and on a forked RNG: module flags and the global random
    stream are as before the call.
    """
    key = _image_key(modules, window, key)
    with _frozen(modules, window.get(key).device):
        truth, pred, context, reward_error = _open_loop_predict(modules, window, context, key)
    err = (pred - truth.float() / 255.0).square()
    metrics = {"openl_mse_obs": err[:, :context].mean(), "openl_reward_mse_obs": reward_error[:, :context].mean()}
    if context < truth.shape[1]:
        metrics["openl_mse_imag"] = err[:, context:].mean()
        metrics["openl_reward_mse_imag"] = reward_error[:, context:].mean()
    return _video_grid(truth[:rows], pred[:rows]), metrics


def open_loop_video(modules: DreamerV3Modules, window: TensorDictBase, context: int | None = None,
                    key: NestedKey | None = None, *, rows: int = 4) -> torch.Tensor:
    """The frames of :func:`open_loop_report`: uint8 ``(T, C, rows * H, 3 * W)``."""
    return open_loop_report(modules, window, context, key, rows=rows)[0]


def openloop_mse(modules: DreamerV3Modules, window: TensorDictBase, context: int | None = None,
                 key: NestedKey | None = None) -> dict[str, torch.Tensor]:
    """The metrics of :func:`open_loop_report` (``openl_mse_*`` and ``openl_reward_mse_*``)."""
    return open_loop_report(modules, window, context, key)[1]


def _video_grid(truth: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """``(R, T, C, H, W)`` truth uint8 and prediction in [0, 1] -> uint8 ``(T, C, R * H, 3 * W)``."""
    if truth.shape[2] not in (1, 3):
        truth, pred = truth[:, :, -1:], pred[:, :, -1:]
    target = truth.float() / 255.0
    to_uint8 = lambda x: (x * 255.0).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
    error = 0.5 + (pred - target) / 2
    panels = torch.cat([truth, to_uint8(pred), to_uint8(error)], dim=-1)  # (R, T, C, H, 3W)
    R, T, C, H, W3 = panels.shape
    return panels.permute(1, 2, 0, 3, 4).reshape(T, C, R * H, W3).cpu()


# ---------------------------------------------------------------- files

def save_gif(frames: torch.Tensor, path: str | os.PathLike, fps: float = 8) -> str:
    """Writes uint8 frames ``(T, C, H, W)`` (``C`` = 1 or 3) as a looping GIF; returns the path.

    Pillow merges consecutive identical frames (adding their durations), so a GIF of a static
    video can hold fewer frames than ``T``.
    """
    from PIL import Image

    if frames.dim() != 4 or frames.shape[1] not in (1, 3) or frames.dtype != torch.uint8:
        raise ValueError(f"save_gif needs uint8 frames (T, C, H, W) with C in (1, 3), got "
                         f"{frames.dtype} {tuple(frames.shape)}")
    array = frames.detach().cpu().permute(0, 2, 3, 1).numpy()
    images = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]  # mode L or RGB
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
    return path
