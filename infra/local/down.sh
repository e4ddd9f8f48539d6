#!/usr/bin/env bash
# Stop every service started by infra/local/*.sh, by the PIDs recorded in $CERTSEG_INFRA_STATE.
source "$(dirname "$0")/lib.sh"
for name in prefect-worker prefect-server dask-workers dask-scheduler mlflow s3; do
  stop_bg "$name"
done
log "all stopped (logs kept in $STATE_DIR)"
