"""How far the reference's compiled two-hot mean is from the exact expectation, on this CPU.

Runs in the reference's venv. The reference predicts rewards and values as the expectation of a softmax over
255 bins that reach ``±symexp(20) = ±4.85e8``, summed mirror-pair-wise so that uniform probabilities give
exactly 0 (its comment in ``embodied/jax/outs.py``). Eagerly they do; compiled by XLA on CPU the reduction is
reassociated and the result carries rounding error of the order of the outer bins times float32's epsilon.
This prints that error (compiled minus a float64 expectation) for logits near initialisation, and after
training has pushed the outer bins' logits down by ``push``.

    OFFICIAL_SRC=.../dreamerv3-e3f0224 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false \\
      $REF_VENV/bin/python benchmarks/reference_twohot.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.environ["OFFICIAL_SRC"])
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from embodied.jax import nets, outs  # noqa: E402


def main() -> None:
    half = nets.symexp(jnp.linspace(-20, 0, 128, dtype=jnp.float32))
    bins = jnp.concatenate([half, -half[:-1][::-1]], 0)  # the reference's 255 symexp bins
    compiled = jax.jit(lambda logits: outs.TwoHot(logits, bins).pred())
    print("uniform logits: eager", float(outs.TwoHot(jnp.zeros((1, 255)), bins).pred()[0]),
          "compiled", float(compiled(jnp.zeros((1, 255)))[0]))
    rng, b64 = np.random.default_rng(0), np.asarray(bins, np.float64)
    print("| logit noise | outer bins pushed down by | error mean | error std | mean abs exact value |")
    print("|---|---|---|---|---|")
    for noise in (0.0, 1e-6, 1e-3, 1.0):
        for push in (0.0, 5.0, 10.0):
            logits = rng.normal(0, noise, (4096, 255)) - push * (np.abs(b64) > 1e3)
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            exact = (probs / probs.sum(-1, keepdims=True)) @ b64
            err = np.asarray(compiled(jnp.asarray(logits, jnp.float32)), np.float64) - exact
            print(f"| {noise:g} | {push:g} | {err.mean():+.4f} | {err.std():.4f} | {np.abs(exact).mean():.4g} |")


if __name__ == "__main__":
    main()
