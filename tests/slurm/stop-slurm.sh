#!/usr/bin/env bash
# Stop what tests/slurm/start-slurm.sh started: slurmd, slurmctld (by their pid files) and
# munged (`munged --stop`). Leaves the config, the state and the logs in place (so a later
# start-slurm.sh resumes: the node registers again). --purge also removes the state and the
# logs, and the slurm.conf the start script wrote. Run as root.
set -euo pipefail

purge=0
case ${1:-} in
--purge) purge=1 ;;
"") ;;
*)
    echo "stop-slurm: unknown argument $1 (--purge)" >&2
    exit 2
    ;;
esac

CONF=/etc/slurm/slurm.conf
STATE=/var/spool/hpccert-slurm
LOGS=/var/log/hpccert-slurm
RUN=/run/hpccert-slurm
MARK="# written by hpccert tests/slurm/start-slurm.sh"

stop() { # name pid-file
    local pid
    [ -s "$2" ] || return 0
    pid=$(cat "$2")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop-slurm: $1 ($pid) still running after 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "stop-slurm: stopped $1 ($pid)"
    fi
    rm -f "$2"
}

stop slurmd "$RUN/slurmd.pid"
stop slurmctld "$RUN/slurmctld.pid"
if command -v munged >/dev/null && munged --stop >/dev/null 2>&1; then
    echo "stop-slurm: stopped munged"
fi

if [ "$purge" = 1 ]; then
    rm -rf "$STATE" "$LOGS" "$RUN"
    if [ -f "$CONF" ] && head -1 "$CONF" | grep -qF "$MARK"; then
        rm -f "$CONF"
        [ -f "$CONF.before-hpccert" ] && mv "$CONF.before-hpccert" "$CONF"
    fi
    echo "stop-slurm: removed $STATE, $LOGS and the slurm.conf start-slurm.sh wrote"
fi
