#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for executing the slurm profile for real
# (tests/test_slurm.py, CI). Root and Debian's packages; no systemd, no accounting.
#
#   bash scripts/slurm_one_node.sh start [--install] [--gpus N]   # idempotent
#   bash scripts/slurm_one_node.sh stop     # undoes exactly what `start` did
#   bash scripts/slurm_one_node.sh status
#
# `start` writes /etc/slurm/slurm.conf and gres.conf (the jobs' srun reads the
# config only from there) and refuses to touch a config it did not write. The node
# declares this machine's own cores and memory, so the requests of the tiny preset are
# checked against a small node; N fake GPUs (default 2) are device files that are never
# opened: jobs see CUDA_VISIBLE_DEVICES, torch sees no GPU and the training launcher
# takes its CPU multi-rank path. Partitions: `cpu` (default) and `gpu`.
# Every daemon's PID file, log and spool is in $REDI_SLURM_STATE (default
# /tmp/redi-slurm-one-node); `stop` kills those PIDs, removes the files it wrote and
# purges the packages if `start --install` installed them: with SLURM's client commands
# installed and no controller, every snakemake call would wait ~10 s for one.
set -euo pipefail

STATE=${REDI_SLURM_STATE:-/tmp/redi-slurm-one-node}
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
MARK="# written by redi scripts/slurm_one_node.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)

die() { echo "slurm_one_node: $*" >&2; exit 1; }

controller_up() { timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; }

node_idle() { timeout 5 sinfo -h -N -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; }

install_packages() {
    [[ $(id -u) == 0 ]] || die "installing the SLURM packages needs root"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
    touch "$STATE/installed-packages"
}

write_config() {
    local gpus=$1 host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
    cat >"$CONF" <<EOF
$MARK
ClusterName=redi-one-node
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$gpus State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF
    # a GPU gres needs device files, or the node goes INVAL; these are never opened
    cat >"$GRES" <<EOF
$MARK
AutoDetect=off
Name=gpu File=/dev/tty[0-$((gpus - 1))]
EOF
    touch "$STATE/wrote-config"
}

start_munge() {
    if pgrep -x munged >/dev/null; then return; fi
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$STATE/munged.pid"
}

start() {
    local install=0 gpus=2
    while (($#)); do
        case $1 in
            --install) install=1 ;;
            --gpus) gpus=$2; shift ;;
            *) die "unknown option $1" ;;
        esac
        shift
    done
    ((gpus >= 1 && gpus <= 8)) || die "--gpus must be 1..8 (fake GPUs are /dev/tty0..7)"
    if command -v scontrol >/dev/null && controller_up; then
        echo "slurm_one_node: a controller is already up; nothing started"; return
    fi
    [[ $(id -u) == 0 ]] || die "starting SLURM's daemons needs root"
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: not touching a real cluster's config"
    fi
    mkdir -p "$STATE"
    trap 'echo "slurm_one_node: start failed; undoing what was done" >&2; stop' ERR
    if ! command -v slurmctld >/dev/null; then
        ((install)) || die "SLURM is not installed (rerun with --install: apt-get ${PACKAGES[*]})"
        install_packages
    fi
    write_config "$gpus"
    start_munge
    slurmctld
    slurmd
    for _ in $(seq 60); do node_idle && break; sleep 0.5; done
    node_idle || die "the node did not come up: see $STATE/slurmctld.log, $STATE/slurmd.log"
    trap - ERR
    sinfo
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        [[ -f $STATE/$name.pid ]] || continue
        pid=$(cat "$STATE/$name.pid")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    if [[ -f $STATE/wrote-config ]]; then
        for f in "$CONF" "$GRES"; do
            if [[ -f $f ]] && grep -qF "$MARK" "$f"; then rm -f "$f"; fi
        done
    fi
    if [[ -f $STATE/installed-packages ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq --auto-remove "${PACKAGES[@]}" >/dev/null
    fi
    rm -rf "$STATE"
}

case ${1:-} in
    start) shift; start "$@" ;;
    stop) stop ;;
    status) controller_up && sinfo || { echo "no SLURM controller answers"; exit 1; } ;;
    *) die "usage: $0 start [--install] [--gpus N] | stop | status" ;;
esac
