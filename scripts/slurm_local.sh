#!/usr/bin/env bash
# A real single-node SLURM cluster on this host, so the SLURM launch path can be tested
# end to end on a laptop, a CI runner or a dev VM.
#
#   scripts/slurm_local.sh start    install if needed, configure, start daemons, smoke-test
#   scripts/slurm_local.sh status   one line per daemon, then the node and the queue
#   scripts/slurm_local.sh stop     scontrol shutdown, then munged
#
# Needs root and Debian/Ubuntu (apt). There is no systemd in containers and CI VMs, so the
# daemons are started directly. `start` is idempotent: a running cluster with an unchanged
# config is only checked and reported ready; a changed config (say VESTIGE_SLURM_CPUS)
# restarts slurmctld and slurmd. Config: /etc/slurm/slurm.conf (refuses to overwrite one it
# did not write). Logs: /var/log/slurm/. State: /var/spool/slurmctld, /var/spool/slurmd.
#
# CPU oversubscription. The node advertises VESTIGE_SLURM_CPUS CPUs (default: the larger
# of 8 and the real count) and SlurmdParameters=config_overrides makes slurmd accept that
# instead of draining the node for having fewer cores than configured. On a 2-core machine a
# 4-task array and a 2-task srun then run side by side, and a job asking for -n 4 can be
# scheduled at all. OverSubscribe=FORCE was the alternative, but it only lets separate jobs
# share cores: one job could still never be given more CPUs than the host has. Test jobs
# sleep and echo; they need slots, not cores. TaskPlugin=task/none means nothing is pinned.
#
# Memory is not a consumable resource (CR_Core, not CR_Core_Memory), so jobs never wait for
# memory; RealMemory is still the real figure from `slurmd -C`.
set -euo pipefail

readonly CONF=/etc/slurm/slurm.conf
readonly CONF_MARKER="# Written by vestige scripts/slurm_local.sh; rewritten by every start."
readonly CTLD_SPOOL=/var/spool/slurmctld
readonly SLURMD_SPOOL=/var/spool/slurmd
readonly LOG_DIR=/var/log/slurm
readonly CTLD_PID=/run/slurmctld.pid
readonly SLURMD_PID=/run/slurmd.pid
readonly MUNGE_KEY=/etc/munge/munge.key
readonly MUNGE_RUN=/run/munge
readonly MUNGE_PID=$MUNGE_RUN/munged.pid
# Slots enough for a 4-task array next to a 2-task srun; see the header.
readonly MIN_ADVERTISED_CPUS=8
readonly READY_TIMEOUT_S=30
readonly STOP_TIMEOUT_S=15

say() { printf 'slurm_local: %s\n' "$*"; }

die() {
  printf 'slurm_local: error: %s\n' "$1" >&2
  exit 1
}

# A daemon that fails says why in its log, so show the end of both logs under the reason.
die_with_logs() {
  local log
  for log in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
    if [[ -s $log ]]; then
      printf -- '--- last lines of %s\n' "$log" >&2
      tail -n 15 "$log" >&2
    fi
  done
  die "$1"
}

# A pid file names a live daemon if the process exists and is not a zombie: in containers
# whose init never reaps, a stopped daemon lingers as one.
alive() {
  local pid stat
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    slurm-wlm munge >>"$1" 2>&1
}

# Stale or empty package lists make the first install fail; only then refresh them.
install_packages() {
  command -v slurmctld >/dev/null && return 0
  local log
  log=$(mktemp /tmp/slurm_local_apt.XXXXXX)
  say "installing slurm-wlm and munge with apt (log: $log)"
  if ! apt_install "$log"; then
    say "install failed; running apt-get update and retrying"
    apt-get update -q >>"$log" 2>&1 || die "apt-get update failed; see $log"
    apt_install "$log" || die "apt-get install slurm-wlm munge failed; see $log"
  fi
}

# munged refuses a key that is not owned by the user it runs as, and wants its run, state
# and log dirs to be owned by that user too; /run is a tmpfs, so they vanish on reboot.
start_munge() {
  install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  if [[ ! -s $MUNGE_KEY ]]; then
    say "creating munge key $MUNGE_KEY"
    mungekey --create --keyfile="$MUNGE_KEY"
  fi
  chown munge:munge "$MUNGE_KEY"
  chmod 0400 "$MUNGE_KEY"
  if alive "$MUNGE_PID"; then
    say "munged already running (pid $(<"$MUNGE_PID"))"
  else
    say "starting munged"
    runuser -u munge -- munged || die "munged did not start; see /var/log/munge/munged.log"
  fi
  munge -n | unmunge >/dev/null \
    || die "munge credential round trip failed; check $MUNGE_KEY is munge:munge 0400"
}

# `slurmd -C` prints the node line SLURM detects: "NodeName=vm CPUs=2 ... RealMemory=24105".
node_field() { grep -o "$1=[0-9]*" <<<"$2" | head -n 1 | cut -d= -f2; }

render_conf() {
  local node=$1 cpus=$2 memory_mb=$3
  cat <<EOF
$CONF_MARKER
ClusterName=vestige-local
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# A requeued job waits cred_expire + 1 s before it may start again; the default is 120 s.
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Schedule at once on submit, and every 2 s rather than 60 s/30 s, so requeued and
# newly eligible jobs start within seconds; a handful of jobs makes each pass cheap.
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
ReturnToService=2
JobRequeue=1
KillWait=5
# Finished jobs stay in \`scontrol show job\` this long; there is no accounting, so no sacct.
MinJobAge=300
InactiveLimit=0
StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

start_daemon() {
  local name=$1 pidfile=$2
  if alive "$pidfile"; then
    say "$name already running (pid $(<"$pidfile"))"
    return 0
  fi
  say "starting $name"
  "$name" || die_with_logs "$name exited with status $?"
}

# SIGTERM is a clean shutdown for all three daemons; scontrol shutdown usually got there first.
stop_daemon() {
  local name=$1 pidfile=$2 deadline=$((SECONDS + STOP_TIMEOUT_S))
  alive "$pidfile" || return 0
  kill -TERM "$(<"$pidfile")" 2>/dev/null || true
  while alive "$pidfile"; do
    ((SECONDS < deadline)) || die_with_logs "$name still running ${STOP_TIMEOUT_S}s after SIGTERM (pid $(<"$pidfile"))"
    sleep 0.1
  done
}

stop_slurm() {
  if alive "$CTLD_PID"; then
    say "scontrol shutdown (slurmctld and slurmd)"
    scontrol shutdown >/dev/null 2>&1 || true
  fi
  stop_daemon slurmctld "$CTLD_PID"
  stop_daemon slurmd "$SLURMD_PID"
}

node_state() { sinfo -h -n "$1" -o %T 2>/dev/null || true; }

require_alive() {
  alive "$2" || die_with_logs "$1 is not running (it exited during start-up, or was never started)"
}

# ReturnToService=2 brings a registered node back by itself; resume covers a node that the
# saved state left down or drained. A daemon that died (a port in use, a bad key) fails the
# wait at once, after a grace period for the daemon to write its pid file.
wait_ready() {
  local node=$1 state="" deadline=$((SECONDS + READY_TIMEOUT_S)) grace_end=$((SECONDS + 2))
  while ((SECONDS < deadline)); do
    state=$(node_state "$node")
    case $state in
      idle | mixed | allocated | completing) return 0 ;;
      down | drained | draining | fail*) scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true ;;
      *) ;;
    esac
    if ((SECONDS >= grace_end)); then
      require_alive slurmctld "$CTLD_PID"
      require_alive slurmd "$SLURMD_PID"
    fi
    sleep 0.2
  done
  die_with_logs "node $node not ready after ${READY_TIMEOUT_S}s (sinfo state: '${state:-no answer from slurmctld}')"
}

# sbatch --wait checks after 2 s, then at growing intervals; this answers as soon as the job ends.
wait_for_job() {
  local job=$1 state="" deadline=$((SECONDS + READY_TIMEOUT_S))
  while ((SECONDS < deadline)); do
    state=$(scontrol show job -o "$job" 2>/dev/null | grep -o 'JobState=[A-Z_]*' || true)
    case ${state#JobState=} in
      COMPLETED) return 0 ;;
      PENDING | CONFIGURING | RUNNING | COMPLETING | "") sleep 0.1 ;;
      *) die_with_logs "smoke-test batch job $job ended ${state#JobState=}" ;;
    esac
  done
  die_with_logs "smoke-test batch job $job not done after ${READY_TIMEOUT_S}s (${state:-no JobState})"
}

# Both jobs exercise munge, slurmctld and slurmd. Right after a restart they wait for the
# first scheduling pass (~2 s with bf_interval=2), as the node registers a moment later.
smoke_test() {
  say "smoke test: srun hostname and a batch job"
  local job
  job=$(sbatch --parsable --chdir=/tmp --output=/dev/null --wrap=true) || die_with_logs "sbatch failed"
  timeout "$READY_TIMEOUT_S" srun --quiet --chdir=/tmp -N 1 -n 1 hostname >/dev/null \
    || die_with_logs "srun hostname failed"
  wait_for_job "$job"
}

start() {
  ((EUID == 0)) || die "start must run as root (it installs packages and starts daemons); got uid $EUID"
  if [[ -n ${VESTIGE_SLURM_CPUS:-} && ! $VESTIGE_SLURM_CPUS =~ ^[1-9][0-9]*$ ]]; then
    die "VESTIGE_SLURM_CPUS must be a positive integer, got '$VESTIGE_SLURM_CPUS'"
  fi
  if [[ -e $CONF ]] && ! grep -qxF "$CONF_MARKER" "$CONF"; then
    die "$CONF was not written by this script; move it away to run a local cluster"
  fi
  install_packages
  start_munge

  local node hardware hw_cpus cpus memory_mb conf
  node=$(hostname -s)
  hardware=$(slurmd -C)
  hw_cpus=$(node_field CPUs "$hardware")
  cpus=${VESTIGE_SLURM_CPUS:-$((hw_cpus > MIN_ADVERTISED_CPUS ? hw_cpus : MIN_ADVERTISED_CPUS))}
  memory_mb=$(node_field RealMemory "$hardware")
  conf=$(render_conf "$node" "$cpus" "$memory_mb")

  if [[ -e $CONF && $(<"$CONF") == "$conf" ]]; then
    if alive "$CTLD_PID" && alive "$SLURMD_PID"; then
      wait_ready "$node"
      say "ready (already running): node $node, $cpus CPUs, partition debug"
      return 0
    fi
  else
    stop_slurm
    say "writing $CONF (node $node, $cpus CPUs, ${memory_mb} MB)"
    install -d -m 0755 "$(dirname "$CONF")"
    printf '%s\n' "$conf" >"$CONF"
  fi

  install -d -m 0755 "$CTLD_SPOOL" "$SLURMD_SPOOL" "$LOG_DIR"
  start_daemon slurmctld "$CTLD_PID"
  start_daemon slurmd "$SLURMD_PID"
  say "waiting for node $node to be idle"
  wait_ready "$node"
  smoke_test
  say "ready: node $node, $cpus CPUs, partition debug"
}

stop() {
  ((EUID == 0)) || die "stop must run as root; got uid $EUID"
  stop_slurm
  if alive "$MUNGE_PID"; then
    say "stopping munged"
    stop_daemon munged "$MUNGE_PID"
  fi
  say "stopped"
}

report_daemon() {
  if alive "$2"; then say "$1: running (pid $(<"$2"))"; else say "$1: stopped"; fi
}

status() {
  report_daemon munged "$MUNGE_PID"
  report_daemon slurmctld "$CTLD_PID"
  report_daemon slurmd "$SLURMD_PID"
  alive "$CTLD_PID" || return 1
  sinfo --Node --long
  squeue
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status (got '${1:-}')" ;;
esac
