"""The authors' initial weights in our agent, on the authors' batch: losses and gradients, parameter by parameter.

``benchmarks/reference_probe.py`` saves the reference agent's initial parameters, the gradients of its first
train call (``init_s<seed>.npz``) and that call's batch (``batch.npz``). This script copies those parameters
into our agent of the same settings (names and layouts mapped below: kernels ``(in, out)`` transposed,
conv kernels ``HWIO`` to ``OIHW``, block-linear kernels kept), runs our update's forward and backward on the
same batch, and prints per parameter the two gradients' norms and cosine, and the losses side by side.
Both sides sample their own latents, so values agree to sampling noise, not bit for bit; a structural
difference (a missing term, a scale, a wrong input) shows as a norm ratio far from 1 or a low cosine.

    python benchmarks/same_weights.py --probe probe/ --seed 0 -- env=atari100k env.task=kung_fu_master \
        size=size1m batch_size=16 batch_length=32
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from init_internals import METRICS, build_learner, window_from_reference  # noqa: E402

# (our parameter name pattern, the reference's name template, how to convert the reference's array)
LINEAR, NORM, CONV, BLOCK = "linear", "norm", "conv", "block"
RULES = [
    (r"encoder\.module\.convs\.(\d+)\.weight", "enc/cnn{0}/kernel", CONV),
    (r"encoder\.module\.convs\.(\d+)\.bias", "enc/cnn{0}/bias", None),
    (r"encoder\.module\.norms\.(\d+)\.weight", "enc/cnn{0}norm/scale", None),
    (r"decoder\.module\.sp0\.weight", "dec/sp0/kernel", BLOCK),
    (r"decoder\.module\.sp0\.bias", "dec/sp0/bias", None),
    (r"decoder\.module\.sp(1|2)\.weight", "dec/sp{0}/kernel", LINEAR),
    (r"decoder\.module\.sp(1|2)\.bias", "dec/sp{0}/bias", None),
    (r"decoder\.module\.sp1_norm\.weight", "dec/sp1norm/scale", None),
    (r"decoder\.module\.sp_norm\.weight", "dec/spnorm/scale", None),
    # ours counts the up-sampling convs from the latent, the reference from the image
    (r"decoder\.module\.convs\.(\d+)\.weight", "dec/conv{rev}/kernel", CONV),
    (r"decoder\.module\.convs\.(\d+)\.bias", "dec/conv{rev}/bias", None),
    (r"decoder\.module\.norms\.(\d+)\.weight", "dec/conv{rev}norm/scale", None),
    (r"decoder\.module\.img_out\.weight", "dec/imgout/kernel", CONV),
    (r"decoder\.module\.img_out\.bias", "dec/imgout/bias", None),
    (r"rssm\.core\.(deter|stoch|action)_in\.0\.weight", "dyn/dynin{in}/kernel", LINEAR),
    (r"rssm\.core\.(deter|stoch|action)_in\.0\.bias", "dyn/dynin{in}/bias", None),
    (r"rssm\.core\.(deter|stoch|action)_in\.1\.weight", "dyn/dynin{in}norm/scale", None),
    (r"rssm\.core\.hidden_layers\.(\d+)\.weight", "dyn/dynhid{0}/kernel", BLOCK),
    (r"rssm\.core\.hidden_layers\.(\d+)\.bias", "dyn/dynhid{0}/bias", None),
    (r"rssm\.core\.hidden_norms\.(\d+)\.weight", "dyn/dynhid{0}norm/scale", None),
    (r"rssm\.core\.gates\.weight", "dyn/dyngru/kernel", BLOCK),
    (r"rssm\.core\.gates\.bias", "dyn/dyngru/bias", None),
    (r"rssm\.prior_net\.(\d+)\.weight", "dyn/prior{half}{kind}", None),
    (r"rssm\.prior_net\.(\d+)\.bias", "dyn/prior{half}/bias", None),
    (r"rssm\.prior_out\.weight", "dyn/priorlogit/kernel", LINEAR),
    (r"rssm\.prior_out\.bias", "dyn/priorlogit/bias", None),
    (r"rssm\.post_net\.(\d+)\.weight", "dyn/obs{half}{kind}", None),
    (r"rssm\.post_net\.(\d+)\.bias", "dyn/obs{half}/bias", None),
    (r"rssm\.post_out\.weight", "dyn/obslogit/kernel", LINEAR),
    (r"rssm\.post_out\.bias", "dyn/obslogit/bias", None),
    (r"(reward|cont|critic|slow)\.head\.mlp\.(\d+)\.weight", "{head}/mlp/{layer}", None),
    (r"(reward|cont|critic|slow)\.head\.mlp\.(\d+)\.bias", "{head}/mlp/linear{half}/bias", None),
    (r"(reward|cont|critic|slow)\.head\.out\.weight", "{head}/head/{logits}/kernel", LINEAR),
    (r"(reward|cont|critic|slow)\.head\.out\.bias", "{head}/head/{logits}/bias", None),
    (r"actor\.mlp\.(\d+)\.weight", "pol/mlp/{layer}", None),
    (r"actor\.mlp\.(\d+)\.bias", "pol/mlp/linear{half}/bias", None),
    (r"actor\.out\.weight", "pol/head/action/logits/kernel", LINEAR),
    (r"actor\.out\.bias", "pol/head/action/logits/bias", None),
]
HEADS = {"reward": "rew", "cont": "con", "critic": "val", "slow": "slowval"}


def _short(name: str) -> str:
    """Our parameter name without the wrappers: ``reward.module.head.mlp.0.weight`` -> ``reward.head.mlp.0.weight``."""
    name = name.replace("value_loss.target_critic_network_params.module.", "slow.")
    name = re.sub(r"^modules_\.", "", name)
    name = re.sub(r"^.*?\b(?=rssm\.)", "", name)  # the RSSM sits inside the observe/imagine modules
    name = name.replace("actor.module.0.module.", "actor.").replace(".module.head.", ".head.")
    return name


def reference_name(ours: str, decoder_convs: int) -> tuple[str, str | None] | None:
    short = _short(ours)
    for pattern, template, kind in RULES:
        match = re.fullmatch(pattern, short)
        if not match:
            continue
        groups = match.groups()
        fields = {}
        if template.startswith("{head}") or template.startswith("pol"):
            layer = int(groups[-1]) if groups and groups[-1].isdigit() else None
            if groups and groups[0] in HEADS:
                fields["head"] = HEADS[groups[0]]
                fields["logits"] = "logit" if groups[0] == "cont" else "logits"
            if layer is not None:
                fields["half"] = layer // 2
                fields["layer"] = f"linear{layer // 2}/kernel" if layer % 2 == 0 else f"norm{layer // 2}/scale"
                kind = LINEAR if layer % 2 == 0 and short.endswith("weight") else kind
        elif "{half}" in template:
            layer = int(groups[0])
            fields["half"] = layer // 2
            fields["kind"] = "/kernel" if layer % 2 == 0 else "norm/scale"
            kind = LINEAR if layer % 2 == 0 and short.endswith("weight") else None
        elif "{in}" in template:
            fields["in"] = {"deter": 0, "stoch": 1, "action": 2}[groups[0]]
        elif "{rev}" in template:
            fields["rev"] = decoder_convs - 1 - int(groups[0])
        return template.format(*groups, **fields), kind
    return None


def to_ours(array: np.ndarray, kind: str | None) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(array))
    if kind == LINEAR:
        return x.T.contiguous()
    if kind == CONV:
        return x.permute(3, 2, 0, 1).contiguous()
    return x


def load_reference_params(learner, params: dict[str, np.ndarray]) -> dict[str, tuple[str, str | None]]:
    """Copies the reference's parameters (``{reference name: array}``) into ``learner``; returns
    ``{our name: (reference name, conversion)}`` for every float tensor it set (aliases set once)."""
    decoder_convs = len(learner.modules_.decoder.module.convs)
    state, mapping, seen = learner.state_dict(), {}, {}
    for name, value in learner.state_dict(keep_vars=True).items():
        if not value.is_floating_point() or name.endswith("bins") or "normalizer" in name:
            continue
        if id(value) in seen:  # an alias of a tensor already mapped (losses and modules share them)
            state[name] = state[seen[id(value)]]
            continue
        seen[id(value)] = name
        found = reference_name(name, decoder_convs)
        if found is None or found[0] not in params:
            raise KeyError(f"no reference parameter for {name} (tried {found})")
        mapping[name] = found
        state[name] = to_ours(params[found[0]], found[1])
        if state[name].shape != value.shape:
            raise ValueError(f"{name}: ours {tuple(value.shape)}, reference {found[0]} {tuple(state[name].shape)}")
    learner.load_state_dict(state)
    return mapping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", type=Path, required=True, help="reference_probe.py's --out folder")
    parser.add_argument("--seed", type=int, default=0, help="the reference seed whose weights to load")
    parser.add_argument("--samples", type=int, default=4, help="our forward/backward passes (sampling seeds)")
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(1)
    saved = np.load(args.probe / f"init_s{args.seed}.npz")
    batch = dict(np.load(args.probe / "batch.npz"))
    learner = build_learner(batch, [o for o in overrides if o != "--"], seed=0)
    mapping = load_reference_params(learner, {k[len("param:"):]: saved[k] for k in saved.files if k.startswith("param:")})
    window = window_from_reference(batch, learner.modules_)
    params = dict(learner.named_parameters())
    grads, losses = {n: [] for n in params}, []
    for sample in range(args.samples):
        torch.manual_seed(sample)
        learner.zero_grad(set_to_none=True)
        metrics, _ = learner.losses(window)
        sum(v for k, v in metrics.items() if k.startswith("loss_")).backward()
        losses.append({k: float(v.detach()) for k, v in metrics.items() if v.numel() == 1})
        for n, p in params.items():
            grads[n].append(p.grad.clone() if p.grad is not None else torch.zeros_like(p))
    reference = next(r for r in json.loads((args.probe / "reference_metrics.json").read_text())
                     if r["seed"] == args.seed and r["call"] == 1)  # the lagged metrics of call 0
    print(f"losses, same weights and batch (ours: mean of {args.samples} sampling seeds)")
    for name, (ours_key, ref_key, scale) in METRICS.items():
        if ours_key in losses[0] and ref_key in reference:
            values = [l[ours_key] / scale for l in losses]
            print(f"  {name:12s} ours {np.mean(values):10.4f} (±{np.std(values):.3g})  reference {reference[ref_key]:10.4f}")
    print("gradients: norm ours (mean over samples), reference, cosine(ours mean, reference)")
    total_ours, total_ref = 0.0, 0.0
    for n, p in params.items():
        if n not in mapping:
            continue
        ref_name, kind = mapping[n]
        ref = to_ours(saved[f"grad:{ref_name}"], kind) if f"grad:{ref_name}" in saved.files else None
        mean = torch.stack(grads[n]).mean(0)
        norm = float(torch.stack([g.norm() for g in grads[n]]).mean())
        total_ours += norm ** 2
        if ref is None:
            continue
        total_ref += float(ref.norm()) ** 2
        cos = float(torch.nn.functional.cosine_similarity(mean.flatten(), ref.flatten(), 0)) if ref.norm() > 0 else float("nan")
        print(f"  {_short(n):45s} {norm:10.3f} {float(ref.norm()):10.3f}  ratio {float(ref.norm()) / max(norm, 1e-12):6.2f}  cos {cos:5.2f}")
    print(f"  total {total_ours ** 0.5:.1f} vs reference {total_ref ** 0.5:.1f}")


if __name__ == "__main__":
    main()
