#!/usr/bin/env bash
# Stop the cluster that scripts/slurm/up.sh started: cancel its jobs, then SIGTERM (SIGKILL after
# 10 s) exactly the PIDs recorded in $NEMO_RENCE_SLURM_DIR/pids, newest first, each only if the
# process with that PID still has the recorded name. Idempotent; never touches other processes.
set -uo pipefail
D=${NEMO_RENCE_SLURM_DIR:-${TMPDIR:-/tmp}/nemo-rence-slurm}
[ -f "$D/pids" ] || { echo "slurm-down: nothing to stop in $D"; exit 0; }
export SLURM_CONF="$D/slurm.conf"

alive() { [ -e "/proc/$1" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
ours() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }  # guards against PID reuse

if grep -q '^slurmctld ' "$D/pids" && timeout 10 scontrol ping >/dev/null 2>&1; then
  jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086  # one job id per word
    timeout 10 scancel --full --quiet $jobs 2>/dev/null || true
    for _ in $(seq 75); do [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi

tac "$D/pids" | while read -r name pid; do
  if ! alive "$pid" || ! ours "$pid" "$name"; then continue; fi
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do alive "$pid" || break; sleep 0.2; done
  if alive "$pid"; then
    echo "slurm-down: $name ($pid) ignored SIGTERM; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
  echo "slurm-down: stopped $name ($pid)"
done
mv "$D/pids" "$D/pids.stopped"
