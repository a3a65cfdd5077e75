#!/usr/bin/env bash
# Submit slurm/train.sbatch with the resources of a layout, one run directory per run.
#
#   slurm/submit.sh [options] -- [arguments of the entry, e.g. Hydra overrides]
#     --run-dir DIR          run directory (required); logs/, checkpoints/, metrics.jsonl, job.env
#     --nodes N              nodes (default 1)
#     --gpus-per-node G      GPUs and tasks per node (default 8); 0: CPU job
#     --ntasks-per-node T    tasks per node (default: G, or 2 for a CPU job)
#     --cpus-per-task C      CPU cores per task (default: 8 with GPUs: each rank's rollout
#                            engine workers and reward-grader pool need cores of their own;
#                            1 for a CPU job)
#     --time HH:MM:SS        time limit (default 04:00:00); the trainer gets SIGUSR1 120 s before
#     --container IMAGE      pyxis image (.sqsh or registry image); bare metal when omitted
#     --mounts A:B[,C:D]     extra container mounts
#     --entry "CMD"          what each task runs (default "nemo-rence train")
#     --partition P, --account A, --job-name NAME, --sbatch-arg ARG (repeatable)
#     --dry-run              print the sbatch command instead of running it
# Prints the job id.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

RUN_DIR="" NODES=1 GPUS=8 TASKS="" CPUS_PER_TASK="" TIME=04:00:00 IMAGE="" MOUNTS="" ENTRY="nemo-rence train"
NAME=nemo-rence DRY=0
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --run-dir) RUN_DIR=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --gpus-per-node) GPUS=$2; shift 2 ;;
    --ntasks-per-node) TASKS=$2; shift 2 ;;
    --cpus-per-task) CPUS_PER_TASK=$2; shift 2 ;;
    --time) TIME=$2; shift 2 ;;
    --container) IMAGE=$2; shift 2 ;;
    --mounts) MOUNTS=$2; shift 2 ;;
    --entry) ENTRY=$2; shift 2 ;;
    --partition) EXTRA+=("--partition=$2"); shift 2 ;;
    --account) EXTRA+=("--account=$2"); shift 2 ;;
    --job-name) NAME=$2; shift 2 ;;
    --sbatch-arg) EXTRA+=("$2"); shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --) shift; break ;;
    *) echo "submit.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
[ -n "$RUN_DIR" ] || { echo "submit.sh: --run-dir is required" >&2; exit 2; }
RUN_DIR=$(mkdir -p "$RUN_DIR" && cd "$RUN_DIR" && pwd)
mkdir -p "$RUN_DIR/logs"

if [ "$GPUS" -gt 0 ]; then
  TASKS=${TASKS:-$GPUS}
  CPUS_PER_TASK=${CPUS_PER_TASK:-8}
  EXTRA+=("--gpus-per-node=$GPUS" "--exclusive")
else
  TASKS=${TASKS:-2}
  CPUS_PER_TASK=${CPUS_PER_TASK:-1}
fi
ARGS=(--parsable --job-name="$NAME" --nodes="$NODES" --ntasks-per-node="$TASKS"
      --cpus-per-task="$CPUS_PER_TASK" --time="$TIME" --output="$RUN_DIR/logs/slurm-%j.out"
      --chdir="$RUN_DIR" "${EXTRA[@]}")

# The job reads these from its environment (sbatch exports the submitting environment).
export RUN_DIR NR_ENTRY="$ENTRY" NR_CONTAINER_IMAGE="$IMAGE" NR_CONTAINER_MOUNTS="$MOUNTS"
{
  echo "# $(date -u +%FT%TZ) submitted by slurm/submit.sh"
  printf '%q ' sbatch "${ARGS[@]}" "$HERE/train.sbatch" "$@"; echo
} >> "$RUN_DIR/job.env"
if [ "$DRY" = 1 ]; then
  printf '%q ' sbatch "${ARGS[@]}" "$HERE/train.sbatch" "$@"; echo
  exit 0
fi
sbatch "${ARGS[@]}" "$HERE/train.sbatch" "$@"
