"""The authors' DreamerV3 at initialisation: its first train calls' metrics on real env data, and that data.

Runs in the reference's venv (not ours): it imports the reference through the launcher beside it
(``--reference`` folder, see that folder's README), builds the agent as its ``main.py`` does, fills the
replay with real env steps, and for each seed records the metrics of the first ``--calls`` train calls.
Its learning rate ramps from 0 over the warm-up, so these are the metrics of the initial parameters.
The batch of the first call is saved (``batch.npz``) so that ``benchmarks/init_internals.py`` can feed the
same data to our agent at initialisation and put both sides' numbers in one table.

    OFFICIAL_SRC=.../dreamerv3-e3f0224 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false \
      $REF_VENV/bin/python benchmarks/reference_probe.py --reference ../shared/reference --out probe/ \
      --seeds 0 1 2 -- --configs atari100k size1m --task atari100k_kung_fu_master --batch_size 16 \
      --batch_length 32 --jax.platform cpu --jax.prealloc False --jax.compute_dtype float32 --run.envs 1 \
      --logger.outputs jsonl
"""
import argparse
import json
import os
import sys
from functools import partial as bind
from pathlib import Path


def _record_grads(out: list) -> None:
    """Wraps ninjax's ``grad`` (which the reference's optimiser calls) to append each call's gradients
    (``{parameter path: array}``) to ``out``, through a host callback from inside the compiled train step."""
    import jax
    import ninjax
    import numpy as np

    original = ninjax.grad

    def grad(fn, *args, **kwargs):
        inner = original(fn, *args, **kwargs)

        def wrapped(*a, **k):
            loss, params, grads, aux = inner(*a, **k)
            jax.debug.callback(lambda g: out.append({k: np.asarray(v, np.float32) for k, v in g.items()}), grads)
            return loss, params, grads, aux
        return wrapped

    ninjax.grad = grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="folder holding official_launch.py")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--calls", type=int, default=3, help="train calls per seed (lr ramps from 0)")
    args, flags = parser.parse_known_args()
    flags = [f for f in flags if f != "--"]
    sys.path.insert(0, str(args.reference.resolve()))
    os.chdir(args.reference)  # the launcher resolves the reference tree from OFFICIAL_SRC
    import numpy as np
    import official_launch as L  # applies the launcher's patches
    import elements
    import embodied
    import jax
    import ruamel.yaml as yaml

    M = L.M
    grads_seen = []  # per train call: {parameter path: gradient}, recorded from inside the compiled step
    _record_grads(grads_seen)
    configs = yaml.YAML(typ="safe").load(elements.Path(M.folder / "configs.yaml").read())
    args.out.mkdir(parents=True, exist_ok=True)
    batch0 = None
    records = []
    for seed in args.seeds:
        parsed, other = elements.Flags(configs=["defaults"]).parse_known(flags)
        config = elements.Config(configs["defaults"])
        for name in parsed.configs:
            config = config.update(configs[name])
        config = elements.Flags(config).parse(other)
        config = config.update(logdir=str(args.out / f"logdir_s{seed}"), seed=seed)
        elements.Path(config.logdir).mkdir()
        agent = M.make_agent(config)
        if batch0 is None:  # one data set for every seed: real env steps from the seed-0 policy
            replay = M.make_replay(config, "replay")
            driver = embodied.Driver([bind(M.make_env, config, 0)], parallel=False)
            driver.on_step(lambda tran, worker: replay.add(tran, worker))
            driver.reset(agent.init_policy)
            B, T = config.batch_size, config.batch_length
            driver(lambda *a: agent.policy(*a, mode="train"), steps=B * (T + config.replay_context) + 16)
            stream = iter(agent.stream(M.make_stream(config, replay, "train")))
            batches = [next(stream) for _ in range(args.calls)]
            batch0 = {k: np.asarray(v) for k, v in batches[0].items()}
            np.savez(args.out / "batch.npz", **batch0)
        params = {k: np.asarray(v, np.float32) for k, v in agent.params.items()}  # at initialisation
        carry = agent.init_train(config.batch_size)
        for call, batch in enumerate(batches):
            carry, _, mets = agent.train(carry, dict(batch))  # train pops entries
            mets = {k: float(np.asarray(v)) for k, v in mets.items() if np.asarray(v).size == 1}
            jax.effects_barrier()
            grads = grads_seen.pop() if grads_seen else {}
            if call == 0:  # the initial parameters and their first gradients, for same-weights comparisons
                np.savez(args.out / f"init_s{seed}.npz", **{f"param:{k}": v for k, v in params.items()},
                         **{f"grad:{k}": v for k, v in grads.items()})
            norms = {k: float(np.sqrt(np.sum(np.square(v, dtype=np.float64)))) for k, v in grads.items()}
            records.append(dict(seed=seed, call=call, **mets, grad_norms=norms))
            print(json.dumps({k: v for k, v in records[-1].items() if "loss" in k or "adv" in k}),
                  flush=True)
        jax.clear_caches()
    (args.out / "reference_metrics.json").write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
