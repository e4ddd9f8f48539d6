#!/usr/bin/env bash
# Shared settings and helpers for infra/local/*.sh. Sourced, not run.
#
# Every service binds $CERTSEG_BIND_HOST, default 127.0.0.1 (loopback: nothing outside this machine
# can reach it). None of them authenticates as started here: an open Dask scheduler runs anyone's
# code, an open Prefect API starts any deployment with any parameters. Bind another address only
# on a private network, after reading "Exposing beyond one machine safely" in infra/README.md.
#
# Every service runs in the background in its own session (setsid), with its PID in
# $CERTSEG_INFRA_STATE/NAME.pid and its output in $CERTSEG_INFRA_STATE/NAME.log; `down.sh` stops
# each one by that PID (the whole process group), never by name.
set -euo pipefail

INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$INFRA_DIR/../.." && pwd)
VENV_BIN=${CERTSEG_VENV_BIN:-$REPO_ROOT/.venv/bin}
STATE_DIR=${CERTSEG_INFRA_STATE:-${TMPDIR:-/tmp}/certseg-infra}
BIND_HOST=${CERTSEG_BIND_HOST:-127.0.0.1}
# The address clients on this machine use: loopback when binding every interface.
case "$BIND_HOST" in
  0.0.0.0 | :: | "[::]") HOST=127.0.0.1 ;;
  *) HOST=$BIND_HOST ;;
esac

PREFECT_PORT=${CERTSEG_PREFECT_PORT:-4200}
DASK_PORT=${CERTSEG_DASK_PORT:-8786}
DASK_DASHBOARD_PORT=${CERTSEG_DASK_DASHBOARD_PORT:-8787}
DASK_WORKERS=${CERTSEG_DASK_WORKERS:-2}
S3_PORT=${CERTSEG_S3_PORT:-5555}
S3_BUCKET=${CERTSEG_S3_BUCKET:-certseg}
MLFLOW_PORT=${CERTSEG_MLFLOW_PORT:-5000}
WORK_POOL=${CERTSEG_WORK_POOL:-certseg-process}
START_TIMEOUT=${CERTSEG_START_TIMEOUT:-120}

PREFECT_URL="http://$HOST:$PREFECT_PORT/api"
DASK_ADDRESS="tcp://$HOST:$DASK_PORT"
S3_ENDPOINT="http://$HOST:$S3_PORT"
MLFLOW_URL="http://$HOST:$MLFLOW_PORT"

# One BLAS/torch thread per process (Dask runs one process per core); no telemetry anywhere.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export DO_NOT_TRACK=true PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true
export PYTHONUNBUFFERED=1

mkdir -p "$STATE_DIR"

log() { printf '[certseg-infra] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$BIND_HOST" in
  127.* | localhost | ::1) ;;
  *)
    log "warning: binding $BIND_HOST (CERTSEG_BIND_HOST), not loopback: these services have no" \
      "authentication or TLS as started here; see infra/README.md," \
      "'Exposing beyond one machine safely'"
    ;;
esac

need_bin() {
  [[ -x "$VENV_BIN/$1" ]] || die "$VENV_BIN/$1 not found: run \`make install-dev\` first (or set CERTSEG_VENV_BIN)"
}

pid_of() {  # prints the PID of a running service NAME, or nothing
  local file="$STATE_DIR/$1.pid"
  [[ -f "$file" ]] || return 0
  local pid
  pid=$(<"$file")
  if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

start_bg() {  # start_bg NAME CMD ARGS...: run CMD in its own session, record its PID
  local name=$1; shift
  if [[ -n "$(pid_of "$name")" ]]; then
    log "$name already running (pid $(pid_of "$name"))"
    return 0
  fi
  log "starting $name: $*"
  # Non-interactive shell: the background job is no group leader, so setsid execs in place
  # and $! is both the PID and the process-group ID of the new session.
  setsid "$@" >>"$STATE_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE_DIR/$name.pid"
}

wait_for() {  # wait_for NAME WHAT CHECK ARGS...: poll CHECK until it succeeds (bounded)
  local name=$1 what=$2; shift 2
  local deadline=$((SECONDS + START_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [[ -z "$(pid_of "$name")" ]]; then
      tail -n 30 "$STATE_DIR/$name.log" >&2 || true
      die "$name exited before $what (log: $STATE_DIR/$name.log)"
    fi
    if ((SECONDS > deadline)); then
      tail -n 30 "$STATE_DIR/$name.log" >&2 || true
      die "$name: no $what within ${START_TIMEOUT}s (log: $STATE_DIR/$name.log)"
    fi
    sleep 0.5
  done
  log "$name ready ($what)"
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

stop_bg() {  # stop_bg NAME: SIGTERM the process group, wait up to 15 s, then SIGKILL it
  local name=$1 pid
  pid=$(pid_of "$name")
  if [[ -z "$pid" ]]; then
    rm -f "$STATE_DIR/$name.pid"
    return 0
  fi
  log "stopping $name (process group $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$STATE_DIR/$name.pid"
}
