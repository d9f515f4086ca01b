#!/usr/bin/env bash
# Start a single-node SLURM cluster (slurmctld + slurmd + munge) on this Debian machine, as root.
#
#     sudo bash scripts/slurm_local_cluster.sh        # idempotent: a running cluster is kept
#
# For tests and CI (tests marked `slurm`); see DESIGN.md, "SLURM on one machine". Accounting is
# off, so `sacct` fails and status falls back to squeue (expected).
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (it installs packages and starts daemons)" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

host=$(hostname -s)
state=${SLURM_LOCAL_STATE:-/var/tmp/slurm-local}
mkdir -p "$state"/{ctld,d,log} /etc/slurm /run/munge /var/log/munge /var/lib/munge /etc/munge

# munge: a 1 KiB key owned by munge, mode 400; munged runs as user munge.
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
chmod 755 /run/munge
if ! munge -n >/dev/null 2>&1; then
  su -s /bin/sh munge -c /usr/sbin/munged
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null

cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
# AuthInfo cred_expire: a requeued job may start again only cred_expire+1 s later (default 120);
# 10 keeps the pre-emption tests short. MaxArraySize: 10 (SLURM_MAX_ARRAY_SIZE overrides), the
# cap of a strict cluster, so a launch of more jobs is split into several arrays in every test
# run (tests/test_faults_slurm.py checks the setting; array indices stay below it). DefMemPerCPU: without it every job asks for the whole
# node's memory and the jobs of an array run one at a time.
conf=/etc/slurm/slurm.conf
new=$(mktemp)
cat > "$new" <<CONF
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
MaxArraySize=${SLURM_MAX_ARRAY_SIZE:-10}
MaxJobCount=20000
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
changed=1
if [ -f "$conf" ] && cmp -s "$new" "$conf"; then changed=0; fi
mv "$new" "$conf"
chmod 644 "$conf"
echo "CgroupPlugin=cgroup/v1" > /etc/slurm/cgroup.conf   # `disabled` does not exist in 22.05

running() { pgrep -x "$1" >/dev/null; }
if [ "$changed" = 1 ] && running slurmctld && ! scontrol reconfigure 2>/dev/null; then
  # some changes (node lines) need the daemons restarted
  for pidfile in "$state/slurmd.pid" "$state/slurmctld.pid"; do
    [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for _ in $(seq 50); do running slurmctld || running slurmd || break; sleep 0.2; done
fi
running slurmctld || slurmctld
running slurmd || slurmd

for _ in $(seq 100); do
  if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    sinfo
    exit 0
  fi
  sleep 0.2
done
scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
sleep 1
sinfo -h -N -o '%T' | grep -qE '^(idle|mixed|allocated)' || {
  echo "error: the SLURM node did not come up; see $state/log/" >&2; sinfo >&2; exit 1; }
sinfo
