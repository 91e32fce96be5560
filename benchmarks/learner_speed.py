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
    python benchmarks/learner_speed.py --size size1m --obs image64 --profile              # op table

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


class OurLearner:
    """``DreamerV3Learner`` plus a fixed window, with the interface of ``TorchRLLearner``."""

    def __init__(self, args):
        shape = OBS[args.obs]
        self.obs_shapes = {OBS_KEY[args.obs]: (shape,) if isinstance(shape, int) else shape}
        n, discrete = ACTIONS[args.action]
        spec = OneHot(n) if discrete else Bounded(-1.0, 1.0, (n,))
        cfg = model_config(args.size, strided=args.strided)
        self.device = torch.device(args.device)
        self.agent = make_dreamerv3(self.obs_shapes, spec, cfg).to(self.device)
        self.learner = DreamerV3Learner(self.agent)
        self.num_params = self.agent.parameter_counts()["total"]
        self.window = make_window(self.agent, self.obs_shapes, args.batch_size, args.batch_length, self.device)
        self.description = (
            f"torchrl_dreamerv3 learner | {args.size}: deter {cfg.deter}, hidden {cfg.hidden}, units "
            f"{cfg.units}, stoch {cfg.stoch}x{cfg.classes}, depth {cfg.depth}, strided {cfg.strided} | "
            f"obs {args.obs}, action {args.action} | B{args.batch_size} T{args.batch_length} on {self.device}")
        self._update = self.learner.update
        if args.compile:
            self._update = compiled_update(self.learner, args)

    def update(self):
        return self._update(self.window)

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def compiled_update(learner: DreamerV3Learner, args):
    """Hook for the CUDA path (torch.compile of the update, CUDA graphs, bf16 autocast): not built yet."""
    raise NotImplementedError(
        f"--compile is not implemented yet (device {args.device}); the learner runs eager only. "
        "Drop --compile. On CPU the built-in TorchRL learner also runs eager.")


# ---------------------------------------------------------------- timing and peak memory
class PeakMemory:
    """Peak memory of one call above the level before it, in MiB (see the module docstring)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.resettable = self.cuda or self._reset_hwm()

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _status_kib(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    @contextlib.contextmanager
    def measure(self, out: list):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        elif self.resettable:
            self._reset_hwm()
            base = self._status_kib("VmRSS") * 1024
        else:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        yield
        if self.cuda:
            peak = torch.cuda.max_memory_allocated()
        elif self.resettable:
            peak = self._status_kib("VmHWM") * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out.append(max(peak - base, 0) / 2**20)


def time_interleaved(learners: dict, warmup: int, updates: int, memory: PeakMemory):
    """Median ms/update and max peak MiB per learner; the run order flips every iteration."""
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
    return {name: (statistics.median(times[name]), min(times[name]), max(peaks[name])) for name in names}


def profile(learner, updates: int, rows: int = 30) -> None:
    """torch.profiler op table (self CPU time) over ``updates`` updates after one warm-up."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    learner.update()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if learner.device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(updates):
            learner.update()
        learner.synchronize()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


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
    p.add_argument("--compile", action="store_true", help="compiled update (CUDA path; not implemented yet)")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler op table of our update instead")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


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
                                                    args.batch_length, args.device, args.compile)
    for name, learner in learners.items():
        print(f"{name:8s} {learner.description}")
    memory = PeakMemory(torch.device(args.device))
    results = time_interleaved(learners, args.warmup, args.updates, memory)
    with contextlib.suppress(OSError):
        print(f"threads {args.threads} | load average {Path('/proc/loadavg').read_text().split()[:3]} "
              f"| {args.updates} timed updates after {args.warmup} warm-up, interleaved")
    star = "" if memory.resettable else "*"
    print(f"{'learner':8s} {'median ms':>10s} {'min ms':>9s} {'transitions/s':>14s} {'params':>12s} "
          f"{'peak MiB':>9s}")
    transitions = args.batch_size * args.batch_length
    for name, (median, fastest, peak) in results.items():
        print(f"{name:8s} {median:10.1f} {fastest:9.1f} {transitions / median * 1000:14.1f} "
              f"{learners[name].num_params:12,d} {peak:8.1f}{star}")
    if args.compare_torchrl:
        print(f"speedup_vs_torchrl: {results['torchrl'][0] / results['ours'][0]:.2f}")


if __name__ == "__main__":
    main()
