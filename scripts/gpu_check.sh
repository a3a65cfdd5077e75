#!/usr/bin/env bash
# One-shot check of nemo-rence on a bare single-GPU machine without network (<= 8 minutes).
#
#   scripts/gpu_check.sh [--plan] [--wheels DIR] [--target DIR] LOG_DIR
#
# The machine: CUDA, Python 3.12, PyTorch 2.11, transformers; no Transformer Engine, TensorRT-LLM
# or vLLM. Packages arrive only as wheels: scripts/gpu_wheels.sh DIR downloads them (default
# .whl/); they are installed with --no-deps --no-index into --target (default LOG_DIR/site) and
# put on PYTHONPATH with this checkout. Then, each step under its own time limit (budget in
# seconds, 480 in all), its output in LOG_DIR/NN-<step>.log:
#
#   install     pip install the wheels into the target dir; import torch, megatron.core, nemo_rence
#   gpu_tests   pytest -m gpu: the gpu-marked tests that need no TE / TensorRT-LLM (the others
#               skip themselves with a reason), incl. tests/gpu/test_local_spec_policy.py: a
#               local-spec bf16 Megatron policy on CUDA (logprobs vs HF logits, a train step
#               through Megatron's distributed optimizer, save/load, NCCL with one rank)
#   loop        3 iterations of the real loop (nemo-rence train, tiny model, hf engine) on CUDA
#   train_step  bench/train_step.py on cuda / bf16: tokens/s, MFU, peak memory
#   logprobs    bench/logprobs_memory.py on cuda / bf16: peak memory of the logprob kernels
#
# Prints a pass/fail table with timings last; exits 0 only when every step passed. Without a CUDA
# device it says so and exits 2 before installing anything.
# The step_* functions run through `timeout ... bash -c step_<name>` (exported): indirect calls.
# shellcheck disable=SC2317
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
PY=${PYTHON:-python3}

STEPS=(install gpu_tests loop train_step logprobs)
declare -A BUDGET=([install]=45 [gpu_tests]=150 [loop]=150 [train_step]=75 [logprobs]=60)

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }

plan() {
  local total=0
  echo "gpu_check plan (time budget per step, seconds):"
  for s in "${STEPS[@]}"; do
    printf '  %-11s %4s s\n' "$s" "${BUDGET[$s]}"
    total=$((total + BUDGET[$s]))
  done
  printf '  %-11s %4s s (limit 480)\n' total "$total"
  sed -n '/^#   install/,/^#   logprobs/p' "$0" | sed 's/^# \{0,1\}//'
}

WHEELS=.whl TARGET="" LOG_DIR="" PLAN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --plan) PLAN=1; shift ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) LOG_DIR=$1; shift ;;
  esac
done
if [ "$PLAN" = 1 ]; then plan; exit 0; fi
if [ -z "$LOG_DIR" ]; then echo "gpu_check: give a LOG_DIR" >&2; usage >&2; exit 2; fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False on this machine):" \
       "nothing to check here; run it on a GPU machine" >&2
  exit 2
fi

mkdir -p "$LOG_DIR"
LOG_DIR=$(cd "$LOG_DIR" && pwd)
TARGET=${TARGET:-$LOG_DIR/site}
export PYTHONPATH="$REPO:$TARGET${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} OMP_WAIT_POLICY=PASSIVE
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 NEMO_RENCE_CACHE="$LOG_DIR/cache"

step_install() {
  shopt -s nullglob
  local wheels=("$WHEELS"/*.whl)
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "no wheels in $WHEELS: run scripts/gpu_wheels.sh $WHEELS on a machine with network"
    return 1
  fi
  "$PY" -m pip install --no-deps --no-index --disable-pip-version-check --quiet \
    --target "$TARGET" "${wheels[@]}" || return 1
  "$PY" - <<'EOF'
import megatron.core, torch, transformers
import nemo_rence
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
print("transformers", transformers.__version__, "megatron-core", megatron.core.__version__)
print("nemo-rence", nemo_rence.__version__, "from", nemo_rence.__file__)
EOF
}

step_gpu_tests() {
  "$PY" -m pytest -q -m gpu -p no:cacheprovider -o addopts="-ra --import-mode=importlib" \
    tests/gpu tests/distributed/test_policy_gpu.py tests/unit/algorithm/test_losses_on_cuda.py
}

step_loop() {
  "$PY" -m nemo_rence train model=tiny rollout.engine=hf filter.enabled=false \
    filter.batch_size=2 optim.mini_batch_size=1 optim.n_update=2 rollout.group_size=4 \
    rollout.max_new_tokens=16 data.max_prompt_tokens=512 run.eval_size=4 run.eval_every=0 \
    run.time_budget_min=0 run.iterations=3 "run.out_dir=$LOG_DIR/loop-run" --no-progress \
  && "$PY" - "$LOG_DIR/loop-run/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
its = sorted({r["iteration"] for r in rows if "iteration" in r})
assert its[-1] == 3, f"iterations logged: {its}"
print("loop: iterations", its)
EOF
}

step_train_step() {
  "$PY" bench/train_step.py --dtype bf16 --groups 4 --k 8 --prompt 128 --response 384 \
    --reps 3 --no-peer --layouts rollout,shared_prefix
}

step_logprobs() {
  "$PY" bench/logprobs_memory.py --device cuda --dtype bf16 --seq 8192 --hidden 2048
}

declare -A RESULT SECONDS_OF
i=0
for s in "${STEPS[@]}"; do
  i=$((i + 1))
  log=$(printf '%s/%02d-%s.log' "$LOG_DIR" "$i" "$s")
  echo "gpu_check: [$i/${#STEPS[@]}] $s (budget ${BUDGET[$s]} s) -> $log"
  start=$(date +%s)
  if [ "$s" != install ] && [ "${RESULT[install]}" != pass ]; then
    RESULT[$s]=skipped
  else
    export -f "step_$s"
    export PY REPO LOG_DIR TARGET WHEELS
    if timeout --kill-after=10 "${BUDGET[$s]}" bash -c "step_$s" >"$log" 2>&1; then
      RESULT[$s]=pass
    else
      rc=$?
      RESULT[$s]=$([ "$rc" = 124 ] && echo timeout || echo "fail($rc)")
      tail -n 15 "$log" | sed 's/^/    /'
    fi
  fi
  SECONDS_OF[$s]=$(( $(date +%s) - start ))
done

echo
echo "gpu_check results ($LOG_DIR):"
printf '  %-11s %-10s %8s %8s\n' step result seconds budget
failed=0 total=0
for s in "${STEPS[@]}"; do
  printf '  %-11s %-10s %8s %8s\n' "$s" "${RESULT[$s]}" "${SECONDS_OF[$s]}" "${BUDGET[$s]}"
  total=$((total + SECONDS_OF[$s]))
  [ "${RESULT[$s]}" = pass ] || failed=1
done
printf '  %-11s %-10s %8s %8s\n' total "$([ $failed = 0 ] && echo pass || echo FAIL)" "$total" 480
exit $failed
