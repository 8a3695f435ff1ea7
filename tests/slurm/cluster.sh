#!/usr/bin/env bash
# A one-node SLURM cluster for the test suite: cluster.sh start|stop|status [DIR]
#
# Everything it makes lives under DIR (default: /tmp/crt-bench-slurm): the munge key and socket, slurm.conf,
# the controller's state, the node's spool, pid files and logs; nothing under /etc is written. The node is this
# host (`hostname -s`) with the CPUs and memory `slurmd -C` reports, in one CPU partition `debug` (no GPUs), and
# the same node as partition `shared`, whose jobs share the cores (up to 8 jobs a core: many writers at once).
# Client commands find it through SLURM_CONF: `start` prints `export SLURM_CONF=DIR/slurm.conf`.
# Needs root (slurmd starts the jobs) and Debian's slurmctld, slurmd, slurm-client and munge (slurm 22.05);
# exit 3 with the reason when either is missing. `start` is idempotent and returns once `sinfo` shows the node
# idle; `stop` ends the daemons it started (by their pid files) and keeps DIR's logs.
set -euo pipefail
cmd="${1:-}"
dir="${2:-${CRT_BENCH_SLURM_DIR:-/tmp/crt-bench-slurm}}"
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"
host="$(hostname -s)"
port="${CRT_BENCH_SLURM_PORT:-6817}"  # slurmctld's; slurmd takes the next (two clusters side by side: other ports)

say() { echo "cluster.sh: $*" >&2; }
cannot() { say "cannot start a SLURM cluster here: $*"; exit 3; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
node_state() { sinfo -h -n "$host" -o %T 2>/dev/null | head -n1; }

check_tools() {
  [ "$(id -u)" = 0 ] || cannot "not root (slurmd must start jobs as their user); run as root, or skip the slurm tests"
  local missing=()
  for tool in munged slurmctld slurmd sbatch sinfo; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
  done
  [ "${#missing[@]}" = 0 ] || cannot "missing ${missing[*]} (Debian: apt-get install slurmctld slurmd slurm-client munge)"
}

write_conf() {
  local cpus mem
  cpus="$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -n1)"
  mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)"
  mem=$(( mem * 9 / 10 ))  # slurmd drains a node that reports less than its configured memory
  cat > "$conf" <<CONF
ClusterName=crtbench
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=600
KillWait=10
# The cluster shares its machine (its daemons and jobs may run at nice 19 under a busy CPU): patient timeouts, so
# a starved slurmd is neither marked not responding nor drained for a step slow to end ("Kill task failed").
MessageTimeout=30
SlurmdTimeout=600
UnkillableStepTimeout=300
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=shared Nodes=$host Default=NO MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
CONF
}

start() {
  check_tools
  if alive "$dir/slurmctld.pid" && alive "$dir/slurmd.pid" && [ "$(node_state)" = idle ] ; then
    say "already running ($dir)"; echo "export SLURM_CONF=$conf"; return 0
  fi
  mkdir -p "$dir"/{munge,state,spool,log}
  chmod 700 "$dir/munge"
  if ! [ -f "$dir/munge/munge.key" ]; then
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
  fi
  if ! alive "$dir/munge/munged.pid"; then
    munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
      --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"
  fi
  write_conf
  alive "$dir/slurmctld.pid" || slurmctld -i
  alive "$dir/slurmd.pid" || slurmd
  for _ in $(seq 1 60); do
    case "$(node_state)" in
      idle) echo "export SLURM_CONF=$conf"; return 0 ;;
      down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  say "the node did not become idle in 30 s: $(sinfo 2>&1 | tail -n +2); logs in $dir/log"
  stop; exit 1
}

stop() {
  [ -f "$conf" ] && scancel --full --quiet -u root >/dev/null 2>&1 || true
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    if alive "$pidfile"; then
      pid="$(cat "$pidfile")"
      kill "$pid"
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$pidfile"
  done
  return 0
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) check_tools; [ -f "$conf" ] && sinfo || { say "not running ($dir)"; exit 1; } ;;
  *) say "usage: cluster.sh start|stop|status [DIR]"; exit 2 ;;
esac
