#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying and testing charmlp's Slurm launcher (needs root).
#
#   eval "$(scripts/slurm_local.sh up)"    # installs Slurm and munge when missing, starts them, prints the export
#   scripts/slurm_local.sh down            # stops what `up` started (by its pid files), nothing else
#
# Everything lives in $CHARMLP_SLURM_DIR (default /tmp/charmlp-slurm): slurm.conf, state, spool, logs, pid files.
# stdout carries only the `export SLURM_CONF=...` line; progress and errors go to stderr.
set -uo pipefail

DIR=${CHARMLP_SLURM_DIR:-/tmp/charmlp-slurm}
CONF=$DIR/slurm.conf
MUNGE_KEY=/etc/munge/munge.key
MUNGE_SOCKET=/run/munge/munge.socket.2

fail() { echo "slurm_local.sh: $*" >&2; exit 1; }
note() { echo "slurm_local.sh: $*" >&2; }
alive() {  # pid file: its process runs, and is the daemon the file is named after (not a reused pid)
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null && [[ $(cat "/proc/$(cat "$1")/comm" 2>/dev/null) == "$(basename "$1" .pid)" ]]
}
node_state() { SLURM_CONF=$CONF sinfo -h -o %T 2>/dev/null | head -1; }
last_log_line() { tail -n 1 "$1" 2>/dev/null | sed 's/^\[[^]]*\] //'; }

install_packages() {
    local have=1 cmd
    for cmd in slurmctld slurmd sinfo srun sbatch munged; do command -v "$cmd" >/dev/null || have=0; done
    ((have)) && return 0
    command -v apt-get >/dev/null || fail "Slurm is not installed and there is no apt-get: install slurmd, slurmctld, slurm-client and munge"
    note "installing slurmd slurmctld slurm-client munge (apt-get, about 30 s)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmd slurmctld slurm-client munge >"$DIR/apt.log" 2>&1 ||
        { apt-get update -q >>"$DIR/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmd slurmctld slurm-client munge >>"$DIR/apt.log" 2>&1; } ||
        fail "apt-get could not install Slurm: $(last_log_line "$DIR/apt.log") (log: $DIR/apt.log)"
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi  # a munged already serves this machine
    if [[ ! -s $MUNGE_KEY ]]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=$MUNGE_KEY bs=1024 count=1 status=none || fail "cannot write $MUNGE_KEY"
    fi
    chown munge:munge $MUNGE_KEY 2>/dev/null; chmod 400 $MUNGE_KEY
    mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null
    munged --force --socket=$MUNGE_SOCKET --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" \
        --seed-file="$DIR/munged.seed" 2>>"$DIR/munged.log" ||
        fail "munged did not start: $(last_log_line "$DIR/munged.log") (log: $DIR/munged.log)"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
    fail "munged started but does not answer on $MUNGE_SOCKET (log: $DIR/munged.log)"
}

write_conf() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.85)}' /proc/meminfo)  # slurmd drains a node that has less
    mkdir -p "$DIR/state" "$DIR/spool"
    cat >"$CONF.new" <<EOF
# written by charmlp's scripts/slurm_local.sh: one node, no accounting, everything under $DIR
ClusterName=charmlp
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MailProg=/bin/true
# quick turns for a test cluster: a requeued job may start again after 5 s (default 120), and the scheduler
# looks at pending jobs every 2 s (default 60, backfill 30)
AuthInfo=cred_expire=5
SchedulerParameters=sched_interval=2,bf_interval=2
KillWait=30
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.new" "$CONF"
}

up() {
    [[ $(id -u) == 0 ]] || fail "needs root (it installs packages and runs slurmctld, slurmd and munged as root)"
    mkdir -p "$DIR" || fail "cannot create $DIR"
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && [[ $(node_state) =~ ^(idle|mix|alloc) ]]; then
        echo "export SLURM_CONF=$CONF"  # already up
        return 0
    fi
    install_packages
    start_munge
    write_conf
    export SLURM_CONF=$CONF
    alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF" 2>>"$DIR/slurmctld.log" ||
        fail "slurmctld did not start: $(last_log_line "$DIR/slurmctld.log") (log: $DIR/slurmctld.log)"
    alive "$DIR/slurmd.pid" || slurmd -f "$CONF" 2>>"$DIR/slurmd.log" ||
        fail "slurmd did not start: $(last_log_line "$DIR/slurmd.log") (log: $DIR/slurmd.log)"
    local state=""
    for _ in $(seq 60); do
        state=$(node_state)
        [[ $state =~ ^(idle|mix|alloc) ]] && { note "node $(hostname -s) $state"; echo "export SLURM_CONF=$CONF"; return 0; }
        [[ $state == down* || $state == drain* ]] && SLURM_CONF=$CONF scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null
        sleep 0.5
    done
    fail "the node is not idle after 30 s (sinfo: '${state:-no answer}'); logs: $DIR/slurmctld.log, $DIR/slurmd.log"
}

stop() {  # pid file, name
    local pid
    alive "$1" || { rm -f "$1"; return 0; }
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    rm -f "$1"
    note "stopped $2 ($pid)"
}

down() {
    if alive "$DIR/slurmctld.pid"; then  # end this cluster's jobs first, so no training is left behind
        SLURM_CONF=$CONF scancel --partition=debug --full --signal=KILL 2>/dev/null
        SLURM_CONF=$CONF scancel --partition=debug 2>/dev/null
        for _ in $(seq 50); do [[ -z $(SLURM_CONF=$CONF squeue -h 2>/dev/null) ]] && break; sleep 0.2; done
    fi
    stop "$DIR/slurmd.pid" slurmd
    stop "$DIR/slurmctld.pid" slurmctld
    stop "$DIR/munged.pid" munged  # only when up started it
    return 0
}

case ${1:-} in
up) up ;;
down) down ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
