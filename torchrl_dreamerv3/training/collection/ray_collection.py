"""Env workers in Ray actors (``run.collector=ray``): TorchRL's ``RayCollector``, one remote ``Collector`` each.

``run.ray.workers`` actors each run ``run.envs / workers`` streams (a ``SerialEnv`` when more than one) on
CPU, with a copy of the acting policy. ``sync=True``: every round the learner process asks each worker for
``run.steps_per_collect`` steps of its streams and stacks them in worker order, so row ``w * k + j`` of the
``(run.envs, time)`` batch is always worker ``w``'s stream ``j``, seeded ``seed + w * k + j`` as in the
in-process collectors, and the per-stream replay keeps its stream ids.

Weights: the learner's policy is pushed with the collector's own weight sync (``update_policy_weights_``,
TorchRL's ``RayWeightSyncScheme``: a gloo process group between the learner and the actors) before each
batch for which the learner has trained since the last push, i.e. after each training round. The in-process
collectors see every optimiser step at once (same module, or shared memory for ``multisync`` on CPU); here
a batch is collected with the weights of the round before it, as in ``run.collector=sync``.

Our replay stays in the learner process: TorchRL's ``RayReplayBuffer`` would be written by the actors
directly, but the per-stream rings, the online queue and the generation-checked latent write-back
(``replay_buffer.StreamReplay``) need the batch in stream order in the learner's process.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
from collections.abc import Callable, Iterator

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase

from ...modules import DreamerV3Policy

__all__ = ["INSTALL_HINT", "ray_installed", "ray_init_config", "WeightPushingCollector", "make_ray_collector"]

INSTALL_HINT = 'pip install -e ".[distributed]"'


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def ray_init_config(address: str | None, workers: int) -> dict:
    """``ray.init`` kwargs: no address starts a local cluster on loopback (no dashboard, one CPU per worker);
    an address (``auto``, ``host:port``, ``ray://...``) joins a cluster started with ``ray start``."""
    # The actors' output stays in Ray's session logs (/tmp/ray/session_*/logs): Ray prefixes each line with the
    # actor's repr, a whole collector. Their errors still reach the learner as exceptions.
    if address in (None, ""):
        return dict(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    return dict(address=address, log_to_driver=False)


class WeightPushingCollector:
    """Iterates a ``RayCollector`` as ``(streams, time)`` batches, pushing ``policy``'s weights to the workers
    before a batch whenever ``version()`` changed since the last push (every batch without ``version``).

    ``shutdown()`` ends the actors and, when the collector started it, the Ray runtime.
    """

    def __init__(self, collector, policy: torch.nn.Module, streams: int, version: Callable[[], int] | None = None):
        self.collector, self.policy, self.streams, self.version = collector, policy, streams, version
        self.pushes = 0
        self._pushed = object()

    def push_weights(self) -> bool:
        """Sends the weights if they changed since the last push; returns whether it sent them."""
        version = None if self.version is None else self.version()
        if version is not None and version == self._pushed:
            return False
        self.collector.update_policy_weights_(self.policy)
        self._pushed, self.pushes = version, self.pushes + 1
        return True

    def __iter__(self) -> Iterator[TensorDictBase]:
        self.push_weights()  # before iterating: the first push also connects the weight sync
        for batch in self.collector:
            yield batch.reshape(self.streams, -1)
            self.push_weights()  # resumed when the next batch is asked for: after the training round

    def remote_weights(self, worker: int) -> TensorDictBase:
        """The parameters and buffers of ``worker``'s policy copy, fetched from its actor."""
        import ray

        remote_policy = ray.get(self.collector.remote_collectors[worker].get_distant_attr.remote("policy"))
        return TensorDict.from_module(remote_policy).data

    def shutdown(self) -> None:
        self.collector.shutdown()


def make_ray_collector(settings, worker_env: Callable[[int, int], EnvBase], policy: DreamerV3Policy,
                       version: Callable[[], int] | None = None) -> WeightPushingCollector:
    """``run.ray.workers`` remote collectors over ``run.envs`` streams; starts or joins Ray (``run.ray.address``).

    ``worker_env(first_seed, streams)`` builds one worker's primed env (picklable: it runs in the actor).
    """
    if not ray_installed():
        raise ImportError(f"run.collector=ray needs ray: {INSTALL_HINT}")
    from torchrl.collectors import Collector
    from torchrl.collectors.distributed import RayCollector

    s = settings  # the run plan's CollectionSettings
    workers = s.ray_workers
    per_worker = s.envs // workers
    # Actors may run on hosts without a GPU: they get a CPU copy of the policy (a CUDA module would not unpickle).
    remote_policy = policy if next(policy.parameters()).device.type == "cpu" else copy.deepcopy(policy).cpu()
    factories = [functools.partial(worker_env, s.seed + w * per_worker, per_worker) for w in range(workers)]
    collector = RayCollector(
        factories, remote_policy, collector_class=Collector, sync=True,
        frames_per_batch=s.per_batch,
        total_frames=2**62,  # RayCollector stops at total_frames (-1 would yield nothing); the loop stops it
        device="cpu", storing_device="cpu", env_device="cpu", policy_device="cpu",
        # the policy's carry comes from make_state_primer, so the collectors must not add transforms of their own
        collector_kwargs=dict(compact_obs=True, auto_register_policy_transforms=False),
        remote_configs=dict(num_cpus=1, num_gpus=0),
        ray_init_config=ray_init_config(s.ray_address, workers),
    )
    return WeightPushingCollector(collector, policy, s.envs, version)
