#!/usr/bin/env bash
# A single-node Slurm on this machine, for the `slurm` tests and for trying the recipes of
# `ffx slurm` (README, "Running on Slurm"): `up` installs Debian's slurmctld, slurmd and munge if
# they are missing (as root), writes slurm.conf for this host's cores and memory, starts munged,
# slurmctld and slurmd without systemd and waits until the node takes jobs; `down` stops them;
# `status` says whether the node is up. Each is idempotent and ends with one line on what it did.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"

CONF=/etc/slurm/slurm.conf
MUNGE_KEY=/etc/munge/munge.key
MUNGE_PID=/run/munge/munged.pid
CTLD_PID=/run/slurm/slurmctld.pid
SLURMD_PID=/run/slurm/slurmd.pid
STATE=/var/lib/slurm
LOGS=/var/log/slurm
# The node's name must be what slurmd calls itself (`hostname -s`), or slurmd refuses to start.
NODE=$(hostname -s)
TIMEOUT=${SLURM_UP_TIMEOUT:-90}

say() { echo "slurm-cluster: $*"; }
fail() { echo "slurm-cluster: error: $*" >&2; exit 1; }

running() { # pidfile: is the process it names alive?
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
  local missing=()
  command -v munged >/dev/null || missing+=(munge)
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  ((${#missing[@]} == 0)) && return 0
  # The packages' postinst scripts try to start the daemons through systemd; there is none here,
  # which they tolerate. Their users (munge, slurm) and folders come from the packages.
  apt_install "${missing[@]}"
  INSTALLED="installed ${missing[*]}; "
}

start_munge() {
  running "$MUNGE_PID" && return 0
  # munged insists on its key and folders belonging to the munge user, with no group or world access.
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [[ ! -s $MUNGE_KEY ]]; then
    dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
  fi
  chown munge:munge "$MUNGE_KEY" && chmod 0400 "$MUNGE_KEY"
  runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID"
  STARTED+=(munged)
}

write_conf() {
  # `slurmd -C` measures the node (sockets, cores, threads, memory); RealMemory above what it reports
  # would put the node in the INVAL state, so keep 90% of it (the rest for the system).
  local measured memory cpus
  measured=$(slurmd -C | head -n1)
  memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$measured")
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$measured")
  memory=$((memory * 9 / 10))
  local node
  node=$(sed -e "s/RealMemory=[0-9]*/RealMemory=$memory/" -e 's/ UpTime=.*//' <<<"$measured")
  install -d -m 0755 /etc/slurm
  local wanted
  wanted=$(cat <<CONF
# Written by ffx's scripts/slurm-cluster.sh: a one-node test cluster on $NODE.
ClusterName=ffx
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# No cgroups here (no systemd, a sandboxed kernel): processes are tracked through /proc, and tasks
# are bound to their allocated cores with sched_setaffinity.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
# Cores and memory are what jobs ask for, so the array tasks of a stage share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((memory / cpus))
ReturnToService=2
SlurmdTimeout=60
# A task that fails stays failed (the next stage is cancelled, the user resubmits): no silent rerun.
JobRequeue=0
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
)
  if [[ ! -f $CONF ]] || [[ "$(cat "$CONF")" != "$wanted" ]]; then
    printf '%s\n' "$wanted" >"$CONF"
    CONF_CHANGED=1
  fi
}

start_slurm() {
  install -d -o slurm -g slurm -m 0755 "$STATE" "$STATE/slurmctld" "$LOGS" /run/slurm
  install -d -m 0755 "$STATE/slurmd"
  if ((CONF_CHANGED)); then # daemons of an older configuration would not see the new one
    stop_slurm
  fi
  if ! running "$CTLD_PID"; then
    slurmctld
    STARTED+=(slurmctld)
  fi
  if ! running "$SLURMD_PID"; then
    slurmd
    STARTED+=(slurmd)
  fi
}

node_state() {
  sinfo --noheader --nodes="$NODE" --format=%T 2>/dev/null | head -n1 || true
}

wait_idle() {
  local state="" deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    state=$(node_state)
    case $state in
      idle | mixed | allocated | completing) return 0 ;;
      down* | drain* | fail*) # a node that went down before (old daemons): take it back
        scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
  done
  fail "node $NODE is '${state:-unknown}' after ${TIMEOUT}s (see $LOGS/slurmctld.log and $LOGS/slurmd.log)"
}

stop_pid() { # pidfile name: TERM the process it names and wait for it to go
  local pidfile=$1 pid
  running "$pidfile" || return 0
  pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -0 "$pid" 2>/dev/null && fail "$2 (pid $pid) did not stop"
  STOPPED+=("$2")
}

stop_slurm() {
  # Jobs first: slurmstepd would outlive slurmd and keep their processes running.
  if running "$CTLD_PID" && [[ -n $(squeue --noheader --format=%A 2>/dev/null) ]]; then
    squeue --noheader --format=%A | xargs scancel
    for _ in $(seq 30); do
      [[ -z $(squeue --noheader --format=%A 2>/dev/null) ]] && break
      sleep 1
    done
    CANCELLED="cancelled every job; "
  fi
  stop_pid "$SLURMD_PID" slurmd
  stop_pid "$CTLD_PID" slurmctld
}

up() {
  INSTALLED="" CONF_CHANGED=0 STARTED=() STOPPED=() CANCELLED=""
  install_packages
  [[ $(id -u) == 0 ]] || running "$CTLD_PID" || fail "starting Slurm needs root"
  start_munge
  write_conf
  start_slurm
  wait_idle
  local cpus
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' "$CONF")
  if ((${#STARTED[@]})); then
    say "${INSTALLED}started ${STARTED[*]}; node $NODE is $(node_state) with $cpus CPUs (partition debug)"
  else
    say "${INSTALLED}already up; node $NODE is $(node_state) with $cpus CPUs (partition debug)"
  fi
}

down() {
  STOPPED=() CANCELLED=""
  stop_slurm
  stop_pid "$MUNGE_PID" munged
  if ((${#STOPPED[@]})); then say "${CANCELLED}stopped ${STOPPED[*]}"; else say "already down"; fi
}

status() {
  if running "$CTLD_PID" && running "$SLURMD_PID"; then
    say "up; node $NODE is $(node_state)"
  else
    say "down"
    return 1
  fi
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
