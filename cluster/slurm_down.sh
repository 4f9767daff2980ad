#!/usr/bin/env bash
# Stop the private Slurm cluster that cluster/slurm_up.sh started.
#
# Ends exactly the PIDs that slurm_up.sh recorded (and only if they still run the program
# they were recorded for), never daemons by name: another Slurm on the machine is left alone.
# Usage: cluster/slurm_down.sh [--purge]   (--purge also deletes the state directory)
set -euo pipefail

STATE=${MBTRAIN_SLURM_DIR:-/tmp/mbtrain-slurm}

stop() {
    local name=$1 f=$STATE/pids/$1.pid pid
    [[ -s $f ]] || return 0
    pid=$(<"$f")
    if [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "${name%%-*}" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
        if [[ -e /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
        echo "slurm_down: stopped $name ($pid)" >&2
    fi
    rm -f "$f"
}

# Node daemon first (it ends its job steps), then the controller, then authentication.
for f in "$STATE"/pids/slurmd*.pid; do
    name=${f##*/}
    if [[ -e $f && $name != *.daemon.pid ]]; then stop "${name%.pid}"; fi
done
stop slurmctld
stop munged
if [[ ${1:-} == --purge ]]; then
    rm -rf "$STATE"
fi
