"""LaProp with adaptive gradient clipping and lr warm-up: the DreamerV3 optimizer (SPEC §7).

The reference builds it as an optax chain (`embodied/jax/opt.py`, `dreamerv3/agent.py:342-379`):
``clip_by_agc(0.3) -> scale_by_rms(0.999, 1e-20) -> scale_by_momentum(0.9) -> lr schedule``.
Here the four stages are one ``torch.optim.Optimizer`` that runs each stage as a single
``torch._foreach_*`` pass over a parameter group, without host syncs.
"""
from __future__ import annotations

import math

import torch

__all__ = ["LaProp", "GroupAdam", "warmup_lr"]


def warmup_lr(lr: float, warmup: int, count: int) -> float:
    """``lr * min(count, warmup) / warmup`` (constant ``lr`` when ``warmup == 0``); ``count`` starts at 0."""
    return lr * min(count, warmup) / warmup if warmup else lr


class LaProp(torch.optim.Optimizer):
    """DreamerV3's optimizer (SPEC §7): AGC, then RMS scaling, then momentum, then warm-up lr.

    Per parameter tensor ``θ`` with gradient ``g``:

    1. AGC: ``g <- g / max(1, ||g|| / (agc * max(pmin, ||θ||)))``, whole-tensor norms (``agc=0``: off).
    2. RMS: ``ν <- β2 ν + (1-β2) g²``; ``u = g / (sqrt(ν / (1-β2^t)) + eps)``.
    3. Momentum on the normalized update (LaProp order): ``μ <- β1 μ + (1-β1) u``;
       ``μ̂ = μ / (1-β1^t)`` (``momentum=False``: ``μ̂ = u``).
    4. ``θ <- θ - warmup_lr(lr, warmup, c) · μ̂`` with ``c = step - 1``, so the first update is zero.

    Counting. ``group["step"]`` is the optax count of the lr schedule: it advances once per
    ``step()`` for every group that has at least one gradient. ``state[p]["step"]`` counts the
    updates ``p``'s moments received and drives the bias corrections ``1-β^t``. Parameters whose
    ``.grad`` is ``None`` are skipped (state and value untouched), as in torch's Adam. In the
    reference every parameter gets a gradient each step (zeros where unused), so both counts
    are equal there; use ``zero_grad(set_to_none=False)`` to reproduce that exactly.

    ``last_grad_norm`` holds the global L2 norm of all gradients *before* AGC (the reference's
    ``opt/grad_norm`` metric) as a 0-d tensor; reading it with ``.item()`` is the caller's sync.

    Examples:
        >>> import torch
        >>> from torchrl_dreamerv3.optim import LaProp
        >>> net = torch.nn.Linear(3, 2)
        >>> opt = LaProp(net.parameters(), lr=4e-5, warmup=1000)
        >>> before = net.weight.detach().clone()
        >>> net(torch.ones(4, 3)).square().mean().backward()
        >>> opt.step()  # count 0: lr is 0, so the first update is exactly zero
        >>> torch.equal(net.weight, before), opt.current_lr(), opt.last_grad_norm.shape
        (True, 0.0, torch.Size([]))
        >>> opt.step()
        >>> opt.current_lr()  # the lr the last step used: 4e-5 * 1 / 1000
        4e-08
        >>> opt2 = LaProp(net.parameters())
        >>> opt2.load_state_dict(opt.state_dict())
        >>> opt2.param_groups[0]["step"]
        2
    """

    def __init__(self, params, lr: float = 4e-5, agc: float = 0.3, pmin: float = 1e-3,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-20,
                 warmup: int = 1000, momentum: bool = True):
        defaults = dict(lr=lr, agc=agc, pmin=pmin, beta1=beta1, beta2=beta2, eps=eps,
                        warmup=warmup, momentum=momentum, step=0)
        super().__init__(params, defaults)
        self.last_grad_norm = torch.zeros(())

    def current_lr(self, group: int | dict = 0) -> float:
        """The lr the latest ``step()`` applied to ``group`` (index or dict); 0 before any step."""
        group = self.param_groups[group] if isinstance(group, int) else group
        return warmup_lr(group["lr"], group["warmup"], max(group["step"] - 1, 0))

    def _tick(self, p: torch.Tensor) -> dict:
        """Create ``p``'s state on first use and advance its moment count."""
        state = self.state[p]
        if not state:  # float32 moments, like the reference's `jnp.zeros_like(t, f32)`
            state["step"] = 0
            state["nu"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
            state["mu"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
        state["step"] += 1
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        norms = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            group["step"] += 1
            buckets = {}  # by moment count t: a single bucket unless some parameter skipped steps
            for p in params:
                buckets.setdefault(self._tick(p)["step"], []).append(p)
            for t, ps in buckets.items():
                norms += self._update(group, ps, t)
        if norms:
            self.last_grad_norm = torch.linalg.vector_norm(torch.stack(norms))
        return loss

    def _update(self, group: dict, params: list, t: int) -> list:
        """The four stages for ``params`` sharing the moment count ``t``; returns the pre-AGC grad norms."""
        b1, b2, lr = group["beta1"], group["beta2"], self.current_lr(group)
        grads = [p.grad.float() for p in params]
        gnorms = torch._foreach_norm(grads)

        # 1. AGC: g * min(1, upper / ||g||) with upper = agc * max(pmin, ||θ||).
        if group["agc"]:
            upper = torch._foreach_norm(params)
            torch._foreach_clamp_min_(upper, group["pmin"])
            torch._foreach_mul_(upper, group["agc"])
            scale = torch._foreach_div(upper, torch._foreach_maximum(gnorms, upper))
            grads = torch._foreach_mul(grads, scale)

        # 2. RMS: ν <- β2 ν + (1-β2) g²; u = g / (sqrt(ν)/s + eps) = s g / (sqrt(ν) + s eps),
        #    s = sqrt(1-β2^t); the factor s is folded into the scalar of stage 3 or 4.
        nu = [self.state[p]["nu"] for p in params]
        torch._foreach_mul_(nu, b2)
        torch._foreach_addcmul_(nu, grads, grads, value=1 - b2)
        s = math.sqrt(1 - b2**t)
        denom = torch._foreach_sqrt(nu)
        torch._foreach_add_(denom, s * group["eps"])

        # 3. Momentum on the normalized update: μ <- β1 μ + (1-β1) u; μ̂ = μ / (1-β1^t).
        # 4. θ <- θ - lr(c) μ̂, with lr(c) = 0 at c = 0 (skipped: the first update is exactly zero).
        if group["momentum"]:
            mu = [self.state[p]["mu"] for p in params]
            torch._foreach_mul_(mu, b1)
            torch._foreach_addcdiv_(mu, grads, denom, value=(1 - b1) * s)
            if lr:
                torch._foreach_add_(params, mu, alpha=-lr / (1 - b1**t))
        elif lr:
            torch._foreach_addcdiv_(params, grads, denom, value=-lr * s)
        return gnorms


class GroupAdam:
    """DreamerV1/V2's optimisers: one ``torch.optim.Adam`` per parameter group (SPEC_V1_V2 §1.5, §2.5).

    Each group (world model, actor, critic) has its own learning rate and is clipped to a global
    gradient norm of ``clip`` on its own. ``weight_decay`` is V2's decoupled decay
    ``p <- (1 - weight_decay) p`` applied before the Adam step, *not* scaled by the learning rate
    (unlike ``AdamW``); V1 has none. Gradients are expected in ``.grad``, each group's only from its
    own loss (the learner backpropagates each loss into its group only).

    Args:
        groups: name -> parameters, e.g. ``{"model": ..., "actor": ..., "critic": ...}``.
        lr: name -> learning rate (every group needs one).
        eps: Adam epsilon (V1: 1e-7, Keras' default; V2: 1e-5). clip: global-norm clip per group (100).
        weight_decay: decoupled decay per step (V2: 1e-6; 0 disables it).

    Examples:
        >>> import torch
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
        >>> opt = GroupAdam({"model": a.parameters(), "actor": b.parameters()}, {"model": 1e-3, "actor": 1e-4})
        >>> b(a(torch.ones(1, 2))).sum().backward()
        >>> opt.step()
        >>> sorted(opt.last_grad_norm)
        ['actor', 'model']
    """

    def __init__(self, groups: dict, lr: dict, *, eps: float = 1e-5, clip: float = 100.0,
                 weight_decay: float = 0.0):
        groups = {name: [p for p in params if p.requires_grad] for name, params in groups.items()}
        missing = set(groups) - set(lr)
        if missing:
            raise ValueError(f"GroupAdam: no learning rate for groups {sorted(missing)}; got lr for {sorted(lr)}")
        seen: set[int] = set()
        for name, params in groups.items():
            shared = seen & {id(p) for p in params}
            if shared:
                raise ValueError(f"GroupAdam: group {name!r} shares {len(shared)} parameters with another group")
            seen |= {id(p) for p in params}
        self.groups, self.clip, self.weight_decay = groups, clip, weight_decay
        self.optimizers = {name: torch.optim.Adam(params, lr=lr[name], eps=eps) for name, params in groups.items()}
        self.last_grad_norm: dict[str, torch.Tensor] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self, names=None) -> None:
        """Clips, decays and steps the groups ``names`` (all by default)."""
        for name in (self.optimizers if names is None else names):
            params = self.groups[name]
            self.last_grad_norm[name] = torch.nn.utils.clip_grad_norm_(params, self.clip)
            if self.weight_decay:
                with torch.no_grad():
                    torch._foreach_mul_(params, 1.0 - self.weight_decay)
            self.optimizers[name].step()

    def current_lr(self, name: str = "model") -> float:
        return self.optimizers[name].param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.optimizers):
            raise ValueError(f"GroupAdam state has groups {sorted(state)}, expected {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
