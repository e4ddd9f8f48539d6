#!/usr/bin/env bash
# Concurrency check for docs/reliability.md: two identical `certseg certify` runs started together on
# one fresh store (each with its own Prefect home), their results compared (all but the timing
# column), then `certseg certify` (resuming the finished store) and `certseg recertify` together.
# Usage: scripts/concurrent_runs.sh [PAIRS] [WORKDIR]   (from the repository root, after make install)
set -u
PAIRS=${1:-2}
WORK=${2:-$(mktemp -d -t certseg-concurrent-XXXX)}
BIN=.venv/bin/certseg
CFG=configs/tiny.yaml
for pair in $(seq 1 "$PAIRS"); do
  D=$WORK/p$pair
  rm -rf "$D"
  mkdir -p "$D/h1" "$D/h2"
  PREFECT_HOME=$D/h1 $BIN certify $CFG --store "$D/store.zarr" --out "$D/out1" --no-track -q >"$D/a.txt" 2>&1 &
  A=$!
  PREFECT_HOME=$D/h2 $BIN certify $CFG --store "$D/store.zarr" --out "$D/out2" --no-track -q >"$D/b.txt" 2>&1 &
  B=$!
  wait $A; RA=$?; wait $B; RB=$?
  .venv/bin/python - "$D" "$RA" "$RB" <<'PY'
import csv
import sys

folder, code_a, code_b = sys.argv[1:]


def rows(path: str) -> list[dict[str, str]]:
    with open(path) as handle:
        return [{k: v for k, v in r.items() if k != "samples_per_second"} for r in csv.DictReader(handle)]


try:
    same = rows(f"{folder}/out1/results.csv") == rows(f"{folder}/out2/results.csv")
except FileNotFoundError as error:
    same = f"missing {error.filename}"
print(f"pair {folder}: exit codes {code_a} {code_b}; identical results: {same}")
PY
done
D=$WORK/p1
mkdir -p "$D/h3" "$D/h4"
PREFECT_HOME=$D/h3 $BIN certify $CFG --store "$D/store.zarr" --out "$D/out3" --no-track -q >"$D/c.txt" 2>&1 &
A=$!
PREFECT_HOME=$D/h4 $BIN recertify "$D/store.zarr" --out "$D/rec" --no-track -q >"$D/d.txt" 2>&1 &
B=$!
wait $A; RA=$?; wait $B; RB=$?
echo "certify during recertify: exit codes $RA $RB"
