"""Parameter counts per part of DreamerV1, DreamerV2 and the DreamerV3 sizes.

Run ``python benchmarks/param_counts.py``. Every model is built for the Atari setting of the
DreamerV2 paper: one 64 x 64 grayscale image ``(1, 64, 64)`` and 18 one-hot actions (V1 has no
Atari preset in its TF2 repository, so it is shown on the same input for comparison; its DMC
setting, 64 x 64 RGB with continuous actions, is printed too). Parts are grouped as the reference
optimisers print them: ``enc`` encoder, ``dyn`` RSSM, ``dec`` decoder, ``rew`` reward head, ``con``
continue/discount head (0 when the preset has none), ``pol`` actor, ``val`` critic. The feature
size is ``deter + stoch * classes`` (SPEC_V1_V2 §9.8: V1 230, V2 Atari 1624, V2 DMC 1224).

The output ends with one table: one row per model, counts in parameters.
"""
from __future__ import annotations

from torchrl.data import Bounded, OneHot

from torchrl_dreamerv3.modules import SIZES, make_dreamerv3, model_config

ATARI = ({"image": (1, 64, 64)}, OneHot(18))
DMC = ({"image": (3, 64, 64)}, Bounded(-1.0, 1.0, (6,)))
PARTS = ("enc", "dyn", "dec", "rew", "con", "pol", "val", "total")


def rows():
    models = [("dreamerv1 (atari input)", model_config(generation="dreamerv1"), ATARI),
              ("dreamerv1 (dmc, 6 actions)", model_config(generation="dreamerv1"), DMC),
              ("dreamerv2 (atari)", model_config(generation="dreamerv2"), ATARI),
              ("dreamerv2_dmc (6 actions)", model_config(generation="dreamerv2_dmc"), DMC)]
    models += [(f"dreamerv3 {size}", model_config(size), ATARI) for size in SIZES if size != "debug"]
    for name, cfg, (obs, spec) in models:
        counts = make_dreamerv3(obs, spec, cfg).parameter_counts()
        yield name, cfg.deter + cfg.stoch * cfg.classes, counts


def main() -> None:
    header = f"{'model':28s} {'feat':>6s} " + " ".join(f"{p:>11s}" for p in PARTS)
    print(header)
    print("-" * len(header))
    for name, feat, counts in rows():
        print(f"{name:28s} {feat:6d} " + " ".join(f"{counts[p]:11,d}" for p in PARTS), flush=True)


if __name__ == "__main__":
    main()
