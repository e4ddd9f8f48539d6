#!/usr/bin/env bash
# Register the deployments of prefect.yaml on the standing Prefect server (prefect.sh first).
# Usage: infra/local/deploy.sh [DEPLOYMENT-NAME...]   (default: all of them)
source "$(dirname "$0")/lib.sh"
need_bin prefect
export PREFECT_API_URL=${PREFECT_API_URL:-$PREFECT_URL}
http_ok "$PREFECT_API_URL/health" || die "no Prefect API at $PREFECT_API_URL: run infra/local/prefect.sh"

cd "$REPO_ROOT"
if (($# == 0)); then
  "$VENV_BIN/prefect" --no-prompt deploy --all --prefect-file prefect.yaml
else
  for name in "$@"; do
    "$VENV_BIN/prefect" --no-prompt deploy --name "$name" --prefect-file prefect.yaml
  done
fi
"$VENV_BIN/prefect" deployment ls
