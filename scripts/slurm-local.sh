#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, to try `hydra/launcher=slurm` on a laptop and to test it in CI.
#
#   eval "$(scripts/slurm-local.sh start)"   # installs the Debian packages if missing (as root), starts
#                                            # munged, slurmctld and slurmd, waits for the node, and
#                                            # prints `export SLURM_CONF=...` for your shell
#   scripts/slurm-local.sh status            # sinfo/squeue of the local cluster
#   scripts/slurm-local.sh stop              # cancels its jobs and stops the daemons by PID
#
# Everything lives under $MEDS1_SLURM_DIR (default /tmp/meds1-slurm): config, munge key and socket, state,
# logs, pid files. The node declares GPUs as a generic resource backed by empty files (no GPU is needed:
# jobs see SLURM_GPUS_ON_NODE but no devices) and more memory than the machine has, so that real
# experiment configs are accepted; neither is enforced (no cgroups).
set -euo pipefail

DIR=${MEDS1_SLURM_DIR:-/tmp/meds1-slurm}
GPUS=${MEDS1_SLURM_GPUS:-8}
CPUS=${MEDS1_SLURM_CPUS:-8}
MEM_MB=${MEDS1_SLURM_MEM_MB:-1048576}
CTLD_PORT=${MEDS1_SLURM_PORT:-6817}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

say() { echo "slurm-local: $*" >&2; }

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    local missing=()
    for tool in slurmctld slurmd sbatch munged; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    [[ ${#missing[@]} -eq 0 ]] && return
    if [[ $(id -u) -ne 0 ]]; then
        say "missing ${missing[*]}; as root: apt-get install slurmctld slurmd slurm-client munge"
        exit 1
    fi
    say "installing slurmctld slurmd slurm-client munge (Debian packages)"
    local log=${TMPDIR:-/tmp}/meds1-slurm-apt.log
    # policy-rc.d keeps the packages from starting system-wide daemons: this script runs its own.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    local status=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge; } >"$log" 2>&1 || status=$?
    [[ $created_policy -eq 1 ]] && rm -f "$policy"
    if [[ $status -ne 0 ]]; then
        tail -n 20 "$log" >&2
        say "apt-get failed (full log: $log)"
        exit 1
    fi
}

write_config() {
    mkdir -p "$DIR"/{state,spool,log,run}
    local gpu_files=()
    for ((i = 0; i < GPUS; i++)); do
        : >"$DIR/fakegpu$i"
        gpu_files+=("$DIR/fakegpu$i")
    done
    cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a one-node cluster on localhost.
ClusterName=meds1-local
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
GresTypes=gpu
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
KillWait=5
InactiveLimit=0
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=localhost CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM_MB Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
EOF
    cat >"$DIR/gres.conf" <<EOF
AutoDetect=off
NodeName=localhost Name=gpu File=$(IFS=,; echo "${gpu_files[*]}")
EOF
    if [[ ! -f $DIR/munge.key ]]; then
        head -c 1024 /dev/urandom >"$DIR/munge.key"
    fi
    chmod 400 "$DIR/munge.key"
}

wait_for_idle() {
    for _ in $(seq 60); do
        state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
        [[ $state == idle* || $state == mixed* || $state == allocated* ]] && return 0
        sleep 1
    done
    say "the node did not come up (state: ${state:-unknown}); logs in $DIR/log"
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    return 1
}

start() {
    install_packages
    if running "$DIR/run/slurmctld.pid" && running "$DIR/run/slurmd.pid"; then
        say "already running ($CONF)"
    else
        write_config
        if ! running "$DIR/run/munged.pid"; then
            munged --force --key-file="$DIR/munge.key" --socket="$DIR/run/munge.socket" \
                --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
                --seed-file="$DIR/run/munged.seed"
        fi
        running "$DIR/run/slurmctld.pid" || slurmctld -f "$CONF" -i
        running "$DIR/run/slurmd.pid" || slurmd -f "$CONF" -N localhost
        wait_for_idle
        say "node idle: $(sinfo -h -N -o '%N %T cpus=%c gres=%G')"
    fi
    echo "export SLURM_CONF=$CONF"
}

stop_daemon() {
    local pidfile=$DIR/run/$1.pid
    running "$pidfile" || return 0
    local pid
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    say "$1 ($pid) did not stop on SIGTERM; sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    if running "$DIR/run/slurmctld.pid"; then
        local jobs
        mapfile -t jobs < <(squeue -h -o %A 2>/dev/null | sort -u)
        [[ ${#jobs[@]} -gt 0 ]] && scancel "${jobs[@]}"
        for _ in $(seq 20); do
            [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    say "stopped"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) sinfo -N && squeue ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
