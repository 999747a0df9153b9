#!/usr/bin/env bash
# Local multi-process smoke test of scripts/multihost_example.py: N processes on this
# host, each with D forced CPU devices, joined by jax.distributed (coordinator on
# localhost). Usage:
#   scripts/launch_multihost.sh [NPROC=2] [DEVICES_PER_PROC=2] [-- extra args for the example]
# e.g. scripts/launch_multihost.sh 2 2 -- --n 32 --steps 5
# Env: PYTHON (default: python3), PORT (default 12355), JAX_PLATFORMS (default cpu).
# On GPUs use one process per GPU instead (see docs/multihost.md) and unset the XLA_FLAGS below.
set -euo pipefail
NPROC=${1:-2}
NDEV=${2:-2}
shift $(( $# >= 2 ? 2 : $# )) || true
[[ "${1:-}" == "--" ]] && shift
PYTHON=${PYTHON:-python3}
PORT=${PORT:-12355}
HERE=$(cd "$(dirname "$0")" && pwd)
LOGDIR=${LOGDIR:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
export XLA_FLAGS="--xla_force_host_platform_device_count=${NDEV} ${XLA_FLAGS:-}"
export JAXCELL_COORDINATOR="localhost:${PORT}"
export JAXCELL_NUM_PROCESSES="${NPROC}"
echo "launching ${NPROC} processes x ${NDEV} CPU devices, coordinator ${JAXCELL_COORDINATOR}, logs in ${LOGDIR}"
pids=()
for ((i = 0; i < NPROC; i++)); do
  JAXCELL_PROCESS_ID=$i "$PYTHON" "$HERE/multihost_example.py" "$@" >"$LOGDIR/proc$i.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed"; status=1
  fi
done
for ((i = 0; i < NPROC; i++)); do
  echo "---- process $i ----"; cat "$LOGDIR/proc$i.log"
done
exit $status
