#!/usr/bin/env bash
# The device check: learner speed ours vs TorchRL's built-in (eager f32 and compiled bf16, size1m and
# size12m), peak memory, a size200m update, and the main job on Atari100k Pong for 2 minutes.
# Results: $OUT/results.jsonl (one JSON line per result), $OUT/gpu_check.log, $OUT/main_job.log.
#
#   bash benchmarks/prepare_gpu_wheels.sh                  # here, once: the wheels into .whl/
#   bash benchmarks/gpu_check.sh                           # on the GPU machine (carry .whl), about 7.5 minutes
#   bash benchmarks/gpu_check.sh --device cpu              # the CPU rehearsal: same steps, tiny sizes, seconds
#
# Each step runs in its own process under its own time limit, so one slow compile cannot take the
# others down; a step that runs out of time leaves its "timeout" line in results.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
[ "${1:-}" = "--device" ] && DEVICE=${2:-cuda}
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
export PYTHONUNBUFFERED=1 RL_WARNINGS=0
PY=${PYTHON:-python3}
T0=$(date +%s)

if [ "$DEVICE" = cuda ]; then
  # The GPU image has torch 2.11 but none of torchrl, tensordict, hydra, gymnasium, ale-py: install
  # the carried wheels (no index, no deps) into a private site directory.
  [ -d .whl ] || { echo "no .whl/: run benchmarks/prepare_gpu_wheels.sh here and carry .whl" | tee -a "$LOG"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 || { echo "wheel install failed" | tee -a "$LOG"; exit 2; }
  export PYTHONPATH=$PWD:/tmp/site
  SIZES=size1m,size12m; BIG=size200m; SECONDS_MAIN=115; MAIN=(); UPDATES=5
  # env, eager, compiled (both sizes, each recorded when done), fit, main: 470 s at most, the install included
  # under 8 minutes
  LIMITS=(25 60 190 55 140)
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  SIZES=debug; BIG=debug; SECONDS_MAIN=100; UPDATES=1  # the job ends by itself after run.steps
  MAIN=(env=cartpole size=debug batch_size=2 batch_length=8 run.train_ratio=64 run.steps=48)
  LIMITS=(60 90 150 90 150)  # safety nets for a busy machine; the steps take seconds each
  EXTRA=(--batch-size 2 --batch-length 8 --warmup 1 --obs vector17)
fi
EXTRA=(${EXTRA[@]+"${EXTRA[@]}"} --device "$DEVICE" --out "$OUT")

step() {  # step <seconds> <name> <args...>
  local limit=$1 name=$2; shift 2
  echo "=== $name (limit ${limit}s, at $(( $(date +%s) - T0 ))s)" | tee -a "$LOG"
  timeout -s INT -k 15 "$limit" $PY benchmarks/gpu_check.py "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "{\"step\": \"$name\", \"returncode\": $rc, \"timeout\": $([ "$rc" -ge 124 ] && echo true || echo false)}" \
      | tee -a "$OUT/results.jsonl" "$LOG"
  fi
}

[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG" 2>&1
step "${LIMITS[0]}" env env "${EXTRA[@]}"
step "${LIMITS[1]}" eager-f32 learners --sizes "$SIZES" --setting eager-f32 --updates "$UPDATES" "${EXTRA[@]}"
step "${LIMITS[2]}" compiled-bf16 learners --sizes "$SIZES" --setting compiled-bf16 --updates "$UPDATES" "${EXTRA[@]}"
step "${LIMITS[3]}" "fit $BIG" fit --size "$BIG" --updates 2 "${EXTRA[@]}"
step "${LIMITS[4]}" main main --seconds "$SECONDS_MAIN" "${EXTRA[@]}" --overrides precision=bfloat16 ${MAIN[@]+"${MAIN[@]}"}
echo "=== done in $(( $(date +%s) - T0 ))s; results in $OUT/results.jsonl" | tee -a "$LOG"
