#!/usr/bin/env bash
# Everything on loopback, in dependency order: S3 API, MLflow server, Prefect server + worker,
# Dask cluster, then the deployments. Prints the environment to `eval` in your shell:
#   eval "$(infra/local/up.sh)"
# Stop it all with infra/local/down.sh.
source "$(dirname "$0")/lib.sh"
env_file="$STATE_DIR/env.sh"
: >"$env_file"
# Each step's exports feed the next (the Dask workers and the Prefect worker inherit S3 access).
# prefect before dask: the Dask workers inherit PREFECT_API_URL, so Prefect task runs on them
# (certify-dataset-on-dask) report to this server instead of each starting a temporary one.
for step in s3 mlflow prefect dask; do
  "$INFRA_DIR/$step.sh" | tee -a "$env_file" >/dev/null
  # shellcheck disable=SC1090
  source <(grep '^export ' "$env_file")
done
"$INFRA_DIR/deploy.sh" >&2
cat "$env_file"
