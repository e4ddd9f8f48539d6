#!/usr/bin/env bash
# A local S3 API for trials: moto's server on $CERTSEG_BIND_HOST (default 127.0.0.1) port
# $CERTSEG_S3_PORT (default 5555) with bucket $CERTSEG_S3_BUCKET (default certseg). In memory:
# everything is gone when it stops. moto accepts any credentials: never expose it.
# Prints the environment a flow, a Dask worker or the MLflow server needs to reach it.
source "$(dirname "$0")/lib.sh"
need_bin python

export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}

start_bg s3 "$VENV_BIN/python" -m moto.server -H "$BIND_HOST" -p "$S3_PORT"
wait_for s3 "S3 API on $S3_ENDPOINT" http_ok "$S3_ENDPOINT/moto-api/"

"$VENV_BIN/python" - "$S3_ENDPOINT" "$S3_BUCKET" <<'PY'
import sys

import s3fs

endpoint, bucket = sys.argv[1], sys.argv[2]
fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
if not fs.exists(bucket):
    fs.mkdir(bucket)
PY
log "bucket s3://$S3_BUCKET exists"

cat <<OUT
export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
export AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export AWS_DEFAULT_REGION=$AWS_DEFAULT_REGION
export AWS_ENDPOINT_URL=$S3_ENDPOINT
export MLFLOW_S3_ENDPOINT_URL=$S3_ENDPOINT
export CERTSEG_STORE_URL=s3://$S3_BUCKET/stores/demo.zarr
OUT
