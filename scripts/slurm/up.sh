#!/usr/bin/env bash
# Bring up a throw-away single-node SLURM cluster for the tests: munged + slurmctld + slurmd from
# Debian's packages, as root, without systemd, on loopback, everything under $NEMO_RENCE_SLURM_DIR
# (default ${TMPDIR:-/tmp}/nemo-rence-slurm). Every daemon's PID goes to $DIR/pids, so that
# scripts/slurm/down.sh stops exactly those processes and nothing else.
#
# Afterwards: source "$DIR/env.sh"  (exports SLURM_CONF and NEMO_RENCE_SLURM_CONF; the SLURM tests
# run only when NEMO_RENCE_SLURM_CONF is set).  Adapted from shared/recipes/slurm-loopback.
set -euo pipefail
D=${NEMO_RENCE_SLURM_DIR:-${TMPDIR:-/tmp}/nemo-rence-slurm}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { echo "slurm-up: $*"; }
fail() {
  echo "slurm-up: $*" >&2
  tail -n 30 "$D"/log/*.log >&2 2>/dev/null || true
  NEMO_RENCE_SLURM_DIR=$D bash "$HERE/down.sh" || true
  exit 1
}
waitfor() {  # waitfor SECONDS WHAT COMMAND...: poll every 0.2 s
  local secs=$1 what=$2; shift 2
  local _
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "timed out after ${secs}s waiting for $what"
}

# 1. packages (Debian 12: Slurm 22.05, munge 0.5); installed only when missing
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
   ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "slurm-up: installing SLURM needs root" >&2; exit 1; }
  say "installing slurmctld slurmd slurm-client munge"
  timeout 600 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

# 2. never start over a live cluster of ours
if [ -f "$D/pids" ]; then
  while read -r name pid; do
    if [ -e "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
      echo "slurm-up: $name (pid $pid) of a previous cluster is alive; run scripts/slurm/down.sh" >&2
      exit 1
    fi
  done < "$D/pids"
fi
rm -rf "$D"
mkdir -p "$D"/{munge,state,spool,log}
chmod 755 "$D/munge"

# 3. munged with a private key and socket (no /etc/munge, no /run/munge)
dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$D/munge/munge.key"
SOCK="$D/munge/munge.sock"
munged -F --force --socket="$SOCK" --key-file="$D/munge/munge.key" \
  --pid-file="$D/munge/munged.pid" --seed-file="$D/munge/seed" \
  --log-file="$D/log/munged.log" </dev/null >"$D/log/munged.out" 2>&1 &
echo "munged $!" >> "$D/pids"
waitfor 20 munged sh -c "munge -n -S '$SOCK' | unmunge -S '$SOCK'"

# 4. slurm.conf: one node with this machine's CPUs and 90% of its memory
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc honours OMP_NUM_THREADS
MEM=$(( $(awk '/^MemTotal:/{print $2}' /proc/meminfo) * 9 / 10240 ))
COMM=""
case "$(getent ahostsv4 "$(hostname)" 2>/dev/null | awk 'NR==1{print $1}')" in
  127.*) COMM="CommunicationParameters=NoInAddrAny,NoCtldInAddrAny" ;;
  *) say "hostname $(hostname) does not resolve to 127.x: daemons listen on all addresses" ;;
esac
PORT=${NEMO_RENCE_SLURM_PORT:-6817}
cat > "$D/slurm.conf" <<CONF
ClusterName=nemo-rence-ci
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
$COMM
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.log
MinJobAge=3600
KillWait=10
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=01:00:00 State=UP
CONF
export SLURM_CONF="$D/slurm.conf"
cat > "$D/env.sh" <<ENV
export SLURM_CONF=$D/slurm.conf
export NEMO_RENCE_SLURM_CONF=$D/slurm.conf
export NEMO_RENCE_SLURM_DIR=$D
ENV

# 5. the daemons in the foreground (-D), backgrounded here so that $! is the daemon itself
slurmctld -D -i </dev/null >"$D/log/slurmctld.out" 2>&1 &
echo "slurmctld $!" >> "$D/pids"
waitfor 30 slurmctld timeout 5 scontrol ping
slurmd -D -N localhost </dev/null >"$D/log/slurmd.out" 2>&1 &
echo "slurmd $!" >> "$D/pids"
waitfor 30 "node idle" sh -c 'timeout 5 sinfo -h -n localhost -o %T | grep -qx idle'
say "cluster ready ($CPUS CPUs, $MEM MiB) in $D; source $D/env.sh"
