#!/usr/bin/env bash
# Acceptance check of the GPU image on a new cluster node: the first thing to run (docs/cluster.md).
#
#   containers/acceptance.sh [--plan] [--gpus N] [--recipe NAME] LOG_DIR
#
# Run INSIDE the image (nemo-rence with Transformer Engine, TensorRT-LLM, Ray, megatron-core at
# the versions of containers/versions.env), on one node with N GPUs (default: all visible).
# Each step under its own time limit, its output in LOG_DIR/NN-<step>.log:
#
#   versions   the installed versions equal containers/versions.env (TensorRT-LLM, megatron-core,
#              transformers, Ray); CUDA, NCCL, Transformer Engine versions printed
#   te_logits  the Transformer Engine layer spec gives the local spec's logprobs on the same
#              weights (bf16 tolerance)
#   fp8_step   a train step with policy.fp8=hybrid (TE FP8 GEMMs, padded micro-batches): finite
#              loss and gradient norm, weights changed
#   trtllm     TensorRT-LLM generate + in-place refit + logprob gap against the new weights
#              (tests/gpu/test_trtllm_engine.py, T=0.7: checks the processed logprob mode)
#   smoke      the paper's recipe (--recipe, default rence-qwen3-4b-1n8g; its checkpoint under
#              $NEMO_RENCE_CKPT_ROOT, default /checkpoints) on N GPUs for 2 iterations with
#              torchrun, batch and lengths cut to a smoke test ($SMOKE_OVERRIDES)
#
# Prints a pass/fail table with timings last; exits 0 only when every step passed.
# The step_* functions run through `timeout ... bash -c step_<name>` (exported): indirect calls.
# shellcheck disable=SC2317
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PY=${PYTHON:-python}
RECIPE=rence-qwen3-4b-1n8g
GPUS=""
SMOKE_OVERRIDES=${SMOKE_OVERRIDES:-"filter.batch_size=16 optim.mini_batch_size=8 optim.n_update=2 rollout.max_new_tokens=512 run.eval_every=0 run.eval_size=16 run.time_budget_min=0"}

STEPS=(versions te_logits fp8_step trtllm smoke)
declare -A BUDGET=([versions]=60 [te_logits]=300 [fp8_step]=300 [trtllm]=600 [smoke]=3600)

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }
plan() {
  echo "acceptance plan (time budget per step, seconds):"
  for s in "${STEPS[@]}"; do printf '  %-10s %5s s\n' "$s" "${BUDGET[$s]}"; done
  sed -n '/^#   versions/,/^#              torchrun/p' "$0" | sed 's/^# \{0,1\}//'
}

LOG_DIR="" PLAN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --plan) PLAN=1; shift ;;
    --gpus) GPUS=$2; shift 2 ;;
    --recipe) RECIPE=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "acceptance: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) LOG_DIR=$1; shift ;;
  esac
done
if [ "$PLAN" = 1 ]; then plan; exit 0; fi
if [ -z "$LOG_DIR" ]; then echo "acceptance: give a LOG_DIR" >&2; usage >&2; exit 2; fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "acceptance: no CUDA device (torch.cuda.is_available() is False): run it on a GPU node" >&2
  exit 2
fi
GPUS=${GPUS:-$("$PY" -c 'import torch; print(torch.cuda.device_count())')}
mkdir -p "$LOG_DIR"
LOG_DIR=$(cd "$LOG_DIR" && pwd)
cd "$REPO" || exit 2
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
export PY REPO LOG_DIR GPUS RECIPE SMOKE_OVERRIDES

step_versions() {
  "$PY" - "$HERE/versions.env" <<'EOF'
import importlib.metadata as md, sys
import torch
pins = dict(line.strip().split("=", 1) for line in open(sys.argv[1])
            if "=" in line and not line.lstrip().startswith("#"))
want = {"tensorrt_llm": pins["TRTLLM_VERSION"], "megatron-core": pins["MEGATRON_CORE_VERSION"],
        "transformers": pins["TRANSFORMERS_VERSION"], "ray": pins["RAY_VERSION"]}
bad = {k: (md.version(k), v) for k, v in want.items() if md.version(k) != v}
import transformer_engine
print("torch", torch.__version__, "CUDA", torch.version.cuda, "NCCL", torch.cuda.nccl.version())
print("transformer_engine", transformer_engine.__version__, "GPUs", torch.cuda.device_count())
print({k: md.version(k) for k in want})
assert not bad, f"installed != containers/versions.env: {bad}"
EOF
}

step_te_logits() {
  "$PY" - <<'EOF'
import sys, torch
sys.path.insert(0, "tests/distributed/workers")
import policy_common as pc
from nemo_rence.policy.megatron.parallel import init_parallel, teardown
from nemo_rence.policy.megatron.policy import MegatronPolicy, MegatronPolicyConfig
init_parallel(1, 1, seed=0)
cfg = dict(micro_batch_size=3, temperature=0.8, params_dtype=torch.bfloat16)
local = MegatronPolicy(pc.ARCH, MegatronPolicyConfig(spec="local", **cfg))
weights = {k: v.float().cpu().clone() for k, v in local.export_weights()}
te = MegatronPolicy(pc.ARCH, MegatronPolicyConfig(spec="te", **cfg))
te.load_hf(weights)
batch = pc.make_batch()
gap = ((te.logprobs(batch) - local.logprobs(batch)).abs() * batch.response_mask).max().item()
print(f"TE vs local spec: max logprob gap {gap:.4f} nats")
assert gap < 5e-2, gap
teardown()
EOF
}

step_fp8_step() {
  "$PY" - <<'EOF'
import dataclasses, sys, torch
sys.path.insert(0, "tests/distributed/workers")
import policy_common as pc
from nemo_rence.policy.megatron.parallel import init_parallel, teardown
from nemo_rence.policy.megatron.policy import MegatronPolicy, MegatronPolicyConfig
init_parallel(1, 1, seed=0)
arch = dataclasses.replace(pc.ARCH, hidden_size=64, head_dim=16, ffn_hidden_size=128)
policy = MegatronPolicy(arch, MegatronPolicyConfig(
    micro_batch_size=3, temperature=0.8, params_dtype=torch.bfloat16, spec="te", fp8="hybrid"))
before = {k: v.float().cpu().clone() for k, v in policy.export_weights()}
batch = pc.with_old_logprobs(pc.make_batch(), policy.logprobs(pc.make_batch()))
m = policy.train_step(batch, pc.loss_fn)
after = {k: v.float().cpu() for k, v in policy.export_weights()}
assert torch.isfinite(torch.tensor([m["policy/loss"], m["policy/grad_norm"]])).all(), m
assert any(not torch.equal(before[k], after[k]) for k in before), "fp8 step changed nothing"
print("fp8 (hybrid) step:", {k: m[k] for k in ("policy/loss", "policy/grad_norm")})
teardown()
EOF
}

step_trtllm() {
  "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/gpu/test_trtllm_engine.py
}

step_smoke() {
  # shellcheck disable=SC2086  # SMOKE_OVERRIDES is a list of Hydra overrides
  torchrun --standalone --nproc_per_node "$GPUS" -m nemo_rence train "+recipes=$RECIPE" \
    run.iterations=2 "run.out_dir=$LOG_DIR/smoke-run" $SMOKE_OVERRIDES --no-progress \
  && "$PY" - "$LOG_DIR/smoke-run/metrics.jsonl" <<'EOF'
import json, sys
its = sorted({json.loads(l).get("iteration") for l in open(sys.argv[1])} - {None})
assert its and its[-1] == 2, f"iterations logged: {its}"
print("smoke: iterations", its)
EOF
}

declare -A RESULT SECONDS_OF
i=0
for s in "${STEPS[@]}"; do
  i=$((i + 1))
  log=$(printf '%s/%02d-%s.log' "$LOG_DIR" "$i" "$s")
  echo "acceptance: [$i/${#STEPS[@]}] $s (budget ${BUDGET[$s]} s) -> $log"
  start=$(date +%s)
  export -f "step_$s"
  export HERE
  if timeout --kill-after=30 "${BUDGET[$s]}" bash -c "step_$s" >"$log" 2>&1; then
    RESULT[$s]=pass
  else
    rc=$?
    RESULT[$s]=$([ "$rc" = 124 ] && echo timeout || echo "fail($rc)")
    tail -n 15 "$log" | sed 's/^/    /'
  fi
  SECONDS_OF[$s]=$(( $(date +%s) - start ))
done

echo
echo "acceptance results ($LOG_DIR, $GPUS GPUs, recipe $RECIPE):"
printf '  %-10s %-10s %8s %8s\n' step result seconds budget
failed=0 total=0
for s in "${STEPS[@]}"; do
  printf '  %-10s %-10s %8s %8s\n' "$s" "${RESULT[$s]}" "${SECONDS_OF[$s]}" "${BUDGET[$s]}"
  total=$((total + SECONDS_OF[$s]))
  [ "${RESULT[$s]}" = pass ] || failed=1
done
printf '  %-10s %-10s %8s\n' total "$([ $failed = 0 ] && echo pass || echo FAIL)" "$total"
exit $failed
