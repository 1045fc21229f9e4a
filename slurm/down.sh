#!/usr/bin/env bash
# Stop the development cluster started by slurm/up.sh: cancel its jobs, stop slurmd, slurmctld (and munged with
# --munge) by their pid files. State and logs stay in DADF_SLURM_DIR (default /tmp/dadf-slurm); --purge removes them.
set -uo pipefail
DIR="${DADF_SLURM_DIR:-/tmp/dadf-slurm}"
export SLURM_CONF="$DIR/slurm.conf"
stop() {  # pid file, name
    [ -f "$1" ] || return 0
    local pid; pid="$(cat "$1")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "slurm/down.sh: stopped $2 ($pid)" >&2
    fi
    rm -f "$1"
}
[ -f "$SLURM_CONF" ] && scancel --full --quiet --user="$(id -un)" 2>/dev/null && sleep 1
stop "$DIR/slurmd.pid" slurmd
stop "$DIR/slurmctld.pid" slurmctld
for arg in "$@"; do
    case "$arg" in
        --munge) stop /run/munge/munged.pid munged ;;
        --purge) [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$SLURM_CONF" ] \
                     && rm -f /etc/slurm/slurm.conf
                 rm -rf "$DIR" ;;
    esac
done
exit 0
