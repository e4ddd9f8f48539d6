#!/usr/bin/env bash
# A Dask distributed cluster: `dask scheduler` on $CERTSEG_BIND_HOST (default 127.0.0.1, loopback)
# port $CERTSEG_DASK_PORT (default 8786, dashboard on 8787; no TLS, no authentication: anyone who
# reaches the port runs code here) and `dask worker --nworkers $CERTSEG_DASK_WORKERS --nthreads 1`
# (default 2 processes), each process with one BLAS/torch thread (OMP_NUM_THREADS=1, from lib.sh).
# Workers inherit this shell's environment: export PREFECT_API_URL (prefect.sh) and the S3
# credentials (s3.sh prints them) first
# if stores live on S3, because the workers read the store themselves.
source "$(dirname "$0")/lib.sh"
need_bin dask

start_bg dask-scheduler "$VENV_BIN/dask" scheduler --host "$BIND_HOST" --port "$DASK_PORT" \
  --dashboard-address "$BIND_HOST:$DASK_DASHBOARD_PORT"
wait_for dask-scheduler "scheduler on $DASK_ADDRESS" port_open "$DASK_PORT"

mkdir -p "$STATE_DIR/dask-worker-space"
start_bg dask-workers "$VENV_BIN/dask" worker "$DASK_ADDRESS" \
  --nworkers "$DASK_WORKERS" --nthreads 1 --no-dashboard --host "$HOST" \
  --local-directory "$STATE_DIR/dask-worker-space"
wait_for dask-workers "$DASK_WORKERS workers connected" "$VENV_BIN/python" -c "
from distributed import Client
with Client('$DASK_ADDRESS', timeout=5) as client:
    client.wait_for_workers($DASK_WORKERS, timeout=2)
"

cat <<OUT
export CERTSEG_DASK_ADDRESS=$DASK_ADDRESS
# dashboard: http://$HOST:$DASK_DASHBOARD_PORT/status
OUT
