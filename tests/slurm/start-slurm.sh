#!/usr/bin/env bash
# A real single-node Slurm on this machine for the end-to-end tests (tests/tests/gateway_slurm.rs)
# and for trying the gateway demo (examples/gateway-demo.py): munged, slurmctld and slurmd as
# plain daemons (no systemd, no cgroups), one node named after `hostname -s` at 127.0.0.1, one
# partition `debug`. Run as root; idempotent (what already runs is left running, and a node
# already idle is reported at once). Debian 12 packages: slurm-wlm munge.
#
# Writes:
#   /etc/slurm/slurm.conf         the clients' default path, so that sbatch/squeue/sacct in
#                                 any login session (an sshd-gsi session included) find it
#                                 without SLURM_CONF. A slurm.conf this script did not write is
#                                 left alone (the script stops) unless --force.
#   /etc/munge/munge.key          made with mungekey if missing
#   /var/spool/hpccert-slurm/     slurmctld's state and slurmd's spool
#   /var/log/hpccert-slurm/       munged.log slurmctld.log slurmd.log jobcomp.txt
#   /run/hpccert-slurm/           pid files
#
# Accounting: no slurmdbd (it needs a MySQL/MariaDB server), so plain `sacct` says accounting
# storage is disabled. Finished jobs are recorded by jobcomp/filetxt in
# /var/log/hpccert-slurm/jobcomp.txt, which `sacct -c` reads as root only (sacct opens that file
# for appending, so an account's `sacct -c` fails with Permission denied). For everyone,
# `scontrol show job ID` shows a finished job's state and exit code for MinJobAge (300 s), and
# `squeue -h -j ID` prints nothing once the job has left the queue.
#
# Stop with tests/slurm/stop-slurm.sh.
set -euo pipefail

force=0
for arg in "$@"; do
    case $arg in
    --force) force=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "start-slurm: unknown argument $arg (--force)" >&2
        exit 2
        ;;
    esac
done

if [ "$(id -u)" != 0 ]; then
    echo "start-slurm: run as root (slurmd starts jobs as their users)" >&2
    exit 1
fi
for program in munged mungekey slurmctld slurmd sinfo scontrol; do
    if ! command -v "$program" >/dev/null; then
        echo "start-slurm: $program not found (Debian: apt-get install slurm-wlm munge)" >&2
        exit 1
    fi
done

CONF=/etc/slurm/slurm.conf
STATE=/var/spool/hpccert-slurm
LOGS=/var/log/hpccert-slurm
RUN=/run/hpccert-slurm
MARK="# written by hpccert tests/slurm/start-slurm.sh"
NODE=$(hostname -s)
# the node's real shape (CPUs, sockets, cores, threads), as slurmd sees it: a node declared
# bigger than it is would be drained. RealMemory is left at its default (1 MB) for the same
# reason (what slurmd reports in a container may differ from what it later measures).
shape=$( (slurmd -C 2>/dev/null || true) | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ' || true)
[ -n "$shape" ] || shape="CPUs=$(nproc)"

mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$LOGS" "$RUN"
chmod 755 "$STATE" "$LOGS"

if [ -e "$CONF" ] && ! head -1 "$CONF" | grep -qF "$MARK"; then
    if [ "$force" != 1 ]; then
        echo "start-slurm: $CONF exists and was not written by this script; not touching it (--force replaces it)" >&2
        exit 1
    fi
    cp -p "$CONF" "$CONF.before-hpccert"
    echo "start-slurm: saved the previous $CONF as $CONF.before-hpccert"
fi

conf=$(
    cat <<EOF
$MARK (rewritten at each run)
ClusterName=hpccert-e2e
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no systemd and no usable cgroups here: processes are tracked through /proc, tasks not bound
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# finished jobs, one line each: sacct -c reads this file
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# a node that was down (this script stopped and started again) comes back by registering
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
# quick turnaround for tests
SchedulerParameters=sched_interval=2
MessageTimeout=10
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE ${shape}State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$conf" ]; then
    printf '%s\n' "$conf" >"$CONF.tmp"
    chmod 644 "$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
    conf_changed=1
else
    conf_changed=0
fi

# munge: the key (mode 0600, owned by munge), its socket directory, the daemon as user munge
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    mungekey --create --keyfile /etc/munge/munge.key
    echo "start-slurm: made /etc/munge/munge.key"
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 700 /etc/munge
chmod 600 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge
if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    echo "start-slurm: munged already running"
else
    install -o munge -g munge -m 640 /dev/null "$LOGS/munged.log"
    runuser -u munge -- munged --force --log-file="$LOGS/munged.log"
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! munge -n </dev/null | unmunge >/dev/null; then
        echo "start-slurm: munged did not come up; its log:" >&2
        cat "$LOGS/munged.log" >&2
        exit 1
    fi
fi

running() { # pid file
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

if running "$RUN/slurmctld.pid"; then
    if [ "$conf_changed" = 1 ]; then
        scontrol reconfigure
        echo "start-slurm: slurmctld already running; told it to re-read $CONF"
    else
        echo "start-slurm: slurmctld already running"
    fi
else
    slurmctld -f "$CONF"
fi
# slurmctld answers before it accepts node registrations only a moment later: wait for it
for _ in $(seq 100); do
    scontrol ping 2>/dev/null | grep -q 'is UP' && break
    sleep 0.1
done
if ! scontrol ping | grep -q 'is UP'; then
    echo "start-slurm: slurmctld is not answering; see $LOGS/slurmctld.log:" >&2
    tail -20 "$LOGS/slurmctld.log" >&2
    exit 1
fi

if running "$RUN/slurmd.pid"; then
    echo "start-slurm: slurmd already running"
else
    slurmd -f "$CONF" -N "$NODE"
fi

# the node comes up idle once slurmd registered (at most ~30 s; typically 1-2 s)
state=
for _ in $(seq 300); do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    case $state in
    idle | mixed | allocated) break ;;
    down* | drain* | fail*)
        # e.g. after an earlier run of this script left it down: bring it back
        scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
        ;;
    esac
    sleep 0.1
done
case $state in
idle | mixed | allocated) ;;
*)
    echo "start-slurm: node $NODE is '$state', not idle; logs:" >&2
    tail -20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2
    sinfo -N -l >&2 || true
    scontrol show node "$NODE" >&2 || true
    exit 1
    ;;
esac

echo "start-slurm: node $NODE $state in partition debug (config $CONF)"
echo "start-slurm: logs in $LOGS (munged.log slurmctld.log slurmd.log), finished jobs in $LOGS/jobcomp.txt (sacct -c, as root)"
