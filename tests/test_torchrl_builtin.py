"""Smoke test of the TorchRL built-in DreamerV3 baseline used by the benchmarks."""


import pytest
from benchmark_scripts import load_benchmark
import torch


def _load_baseline():
    return load_benchmark("torchrl_builtin")


def test_builtin_learner_update_changes_parameters():
    baseline = _load_baseline()
    try:
        baseline.load_recipe()
    except Exception as error:  # the wheel's recipe is absent or does not import
        pytest.skip(f"TorchRL's DreamerV3 recipe cannot be loaded from the wheel: {error!r}")
    torch.manual_seed(0)
    learner = baseline.build_torchrl_learner(
        "debug", "vector17", "disc6", batch_size=2, batch_length=8
    )
    assert learner.num_params > 0
    assert "debug" in learner.description
    params = [p for g in learner.optimizer.param_groups for p in g["params"]]
    before = [p.detach().clone() for p in params]
    # The 1000-step linear lr warm-up starts at 0, so the first update moves nothing.
    learner.update()
    metrics = learner.update()
    assert torch.isfinite(metrics["loss_model_reco"]).all()
    changed = sum(not torch.equal(a, p.detach()) for a, p in zip(before, params))
    assert changed > len(params) // 2, (changed, len(params))
    assert learner.make_batch().batch_size == torch.Size([2, 8])
