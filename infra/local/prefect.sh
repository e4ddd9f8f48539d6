#!/usr/bin/env bash
# A standing Prefect server on $CERTSEG_BIND_HOST (default 127.0.0.1) port $CERTSEG_PREFECT_PORT
# (default 4200; UI at http://127.0.0.1:4200; no authentication unless the environment sets
# PREFECT_SERVER_API_AUTH_STRING, see infra/README.md), with its own PREFECT_HOME (SQLite database
# inside it), the process work pool $CERTSEG_WORK_POOL (default certseg-process), and one
# `prefect worker start` polling it.
#
# The worker runs each flow run as a subprocess of itself, with the worker's environment: it
# gets CERTSEG_ROOT (this checkout; prefect.yaml's pull step changes into it) and inherits the
# S3 / MLflow / Dask variables exported in this shell. Extra workers: see infra/README.md.
source "$(dirname "$0")/lib.sh"
need_bin prefect

export PREFECT_HOME=${CERTSEG_PREFECT_HOME:-$STATE_DIR/prefect-home}
mkdir -p "$PREFECT_HOME"
unset PREFECT_API_URL  # the server itself must not point at another server

start_bg prefect-server "$VENV_BIN/prefect" server start --host "$BIND_HOST" --port "$PREFECT_PORT"
wait_for prefect-server "API on $PREFECT_URL" http_ok "$PREFECT_URL/health"

export PREFECT_API_URL=$PREFECT_URL
if ! "$VENV_BIN/prefect" work-pool inspect "$WORK_POOL" >/dev/null 2>&1; then
  "$VENV_BIN/prefect" work-pool create "$WORK_POOL" --type process >/dev/null
  log "work pool $WORK_POOL created"
fi

export CERTSEG_ROOT=${CERTSEG_ROOT:-$REPO_ROOT}
start_bg prefect-worker "$VENV_BIN/prefect" worker start --pool "$WORK_POOL" --type process \
  --name certseg-local-worker --install-policy never
worker_polling() {
  curl -fsS --max-time 5 -X POST -H 'Content-Type: application/json' -d '{}' \
    "$PREFECT_URL/work_pools/$WORK_POOL/workers/filter" | grep -q '"certseg-local-worker"'
}
wait_for prefect-worker "worker polling $WORK_POOL" worker_polling

cat <<OUT
export PREFECT_API_URL=$PREFECT_URL
export PREFECT_HOME=$PREFECT_HOME
# UI: http://$HOST:$PREFECT_PORT
OUT
