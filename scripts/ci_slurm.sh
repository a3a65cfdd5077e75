#!/usr/bin/env bash
# CI: bring up a real single-node SLURM cluster on loopback, run the SLURM tests against it
# (sbatch of the real launcher: a 2-task gloo job, the preemption -> requeue -> resume path, and
# `nemo-rence train` once it exists), and always tear the cluster down (only the daemons that
# scripts/slurm/up.sh started). Usage: bash scripts/ci_slurm.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
export NEMO_RENCE_SLURM_DIR=${NEMO_RENCE_SLURM_DIR:-${TMPDIR:-/tmp}/nemo-rence-slurm-ci}
PY=${PYTHON:-python}

trap 'bash scripts/slurm/down.sh' EXIT
timeout 1200 bash scripts/slurm/up.sh
# shellcheck disable=SC1091  # written by up.sh
source "$NEMO_RENCE_SLURM_DIR/env.sh"
# The tests must run for real here: a skip would hide a broken cluster.
timeout 2400 "$PY" -m pytest -q tests/slurm -p no:cacheprovider -rs "$@"
