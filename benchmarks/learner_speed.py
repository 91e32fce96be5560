"""Time one complete learner update of torchrl_dreamerv3, optionally against TorchRL's built-in.

One update = ``DreamerV3Learner.update(window)``: world model (encoder, RSSM observe loop,
decoder, heads, KL), 15-step imagination, actor loss, critic and replay-critic losses, one
backward pass, the LaProp step and the slow-critic EMA. The window is a synthetic random replay
batch ``(B, T + 1)`` built once (row 0 is the stored context), so replay sampling and collection
are excluded, as in TorchRL's own learner benchmark.

Commands (run from the repository root)::

    python benchmarks/learner_speed.py --size size1m --obs vector17 --action disc6 --compare-torchrl --updates 6
    python benchmarks/learner_speed.py --size size1m --obs image64 --action disc6 --compare-torchrl --updates 6
    python benchmarks/learner_speed.py --size size1m --obs image64 --strided --compare-torchrl --updates 6
    python benchmarks/learner_speed.py --size size1m --obs vector17 --action cont6 --compare-torchrl --updates 6
    python benchmarks/learner_speed.py --size size12m --obs image64 --updates 3          # ours only
    python benchmarks/learner_speed.py --size size1m --obs image64 --profile --updates 3  # phase shares, top ops
    python benchmarks/learner_speed.py --algo dreamerv2 --obs image64 --updates 3         # an earlier generation
    python benchmarks/learner_speed.py --compile --precision bf16 --compare-torchrl --device cuda  # compiled bf16

``--precision bf16`` runs our loss forward under bf16 autocast (float32 parameters, optimiser and
losses; ``training/compute/acceleration.py``) and TorchRL's with its ``mixed_precision`` (which it applies on
CUDA only). ``--compile`` compiles our per-step pieces (``--compile-mode``; ``reduce-overhead`` adds
CUDA graphs) and gives TorchRL's built-in its best compiled setting for the device
(``benchmarks/torchrl_builtin.py``; the description line says which ran). Compile and the first
updates are timed separately: the ``warm-up s`` column is the build/compile time plus the ``--warmup``
untimed updates, and the medians are over the timed updates only.

``--compile-norms`` compiles the channel norms of the conv stacks alone, as the main job does in bf16 on a CPU
(``compile.norms``; its few seconds of compiling fall in the warm-up).

``--host-memory system`` (the default) leaves glibc's allocator as a plain PyTorch process has it: most large
tensors of every update are written into freshly faulted pages. ``--host-memory keep`` is the main job's
setting (``training/compute/host_memory.py``): the host memory an update frees stays in the process for the
next one. It is process-wide, so TorchRL's learner in the same process runs with it too, on one heap shared
with ours (its time then depends a little on which blocks ours freed), and the peak-memory column is not
printed (one learner reuses the pages the other freed, so the resident set no longer tells their peaks apart).

``--algo dreamerv1|dreamerv2|dreamerv2_dmc`` times that generation's update (its model preset, losses,
three Adams, critic target; ``configs/algo``) instead of DreamerV3's; ``--size`` is then ignored.

With ``--compare-torchrl`` both learners are built in this process with the same preset, shapes
and batch, and are timed INTERLEAVED (ours and theirs alternate every iteration, the order flips
each time), so a busy shared machine slows both alike. The last line is
``speedup_vs_torchrl: X.XX`` = their median / our median. TorchRL's encoder is always stride-2, so
``--strided`` is the like-for-like image comparison; the default (reference) encoder is stride-1
5x5 convs + 2x2 max-pool, about 4x the conv FLOPs.

Peak memory. CUDA: ``torch.cuda.max_memory_allocated`` above the allocation before the update.
CPU: the growth of the process's resident-set high-water mark (``VmHWM``) above the resident set
before the update. The high-water mark is reset before every update by writing ``5`` to
``/proc/self/clear_refs`` (Linux), so each learner's peak is measured on its own even when the two
alternate. Where that reset is unavailable we fall back to ``resource.getrusage`` ``ru_maxrss``,
which never goes down: then only the first learner's first update is meaningful (marked ``*``).
tracemalloc does not see torch's allocations, so it is not used.
"""
from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torchrl.data import Bounded, OneHot

from torchrl_dreamerv3.modules import make_dreamerv3, model_config
from torchrl_dreamerv3.training import DreamerV3Learner
from torchrl_dreamerv3.training.compute.acceleration import Acceleration, accelerate
from torchrl_dreamerv3.training.setup import make_learner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torchrl_builtin import ACTIONS, OBS, build_torchrl_learner  # noqa: E402

OBS_KEY = {"image64": "pixels", "image96": "pixels", "vector17": "observation"}


# ---------------------------------------------------------------- our learner and its batch
def make_window(agent, obs_shapes: dict, batch_size: int, batch_length: int, device) -> TensorDict:
    """A random replay window ``(B, T + 1)`` in the collector's layout (see tests/test_objectives.py)."""
    B, L, c = batch_size, batch_length + 1, agent.cfg
    obs = {key: torch.randint(0, 256, (B, L, *shape), dtype=torch.uint8) if len(shape) == 3
           else torch.randn(B, L, *shape) for key, shape in obs_shapes.items()}
    if agent.discrete:
        action = F.one_hot(torch.randint(agent.action_dim, (B, L)), agent.action_dim).float()
    else:
        action = torch.rand(B, L, agent.action_dim) * 2 - 1
    is_last = torch.zeros(B, L, 1, dtype=torch.bool)
    is_first = is_last.clone()
    is_first[:, 0] = True
    stoch = F.one_hot(torch.randint(c.classes, (B, L, c.stoch)), c.classes).float()
    return TensorDict({
        **obs, "action": action, "is_first": is_first, "is_last": is_last, "is_terminal": is_last.clone(),
        "deter": torch.zeros(B, L, c.deter), "stoch": stoch, ("next", "reward"): torch.randn(B, L, 1),
    }, batch_size=[B, L]).to(device)


def algo_config(algo: str):
    """The Hydra config of ``configs/`` with ``algo=<algo>`` (losses, optimiser and critic target of a generation)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "torchrl_dreamerv3" / "configs"), version_base=None):
        return compose("config", overrides=[f"algo={algo}"])


class OurLearner:
    """``DreamerV3Learner`` plus a fixed window, with the interface of ``TorchRLLearner``."""

    def __init__(self, args):
        shape = OBS[args.obs]
        self.obs_shapes = {OBS_KEY[args.obs]: (shape,) if isinstance(shape, int) else shape}
        n, discrete = ACTIONS[args.action]
        spec = OneHot(n) if discrete else Bounded(-1.0, 1.0, (n,))
        self.device = torch.device(args.device)
        if args.algo == "dreamerv3":
            cfg = model_config(args.size, strided=args.strided)
            self.agent = make_dreamerv3(self.obs_shapes, spec, cfg).to(self.device)
            self.learner = DreamerV3Learner(self.agent)
        else:
            cfg = model_config(generation=args.algo)
            self.agent = make_dreamerv3(self.obs_shapes, spec, cfg).to(self.device)
            self.learner = make_learner(algo_config(args.algo), self.agent)
        self.num_params = self.agent.parameter_counts()["total"]
        self.window = make_window(self.agent, self.obs_shapes, args.batch_size, args.batch_length, self.device)
        self.description = (
            f"torchrl_dreamerv3 learner | {args.size if args.algo == 'dreamerv3' else args.algo}: deter {cfg.deter}, hidden {cfg.hidden}, units "
            f"{cfg.units}, stoch {cfg.stoch}x{cfg.classes}, depth {cfg.depth}, strided {cfg.strided} | "
            f"obs {args.obs}, action {args.action} | B{args.batch_size} T{args.batch_length} on {self.device}")
        self.acceleration = accelerate(self.learner, Acceleration(
            precision=args.precision, compile=args.compile, mode=args.compile_mode, device_type=self.device.type,
            host_memory=args.host_memory, compile_norms=args.compile_norms))
        self.description += f" | {self.acceleration.describe()}"
        self.warmup_s = 0.0

    def update(self):
        return self.learner.update(self.window)

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# ---------------------------------------------------------------- timing and peak memory
class PeakMemory:
    """Peak memory of one call above the level before it, in MiB (see the module docstring)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.resettable = self.cuda or self._reset_hwm()

    @staticmethod
    def _reset_hwm() -> bool:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
            return True
        return False

    def _level(self, peak: bool) -> int:
        """Bytes: CUDA allocated (peak) memory, else resident set (high-water mark), else ru_maxrss."""
        if self.cuda:
            return torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()
        if self.resettable:
            field = "VmHWM:" if peak else "VmRSS:"
            line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
            return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @contextlib.contextmanager
    def measure(self, out: list):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        elif self.resettable:
            self._reset_hwm()
        base = self._level(peak=False)
        yield
        out.append(max(self._level(peak=True) - base, 0) / 2**20)


def time_interleaved(learners: dict, warmup: int, updates: int, memory: PeakMemory):
    """Per learner: the timed ms/update list and the max peak MiB; the run order flips every iteration."""
    times = {name: [] for name in learners}
    peaks = {name: [] for name in learners}
    names = list(learners)
    for i in range(warmup + updates):
        for name in names if i % 2 == 0 else names[::-1]:
            learner = learners[name]
            with memory.measure(peaks[name]):
                start = time.perf_counter()
                learner.update()
                learner.synchronize()
                elapsed = (time.perf_counter() - start) * 1000
            if i >= warmup:
                times[name].append(elapsed)
            else:
                learner.warmup_s += elapsed / 1000
    return times, {name: max(peaks[name]) for name in names}


# ---------------------------------------------------------------- where the time goes (--profile)
PHASES = {  # agent module -> phase name; the losses and the optimiser are timed around them
    "encoder": "wm/encoder", "observe": "wm/rssm observe loop", "prior": "wm/prior", "decoder": "wm/decoder",
    "reward": "heads/reward", "cont": "heads/cont", "critic": "heads/critic", "actor": "policy (rollout)",
    "imagine_step": "imagination step (rssm)",
}


TOP_OPS = 20  # rows of the --profile op table


def profile(ours: OurLearner, updates: int) -> None:
    """Exclusive wall time per phase of our update (median over ``updates``, after one warm-up).

    Phases are nested wrappers around the agent's modules, the three losses, ``backward``, the
    optimiser and the slow-critic update; time is charged to the innermost phase, so a loss's
    "(other)" share is its own math, and ``heads/critic`` sums every critic pass (actor loss,
    value loss, slow critic). Then the top ops of one more update (:func:`top_ops`).
    """
    import collections

    totals, stack = collections.defaultdict(float), []

    def timed(name, fn):
        def run(*args, **kwargs):
            stack.append([name, 0.0])
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                _, children = stack.pop()
                totals[name] += elapsed - children
                if stack:
                    stack[-1][1] += elapsed
        return run

    agent, learner = ours.agent, ours.learner
    for attr, name in PHASES.items():
        module = getattr(agent, attr)
        module.forward = timed(name, module.forward)
    for attr in ("world_model_loss", "actor_loss", "value_loss"):
        loss = getattr(learner, attr)
        loss.forward = timed(f"{attr} (other)", loss.forward)
    learner.optimizer.step = timed("optimizer", learner.optimizer.step)
    learner.slow_critic.step = timed("slow critic", learner.slow_critic.step)
    backward = torch.Tensor.backward
    torch.Tensor.backward = timed("backward", backward)
    update = timed("update (other)", ours.update)
    try:
        update()  # warm-up
        runs = []
        for _ in range(updates):
            totals.clear()
            update()
            ours.synchronize()
            runs.append(dict(totals))
    finally:
        torch.Tensor.backward = backward
    total = statistics.median(sum(run.values()) for run in runs)
    print(f"phase shares of our update (median of {updates}, total {total * 1000:.0f} ms):")
    for name in sorted(runs[0], key=lambda k: -statistics.median(r.get(k, 0.0) for r in runs)):
        ms = statistics.median(r.get(name, 0.0) for r in runs) * 1000
        print(f"  {ms:8.1f} ms {100 * ms / total / 1000:5.1f} %  {name}")
    top_ops(ours)


def top_ops(ours: OurLearner, rows: int = TOP_OPS) -> None:
    """The ops of one more update by their own (exclusive) CPU time, from ``torch.profiler``.

    Profiled alone, so the phase wrappers above add nothing to it. A single op's time is only
    meaningful with the core to itself: a job beside it preempts ops at random, and the stall is charged
    to whichever op was running.
    """
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        ours.update()
        ours.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"top {rows} ops of one update by own CPU time (profiled, total {total / 1000:.0f} ms):")
    for event in events[:rows]:
        print(f"  {event.self_cpu_time_total / 1000:8.1f} ms {100 * event.self_cpu_time_total / total:5.1f} % "
              f"{event.count:6d} calls  {event.key}")


# ---------------------------------------------------------------- command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="size1m", help="size preset: debug, size1m, size12m, ...")
    p.add_argument("--obs", default="vector17", choices=sorted(OBS))
    p.add_argument("--action", default="disc6", choices=sorted(ACTIONS))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batch-length", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--strided", action="store_true", help="stride-2 encoder/decoder (model_config(strided=True))")
    p.add_argument("--updates", type=int, default=6, help="timed updates per learner")
    p.add_argument("--warmup", type=int, default=1, help="untimed updates per learner first")
    p.add_argument("--compare-torchrl", action="store_true", help="time TorchRL's built-in learner interleaved")
    p.add_argument("--compile", action="store_true", help="compile our per-step pieces; TorchRL's best compile")
    p.add_argument("--compile-norms", action="store_true",
                   help="compile only the conv stacks' channel norms (the main job's compile.norms, on in bf16 on CPU)")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (reduce-overhead: CUDA graphs)")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "f32", "bf16"])
    p.add_argument("--host-memory", default="system", choices=["keep", "system"],
                   help="system: the allocator's defaults; keep: freed host memory stays in the process, as in the "
                        "main job (process-wide: TorchRL's learner gets it too)")
    p.add_argument("--profile", action="store_true", help="print phase shares and top ops of our update instead")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--algo", default="dreamerv3", choices=["dreamerv3", "dreamerv1", "dreamerv2", "dreamerv2_dmc"],
                   help="the Dreamer generation whose update is timed (configs/algo)")
    args = p.parse_args(argv)
    if args.algo != "dreamerv3" and (args.strided or args.compare_torchrl or args.obs == "image96"):
        p.error("--algo dreamerv1/dreamerv2 times that generation alone: its k4s2 CNN takes 64x64 images "
                "(no --strided, no image96), and TorchRL's built-in is a DreamerV1-style learner compared with V3")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ours = OurLearner(args)
    if args.profile:
        return profile(ours, args.updates)
    learners = {"ours": ours}
    if args.compare_torchrl:
        learners["torchrl"] = build_torchrl_learner(args.size, args.obs, args.action, args.batch_size,
                                                    args.batch_length, args.device, args.compile,
                                                    args.precision in ("bf16", "bfloat16"))
    for name, learner in learners.items():
        print(f"{name:8s} {learner.description}")
    memory = PeakMemory(torch.device(args.device))
    times, peaks = time_interleaved(learners, args.warmup, args.updates, memory)
    with contextlib.suppress(OSError):
        print(f"threads {args.threads} | load average {Path('/proc/loadavg').read_text().split()[:3]} "
              f"| {args.updates} timed updates after {args.warmup} warm-up, interleaved")
    star = "" if memory.resettable else "*"
    # With freed host memory kept, one learner's update reuses the pages the other's freed, so the resident-set
    # peak no longer says what either holds; --host-memory system measures it.
    peaks_meaningful = memory.cuda or args.host_memory == "system"
    print(f"{'learner':8s} {'median ms':>10s} {'min ms':>9s} {'transitions/s':>14s} {'params':>12s} "
          f"{'peak MiB':>9s} {'warm-up s':>10s}")
    transitions, median = args.batch_size * args.batch_length, {k: statistics.median(v) for k, v in times.items()}
    for name in learners:
        peak = f"{peaks[name]:8.1f}{star}" if peaks_meaningful else f"{'-':>8s}{star}"
        print(f"{name:8s} {median[name]:10.1f} {min(times[name]):9.1f} {transitions / median[name] * 1000:14.1f} "
              f"{learners[name].num_params:12,d} {peak} {learners[name].warmup_s:10.1f}")
    if not peaks_meaningful:
        print("peak MiB: run with --host-memory system (kept host memory is shared between the learners' updates)")
    if args.compare_torchrl:
        # On a shared machine one slow stretch can hit a few iterations; the per-iteration ratios
        # (each pair ran back to back) and the ratio of the fastest runs show whether it did.
        paired = statistics.median(t / o for t, o in zip(times["torchrl"], times["ours"]))
        print(f"paired median ratio {paired:.2f} | ratio of minima {min(times['torchrl']) / min(times['ours']):.2f}")
        print(f"speedup_vs_torchrl: {median['torchrl'] / median['ours']:.2f}")

if __name__ == "__main__":
    main()
