"""TorchRL 0.14.1's own DreamerV3 learner, built in-process as a timing baseline.

What is built: the learner of the wheel's recipe, ``site-packages/sota-implementations/dreamer_v3/
train.py``, loaded with ``runpy.run_path`` and assembled by its own ``_build_learner`` and
``_make_learner_update`` factories, as upstream's ``benchmarks/ad_hoc/bench_dreamer_v3_learner.py``
does. One update is ``DreamerV3OptimizationStepper.step(None, batch)``: world-model, actor
(15-step imagination), critic and replay-critic losses, backward, ``DreamerV3Optimizer`` step and
the ``SoftUpdate`` of the slow critic. Replay sampling and collection are excluded. The batch is a
synthetic random [B, T] TensorDict made once and kept on the device.

The wheel has no YAML, so the configuration is written here (``_config``). Choices:

- Sizes come from the reference presets (SPEC §1.7): deter -> ``rnn_hidden_dim``, classes ->
  ``num_classes``, depth -> ``image_depth``, stoch 32 -> ``num_categoricals``, blocks 8. The built-in
  has ONE width knob (``hidden_dim``) for both the RSSM ``hidden`` and the MLP ``units``; they agree
  in every size preset. ``debug`` uses units 8 for it (reference hidden 3 cannot be set apart).
- Layers as the reference: encoder/decoder/actor/critic 3, reward and continue heads 1, RSSM
  img 2 / obs 1 / dyn 1; RMSNorm eps 1e-4, 255 two-hot bins, image mults (2,3,4,4), kernel 5,
  decoder block space 8, policy std in [0.1, 1].
- Losses: block GRU, RMSNorm posterior, unimix 0.01, separate dyn/rep KL 1.0/0.1 with 1 free nat,
  continue target (1 - 1/333), ``gamma=1.0`` because the continue head already carries the
  1 - 1/333 discount (reference ``contdisc: True``: imagination uses disc 1 and weights
  cumprod(con)); the replay critic uses 1 - 1/333 internally. lambda 0.95, horizon 15,
  REINFORCE actor (discrete and continuous), entropy 3e-4, return norm 5/95 % rate 0.01 limit 1,
  slow-critic regulariser 1.0, SoftUpdate tau 0.02, replay value weight 0.3.
- Optimizer: ``DreamerV3Optimizer`` lr 4e-5, AGC 0.3, eps 1e-20, 1000 warm-up updates (so the
  first update applies lr 0; timings are unaffected).
- fp32 by default; ``mixed_precision=True`` gives the recipe's BF16 autocast (CUDA only).
- ``compile=True`` is the recipe's best setting for the device. CUDA: ``optimization.compile=auto``,
  a whole-step Inductor compile around the higher-order RSSM scan (unroll 8) plus a CUDA graph.
  CPU: ``auto`` is eager there (the built-in's own choice), and its whole-step compile did not warm
  up in 470 s on this CPU, so we take its opt-in ``compile_rssm=step`` (the compiled RSSM step,
  1.43x on the smoke model after about 50 s of warm-up). Warm-up runs before timing in both cases.
- ``mixed_precision=True`` is the recipe's BF16 autocast, which the recipe applies on CUDA only.
"""

from __future__ import annotations

import argparse
import runpy
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import torch

PRESETS = {  # deter, hidden(=units), classes, depth, stoch, blocks, layers, bins
    "debug": (8, 8, 4, 2, 2, 4, 1, 5),
    "size1m": (512, 64, 4, 4, 32, 8, 3, 255),
    "size12m": (2048, 256, 16, 16, 32, 8, 3, 255),
    "size25m": (3072, 384, 24, 24, 32, 8, 3, 255),
}
OBS = {"image64": (3, 64, 64), "image96": (1, 96, 96), "vector17": 17}
ACTIONS = {"disc6": (6, True), "cont6": (6, False)}
_FACTORY_MODULE = "_torchrl_builtin_dreamerv3_synthetic_env"


def _recipe_dir() -> Path:
    import torchrl

    path = Path(torchrl.__file__).parent.parent / "sota-implementations" / "dreamer_v3"
    if not (path / "train.py").exists():
        raise FileNotFoundError(f"TorchRL's DreamerV3 recipe is not installed at {path}")
    return path


def load_recipe() -> dict:
    """Run the wheel's ``train.py`` as a library (its sibling modules must be importable)."""
    path = _recipe_dir()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    return runpy.run_path(str(path / "train.py"), run_name="torchrl_builtin_dreamerv3")


def _synthetic_env(*, seed=None, env_index=0, num_envs=1, obs="vector17", action="disc6"):
    """A spec-only TorchRL env: the recipe builds its imagination env from these specs."""
    from tensordict import TensorDict
    from torchrl.data import Bounded, Composite, OneHot, Unbounded
    from torchrl.envs import EnvBase

    class SyntheticEnv(EnvBase):
        def __init__(self):
            super().__init__(device="cpu")
            shape = OBS[obs]
            self.obs_key = "observation" if isinstance(shape, int) else "pixels"
            self.observation_spec = Composite(
                {self.obs_key: Unbounded(shape) if isinstance(shape, int)
                 else Bounded(0, 255, shape, dtype=torch.uint8)}
            )
            n, discrete = ACTIONS[action]
            self.action_spec = OneHot(n) if discrete else Bounded(-1.0, 1.0, (n,))
            self.reward_spec = Unbounded(1)

        def _reset(self, td):
            return TensorDict({self.obs_key: self.observation_spec[self.obs_key].zero()})

        def _step(self, td):
            out = self.full_observation_spec.rand()
            out.update(self.full_reward_spec.rand())
            return out.update(self.full_done_spec.zero())

        def _set_seed(self, seed):
            return seed

    return SyntheticEnv()


def _compile_keys(compile: bool, device_type: str) -> dict:
    """The recipe's compile keys for its best setting on the device (module docstring)."""
    if not compile:
        return {"compile": "off", "compile_rssm": None}
    if device_type == "cuda":
        return {"compile": "auto", "compile_rssm": None}
    return {"compile": "off", "compile_rssm": "step"}


def _config(preset, obs, action, batch_size, batch_length, compile, mixed_precision, device_type="cpu"):
    from omegaconf import OmegaConf

    deter, units, classes, depth, stoch, blocks, layers, bins = PRESETS[preset]
    vector = isinstance(OBS[obs], int)
    return OmegaConf.create({
        "env": {"backend": "custom", "factory": f"{_FACTORY_MODULE}:make",
                "factory_kwargs": {"obs": obs, "action": action}, "seed": 0,
                "use_seed": False, "max_episode_steps": 1000, "name": "synthetic",
                "vector_key": "observation" if vector else None,
                "pixels_key": None if vector else "pixels"},
        "collector": {"num_envs": 1},
        "replay_buffer": {"batch_size": batch_size, "seq_len": batch_length},
        "networks": {
            "rnn_hidden_dim": deter, "hidden_dim": units, "num_categoricals": stoch,
            "num_classes": classes, "num_blocks": blocks, "recurrent_model": "block_gru",
            "dynamics_layers": 1, "prior_layers": 2, "posterior_layers": 1,
            "encoder_layers": layers, "decoder_layers": layers, "actor_layers": layers,
            "value_layers": layers, "reward_layers": 1, "decoder_event_dims": None,
            "image_depth": depth, "image_mults": [2, 3, 4, 4], "image_kernel_size": 5,
            "image_decoder_blocks": 8, "num_reward_bins": bins, "num_value_bins": bins,
            "norm_eps": 1e-4, "unimix": 0.01, "policy_min_std": 0.1, "policy_max_std": 1.0},
        "optimization": {
            "lr": 4e-5, "adaptive_grad_clip": 0.3, "optimizer_eps": 1e-20, "warmup_steps": 1000,
            "free_bits": 1.0, "dynamic_loss_weight": 1.0, "representation_loss_weight": 0.1,
            "continuation_horizon": 333, "gamma": 1.0, "lmbda": 0.95, "imagination_horizon": 15,
            "use_reinforce": True, "return_normalization_rate": 0.01,
            "return_normalization_min_scale": 1.0, "slow_critic_regularization": 1.0,
            "slow_critic_tau": 0.02, "replay_value_loss_weight": 0.3,
            "mixed_precision": mixed_precision, "separate_policy_rng": False,
            **_compile_keys(compile, device_type), "compile_train_step": None,
            "cudagraph_train_step": None, "rssm_scan_unroll": 8,
            "compile_train_step_mode": "default"},
    })


class TorchRLLearner:
    """One built-in learner plus a fixed synthetic batch on its device."""

    def __init__(self, recipe, cfg, device, obs, action, description):
        self.cfg, self.device, self.obs, self.action = cfg, device, obs, action
        self.description = description
        shape = OBS[obs]
        n, discrete = ACTIONS[action]
        self.learner = recipe["_build_learner"](
            cfg, device, shape if isinstance(shape, int) else 0, n,
            None if isinstance(shape, int) else shape, discrete)
        self.stepper = recipe["_make_learner_update"](cfg, device, self.learner)
        self.optimizer = self.learner.optimizer
        params = {id(p): p for g in self.optimizer.param_groups for p in g["params"]}
        self.num_params = sum(p.numel() for p in params.values() if p.requires_grad)
        self.batch = self.make_batch()
        self.warmup_s = 0.0
        if recipe["resolve_compile_settings"](cfg, device).enabled:
            start = time.perf_counter()
            self.stepper.warmup(self.batch)  # compile + CUDA-graph capture, no update
            self.synchronize()
            self.warmup_s = time.perf_counter() - start

    def make_batch(self):
        """A random [B, T] replay batch with the keys the recipe's learner reads."""
        from tensordict import TensorDict

        B, T = self.cfg.replay_buffer.batch_size, self.cfg.replay_buffer.seq_len
        net, dev, shape = self.cfg.networks, self.device, OBS[self.obs]
        n, discrete = ACTIONS[self.action]
        if discrete:
            act = torch.nn.functional.one_hot(torch.randint(n, (B, T), device=dev), n).float()
        else:
            act = torch.rand(B, T, n, device=dev) * 2 - 1
        if isinstance(shape, int):
            obs = {"observation": torch.randn(B, T, shape, device=dev)}
        else:
            obs = {"pixels": torch.randint(0, 256, (B, T, *shape), dtype=torch.uint8, device=dev)}
        flag = torch.zeros(B, T, 1, dtype=torch.bool, device=dev)
        return TensorDict({
            "state": torch.zeros(B, T, net.num_categoricals * net.num_classes, device=dev),
            "belief": torch.zeros(B, T, net.rnn_hidden_dim, device=dev),
            "action": act, "is_init": flag.clone(),
            "next": {**obs, "reward": torch.randn(B, T, 1, device=dev), "done": flag.clone(),
                     "terminated": flag.clone(), "truncated": flag.clone()},
        }, [B, T], device=dev)

    def update(self):
        """One complete learner update on the fixed batch; returns detached metrics."""
        return self.stepper.step(None, self.batch)

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def build_torchrl_learner(preset: str, obs: str, action: str, batch_size=16, batch_length=64,
                          device="cpu", compile=False, mixed_precision=False) -> TorchRLLearner:
    for name, value, options in (("preset", preset, PRESETS), ("obs", obs, OBS),
                                 ("action", action, ACTIONS)):
        if value not in options:
            raise ValueError(f"{name} must be one of {sorted(options)}, got {value!r}")
    import torchrl

    device = torch.device(device)
    recipe = load_recipe()
    factory = types.ModuleType(_FACTORY_MODULE)
    factory.make = _synthetic_env
    sys.modules[_FACTORY_MODULE] = factory  # the recipe imports env.factory by name
    cfg = _config(preset, obs, action, batch_size, batch_length, compile, mixed_precision, device.type)
    mode = recipe["resolve_compile_settings"](cfg, device)
    deter, units, classes, depth, stoch, blocks, layers, bins = PRESETS[preset]
    description = (
        f"torchrl {torchrl.__version__} built-in DreamerV3 learner | {preset}: deter {deter}, "
        f"hidden=units {units}, stoch {stoch}x{classes}, blocks {blocks}, depth {depth}, "
        f"layers {layers}, bins {bins} | obs {obs}, action {action} | B{batch_size} "
        f"T{batch_length} on {device} | compile: train_step={mode.train_step}, "
        f"rssm={mode.rssm}, cudagraph={mode.cudagraph} | bf16={mixed_precision and device.type == 'cuda'}")
    try:
        with warnings.catch_warnings():  # the recipe wraps a TransformedEnv in another
            warnings.filterwarnings("ignore", "Nested TransformedEnvs", UserWarning)
            return TorchRLLearner(recipe, cfg, device, obs, action, description)
    except Exception as error:  # tiny dims the built-in modules reject
        raise ValueError(f"The built-in learner cannot be built as {description}: "
                         f"{type(error).__name__}: {error}") from error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="size1m", choices=sorted(PRESETS))
    parser.add_argument("--obs", default="vector17", choices=sorted(OBS))
    parser.add_argument("--action", default="disc6", choices=sorted(ACTIONS))
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batch-length", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    learner = build_torchrl_learner(args.preset, args.obs, args.action, args.batch_size,
                                    args.batch_length, args.device, args.compile, args.bf16)
    print(learner.description)
    learner.update()  # warm-up update
    learner.synchronize()
    times = []
    for _ in range(args.updates):
        start = time.perf_counter()
        learner.update()
        learner.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    print(f"params {learner.num_params:,} | median {statistics.median(times):.1f} ms/update "
          f"(min {min(times):.1f}, n {len(times)})")


if __name__ == "__main__":
    main()
