#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (munged, slurmctld, slurmd) for the
# profile test: node features cpu,gpu and a fake `gpu` GRES (4 stand-in device files) so that
# GPU requests are schedulable; MinJobAge=3600 so squeue-based job status works without
# an accounting database. Needs root and Debian's slurm-wlm and munge.
# Usage: tests/slurm/start_cluster.sh [install]   ("install" apt-installs the packages first)
set -euo pipefail

if [[ "${1:-}" == "install" ]] && ! command -v slurmctld >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
for cmd in slurmctld slurmd munged sinfo; do
    command -v "$cmd" >/dev/null || { echo "start_cluster: $cmd is not installed (apt-get install slurm-wlm munge)" >&2; exit 2; }
done
if sinfo -h -o %T 2>/dev/null | grep -q idle; then
    exit 0  # already running
fi

host=$(hostname -s)
conf=/etc/slurm
mkdir -p "$conf" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge

if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- munged

cat > "$conf/slurm.conf" <<CONF
ClusterName=lensfinder-test
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# The node claims the shape of a 4-GPU A100 node (64 cores, 256 GB) whatever this machine
# has (config_overrides), so the profile's real requests are schedulable.
SlurmdParameters=config_overrides
NodeName=$host CPUs=64 RealMemory=262144 Gres=gpu:4 Feature=cpu,gpu State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
CONF
# four fake GPU device files (same device numbers as /dev/null): schedulable, never used
for i in 0 1 2 3; do [[ -e /dev/fakegpu$i ]] || mknod /dev/fakegpu$i c 1 3; done
cat > "$conf/gres.conf" <<CONF
NodeName=$host Name=gpu File=/dev/fakegpu[0-3]
CONF

# A test cluster keeps nothing worth recovering: daemons left from an earlier session (their
# node busy with that session's jobs) are stopped, and slurmctld starts clean (-c), since
# jobs recovered from its state directory would hold the node ALLOCATED for ever.
pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
for _ in $(seq 20); do { pgrep -x slurmctld || pgrep -x slurmd; } >/dev/null || break; sleep 0.5; done
rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
slurmctld -c
slurmd -c
for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -q idle; then
        sinfo
        exit 0
    fi
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "start_cluster: the node did not become idle; see /var/log/slurm/*.log" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
