"""The device check's steps (run by benchmarks/gpu_check.sh, one process per step, each under a time limit).

Every step appends one JSON line per result to ``<out>/results.jsonl`` and prints it::

    python benchmarks/gpu_check.py env      --out $OUT                     # versions, extensions, device
    python benchmarks/gpu_check.py learners --out $OUT --sizes size1m,size12m --setting eager-f32
    python benchmarks/gpu_check.py learners --out $OUT --sizes size1m --setting compiled-bf16
    python benchmarks/gpu_check.py fit      --out $OUT --size size200m     # one update fits; its time
    python benchmarks/gpu_check.py main     --out $OUT --seconds 120       # the main job on Atari100k Pong

``learners`` times our learner against TorchRL's built-in in one process, interleaved (as
benchmarks/learner_speed.py does), B16 x T64, 64x64 RGB images (``--obs``), 6 discrete actions, and records
ms/update (median), warm-up seconds and peak memory. ``eager-f32``: both eager float32 (TF32 on);
``compiled-bf16``: ours with compiled pieces under bf16 autocast, TorchRL's with its best compiled
setting and its BF16 autocast. ``--device cpu`` is the rehearsal: the same steps with tiny sizes and
vector observations, compiled pieces traced with ``aot_eager`` instead of Inductor, TorchRL's learner
eager, so that it takes seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


def record(out: Path, **result) -> None:
    line = json.dumps(result, default=str)
    print(line, flush=True)
    with open(out / "results.jsonl", "a") as f:
        f.write(line + "\n")


def step_env(args) -> None:
    """Versions, the compiled extensions against this torch, and the device."""
    import torch

    extensions = {}
    for name in ("tensordict._C", "torchrl._torchrl"):
        try:
            __import__(name)
            extensions[name] = "loaded"
        except Exception as error:  # an extension built against another torch
            extensions[name] = f"{type(error).__name__}: {error}"[:300]
    import tensordict
    import torchrl

    info = dict(torch=torch.__version__, torchrl=torchrl.__version__, tensordict=tensordict.__version__,
                python=sys.version.split()[0], cuda=torch.cuda.is_available(), extensions=extensions)
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(), memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
    record(args.out, step="env", **info)


def _learner_args(args, size: str, compiled: bool):
    from learner_speed import parse_args

    argv = ["--size", size, "--obs", args.obs, "--action", "disc6", "--device", args.device,
            "--batch-size", str(args.batch_size), "--batch-length", str(args.batch_length),
            "--precision", "bf16" if compiled else "float32"]
    return parse_args(argv + (["--compile", "--compile-mode", args.compile_mode] if compiled else []))


def step_learners(args) -> None:
    import torch
    from learner_speed import OurLearner, PeakMemory, time_interleaved
    from torchrl_builtin import build_torchrl_learner
    from torchrl_dreamerv3.training.compute.acceleration import (Acceleration, accelerate, compiled_graphs, enable_tf32,
                                                         graph_breaks)

    if args.device == "cuda":
        enable_tf32()
    compiled = args.setting == "compiled-bf16"
    for size in args.sizes.split(","):
        torch.manual_seed(0)
        la = _learner_args(args, size, compiled)
        start = time.perf_counter()
        if args.device == "cpu" and compiled:  # rehearsal: trace the same graphs without Inductor's codegen
            la.compile = False
            ours = OurLearner(la)
            ours.acceleration = accelerate(ours.learner, Acceleration(precision="bf16", compile=True, backend="aot_eager"))
        else:
            ours = OurLearner(la)
        learners = {"ours": ours}
        ours.warmup_s = time.perf_counter() - start  # build; time_interleaved adds the warm-up updates
        # Ours alone first (recorded), so that a TorchRL compile running out of the step's time loses nothing.
        alone, _ = time_interleaved(learners, args.warmup, args.updates, PeakMemory(torch.device(args.device)))
        record(args.out, step="learners", size=size, setting=args.setting, learner="ours (alone, first)",
               ms_median=statistics.median(alone["ours"]), warmup_s=ours.warmup_s)
        try:
            start = time.perf_counter()
            theirs = build_torchrl_learner(size, args.obs, "disc6", args.batch_size, args.batch_length, args.device,
                                           compile=compiled and args.device == "cuda", mixed_precision=compiled)
            theirs.warmup_s = time.perf_counter() - start
            learners["torchrl"] = theirs
        except Exception as error:
            record(args.out, step="learners", size=size, setting=args.setting, learner="torchrl",
                   error=f"{type(error).__name__}: {error}"[:500])
        first_warmup, ours.warmup_s = ours.warmup_s, 0.0
        times, peaks = time_interleaved(learners, args.warmup, args.updates, PeakMemory(torch.device(args.device)))
        ours.warmup_s = first_warmup  # build, compile and the first warm-up updates
        graphs_after_warmup = compiled_graphs()
        for name, learner in learners.items():
            record(args.out, step="learners", size=size, setting=args.setting, learner=name,
                   ms_median=statistics.median(times[name]), ms_min=min(times[name]), n=len(times[name]),
                   warmup_s=learner.warmup_s, peak_mib=peaks[name], params=learner.num_params,
                   description=learner.description)
        if compiled:  # one more update must not compile anything new
            ours.update()
            record(args.out, step="learners", size=size, check="no recompiles after warm-up",
                   graphs=graphs_after_warmup, new_graphs=compiled_graphs() - graphs_after_warmup,
                   graph_breaks=graph_breaks())
        del learners, ours
        if args.device == "cuda":
            torch.cuda.empty_cache()


def step_fit(args) -> None:
    """One update of ``--size`` (bf16 autocast, eager) fits in memory; its time and peak memory."""
    import torch
    from learner_speed import OurLearner, PeakMemory, time_interleaved

    la = _learner_args(args, args.size, compiled=False)
    la.precision = "bf16"
    start = time.perf_counter()
    try:
        ours = OurLearner(la)
        build_s = time.perf_counter() - start
        times, peaks = time_interleaved({"ours": ours}, 1, args.updates, PeakMemory(torch.device(args.device)))
    except torch.OutOfMemoryError as error:
        record(args.out, step="fit", size=args.size, fits=False, error=str(error)[:300])
        return
    record(args.out, step="fit", size=args.size, fits=True, params=ours.num_params, build_s=build_s,
           ms_median=statistics.median(times["ours"]), peak_mib=peaks["ours"], description=ours.description)


def step_main(args) -> None:
    """The main job (examples/dreamerv3_atari.py) for ``--seconds``, then SIGINT (it saves and exits)."""
    logdir = Path(args.logdir or tempfile.mkdtemp(prefix="gpu_check_run_"))  # fresh: its counters are read back
    cmd = [sys.executable, str(ROOT / "examples" / "dreamerv3_atari.py"), f"device={args.device}",
           f"logdir={logdir}", "logger.backend=csv", "run.log_every=15", "run.eval_every=0",
           "run.report_every=100000", *args.overrides]
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        proc.wait(timeout=args.seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    output = proc.stdout.read()
    (args.out / "main_job.log").write_text(output[-200_000:])
    elapsed = time.time() - start
    from torchrl_dreamerv3.training.persistence.checkpoint import read_counters

    try:
        counters = read_counters(logdir)
    except FileNotFoundError:  # killed before its first save
        counters = {}
    progress = [line for line in output.replace("\r", "\n").splitlines() if "ups=" in line]
    record(args.out, step="main", returncode=proc.returncode, seconds=elapsed, overrides=args.overrides,
           env_steps=counters.get("env_steps"), updates=counters.get("updates"),
           env_steps_per_s=(counters.get("env_steps") or 0) / elapsed, updates_per_s=(counters.get("updates") or 0) / elapsed,
           last_progress=progress[-1].strip()[-200:] if progress else None,
           header=[line for line in output.splitlines() if line.startswith("torchrl_dreamerv3:")][:1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["env", "learners", "fit", "main"])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    p.add_argument("--device", default="cuda")
    p.add_argument("--sizes", default="size1m,size12m")
    p.add_argument("--size", default="size200m")
    p.add_argument("--setting", default="eager-f32", choices=["eager-f32", "compiled-bf16"])
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batch-length", type=int, default=64)
    p.add_argument("--updates", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--logdir", default=None, help="main: the run directory (default: a new temporary one)")
    p.add_argument("--overrides", nargs="*", default=[], help="main: Hydra overrides for the main job")
    p.add_argument("--obs", default="image64", help="learners/fit: observation (the rehearsal takes vector17)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(min(8, os.cpu_count() or 1))
    {"env": step_env, "learners": step_learners, "fit": step_fit, "main": step_main}[args.step](args)


if __name__ == "__main__":
    main()
