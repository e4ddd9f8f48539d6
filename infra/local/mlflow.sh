#!/usr/bin/env bash
# The MLflow tracking server on $CERTSEG_BIND_HOST (default 127.0.0.1) port $CERTSEG_MLFLOW_PORT
# (default 5000; no authentication as started here): run metadata in SQLite
# ($CERTSEG_INFRA_STATE/mlflow.db), artifacts proxied by the server to $CERTSEG_MLFLOW_ARTIFACTS
# (default s3://$CERTSEG_S3_BUCKET/mlflow-artifacts on the local S3 API of s3.sh, which must run
# first; any s3:// or local path works). Clients only need MLFLOW_TRACKING_URI / the tracking URI.
source "$(dirname "$0")/lib.sh"
need_bin mlflow

ARTIFACTS=${CERTSEG_MLFLOW_ARTIFACTS:-s3://$S3_BUCKET/mlflow-artifacts}
if [[ "$ARTIFACTS" == s3://* ]]; then
  # The server (not the client) talks to S3: give it the endpoint and credentials.
  export MLFLOW_S3_ENDPOINT_URL=${MLFLOW_S3_ENDPOINT_URL:-$S3_ENDPOINT}
  export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing}
  export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}
  export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
fi

start_bg mlflow "$VENV_BIN/mlflow" server --host "$BIND_HOST" --port "$MLFLOW_PORT" --workers 1 \
  --backend-store-uri "sqlite:///$STATE_DIR/mlflow.db" \
  --artifacts-destination "$ARTIFACTS"
wait_for mlflow "tracking server on $MLFLOW_URL" http_ok "$MLFLOW_URL/health"

cat <<OUT
export MLFLOW_TRACKING_URI=$MLFLOW_URL
OUT
