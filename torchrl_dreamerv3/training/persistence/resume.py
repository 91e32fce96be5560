"""Whether a run may continue a saved one, checked before anything is built or written.

A checkpoint saves its run plan's ``identity`` (the env, the resolved model, the generation, the windows);
:func:`check_resumable` holds the new plan against it and names every difference. Checkpoints from before
the plan are held against the run's ``config.yaml`` and resolved model size instead.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .checkpoint import read_info

__all__ = ["check_resumable", "check_resumed_plan", "check_resume_config", "check_resumed_model_size", "RESUME_FIXED"]

_HINT = (". Pass the run's own overrides again, or start from its saved config: python examples/dreamerv3_atari.py "
         "--config-path <run dir, absolute> --config-name config resume=<run dir>")


def check_resumable(plan, logdir: Path) -> None:
    """Fails, naming each differing setting, when ``plan`` (a :class:`~..plan.RunPlan`) cannot continue the run
    in ``plan.resume``; call it before this run's config overwrites the saved one."""
    meta = read_info(plan.resume)["meta"]
    if "plan" in meta:
        check_resumed_plan(plan, meta["plan"])
        return
    if (logdir / "config.yaml").is_file():  # a checkpoint from before the plan
        check_resume_config(OmegaConf.create(dict(plan.hparams)), OmegaConf.load(logdir / "config.yaml"))
    check_resumed_model_size(plan.model_size, meta)


def _flat(node, prefix: str) -> dict:
    if not isinstance(node, dict):
        return {prefix: node}
    return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}.{key}" if prefix else key).items()}


def check_resumed_plan(plan, saved: dict) -> None:
    """Fails, naming each differing entry, when ``plan`` cannot continue the run whose checkpoint saved the
    identity ``saved`` (``RunPlan.identity``); a mismatch would otherwise surface as a shape error deep
    inside ``load_state_dict``, or not at all (another env with the same shapes)."""
    now, then = _flat(dict(plan.identity), ""), _flat(saved, "")
    differing = [f"{k}={now.get(k)!r} (the run has {then.get(k)!r})" for k in sorted(set(now) | set(then))
                 if now.get(k) != then.get(k)]
    if differing:
        raise ValueError("resume: this config cannot continue the saved run; differing settings: "
                         + "; ".join(differing) + _HINT)


#: Settings a resumed run must share with the run it continues: they shape the networks, the replay
#: rows and the windows the checkpoint was trained on.
RESUME_FIXED = ("env", "model", "algo.generation", "batch_size", "batch_length", "replay_context")


def check_resume_config(cfg: DictConfig, saved: DictConfig) -> None:
    """Fails, naming each differing setting, when ``cfg`` cannot continue the run saved with ``saved``.

    A resume given only ``resume=<run>`` composes the default config; without this check the
    mismatch shows up as a shape error deep inside ``load_state_dict``.
    """
    def flat(node, prefix):
        if not OmegaConf.is_config(node):
            return {prefix: node}
        return {k: v for key in node for k, v in flat(node[key], f"{prefix}.{key}").items()}

    differing = []
    for name in RESUME_FIXED:
        now, then = (OmegaConf.select(c, name) for c in (cfg, saved))
        now, then = flat(now, name), flat(then, name)
        # model.size is compared resolved (check_resumed_model_size): auto may name the same size
        differing += [f"{k}={now.get(k)!r} (the run has {then.get(k)!r})" for k in sorted(set(now) | set(then))
                      if now.get(k) != then.get(k) and k != "model.size"]
    if differing:
        raise ValueError("resume: this config cannot continue the saved run; differing settings: "
                         + "; ".join(differing) + _HINT)


def check_resumed_model_size(size: str, checkpoint_meta: dict) -> None:
    """``size``: this run's *resolved* model size (``plan.resolve_size``); the checkpoint's ``meta["model_size"]``
    was resolved the same way when it was saved. ``size=auto`` resolves per device kind, so comparing the
    written ``model.size`` would let ``auto`` on a GPU continue a CPU run and fail inside ``load_state_dict``."""
    saved = checkpoint_meta.get("model_size")
    if saved is not None and saved != size:
        raise ValueError(f"resume: the run was trained with model size {saved!r}, this config resolves to {size!r}"
                         f" (model.size=auto picks by device); pass size={saved} to continue it")
