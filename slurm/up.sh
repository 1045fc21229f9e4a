#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on this machine (root, Debian/Ubuntu, no systemd needed).
#   slurm/up.sh            install slurm-wlm/munge with apt if missing, start munged, slurmctld, slurmd, wait idle
# Settings (environment): DADF_SLURM_DIR (state, logs, pid files; default /tmp/dadf-slurm), DADF_SLURM_CPUS (CPUs
# the node declares; default 16), DADF_SLURM_GPUS (GPUs the node declares, /dev/null device nodes; default 8),
# DADF_SLURM_MAX_ARRAY_SIZE (default 1001), DADF_SLURM_NO_INSTALL=1 (never run apt).
# On a running cluster, a changed configuration restarts the daemons (their jobs go on): slurmctld alone for a new
# MaxArraySize, which `scontrol reconfigure` would show but slurmctld would not enforce until it restarts.
# Prints the line `export SLURM_CONF=...`; /etc/slurm/slurm.conf is linked to it when that file does not exist.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${DADF_SLURM_DIR:-/tmp/dadf-slurm}"
CPUS="${DADF_SLURM_CPUS:-16}"
GPUS="${DADF_SLURM_GPUS:-8}"
MAX_ARRAY_SIZE="${DADF_SLURM_MAX_ARRAY_SIZE:-1001}"
say() { echo "slurm/up.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (the daemons run as root); run the SLURM tests on a machine where you are root"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
    [ "${DADF_SLURM_NO_INSTALL:-0}" = 1 ] && die "slurmctld/slurmd/munged/sbatch not installed and DADF_SLURM_NO_INSTALL=1"
    command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is not available to install it"
    say "installing slurm-wlm slurmctld slurmd munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm slurmctld slurmd munge >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm slurmctld slurmd munge >/dev/null; } \
        || die "apt-get install slurm-wlm slurmctld slurmd munge failed"
fi

mkdir -p "$DIR"/{state,spool,log}
HOST="$(hostname -s)"
MEM_MB="$(awk '/MemTotal/ {print int($2/1024*0.9)}' /proc/meminfo)"
CONF="$DIR/slurm.conf"
NODE_GRES=""
GRES_LINE=""
if [ "$GPUS" -gt 0 ]; then
    # Fake GPUs: slurmd wants a character device per GPU; these are /dev/null's (1, 3).
    for i in $(seq 0 $((GPUS - 1))); do
        [ -c "$DIR/gpu$i" ] || mknod "$DIR/gpu$i" c 1 3 \
            || die "cannot create the fake GPU device $DIR/gpu$i (mknod); run with DADF_SLURM_GPUS=0 for a node without GPUs"
    done
    NODE_GRES="Gres=gpu:$GPUS"
    GRES_LINE="NodeName=$HOST Name=gpu File=$DIR/gpu[0-$((GPUS - 1))]"
fi
sed -e "s|@HOST@|$HOST|g" -e "s|@DIR@|$DIR|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" \
    -e "s|@CTLD_PORT@|${DADF_SLURM_CTLD_PORT:-6817}|g" -e "s|@SLURMD_PORT@|${DADF_SLURM_SLURMD_PORT:-6818}|g" \
    -e "s|@MAX_ARRAY_SIZE@|$MAX_ARRAY_SIZE|g" -e "s|@NODE_GRES@|$NODE_GRES|g" \
    "$HERE/slurm.conf.in" > "$CONF.new"
echo "$GRES_LINE" > "$DIR/gres.conf.new"
export SLURM_CONF="$CONF"
if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
    mkdir -p /etc/slurm && ln -sfn "$CONF" /etc/slurm/slurm.conf
fi

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {  # pid file: the daemon's jobs go on (slurmstepd), its state is saved
    local pid; pid="$(cat "$1")"; kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$1"
}
without_array_size() { grep -v '^MaxArraySize=' "$1" 2>/dev/null; }

# A running cluster picks up a new config by a restart: of slurmctld alone when only MaxArraySize changed.
changed=0
if ! cmp -s "$CONF.new" "$CONF" || ! cmp -s "$DIR/gres.conf.new" "$DIR/gres.conf"; then changed=1; fi
only_array_size=0
if [ "$changed" = 1 ] && cmp -s "$DIR/gres.conf.new" "$DIR/gres.conf" \
   && cmp -s <(without_array_size "$CONF.new") <(without_array_size "$CONF"); then only_array_size=1; fi
mv "$CONF.new" "$CONF"
mv "$DIR/gres.conf.new" "$DIR/gres.conf"
if [ "$changed" = 1 ] && alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
    if [ "$only_array_size" = 1 ]; then
        say "MaxArraySize=$MAX_ARRAY_SIZE: restarting slurmctld"
        stop "$DIR/slurmctld.pid"
    else
        say "the configuration changed: restarting slurmctld and slurmd"
        stop "$DIR/slurmd.pid"; stop "$DIR/slurmctld.pid"
    fi
fi

# munge: the Debian package creates /etc/munge/munge.key; make one if it is missing.
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge && dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 2>/dev/null
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true; chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
if ! alive /run/munge/munged.pid; then
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c "munged" || runuser -u munge -- munged || die "munged did not start"
    else
        munged --force || die "munged did not start"
    fi
fi
for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge does not work (see /var/log/munge/munged.log)"

if ! alive "$DIR/slurmctld.pid"; then
    slurmctld -f "$CONF" || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
fi
if ! alive "$DIR/slurmd.pid"; then
    slurmd -f "$CONF" || die "slurmd did not start (see $DIR/log/slurmd.log)"
fi

# Wait until the node accepts jobs.
for i in $(seq 120); do
    state="$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1 || true)"
    case "$state" in
        idle*|mixed*|allocated*) break ;;
        down*|drain*|fail*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
case "$state" in
    idle*|mixed*|allocated*) ;;
    *) die "node $HOST is '$state' after 60 s (see $DIR/log/slurmctld.log and slurmd.log)" ;;
esac
say "cluster up: node $HOST ($CPUS CPUs, $GPUS GPUs), MaxArraySize=$MAX_ARRAY_SIZE, partition debug, state and logs in $DIR"
echo "export SLURM_CONF=$CONF"
